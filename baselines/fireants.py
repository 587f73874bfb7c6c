"""FireANTs (Jena et al., "FireANTs: Adaptive Riemannian optimization for multi-scale
diffeomorphic matching", 2024; pip ``fireants``): an affine stage, then greedy or SyN
registration with local cross-correlation, on CPU or CUDA.

Every default is FireANTs' own setting for pairwise inter-subject brain MRI on LPBA40, the
script its authors ship with the package (``fireants/scripts/pairwise/test_lpba40.py`` in
fireants 1.5.0):

- affine: scales 8, 4, 2, 1 with 100, 50, 25, 20 iterations, Adam at learning rate 3e-4, local
  cross-correlation of window 5;
- ``mode="greedy"`` (the default): scales 4, 2, 1 with 200, 100, 50 iterations, compositive
  updates, window 7, gradient smoothing sigma 2, warp smoothing sigma 0.5, Adam at 0.5;
- ``mode="syn"``: scales 4, 2, 1 with 100, 75, 50 iterations, window 5, gradient smoothing
  sigma 1 (warp smoothing: FireANTs' default, 0.5), Adam at 0.5;
- the loss is FireANTs' fused CUDA cross-correlation on a GPU when its optional fused
  operations are installed (the script's ``fusedcc`` on CUDA), else its plain PyTorch ``cc``,
  which runs anywhere: so FireANTs runs on a CPU without its CUDA extension.

``device`` is ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``; the runtime record names it.
The volumes go to FireANTs with origin 0 and identity direction, array axis ``a`` as ITK's axis
``a``; the moving coordinates FireANTs returns for every fixed voxel (``grid_sample``'s
normalised ``[-1, 1]`` with ``align_corners=True``) become the suite's displacement in voxels.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import numpy as np
import torch

from regbench.io import InputError
from regbench.methods import Method, Option
from regbench.runtime import pick_device

GREEDY = {"scales": [4, 2, 1], "iterations": [200, 100, 50], "cc_kernel_size": 7,
          "smooth_grad_sigma": 2.0, "smooth_warp_sigma": 0.5}
SYN = {"scales": [4, 2, 1], "iterations": [100, 75, 50], "cc_kernel_size": 5,
       "smooth_grad_sigma": 1.0, "smooth_warp_sigma": 0.5}
"""The deformable stages of FireANTs' LPBA40 script, by mode."""


class FireANTs(Method):
    """FireANTs affine + greedy (or SyN) registration with its LPBA40 settings."""

    name = "fireants"
    label = "FireANTs"
    requires: ClassVar[dict[str, str]] = {"fireants": "baselines"}
    defaults: ClassVar[dict[str, Any]] = {
        "mode": "greedy",
        "device": "auto",
        "affine_scales": [8, 4, 2, 1],
        "affine_iterations": [100, 50, 25, 20],
        "affine_lr": 3e-4,
        "affine_cc_kernel_size": 5,
        "iterations": [200, 100, 50],
        "lr": 0.5,
    }
    option_rules: ClassVar[dict[str, Option]] = {
        "mode": Option(choices=("greedy", "syn")),
        "device": Option(type=str),
        "affine_scales": Option(type=float, ge=1),
        "affine_iterations": Option(ge=1),
        "affine_lr": Option(gt=0),
        "affine_cc_kernel_size": Option(ge=1),
        "iterations": Option(ge=1),
        "lr": Option(gt=0),
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if len(self.options["affine_scales"]) != len(self.options["affine_iterations"]):
            raise ValueError(f"method {self.name!r}: affine_scales and affine_iterations need "
                             "one entry per level each")
        stage = GREEDY if self.options["mode"] == "greedy" else SYN
        # Not given: the iterations of the mode's stage in FireANTs' script.
        iterations = options.get("iterations") or stage["iterations"]
        self.options["iterations"] = list(iterations)
        if len(iterations) != len(stage["scales"]):
            raise ValueError(f"method {self.name!r}: iterations needs one entry per scale "
                             f"{stage['scales']}, got {iterations}")
        self._stage = stage
        try:
            self._device = pick_device(self.options["device"])
        except InputError as err:
            raise ValueError(f"method {self.name!r}: option {err}") from None

    @property
    def device(self) -> torch.device:
        return self._device

    def register(self, moving: np.ndarray, fixed: np.ndarray,
                 spacing: tuple[float, float, float]) -> np.ndarray:
        from fireants.io import BatchedImages
        from fireants.registration.affine import AffineRegistration
        from fireants.registration.greedy import GreedyRegistration
        from fireants.registration.syn import SyNRegistration

        fixed_batch = BatchedImages([self._image(fixed, spacing)])
        moving_batch = BatchedImages([self._image(moving, spacing)])
        loss_type = "fusedcc" if self.device.type == "cuda" and _fused_ops() else "cc"
        affine = AffineRegistration(
            list(self.options["affine_scales"]), list(self.options["affine_iterations"]),
            fixed_batch, moving_batch, loss_type=loss_type, optimizer="Adam",
            optimizer_lr=self.options["affine_lr"], optimizer_params={},
            cc_kernel_size=self.options["affine_cc_kernel_size"])
        affine.optimize()
        stage = self._stage
        deformable_class = GreedyRegistration if stage is GREEDY else SyNRegistration
        deformable = deformable_class(
            scales=stage["scales"], iterations=list(self.options["iterations"]),
            fixed_images=fixed_batch, moving_images=moving_batch, loss_type=loss_type,
            cc_kernel_size=stage["cc_kernel_size"], deformation_type="compositive",
            smooth_grad_sigma=stage["smooth_grad_sigma"],
            smooth_warp_sigma=stage["smooth_warp_sigma"], optimizer="adam",
            optimizer_lr=self.options["lr"], init_affine=affine.get_affine_matrix().detach())
        deformable.optimize()
        with torch.no_grad():
            coords = deformable.get_warped_coordinates(fixed_batch, moving_batch)
        return displacement_from_grid(coords[0].float().cpu(), fixed.shape)

    def _image(self, volume: np.ndarray, spacing: tuple[float, float, float]):
        import SimpleITK as sitk
        from fireants.io import Image

        # SimpleITK reads a NumPy array with its axes reversed (z, y, x): hand it the transpose.
        itk_image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume, np.float32).T))
        itk_image.SetSpacing([float(s) for s in spacing])
        return Image(itk_image, device=str(self.device))


def displacement_from_grid(coords: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """The suite's field ``(3, X, Y, Z)`` in voxels from ``grid_sample`` coordinates of the
    transposed volume: ``(Z, Y, X, 3)``, last axis (x, y, z) = array axes 0, 1, 2, normalised to
    ``[-1, 1]`` with ``align_corners=True``."""
    sizes = torch.tensor(shape, dtype=torch.float64)
    voxels = (coords.permute(3, 2, 1, 0).double() + 1) / 2 * (sizes - 1).view(3, 1, 1, 1)
    grid = torch.stack(torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in shape),
                                      indexing="ij"))
    return (voxels - grid).float().numpy()


def _fused_ops() -> bool:
    """Whether FireANTs' optional fused CUDA operations are installed."""
    return importlib.util.find_spec("fireants_fused_ops") is not None
