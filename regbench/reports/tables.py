"""Camera-ready tables from per-pair results: CSV (numbers), Markdown and LaTeX (booktabs).

Three kinds (file stems under the output folder):

* ``main`` -> ``table1_faim`` and/or ``table1_merged``: the paper's Table 1 for one dataset.
  Rows: our runs in report order, then the paper's numbers as reference rows (``Source``
  "paper"). Columns: each region's Dice, ``Average`` (each pair's mean region Dice),
  ``Dice30`` (Learn2Reg's robustness score: the 30th percentile of the pairs' Learn2Reg case
  Dice, :data:`~regbench.metric_table.DICE30_SOURCE`; ``dice30`` in the CSV), time per pair (s;
  devices in the caption), then the metric table's columns
  (:func:`~regbench.metric_table.table_columns`: folding, SD log J, NDV, HD95), test pairs.
* ``ablation`` -> ``ablation``: the ablation runs; one column of mean Dice per dataset and
  convention; paper rows from :data:`~regbench.data.protocol.PAPER_ABLATION`.
* ``slice_spacing`` -> ``slice_spacing``: runs at each slice step (Dual-PRNet at 1 and 8);
  paper rows from :data:`~regbench.data.protocol.PAPER_SLICE_SPACING` (slice step 8) and the
  paper's Dual-PRNet average (slice step 1).

Every cell is "mean ± std" over test pairs with the SAMPLE standard deviation (ddof = 1; a
single pair has no std). Bold: the best of our rows per column (highest Dice; lowest time,
folding, SD log J, HD95), judged at the printed precision; so every run of a dataset must be
scored on the same pairs (:func:`check_same_pairs` refuses others). Marks on mean Dice:
Holm-corrected tests against Dual-PRNet with the test subject as the unit
(:mod:`regbench.reports.stats`), with their confidence intervals and equivalence tests written
to ``<stem>_stats.csv``
(``table1_stats.csv`` for the main table); every two runs tested against each other,
Holm-corrected together per dataset and convention, go to ``<stem>_pairwise.csv``. The caption
says the unit and n; a note says when the table has too few subjects for any test to reach
significance, so that its ordering is descriptive.
The paper reports the FAIM convention only; its rows sit in the FAIM columns and are repeated,
marked as FAIM, in merged tables. The synthetic demo has no paper numbers: its tables show the
paper's LPBA40 rows for orientation, labelled "paper (LPBA40)".

The ``.csv`` holds plain numbers (``<column>_mean``, ``<column>_std``); ``.md`` and ``.tex`` the
formatted table. The LaTeX is a ``table`` float with booktabs rules, resized to the line width:
it needs ``\\usepackage{booktabs}`` and ``\\usepackage{graphicx}``.
"""

from __future__ import annotations

import logging
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from regbench import metric_table
from regbench.data import protocol, registry
from regbench.io import InputError, write_text
from regbench.metrics import dice30
from regbench.naming import CONVENTIONS, TABLE_KINDS, run_name
from regbench.reports.aggregate import regions, write_csv
from regbench.reports.stats import (
    EQUIVALENCE_MARGIN,
    PAIRWISE_COLUMNS,
    STATS_COLUMNS,
    compare_to_reference,
    footnote,
    pairwise_tests,
)
from regbench.reports.style import (
    CANONICAL_LABELS,
    REFERENCE_METHOD,
    order_runs,
    run_label,
)

log = logging.getLogger(__name__)

CONVENTION_TEXT = {
    "faim": "FAIM convention: Dice of each label, averaged within each region",
    "merged": "merged convention: labels merged into regions before Dice",
}
PAPER_SLICE_STEP = 8
"""The paper's large slice spacing: 192 -> 24 slices of the moving volume."""
PAPER_ABLATION_METHODS = {"dual-stream single-field": "dualprnet-dsf",
                          "dual-stream pyramid": "dualprnet"}
