"""The real-brain diagnosis's arms (benchmarks/mindboggle_diagnosis.py, config/diagnosis/): each
overlay is an arm, each arm's configuration makes a workflow, and the figure is drawn from the
arms' validation curves, or refused, naming what is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from benchmark_scripts import load
from test_real_cpu import write_synthetic_layout
from test_workflow import snakemake

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def diagnosis():
    return load("mindboggle_diagnosis")


def test_every_overlay_is_one_arm(diagnosis):
    overlays = sorted(p.name for p in (ROOT / "config" / "diagnosis").glob("*.yaml"))
    assert sorted(a.overlay for a in diagnosis.ARMS.values() if a.overlay) == overlays
    for arm in diagnosis.ARMS.values():
        if arm.overlay:  # each overlay says how it is run
            assert f"mindboggle_diagnosis.py run {arm.name}\n" in (
                ROOT / "config" / "diagnosis" / arm.overlay).read_text()


TRAIN_FLAGS = {
    "no_flips": ["--steps 600", "--crop-jitter 0 --validate-every"],
    "smoothness_0.1": ["--steps 300", "smoothness_weight", "--crop-jitter 0 --validate-every"],
    "lr_3e-4": ["--steps 700", "--lr 0.0003", "--crop-jitter 0 --validate-every"],
    "crop_jitter_2": ["--steps 400", "--crop-jitter 2 --validate-every"],
    "pair_flips": ["--steps 800", "--flip"],
    "voxelmorph": ["--steps 500"],
    "subjects_6": ["--steps 600", "--flip"],
    "subjects_10": ["--steps 600", "--flip"],
}
"""What each arm's training command must say (no ``--flip`` between the jitter and the
validation flags: trained without pair flips)."""


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRAIN_FLAGS))
def test_each_suite_arm_is_a_workflow(diagnosis, name, tmp_path):
    """A dry run of the arm's command, on a synthetic layout of the 12 development subjects."""
    arm = diagnosis.ARMS[name]
    write_synthetic_layout(tmp_path / "raw", [f"OASIS-TRT-20-{i}" for i in range(1, 13)])
    diagnosis.link_raw(arm, tmp_path, tmp_path / "raw")
    target = ("results/mindboggle101/main/per_pair.csv" if arm in diagnosis.SUBJECTS
              else f"results/mindboggle101/models/{arm.model}/model.pt")
    command = diagnosis.suite_command(arm, tmp_path, 1, [target])
    assert command[:3] == [sys.executable, "-m", "snakemake"]
    assert command[3:5] == ["--snakefile", str(ROOT / "Snakefile")]
    done = snakemake(*command[5:], "-n", "-p", cwd=ROOT)
    train = next(line for line in done.stdout.splitlines()
                 if f"regbench train {arm.model} " in line)
    for flag in TRAIN_FLAGS[name]:
        assert flag in train, (flag, train)
    if arm.name == "subjects_10":
        assert "--val '' --test OASIS-TRT-20-11,OASIS-TRT-20-12" in done.stdout


def validation_curve(path: Path, dice: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"step": [100 * i for i in range(len(dice))], "time_s": 0.0, "dice_faim": dice,
                  "dice_merged": dice, "eval_s": 0.0}).to_csv(path, index=False)


def test_figure_is_refused_naming_the_missing_curves(diagnosis, tmp_path):
    first = diagnosis.CURVES[0]
    validation_curve(first.validation_csv(tmp_path), [0.3, 0.4])
    with pytest.raises(SystemExit) as refused:
        diagnosis.main(["--root", str(tmp_path), "figure"])
    message = str(refused.value)
    assert str(first.validation_csv(tmp_path)) not in message
    for arm in diagnosis.CURVES[1:]:
        assert str(arm.validation_csv(tmp_path)) in message


def test_figure_and_table_from_every_arm(diagnosis, tmp_path):
    for index, arm in enumerate(diagnosis.CURVES):
        validation_curve(arm.validation_csv(tmp_path), [0.3, 0.35 + index / 100, 0.34])
    assert diagnosis.main(["--root", str(tmp_path), "figure"]) == 0
    out = tmp_path / diagnosis.FIGURE
    assert out.with_suffix(".png").stat().st_size > 0
    table = out.with_suffix(".md").read_text().splitlines()[2:]
    assert [line.split("|")[1].strip() for line in table] == [a.label for a in diagnosis.CURVES]
    assert table[0].split("|")[4].strip() == "0.35"  # best, at step 100
