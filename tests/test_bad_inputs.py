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
import errno
import gzip
import hashlib
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import nibabel as nib
import numpy as np
import pytest
import torch

from regbench.checkpoint import load_checkpoint
from regbench.cli import main
from regbench.data import protocol
from regbench.data.dataset import Dataset
from regbench.data.demo import make_demo
from regbench.data.preparation import staged_dataset
from regbench.io import output_lock, write_field, write_json
from regbench.methods import get_method

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
    command = train_small(dataset.root, tmp / "out")  # levels=0 instead of its levels=2
    return Setup([arg if arg != "levels=2" else "levels=0" for arg in command], tmp / "out")


def manifest_without_affine(tmp, dataset, hold):
    root = dataset_copy(dataset, tmp, lambda m: m["grid"].pop("affine"))
    return Setup(register_dataset(root, tmp / "out"), tmp / "out")


def manifest_without_train_split(tmp, dataset, hold):
    root = dataset_copy(dataset, tmp, lambda m: m["splits"].pop("train"))
    return Setup(train_small(root, tmp / "out"), tmp / "out")


def diverging_loss(tmp, dataset, hold):
    return Setup(train_small(dataset.root, tmp / "out", "--lr", "1e4", "--warmup-steps", "0"),
                 tmp / "out", frozenset({"loss.csv", "validation.csv", "best.pt"}))  # before


def diverging_default_network(tmp, dataset, hold):
    """Here neurite's NCC asserted on the NaN warped image before the loss could be checked."""
    return Setup(["train", "dualprnet", "--data", str(dataset.root), "--out", str(tmp / "out"),
                  "--steps", "3", "--lr", "1e4", "--warmup-steps", "0", "--device", "cpu",
                  "--threads", "1"], tmp / "out",
                 frozenset({"loss.csv", "validation.csv", "best.pt"}))  # step 0 validated


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


def register_pairs(root: Path, out_root: Path, method: str = "identity", *extra: str,
                   pair: tuple[str, str] | None = ("demo05", "demo06")) -> list[str]:
    """``register-pairs`` of one pair (``None``: the pairs ``extra`` chooses)."""
    chosen = ["--pair", *pair] if pair else []
    return ["register-pairs", method, "--data", str(root), *chosen, "--out-root", str(out_root),
            *extra]


def another_method_into_a_run(tmp, dataset, hold):
    """Issue 16: a second method overwrote a pair of the first, and both exited 0."""
    out = tmp / "run"
    assert main(register_pairs(dataset.root, out, "identity")) == 0
    return Setup(register_pairs(dataset.root, out, "affine", pair=("demo06", "demo05")), out)


def mixed_run(tmp: Path, dataset: Dataset, keep_record: bool) -> Path:
    """A run folder of identity holding a pair that affine registered."""
    out = tmp / "run"
    assert main(register_pairs(dataset.root, out, "identity")) == 0
    assert main(register_pairs(dataset.root, tmp / "other", "affine",
                               pair=("demo06", "demo05"))) == 0
    shutil.copytree(tmp / "other" / "demo06", out / "demo06")
    if not keep_record:
        (out / "run.json").unlink()
    return out


def evaluate_mixed_run(tmp, dataset, hold):
    out = mixed_run(tmp, dataset, keep_record=True)
    return Setup(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(out),
                  "--test-pairs"], out)


def evaluate_mixed_run_without_record(tmp, dataset, hold):
    out = mixed_run(tmp, dataset, keep_record=False)
    return Setup(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(out),
                  "--test-pairs"], out)


def aggregate_mixed_run(tmp, dataset, hold):
    out, other = tmp / "run", tmp / "other"
    for folder, method, pair in ((out, "identity", ("demo05", "demo06")),
                                 (other, "affine", ("demo06", "demo05"))):
        assert main(register_pairs(dataset.root, folder, method, pair=pair)) == 0
        assert main(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(folder),
                     "--pair", *pair]) == 0
    shutil.copytree(other / "demo06", out / "demo06")  # scored, then moved into another run
    return Setup(["aggregate", "--experiment", "main", "--from-dir", str(out), "--out",
                  str(tmp / "table" / "per_pair.csv")], tmp / "table")


