"""Validation of every reader and atomicity of every writer (regbench.io)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from regbench import io
from regbench.io import (
    InputError,
    atomic_path,
    check_same_grid,
    read_field,
    read_image,
    read_json,
    read_labels,
    voxel_spacing,
    write_field,
    write_image,
    write_json,
    write_text,
)

AFFINE = np.diag([1.5, 1.0, 2.0, 1.0])


def save(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def image_data(shape=(6, 5, 4)):
    return np.random.default_rng(0).random(shape).astype(np.float32)


# ---------------------------------------------------------------- readers


def test_read_image_round_trip(tmp_path):
    data = image_data()
    write_image(tmp_path / "a.nii.gz", data, AFFINE)
    read, affine = read_image(tmp_path / "a.nii.gz")
    assert read.dtype == np.float32 and np.array_equal(read, data)
    assert np.allclose(affine, AFFINE)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_image_rejects_nan_and_inf(tmp_path, bad):
    data = image_data()
    data[1, 2, 3] = bad
    path = save(tmp_path / "bad.nii.gz", data)
    with pytest.raises(InputError, match=r"bad\.nii\.gz: 1 NaN or Inf"):
        read_image(path)


def test_read_image_rejects_a_constant_image(tmp_path):
    path = save(tmp_path / "flat.nii.gz", np.full((4, 4, 4), 3.0, np.float32))
    with pytest.raises(InputError, match=r"flat\.nii\.gz: constant image"):
        read_image(path)


def test_read_image_rejects_a_corrupt_file(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_bytes(b"\x00garbage, not an image" * 20)
    with pytest.raises(InputError, match=r"x\.nii\.gz: not a readable"):
        read_image(path)


def test_read_image_rejects_a_truncated_file(tmp_path):
    path = save(tmp_path / "cut.nii", image_data((20, 20, 20)))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"cut\.nii: not a readable"):
        read_image(path)


def test_read_image_rejects_a_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nothing\.nii\.gz: file not found"):
        read_image(tmp_path / "nothing.nii.gz")


def test_read_image_rejects_4d_but_squeezes_trailing_singletons(tmp_path):
    path = save(tmp_path / "four.nii.gz", image_data((4, 4, 4, 2)))
    with pytest.raises(InputError, match=r"four\.nii\.gz: expected a 3D volume, got shape"):
        read_image(path)
    path = save(tmp_path / "single.nii.gz", image_data((4, 4, 4, 1)))
    assert read_image(path)[0].shape == (4, 4, 4)
    path = save(tmp_path / "flat2d.nii.gz", image_data((4, 4)))
    with pytest.raises(InputError, match="expected a 3D volume"):
        read_image(path)


def test_read_labels_accepts_integer_valued_floats(tmp_path):
    labels = np.zeros((4, 4, 4), np.float32)
    labels[1, 1, 1], labels[2, 2, 2] = 21.0, 1035.0
    read, _ = read_labels(save(tmp_path / "l.nii.gz", labels))
    assert read.dtype == np.int32 and read[1, 1, 1] == 21 and read[2, 2, 2] == 1035


def test_read_labels_rejects_non_integer_labels(tmp_path):
    labels = np.zeros((4, 4, 4), np.float32)
    labels[1, 1, 1] = 2.5
    with pytest.raises(InputError, match=r"soft\.nii\.gz: label map holds non-integer"):
        read_labels(save(tmp_path / "soft.nii.gz", labels))
    labels[1, 1, 1] = np.nan
    with pytest.raises(InputError, match=r"nan\.nii\.gz: label map holds NaN"):
        read_labels(save(tmp_path / "nan.nii.gz", labels))


def test_read_labels_names_labels_beyond_int32(tmp_path):
    """Issue 22: a label of 5e9 was reported as non-integer."""
    labels = np.zeros((4, 4, 4), np.float64)
    labels[1, 1, 1] = 5e9
    with pytest.raises(InputError, match=r"big\.nii\.gz: label map holds labels beyond the "
                                         r"32-bit integers \(0 to 5e\+09"):
        read_labels(save(tmp_path / "big.nii.gz", labels))


def test_read_labels_rejects_an_empty_map(tmp_path):
    with pytest.raises(InputError, match=r"empty\.nii\.gz: label map is empty"):
        read_labels(save(tmp_path / "empty.nii.gz", np.zeros((4, 4, 4), np.int16)))


def test_field_round_trip_and_nifti_vector_layout(tmp_path):
    field = np.random.default_rng(2).normal(size=(3, 5, 6, 7)).astype(np.float32)
    write_field(tmp_path / "f.nii.gz", field, AFFINE)
    stored = nib.load(str(tmp_path / "f.nii.gz"))
    # NIfTI-1 vectors: components on the fifth axis, intent vector (ITK/ANTs/FSL read a
    # displacement per voxel, not a 3-volume time series).
    assert stored.shape == (5, 6, 7, 1, 3)
    assert int(stored.header["intent_code"]) == 1007  # NIFTI_INTENT_VECTOR
    assert stored.header.get_intent()[0] == "vector"
    assert stored.header.get_intent()[2] == io.FIELD_INTENT_NAME
    assert np.array_equal(np.asarray(stored.dataobj)[:, :, :, 0, :], np.moveaxis(field, 0, -1))
    read, affine = read_field(tmp_path / "f.nii.gz")
    assert read.shape == (3, 5, 6, 7) and np.array_equal(read, field)
    assert np.allclose(affine, AFFINE)
    with pytest.raises(ValueError, match=r"\(3, X, Y, Z\)"):
        write_field(tmp_path / "g.nii.gz", field[:2], AFFINE)


def test_read_field_accepts_the_older_x_y_z_3_layout(tmp_path):
    """Fields of earlier versions and of tools that write components last, without intent."""
    field = np.random.default_rng(3).normal(size=(3, 5, 6, 7)).astype(np.float32)
    path = save(tmp_path / "old.nii.gz", np.moveaxis(field, 0, -1))
    assert nib.load(str(path)).shape == (5, 6, 7, 3)
    read, _ = read_field(path)
    assert np.array_equal(read, field)


def test_read_field_rejects_bad_fields(tmp_path):
    with pytest.raises(InputError, match=r"two\.nii\.gz: expected a displacement field of "
                                         r"shape \(X, Y, Z, 1, 3\) or \(X, Y, Z, 3\)"):
        read_field(save(tmp_path / "two.nii.gz", np.zeros((5, 6, 7, 2), np.float32)))
    with pytest.raises(InputError, match=r"five\.nii\.gz: expected a displacement field"):
        read_field(save(tmp_path / "five.nii.gz", np.zeros((5, 6, 7, 2, 3), np.float32)))
    bad = np.zeros((5, 6, 7, 3), np.float32)
    bad[0, 0, 0, 1] = np.inf
    with pytest.raises(InputError, match=r"inf\.nii\.gz: displacement field holds NaN or Inf"):
        read_field(save(tmp_path / "inf.nii.gz", bad))


def test_read_field_refuses_an_itk_export_in_millimetres(tmp_path):
    path = tmp_path / "itk.nii.gz"
    io.write_vector_image(path, np.zeros((3, 5, 6, 7)), AFFINE, io.ITK_FIELD_INTENT_NAME)
    with pytest.raises(InputError, match=r"itk\.nii\.gz: an ITK/ANTs export \(LPS millimetres\)"):
        read_field(path)


def test_read_json_errors(tmp_path):
    with pytest.raises(InputError, match=r"gone\.json: file not found"):
        read_json(tmp_path / "gone.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match=r"broken\.json: not valid JSON"):
        read_json(tmp_path / "broken.json")


# ---------------------------------------------------------------- grids


def test_check_same_grid_names_both_files_and_the_mismatch():
    check_same_grid((4, 5, 6), AFFINE, "a.nii.gz", (4, 5, 6), AFFINE, "b.nii.gz")
    with pytest.raises(InputError, match=r"^b\.nii\.gz: shape \(4, 5, 7\) does not match "
                                         r"a\.nii\.gz \(4, 5, 6\)$"):
        check_same_grid((4, 5, 6), AFFINE, "a.nii.gz", (4, 5, 7), AFFINE, "b.nii.gz")
    other = np.diag([1.5, 1.2, 2.0, 1.0])
    with pytest.raises(InputError, match=r"^b\.nii\.gz: voxel spacing \(1\.5, 1\.2, 2\.0\) does "
                                         r"not match a\.nii\.gz \(1\.5, 1\.0, 2\.0\)$"):
        check_same_grid((4, 5, 6), AFFINE, "a.nii.gz", (4, 5, 6), other, "b.nii.gz")


def test_voxel_spacing_of_a_rotated_affine():
    rotation = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.5, 2.0])
    affine[:3, 3] = [10, -20, 5]
    assert np.allclose(voxel_spacing(affine), [0.8, 1.5, 2.0])


# ---------------------------------------------------------------- atomic writes


def test_atomic_path_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_text("half of the new conte")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_atomic_path_failure_creates_nothing_new(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "sub" / "new.nii.gz") as tmp:
            assert tmp.name.endswith(".nii.gz")  # nibabel picks the format from the suffix
            tmp.write_bytes(b"partial")
            raise RuntimeError
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_path_success_replaces(tmp_path):
    write_text(tmp_path / "t.txt", "one")
    write_text(tmp_path / "t.txt", "two")
    assert (tmp_path / "t.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_write_image_interrupted_inside_the_writer(tmp_path, monkeypatch):
    target = tmp_path / "warped.nii.gz"
    write_image(target, image_data(), AFFINE)
    before = target.read_bytes()

    def failing_save(img, filename):
        with open(filename, "wb") as handle:
            handle.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(io.nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, image_data() * 2, AFFINE)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warped.nii.gz"]


def test_write_json_of_an_unserialisable_record_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "r.json", {"bad": object()})
    assert list(tmp_path.iterdir()) == []
    write_json(tmp_path / "r.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": [1, 2]}


def test_write_image_keeps_label_integers(tmp_path):
    labels = np.zeros((4, 4, 4), np.int32)
    labels[0, 0, 0], labels[1, 1, 1] = 1035, 40000
    write_image(tmp_path / "big.nii.gz", labels, AFFINE)
    assert np.array_equal(read_labels(tmp_path / "big.nii.gz")[0], labels)
    labels[1, 1, 1] = 2035
    write_image(tmp_path / "small.nii.gz", labels, AFFINE)
    assert nib.load(str(tmp_path / "small.nii.gz")).get_data_dtype() == np.int16
