"""Reading the Markdown pages of docs/ in tests: sections, tables and wrapped sentences."""

from __future__ import annotations

import itertools
import re


def flat(text: str) -> str:
    """``text`` with every run of whitespace as one space (sentences wrap across lines)."""
    return re.sub(r"\s+", " ", text)


def section(text: str, heading: str) -> str:
    """The body of the Markdown section under the heading line ``heading``, up to the next heading
    of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    following = re.search(rf"^#{{1,{level}}} ", text[start:], flags=re.MULTILINE)
    return text[start:start + following.start()] if following else text[start:]


def table(text: str, heading: str) -> list[dict[str, str]]:
    """The first Markdown table under ``heading``: one dict per row, keyed by the header cells."""
    body = section(text, heading).splitlines()
    start = next(i for i, line in enumerate(body) if line.startswith("|"))
    lines = list(itertools.takewhile(lambda line: line.startswith("|"), body[start:]))
    assert len(lines) >= 3, f"no table under {heading!r}"

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    header = cells(lines[0])
    return [dict(zip(header, cells(line), strict=True)) for line in lines[2:]]
