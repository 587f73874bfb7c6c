"""How much the training seed moves each method's Dice: one workflow run per seed, one table.

    python benchmarks/training_seed_spread.py --out results/demo_train_seeds \\
        . runs/demo_train_seed1 runs/demo_train_seed2

Each argument is the folder of one workflow run (``.`` for the default demo's, others from
``snakemake --directory``) of the same configuration but ``train.seed``
(config/demo_train_seed1.yaml, ...). The seed of each run is
read from its learned methods' ``train.json``; runs whose learned methods disagree on it, or
that share a seed, are refused. Writes ``OUT/seed_spread.csv`` (method, seed, mean over the
test pairs) and ``OUT/seed_spread.md``: per method its mean Dice under each seed, the mean and
sample standard deviation over seeds and their range; then the same for each learned method's
difference from the reference method, the differences the spread qualifies. A method that does
not train must not move: its range is the check that nothing but the seed changed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from regbench.naming import CONVENTION_TITLES
from regbench.reports.style import REFERENCE_METHOD, order_runs


def run_training(run: Path, dataset: str) -> tuple[int, set[str]]:
    """The training seed every learned method of ``run`` recorded in its ``train.json``, and
    the names of those methods (their model folders)."""
    records = {path: json.loads(path.read_text()) for path in
               sorted((run / "results" / dataset / "models").glob("*/train.json"))}
    seeds = {int(record["seed"]) for record in records.values()}
    if len(seeds) != 1:
        raise SystemExit(f"{run}: learned methods record seeds {sorted(seeds)} in "
                         f"{', '.join(map(str, records)) or 'no train.json'}; expected one")
    return seeds.pop(), {path.parent.name for path in records}


def per_seed_means(runs: list[Path], dataset: str, experiment: str, column: str
                   ) -> pd.DataFrame:
    """Rows (method, learned, seed, dice): each method's mean ``column`` over the test pairs."""
    rows, seen = [], {}
    for run in runs:
        seed, learned = run_training(run, dataset)
        if seed in seen:
            raise SystemExit(f"{run} and {seen[seed]} both trained with seed {seed}")
        seen[seed] = run
        table = pd.read_csv(run / "results" / dataset / experiment / "per_pair.csv")
        table = table[table["slice_step"] == 1]
        for method, group in table.groupby("method"):
            rows.append({"method": method, "label": group["label"].iloc[0],
                         "learned": method in learned, "seed": seed,
                         "pairs": len(group), "dice": float(group[column].mean()),
                         "device": "; ".join(sorted(set(group["device"])))})
    frame = pd.DataFrame(rows)
    pairs = frame.groupby("method")["pairs"].nunique()
    if (pairs > 1).any():
        raise SystemExit(f"runs score different numbers of pairs: {pairs[pairs > 1].to_dict()}")
    return frame


def spread(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per method and per learned method's difference from ``reference``: its value
    under each seed, the mean and sample SD over seeds, and the range (max - min)."""
    wide = frame.pivot(index="method", columns="seed", values="dice")
    methods = [m for m, _ in order_runs((m, 1) for m in wide.index)]
    learned = set(frame.loc[frame["learned"], "method"])
    label = dict(zip(frame["method"], frame["label"], strict=True))
    rows = {label[m]: wide.loc[m] for m in methods}
    if reference in wide.index:
        rows.update({f"{label[reference]} - {label[m]}": wide.loc[reference] - wide.loc[m]
                     for m in methods if m in learned and m != reference})
    table = pd.DataFrame(rows).T
    table.columns = [f"seed {s}" for s in table.columns]
    values = table.to_numpy()
    table["mean"] = values.mean(axis=1)
    table["SD over seeds"] = values.std(axis=1, ddof=1)
    table["range"] = values.max(axis=1) - values.min(axis=1)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="workflow run folders, one per seed")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--experiment", default="main")
    parser.add_argument("--convention", default="faim", choices=tuple(CONVENTION_TITLES))
    args = parser.parse_args()
    if len(args.runs) < 2:
        raise SystemExit("give at least 2 runs: a spread needs 2 seeds")
    frame = per_seed_means(args.runs, args.dataset, args.experiment,
                           f"mean_dice_{args.convention}")
    table = spread(frame, REFERENCE_METHOD)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.sort_values(["method", "seed"]).to_csv(args.out / "seed_spread.csv", index=False)
    pairs = int(frame["pairs"].iloc[0])
    caption = (
        f"Table: Mean region Dice ({CONVENTION_TITLES[args.convention]}) over the "
        f"{pairs} test pairs of {args.dataset} ({args.experiment} experiment), one workflow run "
        f"per training seed ({len(args.runs)} seeds); the data, pairs and every other setting "
        "are the same. SD over seeds: sample standard deviation (ddof = 1) of the runs' means; "
        "range: largest minus smallest. Rows 'a - b': the difference of the two methods' means "
        f"under each seed. Devices: {'; '.join(sorted(set(frame['device'])))}.")
    (args.out / "seed_spread.md").write_text(
        caption + "\n\n" + table.to_markdown(floatfmt=".3f") + "\n")
    print((args.out / "seed_spread.md").read_text())


if __name__ == "__main__":
    main()
