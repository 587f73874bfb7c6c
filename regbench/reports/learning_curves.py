"""Learning curves of trained models: validation Dice and training loss against step and time.

:func:`read_learning_curves` reads the trainer's logs of each model folder (``loss.csv`` and
``validation.csv``, :mod:`regbench.training`) into two tidy tables; :func:`plot_learning_curves`
draws them in a 2 x 2 grid: validation Dice (top) and training loss (bottom), against the
optimizer step (left) and the training wall time (right). The loss is shown as a running mean
(its per-step values are the loss of one random batch each, too noisy to read).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from regbench.io import InputError
from regbench.naming import CONVENTION_TITLES
from regbench.reports.figures import save_figure
from regbench.reports.style import run_colors
from regbench.training.logs import LOSS_LOG, RECORD, VALIDATION_LOG

SMOOTHING = 0.05
"""Running-mean window of the loss curve, as a fraction of the steps (at least 1 step)."""


def read_learning_curves(models: Mapping[str, str | os.PathLike]
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(loss, validation)`` tables of the models ``{label: model folder}``.

    ``loss``: columns ``model``, ``step``, ``loss``, ``time_s``; ``validation``: ``model``,
    ``step``, ``time_s``, ``dice_faim``, ``dice_merged``, ``selected`` (the step whose weights
    the model holds, from ``train.json``: the best validation or the last step, by the training
    setting ``select``). ``time_s`` is training wall time, validation excluded (each
    validation's ``eval_s`` is taken off every later time).

    Raises:
        InputError: a model folder without ``loss.csv`` (not a trainer's folder) or with an
            unreadable log.
    """
    losses, validations = [], []
    for label, folder in models.items():
        folder = Path(folder)
        loss = _read_csv(folder / LOSS_LOG, ("step", "loss", "time_s"))
        validation = pd.DataFrame(columns=["step", "time_s", "dice_faim", "dice_merged",
                                           "eval_s"])
        if (folder / VALIDATION_LOG).is_file():
            validation = _read_csv(folder / VALIDATION_LOG, tuple(validation.columns))
        losses.append(loss.assign(model=label, time_s=loss["time_s"] - _validation_time(
            loss["step"], validation)))
        validations.append(validation.assign(
            model=label, time_s=validation["time_s"] - _validation_time(validation["step"],
                                                                        validation),
            selected=validation["step"] == _selected_step(folder)))
    return (pd.concat(losses, ignore_index=True),
            pd.concat(validations, ignore_index=True))


def _selected_step(folder: Path) -> int | None:
    """The step whose weights the model of ``folder`` holds (``train.json``; ``None`` when a run
    recorded none)."""
    record = folder / RECORD
    if not record.is_file():
        return None
    try:
        selected = json.loads(record.read_text()).get("selected")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{record}: not a readable training record ({err})") from None
    return None if selected is None else int(selected["step"])


def _validation_time(steps: pd.Series, validation: pd.DataFrame) -> np.ndarray:
    """Seconds spent validating before each of ``steps``: a validation runs after the step it
    is logged at (and after that step's loss row), so it delays every later step."""
    done = validation.sort_values("step")
    spent = np.concatenate([[0.0], done["eval_s"].to_numpy(dtype=float).cumsum()])
    return spent[np.searchsorted(done["step"].to_numpy(), steps.to_numpy(), side="left")]


def plot_learning_curves(loss: pd.DataFrame, validation: pd.DataFrame,
                         colors: Mapping[str, str] | None = None,
                         out_stem: str | os.PathLike | None = None,
                         title: str | None = None) -> Figure:
    """Validation Dice (FAIM solid, merged dashed) and the running-mean training loss of every
    model, against step and against training time (minutes); returns the figure.

    ``colors`` maps a model label to its colour (default: the suite's palette by order).
    """
    models = list(dict.fromkeys(loss["model"]))
    colors = dict(colors or {})
    spare = iter(run_colors((f"model{i}", 1) for i in range(len(models))).values())
    for model in models:
        colors.setdefault(model, next(spare))
    figure, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex="col", layout="constrained")
    for model in models:
        color = colors[model]
        rows = loss[loss["model"] == model].sort_values("step")
        window = max(1, round(SMOOTHING * len(rows)))
        smooth = rows["loss"].rolling(window, min_periods=1).mean()
        for column, x in enumerate(("step", "time_s")):
            scale = 60.0 if x == "time_s" else 1.0
            axes[1, column].plot(rows[x] / scale, smooth, color=color, label=model)
            checks = validation[validation["model"] == model].sort_values("step")
            for convention, style in (("faim", "-"), ("merged", "--")):
                axes[0, column].plot(checks[x] / scale, checks[f"dice_{convention}"], style,
                                     marker="o", markersize=3, color=color,
                                     label=f"{model} ({CONVENTION_TITLES[convention]})")
            kept = checks[checks["selected"].astype(bool)]
            axes[0, column].plot(kept[x] / scale, kept["dice_faim"], linestyle="none",
                                 marker="o", markersize=9, markerfacecolor="none", color=color,
                                 label="_nolegend_")
    axes[0, 0].set_ylabel("Validation mean region Dice")
    axes[1, 0].set_ylabel(f"Training loss (running mean, {SMOOTHING:.0%} of the steps)")
    axes[1, 0].set_xlabel("Optimizer step")
    axes[1, 1].set_xlabel("Training wall time (min, validation excluded)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(frameon=False, fontsize=7, loc="lower right")
    if validation["selected"].astype(bool).any():
        axes[0, 1].text(0.99, 0.02, "ring: the step whose weights each model holds",
                        transform=axes[0, 1].transAxes, ha="right", va="bottom", fontsize=7)
    figure.suptitle(title or "Learning curves")
    if out_stem is not None:
        save_figure(figure, out_stem)
    return figure


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: not found (is {path.parent} a model folder of "
                         "`regbench train`?)")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable training log ({err})") from None
    missing = sorted(set(columns) - set(table.columns))
    if missing:
        raise InputError(f"{path}: training log lacks the columns {missing}")
    return table
