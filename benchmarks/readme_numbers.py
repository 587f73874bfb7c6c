"""The README's numbers from the committed result files: fill them in, or check them.

    python benchmarks/readme_numbers.py --check   # exit 1, with a diff, where the README differs
    python benchmarks/readme_numbers.py --write   # rewrite those parts of README.md in place

Every part of README.md that reports a run lies between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``, and the function ``SECTIONS[NAME]`` writes it from committed files
under ``results/`` (and ``figures/``, for a table committed beside its figure) alone, stopping
where those files no longer support a statement the part makes (``claim``). A run's record
(``RUNS``) says what its files do not: the machine and what else ran beside it while its times
were taken, and the command that made it.
``tests/test_readme_numbers.py`` runs ``--check``.

The README's text outside the markers is not checked. Its paragraph "Where the README's numbers
come from" lists the numbers there, from runs whose outputs were not committed; one committed
number is restated inside a list item, where markers would break the list (the training seeds'
spread under "Statistics"), and must be kept in step by hand.

To add a results folder (say ``results/lpba40_cpu/`` and its README section):

1. commit the run's ``per_pair.csv`` and ``tables/``;
2. add its record to ``RUNS`` (folder, command, machine and load);
3. add an entry to ``SECTIONS`` that reads it; for a table like the real-brain one, one line:
   ``"lpba40-table": lambda root: real_brain_table(root, "lpba40_cpu", "40 subjects, 1 mm"),``;
4. put ``<!-- lpba40-table:start -->`` and ``<!-- lpba40-table:end -->`` in the README where
   the table goes, and run ``--write``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from regbench.io import write_text

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 99  # the README's prose is wrapped at 99 characters
MARKER = re.compile(r"^<!-- ([a-z0-9-]+):(start|end) -->$", flags=re.MULTILINE)


@dataclass(frozen=True)
class Run:
    """A committed run: its folder under ``results/``, the command that made it, and where its
    times were taken, which its files do not record."""

    folder: str
    command: str
    machine: str


XEON = "a 2-core Intel Xeon with AMX and AVX-512 BF16"
"""The machine of the committed runs up to 2026-12-06 (24 GiB, no GPU)."""
EPYC = "a 2-core AMD EPYC with AVX-512 BF16 (no AMX)"
"""The machine of the LPBA40 run of 2026-12-07 (24 GiB, no GPU)."""

RUNS = {run.folder: run for run in (
    Run("demo", "`snakemake --cores all` (command 1) on a fresh clone",
        f"on 2026-12-03 on {XEON}, nothing else running (the workflow's other jobs on the other "
        "core)"),
    Run("demo_seed1", "`snakemake --cores all --configfile config.yaml config/demo_seed1.yaml "
                      "--directory runs/demo_seed1`",
        f"on 2026-12-03 on {XEON}, a low-priority run beside it; "
        "19 min 2 s wall clock"),
    Run("baselines", "`snakemake --cores all --configfile config.yaml config/baselines.yaml "
                     "--directory runs/baselines` on a clean clone",
        f"on 2026-12-03 on {XEON}, a low-priority `nice -n 10` run beside it; "
        "25 min 11 s wall clock"),
    Run("mindboggle101_cpu", "`snakemake --cores all --configfile config/mindboggle_cpu.yaml` "
                             "from a clean start",
        f"on 2026-12-03 on {XEON}, not quiet: another training ran beside it "
        "for its first minutes and other work at low priority; 16 min 30 s wall clock"),
    Run("lpba40_cpu", "`snakemake --cores all --configfile config/lpba40_cpu.yaml "
                      "config/lpba40_cpu_dev.yaml`, then with `config/lpba40_cpu_ablation.yaml "
                      "config/lpba40_cpu_slices.yaml` added",
        f"on 2026-12-07 on {EPYC}, not quiet: the trainings of `benchmarks/training_axes.py` "
        "and other work of the session shared the 2 cores, and Snakemake 9.15.0 ran more jobs "
        "than `--cores` at times"),
    Run("speed_memory", "`nice -n 10 python benchmarks/speed_memory.py --threads 1 "
                        "--out results/speed_memory/speed_memory.csv "
                        "--out results/speed_memory/speed_memory.md`",
        f"on 2026-12-06 on {XEON} (`amx_bf16` and `avx512_bf16` in /proc/cpuinfo: "
        "bfloat16 native), at low priority and not quiet: other sessions' tests "
        "shared the 2 cores, the load average rising from 0.3 at the start (Dual-PRNet's rows, "
        "measured first) to 4.4 at the end (release 0.2's rows, measured last)"),
)}


# --- reading the committed files -------------------------------------------------------------


def result_path(root: Path, folder: str, *parts: str, under: str = "results") -> Path:
    """``root/under/folder/parts``, which must exist."""
    path = root / under / folder / Path(*parts)
    if not path.is_file():
        raise SystemExit(f"readme_numbers: {path.relative_to(root)}: missing; the README "
                         f"section that reads it cannot be made")
    return path


def markdown_table_lines(path: Path) -> list[str]:
    """The lines of the first Markdown table in ``path``."""
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        raise SystemExit(f"readme_numbers: {path}: no Markdown table")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def caption_value(path: Path, pattern: str) -> str:
    """The first group of ``pattern`` in ``path``'s text (its caption and notes)."""
    found = re.search(pattern, path.read_text())
    if found is None:
        raise SystemExit(f"readme_numbers: {path}: no text matching {pattern!r}")
    return found.group(1)


