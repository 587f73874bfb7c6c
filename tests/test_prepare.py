"""Preparation of LPBA40 and Mindboggle101 from fake raw folders in the original layouts.

LPBA40: fake subjects are the MNI152 template (and a synthetic, hemisphere-specific label map)
pulled into the delineation grid (RAS voxel axes, built here independently of the preparer)
through a known affine, stored like LONI ships them (Analyze ``.hdr`` plain, ``.img.gz``). The
preparer must bring them back onto the template: labels land where they came from, left stays
left. Mindboggle101: NIfTI volumes on the FSL MNI152 grid in ``<GROUP>_volumes/<subject>/``,
plain folders, a ``.tar.gz`` archive and a ``file://`` download.
"""

from __future__ import annotations

import gzip
import hashlib
import io as stdio
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from regbench.cli import main
from regbench.data import lpba40, mindboggle101, protocol
from regbench.data.dataset import MANIFEST, Dataset
from regbench.io import InputError

MNI = np.asarray(protocol.MNI_AFFINE)
CROP = (slice(11, 171), slice(13, 205), slice(11, 171))
CROP_AFFINE = MNI @ np.array([[1, 0, 0, 11], [0, 1, 0, 13], [0, 0, 1, 11], [0, 0, 0, 1.0]])

DELINEATION_SHAPE = (256, 124, 256)
DELINEATION_SPACING = np.array([0.859375, 1.5, 0.859375])
# RAS voxel axes (L->R, P->A, I->S), grid centre at world 0.
DELINEATION_AFFINE = np.diag([*DELINEATION_SPACING, 1.0])
DELINEATION_AFFINE[:3, 3] = -(np.array(DELINEATION_SHAPE) - 1) / 2 * DELINEATION_SPACING

FAST = {"aff_iterations": (20,), "aff_shrink_factors": (8,), "aff_smoothing_sigmas": (3,)}
"""Registration settings for tests: one coarse level (8 mm), a few iterations."""

FAKE_LABELS = (21, 22, 67, 68, 163, 164)
FOREIGN_LABEL = 7  # not an LPBA40 ID: must be set to 0


# --- LPBA40 fakes -------------------------------------------------------------------------------


def mni_world() -> list[np.ndarray]:
    """MNI mm of the FSL grid's voxels, as broadcastable (X,1,1), (1,Y,1), (1,1,Z) arrays."""
    i, j, k = np.ogrid[tuple(slice(0, n) for n in protocol.MNI_SHAPE)]
    return [-1.0 * i + 90, 1.0 * j - 126, 1.0 * k - 72]  # protocol.MNI_AFFINE


@pytest.fixture(scope="module")
def mni_atlas() -> tuple[np.ndarray, np.ndarray]:
    """The preparer's template and a label map on the FSL grid: left IDs at MNI x < 0."""
    template, _ = lpba40.mni_template()
    x, y, z = mni_world()
    brain = template > 0.25
    labels = np.zeros(template.shape, dtype=np.int16)
    for left, right, region in (
        (21, 22, brain & (y > 20) & (z > 20)),
        (67, 68, brain & (y < -70)),
        (163, 164, None),
    ):
        if region is None:  # putamen-like ellipsoids
            for label, side in ((left, -1), (right, 1)):
                inside = (((x - 25 * side) / 7) ** 2 + ((y - 2) / 13) ** 2
                          + ((z - 1) / 9) ** 2) <= 1
                labels[inside] = label
            continue
        labels[region & (x < -4)] = left
        labels[region & (x > 4)] = right
    labels[((x / 5) ** 2 + ((y + 20) / 5) ** 2 + ((z - 15) / 5) ** 2) <= 1] = FOREIGN_LABEL
    return template, labels


def subject_to_mni(angle_deg: float, scale: float, shift: tuple[float, float, float]):
    """A world affine (subject mm -> MNI mm): rotation about x, scaling, brain-centring shift."""
    a = math.radians(angle_deg)
    rotation = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * scale
    matrix[:3, 3] = np.array([0.0, -18.0, 15.0]) + np.asarray(shift)
    return matrix


