"""``regbench train``: the shared trainer on the command line (:mod:`regbench.training`)."""

from __future__ import annotations

import argparse
import logging

from regbench.cli.arguments import add_option_flag, construct_method, method_class, parse_options
from regbench.training.config import add_flags

log = logging.getLogger(__name__)


def add_commands(subparsers) -> None:
    """Add the ``train`` sub-command."""
    train = subparsers.add_parser(
        "train", help="train a learned method on a prepared dataset",
        description="Train METHOD on the training split of DATA. Writes OUT/model.pt (final), "
                    "OUT/checkpoint.pt (latest; rerunning the same command resumes from it), "
                    "OUT/loss.csv and OUT/train.json. Ctrl-C writes a checkpoint of the "
                    "current step and exits with 130. A training of other settings or data in "
                    "OUT is refused (see --replace-stale). Under torchrun, trains data-parallel. "
                    "Every setting: regbench.training.config.SETTINGS.")
    train.add_argument("method", metavar="METHOD", help="registry name (see `regbench methods`)")
    train.add_argument("--data", required=True, help="prepared dataset folder")
    train.add_argument("--out", required=True, help="output folder")
    add_flags(train)
    train.add_argument("--replace-stale", action="store_true",
                       help="when OUT holds a model or checkpoint of another method, options, "
                            "config or data, move it into OUT/stale/ and train afresh (the "
                            "workflow does; without it such a training is refused)")
    add_option_flag(train)
    train.set_defaults(func=run_train, parser=train)


def run_train(args: argparse.Namespace) -> int:
    from regbench.data.dataset import Dataset
    from regbench.degrade import check_slice_step
    from regbench.runtime import pick_device
    from regbench.training.config import TrainConfig, given_flags
    from regbench.training.loop import train

    parser: argparse.ArgumentParser = args.parser
    cls = method_class(parser, args.method)
    if not cls.learned:
        parser.error(f"method {args.method!r} is not learned: nothing to train")
    method = construct_method(parser, cls, parse_options(parser, args.option))
    try:
        config = TrainConfig(**given_flags(args))
    except ValueError as err:
        parser.error(str(err))
    pick_device(config.device)  # before any work: a missing GPU is an error of one line
    dataset = Dataset.load(args.data)
    try:
        config.check_grid(dataset.shape)
    except ValueError as err:
        parser.error(str(err))
    check_slice_step(config.moving_slice_step, dataset.shape[1])
    path = train(method, dataset, args.out, config, replace_stale=args.replace_stale)
    log.info("model: %s", path)
    return 0
