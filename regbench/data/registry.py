"""The dataset registry: one :class:`Dataset` spec per dataset, read by everything that names one.

A spec says what a dataset is called (in tables, figures and captions), which layouts of its
original distribution its preparer reads, the preparer and its extra options, the default splits
(and so the test subjects the workflow plans with), the scales it allows and their default, and
how to get it (download or instructions). The workflow (its wildcards, rules, configuration
checks and defaults), ``regbench prepare`` and ``regbench download``, and the report tables
take every one of these from here.

Adding a dataset is its spec and its preparer. A Python file in a folder of the
``REGBENCH_DATASET_PATH`` environment variable (several folders separated by ``os.pathsep``)
registers each :class:`Dataset` it defines at module level; its preparer is named as
``f"{__name__}:prepare"``. Such a file is read when the workflow plans, so it should import
heavy packages inside its preparer, not at the top. The preparer is called as::

    prepare(raw, out, subjects=None, *, scale=..., splits=None, **options) -> Path

with ``subjects`` a comma-separated string or a list (or ``None``: every subject),
``splits`` the user's own ``{"train", "val", "test"}`` lists (or ``None``: the dataset's
default splits), ``options`` the spec's :attr:`Dataset.options`; it writes ``out`` as
docs/contracts.md describes (``images/``, ``labels/``, ``dataset.json`` last).

This module imports nothing beyond the standard library and the suite's pure-Python vocabulary
(:mod:`regbench.naming`, :mod:`regbench.data.protocol`, :mod:`regbench.data.scale`), so the
workflow can build its DAG from it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regbench import naming
from regbench.data import protocol
from regbench.data.scale import BLOCKS, WHOLE_VOXELS, check_scale

DATASET_PATH_ENV = "REGBENCH_DATASET_PATH"
"""Folders of dataset files of one's own (separated by ``os.pathsep``)."""

USER_PACKAGE = "regbench_user_datasets"
"""The package name under which a dataset file of one's own is imported."""

Splits = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Layout:
    """One layout of a dataset's original distribution that its preparer reads (and detects)."""

    name: str
    reads: str
    """What RAW holds in this layout, for ``regbench prepare --help``."""


@dataclass(frozen=True)
class Option:
    """A keyword argument of a preparer beyond the common ones, as ``regbench prepare`` flag
    ``--{name}``."""

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    workflow_threads: bool = False
    """The workflow sets it to the preparation job's threads."""
    repeatable: bool = False
    """The flag may be given again; the preparer gets the list of values (``None``: none)."""
    minimum: int | None = None
    """An integer option's smallest value (the command line refuses less in one line)."""


