"""Reports: aggregation, tables (numbers, paper rows, LaTeX), paired statistics and figures.

The per-pair numbers are hand-made so every table entry can be computed by hand below.
Standard deviations are sample standard deviations (ddof = 1).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy
import torch
from matplotlib import pyplot as plt
from matplotlib.colors import to_hex
from packaging.requirements import Requirement
from packaging.version import Version
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from regbench.cli import main as cli
from regbench.data import protocol
from regbench.data.dataset import make_manifest, write_manifest, write_subject
from regbench.io import InputError
from regbench.reports import figures, stats, style
from regbench.reports.aggregate import aggregate, base_columns, read_per_pair
from regbench.reports.tables import dice_table, main_table, make_tables, to_latex, to_markdown

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")

PAIRS = [("s1", "s2"), ("s2", "s1"), ("s1", "s3")]
# Per method, per pair: FAIM Dice of regions A and B, merged Dice of A and B, time (s),
# folding %, SD log J, mean HD95 (mm).
HAND = {
    "dualprnet": {"faim": [(0.70, 0.50), (0.80, 0.60), (0.60, 0.70)],
                  "merged": [(0.80, 0.60), (0.90, 0.70), (0.70, 0.80)],
                  "time": [1.0, 2.0, 3.0], "folding": [0.1, 0.2, 0.3],
                  "logjac": [0.1, 0.1, 0.1], "hd95": [2.0, 3.0, 4.0]},
    "syn": {"faim": [(0.50, 0.40), (0.60, 0.40), (0.40, 0.40)],
            "merged": [(0.60, 0.50), (0.70, 0.50), (0.50, 0.50)],
            "time": [10.0, 20.0, 30.0], "folding": [0.0, 0.0, 0.0],
            "logjac": [0.2, 0.3, 0.4], "hd95": [4.0, 5.0, 6.0]},
}
DEVICES = {"dualprnet": "NVIDIA Test GPU", "syn": "Test CPU (1 thread)"}


def record(dataset: str, method: str, moving: str, fixed: str, faim: tuple, merged: tuple,
           time_s: float, folding: float, logjac: float, hd95: float,
           regions: tuple[str, str] = ("A", "B"), slice_step: int = 1, **extra) -> dict:
    """A metrics.json record (docs/contracts.md) with per-pair means computed from the regions."""
    return {
        "dataset": dataset, "method": method, "moving": moving, "fixed": fixed,
        "dice_faim": dict(zip(regions, faim, strict=True)),
        "dice_merged": dict(zip(regions, merged, strict=True)),
        "dice_labels": {"1": faim[0], "2": faim[1]},
        "mean_dice_faim": float(np.mean(faim)), "mean_dice_merged": float(np.mean(merged)),
        "mean_dice_l2r": l2r_dice(faim),
        "hd95": {regions[0]: hd95 - 0.5, regions[1]: hd95 + 0.5}, "mean_hd95": hd95,
        "folding_percent": folding, "log_jacobian_std": logjac, "time_s": time_s,
        "device": DEVICES.get(method, "Test CPU (1 thread)"), "slice_step": slice_step,
        "versions": {"regbench": "test"}, "options": {}, **extra,
    }


def l2r_dice(faim: tuple) -> float:
    """A Learn2Reg case Dice that differs from the FAIM mean, so the tables must pick the right
    one for Dice30."""
    return float(np.mean(faim)) - 0.01 * faim[0]


def hand_records(dataset: str = "demo", regions: tuple[str, str] = ("A", "B")) -> list[dict]:
    return [record(dataset, method, m, f, v["faim"][i], v["merged"][i], v["time"][i],
                   v["folding"][i], v["logjac"][i], v["hd95"][i], regions)
            for method, v in HAND.items() for i, (m, f) in enumerate(PAIRS)]


def write_records(root: Path, records: list[dict]) -> list[Path]:
    paths = []
    for rec in records:
        run = style.run_name(rec["method"], rec.get("slice_step") or 1)
        path = root / run / rec["moving"] / rec["fixed"] / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
        paths.append(path)
    return paths


@pytest.fixture
def per_pair(tmp_path: Path) -> pd.DataFrame:
    """The hand-made records of the demo dataset, aggregated and read back from CSV."""
    out = tmp_path / "per_pair.csv"
    aggregate(write_records(tmp_path / "pairs", hand_records()), out, experiment="main")
    return read_per_pair([out])


def per_pair_frame(records: list[dict], tmp_path: Path, name: str = "pp") -> pd.DataFrame:
    out = tmp_path / f"{name}.csv"
    aggregate(write_records(tmp_path / name, records), out, experiment=name)
    return read_per_pair([out])


# --- aggregation --------------------------------------------------------------------------------


def test_aggregate_writes_contract_columns_in_report_order(tmp_path: Path) -> None:
    paths = write_records(tmp_path / "pairs", hand_records())
    table = aggregate(paths, tmp_path / "per_pair.csv", experiment="main")
    expected = [*base_columns(), "dice_faim/A", "dice_faim/B", "dice_merged/A", "dice_merged/B",
                "hd95/A", "hd95/B"]
    assert list(table.columns) == expected
    assert list(pd.read_csv(tmp_path / "per_pair.csv").columns) == expected
    # syn before dualprnet (canonical order), then moving, fixed.
    assert list(table["method"]) == ["syn"] * 3 + ["dualprnet"] * 3
    assert list(zip(table["moving"], table["fixed"], strict=True))[:3] == sorted(PAIRS)
    assert list(table["label"]) == ["SyN"] * 3 + ["Dual-PRNet"] * 3
    assert set(table["experiment"]) == {"main"} and set(table["dataset"]) == {"demo"}
    row = table[(table["method"] == "syn") & (table["moving"] == "s1")
                & (table["fixed"] == "s3")].iloc[0]
    assert row["dice_faim/A"] == 0.40 and row["mean_dice_faim"] == pytest.approx(0.40)
    assert row["time_s"] == 30.0 and row["device"] == DEVICES["syn"]


def test_aggregate_labels_nulls_and_errors(tmp_path: Path) -> None:
    records = [
        record("demo", "mymethod", "s1", "s2", (0.5, 0.5), (0.6, 0.6), 1.0, 0.0, 0.1, 2.0,
               label="My method"),
        record("demo", "other", "s1", "s2", (0.5, 0.5), (0.6, 0.6), 1.0, 0.0, 0.1, 2.0),
        record("demo", "dualprnet", "s1", "s2", (0.5, 0.5), (0.6, 0.6), 1.0, 0.0, 0.1, 2.0,
               slice_step=8),
    ]
    records[1]["time_s"] = None
    records[1]["dice_faim"]["B"] = None
    table = aggregate(write_records(tmp_path / "a", records), tmp_path / "a.csv", "ablation")
    labels = dict(zip(table["method"], table["label"], strict=True))
    assert labels == {"mymethod": "My method", "other": "other", "dualprnet": "Dual-PRNet"}
    assert list(table["method"]) == ["dualprnet", "mymethod", "other"]  # known first
    back = read_per_pair([tmp_path / "a.csv"])
    other = back[back["method"] == "other"].iloc[0]
    assert np.isnan(other["time_s"]) and np.isnan(other["dice_faim/B"])
    assert back.loc[back["method"] == "dualprnet", "slice_step"].item() == 8

    duplicate = write_records(tmp_path / "b", records[:1]) + write_records(tmp_path / "c",
                                                                           records[:1])
    with pytest.raises(InputError, match="same pair"):
        aggregate(duplicate, tmp_path / "b.csv", experiment="x")
    broken = tmp_path / "broken" / "metrics.json"
    broken.parent.mkdir()
    broken.write_text(json.dumps({"method": "syn", "moving": "s1"}))
    with pytest.raises(InputError, match=r"broken/metrics\.json.*missing keys"):
        aggregate([broken], tmp_path / "c.csv", experiment="x")
    with pytest.raises(InputError, match="not 'lpba40'"):
        aggregate(write_records(tmp_path / "d", records[:1]), tmp_path / "d.csv", "x",
                  dataset="lpba40")
    assert not (tmp_path / "b.csv").exists() and not (tmp_path / "d.csv").exists()


def test_aggregate_cli_from_dir(tmp_path: Path) -> None:
    paths = write_records(tmp_path / "pairs", hand_records())
    assert cli(["aggregate", "--experiment", "main", "--dataset", "demo", "--pairs",
                str(tmp_path / "pairs"), "--out", str(tmp_path / "dir.csv")]) == 0
    assert cli(["aggregate", "--experiment", "main", "--out", str(tmp_path / "files.csv"),
                *map(str, paths)]) == 0
    assert (tmp_path / "dir.csv").read_text() == (tmp_path / "files.csv").read_text()
    assert cli(["aggregate", "--experiment", "main", "--from-dir", str(tmp_path / "none"),
                "--out", str(tmp_path / "x.csv")]) == 2


# --- tables -------------------------------------------------------------------------------------


def test_main_table_numbers_by_hand(per_pair: pd.DataFrame) -> None:
    table = main_table(per_pair, "faim")
    ours = table.numbers[table.numbers["source"] == "ours"].set_index("method")
    assert list(ours.index) == ["syn", "dualprnet"]
    expected = {  # (mean, sample std) by hand from HAND
        "dualprnet": {"A": (0.70, 0.10), "B": (0.60, 0.10), "average": (0.65, 0.05),
                      "time_s": (2.0, 1.0), "folding_percent": (0.2, 0.1),
                      "log_jacobian_std": (0.1, 0.0), "hd95_mm": (3.0, 1.0)},
        "syn": {"A": (0.50, 0.10), "B": (0.40, 0.0), "average": (0.45, 0.05),
                "time_s": (20.0, 10.0), "folding_percent": (0.0, 0.0),
                "log_jacobian_std": (0.3, 0.1), "hd95_mm": (5.0, 1.0)},
    }
    for method, columns in expected.items():
        assert ours.loc[method, "n"] == 3
        for key, (mean, std) in columns.items():
            assert ours.loc[method, f"{key}_mean"] == pytest.approx(mean, abs=1e-12), key
            assert ours.loc[method, f"{key}_std"] == pytest.approx(std, abs=1e-12), key
    ours_rows = ~np.array(table.paper)
    cells = table.cells[ours_rows].set_index("Method")
    assert cells.loc["Dual-PRNet", "A"] == "0.700 ± 0.100"
    assert cells.loc["SyN", "Average"] == "0.450 ± 0.050"  # s1 in every pair: no test
    assert cells.loc["Dual-PRNet", "Time (s)"] == "2.00 ± 1.00"
    assert cells.loc["SyN", "HD95 (mm)"] == "5.00 ± 1.00"
    bold = table.bold[ours_rows].set_index(cells.index)
    assert bold.loc["Dual-PRNet", ["A", "B", "Average", "Time (s)", "SD log J",
                                   "HD95 (mm)"]].all()
    assert bold.loc["SyN", "Folding (%)"] and not bold.loc["Dual-PRNet", "Folding (%)"]
    assert not bold.loc["SyN", "A"] and not bold["Method"].any()
    assert "Test CPU (1 thread) (SyN)" in table.caption
    assert "NVIDIA Test GPU (Dual-PRNet)" in table.caption
    assert "FAIM convention" in table.caption and "ddof = 1" in table.caption
    assert "test subject as the unit (n = 3 subjects)" in table.caption
    merged = main_table(per_pair, "merged").numbers
    merged = merged[merged["source"] == "ours"].set_index("method")
    assert merged.loc["syn", "average_mean"] == pytest.approx(0.55)
    assert merged.loc["dualprnet", "A_mean"] == pytest.approx(0.80)


def test_paper_reference_rows(per_pair: pd.DataFrame, tmp_path: Path) -> None:
    demo = main_table(per_pair, "faim")
    paper = demo.numbers[demo.numbers["source"] != "ours"]
    assert set(paper["source"]) == {"paper (LPBA40)"}
    lpba = protocol.PAPER_REFERENCE["lpba40"]
    assert list(paper["label"]) == list(lpba)
    assert list(paper["average_mean"]) == [v["Average"] for v in lpba.values()]
    assert paper["A_mean"].isna().all()
    assert demo.paper == [False, False, True, True, True]
    assert "orientation only" in demo.caption
    md = to_markdown(demo)
    assert "| *Dual-PRNet* | *paper (LPBA40)* |" in re.sub(r" +", " ", md)

    frontal = ("Frontal", "Parietal")
    mb = per_pair_frame(hand_records("mindboggle101", frontal), tmp_path, "mb")
    table = main_table(mb, "merged")
    paper = table.numbers[table.numbers["source"] == "paper"].set_index("label")
    reference = protocol.PAPER_REFERENCE["mindboggle101"]
    assert list(paper.index) == list(reference)
    for label, values in reference.items():
        assert paper.loc[label, "Frontal_mean"] == values["Frontal"]
        assert paper.loc[label, "average_mean"] == values["Average"]
        assert paper.loc[label, "time_s_mean"] == pytest.approx(values.get("Time (s)", np.nan),
                                                                nan_ok=True)
    assert "not comparable with the merged" in table.caption
    assert not table.bold.iloc[2:].to_numpy().any()  # only our rows are bold

    other = per_pair_frame(hand_records("other"), tmp_path, "other")
    assert main_table(other, "faim").paper == [False, False]
    assert "reports no numbers" in main_table(other, "faim").caption


def test_ablation_and_slice_spacing_tables(tmp_path: Path) -> None:
    records = []
    for method, base in (("dualprnet-ssf", 0.5), ("dualprnet-dsf", 0.6), ("dualprnet", 0.7)):
        for i, (m, f) in enumerate(PAIRS):
            records.append(record("lpba40", method, m, f, (base + 0.01 * i, base),
                                  (base + 0.1, base + 0.1), 1.0, 0.0, 0.1, 2.0))
    table = dice_table(per_pair_frame(records, tmp_path, "abl"), "ablation")
    assert list(table.cells["Method"]) == [
        "Single-stream, single field", "Dual-stream, single field", "Dual-PRNet",
        "Dual-stream, single field", "Dual-PRNet"]
    assert list(table.cells.columns) == ["Method", "Source", "LPBA40 FAIM", "LPBA40 merged"]
    # dsf by hand: per-pair means 0.6, 0.605, 0.61 -> 0.605 ± 0.005.
    assert table.cells.loc[1, "LPBA40 FAIM"] == "0.605 ± 0.005"
    assert table.numbers.loc[1, "lpba40_faim_mean"] == pytest.approx(0.605)
    paper = protocol.PAPER_ABLATION["lpba40"]
    assert table.cells.loc[3, "LPBA40 FAIM"] == f"{paper['dual-stream single-field']:.3f}"
    assert table.cells.loc[4, "LPBA40 FAIM"] == f"{paper['dual-stream pyramid']:.3f}"
    assert table.cells.loc[4, "LPBA40 merged"] == "–" and table.paper == [False] * 3 + [True] * 2
    assert table.bold.loc[2, "LPBA40 FAIM"] and not table.bold.loc[1, "LPBA40 FAIM"]
    assert len(table.stats) == 4  # 2 runs x 2 conventions against Dual-PRNet

    records = [record("lpba40", "dualprnet", m, f, (0.7, 0.7 - 0.1 * step / 8),
                      (0.8, 0.8), 1.0, 0.0, 0.1, 2.0, slice_step=step)
               for step in (1, 8) for m, f in PAIRS]
    table = dice_table(per_pair_frame(records, tmp_path, "ss"), "slice_spacing", ["faim"])
    assert list(table.cells["Slice step"]) == ["1", "8", "1", "8"]
    assert list(table.cells["Source"]) == ["ours", "ours", "paper", "paper"]
    assert table.cells.loc[1, "LPBA40 FAIM"] == "0.650 ± 0.000"
    assert table.cells.loc[3, "LPBA40 FAIM"] == \
        f"{protocol.PAPER_SLICE_SPACING['lpba40']['Dual-PRNet']:.3f}"
    assert table.cells.loc[2, "LPBA40 FAIM"] == \
        f"{protocol.PAPER_REFERENCE['lpba40']['Dual-PRNet']['Average']:.3f}"
    # s1 is in every pair: deleting it leaves none, so there is no subject-level test.
    assert np.isnan(table.stats["p_raw"].item()) and table.stats["n_subjects"].item() == 3
    assert table.stats["verdict"].item() == "not testable"
    assert table.stats["mark"].item() == "" and table.cells.loc[1, "LPBA40 FAIM"][-1] != "*"


def _latex_body_cells(latex: str) -> list[str]:
    lines = latex.splitlines()
    body = lines[lines.index("\\midrule") + 1:lines.index("\\bottomrule")]
    return [cell for line in body if line != "\\midrule"
            for cell in line.removesuffix("\\\\").split("&")]


def test_latex_is_well_formed_and_compiles(tmp_path: Path) -> None:
    records = hand_records("demo", ("Cing_ulate", "50% Frontal"))
    for rec in records:
        if rec["method"] == "syn":
            rec["label"] = "my_method & co"
    table = main_table(per_pair_frame(records, tmp_path), "faim")
    latex = to_latex(table)
    assert latex.startswith("\\begin{table}") and latex.rstrip().endswith("\\end{table}")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\caption{", "\\label{tab:"):
        assert rule in latex
    assert latex.count("\\begin{tabular}") == latex.count("\\end{tabular}") == 1
    assert latex.count("\\begin{table}") == latex.count("\\end{table}") == 1
    stripped = latex.replace("\\{", "").replace("\\}", "")
    depth = 0
    for char in stripped:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0
    header = next(line for line in latex.splitlines() if line.startswith("Method &"))
    cells = [*_latex_body_cells(latex), *header.removesuffix("\\\\").split("&")]
    for cell in cells:
        assert not re.search(r"(?<!\\)[%_&#]", cell), cell
        assert "±" not in cell
    assert "Cing\\_ulate" in header and "50\\% Frontal" in header
    assert "my\\_method \\& co" in latex
    assert "$\\pm$" in latex
    assert "\\textit{paper (LPBA40)}" in latex
    assert latex.count("\\midrule") == 2  # header rule + rule before the paper rows
    caption = re.search(r"\\caption\{(.*)\}\n", latex).group(1)
    assert not re.search(r"(?<!\\)[%_&#]", caption)
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed: LaTeX checked for form only")
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        f"\\begin{{document}}\n{latex}\\end{{document}}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_tables_cli_writes_every_format(per_pair: pd.DataFrame, tmp_path: Path) -> None:
    csv = tmp_path / "per_pair.csv"
    out = tmp_path / "tables"
    assert cli(["tables", "--per-pair", str(csv), "--dataset", "demo", "--kind", "main",
                "--out-dir", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {f"table1_{c}.{e}" for c in ("faim", "merged") for e in ("csv", "md", "tex")
                     } | {"table1_stats.csv", "table1_pairwise.csv"}
    numbers = pd.read_csv(out / "table1_faim.csv")
    assert {"A_mean", "A_std", "average_mean", "average_std", "source"} <= set(numbers.columns)
    tests = pd.read_csv(out / "table1_stats.csv")
    assert list(tests.columns) == ["dataset", "convention", *stats.STATS_COLUMNS[1:]]
    assert list(tests["convention"]) == ["faim", "merged"]
    assert tests["p_raw"].isna().all()  # s1 is in every pair: not testable by subject
    pairwise = pd.read_csv(out / "table1_pairwise.csv")
    assert list(pairwise.columns) == ["dataset", "convention", *stats.PAIRWISE_COLUMNS[1:]]
    assert list(pairwise["convention"]) == ["faim", "merged"]  # two runs: one pair each
    assert (pairwise["method"] != pairwise["versus"]).all()
    assert (pairwise["margin"] == stats.EQUIVALENCE_MARGIN).all()
    assert cli(["tables", "--per-pair", str(csv), "--equivalence-margin", "0.05",
                "--out-dir", str(out)]) == 0
    assert (pd.read_csv(out / "table1_pairwise.csv")["margin"] == 0.05).all()
    assert cli(["tables", "--per-pair", str(csv), "--equivalence-margin", "0",
                "--out-dir", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()
    assert cli(["tables", "--per-pair", str(csv), "--dataset", "lpba40", "--out-dir",
                str(out)]) == 2
    assert cli(["tables", "--per-pair", str(csv), "--kind", "ablation", "--convention",
                "merged", "--out-dir", str(out)]) == 2  # no ablation method in it (issue 22)
    ablation = tmp_path / "ablation.csv"
    per_pair.replace({"method": {"syn": "dualprnet-dsf"}}).to_csv(ablation, index=False)
    assert cli(["tables", "--per-pair", str(ablation), "--kind", "ablation", "--convention",
                "merged", "--out-dir", str(out)]) == 0
    assert "Demo merged" in (out / "ablation.md").read_text()


# --- statistics ---------------------------------------------------------------------------------


def test_pairwise_tests_cover_every_two_runs_once(per_pair: pd.DataFrame) -> None:
    table = pd.concat([per_pair, per_pair[per_pair["method"] == "dualprnet"].assign(
        method="zzz", label="Zzz", mean_dice_faim=lambda t: t["mean_dice_faim"] + 0.1)])
    tests = stats.pairwise_tests(table, "mean_dice_faim")
    runs = stats.order_runs(zip(table["method"], table["slice_step"], strict=True))
    assert len(tests) == len(runs) * (len(runs) - 1) // 2
    assert list(tests.columns) == list(stats.PAIRWISE_COLUMNS)
    last = tests[(tests["method"] == "dualprnet") & (tests["versus"] == "zzz")].iloc[0]
    assert last["mean_difference"] == pytest.approx(-0.1)  # method - versus
    assert last["n_pairs"] == 3 and last["n_subjects"] == 3


def test_holm_matches_statsmodels() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        p = rng.uniform(0, 0.1, 6)
        expected = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(stats.holm(p), expected)
    with_nan = np.array([0.01, np.nan, 0.04, 0.03])
    got = stats.holm(with_nan)
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2, 3]], multipletests([0.01, 0.04, 0.03], method="holm")[1])
    assert [stats.significance_mark(p) for p in (0.0005, 0.005, 0.03, 0.05, np.nan)] == \
        ["***", "**", "*", "", ""]


def complete_design(n_subjects: int, seed: int, effects: dict[str, float],
                    subject_sd: float = 0.02, pair_sd: float = 0.01
                    ) -> tuple[list[tuple[str, str]], dict[str, np.ndarray]]:
    """Every ordered pair of ``n_subjects`` and, per method, a per-pair score: the method's
    effect, plus a moving- and a fixed-subject effect of its own, plus pair noise."""
    rng = np.random.default_rng(seed)
    subjects = [f"s{i}" for i in range(n_subjects)]
    pairs = [(m, f) for m in subjects for f in subjects if m != f]
    base = rng.uniform(0.6, 0.8, len(pairs))
    scores = {}
    for method, effect in effects.items():
        moving, fixed = rng.normal(0, subject_sd, (2, n_subjects))
        index = {s: i for i, s in enumerate(subjects)}
        scores[method] = np.array([
            b + effect + moving[index[m]] + fixed[index[f]] + rng.normal(0, pair_sd)
            for (m, f), b in zip(pairs, base, strict=True)])
    return pairs, scores


def design_frame(pairs: list[tuple[str, str]], scores: dict[str, np.ndarray],
                 tmp_path: Path) -> pd.DataFrame:
    records = [record("demo", method, m, f, (float(v), float(v)), (float(v), float(v)),
                      1.0, 0.0, 0.1, 2.0)
               for method, values in scores.items()
               for (m, f), v in zip(pairs, values, strict=True)]
    return per_pair_frame(records, tmp_path)


def pseudo_by_subject_means(pairs: list[tuple[str, str]], d: np.ndarray) -> np.ndarray:
    """Jackknife pseudo-values of a complete design by the closed form U + 2 (n-1)/(n-2)
    (m_s - U), m_s the mean over the pairs holding s: computed apart from the module's way."""
    subjects = sorted({s for pair in pairs for s in pair})
    n, u = len(subjects), d.mean()
    means = np.array([d[[s in pair for pair in pairs]].mean() for s in subjects])
    return u + 2 * (n - 1) / (n - 2) * (means - u)