def delineation_subject(atlas, to_mni) -> tuple[np.ndarray, np.ndarray]:
    """Template (int16, x1000) and labels pulled onto the delineation grid through ``to_mni``."""
    template, labels = atlas
    voxel = np.linalg.inv(MNI) @ to_mni @ DELINEATION_AFFINE  # delineation voxel -> FSL voxel
    image = ndimage.affine_transform(template, voxel[:3, :3], voxel[:3, 3],
                                     output_shape=DELINEATION_SHAPE, order=1)
    label_map = ndimage.affine_transform(labels, voxel[:3, :3], voxel[:3, 3],
                                         output_shape=DELINEATION_SHAPE, order=0)
    return np.rint(image * 1000).astype(np.int16), label_map.astype(np.int16)


def write_analyze(folder: Path, stem: str, data: np.ndarray,
                  spacing=DELINEATION_SPACING, gzip_voxels: bool = True) -> None:
    """An Analyze 7.5 pair as LONI ships it: ``.hdr`` plain, voxels gzipped (``.img.gz``)."""
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.AnalyzeImage(data, np.diag([*spacing, 1.0])), str(folder / f"{stem}.hdr"))
    if gzip_voxels:
        img = folder / f"{stem}.img"
        with open(img, "rb") as source, gzip.open(f"{img}.gz", "wb", compresslevel=1) as sink:
            shutil.copyfileobj(source, sink)
        img.unlink()


def write_lpba40_subject(raw: Path, subject: str, image: np.ndarray, labels: np.ndarray,
                         **kwargs) -> Path:
    folder = raw / "LPBA40" / "delineation_space" / subject
    write_analyze(folder, f"{subject}.delineation.skullstripped", image, **kwargs)
    write_analyze(folder, f"{subject}.delineation.structure.label", labels, **kwargs)
    return folder


def simple_lpba40(raw: Path, subject: str, image=None, labels=None, **kwargs) -> Path:
    """A cheap subject on the delineation grid: a bright box with two labels."""
    if image is None:
        image = np.zeros(DELINEATION_SHAPE, dtype=np.int16)
        image[60:200, 20:100, 60:200] = 500
    if labels is None:
        labels = np.zeros(DELINEATION_SHAPE, dtype=np.int16)
        labels[80:120, 40:80, 80:120] = 21
        labels[130:170, 40:80, 80:120] = 22
    return write_lpba40_subject(raw, subject, image, labels, **kwargs)


@pytest.fixture(scope="module")
def lpba40_prepared(tmp_path_factory, mni_atlas) -> Dataset:
    """S31 behind a known affine (6 degrees, 5 % larger, shifted), prepared with FAST settings.

    One subject: each costs ~6 s of ANTs on full-size volumes.
    """
    raw = tmp_path_factory.mktemp("lpba40_raw")
    to_mni = subject_to_mni(6.0, 1.05, (2.0, -3.0, 4.0))
    write_lpba40_subject(raw, "S31", *delineation_subject(mni_atlas, to_mni))
    out = tmp_path_factory.mktemp("lpba40") / "lpba40"
    lpba40.prepare(raw, out, "S31", registration=FAST, seed=0)
    return Dataset.load(out)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_lpba40_lands_on_the_cropped_mni_grid(lpba40_prepared, mni_atlas):
    data = lpba40_prepared
    assert data.name == "lpba40"
    assert data.subjects == ["S31"]
    assert (data.train, data.test) == ([], ["S31"])  # a subset keeps its split entries
    assert data.shape == (160, 192, 160)
    np.testing.assert_allclose(data.affine, CROP_AFFINE)
    assert data.regions == protocol.LPBA40_REGIONS
    assert data.labels == protocol.LPBA40_LABELS
    assert data.manifest["synthetic"] is False
    template, truth = (a[CROP] for a in mni_atlas)
    for subject in data.subjects:
        image, labels = data.image(subject), data.label_map(subject)
        assert image.dtype == np.float32 and image.shape == (160, 192, 160)
        assert image.max() == pytest.approx(1.0) and image.min() >= 0
        assert np.corrcoef(image.ravel(), template.ravel())[0, 1] > 0.95
        assert data.manifest["template_correlation"][subject] > 0.95
        # Original IDs, the foreign one gone (and recorded), each label back where it came from.
        assert set(np.unique(labels)) == {0, *FAKE_LABELS}
        assert str(FOREIGN_LABEL) in data.manifest["dropped_labels"][subject]
        for label in FAKE_LABELS:
            assert dice(labels == label, truth == label) > 0.75, (subject, label)
        # Left stays left: odd IDs at MNI x < 0 (the FSL grid's x axis runs right -> left).
        world_x = CROP_AFFINE[0] @ np.r_[np.argwhere(labels == 21).mean(0), 1.0]
        assert world_x < -10
    settings = data.manifest["registration"]["settings"]
    assert settings["aff_iterations"] == [20]
    assert data.manifest["registration"]["seed"] == 0


