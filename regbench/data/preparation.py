"""Steps shared by the real-dataset preparers (:mod:`regbench.data.lpba40`,
:mod:`regbench.data.mindboggle101`): subject lists, splits of a subset, label clean-up, the crop
and intensity scaling, and the staging folder that makes a preparation all-or-nothing.

A preparation writes every subject and the manifest into a hidden staging folder beside OUT and
moves them into OUT only when everything succeeded (:func:`staged_dataset`), so a failed run
leaves neither half a dataset nor a damaged previous one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from regbench.data import protocol
from regbench.data.dataset import MANIFEST, SPLITS
from regbench.io import InputError, exclusive

log = logging.getLogger(__name__)

DATASET_ENTRIES = ("images", "labels")
"""The folders of a prepared dataset that a new preparation replaces (the manifest aside)."""


def parse_subjects(subjects: str | Sequence[str] | None) -> list[str] | None:
    """``"S01,S31"`` or ``["S01", "S31"]`` -> ``["S01", "S31"]`` (order kept, repeats dropped);
    ``None`` (every subject) stays ``None``."""
    if subjects is None:
        return None
    if isinstance(subjects, str):
        subjects = subjects.split(",")
    chosen = list(dict.fromkeys(s.strip() for s in subjects if s.strip()))
    if not chosen:
        raise InputError("no subject given (an empty --subjects list)")
    return chosen


def subset_splits(chosen: Sequence[str], splits: Mapping[str, Sequence[str]]
                  ) -> dict[str, list[str]]:
    """The splits restricted to the chosen subjects, in the order they were chosen (a warning
    when that leaves no test pair, :func:`warn_without_test_pairs`)."""
    subset = {split: [s for s in chosen if s in set(splits.get(split, []))] for split in SPLITS}
    warn_without_test_pairs(subset)
    return subset


def warn_without_test_pairs(splits: Mapping[str, Sequence[str]]) -> None:
    """Warn when the test split holds fewer than 2 subjects: the dataset then has no test pair
    (``register-pairs --test-pairs`` refuses it). A ``--subjects`` list that keeps too few of
    the paper's test subjects does this; a preparation of a few training subjects may mean to."""
    test = list(splits.get("test", []))
    if len(test) < 2:
        log.warning("the test split holds %d subject(s)%s: the dataset has no test pair to "
                    "register; add test subjects to --subjects, or give --test", len(test),
                    f" ({', '.join(test)})" if test else "")


def given_splits(train: str | Sequence[str] | None = None, val: str | Sequence[str] | None = None,
                 test: str | Sequence[str] | None = None) -> dict[str, list[str]] | None:
    """Splits of the user's own (``--train``, ``--val``, ``--test``), or ``None`` when none is
    given (the paper's splits then apply).

    Each list is comma-separated text or a list of IDs; a split not given is empty.

    Raises:
        InputError: a subject in two splits, or fewer than 2 test subjects.
    """
    lists = {"train": train, "val": val, "test": test}
    if all(value is None for value in lists.values()):
        return None
    splits = {name: parse_subjects(value) if value else [] for name, value in lists.items()}
    seen: dict[str, str] = {}
    for name, subjects in splits.items():
        for subject in subjects:
            if subject in seen:
                raise InputError(f"subject {subject} is in both the {seen[subject]} and the "
                                 f"{name} split; the splits must be disjoint")
            seen[subject] = name
    if len(splits["test"]) < 2:
        raise InputError(f"the test split needs at least 2 subjects (a pair to register), got "
                         f"{len(splits['test'])}: {', '.join(splits['test']) or 'none'}")
    return splits


def choose_splits(chosen: Sequence[str] | None, given: Mapping[str, Sequence[str]] | None
                  ) -> list[str] | None:
    """The subjects to prepare: ``chosen`` (``--subjects``), else every subject of the ``given``
    splits, else ``None`` (every subject found).

    Raises:
        InputError: a subject of a given split that ``chosen`` leaves out.
    """
    if given is None:
        return None if chosen is None else list(chosen)
    listed = [s for split in SPLITS for s in given[split]]
    if chosen is None:
        return listed
    left_out = [s for s in listed if s not in set(chosen)]
    if left_out:
        raise InputError(f"{', '.join(left_out)}: in a given split but not in --subjects; "
                         f"prepare every subject of the splits")
    return list(chosen)


