"""LPBA40's flat NIfTI layout (regbench.data.lpba40): 160x192x160 volumes of 1 mm whose headers
claim LPS while the voxel axes are RAS, read with the orientation taken from the labels."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from regbench.cli import main
from regbench.data import lpba40, protocol
from regbench.data.dataset import MANIFEST, Dataset
from regbench.data.preparation import given_splits
from regbench.io import InputError

MNI = np.array(protocol.MNI_AFFINE, dtype=float)
CROP = protocol.crop_slices(protocol.MNI_SHAPE)
HEADER = np.diag([-1.0, -1.0, 1.0, 1.0])
"""The distribution's header affine: a default that claims LPS (the voxel axes are RAS)."""

FAST = {"aff_iterations": (20,), "aff_shrink_factors": (8,), "aff_smoothing_sigmas": (3,)}
KEPT = (21, 22, 67, 68, 163, 164, protocol.LPBA40_CEREBELLUM)


@pytest.fixture(scope="module")
def atlas() -> tuple[np.ndarray, np.ndarray]:
    """The preparer's template and labels on the FSL grid: frontal (21/22) anterior-superior,
    occipital (67/68) posterior, putamen-like ellipsoids (163/164), cerebellum (181) inferior
    and posterior; left IDs at MNI x < 0."""
    template, _ = lpba40.mni_template()
    i, j, k = np.ogrid[tuple(slice(0, n) for n in protocol.MNI_SHAPE)]
    x, y, z = -1.0 * i + 90, 1.0 * j - 126, 1.0 * k - 72
    brain = template > 0.25
    labels = np.zeros(template.shape, dtype=np.int16)
    for left, right, region in ((21, 22, brain & (y > 20) & (z > 20)),
                                (67, 68, brain & (y < -70) & (z > -10))):
        labels[region & (x < -4)] = left
        labels[region & (x > 4)] = right
    for label, side in ((163, -1), (164, 1)):
        labels[(((x - 25 * side) / 7) ** 2 + ((y - 2) / 13) ** 2 + ((z - 1) / 9) ** 2) <= 1] = label
    labels[brain & (z < -25) & (y < -45) & (labels == 0)] = protocol.LPBA40_CEREBELLUM
    return template, labels


def distributed_subject(atlas, shift_mm=(3.0, -4.0, 2.0)) -> tuple[np.ndarray, np.ndarray]:
    """A subject as the distribution has it: on a 160x192x160 RAS 1 mm grid (centre at world 0),
    placed by a shift from MNI152, intensities in [0, 1] (float64), labels uint8."""
    template, labels = atlas
    to_mni = np.eye(4)
    to_mni[:3, 3] = np.array([0.0, -18.0, 15.0]) + np.asarray(shift_mm)
    voxel = np.linalg.inv(MNI) @ to_mni @ lpba40.nifti_affine()
    image = ndimage.affine_transform(template, voxel[:3, :3], voxel[:3, 3],
                                     output_shape=protocol.CROP_SHAPE, order=1)
    label_map = ndimage.affine_transform(labels, voxel[:3, :3], voxel[:3, 3],
                                         output_shape=protocol.CROP_SHAPE, order=0)
    return (image / image.max()).astype(np.float64), label_map.astype(np.uint8)


def write_subject(raw: Path, subject: str, image: np.ndarray, labels: np.ndarray,
                  suffix: str = ".nii.gz", affine: np.ndarray = HEADER) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for stem, data in ((lpba40.IMAGE_STEM, image), (lpba40.LABELS_STEM, labels)):
        nib.save(nib.Nifti1Image(data, affine), str(raw / (stem.format(subject=subject) + suffix)))