@pytest.mark.parametrize(("n_subjects", "seed"), [(5, 0), (6, 1), (8, 2)])
def test_subject_level_tests_match_scipy_and_statsmodels(n_subjects: int, seed: int,
                                                         tmp_path: Path) -> None:
    """Per run against Dual-PRNet: the pseudo-values, SciPy's exact Wilcoxon and t interval on
    them, statsmodels' Holm, the TOST from SciPy's one-sided tests."""
    pairs, scores = complete_design(n_subjects, seed, {
        "dualprnet": 0.0, "affine": -0.2, "syn": 0.002, "voxelmorph": 0.0})
    scores["voxelmorph"] = scores["dualprnet"].copy()  # identical: not testable
    per_pair = design_frame(pairs, scores, tmp_path)
    # A pair only the reference has is not matched, and its subjects are not counted.
    extra = per_pair[per_pair["method"] == "dualprnet"].iloc[[0]].assign(moving="x9",
                                                                           fixed="x8")
    per_pair = pd.concat([per_pair, extra], ignore_index=True)
    result = stats.compare_to_reference(per_pair, "mean_dice_faim").set_index("method")
    assert list(result.index) == ["affine", "syn", "voxelmorph"]
    raw, tost = {}, {}
    for method in ("affine", "syn"):
        d = scores[method] - scores["dualprnet"]
        pseudo = pseudo_by_subject_means(pairs, d)
        expected = scipy_stats.wilcoxon(pseudo, method="exact")
        row = result.loc[method]
        assert row["n_subjects"] == n_subjects and row["n_pairs"] == len(pairs)
        assert row["mean_difference"] == pytest.approx(d.mean())
        assert row["W"] == pytest.approx(expected.statistic)
        assert row["p_raw"] == pytest.approx(expected.pvalue)
        assert row["p_min"] == pytest.approx(2 / 2 ** n_subjects)
        low, high = scipy_stats.t.interval(0.95, n_subjects - 1, loc=pseudo.mean(),
                                           scale=scipy_stats.sem(pseudo))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
        assert low < d.mean() < high  # complete design: centred on the mean over pairs
        m = stats.EQUIVALENCE_MARGIN
        tost[method] = max(scipy_stats.wilcoxon(pseudo + m, alternative="greater").pvalue,
                           scipy_stats.wilcoxon(pseudo - m, alternative="less").pvalue)
        assert row["p_tost"] == pytest.approx(tost[method])
        raw[method] = expected.pvalue
    holm = multipletests([raw["affine"], raw["syn"]], method="holm")[1]
    assert result.loc["affine", "p_holm"] == pytest.approx(holm[0])
    assert result.loc["syn", "p_holm"] == pytest.approx(holm[1])
    tost_holm = multipletests([tost["affine"], tost["syn"]], method="holm")[1]
    assert result.loc["syn", "p_tost_holm"] == pytest.approx(tost_holm[1])
    for method in ("affine", "syn"):
        assert result.loc[method, "mark"] == stats.significance_mark(result.loc[method,
                                                                                "p_holm"])
    # Always worse on every subject: the smallest p n subjects allow, times 2 by Holm.
    assert raw["affine"] == pytest.approx(2 / 2 ** n_subjects)
    assert result.loc["affine", "verdict"] == ("lower" if 4 / 2 ** n_subjects < 0.05
                                               else "too few subjects")
    assert np.isnan(result.loc["voxelmorph", "p_raw"]) and result.loc["voxelmorph", "mark"] == ""
    assert result.loc["voxelmorph", "verdict"] == "not testable"

    no_reference = per_pair[per_pair["method"] != "dualprnet"]
    assert stats.compare_to_reference(no_reference, "mean_dice_faim").empty
    assert main_table(no_reference, "faim").notes == []
    assert stats.wilcoxon_paired([]) == pytest.approx((np.nan, np.nan), nan_ok=True)


