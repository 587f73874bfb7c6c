"""Paired comparisons of runs with the test SUBJECT as the unit: each run against the reference
(Dual-PRNet at slice step 1), and every two runs against each other (what backs an ordering
claim such as "A > B > C, each step significant").

Why not the pairs. The test pairs are the ordered pairs of a few test subjects: each subject is
in ``2 (n - 1)`` of the ``n (n - 1)`` pairs, and A->B mirrors B->A. The pairs are not
independent, so a test that counts them as the sample claims far more evidence than there is.

The subject's number. The mean of a run's differences over the pairs is a U-statistic of the
subjects (every pair is a function of two subjects). Its delete-one-subject jackknife
pseudo-values ``P_s = n U - (n - 1) U_(-s)`` (``U_(-s)``: the mean over the pairs without subject
``s``) are one number per subject, nearly independent, whose spread estimates the sampling
variance of ``U`` (Arvesen 1969, "Jackknifing U-statistics", Ann.
Math. Statist. 40: 2076-2100; the same delete-one-unit idea as the variance estimators of dyadic
data, Aronow, Samii and Assenova 2015, Political Analysis 23: 564-577). With every ordered pair
present, ``P_s = U + 2 (n - 1) / (n - 2) (m_s - U)``, where ``m_s`` is the mean over the pairs
that contain ``s``, and the mean of the ``P_s`` is ``U``. A test on the plain subject means
``m_s`` would not do: every ``m_s`` holds every other subject's effect, so one hard subject
moves them all the same way (tests/test_reports.py measures how often it errs).

The tests, on the pseudo-values of the differences ``run - other`` of a per-pair score
(normally its mean region Dice), pairs matched by ``(moving, fixed)``:

* difference: two-sided Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`, zeros dropped,
  ``method="exact"``: the exact null distribution whatever the number of subjects, asked for
  explicitly because SciPy's default falls back to a permutation test or the normal
  approximation when there are ties or zeros; with ties or zeros SciPy 1.13 and later round the
  statistic conservatively, while earlier versions switched to the normal approximation, so the
  suite requires SciPy >= 1.13, :data:`MIN_SCIPY`). With ``n`` nonzero differences its smallest
  possible p is ``2 / 2^n`` (0.125 for 4 subjects): :func:`descriptive_note` says when a table
  cannot reach significance at all;
* 95 % confidence interval of the mean difference: the jackknife t interval, the pseudo-values'
  mean ± ``t(0.975, n - 1)`` times their standard error (Tukey's). Each interval is for its own
  comparison, NOT adjusted for multiplicity (unlike the Holm-corrected tests): over several
  comparisons some will exclude 0 by chance, and an interval that excludes 0 where the test is
  not significant is no contradiction (:data:`INTERVAL_TEXT`, which the captions carry);
* equivalence within ± ``margin`` (default :data:`EQUIVALENCE_MARGIN`): two one-sided tests
  (TOST, Schuirmann 1987, J. Pharmacokinet. Biopharm. 15: 657-680), each an exact one-sided
  signed-rank test of the pseudo-values shifted by the margin, so that it rests on the same
  ranks as the test of a difference; its p is the larger of the two, at smallest ``1 / 2^n``.

The p-values of one family (the runs of one table column, or all the pairs of runs of one
dataset and convention) are Holm-corrected together, those of the difference and of the TOST
each on their own. A comparison with fewer than 3 subjects, or whose differences are all zero,
is not testable: p = NaN, no mark.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from regbench.reports.style import REFERENCE_METHOD, order_runs, run_label

log = logging.getLogger(__name__)

ALPHA = 0.05
"""Level of every test: the least strict of :data:`SIGNIFICANCE_LEVELS`, and of the TOST."""
SIGNIFICANCE_LEVELS: tuple[tuple[float, str], ...] = ((0.001, "***"), (0.01, "**"), (ALPHA, "*"))
"""(threshold, mark) from the strictest: a Holm-adjusted p below the threshold gets the mark."""
EQUIVALENCE_MARGIN = 0.02
"""Default equivalence margin of the TOST, in the score's units (mean region Dice)."""
CONFIDENCE = 0.95
MIN_SUBJECTS = 3
"""Fewest subjects for a test: with 2, deleting either leaves no pair."""
MIN_SCIPY = "1.13"
"""First SciPy whose ``method="exact"`` signed-rank test keeps the exact null distribution
with ties and zeros (rounding the statistic conservatively, scipy gh-19872) instead of falling
back to the normal approximation (the pins in pyproject.toml, environment.yml and
workflow/envs/regbench.yaml require it)."""
WILCOXON_METHOD = "exact"
INTERVAL_TEXT = ("The 95 % confidence intervals are each for one comparison, not adjusted for "
                 "multiplicity as the tests are: some exclude 0 by chance, also where no test "
                 "can be significant.")
