"""A run folder holds the pairs of one method: one identity, one writer of another identity.

A *run* is one method, with its options, slice step and (learned) checkpoint, registering pairs
into ``OUT_ROOT/{moving}/{fixed}/``. :func:`claim_run` is how ``register-pairs`` takes a run
folder: it records the run's identity in ``OUT_ROOT/run.json`` and refuses a folder that holds
pairs of another identity (or, asked to replace them, deletes those pairs first). Processes of
the same identity share the folder (the workflow registers a run's pairs in parallel jobs); one
of another identity is refused while they run. :func:`check_run` is how the scoring and the
aggregation refuse a pair whose ``runtime.json`` contradicts its run.

The lock is two ``flock`` files that stay in the folder: ``.regbench.run.lock``, held
exclusively for the moment a process reads and writes the record, and ``.regbench.active.lock``,
held shared while a process registers and exclusively while one changes the identity.
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
from regbench.naming import RUN_ACTIVE_LOCK, RUN_RECORD, RUN_RECORD_LOCK, RUNTIME_FILE

log = logging.getLogger(__name__)

IDENTITY_KEYS = ("method", "options", "slice_step", "checkpoint")
"""What makes two registrations one run (``checkpoint``: a learned method's hash and step)."""


def identity_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The run identity of a runtime or run record (absent keys: ``None``), as JSON values."""
    return json.loads(json.dumps({key: record.get(key) for key in IDENTITY_KEYS}))


def describe(identity: Mapping[str, Any]) -> str:
    """A short name of an identity for messages: the method, options, step and checkpoint."""
    text = f"{identity.get('method')!r} with options {json.dumps(identity.get('options'))}"
    if (identity.get("slice_step") or 1) > 1:
        text += f" at slice step {identity['slice_step']}"
    checkpoint = identity.get("checkpoint")
    if checkpoint:
        text += f", checkpoint {str(checkpoint.get('sha256'))[:12]} (step {checkpoint.get('step')})"
    return text


def differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The identity keys where two records differ (empty: the same run)."""
    saved, wanted = identity_of(saved), identity_of(wanted)
    return [key for key in IDENTITY_KEYS if saved[key] != wanted[key]]


@contextlib.contextmanager
def claim_run(out_root: str | os.PathLike, identity: Mapping[str, Any],
              replace: bool = False) -> Iterator[Path]:
    """Hold ``out_root`` as a run folder of ``identity`` while the block registers into it.

    Args:
        out_root: the run folder (made if missing).
        identity: the run's :data:`IDENTITY_KEYS` record, written to ``out_root/run.json``.
        replace: delete the pair folders of another identity (and its record) instead of
            refusing them.

    Raises:
        InputError: ``out_root`` holds pairs or a record of another identity (without
            ``replace``), a process of another identity registers into it, or it cannot be
            written.
    """
    out_root = make_folder(out_root, "run folder")
    identity = identity_of(identity)
    record_lock = _open_lock(out_root / RUN_RECORD_LOCK)
    active = None
    try:
        fcntl.flock(record_lock, fcntl.LOCK_EX)  # held for the moment of the decision only
        active = _open_lock(out_root / RUN_ACTIVE_LOCK)
        stale = _stale(out_root, identity)
        if stale is None:
            _lock(active, fcntl.LOCK_SH)  # the same run: share the folder
        else:
            _lock(active, fcntl.LOCK_EX | fcntl.LOCK_NB,
                  f"{out_root}: another regbench process is registering another method (or "
                  "other options) into this run folder; wait for it or give another --out-root")
            if stale and not replace:
                where, other = stale[0]
                raise InputError(
                    f"{where}: holds a pair of another run ({describe(other)}), not "
                    f"{describe(identity)}; give another --out-root, or --replace-stale to "
                    "delete that run's pairs and register afresh")
            for where, other in stale:
                log.warning("%s: deleting a pair of another run (%s)", where, describe(other))
                if where.is_dir():
                    shutil.rmtree(where)
                    with contextlib.suppress(OSError):  # the moving subject's folder, if empty
                        where.parent.rmdir()
                else:
                    where.unlink()
            write_json(out_root / RUN_RECORD, identity)
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
    """Refuse a pair's runtime record that contradicts the record of its run folder (if any).

    Raises:
        InputError: ``run_folder/run.json`` names another method, options, slice step or
            checkpoint than ``runtime``.
    """
    path = run_folder / RUN_RECORD
    if not path.is_file():
        return
    run = read_json(path)
    if not isinstance(run, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(run).__name__}")
    keys = differences(run, runtime)
    if keys:
        raise InputError(f"{source}: a pair of {describe(identity_of(runtime))} in the run "
                         f"folder of {describe(identity_of(run))} ({path}; differs in "
                         f"{', '.join(keys)}); register the pair again with the run's method")


def _stale(out_root: Path, identity: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]] | None:
    """``None`` when ``out_root`` is already a run of ``identity``; else ``(what, its identity)``
    for the run record and each pair folder of another identity (empty: a new run folder)."""
    record = out_root / RUN_RECORD
    stale = []
    if record.is_file():
        saved = read_json(record)
        saved = saved if isinstance(saved, dict) else {}
        if not differences(saved, identity):
            return None  # its pairs were checked when the record was written
        stale.append((record, identity_of(saved)))
    for runtime in sorted(out_root.glob(f"*/*/{RUNTIME_FILE}")):
        try:
            saved = json.loads(runtime.read_text())
        except (OSError, ValueError):
            saved = {}
        saved = saved if isinstance(saved, dict) else {}
        if differences(saved, identity):
            stale.append((runtime.parent, identity_of(saved)))
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