@pytest.fixture(scope="module")
def raw(atlas, tmp_path_factory) -> Path:
    """S02 (gzipped), S05 (plain .nii) and S07 (gzipped), each shifted otherwise from MNI152."""
    folder = tmp_path_factory.mktemp("lpba40_nifti")
    for subject, shift, suffix in (("S02", (3.0, -4.0, 2.0), ".nii.gz"),
                                   ("S05", (-2.0, 3.0, -3.0), ".nii"),
                                   ("S07", (0.0, 5.0, 4.0), ".nii.gz")):
        write_subject(folder, subject, *distributed_subject(atlas, shift), suffix=suffix)
    return folder


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> Dataset:
    out = tmp_path_factory.mktemp("prepared") / "lpba40"
    lpba40.prepare(raw, out, splits=given_splits(train="S02", test="S05,S07"),
                   registration=FAST, seed=0)
    return Dataset.load(out)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_the_layout_is_found_by_its_files(raw, tmp_path):
    assert lpba40.find_layout(raw) == ("nifti", raw)
    assert list(lpba40.nifti_files(raw)) == ["S02", "S05", "S07"]
    assert lpba40.nifti_files(raw)["S05"]["image"].name.endswith(".skullstripped.nii")
    loni = tmp_path / "LPBA40" / "delineation_space" / "S01"
    loni.mkdir(parents=True)
    assert lpba40.find_layout(tmp_path) == ("delineation_space", loni.parent)


def test_the_nifti_layout_lands_on_the_cropped_mni_grid(prepared, atlas):
    data = prepared
    assert data.manifest["layout"] == "nifti"
    assert "flat folder of 160x192x160 1 mm NIfTI" in data.manifest["source"]
    assert data.manifest["source_grid"]["voxel_axes"].startswith("RAS")
    assert (data.train, data.val, data.test) == (["S02"], [], ["S05", "S07"])
    assert data.shape == protocol.CROP_SHAPE
    template, truth = (a[CROP] for a in atlas)
    for subject in data.subjects:
        image, labels = data.image(subject), data.label_map(subject)
        assert image.max() == pytest.approx(1.0) and image.min() >= 0
        assert data.manifest["template_correlation"][subject] > 0.95
        assert set(np.unique(labels)) == {0, *KEPT}
        for label in KEPT:
            assert dice(labels == label, truth == label) > 0.75, (subject, label)
        # Left stays left although the header claims the opposite: odd IDs at MNI x < 0.
        world_x = data.affine[0] @ np.r_[np.argwhere(labels == 21).mean(0), 1.0]
        assert world_x < -10