"""What the tables say of the intervals (:func:`footnote`)."""

Verdict = Literal["higher", "lower", "equivalent", "not significantly different",
                  "too few subjects", "not testable"]
COMPARISON_COLUMNS: tuple[str, ...] = (
    "n_subjects", "n_pairs", "mean_difference", "ci_low", "ci_high", "W", "p_raw", "p_min",
    "p_holm", "mark", "margin", "p_tost", "p_tost_holm", "verdict")
"""Columns of one comparison, after the columns that name the two runs."""
STATS_COLUMNS: tuple[str, ...] = (
    "dataset", "score", "method", "slice_step", "label", "reference", *COMPARISON_COLUMNS)
PAIRWISE_COLUMNS: tuple[str, ...] = (
    "dataset", "score", "method", "slice_step", "label", "versus", "versus_slice_step",
    "versus_label", *COMPARISON_COLUMNS)
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


def subject_pseudo_values(moving: Sequence[str], fixed: Sequence[str],
                          differences: Sequence[float]) -> pd.Series:
    """Delete-one-subject jackknife pseudo-values of the mean of per-pair ``differences``.

    Args:
        moving, fixed: the subjects of each pair.
        differences: one finite number per pair.

    Returns:
        ``n U - (n - 1) U_(-s)`` for each of the ``n`` subjects ``s`` of the pairs (sorted),
        where ``U`` is the mean over all pairs and ``U_(-s)`` over the pairs without ``s``.
        Empty when a subject is in every pair (fewer than 3 subjects, or one fixed atlas):
        there is then no subject-level estimate of the spread.
    """
    moving, fixed = np.asarray(moving, dtype=str), np.asarray(fixed, dtype=str)
    d = np.asarray(differences, dtype=float)
    subjects = sorted(set(moving) | set(fixed))
    n = len(subjects)
    values = {}
    for subject in subjects:
        kept = (moving != subject) & (fixed != subject)
        if not kept.any():
            return pd.Series(dtype=float)
        values[subject] = n * d.mean() - (n - 1) * d[kept].mean()
    return pd.Series(values, dtype=float)


