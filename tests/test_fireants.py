"""baselines/fireants.py: FireANTs on the CPU (its plain PyTorch path), turned into the suite's
field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fireants", reason="fireants is not installed: pip install -e '.[baselines]'")

from regbench.baselines.fireants import FireANTs, displacement_from_grid  # noqa: E402


def test_grid_coordinates_become_voxel_displacements():
    shape = (5, 6, 7)
    grid = torch.stack(torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape),
                                      indexing="ij"))
    moved = grid + torch.tensor([1.0, -2.0, 0.5]).view(3, 1, 1, 1)
    sizes = torch.tensor(shape, dtype=torch.float32).view(3, 1, 1, 1)
    normalised = (2 * moved / (sizes - 1) - 1).permute(3, 2, 1, 0)  # (Z, Y, X, xyz)
    field = displacement_from_grid(normalised, shape)
    assert np.allclose(field, np.broadcast_to(np.array([1.0, -2.0, 0.5])[:, None, None, None],
                                              (3, *shape)), atol=1e-5)


def test_fireants_runs_on_the_cpu():
    """Its plain PyTorch path, without the fused CUDA operations: a short run on a small pair."""
    torch.set_num_threads(1)
    shape = (40, 48, 40)
    grid = np.indices(shape, dtype=np.float32)

    def blob(centre: tuple[int, int, int]) -> np.ndarray:
        return np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) / 30)

    fixed, moving = blob((20, 24, 20)), blob((21, 23, 20))
    method = FireANTs(device="cpu", affine_scales=[2, 1], affine_iterations=[3, 3],
                      iterations=[3, 3, 3])
    assert method.device == torch.device("cpu")
    field = method.register(moving, fixed, (2.0, 2.0, 2.0))
    assert field.shape == (3, *shape) and np.isfinite(field).all()
    assert np.abs(field).max() > 1e-3


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="iterations"):
        FireANTs(iterations=[5, 5])
    with pytest.raises(ValueError, match="device"):
        FireANTs(device="gpu0")