def test_lpba40_subset_splits():
    chosen = ["S02", "S40", "S01", "S31"]
    assert lpba40.subset_splits(chosen, protocol.LPBA40_SPLITS) == {
        "train": ["S02", "S01"], "val": [], "test": ["S40", "S31"]}


REGISTER_TWICE = """
import json, sys
import numpy as np
from scipy import ndimage
from regbench.data import lpba40

# A small asymmetric template (4 mm voxels) and a moving image made from it by a known affine.
rng = np.random.default_rng(0)
template = ndimage.gaussian_filter(rng.random((40, 48, 40)), 3)
template = np.where(template > np.quantile(template, 0.5), template, 0).astype(np.float32)
template_affine = np.diag([-4.0, 4.0, 4.0, 1.0])
template_affine[:3, 3] = [78, -94, -78]
grid = np.diag([4.0, 4.0, 4.0, 1.0])
grid[:3, 3] = -110
a = np.radians(6)
to_template = np.eye(4)
to_template[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
to_template[:3, 3] = [3, -4, 2]
voxel = np.linalg.inv(template_affine) @ to_template @ grid
moving = ndimage.affine_transform(template, voxel[:3, :3], voxel[:3, 3], output_shape=(56,) * 3,
                                  order=1)
labels = (moving > np.quantile(moving, 0.8)).astype(np.int32) * 21
settings = {"aff_iterations": (40, 20), "aff_shrink_factors": (2, 1),
            "aff_smoothing_sigmas": (1, 0)}
runs = [lpba40.register_to_template(moving, labels, grid, template, template_affine,
                                    settings=settings, seed=3) for _ in range(2)]
(image, warped, correlation), (image2, warped2, _) = runs

def on_template(matrix):
    return ndimage.affine_transform(moving, matrix[:3, :3], matrix[:3, 3],
                                    output_shape=template.shape, order=1)


unregistered = on_template(np.linalg.inv(grid) @ template_affine)  # by world coordinates only
ideal = on_template(np.linalg.inv(voxel))  # the exact inverse, interpolation losses included
print(json.dumps({"shape": image.shape, "correlation": correlation,
                  "before": float(np.corrcoef(unregistered.ravel(), template.ravel())[0, 1]),
                  "ideal": float(np.corrcoef(ideal.ravel(), template.ravel())[0, 1]),
                  "labels": sorted(int(v) for v in np.unique(warped)),
                  "same": bool(np.array_equal(image, image2) and np.array_equal(warped, warped2))}))
"""


def test_register_to_template_undoes_a_known_affine_reproducibly():
    """One ITK thread (the preparer's default): a known affine is undone, and the same seed gives
    bit-identical results. A fresh process, because ITK fixes its thread count once."""
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", REGISTER_TWICE], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shape"] == [40, 48, 40]
    assert result["correlation"] > result["ideal"] - 0.02 > result["before"] + 0.1
    assert result["labels"] == [0, 21]
    assert result["same"]


def test_lpba40_missing_raw_or_subject_says_what_to_download(tmp_path):
    with pytest.raises(InputError, match="LONI") as missing_raw:
        lpba40.prepare(tmp_path / "nowhere", tmp_path / "out")
    assert "delineation_space" in str(missing_raw.value)
    raw = tmp_path / "raw"
    simple_lpba40(raw, "S01")
    with pytest.raises(InputError) as err:
        lpba40.prepare(raw, tmp_path / "out", ["S01", "S02"])
    message = str(err.value)
    assert "S02" in message and "LONI" in message
    assert "delineation_space/S02/S02.delineation.skullstripped.img.gz" in message
    assert "LPBA40 Subjects Delineation Space" in message
    with pytest.raises(InputError, match="not LPBA40 subject"):
        lpba40.prepare(raw, tmp_path / "out", "S41")
    (raw / "LPBA40/delineation_space/S01/S01.delineation.structure.label.img.gz").unlink()
    with pytest.raises(InputError, match=r"S01\.delineation\.structure\.label\.img\.gz: not found"):
        lpba40.prepare(raw, tmp_path / "out", "S01")
    assert not (tmp_path / "out").exists()


