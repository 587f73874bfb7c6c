"""The ``regbench`` command line: one sub-command module per area, each adding its parsers."""

from __future__ import annotations

import argparse
import errno
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
    "regbench.cli.train",
    "regbench.cli.register",
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
    except OSError as err:  # a full disk, a read-only place: the environment, not a bug
        print(f"regbench: error: {os_problem(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C; training says where it stopped (TrainingInterrupted)
        print(f"regbench: {str(err) or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)


def os_problem(err: OSError) -> str:
    """One line for an operating-system error: the file, what went wrong, what to do."""
    where = err.filename if err.filename is not None else "a file"
    what = err.strerror or str(err)
    remedies = {
        errno.ENOSPC: "free some space, or give an output folder on another disk",
        errno.EDQUOT: "free some space, or give an output folder on another disk",
        errno.EACCES: "give a writable place",
        errno.EPERM: "give a writable place",
        errno.EROFS: "give a writable place",
        errno.EEXIST: "it exists and is not a folder; give another path",
        errno.ENOTDIR: "a part of the path is a file, not a folder; give another path",
        errno.EISDIR: "it is a folder; give the path of a file",
    }
    remedy = remedies.get(err.errno)
    return f"{where}: {what}" + (f"; {remedy}" if remedy else "")


if __name__ == "__main__":
    sys.exit(main())
