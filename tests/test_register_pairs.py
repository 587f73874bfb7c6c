"""``regbench register-pairs``: many pairs in one process, no scoring; `evaluate` scores them as the
one-pair ``regbench register --out`` does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from regbench.cli import main
from regbench.io import read_field
from regbench.methods import LearnedMethod, Method
from regbench.registration import register_pairs

torch.set_num_threads(1)

TEST_PAIRS = [("demo05", "demo06"), ("demo06", "demo05")]


@pytest.fixture(scope="module")
def checkpoint(demo_dataset, tmp_path_factory):
    """A Dual-PRNet trained for 2 steps on the 40x48x40 demo."""
    out = tmp_path_factory.mktemp("dualprnet")
    assert main(["train", "dualprnet", "--data", str(demo_dataset.root), "--out", str(out),
                 "--steps", "2", "--warmup-steps", "1", "--checkpoint-every", "2",
                 "--device", "cpu", "--threads", "1"]) == 0
    return out / "model.pt"


def test_learned_method_registers_every_test_pair_loading_the_network_once(
        checkpoint, demo_dataset, tmp_path, monkeypatch):
    loads = []
    original = LearnedMethod.from_checkpoint.__func__

    def counted(cls, *args, **kwargs):
        loads.append(cls.name)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(LearnedMethod, "from_checkpoint", classmethod(counted))
    root = tmp_path / "run"
    assert main(["register-pairs", "dualprnet", "--data", str(demo_dataset.root), "--test-pairs",
                 "--out-root", str(root), "--checkpoint", str(checkpoint), "--device", "cpu",
                 "--threads", "1", "--slice-step", "2"]) == 0
    assert loads == ["dualprnet"]
    for moving, fixed in TEST_PAIRS:
        folder = root / moving / fixed
        assert sorted(p.name for p in folder.iterdir()) == ["field.nii.gz", "runtime.json"]
        runtime = json.loads((folder / "runtime.json").read_text())
        assert (runtime["method"], runtime["slice_step"]) == ("dualprnet", 2)
        assert runtime["time_s"] > 0
    # the pair folders, and the run's record (regbench.runs) beside its hidden locks
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "demo05", "demo06", "run.json"]


def test_register_pairs_then_evaluate_equals_register_with_scoring(
        checkpoint, demo_dataset, tmp_path):
    """The workflow's split form gives the field and metrics of the interactive form."""
    moving, fixed = TEST_PAIRS[1]
    split, joint = tmp_path / "split", tmp_path / "joint"
    method = ["--checkpoint", str(checkpoint), "--device", "cpu", "--threads", "1"]
    assert main(["register-pairs", "dualprnet", "--data", str(demo_dataset.root),
                 "--pair", moving, fixed, "--out-root", str(split), *method]) == 0
    pair = split / moving / fixed
    assert main(["evaluate", "--data", str(demo_dataset.root), "--moving", moving, "--fixed",
                 fixed, "--field", str(pair / "field.nii.gz"), "--runtime",
                 str(pair / "runtime.json"), "--out", str(pair), "--threads", "1"]) == 0
    assert main(["register", "dualprnet", "--data", str(demo_dataset.root), "--moving", moving,
                 "--fixed", fixed, "--out", str(joint), *method]) == 0
    np.testing.assert_array_equal(read_field(pair / "field.nii.gz")[0],
                                  read_field(joint / "field.nii.gz")[0])
    scored, reference = (json.loads((folder / "metrics.json").read_text())
                         for folder in (pair, joint))
    assert scored.keys() == reference.keys()
    for key in scored.keys() - {"time_s"}:
        assert scored[key] == reference[key], key


def test_unknown_subject_is_refused_before_anything_is_written(
        checkpoint, demo_dataset, tmp_path, capsys):
    root = tmp_path / "run"
    assert main(["register-pairs", "dualprnet", "--data", str(demo_dataset.root),
                 "--pair", "demo05", "demo06", "--pair", "demo05", "nobody", "--out-root",
                 str(root), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 2
    assert "nobody" in capsys.readouterr().err
    assert not root.exists()


def test_pairs_or_test_pairs_is_required(demo_dataset, tmp_path):
    with pytest.raises(SystemExit):
        main(["register-pairs", "affine", "--data", str(demo_dataset.root), "--out-root",
              str(tmp_path)])


class _CountingGpuMethod(Method):
    """The identity on a pretend CUDA device, counting its registrations (no name: unregistered)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda")

    def device_description(self) -> str:
        return "pretend GPU"

    def register(self, moving, fixed, spacing):
        self.calls += 1
        return np.zeros((3, *fixed.shape), dtype=np.float32)


def test_gpu_warm_up_runs_once_per_job_not_per_pair(demo_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    method = _CountingGpuMethod()
    pairs = [("demo01", "demo02"), ("demo02", "demo01"), ("demo05", "demo06")]
    records = register_pairs(method, demo_dataset, pairs, tmp_path)
    assert method.calls == len(pairs) + 1  # one untimed warm-up, then each pair once
    assert [r["device"] for r in records] == ["pretend GPU"] * len(pairs)


def test_a_model_registering_other_data_than_its_training_data_is_said(
        checkpoint, demo_dataset, tmp_path, caplog):
    """Issue 22: a model trained on 4 mm data registered 8 mm data without a word."""
    import logging

    from regbench.data.demo import make_demo

    coarse = make_demo(tmp_path / "coarse", subjects=6, scale=0.125, seed=0)
    method = ["--pair", "demo05", "demo06", "--checkpoint", str(checkpoint), "--device", "cpu"]
    with caplog.at_level(logging.WARNING):
        assert main(["register-pairs", "dualprnet", "--data", str(coarse), "--out-root",
                     str(tmp_path / "coarse-run"), *method]) == 0
    assert "dualprnet was trained on other data than the training split of" in caplog.text
    assert "on a grid of 20x24x20 at 8x8x8 mm" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["register-pairs", "dualprnet", "--data", str(demo_dataset.root),
                     "--out-root", str(tmp_path / "run"), *method]) == 0
    assert "trained on other data" not in caplog.text