def test_lpba40_reads_plain_and_gzipped_analyze(tmp_path):
    """Plain .img, and .hdr.gz + .img.gz, read to the same voxels as LONI's .hdr + .img.gz."""
    image = np.zeros(DELINEATION_SHAPE, dtype=np.int16)
    image[100:150, 30:90, 90:140] = np.arange(50, dtype=np.int16)[:, None, None]
    plain = simple_lpba40(tmp_path / "plain", "S01", image=image, gzip_voxels=False)
    loni = simple_lpba40(tmp_path / "loni", "S01", image=image)
    both = simple_lpba40(tmp_path / "both", "S01", image=image)
    for path in both.glob("*.hdr"):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    results = [lpba40.read_subject(lpba40.subject_files(folder, "S01"))
               for folder in (plain, loni, both)]
    for read_image, read_labels in results:
        np.testing.assert_array_equal(read_image, image.astype(np.float32))
        assert read_image.dtype == np.float32 and read_labels.dtype == np.int32
        assert set(np.unique(read_labels)) == {0, 21, 22}
    # The raw folder may be the delineation_space folder itself (the workflow's default).
    assert set(lpba40.find_subjects(tmp_path / "loni" / "LPBA40" / "delineation_space")) == {"S01"}


@pytest.mark.parametrize("problem, match", [
    ("corrupt header", r"S01\.delineation\.skullstripped\.hdr: not a readable Analyze"),
    ("truncated voxels", r"S01\.delineation\.skullstripped\.img\.gz: cannot read"),
    ("NaN image", r"S01\.delineation\.skullstripped\.img\.gz: \d+ NaN or Inf"),
    ("wrong grid", r"S01\.delineation\.skullstripped\.hdr: grid 256x124x255 .* not LPBA40's"),
    ("shape mismatch", r"S01\.delineation\.structure\.label\.hdr: grid 256x124x255 .* not "
                       r"LPBA40's"),
    ("spacing mismatch", r"S01\.delineation\.structure\.label\.hdr: .*grid 256x124x256 of "
                         r"1x1x1 mm"),
    ("empty labels", r"S01\.delineation\.structure\.label\.img\.gz: label map is empty"),
])
def test_lpba40_bad_input_names_file_and_problem(tmp_path, problem, match):
    raw, out = tmp_path / "raw", tmp_path / "out"
    folder = simple_lpba40(raw, "S01")
    image_stem = folder / "S01.delineation.skullstripped"
    labels_stem = folder / "S01.delineation.structure.label"
    if problem == "corrupt header":
        Path(f"{image_stem}.hdr").write_bytes(b"not an analyze header")
    elif problem == "truncated voxels":
        path = Path(f"{image_stem}.img.gz")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif problem == "NaN image":
        image = np.zeros(DELINEATION_SHAPE, dtype=np.float32)
        image[60:200, 20:100, 60:200] = 1.0
        image[100, 50, 100] = np.nan
        simple_lpba40(raw, "S01", image=image)
    elif problem == "wrong grid":
        simple_lpba40(raw, "S01", image=np.ones((256, 124, 255), dtype=np.int16))
    elif problem == "shape mismatch":
        write_analyze(folder, labels_stem.name, np.ones((256, 124, 255), dtype=np.int16))
    elif problem == "spacing mismatch":
        write_analyze(folder, labels_stem.name, np.ones(DELINEATION_SHAPE, dtype=np.int16),
                      spacing=(1.0, 1.0, 1.0))
    elif problem == "empty labels":
        simple_lpba40(raw, "S01", labels=np.zeros(DELINEATION_SHAPE, dtype=np.int16))
    with pytest.raises(InputError, match=match):
        lpba40.prepare(raw, out, "S01", registration=FAST)
    assert not out.exists()


