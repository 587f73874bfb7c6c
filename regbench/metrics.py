"""Registration metrics on NumPy volumes: overlap, surface distance and field regularity.

Label maps are integer arrays ``(X, Y, Z)`` on one grid; displacement fields are ``(3, X, Y, Z)``
in voxel units with the pull convention of :mod:`regbench.transforms`
(``warped(x) = moving(x + u(x))``). A value that is undefined for a pair (a label or region
absent from both maps) is ``NaN``; means over labels or regions ignore ``NaN``
(``np.nanmean``). In the region Dice of the paper's two conventions a label or region present
in only one map is a failure, not an undefined value: its Dice is 0 (docs/protocol.md).

The measures named after a benchmark compute what its published evaluation code computes
(tests/test_metrics.py holds values made by that code, ``benchmarks/anchor_metrics.py``):
:func:`non_diffeomorphic_volume` as LUMIR's ``digital_diffeomorphism.py`` with its mask;
:func:`learn2reg_case_dice`, :func:`dice30`, :func:`log_jacobian_std` and :func:`hd95` as
Learn2Reg's ``evaluation/evaluation.py`` and ``utils.py`` (MDL-UzL/L2R), whose HD95 is DeepMind's
``surface_distance`` package. Where the suite departs from them it says so in the docstring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

LOG_JACOBIAN_CLIP = (1e-9, 1e9)
"""Learn2Reg clips ``det J + LOG_JACOBIAN_SHIFT`` to this range before the log."""
LOG_JACOBIAN_SHIFT = 3.0
"""Learn2Reg's evaluation adds 3 to every determinant before clipping and taking the log
(``(jacobian_determinant(...) + 3).clip(1e-9, 1e9)``); kept so that the SD log J compares with
Learn2Reg's leaderboards."""
LEARN2REG_TRIM = 2
"""Voxels Learn2Reg drops at each face before scoring the Jacobian determinant."""


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


def learn2reg_jacobian_determinant(field: np.ndarray) -> np.ndarray:
    """Jacobian determinant of ``x -> x + u(x)`` as Learn2Reg's evaluation computes it.

    Derivatives are central differences ``(u(x + 1) - u(x - 1)) / 2`` with zeros beyond the
    grid (``scipy.ndimage.correlate`` of ``[-0.5, 0, 0.5]``, ``mode="constant"``), and the
    :data:`LEARN2REG_TRIM` voxels at each face are dropped, so that the zeros never enter
    (MDL-UzL/L2R ``evaluation/utils.py``, ``jacobian_determinant``).

    Args:
        field: Displacement ``(3, X, Y, Z)`` in voxel units.

    Returns:
        The determinants ``(X - 4, Y - 4, Z - 4)``.

    Raises:
        ValueError: If the field is not ``(3, X, Y, Z)`` with more than 4 voxels along each axis.
    """
    field = np.asarray(field, dtype=np.float64)
    if field.ndim != 4 or field.shape[0] != 3:
        raise ValueError(f"field must have shape (3, X, Y, Z), got {field.shape}")
    if min(field.shape[1:]) <= 2 * LEARN2REG_TRIM:
        raise ValueError(f"field needs more than {2 * LEARN2REG_TRIM} voxels along each axis, "
                         f"got {field.shape}")
    def shifted(a: int, step: int) -> tuple[slice, ...]:
        # Inside the trimmed faces both neighbours lie in the grid: the padding never enters,
        # and (u(x + 1) - u(x - 1)) / 2 is the correlation's value to the last bit.
        return (slice(None), *(slice(LEARN2REG_TRIM + (step if axis == a else 0),
                                     n - LEARN2REG_TRIM + (step if axis == a else 0))
                               for axis, n in enumerate(field.shape[1:])))

    # rows[a][c] = d(x_c + u_c) / d x_a
    rows = [(field[shifted(a, 1)] - field[shifted(a, -1)]) / 2.0 for a in range(3)]
    for a in range(3):
        rows[a][a] += 1.0
    return _det3(*rows)


