"""Mindboggle-101 from its ``<GROUP>_volumes_in_MNI152`` archives, onto the paper's crop.

Each archive (mindboggle.info, CC BY-NC-SA 3.0) unpacks to ``<GROUP>_volumes/<subject>/`` with
``t1weighted_brain.MNI152.nii.gz`` and the manual cortical labels
(``labels.DKT25.manual.MNI152.nii.gz``, or ``labels.DKT31.manual.MNI152.nii.gz``), already
affine-aligned to the FSL MNI152 1 mm grid (182x218x182). Preparation checks that grid, crops
``[11:171, 13:205, 11:171]``, divides intensities by the maximum of the cropped volume, merges
DKT31 into DKT25 (:data:`~regbench.data.protocol.DKT31_TO_DKT25`) and sets every other ID
(subcortical, corpus callosum, ...) to 0, recording it in the manifest.

:func:`download` fetches the archives (checked, atomic); :func:`prepare` takes RAW holding the
unpacked ``<GROUP>_volumes`` folders or the archives themselves, which it extracts safely.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
from tqdm import tqdm

from regbench.data import protocol
from regbench.data.dataset import make_manifest, write_manifest, write_subject
from regbench.data.preparation import (
    choose_splits,
    clean_labels,
    crop,
    parse_subjects,
    scale_by_maximum,
    staged_dataset,
    subset_splits,
    warn_without_test_pairs,
)
from regbench.data.registry import MINDBOGGLE101
from regbench.data.resolution import (
    block_factor,
    crop_grid,
    downsample,
    resampling_record,
    source_note,
)
from regbench.io import (
    InputError,
    atomic_path,
    file_sha256,
    output_lock,
    read_image,
    read_labels,
)
from regbench.runtime import versions

log = logging.getLogger(__name__)

IMAGE = "t1weighted_brain.MNI152.nii.gz"
DKT25 = "labels.DKT25.manual.MNI152.nii.gz"
DKT31 = "labels.DKT31.manual.MNI152.nii.gz"

DEFAULT_URL = "https://mindboggle.info/data/mindboggle101/{group}_volumes_in_MNI152.tar.gz"
"""Where mindboggle.info's data page (``nipy/mindboggle``, ``doc/data.rst``) links the archives;
``{group}`` stands for the group. The data are also deposited on OSF (project nhtur) and Harvard
Dataverse: when this address moves, pass ``--url`` (a template with ``{group}``, or one archive's
address with ``--groups``), or set ``datasets.mindboggle101.url`` in the workflow's config."""

DEFAULT_GROUPS: tuple[str, ...] = tuple(
    group for split in ("train", "test") for group in protocol.MINDBOGGLE101_SPLIT_GROUPS[split])
"""The groups the paper's splits use (MMRR-21 and Extra-18 are downloaded only on request)."""

_CHUNK = 1 << 20


def archive_name(group: str) -> str:
    """``OASIS-TRT-20`` -> ``OASIS-TRT-20_volumes_in_MNI152.tar.gz``."""
    return f"{group}_volumes_in_MNI152.tar.gz"


def group_folder(group: str) -> str:
    """``OASIS-TRT-20`` -> ``OASIS-TRT-20_volumes`` (the archive's top folder)."""
    return f"{group}_volumes"


# --- download ------------------------------------------------------------------------------------


