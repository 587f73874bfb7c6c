"""``regbench export-field``: a suite field as a displacement ANTs and ITK apply directly
(:mod:`regbench.export`)."""

from __future__ import annotations

import argparse

from regbench.export import export_itk_field


def add_commands(subparsers) -> None:
    """Add the ``export-field`` sub-command."""
    parser = subparsers.add_parser(
        "export-field",
        help="export a field.nii.gz for ANTs/ITK (LPS mm displacement)",
        description=(
            "Convert FIELD (the suite's field.nii.gz: voxels along the array axes, pull "
            "convention) into ITK's displacement field: mm along the LPS physical axes, on "
            "FIELD's grid, as a NIfTI vector image (X, Y, Z, 1, 3). `antsApplyTransforms -d 3 "
            "-i MOVING -r FIXED -t OUT -o WARPED` (or ants.apply_transforms) then warps like "
            "the suite. Refuses a grid whose affine shears (ITK cannot hold it)."))
    parser.add_argument("field", metavar="FIELD", help="the suite's displacement field NIfTI")
    parser.add_argument("--out", required=True, help="output NIfTI (.nii.gz or .nii)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(export_itk_field(args.field, args.out))
    return 0
