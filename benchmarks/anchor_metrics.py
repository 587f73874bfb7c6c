"""Reference values of the metrics named after a benchmark, made by that benchmark's own code.

    git --git-dir=L2R_MIRROR archive HEAD evaluation | tar x -C l2r           # MDL-UzL/L2R
    git --git-dir=LUMIR_MIRROR archive HEAD L2R_LUMIR_Eval | tar x -C lumir   # LUMIR_L2R
    python benchmarks/anchor_metrics.py l2r/evaluation lumir/L2R_LUMIR_Eval \\
        [--out tests/data/anchor_metrics.npz]

Runs the published evaluation scripts, unchanged, on small made-up cases (local copies, never
downloaded or committed here):

* Learn2Reg's ``evaluation/evaluation.py`` (MDL-UzL/L2R; checked with commit 8847509) with its
  ``utils.py`` and DeepMind's ``surface_distance`` package that it ships: ``evaluate_L2R`` on the
  cases written as a Learn2Reg task (NIfTI images, labels, ``disp_*.nii.gz`` fields, an
  evaluation config) gives each case's Dice (mean over labels, and per label), HD95 (per label)
  and SD log J, and the aggregate ``"30"`` of the Dice, DSC30;
* LUMIR's ``L2R_LUMIR_Eval/evaluation.py`` (JHU-MedImage-Reg/LUMIR_L2R; commit 9b88e63) with its
  ``digital_diffeomorphism.py``: ``evaluate_L2R`` with the ``ndv`` metric gives each case's NDV,
  in % of the voxels where the moving image is above 0;
* ``surface_distance`` directly: the HD95 of each label at an anisotropic spacing, and its table
  of surface element areas at that spacing and at 1 mm.

Their environment differs from the suite's in three ways that this script bridges without
touching their code: ``utils.py`` imports ``evalutils`` (grand-challenge's package) for one
exception class, given a stand-in module; they use ``np.NAN`` and ``np.Inf``, which NumPy 2
removed, given back as aliases of ``np.nan`` and ``np.inf``; the two ``utils`` modules share a
name, so each script is imported on its own.

With ``--out``, writes the cases and the values that ``tests/test_metrics.py`` checks the
suite's metrics against: the subjects' images and label maps, the fields (components first,
the suite's layout), the warped label maps (warped as Learn2Reg's script warps them, with its
own ``load_disp``), and the reference values.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import types
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

SHAPE = (16, 15, 14)
SUBJECTS = 6
LABELS = (1, 2, 3, 4, 5, 6)
"""Label IDs scored; 6 is in no map (both scripts skip it)."""
MISSING = (2, 4)
"""(subject, label): a label removed from one subject's map, so that cases with that subject
as the moving or the fixed one skip it."""
PAIRS = ((1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (0, 5), (2, 5))
"""(moving, fixed) subject indices of the cases."""
SPACING = (1.2, 0.8, 2.0)
"""The anisotropic spacing (mm) of the direct ``surface_distance`` HD95."""
FIELD_AMPLITUDE = (0.5, 1.0, 2.0, 3.0, 4.0, 1.5, 2.5)
"""Peak displacement (voxels) of each case's field: the larger ones fold."""
FIELD_SMOOTHING = 1.2
"""Gaussian sigma (voxels) of the fields' noise."""
SUBJECT_NOISE = 0.6
"""Weight of each subject's own noise against the noise all subjects share."""
SEED = 0


def make_cases(seed: int = SEED) -> dict[str, np.ndarray]:
    """Images, label maps and fields of the cases (NumPy's legacy ``RandomState``)."""
    state = np.random.RandomState(seed)
    grid = np.indices(SHAPE, dtype=np.float64)
    centre = (np.asarray(SHAPE, dtype=np.float64)[:, None, None, None] - 1) / 2
    radii = (np.asarray(SHAPE, dtype=np.float64)[:, None, None, None] - 4) / 2
    images, labels = [], []
    shared = state.standard_normal((5, *SHAPE))
    for subject in range(SUBJECTS):
        head = (((grid - centre + state.uniform(-1, 1, (3, 1, 1, 1))) / radii) ** 2).sum(0) <= 1
        noise = ndimage.gaussian_filter(
            shared + SUBJECT_NOISE * state.standard_normal((5, *SHAPE)), (0, 2.5, 2.5, 2.5))
        label_map = np.where(head, noise.argmax(0) + 1, 0).astype(np.int16)
        if subject == MISSING[0]:
            label_map[label_map == MISSING[1]] = 0
        images.append(np.where(head, 1.0 + label_map / 10, 0.0).astype(np.float32))
        labels.append(label_map)
    fields = []
    for amplitude in FIELD_AMPLITUDE:
        field = ndimage.gaussian_filter(state.standard_normal((3, *SHAPE)),
                                        (0, *(FIELD_SMOOTHING,) * 3))
        # float16 values, so that the committed file compresses
        fields.append((amplitude * field / np.abs(field).max()).astype(np.float16)
                      .astype(np.float32))
    return {"images": np.stack(images), "labels": np.stack(labels), "fields": np.stack(fields),
            "pairs": np.asarray(PAIRS, dtype=np.int64)}


