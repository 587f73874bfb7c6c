"""The package's import graph: no module imports itself through others, and the modules the
workflow reads need nothing beyond the standard library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"regbench": ROOT / "regbench", "regbench.baselines": ROOT / "baselines",
            "regbench.models": ROOT / "models"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere: in functions and under ``if
    TYPE_CHECKING:`` too (an import for typing alone is still an arrow of the graph)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1],
                                 *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_no_module_imports_itself_through_others():
    found = modules()
    graph = {name: imports(path, name, set(found)) for name, path in found.items()}
    # A package's __init__ may be imported by its own modules (Python runs it first anyway):
    # an edge from a module to a package that contains it is no circle.
    graph = {name: {t for t in targets if not name.startswith(f"{t}.")}
             for name, targets in graph.items()}
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for target in graph[node]:
                if target == start:
                    circles.append(" -> ".join([*path, start]))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    assert not circles, "\n".join(sorted(circles))


def test_what_the_workflow_imports_needs_only_the_standard_library():
    code = ("import sys; import regbench.naming, regbench.training.config, "
            "regbench.data.protocol, regbench.data.registry, regbench.data.scale, "
            "regbench.reports.style; regbench.data.registry.available_datasets(); "
            "heavy = sorted({'numpy', 'torch', 'pandas', 'nibabel', 'scipy'} & set(sys.modules)); "
            "print(heavy); sys.exit(bool(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
