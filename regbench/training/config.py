"""Every training setting, written once: its default, range, help and command-line flag.

:data:`SETTINGS` is the one source; :class:`TrainConfig` takes its defaults from it, ``regbench
train`` its flags (:func:`add_flags`), and the workflow its command lines (:func:`command_line`).
The workflow's schema (``workflow/schemas/config.schema.yaml``) repeats the defaults and ranges
of the settings it exposes, for Snakemake's validation; ``tests/test_training_config.py`` fails
when they disagree. Pure Python (the workflow imports it without the scientific stack).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One training setting.

    Attributes:
        default: its value unless given.
        help: what it means, for ``regbench train --help`` and the schema.
        minimum: the smallest value allowed (``None``: any).
        positive: the value must be > 0 (for a float, where ``minimum`` would allow 0).
        flag: the ``regbench train`` flag that sets it (``None``: none).
        run_only: it does not change the trained weights, so a training may resume with
            another value (see :mod:`regbench.training.identity`).
        choices: the values allowed (``None``: any of its type).
    """

    default: Any
    help: str
    minimum: int | None = None
    positive: bool = False
    flag: str | None = None
    run_only: bool = False
    choices: tuple[str, ...] | None = None


# In the order of the workflow's command lines (workflow/rules/common.smk, train_args).
SETTINGS: dict[str, Setting] = {
    "steps": Setting(1000, "optimizer steps", minimum=1, flag="--steps"),
    "batch_size": Setting(1, "pairs per step, over all processes (global batch)", minimum=1,
                          flag="--batch-size"),
    "lr": Setting(1e-4, "learning rate after warm-up (Adam)", positive=True, flag="--lr"),
    "seed": Setting(0, "random seed (network, pairs, jitter)", minimum=0, flag="--seed"),
    "warmup_steps": Setting(100, "steps of linear learning-rate warm-up", minimum=0,
                            flag="--warmup-steps"),
    "lr_schedule": Setting("constant", "after warm-up: constant (the paper's), or cosine (half a "
                                       "cosine from lr down to 0 at the last step)",
                           flag="--lr-schedule", choices=("constant", "cosine")),
    "checkpoint_every": Setting(100, "steps between checkpoints", minimum=1,
                                flag="--checkpoint-every", run_only=True),
    "crop_jitter": Setting(0, "random shift of each volume of a pair, +-N voxels per axis",
                           minimum=0, flag="--crop-jitter"),
    "flip": Setting(False, "flip each training pair along one spatial axis or none, drawn "
                           "uniformly, both images alike (the official code's RandomFlip(axes="
                           "[0, 1, 2]), commented out there)", flag="--flip"),
    "validate_every": Setting(100, "steps between validations (0: none); the validation Dice "
                                   "goes to OUT/validation.csv", minimum=0,
                              flag="--validate-every", run_only=True),
    "select": Setting("best", "the weights model.pt holds, and registration uses: best (the "
                            "validated step of highest validation Dice, FAIM; the latest on a "
                            "tie) or final (the last step); final when nothing is validated",
                    flag="--select", choices=("best", "final")),
    "validation_pairs": Setting(6, "ordered validation pairs (of the val split, else the "
                                   "training split)", minimum=1, flag="--validation-pairs",
                                run_only=True),
    "device": Setting("auto", "auto (CUDA when present), cpu, cuda, cuda:1, ...", flag="--device",
                      run_only=True),
    "moving_slice_step": Setting(1, "train on moving images keeping every N-th slice along "
                                    "axis 1 (regbench.degrade)", minimum=1, flag="--slice-step"),
    "amp": Setting(True, "mixed precision: float16 on CUDA, bfloat16 on a CPU that computes it "
                         "natively (AVX-512 BF16 or AMX), float32 elsewhere", flag="--no-amp"),
    "threads": Setting(None, "CPU threads per process (default: PyTorch's); a resume needs "
                             "those of its checkpoint", minimum=1, flag="--threads",
                       run_only=True),
    "weight_decay": Setting(1e-5, "Adam's L2 weight decay (0: none)", minimum=0,
                            flag="--weight-decay"),
    "clip_grad_norm": Setting(10.0, "clip the gradients' global norm to this (0: no clipping)",
                              minimum=0, flag="--clip-grad-norm"),
    "num_workers": Setting(0, "recorded, unused: every volume is read once into memory",
                           minimum=0, run_only=True),
}

RUN_ONLY_FIELDS = tuple(name for name, setting in SETTINGS.items() if setting.run_only)
"""Config fields that do not change the trained weights (may differ when resuming)."""


