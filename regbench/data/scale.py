"""The resolution ``scale`` of a dataset, checked by one rule per kind of dataset. Pure Python.

A scale is a fraction of the paper's 160x192x160 crop of 1 mm (:data:`~regbench.data.protocol.
CROP_SHAPE`): 1 is that crop, 0.5 gives 80x96x80 voxels of 2 mm. Which scales a dataset allows
depends on how it reaches the coarser grid, so each dataset names its rule
(:attr:`regbench.data.registry.Dataset.scale_rule`):

* :data:`BLOCKS` (the real datasets): ``1 / k`` for a whole ``k`` that divides 160, 192 and 160,
  because their 1 mm crop is downsampled by whole ``k x k x k`` blocks
  (:mod:`regbench.data.resolution`): 1, 0.5, 0.25, 0.125, 0.0625 or 0.03125.
* :data:`WHOLE_VOXELS` (the synthetic demo): any scale that splits the crop into whole voxels
  with at least :data:`MIN_VOXELS` a side, e.g. 0.75, because the demo is drawn on its grid
  directly and averages over blocks of any size (PyTorch's adaptive pooling).

:func:`check_scale` is the one check: the workflow calls it when it plans (so a bad scale fails
at ``snakemake -n``), the CLI and the preparers when they run. This module imports nothing
beyond the standard library and :mod:`regbench.data.protocol`, so the workflow can read it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from regbench.data import protocol

BLOCKS = "blocks"
"""Scale rule of a dataset downsampled by whole blocks of its 1 mm crop: ``1 / k``."""
WHOLE_VOXELS = "whole voxels"
"""Scale rule of a dataset drawn on its grid directly: whole voxels, at least 20 a side."""
RULES: tuple[str, ...] = (BLOCKS, WHOLE_VOXELS)

MIN_VOXELS = 20
"""Fewest voxels along an axis under :data:`WHOLE_VOXELS`: below 8 mm voxels the hippocampus is
a handful of voxels."""

_CROP = "x".join(str(n) for n in protocol.CROP_SHAPE)


def block_factors() -> list[int]:
    """Every whole ``k`` that divides each axis of the paper's crop (the :data:`BLOCKS` scales
    are their ``1 / k``)."""
    return [k for k in range(1, min(protocol.CROP_SHAPE) + 1)
            if all(n % k == 0 for n in protocol.CROP_SHAPE)]


def check_scale(scale: Any, rule: str) -> float:
    """``scale`` as a float, if ``rule`` allows it.

    Raises:
        ValueError: ``scale`` is not a number in (0, 1] that ``rule`` allows; the message starts
            with ``scale=<value>`` and names the scales to use instead.
    """
    if rule not in RULES:
        raise ValueError(f"unknown scale rule {rule!r} (one of {', '.join(map(repr, RULES))})")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) \
            or not math.isfinite(float(scale)) or not 0 < float(scale) <= 1:
        raise ValueError(f"scale={scale!r}: must be a number in (0, 1] ({_examples(rule)}; 1 = "
                         f"the paper's {_CROP} of 1 mm)")
    scale = float(scale)
    if rule == BLOCKS:
        factor = round(1 / scale)
        if factor not in block_factors() or abs(factor * scale - 1) > 1e-9:
            raise ValueError(f"scale={scale!r}: this dataset is downsampled by whole blocks of "
                             f"the {_CROP} crop; use one of {_examples(rule)}")
        return scale
    sizes = [n * scale for n in protocol.CROP_SHAPE]
    if min(sizes) < MIN_VOXELS - 1e-9:
        raise ValueError(f"scale={scale!r} is too small (a {min(sizes):g}-voxel axis); the "
                         f"smallest is {MIN_VOXELS / min(protocol.CROP_SHAPE):g} ({MIN_VOXELS} "
                         "voxels a side)")
    if any(abs(s - round(s)) > 1e-6 for s in sizes):
        raise ValueError(f"scale={scale!r} does not split the {_CROP} crop into whole voxels "
                         f"({' x '.join(f'{s:g}' for s in sizes)}); use e.g. {_examples(rule)}")
    return scale


def grid_shape(scale: float) -> tuple[int, int, int]:
    """The ``(X, Y, Z)`` voxels of a prepared dataset at ``scale``: the crop at that scale (known
    when the workflow plans, before any data is prepared)."""
    return tuple(round(n * scale) for n in protocol.CROP_SHAPE)


def slice_step_problem(step: int, n: int) -> str | None:
    """What is wrong with keeping every ``step``-th of ``n`` slices, or ``None``: a step that
    keeps fewer than 2 leaves nothing to interpolate between (the volume becomes one slice
    repeated). The workflow asks when it plans, :func:`regbench.degrade.check_slice_step` when a
    command runs."""
    if 1 <= step < n:
        return None
    kept = len(range(0, n, max(step, 1)))
    return (f"slice step {step}: keeps {kept} of the {n} slices along axis 1; give a step "
            f"from 1 to {n - 1}")


def block_factor(scale: Any) -> int:
    """The block size ``k`` of a :data:`BLOCKS` scale ``1 / k``.

    Raises:
        ValueError: as :func:`check_scale` under :data:`BLOCKS`.
    """
    return round(1 / check_scale(scale, BLOCKS))


def _examples(rule: str) -> str:
    if rule == BLOCKS:
        return ", ".join(f"{1 / k:g}" for k in block_factors())
    return "1, 0.5, 0.25 or 0.125"