def download(out: str | os.PathLike, *, url: str | None = None, sha256: str | None = None,
             groups: str | Sequence[str] | None = None) -> Path:
    """Download ``<GROUP>_volumes_in_MNI152.tar.gz`` archives into ``out``; returns ``out``.

    ``url``: a template with ``{group}`` (default :data:`DEFAULT_URL`), or the address of one
    archive, whose group is ``groups`` or read from the file name. ``groups``: comma-separated
    or a list (default :data:`DEFAULT_GROUPS`). ``sha256``: expected digest of the one archive.
    Archives already in ``out`` are kept (checked against ``sha256`` when given). Each archive
    is written to a temporary file, checked (digest, readable tar), then renamed: a failed
    download leaves nothing behind.
    """
    out = Path(out)
    chosen = _parse_groups(groups)
    template = url or DEFAULT_URL
    if "{group}" in template:
        targets = [(g, template.replace("{group}", g)) for g in chosen or DEFAULT_GROUPS]
    elif chosen is not None:
        if len(chosen) != 1:
            raise InputError(f"--url {template} names one archive but --groups names "
                             f"{len(chosen)}; put {{group}} in the URL or give one group")
        targets = [(chosen[0], template)]
    else:
        named = [g for g in protocol.MINDBOGGLE101_GROUPS
                 if PurePosixPath(template.split("?")[0]).name == archive_name(g)]
        if not named:
            raise InputError(f"{template}: cannot tell which group this archive holds; name it "
                             f"with --groups (e.g. --groups OASIS-TRT-20) or put {{group}} in "
                             f"the URL")
        targets = [(named[0], template)]
    if sha256 is not None:
        if len(targets) != 1:
            raise InputError(f"--sha256 checks one archive, but {len(targets)} are to be "
                             f"downloaded ({', '.join(g for g, _ in targets)}); give one group "
                             f"with --groups")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise InputError(f"--sha256 {sha256!r}: not a SHA-256 digest (64 hex digits)")
        sha256 = sha256.lower()
    with output_lock(out):  # one download at a time; removes a killed one's partial files
        for group, address in targets:
            destination = out / archive_name(group)
            if destination.is_file():
                found = file_sha256(destination) if sha256 is not None else None
                if found is not None and found != sha256:
                    raise InputError(f"{destination}: SHA-256 {found} does not match the "
                                     f"expected {sha256}; delete the file to download it again")
                log.info("%s: already there, kept", destination)
                continue
            _fetch(address, destination, sha256)
    return out


def _parse_groups(groups: str | Sequence[str] | None) -> list[str] | None:
    if groups is None:
        return None
    chosen = parse_subjects(groups)  # the same comma-separated list syntax
    assert chosen is not None
    unknown = [g for g in chosen if g not in protocol.MINDBOGGLE101_GROUPS]
    if unknown:
        raise InputError(f"unknown Mindboggle101 group(s) {', '.join(map(repr, unknown))} "
                         f"(known: {', '.join(protocol.MINDBOGGLE101_GROUPS)})")
    return chosen


def _fetch(url: str, destination: Path, sha256: str | None) -> None:
    """Download ``url`` to ``destination`` through a temporary file, checking it on the way."""
    log.info("downloading %s", url)
    request = urllib.request.Request(url, headers={"User-Agent": "regbench"})
    with atomic_path(destination) as tmp:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as sink:
                total = response.headers.get("Content-Length")
                with tqdm(total=int(total) if total and total.isdigit() else None, unit="B",
                          unit_scale=True, desc=destination.name, leave=False) as progress:
                    while chunk := response.read(_CHUNK):
                        sink.write(chunk)
                        digest.update(chunk)
                        progress.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise InputError(f"{url}: download failed ({err})") from None
        if sha256 is not None and digest.hexdigest() != sha256:
            raise InputError(f"{url}: SHA-256 {digest.hexdigest()} does not match the expected "
                             f"{sha256}")
        try:
            with tarfile.open(tmp, "r:*") as tar:
                tar.getmembers()  # reads the whole archive: a truncated one fails here
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise InputError(f"{url}: not a tar archive ({err}); the server may have sent an "
                             f"error page instead") from None
    log.info("%s: downloaded", destination)


# --- archives ------------------------------------------------------------------------------------


def extract_archives(raw: str | os.PathLike) -> list[Path]:
    """Extract every group archive in ``raw`` whose ``<GROUP>_volumes`` folder is not there yet.

    Returns the folders made. See :func:`extract_archive`.
    """
    raw = Path(raw)
    made = []
    for group in protocol.MINDBOGGLE101_GROUPS:
        archive = raw / archive_name(group)
        if archive.is_file() and not (raw / group_folder(group)).exists():
            made.append(extract_archive(archive, raw, group))
    return made


