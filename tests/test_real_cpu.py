"""Real brains on a CPU (issue 14): the CPU configuration for Mindboggle-101 end to end on a tiny
synthetic copy of Mindboggle-101's layout, and a check of the real development subjects where
they are present (README, "Real brains on a CPU")."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_prepare import mindboggle_volumes, save_nifti
from test_workflow import markdown_rows, overlay, snakemake

from regbench.data import mindboggle101, protocol
from regbench.data.dataset import Dataset
from regbench.metrics import region_dice_faim

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "config" / "mindboggle_cpu.yaml"
REAL_RAW = Path(os.environ.get("REGBENCH_MINDBOGGLE_RAW", ROOT / "raw" / "mindboggle101"))
"""Mindboggle-101's layout holding the development subjects (README, "Real brains on a CPU")."""


def write_synthetic_layout(raw: Path, subjects: list[str]) -> None:
    """Blob images with DKT label boxes, in Mindboggle-101's own layout and file names."""
    for seed, subject in enumerate(subjects):
        image, labels = mindboggle_volumes(seed)
        folder = raw / mindboggle101.group_folder("OASIS-TRT-20") / subject
        save_nifti(folder / mindboggle101.IMAGE, image)
        save_nifti(folder / mindboggle101.DKT25, labels)


@pytest.mark.slow
def test_cpu_configuration_end_to_end_on_a_synthetic_layout(tmp_path):
    config = yaml.safe_load(CPU_CONFIG.read_text())
    # the configuration's own subjects, fewer of each split (2 test subjects: 2 ordered pairs)
    splits = {split: subjects[:count] for (split, subjects), count in
              zip(config["datasets"]["mindboggle101"]["splits"].items(), (3, 2, 2), strict=True)}
    subjects = [s for split in ("train", "val", "test") for s in splits[split]]
    work = tmp_path / "work"
    raw = work / "raw" / "mindboggle101"
    write_synthetic_layout(raw, subjects)
    tiny = overlay(tmp_path, "tiny.yaml", {
        "datasets": {"mindboggle101": {"raw": str(raw), "scale": 0.25, "splits": splits}},
        "methods": {"syn": {"options": {"reg_iterations": [4, 0, 0]}}},
        "train": {"steps": 2, "warmup_steps": 1, "checkpoint_every": 1, "validate_every": 1},
    })
    snakemake("--cores", "2", "--configfile", str(CPU_CONFIG), tiny, cwd=work, timeout=1500)

    data = Dataset.load(work / "data" / "mindboggle101")
    assert data.shape == (40, 48, 40) and data.manifest["grid"]["resampling"]["scale"] == 0.25
    assert (data.train, data.val, data.test) == (splits["train"], splits["val"], splits["test"])
    test_pairs = len(splits["test"]) * (len(splits["test"]) - 1)
    rows = list(csv.DictReader((work / "results" / "mindboggle101" / "main" / "per_pair.csv")
                               .open()))
    methods = config["experiments"]["main"]["methods"]
    assert sorted(r["method"] for r in rows) == sorted(m for m in methods
                                                       for _ in range(test_pairs))
    table = markdown_rows(work / "results" / "mindboggle101" / "tables" / "table1_faim.md")
    ours = [row for row in table if row["Source"] == "ours"]
    assert [row["Method"] for row in ours] == ["Identity", "Affine", "SyN", "VoxelMorph",
                                               "Dual-PRNet"]
    assert set(protocol.MINDBOGGLE101_REGIONS) <= set(ours[0])  # the 5 regions' columns
    figures = work / "figures" / "mindboggle101"
    for stem in ("fig4_faim", "learning_curves"):
        assert (figures / f"{stem}.png").stat().st_size > 0


DEVELOPMENT = [f"OASIS-TRT-20-{i}" for i in range(1, 13)]


@pytest.mark.skipif(not (REAL_RAW / "OASIS-TRT-20_volumes" / "OASIS-TRT-20-1").is_dir(),
                    reason=f"the real development subjects are not in {REAL_RAW} (README, "
                           "'Real brains on a CPU', says how to build them; set "
                           "REGBENCH_MINDBOGGLE_RAW to another folder)")
def test_real_development_subjects_at_half_scale(tmp_path):
    found = mindboggle101.find_subjects(REAL_RAW)
    chosen = [s for s in DEVELOPMENT if s in found][:3]
    assert len(chosen) >= 2, f"{REAL_RAW}: fewer than 2 development subjects"
    half = Dataset.load(mindboggle101.prepare(REAL_RAW, tmp_path / "half", chosen, scale=0.5))
    full = Dataset.load(mindboggle101.prepare(REAL_RAW, tmp_path / "full", chosen))
    assert half.shape == (80, 96, 80)
    regions = half.regions
    for subject in chosen:
        image = half.image(subject)
        assert np.isfinite(image).all() and 0 <= image.min() and image.max() <= 1
        assert image.mean() == pytest.approx(full.image(subject).mean(), rel=1e-4)
        coarse, fine = half.label_map(subject), full.label_map(subject)
        kept = set(np.unique(coarse)) - {0}
        assert kept == set(np.unique(fine)) - {0}  # every cortical label survives
        for label in kept:  # and keeps its volume within the blockiness of a 2 mm grid
            assert (coarse == label).sum() * 8 == pytest.approx((fine == label).sum(), rel=0.35)
    # two real brains, affinely aligned: Dice well above chance and well below identical
    dice = region_dice_faim(half.label_map(chosen[0]), half.label_map(chosen[1]), regions)
    assert set(dice) == set(protocol.MINDBOGGLE101_REGIONS)
    assert 0.15 < np.mean(list(dice.values())) < 0.7