def test_lpba40_failed_run_leaves_nothing_behind(tmp_path, monkeypatch, mni_atlas):
    """S01 is written to the staging folder, S02 then fails: no manifest, no subject files."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    simple_lpba40(raw, "S01")
    image = np.zeros(DELINEATION_SHAPE, dtype=np.float32)
    image[60:200, 20:100, 60:200] = 1.0
    image[70, 30, 70] = np.inf
    simple_lpba40(raw, "S02", image=image)
    template, atlas = mni_atlas
    staged = []

    def fake_registration(image, labels, affine, template_image, template_affine, **kwargs):
        staged.append(True)  # stands in for ANTs: the crop step gets MNI-grid arrays
        return template_image.copy(), atlas.astype(np.int32), 1.0

    monkeypatch.setattr(lpba40, "register_to_template", fake_registration)
    with pytest.raises(InputError, match=r"S02\.delineation\.skullstripped\.img\.gz: 1 NaN or Inf"):
        lpba40.prepare(raw, out, "S01,S02")
    assert staged == [True]  # S01 went through
    assert not out.exists()  # made for the run, removed with the staged S01


# --- Mindboggle101 ------------------------------------------------------------------------------

SUBJECTS = {  # group -> subjects written (NKI-TRT-20-10 after -2: natural order)
    "OASIS-TRT-20": ["OASIS-TRT-20-1", "OASIS-TRT-20-2"],
    "NKI-RS-22": ["NKI-RS-22-3"],
    "NKI-TRT-20": ["NKI-TRT-20-10", "NKI-TRT-20-2"],
    "MMRR-21": ["MMRR-21-1"],
}
DKT31_ONLY = "NKI-TRT-20-2"


def mindboggle_volumes(seed: int, dkt31: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A blob image and a label map with DKT IDs, non-cortical IDs and a label outside the crop.
    """
    rng = np.random.default_rng(seed)
    x, y, z = np.ogrid[tuple(slice(0, n) for n in protocol.MNI_SHAPE)]
    blob = np.exp(-(((x - 91) / 50) ** 2 + ((y - 109) / 60) ** 2 + ((z - 91) / 50) ** 2))
    image = (blob * (900 + 100 * rng.random()) * (blob > 0.3)).astype(np.float32)
    image[90, 100, 90] = 1500.0 + seed  # the maximum, inside the crop
    labels = np.zeros(protocol.MNI_SHAPE, dtype=np.int16)
    ids = (1010, 1027, 2019, 2035) if dkt31 else (1002, 1035, 2002, 2035)
    for k, label in enumerate(ids):
        labels[40 + 25 * k:60 + 25 * k, 80:120, 70:110] = label
    labels[60:70, 140:150, 60:70] = 3  # subcortical: not DKT25
    labels[100:110, 140:150, 60:70] = 1004  # not DKT25 either
    labels[2:6, 2:6, 2:6] = 1005  # outside the crop
    return image, labels


def expected_labels(labels: np.ndarray) -> np.ndarray:
    merged = labels.copy()
    for source, target in protocol.DKT31_TO_DKT25.items():
        merged[labels == source] = target
    merged[~np.isin(merged, list(protocol.MINDBOGGLE101_LABELS))] = 0
    return merged[CROP]


def save_nifti(path: Path, data: np.ndarray, affine=MNI) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def write_mindboggle_subject(group_folder: Path, subject: str, seed: int,
                             dkt31: bool = False) -> tuple[np.ndarray, np.ndarray]:
    image, labels = mindboggle_volumes(seed, dkt31)
    save_nifti(group_folder / subject / mindboggle101.IMAGE, image)
    save_nifti(group_folder / subject / (mindboggle101.DKT31 if dkt31 else mindboggle101.DKT25),
               labels)
    return image, labels


@pytest.fixture(scope="module")
def mindboggle_raw(tmp_path_factory) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    raw = tmp_path_factory.mktemp("mindboggle_raw")
    volumes = {}
    for seed, (group, subjects) in enumerate(SUBJECTS.items()):
        for k, subject in enumerate(subjects):
            volumes[subject] = write_mindboggle_subject(
                raw / f"{group}_volumes", subject, 10 * seed + k, dkt31=subject == DKT31_ONLY)
    return raw, volumes


