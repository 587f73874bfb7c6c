"""Dual-PRNet, its ablations (models/dualprnet.py) and the speed/memory benchmark script."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from benchmark_scripts import load
from torch import nn

from regbench.methods import LearnedMethod, get_method
from regbench.models.dualprnet import (
    DualPRNetwork,
    Encoder,
    FeaturePyramid,
    pyramid_register,
)
from regbench.transforms import compose, identity_grid, resize_field, warp, warp_labels

torch.set_num_threads(1)

EVEN = (32, 48, 40)
ODD = (33, 47, 35)
METHODS = ("dualprnet", "dualprnet-dsf", "dualprnet-ssf")


def pair(shape, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, 1, *shape, generator=generator) for _ in range(2))


def level_shapes(shape, levels: int = 4, depth: int = 4) -> list[tuple[int, ...]]:
    """Sizes of the pyramid levels, coarse to fine: stride-2 'same' convs round up."""
    sizes, current = [], tuple(shape)
    for _ in range(depth):
        current = tuple(math.ceil(s / 2) for s in current)
        sizes.append(current)
    return sizes[::-1][:levels]


def network(name: str, **options) -> DualPRNetwork:
    torch.manual_seed(0)
    return get_method(name)(**options).build_network()


def test_methods_are_registered_with_the_contract_labels():
    labels = {name: get_method(name).label for name in METHODS}
    assert labels == {"dualprnet": "Dual-PRNet", "dualprnet-dsf": "Dual-stream, single field",
                      "dualprnet-ssf": "Single-stream, single field"}
    for name in METHODS:
        method = get_method(name)()
        assert isinstance(method, LearnedMethod) and method.size_multiple == 16
    assert get_method("dualprnet")(encoder_channels=(8, 16, 32), levels=3).size_multiple == 8


@pytest.mark.parametrize("shape", [EVEN, ODD], ids=["even", "odd"])
def test_output_shapes_at_every_level(shape):
    moving, fixed = pair(shape, batch=2)
    expected = level_shapes(shape)
    out = network("dualprnet")(moving, fixed)
    assert out["field"].shape == (2, 3, *shape)
    assert [tuple(f.shape) for f in out["levels"]] == [(2, 3, *s) for s in expected]
    assert [tuple(f.shape) for f in out["accumulated"]] == [(2, 3, *s) for s in expected]
    assert all(f.dtype == torch.float32 for f in [out["field"], *out["levels"]])
    for name in ("dualprnet-dsf", "dualprnet-ssf"):
        out = network(name)(moving, fixed)
        assert out["field"].shape == (2, 3, *shape)
        assert [tuple(f.shape) for f in out["levels"]] == [(2, 3, *expected[-1])]
    # Fewer levels: the finest predicted resolution becomes 1/4.
    out = network("dualprnet", levels=3)(moving, fixed)
    assert [tuple(f.shape[2:]) for f in out["levels"]] == expected[:3]
    assert out["field"].shape == (2, 3, *shape)


@pytest.mark.parametrize("name", METHODS)
def test_zero_initialised_heads_give_exactly_the_identity(name):
    moving, fixed = pair(ODD, seed=1)
    out = network(name, zero_init=True)(moving, fixed)
    assert torch.count_nonzero(out["field"]) == 0
    assert all(torch.count_nonzero(f) == 0 for f in out["levels"] + out["accumulated"])
    assert torch.equal(warp(moving, out["field"]), moving)
    # Through the method's register (pads 33x47x35 to 48x48x48 and crops back).
    method = get_method(name)(zero_init=True)
    method.network = method.build_network()
    field = method.register(moving[0, 0].numpy(), fixed[0, 0].numpy(), (1.0, 1.0, 1.0))
    assert field.shape == (3, *ODD) and field.dtype == np.float32
    assert not field.any()


def test_default_heads_start_near_but_not_at_the_identity():
    out = network("dualprnet")(*pair(EVEN))
    assert 0 < out["field"].abs().max() < 1e-2


def test_same_seed_same_network_and_outputs():
    moving, fixed = pair(ODD, seed=6)
    first, second = network("dualprnet"), network("dualprnet")
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(first(moving, fixed)["field"], second(moving, fixed)["field"])


def test_register_needs_a_network():
    with pytest.raises(RuntimeError, match="no trained network"):
        get_method("dualprnet")().register(np.zeros(EVEN, np.float32),
                                           np.zeros(EVEN, np.float32), (1.0, 1.0, 1.0))


def first_encoder_conv(net: DualPRNetwork) -> nn.Conv3d:
    return net.features[0].blocks[0][0]


@pytest.mark.parametrize("level", range(4))
@pytest.mark.parametrize("output", ["levels", "accumulated"])
def test_gradients_reach_the_encoder_from_every_level(level, output):
    net = network("dualprnet")
    out = net(*pair(EVEN))
    out[output][level].sum().backward()
    grad = first_encoder_conv(net).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # The field that warps the moving features is detached (official code): level l's residual
    # trains head l alone; its accumulated field, through the composition, heads 0 .. l.
    for index, head in enumerate(net.heads):
        has_grad = head.weight.grad is not None and head.weight.grad.abs().sum() > 0
        assert has_grad == (index == level if output == "levels" else index <= level), index


def test_the_training_loss_trains_every_field_head_and_the_encoder():
    method = get_method("dualprnet")()
    net = method.build_network()
    moving, fixed = pair(EVEN, seed=2)
    loss, parts = method.loss(net(moving, fixed), moving, fixed)
    loss.backward()
    assert set(parts) == {"ncc", "smooth"}
    assert loss.item() == pytest.approx(parts["ncc"] + parts["smooth"], rel=1e-5)
    assert 0 < parts["ncc"] <= 1
    for head in net.heads:
        assert head.weight.grad.abs().sum() > 0
    assert first_encoder_conv(net).weight.grad.abs().sum() > 0


def test_smoothness_weight_and_window_are_used():
    moving, fixed = pair(EVEN, seed=3)
    net = network("dualprnet")
    out = net(moving, fixed)
    plain, parts = get_method("dualprnet")(smoothness_weight=0.0).loss(out, moving, fixed)
    assert plain.item() == pytest.approx(parts["ncc"], rel=1e-6)
    weighted, _ = get_method("dualprnet")(smoothness_weight=1e6).loss(out, moving, fixed)
    assert weighted.item() == pytest.approx(parts["ncc"] + 1e6 * parts["smooth"], rel=1e-4)
    _, small = get_method("dualprnet")(ncc_window=3).loss(out, moving, fixed)
    assert small["ncc"] != pytest.approx(parts["ncc"])


def test_both_streams_use_literally_the_same_feature_pyramid():
    net = network("dualprnet").eval()
    assert sum(isinstance(m, Encoder) for m in net.modules()) == 1
    assert sum(isinstance(m, FeaturePyramid) for m in net.modules()) == 1
    own = {id(p) for p in net.features.parameters()} | {id(p) for p in net.heads.parameters()}
    assert {id(p) for p in net.parameters()} == own
    moving, fixed = pair(EVEN, seed=4)
    calls = []
    hook = first_encoder_conv(net).register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    with torch.no_grad():
        moving_features, fixed_features = net.stream_features(moving, fixed)
        hook.remove()
        alone = net.features(moving), net.features(fixed)
        swapped = net.stream_features(fixed, moving)
    assert calls == [(2, 1, *EVEN)]  # one pass of the shared module over both images
    for features, reference, other in zip((moving_features, fixed_features), alone,
                                          swapped[::-1], strict=True):
        for a, b, c in zip(features, reference, other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "heads", "in_channels", "head_in", "pyramid"), [
    ("dualprnet", 4, 1, 64, True),
    ("dualprnet-dsf", 1, 1, 64, False),
    ("dualprnet-ssf", 1, 2, 32, False),
])
def test_each_ablation_builds_the_intended_structure(name, heads, in_channels, head_in, pyramid):
    net = network(name)
    assert len(net.heads) == heads
    assert first_encoder_conv(net).in_channels == in_channels
    assert {h.in_channels for h in net.heads} == {head_in}
    assert {h.out_channels for h in net.heads} == {3}
    assert net.pyramid is pyramid and net.dual_stream is (in_channels == 1)
    assert len(net.features[1].lateral) == 4  # a full 4-level Refine decoder in every variant


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="levels"):
        network("dualprnet", levels=5)
    with pytest.raises(ValueError, match="no option"):
        get_method("dualprnet")(pyramid_levels=3)
    with pytest.raises(ValueError, match="dual_stream"):
        DualPRNetwork(dual_stream=False, pyramid=True)


def set_constant_heads(net: DualPRNetwork, constants: dict[int, tuple[float, float, float]]):
    with torch.no_grad():
        for level, value in constants.items():
            net.heads[level].bias.copy_(torch.tensor(value))


@pytest.mark.parametrize("shape", [(32, 48, 64), ODD], ids=["multiple-of-16", "odd"])
def test_a_constant_coarse_field_is_scaled_to_voxels_of_every_finer_level(shape):
    """One voxel at 1/16 is 16 voxels at full resolution (S / S_coarsest on odd sizes)."""
    net = network("dualprnet", zero_init=True)
    coarse = (1.0, -0.5, 0.25)
    set_constant_heads(net, {0: coarse})
    with torch.no_grad():
        out = net(*pair(shape))
    sizes = level_shapes(shape)
    for level, accumulated in enumerate(out["accumulated"]):
        scale = torch.tensor([s / c for s, c in zip(sizes[level], sizes[0], strict=True)])
        expected = (torch.tensor(coarse) * scale).view(1, 3, 1, 1, 1).expand_as(accumulated)
        torch.testing.assert_close(accumulated, expected)
    scale = torch.tensor([s / c for s, c in zip(shape, sizes[0], strict=True)])
    expected = (torch.tensor(coarse) * scale).view(1, 3, 1, 1, 1).expand_as(out["field"])
    torch.testing.assert_close(out["field"], expected)
    if shape[0] % 16 == 0:
        torch.testing.assert_close(out["field"][0, :, 0, 0, 0], 16 * torch.tensor(coarse))


def test_constant_residuals_add_up_in_voxels_of_the_finest_level():
    net = network("dualprnet", zero_init=True)
    set_constant_heads(net, {0: (1.0, 0.0, 0.0), 1: (0.0, 2.0, 0.0), 3: (0.0, 0.0, -1.0)})
    with torch.no_grad():
        out = net(*pair((32, 48, 64)))
    # (1,0,0) at 1/16 -> (8,0,0) at 1/2; (0,2,0) at 1/8 -> (0,8,0); plus (0,0,-1) at 1/2.
    expected_half = torch.tensor([8.0, 8.0, -1.0])
    torch.testing.assert_close(out["accumulated"][-1][0, :, 3, 5, 7], expected_half)
    torch.testing.assert_close(out["field"][0, :, 20, 30, 40], 2 * expected_half)


class RecordingHead(nn.Module):
    """A stand-in field head returning a given field and recording its input."""

    def __init__(self, field: torch.Tensor) -> None:
        super().__init__()
        self.field = field
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x)
        return self.field


def test_pyramid_register_warps_moving_features_and_composes_fields():
    generator = torch.Generator().manual_seed(5)
    coarse, fine = (6, 8, 5), (12, 16, 10)
    moving = [torch.rand(1, 2, *s, generator=generator) for s in (coarse, fine)]
    fixed = [torch.rand(1, 2, *s, generator=generator) for s in (coarse, fine)]
    phi1 = torch.randn(1, 3, *coarse, generator=generator)
    delta2 = torch.randn(1, 3, *fine, generator=generator)
    heads = [RecordingHead(phi1), RecordingHead(delta2)]
    residuals, accumulated = pyramid_register(moving, fixed, heads)
    upsampled = resize_field(phi1, fine)
    assert residuals[0] is phi1 and residuals[1] is delta2
    torch.testing.assert_close(accumulated[1], compose(upsampled, delta2))
    assert not torch.allclose(accumulated[1], upsampled + delta2, atol=1e-3)
    torch.testing.assert_close(heads[0].inputs[0], torch.cat([moving[0], fixed[0]], 1))
    torch.testing.assert_close(heads[1].inputs[0],
                               torch.cat([warp(moving[1], upsampled), fixed[1]], 1))


def phantom(shape) -> tuple[torch.Tensor, torch.Tensor]:
    """A label map of nested ellipsoid parts (4 labels) and its piecewise-constant image."""
    x, y, z = identity_grid(shape)[0]
    cx, cy, cz = [(s - 1) / 2 for s in shape]
    outer = ((x - cx) / 11) ** 2 + ((y - cy) / 12) ** 2 + ((z - cz) / 10) ** 2 < 1
    inner = ((x - cx + 2) / 5) ** 2 + ((y - cy - 2) / 4) ** 2 + ((z - cz) / 5) ** 2 < 1
    labels = torch.zeros(shape, dtype=torch.int64)
    labels[outer] = 1
    labels[outer & (x > cx + 1)] = 2
    labels[outer & (y < cy - 3) & (x <= cx + 1)] = 3
    labels[inner] = 4
    image = torch.tensor([0.0, 0.4, 0.6, 0.8, 1.0])[labels]
    return image[None, None], labels[None, None]


def smooth_displacement(shape, amplitude: float) -> torch.Tensor:
    x, y, z = identity_grid(shape)[0] * (2 * math.pi / shape[0])
    return amplitude * torch.stack([torch.sin(y + 0.3) * torch.cos(z),
                                    torch.sin(z + 1.0) * torch.cos(x),
                                    torch.sin(x + 2.0) * torch.cos(y)])[None]


def mean_dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = [label for label in np.unique(b) if label != 0]
    return float(np.mean([2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k))
                          for k in labels]))


def test_a_short_training_run_raises_dice_well_above_the_identity():
    shape = (32, 32, 32)
    fixed, fixed_labels = phantom(shape)
    truth = smooth_displacement(shape, amplitude=2.5)
    moving, moving_labels = warp(fixed, truth), warp_labels(fixed_labels, truth)
    identity_dice = mean_dice(moving_labels.numpy(), fixed_labels.numpy())
    torch.manual_seed(0)
    method = get_method("dualprnet")()
    net = method.network = method.build_network()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(60):
        loss, _ = method.loss(net(moving, fixed), moving, fixed)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    field = method.register(moving[0, 0].numpy(), fixed[0, 0].numpy(), (1.0, 1.0, 1.0))
    warped = warp_labels(moving_labels, torch.from_numpy(field)[None])
    dice = mean_dice(warped.numpy(), fixed_labels.numpy())
    assert identity_dice < 0.75
    assert dice > identity_dice + 0.12, (identity_dice, dice)


def test_benchmark_script_smoke(tmp_path, capsys):
    bench = load("speed_memory")
    csv_path, md_path = tmp_path / "bench.csv", tmp_path / "bench.md"
    code = bench.main(["--methods", "dualprnet,voxelmorph,no-such-method", "--sizes", "32x32x32",
                       "--repeats", "1", "--warmup", "0", "--device", "cpu",
                       "--out", str(csv_path), "--out", str(md_path)])
    assert code == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(csv_path.open()))
    measured = {(r["method"], r["mode"]) for r in rows}
    assert {("dualprnet", "inference"), ("dualprnet", "training step")} <= measured
    for r in rows:
        assert r["size"] == "32x32x32" and float(r["time_s"]) > 0
        assert float(r["peak_memory_mib"]) >= 0 and int(r["parameters"]) > 0
    assert "| Dual-PRNet | 32x32x32 |" in printed and "Device: " in printed
    assert "no-such-method: no method registered" in printed
    voxelmorph_missing = "voxelmorph: no method registered" in printed
    assert voxelmorph_missing != (("voxelmorph", "inference") in measured)
    assert md_path.read_text() in printed


def test_benchmark_rejects_bad_arguments():
    bench = load("speed_memory")
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "32x32"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--out", "table.txt"])


def test_registration_normalises_by_the_pair_s_own_statistics_and_keeps_the_averages():
    """As the official test script (which never calls eval()): batch normalisation uses the
    test pair's statistics, and registering changes no running average."""
    method = get_method("dualprnet")()
    method.network = method.build_network()
    moving, fixed = (volume[0, 0].numpy() for volume in pair(EVEN, seed=4))
    with torch.no_grad():  # running averages unlike the pair's statistics
        for module in method.network.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.fill_(3.0)
                module.running_var.fill_(9.0)
    buffers = {k: v.clone() for k, v in method.network.state_dict().items()
               if "running" in k}
    ours = method.run_network(moving, fixed)[0]["field"]
    assert all(torch.equal(v, method.network.state_dict()[k]) for k, v in buffers.items())
    assert not method.network.training
    assert not any(m.training for m in method.network.modules())
    type(method).test_batch_statistics = False
    try:
        averages = method.run_network(moving, fixed)[0]["field"]
    finally:
        type(method).test_batch_statistics = True
    assert not torch.allclose(ours, averages)
