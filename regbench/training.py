"""The shared trainer of every learned method.

IMPLEMENTATION PENDING (issue 3): ``train`` and ``load_checkpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Training hyper-parameters (defaults: PROTOCOL.md, scaled from epochs to steps)."""

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
