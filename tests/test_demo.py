"""The synthetic demo dataset: grid, atlas, transforms, determinism, manifest, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regbench.cli import main
from regbench.data import demo, protocol
from regbench.data.dataset import Dataset
from regbench.io import InputError, voxel_spacing
from regbench.metrics import dice_per_label
from regbench.transforms import sample, warp, warp_labels

SCALE = 0.25  # the conftest demo: 40x48x40 voxels of 4 mm


def jacobian_determinant(field: np.ndarray) -> np.ndarray:
    """det(I + grad u) of a (3, X, Y, Z) voxel-unit field, central differences."""
    grads = [np.gradient(field[c]) for c in range(3)]
    jac = np.stack([np.stack(g, axis=-1) for g in grads], axis=-2) + np.eye(3)
    return np.linalg.det(jac)


def world_centroid(labels: np.ndarray, label: int, affine: np.ndarray) -> np.ndarray:
    index = np.argwhere(labels == label).mean(axis=0)
    return affine[:3, :3] @ index + affine[:3, 3]


def test_grid_is_the_paper_crop_at_every_scale():
    shape, affine = demo.demo_grid(1.0)
    crop = np.eye(4)
    crop[:3, 3] = [s.start for s in protocol.crop_slices(protocol.MNI_SHAPE)]  # 11, 13, 11
    assert shape == protocol.CROP_SHAPE
    np.testing.assert_allclose(affine, np.asarray(protocol.MNI_AFFINE) @ crop)
    # MNI (0, 0, 0) is FSL voxel (90, 126, 72), i.e. crop voxel (79, 113, 61); a 4 mm voxel p
    # covers crop voxels 4p .. 4p + 3, centre 4p + 1.5.
    shape, affine = demo.demo_grid(SCALE)
    assert shape == (40, 48, 40)
    np.testing.assert_allclose(voxel_spacing(affine), [4, 4, 4])
    origin = np.linalg.inv(affine) @ [0, 0, 0, 1]
    np.testing.assert_allclose(origin[:3], (np.array([79, 113, 61]) - 1.5) / 4)
    assert demo.demo_grid(0.5)[0] == (80, 96, 80)


def test_template_lies_where_nilearn_puts_it():
    from nilearn import datasets, image

    template, _, affine = demo.demo_atlas(SCALE)
    reference = image.resample_img(
        datasets.load_mni152_template(resolution=1), target_affine=affine,
        target_shape=template.shape, interpolation="linear", force_resample=True,
        copy_header=True).get_fdata()
    assert np.corrcoef(template.ravel(), reference.ravel())[0, 1] > 0.98
    shifted = np.roll(reference, 2, axis=1)  # 8 mm posterior
    assert np.corrcoef(template.ravel(), shifted.ravel())[0, 1] < 0.9


def test_atlas_regions_sit_at_their_mni_positions():
    template, labels, affine = demo.demo_atlas(SCALE)
    assert set(np.unique(labels)) == {0, *demo.DEMO_LABELS}
    for region, expected in (("Putamen", (25, 2, 0)), ("Hippocampus", (28, -22, -14))):
        left, right = demo.DEMO_REGIONS[region]
        assert demo.DEMO_LABELS[left].startswith("L ") and demo.DEMO_LABELS[right].startswith("R ")
        np.testing.assert_allclose(world_centroid(labels, left, affine),
                                   np.multiply(expected, (-1, 1, 1)), atol=5)
        np.testing.assert_allclose(world_centroid(labels, right, affine), expected, atol=5)
    y = {region: world_centroid(labels, ids[0], affine)[1]
         for region, ids in demo.DEMO_REGIONS.items()}
    assert y["Frontal"] > y["Parietal"] > y["Occipital"]
    # Every label lies in the head; the odd labels in the left hemisphere (x < 0).
    assert template[labels > 0].min() > 0
    x = (affine[:3, :3] @ np.argwhere(labels > 0).T + affine[:3, 3:])[0]
    assert np.all((x < 0) == (labels[labels > 0] % 2 == 1))


def test_manifest_and_split(demo_dataset: Dataset):
    assert demo_dataset.name == "demo"
    assert demo_dataset.subjects == [f"demo{i:02d}" for i in range(1, 7)]
    assert demo_dataset.train == ["demo01", "demo02", "demo03", "demo04"]
    assert demo_dataset.test == ["demo05", "demo06"]
    assert demo_dataset.val == []
    assert demo_dataset.labels == {1: "L Frontal", 2: "R Frontal", **{
        k: v for k, v in demo.DEMO_LABELS.items() if k > 2}}
    assert demo_dataset.labels[14] == "R Hippocampus"
    assert demo_dataset.regions["Cingulate"] == [9, 10]
    assert demo_dataset.shape == (40, 48, 40) and demo_dataset.spacing == (4.0, 4.0, 4.0)
    np.testing.assert_allclose(demo_dataset.affine, demo.demo_grid(SCALE)[1])
    manifest = demo_dataset.manifest
    assert manifest["synthetic"] is True and "SYNTHETIC" in manifest["description"]
    assert (manifest["seed"], manifest["scale"]) == (0, SCALE)
    assert "MNI152" in manifest["source"]
    assert demo.demo_split(16) == ([f"demo{i:02d}" for i in range(1, 10)],
                                   [f"demo{i:02d}" for i in range(10, 13)],
                                   [f"demo{i:02d}" for i in range(13, 17)])
    assert [len(split) for split in demo.demo_split(4)] == [2, 0, 2]
    assert [len(split) for split in demo.demo_split(6)] == [4, 0, 2]
    assert [len(split) for split in demo.demo_split(100)] == [92, 4, 4]
    assert [len(split) for split in demo.demo_split(100, 8)] == [88, 4, 8]
    assert demo.demo_split(100, 8)[2] == [f"demo{i:03d}" for i in range(93, 101)]
    assert [len(split) for split in demo.demo_split(6, 4)] == [2, 0, 4]
    for bad in (1, 5, 2.5, True):
        with pytest.raises(ValueError, match="test_subjects"):
            demo.demo_split(6, bad)
    assert demo.demo_subjects(100)[0] == "demo001"


def test_written_subjects_are_the_seeded_generator(demo_dataset: Dataset):
    for number, subject in ((1, "demo01"), (6, "demo06")):
        image, labels = demo.make_subject(0, number, SCALE)
        np.testing.assert_array_equal(demo_dataset.image(subject), image)
        np.testing.assert_array_equal(demo_dataset.label_map(subject), labels)
        assert image.max() == 1.0 and image.min() >= 0
        assert set(np.unique(labels)) == {0, *demo.DEMO_LABELS}, subject
    again = demo.make_subject(0, 1, SCALE)
    np.testing.assert_array_equal(again[0], demo_dataset.image("demo01"))
    other_seed = demo.make_subject(1, 1, SCALE)
    assert not np.allclose(other_seed[0], again[0], atol=0.05)
    assert not np.array_equal(other_seed[1], again[1])
    assert not np.array_equal(demo_dataset.label_map("demo02"), again[1])


def test_every_subject_has_every_label(demo_dataset: Dataset):
    for subject in demo_dataset.subjects:
        present = set(np.unique(demo_dataset.label_map(subject)))
        assert present == {0, *demo_dataset.labels}, subject


def test_image_and_labels_share_the_subjects_own_transform(demo_dataset: Dataset):
    template, atlas, _ = demo.demo_atlas(SCALE)
    fields = {n: torch.from_numpy(demo.subject_transform(0, n, SCALE).field())[None]
              for n in (2, 3)}
    labels = demo_dataset.label_map("demo02")
    image = demo_dataset.image("demo02")
    own = warp_labels(torch.from_numpy(atlas.copy())[None, None], fields[2])[0, 0].numpy()
    other = warp_labels(torch.from_numpy(atlas.copy())[None, None], fields[3])[0, 0].numpy()
    np.testing.assert_array_equal(labels, own)
    labelled = (labels > 0) | (other > 0)
    assert (labels == other)[labelled].mean() < 0.7

    def correlation(n: int) -> float:
        warped = warp(torch.from_numpy(template.copy())[None, None], fields[n])[0, 0].numpy()
        return float(np.corrcoef(image.ravel(), warped.ravel())[0, 1])

    assert correlation(2) > 0.97
    assert 1 - correlation(3) > 5 * (1 - correlation(2))


@pytest.mark.parametrize("number", [1, 2, 3])
def test_deformation_is_nonlinear_diffeomorphic_and_affine_only_on_request(number: int):
    transform = demo.subject_transform(0, number, SCALE)
    spacing = 1 / SCALE
    template, _, _ = demo.demo_atlas(SCALE)
    head = template > 0.05  # the deformation's size where there is anatomy
    nonlinear_mm = np.sqrt((transform.nonlinear**2).sum(0)) * spacing
    assert 5.0 <= nonlinear_mm[head].max() <= 12.0
    assert np.array_equal(transform.field(), transform.nonlinear)  # affinely aligned
    with_affine = demo.subject_transform(0, number, SCALE, affine=True)
    np.testing.assert_array_equal(with_affine.nonlinear, transform.nonlinear)
    field = with_affine.field()
    assert not np.allclose(field, transform.nonlinear, atol=0.1)  # the affine part is there
    for displacement in (transform.nonlinear, field):
        det = jacobian_determinant(displacement)
        assert (det <= 0).mean() < 1e-4
        assert np.log(np.clip(det, 1e-6, None)).std() > 0.05  # not close to rigid


@pytest.mark.parametrize("affine", [False, True])
def test_the_true_pair_displacement_registers_moving_onto_fixed(affine: bool):
    moving, fixed = (demo.subject_transform(2, n, SCALE, affine) for n in (1, 2))
    field = demo.pair_displacement(moving, fixed)
    (_, moving_labels), (_, fixed_labels) = (demo.make_subject(2, n, SCALE, affine)
                                             for n in (1, 2))
    warped = warp_labels(torch.from_numpy(moving_labels)[None, None],
                         torch.from_numpy(field.astype(np.float32))[None])[0, 0].numpy()
    labels = list(demo.DEMO_LABELS)
    before = np.nanmean(list(dice_per_label(moving_labels, fixed_labels, labels).values()))
    after = np.nanmean(list(dice_per_label(warped, fixed_labels, labels).values()))
    # Nearest-neighbour labels on 4 mm voxels cap the Dice of even the true field.
    assert after > 0.75 and after > before + 0.1, (before, after)


def test_manifest_records_the_size_of_the_pair_displacements(demo_dataset: Dataset):
    stats = demo_dataset.manifest["pair_displacement_mm"]
    assert stats["pairs"] == 2 and "test pair" in stats["over"]
    assert 0 < stats["median"] <= stats["p95"] <= stats["max"] < 30
    assert demo_dataset.manifest["subject_affines"] is False


def test_a_seed_describes_the_same_subject_at_every_scale():
    coarse = demo.subject_transform(4, 2, SCALE).field() * 4  # mm
    fine = demo.subject_transform(4, 2, 0.5).field() * 2
    # Each 4 mm voxel is the centre of a 2x2x2 block of 2 mm voxels.
    fine_blocks = fine.reshape(3, 40, 2, 48, 2, 40, 2).mean(axis=(2, 4, 6))
    assert np.abs(coarse - fine_blocks).mean() < 0.1 * np.abs(coarse).mean()


def test_field_interpolation_is_the_suites_trilinear_sampler():
    values = np.random.default_rng(0).standard_normal((2, 5, 6, 7))
    positions = [np.linspace(-1, 5, 9), np.linspace(0.3, 4.2, 4), np.linspace(0, 6, 13)]
    grid = torch.stack(torch.meshgrid(*map(torch.tensor, positions), indexing="ij"))[None]
    expected = sample(torch.from_numpy(values)[None], grid, "bilinear", "border")[0].numpy()
    np.testing.assert_allclose(demo._interpolate(values, positions), expected, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(subjects=3), dict(scale=0.0), dict(scale=1.5),
                                    dict(scale=0.05), dict(scale=float("nan"))])
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs):
    out = tmp_path / "demo"
    with pytest.raises(InputError, match="demo"):
        demo.make_demo(out, **{"subjects": 4, "scale": SCALE, **kwargs})
    assert not out.exists()


def test_cli_writes_a_dataset_and_an_interrupted_rerun_does_not_look_complete(
        tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    args = ["demo-data", "--out", str(out), "--subjects", "4", "--scale", "0.125", "--seed", "5"]
    assert main(args) == 0
    dataset = Dataset.load(out)
    assert dataset.shape == (20, 24, 20) and dataset.manifest["seed"] == 5
    assert dataset.test == ["demo03", "demo04"]
    np.testing.assert_array_equal(dataset.image("demo04"), demo.make_subject(5, 4, 0.125)[0])

    assert main(["demo-data", "--out", str(tmp_path / "x"), "--subjects", "2"]) == 2
    assert "subjects=2" in capsys.readouterr().err

    calls = []
    make_subject = demo.make_subject

    def interrupted(seed, number, *args):
        calls.append(number)
        if number == 2:
            raise KeyboardInterrupt
        return make_subject(seed, number, *args)

    monkeypatch.setattr(demo, "make_subject", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.make_demo(out, subjects=4, scale=0.125, seed=6)
    assert calls == [1, 2]
    with pytest.raises(InputError, match="not found"):
        Dataset.load(out)
