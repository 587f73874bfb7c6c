"""One vocabulary: the names of methods, conventions and table kinds are written in
:mod:`regbench.naming` alone, those of datasets in their specs (:mod:`regbench.data.registry`);
the workflow and the reports take them from there."""

from __future__ import annotations

import ast
import io
import re
import tokenize
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


def _spelled_names(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of each string in the code of ``path`` that names a run-folder file: a
    string without spaces (help texts and docstrings, prose, may name the files) whose last
    path part is one of :data:`regbench.naming.RUN_FILES`."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings and not re.search(r"\s", node.value)
                and node.value.rsplit("/", 1)[-1] in naming.RUN_FILES):
            found.append((node.lineno, node.value))
    return found


def _spelled_in_rules(path: Path) -> list[tuple[int, str]]:
    """:func:`_spelled_names` of a Snakemake file (Snakefile, ``*.smk``): Snakemake's grammar
    is not Python's, but its tokens are, so each string token (an f-string's parts too) is
    read as :func:`_spelled_names` reads a string of Python code."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type != tokenize.STRING:
            continue
        for node in ast.walk(ast.parse(token.string.strip(), mode="eval")):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and not re.search(r"\s", node.value)
                    and node.value.rsplit("/", 1)[-1] in naming.RUN_FILES):
                found.append((token.start[0], node.value))
    return found


def test_the_files_of_a_run_folder_are_named_in_the_vocabulary_alone():
    """Issue 24: field.nii.gz, runtime.json, metrics.json, ... were spelled in 7 modules; the
    workflow's rules name them through regbench.naming too (workflow/rules/common.smk)."""
    spelled = {}
    for folder in ("regbench", "baselines", "models", "workflow"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != ROOT / "regbench" / "naming.py" and _spelled_names(path):
                spelled[str(path.relative_to(ROOT))] = _spelled_names(path)
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow").rglob("*.smk"))]:
        if _spelled_in_rules(path):
            spelled[str(path.relative_to(ROOT))] = _spelled_in_rules(path)
    assert not spelled, spelled


def test_the_run_file_check_finds_a_spelled_name(tmp_path):
    code = tmp_path / "module.py"
    code.write_text('"""Writes field.nii.gz."""\nPATH = f"{root}/metrics.json"\n'
                    'HELP = "writes OUT/runtime.json"\n')
    assert _spelled_names(code) == [(2, "/metrics.json")]


def test_the_run_file_check_reads_snakemake_files(tmp_path):
    rules = tmp_path / "rules.smk"
    rules.write_text('# writes field.nii.gz\nrule a:\n    output:\n'
                     '        f"{PAIR}/runtime.json",\n        "data/{dataset}/dataset.json",\n'
                     '        f"{PAIR}/{FIELD_FILE}",\n    shell:\n        "cp x metrics.json y"\n')
    assert _spelled_in_rules(rules) == [(4, "/runtime.json"), (5, "data/{dataset}/dataset.json")]
