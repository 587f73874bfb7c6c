"""VoxelMorph as the Dual-PRNet paper ran it: the authors' own network, "vm2" of Balakrishnan
et al. (IEEE TMI 2019), from their release ``voxelmorph==0.2`` (its PyTorch port).

The paper: "For VoxelMorph, we used the codes and models provided by the original authors".
voxelmorph 0.2 holds both the authors' TensorFlow/Keras original and their PyTorch port of it;
this file runs the port with the suite's trainer, and ``tests/test_baselines.py`` checks that the
Keras original gives the same field on the same weights.

Network (``voxelmorph.torch.networks.VxmDense``, the layers reused as they are):

* a U-Net on the concatenated ``(moving, fixed)`` pair: encoder widths 16, 32, 32, 32 (3x3x3
  convolution and LeakyReLU 0.2, then 2x max-pooling), decoder widths 32, 32, 32, 32 (each
  followed by 2x nearest upsampling and the skip concatenation), then 32, 16, 16 at full
  resolution;
* a 3x3x3 flow convolution 16 -> 3, weights drawn from N(0, 1e-5), bias 0;
* ``voxelmorph`` (vm2): no integration, the flow is the displacement (327,331 parameters);
  ``voxelmorph-diff``: the diffeomorphic variant of Dalca et al. as the authors ship it, the flow
  is a stationary velocity field halved in resolution, integrated in 7 scaling-and-squaring
  steps and resized back.

Conventions: the flow is a displacement in voxel units, channel ``c`` along tensor axis ``c``,
and the authors' ``SpatialTransformer`` samples ``moving(x + u(x))`` with ``align_corners=True``
on the voxel grid: the suite's pull convention (:mod:`regbench.transforms`), zero padding.
``VxmDense`` ties its transformer and integrator to one input shape when built; here they are
built per input shape on first use (the same classes, shape-only buffers outside the state
dict), so one checkpoint serves every grid that is a multiple of 16.

Training: ``1 - local NCC`` (window ``ncc_window``) of the network's own warped moving image
against the fixed image, plus ``smoothness_weight`` times the mean squared spatial gradient of
the flow before integration (VoxelMorph's ``preint_flow``), as the authors train it; weight 1.0
as in the VoxelMorph paper for NCC.

The authors' release predates Python 3.11: its ``store_config_args`` decorator calls
``inspect.getargspec``, removed in 3.11, which :func:`authors_voxelmorph` restores as a thin
alias of ``inspect.getfullargspec`` before the import.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from types import ModuleType
from typing import Any, ClassVar

import torch
from torch import nn

from regbench.losses import GradientLoss, NCCLoss
from regbench.methods import LearnedMethod, Option

VM2_FEATURES: list[list[int]] = [[16, 32, 32, 32], [32, 32, 32, 32, 32, 16, 16]]
"""The "vm2" U-Net widths (encoder, decoder) of Balakrishnan et al., TMI 2019."""

AUTHORS_RELEASE = "0.2"
"""The release of ``voxelmorph`` (and ``neurite``) holding the authors' vm2 in Keras and PyTorch."""

VM2_PARAMETERS = 327_331
"""Parameters of vm2 in 3D (the TMI paper's network, counted on the authors' Keras model)."""


@functools.cache
def authors_voxelmorph() -> ModuleType:
    """``voxelmorph`` 0.2 with its PyTorch backend (selected before the first import)."""
    if not hasattr(inspect, "getargspec"):  # Python >= 3.11
        inspect.getargspec = lambda func: inspect.getfullargspec(func)[:4]
    os.environ["VXM_BACKEND"] = os.environ["NEURITE_BACKEND"] = "pytorch"
    import voxelmorph

    if getattr(voxelmorph, "__version__", None) != AUTHORS_RELEASE:
        raise RuntimeError(
            f"VoxelMorph as the paper ran it is the authors' release voxelmorph=={AUTHORS_RELEASE}"
            f", found {getattr(voxelmorph, '__version__', 'another')}: pip install "
            f"voxelmorph=={AUTHORS_RELEASE} neurite=={AUTHORS_RELEASE}")
    if voxelmorph.py.utils.get_backend() != "pytorch" or not hasattr(voxelmorph, "torch"):
        raise RuntimeError("voxelmorph was imported with its TensorFlow backend before the suite "
                           "selected PyTorch; import regbench.baselines.voxelmorph first")
    return voxelmorph


