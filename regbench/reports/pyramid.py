"""The pyramid fields of a trained network on one pair, for Fig. 2 (:func:`plot_pyramid`)."""

from __future__ import annotations

import numpy as np
import torch

from regbench.methods import LearnedMethod
from regbench.reports.figures import resolution_name
from regbench.transforms import resize_field


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
