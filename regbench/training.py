"""The shared trainer of every learned method.

:func:`train` fits a :class:`~regbench.methods.LearnedMethod`'s network on random ordered pairs
of distinct subjects of a dataset's training split and writes into ``out_dir``::

    checkpoint.pt   latest state (network, optimizer, grad scaler, step, every RNG), written
                    every ``checkpoint_every`` steps; rerunning the same command resumes from it
    model.pt        the final state (same format), written last: its presence marks a finished run
    loss.csv        one row per step: step, loss, each loss part, lr, time_s (wall seconds)
    validation.csv  one row per validation: step, time_s, loss, dice_faim, dice_merged, eval_s
    train.json      config, options, seed, versions, device, dataset, wall time

Choices the paper leaves open, and how they are made here:

* **Data.** Every training volume is read once into memory (a few hundred MB at full size).
  Pairs are drawn with replacement by a seeded generator of their own, so a resumed run draws the
  same pairs as an uninterrupted one; ``num_workers`` is recorded but unused (no loader needed).
* **Crop jitter.** Prepared volumes are already cropped to 160x192x160, so the protocol's
  +-``crop_jitter`` voxel jitter of the crop centre is emulated by shifting each volume by a
  random integer offset per axis, with edge (replicate) padding. As in the official Dual-PRNet
  code, the offset is drawn per volume, not per pair: moving and fixed also move relative to
  each other, by up to twice the jitter.
* **Validation.** Before the first step, every ``validate_every`` steps and after the last, the
  network registers a fixed set of ``validation_pairs`` ordered pairs as it will at test time
  (Dual-PRNet: batch statistics), and the mean region Dice of the warped labels (both conventions,
  :mod:`regbench.metrics`) is logged to ``validation.csv`` beside ``loss.csv``. The pairs come
  from the dataset's ``val`` split, or from its training split when it has no ``val`` split:
  never from the test split. Validation only monitors: nothing is selected by it.
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
* **Mixed precision** (``amp``, :func:`autocast_dtype`): ``torch.autocast`` with float16 and a
  ``GradScaler`` on CUDA, with bfloat16 on a CPU that computes it natively. Convolutions run in
  the low precision; the losses and the displacement fields stay float32.

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
import itertools
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
VALIDATION_LOG = "validation.csv"
RECORD = "train.json"
STALE = "stale"
"""Folder inside the output folder that receives a run of another identity (``replace_stale``)."""
CHECKPOINT_FORMAT = 1

RUN_ONLY_FIELDS = ("checkpoint_every", "device", "threads", "num_workers", "validate_every",
                   "validation_pairs")
"""Config fields that do not change the trained weights (may differ when resuming)."""


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: docs/protocol.md, scaled from epochs to steps).

    ``batch_size`` is the global batch: pairs per optimizer step over all processes.
    ``validate_every`` (0: never) and ``validation_pairs`` set the validation (module docstring).
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
    validate_every: int = 0
    validation_pairs: int = 6
    device: str = "auto"
    threads: int | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        minimums = {"steps": 1, "batch_size": 1, "checkpoint_every": 1, "moving_slice_step": 1,
                    "warmup_steps": 0, "crop_jitter": 0, "num_workers": 0, "validate_every": 0,
                    "validation_pairs": 1}
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The mixed-precision type of training on ``device``, or ``None`` for float32.

    With ``amp``: float16 on CUDA; bfloat16 on a CPU that computes it natively (oneDNN on AVX-512
    BF16 or AMX; elsewhere bfloat16 is emulated, slower than float32, and is not used).
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


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

    amp_dtype = autocast_dtype(config.amp, device)
    use_amp = amp_dtype is not None
    # Low-precision convolutions run faster on channels-last tensors (oneDNN, cuDNN): measured
    # on the demo's CPU, a VoxelMorph step 14-23 % and a Dual-PRNet step 5-9 % faster.
    layout = torch.channels_last_3d if use_amp else torch.contiguous_format
    network.to(device, memory_format=layout)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    # float16 needs its gradients scaled; bfloat16 has float32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    volumes = TrainingVolumes(dataset, config.moving_slice_step)
    sampler = PairSampler(len(volumes), config.seed, config.crop_jitter)
    validation = None
    if rank == 0 and config.validate_every:
        validation = Validation(dataset, config.validation_pairs, config.moving_slice_step)
    start, elapsed, resumed_at = 0, 0.0, []
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        _set_rng_states(state["rng"], sampler)
        start, elapsed = state["step"], state["elapsed_s"]
        resumed_at = [*state["resumed_at"], start]
        log.info("resuming %s from %s at step %d", method.name, checkpoint_path, start)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        for log_name in (LOSS_LOG, VALIDATION_LOG):
            _truncate_loss_log(out_dir / log_name, start)

    model = network
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)
    share = config.batch_size // world
    network.train()
    began = time.perf_counter() - elapsed
    logger = LossLog(out_dir / LOSS_LOG) if rank == 0 else None
    validation_log = LossLog(out_dir / VALIDATION_LOG) if validation is not None else None
    method.network = network  # validation registers with it as registration will
    if validation is not None and start == 0:  # the starting point: the untrained network
        validation_log.append(validation.run(method, 0, 0.0))
        network.train()
    steps = tqdm(range(start + 1, config.steps + 1), initial=start, total=config.steps,
                 desc=f"train {method.name}", unit="step", disable=rank != 0)
    stop = _StopRequest(method.name).install()
    try:
        for step in steps:
            draws = sampler.draw(config.batch_size)[rank * share:(rank + 1) * share]
            moving, fixed = (volume.contiguous(memory_format=layout) for volume in volumes.batch(
                draws, config.crop_jitter, method.size_multiple, device))
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
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
            if validation is not None and (step % config.validate_every == 0
                                           or step == config.steps):
                record = validation.run(method, step, time.perf_counter() - began)
                validation_log.append(record)
                steps.set_postfix(loss=f"{values[0]:.4f}", dice=f"{record['dice_faim']:.3f}")
                log.info("step %d: validation Dice %.4f (FAIM), %.4f (merged) on %d pairs", step,
                         record["dice_faim"], record["dice_merged"], len(validation.pairs))
                network.train()
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
        for open_log in (logger, validation_log):
            if open_log is not None:
                open_log.close()
    if rank == 0:
        elapsed = time.perf_counter() - began
        final = _state(identity, network, optimizer, scaler, sampler, config.steps, elapsed,
                       resumed_at)
        write_json(out_dir / RECORD, {
            "method": method.name, "label": method.label, "options": identity["options"],
            "config": identity["config"], "seed": config.seed, "steps": config.steps,
            "world_size": world, "batch_per_process": share,
            "amp": str(amp_dtype).removeprefix("torch.") if use_amp else None,
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

    def batch(self, draws: list[Draw], jitter: int, multiple: int, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(moving, fixed)``, each ``(B, 1, *S)`` zero-padded to a multiple of ``multiple``."""
        from regbench.methods import pad_to_multiple

        moving = torch.cat([_shift(self.moving[m:m + 1], offset, jitter)
                            for m, _, offset, _ in draws])
        fixed = torch.cat([_shift(self.fixed[f:f + 1], offset, jitter)
                           for _, f, _, offset in draws])
        pair, _ = pad_to_multiple(torch.cat([moving, fixed], 1).to(device), multiple)
        return pair[:, :1], pair[:, 1:]


