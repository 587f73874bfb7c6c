"""The baselines: ANTs Affine and SyN (baselines/ants.py), VoxelMorph (baselines/voxelmorph.py).

ANTs runs with one thread and few SyN iterations on the 40x48x40 demo grid to stay fast.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import ants
import numpy as np
import pytest
import torch
from benchmark_scripts import load
from scipy import ndimage

from regbench import metrics
from regbench.baselines import voxelmorph
from regbench.baselines.ants import dense_field, to_ants
from regbench.baselines.voxelmorph import (
    RELEASE_VM2_PARAMETERS,
    VM2_PARAMETERS,
    SameConv3d,
    VoxelMorphNetwork,
    same_padding,
)
from regbench.losses import GradientLoss
from regbench.methods import get_method
from regbench.transforms import identity_grid, pad_to_multiple, warp, warp_labels

torch.set_num_threads(1)

FAST_SYN = {"threads": 1, "reg_iterations": [20, 10, 5]}
PARITY_REFERENCE = Path(__file__).parent / "data" / "vm2019_parity.npz"


def pull(volume: np.ndarray, field: np.ndarray, labels: bool = False) -> np.ndarray:
    """``volume (X, Y, Z)`` pulled through ``field (3, X, Y, Z)`` by the suite's warp."""
    v = torch.from_numpy(np.ascontiguousarray(volume))[None, None]
    f = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None]
    return (warp_labels(v, f) if labels else warp(v, f))[0, 0].numpy()


