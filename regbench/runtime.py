"""Where and with what a result was computed: device, versions, seeding."""

from __future__ import annotations

import os
import platform
import random
from importlib import metadata

import numpy as np
import torch

from regbench.io import InputError

TRACKED_PACKAGES = ("regbench", "torch", "antspyx", "voxelmorph", "numpy", "scipy", "nibabel")


def pick_device(name: str = "auto") -> torch.device:
    """The device ``name`` names, checked to exist on this machine, before any work is done.

    ``"auto"`` is CUDA when present, else the CPU; anything else is read by ``torch.device``
    (``cpu``, ``cuda``, ``cuda:1``, ...).

    Raises:
        InputError: ``name`` is not a device, or names a GPU this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"device {name!r}: not a device name; use auto, cpu, cuda or cuda:N"
                         ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {name!r}: this machine has no CUDA GPU; use --device cpu "
                             "(or auto)")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {name!r}: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif device.type != "cpu":
        raise InputError(f"device {name!r}: regbench runs on cpu or cuda")
    return device


def describe_device(device: torch.device | str = "cpu") -> str:
    """Human-readable device: the GPU name, or the CPU model with its thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return describe_cpu(torch.get_num_threads())


def describe_cpu(threads: int) -> str:
    """``"<CPU model> (N threads)"``, as every CPU runtime record names its device."""
    return f"{cpu_model()} ({threads} thread{'' if threads == 1 else 's'})"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


NATIVE_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags of native bfloat16 arithmetic (AVX-512 BF16, AMX); without them oneDNN emulates it."""


def cpu_flags() -> frozenset[str]:
    """The flags of this machine's CPU (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX in its flags)."""
    return bool(NATIVE_BFLOAT16_FLAGS & cpu_flags())


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch, and ask PyTorch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def set_threads(threads: int | None) -> None:
    """Limit PyTorch's intra-op threads (``None`` keeps the default)."""
    if threads:
        torch.set_num_threads(threads)
