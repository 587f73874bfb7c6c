"""Training losses shared by the learned methods (docs/protocol.md): local NCC and the smoothness
penalty.

Both are the formulas of the authors' code, Dual-PRNet's (``op/losses.py`` of the official
repository) and VoxelMorph's (``voxelmorph.torch.losses`` of voxelmorph 0.2), which agree:

* similarity ``1 - mean_x cc(x)``, with ``cc`` the squared correlation coefficient of the two
  images over the ``w^3`` window centred on ``x`` (zero padding at the border);
* smoothness ``(mean (d_0 u)^2 + mean (d_1 u)^2 + mean (d_2 u)^2) / 3`` over forward
  differences of a displacement field ``u``.

The window sums are differences of cumulative sums along each axis rather than the authors' ``w^3``
convolution: the same sums, about 30 times faster on a CPU. The running sums are float64, so each
window sum is as exact as float32 can hold it (in float32 the running sums' rounding grows with
the volume). The local variances are clamped at zero, their true minimum: wherever an image is
locally constant (as border padding makes a warped image) the formula subtracts nearly equal
numbers, rounding can leave a slightly negative variance, the denominator ``var * var + eps``
then nears zero and ``cc`` explodes, and training learns to exploit it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

NCC_EPS = 1e-5
"""Added to the product of the local variances, as in the authors' code."""


def window_sum(volume: torch.Tensor, window: int) -> torch.Tensor:
    """Sum of ``volume (B, C, X, Y, Z)`` over the ``window^3`` cube centred on each voxel.

    Voxels outside the volume count as zero, as with the zero-padded convolution of the
    authors' code. ``window`` must be odd. Returns ``(B, C, X, Y, Z)`` in ``volume``'s dtype,
    accumulated in float64.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    half = window // 2
    dtype, volume = volume.dtype, volume.double()
    for axis in (2, 3, 4):
        size = volume.shape[axis]
        padding = [0, 0] * 3
        padding[2 * (4 - axis):2 * (4 - axis) + 2] = [half + 1, half]
        running = F.pad(volume, padding).cumsum(axis)
        volume = running.narrow(axis, window, size) - running.narrow(axis, 0, size)
    return volume.to(dtype)


def local_ncc(warped: torch.Tensor, fixed: torch.Tensor, window: int = 9) -> torch.Tensor:
    """Squared local correlation coefficient ``(B, C, X, Y, Z)`` of two ``(B, C, X, Y, Z)`` images.

    In ``[0, 1]`` up to rounding; computed in float32 (see the module docstring).
    """
    if warped.shape != fixed.shape:
        raise ValueError(f"shapes differ: {tuple(warped.shape)} vs {tuple(fixed.shape)}")
    a, b = warped.float(), fixed.float()
    channels = a.shape[1]
    sums = window_sum(torch.cat([a, b, a * a, b * b, a * b], 1), window)
    sum_a, sum_b, sum_aa, sum_bb, sum_ab = sums.split(channels, 1)
    size = float(window**3)
    cross = sum_ab - sum_a * sum_b / size
    var_a = (sum_aa - sum_a * sum_a / size).clamp_min(0)
    var_b = (sum_bb - sum_b * sum_b / size).clamp_min(0)
    return cross * cross / (var_a * var_b + NCC_EPS)


class NCCLoss(torch.nn.Module):
    """``1 - mean local squared NCC`` over windows of ``window`` voxels a side.

    Inputs ``(B, C, *S)``; returns a scalar.
    """

    def __init__(self, window: int = 9) -> None:
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"NCC window must be a positive odd number, got {window}")
        self.window = int(window)

    def forward(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return 1 - local_ncc(warped, fixed, self.window).mean()


class GradientLoss(torch.nn.Module):
    """Mean squared forward difference of a displacement field ``(B, 3, *S)``, averaged over the
    three axes; returns a scalar."""

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        field = field.float()
        return sum((field.diff(dim=axis) ** 2).mean() for axis in (2, 3, 4)) / 3


def smoothness(fields: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum of :class:`GradientLoss` over fields (e.g. every pyramid level's residual field)."""
    gradient = GradientLoss()
    return sum(gradient(field) for field in fields)