def ours(root: Path, folder: str, convention: str) -> pd.DataFrame:
    """Our rows of a run's Table 1 (``tables/table1_{convention}.csv``), indexed by method."""
    table = pd.read_csv(result_path(root, folder, "tables", f"table1_{convention}.csv"))
    return table[table["source"] == "ours"].set_index("method")


def markdown_records(path: Path) -> list[dict[str, str]]:
    """The first Markdown table of ``path``: ``{column: cell}`` per row, bold and italics
    removed."""
    lines = markdown_table_lines(path)

    def cells(line: str) -> list[str]:
        return [cell.strip().strip("*") for cell in line.strip().strip("|").split("|")]

    return [dict(zip(cells(lines[0]), cells(line), strict=True)) for line in lines[2:]]


def markdown_rows(root: Path, folder: str, convention: str) -> dict[str, dict[str, str]]:
    """``{label: {column: cell}}`` of our rows of a run's Markdown Table 1."""
    path = result_path(root, folder, "tables", f"table1_{convention}.md")
    return {row["Method"]: row for row in markdown_records(path) if row["Source"] == "ours"}


def markdown_average(root: Path, folder: str, convention: str) -> dict[str, float]:
    """``{label: mean region Dice}`` from the Average column of a run's Markdown Table 1 (the
    runs that committed no CSV)."""
    return {label: float(cells["Average"].split("±")[0])
            for label, cells in markdown_rows(root, folder, convention).items()}


def every_8th_slice(root: Path, folder: str) -> str:
    """Dual-PRNet's mean FAIM Dice at slice step 8, as ``tables/slice_spacing.md`` prints it."""
    path = result_path(root, folder, "tables", "slice_spacing.md")
    for cells in markdown_records(path):
        if (cells["Method"], cells["Slice step"], cells["Source"]) == ("Dual-PRNet", "8", "ours"):
            faim = next(value for key, value in cells.items() if key.endswith("FAIM"))
            return faim.split("±")[0].strip()
    raise SystemExit(f"readme_numbers: {path}: no row of our Dual-PRNet at slice step 8")


def pair_scores(root: Path, folder: str, score: str = "mean_dice_faim") -> pd.DataFrame:
    """One row per test pair (moving, fixed), one column per method at slice step 1."""
    per_pair = pd.read_csv(result_path(root, folder, "per_pair.csv"))
    per_pair = per_pair[per_pair["slice_step"] == 1]
    return per_pair.pivot_table(index=["moving", "fixed"], columns="method", values=score)


def pairwise_row(root: Path, folder: str, method: str, versus: str,
                 convention: str = "faim") -> pd.Series:
    """The row of ``tables/table1_pairwise.csv`` comparing ``method`` with ``versus``."""
    table = pd.read_csv(result_path(root, folder, "tables", "table1_pairwise.csv"))
    rows = table[(table["convention"] == convention) & (table["slice_step"] == 1)
                 & (table["versus_slice_step"] == 1)]
    for a, b, sign in ((method, versus, 1), (versus, method, -1)):
        match = rows[(rows["method"] == a) & (rows["versus"] == b)]
        if len(match) == 1:
            row = match.iloc[0].copy()
            if sign < 0:  # the file compares them the other way round
                row["mean_difference"], row["ci_low"], row["ci_high"] = (
                    -row["mean_difference"], -row["ci_high"], -row["ci_low"])
            return row
    raise SystemExit(f"readme_numbers: results/{folder}/tables/table1_pairwise.csv: no row "
                     f"comparing {method} with {versus}")


# --- phrasing ---------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; ``align`` has one ``l`` or ``r`` per column."""
    rule = ["--:" if a == "r" else ":--" for a in align]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in (header, rule, *rows))


def of_pairs(count: int, total: int) -> str:
    """``all 12``, ``none of the 12`` or ``10 of the 12``."""
    if count == total:
        return f"all {total}"
    return f"none of the {total}" if count == 0 else f"{count} of the {total}"


