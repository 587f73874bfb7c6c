"""LPBA40 from LONI's delineation-space distribution, onto the paper's crop of the MNI152 grid.

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
from typing import Any

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
from regbench.io import InputError, checked_image, checked_labels
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

_NOT_SETTINGS = ("fixed", "moving", "outprefix", "initial_transform", "mask", "moving_mask",
                 "verbose", "kwargs", "random_seed")

TEMPLATE_SOURCE = ("nilearn.datasets.load_mni152_template(resolution=1) (MNI152 2009 brain, "
                   "bundled with nilearn), resampled with nilearn.image.resample_img "
                   "(continuous) onto the FSL MNI152 1 mm grid, divided by its maximum")

_SUBJECT = re.compile(r"S\d\d")


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


# --- registration --------------------------------------------------------------------------------


def registration_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`REGISTRATION_DEFAULTS` with ``overrides``; unknown ANTsPy keywords are refused."""
    import ants

    settings = {**REGISTRATION_DEFAULTS, **(overrides or {})}
    allowed = set(inspect.signature(ants.registration).parameters) - set(_NOT_SETTINGS)
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ValueError(f"registration settings {unknown} are not ants.registration keywords "
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
            registration: Mapping[str, Any] | None = None, seed: int = 0,
            threads: int | None = None, scale: float = LPBA40.default_scale,
            splits: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Prepare LPBA40 from LONI's delineation-space files in ``raw`` into ``out``.

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
    space = find_delineation_space(raw)
    found = _subject_folders(space)
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
        expected = space / missing[0] / (IMAGE_STEM.format(subject=missing[0]) + ".img.gz")
        raise InputError(f"{', '.join(missing)} not found: expected {expected} (+ .hdr) and the "
                         f"label files beside it.\n{LPBA40.how_to_get}")
    settings = registration_settings(registration)
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    # Everything that can be checked without reading voxels, for every subject, before the slow
    # part: a typo in S40 should not surface after an hour of registrations.
    files = {s: subject_files(found[s], s) for s in chosen}
    for subject_pairs in files.values():
        for pair in subject_pairs.values():
            check_grid(pair, read_header(pair))

    itk_threads = use_itk_threads(threads)
    template, template_affine = mni_template()
    shape, affine = crop_grid(1 / factor)
    correlation: dict[str, float] = {}
    dropped: dict[str, dict[str, int]] = {}
    with staged_dataset(out) as staging:
        for subject in tqdm(chosen, desc="LPBA40 -> MNI152", unit="subject"):
            image, labels = read_subject(files[subject])
            labels, dropped[subject] = clean_labels(labels, protocol.LPBA40_LABELS)
            if not labels.any():
                raise InputError(f"{files[subject]['labels'].voxels}: no LPBA40 label ID in the "
                                 f"label map (found only {sorted(dropped[subject])})")
            if dropped[subject]:
                log.warning("%s: labels %s are not LPBA40 IDs; set to 0", subject,
                            ", ".join(dropped[subject]))
            warped, warped_labels, correlation[subject] = register_to_template(
                image, labels, delineation_affine(), template, template_affine,
                settings=settings, seed=seed)
            image, labels = downsample(
                scale_by_maximum(crop(warped), files[subject]["image"].voxels),
                crop(warped_labels), factor)
            write_subject(staging, subject, image, labels, affine)
            log.info("%s: registered to MNI152 (correlation with the template %.3f)", subject,
                     correlation[subject])
            if correlation[subject] < 0.8:
                log.warning("%s: low correlation with the template (%.3f); check its "
                            "alignment", subject, correlation[subject])
        manifest = make_manifest(
            name=LPBA40.name,
            source=("LPBA40 (LONI), delineation space; affinely registered (ANTs) to nilearn's "
                    "MNI152 template on the FSL 1 mm grid, cropped to 160x192x160, intensities "
                    "divided by the maximum of the cropped volume"
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
            delineation_grid={
                "shape": list(protocol.LPBA40_DELINEATION_SHAPE),
                "spacing_mm": list(protocol.LPBA40_DELINEATION_SPACING),
                "voxel_axes": "RAS (left->right, posterior->anterior, inferior->superior)",
                "affine": delineation_affine().tolist(),
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
            files={s: {kind: [str(pair.header.absolute()), str(pair.voxels.absolute())]
                       for kind, pair in files[s].items()} for s in chosen},
            versions={**versions(), "nilearn": _version("nilearn")},
        )
        write_manifest(staging, manifest)
    log.info("LPBA40: %d subject(s) prepared in %s", len(chosen), out)
    return out


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"