def log_jacobian_std(field: np.ndarray) -> float:
    """SD log J as Learn2Reg scores it: the standard deviation over the voxels of
    ``log(clip(det J + 3, 1e-9, 1e9))``, with :func:`learn2reg_jacobian_determinant`.

    The shift by :data:`LOG_JACOBIAN_SHIFT` is Learn2Reg's (its ``evaluation.py``); it makes the
    value smaller than the standard deviation of ``log det J`` itself, and keeps a folded voxel
    (``det J <= 0``) finite unless ``det J <= -3``.
    """
    det = learn2reg_jacobian_determinant(field) + LOG_JACOBIAN_SHIFT
    return float(np.std(np.log(np.clip(det, *LOG_JACOBIAN_CLIP))))


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
    cover the cube twice. Their sum over the scored voxels, divided by their number, is the
    folded volume in % of the scored volume: not a share of it, since a region folded over
    several times counts each time, so NDV can exceed 100 % (a field of noise: far beyond;
    LUMIR's definition, kept as it is). Unlike :func:`folding_percent`
    it counts how much is folded, not how many voxels, and a fold that central differences step
    over still counts. Only voxels with all 26 neighbours inside the grid are scored, as in
    LUMIR's evaluation.

    Args:
        field: Displacement ``(3, X, Y, Z)`` in voxel units (pull convention).
        mask: Boolean ``(X, Y, Z)``: the voxels scored and counted (LUMIR: where the moving
            image is above 0); ``None`` scores every voxel.

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


HD95_PERCENT = 95.0
NEIGHBOURHOOD_KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.uint8)
"""Bit of each corner of a 2x2x2 neighbourhood in its code (DeepMind's ``surface_distance``
``ENCODE_NEIGHBOURHOOD_3D_KERNEL``, which Learn2Reg's HD95 uses)."""


