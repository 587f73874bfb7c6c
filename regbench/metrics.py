"""Registration metrics on NumPy volumes: overlap, surface distance and field regularity.

Label maps are integer arrays ``(X, Y, Z)`` on one grid; displacement fields are ``(3, X, Y, Z)``
in voxel units with the pull convention of :mod:`regbench.transforms`
(``warped(x) = moving(x + u(x))``). A value that is undefined for a pair (a label or region
absent from both maps) is ``NaN``; means over labels or regions ignore ``NaN``
(``np.nanmean``). A label or region present in only one map is a failure, not an undefined
value: its Dice is 0 and its HD95 is the image diagonal (:func:`image_diagonal`), the worst
case, so a method that loses a region entirely is penalised in both (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

LOG_JACOBIAN_EPS = 1e-9
"""Determinants are clipped to ``[LOG_JACOBIAN_EPS, 1e9]`` before the log, as Learn2Reg does."""


def dice_per_label(pred: np.ndarray, target: np.ndarray,
                   labels: Iterable[int]) -> dict[int, float]:
    """Dice of each label ID between two label maps ``(X, Y, Z)``.

    A label absent from both maps gets ``NaN`` (undefined, not a perfect or failed overlap); a
    label present in only one map gets 0.
    """
    _check_same_shape(pred, target)
    pred_counts = _counts(pred)
    target_counts = _counts(target)
    overlap_counts = _counts(pred[pred == target])
    result = {}
    for label in labels:
        label = int(label)
        total = pred_counts.get(label, 0) + target_counts.get(label, 0)
        result[label] = 2.0 * overlap_counts.get(label, 0) / total if total else float("nan")
    return result


def relabel(labels: np.ndarray, regions: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Region index map ``(X, Y, Z)`` int32 of a label map: ``i + 1`` where the label belongs to
    the ``i``-th region of ``regions`` (in its order), 0 for background and unused labels.

    Raises ``ValueError`` if a label is listed in two regions.
    """
    keys: list[int] = []
    values: list[int] = []
    for index, members in enumerate(regions.values(), start=1):
        for label in members:
            if int(label) in keys:
                raise ValueError(f"label {label} belongs to more than one region")
            keys.append(int(label))
            values.append(index)
    out = np.zeros(labels.shape, dtype=np.int32)
    if not keys:
        return out
    order = np.argsort(keys)
    sorted_keys = np.asarray(keys, dtype=np.int64)[order]
    sorted_values = np.asarray(values, dtype=np.int32)[order]
    position = np.clip(np.searchsorted(sorted_keys, labels), 0, len(sorted_keys) - 1)
    member = sorted_keys[position] == labels
    out[member] = sorted_values[position[member]]
    return out