"""Keys of ``protocol.PAPER_ABLATION`` -> method names."""
OURS, PAPER = "ours", "paper"
DICE30_CAPTION = ("Dice30: Learn2Reg's robustness score, the 30th percentile over the pairs of "
                  "each pair's mean Dice over the labels present in both subjects (Learn2Reg's "
                  "case Dice, per label whatever the convention).")
MISSING = "–"


@dataclass(frozen=True)
class Metric:
    """A main-table column: ``key`` in the CSV, ``header`` printed, per-pair ``source`` column."""

    key: str
    header: str
    source: str
    digits: int
    higher_is_better: bool


@dataclass
class Table:
    """One table in every format.

    ``numbers``: machine-readable rows (the CSV). ``cells``: printed text per row and column
    (``±``, marks and ``–`` for missing, unescaped); ``bold``: same shape, best of our rows;
    ``paper``: which rows are the paper's; ``stats``: the significance tests behind the marks.
    """

    stem: str
    numbers: pd.DataFrame
    cells: pd.DataFrame
    bold: pd.DataFrame
    paper: list[bool]
    caption: str
    notes: list[str] = field(default_factory=list)
    stats: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def label(self) -> str:
        return f"tab:{self.stem}"


# --- building -----------------------------------------------------------------------------------


def main_table(per_pair: pd.DataFrame, convention: str,
               margin: float = EQUIVALENCE_MARGIN) -> Table:
    """The paper's Table 1 for the one dataset of ``per_pair`` in one Dice convention
    (``margin``: of the equivalence tests in :attr:`Table.stats`)."""
    _check_convention(convention)
    dataset = _single_dataset(per_pair)
    metrics = [
        *(Metric(r, r, f"dice_{convention}/{r}", 3, True)
          for r in regions(per_pair, f"dice_{convention}")),
        Metric("average", "Average", f"mean_dice_{convention}", 3, True),
        Metric("time_s", "Time (s)", "time_s", 2, False),
        *(Metric(spec.column, spec.header or spec.column, spec.key, spec.digits,
                 spec.higher_is_better) for spec in metric_table.table_columns()),
    ]
    tests = compare_to_reference(per_pair, f"mean_dice_{convention}", margin=margin)
    marks = _marks(tests)
    rows, cells = [], []
    for (method, step), runs in _runs(per_pair):
        row = {"source": OURS, "method": method, "slice_step": step,
               "label": run_label(_label(runs, method), step), "n": len(runs),
               "device": "; ".join(sorted(runs["device"].dropna().astype(str).unique()))}
        text = {"Method": row["label"], "Source": OURS}
        for metric in metrics:
            values = runs[metric.source].to_numpy(dtype=float)
            mean, std = _mean_std(values)
            row[f"{metric.key}_mean"], row[f"{metric.key}_std"] = mean, std
            text[metric.header] = _mean_std_text(mean, std, metric.digits)
        row["dice30"] = dice30(runs[metric_table.DICE30_SOURCE].to_numpy(dtype=float))
        text["Dice30"] = _mean_std_text(row["dice30"], math.nan, 3)
        mark = marks.get((method, step), ("", math.nan))
        row["p_holm"], row["mark"] = mark[1], mark[0]
        text["Average"] += mark[0]
        text["Pairs"] = str(row["n"])
        rows.append(row)
        cells.append(text)
    n_ours = len(rows)
    source, reference = _paper_source(dataset)
    for label, values in protocol.PAPER_REFERENCE.get(reference, {}).items():
        row = {"source": source, "method": _method_of(label), "slice_step": 1, "label": label}
        text = {"Method": label, "Source": source}
        paper_values = {**values, "average": values.get("Average"),
                        "time_s": values.get("Time (s)")}
        for metric in metrics:
            value = paper_values.get(metric.key)
            row[f"{metric.key}_mean"] = math.nan if value is None else float(value)
            row[f"{metric.key}_std"] = math.nan
            text[metric.header] = _mean_std_text(row[f"{metric.key}_mean"], math.nan,
                                                 metric.digits)
        row["dice30"], text["Dice30"] = math.nan, MISSING
        text["Pairs"] = MISSING
        rows.append(row)
        cells.append(text)
    numbers = pd.DataFrame(rows, columns=[
        "source", "method", "label", "slice_step", "n", "device",
        *(f"{m.key}_{s}" for m in metrics for s in ("mean", "std")), "dice30", "p_holm", "mark"])
    headers = [m.header for m in metrics]
    headers.insert(headers.index("Average") + 1, "Dice30")
    cell_frame = pd.DataFrame(cells, columns=["Method", "Source", *headers, "Pairs"])
    bold = _best(numbers.assign(dice30_mean=numbers["dice30"]), cell_frame, n_ours,
                 {"Dice30": ("dice30", 3, True),
                  **{m.header: (m.key, m.digits, m.higher_is_better) for m in metrics}})
    n_pairs = sorted(set(numbers["n"].iloc[:n_ours].astype(int)))
    caption = (
        f"Registration of {registry.caption_name(dataset)} test pairs "
        f"({_pairs_text(n_pairs)}), region Dice in the {CONVENTION_TEXT[convention]}. "
        "Cells: mean ± sample standard deviation (ddof = 1) over pairs; Average: of each pair's "
        "mean region Dice. Time per pair in seconds, "
        f"{_devices_text(numbers.iloc[:n_ours])}. {DICE30_CAPTION} "
        + "".join(f"{spec.header}: {spec.caption} " for spec in metric_table.table_columns()
                  if spec.caption)
        + "Bold: best of our rows. "
        f"{_unit_text(per_pair)} "
        f"{_paper_text(dataset, convention, 'the paper, Table 1 and Fig. 4')}")
    if numbers["time_s_mean"].iloc[n_ours:].notna().any():
        caption += " Paper times were measured on the authors' hardware."
    notes = [footnote(tests)] if len(tests) else []
    return Table(f"table1_{convention}", numbers, cell_frame, bold,
                 [False] * n_ours + [True] * (len(rows) - n_ours), caption, notes,
                 tests.assign(convention=convention))