def extract_archive(archive: Path, raw: Path, group: str) -> Path:
    """Extract ``<GROUP>_volumes/`` of ``archive`` into ``raw``, all-or-nothing.

    Every member is checked first: absolute paths, ``..``, links and special files are refused
    (nothing is extracted then). The archive is unpacked into a temporary ``.extract-*`` folder
    in ``raw`` and its ``<GROUP>_volumes`` folder renamed into place.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                problem = _unsafe(member)
                if problem:
                    raise InputError(f"{archive}: unsafe member {member.name!r} ({problem}); "
                                     f"nothing was extracted")
            log.info("extracting %s", archive)
            staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=raw))
            try:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second safety net
                    tar.extractall(staging, members=members, filter="data")
                else:
                    tar.extractall(staging, members=members)
                folder = staging / group_folder(group)
                if not folder.is_dir():
                    raise InputError(f"{archive}: holds no {group_folder(group)}/ folder")
                target = raw / group_folder(group)
                os.replace(folder, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise InputError(f"{archive}: not a readable tar.gz archive ({err}); delete it and "
                         f"download it again") from None
    except OSError as err:
        raise InputError(f"{archive}: cannot extract ({err})") from None
    return target


def _unsafe(member: tarfile.TarInfo) -> str | None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or member.name.startswith(("/", "\\")):
        return "absolute path"
    if ".." in path.parts:
        return "leads outside the folder"
    if not (member.isfile() or member.isdir()):
        return "a link or special file"
    return None


# --- subjects ------------------------------------------------------------------------------------


def find_subjects(raw: str | os.PathLike) -> dict[str, str]:
    """Subject -> group for every subject folder under ``raw/<GROUP>_volumes/``.

    Groups in :data:`~regbench.data.protocol.MINDBOGGLE101_GROUPS` order, subjects in natural
    order within a group (``NKI-TRT-20-2`` before ``NKI-TRT-20-10``).

    Raises:
        InputError: a subject's folder is in two group folders (which one holds its volumes?).
    """
    raw = Path(raw)
    found: dict[str, str] = {}
    for group in protocol.MINDBOGGLE101_GROUPS:
        folder = raw / group_folder(group)
        if not folder.is_dir():
            continue
        names = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for name in sorted(names, key=_natural):
            if name in found:
                raise InputError(f"{raw}: subject {name} is in {group_folder(found[name])}/ and "
                                 f"in {group_folder(group)}/; keep one of the two folders")
            found[name] = group
    return found


def _natural(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", name) if part]


def subject_files(raw: str | os.PathLike, group: str, subject: str) -> dict[str, Path]:
    """``{"image": path, "labels": path}`` of one subject (DKT25 labels, else DKT31)."""
    folder = Path(raw) / group_folder(group) / subject
    image = folder / IMAGE
    if not image.is_file():
        raise InputError(f"{image}: not found")
    for name in (DKT25, DKT31):
        if (folder / name).is_file():
            return {"image": image, "labels": folder / name}
    raise InputError(f"{folder / DKT25}: not found (nor {DKT31})")


def check_header(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` is a NIfTI volume on the FSL MNI152 1 mm grid.

    Reads the header only.
    """
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as err:  # nibabel raises many types for corrupt or truncated files
        raise InputError(f"{path}: not a readable NIfTI image ({err})") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if shape != protocol.MNI_SHAPE:
        raise InputError(f"{path}: shape {shape} does not match the FSL MNI152 1 mm grid "
                         f"{protocol.MNI_SHAPE}")
    if not np.allclose(affine, protocol.MNI_AFFINE, atol=1e-3):
        rows = "; ".join(" ".join(f"{v:g}" for v in row) for row in affine[:3])
        raise InputError(f"{path}: affine [{rows}] is not the FSL MNI152 1 mm grid's "
                         f"[-1 0 0 90; 0 1 0 -126; 0 0 1 -72]")


def _no_data(raw: Path) -> str:
    return (f"{raw}: no Mindboggle101 subjects (expected <GROUP>_volumes/<subject>/{IMAGE} or "
            f"the <GROUP>_volumes_in_MNI152.tar.gz archives); get them with `regbench download "
            f"mindboggle101 --out {raw}`")


