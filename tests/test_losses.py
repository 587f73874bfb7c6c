"""The training losses (regbench/losses.py) against the authors' formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from regbench.losses import GradientLoss, NCCLoss, local_ncc, smoothness, window_sum


def authors_ncc(warped: torch.Tensor, fixed: torch.Tensor, window: int) -> torch.Tensor:
    """``op/losses.py`` of the official Dual-PRNet code (== voxelmorph 0.2's NCC), in float64."""
    kernel = torch.ones(1, 1, window, window, window, dtype=torch.float64)
    sums = [F.conv3d(v, kernel, padding=window // 2)
            for v in (warped, fixed, warped * warped, fixed * fixed, warped * fixed)]
    size = window**3
    mean_i, mean_j = sums[0] / size, sums[1] / size
    cross = sums[4] - mean_j * sums[0] - mean_i * sums[1] + mean_i * mean_j * size
    var_i = sums[2] - 2 * mean_i * sums[0] + mean_i * mean_i * size
    var_j = sums[3] - 2 * mean_j * sums[1] + mean_j * mean_j * size
    return 1 - (cross * cross / (var_i * var_j + 1e-5)).mean()


@pytest.mark.parametrize("window", [3, 9])
def test_ncc_is_the_authors_formula(window):
    generator = torch.Generator().manual_seed(0)
    fixed = torch.rand(2, 1, 20, 24, 18, generator=generator, dtype=torch.float64)
    warped = fixed + 0.3 * torch.rand(fixed.shape, generator=generator, dtype=torch.float64)
    ours = NCCLoss(window)(warped.float(), fixed.float())
    assert ours.dtype == torch.float32
    assert abs(float(ours) - float(authors_ncc(warped, fixed, window))) < 1e-6
    kernel = torch.ones(1, 1, 5, 5, 5, dtype=torch.float64)
    assert torch.allclose(window_sum(fixed[:1], 5), F.conv3d(fixed[:1], kernel, padding=2))


def test_ncc_of_a_constant_region_is_zero_not_a_rounding_artefact():
    """Border padding makes constant, nonzero regions in a warped image. Rounding leaves their
    variance slightly off zero, possibly negative, and the ratio then explodes (a short training
    run learnt to exploit it): variances are clamped at zero, running sums are float64."""
    generator = torch.Generator().manual_seed(0)
    warped = torch.full((1, 1, 64, 64, 64), 0.7)
    warped[:, :, :24, :24, :24] = torch.rand(24, 24, 24, generator=generator) * 100
    fixed = torch.rand(warped.shape, generator=generator)
    kernel = torch.ones(1, 1, 9, 9, 9, dtype=torch.float64)
    exact = F.conv3d(warped.double(), kernel, padding=4)
    assert torch.allclose(window_sum(warped, 9).double(), exact, rtol=1e-6)
    cc = local_ncc(warped, fixed)
    # Constant over every window there (away from the zero padding): no correlation.
    assert float(cc[..., 32:52, 32:52, 32:52].abs().max()) < 1e-4
    assert float(cc.min()) >= 0 and float(cc.max()) <= 1 + 1e-5


def test_window_must_be_odd():
    with pytest.raises(ValueError, match="odd"):
        NCCLoss(4)


def test_gradient_loss_is_the_mean_squared_difference_averaged_over_axes():
    field = torch.zeros(1, 3, 4, 5, 6)
    field[:, 0] = torch.arange(4.0).view(4, 1, 1) * 2  # slope 2 along axis 0 only
    assert float(GradientLoss()(field)) == pytest.approx(4 / 3 / 3)  # (2^2 on 1 of 3 channels)/3
    assert float(smoothness([field, field])) == pytest.approx(2 * 4 / 9)