def wilcoxon_paired(differences: Sequence[float]) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank ``(W, p)`` of paired differences; NaN when undefined.

    Undefined: no finite difference, or every difference zero (the test drops zeros).
    """
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    if not np.any(d != 0):
        return float("nan"), float("nan")
    result = scipy_stats.wilcoxon(d, method=WILCOXON_METHOD)
    return float(result.statistic), float(result.pvalue)


def smallest_p(n: int, sides: Literal[1, 2] = 2) -> float:
    """The smallest p an exact signed-rank test of ``n`` nonzero values can give: all of one
    sign, ``sides / 2^n`` (NaN for ``n = 0``)."""
    return min(1.0, sides / 2.0 ** n) if n > 0 else float("nan")


def tost_wilcoxon(values: Sequence[float], margin: float) -> float:
    """p of the equivalence of ``values``' location with 0 within ± ``margin``: the larger p of
    the one-sided signed-rank tests of ``values + margin > 0`` and ``values - margin < 0``.

    Raises:
        ValueError: ``margin`` is not positive.
    """
    if not margin > 0:
        raise ValueError(f"equivalence margin must be positive, got {margin}")
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    p = []
    for shifted, alternative in ((v + margin, "greater"), (v - margin, "less")):
        if not np.any(shifted != 0):
            return float("nan")
        p.append(float(scipy_stats.wilcoxon(shifted, alternative=alternative,
                                            method=WILCOXON_METHOD).pvalue))
    return max(p)


def jackknife_interval(values: Sequence[float],
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided t interval of the mean of jackknife pseudo-values (NaN for fewer than 2)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    half = scipy_stats.t.ppf((1 + confidence) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def compare_runs(pairs: pd.DataFrame, margin: float = EQUIVALENCE_MARGIN) -> dict[str, object]:
    """One comparison of two runs from their matched pairs.

    Args:
        pairs: one row per matched pair, columns ``moving``, ``fixed`` and ``difference``
            (finite).
        margin: equivalence margin of the TOST.

    Returns:
        The :data:`COMPARISON_COLUMNS` but ``p_holm``, ``mark``, ``p_tost_holm`` and
        ``verdict``, which need the whole family.
    """
    pseudo = subject_pseudo_values(pairs["moving"], pairs["fixed"], pairs["difference"])
    if len(pseudo) < MIN_SUBJECTS:
        pseudo = pd.Series(dtype=float)
    w, p = wilcoxon_paired(pseudo)
    low, high = jackknife_interval(pseudo)
    return {
        "n_subjects": len(set(pairs["moving"]) | set(pairs["fixed"])),
        "n_pairs": len(pairs),
        "mean_difference": float(pairs["difference"].mean()) if len(pairs) else float("nan"),
        "ci_low": low, "ci_high": high, "W": w, "p_raw": p,
        "p_min": smallest_p(int(np.count_nonzero(pseudo))) if np.isfinite(p) else float("nan"),
        "margin": margin,
        "p_tost": tost_wilcoxon(pseudo, margin) if np.isfinite(p) else float("nan"),
    }


def compare_to_reference(per_pair: pd.DataFrame, score: str, reference: str = REFERENCE_METHOD,
                         reference_step: int = 1,
                         margin: float = EQUIVALENCE_MARGIN) -> pd.DataFrame:
    """Test every run of ``per_pair`` (one dataset) against the reference run on ``score``.

    ``per_pair`` has the per-pair columns (``method``, ``slice_step``, ``label``, ``moving``,
    ``fixed``, ``score``). Returns one row per compared run, in report order, with the columns
    of :data:`STATS_COLUMNS` (differences: run minus reference). Empty when the reference is
    absent.
    """
    dataset, keyed, labels = _runs_of_one_dataset(per_pair)
    ref = (reference, reference_step)
    if ref not in labels:
        log.warning("no %s run at slice step %d in %s: no significance tests", reference,
                    reference_step, dataset)
        return pd.DataFrame(columns=list(STATS_COLUMNS))
    rows = []
    for method, step in labels:
        if (method, step) == ref:
            continue
        pairs = _differences(keyed, (method, step), ref, score)
        rows.append({
            "dataset": dataset, "score": score, "method": method, "slice_step": step,
            "label": labels[(method, step)], "reference": labels[ref],
            **compare_runs(pairs, margin),
        })
    return _corrected(pd.DataFrame(rows, columns=list(STATS_COLUMNS)))


def pairwise_tests(per_pair: pd.DataFrame, score: str,
                   margin: float = EQUIVALENCE_MARGIN) -> pd.DataFrame:
    """Every two runs of ``per_pair`` (one dataset) tested against each other on ``score``.

    One row per unordered pair of runs: ``method`` is the earlier run in report order,
    ``versus`` the later, differences are ``method - versus``; columns
    :data:`PAIRWISE_COLUMNS`. The p-values of all the pairs are Holm-corrected together.
    """
    dataset, keyed, labels = _runs_of_one_dataset(per_pair)
    runs = list(labels)
    rows = []
    for index, first in enumerate(runs):
        for second in runs[index + 1:]:
            rows.append({
                "dataset": dataset, "score": score, "method": first[0],
                "slice_step": first[1], "label": labels[first], "versus": second[0],
                "versus_slice_step": second[1], "versus_label": labels[second],
                **compare_runs(_differences(keyed, first, second, score), margin),
            })
    return _corrected(pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS)))


def verdict(p_holm: float, p_tost_holm: float, mean_difference: float,
            attainable: bool = True) -> Verdict:
    """What a comparison lets one say: a significant difference first ("higher"/"lower": the
    first run against the second), else equivalence within the margin, else "not significantly
    different"; or "too few subjects" when its family could not have reached significance
    (``attainable`` false, see :func:`attainable`)."""
    if not np.isfinite(p_holm):
        return "not testable"
    if p_holm < ALPHA:
        return "higher" if mean_difference > 0 else "lower"
    if np.isfinite(p_tost_holm) and p_tost_holm < ALPHA:
        return "equivalent"
    return "not significantly different" if attainable else "too few subjects"


def attainable(n_subjects: int, n_comparisons: int, sides: Literal[1, 2] = 2) -> bool:
    """Whether Holm over ``n_comparisons`` tests of ``n_subjects`` each can give a p below
    :data:`ALPHA` at all: the family's smallest p, times its size, is below it."""
    return n_comparisons * smallest_p(n_subjects, sides) < ALPHA


def _runs_of_one_dataset(per_pair: pd.DataFrame
                         ) -> tuple[str, pd.DataFrame, dict[tuple[str, int], str]]:
    """``(dataset, rows keyed by (method, slice_step), label of each run in report order)``.

    Raises:
        ValueError: ``per_pair`` holds more than one dataset.
    """
    datasets = per_pair["dataset"].unique()
    if len(datasets) != 1:
        raise ValueError(f"compare one dataset at a time, got {list(datasets)}")
    runs = order_runs(zip(per_pair["method"], per_pair["slice_step"], strict=True))
    keyed = per_pair.set_index(["method", "slice_step"])
    labels = {run: run_label(str(keyed.loc[[run]]["label"].iloc[0]), run[1]) for run in runs}
    return datasets[0], keyed, labels