def affine_field(shape, matrix: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Field of ``x -> c + matrix (x - c) + shift`` (voxels, about the grid centre ``c``)."""
    grid = identity_grid(shape)[0].numpy().astype(np.float64)
    centre = (np.asarray(shape, dtype=np.float64) - 1)[:, None, None, None] / 2
    mapped = np.einsum("ij,j...->i...", matrix, grid - centre) + centre + shift[:, None, None,
                                                                                   None]
    return (mapped - grid).astype(np.float32)


def rotation(degrees: float, axes: tuple[int, int]) -> np.ndarray:
    a = math.radians(degrees)
    matrix = np.eye(3)
    i, j = axes
    matrix[i, i] = matrix[j, j] = math.cos(a)
    matrix[i, j], matrix[j, i] = -math.sin(a), math.sin(a)
    return matrix


def mean_dice(pred: np.ndarray, target: np.ndarray) -> float:
    labels = sorted(set(np.unique(target).tolist()) - {0})
    return float(np.mean(list(metrics.dice_per_label(pred, target, labels).values())))


@pytest.fixture(scope="module")
def known_pair(demo_dataset):
    """A demo subject (fixed) and the moving image made from it by a known smooth deformation and
    a small affine: ``(moving, fixed, moving labels, fixed labels, spacing)``."""
    fixed = demo_dataset.image("demo05")
    fixed_labels = demo_dataset.label_map("demo05")
    shape = fixed.shape
    rng = np.random.default_rng(1)
    smooth = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 4) for _ in range(3)])
    smooth *= 1.5 / np.abs(smooth).max()
    field = affine_field(shape, rotation(6, (0, 1)) * 1.04, np.array([1.5, -1.0, 0.5]))
    field = field + smooth.astype(np.float32)
    moving = pull(fixed, field)
    moving_labels = pull(fixed_labels, field, labels=True)
    return moving, fixed, moving_labels, fixed_labels, demo_dataset.spacing


@pytest.mark.parametrize("name", ["affine", "syn"])
def test_ants_field_warps_like_ants(name, known_pair, tmp_path):
    """Our warp with the composed field == antsApplyTransforms with ANTs' own transforms."""
    moving, fixed, moving_labels, _, spacing = known_pair
    method = get_method(name)(**(FAST_SYN if name == "syn" else {"threads": 1}))
    transforms = method.transforms(moving, fixed, spacing, tmp_path)
    field = dense_field(transforms, to_ants(fixed, spacing), tmp_path)
    ours = pull(moving_labels, field, labels=True)
    theirs = ants.apply_transforms(to_ants(fixed, spacing), to_ants(moving_labels, spacing),
                                   transforms, interpolator="nearestNeighbor").numpy()
    theirs = np.rint(theirs).astype(np.int32)
    assert np.abs(field).max() > 1  # the test would be void on a near-identity field
    assert (ours == theirs).mean() >= 0.99
    foreground = (ours > 0) | (theirs > 0)
    assert (ours == theirs)[foreground].mean() >= 0.97


def test_affine_recovers_a_known_affine(demo_dataset):
    fixed = demo_dataset.image("demo06")
    shape = fixed.shape
    matrix = rotation(5, (1, 2)) @ np.diag([1.05, 0.97, 1.0])
    shift = np.array([1.5, -2.0, 1.0])
    moving = pull(fixed, affine_field(shape, matrix, shift))
    # moving(x) = fixed(c + M (x - c) + t), so fixed(y) = moving(c + M^-1 (y - c - t)).
    inverse = np.linalg.inv(matrix)
    expected = affine_field(shape, inverse, -inverse @ shift)
    field = get_method("affine")(threads=1).register(moving, fixed, demo_dataset.spacing)
    brain = demo_dataset.label_map("demo06") > 0
    error = np.linalg.norm(field - expected, axis=0)[brain]
    displacement = np.linalg.norm(expected, axis=0)[brain]
    assert displacement.mean() > 1.5  # a displacement worth recovering
    assert error.mean() < 0.25 and error.max() < 0.75, (error.mean(), error.max())


def test_baselines_improve_dice_over_identity(known_pair):
    moving, fixed, moving_labels, fixed_labels, spacing = known_pair
    before = mean_dice(moving_labels, fixed_labels)
    after = {name: mean_dice(pull(moving_labels, get_method(name)(**options).register(
        moving, fixed, spacing), labels=True), fixed_labels)
        for name, options in (("affine", {"threads": 1}), ("syn", FAST_SYN))}
    assert after["affine"] > before + 0.05, (before, after)
    assert after["syn"] > after["affine"] + 0.02, (before, after)


def test_ants_is_deterministic_with_one_thread_and_a_seed(known_pair):
    moving, fixed, _, _, spacing = known_pair
    first, second = (get_method("affine")(threads=1, random_seed=3).register(moving, fixed,
                                                                               spacing)
                     for _ in range(2))
    assert np.array_equal(first, second)


def test_ants_options_pass_through_and_unknown_ones_fail():
    syn = get_method("syn")(reg_iterations=[10, 0, 0], syn_metric="CC", syn_sampling=2)
    assert syn.options["syn_metric"] == "CC"
    with pytest.raises(ValueError, match="no option"):
        get_method("affine")(reg_iterations=[10])  # a SyN knob: Affine does not take it
    with pytest.raises(ValueError, match="random_seed"):
        get_method("affine")(random_seed=0)  # ANTs would seed from the clock
    assert get_method("affine").label == "Affine" and get_method("syn").label == "SyN"


def test_voxelmorph_is_the_2019_vm2_and_its_release_variants_keep_their_network():
    network = get_method("voxelmorph")().build_network()
    assert sum(p.numel() for p in network.parameters()) == VM2_PARAMETERS == 300_547
    release = get_method("voxelmorph-0.2")().build_network()
    assert sum(p.numel() for p in release.parameters()) == RELEASE_VM2_PARAMETERS == 327_331
    # The diffeomorphic variant as the authors' release trains it: release 0.2's network.
    diffeomorphic = get_method("voxelmorph-diff")()
    assert diffeomorphic.options["integration_steps"] == 7
    assert isinstance(diffeomorphic.build_network(), VoxelMorphNetwork)
    # Four stride-2 encoder convolutions, the rest stride 1.
    assert [conv.stride[0] for conv in network.encoder] == [2, 2, 2, 2]
    assert {conv.stride[0] for conv in network.decoder} == {1}
    # The flow layer starts near zero (N(0, 1e-5)), as the authors initialise it; he_normal
    # elsewhere (std sqrt(2 / fan_in)), zero biases.
    assert 0 < float(network.flow.weight.detach().std()) < 1e-4 and not network.flow.bias.any()
    first = network.encoder[1].weight.detach()
    assert float(first.std()) == pytest.approx(math.sqrt(2 / (16 * 27)), rel=0.05)
    assert not network.encoder[1].bias.any()


@pytest.mark.parametrize("stride", [1, 2])
def test_same_padding_is_tensorflows(stride):
    """TensorFlow's rule: ceil(n / stride) outputs, the padding's odd voxel at the end."""
    for size in range(1, 12):
        out = -(-size // stride)
        total = max((out - 1) * stride + 3 - size, 0)
        assert same_padding(size, stride) == (total // 2, total - total // 2)
    assert same_padding(6, 2) == (0, 1) and same_padding(7, 2) == (1, 1)


def test_stride_two_convolution_samples_where_tensorflow_does():
    """A kernel that reads only its first tap: on an even axis (padding (0, 1)) output i reads
    input 2i; on an odd axis (padding (1, 1)) it reads 2i - 1. Odd sizes give ceil(n / 2)."""
    conv = SameConv3d(1, 1, stride=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 1, 1] = 1
    volume = torch.arange(1, 1 + 6 * 5 * 7, dtype=torch.float32).reshape(1, 1, 6, 5, 7)
    out = conv(volume)
    assert out.shape[2:] == (3, 3, 4)
    assert torch.equal(out[0, 0, :, 1, 2], volume[0, 0, [0, 2, 4], 2, 4])
    even = conv(volume[:, :, :, :, :6])
    assert even.shape[2:] == (3, 3, 3)
    odd_axis = torch.arange(1, 8, dtype=torch.float32).reshape(1, 1, 7, 1, 1).repeat(1, 1, 1, 2, 2)
    assert conv(odd_axis)[0, 0, :, 0, 0].tolist() == [0.0, 2.0, 4.0, 6.0]


def test_voxelmorph_2019_network_needs_multiples_of_16():
    network = get_method("voxelmorph")(nb_features=[[4, 4, 4, 4], [4, 4, 4, 4, 4, 4]])
    outputs = network.build_network()(*torch.rand(2, 1, 1, 16, 32, 16))
    assert outputs["field"].shape == (1, 3, 16, 32, 16) and outputs["velocity"] is outputs["field"]
    with pytest.raises(ValueError, match="multiples of 16"):
        network.build_network()(*torch.rand(2, 1, 1, 16, 24, 16))
    for bad in ([[8, 8], [8, 8, 8]], [[8] * 4, [8] * 5], [[8] * 4, [8] * 8],
                [[8, 8, 8, 0], [8] * 7]):
        with pytest.raises(ValueError, match="nb_features"):
            get_method("voxelmorph")(nb_features=bad)


def parity_script():
    return load("vm2019_parity")


def test_voxelmorph_matches_the_authors_2019_keras_network(monkeypatch):
    """The committed field of the authors' 2019 Keras vm2 (benchmarks/vm2019_parity.py, on the
    same seeded weights and demo pair) against the suite's PyTorch network: within 1e-3 voxel.
    TensorFlow's asymmetric stride-2 padding matters: PyTorch's symmetric one misses by far."""
    reference = np.load(PARITY_REFERENCE)
    script = parity_script()
    assert int(reference["parameters"]) == VM2_PARAMETERS and int(reference["seed"]) == script.SEED
    keras = reference["field"]
    assert keras.shape == (3, *script.SHAPE) and 2 < np.abs(keras).max() < 10
    ours = script.torch_field(reference["moving"], reference["fixed"])
    assert np.abs(ours - keras).max() < 1e-3
    monkeypatch.setattr(voxelmorph, "same_padding", lambda size, stride: (1, 1))
    symmetric = script.torch_field(reference["moving"], reference["fixed"])
    assert np.abs(symmetric - keras).max() > 0.1


def test_voxelmorph_diff_scales_its_gradient_loss_by_the_downsize_factor():
    """As the authors' release trains it: Grad('l2', loss_mult=int_downsize)."""
    small = {"nb_features": [[4, 4], [4, 4, 4]]}
    moving, fixed = torch.rand(2, 1, 1, 16, 16, 16)
    for name, factor in (("voxelmorph-0.2", 1), ("voxelmorph-diff", 2), ("voxelmorph-diff", 4)):
        extra = {"integration_downsize": factor} if name == "voxelmorph-diff" else {}
        method = get_method(name)(**small, **extra, smoothness_weight=0.5)
        network = method.build_network()
        with torch.no_grad():
            network.flow.weight.normal_(0, 0.5)
            outputs = network(moving, fixed)
        loss, parts = method.loss(outputs, moving, fixed)
        gradient = float(GradientLoss()(outputs["velocity"]))
        assert gradient > 0 and parts["grad"] == pytest.approx(factor * gradient, rel=1e-5)
        assert float(loss) == pytest.approx(parts["ncc"] + 0.5 * parts["grad"], rel=1e-5)


@pytest.mark.parametrize("steps", [0, 3])
def test_voxelmorph_field_convention_matches_its_transformer(steps):
    """The authors' transformer output == the suite's warp (zero padding) of the field as
    returned, with and without integration: the field is in the suite's pull convention."""
    generator = torch.Generator().manual_seed(0)
    shape = (16, 24, 16)
    torch.manual_seed(0)  # the U-Net's weights: a field of a few voxels below
    network = VoxelMorphNetwork([[4, 4], [4, 4, 4]], integration_steps=steps)
    image = torch.rand(2, 1, *shape, generator=generator)
    # A constant shift of +2 voxels along axis 0 pulls moving(x + 2): checks units and axis order.
    transformer, _ = network.shape_layers(torch.Size(shape), image.device)
    shift = torch.zeros(1, 3, *shape)
    shift[:, 0] = 2
    assert torch.allclose(transformer(image[:1], shift)[0, 0, :-2], image[0, 0, 2:], atol=1e-5)
    with torch.no_grad():
        network.flow.weight.normal_(0, 2.0 if steps else 1.0, generator=generator)
        outputs = network(image, image.flip(2))
    field = outputs["field"]
    assert field.abs().max() > 1
    assert torch.allclose(outputs["warped"], warp(image, field, padding_mode="zeros"), atol=1e-4)
    if steps == 0:
        assert outputs["velocity"] is field  # no integration: regularise the field itself
    else:
        assert outputs["velocity"].shape[2:] == tuple(s // 2 for s in shape)


def test_voxelmorph_release_options():
    method = get_method("voxelmorph-0.2")()
    assert method.size_multiple == 16 and method.label == "VoxelMorph (release 0.2)"
    small = get_method("voxelmorph-0.2")(nb_features=[[8, 8, 8], [8, 8, 8, 8]])
    assert small.size_multiple == 8
    network = small.build_network()
    moving, fixed = torch.rand(2, 1, 1, 16, 24, 16)
    outputs = network(moving, fixed)
    assert outputs["field"].shape == (1, 3, 16, 24, 16)
    loss, parts = small.loss(outputs, moving, fixed)
    assert loss.ndim == 0 and set(parts) == {"ncc", "grad"}
    for bad in ([], [[8, 8]], [[8, 8], [8]], [[8, 0], [8, 8]]):
        with pytest.raises(ValueError, match="nb_features"):
            get_method("voxelmorph-0.2")(nb_features=bad)
    with pytest.raises(ValueError, match="integration_steps"):
        get_method("voxelmorph-0.2")(integration_steps=-1)
    with pytest.raises(ValueError, match="no option"):
        get_method("voxelmorph")(integration_steps=7)  # the 2019 vm2 does not integrate


@pytest.mark.slow
def test_voxelmorph_release_port_matches_the_release_keras_model(demo_dataset, tmp_path):
    """``voxelmorph-0.2``, the port check: the same weights in release 0.2's Keras model
    (TensorFlow backend, in a process of its own) and in its PyTorch port as the suite runs it:
    the same field on a demo pair, to within 1e-3 voxel. (Release 0.2 against release 0.2: this
    proves the port; fidelity to the 2019 network is the parity test above.)"""
    pytest.importorskip("tensorflow")
    method = get_method("voxelmorph-0.2")()
    torch.manual_seed(1)
    network = method.build_network().eval()
    moving, fixed = (demo_dataset.image(s) for s in demo_dataset.test[:2])
    padded, crop = pad_to_multiple(
        torch.from_numpy(np.stack([moving, fixed]))[:, None], method.size_multiple)
    with torch.no_grad():  # the flow layer scaled up, for a field of a few voxels
        network.flow.weight.normal_()
        largest = network(padded[:1], padded[1:])["field"].abs().max()
        network.flow.weight.mul_(5 / largest)
        network.flow.bias.normal_(0, 0.5)
        ours = network(padded[:1], padded[1:])["field"][0].numpy()
    assert 3 < np.abs(ours).max() < 10
    # PyTorch (out, in, x, y, z) kernels -> Keras (x, y, z, in, out); biases as they are.
    weights = {f"weight_{i}": p.detach().numpy().transpose(2, 3, 4, 1, 0) if p.ndim == 5
               else p.detach().numpy() for i, p in enumerate(network.parameters())}
    encoder, decoder = method.options["nb_features"]
    np.savez(tmp_path / "in.npz", shape=padded.shape[2:], encoder=encoder, decoder=decoder,
             moving=padded[0, 0].numpy(), fixed=padded[1, 0].numpy(), **weights)
    script = Path(__file__).parent / "helpers" / "keras_voxelmorph.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    keras = np.moveaxis(np.load(tmp_path / "out.npy"), -1, 0)
    assert keras.shape == ours.shape
    assert np.abs(keras - ours).max() < 1e-3
    assert crop == tuple(slice(0, s) for s in moving.shape)
