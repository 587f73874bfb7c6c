"""Per-pair evaluation: warping, metrics.json and its files, the `regbench evaluate` command."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from regbench import evaluate as evaluate_module
from regbench import metric_table
from regbench.cli import main
from regbench.data.dataset import Dataset, make_manifest, write_manifest, write_subject
from regbench.degrade import thin_slices
from regbench.evaluate import evaluate_dataset_pair, evaluate_pair, evaluate_paths, record_keys
from regbench.io import InputError, write_field
from regbench.metrics import (
    dice_per_label,
    hd95,
    learn2reg_case_dice,
    nanmean,
    non_diffeomorphic_volume,
)
from regbench.reports.aggregate import aggregate, base_columns, find_metrics, read_per_pair
from regbench.reports.tables import make_tables

torch.set_num_threads(1)

SHAPE = (20, 24, 16)
AFFINE = np.array([[-1.2, 0, 0, 10], [0, 1.0, 0, -20], [0, 0, 1.5, -5], [0, 0, 0, 1]])
SPACING = (1.2, 1.0, 1.5)
LABELS = {1: "front-left", 2: "front-right", 3: "back", 4: "never present"}
REGIONS = {"Front": [1, 2], "Back": [3]}
RUNTIME = {"method": "toy", "time_s": 1.25, "device": "test CPU (1 thread)", "slice_step": 1,
           "versions": {"toy": "1.0"}, "options": {"alpha": 2}, "seed": 7}


def subject_volumes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of labels 1-3 whose edges move a voxel or two between subjects, and an image."""
    rng = np.random.default_rng(seed)
    a, b, c = (int(v) for v in rng.integers(-1, 2, size=3))
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[3 + a:9, 4:12 + b, 3:13] = 1
    labels[10:17 + a, 4:12, 3:13 + c] = 2
    labels[4:16, 14 + b:21, 4 + c:12] = 3
    image = 0.2 + 0.25 * labels + 0.05 * rng.random(SHAPE)
    return (image / image.max()).astype(np.float32), labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    root = tmp_path_factory.mktemp("tiny")
    subjects = ["s1", "s2", "s3"]
    for seed, subject in enumerate(subjects):
        write_subject(root, subject, *subject_volumes(seed), AFFINE)
    write_manifest(root, make_manifest(
        name="tiny", source="synthetic", subjects=subjects,
        splits={"train": subjects[:1], "test": subjects[1:]}, labels=LABELS, regions=REGIONS,
        shape=SHAPE, affine=AFFINE))
    return Dataset.load(root)


def zero_field() -> np.ndarray:
    return np.zeros((3, *SHAPE), dtype=np.float32)


def strict_json(path) -> dict:
    def no_constants(name):
        raise ValueError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=no_constants)


def test_identity_field_on_the_same_subject_is_perfect(dataset, tmp_path):
    out = tmp_path / "pair"
    record = evaluate_dataset_pair(dataset, "s2", "s2", zero_field(), out, runtime=RUNTIME)
    assert record["dice_faim"] == {"Front": 1.0, "Back": 1.0}
    assert record["dice_merged"] == {"Front": 1.0, "Back": 1.0}
    assert record["dice_labels"] == {"1": 1.0, "2": 1.0, "3": 1.0, "4": None}
    assert record["mean_dice_faim"] == record["mean_dice_merged"] == 1.0
    assert record["hd95"] == {"Front": 0.0, "Back": 0.0} and record["mean_hd95"] == 0.0
    assert record["folding_percent"] == 0.0 and record["log_jacobian_std"] == 0.0
    assert record["ndv_percent"] == 0.0
    # Files: the warped volumes on the dataset grid, equal to the inputs; metrics.json as returned.
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json", "warped.nii.gz", "warped_labels.nii.gz"]
    warped = nib.load(str(out / "warped.nii.gz"))
    warped_labels = nib.load(str(out / "warped_labels.nii.gz"))
    assert warped.shape == warped_labels.shape == SHAPE
    assert np.allclose(warped.affine, AFFINE) and np.allclose(warped_labels.affine, AFFINE)
    assert np.array_equal(warped.get_fdata(dtype=np.float32), dataset.image("s2"))
    assert np.issubdtype(warped_labels.get_data_dtype(), np.integer)
    assert np.array_equal(np.asanyarray(warped_labels.dataobj), dataset.label_map("s2"))
    assert strict_json(out / "metrics.json") == record


