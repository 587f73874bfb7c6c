"""LPBA40 onto the paper's crop of the MNI152 grid, from either of its two distributions.

Two layouts are read, found by what ``--raw`` holds (:func:`find_layout`):

* ``delineation_space``: LONI's own Analyze files (below);
* ``nifti``: LPBA40 as many registration repositories distribute it, a flat folder of
  ``S01.delineation.skullstripped.nii.gz`` + ``S01.delineation.structure.label.nii.gz``
  (``.nii`` too), already resampled to 1 mm and cropped to 160x192x160, intensities in [0, 1],
  roughly aligned to one another (:func:`nifti_files`, :func:`read_nifti_subject`).

Both are registered affinely to MNI152 the same way and cropped alike, so the two give the same
kind of dataset; ``dataset.json`` says which layout was read.

LONI ships each subject as two Analyze 7.5 pairs in ``.../delineation_space/S01/``::

    S01.delineation.skullstripped.hdr + .img.gz        the skull-stripped T1 (int16)
    S01.delineation.structure.label.hdr + .img.gz      56 manual labels (odd left, even right)

on a 256x124x256 grid of 0.859375x1.5x0.859375 mm whose voxel axes run left -> right,
posterior -> anterior, inferior -> superior (RAS). Analyze headers carry no reliable
orientation, so that convention is applied here explicitly (:func:`delineation_affine`, grid
centre at world 0). A 160x192x160 crop is impossible on that grid, so each subject is registered
affinely with ANTs (Mattes mutual information, centre-of-mass initialisation) to nilearn's bundled
MNI152 brain template resampled onto the FSL 1 mm grid (:func:`mni_template`), its labels are
carried along with ANTs' ``genericLabel`` interpolation (no new IDs, no lost thin structures as
with nearest neighbour), and both are cropped to ``[11:171, 13:205, 11:171]``. Intensities are
divided by the maximum of the cropped volume; IDs outside the 56 LPBA40 labels are set to 0 and
recorded in the manifest.

The NIfTI layout's headers carry a default affine, ``diag(-1, -1, 1)`` with a zero origin, that
claims LPS voxel axes; the labels say the axes are RAS (left structures at low axis-0 indices,
frontal anterior of occipital along axis 1, cerebellum inferior along axis 2). So the header's
orientation is never used: the axes are taken as RAS at 1 mm (:func:`nifti_affine`), and every
label map is checked to agree (:func:`check_orientation`); a volume whose labels contradict it
(a flipped copy, another distribution) is refused, naming the file and what it saw.

Reproducibility: ANTs samples its metric at random points. The seed is passed to ANTs
(``--random-seed``, as ``seed + 1`` because ANTs reads 0 as "seed from the clock"), and ITK runs
one thread by default: with several threads its parallel sums are added in varying order and
reruns differ slightly. ITK fixes its thread count at a process's first ANTs call.
"""

from __future__ import annotations

import functools
import gzip
import inspect
import logging
import os
import re
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from tqdm import tqdm

from regbench.data import protocol
from regbench.data.dataset import make_manifest, write_manifest, write_subject
from regbench.data.preparation import (
    choose_splits,
    clean_labels,
    crop,
    format_grid,
    parse_subjects,
    scale_by_maximum,
    staged_dataset,
    subset_splits,
)
from regbench.data.registry import LPBA40
from regbench.data.resolution import (
    block_factor,
    crop_grid,
    downsample,
    resampling_record,
    source_note,
)
from regbench.io import InputError, checked_image, checked_labels, load_nifti
from regbench.runtime import versions

log = logging.getLogger(__name__)

DELINEATION_SPACE = "delineation_space"
IMAGE_STEM = "{subject}.delineation.skullstripped"
LABELS_STEM = "{subject}.delineation.structure.label"

REGISTRATION_DEFAULTS: dict[str, Any] = {
    "type_of_transform": "Affine",
    "aff_metric": "mattes",
    "aff_sampling": 32,
    "aff_random_sampling_rate": 0.2,
    "aff_iterations": (2100, 1200, 1200, 10),
    "aff_shrink_factors": (6, 4, 2, 1),
    "aff_smoothing_sigmas": (3, 2, 1, 0),
}
"""``ants.registration`` keywords of the alignment to MNI152: ANTsPy's own ``Affine`` defaults
(the same as the suite's ``affine`` baseline), written out so that the manifest records them."""