class Validation:
    """A fixed set of ordered validation pairs, read once, and their scoring during training.

    Args:
        dataset: the prepared dataset; pairs come from its ``val`` split when it has 2 subjects
            or more, else from its training split, never from its test split.
        count: how many ordered pairs, spread evenly over every ordered pair of those subjects.
        slice_step: moving images thinned as in training (:func:`regbench.degrade.thin_slices`).
    """

    def __init__(self, dataset: Dataset, count: int, slice_step: int = 1) -> None:
        self.pairs = validation_pairs(dataset, count)
        self.regions = dataset.regions
        subjects = sorted({s for pair in self.pairs for s in pair})
        self.images = {s: dataset.image(s) for s in subjects}
        self.labels = {s: dataset.label_map(s) for s in subjects}
        self.moving = self.images
        if slice_step > 1:
            from regbench.degrade import thin_slices

            self.moving = {s: thin_slices(image, step=slice_step, axis=1)
                           for s, image in self.images.items()}

    def run(self, method: LearnedMethod, step: int, elapsed: float) -> dict[str, Any]:
        """Register every pair with ``method.network`` (left in eval mode) and score it: the
        ``validation.csv`` row ``{step, time_s, dice_faim, dice_merged, eval_s}``."""
        from regbench import metrics
        from regbench.transforms import warp_labels

        began = time.perf_counter()
        faim, merged = [], []
        for moving, fixed in self.pairs:
            outputs, crop = method.run_network(self.moving[moving], self.images[fixed])
            field = outputs["field"][(slice(None), slice(None), *crop)].float().cpu()
            labels = torch.from_numpy(self.labels[moving])[None, None]
            warped = warp_labels(labels, field)[0, 0].numpy()
            faim.append(metrics.nanmean(
                metrics.region_dice_faim(warped, self.labels[fixed], self.regions).values()))
            merged.append(metrics.nanmean(
                metrics.region_dice_merged(warped, self.labels[fixed], self.regions).values()))
        return {"step": step, "time_s": elapsed, "dice_faim": float(np.mean(faim)),
                "dice_merged": float(np.mean(merged)), "eval_s": time.perf_counter() - began}


def validation_pairs(dataset: Dataset, count: int) -> list[tuple[str, str]]:
    """``count`` ordered pairs (moving, fixed) of the ``val`` split (the training split when the
    dataset has fewer than 2 validation subjects), evenly spread over all its ordered pairs."""
    subjects = dataset.val if len(dataset.val) >= 2 else dataset.train
    overlap = sorted(set(subjects) & set(dataset.test))
    if overlap:
        raise InputError(f"{dataset.root}: subjects {overlap} are in the test split and in the "
                         "split validation draws from")
    pairs = list(itertools.permutations(subjects, 2))
    if count >= len(pairs):
        return pairs
    return [pairs[i] for i in np.linspace(0, len(pairs) - 1, count).round().astype(int)]


Offset = tuple[int, int, int]
Draw = tuple[int, int, Offset, Offset]
"""A training pair: moving index, fixed index, and each volume's own crop-jitter offset."""


class PairSampler:
    """Seeded ordered pairs of distinct subjects, each volume with its own crop-jitter offset."""

    def __init__(self, subjects: int, seed: int, jitter: int = 0) -> None:
        self.subjects = subjects
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)

    def draw(self, count: int) -> list[Draw]:
        """``count`` draws of ``(moving index, fixed index, moving offset, fixed offset)``, each
        offset ``(dx, dy, dz)`` in ``[-jitter, jitter]``."""
        draws = []
        for _ in range(count):
            moving = int(self.rng.integers(self.subjects))
            fixed = int(self.rng.integers(self.subjects - 1))
            fixed += fixed >= moving
            offsets = self.rng.integers(-self.jitter, self.jitter + 1, (2, 3)).tolist()
            draws.append((moving, fixed, tuple(offsets[0]), tuple(offsets[1])))
        return draws


def _shift(volume: torch.Tensor, offset: Offset, jitter: int) -> torch.Tensor:
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
