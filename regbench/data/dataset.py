"""The one layout of every prepared dataset, and its reader.

::

    DIR/images/<id>.nii.gz     intensities, float32, divided by the volume's maximum
    DIR/labels/<id>.nii.gz     original label IDs
    DIR/dataset.json           the manifest (:func:`make_manifest`)

The manifest is written last: a folder without one is not a dataset, so an interrupted
preparation never looks complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from regbench import __version__
from regbench.io import (
    InputError,
    check_same_grid,
    read_image,
    read_json,
    read_labels,
    voxel_spacing,
    write_image,
    write_json,
)

MANIFEST = "dataset.json"
SPLITS = ("train", "val", "test")
"""Splits a manifest may hold; ``val`` (subjects for validation during training) may be empty."""


def make_manifest(
    *,
    name: str,
    source: str,
    subjects: Sequence[str],
    splits: Mapping[str, Sequence[str]],
    labels: Mapping[int, str],
    regions: Mapping[str, Sequence[int]],
    shape: Sequence[int],
    affine: np.ndarray,
    **extra: Any,
) -> dict[str, Any]:
    """The manifest record; ``extra`` keys (provenance, seeds, versions) are kept as given."""
    subjects = list(subjects)
    for split in SPLITS:
        unknown = sorted(set(splits.get(split, [])) - set(subjects))
        if unknown:
            raise ValueError(f"split {split!r} names subjects not in the dataset: {unknown}")
    unknown_labels = sorted({int(i) for ids in regions.values() for i in ids} - set(labels))
    if unknown_labels:
        raise ValueError(f"regions use labels without a name: {unknown_labels}")
    return {
        "name": name,
        "source": source,
        "suite_version": __version__,
        "subjects": subjects,
        "splits": {split: list(splits.get(split, [])) for split in SPLITS},
        "labels": {str(int(k)): v for k, v in labels.items()},
        "regions": {k: [int(i) for i in v] for k, v in regions.items()},
        "grid": {
            "shape": [int(s) for s in shape],
            "spacing_mm": [round(float(s), 6) for s in voxel_spacing(affine)],
            "affine": np.asarray(affine, dtype=float).tolist(),
        },
        **extra,
    }


def write_subject(root: str | os.PathLike, subject: str, image: np.ndarray, labels: np.ndarray,
                  affine: np.ndarray) -> None:
    """Write one subject's image and label map (each atomically)."""
    if image.shape != labels.shape:
        raise ValueError(f"{subject}: image {image.shape} and labels {labels.shape} differ")
    root = Path(root)
    write_image(root / "images" / f"{subject}.nii.gz", image.astype(np.float32), affine)
    write_image(root / "labels" / f"{subject}.nii.gz", labels.astype(np.int32), affine)


def write_manifest(root: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    write_json(Path(root) / MANIFEST, dict(manifest))


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset: its manifest and lazy access to its volumes."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, root: str | os.PathLike) -> Dataset:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise InputError(f"{path}: not found (prepare the dataset first, e.g. "
                             f"`regbench demo-data --out {root}`)")
        manifest = read_json(path)
        missing = [key for key in ("name", "subjects", "splits", "labels", "regions", "grid")
                   if key not in manifest]
        if missing:
            raise InputError(f"{path}: manifest lacks {', '.join(missing)}")
        return cls(root, manifest)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def subjects(self) -> list[str]:
        return list(self.manifest["subjects"])

    @property
    def train(self) -> list[str]:
        return list(self.manifest["splits"]["train"])

    @property
    def val(self) -> list[str]:
        """Validation subjects (may be empty: then validation pairs come from the training split).
        """
        return list(self.manifest["splits"].get("val", []))

    @property
    def test(self) -> list[str]:
        return list(self.manifest["splits"]["test"])

    @cached_property
    def labels(self) -> dict[int, str]:
        """Label ID -> name, for every label that the regions may use."""
        return {int(k): v for k, v in self.manifest["labels"].items()}

    @cached_property
    def regions(self) -> dict[str, list[int]]:
        return {k: [int(i) for i in v] for k, v in self.manifest["regions"].items()}

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.manifest["grid"]["shape"])

    @cached_property
    def affine(self) -> np.ndarray:
        return np.asarray(self.manifest["grid"]["affine"], dtype=float)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.manifest["grid"]["spacing_mm"])

    def image_path(self, subject: str) -> Path:
        return self._path("images", subject)

    def labels_path(self, subject: str) -> Path:
        return self._path("labels", subject)

    def image(self, subject: str) -> np.ndarray:
        """The subject's intensities, ``(X, Y, Z)`` float32."""
        path = self.image_path(subject)
        image, affine = read_image(path)
        self._check_grid(image.shape, affine, path)
        return image

    def label_map(self, subject: str) -> np.ndarray:
        """The subject's label map, ``(X, Y, Z)`` int32."""
        path = self.labels_path(subject)
        labels, affine = read_labels(path)
        self._check_grid(labels.shape, affine, path)
        return labels

    def _path(self, kind: str, subject: str) -> Path:
        if subject not in self.manifest["subjects"]:
            raise InputError(f"{self.root / MANIFEST}: no subject {subject!r} in dataset "
                             f"{self.name!r}")
        return self.root / kind / f"{subject}.nii.gz"

    def _check_grid(self, shape: tuple[int, ...], affine: np.ndarray, path: Path) -> None:
        check_same_grid(self.shape, self.affine, self.root / MANIFEST, shape, affine, path)
