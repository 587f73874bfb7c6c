"""One vocabulary: the names of methods, conventions and table kinds are written in
:mod:`regbench.naming` alone, those of datasets in their specs (:mod:`regbench.data.registry`);
the workflow and the reports take them from there."""

from __future__ import annotations

import re
from pathlib import Path

from regbench import naming
from regbench.data import registry
from regbench.methods import available_methods
from regbench.reports import tables

ROOT = Path(__file__).resolve().parents[1]


def test_the_canonical_methods_are_registered_with_their_labels():
    methods = available_methods()
    for name in naming.CANONICAL_METHODS:
        assert methods[name].label == naming.CANONICAL_LABELS[name], name


def test_the_reports_name_datasets_by_the_registry():
    """The tables and figures spell no dataset name of their own: titles, captions and the paper
    numbers shown for orientation come from the dataset specs."""
    for path in sorted((ROOT / "regbench" / "reports").glob("*.py")):
        code = path.read_text()
        for dataset in registry.BUILT_IN:
            assert not re.search(rf"[\"']{re.escape(dataset.name)}[\"']", code), (path.name,
                                                                                 dataset.name)
    assert tables._paper_source("demo") == ("paper (LPBA40)", "lpba40")
    assert tables._paper_source("lpba40") == ("paper", "lpba40")


def test_the_workflow_writes_no_name_of_its_own():
    """No literal list of conventions, table kinds or canonical methods in the rules."""
    words = [*naming.CONVENTIONS, *naming.TABLE_KINDS[1:], *naming.CANONICAL_METHODS[1:]]
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        for word in words:
            assert not re.search(rf"[\"']{re.escape(word)}[\"']", code), (path.name, word)
