"""``regbench demo-data``: write the synthetic demo dataset (:mod:`regbench.data.demo`)."""

from __future__ import annotations

import argparse
import logging

from regbench.data.registry import DEMO

log = logging.getLogger(__name__)


def add_commands(subparsers) -> None:
    """Add the ``demo-data`` sub-command."""
    parser = subparsers.add_parser(
        "demo-data",
        help="make the synthetic demo dataset (offline, from the MNI152 template)",
        description=(
            "Write a SYNTHETIC labelled population to OUT (images/, labels/, dataset.json): the "
            "MNI152 template shipped with nilearn under random smooth diffeomorphic deformations "
            "and small affines, with bias field, contrast change and noise, and a 14-label atlas "
            "(the 7 LPBA40 region names, left and right). No download. dataset.json is written "
            "last; its presence marks a complete dataset."))
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--subjects", type=int, default=16,
                        help="number of subjects, >= 4; the last quarter (>= 2) is the test split "
                             "(default: 16)")
    parser.add_argument("--scale", type=float, default=DEMO.default_scale,
                        help="grid scale: 1 = 160x192x160 of 1 mm, 0.5 = 80x96x80 of 2 mm, "
                             "0.25 = 40x48x40 of 4 mm; any scale giving whole voxels, at least "
                             f"20 a side (default: {DEMO.default_scale:g})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--test-subjects", type=int,
                        help="size of the test split, the last subjects (default: the last "
                             "quarter, at least 2 and at most 4)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from regbench.data.demo import make_demo  # keeps `regbench --help` free of nilearn and torch

    root = make_demo(args.out, subjects=args.subjects, scale=args.scale, seed=args.seed,
                     test_subjects=args.test_subjects)
    log.info("demo dataset ready: %s", root)
    return 0
