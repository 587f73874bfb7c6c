"""Reduced resolution and splits of one's own for the real datasets (issue 14): block
downsampling, the grid it records, and the refusals of ``--train/--val/--test``."""

from __future__ import annotations

import numpy as np
import pytest
from test_prepare import (  # noqa: F401  (fixtures)
    FAST,
    delineation_subject,
    expected_labels,
    mindboggle_raw,
    mni_atlas,
    subject_to_mni,
    write_lpba40_subject,
)

from regbench.cli import main
from regbench.data import lpba40, mindboggle101, protocol
from regbench.data.dataset import Dataset
from regbench.data.preparation import given_splits
from regbench.data.resolution import area_average, block_factor, block_mode, crop_grid
from regbench.io import InputError, voxel_spacing


@pytest.mark.parametrize("scale, factor", [(1, 1), (0.5, 2), (0.25, 4), (0.0625, 16)])
def test_block_factor(scale, factor):
    assert block_factor(scale) == factor


@pytest.mark.parametrize("scale", [0, -0.5, 1.5, 0.3, 0.75, 1 / 3, float("nan"), "half", True])
def test_block_factor_refuses_scales_that_are_not_whole_blocks(scale):
    with pytest.raises(InputError, match="scale="):
        block_factor(scale)


def test_area_average_keeps_the_mean_and_block_means():
    rng = np.random.default_rng(0)
    image = rng.random((8, 12, 8)).astype(np.float32)
    coarse = area_average(image, 2)
    assert coarse.shape == (4, 6, 4) and coarse.dtype == np.float32
    assert coarse.mean() == pytest.approx(image.mean(), rel=1e-6)
    assert coarse[1, 2, 3] == pytest.approx(image[2:4, 4:6, 6:8].mean(), rel=1e-6)


def test_block_mode_takes_the_majority_and_gives_ties_to_small_structures():
    labels = np.zeros((4, 4, 4), dtype=np.int32)
    labels[:2, :2, :2] = 5  # a whole block
    labels[2:, :2, :2].flat[:5] = 7  # 5 of 8 voxels: the majority
    labels[:2, 2:, :2].flat[:4] = 9  # 4 of 8 against background: the tie goes to 9 (smaller)
    labels[2:, 2:, :2].flat[:3] = 9  # 3 of 8: background wins
    coarse = block_mode(labels, 2)
    assert coarse.dtype == np.int32
    assert (coarse[0, 0, 0], coarse[1, 0, 0], coarse[0, 1, 0], coarse[1, 1, 0]) == (5, 7, 9, 0)
    assert not coarse[:, :, 1].any()


def test_block_mode_counts_whole_blocks_of_the_smallest_scale():
    """Issue 22: at scale 0.03125 a 32x32x32 block inside one structure holds 32,768 voxels
    of it, which an int16 count wrapped to -32,768, so the block became background."""
    factor = block_factor(0.03125)
    labels = np.zeros((2 * factor, factor, factor), dtype=np.int32)
    labels[:factor] = 3  # the first block lies wholly inside structure 3
    labels[factor:factor + 4] = 3  # the second block is mostly background
    assert block_mode(labels, factor).ravel().tolist() == [3, 0]


def test_crop_grid_centres_the_coarse_voxels_on_their_blocks():
    shape, affine = crop_grid(0.5)
    fine_shape, fine = crop_grid(1.0)
    assert shape == (80, 96, 80) and fine_shape == protocol.CROP_SHAPE
    np.testing.assert_allclose(voxel_spacing(affine), 2.0)
    # the first coarse voxel sits at the mean of its 2x2x2 fine voxels
    corner = np.mean([fine @ [i, j, k, 1] for i in (0, 1) for j in (0, 1) for k in (0, 1)], 0)
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], corner)