def field_of_the_reversed_pair(tmp, dataset, hold):
    """Issue 16: a field of demo06 -> demo05 scored as demo05 -> demo06 with exit code 0."""
    out = tmp / "run"
    assert main(register_pairs(dataset.root, out, "affine", pair=("demo06", "demo05"))) == 0
    (out / "demo05").mkdir()
    os.replace(out / "demo06" / "demo05", out / "demo05" / "demo06")
    return Setup(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(out),
                  "--pair", "demo05", "demo06"], out)


def unfinished_checkpoint(tmp, dataset, hold):
    model = tmp / "model"
    assert main(train_small(dataset.root, model)) == 0
    assert load_checkpoint(model / "checkpoint.pt")["step"] == 2
    return Setup(register_dataset(dataset.root, tmp / "out", "dualprnet", "--checkpoint",
                                  str(model / "checkpoint.pt")),
                 tmp / "out")


def checkpoint_of_another_shape(tmp, dataset, hold):
    model = tmp / "model"
    assert main(train_small(dataset.root, model)) == 0
    return Setup(register_dataset(dataset.root, tmp / "out", "dualprnet", "--checkpoint",
                                  str(model / "model.pt"), "--option", "levels=1"), tmp / "out")


def resume_with_other_threads(tmp, dataset, hold):
    """Issue 16: a 1-thread run resumed with 2 threads ended 2.7e-3 away from a 1-thread run."""
    out = tmp / "out"
    assert main(train_small(dataset.root, out)) == 0
    (out / "model.pt").unlink()  # a run interrupted after its checkpoint of step 2
    return Setup([*train_small(dataset.root, out), "--threads", "2"], out)


def negative_seed(tmp, dataset, hold):
    return Setup(train_small(dataset.root, tmp / "out", "--seed", "-1"), tmp / "out")


def manifest_case(change: Callable[[dict], None], command: str = "register"
                  ) -> SetupFunction:
    """A dataset whose manifest ``change`` broke, used by ``command`` (register or train)."""
    def setup(tmp, dataset, hold):
        root = dataset_copy(dataset, tmp, change)
        if command == "train":
            return Setup(train_small(root, tmp / "out"), tmp / "out")
        return Setup(register_dataset(root, tmp / "out"), tmp / "out")
    return setup


def nan_affine(manifest: dict) -> None:
    manifest["grid"]["affine"][0][0] = float("nan")


def region_of_unknown_label(manifest: dict) -> None:
    next(iter(manifest["regions"].values())).append(9999)


def add_test_subjects_to_train(manifest: dict) -> None:
    manifest["splits"]["train"] += manifest["splits"]["test"]


def disk_full(tmp, dataset, hold):
    def no_space(image, filename):
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    hold.enter_context(mock.patch("nibabel.save", no_space))
    return Setup(register_dataset(dataset.root, tmp / "out", "identity"), tmp / "out")


def train_disk_full(tmp, dataset, hold):
    def no_space(state, path):  # what torch's writer raises on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    hold.enter_context(mock.patch("torch.save", no_space))
    return Setup(train_small(dataset.root, tmp / "out"), tmp / "out",
                 frozenset({"loss.csv", "validation.csv"}))  # the logs of the steps before


def demo_data_read_only(tmp, dataset, hold):
    out = unwritable(tmp)
    return Setup(["demo-data", "--out", str(out), "--subjects", "4", "--scale", "0.25"], out)


def per_pair_table(tmp: Path, dataset: Dataset) -> Path:
    out = tmp / "run"
    assert main(register_pairs(dataset.root, out, "identity", "--pair", "demo06", "demo05")
                ) == 0  # both test pairs
    assert main(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(out),
                 "--test-pairs"]) == 0
    table = tmp / "per_pair.csv"
    assert main(["aggregate", "--experiment", "main", "--from-dir", str(out), "--out",
                 str(table)]) == 0
    return table


