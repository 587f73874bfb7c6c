"""Validation Dice of several training runs on one figure, and their table.

    python benchmarks/compare_learning_curves.py --out figures/x/compare \\
        "suite, lr 1e-3=runs/a/validation.csv" "official code=runs/b/validation.csv"

Each argument is ``LABEL=PATH`` of a ``validation.csv`` in the columns the trainer writes
(``step, time_s, dice_faim, dice_merged, eval_s``). Writes ``OUT.png``, ``OUT.pdf`` and ``OUT.md``
(per run: Dice before training, at its best step and at its last step). The real-brain
diagnosis draws its figure with it: ``python benchmarks/mindboggle_diagnosis.py figure``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def read_runs(specs: list[str]) -> dict[str, pd.DataFrame]:
    runs = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"{spec!r}: expected LABEL=PATH")
        if not Path(path).is_file():
            raise SystemExit(f"{path}: no such file (the validation.csv of {label!r})")
        runs[label] = pd.read_csv(path)
    return runs


def summary(runs: dict[str, pd.DataFrame], column: str) -> pd.DataFrame:
    rows = []
    for label, frame in runs.items():
        best = frame.loc[frame[column].idxmax()]
        rows.append({"run": label, "steps": int(frame["step"].iloc[-1]),
                     "before training": round(float(frame[column].iloc[0]), 3),
                     "best": round(float(best[column]), 3), "best at step": int(best["step"]),
                     "last": round(float(frame[column].iloc[-1]), 3)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=PATH of a validation.csv")
    parser.add_argument("--out", required=True, type=Path, help="output stem (no suffix)")
    parser.add_argument("--column", default="dice_faim", choices=("dice_faim", "dice_merged"))
    parser.add_argument("--title", default="Validation Dice (FAIM) during training")
    args = parser.parse_args(argv)
    runs = read_runs(args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6.5, 4.0))
    for label, frame in runs.items():
        axis.plot(frame["step"], frame[args.column], marker="o", markersize=3, label=label)
    axis.set_xlabel("training step (batch 1)")
    axis.set_ylabel("mean region Dice, validation pairs")
    axis.set_title(args.title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    for suffix in (".png", ".pdf"):
        figure.savefig(args.out.with_suffix(suffix), dpi=150)
    args.out.with_suffix(".md").write_text(summary(runs, args.column).to_markdown(index=False)
                                           + "\n")


if __name__ == "__main__":
    main()
