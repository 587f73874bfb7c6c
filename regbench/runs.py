"""A run folder holds the pairs of one registration setup, written by processes of that setup.

A *run* is one column of an experiment: a method at one slice step (:func:`regbench.naming.
run_name`). Its *registration setup* (setup, for short) is everything that makes its pairs
comparable: the method, its options, the slice step and, for a learned method, the checkpoint
(:data:`SETUP_KEYS`). :func:`claim_run` is how ``register-pairs`` takes a run folder
(``OUT_ROOT/{moving}/{fixed}/``): it records the setup in ``OUT_ROOT/run.json`` and refuses a
folder that holds pairs of another setup (or, asked to replace them, deletes those pairs first).
Processes of the same setup share the folder (the workflow registers a run's pairs in parallel
jobs); one of another setup is refused while they run. :func:`check_run` is how the scoring and
the aggregation refuse a pair whose ``runtime.json`` contradicts its run folder's setup.

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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from regbench.io import InputError, make_folder, read_json, write_json

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"
SETUP_KEYS = ("method", "options", "slice_step", "checkpoint")
"""What makes two registrations one setup (``checkpoint``: a learned method's hash and step)."""
RECORD_LOCK = ".regbench.run.lock"
ACTIVE_LOCK = ".regbench.active.lock"
RUNTIME_FILE = "runtime.json"


def setup_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The registration setup of a runtime or run record (absent keys: ``None``), as JSON
    values."""
    return json.loads(json.dumps({key: record.get(key) for key in SETUP_KEYS}))


def describe(setup: Mapping[str, Any]) -> str:
    """A short name of a setup for messages: the method, options, step and checkpoint."""
    text = f"{setup.get('method')!r} with options {json.dumps(setup.get('options'))}"
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
    record_lock = _open_lock(out_root / RECORD_LOCK)
    active = None
    try:
        fcntl.flock(record_lock, fcntl.LOCK_EX)  # held for the moment of the decision only
        active = _open_lock(out_root / ACTIVE_LOCK)
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


def check_run(runtime: Mapping[str, Any], run_folder: Path, source: str | os.PathLike) -> None:
    """Refuse a pair's runtime record that contradicts the setup its run folder records (if
    any).

    Raises:
        InputError: ``run_folder/run.json`` names another method, options, slice step or
            checkpoint than ``runtime``.
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
