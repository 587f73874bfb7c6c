"""Per-pair ``metrics.json`` records -> one ``per_pair.csv`` (docs/contracts.md), and reading it
back.

``per_pair.csv`` has one row per registered pair with the columns of :func:`base_columns` (the
pair's identity and runtime, then every per-pair metric of the metric table,
:mod:`regbench.metric_table`), then one column per region for each per-region metric
(:func:`region_groups`: ``dice_faim/<Region>``, ``dice_merged/<Region>`` and ``hd95/<Region>``;
regions in the order of the first record that names them). Undefined values (``null`` in JSON)
are empty cells. Rows are in report order (:mod:`regbench.reports.style`), then by moving and
fixed subject.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from regbench import metric_table
from regbench.io import InputError, atomic_path, read_json
from regbench.naming import METRICS_FILE
from regbench.reports.style import CANONICAL_LABELS, method_rank
from regbench.runs import check_run

log = logging.getLogger(__name__)

IDENTITY_COLUMNS: tuple[str, ...] = (
    "dataset", "experiment", "method", "label", "moving", "fixed", "time_s", "device",
    "slice_step")
"""The columns before the metrics: which pair, of which run, and its runtime."""
PAIR_KEY: tuple[str, ...] = ("dataset", "method", "slice_step", "moving", "fixed")
"""Columns that identify one row of a per-pair table."""


def base_columns() -> tuple[str, ...]:
    """The columns of every ``per_pair.csv``, in order: :data:`IDENTITY_COLUMNS`, then the
    per-pair metrics of the metric table."""
    return (*IDENTITY_COLUMNS, *(spec.key for spec in metric_table.of_level("pair")))


def optional_columns() -> tuple[str, ...]:
    """Metric columns added after the first release: a record or ``per_pair.csv`` without them
    reads as NaN (empty cells), so results scored before keep their tables."""
    return tuple(spec.key for spec in metric_table.of_level("pair") if spec.optional)


def region_groups() -> tuple[str, ...]:
    """Per-region metrics of a record; each becomes ``<group>/<Region>`` columns."""
    return tuple(spec.key for spec in metric_table.of_level("region"))


def numeric_columns() -> tuple[str, ...]:
    return ("time_s", *(spec.key for spec in metric_table.of_level("pair")))


def required_keys() -> tuple[str, ...]:
    """Keys a ``metrics.json`` record must hold to be aggregated."""
    return ("method", "moving", "fixed", *(
        spec.key for spec in metric_table.METRICS
        if spec.level in ("pair", "region") and not spec.optional))


def find_metrics(directory: str | os.PathLike) -> list[Path]:
    """Every ``metrics.json`` below ``directory``, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: not a folder")
    return sorted(directory.glob(f"**/{METRICS_FILE}"))


def aggregate(metrics_files: Sequence[str | os.PathLike], out_csv: str | os.PathLike,
              experiment: str, dataset: str | None = None) -> pd.DataFrame:
    """Read ``metrics.json`` records into one per-pair table, write it to ``out_csv``.

    ``label`` is the record's own ``label`` if it has one, else the method registry's label,
    else the method name. ``dataset``, when given, is checked against every record (records
    without one, from the path form of ``regbench evaluate``, take it). Returns the table.
    """
    if not metrics_files:
        raise InputError(f"{out_csv}: no metrics.json files to aggregate")
    labels = registry_labels()
    seen: dict[tuple, Path] = {}
    rows = []
    for path in map(Path, metrics_files):
        row = _row(path, experiment, dataset, labels)
        key = tuple(row[k] for k in PAIR_KEY)
        if key in seen:
            raise InputError(f"{path}: same pair as {seen[key]} "
                             f"({dict(zip(PAIR_KEY, key, strict=True))})")
        seen[key] = path
        rows.append(row)
    table = _frame(rows)
    write_csv(out_csv, table)
    log.info("aggregated %d pairs of %d run(s) into %s", len(table),
             table.groupby(["method", "slice_step"]).ngroups, out_csv)
    return table


def registry_labels() -> dict[str, str]:
    """Method name -> label from the method registry, or the canonical labels if it fails."""
    try:
        from regbench.methods import available_methods

        found = {name: cls.label or name for name, cls in available_methods().items()}
    except Exception as err:  # a broken user method file must not stop the report
        log.warning("method registry not importable (%s): using the canonical labels", err)
        found = {}
    return {**CANONICAL_LABELS, **found}


