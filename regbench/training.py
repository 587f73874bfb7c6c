"""The shared trainer of every learned method.

:func:`train` fits a :class:`~regbench.methods.LearnedMethod`'s network on random ordered pairs
of distinct subjects of a dataset's training split and writes into ``out_dir``::

    checkpoint.pt   latest state (network, optimizer, grad scaler, step, every RNG), written
                    every ``checkpoint_every`` steps; rerunning the same command resumes from it
    model.pt        the final state (same format), written last: its presence marks a finished run
    loss.csv        one row per step: step, loss, each loss part, lr, time_s (wall seconds)
    train.json      config, options, seed, versions, device, dataset, wall time

Choices the paper leaves open, and how they are made here:

* **Data.** Every training volume is read once into memory (a few hundred MB at full size).
  Pairs are drawn with replacement by a seeded generator of their own, so a resumed run draws the
  same pairs as an uninterrupted one; ``num_workers`` is recorded but unused (no loader needed).
* **Crop jitter.** Prepared volumes are already cropped to 160x192x160, so the protocol's
  +-``crop_jitter`` voxel jitter of the crop centre is emulated by shifting *both* volumes of a
  pair by the same random integer offset per axis, with edge (replicate) padding: the pair keeps
  its correspondence, its position in the field of view changes.
* **Slice thinning.** ``moving_slice_step > 1`` trains on moving images thinned by
  :func:`regbench.degrade.thin_slices` (axis 1), the fixed images are kept whole.
* **Learning rate.** Step ``s`` (1-based) uses ``lr * min(1, s / warmup_steps)``: linear warm-up,
  then constant (:func:`learning_rate`).
* **Data parallel.** Under ``torchrun`` (``WORLD_SIZE > 1``) the network is wrapped in
  ``DistributedDataParallel`` (NCCL on CUDA, Gloo on CPU). ``batch_size`` is the *global* batch
  (pairs per optimizer step, all processes together, as in the paper's "batch 4 on 4 GPUs"): it
  must be divisible by the number of processes, and process ``r`` takes the ``r``-th equal share
  of the pairs every process draws identically. Gradients are averaged over processes, so with
  batch-mean losses a step equals the single-process step on the whole batch (networks with batch
  normalisation differ: statistics are per process). Only rank 0 writes files; every process
  reads ``checkpoint.pt`` when resuming (one machine, or a shared file system).
* **Mixed precision** (``torch.autocast`` float16 with a ``GradScaler``) is used only on CUDA and
  only when ``amp`` is set.

Resuming restores the network, optimizer, grad scaler, step and the Python, NumPy, PyTorch and
pair-sampler RNG states, so on the CPU an interrupted and resumed run ends with exactly the
weights of an uninterrupted one.

A run's identity is its method, options, config and data: the dataset's name, its training and
validation subjects, and a fingerprint of their files (:meth:`Dataset.fingerprint`), so data
prepared again with another seed under the same subject IDs is another run. A folder holding
``model.pt`` of the same identity is a finished run: :func:`train` returns at once. A checkpoint
or model of a *different* identity is refused, or with ``replace_stale`` moved with its loss log
and record into ``out_dir/stale/`` (replacing an older one), and training starts afresh. Config
fields that do not change what is trained may differ: ``checkpoint_every``, ``device``,
``threads``, ``num_workers``.

Only one process trains into a folder (:func:`regbench.io.output_lock`). SIGINT (Ctrl-C) or
SIGTERM (a batch system's time limit) ends the current step, writes ``checkpoint.pt`` and raises
:class:`TrainingInterrupted`; a second signal stops at once. Non-finite predicted fields or
weights raise :class:`TrainingDiverged` before anything is saved from them.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from regbench.io import InputError, atomic_path, output_lock, write_json, write_text
from regbench.runtime import describe_device, pick_device, seed_everything, set_threads, versions

if TYPE_CHECKING:
    from regbench.data.dataset import Dataset
    from regbench.methods import LearnedMethod

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
LOSS_LOG = "loss.csv"
RECORD = "train.json"
STALE = "stale"
"""Folder inside the output folder that receives a run of another identity (``replace_stale``)."""
CHECKPOINT_FORMAT = 1

RUN_ONLY_FIELDS = ("checkpoint_every", "device", "threads", "num_workers")
"""Config fields that do not change the trained weights (may differ when resuming)."""


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: PROTOCOL.md, scaled from epochs to steps).

    ``batch_size`` is the global batch: pairs per optimizer step over all processes.
    """

    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    clip_grad_norm: float = 10.0
    checkpoint_every: int = 100
    seed: int = 0
    crop_jitter: int = 0
    moving_slice_step: int = 1
    amp: bool = True
    device: str = "auto"
    threads: int | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        minimums = {"steps": 1, "batch_size": 1, "checkpoint_every": 1, "moving_slice_step": 1,
                    "warmup_steps": 0, "crop_jitter": 0, "num_workers": 0}
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; ``signum`` is the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(InputError):
    """Training produced non-finite values: the settings (mostly the learning rate) do not suit."""


