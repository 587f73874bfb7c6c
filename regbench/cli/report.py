"""Report commands: ``aggregate``, ``tables``, ``figures``, ``figure-pyramid``, ``figure-warped``,
``figure-learning-curves``.

Everything reads per-pair files (``metrics.json``, ``per_pair.csv``, ``warped.nii.gz``); see
:mod:`regbench.reports.tables` and :mod:`regbench.reports.figures` for what each output shows.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from regbench.io import InputError
from regbench.naming import CONVENTIONS, MANIFEST, TABLE_KINDS, TABLE_NEEDS, WARPED_FILE

log = logging.getLogger(__name__)

CONVENTION_CHOICES = (*CONVENTIONS, "both")


def add_commands(subparsers) -> None:
    """Add the report sub-commands."""
    parser = subparsers.add_parser(
        "aggregate", help="collect metrics.json records into one per_pair.csv",
        description="Read metrics.json files (given, and/or found below --from-dir) into a "
                    "per-pair table: one row per registered pair (columns: docs/contracts.md).")
    parser.add_argument("metrics", nargs="*", type=Path, help="metrics.json files")
    parser.add_argument("--from-dir", "--pairs", dest="from_dir", action="append", type=Path,
                        default=[], metavar="DIR",
                        help="also every **/metrics.json below DIR (repeatable)")
    parser.add_argument("--experiment", required=True, help="experiment name for the rows")
    parser.add_argument("--dataset", help="expected dataset (checked; fills records without one)")
    parser.add_argument("--out", required=True, type=Path, help="per_pair.csv to write")
    parser.set_defaults(func=run_aggregate)

    parser = subparsers.add_parser(
        "tables", help="camera-ready tables (CSV, Markdown, LaTeX) with significance tests",
        description="Write the tables of one kind from per_pair.csv files: main -> "
                    "table1_{faim,merged}.{csv,md,tex} + table1_stats.csv (one dataset); "
                    "ablation -> ablation.* + ablation_stats.csv; slice_spacing -> "
                    "slice_spacing.* + slice_spacing_stats.csv (columns per dataset and "
                    "convention).")
    _per_pair_arguments(parser)
    parser.add_argument("--kind", choices=TABLE_KINDS, default=TABLE_KINDS[0])
    parser.add_argument("--convention", choices=CONVENTION_CHOICES, default="both",
                        help="region Dice convention(s) (default both)")
    parser.add_argument("--equivalence-margin", type=float, default=None, metavar="DICE",
                        help="margin of the equivalence tests (TOST) in the stats and pairwise "
                             "CSVs, in mean region Dice (default: EQUIVALENCE_MARGIN of "
                             "regbench.reports.stats)")
    parser.set_defaults(func=run_tables)

    parser = subparsers.add_parser(
        "figures", help="Fig. 4 box plots, Dice against time and against regularity",
        description="Write fig4_<convention>.{png,pdf} (per-region Dice box plots), "
                    "dice_time_<convention>.{png,pdf} and dice_regularity_<convention>.{png,pdf} "
                    "(Dice against SD log J and NDV) from per_pair.csv files of one dataset.")
    _per_pair_arguments(parser)
    parser.add_argument("--convention", choices=CONVENTION_CHOICES, default="both")
    parser.set_defaults(func=run_figures)

    parser = subparsers.add_parser(
        "figure-pyramid", help="Fig. 2: a trained network's pyramid fields on one pair",
        description="Run the network of a trained checkpoint on one pair and draw each "
                    "pyramid level's accumulated field and the moving image warped by it.")
    _pair_arguments(parser)
    parser.add_argument("--checkpoint", required=True, type=Path, help="model.pt of the trainer")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    parser.set_defaults(func=run_figure_pyramid)

    parser = subparsers.add_parser(
        "figure-warped", help="Fig. 3: warped images of several methods on one pair",
        description="Draw the moving, fixed and each method's warped.nii.gz with |warped - "
                    "fixed| below.")
    _pair_arguments(parser)
    parser.add_argument("--method-dir", action="append", required=True, metavar="LABEL=DIR",
                        help="a method's label and its per-pair folder holding warped.nii.gz "
                             "(repeatable)")
    parser.set_defaults(func=run_figure_warped)

    parser = subparsers.add_parser(
        "figure-learning-curves", help="validation Dice and training loss of trained models",
        description="Draw each model's validation Dice (validation.csv) and running-mean "
                    "training loss (loss.csv) against step and training time.")
    parser.add_argument("--model-dir", action="append", required=True, metavar="LABEL=DIR",
                        help="a model's label and its training folder (repeatable)")
    parser.add_argument("--out-stem", required=True, type=Path,
                        help="output path without extension (.png and .pdf are written)")
    parser.add_argument("--title", help="figure title")
    parser.set_defaults(func=run_figure_learning_curves)


def _per_pair_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--per-pair", action="append", required=True, type=Path,
                        metavar="CSV", help="per_pair.csv (repeatable)")
    parser.add_argument("--dataset", help="use only this dataset's rows")
    parser.add_argument("--out-dir", required=True, type=Path, help="output folder")


def _pair_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    parser.add_argument("--moving", required=True, help="moving subject ID")
    parser.add_argument("--fixed", required=True, help="fixed subject ID")
    parser.add_argument("--out-stem", required=True, type=Path,
                        help="output path without extension (.png and .pdf are written)")
    parser.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=2,
                        help="voxel axis across which the middle slice is shown (default 2)")


def _conventions(choice: str) -> tuple[str, ...]:
    return CONVENTIONS if choice == "both" else (choice,)


def _load_per_pair(args: argparse.Namespace) -> pd.DataFrame:
    from regbench.reports.aggregate import read_per_pair

    table = read_per_pair(args.per_pair)
    if args.dataset is not None:
        table = table[table["dataset"] == args.dataset]
        if table.empty:
            raise InputError(f"{', '.join(map(str, args.per_pair))}: no rows of dataset "
                             f"{args.dataset!r}")
    return table.reset_index(drop=True)


def run_aggregate(args: argparse.Namespace) -> int:
    from regbench.reports.aggregate import aggregate, find_metrics

    files = list(args.metrics)
    for folder in args.from_dir:
        found = find_metrics(folder)
        if not found:
            raise InputError(f"{folder}: no metrics.json below it")
        files += found
    if not files:
        raise InputError("no metrics.json given: name files or use --from-dir DIR")
    files = list(dict.fromkeys(path.resolve() for path in files))
    aggregate(files, args.out, experiment=args.experiment, dataset=args.dataset)
    return 0


def run_tables(args: argparse.Namespace) -> int:
    from regbench.reports.stats import EQUIVALENCE_MARGIN
    from regbench.reports.tables import make_tables

    margin = EQUIVALENCE_MARGIN if args.equivalence_margin is None else args.equivalence_margin
    if not 0 < margin < 1:
        raise InputError(f"--equivalence-margin {margin}: must be between 0 and 1 (Dice)")
    per_pair = _load_per_pair(args)
    needed = TABLE_NEEDS.get(args.kind, ())
    if needed and not set(per_pair["method"]) & set(needed):
        found = ", ".join(sorted(set(per_pair["method"])))
        raise InputError(f"{', '.join(map(str, args.per_pair))}: no run of the {args.kind} "
                         f"({', '.join(needed)}), only {found}; give the per_pair.csv of the "
                         f"{args.kind} experiment")
    if args.kind == "slice_spacing" and not (per_pair["slice_step"] > 1).any():
        raise InputError(f"{', '.join(map(str, args.per_pair))}: no run at a slice step above "
                         "1, so a slice-spacing table would show nothing of slice spacing; give "
                         "the per_pair.csv of the slice_spacing experiment")
    for path in make_tables(per_pair, args.kind, args.out_dir, _conventions(args.convention),
                            margin, source=", ".join(map(str, args.per_pair))):
        print(path)
    return 0


def run_figures(args: argparse.Namespace) -> int:
    from regbench.reports.figures import (
        plot_dice_vs_regularity,
        plot_dice_vs_time,
        plot_region_boxplots,
    )

    table = _load_per_pair(args)
    datasets = list(dict.fromkeys(table["dataset"]))
    if len(datasets) != 1:
        raise InputError(f"per-pair rows of several datasets {datasets}: choose one with "
                         "--dataset")
    import matplotlib.pyplot as plt

    for convention in _conventions(args.convention):
        for stem, plot in ((f"fig4_{convention}", plot_region_boxplots),
                           (f"dice_time_{convention}", plot_dice_vs_time),
                           (f"dice_regularity_{convention}", plot_dice_vs_regularity)):
            plt.close(plot(table, convention, args.out_dir / stem))
            print(f"{args.out_dir / stem}.png\n{args.out_dir / stem}.pdf")
    return 0


def run_figure_pyramid(args: argparse.Namespace) -> int:
    from regbench.data.dataset import Dataset
    from regbench.methods import load_trained
    from regbench.reports.figures import plot_pyramid
    from regbench.reports.pyramid import pyramid_fields
    from regbench.runtime import pick_device, set_threads

    set_threads(args.threads)
    dataset = Dataset.load(args.data)
    moving, fixed = dataset.image(args.moving), dataset.image(args.fixed)
    method = load_trained(args.checkpoint, pick_device(args.device))
    log.info("pyramid of %s on %s -> %s", method.name, args.moving, args.fixed)
    fields, names = pyramid_fields(method, moving, fixed)
    plot_pyramid(moving, fixed, fields, args.out_stem, slice_axis=args.slice_axis,
                 level_names=names)
    print(f"{args.out_stem}.png\n{args.out_stem}.pdf")
    return 0


def run_figure_warped(args: argparse.Namespace) -> int:
    from regbench.data.dataset import Dataset
    from regbench.io import check_same_grid, read_image
    from regbench.reports.figures import plot_warped_comparison

    dataset = Dataset.load(args.data)
    warped = {}
    for label, folder in _labelled_folders(args.method_dir, "--method-dir").items():
        path = folder / WARPED_FILE
        image, affine = read_image(path)
        check_same_grid(dataset.shape, dataset.affine, dataset.root / MANIFEST,
                        image.shape, affine, path)
        warped[label] = image
    plot_warped_comparison(dataset.image(args.moving), dataset.image(args.fixed), warped,
                           args.out_stem, slice_axis=args.slice_axis)
    print(f"{args.out_stem}.png\n{args.out_stem}.pdf")
    return 0


def run_figure_learning_curves(args: argparse.Namespace) -> int:
    from regbench.reports.learning_curves import plot_learning_curves, read_learning_curves
    from regbench.reports.style import label_colors

    models = _labelled_folders(args.model_dir, "--model-dir")
    loss, validation = read_learning_curves(models)
    plot_learning_curves(loss, validation, label_colors(list(models)), args.out_stem,
                         title=args.title)
    print(f"{args.out_stem}.png\n{args.out_stem}.pdf")
    return 0


def _labelled_folders(items: list[str], flag: str) -> dict[str, Path]:
    """``LABEL=DIR`` arguments as ``{label: folder}``; :class:`InputError` on a malformed or
    repeated label."""
    folders: dict[str, Path] = {}
    for item in items:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise InputError(f"{flag} {item!r}: expected LABEL=DIR")
        if label in folders:
            raise InputError(f"{flag} {item!r}: label {label!r} given twice")
        folders[label] = Path(folder)
    return folders
