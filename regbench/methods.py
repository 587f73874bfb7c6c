"""One interface for every registration method, and the registry that finds methods by name.

A method turns a ``(moving, fixed)`` pair into a dense displacement field on the fixed grid, in
voxel units (see :mod:`regbench.transforms`). The suite, not the method, warps images and labels
with that field and computes every metric from it, so all methods are scored identically.

Adding a method is adding a file: a module under ``baselines/`` or ``models/`` (or a ``.py`` file
in a folder listed in the ``REGBENCH_METHOD_PATH`` environment variable) that defines a subclass
of :class:`Method` or :class:`LearnedMethod` with a unique ``name``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import os
import pkgutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from regbench.checkpoint import checkpoint_record, load_checkpoint, plain
from regbench.io import InputError
from regbench.runtime import describe_device
from regbench.transforms import pad_to_multiple

METHOD_PACKAGES = ("regbench.baselines", "regbench.models")
METHOD_PATH_ENV = "REGBENCH_METHOD_PATH"

_REGISTRY: dict[str, type[Method]] = {}


@dataclass(frozen=True)
class Option:
    """What one method option accepts beyond the type of its default (see :class:`Method`).

    Attributes:
        type: the type of the value (of each item, for a list option) when the default does not
            show it: a default of ``None``, or a float option whose default is written as an int.
        ge, gt, le, lt: bounds (``>=``, ``>``, ``<=``, ``<``); of each item for a list option.
        choices: the only values allowed.
        nullable: ``None`` is allowed too (always so when the default is ``None``).
    """

    type: type | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False

    def problem(self, value: Any, default: Any) -> str | None:
        """What is wrong with ``value`` for an option with this default, or ``None``."""
        if value is None:
            return None if self.nullable or default is None else "must not be null"
        if isinstance(default, list | tuple):
            if not isinstance(value, list | tuple) or not value:
                return "must be a non-empty list"
            kind = self.type or (type(default[0]) if default else None)
            for item in value:
                problem = self._item_problem(item, kind)
                if problem:
                    return f"every item {problem} ({item!r} is not)"
            return None
        return self._item_problem(value, self.type or (None if default is None else type(default)))

    def _item_problem(self, value: Any, kind: type | None) -> str | None:
        # bool is an int to Python; an option that takes a number never takes true/false.
        if kind is bool and not isinstance(value, bool):
            return "must be true or false"
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return "must be an integer"
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not math.isfinite(value)):
            return "must be a finite number"
        if kind is str and not isinstance(value, str):
            return "must be text"
        if self.choices is not None and value not in self.choices:
            return "must be one of " + ", ".join(map(repr, self.choices))
        for bound, holds, sign in ((self.ge, lambda b: value >= b, ">="),
                                   (self.gt, lambda b: value > b, ">"),
                                   (self.le, lambda b: value <= b, "<="),
                                   (self.lt, lambda b: value < b, "<")):
            if bound is not None and not holds(bound):
                return f"must be {sign} {bound:g}"
        return None


class Method:
    """A registration method.

    Subclasses set ``name`` (the registry key, lower case, used on the command line and in
    file names), ``label`` (how tables and figures print it) and ``defaults`` (every option the
    method takes, with its default), and implement :meth:`register`.

    Options are checked when a method is made, so that a bad value ends in a one-line error
    before any work. Every option must have the type of its default: ``true``/``false`` for a
    bool, an integer for an int, a finite number for a float (integers too), text for a str, and
    a non-empty list of items of the type of the default's items for a list or tuple. Ranges
    and choices are declared in ``option_rules``, one :class:`Option` per option that needs
    more, e.g.::

        defaults = {"levels": 4, "weight": 1.0, "metric": "mattes", "threads": None}
        option_rules = {"levels": Option(ge=1), "weight": Option(ge=0),
                        "metric": Option(choices=("mattes", "CC")),
                        "threads": Option(type=int, ge=1)}

    A default of ``None`` allows ``None``; its type comes from ``option_rules`` (else any value
    is taken). Checks that tie several options together belong in the method's ``__init__``,
    raising :class:`ValueError`.

    A method that imports an optional package names its pip distribution in ``requires``, with
    the extra of ``pyproject.toml`` that installs it, e.g. ``{"fireants": "baselines"}``: made
    without it, the method says what to install before any work.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    learned: ClassVar[bool] = False
    defaults: ClassVar[Mapping[str, Any]] = {}
    option_rules: ClassVar[Mapping[str, Option]] = {}
    requires: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name:
            return  # an abstract intermediate class
        other = _REGISTRY.get(cls.name)
        if other is not None and (other.__module__, other.__qualname__) != (
            cls.__module__, cls.__qualname__):
            raise RuntimeError(
                f"method name {cls.name!r} of {cls.__module__}.{cls.__qualname__} is already "
                f"taken by {other.__module__}.{other.__qualname__}")
        stray = sorted(set(cls.option_rules) - set(cls.defaults))
        if stray:
            raise TypeError(f"method {cls.name!r}: option_rules name options without a default: "
                            f"{stray}")
        for key, default in cls.defaults.items():
            problem = cls.option_rules.get(key, Option()).problem(default, default)
            if problem:
                raise TypeError(f"method {cls.name!r}: the default {key}={default!r} {problem}")
        _REGISTRY[cls.name] = cls

    def __init__(self, **options: Any) -> None:
        missing = self.missing_packages()
        if missing:
            raise InputError(missing)
        self.check_options(options)
        self.options: dict[str, Any] = {**self.defaults, **options}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse an unknown option or a value its rule does not take (the checks of each option
        alone, which the workflow also runs when it plans the jobs).

        Raises:
            ValueError: naming the option and what it takes.
        """
        unknown = sorted(set(options) - set(cls.defaults))
        if unknown:
            raise ValueError(f"method {cls.name!r} has no option(s) {unknown}; "
                             f"it takes {sorted(cls.defaults)}")
        for key, value in options.items():
            problem = cls.option_rules.get(key, Option()).problem(value, cls.defaults[key])
            if problem:
                raise ValueError(f"method {cls.name!r}: option {key}={value!r}: {problem} "
                                 "(see `regbench methods`)")

    @classmethod
    def missing_packages(cls) -> str | None:
        """What to install for this method (one line), or ``None`` when ``requires`` is."""
        missing = [name for name in cls.requires if not _installed(name)]
        if not missing:
            return None
        extras = ",".join(sorted({cls.requires[name] for name in missing}))
        return (f"method {cls.name!r} needs {', '.join(missing)}, which is not installed; "
                f'install it with: pip install -e ".[{extras}]"')

    def register(self, moving: np.ndarray, fixed: np.ndarray,
                 spacing: tuple[float, float, float]) -> np.ndarray:
        """Register ``moving`` onto ``fixed`` (both ``(X, Y, Z)`` float32 on the same grid).

        Returns the displacement field ``(3, X, Y, Z)`` float32 in voxel units on the fixed grid:
        ``warped(x) = moving(x + field(x))``.
        """
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Device the method computes on (CPU unless a learned method says otherwise)."""
        return torch.device("cpu")

    def device_description(self) -> str:
        """What runtime records name as the device (a method with its own threads says so)."""
        return describe_device(self.device)