def dice_table(per_pair: pd.DataFrame, kind: str, conventions: Sequence[str] = CONVENTIONS,
               margin: float = EQUIVALENCE_MARGIN) -> Table:
    """The ablation or slice-spacing table: mean Dice per dataset and convention, per run
    (``margin``: of the equivalence tests in :attr:`Table.stats`)."""
    if kind not in ("ablation", "slice_spacing"):
        raise ValueError(f"kind must be 'ablation' or 'slice_spacing', got {kind!r}")
    for convention in conventions:
        _check_convention(convention)
    datasets = list(dict.fromkeys(per_pair["dataset"]))
    columns = [(d, c) for d in datasets for c in conventions]
    headers = {col: f"{registry.title(col[0])} {_convention_title(col[1])}"
               for col in columns}
    tests = _stack_tests([compare_to_reference(per_pair[per_pair["dataset"] == d],
                                               f"mean_dice_{c}", margin=margin
                                               ).assign(convention=c)
                          for d, c in columns])
    marks = {col: _marks(tests[(tests["dataset"] == col[0]) & (tests["convention"] == col[1])])
             for col in columns}
    rows, cells = [], []
    for (method, step), runs in _runs(per_pair):
        row = {"source": OURS, "method": method, "slice_step": step,
               "label": _label(runs, method)}
        text = {"Method": row["label"]}
        if kind == "slice_spacing":
            text["Slice step"] = str(step)
        text["Source"] = OURS
        for col in columns:
            subset = runs[runs["dataset"] == col[0]]
            mean, std = _mean_std(subset[f"mean_dice_{col[1]}"].to_numpy(dtype=float))
            mark, p = marks[col].get((method, step), ("", math.nan))
            key = _column_key(col)
            row.update({f"{key}_mean": mean, f"{key}_std": std, f"{key}_n": len(subset),
                        f"{key}_p_holm": p, f"{key}_mark": mark})
            text[headers[col]] = (_mean_std_text(mean, std, 3) + mark) if len(subset) else MISSING
        rows.append(row)
        cells.append(text)
    n_ours = len(rows)
    # The paper reports FAIM Dice only: without FAIM columns its rows would be empty.
    paper_rows = _paper_dice_rows(kind, datasets) if "faim" in conventions else []
    for method, step, label, values in paper_rows:
        references = [registry.paper_numbers_of(d)[0] for d in values]
        source = PAPER if references == list(values) else (
            f"{PAPER} ({', '.join(registry.caption_name(r) for r in references)})")
        row = {"source": source, "method": method, "slice_step": step, "label": label}
        text = {"Method": label}
        if kind == "slice_spacing":
            text["Slice step"] = str(step)
        text["Source"] = source
        for col in columns:
            key = _column_key(col)
            value = values.get(col[0]) if col[1] == "faim" else None
            row.update({f"{key}_mean": math.nan if value is None else value,
                        f"{key}_std": math.nan})
            text[headers[col]] = MISSING if value is None else f"{value:.3f}"
        rows.append(row)
        cells.append(text)
    numbers = pd.DataFrame(rows)
    cell_frame = pd.DataFrame(cells)
    bold = _best(numbers, cell_frame, n_ours,
                 {headers[col]: (_column_key(col), 3, True) for col in columns})
    what = {"ablation": "Ablation of the pyramid and dual-stream design",
            "slice_spacing": "Large slice spacing: the moving volume keeps every n-th slice "
                             "along axis 1 (n = slice step) and is linearly interpolated back; "
                             "Dice uses the original moving labels"}[kind]
    source_text = {"ablation": "the paper's ablation (text)",
                   "slice_spacing": "the paper (slice step 8: 24 of 192 slices kept; slice "
                                    "step 1: its main result)"}[kind]
    n_pairs = {d: sorted(set(per_pair.loc[per_pair["dataset"] == d]
                             .groupby(["method", "slice_step"]).size())) for d in datasets}
    paper_text = "".join(dict.fromkeys(f" {_paper_text(d, 'faim', source_text)}"
                                       for d in datasets)) if paper_rows else ""
    caption = (
        f"{what}. Mean region Dice (FAIM: per-label Dice averaged within regions; merged: "
        "labels merged into regions first) of each pair, mean ± sample standard deviation "
        "(ddof = 1) over test pairs ("
        + "; ".join(f"{registry.caption_name(d)}: {_pairs_text(n)}" for d, n in n_pairs.items())
        + f"). Bold: best of our rows. {_unit_text(per_pair)}" + paper_text)
    notes = [footnote(tests)] if len(tests) else []
    return Table(kind, numbers, cell_frame, bold,
                 [False] * n_ours + [True] * (len(rows) - n_ours), caption, notes, tests)


