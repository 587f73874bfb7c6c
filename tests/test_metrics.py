"""Metrics on hand-made volumes whose answers are known in closed form, and against the values
the benchmarks' own evaluation code gives (regbench.metrics)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from regbench.metrics import (
    LOG_JACOBIAN_SHIFT,
    dice30,
    dice_per_label,
    folding_percent,
    hd95,
    image_diagonal,
    jacobian_determinant,
    learn2reg_case_dice,
    learn2reg_jacobian_determinant,
    log_jacobian_std,
    nanmean,
    non_diffeomorphic_volume,
    region_dice_faim,
    region_dice_merged,
    region_hd95,
    relabel,
    surfel_areas,
)

SHAPE = (16, 14, 12)


def cube(start: tuple[int, int, int], size: int, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


# ---------------------------------------------------------------- Dice


def test_dice_of_two_shifted_cubes():
    size, shift = 5, 2
    pred = cube((3, 3, 3), size).astype(np.int32) * 7
    target = cube((3 + shift, 3, 3), size).astype(np.int32) * 7
    overlap = (size - shift) * size * size
    expected = 2 * overlap / (2 * size**3)
    assert dice_per_label(pred, target, [7])[7] == pytest.approx(expected, abs=1e-12)
    assert dice_per_label(target, pred, [7])[7] == pytest.approx(expected, abs=1e-12)
    assert dice_per_label(pred, pred, [7])[7] == 1.0


def test_dice_of_absent_and_one_sided_labels():
    pred = cube((2, 2, 2), 3).astype(np.int32)  # label 1 only in pred
    target = cube((8, 8, 8), 3).astype(np.int32) * 2  # label 2 only in target
    result = dice_per_label(pred, target, [1, 2, 3])
    assert result[1] == 0.0 and result[2] == 0.0
    assert math.isnan(result[3])  # absent from both: undefined, not 0 or 1
    assert list(result) == [1, 2, 3]


def test_dice_rejects_different_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        dice_per_label(np.zeros((4, 4, 4), int), np.zeros((4, 4, 5), int), [1])


def test_relabel_maps_labels_to_region_indices():
    labels = np.array([[[0, 21, 22], [41, 181, 22]]])
    regions = {"Frontal": [21, 22], "Parietal": [41]}
    assert relabel(labels, regions).tolist() == [[[0, 1, 1], [2, 0, 1]]]
    assert relabel(labels, {}).tolist() == [[[0, 0, 0], [0, 0, 0]]]
    with pytest.raises(ValueError, match="more than one region"):
        relabel(labels, {"A": [21], "B": [21, 41]})


def faim_vs_merged_case() -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
    """Region A = labels {1, 2}, two 2x2x2 blocks; pred gives half of label 1's block label 2.
    Region B = label 3, shifted by one voxel. Label 9 is in no region."""
    target = np.zeros(SHAPE, dtype=np.int32)
    target[0:2, 0:2, 0:2] = 1
    target[4:6, 0:2, 0:2] = 2
    target[8:12, 8:12, 8:10] = 3
    target[14:16, 0:2, 0:2] = 9
    pred = target.copy()
    pred[0:1, 0:2, 0:2] = 2  # 4 of label 1's 8 voxels
    pred[target == 3] = 0
    pred[9:13, 8:12, 8:10] = 3
    pred[target == 9] = 0
    return pred, target, {"A": [1, 2], "B": [3]}


def test_faim_and_merged_region_dice_differ_as_constructed():
    pred, target, regions = faim_vs_merged_case()
    dice_1 = 2 * 4 / (4 + 8)  # label 1: 4 of 8 voxels kept, none added
    dice_2 = 2 * 8 / (12 + 8)  # label 2: all 8 kept, 4 added
    dice_3 = 2 * (3 * 4 * 2) / (2 * 4 * 4 * 2)  # 4x4x2 block shifted by 1 along its 4-long axis
    faim = region_dice_faim(pred, target, regions)
    merged = region_dice_merged(pred, target, regions)
    assert faim["A"] == pytest.approx((dice_1 + dice_2) / 2, abs=1e-12)
    assert merged["A"] == 1.0  # every voxel of the region is still in the region
    assert faim["B"] == pytest.approx(dice_3, abs=1e-12) and merged["B"] == faim["B"]
    assert list(faim) == list(merged) == ["A", "B"]


def test_faim_ignores_labels_absent_from_both_maps():
    pred, target, _ = faim_vs_merged_case()
    regions = {"A": [1, 2, 77], "Nothing": [78, 79]}
    faim = region_dice_faim(pred, target, regions)
    assert faim["A"] == region_dice_faim(pred, target, {"A": [1, 2]})["A"]
    assert math.isnan(faim["Nothing"])
    assert math.isnan(region_dice_merged(pred, target, regions)["Nothing"])


def test_nanmean():
    assert nanmean([1.0, float("nan"), 3.0]) == 2.0
    assert math.isnan(nanmean([float("nan")]))
    assert math.isnan(nanmean([]))


# ---------------------------------------------------------------- Jacobian


def test_identity_field_has_unit_jacobian():
    zero = np.zeros((3, *SHAPE), dtype=np.float32)
    assert np.array_equal(jacobian_determinant(zero), np.ones(SHAPE))
    assert folding_percent(zero) == 0.0
    assert log_jacobian_std(zero) == 0.0


def test_linear_field_has_the_determinant_of_i_plus_a_everywhere():
    rng = np.random.default_rng(0)
    matrix = rng.uniform(-0.4, 0.4, size=(3, 3))
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
    field = np.einsum("ij,j...->i...", matrix, grid) + rng.normal(size=(3, 1, 1, 1))
    det = jacobian_determinant(field)
    assert det.shape == SHAPE
    assert np.allclose(det, np.linalg.det(np.eye(3) + matrix), rtol=0, atol=1e-10)
    # Learn2Reg's: the same inside, the 2 voxels at each face dropped.
    inner = learn2reg_jacobian_determinant(field)
    assert inner.shape == tuple(n - 4 for n in SHAPE)
    assert np.allclose(inner, np.linalg.det(np.eye(3) + matrix), rtol=0, atol=1e-10)
    # Constant determinant: no spread of the log, whatever its value.
    assert log_jacobian_std(field) == pytest.approx(0.0, abs=1e-10)


def test_folding_field_folds_a_known_fraction_of_voxels():
    """phi_0(x) = f(x_0) with f = 0 1 2 3 4 5 4 3 2 1 along axis 0 (n = 10): np.gradient gives
    slopes 1 for x_0 < 5, 0 at the peak x_0 = 5 and -1 beyond, so 5 of 10 slices fold."""
    n = 10
    f = np.array([i if i <= 5 else 2 * 5 - i for i in range(n)], dtype=np.float64)
    field = np.zeros((3, n, 6, 7))
    field[0] = (f - np.arange(n))[:, None, None]
    det = jacobian_determinant(field)
    assert np.array_equal(det[:, 0, 0], [1, 1, 1, 1, 1, 0, -1, -1, -1, -1])
    assert folding_percent(field) == pytest.approx(100 * 5 / n)
    # Learn2Reg's central differences on x_0 = 2..7 (2 voxels dropped at each face): slopes
    # 1, 1, 1, 0, -1, -1, each determinant shifted by 3 before the log.
    shifted = np.array([1, 1, 1, 0, -1, -1]) + LOG_JACOBIAN_SHIFT
    assert np.array_equal(learn2reg_jacobian_determinant(field)[:, 0, 0], shifted - 3)
    assert log_jacobian_std(field) == pytest.approx(np.std(np.log(shifted)), abs=1e-12)


ANCHORS = Path(__file__).parent / "data" / "anchor_metrics.npz"
"""Seven made-up cases (16 x 15 x 14 label maps with labels 1-6, one label removed from a
subject and label 6 in none, images, fields that fold in two cases) and the values that the
benchmarks' own evaluation code gives on them: Learn2Reg's ``evaluate_L2R`` (MDL-UzL/L2R
8847509) for the case Dice, DSC30, HD95 and SD log J, DeepMind's ``surface_distance`` that it
ships for HD95 at an anisotropic spacing and its surface areas, LUMIR's ``evaluate_L2R``
(LUMIR_L2R 9b88e63) for NDV. Made by ``benchmarks/anchor_metrics.py``."""


@pytest.fixture(scope="module")
def anchors():
    with np.load(ANCHORS) as found:
        return dict(found)


def anchor_cases(anchors):
    """(case, warped labels, fixed labels, moving labels, moving image) per case."""
    labels = anchors["labels"]
    for case, (moving, fixed) in enumerate(anchors["pairs"]):
        yield (case, anchors["warped_labels"][case], labels[fixed], labels[moving],
               anchors["images"][moving])


def test_case_dice_and_dice30_match_learn2regs_evaluation(anchors):
    ours = [learn2reg_case_dice(warped, fixed, moving, anchors["labels_scored"])
            for _, warped, fixed, moving, _ in anchor_cases(anchors)]
    assert np.isnan(anchors["l2r_label_dice"]).any()  # the skipping is exercised
    np.testing.assert_allclose(ours, anchors["l2r_case_dice"], rtol=1e-12, atol=1e-12)
    assert dice30(ours) == pytest.approx(float(anchors["l2r_dice30"]), rel=1e-12, abs=1e-12)
    # Not the 30th percentile of the suite's per-pair means (one-sided labels count as 0).
    plain = [nanmean(dice_per_label(warped, fixed, anchors["labels_scored"]).values())
             for _, warped, fixed, _, _ in anchor_cases(anchors)]
    assert not np.allclose(plain, ours)


def test_hd95_matches_learn2regs_evaluation_and_surface_distance(anchors):
    scored = [int(label) for label in anchors["labels_scored"]]
    per_label = {str(label): [label] for label in scored}
    for case, warped, fixed, moving, _ in anchor_cases(anchors):
        unit = region_hd95(warped, fixed, moving, per_label, (1.0, 1.0, 1.0))
        np.testing.assert_allclose(list(unit.values()), anchors["l2r_label_hd95"][case],
                                   rtol=1e-12, atol=1e-12)
        for column, label in enumerate(scored):
            expected = anchors["sd_label_hd95_spacing"][case, column]
            if np.isfinite(expected):
                assert hd95(warped == label, fixed == label, tuple(anchors["spacing"])) == (
                    pytest.approx(expected, rel=1e-12, abs=1e-12))


def test_surfel_areas_are_surface_distances_table():
    with np.load(ANCHORS) as found:
        np.testing.assert_allclose(surfel_areas((1.0, 1.0, 1.0)), found["sd_areas_1mm"],
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(surfel_areas(tuple(found["spacing"])),
                                   found["sd_areas_spacing"], rtol=1e-12, atol=1e-12)


def test_sd_log_j_matches_learn2regs_evaluation(anchors):
    ours = [log_jacobian_std(field) for field in anchors["fields"]]
    np.testing.assert_allclose(ours, anchors["l2r_sdlogj"], rtol=1e-12, atol=1e-12)


def test_ndv_matches_lumirs_evaluation(anchors):
    """LUMIR divides by the voxels where the moving image is above 0, not by the grid."""
    ours = [non_diffeomorphic_volume(anchors["fields"][case], image > 0)
            for case, _, _, _, image in anchor_cases(anchors)]
    assert (anchors["lumir_ndv"] > 0).sum() >= 2
    np.testing.assert_allclose(ours, anchors["lumir_ndv"], rtol=1e-12, atol=1e-12)
    whole_grid = [non_diffeomorphic_volume(field) for field in anchors["fields"]]
    assert not np.allclose(whole_grid, anchors["lumir_ndv"])


def test_ndv_of_smooth_and_reflected_maps():
    assert non_diffeomorphic_volume(np.zeros((3, *SHAPE))) == 0.0
    grid = np.indices(SHAPE, dtype=np.float64)
    shear = np.zeros((3, *SHAPE))
    shear[0] = 0.4 * grid[1]  # a linear map with det 1: no tetrahedron inverted
    assert non_diffeomorphic_volume(shear) == 0.0
    # x_0 -> -x_0 inverts every tetrahedron: the whole volume is non-diffeomorphic.
    reflection = np.zeros((3, *SHAPE))
    reflection[0] = -2 * grid[0]
    assert non_diffeomorphic_volume(reflection) == pytest.approx(100.0)
    assert math.isnan(non_diffeomorphic_volume(reflection, np.zeros(SHAPE, dtype=bool)))
    assert math.isnan(non_diffeomorphic_volume(np.zeros((3, 2, 5, 5))))


def test_ndv_counts_folded_volume_and_can_exceed_100_percent():
    """Issue 22: NDV of a noise field was 16,902 %, while the docstring called it a fraction of
    the volume. It is LUMIR's folded volume: x_0 -> -3 x_0 inverts the volume three times over."""
    tripled = np.zeros((3, *SHAPE))
    tripled[0] = -4 * np.indices(SHAPE, dtype=np.float64)[0]
    assert non_diffeomorphic_volume(tripled) == pytest.approx(300.0)
    assert "can exceed 100 %" in non_diffeomorphic_volume.__doc__


