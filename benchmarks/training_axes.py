"""Measured axes of the learned methods: how many training subjects, and the smoothness weight.

Each arm trains one learned method with the workflow configuration's settings, changing one
thing, registers the configuration's test pairs with it and scores them, through the same
commands the workflow runs (``regbench train``, ``register-pairs``, ``evaluate-pairs``,
``aggregate``)::

    # Dual-PRNet and VoxelMorph on the first 6 and 12 training subjects
    python benchmarks/training_axes.py subjects --counts 6,12 \\
        --config config/lpba40_cpu.yaml config/lpba40_cpu_dev.yaml --out runs/lpba40_axes
    # the smoothness weight of each network
    python benchmarks/training_axes.py smoothness --weights 0.3,3 \\
        --config config/lpba40_cpu.yaml config/lpba40_cpu_dev.yaml --out runs/lpba40_axes
    # tables and figures of every arm, beside the workflow's own run of the main experiment
    python benchmarks/training_axes.py report --runs runs/lpba40_axes \\
        --main results/lpba40/main/per_pair.csv \\
        --config config/lpba40_cpu.yaml config/lpba40_cpu_dev.yaml --out results/lpba40_cpu/axes
    # the same from the committed copies alone
    python benchmarks/training_axes.py report --runs results/lpba40_cpu/axes/arms \\
        --main results/lpba40_cpu/per_pair.csv \\
        --config config/lpba40_cpu.yaml config/lpba40_cpu_dev.yaml --out results/lpba40_cpu/axes

The prepared dataset is the workflow's (``data/<dataset>``): an arm with fewer training
subjects reads it through a view (a folder of links with its own ``dataset.json``) whose
training split is the first N subjects of the configuration's, its validation and test splits
unchanged, so every arm is scored on the same test pairs. Arms already trained are skipped
(``regbench train`` returns at once on a finished run).

The report writes ``subjects.csv``/``.md`` and ``smoothness.csv``/``.md`` (mean region Dice, both
conventions, folding, SD of log J, NDV, over the test pairs; and the mean per test subject,
the unit of every comparison) and ``axes.png``/``.pdf``: Dice against the number of training
subjects, and Dice against SD log J and against NDV (one curve per network, the smoothness
weight beside each point). The workflow's own run of each network is the arm at the
configuration's full training split and weight (a sweep arm at that weight, from before the
weight was chosen, is the same training and is left out). It copies each arm's ``per_pair.csv`` into
``OUT/arms/`` (small), so that the report regenerates from what is committed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

NETWORKS = ("voxelmorph", "dualprnet")
WORKFLOW_ONLY = ("gpus", "runtime", "mem_mb")
"""Train settings of the workflow's schema that are not `regbench train` settings."""