def region_dice_faim(pred: np.ndarray, target: np.ndarray,
                     regions: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """FAIM region Dice: the Dice of each original label, then their mean within each region.

    Labels absent from both maps (NaN) are left out of the mean; a region none of whose labels
    occurs in either map is NaN.
    """
    per_label = dice_per_label(pred, target, {int(i) for m in regions.values() for i in m})
    return {name: nanmean([per_label[int(i)] for i in members])
            for name, members in regions.items()}


def region_dice_merged(pred: np.ndarray, target: np.ndarray,
                       regions: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Merged region Dice: relabel both maps into regions (:func:`relabel`), then Dice per region.

    Never lower than FAIM's value for a single-label region; usually higher for multi-label
    regions, since a voxel given the wrong label of the right region still counts.
    """
    per_region = dice_per_label(relabel(pred, regions), relabel(target, regions),
                                range(1, len(regions) + 1))
    return {name: per_region[index] for index, name in enumerate(regions, start=1)}


def jacobian_determinant(field: np.ndarray) -> np.ndarray:
    """Jacobian determinant ``(X, Y, Z)`` of ``x -> x + u(x)`` for ``field u (3, X, Y, Z)``.

    ``J = I + du/dx`` with derivatives by ``np.gradient`` (central differences inside, one-sided
    at the faces), so a field that is linear in ``x`` gives its exact determinant everywhere. The
    field is in voxel units and the determinant is a volume ratio, so the voxel spacing cancels
    out and is not needed.
    """
    field = np.asarray(field, dtype=np.float64)
    if field.ndim != 4 or field.shape[0] != 3:
        raise ValueError(f"field must have shape (3, X, Y, Z), got {field.shape}")
    if min(field.shape[1:]) < 2:
        raise ValueError(f"field needs at least 2 voxels along each axis, got {field.shape}")
    # jac[c][a] = d(x_c + u_c) / d x_a
    jac = [[g + (1.0 if a == c else 0.0) for a, g in enumerate(np.gradient(field[c]))]
           for c in range(3)]
    return (jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
            - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
            + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0]))


def folding_percent(field: np.ndarray) -> float:
    """Percentage of voxels whose Jacobian determinant is ``<= 0`` (folded or degenerate)."""
    det = jacobian_determinant(field)
    return 100.0 * float(np.count_nonzero(det <= 0)) / det.size


def log_jacobian_std(field: np.ndarray) -> float:
    """Standard deviation over all voxels of ``log(det J)``, Learn2Reg's smoothness measure.

    Following Learn2Reg, determinants are clipped to ``[1e-9, 1e9]`` first, so folded voxels
    count as a very small positive volume instead of making the log undefined.
    """
    det = np.clip(jacobian_determinant(field), LOG_JACOBIAN_EPS, 1e9)
    return float(np.std(np.log(det)))


Offset = tuple[int, int, int]


def _corner_edge(axis: int, sign: int) -> tuple[Offset, Offset]:
    """(head, tail) of the forward (``sign`` 1) or backward (-1) difference along ``axis``."""
    step = tuple(sign if a == axis else 0 for a in range(3))
    return (step, (0, 0, 0)) if sign > 0 else ((0, 0, 0), step)


NDV_TETRAHEDRA: tuple[tuple[tuple[Offset, Offset], ...], ...] = (
    *(tuple(_corner_edge(axis, sign) for axis, sign in enumerate(signs))
      for signs in ((sx, sy, sz) for sx in (1, -1) for sy in (1, -1) for sz in (1, -1))),
    (((-1, -1, 0), (0, 0, 0)), ((-1, 0, -1), (0, 0, 0)), ((0, -1, -1), (0, 0, 0))),
    (((1, 1, 0), (0, 0, 0)), ((0, 1, 1), (0, 0, 0)), ((1, 0, 1), (0, 0, 0))),
)
"""The 10 tetrahedra of Liu et al.'s NDV (IJCV 2024) at a voxel: 3 edges each, as the (head,
tail) voxel offsets of the difference ``v(x + head) - v(x + tail)``.

The first 8 are the corner tetrahedra of the two ways to cut the 2x2x2 cubes around the voxel
into 5: a forward or backward difference along each axis. The last two are the central
tetrahedra of the two cuts (``J*_1`` and ``J*_2`` in their code). The determinant of a
tetrahedron's 3 edge vectors is 6 times its signed volume (1 for a corner tetrahedron, 2 for a
central one, under the identity map)."""


def non_diffeomorphic_volume(field: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Non-diffeomorphic volume (NDV) of ``x -> x + u(x)`` in % of the volume, as LUMIR scores it.

    Liu et al., "On finite difference Jacobian computation in deformable image registration"
    (IJCV 2024), the measure of Learn2Reg 2024's LUMIR task: the 2x2x2 cube of voxels around each
    voxel is cut into 5 tetrahedra in each of 2 ways (:data:`NDV_TETRAHEDRA`); every tetrahedron
    that the map turns inside out contributes its negative volume, halved since the two cuts
    cover the cube twice. Their sum over the voxels, divided by the number of voxels, is the
    folded volume in % of the volume: not a share of it, since a region folded over several
    times counts each time, so NDV can exceed 100 % (a field of noise: far beyond; LUMIR's
    definition, kept as it is). Unlike :func:`folding_percent`
    it counts how much is folded, not how many voxels, and a fold that central differences step
    over still counts. Only voxels with all 26 neighbours inside the grid are scored, as in
    LUMIR's evaluation.

    Args:
        field: Displacement ``(3, X, Y, Z)`` in voxel units (pull convention).
        mask: Boolean ``(X, Y, Z)``: the voxels scored and counted (LUMIR: the brain); ``None``
            scores every voxel.

    Returns:
        NDV in % of the scored voxels' volume (0 and up, unbounded); NaN when no voxel is
        scored (an empty mask, or fewer than 3 voxels along an axis).

    Raises:
        ValueError: If the field is not ``(3, X, Y, Z)`` or the mask has another shape.
    """
    field = np.asarray(field, dtype=np.float64)
    if field.ndim != 4 or field.shape[0] != 3:
        raise ValueError(f"field must have shape (3, X, Y, Z), got {field.shape}")
    if mask is not None:
        _check_same_shape(mask, field[0])
    inner = tuple(slice(1, n - 1) for n in field.shape[1:])
    weights = (np.ones(field.shape[1:]) if mask is None
               else np.asarray(mask, dtype=bool).astype(np.float64))[inner]
    if not weights.any():
        return float("nan")
    mapped = field + np.indices(field.shape[1:], dtype=np.float64)

    def at(offset: tuple[int, int, int]) -> np.ndarray:
        return mapped[(slice(None), *(slice(1 + o, n - 1 + o)
                                      for o, n in zip(offset, field.shape[1:], strict=True)))]

    inverted = 0.0  # 6 x the volume of the inverted tetrahedra, both cuts
    for edges in NDV_TETRAHEDRA:
        det = _det3(*(at(head) - at(tail) for head, tail in edges))
        inverted += float(np.sum(np.maximum(-det, 0.0) * weights))
    return 100.0 * (0.5 * inverted / 6.0) / float(weights.sum())


