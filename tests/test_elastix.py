"""baselines/elastix.py: elastix (itk-elastix) affine + B-spline, turned into the suite's field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regbench.naming import ordered_pairs
from regbench.transforms import warp_labels

MISSING = "itk-elastix is not installed: pip install -e '.[baselines]'"
itk = pytest.importorskip("itk", reason=MISSING)
if not hasattr(itk, "ElastixRegistrationMethod"):
    pytest.skip(MISSING, allow_module_level=True)

from regbench.baselines.elastix import Elastix, dense_field, to_itk  # noqa: E402

QUICK = {"affine_iterations": 40, "bspline_iterations": 40, "samples": 500}
TIE_TOLERANCE = 1e-3
"""Voxels: transformix writes its field in float32 millimetres, the suite reads it back."""


def test_suite_field_warps_labels_as_transformix(demo_dataset):
    """The suite's field warps the moving labels as transformix's nearest-neighbour resampling
    of them does, up to ties of the rounding: every voxel where the two differ samples the
    moving labels within a rounding tolerance of a half-voxel boundary, or outside the volume
    (where each resampler decides the border)."""
    moving, fixed = ordered_pairs(demo_dataset.test)[0]
    spacing = demo_dataset.spacing
    method = Elastix(**QUICK)
    transform = method.transform_parameters(demo_dataset.image(moving),
                                            demo_dataset.image(fixed), spacing)
    field = dense_field(transform, to_itk(demo_dataset.image(moving), spacing), spacing)
    assert field.shape == (3, *demo_dataset.shape) and np.abs(field).max() > 0.1
    labels = demo_dataset.label_map(moving).astype(np.int32)
    ours = warp_labels(torch.from_numpy(labels)[None, None],
                       torch.from_numpy(field)[None])[0, 0].numpy()
    transform.SetParameter("ResampleInterpolator", "FinalNearestNeighborInterpolator")
    theirs = itk.transformix_filter(to_itk(labels, spacing), transform, log_to_console=False)
    theirs = np.rint(itk.array_from_image(theirs).T).astype(np.int32)

    grid = np.stack(np.meshgrid(*(np.arange(n) for n in labels.shape), indexing="ij"))
    sampled = grid + field.astype(np.float64)
    tie = (np.abs(sampled - np.floor(sampled) - 0.5) < TIE_TOLERANCE).any(axis=0)
    limit = np.array(labels.shape, dtype=np.float64).reshape(3, 1, 1, 1) - 0.5
    outside = ((sampled < -0.5) | (sampled > limit)).any(axis=0)
    differ = ours != theirs
    assert not (differ & ~tie & ~outside).any(), (
        f"{int((differ & ~tie & ~outside).sum())} voxels differ away from a rounding tie")


def test_parameter_maps_are_par0010_with_the_options():
    affine, bspline = Elastix(bspline_iterations=7, grid_spacing_mm=10.0).parameter_maps()
    assert affine["Transform"] == "AffineTransform"
    assert affine["MaximumNumberOfIterations"] == "1000"
    assert bspline["Transform"] == "BSplineTransform"
    assert bspline["MaximumNumberOfIterations"] == "7"
    assert bspline["FinalGridSpacingInPhysicalUnits"] == ["10.0"] * 3
    assert bspline["GridSpacingSchedule"] == ["4", "4", "2", "1"]
    assert affine["RandomSeed"] == bspline["RandomSeed"] == "1"
