"""The embedded demo: a SYNTHETIC labelled population made offline from the MNI152 template.

Anatomy comes from nilearn's bundled MNI152 2009 template and its grey/white-matter maps (no
download), put on the FSL MNI152 1 mm grid and cropped to the paper's 160x192x160
(:func:`regbench.data.protocol.crop_slices`); ``scale`` coarsens that crop by block averaging
(0.5 -> 80x96x80 of 2 mm, 0.25 -> 40x48x40 of 4 mm; a coarse voxel sits at the mean position of
its block of fine voxels). A 14-label atlas (:data:`DEMO_LABELS`, the 7 LPBA40 region names, left
and right) is drawn on the template from its tissue maps and MNI coordinates.

Subject ``n`` of seed ``s`` is the template pulled through its own transform
(:func:`subject_transform`): a smooth diffeomorphism (a random stationary velocity field at three
spatial scales, integrated by scaling and squaring), plus a bias field, a gamma change and Rician
noise; its labels are the atlas pulled through the same field by nearest neighbour. Everything is
a function of ``(s, n)`` alone: the random numbers are drawn on control grids in mm that do not
depend on ``scale``, so a seed describes the same subjects at every scale.

Like the paper's data (LPBA40 affinely aligned to MNI152 by ``regbench prepare``, Mindboggle101
shipped aligned), the subjects are affinely aligned to the template: the methods see nonlinear
differences only. ``affine=True`` adds a small random affine per subject, for tests of Affine.
The size of the deformations is chosen so that Affine and SyN score apart by about what they do
on real, affinely aligned brains; :func:`pair_displacement_stats` measures it, and the manifest
records it.

The data are for running the pipeline end to end, not for judging methods: the labels are a
coarse geometric parcellation, and every subject is a warp of one template.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from regbench.data import protocol
from regbench.data.dataset import MANIFEST, make_manifest, write_manifest, write_subject
from regbench.data.registry import DEMO
from regbench.data.resolution import crop_grid
from regbench.data.scale import WHOLE_VOXELS, check_scale
from regbench.io import InputError, read_json
from regbench.naming import (  # noqa: F401  (re-exported: the demo's split)
    MAX_TEST_SUBJECTS,
    MAX_VAL_SUBJECTS,
    MIN_SUBJECTS,
    demo_split,
    demo_subjects,
)
from regbench.transforms import integrate_velocity, sample, warp, warp_labels

log = logging.getLogger(__name__)

_REGION_NAMES = ("Frontal", "Parietal", "Occipital", "Temporal", "Cingulate", "Putamen",
                 "Hippocampus")
DEMO_LABELS: dict[int, str] = {
    2 * k + 1 + side: f"{'LR'[side]} {name}"
    for k, name in enumerate(_REGION_NAMES) for side in (0, 1)
}
"""The 14 demo labels: ``2k - 1`` is the left and ``2k`` the right half of region ``k``."""

DEMO_REGIONS: dict[str, list[int]] = {
    name: [2 * k + 1, 2 * k + 2] for k, name in enumerate(_REGION_NAMES)
}
"""Region -> its (left, right) labels, in the LPBA40 region order of the protocol."""

SOURCE = ("nilearn's bundled MNI152 2009 template with its GM/WM maps, on the FSL MNI152 1 mm "
          "grid; SYNTHETIC subjects and labels")
DESCRIPTION = (
    "SYNTHETIC demo data, not real subjects. Images: the MNI152 2009 template under a random "
    "smooth diffeomorphism (stationary velocity field at 48/24/12 mm, scaling and squaring; "
    "affinely aligned to the template, as prepared real data are), with a smooth bias field, a "
    "gamma change and Rician noise, normalised to max 1. Labels: a 14-label atlas drawn on the "
    "template (cortical lobes and cingulate from the GM map cut by MNI coordinate planes, "
    "putamen and hippocampus as "
    "ellipsoids at their MNI positions; odd = left, even = right), warped nearest-neighbour by "
    "each subject's own field. Good for running the pipeline; its scores say nothing about real "
    "anatomy.")

# The velocity: (control spacing in mm, relative amplitude) per spatial scale. Coarse and large
# for the gross shape, finer and smaller for local variation.
_VELOCITY_LEVELS: tuple[tuple[float, float], ...] = ((48.0, 1.0), (24.0, 0.5), (12.0, 0.25))
# The largest velocity in the brain is drawn from this range. Chosen so that Affine and SyN score
# apart by about what they do on real, affinely aligned brains (Dice +0.10 on Mindboggle101 in
# the paper, +0.12 on two LPBA40 subjects prepared by this suite). On 4 pairs at scale 0.5 (mean
# FAIM Dice of Identity / Affine / SyN, SyN with ANTsPy's default iterations):
#   5-7 mm: 0.69 / 0.73 / 0.81 (+0.08); 7-9 mm: 0.62 / 0.68 / 0.80 (+0.12);
#   9-11 mm: 0.56 / 0.62 / 0.78 (+0.16).
_MAX_VELOCITY_MM = (7.0, 9.0)
_NORM_SPACING_MM = 8.0  # lattice on which that maximum is measured (independent of scale)
# A generous ellipsoid around the MNI brain (centre, semi-axes; mm): where the maximum counts.
_BRAIN_CENTRE, _BRAIN_AXES = (0.0, -17.0, 15.0), (66.0, 85.0, 62.0)
_INTEGRATION_STEPS = 7  # 2**7 = 128: a 16-voxel velocity moves < 0.13 voxel per step at 1 mm
_ROTATION_DEG, _SCALING, _SHEAR, _TRANSLATION_MM = 5.0, 0.05, 0.03, 4.0
_BIAS_SPACING_MM, _BIAS_LOG_STD = 64.0, 0.08
_GAMMA_LOG_RANGE = 0.2  # gamma in [exp(-0.2), exp(0.2)] = [0.82, 1.22]
_NOISE_RANGE = (0.01, 0.03)  # Rician noise sigma, relative to the template's maximum


# --- arguments and grids --------------------------------------------------------------------------


def _check_scale(scale: float) -> float:
    """The scale as a float, or :class:`InputError` saying why it cannot make a grid (the demo's
    rule: :data:`regbench.data.scale.WHOLE_VOXELS`)."""
    try:
        return check_scale(scale, WHOLE_VOXELS)
    except ValueError as err:
        raise InputError(f"demo: {err}") from None


def _check_arguments(subjects: int, scale: float, seed: int,
                     test_subjects: int | None) -> float:
    """Refuse bad :func:`make_demo` arguments (before anything is written); returns the scale."""
    if isinstance(subjects, bool) or not isinstance(subjects, numbers.Integral):
        raise InputError(f"demo: subjects={subjects!r} is not a whole number")
    if subjects < MIN_SUBJECTS:
        raise InputError(f"demo: subjects={subjects} is too few; at least {MIN_SUBJECTS} (the "
                         "last quarter, at least 2, is the test split)")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"demo: seed={seed!r} must be a whole number >= 0")
    try:
        demo_split(subjects, test_subjects)
    except ValueError as err:
        raise InputError(str(err)) from None
    return _check_scale(scale)


def demo_grid(scale: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, affine (4, 4))`` of the demo grid at ``scale``: the paper's crop at that scale
    (:func:`regbench.data.resolution.crop_grid`)."""
    return crop_grid(_check_scale(scale))


