"""elastix (through ``itk-elastix``): affine, then B-spline, with the elastix model zoo's settings
for inter-subject brain MRI.

The settings are those of model zoo entry **Par0010** ("interpatient; affine + B-spline
transformation; mutual information"; brain MR, 1.25 x 1 x 1 mm; S. Klein et al., "Early
diagnosis of dementia based on intersubject whole-brain dissimilarities", ISBI 2010), from its
files ``Par0010affine.txt`` and ``Par0010bspline.txt`` (SuperElastix/ElastixModelZoo,
``models/Par0010/``, commit 4d25c3c). The model zoo repository carries no licence file, so the
files are not copied here: :data:`PAR0010_AFFINE` and :data:`PAR0010_BSPLINE` restate their
settings, and the zoo entry is where to check them. Both stages use Mattes mutual information
(32 bins, 2000 random samples, new ones every iteration) on a 4-level smoothing pyramid. The
affine stage starts from the centres of gravity and runs adaptive stochastic gradient descent
(1000 iterations per level, maximum step 4 mm). The B-spline stage samples 2000 points in random
50 mm regions and runs plain stochastic gradient descent (2000 iterations per level, gain
``a / (A + k + 1)^alpha`` with a = 10000, A = 100, alpha = 0.6) on a control-point grid of 15 mm
at the finest level, 4 x, 4 x, 2 x and 1 x that from coarse to fine.

What the suite adds, none of which changes the optimisation: the options below (defaults: the
zoo's values), one thread and a fixed sampling seed by default (``RandomSeed``), so that a
registration repeats bit for bit, and no result image (the suite warps the moving image
itself). The transform is turned into the suite's dense field with transformix's deformation
field: ``T(x) - x`` in mm at every voxel ``x`` of the fixed grid, where ``T`` maps fixed points
to moving points, i.e. the pull convention; divided by the spacing it is the field in voxels.
The volumes go to ITK with origin 0 and identity direction, array axis ``a`` as ITK's axis
``a``, so ITK's physical axes are the array axes.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

import numpy as np

from regbench.methods import Method, Option
from regbench.runtime import describe_cpu

PAR0010_COMMON: dict[str, str | list[str]] = {
    "FixedInternalImagePixelType": "float",
    "MovingInternalImagePixelType": "float",
    "Registration": "MultiResolutionRegistration",
    "FixedImagePyramid": "FixedSmoothingImagePyramid",
    "MovingImagePyramid": "MovingSmoothingImagePyramid",
    "Interpolator": "BSplineInterpolator",
    "Metric": "AdvancedMattesMutualInformation",
    "ResampleInterpolator": "FinalBSplineInterpolator",
    "Resampler": "DefaultResampler",
    "ErodeMask": "false",
    "NumberOfResolutions": "4",
    "HowToCombineTransforms": "Compose",
    "NumberOfHistogramBins": "32",
    "FixedLimitRangeRatio": "0.0",
    "MovingLimitRangeRatio": "0.0",
    "FixedKernelBSplineOrder": "3",
    "MovingKernelBSplineOrder": "3",
    "NumberOfSpatialSamples": "2000",
    "NewSamplesEveryIteration": "true",
    "CheckNumberOfSamples": "true",
    "MaximumNumberOfSamplingAttempts": "10",
    "BSplineInterpolationOrder": "1",
    "FinalBSplineInterpolationOrder": "3",
    "DefaultPixelValue": "0",
    "WriteResultImage": "false",
}
"""The settings both Par0010 files share."""

PAR0010_AFFINE: dict[str, str | list[str]] = {
    **PAR0010_COMMON,
    "Optimizer": "AdaptiveStochasticGradientDescent",
    "Transform": "AffineTransform",
    "AutomaticTransformInitialization": "true",
    "AutomaticTransformInitializationMethod": "CenterOfGravity",
    "AutomaticScalesEstimation": "true",
    "MaximumNumberOfIterations": "1000",
    "ImageSampler": "Random",
    "MaximumStepLength": "4.0",
}
"""``Par0010affine.txt``."""

PAR0010_BSPLINE: dict[str, str | list[str]] = {
    **PAR0010_COMMON,
    "Optimizer": "StandardGradientDescent",
    "Transform": "BSplineTransform",
    "FinalGridSpacingInPhysicalUnits": ["15.0"] * 3,
    "GridSpacingSchedule": ["4", "4", "2", "1"],
    "MaximumNumberOfIterations": "2000",
    "UseFastAndLowMemoryVersion": "true",
    "ImageSampler": "RandomCoordinate",
    "FixedImageBSplineInterpolationOrder": "1",
    "UseRandomSampleRegion": "true",
    "SampleRegionSize": ["50.0"] * 3,
    "SP_a": "10000.0",
    "SP_A": "100.0",
    "SP_alpha": "0.6",
}
"""``Par0010bspline.txt``."""


class Elastix(Method):
    """elastix affine + B-spline registration with the model zoo's Par0010 settings.

    Options (defaults: Par0010's): ``affine_iterations`` and ``bspline_iterations`` per
    resolution level, ``grid_spacing_mm`` (B-spline control points at the finest level),
    ``samples`` (mutual-information samples per iteration, both stages), ``random_seed`` (of
    the samplers), ``threads`` (elastix's, 1 by default for repeatable fields; ``null``: every
    core this process may use).
    """

    name = "elastix"
    label = "elastix"
    requires: ClassVar[dict[str, str]] = {"itk-elastix": "baselines"}
    defaults: ClassVar[dict[str, Any]] = {
        "affine_iterations": 1000,
        "bspline_iterations": 2000,
        "grid_spacing_mm": 15.0,
        "samples": 2000,
        "random_seed": 1,
        "threads": 1,
    }
    option_rules: ClassVar[dict[str, Option]] = {
        "affine_iterations": Option(ge=1),
        "bspline_iterations": Option(ge=1),
        "grid_spacing_mm": Option(gt=0),
        "samples": Option(ge=1),
        "random_seed": Option(ge=0),
        "threads": Option(type=int, ge=1, nullable=True),
    }

    def parameter_maps(self) -> list[dict[str, str | list[str]]]:
        """The affine and B-spline parameter maps: Par0010 with this method's options."""
        shared = {"NumberOfSpatialSamples": str(self.options["samples"]),
                  "RandomSeed": str(self.options["random_seed"])}
        affine = {**PAR0010_AFFINE, **shared,
                  "MaximumNumberOfIterations": str(self.options["affine_iterations"])}
        bspline = {**PAR0010_BSPLINE, **shared,
                   "MaximumNumberOfIterations": str(self.options["bspline_iterations"]),
                   "FinalGridSpacingInPhysicalUnits": [str(float(
                       self.options["grid_spacing_mm"]))] * 3}
        return [affine, bspline]

    def register(self, moving: np.ndarray, fixed: np.ndarray,
                 spacing: tuple[float, float, float]) -> np.ndarray:
        transform = self.transform_parameters(moving, fixed, spacing)
        return dense_field(transform, to_itk(moving, spacing), spacing)

    def transform_parameters(self, moving: np.ndarray, fixed: np.ndarray,
                             spacing: tuple[float, float, float]):
        """Run elastix; returns its result ``itk.ParameterObject`` (fixed -> moving points)."""
        import itk

        parameters = itk.ParameterObject.New()
        for settings in self.parameter_maps():
            parameters.AddParameterMap({key: value if isinstance(value, list) else [value]
                                        for key, value in settings.items()})
        registration = itk.ElastixRegistrationMethod.New(
            to_itk(fixed, spacing), to_itk(moving, spacing))
        registration.SetParameterObject(parameters)
        registration.SetNumberOfThreads(self.threads())
        registration.SetLogToConsole(False)
        registration.SetOutputDirectory("")
        registration.UpdateLargestPossibleRegion()
        return registration.GetTransformParameterObject()

    def threads(self) -> int:
        return self.options["threads"] or len(os.sched_getaffinity(0))

    def device_description(self) -> str:
        return describe_cpu(self.threads())


def to_itk(volume: np.ndarray, spacing: tuple[float, float, float]):
    """An ITK float image of ``volume (X, Y, Z)`` whose index axis ``a`` is array axis ``a``,
    origin 0, identity direction, ``spacing`` mm."""
    import itk

    # ITK reads a NumPy array with its axes reversed (z, y, x): hand it the transpose.
    image = itk.image_from_array(np.ascontiguousarray(np.asarray(volume, np.float32).T))
    image.SetSpacing([float(s) for s in spacing])
    return image


def dense_field(transform, moving_image, spacing: tuple[float, float, float]) -> np.ndarray:
    """transformix's deformation field of ``transform`` as the suite's ``(3, X, Y, Z)`` voxels.
    """
    import itk

    with tempfile.TemporaryDirectory(prefix="regbench-transformix-") as workdir:
        transformix = itk.TransformixFilter.New(moving_image)
        transformix.SetTransformParameterObject(transform)
        transformix.SetComputeDeformationField(True)
        transformix.SetLogToConsole(False)
        transformix.SetOutputDirectory(workdir)  # it writes the field there, not in the cwd
        transformix.UpdateLargestPossibleRegion()
        millimetres = itk.array_from_image(transformix.GetOutputDeformationField())  # Z, Y, X
    field = np.transpose(millimetres, (3, 2, 1, 0)) / np.asarray(spacing)[:, None, None, None]
    return np.ascontiguousarray(field, dtype=np.float32)