def test_without_volumes_only_the_metrics_are_written(dataset, tmp_path):
    out = tmp_path / "pair"
    evaluate_dataset_pair(dataset, "s1", "s3", zero_field(), out, runtime=RUNTIME)
    assert (out / "warped.nii.gz").is_file()
    again = evaluate_dataset_pair(dataset, "s1", "s3", zero_field(), out, runtime=RUNTIME,
                                  keep_volumes=False)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # older volumes gone too
    assert strict_json(out / "metrics.json") == again


def test_metrics_json_follows_the_contract(dataset, tmp_path):
    record = evaluate_dataset_pair(dataset, "s1", "s3", zero_field(), tmp_path, runtime=RUNTIME)
    written = strict_json(tmp_path / "metrics.json")
    assert list(written)[:len(record_keys())] == list(record_keys())
    assert list(written)[len(record_keys()):] == ["seed"]  # extra runtime keys are kept, after
    assert written["dataset"] == "tiny" and written["moving"] == "s1" and written["fixed"] == "s3"
    for key in ("method", "time_s", "device", "slice_step", "versions", "options", "seed"):
        assert written[key] == RUNTIME[key]
    assert list(written["dice_faim"]) == list(written["dice_merged"]) == list(REGIONS)
    assert list(written["hd95"]) == list(REGIONS)
    assert list(written["dice_labels"]) == ["1", "2", "3", "4"]
    assert record == written


def test_metrics_are_those_of_the_labels_the_field_produces(dataset, tmp_path):
    shift = 2
    field = zero_field()
    field[1] = shift  # pulls moving[x, y + 2, z]
    moving_labels, fixed_labels = dataset.label_map("s1"), dataset.label_map("s2")
    record = evaluate_dataset_pair(dataset, "s1", "s2", field, tmp_path)
    expected_labels = np.zeros_like(moving_labels)
    expected_labels[:, :-shift] = moving_labels[:, shift:]
    warped_labels = np.asanyarray(nib.load(str(tmp_path / "warped_labels.nii.gz")).dataobj)
    assert np.array_equal(warped_labels, expected_labels)
    per_label = dice_per_label(expected_labels, fixed_labels, [1, 2, 3])
    for label, value in per_label.items():
        assert record["dice_labels"][str(label)] == pytest.approx(value)
    front = nanmean([per_label[1], per_label[2]])
    assert record["dice_faim"]["Front"] == pytest.approx(front)
    assert record["dice_faim"]["Back"] == pytest.approx(per_label[3])
    assert record["mean_dice_faim"] == pytest.approx((front + per_label[3]) / 2)
    front_merged = dice_per_label(np.isin(expected_labels, [1, 2]).astype(int),
                                  np.isin(fixed_labels, [1, 2]).astype(int), [1])[1]
    assert record["dice_merged"]["Front"] == pytest.approx(front_merged)
    assert record["hd95"]["Back"] == pytest.approx(
        hd95(expected_labels == 3, fixed_labels == 3, SPACING))
    assert record["hd95"]["Back"] > 0
    # Without a runtime record: unknown method, time and device; this process's versions.
    assert record["method"] is None and record["time_s"] is None and record["device"] is None
    assert record["slice_step"] == 1 and "torch" in record["versions"]


def test_evaluate_pair_core(dataset):
    image, labels = dataset.image("s3"), dataset.label_map("s3")
    field = zero_field()
    field[0, 2:18] = 1.5 * np.sin(np.linspace(0, np.pi, 16))[:, None, None]
    warped, warped_labels, scores = evaluate_pair(
        moving_image=image, moving_labels=labels, fixed_labels=labels, field=field,
        regions=REGIONS, labels=[1, 2, 3], spacing=SPACING)
    assert warped.shape == warped_labels.shape == SHAPE and warped.dtype == np.float32
    assert set(np.unique(warped_labels)) <= set(np.unique(labels))
    assert 0 < scores["mean_dice_faim"] < 1 and scores["log_jacobian_std"] > 0
    assert scores["folding_percent"] == 0.0
    with pytest.raises(ValueError, match="field shape"):
        evaluate_pair(moving_image=image, moving_labels=labels, fixed_labels=labels,
                      field=field[:, :-1], regions=REGIONS, labels=[1], spacing=SPACING)