def _differences(keyed: pd.DataFrame, run: tuple[str, int], other: tuple[str, int],
                 score: str) -> pd.DataFrame:
    """Matched pairs (``moving``, ``fixed``) with a finite ``difference`` ``run - other``."""
    left = keyed.loc[[run]].set_index(["moving", "fixed"])[[score]]
    right = keyed.loc[[other]].set_index(["moving", "fixed"])[[score]]
    matched = left.merge(right, how="inner", left_index=True, right_index=True,
                         suffixes=("", "_other"))
    matched["difference"] = matched[score] - matched[f"{score}_other"]
    matched = matched[np.isfinite(matched["difference"].to_numpy(dtype=float))]
    return matched.reset_index()[["moving", "fixed", "difference"]]


def _corrected(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with Holm over its rows (``p_holm``, ``p_tost_holm``), marks and verdicts."""
    p_raw = table["p_raw"].to_numpy(dtype=float)
    table["p_holm"] = holm(p_raw)
    table["p_tost_holm"] = holm(table["p_tost"].to_numpy(dtype=float))
    table["mark"] = [significance_mark(p) for p in table["p_holm"]]
    testable = np.isfinite(p_raw)
    reachable = bool(testable.any()) and attainable(
        int(table.loc[testable, "n_subjects"].max()), int(testable.sum()))
    table["verdict"] = [verdict(*row, attainable=reachable) for row in zip(
        table["p_holm"], table["p_tost_holm"], table["mean_difference"], strict=True)]
    return table


def descriptive_note(tests: pd.DataFrame) -> str:
    """A sentence when the comparisons of ``tests`` cannot reach :data:`ALPHA`; else "".

    ``tests``: rows of :data:`STATS_COLUMNS` (each run against the reference), one Holm family
    per dataset and score. In the family that comes nearest, the smallest p its subjects allow,
    times the family's size (Holm's first step), is compared with ``ALPHA``. When it is not
    below, no difference can be significant and the ordering of the runs is descriptive. When
    it is, the note may still say that the family of every two runs (``*_pairwise.csv``, which
    backs an ordering of them all) is too large to reach it.
    """
    testable = tests[np.isfinite(tests["p_raw"].to_numpy(dtype=float))]
    if testable.empty:
        return ""
    families = [(int(family["n_subjects"].max()), len(family))
                for _, family in testable.groupby(["dataset", "score"])]
    n, m = min(families, key=lambda f: f[1] * smallest_p(f[0]))
    every_two = (m + 1) * m // 2
    if attainable(n, m) and attainable(n, every_two):
        return ""
    size, where = (m, "") if not attainable(n, m) else (every_two, " between every two runs")
    holm_text = (f", {min(1.0, size * smallest_p(n)):.3g} after Holm over {size} "
                 f"comparisons{where}") if size > 1 else ""
    note = (f"With {n} test subjects the smallest two-sided p a test can give is "
            f"{smallest_p(n):.3g}{holm_text}, not below {ALPHA}: ")
    if where:
        return note + ("no ordering of all the runs of this table can be significant "
                       "(*_pairwise.csv).")
    note += "no difference between the runs of this table can be significant, and their " \
            "ordering is descriptive."
    if not attainable(n, m, sides=1):
        note += (" Nor can equivalence be shown (smallest TOST p "
                 f"{min(1.0, m * smallest_p(n, sides=1)):.3g}).")
    return note


def footnote(tests: pd.DataFrame, score: str = "mean region Dice",
             reference: str = "Dual-PRNet") -> str:
    """Plain-text explanation of the significance marks of ``tests`` against ``reference``
    (rows of :data:`STATS_COLUMNS`, one Holm family per dataset and score), with
    :func:`descriptive_note`."""
    subjects = sorted(set(tests["n_subjects"].astype(int)))
    n_text = str(subjects[0]) if len(subjects) == 1 else f"{subjects[0]}-{subjects[-1]}"
    sizes = sorted(set(tests.groupby(["dataset", "score"]).size()))
    m_text = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    text = (f"Marks: the test subject is the unit (n = {n_text} subjects; their ordered pairs "
            "are not independent). Each subject's number is the jackknife pseudo-value of the "
            f"mean difference of the pairs' {score} from {reference} (pairs matched by moving "
            "and fixed subject); two-sided Wilcoxon signed-rank test over subjects, "
            f"Holm-corrected across the {m_text} compared row(s) of the column: "
            "* p < 0.05, ** p < 0.01, *** p < 0.001; no mark: not significantly different or "
            "not testable, which is no evidence of equivalence. 95 % confidence intervals "
            "(jackknife t) and equivalence tests (TOST) are in the *_stats.csv and "
            f"*_pairwise.csv files. {INTERVAL_TEXT}")
    note = descriptive_note(tests)
    return f"{text} {note}" if note else text