def aggregate_read_only(tmp, dataset, hold):
    out = unwritable(tmp)
    assert main(register_pairs(dataset.root, tmp / "run", "identity")) == 0
    assert main(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(tmp / "run"),
                 "--pair", "demo05", "demo06"]) == 0
    return Setup(["aggregate", "--experiment", "main", "--from-dir", str(tmp / "run"), "--out",
                  str(out / "per_pair.csv")], out)


def aggregate_out_is_a_folder(tmp, dataset, hold):
    assert main(register_pairs(dataset.root, tmp / "run", "identity")) == 0
    assert main(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(tmp / "run"),
                 "--pair", "demo05", "demo06"]) == 0
    (tmp / "out").mkdir()
    return Setup(["aggregate", "--experiment", "main", "--from-dir", str(tmp / "run"), "--out",
                  str(tmp / "out")], tmp / "out")


def report_case(command: str, out_is_a_file: bool = False) -> SetupFunction:
    """``tables`` or ``figures`` into a read-only folder, or into a path that is a file."""
    def setup(tmp, dataset, hold):
        table = per_pair_table(tmp, dataset)
        if out_is_a_file:
            out = tmp / "out"
            out.write_text("a file the user keeps")
        else:
            out = unwritable(tmp)
        return Setup([command, "--per-pair", str(table), "--out-dir", str(out)], out)
    return setup


def export_read_only(tmp, dataset, hold):
    write_field(tmp / "field.nii.gz", np.zeros((3, *dataset.shape), np.float32), dataset.affine)
    out = unwritable(tmp)
    return Setup(["export-field", str(tmp / "field.nii.gz"), "--out", str(out / "f.nii.gz")],
                 out)


def same_subject_twice(tmp, dataset, hold):
    return Setup(register_pairs(dataset.root, tmp / "out", pair=("demo05", "demo05")),
                 tmp / "out")


def keep_volumes_of_an_unscored_pair(tmp, dataset, hold):
    out = tmp / "run"
    assert main(register_pairs(dataset.root, out, "identity")) == 0
    return Setup(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(out),
                  "--pair", "demo05", "demo06", "--keep-volumes", "demo06", "demo05"], out)


def complex_image(tmp, dataset, hold):
    moving, moving_labels, fixed, fixed_labels = pair_paths(dataset)
    image = nib.load(str(moving))
    data = np.asarray(image.dataobj).astype(np.complex64) * (1 + 1j)
    nib.save(nib.Nifti1Image(data, image.affine), str(tmp / "complex.nii.gz"))
    return Setup(["register", "identity", "--moving-image", str(tmp / "complex.nii.gz"),
                  "--fixed-image", str(fixed), "--out", str(tmp / "out")], tmp / "out")


def syn_on_two_voxels(tmp, dataset, hold):
    rng = np.random.default_rng(0)
    for name in ("moving", "fixed"):
        nib.save(nib.Nifti1Image(rng.random((2, 2, 2)).astype(np.float32), np.eye(4)),
                 str(tmp / f"{name}.nii.gz"))
    return Setup(["register", "syn", "--moving-image", str(tmp / "moving.nii.gz"),
                  "--fixed-image", str(tmp / "fixed.nii.gz"), "--out", str(tmp / "out")],
                 tmp / "out")


# --- issue 22 ------------------------------------------------------------------------------


def learn2reg_folder(tmp: Path, dataset: Dataset, name: str = "l2r") -> Path:
    """A Learn2Reg folder of both test pairs (identity's fields, exported)."""
    source = tmp / f"{name}-source"
    assert main(register_pairs(dataset.root, source, "identity", "--test-pairs", pair=None)) == 0
    assert main(["learn2reg-export", str(source), "--data", str(dataset.root), "--test-pairs",
                 "--out", str(tmp / name)]) == 0
    return tmp / name


def learn2reg_import(folder: Path, dataset: Dataset, out_root: Path, *extra: str) -> list[str]:
    return ["learn2reg-import", str(folder), "--data", str(dataset.root), "--out-root",
            str(out_root), "--method", "external", *extra]


def import_into_a_scored_run(tmp, dataset, hold):
    """The import wrote its field beside affine's metrics.json, which aggregate then reported."""
    out = tmp / "run"
    assert main(register_pairs(dataset.root, out, "identity")) == 0
    assert main(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(out),
                 "--pair", "demo05", "demo06"]) == 0
    return Setup(learn2reg_import(learn2reg_folder(tmp, dataset), dataset, out, "--pair",
                                  "demo05", "demo06"), out)


