"""Dense spatial transforms in PyTorch (3D, batched, CPU or GPU).

Conventions, used everywhere in the suite:

* Volumes are ``(B, C, X, Y, Z)`` tensors whose spatial axes are the NIfTI voxel axes.
* A displacement field ``u`` is ``(B, 3, X, Y, Z)`` in **voxel units**, channel ``c`` being the
  displacement along spatial axis ``c``. It lives on the fixed grid and *pulls* the moving image:
  ``warped(x) = moving(x + u(x))``.
* Voxel ``i`` is the centre of a cell of unit width (PyTorch ``align_corners=False``): sampling
  outside ``[-0.5, n - 0.5]`` is outside the volume, and resizing a grid from ``n`` to ``m``
  voxels maps ``p -> (p + 0.5) m / n - 0.5`` and multiplies displacements by ``m / n``, so a
  field upsampled x2 has its values doubled exactly, as in an image pyramid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

ALIGN_CORNERS = False


def identity_grid(shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel coordinates of a grid: ``(1, 3, *shape)``."""
    axes = [torch.arange(s, device=device, dtype=dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")).unsqueeze(0)


def sample(image: torch.Tensor, coords: torch.Tensor, mode: str = "bilinear",
           padding_mode: str = "border") -> torch.Tensor:
    """Sample ``image (B, C, *S_in)`` at voxel coordinates ``coords (B, 3, *S)``.

    A gather-based trilinear/nearest sampler: at integer coordinates its weights are exactly 0
    and 1, so a zero field or an integer shift reproduces voxel values bit for bit (the
    normalise/unnormalise round trip of ``grid_sample`` does not). Differentiable in ``coords``.
    """
    if mode not in ("bilinear", "nearest") or padding_mode not in ("border", "zeros"):
        raise ValueError(f"unsupported mode={mode!r} or padding_mode={padding_mode!r}")
    batch, channels, *in_shape = image.shape
    out_shape = coords.shape[2:]
    sizes = torch.tensor(in_shape, device=coords.device, dtype=coords.dtype).view(1, 3, 1, 1, 1)
    inside = ((coords > -0.5) & (coords < sizes - 0.5)).all(dim=1, keepdim=True)
    if padding_mode == "border":
        coords = torch.minimum(coords.clamp_min(0), sizes - 1)
    flat_image = image.reshape(batch, channels, -1)
    strides = (in_shape[1] * in_shape[2], in_shape[2], 1)

    def gather(index: torch.Tensor) -> torch.Tensor:
        index = index.reshape(batch, 1, -1).expand(-1, channels, -1)
        return flat_image.gather(2, index).reshape(batch, channels, *out_shape)

    if mode == "nearest":
        rounded = coords.round().long()
        index = sum(rounded[:, a].clamp(0, in_shape[a] - 1) * strides[a] for a in range(3))
        result = gather(index)
        if padding_mode == "zeros":
            result = result * inside.to(result.dtype)
        return result
    low = coords.floor()
    frac = coords - low
    low = low.long()
    # Per axis: (index contribution, weight) of the lower and upper neighbour.
    terms = []
    for a in range(3):
        lo, hi = low[:, a], low[:, a] + 1
        w_lo, w_hi = 1 - frac[:, a], frac[:, a]
        if padding_mode == "zeros":
            w_lo = w_lo * ((lo >= 0) & (lo < in_shape[a]))
            w_hi = w_hi * ((hi >= 0) & (hi < in_shape[a]))
        terms.append((
            (lo.clamp(0, in_shape[a] - 1) * strides[a], w_lo),
            (hi.clamp(0, in_shape[a] - 1) * strides[a], w_hi),
        ))
    result = 0
    for (ix, wx) in terms[0]:
        for (iy, wy) in terms[1]:
            ixy, wxy = ix + iy, wx * wy
            for (iz, wz) in terms[2]:
                result = result + (wxy * wz).unsqueeze(1) * gather(ixy + iz)
    return result


def warp(image: torch.Tensor, field: torch.Tensor, mode: str = "bilinear",
         padding_mode: str = "border") -> torch.Tensor:
    """Pull ``image (B, C, *S_in)`` through ``field (B, 3, *S)``; returns ``(B, C, *S)``.

    ``mode`` is ``"bilinear"`` (trilinear in 3D) or ``"nearest"``. Outside the input, values are
    taken from the border (``padding_mode="border"``) or zero (``"zeros"``).
    """
    if field.dim() != 5 or field.shape[1] != 3:
        raise ValueError(f"field must be (B, 3, X, Y, Z), got {tuple(field.shape)}")
    coords = identity_grid(field.shape[2:], field.device, field.dtype) + field
    return sample(image.to(field.dtype) if image.is_floating_point() else image, coords, mode,
                  padding_mode)


def warp_labels(labels: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Warp an integer label map ``(B, 1, *S_in)`` by nearest neighbour; keeps its dtype."""
    return warp(labels, field, mode="nearest", padding_mode="zeros")


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Field of ``x -> x + inner(x) -> y + outer(y)``: ``inner + outer(x + inner(x))``.

    ``warp(image, compose(outer, inner)) == warp(warp(image, outer), inner)`` up to interpolation.
    The pyramid's ``phi_l(x) = phi_{l-1}(x + delta_l(x))`` is ``compose(phi_{l-1}, delta_l)``.
    """
    return inner + warp(outer, inner, mode="bilinear", padding_mode="border")


def resize_field(field: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample ``field (B, 3, *S)`` onto a grid of ``shape``, scaling each component by m/n."""
    shape = tuple(int(s) for s in shape)
    resized = F.interpolate(field, size=shape, mode="trilinear", align_corners=ALIGN_CORNERS)
    scale = torch.tensor([m / n for m, n in zip(shape, field.shape[2:], strict=True)],
                         device=field.device, dtype=field.dtype)
    return resized * scale.view(1, 3, 1, 1, 1)


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Exponentiate a stationary velocity field by scaling and squaring (a diffeomorphism).

    ``velocity (B, 3, *S)`` in voxel units; returns the displacement of ``exp(v)``.
    """
    field = velocity / (2**steps)
    for _ in range(steps):
        field = compose(field, field)
    return field


def pad_to_multiple(volume: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad ``(B, C, *S)`` at the end of each axis up to a multiple; returns the crop back."""
    shape = volume.shape[2:]
    pads = [(-s) % multiple for s in shape]
    padding = [p for pad in reversed(pads) for p in (0, pad)]
    return torch.nn.functional.pad(volume, padding), tuple(slice(0, s) for s in shape)
