"""The Learn2Reg displacement-field format (regbench.learn2reg): export, import, round trip."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from regbench.cli import main as cli
from regbench.evaluate import evaluate_pairs
from regbench.io import InputError, write_field, write_json
from regbench.learn2reg import read_learn2reg_field
from regbench.naming import ordered_pairs


def smooth_field(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 3) for _ in range(3)])
    return (3.0 * field / np.abs(field).max()).astype(np.float32)


def write_run(root: Path, dataset, pairs) -> None:
    for i, (moving, fixed) in enumerate(pairs):
        write_field(root / moving / fixed / "field.nii.gz", smooth_field(dataset.shape, i),
                    dataset.affine)
        write_json(root / moving / fixed / "runtime.json",
                   {"method": "made", "time_s": 1.0, "device": "test", "slice_step": 1})


def test_export_then_import_gives_the_same_scores(demo_dataset, tmp_path: Path) -> None:
    pairs = ordered_pairs(demo_dataset.test)
    original = tmp_path / "run"
    write_run(original, demo_dataset, pairs)
    folder = tmp_path / "learn2reg"
    data = ["--data", str(demo_dataset.root), "--test-pairs"]
    assert cli(["learn2reg-export", str(original), "--out", str(folder), *data]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"disp_{fixed}_{moving}.nii.gz" for moving, fixed in pairs)
    imported = tmp_path / "imported"
    assert cli(["learn2reg-import", str(folder), "--out-root", str(imported), "--method",
                "external", "--label", "External", *data]) == 0
    before = evaluate_pairs(demo_dataset, pairs, original)
    after = evaluate_pairs(demo_dataset, pairs, imported)
    for old, new in zip(before, after, strict=True):
        assert new["method"] == "external" and new["label"] == "External"
        assert new["time_s"] is None and new["options"] == {"learn2reg_folder": str(folder)}
        assert new["dice_labels"] == old["dice_labels"] and new["mean_dice_faim"] > 0
        for key in ("mean_dice_merged", "mean_hd95", "folding_percent", "ndv_percent"):
            assert new[key] == old[key]


def test_exported_field_warps_as_learn2regs_evaluation(demo_dataset, tmp_path: Path) -> None:
    """Learn2Reg warps the moving labels with map_coordinates(moving, identity + disp, order=0)
    on the (X, Y, Z, 3) array of the file: the suite's warped labels agree up to ties."""
    moving, fixed = ordered_pairs(demo_dataset.test)[0]
    run = tmp_path / "run"
    write_run(run, demo_dataset, [(moving, fixed)])
    assert cli(["learn2reg-export", str(run), "--out", str(tmp_path / "l2r"), "--data",
                str(demo_dataset.root), "--pair", moving, fixed]) == 0
    disp = nib.load(tmp_path / "l2r" / f"disp_{fixed}_{moving}.nii.gz").get_fdata()
    assert disp.shape == (*demo_dataset.shape, 3)
    labels = demo_dataset.label_map(moving)
    theirs = ndimage.map_coordinates(labels, np.indices(labels.shape) + disp.transpose(3, 0, 1, 2),
                                     order=0)
    record = evaluate_pairs(demo_dataset, [(moving, fixed)], run, keep_volumes=[(moving, fixed)])
    ours = np.asarray(nib.load(run / moving / fixed / "warped_labels.nii.gz").dataobj)
    assert record[0]["mean_dice_faim"] > 0
    assert np.mean(ours == theirs) > 0.999


def test_import_reads_npz_components_first_and_refuses_bad_folders(demo_dataset,
                                                                   tmp_path: Path) -> None:
    moving, fixed = ordered_pairs(demo_dataset.test)[0]
    field = smooth_field(demo_dataset.shape, 0)
    folder = tmp_path / "l2r"
    folder.mkdir()
    np.savez(folder / f"disp_{fixed}_{moving}.npz", arr_0=field)
    args = ["learn2reg-import", str(folder), "--data", str(demo_dataset.root), "--method", "x",
            "--pair", moving, fixed]
    assert cli([*args, "--out-root", str(tmp_path / "run")]) == 0
    written = nib.load(tmp_path / "run" / moving / fixed / "field.nii.gz")
    assert np.array_equal(np.moveaxis(written.get_fdata()[:, :, :, 0, :], -1, 0), field)
    assert json.loads((tmp_path / "run" / moving / fixed / "runtime.json").read_text())[
        "method"] == "x"
    # The reversed pair has no file; a file of the wrong shape is refused; nothing is written.
    assert cli([*args[:-3], "--pair", fixed, moving, "--out-root", str(tmp_path / "r2")]) == 2
    np.savez(folder / f"disp_{fixed}_{moving}.npz", arr_0=field[:, :-1])
    assert cli([*args, "--out-root", str(tmp_path / "r3")]) == 2
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()
    assert cli([*args[:1], str(tmp_path / "nowhere"), *args[2:], "--out-root",
                str(tmp_path / "r4")]) == 2


