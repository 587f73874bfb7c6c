"""The training data: every training image read once, and the seeded pairs drawn from them.

Pairs are drawn with replacement by a seeded generator of their own, so a resumed training draws
the same pairs as an uninterrupted one. Prepared volumes are already cropped, so the protocol's
crop jitter is emulated by shifting each volume by its own random whole-voxel offset (edge
padded), drawn per volume as the official Dual-PRNet code does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from regbench.io import InputError
from regbench.transforms import pad_to_multiple

if TYPE_CHECKING:
    from regbench.data.dataset import Dataset

Offset = tuple[int, int, int]
Draw = tuple[int, int, Offset, Offset]
"""A training pair: moving index, fixed index, and each volume's own crop-jitter offset."""


class TrainingVolumes:
    """Every training-split image of a dataset, read once: ``(N, 1, X, Y, Z)`` float32 on the CPU.

    ``moving`` holds the images the networks see as moving images (thinned when
    ``slice_step > 1``), ``fixed`` the images as read.
    """

    def __init__(self, dataset: Dataset, slice_step: int = 1) -> None:
        subjects = dataset.train
        if len(subjects) < 2:
            raise InputError(f"{dataset.root}: the training split needs at least 2 subjects, "
                             f"has {len(subjects)}")
        images = [dataset.image(s) for s in tqdm(subjects, desc="read training images",
                                                   unit="image", leave=False)]
        self.fixed = torch.from_numpy(np.stack(images))[:, None]
        if slice_step > 1:
            from regbench.degrade import thin_slices

            self.moving = thin_slices(self.fixed, step=slice_step, axis=3)
        else:
            self.moving = self.fixed

    def __len__(self) -> int:
        return len(self.fixed)

    def batch(self, draws: list[Draw], jitter: int, multiple: int, device: torch.device,
              flips: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(moving, fixed)``, each ``(B, 1, *S)`` zero-padded to a multiple of ``multiple``.

        ``flips``: per draw, the spatial axis (0, 1 or 2) along which both images of the pair
        are flipped, or ``None`` (:meth:`PairSampler.flips`).
        """
        flips = flips or [None] * len(draws)
        moving = torch.cat([_flip(_shift(self.moving[m:m + 1], offset, jitter), axis)
                            for (m, _, offset, _), axis in zip(draws, flips, strict=True)])
        fixed = torch.cat([_flip(_shift(self.fixed[f:f + 1], offset, jitter), axis)
                           for (_, f, _, offset), axis in zip(draws, flips, strict=True)])
        pair, _ = pad_to_multiple(torch.cat([moving, fixed], 1).to(device), multiple)
        return pair[:, :1], pair[:, 1:]


class PairSampler:
    """Seeded ordered pairs of distinct subjects, each volume with its own crop-jitter offset."""

    def __init__(self, subjects: int, seed: int, jitter: int = 0) -> None:
        self.subjects = subjects
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)

    def draw(self, count: int) -> list[Draw]:
        """``count`` draws of ``(moving index, fixed index, moving offset, fixed offset)``, each
        offset ``(dx, dy, dz)`` in ``[-jitter, jitter]``."""
        draws = []
        for _ in range(count):
            moving = int(self.rng.integers(self.subjects))
            fixed = int(self.rng.integers(self.subjects - 1))
            fixed += fixed >= moving
            offsets = self.rng.integers(-self.jitter, self.jitter + 1, (2, 3)).tolist()
            draws.append((moving, fixed, tuple(offsets[0]), tuple(offsets[1])))
        return draws

    def flips(self, count: int) -> list[int | None]:
        """``count`` flips of a pair as the official code's ``RandomFlip(axes=[0, 1, 2])``: one
        of the three spatial axes or none (``None``), each with probability 1/4."""
        return [None if axis == 3 else int(axis) for axis in self.rng.integers(4, size=count)]


def _flip(volume: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``(B, C, *S)`` reversed along spatial ``axis`` (``None``: as it is)."""
    return volume if axis is None else volume.flip(2 + axis)


def _shift(volume: torch.Tensor, offset: Offset, jitter: int) -> torch.Tensor:
    """Translate ``(B, C, *S)`` by whole voxels, ``out[x] = in[x - offset]``, edge padded."""
    if jitter == 0:
        return volume
    padded = F.pad(volume, [jitter] * 6, mode="replicate")
    return padded[(..., *(slice(jitter - o, jitter - o + n)
                          for o, n in zip(offset, volume.shape[2:], strict=True)))]