class LearnedMethod(Method):
    """A method with a trainable PyTorch network, trained by :func:`regbench.training.train`
    and loaded back by :func:`load_trained`.

    Subclasses implement :meth:`build_network` and :meth:`loss`. The network's ``forward(moving,
    fixed)`` takes ``(B, 1, *S)`` tensors whose spatial sizes are multiples of ``size_multiple``
    and returns a dict with ``"field"``, the ``(B, 3, *S)`` displacement in voxel units, and any
    other outputs :meth:`loss` needs (e.g. ``"levels"``, the per-level residual fields).
    """

    learned = True
    size_multiple: ClassVar[int] = 16
    test_batch_statistics: ClassVar[bool] = False
    """At test time normalisation layers use the pair's own batch statistics, not the running
    averages of training (see :func:`inference_mode`)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.network: torch.nn.Module | None = None
        self._device = torch.device("cpu")
        self.checkpoint: dict[str, Any] | None = None
        """``{"sha256", "step", "steps", "finished"}`` of the checkpoint loaded
        (:meth:`from_checkpoint`)."""
        self.trained_on: dict[str, Any] | None = None
        """The checkpoint's record of its training data: dataset name, splits, fingerprint."""

    def build_network(self) -> torch.nn.Module:
        raise NotImplementedError

    def loss(self, outputs: dict[str, Any], moving: torch.Tensor,
             fixed: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss and its named parts (for the loss log)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> LearnedMethod:
        self._device = torch.device(device)
        if self.network is not None:
            self.network.to(self._device)
        return self

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: torch.device | str = "cpu",
                        allow_unfinished: bool = False, **overrides: Any) -> LearnedMethod:
        """Rebuild a trained method from a checkpoint written by the trainer.

        Args:
            path: ``model.pt`` (or, with ``allow_unfinished``, a ``checkpoint.pt``).
            device: where the network runs.
            allow_unfinished: accept a checkpoint of an unfinished training.
            overrides: options, each the value the network was trained with (the runtime
                record names the method's options, which must be those of its weights).

        Raises:
            ValueError: the checkpoint is of another method, of an unfinished training (without
                ``allow_unfinished``), was trained with other values of ``overrides``, or its
                weights do not fit the network of these options.
        """
        state = load_checkpoint(path)
        if state["method"] != cls.name:
            raise ValueError(f"{path}: checkpoint of method {state['method']!r}, not {cls.name!r}")
        record = checkpoint_record(path, state)
        if not record["finished"] and not allow_unfinished:
            raise ValueError(f"{path}: checkpoint of step {record['step']} of {record['steps']}, "
                             "an unfinished training; give its model.pt, or "
                             "--allow-unfinished to register with it anyway")
        method = cls(**{**state["options"], **overrides})
        method.network = method.build_network()
        try:
            method.network.load_state_dict(state["network"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ValueError(f"{path}: the checkpoint's weights do not fit the network of "
                             f"options {method.options} ({first.rstrip(':')}); give the "
                             "options it was trained with, or none") from None
        # After the weights: an option that changes the network's shape is refused by their
        # error, which names the layer.
        for key, value in overrides.items():
            if key in state["options"] and plain(value) != plain(state["options"][key]):
                raise ValueError(f"{path}: the model was trained with {key}="
                                 f"{json.dumps(plain(state['options'][key]))}, not {key}="
                                 f"{json.dumps(plain(value))}; give the options it was trained "
                                 "with, or none")
        method.network.eval()
        method.checkpoint = record
        method.trained_on = state.get("dataset")
        return method.to(device)

    @torch.no_grad()
    def run_network(self, moving: np.ndarray,
                    fixed: np.ndarray) -> tuple[dict[str, Any], tuple[slice, ...]]:
        """The network's outputs on one pair (``(X, Y, Z)`` arrays, one grid), zero-padded to
        ``size_multiple``, and the crop that takes a padded full-size output back to the grid."""
        if self.network is None:
            raise RuntimeError(f"method {self.name!r} has no trained network: load a checkpoint")
        tensors = [torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))[None, None]
                   for v in (moving, fixed)]
        padded, crop = pad_to_multiple(torch.cat(tensors, 1).to(self.device), self.size_multiple)
        with inference_mode(self.network, self.test_batch_statistics):
            return self.network(padded[:, :1], padded[:, 1:]), crop

    def register(self, moving: np.ndarray, fixed: np.ndarray,
                 spacing: tuple[float, float, float]) -> np.ndarray:
        outputs, crop = self.run_network(moving, fixed)
        return outputs["field"][(slice(None), slice(None), *crop)][0].float().cpu().numpy()


