"""README.md's numbers against the committed result files (benchmarks/readme_numbers.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from benchmark_scripts import load

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def numbers():
    return load("readme_numbers")


@pytest.fixture
def checkout(tmp_path):
    """A checkout holding a copy of the README and the committed results and figures."""
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text())
    for folder in ("results", "figures"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    return tmp_path


def test_readme_is_what_the_committed_results_make(numbers):
    assert numbers.differences((ROOT / "README.md").read_text(), ROOT) == ""


def test_a_number_unlike_the_results_fails_and_write_restores_it(numbers, checkout, capsys):
    readme = checkout / "README.md"
    committed = readme.read_text()
    row = next(line for line in committed.splitlines() if line.startswith("| Dual-PRNet | 0.424 "))
    readme.write_text(committed.replace(row, row.replace("0.424", "0.425")))
    assert numbers.main(["--check", "--root", str(checkout)]) == 1
    diff = capsys.readouterr().out
    assert f"-{row.replace('0.424', '0.425')}\n" in diff and f"+{row}\n" in diff
    assert numbers.main(["--write", "--root", str(checkout)]) == 0
    assert readme.read_text() == committed
    assert numbers.main(["--check", "--root", str(checkout)]) == 0


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: text.replace("<!-- speed-table:end -->\n", "", 1),
     "speed-table:start has no speed-table:end"),
    (lambda text: text + "\n<!-- no-such-part:start -->\n<!-- no-such-part:end -->\n",
     "markers ['no-such-part'] name no section"),
    (lambda text: text.replace("<!-- demo-seed1:start -->\n", "", 1).replace(
        "<!-- demo-seed1:end -->\n", "", 1), "no markers for the sections ['demo-seed1']"),
    (lambda text: text.replace("<!-- demo-seed1:end -->", "<!-- demo-table:end -->", 1),
     "marker demo-table:end is unpaired, repeated or nested"),
])
def test_bad_markers_are_named(numbers, edit, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        numbers.filled(edit((ROOT / "README.md").read_text()), ROOT)


def test_a_missing_result_file_is_named(numbers, tmp_path):
    (tmp_path / "results" / "demo").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"results/demo/tables/table1_faim\.md: missing"):
        numbers.filled((ROOT / "README.md").read_text(), tmp_path)


def test_a_difference_keeps_its_sign_whichever_way_the_file_compares(numbers):
    one = numbers.pairwise_row(ROOT, "demo_seed1", "dualprnet", "voxelmorph")
    other = numbers.pairwise_row(ROOT, "demo_seed1", "voxelmorph", "dualprnet")
    assert one["mean_difference"] == -other["mean_difference"] != 0
    assert (one["ci_low"], one["ci_high"]) == (-other["ci_high"], -other["ci_low"])


def test_a_statement_the_results_no_longer_support_stops_the_check(numbers, tmp_path):
    """The README says the methods shared with the demo score alike in the baselines run: a
    results folder where they do not is refused, naming the file, rather than rewritten."""
    shutil.copytree(ROOT / "results", tmp_path / "results")
    (tmp_path / "figures").symlink_to(ROOT / "figures")
    table = tmp_path / "results" / "baselines" / "tables" / "table1_faim.md"
    row = next(line for line in table.read_text().splitlines() if line.startswith("| SyN "))
    table.write_text(table.read_text().replace(row, row.replace("0.812", "0.813", 1)))
    with pytest.raises(SystemExit, match=r"results/baselines/tables/table1_faim\.md no longer "
                                         r"supports the README's statement"):
        numbers.filled((ROOT / "README.md").read_text(), tmp_path)
