"""The training loop: the shared trainer of every learned method.

:func:`train` fits a :class:`~regbench.methods.LearnedMethod`'s network on random ordered pairs
of distinct subjects of a dataset's training split and writes into ``out_dir``::

    checkpoint.pt   latest state (network, optimizer, grad scaler, step, every RNG), written
                    every ``checkpoint_every`` steps; rerunning the same command resumes from it
    best.pt         the state of the validation with the highest Dice so far (when validating)
    final.pt        the state after the last step
    model.pt        the weights registration uses: ``best.pt``'s or ``final.pt``'s, by the
                    ``select`` setting (same format); written last: its presence marks a
                    finished training
    loss.csv        one row per step: step, loss, each loss part, lr, time_s (wall seconds)
    validation.csv  one row per validation: step, time_s, loss, dice_faim, dice_merged, eval_s
    train.json      config, options, seed, precision, versions, device, dataset, wall time

Choices the paper leaves open, and how they are made here:

* **Data.** Every training volume is read once into memory (a few hundred MB at full size).
  Pairs are drawn with replacement by a seeded generator of their own, so a resumed training
  draws the same pairs as an uninterrupted one; ``num_workers`` is recorded but unused (no loader
  needed).
* **Crop jitter.** Prepared volumes are already cropped to 160x192x160, so the protocol's
  +-``crop_jitter`` voxel jitter of the crop centre is emulated by shifting each volume by a
  random integer offset per axis, with edge (replicate) padding. As in the official Dual-PRNet
  code, the offset is drawn per volume, not per pair: moving and fixed also move relative to
  each other, by up to twice the jitter.
* **Flips** (``flip``, off by default as in the official code, which has the transform
  ``RandomFlip(axes=[0, 1, 2])`` commented out): each pair is flipped along one spatial axis or
  not at all, each with probability 1/4, both images alike; drawn by the pair sampler's seeded
  generator, so a resumed training flips as an uninterrupted one.
* **Validation.** Before the first step, every ``validate_every`` steps and after the last, the
  network registers a fixed set of ``validation_pairs`` ordered pairs as it will at test time
  (:meth:`~regbench.methods.LearnedMethod.run_network`), and the mean region Dice of the warped
  labels (both conventions, :mod:`regbench.metrics`) is logged to ``validation.csv`` beside
  ``loss.csv``. The pairs come from the dataset's ``val`` split, or from its training split when
  it has no ``val`` split: never from the test split.
* **Model selection** (``select``). A network can end worse than it was: on real LPBA40 with
  a constant learning rate of 1e-3, Dual-PRNet's validation Dice rose from 0.642 to 0.662 at step
  500 and fell to 0.590 at step 600, below no registration. With ``select: best`` (the default)
  ``model.pt`` holds the weights of the validation with the highest mean region Dice (FAIM; on a
  tie the latest), the untrained network of step 0 included, so a training that never helped
  says so; ``select: final`` keeps the last step. Both are kept (``best.pt``, ``final.pt``), and
  ``train.json`` records which step the model holds. The validation pairs are never test pairs,
  so the choice does not look at the test data.
* **Slice thinning.** ``moving_slice_step > 1`` trains on moving images thinned by
  :func:`regbench.degrade.thin_slices` (axis 1), the fixed images are kept whole.
* **Learning rate.** Step ``s`` (1-based) uses ``lr * min(1, s / warmup_steps)``: linear warm-up,
  then constant (the paper's), or with ``lr_schedule: cosine`` half a cosine from ``lr`` after the
  warm-up down to 0 at the last step (:func:`learning_rate`).
* **Data parallel.** Under ``torchrun`` (``WORLD_SIZE > 1``) the network is wrapped in
  ``DistributedDataParallel`` (NCCL on CUDA, Gloo on CPU). ``batch_size`` is the *global* batch
  (pairs per optimizer step, all processes together, as in the paper's "batch 4 on 4 GPUs"): it
  must be divisible by the number of processes, and process ``r`` takes the ``r``-th equal share
  of the pairs every process draws identically. Gradients are averaged over processes, so with
  batch-mean losses a step equals the single-process step on the whole batch (networks with batch
  normalisation differ: statistics are per process). Only rank 0 writes files; every process
  reads ``checkpoint.pt`` when resuming (one machine, or a shared file system).
* **Mixed precision** (``amp``, :func:`autocast_dtype`): ``torch.autocast`` with float16 and a
  ``GradScaler`` on CUDA, with bfloat16 on a CPU that computes it natively (its flags show
  AVX-512 BF16 or AMX), else float32; ``train.json`` records the ``precision`` that ran.
  Convolutions run in the low precision; the losses and the displacement fields stay float32.

Resuming restores the network, optimizer, grad scaler, step and the Python, NumPy, PyTorch and
pair-sampler RNG states, so on the CPU an interrupted and resumed training ends with exactly the
weights of an uninterrupted one.

A training's identity is its method, options, config and data
(:mod:`regbench.training.identity`). A folder holding ``model.pt`` of the same identity is a
finished training: :func:`train` returns at once. A checkpoint or model of a *different*
identity is refused, or with ``replace_stale`` moved with its loss log and record into
``out_dir/stale/`` (replacing an older one), and training starts afresh. Config
fields that do not change what is trained may differ (:data:`~regbench.training.config.
RUN_ONLY_FIELDS`), except that a resume needs the CPU threads of its checkpoint.

Only one process trains into a folder (:func:`regbench.io.output_lock`). SIGINT (Ctrl-C) or
SIGTERM (a batch system's time limit) ends the current step, writes ``checkpoint.pt`` and raises
:class:`TrainingInterrupted`; a second signal stops at once. Non-finite predicted fields or
weights raise :class:`TrainingDiverged` before anything is saved from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from regbench.checkpoint import (
    BEST,
    CHECKPOINT,
    FINAL,
    MODEL,
    load_checkpoint,
    save_checkpoint,
    set_rng_states,
    training_state,
)
from regbench.io import output_lock, write_json
from regbench.runtime import describe_device, seed_everything, set_threads, versions
from regbench.training.config import TrainConfig
from regbench.training.control import (
    StopRequest,
    TrainingInterrupted,
    autocast_dtype,
    check_finite,
    distributed,
    mean_over_processes,
    precision_name,
)
from regbench.training.data import PairSampler, TrainingVolumes
from regbench.training.identity import set_aside_stale_training, training_identity
from regbench.training.logs import LOSS_LOG, RECORD, VALIDATION_LOG, LossLog, truncate_log
from regbench.training.validation import Validation

if TYPE_CHECKING:
    from regbench.data.dataset import Dataset
    from regbench.methods import LearnedMethod

log = logging.getLogger(__name__)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (1-based): linear warm-up, then constant or
    (``lr_schedule: cosine``) half a cosine down to 0 at step ``config.steps``."""
    if step < config.warmup_steps:
        return config.lr * step / config.warmup_steps
    if config.lr_schedule == "constant" or config.steps <= config.warmup_steps:
        return config.lr
    progress = (step - config.warmup_steps) / (config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(method: LearnedMethod, dataset: Dataset, out_dir: str | os.PathLike,
          config: TrainConfig, *, replace_stale: bool = False) -> Path:
    """Train ``method``'s network (built afresh from the seed) on ``dataset``'s training split.

    Resumes from ``out_dir/checkpoint.pt`` when present; returns ``out_dir/model.pt``. On return
    ``method.network`` holds the trained network in eval mode on the training device.

    Args:
        replace_stale: move a model or checkpoint of another method, options, config or data
            into ``out_dir/stale/`` and train afresh (else it is refused).

    Raises:
        InputError: ``out_dir`` holds another training (without ``replace_stale``), cannot be
            written, or another process trains into it.
        TrainingDiverged: the predicted field or the weights became NaN or infinite.
        TrainingInterrupted: SIGINT or SIGTERM arrived; a checkpoint of the last step is written.
    """
    out_dir = Path(out_dir)
    with distributed(config) as (rank, world, device):
        lock = output_lock(out_dir) if rank == 0 else contextlib.nullcontext()
        with lock:
            return _train(method, dataset, out_dir, config, rank, world, device, replace_stale)


def _train(method: LearnedMethod, dataset: Dataset, out_dir: Path, config: TrainConfig,
           rank: int, world: int, device: torch.device, replace_stale: bool) -> Path:
    """One process's part of :func:`train`: set up, resumed, stepped and finished, or, when
    ``out_dir`` holds a finished training of this identity, that one's network handed over."""
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} is not divisible by the {world} "
                         "processes (the batch size is the global batch)")
    set_threads(config.threads)
    seed_everything(config.seed)
    network = method.build_network()
    identity = training_identity(method, config, dataset)
    set_aside_stale_training(out_dir, identity, replace_stale, rank, world)
    model_path = out_dir / MODEL
    if model_path.exists():
        log.info("%s: finished training of the same method, options, config and data; nothing "
                 "to do", model_path)
        network.load_state_dict(load_checkpoint(model_path)["network"])
        return _hand_over(method, network, device, model_path)
    training = _set_up(method, dataset, out_dir, config, rank, world, device, network, identity)
    _resume(training)
    _take_steps(training)
    return _finish(training)