def test_mindboggle101_at_half_scale(mindboggle_raw, tmp_path):  # noqa: F811
    raw, volumes = mindboggle_raw
    out = tmp_path / "half"
    assert main(["prepare", "mindboggle101", "--raw", str(raw), "--out", str(out),
                 "--scale", "0.5"]) == 0
    data = Dataset.load(out)
    assert data.shape == (80, 96, 80)
    np.testing.assert_allclose(data.spacing, (2.0, 2.0, 2.0))
    np.testing.assert_allclose(data.affine, crop_grid(0.5)[1])
    resampling = data.manifest["grid"]["resampling"]
    assert resampling["scale"] == 0.5 and resampling["block_voxels"] == [2] * 3
    assert "mean" in resampling["images"] and "most frequent" in resampling["labels"]
    assert data.test == ["OASIS-TRT-20-1", "OASIS-TRT-20-2"]  # the paper's splits by default
    assert data.manifest["split_source"] == "paper"
    crop = protocol.crop_slices(protocol.MNI_SHAPE)
    for subject, (image, labels) in volumes.items():
        full = image[crop] / image[crop].max()
        assert data.image(subject).mean() == pytest.approx(full.mean(), rel=1e-5)
        got = data.label_map(subject)
        want = expected_labels(labels)
        assert set(np.unique(got)) == set(np.unique(want))  # every label kept
        for label in np.unique(want)[1:]:
            # A box face at an odd voxel splits its blocks 4:4 and the tie goes to the box: each
            # such face moves out by half a block (the 20-voxel boxes here gain up to 3 x 5 %).
            assert (got == label).sum() * 8 == pytest.approx((want == label).sum(), rel=0.2)


def test_lpba40_at_quarter_scale_with_its_own_splits(mni_atlas, tmp_path):  # noqa: F811
    raw = tmp_path / "raw"
    to_mni = subject_to_mni(0.0, 1.0, (0.0, 0.0, 0.0))
    for subject in ("S01", "S02"):
        write_lpba40_subject(raw, subject, *delineation_subject(mni_atlas, to_mni))
    out = tmp_path / "lpba40"
    lpba40.prepare(raw, out, registration=FAST, scale=0.25,
                   splits=given_splits(test="S01,S02"))
    data = Dataset.load(out)
    assert data.shape == (40, 48, 40)
    np.testing.assert_allclose(data.spacing, (4.0, 4.0, 4.0))
    assert (data.train, data.val, data.test) == ([], [], ["S01", "S02"])
    assert data.manifest["split_source"] == "given"
    assert set(np.unique(data.label_map("S01"))) >= {21, 22}


def test_mindboggle101_splits_of_ones_own(mindboggle_raw, tmp_path):  # noqa: F811
    raw, _ = mindboggle_raw
    out = tmp_path / "own"
    assert main(["prepare", "mindboggle101", "--raw", str(raw), "--out", str(out), "--train",
                 "NKI-RS-22-3,OASIS-TRT-20-1", "--val", "MMRR-21-1", "--test",
                 "NKI-TRT-20-2,NKI-TRT-20-10"]) == 0
    data = Dataset.load(out)
    assert data.subjects == ["NKI-RS-22-3", "OASIS-TRT-20-1", "MMRR-21-1", "NKI-TRT-20-2",
                             "NKI-TRT-20-10"]  # the splits' subjects, nothing else
    assert (data.train, data.val, data.test) == (
        ["NKI-RS-22-3", "OASIS-TRT-20-1"], ["MMRR-21-1"], ["NKI-TRT-20-2", "NKI-TRT-20-10"])


@pytest.mark.parametrize("arguments, message", [
    (["--train", "OASIS-TRT-20-1,NKI-RS-22-3", "--test", "NKI-RS-22-3,MMRR-21-1"],
     "NKI-RS-22-3 is in both the train and the test split"),
    (["--val", "OASIS-TRT-20-1", "--test", "OASIS-TRT-20-1,MMRR-21-1"], "in both the val"),
    (["--train", "OASIS-TRT-20-1,NKI-RS-22-3", "--test", "MMRR-21-1"],
     "test split needs at least 2 subjects"),
    (["--train", "OASIS-TRT-20-1"], "test split needs at least 2 subjects"),
    (["--test", "OASIS-TRT-20-1,NOBODY-1"], "NOBODY-1 not found"),
    (["--subjects", "OASIS-TRT-20-1,OASIS-TRT-20-2", "--test", "OASIS-TRT-20-1,MMRR-21-1"],
     "MMRR-21-1: in a given split but not in --subjects"),
    (["--scale", "0.3"], "scale=0.3"),
])
def test_split_and_scale_refusals_write_nothing(mindboggle_raw, tmp_path, capsys, arguments,  # noqa: F811
                                                message):
    raw, _ = mindboggle_raw
    out = tmp_path / "refused"
    assert main(["prepare", "mindboggle101", "--raw", str(raw), "--out", str(out),
                 *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_prepare_api_refuses_a_bad_scale_before_reading(tmp_path):
    with pytest.raises(InputError, match="scale=0.4"):
        mindboggle101.prepare(tmp_path / "nothing", tmp_path / "out", scale=0.4)