def import_over_another_import(tmp, dataset, hold):
    out = tmp / "run"
    assert main(learn2reg_import(learn2reg_folder(tmp, dataset), dataset, out,
                                 "--test-pairs")) == 0
    return Setup(learn2reg_import(learn2reg_folder(tmp, dataset, "other"), dataset, out,
                                  "--test-pairs"), out)


def import_labelled_like_a_method(tmp, dataset, hold):
    return Setup(learn2reg_import(learn2reg_folder(tmp, dataset), dataset, tmp / "run",
                                  "--test-pairs", "--label", "VoxelMorph"), tmp / "run")


def export_mixed_run(tmp, dataset, hold):
    run = mixed_run(tmp, dataset, keep_record=False)
    return Setup(["learn2reg-export", str(run), "--data", str(dataset.root), "--test-pairs",
                  "--out", str(tmp / "l2r")], tmp / "l2r")


def export_field_of_the_reversed_pair(tmp, dataset, hold):
    out = tmp / "run"
    assert main(register_pairs(dataset.root, out, "affine", pair=("demo06", "demo05"))) == 0
    (out / "demo05").mkdir()
    os.replace(out / "demo06" / "demo05", out / "demo05" / "demo06")
    return Setup(["learn2reg-export", str(out), "--data", str(dataset.root), "--pair", "demo05",
                  "demo06", "--out", str(tmp / "l2r")], tmp / "l2r")


def option_not_trained_with(tmp, dataset, hold):
    """register-pairs accepted smoothness_weight=5 for a model trained with 1.0, and recorded 5."""
    model = tmp / "model"
    assert main(train_small(dataset.root, model)) == 0
    return Setup(register_pairs(dataset.root, tmp / "run", "dualprnet", "--checkpoint",
                                str(model / "model.pt"), "--option", "smoothness_weight=5"),
                 tmp / "run")


def score_on_regenerated_data(tmp, dataset, hold):
    """evaluate-pairs scored the old fields against the new images and labels (Dice 0.7235
    where they score 0.7021 on their own data)."""
    root, out = dataset_copy(dataset, tmp), tmp / "run"
    assert main(register_pairs(root, out, "identity")) == 0
    make_demo(root, subjects=6, scale=0.25, seed=1)  # regenerated: the same IDs, other data
    return Setup(["evaluate-pairs", "--data", str(root), "--out-root", str(out), "--pair",
                  "demo05", "demo06"], out)


def without_package(method: str, command: str) -> SetupFunction:
    """``command`` (register or register-pairs) of a method whose optional package is absent:
    a ModuleNotFoundError after run.json and an empty pair folder were written."""
    def setup(tmp, dataset, hold):
        hold.enter_context(mock.patch.object(get_method(method), "requires",
                                             {"regbench-absent-package": "baselines"}))
        if command == "register":
            return Setup(register_dataset(dataset.root, tmp / "out", method), tmp / "out")
        return Setup(register_pairs(dataset.root, tmp / "run", method), tmp / "run")
    return setup


def prepare_lpba40(*extra: str) -> SetupFunction:
    """``prepare lpba40`` with ``extra``: --seed -1 and --threads 0 ended in a traceback."""
    def setup(tmp, dataset, hold):
        (tmp / "raw").mkdir()
        return Setup(["prepare", "lpba40", "--raw", str(tmp / "raw"), "--out", str(tmp / "out"),
                      *extra], tmp / "out")
    return setup


def ablation_table_of_main_runs(tmp, dataset, hold):
    """tables --kind ablation wrote an ablation table with no ablation method in it."""
    table = per_pair_table(tmp, dataset)  # identity alone, as in the main experiment
    return Setup(["tables", "--kind", "ablation", "--per-pair", str(table), "--out-dir",
                  str(tmp / "tables")], tmp / "tables")


# --- found by the second probe of issue 22 -------------------------------------------------


