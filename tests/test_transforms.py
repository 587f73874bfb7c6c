"""Warping, composition, inversion and resizing of displacement fields (regbench.transforms)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from regbench.transforms import (
    compose,
    identity_grid,
    integrate_velocity,
    resize_field,
    warp,
    warp_labels,
)

torch.set_num_threads(1)

SHAPE = (24, 28, 20)
MARGIN = 4  # voxels next to the faces, where border padding makes composition inexact
INTERIOR = (..., slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))


def random_image(batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, *SHAPE, generator=generator)


def smooth_image(batch: int = 2) -> torch.Tensor:
    """A band-limited image (range about 3), on which trilinear interpolation is accurate."""
    x, y, z = identity_grid(SHAPE)[0]
    image = (torch.sin(2 * math.pi * x / SHAPE[0]) * torch.cos(2 * math.pi * y / SHAPE[1])
             + 0.5 * torch.sin(2 * math.pi * z / SHAPE[2]))
    return image.expand(batch, 1, *SHAPE).clone()


def smooth_field(seed: int, amplitude: float, batch: int = 2) -> torch.Tensor:
    """A random field interpolated from a 3^3 grid; its largest component is ``amplitude``."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3, 3, 3, 3, generator=generator)
    field = F.interpolate(coarse, size=SHAPE, mode="trilinear", align_corners=False)
    return field * amplitude / field.abs().max()


def translation(shift: int, axis: int, batch: int = 1) -> torch.Tensor:
    field = torch.zeros(batch, 3, *SHAPE)
    field[:, axis] = shift
    return field


def test_zero_field_is_exactly_the_identity():
    image = random_image()
    zero = torch.zeros(2, 3, *SHAPE)
    assert torch.equal(warp(image, zero), image)
    assert torch.equal(warp(image, zero, mode="nearest"), image)
    assert torch.equal(warp(image, zero, padding_mode="zeros"), image)
    labels = torch.randint(0, 7, (2, 1, *SHAPE), dtype=torch.int32)
    assert torch.equal(warp_labels(labels, zero), labels)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("shift", [3, -2])
def test_integer_translation_moves_by_exactly_that_many_voxels(axis, shift):
    image = random_image(batch=1)
    warped = warp(image, translation(shift, axis))
    n = SHAPE[axis]
    # Pull convention: warped[i] = image[i + shift] wherever i + shift is inside the volume.
    inside = slice(max(0, -shift), n - max(0, shift))
    source = slice(inside.start + shift, inside.stop + shift)
    assert torch.equal(warped.narrow(axis + 2, inside.start, inside.stop - inside.start),
                       image.narrow(axis + 2, source.start, source.stop - source.start))
    assert not torch.equal(warped, image)
    # With zero padding the voxels pulled from outside are 0; with border padding, the edge slice.
    outside = [i for i in range(n) if not inside.start <= i < inside.stop]
    zeros = warp(image, translation(shift, axis), padding_mode="zeros")
    assert torch.equal(zeros.index_select(axis + 2, torch.tensor(outside)),
                       torch.zeros_like(zeros.index_select(axis + 2, torch.tensor(outside))))
    edge = n - 1 if shift > 0 else 0
    assert torch.equal(warped.index_select(axis + 2, torch.tensor(outside)),
                       image.index_select(axis + 2, torch.tensor([edge] * len(outside))))


def test_warp_labels_keeps_integer_labels_from_the_original_set():
    generator = torch.Generator().manual_seed(3)
    label_set = torch.tensor([0, 21, 22, 165, 1035], dtype=torch.int32)
    labels = label_set[torch.randint(0, 5, (2, 1, *SHAPE), generator=generator)]
    warped = warp_labels(labels, smooth_field(4, 3.5))
    assert warped.dtype == labels.dtype
    assert set(warped.unique().tolist()) <= set(label_set.tolist())
    # A half-voxel field rounds to a neighbour; a non-trivial field actually moves labels.
    assert not torch.equal(warped, labels)


def test_warp_labels_is_nearest_neighbour():
    labels = torch.zeros(1, 1, *SHAPE, dtype=torch.int64)
    labels[0, 0, 10] = 5
    labels[0, 0, 11] = 9
    field = translation(0, 0)
    field[:, 0] = 0.4  # x + 0.4 rounds back to x
    assert torch.equal(warp_labels(labels, field), labels)
    field[:, 0] = 0.6  # x + 0.6 rounds to x + 1
    assert torch.equal(warp_labels(labels, field)[0, 0, 10], labels[0, 0, 11])


def test_scaling_and_squaring_inverse_composes_to_identity():
    """exp(v) o exp(-v) ~ identity; the residual is the interpolation error of 7 squarings."""
    velocity = smooth_field(0, 2.0)
    forward, backward = integrate_velocity(velocity), integrate_velocity(-velocity)
    assert forward.abs().max() > 1.0  # a real deformation, not a near-identity one
    for outer, inner in ((forward, backward), (backward, forward)):
        residual = compose(outer, inner)[INTERIOR]
        # Tolerance: 0.2 voxel at worst, 0.02 voxel on average, for displacements up to ~2 voxels.
        assert residual.norm(dim=1).max() < 0.2
        assert residual.abs().mean() < 0.02


