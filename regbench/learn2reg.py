"""The Learn2Reg displacement-field format: read a folder of Learn2Reg fields into the suite's
pair folders, and write the suite's fields as one.

Learn2Reg (and LUMIR, its 2024 brain task) scores a submission as a folder of one file per pair,
``disp_<fixed>_<moving>.nii.gz`` (or ``.npz`` holding ``arr_0``): the displacement on the fixed
grid as an ``(X, Y, Z, 3)`` array, component ``c`` along array axis ``c`` in voxels, which pulls
the moving image: their evaluation warps the moving labels with
``map_coordinates(moving, identity + disp, order=0)`` (MDL-UzL/L2R ``evaluation/utils.py`` and
JHU-MedImage-Reg/LUMIR_L2R ``L2R_LUMIR_Eval/evaluation.py``, which also takes ``(3, X, Y, Z)``).
That is the suite's own convention (:mod:`regbench.transforms`), so the values pass unchanged:
only the layout and the names differ. The NIfTI affine of a Learn2Reg field is not used by
Learn2Reg; the suite writes the fixed image's and reads the dataset's.

Learn2Reg names subjects by their 4-digit case numbers; the suite uses its own subject IDs in
the same pattern, so the files of a pair are found without parsing names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from regbench.data.dataset import Dataset
from regbench.io import (
    InputError,
    atomic_path,
    file_sha256,
    make_folder,
    read_field,
    write_field,
    write_json,
)
from regbench.naming import FIELD_FILE, RUNTIME_FILE
from regbench.runs import claim_run, pair_folder, read_run

log = logging.getLogger(__name__)

SUFFIXES = (".nii.gz", ".npz")
"""The file types Learn2Reg's evaluation reads, in the order it looks for them."""


def learn2reg_stem(moving: str, fixed: str) -> str:
    """Learn2Reg's name of the field of a pair, without suffix: ``disp_<fixed>_<moving>``."""
    return f"disp_{fixed}_{moving}"


def read_learn2reg_field(path: str | os.PathLike, shape: Sequence[int]) -> np.ndarray:
    """One Learn2Reg displacement file as the suite's field ``(3, X, Y, Z)`` float32 (voxels).

    Args:
        path: ``.nii.gz`` (or ``.nii``) of ``(X, Y, Z, 3)``, Learn2Reg's layout, or
            ``(X, Y, Z, 1, 3)``, the suite's (:func:`regbench.io.read_field`, which refuses
            components first); or ``.npz`` (array ``arr_0``), ``(X, Y, Z, 3)`` or
            ``(3, X, Y, Z)``.
        shape: ``(X, Y, Z)`` of the fixed grid.

    Returns:
        The field, components first.

    Raises:
        InputError: If the file is unreadable, holds NaN or Inf, or fits neither layout.
    """
    path = Path(path)
    shape = tuple(int(s) for s in shape)
    if path.name.endswith(".npz"):
        try:
            with np.load(path) as archive:
                data = np.asarray(archive["arr_0"], dtype=np.float32)
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path}: not a Learn2Reg .npz with an array arr_0 ({err})") from None
    else:
        data = np.moveaxis(read_field(path)[0], 0, -1)  # read_field checks file and values
    if data.shape == (*shape, 3):
        data = np.moveaxis(data, -1, 0)
    elif data.shape != (3, *shape):
        raise InputError(f"{path}: displacement of shape {data.shape} fits neither "
                         f"{(*shape, 3)} nor {(3, *shape)} of the fixed grid")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: displacement field holds NaN or Inf values")
    return np.ascontiguousarray(data, dtype=np.float32)


def find_learn2reg_file(folder: str | os.PathLike, moving: str, fixed: str) -> Path:
    """The file of a pair in a Learn2Reg folder (``.nii.gz`` first, as Learn2Reg looks).

    Raises:
        InputError: If the folder has no file for the pair.
    """
    stem = learn2reg_stem(moving, fixed)
    for suffix in SUFFIXES:
        path = Path(folder) / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise InputError(f"{folder}: no Learn2Reg field {stem}.nii.gz (or .npz) for moving "
                     f"{moving!r} and fixed {fixed!r}")


