"""Figures as PNG and PDF, in the paper's style, with one method order and palette throughout.

* :func:`plot_region_boxplots` (Fig. 4): per-region Dice box plots, x = region, hue = run.
* :func:`plot_dice_vs_time`: mean Dice against mean time per pair, one point per run.
* :func:`plot_pyramid` (Fig. 2): the accumulated field of each pyramid level and the moving
  image warped by it, beside the moving and fixed images.
* :func:`plot_warped_comparison` (Fig. 3): each method's warped image and its difference to the
  fixed image.

Every function returns the :class:`matplotlib.figure.Figure` and, given ``out_stem``, writes
``<out_stem>.png`` and ``<out_stem>.pdf``. Images show the middle slice across ``slice_axis``
with the first remaining voxel axis horizontal and the second vertical, origin at the bottom.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import ticker
from matplotlib.figure import Figure

from regbench import metric_table
from regbench.data import registry
from regbench.io import atomic_path
from regbench.naming import CONVENTION_TITLES
from regbench.reports.aggregate import regions
from regbench.reports.style import (
    label_colors,
    order_labels,
    order_runs,
    run_colors,
    run_label,
    run_name,
)
from regbench.transforms import resize_field, warp

matplotlib.use("Agg")  # reports render headless (workflow jobs, CI)

log = logging.getLogger(__name__)

DPI = 200


def save_figure(figure: Figure, out_stem: str | os.PathLike) -> list[Path]:
    """Write ``<out_stem>.png`` and ``<out_stem>.pdf`` atomically; returns the paths."""
    out_stem = Path(out_stem)
    paths = [out_stem.with_name(f"{out_stem.name}.{ext}") for ext in ("png", "pdf")]
    for path in paths:
        with atomic_path(path) as tmp:
            # No creation date in the PDF: the same results give the same file.
            metadata = {"CreationDate": None} if path.suffix == ".pdf" else None
            figure.savefig(tmp, format=path.suffix[1:], dpi=DPI, bbox_inches="tight",
                           metadata=metadata)
    return paths


def run_palette(per_pair: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """Run labels of a per-pair table in report order, and their colours."""
    runs = order_runs(zip(per_pair["method"], per_pair["slice_step"].astype(int), strict=True))
    colors = run_colors(runs)
    labels, palette = [], {}
    for method, step in runs:
        rows = per_pair[(per_pair["method"] == method) & (per_pair["slice_step"] == step)]
        found = rows["label"].dropna()
        label = run_label(str(found.iloc[0]) if len(found) else method, step)
        labels.append(label)
        palette[label] = colors[run_name(method, step)]
    return labels, palette


def plot_region_boxplots(per_pair: pd.DataFrame, convention: str = "faim",
                         out_stem: str | os.PathLike | None = None,
                         title: str | None = None) -> Figure:
    """Fig. 4: Dice of every test pair per region (and each pair's mean, "Average"), per run.

    One axes; x = region, hue = run (report order and colours of :mod:`~regbench.reports.style`).
    """
    labels, palette = run_palette(per_pair)
    names = regions(per_pair, f"dice_{convention}")
    long = []
    for label, (method, step) in zip(labels, _run_keys(per_pair), strict=True):
        rows = per_pair[(per_pair["method"] == method) & (per_pair["slice_step"] == step)]
        for region, column in [*((r, f"dice_{convention}/{r}") for r in names),
                               ("Average", f"mean_dice_{convention}")]:
            long.append(pd.DataFrame({"Method": label, "Region": region,
                                      "Dice": rows[column].to_numpy(dtype=float)}))
    data = pd.concat(long, ignore_index=True).dropna(subset=["Dice"])
    width = min(12.0, max(6.0, 0.3 * (len(names) + 1) * len(labels)))
    figure, axes = plt.subplots(figsize=(width, 4.0), layout="constrained")
    with warnings.catch_warnings():
        # seaborn 0.13 passes matplotlib 3.11's deprecated ``vert`` to ``bxp``.
        warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
        sns.boxplot(data=data, x="Region", y="Dice", hue="Method", hue_order=labels,
                    palette=palette, order=[*names, "Average"], ax=axes, fliersize=2,
                    linewidth=0.8, saturation=1.0)  # exact palette colours, as elsewhere
    axes.set_ylabel(f"Dice ({CONVENTION_TITLES[convention]})")
    axes.set_xlabel("")
    axes.set_title(title or f"{_dataset_prefix(per_pair)}Region Dice per test pair, "
                   f"{CONVENTION_TITLES[convention]}")
    axes.legend(title=None, ncols=min(len(labels), 3), loc="upper center",
                bbox_to_anchor=(0.5, -0.1), frameon=False)
    axes.grid(axis="y", alpha=0.3)
    if out_stem is not None:
        save_figure(figure, out_stem)
    return figure


def plot_dice_vs_time(per_pair: pd.DataFrame, convention: str = "faim",
                      out_stem: str | os.PathLike | None = None,
                      title: str | None = None) -> Figure:
    """Mean Dice (each pair's mean region Dice) against mean time per pair, one point per run.

    Error bars: sample standard deviation (ddof = 1) both ways; on the log time axis the lower
    time bar is cut at 1 % of the mean so it stays positive. Runs without a positive recorded
    time are left out (logged). The devices the times were taken on are listed below the axes.
    """
    labels, palette = run_palette(per_pair)
    figure, axes = plt.subplots(figsize=(6.0, 4.2), layout="constrained")
    devices = {}
    for label, (method, step) in zip(labels, _run_keys(per_pair), strict=True):
        rows = per_pair[(per_pair["method"] == method) & (per_pair["slice_step"] == step)]
        times = rows["time_s"].to_numpy(dtype=float)
        dice = rows[f"mean_dice_{convention}"].to_numpy(dtype=float)
        times, dice = times[np.isfinite(times) & (times > 0)], dice[np.isfinite(dice)]
        if not len(times) or not len(dice):
            log.warning("%s: no positive time or no Dice recorded; left out of the plot", label)
            continue
        t_mean, d_mean = times.mean(), dice.mean()
        t_std = times.std(ddof=1) if len(times) > 1 else 0.0
        d_std = dice.std(ddof=1) if len(dice) > 1 else 0.0
        axes.errorbar(t_mean, d_mean, xerr=[[min(t_std, 0.99 * t_mean)], [t_std]],
                      yerr=d_std, fmt="o", color=palette[label], label=label, capsize=3,
                      markersize=7, markeredgecolor="black", markeredgewidth=0.5)
        for device in rows["device"].dropna().astype(str).unique():
            devices.setdefault(device, []).append(label)
    axes.set_xscale("log")
    # Plain numbers (0.5, 2, 20) rather than 2x10^0. A range of up to 2 decades also labels
    # its 2x and 5x minor ticks; a wider one (Identity's microseconds beside ANTs' seconds)
    # only the decades, or the labels run into each other.
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    low, high = axes.get_xlim()
    axes.xaxis.set_minor_formatter(ticker.FuncFormatter(_minor_time_label) if high <= 100 * low
                                   else ticker.NullFormatter())
    axes.set_xlabel("Time per pair (s, log scale)")
    axes.set_ylabel(f"Mean region Dice ({CONVENTION_TITLES[convention]})")
    axes.set_title(title or f"{_dataset_prefix(per_pair)}Accuracy against registration time")
    axes.grid(alpha=0.3, which="both")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(frameon=False, loc="best")
    if devices:
        text = "\n".join(f"{d}: {', '.join(m)}" for d, m in devices.items())
        figure.text(0.01, -0.02, f"Devices: {text}" if len(devices) == 1 else f"Devices:\n{text}",
                    fontsize=6, va="top", ha="left")
    if out_stem is not None:
        save_figure(figure, out_stem)
    return figure


REGULARITY = ("log_jacobian_std", "ndv_percent")
"""The regularity measures Dice is drawn against (metric table keys)."""


def plot_dice_vs_regularity(per_pair: pd.DataFrame, convention: str = "faim",
                            out_stem: str | os.PathLike | None = None,
                            title: str | None = None) -> Figure:
    """Mean Dice against the field's regularity, one point per run: a rougher field buys Dice,
    so methods compare at matched regularity, not by Dice alone.

    Two axes: Dice against the SD of the log Jacobian determinant, and against NDV (symmetric
    log scale: 0 is a point on it). Error bars: sample standard deviation over the pairs.
    Runs without a recorded value are left out of that axes (logged).
    """
    labels, palette = run_palette(per_pair)
    figure, axes = plt.subplots(1, len(REGULARITY), figsize=(10.0, 4.0), layout="constrained",
                                sharey=True)
    specs = {spec.key: spec for spec in metric_table.METRICS}
    for ax, column in zip(axes, REGULARITY, strict=True):
        for label, (method, step) in zip(labels, _run_keys(per_pair), strict=True):
            rows = per_pair[(per_pair["method"] == method) & (per_pair["slice_step"] == step)]
            rough = rows[column].to_numpy(dtype=float) if column in rows else np.array([])
            dice = rows[f"mean_dice_{convention}"].to_numpy(dtype=float)
            rough, dice = rough[np.isfinite(rough)], dice[np.isfinite(dice)]
            if not len(rough) or not len(dice):
                log.warning("%s: no %s recorded; left out of the plot", label, column)
                continue
            ax.errorbar(rough.mean(), dice.mean(),
                        xerr=rough.std(ddof=1) if len(rough) > 1 else 0.0,
                        yerr=dice.std(ddof=1) if len(dice) > 1 else 0.0, fmt="o",
                        color=palette[label], label=label, capsize=3, markersize=7,
                        markeredgecolor="black", markeredgewidth=0.5)
        ax.set_xlabel(specs[column].header)
        ax.grid(alpha=0.3, which="both")
    axes[-1].set_xscale("symlog", linthresh=1e-3)
    axes[0].set_ylabel(f"Mean region Dice ({CONVENTION_TITLES[convention]})")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(frameon=False, loc="best", fontsize=8)
    figure.suptitle(title or f"{_dataset_prefix(per_pair)}Accuracy against the field's "
                    "regularity (up and left is better)")
    if out_stem is not None:
        save_figure(figure, out_stem)
    return figure


def plot_pyramid(moving: np.ndarray, fixed: np.ndarray, accumulated_fields: Sequence[np.ndarray],
                 out_stem: str | os.PathLike | None = None, slice_axis: int = 2,
                 level_names: Sequence[str] | None = None) -> Figure:
    """Fig. 2: each pyramid level's accumulated field and the moving image warped by it.

    ``moving`` and ``fixed`` are ``(X, Y, Z)``; ``accumulated_fields[l]`` is level ``l``'s
    ``(3, X_l, Y_l, Z_l)`` displacement in voxels of that level (coarse to fine), upsampled
    here to the full grid (:func:`regbench.transforms.resize_field`) before warping. Layout: a
    first column with the moving (top) and fixed (bottom) image, then one column per level:
    top, the displacement magnitude (full-resolution voxels, one colour scale for all levels)
    under the deformed grid ``x + u(x)`` (where each fixed-grid point samples the moving
    image); bottom, the moving image warped by that level's field. Plus one colour bar.
    ``level_names`` defaults to each level's resolution ("1/16", ...).
    """
    moving, fixed = _volume(moving, "moving"), _volume(fixed, "fixed")
    if moving.shape != fixed.shape:
        raise ValueError(f"moving {moving.shape} and fixed {fixed.shape} differ in shape")
    if not accumulated_fields:
        raise ValueError("no pyramid levels given")
    names = list(level_names) if level_names is not None else [
        resolution_name(moving.shape, f.shape[1:]) for f in accumulated_fields]
    if len(names) != len(accumulated_fields):
        raise ValueError(f"{len(names)} level names for {len(accumulated_fields)} levels")
    full = []
    for level, field in enumerate(accumulated_fields):
        field = np.asarray(field, dtype=np.float32)
        if field.ndim != 4 or field.shape[0] != 3:
            raise ValueError(f"level {level + 1}: field must be (3, X, Y, Z), got {field.shape}")
        full.append(resize_field(torch.from_numpy(field)[None], moving.shape))
    with torch.no_grad():
        moving_t = torch.from_numpy(moving)[None, None]
        warped = [warp(moving_t, f)[0, 0].numpy() for f in full]
    fields = [f[0].numpy() for f in full]
    in_plane = [a for a in range(3) if a != slice_axis]
    index = moving.shape[slice_axis] // 2
    magnitudes = [np.linalg.norm(_slice(f, slice_axis, index, leading=1), axis=0) for f in fields]
    vmax = max(float(m.max()) for m in magnitudes) or 1.0
    limits = _intensity_limits(fixed)
    columns = 1 + len(fields)
    figure, grid = plt.subplots(2, columns, figsize=(2.4 * columns, 5.0), layout="constrained",
                                squeeze=False)
    _show(grid[0, 0], _slice(moving, slice_axis, index), "Moving", limits)
    _show(grid[1, 0], _slice(fixed, slice_axis, index), "Fixed", limits)
    image = None
    for level, (name, field, magnitude, moved) in enumerate(
            zip(names, fields, magnitudes, warped, strict=True)):
        top, bottom = grid[0, level + 1], grid[1, level + 1]
        image = top.imshow(magnitude.T, origin="lower", cmap="viridis", vmin=0, vmax=vmax)
        _deformed_grid(top, _slice(field, slice_axis, index, leading=1)[in_plane])
        top.set_title(f"Level {level + 1} ({name}): field")
        top.set_axis_off()
        _show(bottom, _slice(moved, slice_axis, index), f"Level {level + 1} ({name}): warped",
              limits)
    figure.colorbar(image, ax=grid[0, 1:].tolist(), shrink=0.8,
                    label="|displacement| (voxels)")
    if out_stem is not None:
        save_figure(figure, out_stem)
    return figure


def plot_warped_comparison(moving: np.ndarray, fixed: np.ndarray,
                           warped_by_method: Mapping[str, np.ndarray],
                           out_stem: str | os.PathLike | None = None,
                           slice_axis: int = 2) -> Figure:
    """Fig. 3: moving, fixed and each method's warped image, with ``|image - fixed|`` below.

    ``warped_by_method`` maps method labels to ``(X, Y, Z)`` warped moving images (shown in
    report order, each framed in its method colour). Layout: top row moving, fixed, then each
    method's warped image; bottom row ``|moving - fixed|`` (under the moving image; nothing
    under the fixed one) and ``|warped - fixed|`` per method, on one colour scale with one
    colour bar.
    """
    moving, fixed = _volume(moving, "moving"), _volume(fixed, "fixed")
    if not warped_by_method:
        raise ValueError("no warped images given")
    labels = order_labels(warped_by_method)
    warped = {label: _volume(warped_by_method[label], label) for label in labels}
    for name, volume in (("moving", moving), *warped.items()):
        if volume.shape != fixed.shape:
            raise ValueError(f"{name} {volume.shape} differs in shape from fixed {fixed.shape}")
    colors = label_colors(labels)
    index = fixed.shape[slice_axis] // 2
    fixed_slice = _slice(fixed, slice_axis, index)
    differences = {"Moving": np.abs(_slice(moving, slice_axis, index) - fixed_slice)}
    differences.update({label: np.abs(_slice(v, slice_axis, index) - fixed_slice)
                        for label, v in warped.items()})
    vmax = float(np.percentile(np.concatenate([d.ravel() for d in differences.values()]), 99.5))
    vmax = vmax or 1.0
    limits = _intensity_limits(fixed)
    columns = 2 + len(labels)
    figure, grid = plt.subplots(2, columns, figsize=(2.4 * columns, 5.0), layout="constrained",
                                squeeze=False)
    _show(grid[0, 0], _slice(moving, slice_axis, index), "Moving", limits)
    _show(grid[0, 1], fixed_slice, "Fixed", limits)
    figure.delaxes(grid[1, 1])
    image = grid[1, 0].imshow(differences["Moving"].T, origin="lower", cmap="magma", vmin=0,
                              vmax=vmax)
    grid[1, 0].set_title("|Moving - Fixed|")
    grid[1, 0].set_axis_off()
    for column, label in enumerate(labels, start=2):
        top, bottom = grid[0, column], grid[1, column]
        _show(top, _slice(warped[label], slice_axis, index), label, limits)
        bottom.imshow(differences[label].T, origin="lower", cmap="magma", vmin=0, vmax=vmax)
        bottom.set_title(f"|{label} - Fixed|")
        for axes in (top, bottom):
            axes.set_axis_on()
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_edgecolor(colors[label])
                spine.set_linewidth(3)
    figure.colorbar(image, ax=[grid[1, 0], *grid[1, 2:]], shrink=0.8,
                    label="absolute intensity difference")
    if out_stem is not None:
        save_figure(figure, out_stem)
    return figure


# --- helpers ------------------------------------------------------------------------------------


def _minor_time_label(value: float, _position: int) -> str:
    """Label the 2x and 5x minor ticks of a log axis."""
    if value <= 0:
        return ""
    leading = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if leading in (2, 5) else ""


def _dataset_prefix(per_pair: pd.DataFrame) -> str:
    datasets = list(dict.fromkeys(per_pair["dataset"]))
    return f"{registry.title(datasets[0])}: " if len(datasets) == 1 else ""


def _run_keys(per_pair: pd.DataFrame) -> list[tuple[str, int]]:
    return order_runs(zip(per_pair["method"], per_pair["slice_step"].astype(int), strict=True))


def _volume(volume: np.ndarray, name: str) -> np.ndarray:
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"{name} must be a 3D volume (X, Y, Z), got shape {volume.shape}")
    return volume


def _slice(volume: np.ndarray, axis: int, index: int, leading: int = 0) -> np.ndarray:
    """The slice ``index`` across spatial ``axis`` of a volume with ``leading`` extra axes."""
    return np.take(volume, index, axis=axis + leading)


def _intensity_limits(volume: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(volume, [1, 99.5])
    return float(low), float(high if high > low else low + 1)


def _show(axes: plt.Axes, image: np.ndarray, title: str, limits: tuple[float, float]) -> None:
    axes.imshow(image.T, origin="lower", cmap="gray", vmin=limits[0], vmax=limits[1])
    axes.set_title(title)
    axes.set_axis_off()


def _deformed_grid(axes: plt.Axes, displacement: np.ndarray, lines: int = 12) -> None:
    """Draw ``x + u(x)`` of a regular grid; ``displacement`` is the in-plane ``(2, A, B)``."""
    _, size_a, size_b = displacement.shape
    step = max(1, math.ceil(max(size_a, size_b) / lines))
    a, b = np.meshgrid(np.arange(size_a), np.arange(size_b), indexing="ij")
    pos_a, pos_b = a + displacement[0], b + displacement[1]
    style = {"color": "white", "linewidth": 0.5, "alpha": 0.8}
    for i in range(0, size_a, step):
        axes.plot(pos_a[i, :], pos_b[i, :], **style)
    for j in range(0, size_b, step):
        axes.plot(pos_a[:, j], pos_b[:, j], **style)
    axes.set_xlim(-0.5, size_a - 0.5)
    axes.set_ylim(-0.5, size_b - 0.5)


def resolution_name(full: Sequence[int], level: Sequence[int]) -> str:
    """A level's resolution relative to the full grid: "1/16", "full", else its shape."""
    ratio = full[0] / level[0]
    if all(math.isclose(f / s, ratio) for f, s in zip(full, level, strict=True)) \
            and float(ratio).is_integer():
        return "full" if ratio == 1 else f"1/{int(ratio)}"
    return "x".join(str(s) for s in level)