def clean_labels(labels: np.ndarray, allowed: Mapping[int, str] | Sequence[int],
                 merges: Mapping[int, int] | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Relabel ``merges`` (source ID -> target ID), then set IDs outside ``allowed`` to 0.

    Returns ``(int32 labels, {str(dropped ID): voxel count})``; the counts are of the volume as
    given, so a label that the crop removes later is not reported as dropped.
    """
    labels = np.asarray(labels)
    allowed_ids = np.array(sorted(int(i) for i in allowed), dtype=np.int64)
    merges = dict(merges or {})
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high < 2**20:
        # A lookup table over 0..max: one pass over the voxels, no sort (volumes are ~7M voxels).
        counts = np.bincount(labels.ravel().astype(np.int64, copy=False), minlength=high + 1)
        present = np.flatnonzero(counts)
    else:
        present, counts_present = np.unique(labels, return_counts=True)
        counts = dict(zip(present.tolist(), counts_present.tolist(), strict=True))
    mapping: dict[int, int] = {}
    dropped: dict[str, int] = {}
    for value in (int(v) for v in present):
        target = merges.get(value, value)
        if target != 0 and not np.isin(target, allowed_ids):
            dropped[str(value)] = int(counts[value])
            target = 0
        if target != value:
            mapping[value] = target
    out = labels.astype(np.int32, copy=True)
    if mapping and low >= 0 and high < 2**20:
        table = np.arange(high + 1, dtype=np.int32)
        for source, target in mapping.items():
            table[source] = target
        out = table[out]
    else:
        for source, target in mapping.items():
            out[labels == source] = target
    return out, dropped


def crop(volume: np.ndarray) -> np.ndarray:
    """The paper's centre crop ``[11:171, 13:205, 11:171]`` of an MNI-grid volume."""
    if tuple(volume.shape) != protocol.MNI_SHAPE:
        raise ValueError(f"expected a volume on the MNI grid {protocol.MNI_SHAPE}, "
                         f"got {volume.shape}")
    return np.ascontiguousarray(volume[protocol.crop_slices(volume.shape)])


def scale_by_maximum(image: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    """Divide by the volume's maximum (the paper's intensity normalisation), as float32."""
    image = np.asarray(image, dtype=np.float32)
    peak = float(image.max())
    if not peak > 0:
        raise InputError(f"{source}: no positive intensity inside the 160x192x160 crop "
                         f"(maximum {peak:g}); is this a brain image on the MNI152 grid?")
    return image / np.float32(peak)


def format_grid(shape: Sequence[int], spacing: Sequence[float] | None = None) -> str:
    """``256x124x256`` or ``256x124x256 of 0.859375x1.5x0.859375 mm``."""
    text = "x".join(str(int(s)) for s in shape)
    if spacing is not None:
        text += " of " + "x".join(f"{float(s):g}" for s in spacing) + " mm"
    return text


@contextlib.contextmanager
def staged_dataset(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out``; move its dataset into ``out`` on success.

    On any exception (``KeyboardInterrupt`` included) the staging folder is removed and ``out``
    is left exactly as it was (not even created). On success ``images/``, ``labels/`` and the
    manifest of ``out`` are replaced: the old manifest goes first and the new one comes last, so
    ``out`` never looks complete while it is mixed. Anything else in ``out`` is left alone.
    One preparation of ``out`` runs at a time (a lock beside it); it removes the staging folders
    that a killed one left behind.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; cannot write a dataset there")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside OUT, not inside: renames stay on one file system and a failure leaves OUT as it was.
    # The lock beside OUT makes one preparation at a time; it may then remove the staging
    # folders that a killed preparation left behind.
    with exclusive(out.parent / f".{out.name}.lock",
                   f"{out}: another preparation is writing this dataset; wait for it"):
        for leftover in out.parent.glob(f".{out.name}.staging-*"):
            log.info("removing %s, left by an interrupted preparation", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        try:
            yield staging
            if not (staging / MANIFEST).is_file():
                raise RuntimeError(f"{staging}: the preparer wrote no {MANIFEST}")
            _commit(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _commit(staging: Path, out: Path) -> None:
    out.mkdir(exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    old = staging / ".replaced"
    old.mkdir()
    for entry in DATASET_ENTRIES:
        if (out / entry).exists():
            os.replace(out / entry, old / entry)  # removed with the staging folder
        if (staging / entry).exists():
            os.replace(staging / entry, out / entry)
    os.replace(staging / MANIFEST, out / MANIFEST)
    log.debug("moved the staged dataset into %s", out)
