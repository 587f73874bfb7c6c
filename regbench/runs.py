"""A run folder holds the pairs of one registration setup, written by processes of that setup.

A *run* is one column of an experiment: a method at one slice step (:func:`regbench.naming.
run_name`), its pairs in ``OUT_ROOT/{moving}/{fixed}/``. Its *registration setup* (setup, for
short) is everything that makes those pairs comparable: the method, its options, the slice step,
a learned method's checkpoint and, for fields made elsewhere, its label (:data:`SETUP_KEYS`).
This module is the one rule for what a run folder may hold, which every command that writes into
one follows:

- a writer of fields (``register-pairs``, ``learn2reg-import``) takes the folder with
  :func:`claim_run`, which records the setup in ``OUT_ROOT/run.json`` and refuses a folder that
  holds pairs of another setup (or, asked to replace them, deletes those pairs first), and
  writes each pair inside :func:`pair_folder`, which removes what the field it replaces left
  (its runtime record, scores and warped volumes). Processes of the same setup share the folder
  (the workflow registers a run's pairs in parallel jobs); one of another setup is refused while
  they run.
- a reader of fields (``evaluate-pairs``, ``learn2reg-export``) takes the pairs through
  :func:`read_run`, which refuses, before anything is written, a missing field, a field of
  another pair (:func:`check_pair`) and a folder whose pairs or ``run.json`` name several setups.
- :func:`check_run` is how the aggregation refuses a scored pair that contradicts its run
  folder's setup.

The lock is two ``flock`` files that stay in the folder: ``.regbench.run.lock``, held
exclusively for the moment a process reads and writes the record, and ``.regbench.active.lock``,
held shared while a process registers and exclusively while one changes the setup.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from regbench.io import InputError, make_folder, output_lock, read_json, write_json
from regbench.naming import (
    FIELD_FILE,
    RUN_ACTIVE_LOCK,
    RUN_RECORD,
    RUN_RECORD_LOCK,
    RUNTIME_FILE,
    SCORED_FILES,
)

log = logging.getLogger(__name__)

SETUP_KEYS = ("method", "options", "slice_step", "checkpoint", "label")
"""What makes two registrations one setup (``checkpoint``: a learned method's hash and step;
``label``: how the tables name fields made elsewhere, ``None`` for the suite's methods)."""


def setup_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The registration setup of a runtime or run record (absent keys: ``None``), as JSON
    values."""
    return json.loads(json.dumps({key: record.get(key) for key in SETUP_KEYS}))


def describe(setup: Mapping[str, Any]) -> str:
    """A short name of a setup for messages: the method, options, label, step and
    checkpoint."""
    text = f"{setup.get('method')!r} with options {json.dumps(setup.get('options'))}"
    if setup.get("label") is not None:
        text += f" labelled {setup['label']!r}"
    if (setup.get("slice_step") or 1) > 1:
        text += f" at slice step {setup['slice_step']}"
    checkpoint = setup.get("checkpoint")
    if checkpoint:
        text += f", checkpoint {str(checkpoint.get('sha256'))[:12]} (step {checkpoint.get('step')})"
    return text


def differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The setup keys where two records differ (empty: the same setup)."""
    saved, wanted = setup_of(saved), setup_of(wanted)
    return [key for key in SETUP_KEYS if saved[key] != wanted[key]]


@contextlib.contextmanager
def claim_run(out_root: str | os.PathLike, setup: Mapping[str, Any],
              replace: bool = False) -> Iterator[Path]:
    """Hold ``out_root`` as a run folder of ``setup`` while the block registers into it.

    Args:
        out_root: the run folder (made if missing).
        setup: the registration setup, a :data:`SETUP_KEYS` record, written to
            ``out_root/run.json``.
        replace: delete the pair folders of another setup (and its record) instead of
            refusing them.

    Raises:
        InputError: ``out_root`` holds pairs or a record of another setup (without
            ``replace``), a process of another setup registers into it, or it cannot be
            written.
    """
    out_root = make_folder(out_root, "run folder")
    setup = setup_of(setup)
    record_lock = _open_lock(out_root / RUN_RECORD_LOCK)
    active = None
    try:
        fcntl.flock(record_lock, fcntl.LOCK_EX)  # held for the moment of the decision only
        active = _open_lock(out_root / RUN_ACTIVE_LOCK)
        stale = _stale(out_root, setup)
        if stale is None:
            _lock(active, fcntl.LOCK_SH)  # the same setup: share the folder
        else:
            _lock(active, fcntl.LOCK_EX | fcntl.LOCK_NB,
                  f"{out_root}: another regbench process is registering another method (or "
                  "other options) into this run folder; wait for it or give another --out-root")
            if stale and not replace:
                where, other = stale[0]
                raise InputError(
                    f"{where}: holds a pair of another setup ({describe(other)}), not "
                    f"{describe(setup)}; give another --out-root, or --replace-stale to "
                    "delete that setup's pairs and register afresh")
            for where, other in stale:
                log.warning("%s: deleting a pair of another setup (%s)", where, describe(other))
                if where.is_dir():
                    shutil.rmtree(where)
                    with contextlib.suppress(OSError):  # the moving subject's folder, if empty
                        where.parent.rmdir()
                else:
                    where.unlink()
            write_json(out_root / RUN_RECORD, setup)
            _lock(active, fcntl.LOCK_SH)
    except BaseException:
        if active is not None:
            os.close(active)
        raise
    finally:
        os.close(record_lock)
    try:
        yield out_root
    finally:
        os.close(active)


@contextlib.contextmanager
def pair_folder(out_root: str | os.PathLike, moving: str, fixed: str) -> Iterator[Path]:
    """Hold the folder of one pair of a claimed run while its field is written into it: locked
    (:func:`regbench.io.output_lock`) and cleared of what an earlier field left there."""
    with output_lock(Path(out_root) / moving / fixed) as folder:
        clear_pair(folder)
        yield folder


def clear_pair(folder: Path) -> None:
    """Remove a pair folder's runtime record, scores and warped volumes, which belong to the
    field about to be replaced: a new field is never left beside an old one's scores."""
    for name in (RUNTIME_FILE, *SCORED_FILES):
        (folder / name).unlink(missing_ok=True)


def read_run(out_root: str | os.PathLike, pairs: Sequence[tuple[str, str]]
             ) -> list[dict[str, Any]]:
    """The runtime records of ``pairs`` of one run folder, each checked to belong there.

    Args:
        out_root: the run folder, holding ``{moving}/{fixed}/field.nii.gz`` and
            ``runtime.json`` per pair.
        pairs: ``(moving, fixed)`` subject IDs.

    Returns:
        The runtime records, in pair order.

    Raises:
        InputError: a pair's field or runtime record is missing or bad, a record names another
            pair than its folder's, or the records name several setups or another setup than
            the folder's ``run.json``.
    """
    out_root = Path(out_root)
    records: list[dict[str, Any]] = []
    for moving, fixed in pairs:
        field = out_root / moving / fixed / FIELD_FILE
        if not field.is_file():
            raise InputError(f"{field}: no field for moving {moving!r} and fixed {fixed!r}; "
                             "register the pair first")
        path = field.parent / RUNTIME_FILE
        if not path.is_file():
            raise InputError(f"{path}: missing; every field needs the runtime record of the "
                             "method that made it (register the pair again)")
        record = read_json(path)
        if not isinstance(record, dict):
            raise InputError(f"{path}: expected a JSON object, got {type(record).__name__}")
        check_pair(record, (moving, fixed), path)
        check_run(record, out_root, path)
        if records and differences(records[0], record):
            first = out_root / pairs[0][0] / pairs[0][1] / RUNTIME_FILE
            raise InputError(
                f"{path}: a pair of {describe(setup_of(record))}, while {first} is a pair "
                f"of {describe(setup_of(records[0]))}: a run folder holds one method's "
                "pairs; register them again with one method")
        records.append(record)
    return records


def check_pair(runtime: Mapping[str, Any], pair: tuple[str, str],
               source: str | os.PathLike) -> None:
    """Refuse a runtime record of another pair than ``pair`` (a record without subject IDs, of a
    field not made by the suite's registration, is taken as it is).

    Raises:
        InputError: the record's ``moving`` and ``fixed`` are not ``pair``'s.
    """
    recorded = (runtime.get("moving"), runtime.get("fixed"))
    if recorded != (None, None) and recorded != tuple(pair):
        raise InputError(f"{source}: the field of {recorded[0]} -> {recorded[1]}, not of "
                         f"{pair[0]} -> {pair[1]}; score it as the pair it registered")


def check_run(runtime: Mapping[str, Any], run_folder: Path, source: str | os.PathLike) -> None:
    """Refuse a pair's runtime record that contradicts the setup its run folder records (if
    any).

    Raises:
        InputError: ``run_folder/run.json`` names another method, options, slice step,
            checkpoint or label than ``runtime``.
    """
    path = run_folder / RUN_RECORD
    if not path.is_file():
        return
    recorded = read_json(path)
    if not isinstance(recorded, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(recorded).__name__}")
    keys = differences(recorded, runtime)
    if keys:
        raise InputError(f"{source}: a pair of {describe(setup_of(runtime))} in the run "
                         f"folder of {describe(setup_of(recorded))} ({path}; differs in "
                         f"{', '.join(keys)}); register the pair again with the run's method")


def _stale(out_root: Path, setup: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]] | None:
    """``None`` when ``out_root`` is already a run folder of ``setup``; else ``(what, its
    setup)`` for the run record and each pair folder of another setup (empty: a new run
    folder)."""
    record = out_root / RUN_RECORD
    stale = []
    if record.is_file():
        saved = read_json(record)
        saved = saved if isinstance(saved, dict) else {}
        if not differences(saved, setup):
            return None  # its pairs were checked when the record was written
        stale.append((record, setup_of(saved)))
    for runtime in sorted(out_root.glob(f"*/*/{RUNTIME_FILE}")):
        try:
            saved = json.loads(runtime.read_text())
        except (OSError, ValueError):
            saved = {}
        saved = saved if isinstance(saved, dict) else {}
        if differences(saved, setup):
            stale.append((runtime.parent, setup_of(saved)))
    return stale


def _open_lock(path: Path) -> int:
    """A descriptor of a lock file that stays in its folder (never removed, so that every
    process locks the same file)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise InputError(f"{path.parent}: cannot write into this folder ({err.strerror}); give "
                         "a writable one") from None


def _lock(fd: int, operation: int, busy: str = "") -> None:
    try:
        fcntl.flock(fd, operation)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            raise InputError(busy) from None
        raise