Registration = Mapping[str, Any] | Sequence[tuple[str, Any]]
"""Overrides of :data:`REGISTRATION_DEFAULTS`: a mapping, or ``(key, value)`` pairs."""

_NOT_SETTINGS = ("fixed", "moving", "outprefix", "initial_transform", "mask", "moving_mask",
                 "verbose", "kwargs", "random_seed")

TEMPLATE_SOURCE = ("nilearn.datasets.load_mni152_template(resolution=1) (MNI152 2009 brain, "
                   "bundled with nilearn), resampled with nilearn.image.resample_img "
                   "(continuous) onto the FSL MNI152 1 mm grid, divided by its maximum")

_SUBJECT = re.compile(r"S\d\d")

Layout = Literal["delineation_space", "nifti"]
"""The layouts :func:`prepare` reads (:data:`regbench.data.registry.LPBA40`'s ``layouts``)."""

NIFTI_SHAPE: tuple[int, int, int] = protocol.CROP_SHAPE
NIFTI_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)
_NIFTI_NAME = re.compile(r"(S\d\d)\.delineation\.(skullstripped|structure\.label)\.nii(\.gz)?")
_NIFTI_KINDS = {"skullstripped": "image", "structure.label": "labels"}


# --- the template and the delineation grid -------------------------------------------------------


@functools.lru_cache(maxsize=1)
def mni_template() -> tuple[np.ndarray, np.ndarray]:
    """nilearn's bundled MNI152 brain template on the FSL 1 mm grid, intensities in [0, 1].

    Returns ``(template (182, 218, 182) float32, affine (4, 4))``, both read-only (cached). Works
    offline: the template ships inside nilearn.
    """
    from nilearn import datasets, image

    bundled = datasets.load_mni152_template(resolution=1)
    affine = np.asarray(protocol.MNI_AFFINE, dtype=float)
    resampled = image.resample_img(bundled, target_affine=affine, target_shape=protocol.MNI_SHAPE,
                                   interpolation="continuous", force_resample=True,
                                   copy_header=True)
    template = np.clip(np.asarray(resampled.get_fdata(), dtype=np.float32), 0, None)
    template /= template.max()
    template.setflags(write=False)
    affine.setflags(write=False)
    return template, affine


def delineation_affine() -> np.ndarray:
    """Voxel -> world mm of the delineation grid: RAS voxel axes, grid centre at world 0.

    The centre is a choice (the headers carry no origin one can trust); the registration starts
    from the centres of mass, so only the axes' directions matter.
    """
    shape = np.array(protocol.LPBA40_DELINEATION_SHAPE, dtype=float)
    spacing = np.array(protocol.LPBA40_DELINEATION_SPACING)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(shape - 1) / 2 * spacing
    return affine


# --- finding and reading the raw files -----------------------------------------------------------


@dataclass(frozen=True)
class AnalyzePair:
    """One Analyze 7.5 volume: its header (``.hdr`` or ``.hdr.gz``) and voxels (``.img[.gz]``)."""

    header: Path
    voxels: Path


def find_delineation_space(raw: str | os.PathLike) -> Path:
    """The ``delineation_space`` folder: ``raw`` itself, or the one folder of that name below it.

    ``raw`` may also be any folder that holds the subject folders ``S01`` .. directly.
    """
    raw = Path(raw)
    if not raw.is_dir():
        raise InputError(f"{raw}: not found (expected LONI's LPBA40 {DELINEATION_SPACE} folder "
                         f"or a folder above it).\n{LPBA40.how_to_get}")
    if raw.name == DELINEATION_SPACE or _subject_folders(raw):
        return raw
    found = sorted(p for p in raw.rglob(DELINEATION_SPACE) if p.is_dir())
    if not found:
        raise InputError(f"{raw}: holds no LPBA40 {DELINEATION_SPACE} folder (nor subject "
                         f"folders S01 .. S40).\n{LPBA40.how_to_get}")
    if len(found) > 1:
        raise InputError(f"{raw}: holds {len(found)} {DELINEATION_SPACE} folders "
                         f"({', '.join(map(str, found))}); point --raw at the one to use")
    return found[0]


def find_subjects(raw: str | os.PathLike) -> dict[str, Path]:
    """LPBA40 subject -> its folder, for every subject folder found (in subject order)."""
    return _subject_folders(find_delineation_space(raw))


