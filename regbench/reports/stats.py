"""Paired tests of each run against the reference (Dual-PRNet at slice step 1).

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
    ref = keyed.loc[[(reference, reference_step)]].set_index(["moving", "fixed"])
    ref_label = run_label(str(ref["label"].iloc[0]), reference_step)
    rows = []
    for method, step in runs:
        if (method, step) == (reference, reference_step):
            continue
        run = keyed.loc[[(method, step)]].set_index(["moving", "fixed"])
        matched = run[[score]].merge(ref[[score]], how="inner", left_index=True,
                                     right_index=True, suffixes=("", "_reference"))
        diff = (matched[score] - matched[f"{score}_reference"]).to_numpy(dtype=float)
        diff = diff[np.isfinite(diff)]
        w, p = wilcoxon_paired(diff)
        rows.append({
            "dataset": datasets[0], "score": score, "method": method, "slice_step": step,
            "label": run_label(str(run["label"].iloc[0]), step), "reference": ref_label,
            "n": len(diff),
            "median_difference": float(np.median(diff)) if len(diff) else float("nan"),
            "mean_difference": float(np.mean(diff)) if len(diff) else float("nan"),
            "W": w, "p_raw": p,
        })
    table = pd.DataFrame(rows, columns=list(STATS_COLUMNS))
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
