"""The suite's vocabulary: names of methods, conventions, table kinds, runs and pairs, and the
demo's subjects and split (datasets are named by their specs: :mod:`regbench.data.registry`).
Pure Python, no third-party import.

The workflow and the reports share these, so each name is written once. The Snakemake workflow
builds its DAG from them (and from the dataset registry), so a dry run needs neither
the prepared data nor the scientific stack: only Snakemake, PyYAML and jsonschema. Keep this
module free of imports beyond the standard library.

A *run* is one column of an experiment: a method at one slice step. Its per-pair results live in
``results/{dataset}/pairs/{experiment}/{run}/{moving}/{fixed}/``, under the file names below
(:data:`FIELD_FILE` ... :data:`RUN_RECORD`): no other module spells them.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence

CANONICAL_METHODS: tuple[str, ...] = (
    "identity", "affine", "syn", "voxelmorph", "voxelmorph-0.2", "voxelmorph-diff",
    "dualprnet-ssf", "dualprnet-dsf", "dualprnet")
"""Registry names in table/figure order (docs/contracts.md, "Method order")."""

CANONICAL_LABELS: dict[str, str] = {
    "identity": "Identity",
    "affine": "Affine",
    "syn": "SyN",
    "voxelmorph": "VoxelMorph",
    "voxelmorph-0.2": "VoxelMorph (release 0.2)",
    "voxelmorph-diff": "VoxelMorph (diffeomorphic)",
    "dualprnet-ssf": "Single-stream, single field",
    "dualprnet-dsf": "Dual-stream, single field",
    "dualprnet": "Dual-PRNet",
}
"""Labels of the canonical methods, used when the method registry cannot be imported."""

CONVENTIONS: tuple[str, ...] = ("faim", "merged")
"""The region Dice conventions (:mod:`regbench.metrics`), in table order."""

CONVENTION_TITLES: dict[str, str] = {"faim": "FAIM convention", "merged": "merged convention"}
"""How figures and tables name a convention."""

TABLE_KINDS: tuple[str, ...] = ("main", "ablation", "slice_spacing")
"""The kinds of tables (``regbench tables --kind``), one per experiment of the paper."""

TABLE_NEEDS: dict[str, tuple[str, ...]] = {"ablation": ("dualprnet-ssf", "dualprnet-dsf")}
"""Methods of which a table kind (and the experiment of its name) holds one at least, or it
shows nothing of what it is about: the reduced Dual-PRNets of the paper's ablation."""

MIN_SUBJECTS = 4
"""Fewest demo subjects: the test split needs at least 2."""
MAX_TEST_SUBJECTS = 4
MAX_VAL_SUBJECTS = 4


MANIFEST = "dataset.json"
"""A prepared dataset's record (grid, subjects, splits, labels, regions), written last."""

FIELD_FILE = "field.nii.gz"
"""A pair's displacement field, ``(X, Y, Z, 3)`` voxels, pull convention: the method's output."""
RUNTIME_FILE = "runtime.json"
"""How a pair's field was made: method, options, checkpoint, data, pair, time and device."""
METRICS_FILE = "metrics.json"
"""A pair's scores (docs/contracts.md), written last by the scoring: a complete evaluation."""
WARPED_FILE = "warped.nii.gz"
"""The moving image pulled through the field (kept on request)."""
WARPED_LABELS_FILE = "warped_labels.nii.gz"
"""The moving labels pulled through the field (kept on request)."""
SCORED_FILES: tuple[str, ...] = (METRICS_FILE, WARPED_FILE, WARPED_LABELS_FILE)
"""What scoring a pair writes beside its field: stale once the field is made again."""
RUN_RECORD = "run.json"
"""A run folder's registration setup (:mod:`regbench.runs`): method, options, slice step,
checkpoint, label."""
RUN_RECORD_LOCK = ".regbench.run.lock"
"""Held exclusively while a process reads and writes a run folder's record."""
RUN_ACTIVE_LOCK = ".regbench.active.lock"
"""Held shared while a process registers into a run folder, exclusively while it changes setups."""
RUN_FILES: tuple[str, ...] = (FIELD_FILE, RUNTIME_FILE, *SCORED_FILES, RUN_RECORD,
                              RUN_RECORD_LOCK, RUN_ACTIVE_LOCK, MANIFEST)
"""Every file name of a run folder and of a prepared dataset: spelled here alone (a test)."""


def run_name(method: str, slice_step: int = 1) -> str:
    """The run folder name: ``method``, or ``method-slice{step}`` when step > 1."""
    return method if int(slice_step) == 1 else f"{method}-slice{int(slice_step)}"


def ordered_pairs(subjects: Sequence[str]) -> list[tuple[str, str]]:
    """Every ordered ``(moving, fixed)`` pair of distinct subjects, moving-major in list order.

    The test pairs of a dataset are ``ordered_pairs`` of its test split: n subjects give
    n (n - 1) pairs.
    """
    return list(itertools.permutations(subjects, 2))


def pair_dir(dataset: str, experiment: str, run: str, moving: str | None = None,
             fixed: str | None = None) -> str:
    """Folder of one pair's results, or of one run (all its pairs) without moving and fixed."""
    folder = f"results/{dataset}/pairs/{experiment}/{run}"
    return folder if moving is None else f"{folder}/{moving}/{fixed}"


def demo_subjects(n: int) -> list[str]:
    """Subject IDs ``demo01 .. demoNN``, zero-padded to at least 2 digits."""
    width = max(2, len(str(n)))
    return [f"demo{i:0{width}d}" for i in range(1, n + 1)]


def demo_split(n: int, test_subjects: int | None = None
               ) -> tuple[list[str], list[str], list[str]]:
    """``(train, val, test)`` IDs of ``n`` demo subjects, in that order of the subject list.

    The test split is the last ``test_subjects`` subjects; by default the last quarter, at
    least 2 and at most :data:`MAX_TEST_SUBJECTS` (4 subjects give 12 ordered test pairs: enough
    for paired tests, few enough for ANTs on a CPU; a test over subjects needs more, 8 give an
    exact two-sided p as small as 0.008). The validation split, which only monitors training,
    is the quarter of the rest before them, at most :data:`MAX_VAL_SUBJECTS`, and empty when
    that is fewer than 2 subjects.

    Raises:
        ValueError: ``n`` is not a whole number of at least :data:`MIN_SUBJECTS`, or
            ``test_subjects`` is not a whole number that leaves 2 subjects to train on.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < MIN_SUBJECTS:
        raise ValueError(f"demo: subjects={n!r} is too few; at least {MIN_SUBJECTS}")
    subjects = demo_subjects(n)
    if test_subjects is None:
        test = min(MAX_TEST_SUBJECTS, max(2, n // 4))
    elif (isinstance(test_subjects, bool) or not isinstance(test_subjects, numbers.Integral)
          or not 2 <= test_subjects <= n - 2):
        raise ValueError(f"demo: test_subjects={test_subjects!r} must be a whole number from 2 "
                         f"to {n - 2} (subjects={n} less 2 to train on)")
    else:
        test = int(test_subjects)
    val = min(MAX_VAL_SUBJECTS, (n - test) // 4)
    val = val if val >= 2 else 0
    train = n - test - val
    return subjects[:train], subjects[train:train + val], subjects[train + val:]