@dataclasses.dataclass
class _Training:
    """What one process of a training holds from its set-up to its finish."""

    method: LearnedMethod
    dataset: Dataset
    out_dir: Path
    config: TrainConfig
    rank: int
    world: int
    device: torch.device
    identity: dict[str, Any]
    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    volumes: TrainingVolumes
    sampler: PairSampler
    validation: Validation | None
    amp_dtype: torch.dtype | None
    layout: torch.memory_format
    model: torch.nn.Module | None = None
    """What a step calls: the network, or under DDP its wrapper (made when resumed)."""
    start: int = 0
    resumed_at: list[int] = dataclasses.field(default_factory=list)
    best: dict[str, float] | None = None
    """``{"step", "dice_faim"}`` of the best validation so far."""
    began: float = 0.0
    """``time.perf_counter()`` at step 0, the wall time of earlier sessions included."""
    validation_log: LossLog | None = None
    """``validation.csv``, open while steps are taken (rank 0, when validating)."""

    @property
    def share(self) -> int:
        """Pairs of the global batch this process steps on."""
        return self.config.batch_size // self.world

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def state(self, step: int) -> dict[str, Any]:
        """The checkpoint of this training at ``step``."""
        return training_state(self.identity, self.network, self.optimizer, self.scaler,
                              self.sampler.rng, step, self.elapsed(), self.resumed_at, self.best)

    def validate(self, step: int) -> dict[str, float]:
        """Validate the network at ``step``, log it, and keep it in ``best.pt`` when its Dice is
        the highest so far (the latest on a tie)."""
        record = self.validation.run(self.method, step, self.elapsed())
        self.validation_log.append(record)
        if self.best is None or record["dice_faim"] >= self.best["dice_faim"]:
            self.best = {"step": step, "dice_faim": record["dice_faim"]}
            save_checkpoint(self.state(step), self.out_dir / BEST)
        self.network.train()
        return record