def test_pseudo_values_follow_their_definition() -> None:
    """The jackknife by its definition, on a complete design, one with a pair missing, and one
    where a subject is in every pair."""
    rng = np.random.default_rng(3)
    pairs = [(m, f) for m in "abcde" for f in "abcde" if m != f]
    d = rng.normal(0, 1, len(pairs))
    moving, fixed = zip(*pairs, strict=True)
    got = stats.subject_pseudo_values(moving, fixed, d)
    assert list(got.index) == list("abcde")
    np.testing.assert_allclose(got.to_numpy(), pseudo_by_subject_means(pairs, d))
    assert got.mean() == pytest.approx(d.mean())
    incomplete = pairs[1:]
    d1 = d[1:]
    got = stats.subject_pseudo_values(*zip(*incomplete, strict=True), d1)
    for subject in "abcde":
        without = [v for (m, f), v in zip(incomplete, d1, strict=True) if subject not in (m, f)]
        assert got[subject] == pytest.approx(5 * d1.mean() - 4 * np.mean(without))
    atlas = stats.subject_pseudo_values(["a", "b", "c"], ["z", "z", "z"], [0.1, 0.2, 0.3])
    assert atlas.empty  # z is in every pair


def test_subject_level_test_keeps_its_level_where_pairs_and_subject_means_do_not() -> None:
    """No true difference, random subject effects: a test at 0.05 on the pairs, or on each
    subject's plain mean, rejects far more often than 5 %; on the pseudo-values it does not."""
    rng = np.random.default_rng(0)
    n, repeats = 6, 300
    pairs = [(m, f) for m in range(n) for f in range(n) if m != f]
    moving, fixed = (np.array(side) for side in zip(*pairs, strict=True))
    rejected = {"pairs": 0, "subject means": 0, "pseudo-values": 0}
    for _ in range(repeats):
        a, b = rng.normal(0, 1, (2, n))
        d = a[moving] + b[fixed] + rng.normal(0, 0.5, len(pairs))
        means = [d[(moving == s) | (fixed == s)].mean() for s in range(n)]
        pseudo = stats.subject_pseudo_values(moving.astype(str), fixed.astype(str), d)
        for name, values in (("pairs", d), ("subject means", means), ("pseudo-values", pseudo)):
            rejected[name] += stats.wilcoxon_paired(values)[1] < 0.05
    rate = {name: count / repeats for name, count in rejected.items()}
    assert rate["pairs"] > 0.2 and rate["subject means"] > 0.15, rate
    assert rate["pseudo-values"] < 0.08, rate