def learning_rate(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (1-based): linear warm-up, then constant."""
    if config.warmup_steps <= 0:
        return config.lr
    return config.lr * min(1.0, step / config.warmup_steps)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (``checkpoint.pt`` or ``model.pt``), on the CPU.

    Keys: ``method``, ``options``, ``network`` (state dict), ``optimizer``, ``scaler``, ``step``,
    ``rng`` (``python``, ``numpy``, ``torch``, ``cuda``, ``sampler``), ``config`` (a
    :class:`TrainConfig` as a dict), ``dataset`` (``name``, ``train`` and ``val`` subject IDs,
    ``fingerprint`` of their files),
    ``elapsed_s`` (wall seconds of training so far), ``resumed_at`` (steps resumed from),
    ``format``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found")
    try:
        # weights_only: a checkpoint is data, never code to run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise InputError(f"{path}: not a readable regbench checkpoint ({err})") from None
    missing = {"format", "method", "options", "network", "step", "config"} - set(
        state if isinstance(state, dict) else ())
    if missing:
        raise InputError(f"{path}: not a regbench checkpoint (missing {sorted(missing)})")
    return state


def train(method: LearnedMethod, dataset: Dataset, out_dir: str | os.PathLike,
          config: TrainConfig, *, replace_stale: bool = False) -> Path:
    """Train ``method``'s network (built afresh from the seed) on ``dataset``'s training split.

    Resumes from ``out_dir/checkpoint.pt`` when present; returns ``out_dir/model.pt``. On return
    ``method.network`` holds the trained network in eval mode on the training device.

    Args:
        replace_stale: move a model or checkpoint of another method, options, config or data
            into ``out_dir/stale/`` and train afresh (else it is refused).

    Raises:
        InputError: ``out_dir`` holds another run (without ``replace_stale``), cannot be
            written, or another process trains into it.
        TrainingDiverged: the predicted field or the weights became NaN or infinite.
        TrainingInterrupted: SIGINT or SIGTERM arrived; a checkpoint of the last step is written.
    """
    out_dir = Path(out_dir)
    with _distributed(config) as (rank, world, device):
        lock = output_lock(out_dir) if rank == 0 else contextlib.nullcontext()
        with lock:
            return _train(method, dataset, out_dir, config, rank, world, device, replace_stale)


@contextlib.contextmanager
def _distributed(config: TrainConfig) -> Iterator[tuple[int, int, torch.device]]:
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


def _train(method: LearnedMethod, dataset: Dataset, out_dir: Path, config: TrainConfig,
           rank: int, world: int, device: torch.device, replace_stale: bool) -> Path:
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} is not divisible by the {world} "
                         "processes (the batch size is the global batch)")
    set_threads(config.threads)
    seed_everything(config.seed)
    network = method.build_network()
    identity = {"method": method.name, "options": _plain(method.options),
                "config": _plain(dataclasses.asdict(config)),
                "dataset": {"name": dataset.name, "train": list(dataset.train),
                            "val": list(dataset.val),
                            "fingerprint": dataset.fingerprint([*dataset.train, *dataset.val])}}
    _set_aside_stale_run(out_dir, identity, replace_stale, rank, world)
    model_path = out_dir / MODEL
    if model_path.exists():
        state = load_checkpoint(model_path)
        log.info("%s: finished run of the same method, options, config and data; nothing to do",
                 model_path)
        network.load_state_dict(state["network"])
        return _finish(method, network, device, model_path)

    network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    volumes = TrainingVolumes(dataset, config.moving_slice_step)
    sampler = PairSampler(len(volumes), config.seed, config.crop_jitter)
    start, elapsed, resumed_at = 0, 0.0, []
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] and use_amp:
            scaler.load_state_dict(state["scaler"])
        _set_rng_states(state["rng"], sampler)
        start, elapsed = state["step"], state["elapsed_s"]
        resumed_at = [*state["resumed_at"], start]
        log.info("resuming %s from %s at step %d", method.name, checkpoint_path, start)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_loss_log(out_dir / LOSS_LOG, start)

    model = network
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)
    share = config.batch_size // world
    network.train()
    began = time.perf_counter() - elapsed
    logger = LossLog(out_dir / LOSS_LOG) if rank == 0 else None
    steps = tqdm(range(start + 1, config.steps + 1), initial=start, total=config.steps,
                 desc=f"train {method.name}", unit="step", disable=rank != 0)
    stop = _StopRequest(method.name).install()
    try:
        for step in steps:
            draws = sampler.draw(config.batch_size)[rank * share:(rank + 1) * share]
            moving, fixed = volumes.batch(draws, config.crop_jitter, method.size_multiple, device)
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                outputs = model(moving, fixed)
                _check_finite("predicted field", [outputs["field"]], method, step, config)
                loss, parts = method.loss(outputs, moving, fixed)
            _check_finite("loss", [loss], method, step, config)
            scaler.scale(loss).backward()
            if config.clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(network.parameters(), config.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            _check_finite("weights", list(network.parameters()), method, step, config)
            values = _mean_over_processes([loss.detach().float(), *parts.values()], world)
            if logger is not None:
                record = {"step": step, "loss": values[0],
                          **dict(zip(parts, values[1:], strict=True)),
                          "lr": lr, "time_s": time.perf_counter() - began}
                logger.append(record)
                steps.set_postfix(loss=f"{values[0]:.4f}")
            stopping = step < config.steps and stop.requested(world)
            if rank == 0 and step < config.steps and (stopping or
                                                      step % config.checkpoint_every == 0):
                _save(_state(identity, network, optimizer, scaler, sampler, step,
                             time.perf_counter() - began, resumed_at), checkpoint_path)
            if stopping:
                raise TrainingInterrupted(
                    f"training {method.name} stopped at step {step} of {config.steps} "
                    f"({signal.Signals(stop.signum).name}); {checkpoint_path} holds that step: "
                    "run the same command again to resume", stop.signum)
    finally:
        stop.restore()
        if logger is not None:
            logger.close()
    if rank == 0:
        elapsed = time.perf_counter() - began
        final = _state(identity, network, optimizer, scaler, sampler, config.steps, elapsed,
                       resumed_at)
        write_json(out_dir / RECORD, {
            "method": method.name, "label": method.label, "options": identity["options"],
            "config": identity["config"], "seed": config.seed, "steps": config.steps,
            "world_size": world, "batch_per_process": share, "amp": use_amp,
            "device": describe_device(device), "versions": versions(),
            "dataset": {**identity["dataset"], "root": str(dataset.root)},
            "resumed_at": resumed_at, "wall_time_s": elapsed, "model": MODEL,
        })
        _save(final, model_path)  # last: its presence marks a finished run
        log.info("trained %s for %d steps in %.1f s: %s", method.name, config.steps, elapsed,
                 model_path)
    if world > 1:
        dist.barrier()  # every process returns once model.pt exists
    return _finish(method, network, device, model_path)


class TrainingVolumes:
    """Every training-split image of a dataset, read once: ``(N, 1, X, Y, Z)`` float32 on the CPU.

    ``moving`` holds the images the networks see as moving images (thinned when
    ``slice_step > 1``), ``fixed`` the images as read.
    """

    def __init__(self, dataset: Dataset, slice_step: int = 1) -> None:
        subjects = dataset.train
        if len(subjects) < 2:
            raise InputError(f"{dataset.root}: the training split needs at least 2 subjects, "
                             f"has {len(subjects)}")
        images = [dataset.image(s) for s in tqdm(subjects, desc="read training images",
                                                   unit="image", leave=False)]
        self.fixed = torch.from_numpy(np.stack(images))[:, None]
        if slice_step > 1:
            from regbench.degrade import thin_slices

            self.moving = thin_slices(self.fixed, step=slice_step, axis=3)
        else:
            self.moving = self.fixed

    def __len__(self) -> int:
        return len(self.fixed)

    def batch(self, draws: list[tuple[int, int, tuple[int, int, int]]], jitter: int,
              multiple: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(moving, fixed)``, each ``(B, 1, *S)`` zero-padded to a multiple of ``multiple``."""
        from regbench.methods import pad_to_multiple

        moving = torch.cat([_shift(self.moving[m:m + 1], off, jitter) for m, _, off in draws])
        fixed = torch.cat([_shift(self.fixed[f:f + 1], off, jitter) for _, f, off in draws])
        pair, _ = pad_to_multiple(torch.cat([moving, fixed], 1).to(device), multiple)
        return pair[:, :1], pair[:, 1:]


class PairSampler:
    """Seeded ordered pairs of distinct subjects, each with a crop-jitter offset per axis."""

    def __init__(self, subjects: int, seed: int, jitter: int = 0) -> None:
        self.subjects = subjects
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)

    def draw(self, count: int) -> list[tuple[int, int, tuple[int, int, int]]]:
        """``count`` draws of ``(moving index, fixed index, (dx, dy, dz))``."""
        draws = []
        for _ in range(count):
            moving = int(self.rng.integers(self.subjects))
            fixed = int(self.rng.integers(self.subjects - 1))
            fixed += fixed >= moving
            offset = tuple(int(v) for v in self.rng.integers(-self.jitter, self.jitter + 1, 3))
            draws.append((moving, fixed, offset))
        return draws


