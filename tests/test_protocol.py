"""The protocol tables (regbench.data.protocol) against explicit lists typed here and against
shared/PROTOCOL.md (``../shared/PROTOCOL.md`` from the repository root; those tests are skipped
where the file is absent)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from regbench.data import protocol

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "shared" / "PROTOCOL.md"

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


# --- against shared/PROTOCOL.md -----------------------------------------------------------------


@pytest.fixture(scope="module")
def protocol_md() -> str:
    if not PROTOCOL_MD.is_file():
        pytest.skip(f"{PROTOCOL_MD} not present")
    return PROTOCOL_MD.read_text()


def ids_in(text: str) -> set[int]:
    """Label IDs written as ``21-34``, ``101/102`` or ``101, 102`` in ``text``."""
    found: set[int] = set()
    for low, high in re.findall(r"\b(\d{2,4})-(\d{2,4})\b", text):
        found.update(range(int(low), int(high) + 1))
    text = re.sub(r"\b\d{2,4}-\d{2,4}\b", " ", text)
    found.update(int(i) for i in re.findall(r"\b\d{2,4}\b", text))
    return found


def section(text: str, start: str, end: str) -> str:
    begin = text.index(start) + len(start)
    return text[begin:text.index(end, begin)]


def test_lpba40_against_protocol_md(protocol_md):
    lpba = re.sub(r"\s+", " ", section(protocol_md, "## LPBA40", "## Mindboggle-101"))
    labels = section(lpba, "56 labels (odd = left, even = right):", "- 7-region merge")
    assert ids_in(labels) == set(protocol.LPBA40_LABELS)
    merge = section(lpba, "7-region merge (FAIM, followed by the paper):", "- Split")
    regions = {}
    for part in merge.split("|"):
        name, _, ids = part.strip().partition(" ")
        if name == "not":
            assert ids_in(ids) == {161, 162, 181, 182}
        else:
            regions[name] = sorted(ids_in(ids))
    assert regions == protocol.LPBA40_REGIONS
    split = re.search(r"train S(\d+)-S(\d+) \((\d+) x (\d+) = (\d+) ordered pairs\), "
                      r"test S(\d+)-S(\d+) \((\d+) x (\d+) = (\d+)", lpba)
    first, last, n, m, pairs, test_first, test_last, tn, tm, test_pairs = map(int, split.groups())
    assert protocol.LPBA40_SPLITS["train"] == [f"S{i:02d}" for i in range(first, last + 1)]
    assert protocol.LPBA40_SPLITS["test"] == [f"S{i:02d}" for i in range(test_first,
                                                                         test_last + 1)]
    assert (n * m, tn * tm) == (pairs, test_pairs) == (870, 90)
    grid = re.search(r"Delineation grid: (\d+) x (\d+) x (\d+) voxels of ([\d.]+) x ([\d.]+) x "
                     r"([\d.]+) mm", lpba)
    assert tuple(map(int, grid.groups()[:3])) == protocol.LPBA40_DELINEATION_SHAPE
    assert tuple(map(float, grid.groups()[3:])) == protocol.LPBA40_DELINEATION_SPACING


def test_mindboggle101_against_protocol_md(protocol_md):
    mb = section(protocol_md, "## Mindboggle-101", "## Preprocessing")
    merge = section(mb, "5-region merge:", "(DKT31")
    regions = {}
    for part in merge.split("|"):
        name, _, ids = part.strip().partition(" ")
        regions[name] = sorted(ids_in(ids.split("(")[0]))
    assert regions == {
        name: [i for i in ids if i < 2000] for name, ids in protocol.MINDBOGGLE101_REGIONS.items()}
    assert "right = left + 1000" in mb
    mapping = section(mb, "(DKT31 -> DKT25:", ".)")
    documented = {}
    for rule in mapping.split(";"):
        sources, target = rule.split("->")
        documented.update({i: int(target) for i in ids_in(sources)})
    assert documented == {k: v for k, v in protocol.DKT31_TO_DKT25.items() if k < 2000}
    groups = section(mb, "Groups:", "\n").strip(" .").split(", ")
    assert groups == list(protocol.MINDBOGGLE101_GROUPS)
    flat = re.sub(r"\s+", " ", mb)  # sentences wrap across lines
    split = re.search(r"train (\S+) \+ (\S+) \((\d+) subjects, (\d+) ordered pairs\); "
                      r"test (\S+) \((\d+) subjects, (\d+) ordered pairs\)", flat)
    train_a, train_b, n, pairs, test, tn, test_pairs = split.groups()
    assert protocol.MINDBOGGLE101_SPLIT_GROUPS == {"train": [train_a, train_b], "test": [test]}
    sizes = (protocol.MINDBOGGLE101_GROUPS[train_a] + protocol.MINDBOGGLE101_GROUPS[train_b],
             protocol.MINDBOGGLE101_GROUPS[test])
    assert sizes == (int(n), int(tn))
    assert (ordered_pairs(sizes[0]), ordered_pairs(sizes[1])) == (int(pairs), int(test_pairs))
    rows = re.search(r"sform rows \(([^)]*)\) \(([^)]*)\) \(([^)]*)\)", flat).groups()
    np.testing.assert_array_equal(
        [[float(v) for v in row.split(",")] for row in rows], np.asarray(protocol.MNI_AFFINE)[:3])
    shape = re.search(r"(\d+) x (\d+) x (\d+), sform", flat).groups()
    assert tuple(map(int, shape)) == protocol.MNI_SHAPE


def test_crop_against_protocol_md(protocol_md):
    text = re.sub(r"\s+", " ", section(protocol_md, "## Preprocessing", "## Region Dice"))
    assert "start = size // 2 - target // 2" in text
    size = re.search(r"Centre crop to (\d+) x (\d+) x (\d+)", text).groups()
    assert tuple(map(int, size)) == protocol.CROP_SHAPE
    slices = re.search(r"\[(\d+):(\d+), (\d+):(\d+), (\d+):(\d+)\]", text).groups()
    bounds = list(map(int, slices))
    assert protocol.crop_slices(protocol.MNI_SHAPE) == tuple(
        slice(bounds[i], bounds[i + 1]) for i in (0, 2, 4))
