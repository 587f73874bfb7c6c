"""A training's identity, and what becomes of a training of another identity in its folder.

A *training* is one fit of a learned method's network into one output folder. Every checkpoint
(:mod:`regbench.checkpoint`) holds the identity of its training (method, options, config, data,
CPU threads) beside the training state. A training's identity is its method, options, config
and data: the dataset's name, its training and validation subjects, and a fingerprint of their
files (:meth:`regbench.data.dataset.Dataset.fingerprint`), so data prepared again with another
seed under the same subject IDs is another training. Config fields that do not change what is
trained may differ (:data:`regbench.training.config.RUN_ONLY_FIELDS`), but a resume (a
checkpoint without a finished model) also needs the CPU threads of its checkpoint: other threads
sum in another order and end in other weights.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from regbench.checkpoint import BEST, CHECKPOINT, FINAL, MODEL, load_checkpoint, plain
from regbench.io import InputError
from regbench.training.config import RUN_ONLY_FIELDS, TrainConfig
from regbench.training.logs import LOSS_LOG, RECORD

if TYPE_CHECKING:
    from regbench.data.dataset import Dataset
    from regbench.methods import LearnedMethod

log = logging.getLogger(__name__)

STALE = "stale"
"""Folder inside the output folder that receives a training of another identity
(``replace_stale``)."""


def training_identity(method: LearnedMethod, config: TrainConfig,
                      dataset: Dataset) -> dict[str, Any]:
    """What makes a training itself: method, options, config, data and this process's CPU
    threads (set before this is called)."""
    return {"method": method.name, "options": plain(method.options),
            "config": plain(dataclasses.asdict(config)),
            "threads": torch.get_num_threads(),
            "dataset": {"name": dataset.name, "train": list(dataset.train),
                        "val": list(dataset.val),
                        "fingerprint": dataset.fingerprint([*dataset.train, *dataset.val])}}


def set_aside_stale_training(out_dir: Path, identity: dict[str, Any], replace: bool, rank: int,
                             world: int) -> None:
    """Refuse a model or checkpoint in ``out_dir`` of another identity, or with ``replace``
    move it, its loss log and record into ``out_dir/stale/``."""
    # A finished training speaks for the folder.
    for path in (out_dir / MODEL, out_dir / CHECKPOINT):
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
            f"{path}: written by another training ({what}); give another output folder, or "
            "--replace-stale to move that training into its stale/ folder and train afresh")
    if world > 1:
        dist.barrier()  # every process has read the stale files before they move
    if rank == 0:
        stale = out_dir / STALE
        shutil.rmtree(stale, ignore_errors=True)
        stale.mkdir()
        for name in (MODEL, CHECKPOINT, BEST, FINAL, LOSS_LOG, RECORD):
            if (out_dir / name).exists():
                os.replace(out_dir / name, stale / name)
        log.warning("%s: another training (%s) moved to %s; training afresh", out_dir, what,
                    stale)
    if world > 1:
        dist.barrier()


def differences(state: dict[str, Any], identity: dict[str, Any], resuming: bool = False
                 ) -> list[str]:
    """How a saved state's training differs from ``identity`` (empty: the same training).

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
