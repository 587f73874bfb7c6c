"""Validation during training: a fixed set of ordered pairs, never of the test split, registered
by the network as registration will and scored by the mean region Dice (both conventions)."""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from regbench.io import InputError

if TYPE_CHECKING:
    from regbench.data.dataset import Dataset
    from regbench.methods import LearnedMethod

log = logging.getLogger(__name__)


class Validation:
    """A fixed set of ordered validation pairs, read once, and their scoring during training.

    Args:
        dataset: the prepared dataset; pairs come from its ``val`` split when it has 2 subjects
            or more, else from its training split, never from its test split.
        count: how many ordered pairs, spread evenly over every ordered pair of those subjects.
        slice_step: moving images thinned as in training (:func:`regbench.degrade.thin_slices`).
    """

    def __init__(self, dataset: Dataset, count: int, slice_step: int = 1) -> None:
        self.pairs = validation_pairs(dataset, count)
        self.regions = dataset.regions
        subjects = sorted({s for pair in self.pairs for s in pair})
        self.images = {s: dataset.image(s) for s in subjects}
        self.labels = {s: dataset.label_map(s) for s in subjects}
        self.moving = self.images
        if slice_step > 1:
            from regbench.degrade import thin_slices

            self.moving = {s: thin_slices(image, step=slice_step, axis=1)
                           for s, image in self.images.items()}

    def run(self, method: LearnedMethod, step: int, elapsed: float) -> dict[str, Any]:
        """Register every pair with ``method.network`` (left in eval mode) and score it: the
        ``validation.csv`` row ``{step, time_s, dice_faim, dice_merged, eval_s}``."""
        from regbench import metrics
        from regbench.transforms import warp_labels

        began = time.perf_counter()
        faim, merged = [], []
        for moving, fixed in self.pairs:
            outputs, crop = method.run_network(self.moving[moving], self.images[fixed])
            field = outputs["field"][(slice(None), slice(None), *crop)].float().cpu()
            labels = torch.from_numpy(self.labels[moving])[None, None]
            warped = warp_labels(labels, field)[0, 0].numpy()
            faim.append(metrics.nanmean(
                metrics.region_dice_faim(warped, self.labels[fixed], self.regions).values()))
            merged.append(metrics.nanmean(
                metrics.region_dice_merged(warped, self.labels[fixed], self.regions).values()))
        return {"step": step, "time_s": elapsed, "dice_faim": float(np.mean(faim)),
                "dice_merged": float(np.mean(merged)), "eval_s": time.perf_counter() - began}


def validation_pairs(dataset: Dataset, count: int) -> list[tuple[str, str]]:
    """``count`` ordered pairs (moving, fixed) of the ``val`` split (the training split when the
    dataset has fewer than 2 validation subjects), evenly spread over all its ordered pairs.

    A ``count`` above the pairs there are gives them all, with a warning that says how many:
    one setting serves every dataset of a workflow, whose splits differ, so it is not refused;
    ``train.json`` records the number used."""
    split = "validation" if len(dataset.val) >= 2 else "training"
    subjects = dataset.val if split == "validation" else dataset.train
    if len(dataset.val) == 1:  # a split meant for validation that holds no pair
        log.warning("%s: the validation split holds 1 subject (%s), no pair: validating on "
                    "pairs of the training split instead, which measure fit, not "
                    "generalisation; give the val split 2 subjects or more", dataset.root,
                    dataset.val[0])
    overlap = sorted(set(subjects) & set(dataset.test))
    if overlap:
        raise InputError(f"{dataset.root}: subjects {overlap} are in the test split and in the "
                         "split validation draws from")
    pairs = list(itertools.permutations(subjects, 2))
    if count > len(pairs):
        log.warning("%s: validation_pairs %d, but the %s split's %d subjects give %d ordered "
                    "pairs: validating on all %d (train.json records %d)", dataset.root, count,
                    split, len(subjects), len(pairs), len(pairs), len(pairs))
    if count >= len(pairs):
        return pairs
    return [pairs[i] for i in np.linspace(0, len(pairs) - 1, count).round().astype(int)]
