"""Command-line arguments that several commands share."""

from __future__ import annotations

import argparse


def add_dataset_pair(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--moving``, ``--fixed``: one pair of subjects of a prepared dataset."""
    dataset = parser.add_argument_group("dataset form")
    dataset.add_argument("--data", help="prepared dataset folder")
    dataset.add_argument("--moving", help="moving subject ID")
    dataset.add_argument("--fixed", help="fixed subject ID")