def merged_config(files: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The workflow configuration of ``files``, merged as Snakemake merges ``--configfile``s."""
    config: dict[str, Any] = {}
    for path in files:
        _merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def dataset_of(config: Mapping[str, Any]) -> str:
    (name,) = config["datasets"]
    return name


def train_flags(config: Mapping[str, Any], method: str) -> list[str]:
    """`regbench train` flags of ``method``: the top-level, dataset and method train settings,
    merged as the workflow merges them."""
    from regbench.training.config import command_line

    settings = {**config.get("train", {}),
                **config["datasets"][dataset_of(config)].get("train", {}),
                **config["methods"][method].get("train", {})}
    for key in WORKFLOW_ONLY:
        settings.pop(key, None)
    return " ".join(command_line(settings)).split()


def subset_view(data: Path, out: Path, count: int) -> Path:
    """A dataset folder that is ``data`` with only its first ``count`` training subjects."""
    manifest = json.loads((data / "dataset.json").read_text())
    train = manifest["splits"]["train"]
    if not 2 <= count <= len(train):
        raise SystemExit(f"--counts: {count} is not between 2 and the {len(train)} training "
                         f"subjects of {data}")
    out.mkdir(parents=True, exist_ok=True)
    for entry in ("images", "labels"):
        link = out / entry
        if not link.exists():
            link.symlink_to((data / entry).resolve(), target_is_directory=True)
    manifest["splits"]["train"] = train[:count]
    manifest["training_subset"] = {"of": str(data.resolve()), "count": count}
    (out / "dataset.json").write_text(json.dumps(manifest, indent=1))
    return out


def run(command: Sequence[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def arm(config: Mapping[str, Any], data: Path, out: Path, method: str,
        options: Mapping[str, Any]) -> Path:
    """Train ``method`` on ``data`` with ``options``, register and score the test pairs;
    returns the arm's per_pair.csv."""
    option_args = [arg for key, value in options.items()
                   for arg in ("--option", f"{key}={value}")]
    model = out / "model"
    run(["regbench", "train", method, "--data", str(data), "--out", str(model),
         *train_flags(config, method), *option_args])
    pairs = out / "pairs"
    run(["regbench", "register-pairs", method, "--data", str(data), "--test-pairs",
         "--out-root", str(pairs), "--replace-stale", "--checkpoint", str(model / "model.pt"),
         "--threads", "1"])
    run(["regbench", "evaluate-pairs", "--data", str(data), "--out-root", str(pairs),
         "--test-pairs", "--threads", "1"])
    table = out / "per_pair.csv"
    run(["regbench", "aggregate", "--dataset", dataset_of(config), "--experiment", out.name,
         "--from-dir", str(pairs), "--out", str(table)])
    return table


def train_subjects(args: argparse.Namespace) -> None:
    config = merged_config(args.config)
    data = Path(args.data or f"data/{dataset_of(config)}")
    for count in args.counts:
        view = subset_view(data, Path(args.out) / "data" / f"train{count}", count)
        for method in args.methods:
            arm(config, view, Path(args.out) / f"subjects{count}" / method, method, {})


def smoothness(args: argparse.Namespace) -> None:
    config = merged_config(args.config)
    data = Path(args.data or f"data/{dataset_of(config)}")
    for weight in args.weights:
        for method in args.methods:
            arm(config, data, Path(args.out) / f"smoothness{weight:g}" / method, method,
                {"smoothness_weight": weight})


# --- report ---------------------------------------------------------------------------------------

METRICS = {"mean_dice_faim": "Dice (FAIM)", "mean_dice_merged": "Dice (merged)",
           "folding_percent": "Folding (%)", "log_jacobian_std": "SD log J",
           "ndv_percent": "NDV (%)"}


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Means over the test pairs, and the mean region Dice (FAIM) per fixed subject averaged."""
    row = {label: float(table[column].mean()) for column, label in METRICS.items()}
    row["Dice (FAIM), mean of subjects"] = float(
        table.groupby("fixed")["mean_dice_faim"].mean().mean())
    row["pairs"] = len(table)
    return row


def report(args: argparse.Namespace) -> None:
    import matplotlib.pyplot as plt

    from regbench.methods import get_method
    from regbench.reports.figures import save_figure

    config = merged_config(args.config)
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    main = pd.read_csv(args.main)
    full = len(config["datasets"][dataset_of(config)]["splits"]["train"])
    rows, configured = [], {}
    for method in NETWORKS:
        label = main.loc[main["method"] == method, "label"].iloc[0]
        weight = config["methods"][method].get("options", {}).get(
            "smoothness_weight", get_method(method).defaults["smoothness_weight"])
        configured[label] = weight
        default = {"network": label, **summary(main[main["method"] == method])}
        arms = [(full, weight, default)]
        for arm in sorted(runs.glob(f"*/{method}/per_pair.csv")):
            kept = out / "arms" / arm.relative_to(runs)
            if kept.resolve() != arm.resolve():
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(arm, kept)
        for folder in sorted(runs.glob(f"subjects*/{method}/per_pair.csv")):
            count = int(folder.parent.parent.name.removeprefix("subjects"))
            arms.append((count, weight, {"network": label, **summary(pd.read_csv(folder))}))
        for folder in sorted(runs.glob(f"smoothness*/{method}/per_pair.csv")):
            other = float(folder.parent.parent.name.removeprefix("smoothness"))
            if other != weight:  # the workflow's own run is the point at its weight
                arms.append((full, other, {"network": label, **summary(pd.read_csv(folder))}))
        rows += [{"training subjects": n, "smoothness weight": w, **values}
                 for n, w, values in arms]
    table = pd.DataFrame(rows)
    by_subjects = table[table["smoothness weight"] == table["network"].map(configured)].sort_values(
        ["network", "training subjects"])
    by_weight = table[table["training subjects"] == full].sort_values(
        ["network", "smoothness weight"])
    for name, part in (("subjects", by_subjects), ("smoothness", by_weight)):
        part.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(part.to_markdown(index=False, floatfmt=".4f") + "\n")

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
    for network, color in zip(table["network"].unique(), ("#56B4E9", "#D55E00"), strict=False):
        part = by_subjects[by_subjects["network"] == network]
        axes[0].plot(part["training subjects"], part["Dice (FAIM)"], "o-", color=color,
                     label=network)
        part = by_weight[by_weight["network"] == network]
        for ax, x in zip(axes[1:], ("SD log J", "NDV (%)"), strict=True):
            ax.plot(part[x], part["Dice (FAIM)"], "o-", color=color, label=network)
            for _, row in part.iterrows():
                ax.annotate(f"{row['smoothness weight']:g}", (row[x], row["Dice (FAIM)"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes[0].set_xlabel("training subjects")
    axes[1].set_xlabel("SD of log Jacobian")
    axes[2].set_xlabel("NDV (% of voxels)")
    axes[2].set_xscale("symlog", linthresh=1e-3)
    for ax in axes:
        ax.set_ylabel("mean region Dice (FAIM)")
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False, fontsize=8)
    figure.suptitle(f"{dataset_of(config)}: {int(by_subjects['pairs'].max())} test pairs; "
                    "numbers beside points: smoothness weight")
    save_figure(figure, out / "axes")
    shutil.copy(Path(args.config[0]), out / "config.yaml")
    print((out / "subjects.md").read_text(), (out / "smoothness.md").read_text(), sep="\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, func in (("subjects", train_subjects), ("smoothness", smoothness),
                       ("report", report)):
        command = commands.add_parser(name)
        command.add_argument("--config", nargs="+", required=True,
                             help="the workflow configuration files, in --configfile order")
        command.set_defaults(func=func)
        if name == "report":
            command.add_argument("--runs", required=True, help="the arms' folder")
            command.add_argument("--main", required=True,
                                 help="the per_pair.csv of the workflow's main experiment")
            command.add_argument("--out", required=True)
            continue
        command.add_argument("--out", required=True, help="folder of the arms")
        command.add_argument("--data", help="prepared dataset (default data/<dataset>)")
        command.add_argument("--methods", nargs="+", default=list(NETWORKS))
    commands.choices["subjects"].add_argument(
        "--counts", required=True, type=lambda text: [int(n) for n in text.split(",")])
    commands.choices["smoothness"].add_argument(
        "--weights", required=True, type=lambda text: [float(w) for w in text.split(",")])
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
