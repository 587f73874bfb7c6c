"""The shared trainer (regbench/training/), with a small VoxelMorph on the 40x48x40 demo."""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from regbench import runtime
from regbench.checkpoint import load_checkpoint
from regbench.degrade import thin_slices
from regbench.io import InputError
from regbench.methods import get_method
from regbench.training import (
    PairSampler,
    TrainConfig,
    TrainingVolumes,
    autocast_dtype,
    learning_rate,
    precision_name,
    train,
    validation_pairs,
)

torch.set_num_threads(1)

SMALL = {"nb_features": [[4, 8, 8, 8], [8, 8, 8, 8, 8, 4, 4]]}
CONFIG = TrainConfig(steps=8, batch_size=1, lr=2e-3, warmup_steps=3, checkpoint_every=3,
                     seed=3, crop_jitter=2, moving_slice_step=2, device="cpu", threads=1,
                     select="final")


def small_voxelmorph():
    return get_method("voxelmorph")(**SMALL)


def read_log(path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


class Interrupt(Exception):
    """Stands for a killed job."""


def interrupt_at(method, call: int):
    """Make ``method.loss`` raise at its ``call``-th call (1-based)."""
    loss, calls = method.loss, itertools.count(1)

    def failing(*args):
        if next(calls) == call:
            raise Interrupt
        return loss(*args)

    method.loss = failing
    return method


@pytest.fixture(scope="module")
def uninterrupted(demo_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    method = small_voxelmorph()
    return method, train(method, demo_dataset, out, CONFIG)


def test_learning_rate_warms_up_linearly_then_stays():
    config = TrainConfig(lr=1e-3, warmup_steps=4)
    assert [learning_rate(s, config) for s in range(1, 7)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert learning_rate(1, replace(config, warmup_steps=0)) == 1e-3


def test_cosine_schedule_decays_to_zero_after_the_warm_up():
    config = TrainConfig(lr=1e-3, warmup_steps=2, steps=6, lr_schedule="cosine")
    assert [learning_rate(s, config) for s in range(1, 7)] == pytest.approx(
        [5e-4, 1e-3, 1e-3 * (1 + np.cos(np.pi / 4)) / 2, 5e-4, 1e-3 * (1 - np.cos(np.pi / 4)) / 2,
         0.0], abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        TrainConfig(lr_schedule="step")


def scripted_validation(monkeypatch, dice_by_step: dict[int, float]) -> None:
    """Make every validation report ``dice_by_step[step]`` (FAIM and merged)."""
    from regbench.training.validation import Validation

    def run(self, method, step, elapsed):
        return {"step": step, "time_s": elapsed, "dice_faim": dice_by_step[step],
                "dice_merged": dice_by_step[step], "eval_s": 0.01}

    monkeypatch.setattr(Validation, "run", run)


@pytest.mark.parametrize("select, kept", [("best", 4), ("final", 6)])
def test_the_model_holds_the_best_validated_or_the_final_step(select, kept, demo_dataset,
                                                              tmp_path, monkeypatch):
    """On real LPBA40 a network's validation Dice rose, then fell below no registration by the
    last step: ``select: best`` registers with the best validated weights, the last ones kept."""
    from regbench.reports.learning_curves import read_learning_curves

    scripted_validation(monkeypatch, {0: 0.60, 2: 0.62, 4: 0.66, 6: 0.59})
    config = replace(CONFIG, steps=6, validate_every=2, select=select)
    model = train(small_voxelmorph(), demo_dataset, tmp_path, config)
    states = {name: load_checkpoint(tmp_path / f"{name}.pt") for name in ("model", "best", "final")}
    assert states["best"]["step"] == 4 and states["final"]["step"] == 6
    assert states["model"]["step"] == kept and states["model"]["finished"]
    source = states["best" if select == "best" else "final"]
    for key, value in source["network"].items():
        assert torch.equal(value, states["model"]["network"][key]), key
    assert not torch.equal(states["best"]["network"]["flow.weight"],
                           states["final"]["network"]["flow.weight"])
    record = json.loads((tmp_path / "train.json").read_text())["selected"]
    assert record == {"rule": select, "step": kept,
                      "best_validation": {"step": 4, "dice_faim": 0.66}}
    method = get_method("voxelmorph").from_checkpoint(model)  # a finished run, even at step 4
    assert method.checkpoint["step"] == kept and method.checkpoint["finished"]
    _, validation = read_learning_curves({"vm": tmp_path})
    assert validation.loc[validation["selected"], "step"].tolist() == [kept]


def test_the_best_validation_survives_a_resume(demo_dataset, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, {0: 0.5, 2: 0.7, 4: 0.6, 6: 0.65})
    config = replace(CONFIG, steps=6, validate_every=2, checkpoint_every=3, select="best")
    with pytest.raises(Interrupt):  # killed during step 5: the checkpoint holds step 3
        train(interrupt_at(small_voxelmorph(), 5), demo_dataset, tmp_path, config)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["best"] == {"step": 2, "dice_faim": 0.7}
    train(small_voxelmorph(), demo_dataset, tmp_path, config)
    assert load_checkpoint(tmp_path / "model.pt")["step"] == 2


def test_outputs_and_loss_log(uninterrupted, demo_dataset):
    _, model = uninterrupted
    out = model.parent
    assert model.name == "model.pt" and (out / "checkpoint.pt").exists()
    rows = read_log(out / "loss.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, CONFIG.steps + 1))
    assert list(rows[0]) == ["step", "loss", "ncc", "grad", "lr", "time_s"]
    assert [float(r["lr"]) for r in rows] == pytest.approx(
        [learning_rate(s, CONFIG) for s in range(1, CONFIG.steps + 1)])
    for row in rows:
        weight = small_voxelmorph().options["smoothness_weight"]
        assert float(row["loss"]) == pytest.approx(float(row["ncc"]) + weight * float(row["grad"]),
                                                   rel=1e-5)
    record = json.loads((out / "train.json").read_text())
    assert record["config"]["seed"] == CONFIG.seed
    assert record["options"]["nb_features"] == SMALL["nb_features"]
    assert record["dataset"]["train"] == demo_dataset.train and record["resumed_at"] == []
    assert record["versions"]["torch"] and "thread" in record["device"]
    state = load_checkpoint(model)
    assert {"method", "options", "network", "optimizer", "scaler", "step", "rng",
            "config"} <= set(state)
    assert state["step"] == CONFIG.steps and state["method"] == "voxelmorph"
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 6  # the last multiple of 3


def test_interrupted_and_resumed_run_equals_uninterrupted(uninterrupted, demo_dataset,
                                                           tmp_path):
    _, model = uninterrupted
    with pytest.raises(Interrupt):  # killed during step 5: the checkpoint holds step 3
        train(interrupt_at(small_voxelmorph(), 5), demo_dataset, tmp_path, CONFIG)
    assert not (tmp_path / "model.pt").exists()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert [int(r["step"]) for r in read_log(tmp_path / "loss.csv")] == [1, 2, 3, 4]
    resumed = train(small_voxelmorph(), demo_dataset, tmp_path, CONFIG)
    a, b = load_checkpoint(model), load_checkpoint(resumed)
    for key, value in a["network"].items():
        assert torch.equal(value, b["network"][key]), key
    for key, value in a["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer"]["state"][key][name])
    rows_a, rows_b = read_log(model.parent / "loss.csv"), read_log(tmp_path / "loss.csv")
    assert [int(r["step"]) for r in rows_b] == list(range(1, CONFIG.steps + 1))  # no duplicates
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert json.loads((tmp_path / "train.json").read_text())["resumed_at"] == [3]


def test_finished_run_is_a_no_op_and_other_configs_are_refused(uninterrupted, demo_dataset):
    trained, model = uninterrupted
    before = model.stat().st_mtime_ns
    method = small_voxelmorph()
    assert train(method, demo_dataset, model.parent, replace(CONFIG, checkpoint_every=5)) == model
    assert model.stat().st_mtime_ns == before
    for key, value in trained.network.state_dict().items():  # the method holds the trained net
        assert torch.equal(value, method.network.state_dict()[key])
    with pytest.raises(InputError, match="lr"):
        train(small_voxelmorph(), demo_dataset, model.parent, replace(CONFIG, lr=1e-3))
    with pytest.raises(InputError, match="options"):
        train(get_method("voxelmorph")(**{**SMALL, "smoothness_weight": 2.0}), demo_dataset,
              model.parent, CONFIG)


def test_voxelmorph_loss_goes_down(demo_dataset, tmp_path):
    """The trained network's loss over every training pair is below the untrained one's."""
    volumes = TrainingVolumes(demo_dataset)
    pairs = list(itertools.permutations(range(len(volumes)), 2))
    moving, fixed = volumes.batch([(m, f, (0, 0, 0), (0, 0, 0)) for m, f in pairs], 0,
                                  small_voxelmorph().size_multiple, torch.device("cpu"))

    def mean_loss(method) -> float:
        with torch.no_grad():
            return method.loss(method.network(moving, fixed), moving, fixed)[0].item()

    untrained = small_voxelmorph()
    torch.manual_seed(0)
    untrained.network = untrained.build_network().eval()
    method = small_voxelmorph()
    train(method, demo_dataset, tmp_path,
          TrainConfig(steps=12, lr=5e-3, warmup_steps=2, checkpoint_every=12, device="cpu",
                      threads=1, select="final"))
    before, after = mean_loss(untrained), mean_loss(method)
    assert after < before - 0.015, (before, after)


def test_pair_sampler_is_seeded_and_draws_distinct_subjects():
    draws = PairSampler(4, seed=7, jitter=3).draw(400)
    assert draws == PairSampler(4, seed=7, jitter=3).draw(400)
    assert draws != PairSampler(4, seed=8, jitter=3).draw(400)
    assert all(m != f for m, f, _, _ in draws)
    assert {(m, f) for m, f, _, _ in draws} == set(itertools.permutations(range(4), 2))
    offsets = np.array([o for _, _, *pair in draws for o in pair])
    assert offsets.min() == -3 and offsets.max() == 3
    # Drawn per volume, as in the official code: moving and fixed shift apart too.
    assert any(moving != fixed for _, _, moving, fixed in draws)


def test_batches_shift_each_volume_and_thin_the_moving_image(demo_dataset):
    volumes = TrainingVolumes(demo_dataset, slice_step=4)
    image0, image1 = (demo_dataset.image(s) for s in demo_dataset.train[:2])
    assert np.array_equal(volumes.moving[0, 0].numpy(), thin_slices(image0, step=4, axis=1))
    assert np.array_equal(volumes.fixed[1, 0].numpy(), image1)
    moving, fixed = volumes.batch([(0, 1, (0, 1, 0), (2, 0, -1))], jitter=2, multiple=16,
                                  device=torch.device("cpu"))
    shape = demo_dataset.shape
    assert moving.shape == fixed.shape == (1, 1, 48, 48, 48)  # padded to multiples of 16
    # out[x] = in[x - offset]: fixed moved by (+2, 0, -1), moving by (0, +1, 0), edges replicated.
    assert np.array_equal(fixed[0, 0, 2:shape[0], :shape[1], :shape[2] - 1].numpy(),
                          image1[:-2, :, 1:])
    assert np.array_equal(fixed[0, 0, 0, :shape[1], :shape[2] - 1].numpy(), image1[0, :, 1:])
    assert np.array_equal(moving[0, 0, :shape[0], 1:shape[1], :shape[2]].numpy(),
                          thin_slices(image0, step=4, axis=1)[:, :-1, :])
    assert not fixed[0, 0, shape[0]:].any()  # zero padding beyond the grid


def test_bad_configs_and_checkpoints_are_refused(demo_dataset, tmp_path):
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    for name in ("weight_decay", "clip_grad_norm"):
        with pytest.raises(ValueError, match=f"{name} must be >= 0"):
            TrainConfig(**{name: -1.0})
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="model.pt"):
        load_checkpoint(garbage)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_validation_is_logged_every_n_steps_and_after_the_last(demo_dataset, tmp_path):
    config = replace(CONFIG, steps=5, validate_every=2, validation_pairs=3, crop_jitter=0,
                     moving_slice_step=1)
    train(small_voxelmorph(), demo_dataset, tmp_path, config)
    rows = read_log(tmp_path / "validation.csv")
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 5]  # 0: before training
    for row in rows:
        assert 0 < float(row["dice_faim"]) <= 1 and 0 < float(row["dice_merged"]) <= 1
        assert float(row["eval_s"]) > 0
    times = [float(r["time_s"]) for r in rows]
    assert times == sorted(times)


def test_validation_pairs_never_share_a_subject_with_the_test_split(demo_dataset, tmp_path):
    from regbench.data.dataset import Dataset
    from regbench.data.demo import make_demo

    # No val split (6 subjects): pairs from the training split.
    pairs = validation_pairs(demo_dataset, 5)
    assert len(pairs) == 5 and len(set(pairs)) == 5
    assert {s for pair in pairs for s in pair} <= set(demo_dataset.train)
    # A val split (16 subjects: 9 train, 3 val, 4 test): pairs from it alone, all 6 of them.
    dataset = Dataset.load(make_demo(tmp_path / "demo16", subjects=16, scale=0.125, seed=1))
    assert len(dataset.val) == 3
    pairs = validation_pairs(dataset, 10)
    assert sorted(pairs) == sorted(itertools.permutations(dataset.val, 2))
    assert not {s for pair in pairs for s in pair} & set(dataset.test)


def test_more_validation_pairs_than_exist_is_said_and_recorded(demo_dataset, tmp_path, caplog):
    """--validation-pairs 10000 silently validated on the 12 pairs there are, while train.json
    recorded 10000."""
    import logging

    with caplog.at_level(logging.WARNING):
        pairs = validation_pairs(demo_dataset, 10000)
    assert len(pairs) == 12  # no val split: the 4 training subjects' ordered pairs
    assert ("validation_pairs 10000, but the training split's 4 subjects give 12 ordered pairs: "
            "validating on all 12") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        validation_pairs(demo_dataset, 12)
    assert not caplog.text
    config = replace(CONFIG, steps=1, validate_every=1, validation_pairs=10000, crop_jitter=0)
    train(small_voxelmorph(), demo_dataset, tmp_path, config)
    assert json.loads((tmp_path / "train.json").read_text())["config"]["validation_pairs"] == 12


def test_one_validation_subject_is_said(demo_dataset, tmp_path, caplog):
    """Issue 22: a val split of 1 subject made training validate on training pairs without a
    word."""
    import logging
    import shutil

    from regbench.data.dataset import Dataset
    from regbench.io import write_json

    root = tmp_path / "data"
    shutil.copytree(demo_dataset.root, root)
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["splits"].update(train=["demo01", "demo02", "demo03"], val=["demo04"])
    write_json(root / "dataset.json", manifest)
    with caplog.at_level(logging.WARNING):
        pairs = validation_pairs(Dataset.load(root), 4)
    assert {s for pair in pairs for s in pair} <= {"demo01", "demo02", "demo03"}
    assert "the validation split holds 1 subject (demo04), no pair" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        validation_pairs(demo_dataset, 4)  # no val split at all: the demo's choice, said nowhere
    assert not caplog.text


@pytest.mark.parametrize("flags, expected", [
    ({"avx512f", "avx512_bf16"}, torch.bfloat16),  # Cooper Lake, Sapphire Rapids, Zen 4
    ({"avx512f", "amx_bf16", "amx_tile"}, torch.bfloat16),
    ({"avx512f", "avx512_vnni"}, None),  # Skylake to Ice Lake: oneDNN would emulate bfloat16
    ({"avx2", "fma"}, None),
])
def test_cpu_mixed_precision_only_where_bfloat16_is_native(flags, expected, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))
    assert autocast_dtype(True, torch.device("cpu")) == expected
    assert autocast_dtype(False, torch.device("cpu")) is None
    assert precision_name(autocast_dtype(True, torch.device("cpu"))) == (
        "bfloat16" if expected else "float32")


def test_cuda_mixed_precision_is_float16():
    assert autocast_dtype(True, torch.device("cuda")) == torch.float16
    assert autocast_dtype(False, torch.device("cuda")) is None


def test_cpu_flags_are_read_from_cpuinfo():
    flags = runtime.cpu_flags()
    assert "fpu" in flags or not Path("/proc/cpuinfo").exists()


def test_train_json_records_the_precision_that_ran(demo_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2"}))
    config = replace(CONFIG, steps=1, checkpoint_every=1, amp=True)
    train(small_voxelmorph(), demo_dataset, tmp_path, config)
    assert json.loads((tmp_path / "train.json").read_text())["precision"] == "float32"


def test_flips_are_the_official_random_flip_and_seeded():
    sampler = PairSampler(4, seed=7)
    flips = sampler.flips(4000)
    assert flips == PairSampler(4, seed=7).flips(4000)
    counts = {axis: flips.count(axis) for axis in (None, 0, 1, 2)}
    assert sum(counts.values()) == 4000 and min(counts.values()) > 900  # 1/4 each


def test_a_flipped_pair_flips_both_images_alike():
    class Volumes(TrainingVolumes):
        def __init__(self) -> None:  # two subjects, no dataset
            self.fixed = torch.arange(2 * 4 * 6 * 8, dtype=torch.float32).reshape(2, 1, 4, 6, 8)
            self.moving = self.fixed

    volumes, draws = Volumes(), [(0, 1, (0, 0, 0), (0, 0, 0))] * 4
    moving, fixed = volumes.batch(draws, 0, 1, torch.device("cpu"), [None, 0, 1, 2])
    for k, axis in enumerate([None, 0, 1, 2]):
        dims = () if axis is None else (1 + axis,)  # (C, X, Y, Z) of one volume
        assert torch.equal(moving[k], volumes.fixed[0].flip(dims))
        assert torch.equal(fixed[k], volumes.fixed[1].flip(dims))
    unflipped, _ = volumes.batch(draws[:1], 0, 1, torch.device("cpu"))
    assert torch.equal(unflipped[0], volumes.fixed[0])
