"""Slice thinning of the large slice spacing experiment (regbench.degrade)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regbench.degrade import kept_slices, thin_slices


def test_192_slices_with_step_8_keep_exactly_24():
    kept = kept_slices(192, 8)
    assert len(kept) == 24
    assert kept[0] == 0 and kept[-1] == 184 and np.all(np.diff(kept) == 8)
    assert kept_slices(10, 1) == list(range(10))
    with pytest.raises(ValueError):
        kept_slices(10, 0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_kept_slices_are_unchanged_and_the_rest_interpolated_linearly(axis):
    rng = np.random.default_rng(0)
    shape = [6, 7, 5]
    shape[axis] = 29
    volume = rng.normal(size=shape).astype(np.float32)
    step = 4
    thinned = thin_slices(volume, step=step, axis=axis)
    assert thinned.shape == volume.shape and thinned.dtype == np.float32
    kept = kept_slices(29, step)  # 0, 4, ..., 28
    assert np.array_equal(np.take(thinned, kept, axis), np.take(volume, kept, axis))
    for i in range(29):
        k = i - i % step
        t = (i - k) / step
        expected = (1 - t) * np.take(volume, k, axis) + t * np.take(volume, min(k + step, 28), axis)
        assert np.allclose(np.take(thinned, i, axis), expected, atol=1e-6)


def test_a_linear_ramp_is_reproduced_and_the_tail_holds_the_last_kept_slice():
    ramp = np.broadcast_to(np.arange(192, dtype=np.float64)[None, :, None], (3, 192, 2))
    thinned = thin_slices(ramp, step=8, axis=1)
    # Linear between kept slices 0..184: the ramp survives exactly there.
    assert np.allclose(thinned[:, :185], ramp[:, :185], atol=1e-12)
    # Beyond the last kept slice (184) nothing is left to interpolate towards.
    assert np.array_equal(thinned[:, 185:], np.full((3, 7, 2), 184.0))


def test_information_between_kept_slices_is_lost():
    volume = np.zeros((4, 24, 4), dtype=np.float32)
    volume[:, 3] = 1.0  # a detail only on a dropped slice
    assert not thin_slices(volume, step=8).any()
    volume[:, 8] = 1.0  # ... and one on a kept slice
    thinned = thin_slices(volume, step=8)
    assert np.allclose(thinned[0, :, 0], [max(0, 1 - abs(i - 8) / 8) for i in range(24)])


def test_step_one_is_the_identity_and_integer_input_becomes_float():
    volume = np.arange(60).reshape(3, 4, 5)
    thinned = thin_slices(volume, step=1)
    assert thinned.dtype == np.float32 and np.array_equal(thinned, volume)


def test_torch_tensors_give_the_numpy_result():
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(2, 1, 5, 40, 6)).astype(np.float32)
    thinned = thin_slices(torch.from_numpy(volume), step=8, axis=3)
    assert isinstance(thinned, torch.Tensor) and thinned.dtype == torch.float32
    assert np.allclose(thinned.numpy(), thin_slices(volume, step=8, axis=3), atol=1e-6)
    assert np.allclose(thin_slices(torch.from_numpy(volume), 8, axis=-2).numpy(), thinned.numpy())