def import_anchor(folder: Path, module: str, extra: tuple[Path, ...] = ()) -> types.ModuleType:
    """Import ``folder/module.py`` as its script expects (its folder first on the path), after
    dropping the modules of the same names that another script brought in."""
    for name in ("utils", "surface_distance", "digital_diffeomorphism", module):
        for loaded in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[loaded]
    sys.path[:0] = [str(folder), *map(str, extra)]
    try:
        return importlib.import_module(module)
    finally:
        del sys.path[:1 + len(extra)]


def bridge_environment() -> None:
    """The stand-in ``evalutils`` and the NumPy 1 aliases the scripts use (module docstring)."""
    exceptions = types.ModuleType("evalutils.exceptions")
    exceptions.ValidationError = type("ValidationError", (Exception,), {})
    sys.modules["evalutils"] = types.ModuleType("evalutils")
    sys.modules["evalutils.exceptions"] = exceptions
    np.NAN, np.Inf = np.nan, np.inf


def image_name(subject: int, modality: str) -> str:
    return f"imagesTr/REG_{subject + 1:04d}_{modality}.nii.gz"


def write_task(root: Path, cases: dict[str, np.ndarray]) -> tuple[Path, Path, list[dict]]:
    """The cases as a Learn2Reg task: ground truth under ``root/gt``, fields under
    ``root/input``; returns those folders and the evaluation pairs. The fixed subject is
    modality 0000 and the moving one 0001, so the fields take the short ``disp_FFFF_MMMM``
    name both scripts accept."""
    gt, inputs = root / "gt", root / "input"
    for folder in (gt / "imagesTr", gt / "labelsTr", inputs):
        folder.mkdir(parents=True)
    for subject in range(SUBJECTS):
        for modality in ("0000", "0001"):
            name = image_name(subject, modality)
            nib.save(nib.Nifti1Image(cases["images"][subject], np.eye(4)), gt / name)
            nib.save(nib.Nifti1Image(cases["labels"][subject], np.eye(4)),
                     gt / name.replace("images", "labels"))
    pairs = []
    for (moving, fixed), field in zip(cases["pairs"], cases["fields"], strict=True):
        nib.save(nib.Nifti1Image(np.moveaxis(field, 0, -1), np.eye(4)),
                 inputs / f"disp_{fixed + 1:04d}_{moving + 1:04d}.nii.gz")
        pairs.append({"fixed": image_name(fixed, "0000"), "moving": image_name(moving, "0001")})
    return gt, inputs, pairs