def make_tables(per_pair: pd.DataFrame, kind: str, out_dir: str | os.PathLike,
                conventions: Sequence[str] = CONVENTIONS,
                margin: float = EQUIVALENCE_MARGIN, source: str = "per-pair rows"
                ) -> list[Path]:
    """Build the tables of ``kind`` and write every format into ``out_dir``; returns the files.

    Args:
        margin: equivalence margin of the TOST, in mean region Dice.
        source: what the rows were read from, for the error messages.

    Raises:
        ValueError: an unknown ``kind`` or convention, or a margin that is not positive.
        InputError: the runs of a dataset were scored on different pairs
            (:func:`check_same_pairs`; nothing is written).
    """
    if kind not in TABLE_KINDS:
        raise ValueError(f"kind must be one of {TABLE_KINDS}, got {kind!r}")
    if not margin > 0:
        raise ValueError(f"equivalence margin must be positive, got {margin}")
    check_same_pairs(per_pair, source)
    out_dir = Path(out_dir)
    if kind == "main":
        tables = [main_table(per_pair, c, margin) for c in conventions]
        stats_stem = "table1_stats"
    else:
        tables = [dice_table(per_pair, kind, conventions, margin)]
        stats_stem = f"{kind}_stats"
    written = [path for table in tables for path in write_table(table, out_dir)]
    stats = _stack_tests([t.stats for t in tables])
    write_csv(out_dir / f"{stats_stem}.csv", stats)
    pairwise = _stack_tests([pairwise_tests(per_pair[per_pair["dataset"] == dataset],
                                            f"mean_dice_{c}", margin).assign(convention=c)
                             for dataset in sorted(per_pair["dataset"].unique())
                             for c in conventions], PAIRWISE_COLUMNS)
    pairwise_stem = stats_stem.replace("_stats", "_pairwise")
    write_csv(out_dir / f"{pairwise_stem}.csv", pairwise)
    written += [out_dir / f"{stats_stem}.csv", out_dir / f"{pairwise_stem}.csv"]
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written