def test_signed_rank_test_is_exact_with_ties_and_zeros() -> None:
    """Ties and a zero among 5 differences: the exact test never goes below its floor of
    2 / 2^4 for 4 nonzero values, where the normal approximation (SciPy's old fallback) does."""
    tied = [0.0, 0.01, 0.01, 0.02, 0.03]
    w, p = stats.wilcoxon_paired(tied)
    assert w == 0.0 and p == pytest.approx(stats.smallest_p(4))
    approximate = scipy_stats.wilcoxon(tied, method="asymptotic").pvalue
    assert approximate < stats.smallest_p(4)
    # The pins require a SciPy that has this exact test; the running one satisfies them.
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pins = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    scipy_pin = next(Requirement(r) for r in pins["project"]["dependencies"]
                     if Requirement(r).name == "scipy")
    lowest = [Version(s.version) for s in scipy_pin.specifier if s.operator == ">="]
    assert lowest == [Version(stats.MIN_SCIPY)]
    assert Version(scipy.__version__) >= Version(stats.MIN_SCIPY)


def test_tost_and_verdicts() -> None:
    inside = np.array([0.001, -0.002, 0.003, 0.0, 0.002, -0.001])
    # All six within the margin on both sides: each one-sided p is 1 / 2^6.
    assert stats.tost_wilcoxon(inside, 0.02) == pytest.approx(1 / 64)
    assert stats.tost_wilcoxon(inside + 0.05, 0.02) > 0.5  # outside: no equivalence
    with pytest.raises(ValueError, match="positive"):
        stats.tost_wilcoxon(inside, 0.0)
    assert stats.smallest_p(4) == 0.125 and stats.smallest_p(8) == pytest.approx(0.0078125)
    assert stats.smallest_p(4, sides=1) == 0.0625
    assert not stats.attainable(4, 1) and stats.attainable(8, 6) and not stats.attainable(8, 10)
    assert stats.verdict(0.01, 1.0, -0.1) == "lower"
    assert stats.verdict(0.01, 0.01, 0.01) == "higher"  # a difference inside the margin
    assert stats.verdict(0.3, 0.01, 0.001) == "equivalent"
    assert stats.verdict(0.3, 0.3, 0.001) == "not significantly different"
    assert stats.verdict(0.3, 0.3, 0.001, attainable=False) == "too few subjects"
    assert stats.verdict(np.nan, np.nan, np.nan) == "not testable"