def hd95(pred: np.ndarray, target: np.ndarray,
         spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm between two boolean masks, as
    Learn2Reg computes it (DeepMind's ``surface_distance``: ``compute_surface_distances`` then
    ``compute_robust_hausdorff(..., 95)``).

    Surface elements sit on the corners of the voxels: every 2x2x2 neighbourhood holding both
    mask and background voxels is one, weighted by the area of the marching-cubes surface
    through it (:func:`surfel_areas`). For each surface element of one mask the Euclidean
    distance (``spacing`` mm per voxel along each axis) to the nearest element of the other is
    taken; the distances, sorted, are read at the first element where the cumulated area
    reaches 95 %; the result is the larger of the two directions. Learn2Reg passes a spacing of
    1 (its grids are 1 mm); the suite passes the grid's.

    Nearest elements are found with a k-d tree over their mm coordinates: the distances a
    distance transform with ``sampling=spacing`` gives (``surface_distance`` uses one), faster
    on brains whose large regions make the transform's bounding box big.

    Args:
        pred: Boolean mask ``(X, Y, Z)``, e.g. a region of the warped moving labels.
        target: Boolean mask of the same shape, e.g. the region in the fixed labels.
        spacing: Voxel size in mm along each array axis.

    Returns:
        The distance in mm. When exactly one mask is empty there is no surface to measure
        against: ``surface_distance`` gives infinity, the suite the worst finite case,
        :func:`image_diagonal` of the grid, so that means over regions stay finite. ``NaN`` when
        both are empty.

    Raises:
        ValueError: If the masks differ in shape or are not 3-D.
    """
    _check_same_shape(pred, target)
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.ndim != 3:
        raise ValueError(f"masks must be 3-D, got shape {pred.shape}")
    pred_empty, target_empty = not pred.any(), not target.any()
    if pred_empty and target_empty:
        return float("nan")
    if pred_empty or target_empty:
        return image_diagonal(pred.shape, spacing)
    box = ndimage.find_objects((pred | target).astype(np.int8))[0]
    areas = surfel_areas(tuple(float(s) for s in spacing))
    scale = np.asarray(spacing, dtype=np.float64)
    (pred_points, pred_areas), (target_points, target_areas) = (
        _surface_elements(mask[box], areas) for mask in (pred, target))
    to_target = cKDTree(target_points * scale).query(pred_points * scale)[0]
    to_pred = cKDTree(pred_points * scale).query(target_points * scale)[0]
    return max(_area_percentile(to_target, pred_areas, HD95_PERCENT),
               _area_percentile(to_pred, target_areas, HD95_PERCENT))


@lru_cache(maxsize=8)
def surfel_areas(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area in mm^2 of the surface through a 2x2x2 neighbourhood, by its code (256,).

    The code sums :data:`NEIGHBOURHOOD_KERNEL`'s bits of the corners inside the mask. The
    surface is the classic marching-cubes triangulation (Lorensen and Cline 1987; scikit-image's
    ``method="lorensen"``) of the side with at most 4 corners, since the surface of a code and
    of its complement is one; each triangle's area vector is scaled by the voxel's face areas
    before its length is taken. This reproduces DeepMind's table
    (``create_table_neighbour_code_to_surface_area``) for every code (tests/test_metrics.py).
    """
    face_areas = np.array([spacing[1] * spacing[2], spacing[0] * spacing[2],
                           spacing[0] * spacing[1]])
    corners = np.array([(i, j, k) for i in range(2) for j in range(2) for k in range(2)])
    bits = NEIGHBOURHOOD_KERNEL[tuple(corners.T)]
    table = np.zeros(256)
    for code in range(1, 255):
        inside = (code & bits) > 0
        if inside.sum() > 4:
            inside = ~inside
        cube = np.zeros((2, 2, 2))
        cube[tuple(corners[inside].T)] = 1.0
        vertices, faces, _, _ = marching_cubes(cube, 0.5, method="lorensen",
                                               allow_degenerate=True)
        triangles = vertices[faces]
        normals = 0.5 * np.cross(triangles[:, 1] - triangles[:, 0],
                                 triangles[:, 2] - triangles[:, 0])
        table[code] = np.linalg.norm(normals * face_areas, axis=1).sum()
    return table


def _surface_elements(mask: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel coordinates of the surface elements of a mask cropped to its bounding box, and
    their areas; as ``surface_distance`` finds them (a neighbourhood code per voxel corner)."""
    padded = np.zeros(np.add(mask.shape, 1), dtype=np.uint8)
    padded[:-1, :-1, :-1] = mask
    codes = ndimage.correlate(padded, NEIGHBOURHOOD_KERNEL, mode="constant", cval=0)
    border = (codes != 0) & (codes != 255)
    return np.argwhere(border).astype(np.float64), areas[codes[border]]


def _area_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """``compute_robust_hausdorff``'s percentile: sorted by (distance, area), the distance of
    the first element whose cumulated share of the area reaches ``percent``."""
    order = np.lexsort((areas, distances))
    distances, areas = distances[order], areas[order]
    cumulated = np.cumsum(areas) / np.sum(areas)
    index = int(np.searchsorted(cumulated, percent / 100.0))
    return float(distances[min(index, len(distances) - 1)])


def region_hd95(pred: np.ndarray, target: np.ndarray, moving: np.ndarray,
                regions: Mapping[str, Sequence[int]],
                spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """:func:`hd95` in mm of each region after relabelling the maps into regions.

    As in Learn2Reg (``compute_hd95``), a region absent from the fixed map ``target`` or from
    the moving map ``moving`` (before warping) is ``NaN``, which means over regions skip; a
    region the warping lost (in both, not in ``pred``) gets the image diagonal, the worst case.

    Args:
        pred: The warped moving labels ``(X, Y, Z)``.
        target: The fixed labels.
        moving: The moving labels before warping.
        regions: Region name -> its label IDs.
        spacing: Voxel size in mm along each array axis.
    """
    pred_regions, target_regions = relabel(pred, regions), relabel(target, regions)
    present = (set(np.unique(target_regions).tolist())
               & set(np.unique(relabel(moving, regions)).tolist()))
    return {name: hd95(pred_regions == index, target_regions == index, spacing)
            if index in present else float("nan")
            for index, name in enumerate(regions, start=1)}


DICE30_QUANTILE = 0.3
"""Learn2Reg's robustness score DSC30 is this quantile of the per-case Dice."""


def learn2reg_case_dice(pred: np.ndarray, target: np.ndarray, moving: np.ndarray,
                        labels: Iterable[int]) -> float:
    """Learn2Reg's Dice of one case: the mean Dice over ``labels`` of the warped moving labels
    ``pred`` against the fixed labels ``target``, leaving out each label absent from ``target``
    or from the moving labels before warping, ``moving`` (MDL-UzL/L2R ``evaluation/utils.py``,
    ``compute_dice``). NaN when every label is left out.
    """
    _check_same_shape(moving, target)
    labels = [int(label) for label in labels]
    present = set(_counts(target)) & set(_counts(moving))
    per_label = dice_per_label(pred, target, [label for label in labels if label in present])
    return nanmean(per_label.values())


def dice30(values: Iterable[float]) -> float:
    """Learn2Reg's DSC30, its robustness score: the 30th percentile over the cases of
    :func:`learn2reg_case_dice`.

    As in Learn2Reg's evaluation code (MDL-UzL/L2R ``evaluation/evaluation.py`` and LUMIR's
    ``L2R_LUMIR_Eval/evaluation.py``: the aggregate ``"30"`` is ``np.quantile(.3)`` of the
    cases), with NumPy's default linear interpolation between order statistics. NaN values
    (a case without a label to score) are left out, where Learn2Reg's result would be NaN; NaN
    when none is left.
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


def _counts(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"shapes differ: {np.shape(a)} vs {np.shape(b)}")
