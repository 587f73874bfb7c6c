"""Metrics on hand-made volumes whose answers are known in closed form (regbench.metrics)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from regbench.metrics import (
    LOG_JACOBIAN_EPS,
    dice30,
    dice_per_label,
    folding_percent,
    hd95,
    image_diagonal,
    jacobian_determinant,
    log_jacobian_std,
    nanmean,
    non_diffeomorphic_volume,
    region_dice_faim,
    region_dice_merged,
    region_hd95,
    relabel,
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
    # Folded voxels are clipped to 1e-9: half the log determinants are 0, half log(1e-9).
    assert log_jacobian_std(field) == pytest.approx(-math.log(LOG_JACOBIAN_EPS) / 2)


LUMIR_REFERENCE = Path(__file__).parent / "data" / "ndv_lumir_reference.npz"
"""Three random fields (3, 14, 12, 10) with a brain-like ellipsoid mask, and their NDV (%) as
LUMIR's published evaluation code computes it: JHU-MedImage-Reg/LUMIR_L2R at commit 9b88e630,
``L2R_LUMIR_Eval/digital_diffeomorphism.py`` (``calc_jac_dets`` of displacement + identity grid,
``calc_measurements``), divided by the mask's voxel count x 100 as its ``evaluation.py`` does;
``ndv_percent`` without a mask (all ones), ``ndv_percent_masked`` with it. Run outside the
project with scipy 1.15.3."""


def test_ndv_matches_lumirs_evaluation_code():
    reference = np.load(LUMIR_REFERENCE)
    fields, mask = reference["fields"], reference["mask"]
    assert len(fields) >= 3 and (reference["ndv_percent"] > 0).all()
    ours = [non_diffeomorphic_volume(f) for f in fields]
    masked = [non_diffeomorphic_volume(f, mask) for f in fields]
    # Largest difference found: 1.8e-15 (percentage points).
    np.testing.assert_allclose(ours, reference["ndv_percent"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(masked, reference["ndv_percent_masked"], rtol=1e-12, atol=1e-12)


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
    """Cubes [2, 10) and [4, 8): each inner surface voxel is exactly 2 voxels from the outer
    surface, but outer corners are up to 2 sqrt(3) from the inner one; the 95th percentile of
    the outer surface's distances is computed by brute force below, and must be the result."""
    outer, inner = cube((2, 2, 2), 8), cube((4, 4, 4), 4)
    result = hd95(inner, outer)
    outer_surface = np.argwhere(outer & ~cube((3, 3, 3), 6))
    inner_surface = np.argwhere(inner & ~cube((5, 5, 5), 2))
    distances = cdist(outer_surface, inner_surface).min(axis=1)
    assert np.all(cdist(inner_surface, outer_surface).min(axis=1) == 2)
    assert result == pytest.approx(np.percentile(distances, 95))
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


def brute_force_hd95(pred: np.ndarray, target: np.ndarray, spacing) -> float:
    def surface(mask):
        padded = np.pad(mask, 1)  # outside the volume counts as background
        core = padded[1:-1, 1:-1, 1:-1]
        neighbours_inside = np.ones_like(mask)
        for axis in range(3):
            for step in (-1, 1):
                neighbours_inside &= np.roll(padded, step, axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(core & ~neighbours_inside) * np.asarray(spacing)

    a, b = surface(pred), surface(target)
    distances = cdist(a, b)
    return max(np.percentile(distances.min(1), 95), np.percentile(distances.min(0), 95))


@pytest.mark.parametrize("touch_corner", [False, True])
def test_hd95_matches_brute_force_on_random_blobs(touch_corner):
    rng = np.random.default_rng(1)
    spacing = (1.2, 0.8, 2.0)
    for _ in range(3):
        pred = np.zeros(SHAPE, dtype=bool)
        target = np.zeros(SHAPE, dtype=bool)
        pred[2:12, 3:10, 1:9] = rng.random((10, 7, 8)) < 0.3
        target[4:14, 2:8, 5:11] = rng.random((10, 6, 6)) < 0.3
        pred[0, 0, 0] = touch_corner  # on the volume's edge, where outside counts as background
        assert hd95(pred, target, spacing) == pytest.approx(
            brute_force_hd95(pred, target, spacing), abs=1e-9)


def test_region_hd95_uses_merged_regions():
    pred, target, regions = faim_vs_merged_case()
    result = region_hd95(pred, target, {**regions, "Absent": [50]}, spacing=(1.0, 2.0, 3.0))
    assert result["A"] == 0.0  # labels mixed inside region A, its outline is unchanged
    assert result["B"] == pytest.approx(hd95(pred == 3, target == 3, (1.0, 2.0, 3.0)))
    assert result["B"] == pytest.approx(1.0)  # shifted one voxel along axis 0 (1 mm)
    assert math.isnan(result["Absent"])


def test_region_hd95_of_a_vanished_region_is_the_worst_case_and_counts_in_the_mean():
    """Region B lost from the warped labels: its HD95 is the image diagonal, and the mean over
    regions includes it instead of skipping it; a region absent from both maps stays NaN."""
    pred, target, regions = faim_vs_merged_case()
    spacing = (1.0, 2.0, 3.0)
    lost = pred.copy()
    lost[lost == 3] = 0
    result = region_hd95(lost, target, {**regions, "Absent": [50]}, spacing)
    assert result["B"] == pytest.approx(image_diagonal(SHAPE, spacing))
    assert result["A"] == 0.0 and math.isnan(result["Absent"])
    assert nanmean(result.values()) == pytest.approx(image_diagonal(SHAPE, spacing) / 2)
    # The method that loses B scores worse than the one that only shifts it.
    kept = region_hd95(pred, target, regions, spacing)
    assert nanmean(result.values()) > nanmean(kept.values())