def test_mindboggle101_crop_labels_splits(mindboggle_raw, tmp_path):
    raw, volumes = mindboggle_raw
    out = tmp_path / "mb"
    assert main(["prepare", "mindboggle101", "--raw", str(raw), "--out", str(out)]) == 0
    data = Dataset.load(out)
    assert data.subjects == ["OASIS-TRT-20-1", "OASIS-TRT-20-2", "NKI-RS-22-3", "NKI-TRT-20-2",
                             "NKI-TRT-20-10", "MMRR-21-1"]
    assert data.train == ["NKI-RS-22-3", "NKI-TRT-20-2", "NKI-TRT-20-10"]
    assert data.test == ["OASIS-TRT-20-1", "OASIS-TRT-20-2"]
    assert data.manifest["groups"]["MMRR-21-1"] == "MMRR-21"  # prepared, in no split
    assert data.shape == (160, 192, 160)
    np.testing.assert_allclose(data.affine, CROP_AFFINE)
    assert data.regions == protocol.MINDBOGGLE101_REGIONS
    assert data.labels == protocol.MINDBOGGLE101_LABELS
    for subject, (image, labels) in volumes.items():
        got = data.image(subject)
        assert got.max() == pytest.approx(1.0)
        np.testing.assert_allclose(got, image[CROP] / image[CROP].max(), rtol=1e-6)
        np.testing.assert_array_equal(data.label_map(subject), expected_labels(labels))
        assert set(data.manifest["dropped_labels"][subject]) == {"3", "1004"}
    assert set(np.unique(data.label_map(DKT31_ONLY))) == {0, 1002, 1003, 2018, 2035}
    assert data.manifest["files"][DKT31_ONLY]["labels"].endswith(mindboggle101.DKT31)


def test_mindboggle101_subset_keeps_its_split_entries(mindboggle_raw, tmp_path):
    raw, _ = mindboggle_raw
    out = tmp_path / "subset"
    mindboggle101.prepare(raw, out, "OASIS-TRT-20-2,MMRR-21-1")
    data = Dataset.load(out)
    assert data.subjects == ["OASIS-TRT-20-2", "MMRR-21-1"]
    assert (data.train, data.test) == ([], ["OASIS-TRT-20-2"])
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "MMRR-21-1.nii.gz", "OASIS-TRT-20-2.nii.gz"]


def tar_group(folder: Path, archive: Path, extra: tarfile.TarInfo | None = None) -> Path:
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname=folder.name)
        if extra is not None:
            tar.addfile(extra, stdio.BytesIO(b"x" * extra.size))
    return archive


def test_mindboggle101_download_and_archive(mindboggle_raw, tmp_path):
    """file:// download with checksum -> archive in RAW -> extracted by prepare."""
    raw, volumes = mindboggle_raw
    served = tar_group(raw / "OASIS-TRT-20_volumes",
                       tmp_path / mindboggle101.archive_name("OASIS-TRT-20"))
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    downloads = tmp_path / "downloads"
    url = served.as_uri()
    assert main(["download", "mindboggle101", "--out", str(downloads), "--url", url,
                 "--sha256", digest.upper()]) == 0
    archive = downloads / mindboggle101.archive_name("OASIS-TRT-20")
    assert archive.read_bytes() == served.read_bytes()
    assert sorted(p.name for p in downloads.iterdir()) == [archive.name]
    # {group} templates, kept archives: nothing is fetched again.
    template = url.replace("OASIS-TRT-20_volumes", "{group}_volumes")
    mindboggle101.download(downloads, url=template, groups=["OASIS-TRT-20"])
    out = tmp_path / "from_archive"
    mindboggle101.prepare(downloads, out)
    data = Dataset.load(out)
    assert data.subjects == SUBJECTS["OASIS-TRT-20"] and data.train == []
    np.testing.assert_array_equal(data.label_map("OASIS-TRT-20-1"),
                                  expected_labels(volumes["OASIS-TRT-20-1"][1]))
    assert (downloads / "OASIS-TRT-20_volumes" / "OASIS-TRT-20-1" / mindboggle101.IMAGE).is_file()
    assert not list(downloads.glob(".extract-*"))