def export_beside_another_export(tmp, dataset, hold):
    """An export of one pair into a Learn2Reg folder holding another run's export of both pairs
    left a folder of two runs' fields (one submission, exit 0)."""
    folder = learn2reg_folder(tmp, dataset)  # identity's fields of both test pairs
    run = tmp / "affine-run"
    assert main(register_pairs(dataset.root, run, "affine")) == 0
    return Setup(["learn2reg-export", str(run), "--data", str(dataset.root), "--pair", "demo05",
                  "demo06", "--out", str(folder)], folder)


def slice_spacing_table_of_main_runs(tmp, dataset, hold):
    """tables --kind slice_spacing wrote a slice-spacing table with no thinned run in it."""
    table = per_pair_table(tmp, dataset)  # identity at slice step 1 alone
    return Setup(["tables", "--kind", "slice_spacing", "--per-pair", str(table), "--out-dir",
                  str(tmp / "tables")], tmp / "tables")


def checkpoint_not_a_torch_file(tmp, dataset, hold):
    """A JSON file given as the checkpoint: torch's paragraph (advising weights_only=False)
    ended the error, over several lines."""
    (tmp / "train.json").write_text('{"method": "dualprnet"}')
    return Setup(register_pairs(dataset.root, tmp / "run", "dualprnet", "--checkpoint",
                                str(tmp / "train.json")), tmp / "run")


def table_of_runs_on_other_pairs(tmp, dataset, hold):
    """After a partial evaluate-pairs (identity 1 pair, affine 2), tables compared the two over
    different pairs and bolded a "best" across them, with exit code 0."""
    folders = []
    for method, scored in (("identity", ["--pair", "demo05", "demo06"]),
                           ("affine", ["--test-pairs"])):
        out = tmp / "runs" / method
        assert main(register_pairs(dataset.root, out, method, "--test-pairs", pair=None)) == 0
        assert main(["evaluate-pairs", "--data", str(dataset.root), "--out-root", str(out),
                     *scored]) == 0
        folders += ["--from-dir", str(out)]
    table = tmp / "per_pair.csv"
    assert main(["aggregate", "--experiment", "main", *folders, "--out", str(table)]) == 0
    return Setup(["tables", "--per-pair", str(table), "--out-dir", str(tmp / "tables")],
                 tmp / "tables")


