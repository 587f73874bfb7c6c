"""Export the suite's displacement fields for ANTs and ITK (``regbench export-field``).

The suite stores a field as displacements in voxels along the array axes (:func:`regbench.io.
write_field`): ``warped(i) = moving(i + u(i))`` for a voxel index ``i`` of the fixed grid. ITK
(and so ANTs, whose warps are ITK displacement field transforms) wants displacements in mm along
the axes of its physical space, which is LPS: ``T(x) = x + d(x)`` for a physical point ``x``,
with the vectors stored as they are, not converted from NIfTI's RAS. The fixed image's affine
``A`` maps a voxel index to a RAS point, ``x = M i + t``, so the voxel displacement ``u`` moves
a point by ``M u`` mm in RAS and by ``d = diag(-1, -1, 1) M u`` in LPS. The exported image keeps
the fixed image's affine (ITK turns it into its own LPS origin and direction), so

    antsApplyTransforms -d 3 -i moving.nii.gz -r fixed.nii.gz -t exported.nii.gz -o warped.nii.gz

pulls the moving image exactly as the suite does (a test checks this with
``ants.apply_transforms``). ITK holds no shear in an image's geometry: a grid whose affine
shears is refused rather than exported wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from regbench.io import (
    ITK_FIELD_INTENT_NAME,
    InputError,
    read_field,
    voxel_spacing,
    write_vector_image,
)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
"""Flips the first two world axes: NIfTI's RAS+ world to ITK's LPS+ world (and back)."""

ORTHOGONALITY_TOLERANCE = 1e-4
"""Largest off-diagonal of ``R^T R`` (``R``: the affine's unit direction columns) ITK accepts."""


def itk_displacement(field: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """ITK's displacement of a suite field: LPS millimetres along the physical axes.

    Args:
        field: ``(3, X, Y, Z)`` displacement in voxels along the array axes (pull convention).
        affine: The fixed grid's voxel -> RAS mm affine ``(4, 4)``.

    Returns:
        ``(3, X, Y, Z)`` float32: component ``c`` is the displacement along LPS axis ``c`` in mm.

    Raises:
        ValueError: If ``field`` is not ``(3, X, Y, Z)``, or the affine shears the grid (ITK
            cannot represent it, so ANTs would apply the field on another grid).
    """
    field = np.asarray(field, dtype=np.float64)
    if field.ndim != 4 or field.shape[0] != 3:
        raise ValueError(f"field must have shape (3, X, Y, Z), got {field.shape}")
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    directions = matrix / voxel_spacing(affine)
    gram = directions.T @ directions
    if np.abs(gram - np.eye(3)).max() > ORTHOGONALITY_TOLERANCE:
        raise ValueError("the grid's affine shears its voxel axes, which ITK's image geometry "
                         "cannot hold")
    return np.einsum("ij,j...->i...", RAS_TO_LPS @ matrix, field).astype(np.float32)


def export_itk_field(field_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write the ANTs/ITK version (:func:`itk_displacement`) of a suite ``field.nii.gz``.

    The output is a NIfTI vector image ``(X, Y, Z, 1, 3)`` on the field's grid, intent
    ``vector`` named :data:`~regbench.io.ITK_FIELD_INTENT_NAME`, written atomically.

    Args:
        field_path: A field in voxels (:func:`regbench.io.read_field`).
        out_path: Destination ending in ``.nii.gz`` or ``.nii`` (ANTs takes a NIfTI file as a
            displacement field); not the input itself.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: If the field is unreadable or on a sheared grid, or ``out_path`` is not a
            NIfTI name or is the input file.
    """
    field_path, out_path = Path(field_path), Path(out_path)
    if not out_path.name.endswith((".nii.gz", ".nii")):
        raise InputError(f"{out_path}: the export must end in .nii.gz or .nii (ANTs reads a "
                         "NIfTI file as a displacement field)")
    if out_path.resolve() == field_path.resolve():
        raise InputError(f"{out_path}: is the input field; choose another output name")
    field, affine = read_field(field_path)
    try:
        displacement = itk_displacement(field, affine)
    except ValueError as err:
        raise InputError(f"{field_path}: {err}") from None
    write_vector_image(out_path, displacement, affine, ITK_FIELD_INTENT_NAME)
    return out_path