def _det3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Determinant of the 3x3 matrices whose rows are the vectors ``a, b, c`` ``(3, ...)``."""
    return (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
            + a[2] * (b[0] * c[1] - b[1] * c[0]))


def image_diagonal(shape: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Diagonal in mm of the field of view of a grid: ``sqrt(sum((n_a * spacing_a) ** 2))``.

    The field of view spans ``n_a`` voxels of ``spacing_a`` mm along axis ``a``; its diagonal
    exceeds every distance between two voxel centres of the grid, hence every HD95 of two
    non-empty masks on it. :func:`hd95` gives it to a mask that is empty on one side only.
    """
    if len(shape) != len(spacing):
        raise ValueError(f"shape {tuple(shape)} and spacing {tuple(spacing)} differ in length")
    extent = np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    return float(np.sqrt(np.sum(extent**2)))


def hd95(pred: np.ndarray, target: np.ndarray,
         spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between two boolean masks ``(X, Y, Z)``.

    Surfaces are the mask voxels with a 6-neighbour outside the mask (or on the volume's edge).
    For each surface voxel of one mask the distance to the nearest surface voxel of the other is
    taken (Euclidean, ``spacing`` mm per voxel along each axis); the result is the larger of the
    two directed 95th percentiles, as in MONAI and Learn2Reg's surface-distance code.

    Nearest surface voxels are found with a k-d tree over the surface voxels' mm coordinates:
    exactly what a distance transform with ``sampling=spacing`` gives, about 3x faster on
    160 x 192 x 160 brains, whose large regions make the transform's bounding box big.

    Args:
        pred: Boolean mask ``(X, Y, Z)``, e.g. a region of the warped moving labels.
        target: Boolean mask of the same shape, e.g. the region in the fixed labels.
        spacing: Voxel size in mm along each array axis.

    Returns:
        The distance in mm. When exactly one mask is empty (a method lost the region, or made
        one that is not there) there is no surface to measure against: the result is the worst
        case, :func:`image_diagonal` of the grid. ``NaN`` when both are empty (nothing to score).

    Raises:
        ValueError: If the masks differ in shape.
    """
    _check_same_shape(pred, target)
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    pred_empty, target_empty = not pred.any(), not target.any()
    if pred_empty and target_empty:
        return float("nan")
    if pred_empty or target_empty:
        return image_diagonal(pred.shape, spacing)
    # Both masks lie inside their joint bounding box, so cropping to it changes no surface voxel.
    box = ndimage.find_objects((pred | target).astype(np.int8))[0]
    scale = np.asarray(spacing, dtype=np.float64)
    pred_points = np.argwhere(_surface(pred[box])) * scale
    target_points = np.argwhere(_surface(target[box])) * scale
    to_target = cKDTree(target_points).query(pred_points)[0]
    to_pred = cKDTree(pred_points).query(target_points)[0]
    return float(max(np.percentile(to_target, 95), np.percentile(to_pred, 95)))


def region_hd95(pred: np.ndarray, target: np.ndarray, regions: Mapping[str, Sequence[int]],
                spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """:func:`hd95` in mm of each region after relabelling both maps into regions.

    A region found in one map only gets the image diagonal (the worst case); a region absent
    from both gets ``NaN``, which means over regions skip.
    """
    pred_regions, target_regions = relabel(pred, regions), relabel(target, regions)
    return {name: hd95(pred_regions == index, target_regions == index, spacing)
            for index, name in enumerate(regions, start=1)}


DICE30_QUANTILE = 0.3
"""Learn2Reg's robustness score DSC30 is this quantile of the per-case Dice."""


def dice30(values: Iterable[float]) -> float:
    """Learn2Reg's DSC30 of per-pair mean Dice: their 30th percentile, the robustness score.

    As in Learn2Reg's evaluation code (MDL-UzL/L2R ``evaluation/evaluation.py`` and LUMIR's
    ``L2R_LUMIR_Eval/evaluation.py``: the aggregate ``"30"`` is ``quantile(.3)`` of the cases),
    with NumPy's default linear interpolation between order statistics. NaN values are left
    out; NaN when none is left.
    """
    array = np.asarray(list(values), dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(np.quantile(array, DICE30_QUANTILE)) if len(array) else float("nan")


def nanmean(values: Iterable[float]) -> float:
    """Mean ignoring NaN; NaN (without a warning) when every value is NaN or there are none."""
    array = np.asarray(list(values), dtype=np.float64)
    if np.isnan(array).all():  # also true when empty
        return float("nan")
    return float(np.nanmean(array))


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))


def _counts(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"shapes differ: {np.shape(a)} vs {np.shape(b)}")