@contextlib.contextmanager
def inference_mode(network: torch.nn.Module, batch_statistics: bool = False) -> Iterator[None]:
    """The network in evaluation mode for the block; it stays so afterwards.

    With ``batch_statistics`` its batch-normalisation layers normalise by the statistics of the
    batch they see (at test time, one pair) instead of their running averages, as a network never
    switched to ``eval()`` does, but without updating those averages (momentum 0).
    """
    network.eval()
    norms = ([m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
             if batch_statistics else [])
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.train()
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
            norm.eval()


def in_float32(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` in float32 even under mixed precision: for the layers that output a
    displacement field, whose voxel coordinates low precision would round too coarsely."""
    with torch.autocast(x.device.type, enabled=False):
        return module(x.float())


def _installed(distribution: str) -> bool:
    """Whether a pip distribution is installed (read from its metadata: nothing is imported)."""
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _discover() -> None:
    for package_name in METHOD_PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{module.name}")
    for folder in filter(None, os.environ.get(METHOD_PATH_ENV, "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            module_name = f"regbench_user_methods.{path.stem}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)


def available_methods() -> dict[str, type[Method]]:
    """Every registered method by name, after importing every method file."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[Method]:
    methods = available_methods()
    if name not in methods:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(methods)}")
    return methods[name]


def load_trained(path: str | os.PathLike, device: torch.device | str = "cpu", *,
                 method: str | None = None, allow_unfinished: bool = False,
                 **overrides: Any) -> LearnedMethod:
    """The trained method of a checkpoint written by the trainer, ready to register.

    Args:
        path: ``model.pt`` (or, with ``allow_unfinished``, a ``checkpoint.pt``).
        device: where the network runs.
        method: the registry name the checkpoint must be of (``None``: the one it names).
        allow_unfinished: accept a checkpoint of an unfinished training.
        overrides: options replacing the checkpoint's.

    Raises:
        InputError: the checkpoint is missing or unreadable, of an unknown method or one that is
            not learned, of another method than ``method``, of an unfinished training (without
            ``allow_unfinished``), or its weights do not fit the network of its options
            with ``overrides``.
    """
    if method is None:
        method = load_checkpoint(path)["method"]
    try:
        cls = get_method(method)
    except KeyError as err:
        raise InputError(f"{path}: {err.args[0]}") from None
    if not issubclass(cls, LearnedMethod):
        raise InputError(f"{path}: method {method!r} is not a learned method")
    try:
        return cls.from_checkpoint(path, device, allow_unfinished=allow_unfinished, **overrides)
    except ValueError as err:
        raise InputError(str(err)) from None
