"""The pyramid fields of a trained network on one pair, for Fig. 2 (:func:`plot_pyramid`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from regbench.io import InputError
from regbench.methods import LearnedMethod, get_method
from regbench.reports.figures import resolution_name
from regbench.transforms import resize_field


def load_learned(checkpoint: str | os.PathLike,
                 device: torch.device | str = "cpu") -> LearnedMethod:
    """The trained method of a checkpoint written by the trainer (its method name inside)."""
    from regbench.training.checkpoint import load_checkpoint  # the trainer is only needed here

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint}: checkpoint not found")
    name = load_checkpoint(checkpoint)["method"]
    try:
        cls = get_method(name)
    except KeyError as err:
        raise InputError(f"{checkpoint}: {err.args[0]}") from None
    if not issubclass(cls, LearnedMethod):
        raise InputError(f"{checkpoint}: method {name!r} is not a learned method")
    return cls.from_checkpoint(checkpoint, device)


@torch.no_grad()
def pyramid_fields(method: LearnedMethod, moving: np.ndarray,
                   fixed: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    """Run ``method``'s network on ``moving``/``fixed`` (``(X, Y, Z)``, one grid).

    Returns each level's accumulated field ``(3, X_l, Y_l, Z_l)`` (voxels of its level, coarse
    to fine) and the level's resolution name ("1/16", ...). When the pair had to be padded to
    the network's size multiple, each field is first resized to the padded full grid and
    cropped back, so it comes at full resolution (and its name stays the level's).
    """
    outputs, crop = method.run_network(moving, fixed)
    if "accumulated" not in outputs:
        raise ValueError(f"method {method.name!r}: its network returns no 'accumulated' "
                         "pyramid fields")
    full_shape = tuple(outputs["field"].shape[2:])  # the padded grid
    fields, names = [], []
    for field in outputs["accumulated"]:
        names.append(resolution_name(full_shape, tuple(field.shape[2:])))
        if full_shape != tuple(moving.shape):
            field = resize_field(field.float(), full_shape)[(slice(None), slice(None), *crop)]
        fields.append(field[0].float().cpu().numpy())
    return fields, names