def _shift(volume: torch.Tensor, offset: tuple[int, int, int], jitter: int) -> torch.Tensor:
    """Translate ``(B, C, *S)`` by whole voxels, ``out[x] = in[x - offset]``, edge padded."""
    if jitter == 0:
        return volume
    padded = F.pad(volume, [jitter] * 6, mode="replicate")
    return padded[(..., *(slice(jitter - o, jitter - o + n)
                          for o, n in zip(offset, volume.shape[2:], strict=True)))]


class LossLog:
    """``loss.csv``, appended one flushed row per step (header taken from the first row)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = None

    def append(self, record: dict[str, Any]) -> None:
        if self.file is None:
            new = not self.path.exists() or self.path.stat().st_size == 0
            self.file = self.path.open("a", newline="")
            self.writer = csv.writer(self.file)
            if new:
                self.writer.writerow(list(record))
        self.writer.writerow([_format(v) for v in record.values()])
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _format(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _truncate_loss_log(path: Path, step: int) -> None:
    """Keep the header and the complete rows up to ``step`` (rows after the checkpoint go)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    rows = list(csv.reader(io.StringIO(path.read_text())))
    if not rows:
        return
    header = rows[0]
    kept = [row for row in rows[1:] if len(row) == len(header) and row[0].isdigit()
            and int(row[0]) <= step]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *kept])
    write_text(path, buffer.getvalue())


