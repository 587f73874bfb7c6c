"""Data-parallel training: two CPU processes under torchrun (Gloo) == one process, whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from regbench.checkpoint import load_checkpoint
from regbench.data.dataset import make_manifest, write_manifest, write_subject

TOY = textwrap.dedent('''
    """A one-convolution registration network: fast, and without batch statistics."""
    import sys

    import torch
    from torch import nn

    from regbench.losses import GradientLoss
    from regbench.methods import LearnedMethod
    from regbench.transforms import warp


    class ToyNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(2, 3, 3, padding=1)

        def forward(self, moving, fixed):
            field = self.conv(torch.cat([moving, fixed], 1))
            return {"field": field, "warped": warp(moving, field)}


    class Toy(LearnedMethod):
        name = "toy-ddp"
        label = "Toy"
        size_multiple = 4

        def build_network(self):
            return ToyNetwork()

        def loss(self, outputs, moving, fixed):
            similarity = ((outputs["warped"] - fixed) ** 2).mean()
            smoothness = GradientLoss()(outputs["field"])
            return similarity + 0.1 * smoothness, {"mse": similarity.item(),
                                                   "grad": smoothness.item()}


    if __name__ == "__main__":
        from regbench.data.dataset import Dataset
        from regbench.training import TrainConfig, train

        data, out = sys.argv[1:3]
        train(Toy(), Dataset.load(data), out,
              TrainConfig(steps=6, batch_size=2, lr=1e-2, warmup_steps=2, checkpoint_every=4,
                          crop_jitter=1, seed=5, amp=False, device="cpu", threads=1,
                          select="final"))
''')

DISTRIBUTED_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def tiny_dataset(root) -> None:
    """Five random smooth 14x18x14 subjects (train 4, test 1)."""
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    subjects = [f"s{i}" for i in range(5)]
    for subject in subjects:
        image = rng.random((14, 18, 14)).astype(np.float32)
        image = np.cumsum(np.cumsum(image, 0), 1)
        labels = (image > np.median(image)).astype(np.int32) + 1
        write_subject(root, subject, image / image.max(), labels, affine)
    write_manifest(root, make_manifest(
        name="tiny", source="test", subjects=subjects,
        splits={"train": subjects[:4], "test": subjects[4:]}, labels={1: "low", 2: "high"},
        regions={"low": [1], "high": [2]}, shape=(14, 18, 14), affine=affine))


def run(command: list[str], cwd) -> None:
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_process_ddp_equals_one_process(tmp_path):
    data = tmp_path / "data"
    tiny_dataset(data)
    (tmp_path / "toy.py").write_text(TOY)
    run([sys.executable, "toy.py", str(data), "single"], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "toy.py", str(data), "ddp"], tmp_path)
    single = load_checkpoint(tmp_path / "single" / "model.pt")
    ddp = load_checkpoint(tmp_path / "ddp" / "model.pt")
    assert single["step"] == ddp["step"] == 6
    for key, value in single["network"].items():
        assert torch.allclose(value, ddp["network"][key], rtol=1e-4, atol=1e-6), key
    record = json.loads((tmp_path / "ddp" / "train.json").read_text())
    assert record["world_size"] == 2 and record["batch_per_process"] == 1
    losses = [np.loadtxt(tmp_path / run / "loss.csv", delimiter=",", skiprows=1)[:, 1]
              for run in ("single", "ddp")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)  # logged: mean over processes