def import_learn2reg(folder: str | os.PathLike, dataset: Dataset,
                     pairs: Sequence[tuple[str, str]], out_root: str | os.PathLike,
                     method: str, label: str | None = None,
                     replace_stale: bool = False) -> list[Path]:
    """Turn a folder of Learn2Reg fields into the suite's pair folders of one run.

    Every pair's file is found and read, and the run folder claimed (:func:`regbench.runs.
    claim_run`: the setup is the method, the label and the Learn2Reg folder), before anything
    is written. Each pair folder ``out_root/{moving}/{fixed}/`` then gets ``field.nii.gz`` and a
    ``runtime.json`` naming ``method`` (and ``label``), the pair and its data (fingerprint, as
    the suite's registration records it) and the hash of the field file written, with time and
    device ``null``: Learn2Reg files do not say them. The scores of an earlier field there are
    removed.

    Args:
        folder: The Learn2Reg folder.
        dataset: The prepared dataset whose grid the fields are on.
        pairs: ``(moving, fixed)`` subject IDs.
        out_root: The run folder, e.g. ``results/demo/pairs/main/<method>``.
        method: The run's method name.
        label: How tables name it (default: the method name).
        replace_stale: Delete the pairs of another setup in ``out_root`` (else they are
            refused).

    Returns:
        The ``field.nii.gz`` paths written, in pair order.

    Raises:
        InputError: If the folder is missing, lacks a pair's file, or a file is bad; or
            ``out_root`` holds pairs of another setup (without ``replace_stale``).
    """
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: not a folder")
    fields = [read_learn2reg_field(find_learn2reg_file(folder, m, f), dataset.shape)
              for m, f in pairs]
    setup = {"method": method, "label": label or method,
             "options": {"learn2reg_folder": str(folder)}, "slice_step": 1}
    written = []
    with claim_run(out_root, setup, replace_stale):
        for (moving, fixed), field in zip(pairs, fields, strict=True):
            with pair_folder(out_root, moving, fixed) as folder_of_pair:
                write_field(folder_of_pair / FIELD_FILE, field, dataset.affine)
                write_json(folder_of_pair / RUNTIME_FILE,
                           {**setup, "time_s": None, "device": None, "moving": moving,
                            "fixed": fixed,
                            "data_fingerprint": dataset.fingerprint([moving, fixed]),
                            "field_sha256": file_sha256(folder_of_pair / FIELD_FILE)})
            written.append(folder_of_pair / FIELD_FILE)
    log.info("imported %d Learn2Reg fields of %s from %s into %s", len(written), method, folder,
             out_root)
    return written


def export_learn2reg(run_root: str | os.PathLike, pairs: Sequence[tuple[str, str]],
                     out_dir: str | os.PathLike) -> list[Path]:
    """Write the suite's fields of a run as a Learn2Reg folder.

    Args:
        run_root: The run folder holding ``{moving}/{fixed}/field.nii.gz``.
        pairs: ``(moving, fixed)`` subject IDs.
        out_dir: The Learn2Reg folder (made if missing).

    Returns:
        The ``disp_<fixed>_<moving>.nii.gz`` files written: ``(X, Y, Z, 3)`` float32 in voxels,
        with the field's affine.

    Raises:
        InputError: If ``out_dir`` is a file or cannot be made; a pair's field or runtime record
            is missing, or the run folder holds the pairs of several runs or a pair folder
            another pair's field (:func:`regbench.runs.read_run`, checked for every pair before
            anything is written); ``out_dir`` holds Learn2Reg files (``disp_*``) this export
            does not write, which would join its fields as one submission; or a field is
            unreadable (the pairs before it are written).
    """
    read_run(run_root, pairs)
    sources = {(moving, fixed): Path(run_root) / moving / fixed / FIELD_FILE
               for moving, fixed in pairs}
    names = {f"{learn2reg_stem(moving, fixed)}.nii.gz" for moving, fixed in pairs}
    if Path(out_dir).is_dir():
        # A Learn2Reg folder is scored (and imported) as one submission: a field another export
        # left there would join this run's fields without a word.
        others = sorted(path.name for suffix in SUFFIXES
                        for path in Path(out_dir).glob(f"disp_*{suffix}")
                        if path.name not in names)
        if others:
            raise InputError(
                f"{out_dir}: holds {len(others)} Learn2Reg file(s) this export does not write "
                f"({others[0]}{', ...' if len(others) > 1 else ''}), of another export or "
                "pair: the folder would mix them with this run's fields; give an empty or new "
                "--out, or remove them")
    out_dir = make_folder(out_dir, "Learn2Reg folder")
    written = []
    for (moving, fixed), source in sources.items():
        field, affine = read_field(source)
        image = nib.Nifti1Image(np.ascontiguousarray(np.moveaxis(field, 0, -1)), affine)
        image.header.set_xyzt_units("mm")
        path = out_dir / f"{learn2reg_stem(moving, fixed)}.nii.gz"
        with atomic_path(path) as tmp:
            nib.save(image, str(tmp))
        written.append(path)
    log.info("exported %d fields of %s to %s", len(written), run_root, out_dir)
    return written