def field_with_the_runtime_of_another_pair(tmp, dataset, hold):
    """Path-form evaluate scored a field with the runtime record of another pair: the field file
    was tied to nothing."""
    run = tmp / "run"
    assert main(register_pairs(dataset.root, run, "affine", "--test-pairs", pair=None)) == 0
    moving, moving_labels, _, fixed_labels = pair_paths(dataset)
    return Setup(["evaluate", "--moving-image", str(moving), "--moving-labels",
                  str(moving_labels), "--fixed-labels", str(fixed_labels), "--field",
                  str(run / "demo05" / "demo06" / "field.nii.gz"), "--runtime",
                  str(run / "demo06" / "demo05" / "runtime.json"), "--out", str(tmp / "out")],
                 tmp / "out")


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
    # issue 16
    "another-method-into-a-run": Case(another_method_into_a_run,
                                      "holds a pair of another setup ('identity'"),
    "evaluate-mixed-run": Case(evaluate_mixed_run, "in the run folder of 'identity'"),
    "evaluate-mixed-run-without-record": Case(evaluate_mixed_run_without_record,
                                              "a run folder holds one method's pairs"),
    "aggregate-mixed-run": Case(aggregate_mixed_run, "in the run folder of 'identity'"),
    "field-of-the-reversed-pair": Case(field_of_the_reversed_pair,
                                       "the field of demo06 -> demo05, not of demo05 -> demo06"),
    "unfinished-checkpoint": Case(unfinished_checkpoint, "step 2 of 3, an unfinished training"),
    "checkpoint-of-another-shape": Case(checkpoint_of_another_shape,
                                        "weights do not fit the network of options"),
    "resume-with-other-threads": Case(resume_with_other_threads,
                                      "threads 1 != 2: a resume with other threads"),
    "negative-seed": Case(negative_seed, "seed must be >= 0, got -1"),
    "spacing-contradicts-affine": Case(
        manifest_case(lambda m: m["grid"].update(spacing_mm=[2.0, 2.0, 2.0])),
        "grid.spacing_mm [2.0, 2.0, 2.0] contradicts grid.affine"),
    "nan-in-grid.affine": Case(manifest_case(nan_affine), "grid holds NaN or infinite"),
    "empty-regions": Case(manifest_case(lambda m: m.update(regions={})), "regions is empty"),
    "label-key-not-an-integer": Case(
        manifest_case(lambda m: m["labels"].update(left="Left")),
        "label key 'left' is not an integer"),
    "region-of-an-unknown-label": Case(manifest_case(region_of_unknown_label),
                                       "uses labels that are not under labels: [9999]"),
    "test-subjects-in-train": Case(manifest_case(add_test_subjects_to_train, "train"),
                                   "are in splits.train and in splits.test"),
    "register-disk-full": Case(disk_full, "No space left on device; free some space"),
    "train-disk-full": Case(train_disk_full, "cannot write the checkpoint"),
    "demo-data-read-only": Case(demo_data_read_only, "give a writable"),
    "aggregate-read-only": Case(aggregate_read_only, "give a writable"),
    "aggregate-out-is-a-folder": Case(aggregate_out_is_a_folder, "is a folder; give the path"),
    "tables-read-only": Case(report_case("tables"), "give a writable"),
    "figures-read-only": Case(report_case("figures"), "give a writable"),
    "tables-out-dir-is-a-file": Case(report_case("tables", out_is_a_file=True),
                                     "is not a folder"),
    "export-field-read-only": Case(export_read_only, "give a writable"),
    "same-subject-twice": Case(same_subject_twice, "a subject registered onto itself"),
    "keep-volumes-of-an-unscored-pair": Case(keep_volumes_of_an_unscored_pair,
                                             "not a pair this command scores"),
    "complex-image": Case(complex_image, "complex-valued image"),
    "syn-on-two-voxels": Case(syn_on_two_voxels, "ANTs failed on volumes of (2, 2, 2)"),
    # issue 22
    "import-into-a-scored-run": Case(import_into_a_scored_run,
                                     "holds a pair of another setup ('identity'"),
    "import-over-another-import": Case(import_over_another_import,
                                       "holds a pair of another setup ('external'"),
    "import-labelled-like-a-method": Case(import_labelled_like_a_method,
                                          "the name or label of the suite's method 'voxelmorph'"),
    "fireants-without-its-package": Case(without_package("fireants", "register-pairs"),
                                         'install it with: pip install -e ".[baselines]"'),
    "register-fireants-without-its-package": Case(without_package("fireants", "register"),
                                                  'install it with: pip install -e '
                                                  '".[baselines]"'),
    "elastix-without-its-package": Case(without_package("elastix", "register-pairs"),
                                        'needs regbench-absent-package, which is not installed'),
    "prepare-negative-seed": Case(prepare_lpba40("--seed", "-1"),
                                  "--seed: must be a whole number >= 0, got '-1'"),
    "prepare-zero-threads": Case(prepare_lpba40("--threads", "0"),
                                 "--threads: must be a whole number >= 1, got '0'"),
    "crop-jitter-beyond-the-grid": Case(
        lambda tmp, dataset, hold: Setup(train_small(dataset.root, tmp / "out", "--crop-jitter",
                                                     "100"), tmp / "out"),
        "crop_jitter 100: moving and fixed would part by up to 200 voxels on a grid of "
        "40x48x40; give at most 19"),
    "slice-step-beyond-the-grid": Case(
        lambda tmp, dataset, hold: Setup(register_pairs(dataset.root, tmp / "run", "identity",
                                                        "--slice-step", "1000"), tmp / "run"),
        "slice step 1000: keeps 1 of the 48 slices along axis 1; give a step from 1 to 47"),
    "train-slice-step-beyond-the-grid": Case(
        lambda tmp, dataset, hold: Setup(train_small(dataset.root, tmp / "out",
                                                     "--slice-step", "48"), tmp / "out"),
        "slice step 48: keeps 1 of the 48 slices"),
    "register-slice-step-beyond-the-grid": Case(
        lambda tmp, dataset, hold: Setup(register_dataset(dataset.root, tmp / "out", "identity",
                                                          "--slice-step", "1000"), tmp / "out"),
        "slice step 1000: keeps 1 of the 48 slices"),
    "ablation-table-of-main-runs": Case(ablation_table_of_main_runs,
                                        "no run of the ablation (dualprnet-ssf, dualprnet-dsf), "
                                        "only identity"),
    "score-on-regenerated-data": Case(score_on_regenerated_data,
                                      "a field made from other data than the pair's files now"),
    "option-not-trained-with": Case(option_not_trained_with,
                                    "trained with smoothness_weight=1.0, not smoothness_weight=5"),
    "export-mixed-run": Case(export_mixed_run, "a run folder holds one method's pairs"),
    "export-field-of-the-reversed-pair": Case(
        export_field_of_the_reversed_pair,
        "the field of demo06 -> demo05, not of demo05 -> demo06"),
    # issue 22, second probe
    "option-given-twice": Case(
        lambda tmp, dataset, hold: Setup(register_pairs(
            dataset.root, tmp / "run", "affine", "--option", "aff_metric=mattes", "--option",
            "aff_metric=GC"), tmp / "run"),
        "--option aff_metric is given twice ('aff_metric=mattes' and 'aff_metric=GC')"),
    "train-option-given-twice": Case(
        lambda tmp, dataset, hold: Setup(train_small(dataset.root, tmp / "out", "--option",
                                                     "levels=3"), tmp / "out"),
        "--option levels is given twice"),
    "export-beside-another-export": Case(
        export_beside_another_export,
        "holds 1 Learn2Reg file(s) this export does not write (disp_demo05_demo06.nii.gz)"),
    "slice-spacing-table-of-main-runs": Case(slice_spacing_table_of_main_runs,
                                             "no run at a slice step above 1"),
    "checkpoint-not-a-torch-file": Case(
        checkpoint_not_a_torch_file,
        "not a readable regbench checkpoint (not a PyTorch file of tensors and plain data)"),
    # issue 22, the audit's silent or late failures
    "table-of-runs-on-other-pairs": Case(
        table_of_runs_on_other_pairs,
        "were scored on different pairs, so a table would compare them over different pairs: "
        "run 'identity' has 1 of the 2 pairs, lacking demo06 -> demo05"),
    "field-with-the-runtime-of-another-pair": Case(
        field_with_the_runtime_of_another_pair,
        "demo06/demo05/runtime.json: the record of another field than "),
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