def _subject_folders(folder: Path) -> dict[str, Path]:
    found = {p.name: p for p in folder.iterdir() if p.is_dir() and _SUBJECT.fullmatch(p.name)}
    return {s: found[s] for s in protocol.LPBA40_SUBJECTS if s in found}


def subject_files(folder: str | os.PathLike, subject: str) -> dict[str, AnalyzePair]:
    """``{"image": AnalyzePair, "labels": AnalyzePair}`` of one subject folder.

    Accepts LONI's ``.hdr`` + ``.img.gz`` and every plain/gzipped combination of the two.
    """
    folder = Path(folder)
    return {kind: AnalyzePair(_one_of(folder, stem.format(subject=subject), ".hdr"),
                              _one_of(folder, stem.format(subject=subject), ".img"))
            for kind, stem in (("image", IMAGE_STEM), ("labels", LABELS_STEM))}


def _one_of(folder: Path, stem: str, suffix: str) -> Path:
    # LONI's own choice first: the header plain, the voxels gzipped.
    names = [stem + suffix, stem + suffix + ".gz"]
    if suffix == ".img":
        names.reverse()
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder / names[0]}: not found (nor {names[1]})")


def read_header(pair: AnalyzePair) -> nib.AnalyzeHeader:
    """The Analyze header of ``pair``; raises :class:`InputError` naming the file."""
    try:
        raw = _read_bytes(pair.header)
        return nib.AnalyzeHeader.from_fileobj(BytesIO(raw), check=True)
    except Exception as err:  # nibabel raises several types for a bad header
        raise InputError(f"{pair.header}: not a readable Analyze 7.5 header ({err})") from None


def check_grid(pair: AnalyzePair, header: nib.AnalyzeHeader) -> None:
    """Raise :class:`InputError` unless ``header`` describes LPBA40's delineation grid."""
    shape = _squeezed(header.get_data_shape())
    spacing = tuple(float(z) for z in header.get_zooms()[:len(shape)])
    expected_shape = protocol.LPBA40_DELINEATION_SHAPE
    expected_spacing = protocol.LPBA40_DELINEATION_SPACING
    if shape != expected_shape or not np.allclose(spacing, expected_spacing, atol=1e-4):
        raise InputError(f"{pair.header}: grid {format_grid(shape, spacing)} is not LPBA40's "
                         f"delineation grid {format_grid(expected_shape, expected_spacing)}")


def read_volume(pair: AnalyzePair, header: nib.AnalyzeHeader | None = None) -> np.ndarray:
    """The voxels of ``pair`` as stored (3D), after checking the header's grid."""
    header = read_header(pair) if header is None else header
    check_grid(pair, header)
    try:
        voxels = _read_bytes(pair.voxels)
        data = np.asarray(header.data_from_fileobj(BytesIO(voxels)))
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise InputError(f"{pair.voxels}: cannot read the voxels ({err})") from None
    # A longer file reads without error, but it is not the volume the header describes.
    expected = int(header.get_data_offset()) + data.size * header.get_data_dtype().itemsize
    if len(voxels) != expected:
        raise InputError(f"{pair.voxels}: {len(voxels)} bytes of voxels, but its header "
                         f"{pair.header.name} describes {expected} ({format_grid(data.shape)} "
                         f"{header.get_data_dtype()}); the two files do not belong together")
    return data.reshape(protocol.LPBA40_DELINEATION_SHAPE)


