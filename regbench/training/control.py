"""How a training is driven: its processes (DDP under torchrun), its precision (mixed where
native), its stops (SIGINT, SIGTERM) and its failures (non-finite values)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from regbench.io import InputError
from regbench.runtime import cpu_computes_bfloat16, pick_device

if TYPE_CHECKING:
    from regbench.methods import LearnedMethod
    from regbench.training.config import TrainConfig

log = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; ``signum`` is the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(InputError):
    """Training produced non-finite values: the settings (mostly the learning rate) do not suit."""


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The mixed-precision type of training on ``device``, or ``None`` for float32.

    With ``amp``: float16 on CUDA; bfloat16 on a CPU whose flags show native bfloat16
    (:func:`regbench.runtime.cpu_computes_bfloat16`: AVX-512 BF16 or AMX). oneDNN would also
    run bfloat16 on AVX-512 without them (Skylake to Ice Lake), emulated: there it is float32.
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_computes_bfloat16():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """``"bfloat16"``, ``"float16"`` or ``"float32"``: what train.json records as the precision."""
    return str(dtype or torch.float32).removeprefix("torch.")


@contextlib.contextmanager
def distributed(config: TrainConfig) -> Iterator[tuple[int, int, torch.device]]:
    """``(rank, world size, device)``; joins (and afterwards leaves) the torchrun process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(config.device)
    if world <= 1:
        yield 0, 1, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size(), device
    finally:
        if joined:
            dist.destroy_process_group()


def mean_over_processes(values: list[torch.Tensor | float], world: int) -> list[float]:
    stacked = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if world > 1:
        device = torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend() == "nccl" else torch.device("cpu")
        stacked = stacked.to(device)
        dist.all_reduce(stacked)
        stacked = stacked.cpu() / world
    return stacked.tolist()


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM (a batch system's limit) while training: note the signal, so
    that the loop ends its step, writes a checkpoint and stops; a second signal stops at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals reach it only
            self._previous = {signum: signal.signal(signum, self._note)
                              for signum in (signal.SIGINT, signal.SIGTERM)}
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def requested(self, world: int) -> bool:
        """Whether any process got a signal (every process must stop at the same step)."""
        if world > 1:
            stopping = mean_over_processes([float(self.signum is not None)], world)[0] > 0
            if stopping and self.signum is None:
                self.signum = signal.SIGINT
            return stopping
        return self.signum is not None

    def _note(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s: training %s stops after this step and writes a checkpoint (send it "
                    "again to stop at once)", signal.Signals(signum).name, self.name)


def check_finite(what: str, tensors: list[torch.Tensor], method: LearnedMethod, step: int,
                  config: TrainConfig) -> None:
    """Raise :class:`TrainingDiverged` unless every value of ``tensors`` is finite."""
    if not torch.stack([torch.isfinite(t.detach()).all() for t in tensors]).all():
        raise TrainingDiverged(
            f"training {method.name} diverged at step {step}: the {what} became NaN or "
            f"infinite; lower the learning rate (--lr, now {config.lr:g}) or warm up longer "
            f"(--warmup-steps, now {config.warmup_steps})")
