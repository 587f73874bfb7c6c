"""docs/contracts.md against the code: every key, column, name and order it states."""

from __future__ import annotations

import re
import subprocess
import typing
from pathlib import Path

import numpy as np
import pytest
from markdown_tables import flat, section, table

from regbench import io, metric_table, runs
from regbench.data.dataset import make_manifest
from regbench.evaluate import RUNTIME_KEYS, record_keys
from regbench.reports.aggregate import PAIR_KEY, base_columns, region_groups
from regbench.reports.stats import PAIRWISE_COLUMNS, STATS_COLUMNS, Verdict
from regbench.reports.style import CANONICAL_LABELS, CANONICAL_METHODS, run_label, run_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def contracts_md() -> str:
    return (ROOT / "docs" / "contracts.md").read_text()


def keys(rows: list[dict[str, str]], column: str) -> list[str]:
    """The backquoted names of ``column``, in order (a cell may list several: `a`, `b`)."""
    return [name for row in rows for name in re.findall(r"`([^`]+)`", row[column])]


def test_manifest_keys(contracts_md):
    manifest = make_manifest(name="x", source="", subjects=["a"], splits={"test": ["a"]},
                             labels={1: "one"}, regions={"R": [1]}, shape=(2, 2, 2),
                             affine=np.eye(4))
    rows = table(contracts_md, "## A prepared dataset")
    assert keys(rows, "Key") == list(manifest)
    grid = next(row["Value"] for row in rows if row["Key"] == "`grid`")
    assert re.findall(r'"(\w+)"', grid) == list(manifest["grid"])
    assert re.findall(r'"(\w+)"', next(row["Value"] for row in rows if row["Key"] == "`splits`")
                      ) == list(manifest["splits"])


def test_field_format(contracts_md):
    text = flat(section(contracts_md, "#### `field.nii.gz`"))
    assert f"intent name `{io.FIELD_INTENT_NAME}`" in text
    assert f"intent name `{io.ITK_FIELD_INTENT_NAME}`" in text
    assert "shape (X, Y, Z, 1, 3)" in text and "intent code `vector` (1007)" in text


def test_runtime_and_metrics_keys(contracts_md):
    runtime = keys(table(contracts_md, "#### `runtime.json`"), "Key")
    assert set(runtime) == {*RUNTIME_KEYS, "label", "moving", "fixed", "data_fingerprint",
                            "field_sha256", "checkpoint"}
    assert {"method", "options", "slice_step", "checkpoint", "label"} == set(runs.SETUP_KEYS)
    rows = table(contracts_md, "#### `metrics.json`")
    assert keys(rows, "Key") == list(record_keys())
    described = {row["Key"].strip("`"): row["Value"] for row in rows}
    for spec in metric_table.METRICS:
        assert described[spec.key] == spec.description, spec.key


def test_run_json_lists_the_registration_setup(contracts_md):
    """run.json records a run folder's registration setup: the keys the page lists, in order."""
    text = flat(section(contracts_md, "#### `run.json`"))
    listed = ", ".join(f"`{key}`" for key in runs.SETUP_KEYS)
    assert f"the setup in `run.json` ({listed})" in text


def test_per_pair_columns(contracts_md):
    rows = table(contracts_md, "## `per_pair.csv`")
    assert keys(rows, "Column") == list(base_columns())
    values = {row["Column"].strip("`"): row["Value"] for row in rows}
    for spec in metric_table.of_level("pair"):
        assert values[spec.key].startswith(spec.unit), spec.key
        assert ("empty in files scored before" in values[spec.key]) == spec.optional, spec.key
    text = flat(section(contracts_md, "## `per_pair.csv`"))
    groups = region_groups()
    listed = ", ".join(f"`{g}/<Region>`" for g in groups[:-1])
    assert f"{listed} and `{groups[-1]}/<Region>`" in text
    pair = ", ".join(f"`{k}`" for k in PAIR_KEY[:-1])
    assert f"A pair is identified by {pair} and `{PAIR_KEY[-1]}`" in text


def test_stats_and_pairwise_columns(contracts_md):
    heading = "### `*_stats.csv` and `*_pairwise.csv`"
    # The CSVs put the convention beside the dataset (regbench.reports.tables).
    assert keys(table(contracts_md, heading), "Column") == ["dataset", "convention",
                                                            *STATS_COLUMNS[1:]]
    text = flat(section(contracts_md, heading))
    assert "with `versus`, `versus_slice_step` and `versus_label`" in text
    assert "in place of `reference`" in text
    at = STATS_COLUMNS.index("reference")
    assert list(PAIRWISE_COLUMNS) == [*STATS_COLUMNS[:at], "versus", "versus_slice_step",
                                      "versus_label", *STATS_COLUMNS[at + 1:]]
    for verdict in typing.get_args(Verdict):
        assert f"`{verdict}`" in text, verdict


def test_method_order_and_run_names(contracts_md):
    rows = table(contracts_md, "## Method order")
    assert keys(rows, "Name") == list(CANONICAL_METHODS)
    assert {row["Name"].strip("`"): row["Label"] for row in rows} == CANONICAL_LABELS
    text = flat(contracts_md)
    # The page writes the slice step as a symbol; the code's names at step 8, read back that way.
    assert run_label("<Label>", 8) == "<Label> (slice step 8)"
    assert "A run at slice step `s > 1` is labelled `<Label> (slice step s)`" in text
    assert run_name("{method}", 8) == "{method}-slice8" and run_name("{method}", 1) == "{method}"
    assert "is the method's name, or `{method}-slice{step}` when" in text


# --- nothing refers outside the repository --------------------------------------------------

EXTERNAL_NOTES = re.compile(r"\b(?:PROTOCOL|CONTRACTS)\.md\b")
"""The upper-case notes the project was once written from; docs/ holds what they said."""
PARENT_PATH = re.compile(r"(?<![\w./])((?:\.\./)+[\w.\-/]*)")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def tracked_text_files() -> dict[str, str]:
    """``{path: text}`` of every file git tracks in this checkout that reads as UTF-8 text."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                                 check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    files = {}
    for name in filter(None, listing.split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        try:
            files[name] = path.read_text()
        except UnicodeDecodeError:
            continue  # images, archives
    return files


def outside(base: Path, target: str) -> bool:
    return not (base / target).resolve().is_relative_to(ROOT.resolve())


def test_no_tracked_file_refers_outside_the_repository():
    """No reference to notes outside the repository, to the checkout's parent folder, to a
    ``../`` path that leaves the repository, or a Markdown link that does."""
    files = tracked_text_files()
    assert "docs/protocol.md" in files and "tests/test_docs.py" in files
    parent = f"{ROOT.resolve().parent}/"
    problems = []
    for name, text in files.items():
        base = (ROOT / name).parent
        for number, line in enumerate(text.splitlines(), start=1):
            found = [m.group(0) for m in EXTERNAL_NOTES.finditer(line)]
            if parent != "/" and parent in line:
                found.append(parent)
            found += [p for p in PARENT_PATH.findall(line) if outside(base, p)]
            if name.endswith(".md"):
                found += [link for link in MARKDOWN_LINK.findall(line)
                          if "://" not in link and not link.startswith(("#", "mailto:"))
                          and (outside(base, link.split("#")[0])
                               or not (base / link.split("#")[0]).exists())]
            problems += [f"{name}:{number}: {item}" for item in dict.fromkeys(found)]
    assert not problems, "references outside the repository:\n" + "\n".join(problems)

