"""Hostile and careless input on the command line: every case ends in one line that says what is
wrong and what to do, with exit code 2, and leaves nothing half-written (issue 10).

Each row of :data:`CASES` builds its inputs in a temporary folder and returns the command line
and the folder the command writes into. The test snapshots that folder, runs the command through
:func:`regbench.cli.main` (as the ``regbench`` script does), and checks the exit code, that the
last line of stderr holds the expected fragment (no traceback), and that no file in the folder
appeared or changed beyond those the row allows.

Also here: Ctrl-C during training, the reorientation that ``--reorient`` offers instead of a
refusal, and the clean-up of what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pytest
import torch

from regbench.cli import main
from regbench.data import protocol
from regbench.data.dataset import Dataset
from regbench.data.demo import make_demo
from regbench.data.preparation import staged_dataset
from regbench.io import output_lock, write_field, write_json
from regbench.methods import get_method
from regbench.training import load_checkpoint

torch.set_num_threads(1)

SMALL_DUALPRNET = ["--option", "encoder_channels=[4, 8]", "--option", "decoder_channels=4",
                   "--option", "levels=2"]
QUICK_TRAIN = ["--warmup-steps", "1", "--device", "cpu", "--threads", "1"]


class Setup(NamedTuple):
    argv: list[str]
    out: Path
    """The folder the command writes into (it may not exist yet)."""
    allowed: frozenset[str] = frozenset()
    """Files (relative to ``out``) that may appear or change: complete records, not results."""


SetupFunction = Callable[[Path, Dataset, contextlib.ExitStack], Setup]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Exit code and stderr of ``regbench ARGV`` (argparse's usage errors included)."""
    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` by relative path (``{}`` when it does not exist)."""
    if not folder.is_dir():
        return {} if not folder.exists() else {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def pair_paths(dataset: Dataset) -> tuple[Path, Path, Path, Path]:
    """Moving image, moving labels, fixed image, fixed labels of the test pair demo05 -> demo06."""
    return (dataset.image_path("demo05"), dataset.labels_path("demo05"),
            dataset.image_path("demo06"), dataset.labels_path("demo06"))


def flipped_copy(source: Path, target: Path) -> Path:
    """The same volume stored with voxel axis 0 reversed (the demo's LAS becomes RAS)."""
    image = nib.load(str(source))
    data = np.asarray(image.dataobj)
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1  # voxel i' = X-1-i: the same world point
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[::-1]), image.affine @ flip), str(target))
    return target


def dataset_copy(dataset: Dataset, tmp: Path, change: Callable[[dict], None] | None = None
                 ) -> Path:
    """A copy of the demo dataset, its manifest changed by ``change``."""
    root = tmp / "data"
    shutil.copytree(dataset.root, root)
    if change is not None:
        manifest = json.loads((root / "dataset.json").read_text())
        change(manifest)
        write_json(root / "dataset.json", manifest)
    return root


def register_dataset(root: Path, out: Path, method: str = "identity", *extra: str) -> list[str]:
    return ["register", method, "--data", str(root), "--moving", "demo05", "--fixed", "demo06",
            "--out", str(out), *extra]


def train_small(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "dualprnet", "--data", str(root), "--out", str(out), "--steps", "3",
            "--checkpoint-every", "2", *QUICK_TRAIN, *SMALL_DUALPRNET, *extra]


def unwritable(tmp: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: /sys)."""
    if os.geteuid() == 0:
        return Path("/sys/regbench-bad-inputs")
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "out"


# --- the cases -----------------------------------------------------------------------------


def las_moving_image(tmp, dataset, hold):
    moving, moving_labels, fixed, fixed_labels = pair_paths(dataset)
    return Setup(["register", "identity",
                  "--moving-image", str(flipped_copy(moving, tmp / "moving.nii.gz")),
                  "--moving-labels", str(flipped_copy(moving_labels, tmp / "labels.nii.gz")),
                  "--fixed-image", str(fixed), "--fixed-labels", str(fixed_labels),
                  "--out", str(tmp / "out")], tmp / "out")


def las_moving_labels(tmp, dataset, hold):
    moving, moving_labels, _, fixed_labels = pair_paths(dataset)
    write_field(tmp / "field.nii.gz", np.zeros((3, *dataset.shape), np.float32), dataset.affine)
    return Setup(["evaluate", "--moving-image", str(moving),
                  "--moving-labels", str(flipped_copy(moving_labels, tmp / "labels.nii.gz")),
                  "--fixed-labels", str(fixed_labels), "--field", str(tmp / "field.nii.gz"),
                  "--out", str(tmp / "out")], tmp / "out")


def bad_labels_by_path(tmp, dataset, hold):
    moving, moving_labels, fixed, fixed_labels = pair_paths(dataset)
    labels = nib.load(str(moving_labels))
    broken = np.asarray(labels.dataobj).astype(np.float32) * 0.5  # 1.5, 2.5, ...: not labels
    nib.save(nib.Nifti1Image(broken, labels.affine), str(tmp / "labels.nii.gz"))
    return Setup(["register", "affine", "--moving-image", str(moving),
                  "--moving-labels", str(tmp / "labels.nii.gz"), "--fixed-image", str(fixed),
                  "--fixed-labels", str(fixed_labels), "--out", str(tmp / "out")], tmp / "out")


def bad_labels_in_dataset(tmp, dataset, hold):
    root = dataset_copy(dataset, tmp)
    (root / "labels" / "demo06.nii.gz").write_bytes(b"not a NIfTI file")
    return Setup(register_dataset(root, tmp / "out", "affine"), tmp / "out")


def out_is_a_file(tmp, dataset, hold):
    (tmp / "out").write_text("a file the user keeps")
    return Setup(register_dataset(dataset.root, tmp / "out"), tmp / "out")


def train_out_is_a_file(tmp, dataset, hold):
    (tmp / "out").write_text("a file the user keeps")
    return Setup(train_small(dataset.root, tmp / "out"), tmp / "out")


def out_read_only(tmp, dataset, hold):
    out = unwritable(tmp)
    return Setup(register_dataset(dataset.root, out), out)


def evaluate_out_read_only(tmp, dataset, hold):
    write_field(tmp / "field.nii.gz", np.zeros((3, *dataset.shape), np.float32), dataset.affine)
    out = unwritable(tmp)
    return Setup(["evaluate", "--data", str(dataset.root), "--moving", "demo05", "--fixed",
                  "demo06", "--field", str(tmp / "field.nii.gz"), "--out", str(out)], out)


def second_writer(tmp, dataset, hold):
    out = tmp / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"pair": "A"}\n')
    hold.enter_context(output_lock(out))  # another `regbench register` is writing pair A here
    return Setup(register_dataset(dataset.root, out), out, frozenset({".regbench.lock"}))


def train_cuda_without_gpu(tmp, dataset, hold):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return Setup([*train_small(dataset.root, tmp / "out"), "--device", "cuda"], tmp / "out")


def register_cuda_without_gpu(tmp, dataset, hold):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return Setup(register_dataset(dataset.root, tmp / "out", "dualprnet", "--checkpoint",
                                  str(tmp / "model.pt"), "--device", "cuda"), tmp / "out")


def unknown_device(tmp, dataset, hold):
    return Setup(register_dataset(dataset.root, tmp / "out", "affine", "--device", "gpu"),
                 tmp / "out")


def bad_ants_metric(tmp, dataset, hold):
    return Setup(register_dataset(dataset.root, tmp / "out", "affine", "--option",
                                  "aff_metric=nonsense"), tmp / "out")


def zero_levels(tmp, dataset, hold):
    return Setup(train_small(dataset.root, tmp / "out", "--option", "levels=0"), tmp / "out")


def manifest_without_affine(tmp, dataset, hold):
    root = dataset_copy(dataset, tmp, lambda m: m["grid"].pop("affine"))
    return Setup(register_dataset(root, tmp / "out"), tmp / "out")


def manifest_without_train_split(tmp, dataset, hold):
    root = dataset_copy(dataset, tmp, lambda m: m["splits"].pop("train"))
    return Setup(train_small(root, tmp / "out"), tmp / "out")


def diverging_loss(tmp, dataset, hold):
    return Setup(train_small(dataset.root, tmp / "out", "--lr", "1e4", "--warmup-steps", "0"),
                 tmp / "out", frozenset({"loss.csv"}))  # the log of the steps before


def diverging_default_network(tmp, dataset, hold):
    """Here neurite's NCC asserted on the NaN warped image before the loss could be checked."""
    return Setup(["train", "dualprnet", "--data", str(dataset.root), "--out", str(tmp / "out"),
                  "--steps", "3", "--lr", "1e4", "--warmup-steps", "0", "--device", "cpu",
                  "--threads", "1"], tmp / "out", frozenset({"loss.csv"}))


def finished_model_of_other_data(tmp, dataset, hold):
    root, out = dataset_copy(dataset, tmp), tmp / "out"
    assert main(train_small(root, out)) == 0
    make_demo(root, subjects=6, scale=0.25, seed=1)  # regenerated: the same IDs, other data
    return Setup(train_small(root, out), out)


def checkpoint_of_other_settings(tmp, dataset, hold):
    out = tmp / "out"
    assert main(train_small(dataset.root, out)) == 0
    (out / "model.pt").unlink()  # what Snakemake does before it reruns a job
    return Setup([*train_small(dataset.root, out), "--steps", "4"], out)


def lpba40_voxels_longer_than_header(tmp, dataset, hold):
    folder = tmp / "raw" / "S01"
    folder.mkdir(parents=True)
    shape = protocol.LPBA40_DELINEATION_SHAPE
    image = np.zeros(shape, np.int16)
    image[60:200, 20:100, 60:200] = 500
    labels = np.zeros(shape, np.int16)
    labels[80:120, 40:80, 80:120] = 21
    for stem, data in (("S01.delineation.skullstripped", image),
                       ("S01.delineation.structure.label", labels)):
        affine = np.diag([*protocol.LPBA40_DELINEATION_SPACING, 1.0])
        nib.save(nib.AnalyzeImage(data, affine), str(folder / f"{stem}.hdr"))
        voxels = (folder / f"{stem}.img").read_bytes()
        (folder / f"{stem}.img").unlink()
        extra = b"\0" * 4096 if stem.endswith("skullstripped") else b""  # a longer file
        with gzip.open(folder / f"{stem}.img.gz", "wb", compresslevel=1) as sink:
            sink.write(voxels + extra)
    return Setup(["prepare", "lpba40", "--raw", str(tmp / "raw"), "--out", str(tmp / "out"),
                  "--subjects", "S01"], tmp / "out")


class Case(NamedTuple):
    setup: SetupFunction
    fragment: str


CASES = {
    "LAS-copy-of-moving-image": Case(las_moving_image, "orientation RAS does not match LAS"),
    "LAS-copy-of-moving-labels": Case(las_moving_labels, "orientation RAS does not match LAS"),
    "bad-labels-by-path": Case(bad_labels_by_path, "label map holds non-integer values"),
    "bad-labels-in-dataset": Case(bad_labels_in_dataset, "not a readable NIfTI"),
    "out-is-a-file": Case(out_is_a_file, "exists and is not a folder"),
    "train-out-is-a-file": Case(train_out_is_a_file, "exists and is not a folder"),
    "out-read-only": Case(out_read_only, "give a writable one"),
    "evaluate-out-read-only": Case(evaluate_out_read_only, "give a writable one"),
    "second-writer": Case(second_writer, "another regbench process is writing"),
    "train-cuda-without-gpu": Case(train_cuda_without_gpu, "this machine has no CUDA GPU"),
    "register-cuda-without-gpu": Case(register_cuda_without_gpu, "this machine has no CUDA GPU"),
    "unknown-device": Case(unknown_device, "'gpu': not a device name"),
    "aff_metric-nonsense": Case(bad_ants_metric, "aff_metric='nonsense': must be one of"),
    "levels-0": Case(zero_levels, "levels=0: must be >= 1"),
    "manifest-without-grid.affine": Case(manifest_without_affine, "lacks grid.affine"),
    "manifest-without-splits.train": Case(manifest_without_train_split, "lacks splits.train"),
    "diverging-loss": Case(diverging_loss, "became NaN or infinite; lower the learning rate"),
    "diverging-default-network": Case(diverging_default_network,
                                      "the predicted field became NaN or infinite"),
    "finished-model-of-other-data": Case(finished_model_of_other_data,
                                         "other data (fingerprint"),
    "checkpoint-of-other-settings": Case(checkpoint_of_other_settings,
                                         "steps 3 != 4); give another output folder, or "
                                         "--replace-stale"),
    "lpba40-voxels-longer-than-header": Case(lpba40_voxels_longer_than_header,
                                             "the two files do not belong together"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_ends_in_one_line_and_writes_nothing(case, demo_dataset, tmp_path, capsys):
    with contextlib.ExitStack() as hold:
        setup = case.setup(tmp_path, demo_dataset, hold)
        capsys.readouterr()
        before = snapshot(setup.out)
        code, err = run_cli(setup.argv, capsys)
        after = snapshot(setup.out)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err and lines, err
    assert case.fragment in lines[-1], err
    assert lines[-1].startswith("regbench") and " error: " in lines[-1], err
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert changed <= setup.allowed, changed


# --- Ctrl-C during training ----------------------------------------------------------------


def test_ctrl_c_during_training_writes_a_checkpoint_and_resumes_exactly(demo_dataset, tmp_path,
                                                                        capsys, monkeypatch):
    command = [*train_small(demo_dataset.root, tmp_path / "whole"), "--steps", "6",
               "--checkpoint-every", "4"]
    assert main(command) == 0
    whole = load_checkpoint(tmp_path / "whole" / "model.pt")

    interrupted = [arg if arg != str(tmp_path / "whole") else str(tmp_path / "out")
                   for arg in command]
    cls, loss, calls = get_method("dualprnet"), get_method("dualprnet").loss, []

    def ctrl_c_in_step_3(self, *args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C
        return loss(self, *args)

    monkeypatch.setattr(cls, "loss", ctrl_c_in_step_3)
    capsys.readouterr()
    handler = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job, not the default
    code, err = run_cli(interrupted, capsys)
    assert code == 130, err
    assert "Traceback" not in err
    assert "stopped at step 3 of 6 (SIGINT)" in err.strip().splitlines()[-1], err
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is restored
    out = tmp_path / "out"
    assert not (out / "model.pt").exists()
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3  # checkpoints come every 4 steps
    monkeypatch.setattr(cls, "loss", loss)

    assert main(interrupted) == 0  # resumes from step 3
    resumed = load_checkpoint(out / "model.pt")
    for key, value in whole["network"].items():
        assert torch.equal(value, resumed["network"][key]), key
    assert json.loads((out / "train.json").read_text())["resumed_at"] == [3]


# --- reorientation on request ------------------------------------------------------------


def test_reorient_scores_a_flipped_copy_exactly_like_the_original(demo_dataset, tmp_path):
    moving, moving_labels, fixed, fixed_labels = pair_paths(demo_dataset)
    common = ["--fixed-image", str(fixed), "--fixed-labels", str(fixed_labels)]
    assert main(["register", "identity", "--moving-image", str(moving), "--moving-labels",
                 str(moving_labels), *common, "--out", str(tmp_path / "original")]) == 0
    flipped = ["--moving-image", str(flipped_copy(moving, tmp_path / "m.nii.gz")),
               "--moving-labels", str(flipped_copy(moving_labels, tmp_path / "l.nii.gz"))]
    assert main(["register", "identity", *flipped, *common, "--out", str(tmp_path / "flipped"),
                 "--reorient"]) == 0
    original, reoriented = (json.loads((tmp_path / name / "metrics.json").read_text())
                            for name in ("original", "flipped"))
    assert reoriented["mean_dice_faim"] == original["mean_dice_faim"] > 0.3
    assert reoriented["dice_labels"] == original["dice_labels"]
    # the evaluation alone, on the reoriented field's grid (the fixed one)
    assert main(["evaluate", *flipped, "--fixed-labels", str(fixed_labels), "--field",
                 str(tmp_path / "original" / "field.nii.gz"), "--out", str(tmp_path / "again"),
                 "--reorient"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["dice_labels"] == original["dice_labels"]


# --- what a killed run leaves behind --------------------------------------------------------


def test_the_next_run_removes_what_a_killed_run_left(demo_dataset, tmp_path):
    out = tmp_path / "model"
    assert main(train_small(demo_dataset.root, out)) == 0
    leftover = out / ".checkpoint.pt.k1ll3d0x.tmp.pt"  # a SIGKILL during torch.save
    leftover.write_bytes(b"half a checkpoint")
    assert main(train_small(demo_dataset.root, out)) == 0  # a finished run: nothing else to do
    assert not leftover.exists() and not (out / ".regbench.lock").exists()

    staging = tmp_path / ".data.staging-k1ll3d"  # a SIGKILL during a preparation
    (staging / "images").mkdir(parents=True)
    with staged_dataset(tmp_path / "data") as fresh:
        write_json(fresh / "dataset.json", {})
    assert not staging.exists() and (tmp_path / "data" / "dataset.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model"]


def test_outputs_respect_the_umask(demo_dataset, tmp_path):
    previous = os.umask(0o022)
    try:
        assert main(register_dataset(demo_dataset.root, tmp_path / "out")) == 0
    finally:
        os.umask(previous)
    for path in (tmp_path / "out").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path
