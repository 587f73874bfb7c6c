"""Training losses shared by the learned methods (docs/protocol.md: 1 - local squared NCC,
window 9^3, plus the L2 norm of the spatial gradients of the predicted fields).

Thin wrappers of neurite's modules (``voxelmorph.nn.losses`` is not implemented in 0.3.4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from neurite.nn.modules import NCC, SpatialGradient


class NCCLoss(torch.nn.Module):
    """``1 - mean local squared NCC`` over windows of ``window`` voxels a side.

    Inputs ``(B, C, *S)``; returns a scalar.
    """

    def __init__(self, window: int = 9) -> None:
        super().__init__()
        self.ncc = NCC(window_size=window, reduction="mean")

    def forward(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return 1 - self.ncc(warped.float(), fixed.float()).mean()


class GradientLoss(torch.nn.Module):
    """Mean squared forward difference of a displacement field ``(B, 3, *S)``; returns a scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.gradient = SpatialGradient(penalty="l2", reduction="mean")

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        return self.gradient(field.float())


def smoothness(fields: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum of :class:`GradientLoss` over fields (e.g. every pyramid level's residual field)."""
    gradient = GradientLoss()
    return sum(gradient(field) for field in fields)