def listing(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def above(pairs: pd.DataFrame, a: str, b: str) -> tuple[int, int, list[str]]:
    """On how many pairs ``a`` scores above ``b``, of how many, and the pairs where it does not
    (``moving -> fixed``, the subjects' trailing numbers)."""
    higher = pairs[a] > pairs[b]
    others = [f"{subject_number(m)} -> {subject_number(f)}" for m, f in pairs.index[~higher]]
    return int(higher.sum()), len(pairs), others


def subject_number(subject: str) -> str:
    """``OASIS-TRT-20-11`` -> ``11``."""
    return re.findall(r"\d+", subject)[-1]


def bold(text: str, best: bool) -> str:
    return f"**{text}**" if best else text


def run_note(folder: str) -> str:
    """Where a run's files are, the command that made them, and the machine and its load."""
    run = RUNS[folder]
    return f"`results/{folder}/`, made by {run.command} {run.machine}"


# --- the sections -----------------------------------------------------------------------------


def demo_table(root: Path) -> str:
    """The demo's Table 1 as its Markdown file has it, and what its caption says of the tests
    and times."""
    path = result_path(root, "demo", "tables", "table1_faim.md")
    subjects = caption_value(path, r"n = (\d+) subjects")
    smallest = caption_value(path, r"smallest two-sided p a test can give is ([\d.]+)")
    device = caption_value(path, r"Time per pair in seconds, on (.+?\(\d+ threads?\))")
    return "\n".join([
        *markdown_table_lines(path), "",
        f"No marks: with {subjects} test subjects (the unit of every test) no difference can be "
        f"significant; the smallest two-sided p over subjects is {smallest}. Time: each method's "
        f"own registration time per pair on {device}, measured {RUNS['demo'].machine}. The "
        f"caption in the file says all this in full."])


def mean_list(faim: dict[str, float], merged: dict[str, float]) -> str:
    """``Identity 0.643 (0.653), ...`` in rising order of FAIM Dice."""
    order = sorted(faim, key=faim.get)
    return ", ".join(f"{label} {faim[label]:.3f} ({merged[label]:.3f})" for label in order)


def demo_ordering(root: Path) -> str:
    """The demo's means in order, and which method is above which on how many pairs.

    The demo's per-pair scores are those of results/baselines, whose run repeats the demo's main
    experiment and adds two methods; that they are the same scores is checked here."""
    faim, merged = (markdown_average(root, "demo", c) for c in ("faim", "merged"))
    pairs = pair_scores(root, "baselines")
    labels = ours(root, "baselines", "faim")["label"]
    claim(all(f"{pairs[method].mean():.3f}" == f"{faim[label]:.3f}"
              for method, label in labels.items() if label in faim),
          "its run scores the demo's methods as the demo does", "results/baselines/per_pair.csv")
    dpr_vm, n, _ = above(pairs, "dualprnet", "voxelmorph")
    fixed = pairs.groupby(level="fixed").mean()
    fixed_count = int((fixed["dualprnet"] > fixed["voxelmorph"]).sum())
    vm_aff, aff_id, syn_dpr = (above(pairs, a, b)[0] for a, b in (
        ("voxelmorph", "affine"), ("affine", "identity"), ("syn", "dualprnet")))
    sliced_dice = every_8th_slice(root, "demo")
    return (
        f"**The ordering with training seed 0, descriptively.** Mean region Dice over the {n} "
        f"test pairs (FAIM; merged in parentheses): {mean_list(faim, merged)}. With this "
        f"training seed (0), Dual-PRNet is above VoxelMorph on {of_pairs(dpr_vm, n)} pairs and "
        f"for {of_pairs(fixed_count, len(fixed))} fixed subjects, VoxelMorph above Affine on "
        f"{of_pairs(vm_aff, n)}, Affine above Identity on {of_pairs(aff_id, n)}; SyN is above "
        f"Dual-PRNet on {of_pairs(syn_dpr, n)} (pair counts from `results/baselines/"
        f"per_pair.csv`, whose run scores these five methods as the demo does, which the script "
        f"checks). These are **descriptive**: the {n} pairs are the ordered pairs of "
        f"{len(fixed)} subjects, not {n} independent samples, and with the subject as the unit "
        f"(jackknife pseudo-values, exact Wilcoxon, Holm; `table1_stats.csv` and "
        f"`table1_pairwise.csv`, with 95 % intervals and TOST) no difference of {len(fixed)} "
        f"subjects can reach p < 0.05, nor can an equivalence. With the moving volume cut to "
        f"every 8th slice along axis 1, Dual-PRNet falls from {faim['Dual-PRNet']:.3f} to "
        f"{sliced_dice}, as in the paper (0.778 -> 0.711 on LPBA40). The reference outputs are "
        f"committed: {run_note('demo')}, and `figures/demo/`.")


def demo_seed1(root: Path) -> str:
    """The other population's means and the sign of Dual-PRNet - VoxelMorph."""
    faim, merged = (markdown_average(root, "demo_seed1", c) for c in ("faim", "merged"))
    difference = pairwise_row(root, "demo_seed1", "dualprnet", "voxelmorph")
    sign = "above" if difference["mean_difference"] > 0 else "below"
    sliced_dice = every_8th_slice(root, "demo_seed1")
    return (
        f"**The other population** (`datasets.demo.seed: 1`: other synthetic subjects; "
        f"{run_note('demo_seed1')}): {mean_list(faim, merged)}. Dual-PRNet is "
        f"{abs(difference['mean_difference']):.4f} {sign} VoxelMorph in mean FAIM Dice over the "
        f"{difference['n_pairs']} pairs (95 % interval over its {difference['n_subjects']} "
        f"subjects {difference['ci_low']:.3f} to {difference['ci_high']:.3f}; "
        f"`table1_pairwise.csv`); every-8th-slice Dual-PRNet {sliced_dice}. That run's per-pair "
        f"scores were not committed, so the README gives no pair counts for it.")


def train_seeds(root: Path) -> str:
    """The committed table of the spread over training seeds."""
    path = result_path(root, "demo_train_seeds", "seed_spread.md")
    return "\n".join(markdown_table_lines(path))


def train_seeds_spread(root: Path) -> str:
    """What the spread over training seeds says of the methods that do not train, and of
    Dual-PRNet's lead over VoxelMorph."""
    seeds = pd.read_csv(result_path(root, "demo_train_seeds", "seed_spread.csv"))
    dice = seeds.pivot_table(index="seed", columns="method", values="dice")
    fixed = seeds.loc[~seeds["learned"], "method"].unique()
    moved = float((dice[fixed].max() - dice[fixed].min()).max())
    alike = ("score to the last digit alike under every seed: only the seed changed" if moved == 0
             else f"differ by up to {moved:.4f} between seeds, which only the seed should move")
    spread = float(dice["dualprnet"].max() - dice["dualprnet"].min())
    lead = float(dice.loc[0, "dualprnet"] - dice.loc[0, "voxelmorph"])
    compared = "larger than" if spread > lead else "not larger than"
    return (f"The methods that do not train {alike}. Dual-PRNet's range over seeds ({spread:.3f}) "
            f"is {compared} its lead over VoxelMorph with seed 0 ({lead:.3f}), and its lead "
            f"under seeds {listing([str(s) for s in dice.index[1:]])} is "
            f"{listing([f'{d:.3f}' for d in (dice['dualprnet'] - dice['voxelmorph'])[1:]])} "
            f"(`results/demo_train_seeds/seed_spread.csv`; the per-pair scores of those seeds' "
            f"runs were not committed, so the README gives no pair counts for them).")


def baselines_table(root: Path) -> str:
    """Every baseline's means (FAIM), the best Dice, Dice30 and HD95 in bold."""
    table = ours(root, "baselines", "faim")
    best = {"average_mean": table["average_mean"].max(), "dice30": table["dice30"].max(),
            "hd95_mm_mean": table["hd95_mm_mean"].min()}
    rows = [[row["label"],
             bold(f"{row['average_mean']:.3f} ± {row['average_std']:.3f}",
                  row["average_mean"] == best["average_mean"]),
             bold(f"{row['dice30']:.3f}", row["dice30"] == best["dice30"]),
             bold(f"{row['hd95_mm_mean']:.2f}", row["hd95_mm_mean"] == best["hd95_mm_mean"]),
             f"{row['log_jacobian_std_mean']:.3f}", f"{row['folding_percent_mean']:.3f}",
             f"{row['ndv_percent_mean']:.4f}", f"{row['time_s_mean']:.2f}"]
            for _, row in table.iterrows()]
    device = "; ".join(sorted(set(table["device"])))
    return "\n".join([markdown_table(
        ["Method", "Dice", "Dice30", "HD95 (mm)", "SD log J", "Folding (%)", "NDV (%)",
         "Time per pair (s)"], "lrrrrrrr", rows), "",
        f"Times: each method's own registration time per pair on {device}, FireANTs on the CPU "
        f"through its plain PyTorch path, the workflow's other jobs on the other core; measured "
        f"{RUNS['baselines'].machine}."])


def baselines_ranking(root: Path) -> str:
    """Where the two classical methods the demo lacks stand, from the baselines run."""
    table = ours(root, "baselines", "faim")
    average = table["average_mean"]
    demo, here = (markdown_rows(root, folder, "faim") for folder in ("demo", "baselines"))
    shared = [label for label in here if label in demo]
    claim(shared == list(demo) and all(
        {k: v for k, v in here[label].items() if k != "Time (s)"}
        == {k: v for k, v in demo[label].items() if k != "Time (s)"} for label in shared),
        f"{listing(shared)} score to the last digit as in the default demo's table",
        "results/baselines/tables/table1_faim.md")
    first, second = average.sort_values(ascending=False).index[:2]
    label = table["label"]
    per_pair = pd.read_csv(result_path(root, "baselines", "per_pair.csv"))
    per_pair = per_pair[per_pair["slice_step"] == 1]
    regions = [c.split("/", 1)[1] for c in per_pair.columns if c.startswith("dice_faim/")]
    region_means = per_pair.groupby("method")[[f"dice_faim/{r}" for r in regions]].mean()
    firsts = int((region_means.idxmax() == first).sum())
    pairs = pair_scores(root, "baselines")
    others = pairs.drop(columns=[first, second]).max(axis=1)
    both_above = int((pairs[[first, second]].min(axis=1) > others).sum())
    for method in (first, second):
        claim(table.loc[method, "hd95_mm_mean"] < table.loc["syn", "hd95_mm_mean"]
              and table.loc[method, "folding_percent_mean"] == 0
              and table.loc[method, "log_jacobian_std_mean"]
              > table.loc["syn", "log_jacobian_std_mean"],
              f"{label[method]} has a lower HD95 than SyN, no folding and a larger SD log J",
              "results/baselines/tables/table1_faim.csv")
    learned = [m for m in ("voxelmorph", "dualprnet") if m in table.index]
    ratios = [table.loc[c, "time_s_mean"] / table.loc[m, "time_s_mean"]
              for c in (first, second) for m in learned]
    regions_text = ("every region" if firsts == len(regions)
                    else f"{firsts} of the {len(regions)} regions")
    return (f"{listing(shared)} score to the last digit as in the default demo's table above "
            f"(times aside): adding the two methods changed nothing else. "
            f"Descriptively (4 test subjects: no test can reach p < 0.05, the tables say so), "
            f"{label[first]} is first in {regions_text}, then {label[second]}, and both are above "
            f"every other method on {of_pairs(both_above, len(pairs))} pairs: "
            f"{average[first] - average['syn']:.2f} and {average[second] - average['syn']:.2f} "
            f"above SyN in ANTsPy's default schedule (no iterations at full resolution), with a "
            f"lower HD95 and no folding, at a larger SD log J than SyN's. The learned methods, "
            f"each trained for about 14 minutes on a CPU, register a pair {min(ratios):.0f} to "
            f"{max(ratios):.0f} times faster than these two.")


def claim(holds: bool, text: str, source: str) -> None:
    """Stop when the committed results no longer support a statement the README makes."""
    if not holds:
        raise SystemExit(f"readme_numbers: {source} no longer supports the README's statement "
                         f"that {text}; rewrite it")


def real_brain_table(root: Path, folder: str, paper_data: str) -> str:
    """A real-data CPU run: mean region Dice in both conventions, folding and time per pair,
    and the paper's Dual-PRNet, measured on ``paper_data``."""
    faim, merged = ours(root, folder, "faim"), ours(root, folder, "merged")
    best = faim["average_mean"].max(), merged["average_mean"].max()
    rows = [[row["label"], bold(f"{row['average_mean']:.3f}", row["average_mean"] == best[0]),
             bold(f"{merged.loc[method, 'average_mean']:.3f}",
                  merged.loc[method, "average_mean"] == best[1]),
             f"{row['folding_percent_mean']:.3f}",
             f"{row['time_s_mean']:.2f} ± {row['time_s_std']:.2f}"]
            for method, row in faim.iterrows()]
    paper = pd.read_csv(result_path(root, folder, "tables", "table1_faim.csv"))
    paper = paper[(paper["source"] == "paper") & (paper["method"] == "dualprnet")]
    rows += [[f"*paper, Dual-PRNet ({paper_data})*",
              f"*{row['average_mean']:.3f}*", "", "", ""] for _, row in paper.iterrows()]
    device = "; ".join(sorted(set(faim["device"])))
    return "\n".join([markdown_table(
        ["method", "FAIM", "merged", "folding (%)", "time per pair (s)"], "lrrrr", rows), "",
        f"Times: mean ± standard deviation over the pairs of each method's own registration time "
        f"on {device}; from {run_note(folder)}. Load slows and spreads the times; the scores do "
        f"not depend on it."])


def mindboggle_pairs(root: Path) -> str:
    """Who is above whom on the real development subjects' pairs, and per fixed subject."""
    pairs = pair_scores(root, "mindboggle101_cpu")
    n = len(pairs)
    beaten = [b for b in ("syn", "affine", "identity") if above(pairs, "voxelmorph", b)[0] == n]
    labels = ours(root, "mindboggle101_cpu", "faim")["label"]
    dpr_aff, _, exceptions = above(pairs, "dualprnet", "affine")
    dpr_syn = above(pairs, "dualprnet", "syn")[0]
    fixed = pairs.groupby(level="fixed").mean()
    gain = fixed["dualprnet"] - fixed["affine"]
    vm_text = (f"VoxelMorph is above {listing([labels[b] for b in beaten])} on all {n} pairs. "
               if beaten else "")
    not_on = f" (not on {listing(exceptions)})" if exceptions else ""
    table = pd.read_csv(result_path(root, "mindboggle101_cpu", "tables", "table1_faim.csv"))
    paper = table[table["source"] == "paper"].set_index("method")["average_mean"]
    mine = table[table["source"] == "ours"].set_index("method")["average_mean"]
    same = ((paper["dualprnet"] > paper["voxelmorph"]) == (mine["dualprnet"] > mine["voxelmorph"]))
    return (f"{vm_text}Dual-PRNet is above Affine on {of_pairs(dpr_aff, n)}{not_on} and below "
            f"SyN on {of_pairs(n - dpr_syn, n)}; averaged per fixed subject it is above Affine "
            f"on {of_pairs(int((gain > 0).sum()), len(gain))}, by {gain.min():.3f} to "
            f"{gain.max():.3f} (`results/mindboggle101_cpu/per_pair.csv`). On the paper's data "
            f"and size Dual-PRNet scores {paper['dualprnet']:.3f}, against SyN's "
            f"{paper['syn']:.3f} and VoxelMorph's {paper['voxelmorph']:.3f}: **at this scale the "
            f"paper's ordering of the learned methods {'holds' if same else 'does not hold'}**.")


def diagnosis_table(root: Path) -> str:
    """The real-brain diagnosis's table, as committed beside its figure (its inputs were not
    kept: README, "Why Dual-PRNet lags here")."""
    return "\n".join(markdown_table_lines(result_path(
        root, "mindboggle101_cpu", "learning_curves_diagnosis.md", under="figures")))


def speed_table(root: Path) -> str:
    """The speed and memory benchmark: one line per method and size, and the ratios."""
    path = result_path(root, "speed_memory", "speed_memory.csv")
    table = pd.read_csv(path)
    rows, cells = [], {}
    for (label, size), group in table.groupby(["label", "size"], sort=False):
        modes = group.set_index("mode")
        cells[label, size] = modes["time_s"]
        rows.append([label, size, *(f"{modes.loc[m, key]:{spec}}" if m in modes.index else "-"
                                    for m in ("inference", "training step")
                                    for key, spec in (("time_s", ".3f"),
                                                      ("peak_memory_mib", ".0f"))),
                     str(group["parameters"].iloc[0])])
    first = table.iloc[0]
    versions = json.loads(first["versions"])
    repeats = ", ".join(f"{size}: {n}" for size, n in
                        table.groupby("size", sort=False)["repeats"].first().items())
    ratios = []
    for other in [label for label in table["label"].unique() if label != "Dual-PRNet"]:
        for mode in ("inference", "training step"):
            values = [cells[other, size][mode] / cells["Dual-PRNet", size][mode]
                      for size in table["size"].unique()
                      if (other, size) in cells and mode in cells[other, size].index]
            ratios.append(f"{mode} {min(values):.1f}-{max(values):.1f}x against {other}")
    return "\n".join([
        f"Measured {RUNS['speed_memory'].machine}. {first['device']}, torch "
        f"{versions.get('torch', '?')}, {'bfloat16 autocast' if first['amp'] else 'float32'}; "
        f"time: median of the measured runs ({repeats}) after {first['warmup']} warm-up run(s); "
        f"CPU memory: the increase of resident memory during a run (`results/speed_memory/`, "
        f"made by {RUNS['speed_memory'].command}):", "",
        markdown_table(["method", "size", "inference time (s)", "inference peak memory (MiB)",
                        "training step time (s)", "training step peak memory (MiB)",
                        "parameters"], "llrrrrr", rows), "",
        f"Time of each other network over Dual-PRNet's, within this one run, over the sizes: "
        f"{'; '.join(ratios)}. The load changed during the run, and the rows measured later "
        f"ran on a busier machine, so these ratios are rough; a number to cite needs a rerun on "
        f"a quiet machine."])


# --- LPBA40 on a CPU ---------------------------------------------------------------------------

LPBA40 = "lpba40_cpu"
LPBA40_DATASET = "lpba40"
LPBA40_PAIRS = [("dualprnet", "voxelmorph"), ("dualprnet", "affine"), ("voxelmorph", "affine"),
                ("syn", "affine"), ("dualprnet", "syn"), ("voxelmorph", "syn")]
"""The comparisons of the LPBA40 development run the README reports, in its order."""


def pairwise(root: Path, folder: str, table: str, method: tuple[str, int],
             versus: tuple[str, int], convention: str = "faim") -> pd.Series:
    """The row of ``tables/{table}_pairwise.csv`` comparing run ``method`` (name, slice step)
    with run ``versus``, signed as ``method - versus``."""
    path = result_path(root, folder, "tables", f"{table}_pairwise.csv")
    rows = pd.read_csv(path)
    rows = rows[rows["convention"] == convention]
    for (a, a_step), (b, b_step), sign in ((method, versus, 1), (versus, method, -1)):
        match = rows[(rows["method"] == a) & (rows["slice_step"] == a_step)
                     & (rows["versus"] == b) & (rows["versus_slice_step"] == b_step)]
        if len(match) == 1:
            row = match.iloc[0].copy()
            if sign < 0:
                row["mean_difference"], row["ci_low"], row["ci_high"] = (
                    -row["mean_difference"], -row["ci_high"], -row["ci_low"])
            return row
    raise SystemExit(f"readme_numbers: {path}: no row comparing {method} with {versus}")


def test_cells(row: pd.Series) -> list[str]:
    """Mean difference, its 95 % interval, n subjects, Holm's p and the verdict of a row."""
    return [f"{row['mean_difference']:+.3f}", f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
            f"{int(row['n_subjects'])}", f"{row['p_holm']:.3f}", str(row["verdict"])]


TEST_HEADER = ["difference (FAIM)", "95 % interval", "subjects", "p (Holm)", "verdict"]


def lpba40_alignment(root: Path) -> str:
    """The measured choice between the given alignment and MNI152, as the script wrote it."""
    path = result_path(root, LPBA40, "alignment", "alignment.md")
    return path.read_text().strip()


def lpba40_table(root: Path) -> str:
    """The development run's Table 1: both conventions, regularity and time, the paper's rows."""
    faim, merged = ours(root, LPBA40, "faim"), ours(root, LPBA40, "merged")
    best = faim["average_mean"].max(), merged["average_mean"].max()
    rows = [[row["label"], bold(f"{row['average_mean']:.3f}", row["average_mean"] == best[0]),
             bold(f"{merged.loc[method, 'average_mean']:.3f}",
                  merged.loc[method, "average_mean"] == best[1]),
             f"{row['folding_percent_mean']:.3f}", f"{row['log_jacobian_std_mean']:.3f}",
             f"{row['ndv_percent_mean']:.4f}", f"{row['time_s_mean']:.2f}"]
            for method, row in faim.iterrows()]
    table = pd.read_csv(result_path(root, LPBA40, "tables", "table1_faim.csv"))
    paper = table[table["source"] == "paper"]
    rows += [[f"*paper, {row['label']}*", f"*{row['average_mean']:.3f}*", "", "", "", "", ""]
             for _, row in paper.iterrows()]
    n = int(faim["n"].iloc[0])
    device = "; ".join(sorted(set(faim["device"])))
    return "\n".join([markdown_table(
        ["method", "FAIM", "merged", "folding (%)", "SD log J", "NDV (%)", "time (s)"],
        "lrrrrrr", rows), "",
        f"Means over the {n} ordered test pairs; time: each method's own registration time per "
        f"pair on {device}; from {run_note(LPBA40)}. The paper's rows are LPBA40 at 1 mm, "
        "trained on 30 subjects."])


def lpba40_tests(root: Path) -> str:
    """The comparisons with the subject as the unit (jackknife, exact Wilcoxon, Holm)."""
    labels = ours(root, LPBA40, "faim")["label"]
    rows = [[f"{labels[a]} - {labels[b]}",
             *test_cells(pairwise(root, LPBA40, "table1", (a, 1), (b, 1)))]
            for a, b in LPBA40_PAIRS]
    return markdown_table(["comparison", *TEST_HEADER], "lrrrrl", rows)


def experiment_means(root: Path, table: str) -> dict[tuple[str, int], tuple[str, float, float]]:
    """``{(method, slice step): (label, FAIM, merged)}`` of our rows of ``tables/{table}.csv``."""
    frame = pd.read_csv(result_path(root, LPBA40, "tables", f"{table}.csv"))
    frame = frame[frame["source"] == "ours"]
    return {(row["method"], int(row["slice_step"])): (
        row["label"], row[f"{LPBA40_DATASET}_faim_mean"], row[f"{LPBA40_DATASET}_merged_mean"])
        for _, row in frame.iterrows()}


def lpba40_experiment(root: Path, table: str, comparisons: Sequence[tuple]) -> str:
    """An ablation or slice-spacing table: each run's mean Dice, then its tests."""
    means = experiment_means(root, table)

    def name(run: tuple[str, int]) -> str:
        return means[run][0] + (f" (every {run[1]}th slice)" if run[1] > 1 else "")

    rows = [[name(run), f"{faim:.3f}", f"{merged:.3f}"]
            for run, (_, faim, merged) in means.items()]
    tests = [[f"{name(a)} - {name(b)}", *test_cells(pairwise(root, LPBA40, table, a, b))]
             for a, b in comparisons]
    return "\n".join([markdown_table(["run", "FAIM", "merged"], "lrr", rows), "",
                      markdown_table(["comparison", *TEST_HEADER], "lrrrrl", tests)])


def lpba40_findings(root: Path) -> str:
    """What the development run says of the paper's claims, per fixed subject (the unit)."""
    pairs = pair_scores(root, LPBA40)
    fixed = pairs.groupby(level="fixed").mean()
    n = len(fixed)
    labels = ours(root, LPBA40, "faim")["label"]
    faim = ours(root, LPBA40, "faim")

    def per_subject(a: str, b: str) -> str:
        gap = fixed[a] - fixed[b]
        return (f"{labels[a]} is above {labels[b]} for {of_pairs(int((gap > 0).sum()), n)} "
                f"fixed subjects (by {gap.min():+.3f} to {gap.max():+.3f})")

    folds = {m: faim.loc[m] for m in ("voxelmorph", "dualprnet")}
    claim(folds["voxelmorph"]["ndv_percent_mean"] > folds["dualprnet"]["ndv_percent_mean"],
          "VoxelMorph's field is the rougher", f"results/{LPBA40}/tables/table1_faim.csv")
    tests = pd.read_csv(result_path(root, LPBA40, "tables", "table1_pairwise.csv"))
    tests = tests[(tests["convention"] == "faim") & (tests["slice_step"] == 1)]
    claim(tests["p_holm"].min() >= 0.05, "no difference reaches p < 0.05",
          f"results/{LPBA40}/tables/table1_pairwise.csv")
    return (f"{per_subject('voxelmorph', 'affine')}; {per_subject('dualprnet', 'affine')}; "
            f"{per_subject('dualprnet', 'voxelmorph')}; {per_subject('syn', 'voxelmorph')}. "
            f"VoxelMorph's field is the rougher: it folds "
            f"{folds['voxelmorph']['folding_percent_mean']:.3f} % of the voxels (NDV "
            f"{folds['voxelmorph']['ndv_percent_mean']:.4f} %), Dual-PRNet "
            f"{folds['dualprnet']['folding_percent_mean']:.3f} % (NDV "
            f"{folds['dualprnet']['ndv_percent_mean']:.4f} %). With {n} test subjects and "
            f"Holm's correction over the table's {len(tests)} comparisons, no difference "
            f"reaches p < 0.05 (smallest adjusted p {tests['p_holm'].min():.3f}, for subjects "
            "all in one direction), so these are descriptive; the held-out S31-S40 (10 "
            "subjects) can decide them.")


NDV_LIMIT = 0.1
"""The criterion of the configuration's smoothness weights: the best Dice with NDV below it (%)."""


def lpba40_axes(root: Path) -> str:
    """The smoothness sweep (benchmarks/training_axes.py), the weight its criterion chooses, and
    each Dual-PRNet point against the best VoxelMorph point at least as regular."""
    path = result_path(root, LPBA40, "axes", "smoothness.csv")
    sweep = pd.read_csv(path)
    table = result_path(root, LPBA40, "axes", "smoothness.md").read_text().strip()
    chosen = []
    for network, points in sweep.groupby("network", sort=False):
        allowed = points[points["NDV (%)"] < NDV_LIMIT]
        best = allowed.loc[allowed["Dice (FAIM)"].idxmax()]
        chosen.append(f"{network} {best['smoothness weight']:g}")
    vm, dpr = (sweep[sweep["network"] == name] for name in ("VoxelMorph", "Dual-PRNet"))
    matched, ahead, smoother = [], [], []
    for _, point in dpr.sort_values("smoothness weight").iterrows():
        regular = vm[vm["SD log J"] <= point["SD log J"]]
        if not len(regular):
            smoother.append(f"{point['smoothness weight']:g}")
        else:
            rival = regular.loc[regular["Dice (FAIM)"].idxmax()]
            ahead.append(rival["Dice (FAIM)"] > point["Dice (FAIM)"])
            matched.append(
                f"Dual-PRNet at {point['smoothness weight']:g} (SD log J "
                f"{point['SD log J']:.3f}): {point['Dice (FAIM)']:.3f}, VoxelMorph at "
                f"{rival['smoothness weight']:g} ({rival['SD log J']:.3f}): "
                f"{rival['Dice (FAIM)']:.3f}")
    claim(bool(ahead) and all(ahead), "VoxelMorph is ahead at matched regularity",
          str(path.relative_to(root)))
    text = (f"By the criterion (the best Dice with NDV below {NDV_LIMIT:g} %) the sweep chooses "
            f"{' and '.join(chosen)}. Each Dual-PRNet point against the best VoxelMorph point "
            f"that is at least as regular (SD log J no larger): {'; '.join(matched)}."
            + (f" Dual-PRNet at {' and '.join(smoother)} is smoother than every VoxelMorph "
               "point of the sweep, so it has no match there." if smoother else ""))
    return "\n\n".join([table, textwrap.fill(text, WIDTH)])


def lpba40_times(root: Path) -> str:
    """The development run's time by stage (benchmarks/workflow_times.py), and what the paper's
    split would cost: 40 subjects to prepare and 90 test pairs instead of 30 and 30."""
    stages = pd.read_csv(result_path(root, LPBA40, "times.csv"))
    main = stages[~stages["stage"].str.contains("ssf|dsf")]
    per_pair = main["stage"].str.startswith(("register", "evaluate"))
    estimate = (main.loc[main["stage"] == "prepare", "cpu_s"].sum() * 40 / 30
                + main.loc[per_pair, "cpu_s"].sum() * 3
                + main.loc[~per_pair & (main["stage"] != "prepare"), "cpu_s"].sum()) / 2
    rows = [[row["stage"], str(int(row["jobs"])), f"{row['wall_s'] / 60:.1f}",
             f"{row['cpu_s'] / 60:.1f}"] for _, row in stages.iterrows()]
    return "\n".join([markdown_table(["stage", "jobs", "wall (min)", "CPU (min)"], "lrrr", rows),
                      "", textwrap.fill(
        f"Summed over each stage's jobs, from Snakemake's benchmark files of the run above "
        f"({run_note(LPBA40)}). The main comparison on the paper's split (40 subjects "
        f"prepared, 90 test pairs, the same training), its CPU minutes spread over 2 cores: "
        f"about {estimate / 60:.0f} min, an estimate, not a run.", WIDTH)])


Render = Callable[[Path], str]
"""A marked part of the README, written from the committed results under a checkout's root."""

SECTIONS: dict[str, Render] = {
    "demo-table": demo_table,
    "demo-ordering": demo_ordering,
    "demo-seed1": demo_seed1,
    "train-seeds": train_seeds,
    "train-seeds-spread": train_seeds_spread,
    "baselines-table": baselines_table,
    "baselines-ranking": baselines_ranking,
    "mindboggle-table": lambda root: real_brain_table(root, "mindboggle101_cpu",
                                                      "101 subjects, 1 mm"),
    "mindboggle-pairs": mindboggle_pairs,
    "diagnosis-table": diagnosis_table,
    "speed-table": speed_table,
    "lpba40-alignment": lpba40_alignment,
    "lpba40-table": lpba40_table,
    "lpba40-tests": lpba40_tests,
    "lpba40-findings": lpba40_findings,
    "lpba40-ablation": lambda root: lpba40_experiment(
        root, "ablation", [(("dualprnet", 1), ("dualprnet-dsf", 1)),
                           (("dualprnet-dsf", 1), ("dualprnet-ssf", 1))]),
    "lpba40-slices": lambda root: lpba40_experiment(
        root, "slice_spacing", [(("dualprnet", 8), ("voxelmorph", 1)),
                                (("dualprnet", 1), ("dualprnet", 8))]),
    "lpba40-axes": lpba40_axes,
    "lpba40-times": lpba40_times,
}

RECORDS = {
    "long-table": "the means of config/demo_long.yaml's runs of 2026-11-30, whose tables were "
                  "withdrawn from the tree (`git show 3d8065b --stat`): a record of a run no "
                  "committed file holds, left as it is",
}
"""Marked parts of the README that no committed file makes, and why; neither written nor
checked."""


# --- the README's marked parts ----------------------------------------------------------------


def marked_parts(readme: str, source: str = "README.md") -> dict[str, tuple[int, int]]:
    """``{name: (start, end)}``: the text offsets between each part's start and end marker.

    Raises ``SystemExit`` (naming ``source``) when a marker is unpaired, repeated or nested, or
    names neither a section of ``SECTIONS`` nor one of ``RECORDS``, or a section has no
    markers.
    """
    parts, open_name, open_at = {}, None, 0
    for match in MARKER.finditer(readme):
        name, kind = match.groups()
        line = readme.count("\n", 0, match.start()) + 1
        if kind == "start" and open_name is None and name not in parts:
            open_name, open_at = name, match.end() + 1
        elif kind == "end" and name == open_name:
            parts[name] = (open_at, match.start())
            open_name = None
        else:
            raise SystemExit(f"readme_numbers: {source}:{line}: marker {name}:{kind} is "
                             f"unpaired, repeated or nested")
    if open_name is not None:
        raise SystemExit(f"readme_numbers: {source}: {open_name}:start has no {open_name}:end")
    if unknown := sorted(set(parts) - set(SECTIONS) - set(RECORDS)):
        raise SystemExit(f"readme_numbers: {source}: markers {unknown} name no section of "
                         f"benchmarks/readme_numbers.py")
    if missing := sorted(set(SECTIONS) - set(parts)):
        raise SystemExit(f"readme_numbers: {source}: no markers for the sections {missing}")
    return parts


def filled(readme: str, root: Path, source: str = "README.md") -> str:
    """``readme`` with every marked part written from ``root``'s committed results."""
    parts = marked_parts(readme, source)
    pieces, at = [], 0
    for name, (start, end) in sorted(parts.items(), key=lambda item: item[1]):
        if name in SECTIONS:
            pieces += [readme[at:start], wrapped(SECTIONS[name](root))]
            at = end
    return "".join(pieces) + readme[at:]


def wrapped(markdown: str) -> str:
    """``markdown`` with each paragraph filled to the README's width; tables as they are."""
    blocks = markdown.strip("\n").split("\n\n")
    return "\n\n".join(block if block.startswith("|") else
                       textwrap.fill(block, WIDTH, break_long_words=False,
                                     break_on_hyphens=False)
                       for block in blocks) + "\n"


def differences(readme: str, root: Path, source: str = "README.md") -> str:
    """A unified diff from ``readme`` to what the committed results make of it; empty when they
    agree."""
    expected = filled(readme, root, source)
    return "".join(difflib.unified_diff(readme.splitlines(keepends=True),
                                        expected.splitlines(keepends=True),
                                        f"{source} (as committed)",
                                        f"{source} (from results/)"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true",
                      help="exit 1 and print a diff where the README differs from the results")
    mode.add_argument("--write", action="store_true", help="rewrite the README's marked parts")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout holding README.md and results/ (default: this one)")
    args = parser.parse_args(argv)
    path = args.root / "README.md"
    readme = path.read_text()
    if args.write:
        expected = filled(readme, args.root)
        if expected != readme:
            write_text(path, expected)
            print(f"readme_numbers: rewrote the marked parts of {path}")
        return 0
    diff = differences(readme, args.root)
    if diff:
        print(diff, end="")
        print(f"readme_numbers: {path} differs from the committed results; run --write",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