def test_fixed_point_inverse_composes_to_identity():
    """v = -u(x + v) solved by iteration: x -> x + v -> (x + v) + u(x + v) = x."""
    field = smooth_field(1, 2.0)
    inverse = torch.zeros_like(field)
    for _ in range(30):
        inverse = -warp(field, inverse)
    assert compose(field, inverse).abs().max() < 1e-3  # voxels, everywhere


def test_compose_is_warping_twice():
    image = smooth_image()
    outer, inner = smooth_field(1, 3.0), smooth_field(2, 3.0)
    twice = warp(warp(image, outer), inner)
    error = (warp(image, compose(outer, inner)) - twice)[INTERIOR].abs().max()
    wrong_order = (warp(image, compose(inner, outer)) - twice)[INTERIOR].abs().max()
    assert error < 0.05  # image range ~3: within 2 %, the price of interpolating twice
    assert wrong_order > 4 * error  # the test tells the two orders apart


def test_compose_of_integer_translations_is_exact():
    image = random_image(batch=1)
    composed = compose(translation(2, 0), translation(-3, 1))
    assert torch.equal(composed[:, 0], torch.full((1, *SHAPE), 2.0))
    assert torch.equal(composed[:, 1], torch.full((1, *SHAPE), -3.0))
    twice = warp(warp(image, translation(2, 0)), translation(-3, 1))
    assert torch.equal(warp(image, composed)[..., :-2, 3:, :], twice[..., :-2, 3:, :])


def test_resize_field_doubles_a_constant_field_exactly():
    field = torch.empty(2, 3, 6, 7, 5)
    field[:, 0], field[:, 1], field[:, 2] = 1.5, -0.75, 3.0
    resized = resize_field(field, (12, 14, 10))
    assert resized.shape == (2, 3, 12, 14, 10)
    for component, value in enumerate((1.5, -0.75, 3.0)):
        assert torch.equal(resized[:, component], torch.full((2, 12, 14, 10), 2 * value))
    assert torch.equal(resize_field(field, (6, 7, 5)), field)
    # Anisotropic resizing scales each component by its own axis' factor.
    corner = resize_field(field, (12, 7, 15))[:, :, 0, 0, 0]
    assert torch.equal(corner, torch.tensor([[3.0, -0.75, 9.0]] * 2))


def test_resize_field_keeps_a_linear_field_consistent():
    """A field linear in space, sampled at n and upsampled to 2n, equals the same physical
    displacement sampled directly on the fine grid (away from the clamped border voxels)."""
    n = (8, 6, 10)
    coarse_grid = identity_grid(n, dtype=torch.float64)
    matrix = torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.3, -0.1], [0.2, 0.1, -0.15]],
                          dtype=torch.float64)
    offset = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).view(1, 3, 1, 1, 1)
    coarse = torch.einsum("ij,bj...->bi...", matrix, coarse_grid) + offset
    fine = resize_field(coarse, [2 * s for s in n])
    # Fine voxel p sits at coarse coordinate (p + 0.5) / 2 - 0.5; displacements double.
    fine_grid = (identity_grid([2 * s for s in n], dtype=torch.float64) + 0.5) / 2 - 0.5
    expected = 2 * (torch.einsum("ij,bj...->bi...", matrix, fine_grid) + offset)
    assert torch.allclose(fine[..., 1:-1, 1:-1, 1:-1], expected[..., 1:-1, 1:-1, 1:-1],
                          atol=1e-12)


def test_batched_warp_equals_warping_each_item():
    images, fields = random_image(batch=3), smooth_field(5, 2.5, batch=3)
    batched = warp(images, fields)
    for b in range(3):
        assert torch.allclose(batched[b:b + 1], warp(images[b:b + 1], fields[b:b + 1]),
                              atol=1e-6)
    channels = torch.cat([images, 2 * images], dim=1)  # (B, 2, ...): channels share the field
    assert torch.allclose(warp(channels, fields)[:, 1], 2 * batched[:, 0], atol=1e-5)


def test_warp_is_differentiable_in_the_field():
    image = smooth_image(batch=1)
    field = smooth_field(6, 1.0, batch=1).requires_grad_(True)
    warp(image, field).square().mean().backward()
    assert field.grad is not None and field.grad.abs().sum() > 0


def test_warp_rejects_a_field_of_the_wrong_shape():
    with pytest.raises(ValueError, match="field must be"):
        warp(random_image(batch=1), torch.zeros(1, 2, *SHAPE))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    image, field = smooth_image(), smooth_field(7, 2.0)
    on_gpu = warp(image.cuda(), field.cuda()).cpu()
    assert torch.allclose(on_gpu, warp(image, field), atol=1e-5)
    labels = torch.randint(0, 5, (2, 1, *SHAPE), dtype=torch.int32)
    assert torch.equal(warp_labels(labels.cuda(), field.cuda()).cpu(), warp_labels(labels, field))
    zero = torch.zeros(2, 3, *SHAPE, device="cuda")
    assert torch.equal(warp(image.cuda(), zero).cpu(), image)