def test_anchored_metrics_are_scored_as_their_benchmarks_define_them(dataset):
    """NDV over the voxels where the moving image is above 0 (LUMIR), and Learn2Reg's case Dice
    (labels present in both subjects), not the suite's own means."""
    image, labels = dataset.image("s1"), dataset.label_map("s1")
    image[:, :12] = 0.0  # half of the grid is background
    fixed = dataset.label_map("s2")
    field = np.zeros((3, *SHAPE), dtype=np.float32)
    field[0, :, :12] = 0.9 * (-1.0) ** np.arange(SHAPE[0])[:, None, None]  # folds the background
    _, warped_labels, scores = evaluate_pair(
        moving_image=image, moving_labels=labels, fixed_labels=fixed, field=field,
        regions=REGIONS, labels=[1, 2, 3, 4], spacing=SPACING)
    assert scores["ndv_percent"] == pytest.approx(non_diffeomorphic_volume(field, image > 0))
    assert scores["ndv_percent"] < non_diffeomorphic_volume(field) / 2
    assert scores["mean_dice_l2r"] == pytest.approx(
        learn2reg_case_dice(warped_labels, fixed, labels, [1, 2, 3, 4]))


def test_a_metric_is_one_function_and_one_row(dataset, tmp_path, monkeypatch):
    """A toy metric added to the metric table reaches metrics.json, per_pair.csv and the main
    table (its column, header, digits and caption) with no other change."""

    def moved_percent(pair: metric_table.PairScoring, _) -> float:
        return 100.0 * float(np.mean(np.linalg.norm(pair.field, axis=0) > 0.5))

    toy = metric_table.MetricSpec(
        "moved_percent", moved_percent, "pair", "% of voxels moved by more than half a voxel",
        column="moved", header="Moved (%)", unit="%", digits=1,
        caption="% of voxels moved by more than half a voxel.")
    monkeypatch.setattr(metric_table, "METRICS", (*metric_table.METRICS, toy))
    field = zero_field()
    field[0, :SHAPE[0] // 2] = 1.0
    for moving, fixed in (("s1", "s2"), ("s2", "s3"), ("s3", "s1")):
        record = evaluate_dataset_pair(dataset, moving, fixed, field,
                                       tmp_path / "run" / moving / fixed, runtime=RUNTIME,
                                       keep_volumes=False)
        assert record["moved_percent"] == 50.0
    aggregate(find_metrics(tmp_path / "run"), tmp_path / "per_pair.csv", experiment="main")
    per_pair = read_per_pair([tmp_path / "per_pair.csv"])
    assert per_pair.columns[len(base_columns()) - 1] == "moved_percent"
    assert per_pair["moved_percent"].tolist() == [50.0] * 3
    make_tables(per_pair, "main", tmp_path / "tables", conventions=("faim",))
    numbers = pd.read_csv(tmp_path / "tables" / "table1_faim.csv")
    assert numbers["moved_mean"].tolist() == [50.0]
    markdown = (tmp_path / "tables" / "table1_faim.md").read_text()
    assert "| Moved (%)" in markdown and "50.0 ± 0.0" in markdown
    assert "Moved (%): % of voxels moved by more than half a voxel." in markdown


def test_slice_step_thins_the_warped_image_but_not_the_labels(dataset, tmp_path):
    runtime = {**RUNTIME, "slice_step": 8}
    record = evaluate_dataset_pair(dataset, "s1", "s1", zero_field(), tmp_path, runtime=runtime)
    assert record["slice_step"] == 8 and record["mean_dice_faim"] == 1.0
    warped = nib.load(str(tmp_path / "warped.nii.gz")).get_fdata(dtype=np.float32)
    assert np.allclose(warped, thin_slices(dataset.image("s1"), step=8, axis=1))
    assert not np.allclose(warped, dataset.image("s1"))
    with pytest.raises(InputError, match="slice_step 8 contradicts the requested slice step 1"):
        evaluate_dataset_pair(dataset, "s1", "s1", zero_field(), tmp_path, runtime=runtime,
                              slice_step=1)


def test_runtime_json_is_read_and_checked(dataset, tmp_path):
    runtime_path = tmp_path / "runtime.json"
    runtime_path.write_text(json.dumps(RUNTIME))
    record = evaluate_dataset_pair(dataset, "s1", "s2", zero_field(), tmp_path / "a",
                                   runtime=runtime_path)
    assert record["method"] == "toy" and record["time_s"] == 1.25
    runtime_path.write_text(json.dumps({**RUNTIME, "mean_dice_faim": 0.99}))
    with pytest.raises(InputError, match=r"runtime\.json: holds keys the evaluation computes"):
        evaluate_dataset_pair(dataset, "s1", "s2", zero_field(), tmp_path / "b",
                              runtime=runtime_path)
    runtime_path.write_text(json.dumps({**RUNTIME, "time_s": "fast"}))
    with pytest.raises(InputError, match=r"runtime\.json: time_s must be a number"):
        evaluate_dataset_pair(dataset, "s1", "s2", zero_field(), tmp_path / "c",
                              runtime=runtime_path)
    assert not (tmp_path / "b" / "metrics.json").exists()


def test_field_of_the_wrong_shape_names_the_file_and_leaves_no_metrics(dataset, tmp_path):
    out = tmp_path / "pair"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # stale result of an earlier run
    field_path = tmp_path / "field.nii.gz"
    write_field(field_path, np.zeros((3, 20, 24, 15), np.float32), AFFINE)
    with pytest.raises(InputError, match=rf"^{field_path}: displacement field of shape "
                                         r"\(3, 20, 24, 15\).* does not fit the grid"):
        evaluate_dataset_pair(dataset, "s1", "s2", field_path, out)
    assert list(out.iterdir()) == []
    with pytest.raises(InputError, match="displacement field of shape"):
        evaluate_dataset_pair(dataset, "s1", "s2", zero_field()[:2], out)


def test_field_with_another_voxel_spacing_is_rejected(dataset, tmp_path):
    field_path = tmp_path / "field.nii.gz"
    write_field(field_path, zero_field(), np.diag([-1.0, 1.0, 1.0, 1.0]))  # LAS, as AFFINE
    with pytest.raises(InputError, match=rf"^{field_path}: voxel spacing"):
        evaluate_dataset_pair(dataset, "s1", "s2", field_path, tmp_path / "out")


def test_failure_while_writing_leaves_no_metrics(dataset, tmp_path, monkeypatch):
    real_write_image = evaluate_module.write_image

    def write_image_then_fail(path, data, affine):
        if path.name == "warped_labels.nii.gz":
            raise OSError("disk full")
        real_write_image(path, data, affine)

    monkeypatch.setattr(evaluate_module, "write_image", write_image_then_fail)
    with pytest.raises(OSError, match="disk full"):
        evaluate_dataset_pair(dataset, "s1", "s2", zero_field(), tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_unknown_subject(dataset, tmp_path):
    with pytest.raises(InputError, match="no subject 'nobody'"):
        evaluate_dataset_pair(dataset, "nobody", "s2", zero_field(), tmp_path)


# ---------------------------------------------------------------- path form


def test_path_form_matches_the_dataset_form(dataset, tmp_path):
    field = zero_field()
    field[2] = -1.0
    write_field(tmp_path / "field.nii.gz", field, AFFINE)
    by_id = evaluate_dataset_pair(dataset, "s3", "s1", field, tmp_path / "ids")
    by_path = evaluate_paths(
        moving_image=dataset.image_path("s3"), moving_labels=dataset.labels_path("s3"),
        fixed_labels=dataset.labels_path("s1"), field=tmp_path / "field.nii.gz",
        out_dir=tmp_path / "paths", dataset_json=dataset.root / "dataset.json")
    for key in ("dice_faim", "dice_merged", "dice_labels", "hd95", "folding_percent"):
        assert by_path[key] == pytest.approx(by_id[key])
    assert by_path["dataset"] == "tiny" and by_path["moving"] == str(dataset.image_path("s3"))
    # Without a manifest every label found is its own region, named by its ID.
    plain = evaluate_paths(
        moving_image=dataset.image_path("s3"), moving_labels=dataset.labels_path("s3"),
        fixed_labels=dataset.labels_path("s1"), field=tmp_path / "field.nii.gz",
        out_dir=tmp_path / "plain")
    assert plain["dataset"] is None
    assert list(plain["dice_faim"]) == ["1", "2", "3"]
    assert plain["dice_faim"] == plain["dice_merged"]
    assert plain["dice_faim"]["3"] == pytest.approx(by_id["dice_labels"]["3"])


def test_path_form_checks_grids(dataset, tmp_path):
    image, labels = subject_volumes(5)
    small = tmp_path / "small_labels.nii.gz"
    nib.save(nib.Nifti1Image(labels[:, :, :-2], AFFINE), str(small))
    write_field(tmp_path / "field.nii.gz", zero_field(), AFFINE)
    with pytest.raises(InputError, match=rf"^{small}: shape \(20, 24, 14\) does not match"):
        evaluate_paths(moving_image=dataset.image_path("s1"), moving_labels=small,
                       fixed_labels=dataset.labels_path("s2"), field=tmp_path / "field.nii.gz",
                       out_dir=tmp_path / "out")
    with pytest.raises(InputError, match="not a dataset manifest"):
        bad_manifest = tmp_path / "dataset.json"
        bad_manifest.write_text(json.dumps({"name": "x"}))
        evaluate_paths(moving_image=dataset.image_path("s1"),
                       moving_labels=dataset.labels_path("s1"),
                       fixed_labels=dataset.labels_path("s2"), field=tmp_path / "field.nii.gz",
                       out_dir=tmp_path / "out", dataset_json=bad_manifest)
    assert not (tmp_path / "out" / "metrics.json").exists()


# ---------------------------------------------------------------- command line


def test_cli_dataset_form(dataset, tmp_path):
    field = zero_field()
    field[0] = 1.0
    write_field(tmp_path / "field.nii.gz", field, AFFINE)
    (tmp_path / "runtime.json").write_text(json.dumps(RUNTIME))
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(dataset.root), "--moving", "s2", "--fixed", "s3",
                 "--field", str(tmp_path / "field.nii.gz"), "--out", str(out),
                 "--runtime", str(tmp_path / "runtime.json")]) == 0
    written = strict_json(out / "metrics.json")
    assert written["method"] == "toy" and written["moving"] == "s2" and written["fixed"] == "s3"
    assert written == evaluate_dataset_pair(dataset, "s2", "s3", field, tmp_path / "again",
                                            runtime=RUNTIME)