@pytest.mark.parametrize(("n_subjects", "runs", "note"), [
    (4, 3, "ordering is descriptive"),  # 0.125 x 2 comparisons
    (8, 4, ""),  # 0.0078 x 3, and x 6 between every two runs: both below 0.05
    (8, 5, "no ordering of all the runs"),  # x 4 fine, x 10 between every two runs is not
])
def test_descriptive_note_when_no_test_can_succeed(n_subjects: int, runs: int, note: str,
                                                   tmp_path: Path) -> None:
    effects = dict(zip(["dualprnet", "affine", "syn", "voxelmorph", "identity"][:runs],
                       [0.0, -0.2, -0.1, -0.15, -0.3], strict=False))
    per_pair = design_frame(*complete_design(n_subjects, 0, effects), tmp_path)
    table = main_table(per_pair, "faim")
    text = table.notes[0]
    assert f"n = {n_subjects} subjects" in text and f"n = {n_subjects} subjects" in table.caption
    assert "not adjusted for multiplicity" in text  # the intervals, unlike the tests (Holm)
    if note:
        assert note in text and f"{stats.smallest_p(n_subjects):.3g}" in text
    else:
        assert "descriptive" not in text and "no ordering" not in text
    if n_subjects == 4:
        assert "Nor can equivalence be shown" in text
        assert set(table.stats["verdict"]) == {"too few subjects"}
        assert not any(c.endswith("*") for c in table.cells["Average"])
    else:
        assert set(table.stats["verdict"]) == {"lower"}  # every subject worse, n = 8
        assert all(table.cells["Average"].iloc[i].endswith("*")
                   for i, m in enumerate(table.numbers["method"].iloc[:runs])
                   if m != "dualprnet")