def check_same_pairs(per_pair: pd.DataFrame, source: str = "per-pair rows") -> None:
    """Refuse runs of one dataset scored on different pairs (a partial ``evaluate-pairs``):
    their means, bold "best" and tests would compare them over different pairs.

    Tables are where the runs of an experiment meet, however their ``per_pair.csv`` files were
    aggregated, so the check is made here, per dataset.

    Raises:
        InputError: naming each run that lacks pairs another run has, and those pairs.
    """
    for dataset, rows in per_pair.groupby("dataset", sort=False):
        pairs = {run: set(zip(group["moving"].astype(str), group["fixed"].astype(str),
                              strict=True))
                 for run, group in rows.groupby(["method", "slice_step"], sort=False)}
        every = set().union(*pairs.values())
        lacking = []
        for (method, step), have in pairs.items():
            missing = sorted(every - have)
            if missing:
                shown = ", ".join(f"{m} -> {f}" for m, f in missing[:3])
                more = f", and {len(missing) - 3} more" if len(missing) > 3 else ""
                lacking.append(f"run {run_name(method, int(step))!r} has {len(have)} of the "
                               f"{len(every)} pairs, lacking {shown}{more}")
        if lacking:
            raise InputError(
                f"{source}: the runs of dataset {dataset!r} were scored on different pairs, "
                f"so a table would compare them over different pairs: {'; '.join(lacking)}; "
                "score every run on the same pairs (regbench evaluate-pairs) and aggregate "
                "again")


# --- rendering ----------------------------------------------------------------------------------


