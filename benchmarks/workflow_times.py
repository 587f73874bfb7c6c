"""Where a workflow run's time went, from Snakemake's ``benchmark:`` files, by stage.

    python benchmarks/workflow_times.py logs/benchmarks/lpba40 --out results/lpba40_cpu/times.csv

Every rule of the workflow writes a benchmark file (``logs/benchmarks/<dataset>/...``): wall
seconds and CPU seconds of its job. This sums them by stage (the first folder under the
dataset's: ``prepare``, ``train``, ``register``, ``evaluate``, ...; the registrations also by
method), with the number of jobs, and writes one CSV row per stage. Jobs run side by side on the
cores, so the stages' wall seconds add up to more than the run's wall clock; their CPU seconds
are what a machine of any number of cores must spend.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def stage_of(path: Path, root: Path) -> str:
    """``prepare``, ``train/dualprnet``, ``register/syn``, ...: the stage of a benchmark file."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[0] == "register" and len(parts) > 2:  # register/<experiment>/<run>/<moving>/...
        return f"register/{parts[2]}"
    if parts[0] == "train" and len(parts) > 1:
        return f"train/{parts[1]}"
    return parts[0]


def stage_times(root: Path) -> pd.DataFrame:
    """One row per stage: jobs, wall seconds and CPU seconds summed over its jobs."""
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        record = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append({"stage": stage_of(path, root), "wall_s": float(record["s"]),
                     "cpu_s": float(record["cpu_time"])})
    if not rows:
        raise SystemExit(f"{root}: no benchmark files (.tsv) under it")
    frame = pd.DataFrame(rows)
    return (frame.groupby("stage").agg(jobs=("wall_s", "size"), wall_s=("wall_s", "sum"),
                                        cpu_s=("cpu_s", "sum")).reset_index())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="logs/benchmarks/<dataset> of a workflow run")
    parser.add_argument("--out", required=True, type=Path, help="CSV to write")
    args = parser.parse_args(argv)
    table = stage_times(args.root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
