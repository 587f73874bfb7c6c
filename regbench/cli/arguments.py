"""Command-line arguments that several commands share."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regbench.data.dataset import Dataset
    from regbench.methods import Method


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum``, else a usage error that
    names the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return value
    return parse


def add_dataset_pair(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--moving``, ``--fixed``: one pair of subjects of a prepared dataset."""
    dataset = parser.add_argument_group("dataset form")
    dataset.add_argument("--data", help="prepared dataset folder")
    dataset.add_argument("--moving", help="moving subject ID")
    dataset.add_argument("--fixed", help="fixed subject ID")


def add_pair_choice(parser: argparse.ArgumentParser) -> None:
    """``--test-pairs`` or ``--pair MOVING FIXED`` (repeatable): the pairs of a many-pair
    command, read back by :func:`chosen_pairs`."""
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--test-pairs", action="store_true",
                        help="every ordered pair of distinct subjects of the test split")
    chosen.add_argument("--pair", nargs=2, action="append", metavar=("MOVING", "FIXED"),
                        help="one pair of subject IDs; repeatable")


def chosen_pairs(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 dataset: Dataset) -> list[tuple[str, str]]:
    """The ``(moving, fixed)`` pairs of :func:`add_pair_choice`'s arguments, every subject
    checked against ``dataset`` before any work (an unknown one raises ``InputError``)."""
    from regbench.naming import ordered_pairs

    pairs = ordered_pairs(dataset.test) if args.test_pairs else [tuple(p) for p in args.pair]
    if not pairs:
        parser.error(f"{args.data}: the test split has fewer than 2 subjects: no pairs")
    for moving, fixed in pairs:
        if moving == fixed:
            parser.error(f"--pair {moving} {fixed}: a subject registered onto itself; give two "
                         "subjects")
    for subject in {s for pair in pairs for s in pair}:
        dataset.image_path(subject)
    return pairs


def add_option_flag(parser: argparse.ArgumentParser) -> None:
    """``--option KEY=VALUE`` (repeatable), read back by :func:`parse_options`."""
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option; VALUE is read as YAML (3, 0.5, [16, 32], null, "
                             "text); repeatable")


def parse_options(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: yaml value}``; malformed items, and a key given twice
    (the last would win without a word, as a YAML key given twice did), end with a usage
    error."""
    from regbench.data.registry import key_value

    options, given = {}, {}
    for item in items:
        try:
            key, value = key_value(item)
        except ValueError as err:
            parser.error(f"--option {err}")
        if key in options:
            parser.error(f"--option {key} is given twice ({given[key]!r} and {item!r}); keep "
                         "one")
        options[key], given[key] = value, item
    return options


def method_class(parser: argparse.ArgumentParser, name: str) -> type[Method]:
    """The registered method ``name``; an unknown one ends with a usage error."""
    from regbench.methods import get_method

    try:
        return get_method(name)
    except KeyError as err:
        parser.error(str(err.args[0]))


def construct_method(parser: argparse.ArgumentParser, cls: type[Method],
                     options: dict[str, Any]) -> Method:
    """``cls(**options)``; a bad option ends with a usage error."""
    try:
        return cls(**options)
    except ValueError as err:
        parser.error(str(err))
