"""Run a method on pairs: time it, write its field and runtime record; score one pair on request.

Per pair, in its folder::

    field.nii.gz     the method's displacement field, (X, Y, Z, 3) voxel units, pull convention
    runtime.json     {"method", "time_s", "device", "versions", "options", "slice_step",
                      "moving", "fixed" (subject IDs), "data_fingerprint" (of the pair's
                      files, :meth:`regbench.data.dataset.Dataset.fingerprint`),
                      "checkpoint" (a learned method's), "field_sha256" (of field.nii.gz
                      as written)}

:func:`register_pairs` writes only these two files, for many pairs of a prepared dataset with
the method set up once (a learned method loads its network once): the workflow's registration
stage, which the CPU-only ``regbench evaluate`` then scores. Its folder is a run folder
(:func:`regbench.runs.claim_run`): pairs of another registration setup (method, options, slice
step or checkpoint) are refused there, or deleted first when asked. :func:`register_pair` and
:func:`register_files` register one pair and then score it with the suite's evaluation
(:mod:`regbench.evaluate`: ``warped.nii.gz``, ``warped_labels.nii.gz``, ``metrics.json``).

``time_s`` is the wall time of ``method.register`` on one pair alone (reading and writing files
excluded), with CUDA synchronised before and after. On a GPU the method first registers a pair
once untimed, before the first timed pair of a process, so the times exclude CUDA's one-off
start-up (context, kernel loading, autotuning) and measure what every further pair costs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regbench.data.dataset import Dataset
from regbench.degrade import check_slice_step, thin_slices
from regbench.io import (
    file_sha256,
    read_image,
    read_on_grid,
    voxel_spacing,
    write_field,
    write_json,
)
from regbench.methods import Method
from regbench.naming import FIELD_FILE, RUNTIME_FILE
from regbench.runs import claim_run, clear_pair, pair_folder
from regbench.runtime import versions

log = logging.getLogger(__name__)


def timed_register(method: Method, moving: np.ndarray, fixed: np.ndarray,
                   spacing: tuple[float, float, float],
                   warm_up: bool = True) -> tuple[np.ndarray, float]:
    """Register ``moving`` onto ``fixed`` (each ``(X, Y, Z)``) and time it.

    Args:
        method: the method, set up (a learned one with its network loaded).
        moving, fixed: the pair's images.
        spacing: voxel size in mm.
        warm_up: on a GPU, register once untimed first (see the module docstring); needed
            once per process only.

    Returns:
        ``(field (3, X, Y, Z) float32, seconds)`` of ``method.register``.

    Raises:
        RuntimeError: the field has the wrong shape or NaN/Inf values.
    """
    cuda = method.device.type == "cuda"
    if cuda and warm_up:
        method.register(moving, fixed, spacing)  # untimed warm-up, see the module docstring
        torch.cuda.synchronize(method.device)
    start = time.perf_counter()
    field = method.register(moving, fixed, spacing)
    if cuda:
        torch.cuda.synchronize(method.device)
    seconds = time.perf_counter() - start
    field = np.asarray(field)
    if field.shape != (3, *fixed.shape):
        raise RuntimeError(f"method {method.name!r} returned a field of shape {field.shape}, "
                           f"expected {(3, *fixed.shape)}")
    if not np.all(np.isfinite(field)):
        raise RuntimeError(f"method {method.name!r} returned a field with NaN or Inf values")
    return field.astype(np.float32, copy=False), seconds


def register_pair(method: Method, dataset: Dataset, moving_id: str, fixed_id: str,
                  out_dir: str | os.PathLike, slice_step: int = 1) -> dict[str, Any]:
    """Register subject ``moving_id`` onto ``fixed_id`` of a prepared dataset and score it.

    With ``slice_step > 1`` the method sees the moving image thinned by
    :func:`regbench.degrade.thin_slices` (axis 1); the original labels are scored. Returns the
    ``metrics.json`` record. Every input, the label maps included, is read and checked before
    the method runs.
    """
    from regbench.evaluate import evaluate_dataset_pair

    moving = _thinned(dataset.image(moving_id), slice_step)
    fixed = dataset.image(fixed_id)
    for subject in (moving_id, fixed_id):
        dataset.label_map(subject)
    warn_other_training_data(method, dataset)
    clear_pair(Path(out_dir))
    runtime = _register_and_write(method, moving, fixed, dataset.spacing, dataset.affine,
                                  Path(out_dir), slice_step, (moving_id, fixed_id),
                                  dataset.fingerprint([moving_id, fixed_id]))
    return evaluate_dataset_pair(dataset, moving_id, fixed_id, runtime.pop("field"), out_dir,
                                 runtime=runtime, slice_step=slice_step)


def register_pairs(method: Method, dataset: Dataset, pairs: Sequence[tuple[str, str]],
                   out_root: str | os.PathLike, slice_step: int = 1,
                   replace_stale: bool = False) -> list[dict[str, Any]]:
    """Register each ``(moving, fixed)`` pair of a prepared dataset, without scoring it.

    Writes ``out_root/{moving}/{fixed}/field.nii.gz`` and ``runtime.json`` per pair (and removes
    the scores of an earlier field there, :func:`regbench.runs.pair_folder`). Each pair is
    timed on its own; on a GPU only the first one is preceded by the untimed warm-up, since the
    process is already warm for the others.

    Args:
        method: the method, set up once for every pair.
        dataset: the prepared dataset holding the subjects.
        pairs: ``(moving, fixed)`` subject IDs, registered in this order.
        out_root: the run folder; each pair gets its folder ``{moving}/{fixed}`` below it.
        slice_step: the method sees the moving image thinned by
            :func:`regbench.degrade.thin_slices` (axis 1) when > 1.
        replace_stale: delete the pairs of another setup in ``out_root`` (else they are
            refused).

    Returns:
        The runtime records, in pair order.

    Raises:
        InputError: a subject is not in the dataset, or ``out_root`` holds pairs of another
            setup or a process of another setup registers into it (checked before anything is
            registered).
    """
    for subject in {s for pair in pairs for s in pair}:
        dataset.image_path(subject)
    check_slice_step(slice_step, dataset.shape[1])
    warn_other_training_data(method, dataset)
    records = []
    with claim_run(out_root, method_setup(method, slice_step), replace_stale):
        for index, (moving_id, fixed_id) in enumerate(pairs):
            moving = _thinned(dataset.image(moving_id), slice_step)
            fixed = dataset.image(fixed_id)
            log.info("pair %d of %d: %s -> %s", index + 1, len(pairs), moving_id, fixed_id)
            with pair_folder(out_root, moving_id, fixed_id) as out_dir:
                runtime = _register_and_write(method, moving, fixed, dataset.spacing,
                                              dataset.affine, out_dir, slice_step,
                                              (moving_id, fixed_id),
                                              dataset.fingerprint([moving_id, fixed_id]),
                                              warm_up=index == 0)
            runtime.pop("field")
            records.append(runtime)
    return records


def warn_other_training_data(method: Method, dataset: Dataset) -> None:
    """Warn when a learned method registers a dataset whose training and validation files are
    not those it was trained on: another grid (a model of 4 mm data on 8 mm data), data
    prepared again, or another dataset. A model transferred on purpose may mean to; it is said."""
    trained_on = getattr(method, "trained_on", None)
    if not trained_on:
        return
    training = [*dataset.train, *dataset.val]
    if trained_on.get("fingerprint") != dataset.fingerprint(training):
        log.warning("%s was trained on other data than the training split of %s (dataset %r "
                    "of %d subjects; here %r on a grid of %s at %s mm): a network registers "
                    "well only the grid and intensities it learned", method.name, dataset.root,
                    trained_on.get("name"), len(trained_on.get("train", [])), dataset.name,
                    "x".join(map(str, dataset.shape)),
                    "x".join(f"{s:g}" for s in dataset.spacing))


def method_setup(method: Method, slice_step: int) -> dict[str, Any]:
    """The registration setup of ``method`` at ``slice_step`` (:data:`regbench.runs.SETUP_KEYS`):
    what every pair of its run folder shares."""
    return {"method": method.name, "options": method.options, "slice_step": slice_step,
            "checkpoint": getattr(method, "checkpoint", None)}


def register_files(method: Method, moving_image: str | os.PathLike,
                   fixed_image: str | os.PathLike, out_dir: str | os.PathLike,
                   moving_labels: str | os.PathLike | None = None,
                   fixed_labels: str | os.PathLike | None = None,
                   slice_step: int = 1, reorient: bool = False) -> dict[str, Any]:
    """:func:`register_pair` for images given as files on one grid.

    With both label maps the pair is scored (every label its own region) and the
    ``metrics.json`` record is returned; without them only ``field.nii.gz`` and
    ``runtime.json`` are written and the runtime record is returned. Every file is read and
    checked before the method runs: all must lie on the fixed image's grid, the moving ones
    after flipping and permuting their voxel axes into its orientation when ``reorient`` is set
    (:func:`regbench.io.reorient_like`; logged).
    """
    from regbench.evaluate import evaluate_paths

    if (moving_labels is None) != (fixed_labels is None):
        raise ValueError("give both label maps or neither")
    fixed, affine = read_image(fixed_image)
    moving = read_on_grid(moving_image, "image", fixed.shape, affine, fixed_image, reorient)
    if moving_labels is not None:
        read_on_grid(moving_labels, "labels", fixed.shape, affine, fixed_image, reorient)
        read_on_grid(fixed_labels, "labels", fixed.shape, affine, fixed_image)
    spacing = tuple(float(s) for s in voxel_spacing(affine))
    moving = _thinned(moving, slice_step)
    clear_pair(Path(out_dir))
    runtime = _register_and_write(method, moving, fixed, spacing, affine, Path(out_dir),
                                  slice_step)
    runtime.pop("field")
    if moving_labels is None:
        return runtime
    return evaluate_paths(moving_image=moving_image, moving_labels=moving_labels,
                          fixed_labels=fixed_labels, field=Path(out_dir) / FIELD_FILE,
                          out_dir=out_dir, runtime=runtime, slice_step=slice_step,
                          reorient=reorient)


def _thinned(moving: np.ndarray, slice_step: int) -> np.ndarray:
    check_slice_step(slice_step, moving.shape[1])
    return moving if slice_step == 1 else thin_slices(moving, step=slice_step, axis=1)


def _register_and_write(method: Method, moving: np.ndarray, fixed: np.ndarray,
                        spacing: tuple[float, float, float], affine: np.ndarray, out_dir: Path,
                        slice_step: int, subjects: tuple[str, str] | None = None,
                        data_fingerprint: str | None = None,
                        warm_up: bool = True) -> dict[str, Any]:
    """Time the method, write ``field.nii.gz`` and ``runtime.json``; returns the runtime record
    with the field under ``"field"``. ``subjects``: the pair's ``(moving, fixed)`` IDs, and
    ``data_fingerprint``: their files', recorded so that the field cannot be scored as another
    pair, or on data prepared again; ``field_sha256``, the hash of the field file written, so
    that the record cannot be scored with another field."""
    log.info("registering with %s (%s)", method.name, method.device_description())
    field, seconds = timed_register(method, moving, fixed, spacing, warm_up=warm_up)
    runtime = {"method": method.name, "time_s": seconds,
               "device": method.device_description(), "versions": versions(),
               "options": method.options, "slice_step": slice_step}
    if subjects is not None:
        runtime["moving"], runtime["fixed"] = subjects
        runtime["data_fingerprint"] = data_fingerprint
    if getattr(method, "checkpoint", None) is not None:
        runtime["checkpoint"] = method.checkpoint
    write_field(out_dir / FIELD_FILE, field, affine)
    runtime["field_sha256"] = file_sha256(out_dir / FIELD_FILE)  # ties the record to the file
    write_json(out_dir / RUNTIME_FILE, runtime)
    log.info("%s: %.3f s", method.name, seconds)
    return {**runtime, "field": field}
