"""The checkpoint format and a training run's identity.

A checkpoint holds the identity of its run (method, options, config, data, CPU threads) and the
training state (network, optimizer, grad scaler, step, every RNG). A run's identity is its
method, options, config and data: the dataset's name, its training and validation subjects, and a
fingerprint of their files (:meth:`regbench.data.dataset.Dataset.fingerprint`), so data prepared
again with another seed under the same subject IDs is another run. Config fields that do not
change what is trained may differ (:data:`regbench.training.config.RUN_ONLY_FIELDS`), but a
resume (a checkpoint without a finished model) also needs the CPU threads of its checkpoint:
other threads sum in another order and end in other weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from regbench.io import InputError, atomic_path
from regbench.training.config import RUN_ONLY_FIELDS, TrainConfig
from regbench.training.logs import LOSS_LOG, RECORD

if TYPE_CHECKING:
    from regbench.data.dataset import Dataset
    from regbench.methods import LearnedMethod
    from regbench.training.data import PairSampler

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
BEST = "best.pt"
FINAL = "final.pt"
STALE = "stale"
"""Folder inside the output folder that receives a run of another identity (``replace_stale``)."""
CHECKPOINT_FORMAT = 1


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (``checkpoint.pt`` or ``model.pt``), on the CPU.

    Keys: ``method``, ``options``, ``network`` (state dict), ``optimizer``, ``scaler``, ``step``,
    ``rng`` (``python``, ``numpy``, ``torch``, ``cuda``, ``sampler``), ``config`` (a
    :class:`TrainConfig` as a dict), ``dataset`` (``name``, ``train`` and ``val`` subject IDs,
    ``fingerprint`` of their files),
    ``elapsed_s`` (wall seconds of training so far), ``resumed_at`` (steps resumed from),
    ``best`` (step and validation Dice of the best validation so far, or ``None``),
    ``finished`` (``model.pt`` only), ``format``.
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


def checkpoint_record(path: str | os.PathLike, state: dict[str, Any]) -> dict[str, Any]:
    """What a registration records of the checkpoint it used: ``{"sha256", "step", "steps",
    "finished"}`` (the file's hash, the step whose weights it holds, the steps of its training
    run, whether that run finished: a ``model.pt`` of ``select: best`` may hold an earlier step)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    steps = int(state["config"]["steps"])
    return {"sha256": digest.hexdigest(), "step": int(state["step"]), "steps": steps,
            "finished": bool(state.get("finished", int(state["step"]) >= steps))}


def run_identity(method: LearnedMethod, config: TrainConfig, dataset: Dataset) -> dict[str, Any]:
    """What makes a training run itself: method, options, config, data and this process's CPU
    threads (set before this is called)."""
    return {"method": method.name, "options": plain(method.options),
            "config": plain(dataclasses.asdict(config)),
            "threads": torch.get_num_threads(),
            "dataset": {"name": dataset.name, "train": list(dataset.train),
                        "val": list(dataset.val),
                        "fingerprint": dataset.fingerprint([*dataset.train, *dataset.val])}}


def training_state(identity: dict[str, Any], network: torch.nn.Module,
           optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, sampler: PairSampler,
           step: int, elapsed: float, resumed_at: list[int],
           best: dict[str, float] | None = None) -> dict[str, Any]:
    """The checkpoint: ``identity`` (method, options, config, dataset) and the training state;
    ``best``: the step and validation Dice of the best validation so far (``None``: none)."""
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
        "best": best,
    }


def set_rng_states(rng: dict[str, Any], sampler: PairSampler) -> None:
    random.setstate(rng["python"])
    numpy_state = dict(rng["numpy"])
    numpy_state["state"] = {**numpy_state["state"],
                            "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(numpy_state)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    sampler.rng.bit_generator.state = rng["sampler"]


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError as err:  # torch's writer reports a full disk as a RuntimeError
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: cannot write the checkpoint ({reason}); check that its disk "
                         "has free space and the folder is writable") from None
    log.debug("wrote %s (step %d)", path, state["step"])


def set_aside_stale_run(out_dir: Path, identity: dict[str, Any], replace: bool, rank: int,
                         world: int) -> None:
    """Refuse a model or checkpoint in ``out_dir`` of another identity, or with ``replace``
    move it, its loss log and record into ``out_dir/stale/``."""
    for path in (out_dir / MODEL, out_dir / CHECKPOINT):  # a finished run speaks for the folder
        if path.exists():
            found = differences(load_checkpoint(path), identity,
                                resuming=path.name == CHECKPOINT)
            break
    else:
        return
    if not found:
        return
    what = "; ".join(found)
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
        for name in (MODEL, CHECKPOINT, BEST, FINAL, LOSS_LOG, RECORD):
            if (out_dir / name).exists():
                os.replace(out_dir / name, stale / name)
        log.warning("%s: another training run (%s) moved to %s; training afresh", out_dir, what,
                    stale)
    if world > 1:
        dist.barrier()


def differences(state: dict[str, Any], identity: dict[str, Any], resuming: bool = False
                 ) -> list[str]:
    """How a saved state's run differs from ``identity`` (empty: the same run).

    ``resuming`` (a checkpoint, not a finished model): the CPU threads must be the same too,
    since other threads sum in another order and end in other weights.
    """
    differences = []
    if resuming and state.get("threads", identity["threads"]) != identity["threads"]:
        differences.append(f"threads {state['threads']} != {identity['threads']}: a resume with "
                           f"other threads ends in other weights; resume with --threads "
                           f"{state['threads']}")
    for key in ("method", "options"):
        if plain(state.get(key)) != identity[key]:
            differences.append(f"{key} {plain(state.get(key))} != {identity[key]}")
    saved_data, data = plain(state.get("dataset")) or {}, identity["dataset"]
    if saved_data.get("name") != data["name"]:
        differences.append(f"dataset {saved_data.get('name')!r} != {data['name']!r}")
    for split in ("train", "val"):
        if saved_data.get(split) != data[split]:
            differences.append(f"other {split} subjects")
    if saved_data.get("fingerprint") != data["fingerprint"]:
        differences.append(f"other data (fingerprint {str(saved_data.get('fingerprint'))[:12]} "
                           f"!= {data['fingerprint'][:12]})")
    saved, wanted = plain(state["config"]), identity["config"]
    for key in sorted(set(saved) | set(wanted)):
        if key not in RUN_ONLY_FIELDS and saved.get(key) != wanted.get(key):
            differences.append(f"{key} {saved.get(key)!r} != {wanted.get(key)!r}")
    return differences


def plain(value: Any) -> Any:
    """JSON-compatible copy (tuples become lists), so options compare as they are recorded."""
    return json.loads(json.dumps(value))
