"""``regbench methods``, ``train``, ``register`` and ``register-pairs``: the method registry on
the command line (:mod:`regbench.methods`, :mod:`regbench.training`, :mod:`regbench.registration`).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from regbench.cli.arguments import add_dataset_pair, add_pair_choice, chosen_pairs
from regbench.training.config import add_flags

log = logging.getLogger(__name__)

def add_commands(subparsers) -> None:
    """Add the ``methods``, ``train``, ``register`` and ``register-pairs`` sub-commands."""
    listing = subparsers.add_parser(
        "methods", help="list the registered methods",
        description="List every registered method (baselines/, models/ and the .py files in the "
                    "folders of REGBENCH_METHOD_PATH): name, label, learned, and its options "
                    "with their defaults (set them with --option KEY=VALUE).")
    listing.set_defaults(func=run_methods)

    train = subparsers.add_parser(
        "train", help="train a learned method on a prepared dataset",
        description="Train METHOD on the training split of DATA. Writes OUT/model.pt (final), "
                    "OUT/checkpoint.pt (latest; rerunning the same command resumes from it), "
                    "OUT/loss.csv and OUT/train.json. Ctrl-C writes a checkpoint of the "
                    "current step and exits with 130. A run of other settings or data in OUT "
                    "is refused (see --replace-stale). Under torchrun, trains data-parallel. "
                    "Every setting: regbench.training.config.SETTINGS.")
    train.add_argument("method", metavar="METHOD", help="registry name (see `regbench methods`)")
    train.add_argument("--data", required=True, help="prepared dataset folder")
    train.add_argument("--out", required=True, help="output folder")
    add_flags(train)
    train.add_argument("--replace-stale", action="store_true",
                       help="when OUT holds a model or checkpoint of another method, options, "
                            "config or data, move it into OUT/stale/ and train afresh (the "
                            "workflow does; without it such a run is refused)")
    _add_option_flag(train)
    train.set_defaults(func=run_train, parser=train)

    register = subparsers.add_parser(
        "register", help="register one pair with a method and score it",
        description="Register MOVING onto FIXED with METHOD: writes OUT/field.nii.gz and "
                    "OUT/runtime.json, then scores the pair (OUT/warped.nii.gz, "
                    "OUT/warped_labels.nii.gz, OUT/metrics.json). Either --data/--moving/--fixed "
                    "(a prepared dataset) or --moving-image/--fixed-image (files; scored only "
                    "with --moving-labels and --fixed-labels). Every input is checked before "
                    "the method runs. With the default --threads 1 the same command gives the "
                    "same numbers, bit for bit, on one machine.")
    register.add_argument("method", metavar="METHOD",
                          help="registry name (see `regbench methods`)")
    add_dataset_pair(register)
    paths = register.add_argument_group("path form")
    paths.add_argument("--moving-image", help="moving image NIfTI")
    paths.add_argument("--fixed-image", help="fixed image NIfTI (defines the grid)")
    paths.add_argument("--moving-labels", help="moving label map NIfTI")
    paths.add_argument("--fixed-labels", help="fixed label map NIfTI")
    paths.add_argument("--reorient", action="store_true",
                       help="flip and permute the voxel axes of the moving image and labels "
                            "into the fixed image's orientation (e.g. LAS to RAS); without it "
                            "another orientation is refused")
    register.add_argument("--out", required=True, help="output folder")
    _add_method_setup(register)
    register.set_defaults(func=run_register, parser=register)

    pairs = subparsers.add_parser(
        "register-pairs", help="register many pairs of a dataset with a method, without scoring",
        description="Register pairs of the prepared dataset DATA with METHOD, set up once (a "
                    "learned method loads its network once), each pair timed on its own: writes "
                    "OUT_ROOT/MOVING/FIXED/field.nii.gz and runtime.json per pair, and nothing "
                    "else. `regbench evaluate` scores a pair afterwards. The workflow's "
                    "registration stage: a learned method registers all test pairs of a run in "
                    "one such job.")
    pairs.add_argument("method", metavar="METHOD", help="registry name (see `regbench methods`)")
    pairs.add_argument("--data", required=True, help="prepared dataset folder")
    pairs.add_argument("--out-root", required=True,
                       help="run folder; each pair's files go to OUT_ROOT/MOVING/FIXED/")
    add_pair_choice(pairs)
    pairs.add_argument("--replace-stale", action="store_true",
                       help="when OUT_ROOT holds pairs of another method, options, slice step or "
                            "checkpoint, delete them and register afresh (the workflow does; "
                            "without it such a folder is refused)")
    _add_method_setup(pairs)
    pairs.set_defaults(func=run_register_pairs, parser=pairs)


def _add_method_setup(parser: argparse.ArgumentParser) -> None:
    """What sets up a method for registration: checkpoint, slice step, device, threads, options."""
    parser.add_argument("--checkpoint", help="model.pt of a learned method (required for one)")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="accept a checkpoint.pt of an unfinished training run (recorded "
                             "with its step in runtime.json)")
    parser.add_argument("--slice-step", type=int, default=1,
                        help="register the moving image keeping every N-th slice along axis 1 "
                             "(default: 1, the whole image)")
    parser.add_argument("--device", default="auto",
                        help="device of a learned method: auto (CUDA when present), cpu, cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of PyTorch, and ANTs' `threads` option unless given "
                             "(default: 1, deterministic; more are faster, but ANTs' fields "
                             "then vary from run to run)")
    _add_option_flag(parser)


def _add_option_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option; VALUE is read as YAML (3, 0.5, [16, 32], null, "
                             "text); repeatable")


def parse_options(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: yaml value}``; malformed items end with a usage error."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            parser.error(f"--option {item!r}: VALUE is not valid YAML ({err})")
    return options


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


def run_train(args: argparse.Namespace) -> int:
    from regbench.data.dataset import Dataset
    from regbench.degrade import check_slice_step
    from regbench.runtime import pick_device
    from regbench.training.config import TrainConfig, given_flags
    from regbench.training.loop import train

    parser: argparse.ArgumentParser = args.parser
    cls = _method_class(parser, args.method)
    if not cls.learned:
        parser.error(f"method {args.method!r} is not learned: nothing to train")
    method = _construct(parser, cls, parse_options(parser, args.option))
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


def run_register(args: argparse.Namespace) -> int:
    from regbench.data.dataset import Dataset
    from regbench.io import output_lock
    from regbench.registration import register_files, register_pair

    parser: argparse.ArgumentParser = args.parser
    dataset_form = [args.data, args.moving, args.fixed]
    path_form = [args.moving_image, args.fixed_image, args.moving_labels, args.fixed_labels]
    if any(v is not None for v in dataset_form) == any(v is not None for v in path_form):
        parser.error("give either --data/--moving/--fixed or --moving-image/--fixed-image")
    if any(v is not None for v in dataset_form) and None in dataset_form:
        parser.error("the dataset form needs --data, --moving and --fixed")
    if any(v is not None for v in path_form):
        if args.moving_image is None or args.fixed_image is None:
            parser.error("the path form needs --moving-image and --fixed-image")
        if (args.moving_labels is None) != (args.fixed_labels is None):
            parser.error("give both --moving-labels and --fixed-labels, or neither")
    elif args.reorient:
        parser.error("--reorient is for the path form: a prepared dataset has one grid")
    method = _set_up_method(parser, args)
    dataset = Dataset.load(args.data) if args.data is not None else None
    with output_lock(args.out):
        if dataset is not None:
            register_pair(method, dataset, args.moving, args.fixed, args.out,
                          slice_step=args.slice_step)
        else:
            register_files(method, args.moving_image, args.fixed_image, args.out,
                           moving_labels=args.moving_labels, fixed_labels=args.fixed_labels,
                           slice_step=args.slice_step, reorient=args.reorient)
    return 0


def run_register_pairs(args: argparse.Namespace) -> int:
    from regbench.data.dataset import Dataset
    from regbench.registration import register_pairs

    parser: argparse.ArgumentParser = args.parser
    dataset = Dataset.load(args.data)
    pairs = chosen_pairs(parser, args, dataset)
    method = _set_up_method(parser, args)
    register_pairs(method, dataset, pairs, args.out_root, slice_step=args.slice_step,
                   replace_stale=args.replace_stale)
    return 0


def _set_up_method(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The method of ``args``: built with its options, or loaded from its checkpoint if learned;
    PyTorch's threads set and the device checked. Ends with a usage error on a bad combination."""
    from regbench.io import InputError
    from regbench.runtime import pick_device, set_threads

    if args.slice_step < 1:
        parser.error("--slice-step must be >= 1")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    set_threads(args.threads)
    device = pick_device(args.device)
    cls = _method_class(parser, args.method)
    options = parse_options(parser, args.option)
    if "threads" in cls.defaults:
        options.setdefault("threads", args.threads)
    if cls.learned:
        if args.checkpoint is None:
            parser.error(f"method {args.method!r} is learned: give --checkpoint (its model.pt)")
        try:
            return cls.from_checkpoint(args.checkpoint, device,
                                       allow_unfinished=args.allow_unfinished, **options)
        except ValueError as err:
            raise InputError(str(err)) from None
    if args.checkpoint is not None or args.allow_unfinished:
        parser.error(f"method {args.method!r} is not learned: it takes no --checkpoint")
    return _construct(parser, cls, options)


def _method_class(parser: argparse.ArgumentParser, name: str):
    from regbench.methods import get_method

    try:
        return get_method(name)
    except KeyError as err:
        parser.error(str(err.args[0]))


def _construct(parser: argparse.ArgumentParser, cls, options: dict[str, Any]):
    try:
        return cls(**options)
    except ValueError as err:
        parser.error(str(err))
