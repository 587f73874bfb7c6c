"""The protocol tables (regbench.data.protocol, regbench.data.demo) against explicit lists typed
here and against docs/protocol.md, which must describe exactly what the code does."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from markdown_tables import flat, section, table

from regbench.data import demo, protocol, registry
from regbench.metrics import LOG_JACOBIAN_CLIP, LOG_JACOBIAN_SHIFT, image_diagonal

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_MD = ROOT / "docs" / "protocol.md"

LPBA40_IDS = [
    21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,  # frontal
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50,  # parietal
    61, 62, 63, 64, 65, 66, 67, 68,  # occipital
    81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92,  # temporal
    101, 102, 121, 122,  # insula, cingulate
    161, 162, 163, 164, 165, 166,  # caudate, putamen, hippocampus
    181, 182,  # cerebellum, brainstem
]
LPBA40_REGIONS = {
    "Frontal": [21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34],
    "Parietal": [41, 42, 43, 44, 45, 46, 47, 48, 49, 50],
    "Occipital": [61, 62, 63, 64, 65, 66, 67, 68],
    "Temporal": [81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92],
    "Cingulate": [101, 102, 121, 122],
    "Putamen": [163, 164],
    "Hippocampus": [165, 166],
}
DKT25_LEFT = [1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 1013, 1014, 1015, 1016, 1017,
              1018, 1021, 1022, 1024, 1025, 1028, 1029, 1030, 1031, 1034, 1035]
MINDBOGGLE_LEFT_REGIONS = {
    "Frontal": [1003, 1012, 1014, 1017, 1018, 1024, 1028],
    "Parietal": [1008, 1022, 1025, 1029, 1031],
    "Occipital": [1005, 1011, 1013, 1021],
    "Temporal": [1006, 1007, 1009, 1015, 1016, 1030, 1034],
    "Cingulate": [1002, 1035],
}
DKT31_MERGES_LEFT = {1010: 1002, 1023: 1002, 1026: 1002, 1027: 1003, 1019: 1018, 1020: 1018}


def ordered_pairs(n: int) -> int:
    return len(list(itertools.permutations(range(n), 2)))


# --- against explicit lists ---------------------------------------------------------------------


def test_lpba40_labels_and_regions():
    assert sorted(protocol.LPBA40_LABELS) == LPBA40_IDS
    assert len(protocol.LPBA40_LABELS) == 56
    assert protocol.LPBA40_REGIONS == LPBA40_REGIONS
    assert list(protocol.LPBA40_REGIONS) == list(LPBA40_REGIONS)  # table order
    merged = [i for ids in protocol.LPBA40_REGIONS.values() for i in ids]
    assert len(merged) == len(set(merged)) == 52  # disjoint
    assert sorted(set(LPBA40_IDS) - set(merged)) == [161, 162, 181, 182]
    # odd = left, even = right, for every paired structure
    for label, name in protocol.LPBA40_LABELS.items():
        if label < 181:
            assert name.startswith("L " if label % 2 else "R "), (label, name)
    assert protocol.LPBA40_LABELS[181] == "cerebellum"
    assert protocol.LPBA40_LABELS[182] == "brainstem"


def test_lpba40_subjects_splits_and_grid():
    assert protocol.LPBA40_SUBJECTS == [f"S{i:02d}" for i in range(1, 41)]
    assert protocol.LPBA40_SPLITS["train"] == [f"S{i:02d}" for i in range(1, 31)]
    assert protocol.LPBA40_SPLITS["test"] == [f"S{i:02d}" for i in range(31, 41)]
    assert ordered_pairs(len(protocol.LPBA40_SPLITS["train"])) == 870
    assert ordered_pairs(len(protocol.LPBA40_SPLITS["test"])) == 90
    assert protocol.LPBA40_DELINEATION_SHAPE == (256, 124, 256)
    assert protocol.LPBA40_DELINEATION_SPACING == (0.859375, 1.5, 0.859375)


def test_mindboggle101_labels_regions_and_merge():
    left = sorted(i for i in protocol.MINDBOGGLE101_LABELS if i < 2000)
    right = sorted(i for i in protocol.MINDBOGGLE101_LABELS if i >= 2000)
    assert left == DKT25_LEFT and len(left) == 25
    assert right == [i + 1000 for i in DKT25_LEFT]
    for i in DKT25_LEFT:
        assert protocol.MINDBOGGLE101_LABELS[i].removeprefix("L ") == (
            protocol.MINDBOGGLE101_LABELS[i + 1000].removeprefix("R "))
    assert protocol.MINDBOGGLE101_REGIONS == {
        name: ids + [i + 1000 for i in ids] for name, ids in MINDBOGGLE_LEFT_REGIONS.items()}
    merged = [i for ids in protocol.MINDBOGGLE101_REGIONS.values() for i in ids]
    assert len(merged) == len(set(merged)) == 50  # disjoint, and every DKT25 label is used
    assert set(merged) == set(protocol.MINDBOGGLE101_LABELS)
    assert protocol.DKT31_TO_DKT25 == {
        **DKT31_MERGES_LEFT, **{k + 1000: v + 1000 for k, v in DKT31_MERGES_LEFT.items()}}
    # DKT31 = DKT25 + the 6 merged labels per hemisphere; every target is a DKT25 label.
    assert set(protocol.DKT31_TO_DKT25.values()) <= set(protocol.MINDBOGGLE101_LABELS)
    assert not set(protocol.DKT31_TO_DKT25) & set(protocol.MINDBOGGLE101_LABELS)
    assert len(DKT25_LEFT) + len(DKT31_MERGES_LEFT) == 31


def test_mindboggle101_groups_and_splits():
    assert protocol.MINDBOGGLE101_GROUPS == {
        "OASIS-TRT-20": 20, "NKI-RS-22": 22, "NKI-TRT-20": 20, "MMRR-21": 21, "Extra-18": 18}
    for group, count in protocol.MINDBOGGLE101_GROUPS.items():
        assert group.endswith(f"-{count}")  # the name says the count
    assert sum(protocol.MINDBOGGLE101_GROUPS.values()) == 101
    splits = protocol.MINDBOGGLE101_SPLIT_GROUPS
    assert splits == {"train": ["NKI-RS-22", "NKI-TRT-20"], "test": ["OASIS-TRT-20"]}
    sizes = {name: sum(protocol.MINDBOGGLE101_GROUPS[g] for g in groups)
             for name, groups in splits.items()}
    assert sizes == {"train": 42, "test": 20}
    assert (ordered_pairs(sizes["train"]), ordered_pairs(sizes["test"])) == (1722, 380)


def test_mni_grid_and_crop():
    assert protocol.MNI_SHAPE == (182, 218, 182)
    np.testing.assert_array_equal(protocol.MNI_AFFINE, [
        [-1, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
    assert protocol.CROP_SHAPE == (160, 192, 160)
    assert protocol.crop_start(protocol.MNI_SHAPE) == (11, 13, 11)
    assert protocol.crop_slices(protocol.MNI_SHAPE) == (
        slice(11, 171), slice(13, 205), slice(11, 171))


@pytest.mark.parametrize("shape, target", [
    ((182, 218, 182), (160, 192, 160)),
    ((181, 217, 181), (160, 192, 160)),
    ((160, 192, 160), (160, 192, 160)),
    ((7, 8, 9), (2, 3, 4)),
    ((40, 48, 40), (33, 47, 1)),
])
def test_crop_formula(shape, target):
    start = protocol.crop_start(shape, target)
    assert start == tuple(s // 2 - t // 2 for s, t in zip(shape, target, strict=True))
    cropped = np.zeros(shape)[protocol.crop_slices(shape, target)]
    assert cropped.shape == target
    # Centred: the margins either side differ by at most one voxel.
    for s, t, b in zip(shape, target, start, strict=True):
        assert abs((s - t - b) - b) <= 1


def test_crop_larger_than_volume_is_refused():
    with pytest.raises(ValueError, match="cannot crop"):
        protocol.crop_start((150, 192, 160))


# --- against docs/protocol.md ------------------------------------------------------------------


@pytest.fixture(scope="module")
def protocol_md() -> str:
    return PROTOCOL_MD.read_text()


def ids_in(text: str) -> set[int]:
    """Label IDs written as ``21-34``, ``101/102`` or ``101, 102`` in ``text``."""
    found: set[int] = set()
    for low, high in re.findall(r"\b(\d{2,4})-(\d{2,4})\b", text):
        found.update(range(int(low), int(high) + 1))
    text = re.sub(r"\b\d{2,4}-\d{2,4}\b", " ", text)
    found.update(int(i) for i in re.findall(r"\b\d{2,4}\b", text))
    return found


def name_pairs(rows: list[dict[str, str]], names: str) -> dict[int, str]:
    """``{label: "L name" / "R name" / "name"}`` from rows of ``Left | Right | <names>``."""
    found = {}
    for row in rows:
        if not row["Right"]:
            found[int(row["Left"])] = row[names]
            continue
        found[int(row["Left"])] = f"L {row[names]}"
        found[int(row["Right"])] = f"R {row[names]}"
    return found


def test_lpba40_labels_regions_and_split_against_protocol_md(protocol_md):
    assert name_pairs(table(protocol_md, "#### LPBA40 labels"), "Structure") == (
        protocol.LPBA40_LABELS)
    rows = table(protocol_md, "#### LPBA40 regions")
    regions = {row["Region"]: sorted(ids_in(row["Labels"])) for row in rows}
    assert regions == protocol.LPBA40_REGIONS
    assert list(regions) == list(protocol.LPBA40_REGIONS)  # table order
    unused = set(protocol.LPBA40_LABELS) - {i for ids in regions.values() for i in ids}
    prose = flat(section(protocol_md, "#### LPBA40 regions").split("|")[0])
    assert unused == {161, 162, 181, 182}
    assert "Four labels belong to no region" in prose and ids_in(prose) == unused
    split = {row["Split"]: row for row in table(protocol_md, "#### LPBA40 split")}
    for name, row in split.items():
        first, last = (int(i) for i in re.fullmatch(r"S(\d+)-S(\d+)", row["Subjects"]).groups())
        assert protocol.LPBA40_SPLITS[name] == [f"S{i:02d}" for i in range(first, last + 1)]
        assert ordered_pairs(last - first + 1) == int(row["Ordered pairs"])
    assert set(split) == set(protocol.LPBA40_SPLITS)
    grid = re.search(r"Delineation grid: (\d+) x (\d+) x (\d+) voxels of ([\d.]+) x ([\d.]+) x "
                     r"([\d.]+) mm", flat(protocol_md)).groups()
    assert tuple(map(int, grid[:3])) == protocol.LPBA40_DELINEATION_SHAPE
    assert tuple(map(float, grid[3:])) == protocol.LPBA40_DELINEATION_SPACING


def test_mindboggle101_against_protocol_md(protocol_md):
    rows = table(protocol_md, "#### Mindboggle101 groups and split")
    assert {row["Group"]: int(row["Subjects"]) for row in rows} == protocol.MINDBOGGLE101_GROUPS
    assert [row["Group"] for row in rows] == list(protocol.MINDBOGGLE101_GROUPS)
    for split, groups in protocol.MINDBOGGLE101_SPLIT_GROUPS.items():
        assert [row["Group"] for row in rows if row["Split"] == split] == groups
    assert {row["Split"] for row in rows} == {*protocol.MINDBOGGLE101_SPLIT_GROUPS, "not used"}
    sizes = {split: sum(protocol.MINDBOGGLE101_GROUPS[g] for g in groups)
             for split, groups in protocol.MINDBOGGLE101_SPLIT_GROUPS.items()}
    assert (f"The training split has {sizes['train']} subjects "
            f"({ordered_pairs(sizes['train'])} ordered pairs), the test split {sizes['test']} "
            f"({ordered_pairs(sizes['test'])} ordered pairs).") in flat(protocol_md)

    assert name_pairs(table(protocol_md, "#### Mindboggle101 labels"), "Structure") == (
        protocol.MINDBOGGLE101_LABELS)
    merges = {int(row["DKT31 label (left)"]): int(row["Becomes (left)"])
              for row in table(protocol_md, "#### DKT31 to DKT25")}
    assert merges == {k: v for k, v in protocol.DKT31_TO_DKT25.items() if k < 2000}
    assert merges and not set(merges) & set(protocol.MINDBOGGLE101_LABELS)
    assert "right ID is the left ID plus 1000" in flat(protocol_md)

    rows = table(protocol_md, "#### Mindboggle101 regions")
    assert {row["Region"]: sorted(ids_in(row["Left labels"])) for row in rows} == {
        name: sorted(i for i in ids if i < 2000)
        for name, ids in protocol.MINDBOGGLE101_REGIONS.items()}
    assert [row["Region"] for row in rows] == list(protocol.MINDBOGGLE101_REGIONS)


def test_demo_against_protocol_md(protocol_md):
    text = flat(section(protocol_md, "### The embedded demo"))
    rows = table(protocol_md, "#### Demo labels and regions")
    assert name_pairs(rows, "Region") == demo.DEMO_LABELS
    assert {row["Region"]: [int(row["Left"]), int(row["Right"])] for row in rows} == (
        demo.DEMO_REGIONS)
    assert [row["Region"] for row in rows] == list(protocol.LPBA40_REGIONS)  # LPBA40's order
    assert f"{len(demo.DEMO_LABELS)} labels drawn on the template" in text
    for scale in (0.5, 0.25):
        shape, affine = demo.demo_grid(scale)
        size = " x ".join(map(str, shape))
        assert f"{scale:g} gives {size} voxels of {1 / scale:g} mm" in text
        assert np.allclose(np.abs(np.diag(affine[:3, :3])), 1 / scale)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())["datasets"]["demo"]
    assert (f"The default configuration uses {config['subjects']} subjects at scale "
            f"{config['scale']:g} with seed {config['seed']}.") in text
    train, val, test = demo.demo_split(config["subjects"])
    assert (f"With the default {config['subjects']} subjects: {len(train)} training, "
            f"{len(val)} validation and {len(test)} test subjects, i.e. "
            f"{ordered_pairs(len(test))} ordered test pairs.") in text
    assert f"at least 2 and at most {demo.MAX_TEST_SUBJECTS}." in text
    assert f"at most {demo.MAX_VAL_SUBJECTS}, and empty when that quarter has fewer than 2" in text
    for n in range(demo.MIN_SUBJECTS, 40):  # the rule as written, against the code
        train, val, test = demo.demo_split(n)
        expected_test = min(demo.MAX_TEST_SUBJECTS, max(2, n // 4))
        expected_val = min(demo.MAX_VAL_SUBJECTS, (n - expected_test) // 4)
        expected_val = expected_val if expected_val >= 2 else 0
        assert (len(test), len(val)) == (expected_test, expected_val)
    # The generator's parameters, as the page states them.
    spacings = ", ".join(f"{s:g}" for s, _ in demo._VELOCITY_LEVELS[:-1])
    amplitudes = ", ".join(f"{a:g}" for _, a in demo._VELOCITY_LEVELS[:-1])
    last_spacing, last_amplitude = demo._VELOCITY_LEVELS[-1]
    assert (f"control grids of {spacings} and {last_spacing:g} mm with relative amplitudes "
            f"{amplitudes} and {last_amplitude:g}") in text
    assert "between {:g} and {:g} mm".format(*demo._MAX_VELOCITY_MM) in text
    assert f"integrated in {demo._INTEGRATION_STEPS} scaling-and-squaring steps" in text
    assert (f"rotations up to {demo._ROTATION_DEG:g} degrees, scalings up to "
            f"{100 * demo._SCALING:g} %, shears up to {demo._SHEAR:g}, translations up to "
            f"{demo._TRANSLATION_MM:g} mm") in text
    assert (f"control grid of {demo._BIAS_SPACING_MM:g} mm, log standard deviation "
            f"{demo._BIAS_LOG_STD:g}") in text
    assert f"exp(-{demo._GAMMA_LOG_RANGE:g}) and exp({demo._GAMMA_LOG_RANGE:g})" in text
    assert "sigma of {:g} to {:g} % of the maximum".format(
        *(100 * s for s in demo._NOISE_RANGE)) in text


def test_grid_and_crop_against_protocol_md(protocol_md):
    text = flat(section(protocol_md, "## Grid and preprocessing"))
    shape = " x ".join(map(str, protocol.MNI_SHAPE))
    assert f"MNI152 grid.** {shape} voxels of 1 mm" in text
    rows = ", ".join("(" + ", ".join(f"{v:g}" for v in row) + ")"
                     for row in np.asarray(protocol.MNI_AFFINE)[:3])
    assert f"sform rows {rows}." in text
    assert "`start = size // 2 - target // 2`" in text
    bounds = ", ".join(f"{s.start}:{s.stop}" for s in protocol.crop_slices(protocol.MNI_SHAPE))
    assert f"On the MNI grid that is `[{bounds}]`." in text
    crop = " x ".join(map(str, protocol.CROP_SHAPE))
    assert f"the paper's {crop} crop of the FSL MNI152 1 mm grid" in text


def test_metrics_against_protocol_md(protocol_md):
    text = flat(section(protocol_md, "### Metrics"))
    low, high = re.search(r"clipped to \[([-+.e\d]+), ([-+.e\d]+)\]", text).groups()
    assert (float(low), float(high)) == LOG_JACOBIAN_CLIP
    assert f"`log(clip(det J + {LOG_JACOBIAN_SHIFT:g}, 1e-9, 1e9))`" in text
    for shape, spacing, name in (((160, 192, 160), 1, "160 x 192 x 160 grid of 1 mm"),
                                 ((80, 96, 80), 2, "demo's 80 x 96 x 80 of 2 mm")):
        assert name in text
        diagonal = image_diagonal(shape, (spacing,) * 3)
        assert f"It is {diagonal:.1f} mm on the" in text
    assert "**diagonal of the image in mm**, `sqrt(sum((n_a * s_a)^2))`" in text


def test_paper_numbers_against_protocol_md(protocol_md):
    datasets = {registry.title(key): key for key in protocol.PAPER_REFERENCE}
    found: dict[str, dict[str, dict[str, float]]] = {}
    for row in table(protocol_md, "### Table 1 and Fig. 4"):
        values = {column: float(value) for column, value in row.items()
                  if column not in ("Dataset", "Method") and value}
        found.setdefault(datasets[row["Dataset"]], {})[row["Method"]] = values
    assert found == protocol.PAPER_REFERENCE
    ablation = {datasets[row["Dataset"]]: {
        "dual-stream single-field": float(row["Dual-stream, single field"]),
        "dual-stream pyramid": float(row["Dual-stream, pyramid (Dual-PRNet)"]),
    } for row in table(protocol_md, "### Ablation")}
    assert ablation == protocol.PAPER_ABLATION
    (dataset, values), = protocol.PAPER_SLICE_SPACING.items()
    assert (f"Dual-PRNet on {registry.title(dataset)} with the moving volume thinned from 192 to "
            f"24 slices, mean Dice {values['Dual-PRNet']:.3f}") in flat(
        section(protocol_md, "### Large slice spacing"))
