"""ANTs baselines through ANTsPy: ``affine`` (Affine) and ``syn`` (SyN, affine then SyN).

Both run ``ants.registration`` on images built from the arrays with the dataset's voxel spacing,
origin 0 and identity direction (so ANTs' physical space is the voxel grid scaled by the spacing;
the NIfTI orientation plays no part). ANTs' forward transforms map points of the fixed image to
points of the moving image, which is the suite's pull convention; ``antsApplyTransforms``
composes them into one displacement field in mm on the fixed grid (evaluated at every voxel, so
nothing is lost at the border of the moving image), and dividing by the spacing gives voxel units.

Options (``defaults``, checked by ``option_rules``): every key but ``threads`` and
``random_seed`` is passed to ``ants.registration`` under the same name (lists become tuples; see
ANTsPy's documentation). ANTsPy's defaults are kept except where noted in ``defaults``.
``random_seed`` (a positive integer; ANTs takes 0 as "seed from the clock") fixes ANTs' random
metric sampling (``--random-seed``). ``threads`` is ITK's thread count, **1 by default**: with
one thread the same seed gives the same field, bit for bit. More threads are faster, but ITK's
parallel sums then run in varying order and fields differ between runs (up to 0.4 voxel and
mean Dice 0.498 to 0.506 over three runs of one demo pair on two cores), so they are opt-in
(``regbench register --threads N``, or ``--option threads=N``). ``threads: null`` takes the
variable ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` when set, else every core this process may
use, and ``random_seed: null`` leaves ANTs seeding from the clock. ITK reads its thread count
once per process, at the first ANTs call: a later, different value cannot take effect, is logged
as a warning, and the runtime record names the count in use.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from regbench.io import InputError
from regbench.methods import Method, Option
from regbench.runtime import describe_cpu

log = logging.getLogger(__name__)

ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
_itk_threads: int | None = None  # what ITK fixed at this process's first ANTs call

AFFINE_DEFAULTS: dict[str, Any] = {
    "threads": 1,
    "random_seed": 1,
    "aff_metric": "mattes",
    "aff_sampling": 32,
    "aff_random_sampling_rate": 0.2,
}

AFFINE_RULES: dict[str, Option] = {
    "threads": Option(ge=1, nullable=True),
    "random_seed": Option(ge=1, nullable=True),
    "aff_metric": Option(choices=("mattes", "meansquares", "GC")),  # ANTsPy's documented set
    "aff_sampling": Option(ge=1),
    "aff_random_sampling_rate": Option(gt=0, le=1),
}


class AntsMethod(Method):
    """An ``ants.registration`` transform type turned into a dense displacement field."""

    type_of_transform: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        levels = ("aff_iterations", "aff_shrink_factors", "aff_smoothing_sigmas")
        lengths = {key: len(self.options[key]) for key in levels if key in self.options}
        if len(set(lengths.values())) > 1:  # one entry per level of the affine stage each
            raise ValueError(f"method {self.name!r}: {', '.join(lengths)} need one entry per "
                             f"level each, got {', '.join(map(str, lengths.values()))}")

    def register(self, moving: np.ndarray, fixed: np.ndarray,
                 spacing: tuple[float, float, float]) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="regbench-ants-") as workdir:
            transforms = self.transforms(moving, fixed, spacing, Path(workdir))
            return dense_field(transforms, to_ants(fixed, spacing), Path(workdir))

    def transforms(self, moving: np.ndarray, fixed: np.ndarray,
                   spacing: tuple[float, float, float], workdir: Path) -> list[str]:
        """Run ANTs; returns its forward transform files (fixed -> moving points), in ``workdir``.
        """
        import ants

        self.use_threads()
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()
                  if k not in ("threads", "random_seed")}
        # ANTsPy takes the seed from its module config only (ants.set_ants_deterministic would
        # also force one thread and a "Repro" transform type).
        previous_seed = ants.config._random_seed
        ants.config._random_seed = self.options["random_seed"]
        try:
            result = ants.registration(
                to_ants(fixed, spacing), to_ants(moving, spacing),
                type_of_transform=self.type_of_transform, outprefix=str(workdir / "ants_"),
                **kwargs)
        except RuntimeError as err:  # ANTs' own log says why; the command line gets one line
            raise InputError(f"method {self.name!r}: ANTs failed on volumes of {fixed.shape} "
                             f"voxels ({err}); volumes too small for its multi-resolution "
                             "levels, or images it cannot register (run with -v for its log)"
                             ) from None
        finally:
            ants.config._random_seed = previous_seed
        return list(result["fwdtransforms"])

    def use_threads(self) -> int:
        """Set ITK's thread count before the process's first ANTs call; returns the count in use.
        """
        global _itk_threads
        wanted = self.options["threads"] or _default_threads()
        if _itk_threads is None:
            os.environ[ITK_THREADS_ENV] = str(wanted)
            _itk_threads = int(wanted)
        elif _itk_threads != wanted:
            log.warning("ITK fixed its thread count at %d at this process's first ANTs call; "
                        "%s asked for %d", _itk_threads, self.name, wanted)
        return _itk_threads

    def device_description(self) -> str:
        threads = _itk_threads or self.options["threads"] or _default_threads()
        return describe_cpu(threads)


class Affine(AntsMethod):
    """ANTs affine registration (``type_of_transform='Affine'``), Mattes mutual information."""

    name = "affine"
    label = "Affine"
    type_of_transform = "Affine"
    defaults: ClassVar[dict[str, Any]] = {
        **AFFINE_DEFAULTS,
        "aff_iterations": [2100, 1200, 1200, 10],
        "aff_shrink_factors": [6, 4, 2, 1],
        "aff_smoothing_sigmas": [3, 2, 1, 0],
    }
    option_rules: ClassVar[dict[str, Option]] = {
        **AFFINE_RULES,
        "aff_iterations": Option(ge=0),
        "aff_shrink_factors": Option(ge=1),
        "aff_smoothing_sigmas": Option(type=float, ge=0),
    }


class SyN(AntsMethod):
    """ANTs SyN (``type_of_transform='SyN'``): an affine stage, then symmetric normalisation.

    ``reg_iterations`` are the SyN iterations per level, coarse to fine, each level at twice the
    resolution of the one before. ANTsPy's default ``(40, 20, 0)`` never optimises at full
    resolution; ours, ``(100, 70, 50)``, the first three levels of ``antsRegistrationSyN.sh``,
    does. On 3 demo pairs at 80x96x80 (one thread, busy 2-core machine) mean FAIM Dice / time
    per pair: ``(40, 20, 0)`` 0.807 / 14 s, ``(40, 20, 10)`` 0.826 / 30 s, ``(100, 70, 50)``
    0.843 / 106 s. ``syn_metric="CC"`` (with ``syn_sampling``, then the CC radius, e.g. 4) is the
    usual alternative, several times slower.
    """

    name = "syn"
    label = "SyN"
    type_of_transform = "SyN"
    defaults: ClassVar[dict[str, Any]] = {
        **AFFINE_DEFAULTS,
        "syn_metric": "mattes",
        "syn_sampling": 32,
        "reg_iterations": [100, 70, 50],
        "grad_step": 0.2,
        "flow_sigma": 3,
        "total_sigma": 0,
    }
    option_rules: ClassVar[dict[str, Option]] = {
        **AFFINE_RULES,
        "syn_metric": Option(choices=("mattes", "meansquares", "demons", "CC")),
        "syn_sampling": Option(ge=1),
        "reg_iterations": Option(ge=0),
        "grad_step": Option(gt=0),
        "flow_sigma": Option(type=float, ge=0),
        "total_sigma": Option(type=float, ge=0),
    }


def to_ants(volume: np.ndarray, spacing: tuple[float, float, float]):
    """An ``ants.ANTsImage`` of ``volume (X, Y, Z)``: float32, origin 0, identity direction."""
    import ants

    return ants.from_numpy(np.ascontiguousarray(volume, dtype=np.float32),
                           origin=(0.0, 0.0, 0.0), spacing=tuple(float(s) for s in spacing))


def dense_field(transforms: list[str], reference, workdir: Path) -> np.ndarray:
    """Compose ANTs transforms into one displacement field on ``reference``'s grid.

    Returns ``(3, X, Y, Z)`` float32 in voxel units (pull convention).
    """
    import ants

    composed = ants.apply_transforms(reference, reference, transforms,
                                     compose=str(workdir / "composed_"))
    if composed is None:
        raise RuntimeError(f"antsApplyTransforms could not compose {transforms}")
    millimetres = ants.image_read(composed).numpy()  # (X, Y, Z, 3), physical axes = array axes
    spacing = np.asarray(reference.spacing, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(millimetres, -1, 0) / spacing[:, None, None, None],
                                dtype=np.float32)


def _default_threads() -> int:
    """ITK's thread variable when set, else the cores this process may run on."""
    if os.environ.get(ITK_THREADS_ENV, "").isdigit():
        return int(os.environ[ITK_THREADS_ENV])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
