"""The ``regbench`` command line: one sub-command module per area, each adding its parsers."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from regbench import __version__
from regbench.io import InputError

COMMAND_MODULES = (
    "regbench.cli.demo",
    "regbench.cli.prepare",
    "regbench.cli.methods",
    "regbench.cli.evaluate",
    "regbench.cli.export",
    "regbench.cli.learn2reg",
    "regbench.cli.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regbench",
        description="Benchmark and reproduction suite for deep 3D brain-MRI registration.")
    parser.add_argument("--version", action="version", version=f"regbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except InputError as err:
        print(f"regbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C; training says where it stopped (TrainingInterrupted)
        print(f"regbench: {err or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
