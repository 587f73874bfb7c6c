"""Reading and writing volumes and records, with validation and atomic writes.

Every reader raises :class:`InputError` naming the offending file and what is wrong with it.
Every writer goes through a temporary file in the destination folder followed by ``os.replace``,
so an interrupted write never leaves a half-written output behind. Written files get the usual
permissions (``0666`` less the umask), so results on a shared file system are readable by others.
A command that writes an output folder holds its :func:`output_lock`: one writer per folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from nibabel import orientations

log = logging.getLogger(__name__)

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference of two voxel-to-world affines (entry by entry, mm) still taken as one grid."""

LOCK_FILE = ".regbench.lock"
"""The lock file of an output folder (:func:`output_lock`), removed when the lock is released."""

_LEFTOVER = re.compile(r"^\..+\.[0-9a-z_]{8}\.tmp(\..*)?$")
"""Names of the temporaries of :func:`atomic_path` (``.NAME.XXXXXXXX.tmpSUFFIX``)."""


class InputError(ValueError):
    """Bad input data: the message names the file and the problem."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``suffix`` keeps the extension that writers such as nibabel use to pick the format
    (``.nii.gz``); it defaults to the destination's suffixes. The temporary is created with mode
    ``0666`` less the umask (``tempfile.mkstemp`` would make it ``0600``), and writers keep the
    mode of the file they overwrite, so the result has the usual permissions.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the path of a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    while True:
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, record: Any) -> None:
    write_text(path, json.dumps(record, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from None
    return digest.hexdigest()


def load_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read any image nibabel reads (NIfTI, Analyze ``.hdr/.img[.gz]``), with a clear error.

    Returns ``(data as stored, affine (4, 4))``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt or truncated files
        raise InputError(f"{path}: not a readable NIfTI/Analyze image ({err})") from None
    return data, img.affine


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D intensity volume as float32; reject NaN/Inf and constant volumes.

    Returns ``(array (X, Y, Z), affine (4, 4))``.
    """
    data, affine = load_nifti(path)
    return checked_image(_squeeze_3d(data, path), path), affine