def _set_up(method: LearnedMethod, dataset: Dataset, out_dir: Path, config: TrainConfig,
            rank: int, world: int, device: torch.device, network: torch.nn.Module,
            identity: dict[str, Any]) -> _Training:
    """A training at step 0: the network on its device, its optimizer and grad scaler, the
    training volumes, the pair sampler and (rank 0) the validation."""
    amp_dtype = autocast_dtype(config.amp, device)
    # Low-precision convolutions run faster on channels-last tensors (oneDNN, cuDNN): measured
    # on the demo's CPU, a VoxelMorph step 14-23 % and a Dual-PRNet step 5-9 % faster.
    layout = torch.channels_last_3d if amp_dtype is not None else torch.contiguous_format
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
    return _Training(method, dataset, out_dir, config, rank, world, device, identity, network,
                     optimizer, scaler, volumes, sampler, validation, amp_dtype, layout)


def _resume(training: _Training) -> None:
    """Bring ``training`` to its first step to take: the state of ``checkpoint.pt`` if there is
    one, the logs cut back to it, the network wrapped for data parallel, the clock running."""
    checkpoint_path = training.out_dir / CHECKPOINT
    elapsed = 0.0
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        training.network.load_state_dict(state["network"])
        training.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] and training.scaler.is_enabled():
            training.scaler.load_state_dict(state["scaler"])
        set_rng_states(state["rng"], training.sampler.rng)
        training.start, elapsed = state["step"], state["elapsed_s"]
        training.resumed_at = [*state["resumed_at"], training.start]
        training.best = state.get("best")
        log.info("resuming %s from %s at step %d", training.method.name, checkpoint_path,
                 training.start)
    if training.rank == 0:
        training.out_dir.mkdir(parents=True, exist_ok=True)
        for log_name in (LOSS_LOG, VALIDATION_LOG):
            truncate_log(training.out_dir / log_name, training.start)
    training.model = training.network
    if training.world > 1:
        device = training.device
        training.model = torch.nn.parallel.DistributedDataParallel(
            training.network, device_ids=[device.index] if device.type == "cuda" else None)
    training.network.train()
    training.began = time.perf_counter() - elapsed