# --- figures ------------------------------------------------------------------------------------


def test_style_order_and_colors() -> None:
    runs = [("dualprnet", 1), ("zzz", 1), ("affine", 1), ("dualprnet", 8), ("abc", 1)]
    assert style.order_runs(runs) == [("affine", 1), ("dualprnet", 1), ("dualprnet", 8),
                                      ("abc", 1), ("zzz", 1)]
    colors = style.run_colors(runs)
    assert colors["affine"] == style.METHOD_COLORS["affine"]
    assert colors["dualprnet"] == style.METHOD_COLORS["dualprnet"]
    assert len(set(colors.values())) == len(colors)
    assert style.order_labels(["Dual-PRNet", "Mine", "SyN"]) == ["SyN", "Dual-PRNet", "Mine"]


def test_other_classical_methods_sort_before_the_learned_ones() -> None:
    """elastix and FireANTs (classical method files, not canonical) go after SyN and before
    VoxelMorph, as in Table 1; a name the registry does not know goes last."""
    runs = [("dualprnet", 1), ("mine", 1), ("fireants", 1), ("voxelmorph", 1), ("elastix", 1),
            ("syn", 1), ("identity", 1)]
    assert style.order_runs(runs) == [("identity", 1), ("syn", 1), ("elastix", 1),
                                      ("fireants", 1), ("voxelmorph", 1), ("dualprnet", 1),
                                      ("mine", 1)]


