"""``regbench methods``: the method registry on the command line (:mod:`regbench.methods`)."""

from __future__ import annotations

import argparse
import json


def add_commands(subparsers) -> None:
    """Add the ``methods`` sub-command."""
    listing = subparsers.add_parser(
        "methods", help="list the registered methods",
        description="List every registered method (baselines/, models/ and the .py files in the "
                    "folders of REGBENCH_METHOD_PATH): name, label, learned, and its options "
                    "with their defaults (set them with --option KEY=VALUE).")
    listing.set_defaults(func=run_methods)


def run_methods(args: argparse.Namespace) -> int:
    from regbench.methods import available_methods
    from regbench.reports.style import method_rank

    methods = available_methods()
    rows = [(name, cls.label, "yes" if cls.learned else "no")
            for name, cls in sorted(methods.items(), key=lambda item: method_rank(item[0]))]
    widths = [max(len(row[i]) for row in [("name", "label", "learned"), *rows]) for i in range(3)]
    print("  ".join(h.ljust(w) for h, w in zip(("name", "label", "learned"), widths,
                                                 strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        defaults = methods[row[0]].defaults
        if defaults:
            print("    options: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in
                                              defaults.items()))
    return 0
