"""``regbench methods``, ``regbench train`` and ``regbench register`` on the 40x48x40 demo."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from regbench.cli import main
from regbench.io import read_field

torch.set_num_threads(1)

RUNTIME_KEYS = {"method", "time_s", "device", "versions", "options", "slice_step"}
PAIR_FILES = ("field.nii.gz", "runtime.json", "warped.nii.gz", "warped_labels.nii.gz",
              "metrics.json")


@pytest.fixture(scope="module")
def trained(demo_dataset, tmp_path_factory):
    """``regbench train voxelmorph`` for 3 steps: the output folder and the command."""
    out = tmp_path_factory.mktemp("voxelmorph")
    command = ["train", "voxelmorph", "--data", str(demo_dataset.root), "--out", str(out),
               "--steps", "3", "--warmup-steps", "1", "--checkpoint-every", "2", "--seed", "1",
               "--crop-jitter", "1", "--device", "cpu", "--threads", "1",
               "--weight-decay", "0", "--clip-grad-norm", "0",
               "--option", "nb_features=[[4, 4, 4, 4], [4, 4, 4, 4, 4, 4]]"]
    assert main(command) == 0
    return out, command


def test_methods_lists_name_label_learned(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "label", "learned"]
    rows = {line.split()[0]: line for line in lines[1:] if not line.startswith(" ")}
    assert list(rows)[:11] == ["identity", "affine", "syn", "elastix", "fireants", "voxelmorph",
                               "voxelmorph-0.2", "voxelmorph-diff", "dualprnet-ssf",
                               "dualprnet-dsf", "dualprnet"]
    assert rows["voxelmorph"].split()[1:] == ["VoxelMorph", "yes"]
    assert rows["affine"].split()[1:] == ["Affine", "no"]
    assert rows["identity"].split()[1:] == ["Identity", "no"]


def test_train_writes_outputs_and_rerun_is_a_no_op(trained):
    out, command = trained
    for name in ("model.pt", "checkpoint.pt", "loss.csv", "train.json"):
        assert (out / name).exists(), name
    with open(out / "loss.csv", newline="") as file:
        assert [int(row["step"]) for row in csv.DictReader(file)] == [1, 2, 3]
    record = json.loads((out / "train.json").read_text())
    assert record["config"]["steps"] == 3 and record["config"]["crop_jitter"] == 1
    assert record["config"]["weight_decay"] == 0 and record["config"]["clip_grad_norm"] == 0
    assert record["options"]["nb_features"] == [[4] * 4, [4] * 6] and record["seed"] == 1
    stamp = (out / "model.pt").stat().st_mtime_ns
    assert main(command) == 0
    assert (out / "model.pt").stat().st_mtime_ns == stamp
    assert main([*command, "--lr", "0.5"]) == 2  # another config in the same folder: refused


def test_register_learned_method_with_checkpoint(trained, demo_dataset, tmp_path):
    out, _ = trained
    pair = tmp_path / "pair"
    assert main(["register", "voxelmorph", "--data", str(demo_dataset.root), "--moving",
                 "demo05", "--fixed", "demo06", "--out", str(pair), "--checkpoint",
                 str(out / "model.pt"), "--device", "cpu", "--threads", "1",
                 "--slice-step", "4"]) == 0
    for name in PAIR_FILES:
        assert (pair / name).exists(), name
    runtime = json.loads((pair / "runtime.json").read_text())
    assert set(runtime) == RUNTIME_KEYS | {"moving", "fixed", "data_fingerprint", "checkpoint",
                                           "field_sha256"}
    assert (runtime["moving"], runtime["fixed"]) == ("demo05", "demo06")
    assert runtime["data_fingerprint"] == demo_dataset.fingerprint(["demo05", "demo06"])
    assert runtime["checkpoint"]["step"] == runtime["checkpoint"]["steps"]
    assert runtime["options"]["nb_features"] == [[4] * 4, [4] * 6] and runtime["slice_step"] == 4
    assert runtime["time_s"] > 0
    metrics = json.loads((pair / "metrics.json").read_text())
    assert (metrics["method"], metrics["moving"], metrics["slice_step"]) == (
        "voxelmorph", "demo05", 4)
    field, _ = read_field(pair / "field.nii.gz")
    assert field.shape == (3, *demo_dataset.shape)


def test_register_refuses_wrong_or_missing_checkpoints(trained, demo_dataset, tmp_path, capsys):
    out, _ = trained
    pair = ["--data", str(demo_dataset.root), "--moving", "demo05", "--fixed", "demo06",
            "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        main(["register", "voxelmorph", *pair])
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["register", "dualprnet", *pair, "--checkpoint", str(out / "model.pt")]) == 2
    assert "voxelmorph" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "affine", "--data", str(demo_dataset.root), "--out", str(tmp_path)])
    assert "not learned" in capsys.readouterr().err


def test_load_trained_refuses_what_it_cannot_register_with(trained, tmp_path):
    """The one loader of a trained method (register, register-pairs, figure-pyramid)."""
    from regbench.checkpoint import load_checkpoint
    from regbench.io import InputError
    from regbench.methods import load_trained

    out, _ = trained
    method = load_trained(out / "model.pt")  # the method the checkpoint names
    assert method.name == "voxelmorph" and method.network is not None
    assert method.checkpoint["finished"] and method.checkpoint["steps"] == 3
    assert load_trained(out / "model.pt", method="voxelmorph").options == method.options
    with pytest.raises(InputError, match="checkpoint of method 'voxelmorph', not 'dualprnet'"):
        load_trained(out / "model.pt", method="dualprnet")
    with pytest.raises(InputError, match="step 2 of 3, an unfinished training"):
        load_trained(out / "checkpoint.pt")
    assert load_trained(out / "checkpoint.pt", allow_unfinished=True).checkpoint["step"] == 2
    state = load_checkpoint(out / "model.pt")
    for name, problem in (("affine", "method 'affine' is not a learned method"),
                          ("no-such-method", "unknown method 'no-such-method'")):
        torch.save({**state, "method": name}, tmp_path / f"{name}.pt")
        with pytest.raises(InputError, match=problem):
            load_trained(tmp_path / f"{name}.pt")
    with pytest.raises(InputError, match="checkpoint not found"):
        load_trained(tmp_path / "missing.pt")


def test_register_path_form(demo_dataset, tmp_path):
    files = ["--moving-image", str(demo_dataset.image_path("demo05")),
             "--fixed-image", str(demo_dataset.image_path("demo06"))]
    labels = ["--moving-labels", str(demo_dataset.labels_path("demo05")),
              "--fixed-labels", str(demo_dataset.labels_path("demo06"))]
    scored, unscored = tmp_path / "scored", tmp_path / "unscored"
    assert main(["register", "affine", *files, *labels, "--out", str(scored),
                 "--threads", "1"]) == 0
    for name in PAIR_FILES:
        assert (scored / name).exists(), name
    metrics = json.loads((scored / "metrics.json").read_text())
    assert metrics["method"] == "affine" and metrics["options"]["threads"] == 1
    assert "(1 thread)" in metrics["device"]
    assert main(["register", "affine", *files, "--out", str(unscored), "--threads", "1"]) == 0
    assert sorted(p.name for p in unscored.iterdir()) == ["field.nii.gz", "runtime.json"]
    with pytest.raises(SystemExit):  # both forms at once
        main(["register", "affine", *files, "--data", str(demo_dataset.root), "--out",
              str(tmp_path)])


@pytest.mark.slow
def test_register_is_deterministic_by_default(demo_dataset, tmp_path):
    """Three `regbench register affine` runs without --threads: the same field, the same Dice.

    Each run is a process of its own, as on the command line (ITK fixes its thread count once per
    process); ITK's thread variable is unset, as on a user's machine.
    """
    env = {k: v for k, v in os.environ.items() if k != "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"}
    outs = [tmp_path / f"run{i}" for i in range(3)]
    for out in outs:
        done = subprocess.run(
            [sys.executable, "-m", "regbench.cli", "register", "affine", "--data",
             str(demo_dataset.root), "--moving", "demo05", "--fixed", "demo06", "--out",
             str(out)], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    metrics = [json.loads((out / "metrics.json").read_text()) for out in outs]
    assert metrics[0]["mean_dice_faim"] == metrics[1]["mean_dice_faim"] == \
        metrics[2]["mean_dice_faim"]
    assert all("(1 thread)" in m["device"] for m in metrics)
    fields = [read_field(out / "field.nii.gz")[0] for out in outs]
    assert np.array_equal(fields[0], fields[1]) and np.array_equal(fields[0], fields[2])
