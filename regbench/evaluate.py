"""Score one registered pair: warp the moving image and labels with a field, compute every metric.

The suite, not the method, does this, so every method is scored identically. Per pair it writes
into ``out_dir``::

    warped.nii.gz          moving image pulled through the field (trilinear)
    warped_labels.nii.gz   ORIGINAL moving labels pulled through the field (nearest neighbour)
    metrics.json           the record of docs/contracts.md, written last: its presence marks a
                           complete evaluation (an older one is removed before anything else)

Undefined metric values (NaN, e.g. a region absent from both label maps) are written to
``metrics.json`` as ``null``, since JSON has no NaN.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regbench import runs
from regbench.data.dataset import Dataset
from regbench.degrade import thin_slices
from regbench.io import (
    InputError,
    check_same_grid,
    file_sha256,
    output_lock,
    read_field,
    read_json,
    read_labels,
    read_on_grid,
    voxel_spacing,
    write_image,
    write_json,
)
from regbench.metric_table import PairScoring, metric_keys, score
from regbench.naming import (
    FIELD_FILE,
    MANIFEST,
    METRICS_FILE,
    RUNTIME_FILE,
    WARPED_FILE,
    WARPED_LABELS_FILE,
)
from regbench.runtime import versions
from regbench.transforms import warp, warp_labels

log = logging.getLogger(__name__)

RUNTIME_KEYS = ("method", "time_s", "device", "slice_step", "versions", "options")
"""Keys of a method's ``runtime.json`` that ``metrics.json`` carries (other keys are kept too)."""



def record_keys() -> tuple[str, ...]:
    """Keys every ``metrics.json`` holds, in order (runtime keys beyond these follow them): the
    metrics are the rows of :data:`regbench.metric_table.METRICS`."""
    return ("dataset", "method", "moving", "fixed", *metric_keys(), "time_s", "device",
            "slice_step", "versions", "options")

FieldInput = np.ndarray | str | os.PathLike
RuntimeInput = Mapping[str, Any] | str | os.PathLike | None