def write_table(table: Table, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``<stem>.tex``; returns the paths."""
    out_dir = Path(out_dir)
    paths = [out_dir / f"{table.stem}.{ext}" for ext in ("csv", "md", "tex")]
    write_csv(paths[0], table.numbers)
    write_text(paths[1], to_markdown(table))
    write_text(paths[2], to_latex(table))
    return paths


def to_markdown(table: Table) -> str:
    """The table as Markdown: a pandoc-style ``Table:`` caption above, notes below, paper rows
    in italics."""
    cells = table.cells.copy()
    for i in range(len(cells)):
        for j, column in enumerate(cells.columns):
            text = markdown_escape(cells.iat[i, j])
            if table.bold[column].iat[i]:
                text = f"**{text}**"
            elif table.paper[i] and text != MISSING:
                text = f"*{text}*"
            cells.iat[i, j] = text
    cells.columns = [markdown_escape(c) for c in cells.columns]
    parts = [f"Table: {markdown_escape(table.caption)}", cells.to_markdown(index=False),
             *(markdown_escape(n) for n in table.notes)]
    return "\n\n".join(parts) + "\n"


def to_latex(table: Table) -> str:
    """The table as a LaTeX ``table`` float (booktabs rules; needs booktabs and graphicx).

    Paper rows are italic and set off by a rule; notes follow the tabular in footnote size.
    """
    cells = table.cells.copy()
    for i in range(len(cells)):
        for j, column in enumerate(cells.columns):
            text = latex_escape(cells.iat[i, j])
            if table.bold[column].iat[i]:
                text = f"\\textbf{{{text}}}"
            elif table.paper[i]:
                text = f"\\textit{{{text}}}"
            cells.iat[i, j] = text
    cells.columns = [latex_escape(c) for c in cells.columns]
    text_columns = sum(c in ("Method", "Source", "Slice step") for c in table.cells.columns)
    latex = cells.style.hide(axis="index").to_latex(
        hrules=True, caption=latex_escape(table.caption), label=table.label, position="t",
        position_float="centering",
        column_format="l" * text_columns + "c" * (cells.shape[1] - text_columns))
    lines = latex.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("\\begin{tabular}"))
    lines[top] = "\\resizebox{\\linewidth}{!}{%\n" + lines[top]
    lines[lines.index("\\end{tabular}")] = "\\end{tabular}}"
    n_ours = table.paper.index(True) if True in table.paper else len(table.paper)
    if 0 < n_ours < len(table.paper):
        header_rule = lines.index("\\midrule")
        lines.insert(header_rule + 1 + n_ours, "\\midrule")
    if table.notes:
        notes = " ".join(latex_escape(n) for n in table.notes)
        lines.insert(lines.index("\\end{table}"),
                     f"\\par\\smallskip{{\\footnotesize {notes}\\par}}")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"$<$", ">": r"$>$", "|": r"\textbar{}", "±": r"$\pm$", "–": "--", "−": "$-$",
    "×": r"$\times$",
}


def latex_escape(text: str) -> str:
    """Text as LaTeX that compiles with the default font encoding (other non-ASCII dropped)."""
    out = []
    for char in str(text):
        if char in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[char])
        elif char.isascii():
            out.append(char)
        else:
            out.append(unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode())
    return "".join(out)


def markdown_escape(text: str) -> str:
    """Text for a Markdown table cell: emphasis and cell separators escaped."""
    return "".join("\\" + c if c in "\\*_|`" else c for c in str(text))


def _stack_tests(tests: Sequence[pd.DataFrame],
                 test_columns: Sequence[str] = STATS_COLUMNS) -> pd.DataFrame:
    """Significance tests of several columns in one frame, the convention beside the score."""
    columns = ["dataset", "convention", *(c for c in test_columns if c != "dataset")]
    found = [t for t in tests if len(t)]
    if not found:
        return pd.DataFrame(columns=columns)
    return pd.concat(found, ignore_index=True)[columns]


# --- helpers ------------------------------------------------------------------------------------


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def _convention_title(convention: str) -> str:
    return {"faim": "FAIM", "merged": "merged"}[convention]


def _column_key(column: tuple[str, str]) -> str:
    return f"{column[0]}_{column[1]}"


def _single_dataset(per_pair: pd.DataFrame) -> str:
    datasets = list(dict.fromkeys(per_pair["dataset"]))
    if len(datasets) != 1:
        raise InputError(f"the main table shows one dataset; the per-pair rows hold {datasets} "
                         "(choose one with --dataset)")
    return str(datasets[0])


def _runs(per_pair: pd.DataFrame) -> list[tuple[tuple[str, int], pd.DataFrame]]:
    """Per-pair rows of each run, in report order."""
    keyed = per_pair.assign(slice_step=per_pair["slice_step"].astype(int))
    runs = order_runs(zip(keyed["method"], keyed["slice_step"], strict=True))
    return [(run, keyed[(keyed["method"] == run[0]) & (keyed["slice_step"] == run[1])])
            for run in runs]


def _label(runs: pd.DataFrame, method: str) -> str:
    labels = runs["label"].dropna()
    return str(labels.iloc[0]) if len(labels) else method


def _method_of(label: str) -> str:
    by_label = {lab: name for name, lab in CANONICAL_LABELS.items()}
    return by_label.get(label, label)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof = 1) of the finite values; NaN where undefined."""
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if len(values) else math.nan
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return mean, std


def _mean_std_text(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return MISSING
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _marks(tests: pd.DataFrame) -> dict[tuple[str, int], tuple[str, float]]:
    return {(m, int(s)): (mark, p) for m, s, mark, p in
            zip(tests["method"], tests["slice_step"], tests["mark"], tests["p_holm"],
                strict=True)}


def _best(numbers: pd.DataFrame, cells: pd.DataFrame, n_ours: int,
          columns: dict[str, tuple[str, int, bool]]) -> pd.DataFrame:
    """Bold mask: per column, our rows whose printed mean is the best (ties all bold)."""
    bold = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    for header, (key, digits, higher) in columns.items():
        means = numbers[f"{key}_mean"].iloc[:n_ours].to_numpy(dtype=float).round(digits)
        if np.isfinite(means).sum() < 2:
            continue  # best of one is no comparison
        best = np.nanmax(means) if higher else np.nanmin(means)
        bold.loc[bold.index[:n_ours][means == best], header] = True
    return bold


def _paper_source(dataset: str) -> tuple[str, str]:
    """(Source column text, dataset whose paper numbers apply)."""
    reference = registry.paper_numbers_of(dataset)[0]
    if reference != dataset:
        return f"{PAPER} ({registry.caption_name(reference)})", reference
    return PAPER, dataset


def _paper_text(dataset: str, convention: str, where: str) -> str:
    """Caption sentence on the paper rows of ``dataset``."""
    source, reference = _paper_source(dataset)
    has_rows = reference in protocol.PAPER_REFERENCE or reference in protocol.PAPER_ABLATION
    if not has_rows:
        return f"The paper reports no numbers on {registry.caption_name(dataset)}."
    text = (f"Italic rows (source: {source}) are the numbers reported in {where}, FAIM "
            f"convention ({MISSING}: not reported).")
    if convention == "merged":
        text += " They are not comparable with the merged-convention columns."
    if reference != dataset:
        text += (f" {registry.paper_numbers_of(dataset)[1]}: the "
                 f"{registry.caption_name(reference)} rows are shown for orientation only.")
    return text


def _paper_dice_rows(kind: str, datasets: Sequence[str]
                     ) -> list[tuple[str, int, str, dict[str, float]]]:
    """Paper rows ``(method, slice step, label, {dataset: mean Dice})`` of a Dice table."""
    found: dict[tuple[str, int], dict[str, float]] = {}
    for dataset in datasets:
        reference = _paper_source(dataset)[1]
        if kind == "ablation":
            for key, value in protocol.PAPER_ABLATION.get(reference, {}).items():
                found.setdefault((PAPER_ABLATION_METHODS[key], 1), {})[dataset] = value
        else:
            full = protocol.PAPER_REFERENCE.get(reference, {}).get("Dual-PRNet", {})
            if "Average" in full:
                found.setdefault((REFERENCE_METHOD, 1), {})[dataset] = full["Average"]
            for label, value in protocol.PAPER_SLICE_SPACING.get(reference, {}).items():
                found.setdefault((_method_of(label), PAPER_SLICE_STEP), {})[dataset] = value
    return [(m, s, CANONICAL_LABELS.get(m, m), found[(m, s)]) for m, s in order_runs(found)]


def _pairs_text(counts: Sequence[int]) -> str:
    counts = list(counts)
    if not counts:
        return "no pairs"
    if len(counts) == 1:
        return f"{counts[0]} pairs per method"
    return f"{min(counts)}-{max(counts)} pairs per method"


def _unit_text(per_pair: pd.DataFrame) -> str:
    """Caption sentence on the unit of the tests: the subject, with n per dataset."""
    counts = {d: len(set(rows["moving"]) | set(rows["fixed"]))
              for d, rows in per_pair.groupby("dataset", sort=False)}
    n_text = ("n = " + str(next(iter(counts.values()))) if len(counts) == 1 else
              "; ".join(f"{registry.caption_name(d)}: n = {n}" for d, n in counts.items()))
    return (f"Tests and confidence intervals take the test subject as the unit ({n_text} "
            "subjects): the ordered pairs among them share subjects and are not independent.")


def _devices_text(ours: pd.DataFrame) -> str:
    by_device: dict[str, list[str]] = {}
    for label, device in zip(ours["label"], ours["device"], strict=True):
        by_device.setdefault(device or "device not recorded", []).append(label)
    if len(by_device) == 1:
        return f"on {next(iter(by_device))}"
    return "on " + "; ".join(f"{d} ({', '.join(labels)})" for d, labels in by_device.items())