def run_learn2reg(l2r: Path, cases: dict[str, np.ndarray], root: Path) -> dict[str, np.ndarray]:
    """Learn2Reg's ``evaluate_L2R`` on the cases: per case Dice, HD95 and SD log J, DSC30."""
    evaluation = import_anchor(l2r, "evaluation", (l2r / "surface-distance",))
    gt, inputs, pairs = write_task(root / "l2r", cases)
    config = {"task_name": "REG", "expected_shape": [*SHAPE, 3], "eval_pairs": pairs,
              "evaluation_methods": [
                  {"name": "DSC", "metric": "dice", "labels": list(LABELS)},
                  {"name": "HD95", "metric": "hd95", "labels": list(LABELS)},
                  {"name": "LogJacDetStd", "metric": "sdlogj"}]}
    (root / "l2r" / "config.json").write_text(json.dumps(config))
    out = root / "l2r" / "metrics.json"
    evaluation.evaluate_L2R(str(inputs), str(gt), str(out), str(root / "l2r" / "config.json"))
    result = json.loads(out.read_text())
    cases_out = [result["cases"][f"{p['fixed'][-16:-12]}_0000<--{p['moving'][-16:-12]}_0001"]
                 for p in pairs]
    # The warped label maps, as evaluate_L2R makes them: its own load_disp and warping line.
    warped = []
    for (moving, fixed), pair in zip(cases["pairs"], pairs, strict=True):
        disp_field = evaluation.load_disp(
            str(inputs / f"disp_{fixed + 1:04d}_{moving + 1:04d}.nii.gz"))
        moving_seg = nib.load(gt / pair["moving"].replace("images", "labels")).get_fdata()
        identity = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
        warped.append(evaluation.map_coordinates(
            moving_seg, identity + disp_field.transpose(3, 0, 1, 2), order=0).astype(np.int16))
    return {
        "l2r_case_dice": np.array([c["DSC"]["mean"] for c in cases_out], dtype=np.float64),
        "l2r_label_dice": np.array([c["DSC"]["detailed"] for c in cases_out], dtype=np.float64),
        "l2r_dice30": np.float64(result["aggregates"]["DSC"]["30"]),
        "l2r_label_hd95": np.array([c["HD95"]["detailed"] for c in cases_out], dtype=np.float64),
        "l2r_sdlogj": np.array([c["LogJacDetStd"]["mean"] for c in cases_out],
                               dtype=np.float64),
        "warped_labels": np.stack(warped),
    }


def run_surface_distance(l2r: Path, cases: dict[str, np.ndarray],
                         warped: np.ndarray) -> dict[str, np.ndarray]:
    """``surface_distance`` itself at :data:`SPACING`: HD95 per case and label (labels in both
    maps only), and its area tables."""
    surface_distance = import_anchor(l2r / "surface-distance", "surface_distance")
    lookup_tables = importlib.import_module("surface_distance.lookup_tables")

    hd95 = np.full((len(PAIRS), len(LABELS)), np.nan)
    for case, fixed in enumerate(cases["pairs"][:, 1]):
        for column, label in enumerate(LABELS):
            pred, target = warped[case] == label, cases["labels"][fixed] == label
            if pred.any() and target.any():
                hd95[case, column] = surface_distance.compute_robust_hausdorff(
                    surface_distance.compute_surface_distances(target, pred, SPACING), 95.0)
    return {"sd_label_hd95_spacing": hd95,
            "sd_areas_1mm": lookup_tables.create_table_neighbour_code_to_surface_area((1, 1, 1)),
            "sd_areas_spacing": lookup_tables.create_table_neighbour_code_to_surface_area(SPACING)}


def run_lumir(lumir: Path, cases: dict[str, np.ndarray], root: Path) -> dict[str, np.ndarray]:
    """LUMIR's ``evaluate_L2R`` with its ``ndv`` metric: NDV (%) per case."""
    evaluation = import_anchor(lumir, "evaluation")
    gt, inputs, pairs = write_task(root / "lumir", cases)
    config = {"name": "REG", "expected_shape": [*SHAPE, 3], "eval_pairs": pairs,
              "evaluation_methods": [{"name": "NDV", "metric": "ndv"}]}
    (root / "lumir" / "config.json").write_text(json.dumps(config))
    results, _ = evaluation.evaluate_L2R(str(inputs), str(gt), str(root / "lumir" / "out.json"),
                                         str(root / "lumir" / "config.json"))
    return {"lumir_ndv": np.array(
        [results[f"{p['fixed'][-16:-12]}_0000<--{p['moving'][-16:-12]}_0001"]["NDV"]["mean"]
         for p in pairs], dtype=np.float64)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("l2r", type=Path, help="Learn2Reg's evaluation/ folder (local copy)")
    parser.add_argument("lumir", type=Path, help="LUMIR's L2R_LUMIR_Eval/ folder (local copy)")
    parser.add_argument("--out", type=Path, help="write the cases and the values here (.npz)")
    args = parser.parse_args(argv)
    bridge_environment()
    cases = make_cases()
    with tempfile.TemporaryDirectory() as folder:
        found = run_learn2reg(args.l2r, cases, Path(folder))
        found.update(run_surface_distance(args.l2r, cases, found["warped_labels"]))
        found.update(run_lumir(args.lumir, cases, Path(folder)))
    for key, value in found.items():
        if np.size(value) <= len(PAIRS) * len(LABELS):
            print(f"{key}:\n{np.round(value, 6)}")
    if args.out:
        np.savez_compressed(args.out, **cases, **found, labels_scored=np.asarray(LABELS),
                            spacing=np.asarray(SPACING))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
