"""The real-brain diagnosis (README, "Why Dual-PRNet lags here"): run its arms, then redraw its
figure and tables from their outputs.

    python benchmarks/mindboggle_diagnosis.py run ARM [ARM ...] [--raw raw/mindboggle101]
        [--mirror CLONE_OF_THE_OFFICIAL_CODE] [--cores N]
    python benchmarks/mindboggle_diagnosis.py figure
    python benchmarks/mindboggle_diagnosis.py subjects

Each arm of the suite is config/mindboggle_cpu.yaml with one overlay of config/diagnosis/ (the
VoxelMorph arm: the configuration itself), run by Snakemake in ``runs/diagnosis/ARM/`` on the raw
subjects linked there. The official code's two arms run outside the suite
(benchmarks/official_dualprnet/run.sh) on the data the ``no_flips`` arm prepared. ``figure``
draws every learning-curve arm's ``validation.csv`` with benchmarks/compare_learning_curves.py
into figures/mindboggle101_cpu/learning_curves_diagnosis.{png,pdf,md}; ``subjects`` prints the
table of Dual-PRNet and VoxelMorph trained on 6 and on 10 subjects, on new pairs and on the
training pairs of subjects 1-4.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path("runs") / "diagnosis"
CONFIG = Path("config") / "mindboggle_cpu.yaml"
DATASET = "mindboggle101"
FIGURE = Path("figures") / "mindboggle101_cpu" / "learning_curves_diagnosis"
TRAINING_PAIR_SUBJECTS = [f"OASIS-TRT-20-{i}" for i in range(1, 5)]
"""The training pairs the subject arms are also scored on: in both arms' training splits."""
REGBENCH = (sys.executable, "-m", "regbench.cli")
OFFICIAL_DATA_ARM = "no_flips"
"""The arm whose prepared data the official code's arms train on."""


@dataclass(frozen=True)
class Arm:
    """One arm: its label in the figure, its overlay under config/diagnosis/ (``None``: the
    configuration as it is; the official code's arms have none), the model whose curve it draws,
    and for the official code's arms their steps and whether the identity patch applies."""

    name: str
    label: str
    overlay: str | None = None
    model: str = "dualprnet"
    official_steps: int = 0
    identity_patch: bool = False

    @property
    def official(self) -> bool:
        return self.official_steps > 0

    def folder(self, root: Path) -> Path:
        return root / RUNS / self.name

    def validation_csv(self, root: Path) -> Path:
        if self.official:
            return self.folder(root) / "validation.csv"
        return self.folder(root) / "results" / DATASET / "models" / self.model / "validation.csv"


CURVES = (
    Arm("no_flips", "Dual-PRNet, suite (lr 1e-3)", "no_flips.yaml"),
    Arm("smoothness_0.1", "Dual-PRNet, smoothness weight 0.1", "smoothness_0.1.yaml"),
    Arm("lr_3e-4", "Dual-PRNet, lr 3e-4", "lr_3e-4.yaml"),
    Arm("crop_jitter_2", "Dual-PRNet, crop jitter 2", "crop_jitter_2.yaml"),
    Arm("pair_flips", "Dual-PRNet, pair flips", "pair_flips.yaml"),
    Arm("official", "Dual-PRNet, official code (lr 1e-3)", official_steps=300),
    Arm("official_identity", "Dual-PRNet, official code, identity defect patched",
        official_steps=100, identity_patch=True),
    Arm("voxelmorph", "VoxelMorph vm2 (lr 1e-3)", model="voxelmorph"),
)
"""The learning-curve arms, in the figure's order."""

SUBJECTS = (
    Arm("subjects_6", "6 subjects", "subjects_6.yaml"),
    Arm("subjects_10", "10 subjects", "subjects_10.yaml"),
)
"""The arms trained on more or fewer subjects, scored on the pairs of subjects 11 and 12."""

ARMS = {arm.name: arm for arm in (*CURVES, *SUBJECTS)}


def suite_command(arm: Arm, root: Path, cores: int, targets: list[str]) -> list[str]:
    """The Snakemake command line of a suite arm: this checkout's workflow, run in the arm's
    folder under ``root``."""
    configs = [str(ROOT / CONFIG)] + ([str(ROOT / "config" / "diagnosis" / arm.overlay)]
                                      if arm.overlay else [])
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--cores", str(cores), "--configfile", *configs,
            "--directory", str(arm.folder(root)), *targets]


def training_pair_commands(arm: Arm, root: Path) -> list[list[str]]:
    """Register and score the training pairs of subjects 1-4 with each network of ``arm``."""
    folder = arm.folder(root)
    data = folder / "data" / DATASET
    pairs = [item for pair in itertools.permutations(TRAINING_PAIR_SUBJECTS, 2)
             for item in ("--pair", *pair)]
    commands = []
    for model in ("dualprnet", "voxelmorph"):
        out = folder / "training_pairs" / model
        checkpoint = folder / "results" / DATASET / "models" / model / "model.pt"
        commands += [
            [*REGBENCH, "register-pairs", model, "--data", str(data), "--out-root", str(out),
             "--checkpoint", str(checkpoint), "--device", "cpu", "--threads", "1",
             "--replace-stale", *pairs],
            [*REGBENCH, "evaluate-pairs", "--data", str(data), "--out-root", str(out), *pairs]]
    return commands