def _take_steps(training: _Training) -> None:
    """Every step from the one after ``training.start`` to the last, each logged, validated and
    checkpointed at its interval; a stop request ends it with a checkpoint of its step."""
    config, method, rank = training.config, training.method, training.rank
    logger = LossLog(training.out_dir / LOSS_LOG) if rank == 0 else None
    if training.validation is not None:
        training.validation_log = LossLog(training.out_dir / VALIDATION_LOG)
    method.network = training.network  # validation registers with it as registration will
    if training.validation is not None and training.start == 0:  # the untrained network
        training.validate(0)
    steps = tqdm(range(training.start + 1, config.steps + 1), initial=training.start,
                 total=config.steps, desc=f"train {method.name}", unit="step",
                 disable=rank != 0)
    checkpoint_path = training.out_dir / CHECKPOINT
    stop = StopRequest(method.name).install()
    try:
        for step in steps:
            values = _step(training, step)
            if logger is not None:
                logger.append({"step": step, **values, "time_s": training.elapsed()})
                steps.set_postfix(loss=f"{values['loss']:.4f}")
            if training.validation is not None and (step % config.validate_every == 0
                                                    or step == config.steps):
                record = training.validate(step)
                steps.set_postfix(loss=f"{values['loss']:.4f}",
                                  dice=f"{record['dice_faim']:.3f}")
                log.info("step %d: validation Dice %.4f (FAIM), %.4f (merged) on %d pairs", step,
                         record["dice_faim"], record["dice_merged"],
                         len(training.validation.pairs))
            stopping = step < config.steps and stop.requested(training.world)
            if rank == 0 and step < config.steps and (stopping or
                                                      step % config.checkpoint_every == 0):
                save_checkpoint(training.state(step), checkpoint_path)
            if stopping:
                raise TrainingInterrupted(
                    f"training {method.name} stopped at step {step} of {config.steps} "
                    f"({signal.Signals(stop.signum).name}); {checkpoint_path} holds that step: "
                    "run the same command again to resume", stop.signum)
    finally:
        stop.restore()
        for open_log in (logger, training.validation_log):
            if open_log is not None:
                open_log.close()