def evaluate_pair(
    *,
    moving_image: np.ndarray,
    moving_labels: np.ndarray,
    fixed_labels: np.ndarray,
    field: np.ndarray,
    regions: Mapping[str, Sequence[int]],
    labels: Sequence[int],
    spacing: Sequence[float],
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Warp ``moving_image`` and ``moving_labels`` (``(X, Y, Z)``) with ``field (3, X, Y, Z)``
    (voxel units, pull convention) and score the warped labels against ``fixed_labels``.

    Returns ``(warped image (X, Y, Z) float32, warped labels (X, Y, Z) int32, metrics)`` where
    ``metrics`` holds every row of the metric table (:mod:`regbench.metric_table`) by key, in its
    order: Dice per label (keys ``str(label)``) and per region (FAIM and merged), HD95 in mm per
    merged region (``spacing`` mm per voxel), their means over regions, Learn2Reg's case Dice,
    and the field's folding percentage, SD log J and non-diffeomorphic volume (in % of the
    voxels where ``moving_image`` is above 0, as LUMIR scores it).
    """
    shape = tuple(fixed_labels.shape)
    for name, volume in (("moving image", moving_image), ("moving labels", moving_labels)):
        if tuple(volume.shape) != shape:
            raise ValueError(f"{name} shape {tuple(volume.shape)} differs from fixed {shape}")
    if tuple(field.shape) != (3, *shape):
        raise ValueError(f"field shape {tuple(field.shape)} is not (3, *{shape})")
    field_t = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None]
    with torch.no_grad():
        image_t = torch.from_numpy(np.ascontiguousarray(moving_image, dtype=np.float32))
        warped = warp(image_t[None, None], field_t)[0, 0].numpy()
        labels_t = torch.from_numpy(np.ascontiguousarray(moving_labels, dtype=np.int32))
        warped_labels = warp_labels(labels_t[None, None], field_t)[0, 0].numpy()
    scores = score(PairScoring(
        warped_labels=warped_labels, fixed_labels=np.asarray(fixed_labels),
        moving_labels=np.asarray(moving_labels), moving_image=np.asarray(moving_image),
        field=np.asarray(field), regions=regions, labels=labels, spacing=spacing))
    return warped, warped_labels, scores


def evaluate_dataset_pair(
    dataset: Dataset,
    moving: str,
    fixed: str,
    field: FieldInput,
    out_dir: str | os.PathLike,
    runtime: RuntimeInput = None,
    slice_step: int | None = None,
    keep_volumes: bool = True,
) -> dict[str, Any]:
    """Evaluate the registration of subject ``moving`` onto ``fixed`` of a prepared dataset.

    ``field`` is a ``(3, X, Y, Z)`` array or the path of a field NIfTI (:func:`regbench.io.
    read_field`) on the dataset grid. ``runtime`` is the method's runtime record (a mapping or the
    path of its ``runtime.json``); its keys are merged into the result (absent ones are
    ``null``, except ``versions``: this process's, and ``options``: ``{}``); a record of another
    pair, of the pair's data before they were prepared again (its ``data_fingerprint``), or of
    another field file than ``field`` (its ``field_sha256``) is refused. ``slice_step`` is the
    moving image's slice thinning (:func:`regbench.degrade.thin_slices`, axis 1): the warped
    image is made from the thinned image the method registered, the labels are the original
    ones. ``None`` takes it from the runtime record
    (default 1). Writes the files of this module's docstring (without the warped volumes when
    not ``keep_volumes``); returns the ``metrics.json`` record.
    """
    out_dir = Path(out_dir)
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    manifest = dataset.root / MANIFEST
    field_array, field_name = _load_field(field, dataset.shape, dataset.affine, manifest)
    record = _runtime_record(runtime, slice_step, (moving, fixed),
                             dataset.fingerprint([moving, fixed]),
                             field=(field, _field_hash(field)))
    moving_image = dataset.image(moving)
    moving_labels = dataset.label_map(moving)
    fixed_labels = dataset.label_map(fixed)
    log.info("evaluating %s -> %s of %s (field %s)", moving, fixed, dataset.name, field_name)
    return _evaluate_and_write(
        out_dir,
        keep_volumes=keep_volumes,
        head={"dataset": dataset.name, "moving": moving, "fixed": fixed},
        runtime=record,
        moving_image=moving_image,
        moving_labels=moving_labels,
        fixed_labels=fixed_labels,
        field=field_array,
        regions=dataset.regions,
        labels=sorted(dataset.labels),
        spacing=dataset.spacing,
        affine=dataset.affine,
    )


def evaluate_pairs(dataset: Dataset, pairs: Sequence[tuple[str, str]],
                   out_root: str | os.PathLike,
                   keep_volumes: Collection[tuple[str, str]] = ()) -> list[dict[str, Any]]:
    """Score the pairs that :func:`regbench.registration.register_pairs` (or any method) wrote:
    :func:`evaluate_dataset_pair` of ``out_root/{moving}/{fixed}/field.nii.gz`` with its
    ``runtime.json``, pair after pair, each folder locked while it is written.

    Args:
        dataset: the prepared dataset of the pairs.
        pairs: ``(moving, fixed)`` subject IDs.
        out_root: the run folder holding one folder per pair.
        keep_volumes: the pairs that also get their warped volumes written (the others: their
            ``metrics.json`` only).

    Returns:
        The ``metrics.json`` records, in pair order.

    Raises:
        InputError: a subject is not in the dataset; a pair's field or runtime record is
            missing, or the record is bad, of another pair, or of another setup than the others or
            the folder's ``run.json`` (:func:`regbench.runs.read_run`, checked before any pair
            is scored); or a pair's field is bad (the pairs before it are scored).
    """
    for subject in {s for pair in pairs for s in pair}:
        dataset.image_path(subject)
    runs.read_run(out_root, pairs)
    records = []
    for moving, fixed in pairs:
        with output_lock(Path(out_root) / moving / fixed) as folder:
            records.append(evaluate_dataset_pair(
                dataset, moving, fixed, folder / FIELD_FILE, folder,
                runtime=folder / RUNTIME_FILE, keep_volumes=(moving, fixed) in keep_volumes))
    return records


def evaluate_paths(
    *,
    moving_image: str | os.PathLike,
    moving_labels: str | os.PathLike,
    fixed_labels: str | os.PathLike,
    field: str | os.PathLike,
    out_dir: str | os.PathLike,
    dataset_json: str | os.PathLike | None = None,
    runtime: RuntimeInput = None,
    slice_step: int | None = None,
    reorient: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate_dataset_pair` for volumes given as files (all on the fixed labels' grid).

    ``reorient`` first flips and permutes the voxel axes of the moving image and labels into the
    fixed labels' orientation (:func:`regbench.io.reorient_like`; logged); otherwise another
    orientation is refused, like any other difference of grid.

    Labels and regions come from ``dataset_json`` (a prepared dataset's manifest, whose
    ``labels`` and ``regions`` are used). Without one, every nonzero label found in either label
    map is its own region, named by its ID (so FAIM and merged Dice coincide). In the record,
    ``dataset`` is the manifest's name (or ``null``), ``moving``/``fixed`` are the image and label
    paths as given. The outputs keep the fixed labels' affine.
    """
    out_dir = Path(out_dir)
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    fixed_map, affine = read_labels(fixed_labels)
    image = read_on_grid(moving_image, "image", fixed_map.shape, affine, fixed_labels, reorient)
    moving_map = read_on_grid(moving_labels, "labels", fixed_map.shape, affine, fixed_labels,
                              reorient)
    field_array, _ = _load_field(field, fixed_map.shape, affine, fixed_labels)
    record = _runtime_record(runtime, slice_step, field=(field, _field_hash(field)))
    if dataset_json is not None:
        manifest = read_json(dataset_json)
        try:
            name = manifest["name"]
            regions = {str(k): [int(i) for i in v] for k, v in manifest["regions"].items()}
            labels = sorted(int(k) for k in manifest["labels"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"{dataset_json}: not a dataset manifest ({err!r})") from None
    else:
        name = None
        labels = sorted((set(np.unique(fixed_map).tolist())
                         | set(np.unique(moving_map).tolist())) - {0})
        regions = {str(label): [label] for label in labels}
    return _evaluate_and_write(
        out_dir,
        head={"dataset": name, "moving": str(moving_image), "fixed": str(fixed_labels)},
        runtime=record,
        moving_image=image,
        moving_labels=moving_map,
        fixed_labels=fixed_map,
        field=field_array,
        regions=regions,
        labels=labels,
        spacing=tuple(float(s) for s in voxel_spacing(affine)),
        affine=affine,
    )


def _evaluate_and_write(out_dir: Path, *, head: dict[str, Any], runtime: dict[str, Any],
                        moving_image: np.ndarray, affine: np.ndarray, keep_volumes: bool = True,
                        **pair: Any) -> dict[str, Any]:
    if runtime["slice_step"] > 1:
        moving_image = thin_slices(moving_image, step=runtime["slice_step"], axis=1)
    warped, warped_labels, scores = evaluate_pair(moving_image=moving_image, **pair)
    record = {"dataset": head["dataset"], "method": runtime["method"], "moving": head["moving"],
              "fixed": head["fixed"], **scores,
              **{k: v for k, v in runtime.items() if k != "method"}}
    for name, volume in ((WARPED_FILE, warped), (WARPED_LABELS_FILE, warped_labels)):
        if keep_volumes:
            write_image(out_dir / name, volume, affine)
        else:
            (out_dir / name).unlink(missing_ok=True)  # of an earlier evaluation
    record = _json_safe(record)
    write_json(out_dir / METRICS_FILE, record)
    log.info("%s -> %s: mean Dice FAIM %.4f, merged %.4f, HD95 %.2f mm, folding %.4f %%",
             head["moving"], head["fixed"], scores["mean_dice_faim"], scores["mean_dice_merged"],
             scores["mean_hd95"], scores["folding_percent"])
    return record


def _load_field(field: FieldInput, shape: Sequence[int], affine: np.ndarray,
                grid_name: str | os.PathLike) -> tuple[np.ndarray, str]:
    """The field as a checked ``(3, X, Y, Z)`` float32 array on the grid, and its name."""
    shape = tuple(shape)
    if isinstance(field, np.ndarray):
        name, array = "displacement field", field.astype(np.float32, copy=False)
        if not np.all(np.isfinite(array)):
            raise InputError(f"{name}: holds NaN or Inf values")
    else:
        name, (array, field_affine) = str(field), read_field(field)
    if array.ndim != 4 or array.shape[0] != 3 or tuple(array.shape[1:]) != shape:
        raise InputError(f"{name}: displacement field of shape {tuple(array.shape)} (components "
                         f"first) does not fit the grid {shape} of {grid_name}; expected "
                         f"{(3, *shape)}")
    if not isinstance(field, np.ndarray):
        check_same_grid(shape, affine, grid_name, shape, field_affine, field)
    return array, name


def _field_hash(field: FieldInput) -> str | None:
    """SHA-256 of a field given as a file (``None`` for an array: made in this process)."""
    return None if isinstance(field, np.ndarray) else file_sha256(field)


def _runtime_record(runtime: RuntimeInput, slice_step: int | None,
                    pair: tuple[str, str] | None = None,
                    data_fingerprint: str | None = None,
                    field: tuple[FieldInput, str | None] | None = None) -> dict[str, Any]:
    """The method's runtime record with every :data:`RUNTIME_KEYS` key present.

    Missing entries are ``None`` (``versions``: this process's versions; ``options``: ``{}``).
    The ``moving`` and ``fixed`` subject IDs it records must be ``pair``'s (they are dropped:
    the evaluation writes its own), a ``data_fingerprint`` it records must be
    ``data_fingerprint``, that of the pair's files now, and a ``field_sha256`` it records must
    be the hash of the field file scored (``field``: the field and its hash, ``None`` for an
    array).
    """
    source = "runtime record"
    if runtime is None:
        record: dict[str, Any] = {}
    elif isinstance(runtime, Mapping):
        record = dict(runtime)
    else:
        source = str(runtime)
        record = read_json(runtime)
        if not isinstance(record, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(record).__name__}")
    clash = sorted(set(record) & {"dataset", *metric_keys()})
    if clash:
        raise InputError(f"{source}: holds keys the evaluation computes: {clash}")
    if pair is not None:
        runs.check_pair(record, pair, source)
    recorded_data = record.get("data_fingerprint")
    if data_fingerprint is not None and recorded_data not in (None, data_fingerprint):
        raise InputError(f"{source}: a field made from other data than the pair's files now "
                         f"(fingerprint {str(recorded_data)[:12]} != {data_fingerprint[:12]}): "
                         "the dataset was prepared again since; register the pair again")
    recorded_field = record.get("field_sha256")
    field_path, field_sha256 = field if field is not None else (None, None)
    if field_sha256 is not None and recorded_field not in (None, field_sha256):
        raise InputError(f"{source}: the record of another field than {field_path} (sha256 "
                         f"{str(recorded_field)[:12]} != {field_sha256[:12]}): give the "
                         "runtime.json written with this field, or register the pair again")
    record.pop("moving", None)
    record.pop("fixed", None)
    time_s = record.get("time_s")
    if time_s is not None and not isinstance(time_s, int | float):
        raise InputError(f"{source}: time_s must be a number, got {time_s!r}")
    recorded_step = record.get("slice_step")
    if slice_step is not None and recorded_step is not None and recorded_step != slice_step:
        raise InputError(f"{source}: slice_step {recorded_step} contradicts the requested "
                         f"slice step {slice_step}")
    step = slice_step if slice_step is not None else recorded_step
    step = 1 if step is None else step
    if not isinstance(step, int) or step < 1:
        raise InputError(f"{source}: slice_step must be a positive integer, got {step!r}")
    return {
        "method": record.get("method"),
        "time_s": time_s,
        "device": record.get("device"),
        "slice_step": step,
        "versions": record.get("versions") or versions(),
        "options": record.get("options") or {},
        **{k: v for k, v in record.items() if k not in RUNTIME_KEYS},
    }


def _json_safe(value: Any) -> Any:
    """Replace NaN/Inf floats by ``None`` and NumPy scalars by Python ones, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
