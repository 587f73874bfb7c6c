"""The training logs: ``loss.csv`` (one row per step), ``validation.csv`` (one row per
validation) and the names of the files a training writes beside them."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from regbench.io import write_text

LOSS_LOG = "loss.csv"
VALIDATION_LOG = "validation.csv"
RECORD = "train.json"


class LossLog:
    """``loss.csv``, appended one flushed row per step (header taken from the first row)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = None

    def append(self, record: dict[str, Any]) -> None:
        if self.file is None:
            new = not self.path.exists() or self.path.stat().st_size == 0
            self.file = self.path.open("a", newline="")
            self.writer = csv.writer(self.file)
            if new:
                self.writer.writerow(list(record))
        self.writer.writerow([_format(v) for v in record.values()])
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _format(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def truncate_log(path: Path, step: int) -> None:
    """Keep the header and the complete rows up to ``step`` (rows after the checkpoint go)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    rows = list(csv.reader(io.StringIO(path.read_text())))
    if not rows:
        return
    header = rows[0]
    kept = [row for row in rows[1:] if len(row) == len(header) and row[0].isdigit()
            and int(row[0]) <= step]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *kept])
    write_text(path, buffer.getvalue())