def key_value(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> ``(KEY, VALUE read as YAML)``: a repeatable :class:`Option`'s type, and
    what ``--option`` of the method commands reads (:func:`regbench.cli.arguments.parse_options`).

    Raises:
        ValueError: no ``=``, an empty key, or a VALUE that is not YAML.
    """
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r}: expected KEY=VALUE")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ValueError(f"{text!r}: VALUE is not valid YAML ({err})") from None


@dataclass(frozen=True)
class Dataset:
    """What the suite knows about one dataset."""

    name: str
    """Folder and configuration name (``data/{name}``, ``datasets.{name}``)."""
    title: str
    """How tables and figures name it."""
    summary: str
    """One line for ``regbench prepare --help``."""
    default_splits: Callable[[Mapping[str, Any]], Splits]
    """``{"train", "val", "test"}`` subject lists from the dataset's configuration settings,
    when the configuration gives no ``splits`` of its own."""
    scale_rule: str = BLOCKS
    """The scales it allows (:mod:`regbench.data.scale`)."""
    default_scale: float = 1
    """Its resolution unless one is given (an int where whole: the workflow writes it into
    command lines, and ``--scale 1`` must stay as it was)."""
    caption: str = ""
    """How captions name it (default: :attr:`title`)."""
    description: str = ""
    """What its preparation does, for ``regbench prepare DATASET --help``."""
    layouts: tuple[Layout, ...] = ()
    """The layouts of its original distribution that the preparer reads (it detects which)."""
    preparer: str | None = None
    """``"module:function"`` of its preparer; ``None`` for the demo alone, which its own command
    makes (``regbench demo-data``, the workflow's ``demo_data`` rule)."""
    options: tuple[Option, ...] = ()
    """Its preparer's keyword arguments beyond the common ones (``regbench prepare`` flags)."""
    subject_example: str = ""
    """Two subject IDs, comma-separated, for ``--subjects``' help."""
    raw: str | None = None
    """Default folder of its original distribution in the workflow (``None``: it must be
    given)."""
    how_to_get: str = ("Put a copy of its original distribution in a folder and give that "
                       "folder as RAW (in the workflow: datasets.<name>.raw).")
    """Where it comes from (``regbench download`` says this when it cannot download)."""
    download: str | None = None
    """``"module:function"`` that downloads it: ``download(out, *, url, sha256, groups)``."""
    paper_numbers_from: str | None = None
    """The dataset whose paper numbers its tables show, for orientation, when the paper has
    none of its own."""
    paper_numbers_note: str = ""
    """Why they show another dataset's paper numbers: the start of a caption sentence."""

    @property
    def prepared(self) -> bool:
        """Whether ``regbench prepare`` makes it from a copy of its original distribution."""
        return self.preparer is not None

    def settings(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Its configuration settings ``given``, with its defaults for ``scale`` and ``raw``."""
        defaults: dict[str, Any] = {"scale": self.default_scale}
        if self.raw is not None:
            defaults["raw"] = self.raw
        return {**defaults, **given}

    def check_scale(self, scale: Any) -> float:
        """``scale`` as a float if this dataset allows it, else ``ValueError`` saying why
        (:func:`regbench.data.scale.check_scale` under :attr:`scale_rule`)."""
        return check_scale(scale, self.scale_rule)

    def test_subjects(self, settings: Mapping[str, Any]) -> list[str]:
        """The test subjects of a configuration's settings: its own ``splits``' test list, else
        the default test split, restricted to the chosen ``subjects`` of a prepared dataset."""
        if "splits" in settings:
            return list(settings["splits"]["test"])
        test = list(self.default_splits(settings).get("test", []))
        chosen = settings.get("subjects") if self.prepared else None
        return [s for s in test if chosen is None or s in chosen]

    def prepare_function(self) -> Callable[..., Path]:
        if self.preparer is None:
            raise ValueError(f"{self.name} is not prepared by `regbench prepare`")
        return _resolve(self.preparer)

    def download_function(self) -> Callable[..., Path] | None:
        return None if self.download is None else _resolve(self.download)


def _resolve(reference: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (importing its module only now)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


# --- the suite's datasets --------------------------------------------------------------------


def _demo_splits(settings: Mapping[str, Any]) -> Splits:
    train, val, test = naming.demo_split(settings["subjects"], settings.get("test_subjects"))
    return {"train": train, "val": val, "test": test}


DEMO = Dataset(
    name="demo",
    title="Demo",
    caption="the synthetic demo",
    summary="the embedded SYNTHETIC demo (regbench demo-data), made offline from MNI152",
    default_splits=_demo_splits,
    scale_rule=WHOLE_VOXELS,
    default_scale=0.5,
    how_to_get="made offline by `regbench demo-data` from the MNI152 template inside nilearn",
    paper_numbers_from="lpba40",
    paper_numbers_note="The demo is synthetic and the paper has no numbers for it",
)

LPBA40 = Dataset(
    name="lpba40",
    title="LPBA40",
    summary="LPBA40 (LONI, manual download): affine to MNI152, then crop",
    description=(
        "Voxel axes are read as RAS; each subject is registered affinely (ANTs) to nilearn's "
        "MNI152 brain template on the FSL 1 mm grid, then cropped. Split: S01-S30 train, "
        "S31-S40 test."),
    layouts=(
        Layout("delineation_space",
               "LONI's delineation-space download (Analyze .hdr + .img[.gz], searched under RAW "
               "as .../delineation_space/S01/...)"),
        Layout("nifti",
               "a flat folder of 160x192x160 1 mm NIfTI files "
               "(S01.delineation.skullstripped.nii.gz + S01.delineation.structure.label.nii.gz, "
               "as registration repositories distribute it; the header's orientation is ignored "
               "and RAS is checked from the labels)"),
    ),
    preparer="regbench.data.lpba40:prepare",
    options=(
        Option("threads", int, None,
               "ITK threads for ANTs (default: 1; with more, ANTs' sampled metric makes reruns "
               "differ slightly)", workflow_threads=True, minimum=1),
        Option("seed", int, 0, "seed of ANTs' metric sampling (default: 0)", minimum=0),
        Option("registration", key_value, None,
               "an ants.registration keyword of the alignment to MNI152, overriding ANTsPy's "
               "Affine defaults, as KEY=VALUE with VALUE read as YAML (e.g. "
               "aff_iterations=[100,50]); repeatable", repeatable=True),
    ),
    default_splits=lambda settings: protocol.LPBA40_SPLITS,
    subject_example="S01,S31",
    how_to_get=(
        "LPBA40 cannot be downloaded automatically: LONI asks every user to accept its data use "
        "terms. Sign in at https://ida.loni.usc.edu (LONI Image & Data Archive), open the "
        "LPBA40 atlas downloads and choose \"LPBA40 Subjects Delineation Space: MRI and label "
        "files in delineation space\". Unpack it anywhere: it holds "
        "LPBA40/delineation_space/S01 .. S40, each with S01.delineation.skullstripped.img.gz "
        "(+ .hdr) and S01.delineation.structure.label.img.gz (+ .hdr). Then run `regbench "
        "prepare lpba40 --raw <that delineation_space folder, or any folder above it> --out "
        "data/lpba40` (the workflow reads it from datasets.lpba40.raw, default "
        "raw/LPBA40/delineation_space). A copy in the NIfTI form many registration "
        "repositories distribute (S01.delineation.skullstripped.nii.gz + "
        "S01.delineation.structure.label.nii.gz, 160x192x160 of 1 mm, in one folder) is read "
        "too: give that folder as --raw."),
)

MINDBOGGLE101 = Dataset(
    name="mindboggle101",
    title="Mindboggle101",
    summary="Mindboggle101 MNI152 volumes: crop",
    description=(
        "Split: train NKI-RS-22 + NKI-TRT-20, test OASIS-TRT-20; MMRR-21 and Extra-18 subjects "
        "are prepared when present but belong to no split."),
    layouts=(
        Layout("volumes_in_MNI152",
               "the <GROUP>_volumes_in_MNI152 archives, unpacked as RAW/<GROUP>_volumes/"
               "<subject>/, or the .tar.gz files themselves in RAW, which are extracted"),
    ),
    preparer="regbench.data.mindboggle101:prepare",
    default_splits=lambda settings: protocol.MINDBOGGLE101_SPLITS,
    subject_example="OASIS-TRT-20-1,NKI-RS-22-3",
    raw="raw/mindboggle101",
    how_to_get=(
        "`regbench download mindboggle101 --out RAW` fetches its archives (in the workflow: "
        "datasets.mindboggle101.download: true)"),
    download="regbench.data.mindboggle101:download",
)

BUILT_IN: tuple[Dataset, ...] = (DEMO, LPBA40, MINDBOGGLE101)
"""The suite's own datasets, in table order."""


# --- the registry ----------------------------------------------------------------------------


def available_datasets() -> dict[str, Dataset]:
    """Every registered dataset by name: the suite's, then those of ``REGBENCH_DATASET_PATH``.

    Raises:
        ValueError: a dataset file declares a name that is already registered.
    """
    found = {dataset.name: dataset for dataset in BUILT_IN}
    for folder in filter(None, os.environ.get(DATASET_PATH_ENV, "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            for dataset in _declared(str(path.resolve())):
                if dataset.name in found:
                    raise ValueError(f"{path}: dataset {dataset.name!r} is already registered; "
                                     "choose another name")
                if not dataset.prepared:
                    raise ValueError(f"{path}: dataset {dataset.name!r} names no preparer "
                                     "(preparer=f\"{__name__}:prepare\")")
                found[dataset.name] = dataset
    return found


@functools.cache
def _declared(path: str) -> tuple[Dataset, ...]:
    """The datasets a file defines at module level (the file is imported once a process)."""
    # the folder's hash keeps files of one name in two folders apart
    name = f"{USER_PACKAGE}.{Path(path).stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its preparer is found again by name ("module:function")
    spec.loader.exec_module(module)
    return tuple(value for value in vars(module).values() if isinstance(value, Dataset))


def get_dataset(name: str) -> Dataset:
    """The registered dataset ``name``.

    Raises:
        KeyError: no dataset of that name; the message lists the registered ones.
    """
    found = available_datasets()
    if name not in found:
        raise KeyError(f"{name!r} is not a registered dataset ({', '.join(found)}); add a file "
                       f"declaring its Dataset to a folder of {DATASET_PATH_ENV}")
    return found[name]


def title(name: str) -> str:
    """How tables and figures name a dataset (an unregistered one: by its name)."""
    found = available_datasets()
    return found[name].title if name in found else name


def caption_name(name: str) -> str:
    """How captions name a dataset (an unregistered one: by its name)."""
    found = available_datasets()
    return (found[name].caption or found[name].title) if name in found else name


def paper_numbers_of(name: str) -> tuple[str, str]:
    """``(dataset, note)``: the dataset whose paper numbers the tables of ``name`` show, and why
    when it is another's (``(name, "")`` when they are its own)."""
    spec = available_datasets().get(name)
    if spec is None or spec.paper_numbers_from is None:
        return name, ""
    return spec.paper_numbers_from, spec.paper_numbers_note
