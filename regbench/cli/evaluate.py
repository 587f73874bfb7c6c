"""``regbench evaluate`` and ``regbench evaluate-pairs``: score displacement fields written by any
method (see :mod:`regbench.evaluate`)."""

from __future__ import annotations

import argparse

from regbench.cli.arguments import add_dataset_pair, add_pair_choice, chosen_pairs
from regbench.data.dataset import Dataset
from regbench.evaluate import evaluate_dataset_pair, evaluate_paths
from regbench.io import output_lock
from regbench.runtime import set_threads

DATASET_FORM = ("data", "moving", "fixed")
PATH_FORM = ("moving_image", "moving_labels", "fixed_labels")


def add_commands(subparsers) -> None:
    """Add the ``evaluate`` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="warp a pair with a displacement field and write its metrics",
        description=(
            "Warp the moving image (trilinear) and moving labels (nearest) with FIELD (voxel "
            "units, pull convention, (X, Y, Z, 3) NIfTI) and write OUT/warped.nii.gz, "
            "OUT/warped_labels.nii.gz and OUT/metrics.json. Either --data/--moving/--fixed "
            "(a prepared dataset) or --moving-image/--moving-labels/--fixed-labels (files; "
            "labels and regions from --dataset-json, else every label is its own region)."))
    add_dataset_pair(parser)
    paths = parser.add_argument_group("path form")
    paths.add_argument("--moving-image", help="moving image NIfTI")
    paths.add_argument("--moving-labels", help="moving label map NIfTI")
    paths.add_argument("--fixed-labels", help="fixed label map NIfTI (defines the grid)")
    paths.add_argument("--dataset-json",
                       help="dataset.json whose labels and regions to score (default: every "
                            "label in the label maps is its own region)")
    paths.add_argument("--reorient", action="store_true",
                       help="flip and permute the voxel axes of the moving image and labels "
                            "into the fixed labels' orientation (e.g. LAS to RAS); without it "
                            "another orientation is refused")
    parser.add_argument("--field", required=True, help="displacement field NIfTI (X, Y, Z, 3)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--runtime", help="the method's runtime.json, merged into metrics.json")
    parser.add_argument("--slice-step", type=int, default=None,
                        help="slice thinning of the moving image the method registered "
                             "(default: the runtime record's, else 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of PyTorch's warping (default: PyTorch's default)")
    parser.set_defaults(func=run, evaluate_parser=parser)

    pairs = subparsers.add_parser(
        "evaluate-pairs", help="score many registered pairs of a dataset in one process",
        description="Score every pair folder OUT_ROOT/MOVING/FIXED/ (field.nii.gz and "
                    "runtime.json, as `regbench register-pairs` or an external method writes "
                    "them): metrics.json per pair, and the warped volumes of the pairs named by "
                    "--keep-volumes. The workflow's scoring stage: one job per run.")
    pairs.add_argument("--data", required=True, help="prepared dataset folder")
    pairs.add_argument("--out-root", required=True, help="run folder holding the pair folders")
    add_pair_choice(pairs)
    pairs.add_argument("--keep-volumes", nargs=2, action="append", default=[],
                       metavar=("MOVING", "FIXED"),
                       help="also write this pair's warped image and labels; repeatable")
    pairs.add_argument("--threads", type=int, default=None,
                       help="CPU threads of PyTorch's warping (default: PyTorch's default)")
    pairs.set_defaults(func=run_pairs, evaluate_parser=pairs)


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.evaluate_parser
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    set_threads(args.threads)
    given = {name for name in (*DATASET_FORM, *PATH_FORM, "dataset_json")
             if getattr(args, name) is not None}
    if given & set(DATASET_FORM) and (given & {*PATH_FORM, "dataset_json"} or args.reorient):
        parser.error("use either --data/--moving/--fixed or the --moving-image/--moving-labels/"
                     "--fixed-labels form, not both")
    if given & set(DATASET_FORM):
        if not set(DATASET_FORM) <= given:
            parser.error("the dataset form needs --data, --moving and --fixed")
        dataset = Dataset.load(args.data)
        with output_lock(args.out):
            evaluate_dataset_pair(dataset, args.moving, args.fixed, args.field, args.out,
                                  runtime=args.runtime, slice_step=args.slice_step)
        return 0
    if not set(PATH_FORM) <= given:
        parser.error("give --data/--moving/--fixed, or --moving-image, --moving-labels and "
                     "--fixed-labels")
    with output_lock(args.out):
        evaluate_paths(moving_image=args.moving_image, moving_labels=args.moving_labels,
                       fixed_labels=args.fixed_labels, field=args.field, out_dir=args.out,
                       dataset_json=args.dataset_json, runtime=args.runtime,
                       slice_step=args.slice_step, reorient=args.reorient)
    return 0


def run_pairs(args: argparse.Namespace) -> int:
    from regbench.evaluate import evaluate_pairs

    parser: argparse.ArgumentParser = args.evaluate_parser
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    set_threads(args.threads)
    dataset = Dataset.load(args.data)
    pairs = chosen_pairs(parser, args, dataset)
    unscored = sorted({tuple(p) for p in args.keep_volumes} - set(pairs))
    if unscored:
        parser.error(f"--keep-volumes {' '.join(unscored[0])}: not a pair this command scores")
    evaluate_pairs(dataset, pairs, args.out_root, {tuple(p) for p in args.keep_volumes})
    return 0
