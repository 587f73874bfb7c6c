"""VoxelMorph as the Dual-PRNet paper ran it, and the authors' later release of it.

The paper: "For VoxelMorph, we used the codes and models provided by the original authors". In
2019 that code was the authors' Keras original, ``src/networks.py`` of the voxelmorph repository
before its 2020 restructuring (last version: commit 7ef219c, 2019-08-08; moved to ``voxelmorph/``
unchanged by 63c11f0, 2019-09-10). Three methods:

``voxelmorph`` (vm2 of Balakrishnan et al., IEEE TMI 2019): :class:`VoxelMorph2019Network`, this
file's own PyTorch build of ``unet_core`` + ``cvpr2018_net``, layer for layer:

* the input is ``concatenate([moving, fixed])``; every convolution is 3x3x3 with TensorFlow's
  ``padding='same'``, he_normal weights, zero bias, followed by LeakyReLU 0.2;
* encoder 16, 32, 32, 32: four **stride-2** convolutions (1/2 .. 1/16). ``same`` at stride 2 pads
  ``k - 1 - (n - 1) % 2`` voxels, the odd one at the end: an even axis gets (0, 1);
* decoder: conv 32 at 1/16; x2 nearest upsampling, concatenated with the 1/8 skip, conv 32; x2 +
  1/4 skip, conv 32; x2 + 1/2 skip, conv 32, conv 32; x2 + the input pair, conv 16; conv 16;
* a 3x3x3 flow convolution 16 -> 3, kernel N(0, 1e-5), bias 0; no integration: the flow is the
  displacement. 300,547 parameters in 3D, as in the authors' ``models/cvpr2018_vm2_cc.h5``.

The flow's channel order: ``cvpr2018_net`` takes ``indexing='ij'`` by default since commit
e16cb15 (2018-10-12), and ``src/train.py`` and ``src/test.py`` of 2019 build it so; channel ``c``
then moves along array axis ``c``, the suite's convention. Earlier runs used ``indexing='xy'``
(channels 0 and 1 swapped); the authors' 2019 model ``cvpr2018_vm2_cc.h5`` is their ``xy`` model
``models/xy/vm2_cc.h5`` with exactly those two output channels of the flow layer swapped, so the
two conventions are one network. ``benchmarks/vm2019_parity.py`` builds the authors' own Keras
network from their file and compares the fields on the same weights (docs/protocol.md).

``voxelmorph-0.2``: the network of the authors' release ``voxelmorph==0.2`` (what ``pip install
voxelmorph`` gives), its PyTorch ``VxmDense`` reused as it is. Release 0.2 rebuilt the U-Net
(stride-1 convolutions followed by max pooling; decoder widths 32, 32, 32, 32 each followed by
upsampling, then 32, 16, 16 at full resolution): 327,331 parameters, not the 2019 network.
``tests/test_baselines.py`` checks this port against the release's Keras model.

``voxelmorph-diff``: the diffeomorphic variant as the authors' release trains it: release 0.2's
network (``VxmDense``, vm2 widths) predicting a stationary velocity field at half resolution,
integrated in 7 scaling-and-squaring steps and resized back. Its gradient loss is scaled by the
integration downsize factor, as ``scripts/torch/train.py`` of release 0.2 does
(``Grad('l2', loss_mult=args.int_downsize)``, since commit 1ee8f05, 2020-08-03). The 2019 code
had a different diffeomorphic network (``miccai2018_net``: the U-Net stopped at 1/2 resolution,
a sampled velocity and a KL loss), which the Dual-PRNet paper did not run.

Conventions: the field is a displacement in voxel units, channel ``c`` along tensor axis ``c``,
sampled ``moving(x + u(x))`` on the voxel grid (the suite's pull convention,
:mod:`regbench.transforms`). The 2019 warp clamps sample points to the volume (border padding);
release 0.2's ``SpatialTransformer`` pads with zeros.

Training: ``1 - local NCC`` (window ``ncc_window``) of the network's own warped moving image
against the fixed image, plus ``smoothness_weight`` times the mean squared spatial gradient of
the flow before integration, as the authors train it; weight 1.0, their choice for NCC.

Release 0.2 predates Python 3.11: its ``store_config_args`` decorator calls
``inspect.getargspec``, removed in 3.11, which :func:`authors_voxelmorph` restores as a thin
alias of ``inspect.getfullargspec`` before the import.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import warnings
from types import ModuleType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from regbench.losses import GradientLoss, NCCLoss
from regbench.methods import LearnedMethod, Option
from regbench.transforms import warp

VM2_FEATURES: list[list[int]] = [[16, 32, 32, 32], [32, 32, 32, 32, 32, 16, 16]]
"""The "vm2" U-Net widths (encoder, decoder) of Balakrishnan et al., TMI 2019."""

VM2_PARAMETERS = 300_547
"""Parameters of vm2 in 3D as the authors' 2019 code builds it (and their cvpr2018_vm2_cc.h5)."""

