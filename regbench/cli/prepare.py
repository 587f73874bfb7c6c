"""``regbench datasets``, ``regbench prepare`` and ``regbench download``: the registered datasets
(:mod:`regbench.data.registry`), and the real ones in the suite's layout, one ``prepare``
sub-command per dataset."""

from __future__ import annotations

import argparse
import logging

from regbench.cli.arguments import whole_number
from regbench.data.dataset import SPLITS
from regbench.data.preparation import given_splits
from regbench.data.registry import Dataset, available_datasets, get_dataset
from regbench.io import InputError

log = logging.getLogger(__name__)


def add_commands(subparsers) -> None:
    """Add the ``datasets``, ``prepare`` and ``download`` sub-commands."""
    listing = subparsers.add_parser(
        "datasets", help="list the registered datasets",
        description="List every registered dataset (the suite's and those of the .py files in "
                    "the folders of REGBENCH_DATASET_PATH): name, title, the scales it allows "
                    "and its default, and the layouts its preparer reads.")
    listing.set_defaults(func=run_datasets)

    prepared = [d for d in available_datasets().values() if d.prepared]
    prepare = subparsers.add_parser(
        "prepare", help=f"prepare {' or '.join(d.title for d in prepared)} from their original "
                        "distributions",
        description=(
            "Read a dataset's original distribution in RAW and write OUT (images/, labels/, "
            "dataset.json) on the paper's 160x192x160 crop of the FSL MNI152 1 mm grid, "
            "intensities divided by their maximum, original label IDs. Every file is found and "
            "every header checked first; OUT changes only when every subject succeeded, "
            "dataset.json last."))
    datasets = prepare.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for dataset in prepared:
        reads = "; or ".join(f"{layout.reads} [{layout.name}]" for layout in dataset.layouts)
        parser = datasets.add_parser(
            dataset.name, help=dataset.summary,
            description=" ".join(filter(None, [reads and f"{dataset.title} from {reads}.",
                                               dataset.description or dataset.summary])))
        _common(parser, dataset)
        for option in dataset.options:
            kind = option.type if option.minimum is None else whole_number(option.minimum)
            parser.add_argument(f"--{option.name}", type=kind, default=option.default,
                                action="append" if option.repeatable else "store",
                                help=option.help)
        parser.set_defaults(func=run_prepare)

    download = subparsers.add_parser(
        "download", help="download a dataset's original distribution, or say how to get it",
        description=(
            "Download a dataset's archives into OUT (then run `regbench prepare DATASET --raw "
            "OUT ...`); archives already there are kept. A dataset that cannot be downloaded "
            "automatically (LPBA40) says how to get it."))
    download.add_argument("dataset", choices=[d.name for d in prepared])
    download.add_argument("--out", required=True, help="raw folder to download into")
    download.add_argument("--url", default=None,
                          help="archive URL instead of the dataset's own; {group} in it stands "
                               "for the group name, else it names one archive")
    download.add_argument("--sha256", default=None, help="expected SHA-256 of the one archive")
    download.add_argument("--groups", default=None,
                          help="comma-separated groups (Mindboggle101's default: OASIS-TRT-20,"
                               "NKI-RS-22,NKI-TRT-20; also MMRR-21, Extra-18)")
    download.set_defaults(func=run_download)


def _common(parser: argparse.ArgumentParser, dataset: Dataset) -> None:
    parser.add_argument("--raw", required=True, help="folder holding the original distribution")
    parser.add_argument("--out", required=True, help="output dataset folder")
    parser.add_argument("--subjects", default=None,
                        help=f"comma-separated subject IDs, e.g. {dataset.subject_example} "
                             "(default: all, or those of --train/--val/--test); the splits keep "
                             "the chosen subjects they hold")
    parser.add_argument("--scale", type=float, default=dataset.default_scale,
                        help="resolution: 1/k of the paper's 160x192x160 crop of 1 mm, e.g. 0.5 "
                             "for 80x96x80 of 2 mm (images area-averaged, labels the most "
                             f"frequent of each block; default: {dataset.default_scale:g})")
    for split in SPLITS:
        parser.add_argument(f"--{split}", default=None, metavar="IDS",
                            help=f"comma-separated subjects of the {split} split, instead of "
                                 "the paper's splits (give --test at least; the lists must be "
                                 "disjoint)")


def run_datasets(args: argparse.Namespace) -> int:
    datasets = list(available_datasets().values())
    header = ("name", "title", "scale (default)")
    rows = [(d.name, d.title, f"{d.scale_rule} ({d.default_scale:g})") for d in datasets]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()

    print(line(header))
    for dataset, row in zip(datasets, rows, strict=True):
        print(line(row))
        if dataset.layouts:
            print("    layouts: " + ", ".join(layout.name for layout in dataset.layouts))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    dataset = get_dataset(args.dataset)
    try:
        scale = dataset.check_scale(args.scale)
    except ValueError as err:
        raise InputError(str(err)) from None
    splits = given_splits(args.train, args.val, args.test)
    options = {option.name: getattr(args, option.name) for option in dataset.options}
    # the preparer's heavy imports (ANTs, nilearn) happen only now
    root = dataset.prepare_function()(args.raw, args.out, args.subjects, scale=scale,
                                      splits=splits, **options)
    log.info("%s dataset ready: %s", args.dataset, root)
    return 0


def run_download(args: argparse.Namespace) -> int:
    dataset = get_dataset(args.dataset)
    download = dataset.download_function()
    if download is None:
        raise InputError(dataset.how_to_get)
    root = download(args.out, url=args.url, sha256=args.sha256, groups=args.groups)
    log.info("%s archives in %s", dataset.name, root)
    return 0