def prepare(raw: str | os.PathLike, out: str | os.PathLike,
            subjects: str | Sequence[str] | None = None, *,
            scale: float = MINDBOGGLE101.default_scale,
            splits: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Prepare Mindboggle-101 from ``raw`` into ``out``; returns ``out``.

    ``subjects``: IDs (``"OASIS-TRT-20-1,NKI-RS-22-3"`` or a list; default every subject found,
    or every subject of ``splits``). ``scale``: ``1 / k`` of the paper's 1 mm crop
    (:mod:`regbench.data.resolution`). ``splits``: train/val/test lists of one's own
    (:func:`~regbench.data.preparation.given_splits`) instead of the paper's groups.
    Archives in ``raw`` without their folder are extracted first. Every file is found and every
    header checked before any volume is read; ``out`` changes only when every subject
    succeeded.
    """
    raw, out = Path(raw), Path(out)
    factor = block_factor(scale)
    given = splits is not None
    chosen = choose_splits(parse_subjects(subjects), splits)
    if not raw.is_dir():
        raise InputError(_no_data(raw))
    extract_archives(raw)
    found = find_subjects(raw)
    if not found:
        raise InputError(_no_data(raw))
    if chosen is None:
        chosen = list(found)
    missing = [s for s in chosen if s not in found]
    if missing:
        also = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise InputError(f"{missing[0]} not found: expected RAW/<GROUP>_volumes/{missing[0]}/ "
                         f"with {IMAGE} and {DKT25} (or {DKT31}), RAW being {raw}{also}; "
                         f"`regbench download mindboggle101 --groups GROUP` fetches a group")
    groups = {s: found[s] for s in chosen}
    files = {s: subject_files(raw, groups[s], s) for s in chosen}
    for paths in files.values():  # cheap checks for all before the first volume is read
        for path in paths.values():
            check_header(path)

    shape, affine = crop_grid(1 / factor)
    dropped: dict[str, dict[str, int]] = {}
    with staged_dataset(out) as staging:
        for subject in tqdm(chosen, desc="Mindboggle101 crop", unit="subject"):
            image_path, labels_path = files[subject]["image"], files[subject]["labels"]
            image, _ = read_image(image_path)
            labels, _ = read_labels(labels_path)
            labels, dropped[subject] = clean_labels(labels, protocol.MINDBOGGLE101_LABELS,
                                                    protocol.DKT31_TO_DKT25)
            labels = crop(labels)
            if not labels.any():
                raise InputError(f"{labels_path}: no label of the protocol (DKT25 cortical IDs) "
                                 f"inside the crop; found only {sorted(dropped[subject])}")
            image, labels = downsample(scale_by_maximum(crop(image), image_path), labels, factor)
            write_subject(staging, subject, image, labels, affine)
            log.debug("%s: cropped; labels set to 0: %s", subject, dropped[subject])
        if splits is None:
            splits = subset_splits(chosen, protocol.MINDBOGGLE101_SPLITS)
            warn_without_test_pairs(splits)
        manifest = make_manifest(
            name=MINDBOGGLE101.name,
            source=("Mindboggle-101 <GROUP>_volumes_in_MNI152 (mindboggle.info, CC BY-NC-SA "
                    "3.0), FSL MNI152 1 mm grid cropped to 160x192x160, intensities divided by "
                    "the maximum of the cropped volume, DKT31 merged into DKT25"
                    + source_note(factor)),
            subjects=chosen,
            splits=splits,
            labels=protocol.MINDBOGGLE101_LABELS,
            regions=protocol.MINDBOGGLE101_REGIONS,
            shape=shape,
            affine=affine,
            resampling=resampling_record(factor),
            synthetic=False,
            scale=1 / factor,
            split_source="given" if given else "paper",
            raw=str(raw.absolute()),
            groups=groups,
            dropped_labels=dropped,
            files={s: {kind: str(path.absolute()) for kind, path in files[s].items()}
                   for s in chosen},
            versions=versions(),
        )
        write_manifest(staging, manifest)
    log.info("Mindboggle101: %d subject(s) prepared in %s", len(chosen), out)
    return out
