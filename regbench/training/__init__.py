"""The shared trainer of every learned method, one concept a module.

- :mod:`~regbench.training.config`: every setting, written once (pure Python);
- :mod:`~regbench.training.checkpoint`: the checkpoint format and a run's identity;
- :mod:`~regbench.training.data`: the training images and the seeded pairs;
- :mod:`~regbench.training.validation`: validation pairs and their scoring;
- :mod:`~regbench.training.logs`: ``loss.csv`` and ``validation.csv``;
- :mod:`~regbench.training.control`: processes (DDP), precision, signals, divergence;
- :mod:`~regbench.training.loop`: :func:`train`.

The names below are importable from ``regbench.training`` itself; each submodule is imported
when one of its names is first used, so that the workflow imports the config alone without
PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "config": ("SETTINGS", "RUN_ONLY_FIELDS", "Setting", "TrainConfig"),
    "checkpoint": ("BEST", "CHECKPOINT", "FINAL", "MODEL", "STALE", "checkpoint_record",
                   "load_checkpoint"),
    "control": ("TrainingDiverged", "TrainingInterrupted", "autocast_dtype", "precision_name"),
    "data": ("PairSampler", "TrainingVolumes"),
    "logs": ("LOSS_LOG", "RECORD", "VALIDATION_LOG"),
    "loop": ("learning_rate", "train"),
    "validation": ("Validation", "validation_pairs"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
