"""The metric table: every metric a registered pair is scored with, in one place.

Each row of :data:`METRICS` says how the metric is computed (one function of the pair) and how
it is reported: its key in ``metrics.json`` and ``per_pair.csv``, whether it is one number per
pair, a number per region (``per_pair.csv`` columns ``<key>/<Region>``) or per label
(``metrics.json`` only), its column in the main table, unit, printed digits and direction, and
whether records scored before the suite computed it may lack it. :mod:`regbench.evaluate`
scores a pair with the rows in order, :mod:`regbench.reports.aggregate` takes its columns from
them, :mod:`regbench.reports.tables` its metric columns, and tests/test_docs.py checks
docs/contracts.md against them. Adding a metric is one function and one row.

Every function here is read when it is called, not when the module is imported, so a row added
to :data:`METRICS` (a test's toy metric) reaches all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from regbench import metrics

Level = Literal["pair", "region", "label"]
"""One number per pair; region name -> number; label ID (a string) -> number."""


@dataclass(frozen=True)
class PairScoring:
    """What a metric function may read of one pair, all on the fixed grid ``(X, Y, Z)``.

    ``warped_labels``: the moving labels pulled through ``field`` (nearest neighbour);
    ``moving_image`` is the image the method registered (thinned when the slice step is > 1);
    ``field``: ``(3, X, Y, Z)`` in voxels; ``regions``: region name -> label IDs; ``labels``:
    the dataset's label IDs; ``spacing``: mm per voxel along each axis.
    """

    warped_labels: np.ndarray
    fixed_labels: np.ndarray
    moving_labels: np.ndarray
    moving_image: np.ndarray
    field: np.ndarray
    regions: Mapping[str, Sequence[int]]
    labels: Sequence[int]
    spacing: Sequence[float]


MetricFunction = Callable[[PairScoring, Mapping[str, Any]], Any]
"""A metric of a pair, given the pair and the values of the rows before it (so that a mean over
regions reuses the regions' values)."""


@dataclass(frozen=True)
class MetricSpec:
    """One row of the metric table.

    Attributes:
        key: Key in ``metrics.json``; column (``pair``) or column prefix (``region``) in
            ``per_pair.csv``.
        compute: The metric of a pair (:data:`MetricFunction`).
        level: ``pair``, ``region`` or ``label`` (:data:`Level`).
        description: What the value is, for docs/contracts.md.
        column: The main table's key for it (``<column>_mean`` and ``_std`` in its CSV); None
            when the main table does not show it as a column of its own.
        header: The main table's printed header.
        caption: The main table's caption sentence on it (after ``<header>: ``).
        unit: ``%``, ``mm`` or empty.
        digits: Decimals printed in the tables.
        higher_is_better: Direction, for the bold best value.
        optional: Records scored before the suite computed it lack it; they read as NaN.
    """

    key: str
    compute: MetricFunction
    level: Level
    description: str
    column: str | None = None
    header: str | None = None
    caption: str = ""
    unit: str = ""
    digits: int = 3
    higher_is_better: bool = False
    optional: bool = False


def _dice_faim(pair: PairScoring, _: Mapping[str, Any]) -> dict[str, float]:
    return metrics.region_dice_faim(pair.warped_labels, pair.fixed_labels, pair.regions)


def _dice_merged(pair: PairScoring, _: Mapping[str, Any]) -> dict[str, float]:
    return metrics.region_dice_merged(pair.warped_labels, pair.fixed_labels, pair.regions)


def _dice_labels(pair: PairScoring, _: Mapping[str, Any]) -> dict[str, float]:
    return {str(label): value for label, value in
            metrics.dice_per_label(pair.warped_labels, pair.fixed_labels, pair.labels).items()}


def _mean_over_regions(key: str) -> MetricFunction:
    """The NaN-ignoring mean of the earlier row ``key``'s per-region values."""
    return lambda _, scores: metrics.nanmean(scores[key].values())


def _learn2reg_dice(pair: PairScoring, _: Mapping[str, Any]) -> float:
    return metrics.learn2reg_case_dice(pair.warped_labels, pair.fixed_labels,
                                       pair.moving_labels, pair.labels)


def _folding(pair: PairScoring, _: Mapping[str, Any]) -> float:
    return metrics.folding_percent(pair.field)


def _sd_log_j(pair: PairScoring, _: Mapping[str, Any]) -> float:
    return metrics.log_jacobian_std(pair.field)


def _ndv(pair: PairScoring, _: Mapping[str, Any]) -> float:
    return metrics.non_diffeomorphic_volume(pair.field, pair.moving_image > 0)


def _hd95(pair: PairScoring, _: Mapping[str, Any]) -> dict[str, float]:
    return metrics.region_hd95(pair.warped_labels, pair.fixed_labels, pair.moving_labels,
                               pair.regions, pair.spacing)


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dice_faim", _dice_faim, "region", "region -> FAIM region Dice"),
    MetricSpec("dice_merged", _dice_merged, "region", "region -> merged region Dice"),
    MetricSpec("dice_labels", _dice_labels, "label", "label ID (string) -> Dice of that label"),
    MetricSpec("mean_dice_faim", _mean_over_regions("dice_faim"), "pair",
               "mean of `dice_faim` over regions", higher_is_better=True),
    MetricSpec("mean_dice_merged", _mean_over_regions("dice_merged"), "pair",
               "mean of `dice_merged` over regions", higher_is_better=True),
    MetricSpec("mean_dice_l2r", _learn2reg_dice, "pair",
               "Learn2Reg's case Dice: mean Dice over the labels present in both the fixed and "
               "the moving label map (its DSC30 is the 30th percentile of these)",
               higher_is_better=True, optional=True),
    MetricSpec("folding_percent", _folding, "pair",
               "% of voxels with a non-positive Jacobian determinant", column="folding_percent",
               header="Folding (%)", unit="%",
               caption="% of voxels with a non-positive Jacobian determinant (central "
                       "differences)."),
    MetricSpec("log_jacobian_std", _sd_log_j, "pair",
               "SD log J as Learn2Reg computes it: standard deviation of log(det J + 3)",
               column="log_jacobian_std", header="SD log J",
               caption="Learn2Reg's SDlogJ, the standard deviation of log(det J + 3) with "
                       "its differences and 2 voxels dropped at each face."),
    MetricSpec("ndv_percent", _ndv, "pair",
               "non-diffeomorphic volume, % of the volume where the moving image is above 0 "
               "(LUMIR's NDV)", column="ndv_percent", header="NDV (%)", unit="%", digits=4,
               optional=True,
               caption="non-diffeomorphic volume, % of the volume where the moving image is "
                       "above 0 in inverted tetrahedra (Liu et al., IJCV 2024; LUMIR's "
                       "measure and mask)."),
    MetricSpec("hd95", _hd95, "region", "region -> HD95 in mm (merged regions)", unit="mm"),
    MetricSpec("mean_hd95", _mean_over_regions("hd95"), "pair", "mean of `hd95` over regions",
               column="hd95_mm", header="HD95 (mm)", unit="mm", digits=2,
               caption="95th-percentile Hausdorff distance between surface elements weighted "
                       "by area (Learn2Reg's), mean over regions; a region missing from either "
                       "subject is skipped, one the method lost counts as the diagonal of the "
                       "image in mm, the worst case."),
)
"""The metric table, in the order of ``metrics.json``, of ``per_pair.csv``'s metric columns
and of the main table's metric columns."""

DICE30_SOURCE = "mean_dice_l2r"
"""The per-pair metric whose 30th percentile over the pairs is the tables' Dice30
(:func:`regbench.metrics.dice30`)."""


def score(pair: PairScoring) -> dict[str, Any]:
    """Every metric of :data:`METRICS` for one pair, by key, in table order."""
    scores: dict[str, Any] = {}
    for spec in METRICS:
        scores[spec.key] = spec.compute(pair, scores)
    return scores


def metric_keys() -> tuple[str, ...]:
    """Keys of every metric, in table order."""
    return tuple(spec.key for spec in METRICS)


def of_level(level: Level) -> tuple[MetricSpec, ...]:
    """The rows of one :data:`Level`, in table order."""
    return tuple(spec for spec in METRICS if spec.level == level)


def table_columns() -> tuple[MetricSpec, ...]:
    """The rows the main table shows as columns of their own, in table order."""
    return tuple(spec for spec in METRICS if spec.column is not None)