def official_command(arm: Arm, root: Path, mirror: Path | None) -> list[str]:
    """benchmarks/official_dualprnet/run.sh for an official-code arm."""
    if mirror is None:
        raise SystemExit(f"{arm.name}: give --mirror, a clone of "
                         "https://github.com/kangmiao15/Dual-Stream-PRNet-Plus")
    data = ARMS[OFFICIAL_DATA_ARM].folder(root) / "data" / DATASET
    if not (data / "dataset.json").is_file():
        raise SystemExit(f"{arm.name}: {data / 'dataset.json'} is missing; run the "
                         f"{OFFICIAL_DATA_ARM} arm first (its prepared data are used)")
    return ["bash", str(ROOT / "benchmarks" / "official_dualprnet" / "run.sh"), str(mirror),
            str(data), str(arm.folder(root)), str(arm.official_steps),
            *(["identity"] if arm.identity_patch else [])]


def link_raw(arm: Arm, root: Path, raw: Path) -> None:
    """``runs/diagnosis/ARM/raw/mindboggle101`` -> ``raw``, as the configuration reads it."""
    if not raw.is_dir():
        raise SystemExit(f"{raw}: not a folder; give --raw, Mindboggle-101's layout of the "
                         "development subjects (README, 'Real brains on a CPU')")
    link = arm.folder(root) / "raw" / DATASET
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(raw.resolve())


def run(names: list[str], root: Path, raw: Path, mirror: Path | None, cores: int) -> None:
    unknown = [name for name in names if name not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; the arms are {list(ARMS)}")
    for arm in (ARMS[name] for name in names):
        if arm.official:
            commands = [official_command(arm, root, mirror)]
        else:
            link_raw(arm, root, raw)
            model = f"results/{DATASET}/models/{arm.model}/model.pt"
            per_pair = f"results/{DATASET}/main/per_pair.csv"
            commands = [suite_command(arm, root, cores, [per_pair if arm in SUBJECTS else model])]
            if arm in SUBJECTS:
                commands += training_pair_commands(arm, root)
        for command in commands:
            print("+", " ".join(command), flush=True)
            subprocess.run(command, cwd=root, check=True)


def figure(root: Path) -> None:
    """Every learning-curve arm's validation curve, with compare_learning_curves.py."""
    missing = [str(arm.validation_csv(root)) for arm in CURVES
               if not arm.validation_csv(root).is_file()]
    if missing:
        raise SystemExit("missing validation curves (run their arms first):\n" +
                         "\n".join(missing))
    spec = importlib.util.spec_from_file_location(
        "compare_learning_curves", Path(__file__).resolve().parent / "compare_learning_curves.py")
    compare_learning_curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_learning_curves)
    compare_learning_curves.main(["--out", str(root / FIGURE),
                                  *(f"{arm.label}={arm.validation_csv(root)}" for arm in CURVES)])


def mean_training_pair_dice(folder: Path) -> float:
    """Mean FAIM Dice of the scored pairs under ``folder`` (``MOVING/FIXED/metrics.json``)."""
    records = sorted(folder.glob("*/*/metrics.json"))
    expected = len(TRAINING_PAIR_SUBJECTS) * (len(TRAINING_PAIR_SUBJECTS) - 1)
    if len(records) != expected:
        raise SystemExit(f"{folder}: {len(records)} scored pairs, expected {expected}")
    return float(pd.Series([json.loads(r.read_text())["mean_dice_faim"] for r in records]).mean())


def subjects_table(root: Path) -> str:
    """Dual-PRNet and VoxelMorph trained on 6 and 10 subjects: on new and on training pairs."""
    rows = []
    for arm in SUBJECTS:
        per_pair = arm.folder(root) / "results" / DATASET / "main" / "per_pair.csv"
        if not per_pair.is_file():
            raise SystemExit(f"{per_pair}: missing; run the {arm.name} arm first")
        new = pd.read_csv(per_pair).groupby("method")["mean_dice_faim"].mean()
        row = {"trained on": arm.label}
        for model, label in (("dualprnet", "Dual-PRNet"), ("voxelmorph", "VoxelMorph")):
            row[f"{label}, new pairs"] = f"{new[model]:.3f}"
            row[f"{label}, training pairs"] = (
                f"{mean_training_pair_dice(arm.folder(root) / 'training_pairs' / model):.3f}")
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the folder of runs/diagnosis/ and figures/ (default: this checkout)")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run arms")
    run_parser.add_argument("arms", nargs="+", metavar="ARM", help=f"of {list(ARMS)}")
    run_parser.add_argument("--raw", type=Path, default=Path("raw") / DATASET,
                            help="Mindboggle-101's layout of the development subjects")
    run_parser.add_argument("--mirror", type=Path, help="a clone of the official code")
    run_parser.add_argument("--cores", type=int, default=2)
    commands.add_parser("figure", help="redraw the figure and its table")
    commands.add_parser("subjects", help="print the 6- against 10-subject table")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.arms, args.root, args.raw, args.mirror, args.cores)
    elif args.command == "figure":
        figure(args.root)
    else:
        print(subjects_table(args.root), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