def test_ndv_sees_the_checkerboard_fold_central_differences_miss():
    """u_0 = +-0.75 alternating along axis 0: central differences see slope 1 everywhere (no
    folding), yet every other forward difference is 1 - 1.5 < 0: half the corner tetrahedra
    fold."""
    field = np.zeros((3, *SHAPE))
    field[0] = 0.75 * (-1.0) ** np.arange(SHAPE[0])[:, None, None]
    assert (jacobian_determinant(field)[1:-1] == 1.0).all()  # inside: central differences
    assert non_diffeomorphic_volume(field) > 1.0


def test_dice30_is_learn2regs_30th_percentile():
    values = [0.9, 0.1, 0.5, float("nan"), 0.7, 0.3]
    # Position 0.3 x (5 - 1) = 1.2 of the 5 sorted values: a fifth of the way from 0.3 to 0.5.
    assert dice30(values) == pytest.approx(0.3 + 0.2 * (0.5 - 0.3))
    assert math.isnan(dice30([float("nan")]))


def test_jacobian_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(3, X, Y, Z\)"):
        jacobian_determinant(np.zeros((2, 4, 4, 4)))


# ---------------------------------------------------------------- HD95


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_hd95_of_shifted_plates_with_anisotropic_spacing(axis):
    """Two one-voxel-thick 6x6 plates normal to ``axis``, ``shift`` voxels apart: every voxel of
    either plate is a surface voxel whose nearest voxel on the other is straight across."""
    spacing, shift = (0.5, 1.5, 2.5), 3
    pred = np.zeros(SHAPE, dtype=bool)
    target = np.zeros(SHAPE, dtype=bool)
    plate = [slice(3, 9)] * 3
    plate[axis] = 2
    pred[tuple(plate)] = True
    plate[axis] = 2 + shift
    target[tuple(plate)] = True
    assert hd95(pred, target, spacing) == pytest.approx(shift * spacing[axis])
    assert hd95(target, pred, spacing) == pytest.approx(shift * spacing[axis])