def test_mindboggle101_download_errors_leave_no_file(tmp_path):
    served = tmp_path / mindboggle101.archive_name("NKI-RS-22")
    folder = tmp_path / "NKI-RS-22_volumes" / "NKI-RS-22-1"
    folder.mkdir(parents=True)
    (folder / "note.txt").write_text("x")
    tar_group(folder.parent, served)
    out = tmp_path / "downloads"
    with pytest.raises(InputError, match="SHA-256 .* does not match"):
        mindboggle101.download(out, url=served.as_uri(), sha256="0" * 64)
    with pytest.raises(InputError, match="download failed"):
        mindboggle101.download(out, url=(tmp_path / "missing.tar.gz").as_uri(),
                               groups="NKI-RS-22")
    not_tar = tmp_path / "page.html"
    not_tar.write_text("<html>moved</html>")
    with pytest.raises(InputError, match="not a tar archive"):
        mindboggle101.download(out, url=not_tar.as_uri(), groups="NKI-RS-22")
    assert [p for p in out.iterdir()] == []  # no archive, no temporary file
    with pytest.raises(InputError, match="--groups"):
        mindboggle101.download(out, url=not_tar.as_uri())
    with pytest.raises(InputError, match="unknown Mindboggle101 group"):
        mindboggle101.download(out, groups="ABC-1")
    with pytest.raises(InputError, match="one archive"):
        mindboggle101.download(out, sha256="a" * 64)


