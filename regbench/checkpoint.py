"""The checkpoint format: the one file the trainer writes and registration reads.

A checkpoint (``checkpoint.pt`` while training, ``model.pt`` when finished) holds the identity of
its training (method, options, config, data, CPU threads; :mod:`regbench.training.identity`) and
the training state (network, optimizer, grad scaler, step, every RNG). This module sits below
both :mod:`regbench.methods`, which rebuilds a trained method from one, and
:mod:`regbench.training`, which writes them, and imports neither.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regbench.io import InputError, atomic_path, file_sha256

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
BEST = "best.pt"
FINAL = "final.pt"
CHECKPOINT_FORMAT = 1


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by the trainer (``checkpoint.pt`` or ``model.pt``), on the CPU.

    Keys: ``method``, ``options``, ``network`` (state dict), ``optimizer``, ``scaler``, ``step``,
    ``rng`` (``python``, ``numpy``, ``torch``, ``cuda``, ``sampler``), ``config`` (a
    :class:`~regbench.training.config.TrainConfig` as a dict), ``dataset`` (``name``, ``train``
    and ``val`` subject IDs, ``fingerprint`` of their files), ``threads``,
    ``elapsed_s`` (wall seconds of training so far), ``resumed_at`` (steps resumed from),
    ``best`` (step and validation Dice of the best validation so far, or ``None``),
    ``finished`` (``model.pt`` only), ``format``.

    Raises:
        InputError: the file is missing, unreadable, or not a regbench checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found")
    try:
        # weights_only: a checkpoint is data, never code to run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise InputError(f"{path}: not a readable regbench checkpoint ({_first_line(err)})"
                         ) from None
    missing = {"format", "method", "options", "network", "step", "config"} - set(
        state if isinstance(state, dict) else ())
    if missing:
        raise InputError(f"{path}: not a regbench checkpoint (missing {sorted(missing)})")
    return state


def _first_line(err: Exception) -> str:
    """What a one-line error says of ``torch.load``'s failure: the first line of its message
    (its weights-only refusal runs to a paragraph advising ``weights_only=False``, which a
    checkpoint, being data, never needs)."""
    lines = str(err).strip().splitlines()
    first = lines[0].strip() if lines else type(err).__name__
    if first.startswith("Weights only load failed"):
        return "not a PyTorch file of tensors and plain data"
    return first


def checkpoint_record(path: str | os.PathLike, state: dict[str, Any]) -> dict[str, Any]:
    """What a registration records of the checkpoint it used: ``{"sha256", "step", "steps",
    "finished"}`` (the file's hash, the step whose weights it holds, the steps of its training,
    whether that training finished: a ``model.pt`` of ``select: best`` may hold an earlier
    step)."""
    steps = int(state["config"]["steps"])
    return {"sha256": file_sha256(path), "step": int(state["step"]), "steps": steps,
            "finished": bool(state.get("finished", int(state["step"]) >= steps))}


def training_state(identity: dict[str, Any], network: torch.nn.Module,
                   optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   sampler_rng: np.random.Generator, step: int, elapsed: float,
                   resumed_at: list[int], best: dict[str, float] | None = None) -> dict[str, Any]:
    """The checkpoint: ``identity`` (method, options, config, dataset, threads) and the training
    state, with the pair sampler's generator ``sampler_rng`` among the RNGs; ``best``: the step
    and validation Dice of the best validation so far (``None``: none)."""
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
            "sampler": sampler_rng.bit_generator.state,
        },
        "elapsed_s": elapsed,
        "resumed_at": resumed_at,
        "best": best,
    }


def set_rng_states(rng: dict[str, Any], sampler_rng: np.random.Generator) -> None:
    """Restore every RNG of a checkpoint's ``rng``, the pair sampler's into ``sampler_rng``."""
    random.setstate(rng["python"])
    numpy_state = dict(rng["numpy"])
    numpy_state["state"] = {**numpy_state["state"],
                            "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(numpy_state)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    sampler_rng.bit_generator.state = rng["sampler"]


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically.

    Raises:
        InputError: it cannot be written (a full disk, a read-only folder).
    """
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError as err:  # torch's writer reports a full disk as a RuntimeError
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: cannot write the checkpoint ({reason}); check that its disk "
                         "has free space and the folder is writable") from None
    log.debug("wrote %s (step %d)", path, state["step"])


def plain(value: Any) -> Any:
    """JSON-compatible copy (tuples become lists), so options compare as a checkpoint and the
    run records hold them."""
    return json.loads(json.dumps(value))
