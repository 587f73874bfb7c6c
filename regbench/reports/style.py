"""One place for how methods look in every table and figure: their order and colours (their
names: :mod:`regbench.naming`).

A *run* is one column of an experiment: a method at one slice step (the workflow's run folder
``{method}`` or ``{method}-slice{step}``). Runs are ordered by the canonical method order of
docs/contracts.md, then by slice step. Other methods go alphabetically after it, except the
registry's other classical (not learned) methods, which go after the canonical classical ones:
classical methods first, learned ones after, as in the paper's Table 1.

Colours come from the Okabe-Ito palette (distinguishable under the common colour-vision
deficiencies). Each canonical method has a fixed colour; any other run takes the unused colours
in run order, so one set of runs gets the same colours in every figure.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping

from regbench.naming import (  # noqa: F401 (the reports' names, from the one vocabulary)
    CANONICAL_LABELS,
    CANONICAL_METHODS,
    run_name,
)

log = logging.getLogger(__name__)

REFERENCE_METHOD = "dualprnet"
"""The method every other one is tested against."""

OKABE_ITO: dict[str, str] = {
    "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7", "grey": "#999999",
    "black": "#000000",
}

LIGHT_GREY = "#D9D9D9"
"""Identity's colour, outside the palette: the baseline every method starts from, drawn faintest."""

METHOD_COLORS: dict[str, str] = {
    "identity": LIGHT_GREY,
    "affine": OKABE_ITO["grey"],
    "syn": OKABE_ITO["orange"],
    "voxelmorph": OKABE_ITO["sky blue"],
    "voxelmorph-0.2": "#332288",  # Paul Tol's indigo, taken from the spare colours below
    "voxelmorph-diff": OKABE_ITO["blue"],
    "dualprnet-ssf": OKABE_ITO["reddish purple"],
    "dualprnet-dsf": OKABE_ITO["bluish green"],
    "dualprnet": OKABE_ITO["vermillion"],
}
# Paul Tol's "muted" colours first (safe under the common colour-vision deficiencies), then
# yellow, the hardest to see on white, and black last: a box plot's median vanishes in it.
_SPARE_COLORS = ("#882255", "#44AA99", "#999933", OKABE_ITO["yellow"], OKABE_ITO["black"])


def run_label(label: str, slice_step: int = 1) -> str:
    """How tables and figures name a run: the method label, with the slice step when > 1."""
    return label if int(slice_step) == 1 else f"{label} (slice step {int(slice_step)})"


@functools.cache
def _classical_methods() -> tuple[frozenset[str], int]:
    """The registry's classical (not learned) method names, and the canonical position after
    which the non-canonical ones sort; none where the registry cannot be imported."""
    try:
        from regbench.methods import available_methods

        classical = frozenset(name for name, cls in available_methods().items()
                              if not cls.learned)
    except Exception as err:  # a broken user method file must not stop the report
        log.warning("method registry not importable (%s): other methods sort last", err)
        return frozenset(), len(CANONICAL_METHODS)
    last = max((i for i, name in enumerate(CANONICAL_METHODS) if name in classical),
               default=len(CANONICAL_METHODS))
    return classical, last


def method_rank(method: str) -> tuple[int, int, str]:
    """Sort key of a method name: canonical position; another classical method after the last
    canonical classical one, any other method after all, each group alphabetically."""
    if method in CANONICAL_METHODS:
        return CANONICAL_METHODS.index(method), 0, ""
    classical, last = _classical_methods()
    if method in classical:
        return last, 1, method
    return len(CANONICAL_METHODS), 0, method


def order_runs(runs: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Distinct ``(method, slice_step)`` runs in report order."""
    unique = {(str(m), int(s)) for m, s in runs}
    return sorted(unique, key=lambda run: (*method_rank(run[0]), run[1]))


def order_labels(labels: Iterable[str]) -> list[str]:
    """Distinct method labels in report order (canonical labels first, others alphabetically)."""
    by_label = {label: name for name, label in CANONICAL_LABELS.items()}
    return sorted(dict.fromkeys(labels), key=lambda label: method_rank(by_label.get(label, label)))


def run_colors(runs: Iterable[tuple[str, int]]) -> dict[str, str]:
    """Colour of each run, keyed by :func:`run_name`; canonical methods at step 1 keep theirs."""
    colors: dict[str, str] = {}
    spare = [c for c in (*_SPARE_COLORS, *OKABE_ITO.values()) if c not in METHOD_COLORS.values()]
    spare = list(dict.fromkeys(spare))
    extra = 0
    for method, step in order_runs(runs):
        name = run_name(method, step)
        if step == 1 and method in METHOD_COLORS:
            colors[name] = METHOD_COLORS[method]
        else:
            # More runs than colours: cycle (the legend still names each run).
            colors[name] = spare[extra % len(spare)]
            extra += 1
    return colors


def label_colors(labels: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """Colour of each method label (a mapping label -> method name, or labels alone)."""
    by_label = {label: name for name, label in CANONICAL_LABELS.items()}
    names = (dict(labels) if isinstance(labels, Mapping)
             else {label: by_label.get(label, label) for label in labels})
    colors = run_colors((name, 1) for name in names.values())
    return {label: colors[name] for label, name in names.items()}