def read_per_pair(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read and concatenate ``per_pair.csv`` files, checking their columns and pair keys."""
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        try:
            frame = pd.read_csv(path, dtype={"dataset": str, "experiment": str, "method": str,
                                             "label": str, "moving": str, "fixed": str,
                                             "device": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: not a readable CSV ({err})") from None
        for column in optional_columns():
            if column not in frame.columns:
                frame[column] = float("nan")
        missing = [c for c in base_columns() if c not in frame.columns]
        if missing:
            raise InputError(f"{path}: not a per_pair.csv, missing columns {missing}")
        if frame.empty:
            raise InputError(f"{path}: holds no pairs")
        for column in (*numeric_columns(), *region_columns(frame)):
            try:
                frame[column] = pd.to_numeric(frame[column]).astype(float)
            except (ValueError, TypeError):
                raise InputError(f"{path}: column {column!r} holds non-numeric values") from None
        try:
            frame["slice_step"] = frame["slice_step"].astype(int)
        except (ValueError, TypeError):
            raise InputError(f"{path}: column 'slice_step' must hold integers") from None
        frames.append(frame)
    if not frames:
        raise InputError("no per_pair.csv given")
    table = pd.concat(frames, ignore_index=True)
    duplicated = table.duplicated(list(PAIR_KEY))
    if duplicated.any():
        first = table.loc[duplicated, list(PAIR_KEY)].iloc[0].to_dict()
        raise InputError(f"{', '.join(str(p) for p in paths)}: pair {first} appears twice")
    return table


def regions(table: pd.DataFrame, group: str = "dice_faim") -> list[str]:
    """Region names of a per-pair table's ``<group>/<Region>`` columns, in column order."""
    prefix = f"{group}/"
    return [c.removeprefix(prefix) for c in table.columns if c.startswith(prefix)]


def region_columns(table: pd.DataFrame) -> list[str]:
    groups = region_groups()
    return [c for c in table.columns if c.split("/", 1)[0] in groups and "/" in c]


def write_csv(path: str | os.PathLike, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _row(path: Path, experiment: str, dataset: str | None,
         labels: dict[str, str]) -> dict[str, Any]:
    record = read_json(path)
    if not isinstance(record, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in required_keys() if k not in record]
    if missing:
        raise InputError(f"{path}: not a metrics.json record, missing keys {missing}")
    method = record["method"]
    if not isinstance(method, str) or not method:
        raise InputError(f"{path}: no method name (\"method\": {method!r}); the method's "
                         "runtime.json must name it")
    if len(path.parents) > 2:  # RUN/MOVING/FIXED/metrics.json: one run's pair
        check_run(record, path.parents[2], path)
    if dataset is not None and record.get("dataset") not in (None, dataset):
        raise InputError(f"{path}: record of dataset {record['dataset']!r}, not {dataset!r}")
    step = record.get("slice_step", 1)
    step = 1 if step is None else step
    if not isinstance(step, int) or step < 1:
        raise InputError(f"{path}: slice_step must be a positive integer, got {step!r}")
    row: dict[str, Any] = {
        "dataset": record.get("dataset") or dataset,
        "experiment": experiment,
        "method": method,
        "label": record.get("label") or labels.get(method, method),
        "moving": str(record["moving"]),
        "fixed": str(record["fixed"]),
        "device": record.get("device"),
        "slice_step": step,
    }
    for key in numeric_columns():
        row[key] = _number(record.get(key), path, key)
    for group in region_groups():
        if group not in record:  # an optional one, scored after this record
            continue
        values = record[group]
        if not isinstance(values, dict):
            raise InputError(f"{path}: {group!r} must map region names to numbers")
        for region, value in values.items():
            row[f"{group}/{region}"] = _number(value, path, f"{group}/{region}")
    if row["dataset"] is None:
        raise InputError(f"{path}: record names no dataset; pass the dataset name")
    return row


def _number(value: Any, path: Path, key: str) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{path}: {key} must be a number or null, got {value!r}")
    return float(value)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    region_cols: dict[str, None] = {}
    for group in region_groups():
        for row in rows:
            region_cols.update(dict.fromkeys(k for k in row if k.startswith(f"{group}/")))
    table = pd.DataFrame(rows, columns=[*base_columns(), *region_cols])
    order = {m: i for i, m in enumerate(sorted(set(table["method"]), key=method_rank))}
    table["_rank"] = table["method"].map(order)
    table = table.sort_values(["_rank", "slice_step", "moving", "fixed"], kind="stable")
    return table.drop(columns="_rank").reset_index(drop=True)