def _fine_positions(scale: float) -> list[np.ndarray]:
    """Per axis, the demo voxel centres at ``scale`` in 1 mm crop voxels (= mm along the axis)."""
    shape, _ = demo_grid(scale)
    return [(np.arange(n) + 0.5) / scale - 0.5 for n in shape]


# --- the atlas ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mni152() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nilearn's MNI152 2009 template, GM and WM maps on the 1 mm crop, each ``(160, 192, 160)``."""
    from nilearn import datasets, image  # slow to import; only the demo needs it

    shape, affine = demo_grid(1.0)
    volumes = []
    for load in (datasets.load_mni152_template, datasets.load_mni152_gm_template,
                 datasets.load_mni152_wm_template):
        # The nilearn grid is an integer shift (and x flip) of the FSL one: linear is exact.
        resampled = image.resample_img(
            load(resolution=1), target_affine=affine, target_shape=shape,
            interpolation="linear", force_resample=True, copy_header=True)
        volumes.append(np.asarray(resampled.get_fdata(), dtype=np.float32))
    return tuple(volumes)


def _ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float],
               axes: Sequence[float]) -> np.ndarray:
    return sum(((c - m) / a) ** 2 for c, m, a in zip((x, y, z), centre, axes, strict=True)) <= 1


def _atlas_labels(gm: np.ndarray, wm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The 14-label atlas on a grid, from tissue maps ``(X, Y, Z)`` and the grid's affine.

    Putamen and hippocampus are ellipsoids at their MNI positions; cingulate and the four lobes
    are the grey-matter-dominant voxels cut by MNI coordinate planes, leaving the deep nuclei,
    the cerebellum and the brainstem unlabelled. Left (odd) is ``x < 0``.
    """
    index = np.indices(gm.shape, dtype=float).reshape(3, -1)
    x, y, z = (affine[:3, :3] @ index + affine[:3, 3:]).reshape(3, *gm.shape)
    ax = np.abs(x)  # both hemispheres at once; the side is set at the end
    tissue = gm + wm
    cortex = (gm >= wm) & (tissue > 0.5)
    regions = {
        "Putamen": _ellipsoid(ax, y, z, (25, 2, 0), (7, 12, 9)) & (tissue > 0.5),
        # The hippocampus rises towards its tail: tilt its long (y) axis by ~20 degrees.
        "Hippocampus": _ellipsoid(ax, y, z + 0.35 * (y + 22), (28, -22, -14), (7, 16, 7))
        & (tissue > 0.3),
    }
    free = cortex & ~regions["Putamen"] & ~regions["Hippocampus"]
    free &= ~((y < -40) & (z < -18))  # cerebellum and brainstem
    regions["Cingulate"] = free & (ax < 12) & (y > -50) & (y < 40) & (z > 12) & (z < 45)
    free &= ~regions["Cingulate"]
    free &= ~((ax < 24) & (y > -42) & (y < 24) & (z > -20) & (z < 24))  # deep grey matter
    regions["Temporal"] = free & (ax > 24) & (y > -72) & (y < 28) & (z < 2)
    free &= ~regions["Temporal"]
    regions["Occipital"] = free & (y < -72)
    # The central sulcus runs backwards as it rises.
    regions["Parietal"] = free & ~regions["Occipital"] & (y < -20 - 0.4 * np.clip(z - 20, 0, None))
    regions["Frontal"] = free & ~regions["Occipital"] & ~regions["Parietal"]
    labels = np.zeros(gm.shape, dtype=np.int32)
    for name, (left, right) in DEMO_REGIONS.items():
        labels[regions[name]] = np.where(x < 0, left, right)[regions[name]]
    return labels


def _coarsen(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Block means of a 1 mm crop volume ``(160, 192, 160)`` onto ``shape``.

    Exact blocks when ``shape`` divides the crop; otherwise (e.g. scale 0.75) PyTorch's adaptive
    average pooling, whose windows of 1 or 2 sizes only approximate area averaging.
    """
    if tuple(shape) == volume.shape:
        return volume.astype(np.float64)
    tensor = torch.from_numpy(volume.astype(np.float64))[None, None]
    return F.adaptive_avg_pool3d(tensor, tuple(shape))[0, 0].numpy()


@functools.lru_cache(maxsize=8)
def _atlas(scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape, affine = demo_grid(scale)
    template, gm, wm = (_coarsen(v, shape) for v in _mni152())
    labels = _atlas_labels(gm, wm, affine)
    template = template.astype(np.float32)
    for array in (template, labels, affine):
        array.setflags(write=False)  # shared by every caller through the cache
    return template, labels, affine


def demo_atlas(scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(template (X, Y, Z) float32, labels (X, Y, Z) int32, affine (4, 4))`` at ``scale``.

    Cached per scale and read-only: copy before changing them.
    """
    return _atlas(_check_scale(scale))


# --- subject transforms ---------------------------------------------------------------------------


def _interpolate(values: np.ndarray, positions: Sequence[np.ndarray]) -> np.ndarray:
    """Trilinear interpolation of ``values (C, I, J, K)`` on the grid ``positions`` (3 1D arrays).

    ``positions[a]`` are index coordinates along axis ``a``; outside the grid the border value
    is used. Equal to :func:`regbench.transforms.sample` (``"bilinear"``, ``"border"``) on the
    grid of all position triples, computed axis by axis since the weights factorise. Returns
    ``(C, len(positions[0]), len(positions[1]), len(positions[2]))`` float64.
    """
    result = np.asarray(values, dtype=np.float64)
    if result.ndim != 4 or len(positions) != 3:
        raise ValueError(f"expected values (C, I, J, K) and 3 position arrays, got "
                         f"{result.shape} and {len(positions)}")
    for axis, coords in enumerate(positions, start=1):
        n = result.shape[axis]
        coords = np.clip(np.asarray(coords, dtype=np.float64), 0, n - 1)
        low = np.floor(coords)
        frac = (coords - low).reshape([-1 if a == axis else 1 for a in range(4)])
        low = low.astype(np.int64)
        high = np.minimum(low + 1, n - 1)
        result = (np.take(result, low, axis=axis) * (1 - frac)
                  + np.take(result, high, axis=axis) * frac)
    return result


def _control_grid(spacing: float) -> list[np.ndarray]:
    """Per axis, control point positions (1 mm crop voxels) covering the crop with a margin."""
    return [(n - 1) / 2 + (np.arange(math.ceil(n / spacing) + 2) - (math.ceil(n / spacing) + 1) / 2)
            * spacing for n in protocol.CROP_SHAPE]


def _on_control_grid(values: np.ndarray, grid: list[np.ndarray], positions: list[np.ndarray]
                     ) -> np.ndarray:
    """Interpolate ``values (C, *control shape)`` given on ``grid`` at ``positions`` (mm)."""
    spacing = grid[0][1] - grid[0][0]
    return _interpolate(values, [(p - g[0]) / spacing for p, g in zip(positions, grid,
                                                                      strict=True)])


def _rngs(seed: int, number: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for the velocity, the affine and the intensities of a subject."""
    children = np.random.SeedSequence([int(seed), int(number)]).spawn(3)
    return tuple(np.random.default_rng(child) for child in children)


def _velocity_mm(rng: np.random.Generator, positions: list[np.ndarray]) -> np.ndarray:
    """The subject's stationary velocity ``(3, len(p0), len(p1), len(p2))`` in mm at the 1 mm-crop
    ``positions``, along the voxel axes. Drawn on scale-independent control grids."""
    levels = []
    for spacing, amplitude in _VELOCITY_LEVELS:
        grid = _control_grid(spacing)
        levels.append((grid, amplitude * rng.standard_normal((3, *map(len, grid)))))
    target = rng.uniform(*_MAX_VELOCITY_MM)

    def evaluate(at: list[np.ndarray]) -> np.ndarray:
        return sum(_on_control_grid(values, grid, at) for grid, values in levels)

    # Scale so that the largest velocity in the brain is `target`, measured on a fixed lattice.
    lattice = [np.arange(0, n, _NORM_SPACING_MM) for n in protocol.CROP_SHAPE]
    _, fine_affine = demo_grid(1.0)
    index = np.stack(np.meshgrid(*lattice, indexing="ij")).reshape(3, -1)
    mm = (fine_affine[:3, :3] @ index + fine_affine[:3, 3:]).reshape(3, *map(len, lattice))
    brain = _ellipsoid(*mm, _BRAIN_CENTRE, _BRAIN_AXES)
    peak = np.sqrt((evaluate(lattice) ** 2).sum(0))[brain].max()
    return evaluate(positions) * (target / peak)


def _random_affine(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix (3, 3), translation (3,) in mm)``: rotation, scaling, shear, about the crop."""
    angles = np.deg2rad(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG, 3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        turn = np.eye(3)
        turn[[a, a, b, b], [a, b, a, b]] = [np.cos(angle), -np.sin(angle), np.sin(angle),
                                            np.cos(angle)]
        rotation = turn @ rotation
    scaling = np.diag(1 + rng.uniform(-_SCALING, _SCALING, 3))
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = rng.uniform(-_SHEAR, _SHEAR, 3)
    translation = rng.uniform(-_TRANSLATION_MM, _TRANSLATION_MM, 3)
    return rotation @ shear @ scaling, translation


@dataclass(frozen=True, eq=False)  # array fields: no element-wise ==
class SubjectTransform:
    """A subject's transform on the demo grid, voxel units, pull-back convention.

    The template voxel seen at subject voxel ``p`` is ``A(p + nonlinear(p))`` with the affine
    ``A(q) = matrix (q - centre) + centre + translation`` (the identity unless the demo was made
    with ``affine=True``).
    """

    velocity: np.ndarray
    """``(3, X, Y, Z)`` float32: the stationary velocity field whose exponential is
    ``nonlinear``."""
    nonlinear: np.ndarray
    """``(3, X, Y, Z)`` float32: the diffeomorphic displacement (the integrated velocity)."""
    matrix: np.ndarray
    """``(3, 3)``: linear part of the affine, about ``centre``."""
    centre: np.ndarray
    """``(3,)``: the crop centre, in voxels."""
    translation: np.ndarray
    """``(3,)``: in voxels."""

    def field(self) -> np.ndarray:
        """The full displacement ``(3, X, Y, Z)`` float32: ``A(p + nonlinear(p)) - p``."""
        shape = self.nonlinear.shape[1:]
        grid = np.indices(shape, dtype=np.float64) - self.centre.reshape(3, 1, 1, 1)
        moved = grid + self.nonlinear
        # A(p + u) - p = M (p + u - c) + t - (p - c)
        field = np.einsum("ij,j...->i...", self.matrix, moved) - grid
        field += self.translation.reshape(3, 1, 1, 1)
        return field.astype(np.float32)

    def inverse_at(self, points: np.ndarray) -> np.ndarray:
        """``phi^-1`` of ``points (3, ...)`` (voxels), where ``phi(p) = A(p + nonlinear(p))``.

        ``phi^-1 = exp(-velocity) o A^-1``: the affine is inverted exactly, the diffeomorphism by
        integrating the negated velocity (sampled trilinearly, border values outside the grid).
        """
        centre = self.centre.reshape(3, *[1] * (points.ndim - 1))
        shift = self.translation.reshape(centre.shape)
        q = np.einsum("ij,j...->i...", np.linalg.inv(self.matrix), points - centre - shift)
        q = q + centre
        coords = torch.from_numpy(q.reshape(1, 3, -1, 1, 1).astype(np.float32))
        displacement = sample(self._inverse_nonlinear, coords, "bilinear", "border")[0].numpy()
        return q + displacement.reshape(q.shape)

    @functools.cached_property
    def _inverse_nonlinear(self) -> torch.Tensor:
        """``(1, 3, X, Y, Z)``: the displacement of ``exp(-velocity)``."""
        return integrate_velocity(torch.from_numpy(-self.velocity)[None], _INTEGRATION_STEPS)


def subject_transform(seed: int, number: int, scale: float, affine: bool = False
                      ) -> SubjectTransform:
    """Subject ``number``'s transform for ``seed`` on the demo grid at ``scale``.

    The velocity (mm) is drawn on control grids that do not depend on ``scale``, interpolated
    onto the grid (:func:`_interpolate`) and integrated there by scaling and squaring. With
    ``affine``, a small random affine (its own random stream) follows the diffeomorphism.
    """
    scale = _check_scale(scale)
    velocity_rng, affine_rng, _ = _rngs(seed, number)
    velocity = (_velocity_mm(velocity_rng, _fine_positions(scale)) * scale).astype(np.float32)
    nonlinear = integrate_velocity(torch.from_numpy(velocity)[None],
                                   _INTEGRATION_STEPS)[0].numpy()
    matrix, translation_mm = _random_affine(affine_rng) if affine else (np.eye(3), np.zeros(3))
    shape, _ = demo_grid(scale)
    # The crop centre in fine voxels, (n - 1) / 2, maps to (n * scale - 1) / 2 in demo voxels.
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    return SubjectTransform(velocity, nonlinear, matrix, centre, translation_mm * scale)


def pair_displacement(moving: SubjectTransform, fixed: SubjectTransform) -> np.ndarray:
    """The true displacement ``(3, X, Y, Z)`` (voxels, pull convention) registering ``moving`` to
    ``fixed``: ``v(x) = phi_moving^-1(phi_fixed(x)) - x``, so that the moving subject pulled
    through ``v`` is the fixed one (up to intensities)."""
    points = np.indices(fixed.nonlinear.shape[1:], dtype=np.float64) + fixed.field()
    return moving.inverse_at(points) - np.indices(fixed.nonlinear.shape[1:])


def pair_displacement_stats(transforms: Mapping[str, SubjectTransform],
                            labels: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]],
                            spacing_mm: float) -> dict[str, float]:
    """Size of the true pair displacements (:func:`pair_displacement`) in mm over the labelled
    voxels (``labels > 0``) of each fixed subject, pooled over ordered ``pairs`` of subjects.

    Returns ``{"median", "p95", "max", "pairs"}`` (mm, mm, mm, count).
    """
    sizes = []
    for moving, fixed in pairs:
        field = pair_displacement(transforms[moving], transforms[fixed])
        sizes.append(np.sqrt((field**2).sum(0))[labels[fixed] > 0] * spacing_mm)
    sizes = np.concatenate(sizes)
    return {"median": round(float(np.median(sizes)), 2),
            "p95": round(float(np.percentile(sizes, 95)), 2),
            "max": round(float(sizes.max()), 2), "pairs": len(pairs)}


def _intensities(image: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Bias field, gamma and Rician noise on a warped template; float32 with maximum 1."""
    grid = _control_grid(_BIAS_SPACING_MM)
    log_bias = _BIAS_LOG_STD * rng.standard_normal((1, *map(len, grid)))
    gamma = np.exp(rng.uniform(-_GAMMA_LOG_RANGE, _GAMMA_LOG_RANGE))
    sigma = rng.uniform(*_NOISE_RANGE)
    bias = np.exp(_on_control_grid(log_bias, grid, _fine_positions(scale))[0])
    image = np.clip(image.astype(np.float64), 0, None) ** gamma * bias
    # Rician: the magnitude of a complex signal with Gaussian noise in both channels.
    real = image + sigma * rng.standard_normal(image.shape)
    imaginary = sigma * rng.standard_normal(image.shape)
    image = np.sqrt(real**2 + imaginary**2).astype(np.float32)
    return image / image.max()


def make_subject(seed: int, number: int, scale: float, affine: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Subject ``number`` (from 1) of ``seed``: ``(image (X, Y, Z) float32, labels int32)``.

    The image is in [0, 1] with maximum exactly 1; the labels are the atlas pulled through the
    same :meth:`SubjectTransform.field` by nearest neighbour. ``affine``: see
    :func:`subject_transform`.
    """
    template, atlas, _ = demo_atlas(scale)
    field = torch.from_numpy(subject_transform(seed, number, scale, affine).field())[None]
    warped = warp(torch.from_numpy(template.copy())[None, None], field)[0, 0].numpy()
    labels = warp_labels(torch.from_numpy(atlas.copy())[None, None], field)[0, 0].numpy()
    image = _intensities(warped, _rngs(seed, number)[2], scale)
    return image, labels


# --- the dataset ----------------------------------------------------------------------------------


def make_demo(out: str | os.PathLike, subjects: int = 16, scale: float = DEMO.default_scale,
              seed: int = 0, affine: bool = False, test_subjects: int | None = None) -> Path:
    """Write the demo dataset to ``out`` (images/, labels/, dataset.json); returns ``out``.

    The last ``test_subjects`` subjects are the test split (default: :func:`demo_split`'s).

    ``affine`` adds a random affine to every subject (:func:`subject_transform`); the default
    demo is affinely aligned, as prepared real data are. The manifest records the size of the
    true displacements between test subjects (``pair_displacement_mm``,
    :func:`pair_displacement_stats`).

    The arguments are checked before anything is written. An existing manifest in ``out`` is
    removed first and the new one written last, so an interrupted run never looks complete.
    """
    scale = _check_arguments(subjects, scale, seed, test_subjects)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a folder")
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        name = read_json(manifest_path).get("name")
        if name != DEMO.name:
            raise InputError(f"{manifest_path}: holds dataset {name!r}, not the demo; "
                             "refusing to overwrite it (choose another --out)")
        manifest_path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    shape, grid_affine = demo_grid(scale)
    ids = demo_subjects(subjects)
    train, val, test = demo_split(subjects, test_subjects)
    log.info("demo: %d SYNTHETIC subjects on %s voxels of %g mm (seed %d%s) -> %s", subjects,
             "x".join(map(str, shape)), 1 / scale, seed, ", with affines" if affine else "",
             root)
    test_labels = {}
    for number, subject in enumerate(tqdm(ids, desc="demo subjects", unit="subject"), start=1):
        image, labels = make_subject(seed, number, scale, affine)  # looked up at call time (tests)
        write_subject(root, subject, image, labels, grid_affine)
        if subject in test:
            test_labels[subject] = labels
    transforms = {subject: subject_transform(seed, ids.index(subject) + 1, scale, affine)
                  for subject in test}
    test_pairs = [(m, f) for m in test for f in test if m != f]
    manifest = make_manifest(
        name=DEMO.name, source=SOURCE, subjects=ids,
        splits={"train": train, "val": val, "test": test},
        labels=DEMO_LABELS, regions=DEMO_REGIONS, shape=shape, affine=grid_affine,
        synthetic=True, seed=int(seed), scale=scale, subject_affines=affine,
        pair_displacement_mm={**pair_displacement_stats(transforms, test_labels, test_pairs,
                                                        1 / scale),
                              "over": "labelled voxels of the fixed subject, every ordered "
                                      "test pair"},
        description=DESCRIPTION)
    write_manifest(root, manifest)
    return root
