"""The official Dual-PRNet code trained on a dataset this suite prepared, on a CPU, with the
suite's validation curve: the "official code" arm of the real-brain diagnosis (README, "Real
brains on a CPU"). It runs outside the suite, on a patched checkout that ``run.sh`` makes.

    python benchmarks/official_dualprnet/train_official.py --official CHECKOUT \\
        --data data/mindboggle101 --out runs/diagnosis/official --steps 300 [--align-corners]

What is the official code's and what is this script's:

* the official code's: the network (``build_network3d("resnet_cascade")`` with the MICCAI 2019
  widths, 430,964 parameters), its loss (``NCCLoss(window=(9, 9, 9))`` plus ``grad_loss3d`` of
  every level's residual field, weighted 1:1, as ``train_mind101.py``'s ``loss_fn``), its
  ``Solver`` (Adam with weight decay 1e-5, gradient clipping at 10, its ``WarmUpLR`` over 5
  epochs, stepped through a sixth, so the rate ends at 1.2 x ``--lr``), its epochs (as many
  pairs as its ``PairDataset`` has: every ordered pair of the training subjects, 30 for 6), its
  default initialisation, and registration in training mode (its test script never calls
  ``eval()``);
* this script's: the data (the training split of ``--data``, ordered pairs drawn by the suite's
  seeded ``PairSampler``, no crop jitter, no flips), a last epoch cut short at ``--steps``, and
  the validation: after every ``--validate-every`` optimizer steps the network registers the
  suite's validation pairs, the moving labels are warped as the official test script warps them
  (``grid_sample``, nearest, border padding; ``align_corners`` as ``--align-corners`` says, to
  match the identity patch when it is applied) and scored by the suite's region Dice. It writes
  ``OUT/validation.csv`` in the columns of the suite's trainer.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from regbench import metrics
from regbench.data.dataset import Dataset
from regbench.io import write_text
from regbench.runtime import set_threads
from regbench.training.data import PairSampler, TrainingVolumes
from regbench.training.validation import validation_pairs
from regbench.transforms import pad_to_multiple

SIZE_MULTIPLE = 16  # four stride-2 levels


class SuitePairs(torch.utils.data.Dataset):
    """The pairs of one epoch, as the official ``PairDataset`` yields them: two ``(X, Y, Z)``
    volumes (its ``CollateFn`` adds the batch and channel axes)."""

    def __init__(self, volumes: TrainingVolumes, sampler: PairSampler, count: int) -> None:
        self.volumes, self.sampler = volumes, sampler
        self.draws = [None] * count  # the Solver sizes its warm-up by the first epoch's length

    def next_epoch(self, count: int) -> None:
        """Draw the next epoch's ``count`` pairs."""
        self.draws = self.sampler.draw(count)

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        moving, fixed = self.volumes.batch([self.draws[index]], 0, SIZE_MULTIPLE,
                                           torch.device("cpu"))
        return moving[0, 0], fixed[0, 0]


def official_loss(official_losses):
    """``train_mind101.py``'s ``loss_fn``, over the official loss functions."""

    def loss_fn(pred_warp, data_fix, flow, delta_list):
        similarity = official_losses.NCCLoss(window=(9, 9, 9))(pred_warp, data_fix)
        return similarity, sum(official_losses.grad_loss3d(delta) for delta in delta_list)

    return loss_fn


def validate(net: torch.nn.Module, dataset: Dataset, pairs: list[tuple[str, str]],
             align_corners: bool) -> tuple[float, float]:
    """Mean FAIM and merged region Dice of ``pairs``, registered in training mode."""
    faim, merged = [], []
    for moving, fixed in pairs:
        # zero-padded to the network's size multiple, as the suite registers; cropped back
        volumes = np.stack([dataset.image(moving), dataset.image(fixed),
                            dataset.label_map(moving).astype(np.float32)])
        padded, crop = pad_to_multiple(torch.from_numpy(volumes)[:, None], SIZE_MULTIPLE)
        with torch.no_grad():
            _, grid, _ = net(padded[:2])
            warped = F.grid_sample(padded[2:], grid.permute(0, 2, 3, 4, 1), mode="nearest",
                                   padding_mode="border", align_corners=align_corners)
        warped = warped[(0, 0, *crop)].numpy().astype(np.int32)
        target = dataset.label_map(fixed)
        faim.append(metrics.nanmean(metrics.region_dice_faim(warped, target,
                                                             dataset.regions).values()))
        merged.append(metrics.nanmean(metrics.region_dice_merged(warped, target,
                                                                 dataset.regions).values()))
    return float(np.mean(faim)), float(np.mean(merged))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path,
                        help="checkout of kangmiao15/Dual-Stream-PRNet-Plus with cpu.patch")
    parser.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for validation.csv")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--validation-pairs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--align-corners", action="store_true",
                        help="warp the labels with align_corners=True (with identity.patch)")
    args = parser.parse_args(argv)
    if not (args.official / "net_factory.py").is_file():
        raise SystemExit(f"{args.official}: not a checkout of the official code "
                         "(no net_factory.py); run.sh makes one")
    # the official code is a checkout given at run time, not an installed distribution
    sys.path.insert(0, str(args.official.resolve()))
    net_factory, solver, losses = (importlib.import_module(name)
                                   for name in ("net_factory", "solver", "op.losses"))

    set_threads(args.threads)
    torch.manual_seed(args.seed)
    dataset = Dataset.load(args.data)
    pairs = validation_pairs(dataset, args.validation_pairs)
    net, _ = net_factory.build_network3d("resnet_cascade")
    per_epoch = len(dataset.train) * (len(dataset.train) - 1)
    epoch = SuitePairs(TrainingVolumes(dataset), PairSampler(len(dataset.train), args.seed),
                       per_epoch)
    args.out.mkdir(parents=True, exist_ok=True)
    train = solver.Solver(net, epoch, 1, official_loss(losses), str(args.out),
                          lr=args.lr, device=torch.device("cpu"))
    rows: list[dict[str, float]] = []
    clock = {"steps": 0, "trained_s": 0.0, "since": time.perf_counter()}

    def record() -> None:
        began = time.perf_counter()
        clock["trained_s"] += began - clock["since"]
        faim, merged = validate(net, dataset, pairs, args.align_corners)
        rows.append({"step": clock["steps"], "time_s": clock["trained_s"], "dice_faim": faim,
                     "dice_merged": merged, "eval_s": time.perf_counter() - began})
        write_text(args.out / "validation.csv", pd.DataFrame(rows).to_csv(index=False))
        print(f"step {clock['steps']}: validation Dice {faim:.3f} (FAIM), {merged:.3f} (merged)",
              flush=True)
        clock["since"] = time.perf_counter()

    # The Solver steps its optimizer once a pair: validate after every --validate-every steps,
    # between one step and the next, without changing its loop.
    optimizer_step = train.optimizer.step

    def step_then_validate(*step_args, **step_kwargs):
        result = optimizer_step(*step_args, **step_kwargs)
        clock["steps"] += 1
        if clock["steps"] % args.validate_every == 0:
            record()
        return result

    train.optimizer.step = step_then_validate
    record()
    while clock["steps"] < args.steps:
        epoch.next_epoch(min(per_epoch, args.steps - clock["steps"]))
        train.train_one_epoch()
    if clock["steps"] % args.validate_every:
        record()
    return 0


if __name__ == "__main__":
    sys.exit(main())