AUTHORS_RELEASE = "0.2"
"""The release of ``voxelmorph`` (and ``neurite``) holding the authors' rebuilt vm2."""

RELEASE_VM2_PARAMETERS = 327_331
"""Parameters of vm2 in 3D as release 0.2 rebuilt it (counted on its Keras model too)."""

LEAKY_SLOPE = 0.2

DECODER_SKIPS: dict[int, int] = {1: 3, 2: 2, 3: 1, 5: 0}
"""2019 decoder: convolution index -> encoder output (0: the input pair, 1: 1/2, .. 4: 1/16)
that its input upsampled x2 is concatenated with first."""


def same_padding(size: int, stride: int, kernel: int = 3) -> tuple[int, int]:
    """TensorFlow's ``padding='same'`` on one axis: (before, after) voxels of zero padding.

    The output has ``ceil(size / stride)`` voxels; of an odd total, the extra voxel goes at the
    end (so a stride-2, 3-wide convolution on an even axis pads (0, 1), on an odd one (1, 1)).

    Args:
        size: the input's length along the axis.
        stride: the convolution's stride.
        kernel: the convolution's width.

    Returns:
        The padding before and after the axis.
    """
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


class SameConv3d(nn.Conv3d):
    """A 3x3x3 convolution with TensorFlow's ``same`` padding at any stride, he_normal weights as
    Keras 2 draws them (a normal truncated at 2 standard deviations, sqrt(2 / fan_in) after
    truncation) and zero bias, Keras' defaults in the authors' ``conv_block``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, stride=stride)
        std = math.sqrt(2 / (in_channels * 27)) / 0.87962566103423978
        nn.init.trunc_normal_(self.weight, 0.0, std, -2 * std, 2 * std)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [same_padding(size, self.stride[0]) for size in x.shape[2:]]
        # F.pad lists the last axis first.
        x = F.pad(x, [side for pair in reversed(pads) for side in pair])
        return F.conv3d(x, self.weight, self.bias, self.stride)


class VoxelMorph2019Network(nn.Module):
    """``cvpr2018_net`` of the authors' 2019 code (``unet_core`` and its flow layer), in PyTorch.

    Args:
        nb_features: ``[encoder, decoder]`` widths: 4 encoder widths and 6 (vm1) or 7 (vm2)
            decoder widths, as ``unet_core`` takes them (default vm2).

    ``forward(moving, fixed)`` takes ``(B, 1, *S)`` tensors, ``S`` multiples of 16, and returns
    ``{"field": (B, 3, *S) displacement in voxels, "warped": the moving image warped by it (border
    padding, as the 2019 transformer clamps), "velocity": the field itself (no integration)}``.
    """

    def __init__(self, nb_features: list[list[int]] = VM2_FEATURES) -> None:
        super().__init__()
        encoder, decoder = nb_features
        if len(encoder) != 4 or len(decoder) not in (6, 7):
            raise ValueError(f"the 2019 U-Net takes 4 encoder and 6 or 7 decoder widths, got "
                             f"{nb_features!r}")
        channels, skips = 2, [2]
        self.encoder = nn.ModuleList()
        for width in encoder:
            self.encoder.append(SameConv3d(channels, width, stride=2))
            channels = width
            skips.append(width)
        # Decoder inputs: after each of the first three convolutions, x2 upsampling and the skip
        # of that resolution; the 4th and 5th stay at 1/2, then x2 and the input pair.
        inputs = [skips[4], decoder[0] + skips[3], decoder[1] + skips[2], decoder[2] + skips[1],
                  decoder[3], decoder[4] + skips[0], decoder[5]]
        self.decoder = nn.ModuleList(SameConv3d(c, width)
                                     for c, width in zip(inputs, decoder, strict=False))
        self.flow = SameConv3d(decoder[-1], 3)
        nn.init.normal_(self.flow.weight, 0.0, 1e-5)

    def features(self, pair: torch.Tensor) -> torch.Tensor:
        """``unet_core``: the last decoder features of the concatenated ``(moving, fixed)``."""
        if any(size % 16 for size in pair.shape[2:]):
            raise ValueError(f"the 2019 VoxelMorph U-Net needs sizes that are multiples of 16, "
                             f"got {tuple(pair.shape[2:])}")
        skips = [pair]
        for conv in self.encoder:
            skips.append(F.leaky_relu(conv(skips[-1]), LEAKY_SLOPE))
        x = skips[-1]
        for index, conv in enumerate(self.decoder):
            if index in DECODER_SKIPS:
                x = torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"),
                               skips[DECODER_SKIPS[index]]], dim=1)
            x = F.leaky_relu(conv(x), LEAKY_SLOPE)
        return x

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(torch.cat([moving, fixed], dim=1))
        # Under mixed precision the U-Net runs in low precision; the field and the warp do not.
        with torch.autocast(moving.device.type, enabled=False):
            field = self.flow(features.float())
            warped = warp(moving.float(), field)
        return {"field": field, "warped": warped, "velocity": field}


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


def is_widths_pair(features: Any) -> bool:
    """Whether ``features`` is ``[encoder widths, decoder widths]`` of positive integers."""
    return (isinstance(features, list | tuple) and len(features) == 2
            and all(isinstance(part, list | tuple) for part in features)
            and all(isinstance(f, int) and f > 0 for part in features for f in part))


class VoxelMorph(LearnedMethod):
    """VoxelMorph vm2 (TMI 2019) as the authors' 2019 code built it, the network the Dual-PRNet
    paper compared against."""

    name = "voxelmorph"
    label = "VoxelMorph"
    defaults: ClassVar[dict[str, Any]] = {
        "nb_features": VM2_FEATURES,
        "ncc_window": 9,
        "smoothness_weight": 1.0,
    }
    option_rules: ClassVar[dict[str, Option]] = {
        "ncc_window": Option(ge=1),
        "smoothness_weight": Option(ge=0),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.check_features(self.options["nb_features"])
        self._similarity = NCCLoss(int(self.options["ncc_window"]))
        self._smoothness = GradientLoss()

    def check_features(self, features: Any) -> None:
        """Raise :class:`ValueError` unless the network can be built with these widths."""
        if not (is_widths_pair(features) and len(features[0]) == 4
                and len(features[1]) in (6, 7)):
            raise ValueError(f"nb_features must be [4 encoder widths, 6 or 7 decoder widths] of "
                             f"positive integers (the 2019 U-Net), got {features!r}")

    @property
    def gradient_loss_mult(self) -> float:
        """The factor of the gradient loss inside it (``Grad(loss_mult=...)``; 1: none)."""
        return 1.0

    def build_network(self) -> nn.Module:
        return VoxelMorph2019Network([list(part) for part in self.options["nb_features"]])

    def loss(self, outputs: dict[str, Any], moving: torch.Tensor,
             fixed: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        similarity = self._similarity(outputs["warped"], fixed)
        smoothness = self.gradient_loss_mult * self._smoothness(outputs["velocity"])
        loss = similarity + float(self.options["smoothness_weight"]) * smoothness
        return loss, {"ncc": float(similarity.detach()), "grad": float(smoothness.detach())}


class VoxelMorphRelease(VoxelMorph):
    """VoxelMorph vm2 as the authors' release ``voxelmorph==0.2`` rebuilt it (``VxmDense``)."""

    name = "voxelmorph-0.2"
    label = "VoxelMorph (release 0.2)"
    defaults: ClassVar[dict[str, Any]] = {
        **VoxelMorph.defaults,
        "integration_steps": 0,
        "integration_downsize": 2,
    }
    option_rules: ClassVar[dict[str, Option]] = {
        **VoxelMorph.option_rules,
        "integration_steps": Option(ge=0),
        "integration_downsize": Option(ge=1),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.size_multiple = 2 ** len(self.options["nb_features"][0])

    def check_features(self, features: Any) -> None:
        if not (is_widths_pair(features) and len(features[1]) >= len(features[0]) >= 1):
            raise ValueError(f"nb_features must be [encoder widths, decoder widths] of positive "
                             f"integers, the decoder at least as long, got {features!r}")

    def build_network(self) -> VoxelMorphNetwork:
        options = self.options
        return VoxelMorphNetwork([list(part) for part in options["nb_features"]],
                                 options["integration_steps"], options["integration_downsize"])


class VoxelMorphDiff(VoxelMorphRelease):
    """Diffeomorphic VoxelMorph (Dalca et al.) as the authors' release trains it: release 0.2's
    vm2 predicting a velocity field at half resolution, integrated in 7 scaling-and-squaring
    steps, the gradient loss scaled by the downsize factor."""

    name = "voxelmorph-diff"
    label = "VoxelMorph (diffeomorphic)"
    defaults: ClassVar[dict[str, Any]] = {**VoxelMorphRelease.defaults, "integration_steps": 7}

    @property
    def gradient_loss_mult(self) -> float:
        return float(self.options["integration_downsize"])
