"""Reduced resolution of the paper's crop: the grid at a scale, and block downsampling of images
and label maps for the real datasets (``regbench prepare ... --scale 0.5``).

At ``scale = 1 / k`` a coarse voxel is a ``k x k x k`` block of the 1 mm crop, placed at the
block's mean position (so the grid's centre stays where it was). Images are area-averaged (the
mean of each block); label maps take each block's most frequent label, ties going to the label
with the fewest voxels in the whole map, so that small structures survive where a block is split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from regbench.data import protocol
from regbench.data import scale as scale_rules
from regbench.io import InputError


def crop_grid(scale: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, affine (4, 4))`` of the paper's 160x192x160 crop at ``scale`` (unchecked).

    ``scale=1`` is the crop of the FSL MNI152 1 mm grid; a coarser voxel is the block of
    ``1 / scale`` fine voxels per axis, placed at the block's mean position.
    """
    shape = scale_rules.grid_shape(scale)
    crop = np.eye(4)
    crop[:3, 3] = protocol.crop_start(protocol.MNI_SHAPE)
    fine = np.asarray(protocol.MNI_AFFINE, dtype=float) @ crop
    coarse = np.eye(4)
    coarse[:3, :3] /= scale
    coarse[:3, 3] = 0.5 / scale - 0.5  # centre of the first block, in fine voxels
    return shape, fine @ coarse


def block_factor(scale: Any) -> int:
    """The block size ``k`` of ``scale = 1 / k`` for a real dataset
    (:func:`regbench.data.scale.check_scale`, rule :data:`~regbench.data.scale.BLOCKS`).

    Raises:
        InputError: unless ``scale`` is ``1 / k`` for a whole ``k`` that divides 160, 192 and
            160 (1, 0.5, 0.25, 0.125, 0.0625 or 0.03125).
    """
    try:
        return scale_rules.block_factor(scale)
    except ValueError as err:
        raise InputError(str(err)) from None


def _blocks(volume: np.ndarray, factor: int) -> np.ndarray:
    """``(X, Y, Z)`` -> ``(X/k, Y/k, Z/k, k**3)``: each coarse voxel's block of fine voxels."""
    x, y, z = (n // factor for n in volume.shape)
    if (x * factor, y * factor, z * factor) != volume.shape:
        raise ValueError(f"shape {volume.shape} is not a whole number of {factor}-voxel blocks")
    blocks = volume.reshape(x, factor, y, factor, z, factor).transpose(0, 2, 4, 1, 3, 5)
    return blocks.reshape(x, y, z, factor**3)


def area_average(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor**3`` block of ``image (X, Y, Z)``, as float32 (summed in float64).

    The image's mean is kept exactly (up to float32 rounding).
    """
    if factor == 1:
        return np.asarray(image, dtype=np.float32)
    return _blocks(np.asarray(image, dtype=np.float64), factor).mean(axis=-1).astype(np.float32)


def block_mode(labels: np.ndarray, factor: int) -> np.ndarray:
    """Most frequent label of each ``factor**3`` block of ``labels (X, Y, Z)``, as int32.

    Ties go to the label with the fewest voxels in the whole map (background, the largest, wins
    only a strict majority over every structure in its block), so thin and small structures are
    kept where they share blocks with larger ones.
    """
    labels = np.asarray(labels)
    if factor == 1:
        return labels.astype(np.int32)
    blocks = _blocks(labels, factor)
    values, totals = np.unique(labels, return_counts=True)
    best = np.zeros(blocks.shape[:3], dtype=np.int32)
    # int32: a block of 32**3 voxels counts up to 32,768, one more than int16 holds
    best_count = np.zeros(blocks.shape[:3], dtype=np.int32)
    for value in values[np.argsort(totals, kind="stable")]:  # smallest first: it keeps ties
        count = (blocks == value).sum(axis=-1, dtype=np.int32)
        better = count > best_count
        best[better] = value
        best_count[better] = count[better]
    return best


def resampling_record(factor: int) -> dict[str, Any] | None:
    """What a preparation at ``scale = 1 / factor`` did, for the manifest's ``grid`` (``None``
    at full resolution)."""
    if factor == 1:
        return None
    block = "x".join([str(factor)] * 3)
    return {
        "scale": 1 / factor,
        "block_voxels": [factor] * 3,
        "images": f"mean of each {block} block of the 1 mm crop (area average)",
        "labels": (f"most frequent label of each {block} block; ties go to the label with the "
                   "fewest voxels in the whole map"),
    }


def source_note(factor: int) -> str:
    """What a dataset's ``source`` adds at ``1/factor`` of the paper's resolution (or nothing)."""
    return f", downsampled to scale 1/{factor}" if factor > 1 else ""


def downsample(image: np.ndarray, labels: np.ndarray, factor: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """One subject's 1 mm crop ``(image, labels)`` at ``scale = 1 / factor``."""
    return area_average(image, factor), block_mode(labels, factor)
