"""Dependencies as a user meets them: every import is declared, and the workflow's DAG needs only
Snakemake (with PyYAML and jsonschema) in the environment that runs it."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"regbench", "models", "baselines"}
TEST_HELPERS = {path.stem for path in (ROOT / "tests").glob("*.py")}
"""Modules of tests/ that tests import from one another (tests/ is on sys.path under pytest)."""
RUNTIME_FOLDERS = ("regbench", "models", "baselines", "workflow")
DEV_FOLDERS = ("tests", "benchmarks")
HIDDEN_USES = {
    # distribution: (what needs it, a file and the text that shows the need there)
    "tabulate": ("pandas' DataFrame.to_markdown", "regbench/reports/tables.py", ".to_markdown("),
    "pygments": ("snakemake --report", "README.md", "snakemake --report"),
}
"""Distributions used without an import of ours: another package imports them on our behalf."""
HEAVY = ("numpy", "torch", "scipy", "nibabel", "nilearn", "pandas", "matplotlib", "ants",
         "voxelmorph", "neurite", "tensorflow", "seaborn", "regbench")
"""Modules a snakemake-only environment lacks (regbench: the workflow finds its own)."""


def declared(extras: tuple[str, ...] = ()) -> set[str]:
    """Canonical names of pyproject's dependencies, plus those of ``extras``."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"],
                    *(r for extra in extras for r in project["optional-dependencies"][extra])]
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports of a Python file, or of a Snakemake file."""
    text = path.read_text()
    if path.suffix == ".py":
        names = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module)
    else:  # Snakefile, *.smk: Python statements inside Snakemake's grammar
        names = {m.group(1) or m.group(2) for m in re.finditer(
            r"^\s*(?:from\s+([\w.]+)\s+import\b|import\s+([\w.]+))", text, flags=re.M)}
    return {name.partition(".")[0] for name in names}


def sources(folders: tuple[str, ...]) -> list[Path]:
    found = [path for folder in folders for path in sorted((ROOT / folder).rglob("*"))
             if path.suffix in (".py", ".smk")]
    return found + ([ROOT / "Snakefile"] if "workflow" in folders else [])


OPTIONAL_IMPORTS = {"fireants": "fireants", "itk": "itk-elastix", "SimpleITK": "simpleitk"}
"""Import name -> distribution of the optional `baselines` extra (the workflow runs without it)."""


# baselines/fireants.py and baselines/elastix.py import the optional `baselines` extra lazily
@pytest.mark.parametrize("folders, extras", [(RUNTIME_FOLDERS, ("baselines",)),
                                             (DEV_FOLDERS, ("dev", "baselines"))],
                         ids=["package-and-workflow", "tests-and-benchmarks"])
def test_every_third_party_import_is_declared(folders, extras):
    distributions = importlib.metadata.packages_distributions()
    allowed = declared(extras)
    missing = {}
    for path in sources(folders):
        local = FIRST_PARTY | TEST_HELPERS
        for module in imported_modules(path) - local - set(sys.stdlib_module_names):
            owners = {canonicalize_name(d) for d in distributions.get(module, [])}
            if not owners and module in OPTIONAL_IMPORTS:
                owners = {canonicalize_name(OPTIONAL_IMPORTS[module])}
            if not owners & allowed:
                missing.setdefault(module, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imports whose distribution pyproject does not declare: {missing}"


@pytest.mark.parametrize("distribution", sorted(HIDDEN_USES))
def test_distributions_used_through_other_packages_are_declared(distribution):
    need, path, evidence = HIDDEN_USES[distribution]
    assert evidence in (ROOT / path).read_text(), f"{path} no longer needs {distribution}"
    assert canonicalize_name(distribution) in declared(), f"{need} needs {distribution}"


# --- the workflow in an environment with Snakemake alone ------------------------------------


def snakemake_only_path(tmp_path: Path) -> Path:
    """A folder of links to this interpreter's site-packages minus the scientific stack,
    regbench itself and Snakemake's plugins: what `pip install snakemake` alone would give."""
    distributions = importlib.metadata.packages_distributions()
    hidden = {canonicalize_name(d) for module in HEAVY for d in distributions.get(module, [])}
    hidden |= {canonicalize_name(module) for module, owners in distributions.items()
               if {canonicalize_name(owner) for owner in owners} & hidden}
    hidden |= set(HEAVY)
    farm = tmp_path / "site-packages"
    farm.mkdir()
    for folder in (Path(p) for p in sys.path if p.endswith("site-packages")):
        for entry in sorted(folder.iterdir()):
            stem = canonicalize_name(re.split(r"[-.]", entry.name, maxsplit=1)[0])
            plugin = re.match(r"snakemake[-_][a-z]+[-_]plugin[-_]", entry.name)  # not interfaces
            # a backport named as a standard module (`typing`, which FireANTs' requirements
            # pull in) would shadow it from PYTHONPATH, ahead of the standard library
            if (stem in hidden or plugin or "regbench" in entry.name
                    or entry.suffix == ".pth" or (farm / entry.name).exists()
                    or entry.name.removesuffix(".py") in sys.stdlib_module_names):
                continue
            (farm / entry.name).symlink_to(entry)
    return farm


@pytest.mark.parametrize("configfile, learned_rule", [
    ("config.yaml", "register_learned_demo"),
    ("config/paper.yaml", "register_learned_mindboggle101"),
], ids=["demo", "paper"])
def test_dry_run_needs_only_snakemake(configfile, learned_rule, tmp_path):
    farm = snakemake_only_path(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    probe = ("import importlib.util, sys\n"
             f"hidden = [m for m in {HEAVY!r} if importlib.util.find_spec(m)]\n"
             "assert not hidden, hidden\n"
             "from snakemake.cli import main\n"
             "sys.argv[0] = 'snakemake'\n"
             "main()\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe, "-n", "--snakefile", str(ROOT / "Snakefile"),
         "--configfile", str(ROOT / configfile)],
        cwd=work, env={**env, "PYTHONPATH": str(farm)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
    assert re.search(rf"^{learned_rule}\s+\d+$", done.stdout, flags=re.M), done.stdout[-3000:]
    assert re.search(r"^evaluate_\w+\s+\d+$", done.stdout, flags=re.M)