def _mean_over_processes(values: list[torch.Tensor | float], world: int) -> list[float]:
    stacked = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if world > 1:
        device = torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend() == "nccl" else torch.device("cpu")
        stacked = stacked.to(device)
        dist.all_reduce(stacked)
        stacked = stacked.cpu() / world
    return stacked.tolist()


def _state(identity: dict[str, Any], network: torch.nn.Module,
           optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, sampler: PairSampler,
           step: int, elapsed: float, resumed_at: list[int]) -> dict[str, Any]:
    """The checkpoint: ``identity`` (method, options, config, dataset) and the training state."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {
        "format": CHECKPOINT_FORMAT,
        **identity,
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "rng": {
            "python": random.getstate(),
            "numpy": numpy_state,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "sampler": sampler.rng.bit_generator.state,
        },
        "elapsed_s": elapsed,
        "resumed_at": resumed_at,
    }


def _set_rng_states(rng: dict[str, Any], sampler: PairSampler) -> None:
    random.setstate(rng["python"])
    numpy_state = dict(rng["numpy"])
    numpy_state["state"] = {**numpy_state["state"],
                            "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(numpy_state)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    sampler.rng.bit_generator.state = rng["sampler"]


def _save(state: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    log.debug("wrote %s (step %d)", path, state["step"])


class _StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM (a batch system's limit) while training: note the signal, so
    that the loop ends its step, writes a checkpoint and stops; a second signal stops at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> _StopRequest:
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
            stopping = _mean_over_processes([float(self.signum is not None)], world)[0] > 0
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


def _check_finite(what: str, tensors: list[torch.Tensor], method: LearnedMethod, step: int,
                  config: TrainConfig) -> None:
    """Raise :class:`TrainingDiverged` unless every value of ``tensors`` is finite."""
    if not torch.stack([torch.isfinite(t.detach()).all() for t in tensors]).all():
        raise TrainingDiverged(
            f"training {method.name} diverged at step {step}: the {what} became NaN or "
            f"infinite; lower the learning rate (--lr, now {config.lr:g}) or warm up longer "
            f"(--warmup-steps, now {config.warmup_steps})")


def _set_aside_stale_run(out_dir: Path, identity: dict[str, Any], replace: bool, rank: int,
                         world: int) -> None:
    """Refuse a model or checkpoint in ``out_dir`` of another identity, or with ``replace``
    move it, its loss log and record into ``out_dir/stale/``."""
    for path in (out_dir / MODEL, out_dir / CHECKPOINT):  # a finished run speaks for the folder
        if path.exists():
            differences = _differences(load_checkpoint(path), identity)
            break
    else:
        return
    if not differences:
        return
    what = "; ".join(differences)
    if not replace:
        raise InputError(
            f"{path}: written by another training run ({what}); give another output folder, or "
            "--replace-stale to move that run into its stale/ folder and train afresh")
    if world > 1:
        dist.barrier()  # every process has read the stale files before they move
    if rank == 0:
        stale = out_dir / STALE
        shutil.rmtree(stale, ignore_errors=True)
        stale.mkdir()
        for name in (MODEL, CHECKPOINT, LOSS_LOG, RECORD):
            if (out_dir / name).exists():
                os.replace(out_dir / name, stale / name)
        log.warning("%s: another training run (%s) moved to %s; training afresh", out_dir, what,
                    stale)
    if world > 1:
        dist.barrier()


def _differences(state: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """How a saved state's run differs from ``identity`` (empty: the same run)."""
    differences = []
    for key in ("method", "options"):
        if _plain(state.get(key)) != identity[key]:
            differences.append(f"{key} {_plain(state.get(key))} != {identity[key]}")
    saved_data, data = _plain(state.get("dataset")) or {}, identity["dataset"]
    if saved_data.get("name") != data["name"]:
        differences.append(f"dataset {saved_data.get('name')!r} != {data['name']!r}")
    for split in ("train", "val"):
        if saved_data.get(split) != data[split]:
            differences.append(f"other {split} subjects")
    if saved_data.get("fingerprint") != data["fingerprint"]:
        differences.append(f"other data (fingerprint {str(saved_data.get('fingerprint'))[:12]} "
                           f"!= {data['fingerprint'][:12]})")
    saved, wanted = _plain(state["config"]), identity["config"]
    for key in sorted(set(saved) | set(wanted)):
        if key not in RUN_ONLY_FIELDS and saved.get(key) != wanted.get(key):
            differences.append(f"{key} {saved.get(key)!r} != {wanted.get(key)!r}")
    return differences


def _finish(method: LearnedMethod, network: torch.nn.Module, device: torch.device,
            model_path: Path) -> Path:
    network.eval()
    method.network = network
    method.to(device)
    return model_path


def _plain(value: Any) -> Any:
    """JSON-compatible copy (tuples become lists), so options compare as they are recorded."""
    return json.loads(json.dumps(value))