def read_subject(files: Mapping[str, AnalyzePair]) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one subject: ``(image float32, labels int32)`` on the delineation grid."""
    image = checked_image(read_volume(files["image"]), files["image"].voxels)
    labels = checked_labels(read_volume(files["labels"]), files["labels"].voxels)
    return image, labels


def _read_bytes(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as stream:
            return stream.read()
    return path.read_bytes()


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


# --- the flat NIfTI layout -----------------------------------------------------------------------


def find_layout(raw: str | os.PathLike) -> tuple[Layout, Path]:
    """Which layout ``raw`` holds, and its folder: ``("nifti", raw)`` when ``raw`` itself holds
    ``S<nn>.delineation.*.nii[.gz]`` files, else ``("delineation_space", ...)`` as
    :func:`find_delineation_space` finds it.

    Raises:
        InputError: ``raw`` holds neither layout.
    """
    raw = Path(raw)
    if raw.is_dir() and any(_NIFTI_NAME.fullmatch(p.name) for p in raw.iterdir()):
        return "nifti", raw
    return "delineation_space", find_delineation_space(raw)


def nifti_files(folder: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """``{subject: {"image": path, "labels": path}}`` of a flat NIfTI folder, in subject order.

    Raises:
        InputError: a subject with an image but no label map (or the reverse), or one volume
            present both as ``.nii`` and ``.nii.gz``.
    """
    folder = Path(folder)
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        match = _NIFTI_NAME.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        subject, kind = match.group(1), _NIFTI_KINDS[match.group(2)]
        if kind in found.setdefault(subject, {}):
            raise InputError(f"{path}: {subject}'s {kind} is there twice "
                             f"({found[subject][kind].name} too); keep one")
        found[subject][kind] = path
    for subject, files in found.items():
        for kind in ("image", "labels"):
            if kind not in files:
                other = next(iter(files.values()))
                raise InputError(f"{other}: {subject} has no {kind} file beside it (expected "
                                 f"{_nifti_name(subject, kind)})")
    return {s: found[s] for s in protocol.LPBA40_SUBJECTS if s in found}


def _nifti_name(subject: str, kind: str) -> str:
    stem = IMAGE_STEM if kind == "image" else LABELS_STEM
    return stem.format(subject=subject) + ".nii.gz"


def nifti_affine() -> np.ndarray:
    """Voxel -> world mm of the NIfTI layout's grid: RAS voxel axes of 1 mm, grid centre at
    world 0 (the header's affine is not used: module docstring)."""
    shape = np.array(NIFTI_SHAPE, dtype=float)
    affine = np.eye(4)
    affine[:3, 3] = -(shape - 1) / 2
    return affine


def read_nifti_volume(path: Path, kind: Literal["image", "labels"]) -> np.ndarray:
    """One volume of the NIfTI layout, checked: its grid (160x192x160 of 1 mm), then its values
    (:func:`~regbench.io.checked_image` or :func:`~regbench.io.checked_labels`).

    Raises:
        InputError: an unreadable file, another grid, or bad values; the message names ``path``.
    """
    check_nifti_grid(path)
    data, _ = load_nifti(path)
    data = np.asarray(data).reshape(NIFTI_SHAPE)
    return checked_image(data, path) if kind == "image" else checked_labels(data, path)


def check_nifti_grid(path: Path) -> None:
    """Check a NIfTI file's grid from its header alone (no voxels read).

    Raises:
        InputError: an unreadable header or another grid than 160x192x160 of 1 mm.
    """
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for a bad header
        raise InputError(f"{path}: not a readable NIfTI image ({err})") from None
    shape = _squeezed(image.shape)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    if shape != NIFTI_SHAPE or not np.allclose(spacing, NIFTI_SPACING, atol=1e-3):
        raise InputError(f"{path}: grid {format_grid(shape, spacing)} is not the NIfTI layout's "
                         f"{format_grid(NIFTI_SHAPE, NIFTI_SPACING)}")


def check_orientation(labels: np.ndarray, source: str | os.PathLike) -> dict[str, float]:
    """Check from the labels alone that the voxel axes are RAS, as the suite reads them.

    Measured on centroids (voxel indices): left structures (odd IDs) lie at lower axis-0 indices
    than right ones (even), the frontal region at higher axis-1 indices than the occipital one,
    the cerebellum (181) at lower axis-2 indices than the frontal region. Returns those six
    centroids.

    Raises:
        InputError: a check fails or a structure it needs is missing; the message names
            ``source`` and what was measured.
    """
    def centroid(ids: Sequence[int], axis: int, what: str) -> float:
        inside = np.isin(labels, ids)
        if not inside.any():
            raise InputError(f"{source}: no {what} label ({_id_range(ids)}): cannot tell the "
                             "orientation from the labels")
        index = np.nonzero(inside)[axis]
        return float(index.mean())

    structures = [i for i in protocol.LPBA40_LABELS if i not in protocol.LPBA40_UNPAIRED]
    frontal, occipital = (protocol.LPBA40_REGIONS[r] for r in ("Frontal", "Occipital"))
    seen = {
        "left_axis0": centroid([i for i in structures if i % 2], 0, "left (odd)"),
        "right_axis0": centroid([i for i in structures if not i % 2], 0, "right (even)"),
        "frontal_axis1": centroid(frontal, 1, "frontal"),
        "occipital_axis1": centroid(occipital, 1, "occipital"),
        "cerebellum_axis2": centroid([protocol.LPBA40_CEREBELLUM], 2, "cerebellum"),
        "frontal_axis2": centroid(frontal, 2, "frontal"),
    }
    contradictions = [
        text for text, wrong in (
            (f"left structures at axis-0 index {seen['left_axis0']:.0f}, right at "
             f"{seen['right_axis0']:.0f} (left must be lower: axis 0 runs left -> right)",
             seen["left_axis0"] >= seen["right_axis0"]),
            (f"frontal at axis-1 index {seen['frontal_axis1']:.0f}, occipital at "
             f"{seen['occipital_axis1']:.0f} (frontal must be higher: axis 1 runs posterior -> "
             "anterior)", seen["frontal_axis1"] <= seen["occipital_axis1"]),
            (f"cerebellum at axis-2 index {seen['cerebellum_axis2']:.0f}, frontal at "
             f"{seen['frontal_axis2']:.0f} (cerebellum must be lower: axis 2 runs inferior -> "
             "superior)", seen["cerebellum_axis2"] >= seen["frontal_axis2"]),
        ) if wrong]
    if contradictions:
        raise InputError(f"{source}: the labels contradict the RAS voxel axes the suite reads "
                         f"this layout with: {'; '.join(contradictions)}. Is the volume "
                         "flipped, or from another distribution?")
    return seen


def _id_range(ids: Sequence[int]) -> str:
    ids = sorted(ids)
    return f"ID {ids[0]}" if len(ids) == 1 else f"IDs {ids[0]}-{ids[-1]}"


def read_nifti_subject(files: Mapping[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one subject of the NIfTI layout: ``(image float32, labels int32)`` on its
    RAS 1 mm grid (:func:`nifti_affine`), the labels' orientation checked."""
    image = read_nifti_volume(files["image"], "image")
    labels = read_nifti_volume(files["labels"], "labels")
    check_orientation(labels, files["labels"])
    return image, labels


# --- registration --------------------------------------------------------------------------------


def registration_settings(overrides: Registration | None = None) -> dict[str, Any]:
    """:data:`REGISTRATION_DEFAULTS` with ``overrides`` (a mapping, or ``(key, value)`` pairs as
    ``regbench prepare lpba40 --registration`` gives them); unknown ANTsPy keywords are
    refused, and a keyword given twice (the last would win without a word)."""
    import ants

    if overrides is not None and not isinstance(overrides, Mapping):
        keys = [key for key, _ in overrides]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise InputError(f"registration setting {twice[0]} is given twice; keep one")
    settings = {**REGISTRATION_DEFAULTS, **dict(overrides or {})}
    allowed = set(inspect.signature(ants.registration).parameters) - set(_NOT_SETTINGS)
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise InputError(f"registration settings {unknown} are not ants.registration keywords "
                         f"this preparer passes on (seed and threads have their own arguments)")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}


def to_ants_image(volume: np.ndarray, affine: np.ndarray):
    """An ``ants.ANTsImage`` of ``volume`` placed in world space by ``affine`` (voxel -> RAS mm).

    ITK's physical space is LPS: the first two world axes change sign.
    """
    import ants

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=float)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(np.ascontiguousarray(volume, dtype=np.float32),
                           origin=tuple(float(o) for o in lps[:3, 3]),
                           spacing=tuple(float(s) for s in spacing), direction=direction)


def register_to_template(image: np.ndarray, labels: np.ndarray, affine: np.ndarray,
                         template: np.ndarray, template_affine: np.ndarray, *,
                         settings: Mapping[str, Any] | None = None, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray, float]:
    """Register ``image`` affinely to ``template`` (both placed by their voxel -> RAS affines).

    ``settings`` override :data:`REGISTRATION_DEFAULTS`; ``seed`` (>= 0) fixes ANTs' metric
    sampling (passed as ``seed + 1``). With one ITK thread the result is bit-identical between
    runs. Returns ``(image on the template grid float32 (linear), labels on the template grid
    int32 (genericLabel), Pearson correlation of the registered image with the template)``.
    """
    import ants

    if not (isinstance(seed, int | np.integer) and 0 <= seed < 2**31 - 1):
        raise ValueError(f"seed must be an integer in [0, 2**31 - 2], got {seed!r}")
    kwargs = registration_settings(settings)
    fixed = to_ants_image(template, template_affine)
    moving = to_ants_image(image, affine)
    with tempfile.TemporaryDirectory(prefix="regbench-lpba40-") as workdir:
        # ANTsPy reads the seed from its module config only (see regbench.baselines.ants).
        previous_seed = ants.config._random_seed
        ants.config._random_seed = int(seed) + 1
        try:
            result = ants.registration(fixed, moving, outprefix=os.path.join(workdir, "ants_"),
                                       **kwargs)
        finally:
            ants.config._random_seed = previous_seed
        transforms = list(result["fwdtransforms"])
        warped = result["warpedmovout"].numpy().astype(np.float32)
        warped_labels = ants.apply_transforms(
            fixed, to_ants_image(labels.astype(np.float32), affine), transforms,
            interpolator="genericLabel").numpy()
    warped_labels = np.rint(warped_labels).astype(np.int32)
    correlation = float(np.corrcoef(warped.ravel(), np.asarray(template).ravel())[0, 1])
    return warped, warped_labels, correlation


def use_itk_threads(threads: int | None) -> int:
    """Fix ITK's thread count (default 1) before this process's first ANTs call.

    Shares the bookkeeping of :mod:`regbench.baselines.ants`: once ITK has fixed a count, a
    different request is logged and the count in use is returned.
    """
    from regbench.baselines.ants import Affine

    if threads is not None and not (isinstance(threads, int) and threads > 0):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return Affine(threads=threads or 1).use_threads()


# --- preparation ---------------------------------------------------------------------------------


def prepare(raw: str | os.PathLike, out: str | os.PathLike,
            subjects: str | Sequence[str] | None = None, *,
            registration: Registration | None = None, seed: int = 0,
            threads: int | None = None, scale: float = LPBA40.default_scale,
            splits: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Prepare LPBA40 from ``raw`` (either layout, :func:`find_layout`) into ``out``.

    ``subjects``: IDs (``"S01,S31"`` or a list; default every subject found in ``raw``, or
    every subject of ``splits``). ``scale``: ``1 / k`` of the paper's 1 mm crop
    (:mod:`regbench.data.resolution`). ``splits``: train/val/test lists of one's own
    (:func:`~regbench.data.preparation.given_splits`) instead of the paper's.
    ``registration``: ``ants.registration`` keywords overriding :data:`REGISTRATION_DEFAULTS`.
    ``seed``: ANTs' metric sampling seed. ``threads``: ITK threads (default 1, reproducible).
    Every file is found and every header checked before any registration; ``out`` changes only
    when every subject succeeded. Returns ``out``.
    """
    out = Path(out)
    factor = block_factor(scale)
    chosen = choose_splits(parse_subjects(subjects), splits)
    if chosen is not None:
        unknown = [s for s in chosen if s not in protocol.LPBA40_SUBJECTS]
        if unknown:
            raise InputError(f"{', '.join(unknown)}: not LPBA40 subject ID(s) (S01 .. S40)")
    layout, space = find_layout(raw)
    found: Mapping[str, Any] = nifti_files(space) if layout == "nifti" else _subject_folders(space)
    if chosen is None:
        if not found:
            raise InputError(f"{space}: holds no LPBA40 subject folder (S01 .. S40).\n"
                             f"{LPBA40.how_to_get}")
        missing = [s for s in protocol.LPBA40_SUBJECTS if s not in found]
        if missing:
            log.warning("%s: %d of 40 LPBA40 subjects present; preparing those (missing: %s)",
                        space, len(found), ", ".join(missing))
        chosen = list(found)
    missing = [s for s in chosen if s not in found]
    if missing:
        if layout == "nifti":
            raise InputError(f"{', '.join(missing)} not found: expected "
                             f"{space / _nifti_name(missing[0], 'image')} and "
                             f"{_nifti_name(missing[0], 'labels')} beside it")
        expected = space / missing[0] / (IMAGE_STEM.format(subject=missing[0]) + ".img.gz")
        raise InputError(f"{', '.join(missing)} not found: expected {expected} (+ .hdr) and the "
                         f"label files beside it.\n{LPBA40.how_to_get}")
    settings = registration_settings(registration)
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    # Everything that can be checked without reading voxels, for every subject, before the slow
    # part: a typo in S40 should not surface after an hour of registrations.
    if layout == "nifti":
        files = {s: found[s] for s in chosen}
        for paths in files.values():
            for path in paths.values():
                check_nifti_grid(path)
    else:
        files = {s: subject_files(found[s], s) for s in chosen}
        for subject_pairs in files.values():
            for pair in subject_pairs.values():
                check_grid(pair, read_header(pair))
    read = read_nifti_subject if layout == "nifti" else read_subject
    source_affine = nifti_affine() if layout == "nifti" else delineation_affine()

    itk_threads = use_itk_threads(threads)
    template, template_affine = mni_template()
    shape, affine = crop_grid(1 / factor)
    correlation: dict[str, float] = {}
    dropped: dict[str, dict[str, int]] = {}
    with staged_dataset(out) as staging:
        for subject in tqdm(chosen, desc="LPBA40 -> MNI152", unit="subject"):
            image, labels = read(files[subject])
            labels, dropped[subject] = clean_labels(labels, protocol.LPBA40_LABELS)
            if not labels.any():
                raise InputError(f"{_voxels(files[subject]['labels'])}: no LPBA40 label ID in "
                                 f"the label map (found only {sorted(dropped[subject])})")
            if dropped[subject]:
                log.warning("%s: labels %s are not LPBA40 IDs; set to 0", subject,
                            ", ".join(dropped[subject]))
            warped, warped_labels, correlation[subject] = register_to_template(
                image, labels, source_affine, template, template_affine,
                settings=settings, seed=seed)
            image, labels = downsample(
                scale_by_maximum(crop(warped), _voxels(files[subject]["image"])),
                crop(warped_labels), factor)
            write_subject(staging, subject, image, labels, affine)
            log.info("%s: registered to MNI152 (correlation with the template %.3f)", subject,
                     correlation[subject])
            if correlation[subject] < 0.8:
                log.warning("%s: low correlation with the template (%.3f); check its "
                            "alignment", subject, correlation[subject])
        manifest = make_manifest(
            name=LPBA40.name,
            source=(f"LPBA40 (LONI), {layout_text(layout)}; affinely registered (ANTs) to "
                    "nilearn's MNI152 template on the FSL 1 mm grid, cropped to 160x192x160, "
                    "intensities divided by the maximum of the cropped volume"
                    + source_note(factor)),
            subjects=chosen,
            splits=subset_splits(chosen, splits or protocol.LPBA40_SPLITS),
            labels=protocol.LPBA40_LABELS,
            regions=protocol.LPBA40_REGIONS,
            shape=shape,
            affine=affine,
            resampling=resampling_record(factor),
            synthetic=False,
            scale=1 / factor,
            split_source="paper" if splits is None else "given",
            raw=str(space.absolute()),
            layout=layout,
            source_grid={
                "shape": list(NIFTI_SHAPE if layout == "nifti"
                              else protocol.LPBA40_DELINEATION_SHAPE),
                "spacing_mm": list(NIFTI_SPACING if layout == "nifti"
                                   else protocol.LPBA40_DELINEATION_SPACING),
                "voxel_axes": "RAS (left->right, posterior->anterior, inferior->superior)"
                              + (", checked from every label map; the header's affine is not "
                                 "used" if layout == "nifti" else ""),
                "affine": source_affine.tolist(),
            },
            template=TEMPLATE_SOURCE,
            registration={
                "method": "ants.registration",
                "settings": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in settings.items()},
                "seed": seed,
                "ants_random_seed": seed + 1,
                "image_interpolator": "linear",
                "label_interpolator": "genericLabel",
                "itk_threads": itk_threads,
            },
            template_correlation=correlation,
            dropped_labels=dropped,
            files={s: {kind: [str(path.absolute()) for path in _paths(entry)]
                       for kind, entry in files[s].items()} for s in chosen},
            versions={**versions(), "nilearn": _version("nilearn")},
        )
        write_manifest(staging, manifest)
    log.info("LPBA40: %d subject(s) prepared in %s", len(chosen), out)
    return out


def layout_text(layout: Layout) -> str:
    """What a layout is, as the dataset's spec says it."""
    return next(entry.reads for entry in LPBA40.layouts if entry.name == layout)


def _voxels(entry: AnalyzePair | Path) -> Path:
    """The file holding a volume's voxels, in either layout."""
    return entry.voxels if isinstance(entry, AnalyzePair) else entry


def _paths(entry: AnalyzePair | Path) -> list[Path]:
    return [entry.header, entry.voxels] if isinstance(entry, AnalyzePair) else [entry]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"