def test_cli_path_form(dataset, tmp_path):
    write_field(tmp_path / "field.nii.gz", zero_field(), AFFINE)
    out = tmp_path / "out"
    assert main(["evaluate", "--moving-image", str(dataset.image_path("s1")),
                 "--moving-labels", str(dataset.labels_path("s1")),
                 "--fixed-labels", str(dataset.labels_path("s1")),
                 "--field", str(tmp_path / "field.nii.gz"), "--out", str(out),
                 "--dataset-json", str(dataset.root / "dataset.json"),
                 "--slice-step", "4"]) == 0
    written = strict_json(out / "metrics.json")
    assert written["mean_dice_merged"] == 1.0 and written["slice_step"] == 4


def test_cli_reports_bad_input_with_exit_code_2(dataset, tmp_path, capsys):
    field_path = tmp_path / "field.nii.gz"
    write_field(field_path, np.zeros((3, 4, 4, 4), np.float32), AFFINE)
    code = main(["evaluate", "--data", str(dataset.root), "--moving", "s1", "--fixed", "s2",
                 "--field", str(field_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert f"regbench: error: {field_path}: displacement field" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("arguments", [
    ["--data", "D", "--moving", "a"],
    ["--data", "D", "--moving", "a", "--fixed", "b", "--moving-image", "x"],
    ["--moving-image", "x", "--fixed-labels", "y"],
])
def test_cli_rejects_incomplete_or_mixed_forms(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *arguments, "--field", "f.nii.gz", "--out", "o"])
    assert exit_info.value.code == 2
    assert "evaluate: error:" in capsys.readouterr().err
