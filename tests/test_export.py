"""The ANTs/ITK export of fields (regbench.export, ``regbench export-field``): ANTs applies it
and warps the labels as the suite's own warp does."""

from __future__ import annotations

import math
import re

import ants
import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from regbench import io
from regbench.cli import main
from regbench.export import RAS_TO_LPS, export_itk_field, itk_displacement
from regbench.io import InputError, read_field, write_field, write_image, write_vector_image
from regbench.transforms import warp_labels

torch.set_num_threads(1)


def smooth_field(shape, seed: int, largest: float = 3.0) -> np.ndarray:
    """A smooth random displacement ``(3, X, Y, Z)`` in voxels, ``largest`` at most, plus a small
    rotation about the grid centre so no component is zero anywhere."""
    rng = np.random.default_rng(seed)
    field = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 3) for _ in range(3)])
    field *= largest / np.abs(field).max()
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.asarray(shape, dtype=np.float64) - 1)[:, None, None, None] / 2
    angle = math.radians(4)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0],
                         [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    field += np.einsum("ij,j...->i...", rotation - np.eye(3), grid - centre)
    return field.astype(np.float32)


def oblique_flipped(affine: np.ndarray) -> np.ndarray:
    """``affine`` with its voxel axes rotated obliquely, one flipped, and anisotropic spacing."""
    axis = np.array([1.0, 2.0, 2.0]) / 3.0  # unit vector
    angle = math.radians(25)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
    out = np.eye(4)
    out[:3, :3] = rotation @ np.diag([1.0, -1.0, 1.0]) @ affine[:3, :3] @ np.diag([1.0, 0.75, 1.5])
    out[:3, 3] = affine[:3, 3] + [12.0, -7.0, 30.0]
    return out


def suite_warp(labels: np.ndarray, field: np.ndarray) -> np.ndarray:
    return warp_labels(torch.from_numpy(labels.astype(np.int32))[None, None],
                       torch.from_numpy(field)[None])[0, 0].numpy()


def ants_warp(labels_path, field_path) -> np.ndarray:
    """``ants.apply_transforms`` of the exported field, nearest neighbour, on the labels' grid."""
    labels = ants.image_read(str(labels_path))
    warped = ants.apply_transforms(labels, labels, [str(field_path)],
                                   interpolator="nearestNeighbor")
    return np.rint(warped.numpy()).astype(np.int32)


def agreement(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Fraction of label voxels (labelled in either warp) given the same label by both."""
    labelled = (ours > 0) | (theirs > 0)
    return float((ours == theirs)[labelled].mean())


@pytest.mark.parametrize("grid", ["demo", "oblique, flipped"])
def test_ants_applies_the_export_like_the_suite_warps(grid, demo_dataset, tmp_path):
    """The demo's moving labels pulled through a smooth field by the suite and by ANTs from the
    export, on the demo grid (MNI, x flipped: a left-handed affine) and on an oblique,
    anisotropic grid with one more axis flipped (right-handed)."""
    affine = demo_dataset.affine if grid == "demo" else oblique_flipped(demo_dataset.affine)
    labels = demo_dataset.label_map("demo05")
    field = smooth_field(labels.shape, seed=5)
    write_image(tmp_path / "labels.nii.gz", labels, affine)
    write_field(tmp_path / "field.nii.gz", field, affine)
    assert main(["export-field", str(tmp_path / "field.nii.gz"),
                 "--out", str(tmp_path / "itk.nii.gz")]) == 0

    ours = suite_warp(labels, field)
    theirs = ants_warp(tmp_path / "labels.nii.gz", tmp_path / "itk.nii.gz")
    assert agreement(ours, labels) < 0.9  # the field moves labels: the test is not void
    assert agreement(ours, theirs) >= 0.99

    # The same vectors in NIfTI's RAS instead of ITK's LPS would be applied wrong: the
    # convention is what the agreement above checks.
    exported = nib.load(str(tmp_path / "itk.nii.gz"))
    lps = np.moveaxis(np.asarray(exported.dataobj)[:, :, :, 0, :], -1, 0)
    write_vector_image(tmp_path / "ras.nii.gz", np.einsum("ij,j...->i...", RAS_TO_LPS, lps),
                       affine, "disp_mm_ras")
    assert agreement(ours, ants_warp(tmp_path / "labels.nii.gz", tmp_path / "ras.nii.gz")) < 0.95


def test_itk_displacement_in_closed_form():
    """A one-voxel step along each array axis of a flipped, anisotropic grid: RAS mm through
    the affine's columns, then x and y negated for LPS."""
    affine = np.diag([-2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [90, -126, -72]
    field = np.zeros((3, 2, 2, 2), np.float32)
    field[:, 1, 0, 0] = [1.0, 0.0, 0.0]
    field[:, 0, 1, 0] = [0.0, 1.0, 0.0]
    field[:, 0, 0, 1] = [0.0, 0.0, -0.5]
    result = itk_displacement(field, affine)
    assert result.shape == (3, 2, 2, 2) and result.dtype == np.float32
    np.testing.assert_allclose(result[:, 1, 0, 0], [2.0, 0.0, 0.0])  # RAS -2 along x -> LPS +2
    np.testing.assert_allclose(result[:, 0, 1, 0], [0.0, -3.0, 0.0])
    np.testing.assert_allclose(result[:, 0, 0, 1], [0.0, 0.0, -2.0])
    np.testing.assert_array_equal(result[:, 1, 1, 1], [0.0, 0.0, 0.0])


def test_export_file_is_a_nifti_vector_on_the_field_grid(tmp_path):
    affine = oblique_flipped(np.diag([2.0, 2.0, 2.0, 1.0]))
    field = smooth_field((6, 7, 8), seed=1)
    write_field(tmp_path / "field.nii.gz", field, affine)
    out = export_itk_field(tmp_path / "field.nii.gz", tmp_path / "itk.nii.gz")
    image = nib.load(str(out))
    assert image.shape == (6, 7, 8, 1, 3)
    assert image.header.get_intent()[0] == "vector"
    assert image.header.get_intent()[2] == io.ITK_FIELD_INTENT_NAME
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    np.testing.assert_allclose(np.moveaxis(np.asarray(image.dataobj)[:, :, :, 0, :], -1, 0),
                               itk_displacement(field, affine), atol=1e-6)
    with pytest.raises(InputError, match="an ITK/ANTs export"):
        read_field(out)  # mm in LPS must never be scored as voxels


def test_export_refuses_bad_requests(tmp_path, capsys):
    field = np.zeros((3, 4, 4, 4), np.float32)
    write_field(tmp_path / "field.nii.gz", field, np.eye(4))
    sheared = np.eye(4)
    sheared[0, 1] = 0.3
    write_field(tmp_path / "sheared.nii.gz", field, sheared)
    cases = [
        (["export-field", str(tmp_path / "field.nii.gz"), "--out", str(tmp_path / "x.mha")],
         r"x\.mha: the export must end in \.nii\.gz or \.nii"),
        (["export-field", str(tmp_path / "field.nii.gz"), "--out",
          str(tmp_path / "field.nii.gz")], r"field\.nii\.gz: is the input field"),
        (["export-field", str(tmp_path / "gone.nii.gz"), "--out", str(tmp_path / "o.nii.gz")],
         r"gone\.nii\.gz: file not found"),
        (["export-field", str(tmp_path / "sheared.nii.gz"), "--out", str(tmp_path / "o.nii.gz")],
         r"sheared\.nii\.gz: the grid's affine shears"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field.nii.gz", "sheared.nii.gz"]