def test_export_of_a_missing_field_is_an_error(demo_dataset, tmp_path: Path) -> None:
    moving, fixed = ordered_pairs(demo_dataset.test)[0]
    with pytest.raises(SystemExit):  # no pair chosen
        cli(["learn2reg-export", str(tmp_path), "--data", str(demo_dataset.root), "--out",
             str(tmp_path / "o")])
    assert cli(["learn2reg-export", str(tmp_path), "--data", str(demo_dataset.root), "--out",
                str(tmp_path / "o"), "--pair", moving, fixed]) == 2
    write_run(tmp_path / "run", demo_dataset, [(moving, fixed)])  # the first pair only
    assert cli(["learn2reg-export", str(tmp_path / "run"), "--data", str(demo_dataset.root),
                "--out", str(tmp_path / "partial"), "--test-pairs"]) == 2
    assert not (tmp_path / "partial").exists()  # refused before anything was written


def test_what_a_learn2reg_file_may_hold(tmp_path: Path) -> None:
    """As its docstring says: NIfTI (X, Y, Z, 3) or the suite's (X, Y, Z, 1, 3); .npz either
    layout; a NIfTI with the components first is refused, naming the file."""
    shape = (6, 5, 4)
    field = smooth_field(shape, 1)
    nib.save(nib.Nifti1Image(np.moveaxis(field, 0, -1), np.eye(4)), tmp_path / "last.nii.gz")
    write_field(tmp_path / "suite.nii.gz", field, np.eye(4))
    np.savez(tmp_path / "first.npz", arr_0=field)
    np.savez(tmp_path / "last.npz", arr_0=np.moveaxis(field, 0, -1))
    for name in ("last.nii.gz", "suite.nii.gz", "first.npz", "last.npz"):
        assert np.array_equal(read_learn2reg_field(tmp_path / name, shape), field), name
    nib.save(nib.Nifti1Image(field, np.eye(4)), tmp_path / "first.nii.gz")
    with pytest.raises(InputError, match=r"first\.nii\.gz: expected a displacement field of "
                                         r"shape \(X, Y, Z, 1, 3\) or \(X, Y, Z, 3\)"):
        read_learn2reg_field(tmp_path / "first.nii.gz", shape)


def test_an_import_never_leaves_the_scores_of_another_field(demo_dataset, tmp_path: Path) -> None:
    """Issue 22: an import beside an earlier run's metrics.json let aggregate report the old
    scores for the new fields. The same import again removes the scores of the fields it
    replaces; an import of another folder is refused, or with --replace-stale replaces the run."""
    pairs = ordered_pairs(demo_dataset.test)
    data = ["--data", str(demo_dataset.root), "--test-pairs"]
    folders = {}
    for name in ("first", "second"):
        write_run(tmp_path / f"{name}-run", demo_dataset, pairs)
        folders[name] = tmp_path / name
        assert cli(["learn2reg-export", str(tmp_path / f"{name}-run"), "--out",
                    str(folders[name]), *data]) == 0
    run = tmp_path / "imported"
    importing = ["learn2reg-import", "--out-root", str(run), "--method", "external", *data]
    scored = run / pairs[0][0] / pairs[0][1] / "metrics.json"
    assert cli([*importing, str(folders["first"])]) == 0
    evaluate_pairs(demo_dataset, pairs, run)
    # the same folder again, its fields changed: the old scores go with the old fields
    moving, fixed = pairs[0]
    write_field(folders["first"] / f"disp_{fixed}_{moving}.nii.gz",
                smooth_field(demo_dataset.shape, 9), demo_dataset.affine)
    assert cli([*importing, str(folders["first"])]) == 0
    assert not scored.exists()
    # another folder: another setup
    assert cli([*importing, str(folders["second"])]) == 2
    assert cli([*importing, str(folders["second"]), "--replace-stale"]) == 0
    runtime = json.loads((run / moving / fixed / "runtime.json").read_text())
    assert runtime["options"] == {"learn2reg_folder": str(folders["second"])}
    assert (runtime["moving"], runtime["fixed"]) == (moving, fixed)
    assert runtime["data_fingerprint"] == demo_dataset.fingerprint([moving, fixed])
    assert json.loads((run / "run.json").read_text())["label"] == "external"