def test_half_scale_and_the_same_normalisation(raw, prepared, tmp_path):
    out = lpba40.prepare(raw, tmp_path / "half", "S02", scale=0.5, registration=FAST, seed=0)
    half = Dataset.load(out)
    assert half.shape == (80, 96, 80)
    assert half.manifest["grid"]["resampling"]["block_voxels"] == [2, 2, 2]
    full = prepared.image("S02")
    blocks = full.reshape(80, 2, 96, 2, 80, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(half.image("S02"), blocks, atol=1e-5)


@pytest.mark.parametrize("axis, seen", [(0, "left structures"), (1, "frontal at axis-1"),
                                        (2, "cerebellum at axis-2")])
def test_a_flipped_volume_is_refused_naming_the_file_and_what_was_seen(atlas, tmp_path, axis,
                                                                       seen):
    image, labels = distributed_subject(atlas)
    write_subject(tmp_path, "S03", np.flip(image, axis), np.flip(labels, axis))
    with pytest.raises(InputError, match=seen) as error:
        lpba40.prepare(tmp_path, tmp_path / "out", registration=FAST)
    assert "S03.delineation.structure.label.nii.gz" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_labels_without_the_structures_that_tell_orientation_are_refused(atlas, tmp_path):
    image, labels = distributed_subject(atlas)
    labels[labels == protocol.LPBA40_CEREBELLUM] = 0
    write_subject(tmp_path, "S03", image, labels)
    with pytest.raises(InputError, match="no cerebellum label"):
        lpba40.prepare(tmp_path, tmp_path / "out", registration=FAST)


def test_bad_files_are_refused_before_any_registration(atlas, tmp_path, monkeypatch):
    def no_registration(*args, **kwargs):
        raise AssertionError("registered before every file was checked")

    monkeypatch.setattr(lpba40, "register_to_template", no_registration)
    image, labels = distributed_subject(atlas)
    write_subject(tmp_path, "S01", image, labels)
    write_subject(tmp_path, "S04", image[:, :, :150], labels[:, :, :150])
    with pytest.raises(InputError, match=r"S04\.delineation\.skullstripped\.nii\.gz: grid "
                                         r"160x192x150"):
        lpba40.prepare(tmp_path, tmp_path / "out")
    (tmp_path / "S04.delineation.skullstripped.nii.gz").unlink()
    with pytest.raises(InputError, match="S04 has no image file"):
        lpba40.prepare(tmp_path, tmp_path / "out")
    (tmp_path / "S04.delineation.structure.label.nii.gz").unlink()
    shutil.copy(tmp_path / "S01.delineation.skullstripped.nii.gz",
                tmp_path / "S01.delineation.skullstripped.nii")
    (tmp_path / "S01.delineation.skullstripped.nii").write_bytes(
        gzip.decompress((tmp_path / "S01.delineation.skullstripped.nii.gz").read_bytes()))
    with pytest.raises(InputError, match="S01's image is there twice"):
        lpba40.prepare(tmp_path, tmp_path / "out")
    (tmp_path / "S01.delineation.skullstripped.nii").unlink()
    with pytest.raises(InputError, match="S09 not found: expected .*S09.delineation"):
        lpba40.prepare(tmp_path, tmp_path / "out", "S01,S09")
    bad = image.copy()
    bad[80, 90, 80] = np.nan
    write_subject(tmp_path, "S01", bad, labels)
    monkeypatch.undo()
    with pytest.raises(InputError, match="S01.delineation.skullstripped.nii.gz: 1 NaN"):
        lpba40.prepare(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli_reads_the_flat_folder_with_its_own_splits(raw, atlas, tmp_path, monkeypatch):
    """The command line reaches the same preparer (registration stubbed: the CLI passes no
    settings, and ANTs' full schedule is slow)."""
    def placed(image, labels, affine, template, template_affine, **kwargs):
        assert np.array_equal(affine, lpba40.nifti_affine())
        return atlas[0].copy(), atlas[1].astype(np.int32), 0.99

    monkeypatch.setattr(lpba40, "register_to_template", placed)
    out = tmp_path / "cli"
    assert main(["prepare", "lpba40", "--raw", str(raw), "--out", str(out), "--scale", "0.5",
                 "--train", "S07", "--test", "S02,S05"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["layout"] == "nifti" and manifest["split_source"] == "given"
    assert manifest["splits"] == {"train": ["S07"], "val": [], "test": ["S02", "S05"]}
    assert Dataset.load(out).shape == (80, 96, 80)


def test_cli_registration_settings_are_ants_keywords(raw, tmp_path):
    assert main(["prepare", "lpba40", "--raw", str(raw), "--out", str(tmp_path / "out"),
                 "--registration", "aff_iteration=[5]"]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cpu_configuration_end_to_end_on_a_synthetic_copy(atlas, tmp_path):
    """config/lpba40_cpu.yaml with its ablation and slice-spacing overlays, on 6 synthetic
    subjects in the flat NIfTI layout at quarter size (2 test subjects: 2 ordered pairs)."""
    import csv

    import yaml
    from test_workflow import markdown_rows, overlay, snakemake

    root = Path(__file__).resolve().parents[1]
    configs = [root / "config" / f"lpba40_cpu{part}.yaml" for part in ("", "_ablation", "_slices")]
    splits = {"train": ["S01", "S02"], "val": ["S03", "S04"], "test": ["S05", "S06"]}
    work = tmp_path / "work"
    raw = work / "raw" / "LPBA40_nifti"
    for index, subject in enumerate(s for split in splits.values() for s in split):
        write_subject(raw, subject, *distributed_subject(atlas, (index - 2.5, 2.0 - index, 1.0)))
    tiny = overlay(tmp_path, "tiny.yaml", {
        "datasets": {"lpba40": {"raw": str(raw), "scale": 0.25, "splits": splits,
                                "prepare": {"registration": {k: list(v)
                                                             for k, v in FAST.items()}}}},
        "methods": {"syn": {"options": {"reg_iterations": [4, 0, 0]}}},
        "train": {"steps": 2, "warmup_steps": 1, "checkpoint_every": 1, "validate_every": 1},
    })
    snakemake("--cores", "2", "--configfile", *map(str, configs), tiny, cwd=work, timeout=1500)

    data = Dataset.load(work / "data" / "lpba40")
    assert data.manifest["layout"] == "nifti" and data.shape == (40, 48, 40)
    assert data.manifest["registration"]["settings"]["aff_iterations"] == [20]
    assert (data.train, data.val, data.test) == tuple(splits.values())
    results = work / "results" / "lpba40"
    rows = list(csv.DictReader((results / "main" / "per_pair.csv").open()))
    config = yaml.safe_load(configs[0].read_text())
    assert sorted(r["method"] for r in rows) == sorted(
        m for m in config["experiments"]["main"]["methods"] for _ in range(2))
    ours = [row for row in markdown_rows(results / "tables" / "table1_faim.md")
            if row["Source"] == "ours"]
    assert [row["Method"] for row in ours] == ["Identity", "Affine", "SyN", "VoxelMorph",
                                               "Dual-PRNet"]
    assert set(protocol.LPBA40_REGIONS) <= set(ours[0])  # the 7 regions' columns
    for table in ("ablation", "slice_spacing"):
        assert (results / "tables" / f"{table}.md").stat().st_size > 0
    for stem in ("fig4_faim", "dice_regularity_faim", "learning_curves"):
        assert (work / "figures" / "lpba40" / f"{stem}.png").stat().st_size > 0


REAL_RAW = Path(os.environ.get("REGBENCH_LPBA40_RAW",
                               Path(__file__).resolve().parents[1] / "raw" / "LPBA40_nifti"))
"""The flat NIfTI copy of the development subjects S01-S30 (README, "LPBA40 on a CPU")."""


@pytest.mark.skipif(not (REAL_RAW / "S01.delineation.structure.label.nii.gz").is_file(),
                    reason=f"the real development subjects are not in {REAL_RAW} (README, "
                           "'LPBA40 on a CPU', says how to extract them; set "
                           "REGBENCH_LPBA40_RAW to another folder)")
def test_real_development_subjects(tmp_path):
    """Every development subject reads, with its labels in RAS although its header claims LPS;
    two of them land on MNI152 close to the template and to each other."""
    files = lpba40.nifti_files(REAL_RAW)
    assert set(files) <= set(protocol.LPBA40_SPLITS["train"]), "a held-out subject is there"
    for subject, paths in files.items():
        header = nib.load(str(paths["labels"])).affine
        assert nib.aff2axcodes(header) == ("L", "P", "S"), subject  # what the header claims
        labels = lpba40.read_nifti_volume(paths["labels"], "labels")
        seen = lpba40.check_orientation(labels, paths["labels"])
        assert seen["right_axis0"] - seen["left_axis0"] > 30, subject
    out = lpba40.prepare(REAL_RAW, tmp_path / "lpba40", "S03,S11", scale=0.5,
                         registration={"aff_iterations": (200, 100), "aff_shrink_factors": (4, 2),
                                       "aff_smoothing_sigmas": (2, 1)},
                         splits=given_splits(test="S03,S11"))
    data = Dataset.load(out)
    assert min(data.manifest["template_correlation"].values()) > 0.85
    a, b = (data.label_map(s) for s in ("S03", "S11"))
    faim = np.mean([dice(np.isin(a, ids), np.isin(b, ids))
                    for ids in protocol.LPBA40_REGIONS.values()])
    assert faim > 0.55  # two real brains on MNI152, unregistered to each other