@dataclass
class TrainConfig:
    """Training hyper-parameters; defaults, ranges and meaning: :data:`SETTINGS`.

    ``batch_size`` is the global batch: pairs per optimizer step over all processes.

    Raises:
        ValueError: a value out of its range (on construction).
    """

    steps: int = SETTINGS["steps"].default
    batch_size: int = SETTINGS["batch_size"].default
    lr: float = SETTINGS["lr"].default
    seed: int = SETTINGS["seed"].default
    warmup_steps: int = SETTINGS["warmup_steps"].default
    lr_schedule: str = SETTINGS["lr_schedule"].default
    checkpoint_every: int = SETTINGS["checkpoint_every"].default
    crop_jitter: int = SETTINGS["crop_jitter"].default
    flip: bool = SETTINGS["flip"].default
    validate_every: int = SETTINGS["validate_every"].default
    select: str = SETTINGS["select"].default
    validation_pairs: int = SETTINGS["validation_pairs"].default
    device: str = SETTINGS["device"].default
    moving_slice_step: int = SETTINGS["moving_slice_step"].default
    amp: bool = SETTINGS["amp"].default
    threads: int | None = SETTINGS["threads"].default
    weight_decay: float = SETTINGS["weight_decay"].default
    clip_grad_norm: float = SETTINGS["clip_grad_norm"].default
    num_workers: int = SETTINGS["num_workers"].default

    def check_grid(self, shape: Sequence[int]) -> None:
        """Refuse a ``crop_jitter`` that does not fit a dataset's grid ``(X, Y, Z)``: each volume
        shifts on its own, so moving and fixed part by up to twice the jitter, and at the whole
        grid's width they no longer overlap.

        Raises:
            ValueError: twice ``crop_jitter`` is at least the grid's smallest side.
        """
        side = min(shape)
        if 2 * self.crop_jitter >= side:
            raise ValueError(f"crop_jitter {self.crop_jitter}: moving and fixed would part by up "
                             f"to {2 * self.crop_jitter} voxels on a grid of "
                             f"{'x'.join(map(str, shape))}; give at most {(side - 1) // 2}")

    def __post_init__(self) -> None:
        for name, setting in SETTINGS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if setting.minimum is not None and value < setting.minimum:
                raise ValueError(f"{name} must be >= {setting.minimum}, got {value}")
            if setting.choices is not None and value not in setting.choices:
                raise ValueError(f"{name} must be one of {', '.join(setting.choices)}, "
                                 f"got {value!r}")
            if setting.positive and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")


def setting_type(name: str) -> type:
    """The type of a setting's values (``int`` for ``int | None``), from :class:`TrainConfig`."""
    hint = typing.get_type_hints(TrainConfig)[name]
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    return kinds[0]


def add_flags(parser: Any) -> None:
    """Add a flag per setting that has one to an ``argparse`` parser (default ``None``: unset;
    a yes/no setting's flag is the switch away from its default, e.g. ``--no-amp``, ``--flip``)."""
    for name, setting in SETTINGS.items():
        if setting.flag is None:
            continue
        if setting_type(name) is bool:
            parser.add_argument(setting.flag, dest=name, action="store_const",
                                const=not setting.default, default=None,
                                help=f"{'off' if setting.default else 'on'}: {setting.help}")
        else:
            parser.add_argument(setting.flag, dest=name, type=setting_type(name), default=None,
                                choices=setting.choices,
                                help=f"{setting.help} (default: {setting.default})")


def given_flags(args: Any) -> dict[str, Any]:
    """The settings given on the command line (an ``argparse`` namespace of :func:`add_flags`)."""
    return {name: getattr(args, name) for name, setting in SETTINGS.items()
            if setting.flag is not None and getattr(args, name) is not None}


def command_line(values: Mapping[str, Any]) -> list[str]:
    """``regbench train`` arguments setting ``values`` (settings by name), in :data:`SETTINGS`
    order; a yes/no setting gives its flag when it differs from its default (``amp`` false
    becomes ``--no-amp``, ``flip`` true ``--flip``).

    Raises:
        KeyError: a name is not a setting with a flag.
    """
    unknown = sorted(name for name in values
                     if name not in SETTINGS or SETTINGS[name].flag is None)
    if unknown:
        raise KeyError(f"not settings of `regbench train`: {unknown}")
    args = []
    for name, setting in SETTINGS.items():
        if name not in values:
            continue
        if setting_type(name) is bool:
            args += [setting.flag] if bool(values[name]) != setting.default else []
        else:
            args.append(f"{setting.flag} {values[name]}")
    return args