def test_hd95_of_concentric_cubes():
    """Cubes [2, 10) and [4, 8): every surface element of the inner cube is 2 voxels from the
    outer surface; the outer one's corners are up to 2 sqrt(3) from the inner surface, and they
    hold more than 5 % of its area, so the 95th percentile lies beyond 2."""
    outer, inner = cube((2, 2, 2), 8), cube((4, 4, 4), 4)
    result = hd95(inner, outer)
    assert result == hd95(outer, inner)
    assert 2 < result <= 2 * math.sqrt(3)


def test_hd95_ignores_a_lone_outlier_that_hausdorff_would_not():
    target = np.zeros(SHAPE, dtype=bool)
    target[5, 2:12, 2:12] = True  # 100 voxels
    pred = target.copy()
    pred[14, 0, 0] = True  # 1 of 101 pred surface voxels, far away
    assert hd95(pred, target) == 0.0
    assert hd95(target, target) == 0.0


def test_image_diagonal_is_the_field_of_view_diagonal():
    assert image_diagonal((3, 4, 12)) == pytest.approx(13.0)  # 3-4-5, then 5-12-13
    assert image_diagonal((160, 192, 160), (1.0, 1.0, 1.0)) == pytest.approx(
        image_diagonal((80, 96, 80), (2.0, 2.0, 2.0)))
    assert image_diagonal((10, 10, 10), (0.5, 1.0, 2.0)) == pytest.approx(math.sqrt(25 + 100 + 400))
    with pytest.raises(ValueError, match="differ in length"):
        image_diagonal((4, 4, 4), (1.0, 1.0))