def read_labels(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D integer label map; reject non-integer values and empty maps.

    Returns ``(array (X, Y, Z) int32, affine (4, 4))``.
    """
    data, affine = load_nifti(path)
    return checked_labels(_squeeze_3d(data, path), path), affine


def checked_image(data: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    """``data`` as float32 intensities; :class:`InputError` on complex values, NaN/Inf or a
    constant volume."""
    if np.iscomplexobj(data):
        raise InputError(f"{source}: complex-valued image; give real intensities (e.g. the "
                         "magnitude)")
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        raise InputError(f"{source}: {int(finite.size - finite.sum())} NaN or Inf intensities")
    if float(data.max()) == float(data.min()):
        raise InputError(f"{source}: constant image (every voxel is {float(data.max()):g})")
    return data


def checked_labels(data: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    """``data`` as int32 labels; :class:`InputError` on complex values, NaN/Inf, non-integers,
    labels beyond int32 or an empty map."""
    if np.iscomplexobj(data):
        raise InputError(f"{source}: complex-valued label map; give integer labels")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{source}: label map holds NaN or Inf values")
    limits = np.iinfo(np.int32)
    low, high = np.min(data), np.max(data)
    if low < limits.min or high > limits.max:
        raise InputError(f"{source}: label map holds labels beyond the 32-bit integers "
                         f"({low:g} to {high:g}; labels must lie from {limits.min} to "
                         f"{limits.max})")
    labels = np.rint(data).astype(np.int32)
    if not np.array_equal(labels, data):
        raise InputError(f"{source}: label map holds non-integer values")
    if not labels.any():
        raise InputError(f"{source}: label map is empty (every voxel is 0)")
    return labels


FIELD_INTENT_NAME = "disp_voxels"
"""NIfTI intent name of the suite's fields: displacements in voxels along the array axes."""

ITK_FIELD_INTENT_NAME = "disp_mm_lps"
"""NIfTI intent name of :mod:`regbench.export`'s fields: ITK displacements in LPS mm."""


def read_field(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a displacement field in voxel units, the suite's ``field.nii.gz``.

    NIfTI's vector layout ``(X, Y, Z, 1, 3)`` (what :func:`write_field` writes) and the plain
    ``(X, Y, Z, 3)`` of older files and other tools are both accepted. Component ``c`` is the
    displacement along array axis ``c`` in voxels, pull convention.

    Args:
        path: The NIfTI file.

    Returns:
        ``(field (3, X, Y, Z) float32, affine (4, 4))``.

    Raises:
        InputError: If the file is unreadable, not a 3-vector field, holds NaN or Inf, or is
            an ITK export of :mod:`regbench.export` (millimetres, not voxels).
    """
    data, affine = load_nifti(path)
    if _intent_name(path) == ITK_FIELD_INTENT_NAME:
        raise InputError(f"{path}: an ITK/ANTs export (LPS millimetres), not a field in voxels; "
                         "give the field.nii.gz it was exported from")
    data = data.astype(np.float32)
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim != 4 or data.shape[-1] != 3:
        raise InputError(f"{path}: expected a displacement field of shape (X, Y, Z, 1, 3) or "
                         f"(X, Y, Z, 3), got {data.shape}")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: displacement field holds NaN or Inf values")
    return np.ascontiguousarray(np.moveaxis(data, -1, 0)), affine


def write_image(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a 3D volume (float images as float32, integer labels as int16/int32)."""
    data = np.asarray(data)
    if np.issubdtype(data.dtype, np.integer):
        dtype = np.int16 if data.min() >= -32768 and data.max() <= 32767 else np.int32
        data = data.astype(dtype)
    else:
        data = data.astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def write_field(path: str | os.PathLike, field: np.ndarray, affine: np.ndarray) -> None:
    """Write a displacement field in voxel units as a NIfTI vector image (the suite's format).

    Args:
        path: Destination (``.nii.gz``); written atomically.
        field: ``(3, X, Y, Z)``, component ``c`` along array axis ``c`` in voxels.
        affine: The fixed image's voxel -> world affine ``(4, 4)``.

    Raises:
        ValueError: If ``field`` is not ``(3, X, Y, Z)``.
    """
    write_vector_image(path, field, affine, FIELD_INTENT_NAME)


def write_vector_image(path: str | os.PathLike, vectors: np.ndarray, affine: np.ndarray,
                       intent_name: str) -> None:
    """Write ``vectors (3, X, Y, Z)`` as NIfTI-1's vector layout ``(X, Y, Z, 1, 3)`` float32.

    The fifth axis holds the components and the intent is ``vector`` (NIFTI_INTENT_VECTOR), so
    ITK, ANTs, FSL and ITK-SNAP read one 3-vector per voxel, not a time series.

    Args:
        path: Destination (``.nii`` or ``.nii.gz``); written atomically.
        vectors: ``(3, X, Y, Z)`` components, first axis.
        affine: Voxel -> world affine ``(4, 4)``.
        intent_name: NIfTI ``intent_name`` (at most 15 characters) saying what the vectors are.

    Raises:
        ValueError: If ``vectors`` is not ``(3, X, Y, Z)``.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 4 or vectors.shape[0] != 3:
        raise ValueError(f"field must have shape (3, X, Y, Z), got {vectors.shape}")
    data = np.ascontiguousarray(np.moveaxis(vectors, 0, -1)[:, :, :, None, :])
    img = nib.Nifti1Image(data, affine)
    img.header.set_intent("vector", name=intent_name)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def check_same_grid(
    a_shape: tuple[int, ...],
    a_affine: np.ndarray,
    a_name: str | os.PathLike,
    b_shape: tuple[int, ...],
    b_affine: np.ndarray,
    b_name: str | os.PathLike,
    remedy: str = "resample it onto that grid",
) -> None:
    """Raise :class:`InputError` unless volume ``b`` lies on the grid of volume ``a``.

    One grid: the same orientation of the voxel axes, shape, voxel spacing, and voxel-to-world
    affine (within :data:`AFFINE_TOLERANCE_MM`). The one-line message names both files, and for
    an orientation mismatch both orientation codes (e.g. ``LAS`` vs ``RAS``); it ends with
    ``remedy``, what the user can do.
    """
    a_codes, b_codes = orientation(a_affine), orientation(b_affine)
    if a_codes != b_codes:
        raise InputError(f"{b_name}: orientation {b_codes} does not match {a_codes} of {a_name} "
                         f"(its voxel axes point elsewhere); {remedy}")
    a_shape, b_shape = tuple(int(s) for s in a_shape), tuple(int(s) for s in b_shape)
    if a_shape != b_shape:
        raise InputError(f"{b_name}: shape {b_shape} does not match {a_name} {a_shape}")
    a_spacing, b_spacing = voxel_spacing(a_affine), voxel_spacing(b_affine)
    if not np.allclose(a_spacing, b_spacing, atol=1e-3):
        # Plain floats: NumPy 2 would print np.float64(...) inside a tuple.
        a_mm, b_mm = (tuple(round(float(s), 4) for s in x) for x in (a_spacing, b_spacing))
        raise InputError(f"{b_name}: voxel spacing {b_mm} does not match {a_name} {a_mm}")
    if not np.allclose(a_affine, b_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        a_mm, b_mm = (tuple(round(float(s), 3) for s in np.asarray(x)[:3, 3])
                      for x in (a_affine, b_affine))
        raise InputError(f"{b_name}: voxel-to-world affine does not match {a_name}'s (both "
                         f"{a_codes}; origin {b_mm} vs {a_mm} mm); {remedy}")


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def orientation(affine: np.ndarray) -> str:
    """Orientation code of the voxel axes, e.g. ``"RAS"`` (axis 0 runs to the right, ...)."""
    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=float)))


def reorient_like(data: np.ndarray, affine: np.ndarray, target_affine: np.ndarray,
                  source: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Flip and permute the voxel axes of ``data`` into the orientation of ``target_affine``.

    No resampling: the voxels are the same, stored in another order, and the returned affine
    places each one where it was. Logs what it did, so that a reorientation is never silent.

    Args:
        data: ``(X, Y, Z)`` volume.
        affine: its voxel-to-world affine ``(4, 4)``.
        target_affine: affine whose orientation (e.g. ``RAS``) the result takes.
        source: the file ``data`` came from (for the log).

    Returns:
        ``(data (X', Y', Z') in the target orientation, its affine (4, 4))``.
    """
    before, after = orientation(affine), orientation(target_affine)
    if before == after:
        return data, np.asarray(affine, dtype=float)
    transform = orientations.ornt_transform(orientations.io_orientation(affine),
                                            orientations.io_orientation(target_affine))
    reoriented = np.ascontiguousarray(orientations.apply_orientation(data, transform))
    new_affine = np.asarray(affine, dtype=float) @ orientations.inv_ornt_aff(transform,
                                                                              data.shape)
    log.info("%s: reoriented from %s to %s (--reorient)", source, before, after)
    return reoriented, new_affine


def read_on_grid(path: str | os.PathLike, kind: Literal["image", "labels"],
                 shape: Sequence[int], affine: np.ndarray, grid_name: str | os.PathLike,
                 reorient: bool = False) -> np.ndarray:
    """Read an image or label map that must lie on a given grid (e.g. the fixed image's).

    Args:
        path: the file.
        kind: ``"image"`` (:func:`read_image`) or ``"labels"`` (:func:`read_labels`).
        shape, affine: the grid, ``(X, Y, Z)`` and its voxel-to-world affine ``(4, 4)``.
        grid_name: the file that defines the grid (for messages).
        reorient: first flip and permute the voxel axes into the grid's orientation
            (:func:`reorient_like`); otherwise another orientation is refused.

    Returns:
        The volume, ``(X, Y, Z)`` float32 (image) or int32 (labels).

    Raises:
        InputError: the file is unreadable or bad, or does not lie on the grid.
    """
    data, data_affine = (read_image if kind == "image" else read_labels)(path)
    if reorient:
        data, data_affine = reorient_like(data, data_affine, affine, path)
    check_same_grid(shape, affine, grid_name, data.shape, data_affine, path,
                    remedy="resample it onto that grid" if reorient else
                    "give --reorient to reorient it, or resample it onto that grid")
    return data


def make_folder(folder: str | os.PathLike, what: str) -> Path:
    """``folder``, created with its parents if missing.

    Raises:
        InputError: ``folder`` is a file, or cannot be created (naming it as ``what``).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; give another {what}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{folder}: cannot create the {what} ({err.strerror}); give a "
                         "writable one") from None
    return folder


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the one-writer lock of an output folder (made if missing) while the block runs.

    The lock is an ``fcntl.flock`` on ``folder/.regbench.lock``, removed on release; the kernel
    releases it when its process dies, even by ``SIGKILL``. Once it holds the lock, a process
    removes the temporaries that a killed writer left in the folder (:func:`atomic_path`).

    Raises:
        InputError: ``folder`` is a file or cannot be written, or another process holds its lock.
    """
    folder = make_folder(folder, "output folder")
    with exclusive(folder / LOCK_FILE, f"{folder}: another regbench process is writing "
                                       "into this folder; wait for it or give another one"):
        for leftover in folder.iterdir():
            if _LEFTOVER.match(leftover.name) and leftover.is_file():
                log.info("removing %s, left by an interrupted writer", leftover)
                leftover.unlink(missing_ok=True)
        yield folder


@contextlib.contextmanager
def exclusive(lock_path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (made, and removed on release).

    Raises :class:`InputError` with the message ``busy`` when another process holds it, and one
    naming the folder when the lock file cannot be made there.
    """
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise InputError(f"{lock_path.parent}: cannot write into this folder "
                             f"({err.strerror}); give a writable one") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise InputError(busy) from None
            raise
        # The previous holder may have removed the file between our open and our flock: then
        # we hold a lock on a file nobody else can find, and must take the lock again.
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def _squeeze_3d(data: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data


def _intent_name(path: str | os.PathLike) -> str:
    """The NIfTI ``intent_name`` of a readable image ('' for formats without one)."""
    header = nib.load(str(path)).header
    return str(header.get_intent()[2]) if hasattr(header, "get_intent") else ""
