"""The evaluation protocol as data: label tables, region merges, splits, grids, paper numbers.

Everything here is documented in ``docs/protocol.md`` (from the Dual-PRNet paper, FAIM and the
dataset documentation); ``tests/test_protocol.py`` checks that page and this module agree.
"""

from __future__ import annotations

from collections.abc import Sequence

# --- grids ---------------------------------------------------------------------------------------

MNI_SHAPE: tuple[int, int, int] = (182, 218, 182)
"""The FSL MNI152 1 mm grid that Mindboggle101 ships on and LPBA40 is registered to."""

MNI_AFFINE: tuple[tuple[float, ...], ...] = (
    (-1.0, 0.0, 0.0, 90.0),
    (0.0, 1.0, 0.0, -126.0),
    (0.0, 0.0, 1.0, -72.0),
    (0.0, 0.0, 0.0, 1.0),
)
"""Voxel -> MNI mm of :data:`MNI_SHAPE` (the sform of the FSL template)."""

CROP_SHAPE: tuple[int, int, int] = (160, 192, 160)
"""The paper's input size: a centre crop of the MNI grid."""


def crop_start(
    shape: Sequence[int], target: Sequence[int] = CROP_SHAPE
) -> tuple[int, ...]:
    """First voxel of the centre crop of ``target`` from ``shape``: ``size // 2 - target // 2``."""
    if len(shape) != len(target) or any(t > s for s, t in zip(shape, target, strict=True)):
        raise ValueError(f"cannot crop {tuple(target)} from a volume of shape {tuple(shape)}")
    return tuple(s // 2 - t // 2 for s, t in zip(shape, target, strict=True))


def crop_slices(shape: Sequence[int], target: Sequence[int] = CROP_SHAPE) -> tuple[slice, ...]:
    """Index of the centre crop: ``[11:171, 13:205, 11:171]`` on the MNI grid."""
    return tuple(slice(b, b + t) for b, t in zip(crop_start(shape, target), target, strict=True))


# --- LPBA40 --------------------------------------------------------------------------------------

LPBA40_SUBJECTS: list[str] = [f"S{i:02d}" for i in range(1, 41)]
LPBA40_SPLITS: dict[str, list[str]] = {
    "train": LPBA40_SUBJECTS[:30],
    "test": LPBA40_SUBJECTS[30:],
}
LPBA40_DELINEATION_SHAPE: tuple[int, int, int] = (256, 124, 256)
LPBA40_DELINEATION_SPACING: tuple[float, float, float] = (0.859375, 1.5, 0.859375)

_LPBA40_STRUCTURES = {  # left ID (odd); the right one is ID + 1
    21: "superior frontal gyrus", 23: "middle frontal gyrus", 25: "inferior frontal gyrus",
    27: "precentral gyrus", 29: "middle orbitofrontal gyrus", 31: "lateral orbitofrontal gyrus",
    33: "gyrus rectus",
    41: "postcentral gyrus", 43: "superior parietal gyrus", 45: "supramarginal gyrus",
    47: "angular gyrus", 49: "precuneus",
    61: "superior occipital gyrus", 63: "middle occipital gyrus", 65: "inferior occipital gyrus",
    67: "cuneus",
    81: "superior temporal gyrus", 83: "middle temporal gyrus", 85: "inferior temporal gyrus",
    87: "parahippocampal gyrus", 89: "lingual gyrus", 91: "fusiform gyrus",
    101: "insular cortex", 121: "cingulate gyrus",
    161: "caudate", 163: "putamen", 165: "hippocampus",
}
LPBA40_LABELS: dict[int, str] = {
    **{i + side: f"{'LR'[side]} {name}" for i, name in _LPBA40_STRUCTURES.items()
       for side in (0, 1)},
    181: "cerebellum",
    182: "brainstem",
}
"""The 56 LPBA40 labels (odd = left, even = right, but for the two unpaired ones)."""

LPBA40_CEREBELLUM = 181
LPBA40_UNPAIRED: tuple[int, ...] = (LPBA40_CEREBELLUM, 182)
"""Structures that span both hemispheres (cerebellum, brainstem): no side in their ID."""

LPBA40_REGIONS: dict[str, list[int]] = {
    "Frontal": list(range(21, 35)),
    "Parietal": list(range(41, 51)),
    "Occipital": list(range(61, 69)),
    "Temporal": list(range(81, 93)),
    "Cingulate": [101, 102, 121, 122],
    "Putamen": [163, 164],
    "Hippocampus": [165, 166],
}
"""FAIM's 7-region merge; caudate (161/162), cerebellum and brainstem are not used."""

# --- Mindboggle101 -------------------------------------------------------------------------------

MINDBOGGLE101_GROUPS: dict[str, int] = {
    "OASIS-TRT-20": 20, "NKI-RS-22": 22, "NKI-TRT-20": 20, "MMRR-21": 21, "Extra-18": 18,
}
"""Subject groups and their sizes; subject IDs are ``<GROUP>-<n>``."""

MINDBOGGLE101_SPLIT_GROUPS: dict[str, list[str]] = {
    "train": ["NKI-RS-22", "NKI-TRT-20"],
    "test": ["OASIS-TRT-20"],
}
MINDBOGGLE101_SPLITS: dict[str, list[str]] = {
    split: [f"{group}-{n}" for group in groups for n in range(1, MINDBOGGLE101_GROUPS[group] + 1)]
    for split, groups in MINDBOGGLE101_SPLIT_GROUPS.items()
}
"""The paper's splits as subject IDs (``<GROUP>-<n>``): the subjects of its groups."""

_DKT25_STRUCTURES = {
    1002: "caudal anterior cingulate", 1003: "caudal middle frontal", 1005: "cuneus",
    1006: "entorhinal", 1007: "fusiform", 1008: "inferior parietal", 1009: "inferior temporal",
    1011: "lateral occipital", 1012: "lateral orbitofrontal", 1013: "lingual",
    1014: "medial orbitofrontal", 1015: "middle temporal", 1016: "parahippocampal",
    1017: "paracentral", 1018: "pars opercularis", 1021: "pericalcarine", 1022: "postcentral",
    1024: "precentral", 1025: "precuneus", 1028: "superior frontal", 1029: "superior parietal",
    1030: "superior temporal", 1031: "supramarginal", 1034: "transverse temporal",
    1035: "insula",
}
MINDBOGGLE101_LABELS: dict[int, str] = {
    **{i: f"L {name}" for i, name in _DKT25_STRUCTURES.items()},
    **{i + 1000: f"R {name}" for i, name in _DKT25_STRUCTURES.items()},
}
"""The 50 DKT25 cortical labels (right = left + 1000)."""

_MINDBOGGLE101_LEFT_REGIONS = {
    "Frontal": [1003, 1012, 1014, 1017, 1018, 1024, 1028],
    "Parietal": [1008, 1022, 1025, 1029, 1031],
    "Occipital": [1005, 1011, 1013, 1021],
    "Temporal": [1006, 1007, 1009, 1015, 1016, 1030, 1034],
    "Cingulate": [1002, 1035],
}
MINDBOGGLE101_REGIONS: dict[str, list[int]] = {
    name: ids + [i + 1000 for i in ids] for name, ids in _MINDBOGGLE101_LEFT_REGIONS.items()
}
"""The paper's 5-region merge, both hemispheres (insula counted as cingulate)."""

_DKT31_LEFT = {1010: 1002, 1023: 1002, 1026: 1002, 1027: 1003, 1019: 1018, 1020: 1018}
DKT31_TO_DKT25: dict[int, int] = {
    **_DKT31_LEFT, **{k + 1000: v + 1000 for k, v in _DKT31_LEFT.items()},
}
"""DKT31 labels that DKT25 merges into a neighbour."""

# --- the paper's numbers (FAIM convention) --------------------------------------------------------

PAPER_REFERENCE: dict[str, dict[str, dict[str, float]]] = {
    "lpba40": {  # Fig. 4 / text: only the average over the 7 regions
        "SyN": {"Average": 0.731},
        "VoxelMorph": {"Average": 0.683},
        "Dual-PRNet": {"Average": 0.778},
    },
    "mindboggle101": {  # Table 1
        "Affine": {"Frontal": 0.455, "Parietal": 0.406, "Occipital": 0.354, "Temporal": 0.469,
                   "Cingulate": 0.450, "Average": 0.427},
        "SyN": {"Frontal": 0.558, "Parietal": 0.496, "Occipital": 0.446, "Temporal": 0.578,
                "Cingulate": 0.549, "Average": 0.525},
        "VoxelMorph": {"Frontal": 0.532, "Parietal": 0.459, "Occipital": 0.480, "Temporal": 0.585,
                       "Cingulate": 0.499, "Average": 0.511, "Time (s)": 0.451},
        "Dual-PRNet": {"Frontal": 0.602, "Parietal": 0.690, "Occipital": 0.550, "Temporal": 0.695,
                       "Cingulate": 0.618, "Average": 0.631, "Time (s)": 1.724},
    },
}
"""Mean region Dice (and GPU time per pair) the paper reports, by dataset and method label."""

PAPER_ABLATION: dict[str, dict[str, float]] = {
    "lpba40": {"dual-stream single-field": 0.767, "dual-stream pyramid": 0.778},
    "mindboggle101": {"dual-stream single-field": 0.582, "dual-stream pyramid": 0.631},
}
"""Mean Dice of the paper's ablation (text)."""

PAPER_SLICE_SPACING: dict[str, dict[str, float]] = {"lpba40": {"Dual-PRNet": 0.711}}
"""Mean Dice with the moving volume thinned to every 8th slice (192 -> 24)."""
