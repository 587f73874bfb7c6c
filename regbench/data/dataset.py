"""The one layout of every prepared dataset, and its reader.

::

    DIR/images/<id>.nii.gz     intensities, float32, divided by the volume's maximum
    DIR/labels/<id>.nii.gz     original label IDs
    DIR/dataset.json           the manifest (:func:`make_manifest`)

The manifest is written last: a folder without one is not a dataset, so an interrupted
preparation never looks complete.
"""

from __future__ import annotations

import hashlib
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
from regbench.naming import MANIFEST

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
    resampling: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The manifest record; ``extra`` keys (provenance, seeds, versions) are kept as given.

    ``resampling``: how the volumes were brought to a reduced resolution, kept in ``grid``.
    """
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
            **({"resampling": dict(resampling)} if resampling else {}),
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
        problem = _manifest_problem(manifest)
        if problem:
            raise InputError(f"{path}: {problem}; prepare the dataset again (`regbench "
                             "demo-data` or `regbench prepare`)")
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

    def fingerprint(self, subjects: Sequence[str]) -> str:
        """SHA-256 of the image and label files of ``subjects``, in order (hex).

        The prepared files are written deterministically (nibabel's gzip stores no time), so
        the same data prepared again has the same fingerprint, and any change of a voxel, an
        affine or a subject changes it.
        """
        digest = hashlib.sha256()
        for subject in subjects:
            for path in (self.image_path(subject), self.labels_path(subject)):
                digest.update(f"{subject}/{path.parent.name}\n".encode())
                try:
                    with path.open("rb") as file:
                        while block := file.read(1 << 20):
                            digest.update(block)
                except OSError as err:
                    raise InputError(f"{path}: cannot read ({err.strerror})") from None
        return digest.hexdigest()

    def _path(self, kind: str, subject: str) -> Path:
        if subject not in self.manifest["subjects"]:
            raise InputError(f"{self.root / MANIFEST}: no subject {subject!r} in dataset "
                             f"{self.name!r}")
        return self.root / kind / f"{subject}.nii.gz"

    def _check_grid(self, shape: tuple[int, ...], affine: np.ndarray, path: Path) -> None:
        check_same_grid(self.shape, self.affine, self.root / MANIFEST, shape, affine, path,
                        remedy="prepare the dataset again")


def _manifest_problem(manifest: Any) -> str | None:
    """What makes ``manifest`` unusable (a missing or malformed entry), or ``None``."""
    if not isinstance(manifest, dict):
        return "not a dataset manifest (expected a JSON object)"
    entries = {"name": str, "subjects": list, "splits": dict, "labels": dict, "regions": dict,
               "grid": dict}
    missing = [key for key in entries if key not in manifest]
    if missing:
        return f"manifest lacks {', '.join(missing)}"
    for key, kind in entries.items():
        if not isinstance(manifest[key], kind):
            return f"manifest entry {key} is not a {kind.__name__}"
    for key in ("splits.train", "splits.test", "grid.shape", "grid.spacing_mm", "grid.affine"):
        group, entry = key.split(".")
        if entry not in manifest[group]:
            return f"manifest lacks {key}"
    for split, subjects in manifest["splits"].items():
        if not isinstance(subjects, list):
            return f"manifest entry splits.{split} is not a list"
    grid = manifest["grid"]
    try:
        shape = np.asarray(grid["shape"], dtype=int)
        spacing = np.asarray(grid["spacing_mm"], dtype=float)
        affine = np.asarray(grid["affine"], dtype=float)
    except (TypeError, ValueError):
        return "manifest entry grid holds non-numbers"
    if shape.shape != (3,) or spacing.shape != (3,) or affine.shape != (4, 4):
        return ("manifest entry grid needs shape (3 sizes), spacing_mm (3 numbers) and affine "
                "(4x4)")
    if not (np.all(np.isfinite(affine)) and np.all(np.isfinite(spacing))):
        return "manifest entry grid holds NaN or infinite numbers"
    # HD95 is in the manifest's millimetres: they must be the affine's (the images' own).
    if not np.allclose(spacing, voxel_spacing(affine), rtol=1e-4, atol=1e-6):
        return (f"grid.spacing_mm {spacing.tolist()} contradicts grid.affine, whose voxels are "
                f"{np.round(voxel_spacing(affine), 6).tolist()} mm")
    return _labels_problem(manifest) or _splits_problem(manifest)


def _labels_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the manifest's labels and regions, or ``None``."""
    for key in manifest["labels"]:
        try:
            int(key)
        except ValueError:
            return f"manifest label key {key!r} is not an integer label ID"
    if not manifest["regions"]:
        return "manifest entry regions is empty: there would be nothing to score"
    labels = {int(key) for key in manifest["labels"]}
    for region, members in manifest["regions"].items():
        if not isinstance(members, list) or not members:
            return f"region {region!r} must list one label ID or more"
        if any(isinstance(m, bool) or not isinstance(m, int) for m in members):
            return f"region {region!r} holds members that are not integer label IDs: {members}"
        unknown = sorted(set(members) - labels)
        if unknown:
            return f"region {region!r} uses labels that are not under labels: {unknown}"
    return None


def _splits_problem(manifest: dict[str, Any]) -> str | None:
    """Subjects of a training or validation split that are also test subjects, or ``None``."""
    test = set(manifest["splits"]["test"])
    for split, subjects in manifest["splits"].items():
        overlap = sorted(test & set(subjects)) if split != "test" else []
        if overlap:
            return f"subjects {overlap} are in splits.{split} and in splits.test"
    return None