class VoxelMorphNetwork(nn.Module):
    """The authors' ``VxmDense`` with the suite's network interface.

    Args:
        nb_features: U-Net widths ``[encoder, decoder]`` (default vm2).
        integration_steps: scaling-and-squaring steps (0: the flow is the displacement).
        integration_downsize: resolution factor of the integrated velocity field.

    ``forward(moving, fixed)`` takes ``(B, 1, *S)`` tensors, ``S`` multiples of
    ``2 ** len(nb_features[0])``, and returns ``{"field": (B, 3, *S) displacement in voxels,
    "warped": (B, 1, *S) moving image warped by the authors' transformer, "velocity": the flow
    before integration (the field itself without integration)}``.
    """

    def __init__(self, nb_features: list[list[int]] = VM2_FEATURES, integration_steps: int = 0,
                 integration_downsize: int = 2) -> None:
        super().__init__()
        vxm = authors_voxelmorph()
        # The shape given here only sizes the transformer and integrator, rebuilt per input.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "torch.meshgrid", UserWarning)
            dense = vxm.networks.VxmDense(
                inshape=(2 * integration_downsize,) * 3, nb_unet_features=nb_features,
                int_steps=integration_steps, int_downsize=integration_downsize)
        self.unet_model, self.flow = dense.unet_model, dense.flow
        self.resize, self.fullsize = dense.resize, dense.fullsize
        self.integration_steps = integration_steps
        self.integration_downsize = integration_downsize
        self._shape_layers: dict[tuple[Any, ...], tuple[nn.Module, nn.Module | None]] = {}

    def shape_layers(self, shape: torch.Size, device: torch.device
                     ) -> tuple[nn.Module, nn.Module | None]:
        """The authors' ``SpatialTransformer`` and ``VecInt`` for inputs of spatial ``shape``."""
        key = (tuple(shape), device)
        if key not in self._shape_layers:
            layers = authors_voxelmorph().layers
            with warnings.catch_warnings():  # their torch.meshgrid call predates `indexing`
                warnings.filterwarnings("ignore", "torch.meshgrid", UserWarning)
                integrate = None
                if self.integration_steps > 0:
                    down = [int(s / self.integration_downsize) for s in shape]
                    integrate = layers.VecInt(down, self.integration_steps).to(device)
                transformer = layers.SpatialTransformer(shape).to(device)
            self._shape_layers[key] = (transformer, integrate)
        return self._shape_layers[key]

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor]:
        transformer, integrate = self.shape_layers(moving.shape[2:], moving.device)
        features = self.unet_model(torch.cat([moving, fixed], dim=1))
        # Under mixed precision the U-Net runs in low precision; the field and the warp do not.
        with torch.autocast(moving.device.type, enabled=False):
            velocity = self.flow(features.float())
            if self.resize is not None:
                velocity = self.resize(velocity)
            field = velocity
            if integrate is not None:
                field = integrate(velocity)
                if self.fullsize is not None:
                    field = self.fullsize(field)
            warped = transformer(moving.float(), field)
        return {"field": field, "warped": warped, "velocity": velocity}


class VoxelMorph(LearnedMethod):
    """VoxelMorph vm2 (TMI 2019), the network the Dual-PRNet paper compared against."""

    name = "voxelmorph"
    label = "VoxelMorph"
    defaults: ClassVar[dict[str, Any]] = {
        "nb_features": VM2_FEATURES,
        "integration_steps": 0,
        "integration_downsize": 2,
        "ncc_window": 9,
        "smoothness_weight": 1.0,
    }
    option_rules: ClassVar[dict[str, Option]] = {
        "integration_steps": Option(ge=0),
        "integration_downsize": Option(ge=1),
        "ncc_window": Option(ge=1),
        "smoothness_weight": Option(ge=0),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        features = self.options["nb_features"]
        if not (isinstance(features, list | tuple) and len(features) == 2
                and all(isinstance(part, list | tuple) for part in features)
                and len(features[1]) >= len(features[0]) >= 1
                and all(isinstance(f, int) and f > 0 for part in features for f in part)):
            raise ValueError(f"nb_features must be [encoder widths, decoder widths] of positive "
                             f"integers, the decoder at least as long, got {features!r}")
        self.size_multiple = 2 ** len(features[0])
        self._similarity = NCCLoss(int(self.options["ncc_window"]))
        self._smoothness = GradientLoss()

    def build_network(self) -> VoxelMorphNetwork:
        options = self.options
        return VoxelMorphNetwork([list(part) for part in options["nb_features"]],
                                 options["integration_steps"], options["integration_downsize"])

    def loss(self, outputs: dict[str, Any], moving: torch.Tensor,
             fixed: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        similarity = self._similarity(outputs["warped"], fixed)
        smoothness = self._smoothness(outputs["velocity"])
        loss = similarity + float(self.options["smoothness_weight"]) * smoothness
        return loss, {"ncc": float(similarity.detach()), "grad": float(smoothness.detach())}


class VoxelMorphDiff(VoxelMorph):
    """Diffeomorphic VoxelMorph (Dalca et al.): vm2 predicting a velocity field at half
    resolution, integrated in 7 scaling-and-squaring steps, as the authors ship it."""

    name = "voxelmorph-diff"
    label = "VoxelMorph (diffeomorphic)"
    defaults: ClassVar[dict[str, Any]] = {**VoxelMorph.defaults, "integration_steps": 7}
