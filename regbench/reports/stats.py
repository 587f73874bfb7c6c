"""Paired tests of each run against the reference (Dual-PRNet at slice step 1), and of every two
runs against each other (what backs an ordering claim such as "A > B > C, each step
significant").

For each compared run: the pairs registered by both runs are matched by ``(moving, fixed)``,
the differences ``run - reference`` of a per-pair score (normally its mean region Dice) are
tested with the two-sided Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`, zero
differences dropped, exact distribution for small samples without ties), and the p-values of
all runs compared in one table column are Holm-corrected together. A run with no matched pair,
or whose differences are all zero, gets p = NaN and no mark.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from regbench.reports.style import REFERENCE_METHOD, order_runs, run_label

log = logging.getLogger(__name__)

SIGNIFICANCE_LEVELS: tuple[tuple[float, str], ...] = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
"""(threshold, mark) from the strictest: a Holm-adjusted p below the threshold gets the mark."""

STATS_COLUMNS: tuple[str, ...] = (
    "dataset", "score", "method", "slice_step", "label", "reference", "n", "median_difference",
    "mean_difference", "W", "p_raw", "p_holm", "mark")

PAIRWISE_COLUMNS: tuple[str, ...] = (
    "dataset", "score", "method", "slice_step", "label", "versus", "versus_slice_step",
    "versus_label", "n", "median_difference", "mean_difference", "W", "p_raw", "p_holm", "mark")
"""Columns of :func:`pairwise_tests`: run ``method`` minus run ``versus``."""


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN entries stay NaN and do not count as tests.

    Sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))`` for
    ``m`` tests (i, j from 1).
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


def significance_mark(p: float) -> str:
    """``***``, ``**``, ``*`` or ``""`` for an (adjusted) p-value; NaN gets no mark."""
    if not np.isfinite(p):
        return ""
    for threshold, mark in SIGNIFICANCE_LEVELS:
        if p < threshold:
            return mark
    return ""


def wilcoxon_paired(differences: Sequence[float]) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank ``(W, p)`` of paired differences; NaN when undefined.

    Undefined: no finite difference, or every difference zero (the test drops zeros).
    """
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    if not np.any(d != 0):
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        # Ties or zeros: SciPy falls back to the normal approximation and warns.
        warnings.simplefilter("ignore", UserWarning)
        result = scipy_stats.wilcoxon(d)
    return float(result.statistic), float(result.pvalue)


def compare_to_reference(per_pair: pd.DataFrame, score: str, reference: str = REFERENCE_METHOD,
                         reference_step: int = 1) -> pd.DataFrame:
    """Test every run of ``per_pair`` (one dataset) against the reference run on ``score``.

    ``per_pair`` has the per-pair columns (``method``, ``slice_step``, ``label``, ``moving``,
    ``fixed``, ``score``). Returns one row per compared run, in report order, with the columns
    of :data:`STATS_COLUMNS` (``n``: matched pairs with a finite difference;
    ``median_difference``/``mean_difference``: run minus reference; ``W``: SciPy's statistic,
    the smaller of the positive- and negative-rank sums). Empty when the reference is absent.
    """
    datasets = per_pair["dataset"].unique()
    if len(datasets) != 1:
        raise ValueError(f"compare one dataset at a time, got {list(datasets)}")
    runs = order_runs(zip(per_pair["method"], per_pair["slice_step"], strict=True))
    if (reference, reference_step) not in runs:
        log.warning("no %s run at slice step %d in %s: no significance tests", reference,
                    reference_step, datasets[0])
        return pd.DataFrame(columns=list(STATS_COLUMNS))
    keyed = per_pair.set_index(["method", "slice_step"])
    ref_label = run_label(str(keyed.loc[[(reference, reference_step)]]["label"].iloc[0]),
                          reference_step)
    rows = []
    for method, step in runs:
        if (method, step) == (reference, reference_step):
            continue
        diff = _differences(keyed, (method, step), (reference, reference_step), score)
        w, p = wilcoxon_paired(diff)
        rows.append({
            "dataset": datasets[0], "score": score, "method": method, "slice_step": step,
            "label": run_label(str(keyed.loc[[(method, step)]]["label"].iloc[0]), step),
            "reference": ref_label, **_summary(diff), "W": w, "p_raw": p,
        })
    return _corrected(pd.DataFrame(rows, columns=list(STATS_COLUMNS)))


def pairwise_tests(per_pair: pd.DataFrame, score: str) -> pd.DataFrame:
    """Every two runs of ``per_pair`` (one dataset) tested against each other on ``score``.

    One row per unordered pair of runs: ``method`` is the earlier run in report order,
    ``versus`` the later, differences are ``method - versus``; columns
    :data:`PAIRWISE_COLUMNS`. The p-values of all the pairs are Holm-corrected together.
    """
    datasets = per_pair["dataset"].unique()
    if len(datasets) != 1:
        raise ValueError(f"compare one dataset at a time, got {list(datasets)}")
    runs = order_runs(zip(per_pair["method"], per_pair["slice_step"], strict=True))
    keyed = per_pair.set_index(["method", "slice_step"])
    labels = {run: run_label(str(keyed.loc[[run]]["label"].iloc[0]), run[1]) for run in runs}
    rows = []
    for index, first in enumerate(runs):
        for second in runs[index + 1:]:
            diff = _differences(keyed, first, second, score)
            w, p = wilcoxon_paired(diff)
            rows.append({
                "dataset": datasets[0], "score": score, "method": first[0],
                "slice_step": first[1], "label": labels[first], "versus": second[0],
                "versus_slice_step": second[1], "versus_label": labels[second],
                **_summary(diff), "W": w, "p_raw": p,
            })
    return _corrected(pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS)))


def _differences(keyed: pd.DataFrame, run: tuple[str, int], other: tuple[str, int],
                 score: str) -> np.ndarray:
    """Finite per-pair differences ``run - other`` of ``score``, pairs matched by subjects."""
    left = keyed.loc[[run]].set_index(["moving", "fixed"])[[score]]
    right = keyed.loc[[other]].set_index(["moving", "fixed"])[[score]]
    matched = left.merge(right, how="inner", left_index=True, right_index=True,
                         suffixes=("", "_other"))
    diff = (matched[score] - matched[f"{score}_other"]).to_numpy(dtype=float)
    return diff[np.isfinite(diff)]


def _summary(diff: np.ndarray) -> dict[str, float]:
    """``n``, ``median_difference`` and ``mean_difference`` of paired differences."""
    return {"n": len(diff),
            "median_difference": float(np.median(diff)) if len(diff) else float("nan"),
            "mean_difference": float(np.mean(diff)) if len(diff) else float("nan")}


def _corrected(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``p_holm`` (Holm over its rows) and the ``mark`` it earns."""
    table["p_holm"] = holm(table["p_raw"].to_numpy(dtype=float))
    table["mark"] = [significance_mark(p) for p in table["p_holm"]]
    return table


def footnote(n_compared: int, score: str = "mean region Dice",
             reference: str = "Dual-PRNet") -> str:
    """Plain-text explanation of the significance marks."""
    return (f"Marks: two-sided Wilcoxon signed-rank test of each pair's {score} against "
            f"{reference} (pairs matched by moving and fixed subject), Holm-corrected across "
            f"the {n_compared} compared row(s) of the column: * p < 0.05, ** p < 0.01, "
            "*** p < 0.001; no mark: not significant or not testable.")
