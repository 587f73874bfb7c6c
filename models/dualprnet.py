"""Dual-PRNet (Hu et al., MICCAI 2019) and its two ablations, in PyTorch.

Network (docs/protocol.md, "Dual-PRNet"; widths of the official code):

* **Feature pyramid** (:class:`FeaturePyramid`): a VoxResNet-like :class:`Encoder` of stride-2
  blocks (features at 1/2 .. 1/2**depth) followed by a :class:`RefineDecoder` (FPN-style Refine
  Units, coarse to fine) giving ``decoder_channels``-channel features per level. In the dual-stream
  models the moving and the fixed image go through *the same* feature pyramid (one module, shared
  weights). As in the official code, both streams are passed as one batch, so in training mode
  batch normalisation pools the statistics of both images.
* **Pyramid registration module** (:func:`pyramid_register`): the coarsest level predicts a field
  from ``concat(moving, fixed)`` features; every finer level upsamples the accumulated field,
  warps the moving features with it, predicts a residual field from ``concat(warped moving,
  fixed)`` and composes: ``phi_l = compose(phi_{l-1}, delta_l)``, i.e.
  ``phi_l(x) = delta_l(x) + phi_{l-1}(x + delta_l(x))``. The finest level's field is resized to
  full resolution. As in the official code (``last_flow.detach()``; the paper is silent), the
  field that warps the moving features is detached: gradients reach the coarser levels through
  the composition, not through the feature warp.

Units: every field is a displacement in voxel units *of the grid it lives on* (see
:mod:`regbench.transforms`); :func:`regbench.transforms.resize_field` rescales values whenever a
field changes grid, so a displacement of 1 voxel at 1/16 resolution is 16 voxels at full
resolution.

Registered methods (ablations of the paper, same code with two flags):

========================  ===============================  ===========  =======
name                      label                            dual_stream  pyramid
========================  ===============================  ===========  =======
``dualprnet``             Dual-PRNet                       yes          yes
``dualprnet-dsf``         Dual-stream, single field        yes          no
``dualprnet-ssf``         Single-stream, single field      no           no
========================  ===============================  ===========  =======

The single-field variants predict one field from the finest pyramid level's features (the
concatenated moving and fixed features, or the single stream's features of the stacked 2-channel
input) and resize it to full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from regbench.losses import NCCLoss, smoothness
from regbench.methods import LearnedMethod, Option, in_float32
from regbench.transforms import compose, resize_field, warp

HEAD_INIT_STD = 1e-5  # small random field heads: near-identity start that still trains every level


def conv3d(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
           bias: bool = True) -> nn.Conv3d:
    """A 3D convolution with 'same' padding (output size ``ceil(input / stride)``)."""
    return nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2, bias=bias)


def bn_relu_conv(in_channels: int, out_channels: int, stride: int = 1,
                 bias: bool = True) -> nn.Sequential:
    """Pre-activation convolution: BatchNorm, ReLU, 3x3x3 conv."""
    return nn.Sequential(nn.BatchNorm3d(in_channels), nn.ReLU(inplace=True),
                         conv3d(in_channels, out_channels, stride=stride, bias=bias))


class ResBlock(nn.Module):
    """VoxResNet residual unit: ``x + conv(relu(bn(conv(relu(bn(x))))))``; keeps ``(B, C, *S)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(bn_relu_conv(channels, channels, bias=False),
                                  bn_relu_conv(channels, channels, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """VoxResNet-like encoder: one stride-2 block per entry of ``channels``.

    Block 1 is conv(stride 2), BN, ReLU, conv; every later block is BN-ReLU-conv(stride 2)
    followed by two :class:`ResBlock`. ``forward(x (B, in_channels, *S))`` returns the block
    outputs, fine to coarse: ``(B, channels[k], *ceil(S / 2**(k+1)))`` for ``k = 0 .. depth-1``.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (8, 16, 32, 32)) -> None:
        super().__init__()
        first, *rest = channels
        blocks = [nn.Sequential(conv3d(in_channels, first, stride=2, bias=False),
                                nn.BatchNorm3d(first), nn.ReLU(inplace=True),
                                conv3d(first, first, bias=False))]
        for previous, width in zip(channels[:-1], rest, strict=True):
            blocks.append(nn.Sequential(bn_relu_conv(previous, width, stride=2),
                                        ResBlock(width), ResBlock(width)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


class RefineDecoder(nn.Module):
    """FPN-style decoder of Refine Units over the ``levels`` coarsest encoder features.

    Coarse to fine, each unit computes ``conv3(conv1(encoder feature) + up(coarser refined))``,
    where ``up`` is trilinear upsampling to the *exact* size of the finer level (so odd and
    non-power-of-two sizes work). ``forward(features)`` takes the encoder's fine-to-coarse list
    and returns ``levels`` tensors ``(B, out_channels, *S_l)``, coarse to fine.
    """

    def __init__(self, encoder_channels: Sequence[int], out_channels: int = 32,
                 levels: int = 4) -> None:
        super().__init__()
        used = list(encoder_channels)[::-1][:levels]  # coarse to fine
        self.levels = levels
        self.lateral = nn.ModuleList(conv3d(c, out_channels, kernel_size=1) for c in used)
        self.smooth = nn.ModuleList(conv3d(out_channels, out_channels) for _ in used)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        refined: list[torch.Tensor] = []
        coarsest_first = features[::-1][:self.levels]
        for feature, lateral, smooth in zip(coarsest_first, self.lateral, self.smooth, strict=True):
            x = lateral(feature)
            if refined:
                x = x + F.interpolate(refined[-1], size=x.shape[2:], mode="trilinear",
                                      align_corners=False)
            refined.append(smooth(x))
        return refined


class FeaturePyramid(nn.Sequential):
    """Encoder + Refine decoder: ``(B, in_channels, *S)`` -> ``levels`` features, coarse to fine."""

    def __init__(self, in_channels: int, encoder_channels: Sequence[int], decoder_channels: int,
                 levels: int) -> None:
        super().__init__(Encoder(in_channels, encoder_channels),
                         RefineDecoder(encoder_channels, decoder_channels, levels))


def field_head(in_channels: int, zero_init: bool) -> nn.Conv3d:
    """3x3x3 conv to a 3-channel displacement; weights N(0, 1e-5) (or exactly 0), bias 0."""
    head = conv3d(in_channels, 3)
    if zero_init:
        nn.init.zeros_(head.weight)
    else:
        nn.init.normal_(head.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(head.bias)
    return head


def pyramid_register(moving: Sequence[torch.Tensor], fixed: Sequence[torch.Tensor],
                     heads: Sequence[nn.Module]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The pyramid registration module.

    ``moving[l]`` and ``fixed[l]`` are ``(B, C, *S_l)`` features, coarse to fine; ``heads[l]``
    maps ``2C`` channels to a 3-channel field. Returns ``(residuals, accumulated)``: per level the
    residual field ``delta_l`` and the accumulated field ``phi_l``, both ``(B, 3, *S_l)`` float32
    in voxel units of level ``l``.
    """
    residuals: list[torch.Tensor] = []
    accumulated: list[torch.Tensor] = []
    field: torch.Tensor | None = None
    for moving_l, fixed_l, head in zip(moving, fixed, heads, strict=True):
        if field is not None:
            field = resize_field(field, fixed_l.shape[2:])
            moving_l = warp(moving_l, field.detach())
        delta = in_float32(head, torch.cat([moving_l, fixed_l], 1))
        field = delta if field is None else compose(field, delta)
        residuals.append(delta)
        accumulated.append(field)
    return residuals, accumulated


class DualPRNetwork(nn.Module):
    """The network of Dual-PRNet and of its ablations.

    Args:
        encoder_channels: widths of the encoder's stride-2 blocks (depth = its length).
        decoder_channels: width of the Refine decoder's features.
        levels: pyramid levels used, from the coarsest (1/2**depth) down; the finest predicted
            resolution is ``1 / 2**(depth - levels + 1)`` (1/2 with the defaults).
        dual_stream: moving and fixed through one shared feature pyramid (else the stacked
            2-channel pair through a single stream).
        pyramid: a field per level, composed (else one field from the finest level).
        zero_init: field heads start exactly at zero, so the untrained network is the identity.

    ``forward(moving (B, 1, *S), fixed (B, 1, *S))`` returns a dict:
    ``"field"`` ``(B, 3, *S)`` full-resolution displacement in voxels; ``"levels"`` the residual
    field of each level, coarse to fine, each ``(B, 3, *S_l)`` in voxels of its own level (one
    entry, the single field, without the pyramid); ``"accumulated"`` the accumulated field of
    each level, likewise.
    """

    def __init__(self, encoder_channels: Sequence[int] = (8, 16, 32, 32),
                 decoder_channels: int = 32, levels: int = 4, dual_stream: bool = True,
                 pyramid: bool = True, zero_init: bool = False) -> None:
        super().__init__()
        encoder_channels = tuple(int(c) for c in encoder_channels)
        if not encoder_channels or min(encoder_channels) < 1 or int(decoder_channels) < 1:
            raise ValueError(f"channel widths must be positive, got encoder {encoder_channels} "
                             f"and decoder {decoder_channels}")
        if not 1 <= int(levels) <= len(encoder_channels):
            raise ValueError(f"levels must be 1..{len(encoder_channels)} (the encoder depth), "
                             f"got {levels}")
        if pyramid and not dual_stream:
            raise ValueError("the pyramid module warps moving features: it needs dual_stream")
        self.dual_stream, self.pyramid = bool(dual_stream), bool(pyramid)
        self.features = FeaturePyramid(1 if dual_stream else 2, encoder_channels,
                                       int(decoder_channels), int(levels))
        head_in = int(decoder_channels) * (2 if dual_stream else 1)
        self.heads = nn.ModuleList(field_head(head_in, zero_init)
                                   for _ in range(int(levels) if pyramid else 1))

    def stream_features(self, moving: torch.Tensor, fixed: torch.Tensor
                        ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both streams through the one shared feature pyramid: (moving, fixed) feature lists."""
        both = self.features(torch.cat([moving, fixed], 0))
        batch = moving.shape[0]
        return [f[:batch] for f in both], [f[batch:] for f in both]

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, Any]:
        if moving.shape != fixed.shape or moving.dim() != 5 or moving.shape[1] != 1:
            raise ValueError(f"moving and fixed must both be (B, 1, X, Y, Z), got "
                             f"{tuple(moving.shape)} and {tuple(fixed.shape)}")
        if self.pyramid:
            residuals, accumulated = pyramid_register(*self.stream_features(moving, fixed),
                                                      self.heads)
        else:
            if self.dual_stream:
                moving_features, fixed_features = self.stream_features(moving, fixed)
                finest = torch.cat([moving_features[-1], fixed_features[-1]], 1)
            else:
                finest = self.features(torch.cat([moving, fixed], 1))[-1]
            residuals = accumulated = [in_float32(self.heads[0], finest)]
        field = resize_field(accumulated[-1], moving.shape[2:])
        return {"field": field, "levels": residuals, "accumulated": accumulated}


class DualPRNet(LearnedMethod):
    """Dual-PRNet: dual-stream pyramid registration network (the full model).

    Loss: ``NCCLoss(ncc_window)(warp(moving, field), fixed) + smoothness_weight *
    smoothness(levels)``, the gradient penalty summed over every level's residual field.
    """

    name = "dualprnet"
    label = "Dual-PRNet"
    dual_stream: ClassVar[bool] = True
    pyramid: ClassVar[bool] = True
    # The official test script never calls eval(): batch normalisation uses the statistics of
    # the pair at hand. Measured on the demo (a Dual-PRNet of 1500 steps, 12 test pairs): mean
    # FAIM Dice 0.7876 with the pair's statistics, 0.7855 with the running averages (higher on
    # 9 of 12 pairs, Wilcoxon p = 0.007). We follow the official code.
    test_batch_statistics = True
    defaults: ClassVar[dict[str, Any]] = {
        "encoder_channels": (8, 16, 32, 32),
        "decoder_channels": 32,
        "levels": 4,
        "ncc_window": 9,
        "smoothness_weight": 1.0,
        "zero_init": False,
    }
    option_rules: ClassVar[dict[str, Option]] = {
        "encoder_channels": Option(ge=1),
        "decoder_channels": Option(ge=1),
        "levels": Option(ge=1),
        "ncc_window": Option(ge=1),
        "smoothness_weight": Option(ge=0),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        depth = len(self.options["encoder_channels"])
        if self.options["levels"] > depth:
            raise ValueError(f"method {self.name!r}: levels={self.options['levels']} must be "
                             f"<= {depth}, the depth of encoder_channels")
        # Each stride-2 block halves the size; padding to 2**depth keeps every level exact.
        self.size_multiple = 2 ** len(self.options["encoder_channels"])
        self._ncc = NCCLoss(int(self.options["ncc_window"]))

    def build_network(self) -> DualPRNetwork:
        options = self.options
        return DualPRNetwork(options["encoder_channels"], options["decoder_channels"],
                             options["levels"], dual_stream=self.dual_stream,
                             pyramid=self.pyramid, zero_init=bool(options["zero_init"]))

    def loss(self, outputs: dict[str, Any], moving: torch.Tensor,
             fixed: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        ncc = self._ncc(warp(moving, outputs["field"]), fixed)
        smooth = smoothness(outputs["levels"])
        total = ncc + float(self.options["smoothness_weight"]) * smooth
        return total, {"ncc": float(ncc.detach()), "smooth": float(smooth.detach())}


class DualStreamSingleField(DualPRNet):
    """Ablation: the dual-stream feature pyramid, one field from the finest level's features."""

    name = "dualprnet-dsf"
    label = "Dual-stream, single field"
    pyramid = False


class SingleStreamSingleField(DualPRNet):
    """Ablation: the stacked pair through one stream, one field from the finest level
    (VoxelMorph-like)."""

    name = "dualprnet-ssf"
    label = "Single-stream, single field"
    dual_stream = False
    pyramid = False