def test_mindboggle101_unsafe_or_corrupt_archive(tmp_path):
    raw = tmp_path / "raw"
    folder = raw / "src" / "MMRR-21_volumes" / "MMRR-21-1"
    folder.mkdir(parents=True)
    (folder / "note.txt").write_text("x")
    evil = tarfile.TarInfo("../evil.txt")
    evil.size = 4
    tar_group(folder.parent, raw / mindboggle101.archive_name("MMRR-21"), extra=evil)
    shutil.rmtree(raw / "src")
    with pytest.raises(InputError, match="unsafe member '../evil.txt'"):
        mindboggle101.prepare(raw, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (raw / "MMRR-21_volumes").exists()
    (raw / mindboggle101.archive_name("MMRR-21")).write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(InputError, match="MMRR-21_volumes_in_MNI152.tar.gz: not a readable"):
        mindboggle101.prepare(raw, tmp_path / "out")


@pytest.fixture(scope="module")
def mindboggle_previous(mindboggle_raw, tmp_path_factory) -> Path:
    """A one-subject dataset, copied into OUT before each failing run."""
    out = tmp_path_factory.mktemp("previous") / "mb"
    mindboggle101.prepare(mindboggle_raw[0], out, "OASIS-TRT-20-1")
    return out


@pytest.mark.parametrize("problem, match", [
    ("missing subject", r"OASIS-TRT-20-9 not found: expected RAW/<GROUP>_volumes/OASIS-TRT-20-9/"),
    ("corrupt image", r"OASIS-TRT-20-1/t1weighted_brain\.MNI152\.nii\.gz: not a readable NIfTI"),
    ("wrong shape", r"t1weighted_brain\.MNI152\.nii\.gz: shape \(181, 217, 181\) does not match"),
    ("wrong affine", r"t1weighted_brain\.MNI152\.nii\.gz: affine .* is not the FSL MNI152"),
    ("label shape", r"labels\.DKT25\.manual\.MNI152\.nii\.gz: shape \(182, 218, 181\) does not"),
    ("no labels", r"labels\.DKT25\.manual\.MNI152\.nii\.gz: not found \(nor labels\.DKT31"),
    ("NaN image", r"t1weighted_brain\.MNI152\.nii\.gz: 1 NaN or Inf intensities"),
    ("empty labels", r"labels\.DKT25\.manual\.MNI152\.nii\.gz: label map is empty"),
    ("only foreign labels", r"labels\.DKT25\.manual\.MNI152\.nii\.gz: no label of the protocol"),
])
def test_mindboggle101_bad_input_keeps_previous_dataset(mindboggle_raw, mindboggle_previous,
                                                      tmp_path, problem, match):
    """Every problem names its file; the dataset already in OUT is left exactly as it was."""
    source, _ = mindboggle_raw
    raw = tmp_path / "raw"
    for subject in ("OASIS-TRT-20-1", "OASIS-TRT-20-2"):
        shutil.copytree(source / "OASIS-TRT-20_volumes" / subject,
                        raw / "OASIS-TRT-20_volumes" / subject)
    out = tmp_path / "out"
    shutil.copytree(mindboggle_previous, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    folder = raw / "OASIS-TRT-20_volumes" / "OASIS-TRT-20-2"
    image_path, labels_path = folder / mindboggle101.IMAGE, folder / mindboggle101.DKT25
    image, labels = mindboggle_volumes(0)
    subjects = "OASIS-TRT-20-1,OASIS-TRT-20-2"
    if problem == "missing subject":
        subjects = "OASIS-TRT-20-1,OASIS-TRT-20-9"
    elif problem == "corrupt image":
        image_path = raw / "OASIS-TRT-20_volumes" / "OASIS-TRT-20-1" / mindboggle101.IMAGE
        image_path.write_bytes(b"\x1f\x8b\x08 not really a NIfTI")
    elif problem == "wrong shape":
        save_nifti(image_path, image[:181, :217, :181])
    elif problem == "wrong affine":
        save_nifti(image_path, image, affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    elif problem == "label shape":
        save_nifti(labels_path, labels[:, :, :181])
    elif problem == "no labels":
        labels_path.unlink()
    elif problem == "NaN image":
        image[50, 60, 70] = np.nan
        save_nifti(image_path, image)
    elif problem == "empty labels":
        save_nifti(labels_path, np.zeros_like(labels))
    elif problem == "only foreign labels":
        save_nifti(labels_path, np.where(labels > 0, 3, 0).astype(np.int16))
    with pytest.raises(InputError, match=match):
        mindboggle101.prepare(raw, out, subjects)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_cli_reports_input_errors(tmp_path, capsys):
    assert main(["prepare", "lpba40", "--raw", str(tmp_path / "none"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "LPBA40 Subjects Delineation Space" in capsys.readouterr().err
    assert main(["download", "lpba40", "--out", str(tmp_path)]) == 2
    assert "ida.loni.usc.edu" in capsys.readouterr().err
    assert main(["prepare", "mindboggle101", "--raw", str(tmp_path),
                 "--out", str(tmp_path / "out")]) == 2
    assert "regbench download mindboggle101" in capsys.readouterr().err
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_manifest_is_json_with_provenance(lpba40_prepared):
    record = json.loads((lpba40_prepared.root / MANIFEST).read_text())
    assert record["registration"]["label_interpolator"] == "genericLabel"
    assert record["registration"]["itk_threads"] >= 1
    assert {"python", "numpy", "nibabel"} <= set(record["versions"])
    assert record["files"]["S31"]["image"][1].endswith("S31.delineation.skullstripped.img.gz")


def test_lpba40_refuses_a_registration_setting_given_twice():
    """Issue 22, second probe: --registration aff_iterations=... twice kept the last without a
    word."""
    with pytest.raises(InputError, match="registration setting aff_iterations is given twice"):
        lpba40.registration_settings([("aff_iterations", [10]), ("aff_iterations", [20])])
    assert lpba40.registration_settings([("aff_iterations", [10])])["aff_iterations"] == (10,)


def test_mindboggle101_refuses_a_subject_in_two_group_folders(tmp_path):
    """Issue 22: a subject folder in two group folders: the first was used without a word."""
    for group in ("OASIS-TRT-20", "MMRR-21"):
        (tmp_path / f"{group}_volumes" / "OASIS-TRT-20-1").mkdir(parents=True)
    with pytest.raises(InputError, match="subject OASIS-TRT-20-1 is in OASIS-TRT-20_volumes/ "
                                         "and in MMRR-21_volumes/"):
        mindboggle101.find_subjects(tmp_path)


def test_paper_splits_without_a_test_pair_are_said(caplog):
    """Issue 22: --subjects keeping 0 or 1 of the paper's test subjects gave a dataset without a
    test pair (exit 0), refused only later by register-pairs."""
    import logging

    from regbench.data.preparation import subset_splits

    with caplog.at_level(logging.WARNING):
        splits = subset_splits(["S01", "S02", "S31"], protocol.LPBA40_SPLITS)
    assert splits["test"] == ["S31"]
    assert "the test split holds 1 subject(s) (S31): the dataset has no test pair" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        subset_splits(["S01", "S31", "S32"], protocol.LPBA40_SPLITS)
    assert not caplog.text