def test_boxplot_and_dice_time_share_order_and_colors(per_pair: pd.DataFrame,
                                                      tmp_path: Path) -> None:
    extra = per_pair[per_pair["method"] == "dualprnet"].assign(slice_step=8)
    table = pd.concat([per_pair, extra], ignore_index=True)
    boxes = figures.plot_region_boxplots(table, "faim", tmp_path / "fig4")
    times = figures.plot_dice_vs_time(table, "merged", tmp_path / "time")
    for stem in ("fig4", "time"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{stem}.{ext}").stat().st_size > 1000
    expected = ["SyN", "Dual-PRNet", "Dual-PRNet (slice step 8)"]
    colors = style.run_colors([("syn", 1), ("dualprnet", 1), ("dualprnet", 8)])
    expected_colors = [colors["syn"], colors["dualprnet"], colors["dualprnet-slice8"]]
    assert len(boxes.axes) == 1 and len(times.axes) == 1
    box_legend = boxes.axes[0].get_legend()
    assert [t.get_text() for t in box_legend.get_texts()] == expected
    box_colors = [to_hex(h.get_facecolor()) for h in box_legend.legend_handles]
    time_legend = times.axes[0].get_legend()
    assert [t.get_text() for t in time_legend.get_texts()] == expected
    time_colors = [to_hex(h.get_color()) for h in time_legend.legend_handles]
    assert box_colors == time_colors == [c.lower() for c in expected_colors]
    ticks = [t.get_text() for t in boxes.axes[0].get_xticklabels()]
    assert ticks == ["A", "B", "Average"]
    assert "Demo" in boxes.axes[0].get_title() and "FAIM" in boxes.axes[0].get_title()
    assert times.axes[0].get_xscale() == "log"


def test_dice_against_regularity_puts_each_run_at_its_means(per_pair: pd.DataFrame,
                                                            tmp_path: Path) -> None:
    """A rougher field buys Dice: each run is drawn at its mean SD log J (left) and NDV
    (right, symmetric log: 0 is a point) against its mean Dice, in the report's colours."""
    table = per_pair.assign(log_jacobian_std=np.linspace(0.1, 0.5, len(per_pair)),
                            ndv_percent=np.linspace(0.0, 0.2, len(per_pair)))
    figure = figures.plot_dice_vs_regularity(table, "faim", tmp_path / "regularity")
    assert (tmp_path / "regularity.png").stat().st_size > 1000
    left, right = figure.axes
    assert right.get_xscale() == "symlog" and left.get_xscale() == "linear"
    labels, palette = figures.run_palette(table)
    for ax, column in ((left, "log_jacobian_std"), (right, "ndv_percent")):
        for label, (method, step), line in zip(labels, figures._run_keys(table),
                                               [c.lines[0] for c in ax.containers], strict=True):
            rows = table[(table["method"] == method) & (table["slice_step"] == step)]
            x, y = line.get_data()
            assert x[0] == pytest.approx(rows[column].mean())
            assert y[0] == pytest.approx(rows["mean_dice_faim"].mean())
            assert to_hex(line.get_color()) == palette[label].lower()
    assert [t.get_text() for t in left.get_legend().get_texts()] == labels


@pytest.mark.parametrize("identity_time, minor_labels", [(2.0, True), (1e-5, False)])
def test_dice_time_labels_minor_ticks_only_on_a_short_range(per_pair: pd.DataFrame,
                                                             identity_time, minor_labels):
    """Over many decades (Identity's microseconds beside seconds) only the decades carry
    labels: the minor ones would run into each other."""
    syn = per_pair[per_pair["method"] == "syn"].assign(method="identity", time_s=identity_time)
    figure = figures.plot_dice_vs_time(pd.concat([per_pair, syn], ignore_index=True), "faim")
    figure.canvas.draw()
    labelled = [t.get_text() for t in figure.axes[0].xaxis.get_minorticklabels() if t.get_text()]
    assert bool(labelled) == minor_labels, labelled


def _volume(shape: tuple[int, int, int], shift: float) -> np.ndarray:
    grid = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    return np.exp(-4 * ((grid[0] - shift) ** 2 + grid[1] ** 2 + grid[2] ** 2)).astype(np.float32)


def test_plot_pyramid_panels(tmp_path: Path) -> None:
    shape = (32, 32, 16)
    fields = [np.full((3, 32 // f, 32 // f, 16 // f), 0.5, np.float32) for f in (8, 4, 2)]
    figure = figures.plot_pyramid(_volume(shape, 0.1), _volume(shape, 0.0), fields,
                                  tmp_path / "pyramid", slice_axis=2)
    titles = [a.get_title() for a in figure.axes]
    assert len(figure.axes) == 2 + 2 * 3 + 1  # moving, fixed, field + warped per level, bar
    assert titles[:4] == ["Moving", "Level 1 (1/8): field", "Level 2 (1/4): field",
                          "Level 3 (1/2): field"]
    assert titles[4:8] == ["Fixed", "Level 1 (1/8): warped", "Level 2 (1/4): warped",
                           "Level 3 (1/2): warped"]
    # A constant field of 0.5 voxels at 1/8 is 4 voxels at full resolution.
    field_image = figure.axes[1].get_images()[0].get_array()
    np.testing.assert_allclose(field_image, 4 * np.sqrt(3), rtol=1e-5)
    assert (tmp_path / "pyramid.png").exists() and (tmp_path / "pyramid.pdf").exists()
    with pytest.raises(ValueError, match="level 1"):
        figures.plot_pyramid(_volume(shape, 0), _volume(shape, 0), [np.zeros((2, 4, 4, 2))])


def test_plot_warped_comparison_panels(tmp_path: Path) -> None:
    shape = (24, 24, 12)
    fixed = _volume(shape, 0.0)
    warped = {"Dual-PRNet": fixed, "Mine": fixed * 0.5, "SyN": fixed * 0.9}
    figure = figures.plot_warped_comparison(_volume(shape, 0.2), fixed, warped,
                                            tmp_path / "warped")
    titles = [a.get_title() for a in figure.axes]
    assert titles[:5] == ["Moving", "Fixed", "SyN", "Dual-PRNet", "Mine"]
    assert titles[5:9] == ["|Moving - Fixed|", "|SyN - Fixed|", "|Dual-PRNet - Fixed|",
                           "|Mine - Fixed|"]
    assert len(figure.axes) == 2 + 2 * 3 + 1 + 1  # + |moving - fixed| + colour bar
    frame = to_hex(figure.axes[3].spines["left"].get_edgecolor())
    assert frame == style.METHOD_COLORS["dualprnet"].lower()
    assert np.allclose(figure.axes[7].get_images()[0].get_array(), 0)  # Dual-PRNet == fixed
    assert (tmp_path / "warped.png").exists() and (tmp_path / "warped.pdf").exists()


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Two subjects on a 24x32x20 grid (not a multiple of 16: exercises the padding)."""
    root = tmp_path / "tiny"
    shape, affine = (24, 32, 20), np.diag([2.0, 2.0, 2.0, 1.0])
    for i, subject in enumerate(("t1", "t2")):
        image = _volume(shape, 0.1 * i)
        write_subject(root, subject, image, (image > 0.5).astype(np.int32), affine)
    write_manifest(root, make_manifest(
        name="tiny", source="test", subjects=["t1", "t2"], splits={"train": [], "test":
                                                                    ["t1", "t2"]},
        labels={1: "blob"}, regions={"Blob": [1]}, shape=shape, affine=affine))
    return root


def test_figure_warped_cli(tiny_dataset: Path, tmp_path: Path) -> None:
    from regbench.io import write_image

    dirs = {}
    for label, scale in (("Dual-PRNet", 1.0), ("Affine", 0.7)):
        folder = tmp_path / label
        write_image(folder / "warped.nii.gz", _volume((24, 32, 20), 0.05) * scale,
                    np.diag([2.0, 2.0, 2.0, 1.0]))
        dirs[label] = folder
    out = tmp_path / "fig3" / "warped"
    args = ["figure-warped", "--data", str(tiny_dataset), "--moving", "t1", "--fixed", "t2",
            "--out-stem", str(out), *(a for label, d in dirs.items()
                                      for a in ("--method-dir", f"{label}={d}"))]
    assert cli(args) == 0
    assert out.with_suffix(".png").exists() and out.with_suffix(".pdf").exists()
    assert cli([*args[:-2], "--method-dir", "no-equals-sign"]) == 2
    assert cli([*args[:-2], "--method-dir", f"X={tmp_path / 'missing'}"]) == 2


def test_figure_pyramid_cli(tiny_dataset: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    dualprnet = pytest.importorskip("regbench.models.dualprnet")
    from regbench.checkpoint import CHECKPOINT_FORMAT

    options = {"encoder_channels": (4, 4, 4, 4), "decoder_channels": 4}
    method = dualprnet.DualPRNet(**options)
    torch.manual_seed(0)
    network = method.build_network()
    checkpoint = tmp_path / "model.pt"
    # the trainer's format, as a finished run of one step writes it
    torch.save({"format": CHECKPOINT_FORMAT, "method": "dualprnet", "options": {**method.options},
                "config": {"steps": 1}, "step": 1, "network": network.state_dict()}, checkpoint)
    out = tmp_path / "fig2" / "pyramid"
    assert cli(["figure-pyramid", "--data", str(tiny_dataset), "--moving", "t1", "--fixed",
                "t2", "--checkpoint", str(checkpoint), "--out-stem", str(out),
                "--threads", "1"]) == 0
    assert out.with_suffix(".png").exists() and out.with_suffix(".pdf").exists()

    from regbench.methods import load_trained
    from regbench.reports.pyramid import pyramid_fields

    loaded = load_trained(checkpoint)
    moving, fixed = _volume((24, 32, 20), 0.1), _volume((24, 32, 20), 0.0)
    fields, names = pyramid_fields(loaded, moving, fixed)
    assert names == ["1/16", "1/8", "1/4", "1/2"]
    assert all(f.shape == (3, 24, 32, 20) for f in fields)  # padded -> cropped to full grid
    from regbench.methods import inference_mode

    with torch.no_grad(), inference_mode(loaded.network, loaded.test_batch_statistics):
        padded = torch.nn.functional.pad(torch.from_numpy(moving)[None, None], (0, 12, 0, 0, 0, 8))
        fixed_p = torch.nn.functional.pad(torch.from_numpy(fixed)[None, None], (0, 12, 0, 0, 0, 8))
        final = loaded.network(padded, fixed_p)["field"][0, :, :24, :, :20].numpy()
    np.testing.assert_allclose(fields[-1], final, atol=1e-5)  # last level = the output field
    assert cli(["figure-pyramid", "--data", str(tiny_dataset), "--moving", "t1", "--fixed",
                "t2", "--checkpoint", str(tmp_path / "none.pt"), "--out-stem", str(out)]) == 2


def test_figures_cli(per_pair: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "figs"
    assert cli(["figures", "--per-pair", str(tmp_path / "per_pair.csv"), "--out-dir",
                str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {
        f"{stem}_{c}.{e}" for stem in ("fig4", "dice_time", "dice_regularity")
        for c in ("faim", "merged") for e in ("png", "pdf")}


def test_make_tables_rejects_unknown_kind(per_pair: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        make_tables(per_pair, "other", tmp_path)


def test_learning_curves_figure_from_training_logs(demo_dataset, tmp_path: Path) -> None:
    """A short training run with validation: the CLI draws its curves; validation time is taken
    off the training clock; a folder that is no training folder is refused."""
    from regbench.methods import get_method
    from regbench.reports.learning_curves import read_learning_curves
    from regbench.training import TrainConfig, train

    method = get_method("dualprnet")(encoder_channels=[4, 4, 4], decoder_channels=4, levels=2)
    train(method, demo_dataset, tmp_path / "model", TrainConfig(
        steps=4, warmup_steps=1, checkpoint_every=4, validate_every=2, validation_pairs=2,
        device="cpu", threads=1))
    loss, validation = read_learning_curves({"Dual-PRNet": tmp_path / "model"})
    assert list(validation["step"]) == [0, 2, 4] and list(loss["step"]) == [1, 2, 3, 4]
    raw = pd.read_csv(tmp_path / "model" / "loss.csv")
    checks = pd.read_csv(tmp_path / "model" / "validation.csv")
    # Steps 3 and 4 come after the validations at 0 and 2.
    spent = checks["eval_s"].iloc[:2].sum()
    assert loss["time_s"].iloc[3] == pytest.approx(raw["time_s"].iloc[3] - spent)
    stem = tmp_path / "figures" / "learning_curves"
    assert cli(["figure-learning-curves", "--model-dir", f"Dual-PRNet={tmp_path / 'model'}",
                "--out-stem", str(stem)]) == 0
    for ext in ("png", "pdf"):
        assert (stem.parent / f"learning_curves.{ext}").stat().st_size > 1000
    assert cli(["figure-learning-curves", "--model-dir", f"X={tmp_path}",
                "--out-stem", str(stem)]) == 2


def test_main_table_has_dice30_and_ndv_and_reads_files_without_ndv(tmp_path: Path) -> None:
    records = [{**rec, "ndv_percent": 0.01 * i} for i, rec in enumerate(hand_records())]
    table = main_table(per_pair_frame(records, tmp_path), "faim")
    headers = list(table.cells.columns)
    assert headers.index("Dice30") == headers.index("Average") + 1 and "NDV (%)" in headers
    ours = table.numbers[table.numbers["source"] == "ours"].set_index("method")
    for method, values in HAND.items():
        case_dice = [l2r_dice(pair) for pair in values["faim"]]
        assert ours.loc[method, "dice30"] == pytest.approx(np.quantile(case_dice, 0.3))
        means = [float(np.mean(pair)) for pair in values["faim"]]
        assert ours.loc[method, "dice30"] != pytest.approx(np.quantile(means, 0.3))
    assert ours.loc["dualprnet", "ndv_percent_mean"] == pytest.approx(0.01)  # pairs 0, 1, 2
    assert ours.loc["syn", "ndv_percent_mean"] == pytest.approx(0.04)  # pairs 3, 4, 5
    # A per_pair.csv written before NDV existed: the column reads as empty, the table shows "–".
    old = tmp_path / "old.csv"
    per_pair_frame(hand_records(), tmp_path, "older").drop(
        columns=["ndv_percent", "mean_dice_l2r"]).to_csv(old, index=False)
    cells = main_table(read_per_pair([old]), "faim").cells
    assert (cells.loc[cells["Source"] == "ours", "NDV (%)"] == "–").all()
    assert (cells.loc[cells["Source"] == "ours", "Dice30"] == "–").all()
