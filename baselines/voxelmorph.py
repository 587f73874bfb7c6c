"""VoxelMorph (Balakrishnan et al., TMI 2019) through ``voxelmorph.nn.models.VxmPairwise``.

The network is the PyTorch rewrite's ``VxmPairwise`` as shipped (voxelmorph 0.3.4): a neurite
``BasicUNet`` on the concatenated (moving, fixed) pair, a 3x3x3 flow layer initialised near zero,
and, with ``integration_steps > 0`` (its default, 5), scaling-and-squaring integration of the
predicted stationary velocity field into a diffeomorphic displacement.

Conventions: ``VxmPairwise``'s displacement is in voxel units, channel ``c`` along tensor axis
``c``, added to an ``ij`` mesh grid and sampled with ``grid_sample(align_corners=True)``, which
maps voxel coordinate ``p`` exactly onto voxel ``p``: that is the suite's pull convention
(:mod:`regbench.transforms`), so the field is used as returned. Its own warp pads with zeros; the
suite's :func:`regbench.transforms.warp` with ``padding_mode="zeros"`` reproduces it (tested).

Training (:func:`regbench.training.train`): ``1 - local squared NCC`` (window ``ncc_window``)
of the network's own warped moving image against the fixed image, plus ``smoothness_weight``
times the mean squared spatial gradient of the velocity field (of the displacement when not
integrating) -- the field VoxelMorph's own training regularises. Default weight 1.0: the
VoxelMorph paper's choice for NCC.

The default 5-level U-Net halves the grid 5 times, so input sizes are padded to multiples of
``2 ** len(nb_features)`` (32 by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from voxelmorph.nn.models import VxmPairwise

from regbench.losses import GradientLoss, NCCLoss
from regbench.methods import LearnedMethod


class VoxelMorphNetwork(nn.Module):
    """``VxmPairwise`` with the suite's network interface.

    ``forward(moving, fixed)`` takes ``(B, 1, *S)`` tensors and returns ``{"field": (B, 3, *S)
    displacement in voxel units, "warped": (B, 1, *S) moving image warped by VxmPairwise's own
    spatial transformer, "velocity": (B, 3, *S) the field before integration}``.
    """

    def __init__(self, nb_features: Sequence[int] = (16, 16, 16, 16, 16),
                 integration_steps: int = 5) -> None:
        super().__init__()
        self.vxm = VxmPairwise(ndim=3, source_channels=1, target_channels=1,
                               nb_features=list(nb_features),
                               integration_steps=integration_steps)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor]:
        velocity = self.vxm(moving, fixed, return_field_type="velocity")
        field = (self.vxm.velocity_field_integrator(velocity) if self.vxm.integration_steps > 0
                 else velocity)
        return {"field": field, "warped": self.vxm.spatial_transformer(moving, field),
                "velocity": velocity}


class VoxelMorph(LearnedMethod):
    """VoxelMorph: a U-Net predicting a (diffeomorphic) field, trained unsupervised."""

    name = "voxelmorph"
    label = "VoxelMorph"
    defaults: ClassVar[dict[str, Any]] = {
        "nb_features": [16, 16, 16, 16, 16],
        "integration_steps": 5,
        "ncc_window": 9,
        "smoothness_weight": 1.0,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        features = self.options["nb_features"]
        if not features or not all(isinstance(f, int) and f > 0 for f in features):
            raise ValueError(f"nb_features must be a non-empty list of positive integers, "
                             f"got {features!r}")
        if int(self.options["integration_steps"]) < 0:
            raise ValueError("integration_steps must be >= 0")
        self.size_multiple = 2 ** len(features)

    def build_network(self) -> VoxelMorphNetwork:
        return VoxelMorphNetwork(self.options["nb_features"],
                                 int(self.options["integration_steps"]))

    def loss(self, outputs: dict[str, Any], moving: torch.Tensor,
             fixed: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        similarity = NCCLoss(int(self.options["ncc_window"]))(outputs["warped"], fixed)
        smoothness = GradientLoss()(outputs["velocity"])
        loss = similarity + float(self.options["smoothness_weight"]) * smoothness
        return loss, {"ncc": similarity.item(), "grad": smoothness.item()}