def test_hd95_of_a_vanished_mask_is_the_image_diagonal():
    """A region lost by a method (or invented by it) scores the worst case: the diagonal of the
    field of view in mm, more than any two non-empty masks on the grid can be apart."""
    spacing = (1.2, 0.8, 2.0)
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(SHAPE, spacing, strict=True)))
    empty = np.zeros(SHAPE, dtype=bool)
    present = cube((2, 2, 2), 3)
    assert hd95(empty, present, spacing) == pytest.approx(diagonal)
    assert hd95(present, empty, spacing) == pytest.approx(diagonal)
    # Worse than the farthest apart two single voxels can be: opposite corners of the grid.
    corners = np.zeros(SHAPE, dtype=bool), np.zeros(SHAPE, dtype=bool)
    corners[0][0, 0, 0] = corners[1][-1, -1, -1] = True
    assert hd95(*corners, spacing) < hd95(empty, present, spacing)


def test_hd95_is_nan_when_both_masks_are_empty():
    empty = np.zeros(SHAPE, dtype=bool)
    assert math.isnan(hd95(empty, empty))


def test_region_hd95_uses_merged_regions():
    pred, target, regions = faim_vs_merged_case()
    moving = target  # every region in the moving map too
    result = region_hd95(pred, target, moving, {**regions, "Absent": [50]},
                         spacing=(1.0, 2.0, 3.0))
    assert result["A"] == 0.0  # labels mixed inside region A, its outline is unchanged
    assert result["B"] == pytest.approx(hd95(pred == 3, target == 3, (1.0, 2.0, 3.0)))
    assert result["B"] == pytest.approx(1.0)  # shifted one voxel along axis 0 (1 mm)
    assert math.isnan(result["Absent"])


