"""Simulated thick-slice acquisitions (the paper's large slice spacing experiment).

Only every ``step``-th slice of a volume is kept along one axis and the volume is linearly
interpolated back onto the full grid, so a method sees the same grid with less information
(LPBA40: 192 slices along axis 1 -> 24 kept with ``step=8``).
"""

from __future__ import annotations

import numpy as np
import torch

from regbench.data.scale import slice_step_problem
from regbench.io import InputError


def check_slice_step(step: int, n: int) -> None:
    """Refuse a slice step that keeps fewer than 2 of ``n`` slices
    (:func:`regbench.data.scale.slice_step_problem`).

    Raises:
        InputError: ``step`` is below 1 or at least ``n``.
    """
    problem = slice_step_problem(step, n)
    if problem:
        raise InputError(problem)


def kept_slices(n: int, step: int) -> list[int]:
    """Indices of the slices :func:`thin_slices` keeps along an axis of ``n`` slices."""
    if step < 1:
        raise ValueError(f"slice step must be >= 1, got {step}")
    return list(range(0, n, step))


def thin_slices(volume: np.ndarray | torch.Tensor, step: int = 8,
                axis: int = 1) -> np.ndarray | torch.Tensor:
    """Keep slices ``0, step, 2 step, ...`` of ``volume`` along ``axis``; interpolate the rest.

    Slice ``i`` between kept slices ``k`` and ``k + step`` becomes
    ``v[k] + (i - k) / step * (v[k + step] - v[k])``; slices after the last kept one repeat it
    (there is nothing beyond it to interpolate towards). Kept slices are returned unchanged.
    ``volume`` is any-dimensional NumPy array or torch tensor; the result has its type, shape and
    floating dtype (integer input gives float32).
    """
    n = volume.shape[axis]
    kept = kept_slices(n, step)
    index = np.arange(n)
    lower = index - index % step
    upper = np.minimum(lower + step, kept[-1])
    weight = ((index - lower) / step) * (lower + step <= kept[-1])
    weight_shape = [1] * volume.ndim
    weight_shape[axis] = n
    if isinstance(volume, torch.Tensor):
        if not volume.is_floating_point():
            volume = volume.float()
        lo = volume.index_select(axis, torch.as_tensor(lower, device=volume.device))
        hi = volume.index_select(axis, torch.as_tensor(upper, device=volume.device))
        w = torch.as_tensor(weight, dtype=volume.dtype, device=volume.device).view(weight_shape)
        return lo + w * (hi - lo)
    volume = np.asarray(volume)
    if not np.issubdtype(volume.dtype, np.floating):
        volume = volume.astype(np.float32)
    lo, hi = np.take(volume, lower, axis=axis), np.take(volume, upper, axis=axis)
    return lo + weight.astype(volume.dtype).reshape(weight_shape) * (hi - lo)
