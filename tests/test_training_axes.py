"""benchmarks/training_axes.py: the arms' data views, their train flags and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from benchmark_scripts import load

from regbench.data.dataset import Dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [str(ROOT / "config" / name) for name in ("lpba40_cpu.yaml", "lpba40_cpu_dev.yaml")]


@pytest.fixture(scope="module")
def axes():
    return load("training_axes")


def test_the_configuration_files_merge_as_snakemake_merges_them(axes):
    config = axes.merged_config(CONFIGS)
    splits = config["datasets"]["lpba40"]["splits"]
    assert splits["test"] == ["S25", "S26", "S27", "S28", "S29", "S30"]  # the overlay's
    assert config["datasets"]["lpba40"]["scale"] == 0.5  # the base's, kept
    flags = axes.train_flags(config, "voxelmorph")
    assert flags[flags.index("--steps") + 1] == "500"  # the method's own setting wins
    assert flags[flags.index("--lr-schedule") + 1] == "cosine"
    assert "--flip" not in flags and "--flip" in axes.train_flags(config, "dualprnet")


def test_a_view_trains_on_the_first_subjects_and_tests_on_the_same_pairs(axes, demo_dataset,
                                                                         tmp_path):
    view = Dataset.load(axes.subset_view(demo_dataset.root, tmp_path / "view", 2))
    assert view.train == demo_dataset.train[:2]
    assert (view.val, view.test) == (demo_dataset.val, demo_dataset.test)
    assert view.fingerprint(view.test) == demo_dataset.fingerprint(demo_dataset.test)
    record = json.loads((tmp_path / "view" / "dataset.json").read_text())
    assert record["training_subset"]["count"] == 2
    with pytest.raises(SystemExit, match="between 2 and"):
        axes.subset_view(demo_dataset.root, tmp_path / "other", len(demo_dataset.train) + 1)


def per_pair(method: str, label: str, dice: float, rough: float) -> pd.DataFrame:
    return pd.DataFrame({"method": method, "label": label, "moving": ["a", "b", "a", "c"],
                         "fixed": ["b", "a", "c", "a"], "mean_dice_faim": [dice] * 4,
                         "mean_dice_merged": [dice + 0.1] * 4, "folding_percent": [rough] * 4,
                         "log_jacobian_std": [rough] * 4, "ndv_percent": [rough / 10] * 4})


def test_the_report_puts_each_arm_on_its_axis(axes, tmp_path):
    main = tmp_path / "results" / "main"
    main.mkdir(parents=True)
    pd.concat([per_pair("voxelmorph", "VoxelMorph", 0.70, 0.5),
               per_pair("dualprnet", "Dual-PRNet", 0.66, 0.1)]).to_csv(main / "per_pair.csv")
    runs = tmp_path / "runs"
    for folder, method, label, dice, rough in (
            ("subjects6", "dualprnet", "Dual-PRNet", 0.64, 0.1),
            ("smoothness0.1", "dualprnet", "Dual-PRNet", 0.69, 0.4),
            ("subjects6", "voxelmorph", "VoxelMorph", 0.67, 0.6)):
        (runs / folder / method).mkdir(parents=True)
        per_pair(method, label, dice, rough).to_csv(runs / folder / method / "per_pair.csv")
    out = tmp_path / "axes"
    axes.main(["report", "--config", *CONFIGS, "--runs", str(runs), "--main",
               str(main / "per_pair.csv"), "--out", str(out)])
    subjects = pd.read_csv(out / "subjects.csv")
    dpr = subjects[subjects["network"] == "Dual-PRNet"]
    assert dpr["training subjects"].tolist() == [6, 22]
    assert dpr["Dice (FAIM)"].tolist() == pytest.approx([0.64, 0.66])
    smooth = pd.read_csv(out / "smoothness.csv")
    dpr = smooth[smooth["network"] == "Dual-PRNet"]
    configured = axes.merged_config(CONFIGS)["methods"]["dualprnet"]["options"]
    assert dpr["smoothness weight"].tolist() == [0.1, configured["smoothness_weight"]]
    assert dpr["SD log J"].tolist() == pytest.approx([0.4, 0.1])
    assert (out / "axes.png").stat().st_size > 1000
    kept = sorted(path.relative_to(out / "arms").as_posix()
                  for path in (out / "arms").rglob("per_pair.csv"))
    assert kept == ["smoothness0.1/dualprnet/per_pair.csv", "subjects6/dualprnet/per_pair.csv",
                    "subjects6/voxelmorph/per_pair.csv"]
    again = tmp_path / "again"  # the report again, from its own copies alone
    axes.main(["report", "--config", *CONFIGS, "--runs", str(out / "arms"), "--main",
               str(main / "per_pair.csv"), "--out", str(again)])
    assert pd.read_csv(again / "smoothness.csv").equals(smooth)
