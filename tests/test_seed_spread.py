"""benchmarks/training_seed_spread.py: the spread of each method's Dice over training seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "training_seed_spread.py"
PAIRS = [("a", "b"), ("b", "a")]


def fake_run(root: Path, seed: int, dice: dict[str, float]) -> Path:
    """A workflow run folder: per_pair.csv of ``dice`` (method -> every pair's Dice) and the
    learned methods' train.json with ``seed``."""
    main = root / "results" / "demo" / "main"
    main.mkdir(parents=True)
    rows = [{"method": method, "label": method.upper(), "moving": m, "fixed": f, "slice_step": 1,
             "mean_dice_faim": d, "device": "cpu (1 thread)"}
            for method, d in dice.items() for m, f in PAIRS]
    pd.DataFrame(rows).to_csv(main / "per_pair.csv", index=False)
    for method in ("voxelmorph", "dualprnet"):
        model = root / "results" / "demo" / "models" / method
        model.mkdir(parents=True)
        (model / "train.json").write_text(json.dumps({"seed": seed}))
    return root


def spread(*runs: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *map(str, runs)],
                          capture_output=True, text=True)


def test_spread_over_seeds_and_of_the_differences(tmp_path):
    runs = [fake_run(tmp_path / f"r{seed}", seed,
                     {"syn": 0.78, "voxelmorph": 0.74 + 0.01 * seed, "dualprnet": 0.77})
            for seed in (0, 1, 2)]
    done = spread(*runs, out=tmp_path / "out")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "out" / "seed_spread.csv")
    assert len(table) == 9
    text = (tmp_path / "out" / "seed_spread.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and "seed 0" not in line}
    assert rows["SYN"] == ["0.780"] * 4 + ["0.000", "0.000"]
    assert rows["VOXELMORPH"] == ["0.740", "0.750", "0.760", "0.750", "0.010", "0.020"]
    assert rows["DUALPRNET - VOXELMORPH"] == ["0.030", "0.020", "0.010", "0.020", "0.010",
                                              "0.020"]
    assert list(rows)[:3] == ["SYN", "VOXELMORPH", "DUALPRNET"]


def test_runs_of_one_seed_are_refused(tmp_path):
    runs = [fake_run(tmp_path / f"r{i}", 0, {"dualprnet": 0.7}) for i in range(2)]
    done = spread(*runs, out=tmp_path / "out")
    assert done.returncode != 0 and "both trained with seed 0" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_run_whose_methods_disagree_on_the_seed_is_refused(tmp_path):
    run = fake_run(tmp_path / "r0", 0, {"dualprnet": 0.7})
    (run / "results" / "demo" / "models" / "voxelmorph" / "train.json").write_text('{"seed": 3}')
    done = spread(run, fake_run(tmp_path / "r1", 1, {"dualprnet": 0.7}), out=tmp_path / "out")
    assert done.returncode != 0 and "seeds [0, 3]" in done.stderr