def _step(training: _Training, step: int) -> dict[str, float]:
    """One optimizer step (``step`` is 1-based) on this process's share of a drawn batch.

    Returns:
        What ``loss.csv`` logs of it: ``loss``, each loss part, ``lr``; the losses averaged over
        the processes.
    """
    config, method, network = training.config, training.method, training.network
    chosen = slice(training.rank * training.share, (training.rank + 1) * training.share)
    draws = training.sampler.draw(config.batch_size)[chosen]
    flips = training.sampler.flips(config.batch_size)[chosen] if config.flip else None
    moving, fixed = (volume.contiguous(memory_format=training.layout)
                     for volume in training.volumes.batch(draws, config.crop_jitter,
                                                           method.size_multiple, training.device,
                                                           flips))
    lr = learning_rate(step, config)
    for group in training.optimizer.param_groups:
        group["lr"] = lr
    training.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(training.device.type, dtype=training.amp_dtype,
                        enabled=training.amp_dtype is not None):
        outputs = training.model(moving, fixed)
        check_finite("predicted field", [outputs["field"]], method, step, config)
        loss, parts = method.loss(outputs, moving, fixed)
    check_finite("loss", [loss], method, step, config)
    training.scaler.scale(loss).backward()
    if config.clip_grad_norm:
        training.scaler.unscale_(training.optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), config.clip_grad_norm)
    training.scaler.step(training.optimizer)
    training.scaler.update()
    check_finite("weights", list(network.parameters()), method, step, config)
    values = mean_over_processes([loss.detach().float(), *parts.values()], training.world)
    return {"loss": values[0], **dict(zip(parts, values[1:], strict=True)), "lr": lr}


def _finish(training: _Training) -> Path:
    """After the last step: ``final.pt``, the weights ``select`` keeps, ``train.json``, and
    ``model.pt`` last (rank 0); every process returns once it exists."""
    config, method, out_dir = training.config, training.method, training.out_dir
    model_path = out_dir / MODEL
    if training.rank == 0:
        elapsed = training.elapsed()
        final = training.state(config.steps)
        save_checkpoint(final, out_dir / FINAL)
        kept = _selected(training, final)
        identity, best = training.identity, training.best
        recorded = dict(identity["config"])
        if training.validation is not None:  # the pairs used: fewer where fewer exist
            recorded["validation_pairs"] = len(training.validation.pairs)
        write_json(out_dir / RECORD, {
            "method": method.name, "label": method.label, "options": identity["options"],
            "config": recorded, "seed": config.seed, "steps": config.steps,
            "world_size": training.world, "batch_per_process": training.share,
            "precision": precision_name(training.amp_dtype),
            "device": describe_device(training.device), "versions": versions(),
            "dataset": {**identity["dataset"], "root": str(training.dataset.root)},
            "resumed_at": training.resumed_at, "wall_time_s": elapsed, "model": MODEL,
            "selected": {"rule": config.select if best is not None else "final",
                         "step": int(kept["step"]), "best_validation": best},
        })
        save_checkpoint({**kept, "finished": True}, model_path)  # last: marks a finished training
        log.info("trained %s for %d steps in %.1f s: %s", method.name, config.steps, elapsed,
                 model_path)
    if training.world > 1:
        dist.barrier()  # every process returns once model.pt exists
    return _hand_over(method, training.network, training.device, model_path)


def _selected(training: _Training, final: dict[str, Any]) -> dict[str, Any]:
    """The state ``model.pt`` keeps: ``final``, or with ``select: best`` that of the best
    validation (``best.pt``), whose weights the network then takes."""
    best, out_dir, method = training.best, training.out_dir, training.method
    if training.config.select != "best" or best is None or best["step"] >= training.config.steps:
        return final
    kept = load_checkpoint(out_dir / BEST)
    if kept["step"] != best["step"]:  # only a non-deterministic resume can do this
        raise RuntimeError(f"{out_dir / BEST} holds step {kept['step']}, but the best "
                           f"validation was step {best['step']}; train afresh, or "
                           "use --select final")
    training.network.load_state_dict(kept["network"])
    log.warning("%s: model.pt holds step %d (validation Dice %.4f, FAIM), the best "
                "validated; the last step's weights are in %s", method.name,
                best["step"], best["dice_faim"], FINAL)
    if best["step"] == 0:
        log.warning("%s: no trained step validated above the untrained network: "
                    "training did not help", method.name)
    return kept


def _hand_over(method: LearnedMethod, network: torch.nn.Module, device: torch.device,
               model_path: Path) -> Path:
    """Give ``method`` its trained ``network``, in eval mode on ``device``."""
    network.eval()
    method.network = network
    method.to(device)
    return model_path