# --- one run per folder, and what a registration records (issue 16) ------------------------


def test_runtime_records_the_pair_and_the_checkpoint(demo_dataset, tmp_path):
    model = tmp_path / "model"
    assert main(train_small(demo_dataset.root, model)) == 0
    for name, extra, step in (("model.pt", [], 3), ("checkpoint.pt", ["--allow-unfinished"], 2)):
        out = tmp_path / name
        assert main(register_pairs(demo_dataset.root, out, "dualprnet", "--checkpoint",
                                   str(model / name), *extra, pair=("demo06", "demo05"))) == 0
        runtime = json.loads((out / "demo06" / "demo05" / "runtime.json").read_text())
        assert (runtime["moving"], runtime["fixed"]) == ("demo06", "demo05")
        assert runtime["data_fingerprint"] == demo_dataset.fingerprint(["demo06", "demo05"])
        digest = hashlib.sha256((model / name).read_bytes()).hexdigest()
        assert runtime["checkpoint"] == {"sha256": digest, "step": step, "steps": 3,
                                         "finished": name == "model.pt"}
        assert json.loads((out / "run.json").read_text())["checkpoint"]["sha256"] == digest
        assert main(["evaluate-pairs", "--data", str(demo_dataset.root), "--out-root", str(out),
                     "--pair", "demo06", "demo05"]) == 0
        metrics = json.loads((out / "demo06" / "demo05" / "metrics.json").read_text())
        assert metrics["checkpoint"]["step"] == step and metrics["moving"] == "demo06"


