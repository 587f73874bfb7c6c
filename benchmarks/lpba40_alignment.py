"""LPBA40's NIfTI layout: keep its given alignment, or register every subject to MNI152?

The flat NIfTI distribution of LPBA40 comes roughly aligned to one another on a 160x192x160 grid
of 1 mm. :func:`regbench.data.lpba40.prepare` registers each subject affinely to MNI152 and crops,
as for LONI's files. This measures both choices on development subjects at the workflow's half
size (80x96x80): the given volumes block-averaged as ``--scale 0.5`` does, against the same
subjects of a dataset that ``regbench prepare lpba40 --scale 0.5`` made from them:

* Identity Dice: mean region Dice (both conventions) of every ordered pair, no registration;
* Affine Dice: the same after the suite's ``affine`` method (ANTsPy's Affine) on the first
  ``--affine-pairs`` ordered pairs;
* template correlation: Pearson correlation of each subject with MNI152's crop (the given volume
  as it is, or registered then cropped).

    python benchmarks/lpba40_alignment.py raw/LPBA40_nifti data/lpba40 \\
        --subjects S25,S26,S27,S28,S29,S30 --out results/lpba40_cpu/alignment

writes ``alignment.json`` and ``alignment.md`` into ``--out``. Only development subjects
(S01-S30) are accepted: S31-S40 are the held-out test subjects.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from regbench import metrics
from regbench.data import lpba40, protocol
from regbench.data.dataset import Dataset
from regbench.data.preparation import clean_labels, crop, parse_subjects
from regbench.data.resolution import downsample
from regbench.methods import get_method
from regbench.runtime import versions
from regbench.transforms import warp_labels

DEVELOPMENT = protocol.LPBA40_SPLITS["train"]
FACTOR = 2  # the workflow's scale 0.5


def mean_dice(moving: np.ndarray, fixed: np.ndarray) -> dict[str, float]:
    return {convention: metrics.nanmean(score(moving, fixed, protocol.LPBA40_REGIONS).values())
            for convention, score in (("faim", metrics.region_dice_faim),
                                      ("merged", metrics.region_dice_merged))}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def affine_dice(images: dict, labels: dict, pairs: Sequence[tuple[str, str]]) -> list[dict]:
    import torch

    method = get_method("affine")()
    rows = []
    for moving, fixed in pairs:
        field = method.register(images[moving], images[fixed], (2.0, 2.0, 2.0))
        warped = warp_labels(torch.from_numpy(labels[moving])[None, None],
                             torch.from_numpy(field)[None])[0, 0].numpy()
        rows.append({"moving": moving, "fixed": fixed, **mean_dice(warped, labels[fixed])})
    return rows


def summarise(rows: Sequence[dict]) -> dict[str, float]:
    return {f"{stat}_{c}": float(fn([r[c] for r in rows])) for c in ("faim", "merged")
            for stat, fn in (("mean", np.mean), ("min", np.min))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", help="the flat NIfTI folder")
    parser.add_argument("prepared", help="a dataset prepared from it at scale 0.5")
    parser.add_argument("--subjects", required=True, help="development subjects, e.g. S25,S26")
    parser.add_argument("--affine-pairs", type=int, default=6)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    subjects = parse_subjects(args.subjects)
    held_out = [s for s in subjects if s not in DEVELOPMENT]
    if held_out or len(subjects) < 2:
        parser.error(f"--subjects: give at least 2 development subjects (S01-S30); "
                     f"{', '.join(held_out) or 'fewer than 2'} refused")
    files = lpba40.nifti_files(args.raw)
    prepared = Dataset.load(args.prepared)
    if prepared.shape != tuple(n // FACTOR for n in protocol.CROP_SHAPE):
        parser.error(f"{args.prepared}: prepared at {prepared.shape}, not at scale 0.5")
    template, _ = lpba40.mni_template()
    template_crop = downsample(crop(template), np.zeros(protocol.CROP_SHAPE, np.int32),
                               FACTOR)[0]
    arms: dict[str, dict[str, dict[str, np.ndarray]]] = {
        arm: {"images": {}, "labels": {}} for arm in ("given", "mni152")}
    per_subject = {}
    for subject in subjects:
        image, labels = lpba40.read_nifti_subject(files[subject])
        labels, _ = clean_labels(labels, protocol.LPBA40_LABELS)
        small, small_labels = downsample(image / image.max(), labels, FACTOR)
        arms["given"]["images"][subject], arms["given"]["labels"][subject] = small, small_labels
        arms["mni152"]["images"][subject] = prepared.image(subject)
        arms["mni152"]["labels"][subject] = prepared.label_map(subject)
        per_subject[subject] = {f"template_correlation_{arm}": correlation(
            volumes["images"][subject], template_crop) for arm, volumes in arms.items()}
        print(subject, per_subject[subject], flush=True)
    pairs = list(itertools.permutations(subjects, 2))
    result = {"subjects": subjects, "size": "80x96x80 (scale 0.5)", "pairs": len(pairs),
              "affine_pairs": pairs[:args.affine_pairs], "per_subject": per_subject,
              "machine": platform.processor() or platform.machine(), "versions": versions()}
    for arm, volumes in arms.items():
        identity = [mean_dice(volumes["labels"][m], volumes["labels"][f]) for m, f in pairs]
        result[arm] = {
            "identity": summarise(identity),
            "affine": summarise(affine_dice(volumes["images"], volumes["labels"],
                                            pairs[:args.affine_pairs])),
            "template_correlation": float(np.mean(
                [per_subject[s][f"template_correlation_{arm}"] for s in subjects])),
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "alignment.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["| alignment | Identity Dice (FAIM / merged) | lowest pair | Affine Dice (FAIM / "
             "merged) | correlation with MNI152 |", "|:--|--:|--:|--:|--:|"]
    for arm, name in (("given", "as distributed"), ("mni152", "registered to MNI152")):
        r = result[arm]
        lines.append(f"| {name} | {r['identity']['mean_faim']:.3f} / "
                     f"{r['identity']['mean_merged']:.3f} | {r['identity']['min_faim']:.3f} | "
                     f"{r['affine']['mean_faim']:.3f} / {r['affine']['mean_merged']:.3f} | "
                     f"{r['template_correlation']:.3f} |")
    caption = (f"\n{len(subjects)} development subjects ({', '.join(subjects)}), "
               f"{len(pairs)} ordered pairs for Identity, the first {args.affine_pairs} for "
               "Affine; 80x96x80 (block-averaged from 1 mm); `benchmarks/lpba40_alignment.py`.\n")
    (out / "alignment.md").write_text("\n".join(lines) + "\n" + caption)
    print((out / "alignment.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