def test_region_hd95_skips_a_region_missing_from_the_fixed_or_the_moving_map():
    """As Learn2Reg: a region that one of the two subjects lacks is not scored, even where the
    warped labels hold it."""
    pred, target, regions = faim_vs_merged_case()
    without_b = np.where(target == 3, 0, target)
    assert math.isnan(region_hd95(pred, target, without_b, regions)["B"])
    assert math.isnan(region_hd95(pred, without_b, target, regions)["B"])
    assert region_hd95(pred, without_b, target, regions)["A"] == 0.0


def test_region_hd95_of_a_vanished_region_is_the_worst_case_and_counts_in_the_mean():
    """Region B lost from the warped labels (while both subjects have it): its HD95 is the image
    diagonal (Learn2Reg's code gives infinity), and the mean over regions includes it instead of
    skipping it; a region absent from both maps stays NaN."""
    pred, target, regions = faim_vs_merged_case()
    spacing = (1.0, 2.0, 3.0)
    lost = pred.copy()
    lost[lost == 3] = 0
    result = region_hd95(lost, target, target, {**regions, "Absent": [50]}, spacing)
    assert result["B"] == pytest.approx(image_diagonal(SHAPE, spacing))
    assert result["A"] == 0.0 and math.isnan(result["Absent"])
    assert nanmean(result.values()) == pytest.approx(image_diagonal(SHAPE, spacing) / 2)
    # The method that loses B scores worse than the one that only shifts it.
    kept = region_hd95(pred, target, target, regions, spacing)
    assert nanmean(result.values()) > nanmean(kept.values())