def test_runtime_ties_the_field_file_and_an_older_record_stays_accepted(demo_dataset, tmp_path):
    """runtime.json records the SHA-256 of its field file (registration and Learn2Reg import);
    one without it, written before, is scored as before."""
    run = tmp_path / "run"
    assert main(register_pairs(demo_dataset.root, run, "affine")) == 0
    imported = tmp_path / "imported"
    assert main(learn2reg_import(learn2reg_folder(tmp_path, demo_dataset), demo_dataset,
                                 imported, "--test-pairs")) == 0
    for pair in (run / "demo05" / "demo06", imported / "demo06" / "demo05"):
        runtime = json.loads((pair / "runtime.json").read_text())
        digest = hashlib.sha256((pair / "field.nii.gz").read_bytes()).hexdigest()
        assert runtime["field_sha256"] == digest, pair
    pair = run / "demo05" / "demo06"
    runtime = json.loads((pair / "runtime.json").read_text())
    del runtime["field_sha256"]  # as written before the field was hashed
    write_json(pair / "runtime.json", runtime)
    moving, moving_labels, _, fixed_labels = pair_paths(demo_dataset)
    assert main(["evaluate", "--moving-image", str(moving), "--moving-labels",
                 str(moving_labels), "--fixed-labels", str(fixed_labels), "--field",
                 str(pair / "field.nii.gz"), "--runtime", str(pair / "runtime.json"), "--out",
                 str(tmp_path / "out")]) == 0
    assert main(["evaluate-pairs", "--data", str(demo_dataset.root), "--out-root", str(run),
                 "--pair", "demo05", "demo06"]) == 0


def test_replace_stale_deletes_the_pairs_of_the_other_run(demo_dataset, tmp_path):
    out = tmp_path / "run"
    assert main(register_pairs(demo_dataset.root, out, "identity", "--test-pairs",
                               pair=None)) == 0
    assert (out / "demo06" / "demo05" / "field.nii.gz").is_file()
    assert main(register_pairs(demo_dataset.root, out, "affine", "--replace-stale")) == 0
    assert not (out / "demo06").exists()  # identity's other pair is gone
    assert json.loads((out / "demo05" / "demo06" / "runtime.json").read_text())["method"] == \
        "affine"
    assert json.loads((out / "run.json").read_text())["method"] == "affine"


def test_processes_of_one_run_share_its_folder_and_refuse_another(demo_dataset, tmp_path,
                                                                 capsys):
    from regbench.runs import claim_run

    out = tmp_path / "run"
    identity = {"method": "identity", "options": {}, "slice_step": 1, "checkpoint": None}
    with claim_run(out, identity):  # another job of the same run is registering its pair
        assert main(register_pairs(demo_dataset.root, out, "identity")) == 0
        code, err = run_cli(register_pairs(demo_dataset.root, tmp_path / "run", "affine",
                                           "--replace-stale", pair=("demo06", "demo05")),
                            capsys)
    assert code == 2 and "another regbench process is registering another method" in err, err
    assert main(register_pairs(demo_dataset.root, out, "affine", "--replace-stale")) == 0


def test_ctrl_c_in_register_says_interrupted(demo_dataset, tmp_path, capsys, monkeypatch):
    def ctrl_c(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(get_method("identity"), "register", ctrl_c)
    code, err = run_cli(register_dataset(demo_dataset.root, tmp_path / "out"), capsys)
    assert code == 130 and err.strip().splitlines()[-1] == "regbench: interrupted", err


def test_a_learned_method_registers_with_the_options_it_was_trained_with(demo_dataset, tmp_path):
    """Issue 22: options given beside a checkpoint must be the trained ones, and are recorded."""
    model = tmp_path / "model"
    assert main(train_small(demo_dataset.root, model)) == 0
    assert main(register_pairs(demo_dataset.root, tmp_path / "run", "dualprnet", "--checkpoint",
                               str(model / "model.pt"), "--option", "smoothness_weight=1",
                               "--option", "levels=2")) == 0
    runtime = json.loads((tmp_path / "run" / "demo05" / "demo06" / "runtime.json").read_text())
    assert runtime["options"] == load_checkpoint(model / "model.pt")["options"]
