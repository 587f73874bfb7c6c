"""Speed and peak memory of learned registration methods, side by side on one device.

For every method and volume size it measures

* **inference**: ``method.register(moving, fixed, spacing)`` on one pair, end to end (NumPy in,
  NumPy field out: padding, host/device copies and the network's forward pass);
* **training step**: one step on one pair (zero-padded to the method's ``size_multiple``):
  forward, ``method.loss``, backward and an Adam step (lr 1e-4, weight decay 1e-5, float32
  unless ``--amp``).

Weights are random (speed does not depend on them) and the images are uniform noise. Time is the
median of ``--repeats`` runs after ``--warmup`` runs (CUDA synchronised around each run). Peak
memory is, on CUDA, ``torch.cuda.max_memory_allocated`` over the measured runs (everything the
process holds on the GPU: weights, inputs, optimizer state and activations); on CPU, the largest
increase of the process's resident set size (RSS) over its value just before a run (after
``malloc_trim``), sampled every millisecond with psutil, so it counts activations and work
buffers but not what was already resident (weights, inputs, optimizer state after the warm-up).

Usage::

    python benchmarks/speed_memory.py [--methods dualprnet,voxelmorph,voxelmorph-0.2]
        [--sizes 80x96x80,160x192x160] [--repeats N] [--warmup N] [--device auto]
        [--threads N] [--amp] [--no-training] [--seed 0] [--out table.md] [--out table.csv]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import io
import json
import logging
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
from tqdm import tqdm

from regbench.io import write_text
from regbench.methods import LearnedMethod, Method, get_method
from regbench.runtime import describe_device, pick_device, set_threads, versions
from regbench.transforms import pad_to_multiple

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("dualprnet", "voxelmorph", "voxelmorph-0.2")
DEFAULT_SIZES = "80x96x80,160x192x160"
CPU_LARGE_VOXELS = 10**6  # above this a CPU training step takes many seconds: 1 repeat
MIB = 2**20
MEMORY_MEASURES = {
    "cuda": "CUDA max allocated over the measured runs (whole process: weights, inputs, "
            "optimizer state, activations)",
    "cpu": "largest increase of the process RSS during a run (activations and buffers; "
           "resident weights and inputs excluded)",
}


@dataclass
class Measurement:
    """One (method, size, mode) row of the benchmark."""

    method: str
    label: str
    size: str
    mode: str  # "inference" or "training step"
    time_s: float
    time_min_s: float
    repeats: int
    warmup: int
    peak_memory_mib: float
    memory_measure: str
    parameters: int
    device: str
    amp: bool
    seed: int
    options: str  # JSON
    versions: str  # JSON


class RssSampler:
    """Largest RSS increase of this process over its value at ``start``, sampled in a thread."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.peak_delta = 0
        self._stop = threading.Event()

    def _run(self, baseline: int) -> None:
        while not self._stop.is_set():
            self.peak_delta = max(self.peak_delta, self.process.memory_info().rss - baseline)
            time.sleep(self.interval_s)

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        _trim_heap()
        baseline = self.process.memory_info().rss
        self._stop.clear()
        thread = threading.Thread(target=self._run, args=(baseline,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()
            self.peak_delta = max(self.peak_delta, self.process.memory_info().rss - baseline)


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so reused memory counts as new RSS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_and_memory(run: Callable[[], object], device: torch.device, repeats: int,
                    warmup: int) -> tuple[list[float], float]:
    """Run ``warmup`` then ``repeats`` times; returns (times in s, peak memory in MiB).

    The peak is what ``MEMORY_MEASURES[device.type]`` says.
    """
    for _ in range(warmup):
        run()
    _synchronize(device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            _synchronize(device)
            times.append(time.perf_counter() - start)
        return times, torch.cuda.max_memory_allocated(device) / MIB
    sampler = RssSampler()
    for _ in range(repeats):
        with sampler.measure():
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return times, sampler.peak_delta / MIB


def training_step(method: LearnedMethod, network: torch.nn.Module,
                  optimizer: torch.optim.Optimizer, moving: torch.Tensor, fixed: torch.Tensor,
                  amp: bool) -> Callable[[], None]:
    """A closure doing one training step on ``(moving, fixed)`` ``(1, 1, *S)``."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(moving.device.type, enabled=amp):
            outputs = network(moving, fixed)
        loss, _ = method.loss(outputs, moving, fixed)
        loss.backward()
        optimizer.step()

    return step


def benchmark_method(name: str, shape: tuple[int, int, int], device: torch.device, repeats: int,
                     warmup: int, training: bool, amp: bool, seed: int) -> list[Measurement]:
    """Inference (and training step) rows of one method at one size."""
    torch.manual_seed(seed)
    method: Method = get_method(name)()
    parameters = 0
    if isinstance(method, LearnedMethod):
        method.network = method.build_network()
        method.to(device)
        parameters = sum(p.numel() for p in method.network.parameters())
    rng = np.random.default_rng(seed)
    moving, fixed = (rng.random(shape, dtype=np.float32) for _ in range(2))
    common = dict(method=name, label=method.label, size="x".join(map(str, shape)),
                  repeats=repeats, warmup=warmup, parameters=parameters,
                  memory_measure=MEMORY_MEASURES[device.type],
                  device=describe_device(device), amp=amp, seed=seed,
                  options=json.dumps(method.options, default=list),
                  versions=json.dumps(versions()))

    def row(mode: str, run: Callable[[], object]) -> Measurement:
        times, peak = time_and_memory(run, device, repeats, warmup)
        return Measurement(mode=mode, time_s=statistics.median(times), time_min_s=min(times),
                           peak_memory_mib=peak, **common)

    def infer() -> None:
        with torch.autocast(device.type, enabled=amp):
            method.register(moving, fixed, (1.0, 1.0, 1.0))

    rows = [row("inference", infer)]
    if training and isinstance(method, LearnedMethod):
        network = method.network
        network.train()
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-4, weight_decay=1e-5)
        # Padded to the network's size multiple, as register() and the trainer's crops are.
        padded, _ = pad_to_multiple(torch.from_numpy(np.stack([moving, fixed]))[None],
                                    method.size_multiple)
        tensors = [padded[:, i:i + 1].to(device) for i in range(2)]
        rows.append(row("training step", training_step(method, network, optimizer, *tensors,
                                                         amp)))
        del optimizer, tensors
    method.network = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def markdown_table(rows: Sequence[Measurement], device: str, missing: Sequence[str]) -> str:
    """The measurements side by side: one line per (method, size)."""
    by_key: dict[tuple[str, str], dict[str, Measurement]] = {}
    for r in rows:
        by_key.setdefault((r.label, r.size), {})[r.mode] = r
    lines = [f"Device: {device}; torch {torch.__version__}",
             "",
             "| method | size | inference time (s) | inference peak memory (MiB) "
             "| training step time (s) | training step peak memory (MiB) | parameters |",
             "|---|---|---|---|---|---|---|"]
    for (label, size), modes in by_key.items():
        cells = []
        for mode in ("inference", "training step"):
            m = modes.get(mode)
            cells += ["-", "-"] if m is None else [f"{m.time_s:.3f}", f"{m.peak_memory_mib:.0f}"]
        first = next(iter(modes.values()))
        lines.append(f"| {label} | {size} | " + " | ".join(cells) + f" | {first.parameters} |")
    if rows:
        r = rows[0]
        repeats = ", ".join(sorted({f"{m.size}: {m.repeats}" for m in rows}))
        lines += ["", f"Time: median of the measured runs ({repeats}) after {r.warmup} warm-up "
                      f"run(s). Peak memory: {r.memory_measure}."]
    lines += [f"Not measured: {m}" for m in missing]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Measurement]) -> str:
    buffer = io.StringIO()
    fields = list(Measurement.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    return buffer.getvalue()


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """``"80x96x80,160x192x160"`` -> ``[(80, 96, 80), (160, 192, 160)]``."""
    sizes = []
    for size in filter(None, text.split(",")):
        parts = size.lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(f"size {size!r} is not XxYxZ (e.g. 160x192x160)")
        sizes.append(tuple(int(p) for p in parts))
    return sizes


def default_repeats(shape: Sequence[int], device: torch.device) -> int:
    if device.type == "cuda":
        return 10
    return 1 if math.prod(shape) > CPU_LARGE_VOXELS else 3


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated method names (default: %(default)s)")
    parser.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES,
                        help="comma-separated XxYxZ sizes (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="measured runs per row (default: 10 on CUDA; on CPU 3, or 1 above "
                             f"{CPU_LARGE_VOXELS} voxels)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:0")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    parser.add_argument("--amp", action="store_true", help="autocast (mixed precision)")
    parser.add_argument("--no-training", dest="training", action="store_false",
                        help="measure inference only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", action="append", default=[], type=Path,
                        help="write the results to FILE.csv or FILE.md (repeatable)")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    for out in args.out:
        if out.suffix not in (".csv", ".md"):
            parser.error(f"--out {out}: the file name must end in .csv or .md")
    if args.repeats is not None and args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    set_threads(args.threads)
    device = pick_device(args.device)
    rows: list[Measurement] = []
    missing: list[str] = []
    jobs = [(name, shape) for name in args.methods for shape in args.sizes]
    for name, shape in tqdm(jobs, desc="benchmark", unit="row"):
        try:
            get_method(name)
        except KeyError:
            message = f"{name}: no method registered under that name (not installed yet?)"
            if message not in missing:
                logger.warning(message)
                missing.append(message)
            continue
        repeats = args.repeats or default_repeats(shape, device)
        logger.info("%s at %s: %d repeat(s) after %d warm-up", name, shape, repeats, args.warmup)
        rows += benchmark_method(name, shape, device, repeats, args.warmup, args.training,
                                 args.amp, args.seed)
    table = markdown_table(rows, describe_device(device), missing)
    print(table)
    for out in args.out:
        write_text(out, csv_text(rows) if out.suffix == ".csv" else table)
        logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
