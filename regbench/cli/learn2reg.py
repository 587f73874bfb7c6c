"""``regbench learn2reg-import`` and ``learn2reg-export``: the Learn2Reg displacement-field
format (:mod:`regbench.learn2reg`)."""

from __future__ import annotations

import argparse

from regbench.cli.arguments import add_pair_choice, chosen_pairs
from regbench.data.dataset import Dataset
from regbench.learn2reg import export_learn2reg, import_learn2reg


def add_commands(subparsers) -> None:
    """Add the ``learn2reg-import`` and ``learn2reg-export`` sub-commands."""
    importer = subparsers.add_parser(
        "learn2reg-import",
        help="turn a folder of Learn2Reg displacement fields into a run's pair folders",
        description=(
            "Read FOLDER/disp_<fixed>_<moving>.nii.gz (or .npz: arr_0) of each pair, Learn2Reg's "
            "format: (X, Y, Z, 3) voxel displacements on the fixed grid, pulling the moving "
            "image. Write OUT_ROOT/<moving>/<fixed>/field.nii.gz and runtime.json (method "
            "METHOD, time and device null), which `regbench evaluate-pairs` then scores. Every "
            "file is checked before anything is written. OUT_ROOT is a run folder: pairs of "
            "another method, label or Learn2Reg folder there are refused (see --replace-stale)."))
    importer.add_argument("folder", metavar="FOLDER", help="folder of Learn2Reg fields")
    importer.add_argument("--data", required=True, help="prepared dataset folder")
    importer.add_argument("--out-root", required=True, help="run folder to write the pairs into")
    importer.add_argument("--method", required=True, help="the run's method name")
    importer.add_argument("--label", help="name in tables and figures (default: METHOD)")
    importer.add_argument("--replace-stale", action="store_true",
                          help="when OUT_ROOT holds pairs of another registration setup "
                               "(another method, label or Learn2Reg folder), delete them and "
                               "import afresh (the workflow does; without it such a folder is "
                               "refused)")
    add_pair_choice(importer)
    importer.set_defaults(func=run_import, learn2reg_parser=importer)

    exporter = subparsers.add_parser(
        "learn2reg-export",
        help="write a run's fields as a Learn2Reg folder",
        description=(
            "Write the field.nii.gz of each pair of RUN_ROOT (the suite's run folder) as "
            "OUT/disp_<fixed>_<moving>.nii.gz, Learn2Reg's format: (X, Y, Z, 3) float32 voxel "
            "displacements, the same values."))
    exporter.add_argument("run_root", metavar="RUN_ROOT",
                          help="run folder holding <moving>/<fixed>/field.nii.gz")
    exporter.add_argument("--data", required=True, help="prepared dataset folder (its pairs)")
    exporter.add_argument("--out", required=True, help="Learn2Reg folder to write")
    add_pair_choice(exporter)
    exporter.set_defaults(func=run_export, learn2reg_parser=exporter)


def run_import(args: argparse.Namespace) -> int:
    from regbench.methods import available_methods

    parser: argparse.ArgumentParser = args.learn2reg_parser
    for name, cls in available_methods().items():
        if args.method == name or (args.label or args.method) == cls.label:
            parser.error(f"--method {args.method}"
                         + (f" --label {args.label!r}" if args.label else "")
                         + f": the name or label of the suite's method {name!r} ({cls.label}); "
                         "an import needs its own, or its rows and the suite's are one in the "
                         "tables")
    dataset = Dataset.load(args.data)
    pairs = chosen_pairs(parser, args, dataset)
    for path in import_learn2reg(args.folder, dataset, pairs, args.out_root, args.method,
                                 args.label, replace_stale=args.replace_stale):
        print(path)
    return 0


def run_export(args: argparse.Namespace) -> int:
    dataset = Dataset.load(args.data)
    pairs = chosen_pairs(args.learn2reg_parser, args, dataset)
    for path in export_learn2reg(args.run_root, pairs, args.out):
        print(path)
    return 0
