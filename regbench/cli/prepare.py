"""``regbench prepare`` and ``regbench download``: real datasets in the suite's layout
(:mod:`regbench.data.lpba40`, :mod:`regbench.data.mindboggle101`)."""

from __future__ import annotations

import argparse
import logging

from regbench.cli.arguments import whole_number
from regbench.data.dataset import SPLITS
from regbench.data.preparation import given_splits
from regbench.io import InputError

log = logging.getLogger(__name__)


def add_commands(subparsers) -> None:
    """Add the ``prepare`` and ``download`` sub-commands."""
    prepare = subparsers.add_parser(
        "prepare", help="prepare LPBA40 or Mindboggle101 from their original distributions",
        description=(
            "Read a dataset's original distribution in RAW and write OUT (images/, labels/, "
            "dataset.json) on the paper's 160x192x160 crop of the FSL MNI152 1 mm grid, "
            "intensities divided by their maximum, original label IDs. Every file is found and "
            "every header checked first; OUT changes only when every subject succeeded, "
            "dataset.json last."))
    datasets = prepare.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    lpba40 = datasets.add_parser(
        "lpba40", help="LPBA40 (LONI, manual download): affine to MNI152, then crop",
        description=(
            "LPBA40 from LONI's delineation-space download (Analyze .hdr + .img[.gz], searched "
            "under RAW as .../delineation_space/S01/...). Voxel axes are read as RAS; each "
            "subject is registered affinely (ANTs) to nilearn's MNI152 brain template on the "
            "FSL 1 mm grid, then cropped. Split: S01-S30 train, S31-S40 test."))
    _common(lpba40, "S01,S31")
    lpba40.add_argument("--threads", type=whole_number(1), default=None,
                        help="ITK threads for ANTs (default: 1; with more, ANTs' sampled "
                             "metric makes reruns differ slightly)")
    lpba40.add_argument("--seed", type=whole_number(0), default=0,
                        help="seed of ANTs' metric sampling (default: 0)")
    lpba40.set_defaults(func=run_prepare)
    mindboggle = datasets.add_parser(
        "mindboggle101", help="Mindboggle101 MNI152 volumes: crop",
        description=(
            "Mindboggle101 from the <GROUP>_volumes_in_MNI152 archives (unpacked as "
            "RAW/<GROUP>_volumes/<subject>/, or the .tar.gz files themselves in RAW, which are "
            "extracted). Split: train NKI-RS-22 + NKI-TRT-20, test OASIS-TRT-20; MMRR-21 and "
            "Extra-18 subjects are prepared when present but belong to no split."))
    _common(mindboggle, "OASIS-TRT-20-1,NKI-RS-22-3")
    mindboggle.set_defaults(func=run_prepare)

    download = subparsers.add_parser(
        "download", help="download Mindboggle101's MNI152 volume archives",
        description=(
            "Download <GROUP>_volumes_in_MNI152.tar.gz archives into OUT (then run `regbench "
            "prepare mindboggle101 --raw OUT ...`). Archives already there are kept. LPBA40 "
            "cannot be downloaded automatically; `regbench download lpba40` says how to get it."))
    download.add_argument("dataset", choices=("mindboggle101", "lpba40"))
    download.add_argument("--out", required=True, help="raw folder to download into")
    download.add_argument("--url", default=None,
                          help="archive URL instead of mindboggle.info's; {group} in it stands "
                               "for the group name, else it names one archive")
    download.add_argument("--sha256", default=None, help="expected SHA-256 of the one archive")
    download.add_argument("--groups", default=None,
                          help="comma-separated groups (default: OASIS-TRT-20,NKI-RS-22,"
                               "NKI-TRT-20; also MMRR-21, Extra-18)")
    download.set_defaults(func=run_download)


def _common(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--raw", required=True, help="folder holding the original distribution")
    parser.add_argument("--out", required=True, help="output dataset folder")
    parser.add_argument("--subjects", default=None,
                        help=f"comma-separated subject IDs, e.g. {example} (default: all, or "
                             "those of --train/--val/--test); the splits keep the chosen "
                             "subjects they hold")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="resolution: 1/k of the paper's 160x192x160 crop of 1 mm, e.g. 0.5 "
                             "for 80x96x80 of 2 mm (images area-averaged, labels the most "
                             "frequent of each block; default: 1)")
    for split in SPLITS:
        parser.add_argument(f"--{split}", default=None, metavar="IDS",
                            help=f"comma-separated subjects of the {split} split, instead of "
                                 "the paper's splits (give --test at least; the lists must be "
                                 "disjoint)")


def run_prepare(args: argparse.Namespace) -> int:
    splits = given_splits(args.train, args.val, args.test)
    if args.dataset == "lpba40":
        from regbench.data import lpba40  # heavy imports (ANTs, nilearn) only when needed

        root = lpba40.prepare(args.raw, args.out, args.subjects, threads=args.threads,
                              seed=args.seed, scale=args.scale, splits=splits)
    else:
        from regbench.data import mindboggle101

        root = mindboggle101.prepare(args.raw, args.out, args.subjects, scale=args.scale,
                                     splits=splits)
    log.info("%s dataset ready: %s", args.dataset, root)
    return 0


def run_download(args: argparse.Namespace) -> int:
    if args.dataset == "lpba40":
        from regbench.data.lpba40 import HOW_TO_GET

        raise InputError(HOW_TO_GET)
    from regbench.data import mindboggle101

    root = mindboggle101.download(args.out, url=args.url, sha256=args.sha256, groups=args.groups)
    log.info("mindboggle101 archives in %s", root)
    return 0
