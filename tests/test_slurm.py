"""The workflow on a real SLURM: tests/slurm/local_cluster.sh brings up a one-node cluster on
this machine, runs config/ci.yaml through the shipped profile workflow/profiles/slurm, and
shuts the cluster down. Its tables must match a local run of the same configuration figure for
figure, and every job that was not a local rule must have gone through SLURM, to the partition
the profile names. Skipped where SLURM is not installed, since it needs Debian's slurmctld,
slurmd, slurm-client and munge, root, and snakemake-executor-plugin-slurm (the `slurm` extra,
left out of `dev` because this test alone takes about 10 minutes on 2 cores)."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "slurm" / "local_cluster.sh"
PROFILE = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
# a job is a rule's job or a group's (numbered, or named by a UUID)
SUBMITTED = re.compile(r"^Job \S+ has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$")
RULE_RUN = re.compile(r"^(?:local)?rule (\S+):$", flags=re.M)


def why_no_cluster() -> str | None:
    """Why a local cluster cannot be brought up here, or None if it can."""
    missing = [tool for tool in ("sbatch", "slurmctld", "slurmd", "munged")
               if shutil.which(tool) is None]
    if missing:
        return f"no SLURM here ({', '.join(missing)} not found)"
    if os.geteuid() != 0:
        return "the local cluster needs root (slurmd)"
    if Path("/etc/slurm/slurm.conf").exists():
        return "this machine belongs to a SLURM cluster (/etc/slurm/slurm.conf)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    return None


pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(why_no_cluster() is not None, reason=str(why_no_cluster()))]


def copy_checkout(destination: Path) -> None:
    """The checkout's files as local_cluster.sh copies them: tracked and untracked (not
    ignored), without the reference outputs under results/ and figures/."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".",
         ":!results", ":!figures"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)


def run(command: list[str], cwd: Path, timeout: float) -> str:
    """Output and errors of a command that must succeed."""
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-8000:]}"
    return done.stdout


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as table:
        return list(csv.DictReader(table))


def expected_partition(rule: str) -> str:
    """The partition the shipped profile sends a rule's jobs to."""
    profile = yaml.safe_load(PROFILE.read_text())
    default = profile["default-resources"]["slurm_partition"]
    return (profile.get("set-resources") or {}).get(rule, {}).get("slurm_partition", default)


def test_ci_workflow_on_a_local_slurm_cluster_matches_a_local_run(tmp_path):
    status_before = run(["git", "status", "--porcelain"], ROOT, 60)
    slurm = tmp_path / "slurm"
    summary = run([str(SCRIPT), str(slurm)], ROOT, timeout=3600).splitlines()[-1]
    print(summary)  # jobs and wall time, for the README

    local = tmp_path / "local"
    copy_checkout(local)
    start = time.monotonic()
    run(["nice", "-n", "19", sys.executable, "-m", "snakemake", "--cores", "2",
         "--configfile", "config/ci.yaml"], local, timeout=3600)
    print(f"the local run took {time.monotonic() - start:.0f} s wall clock")

    # the same tables, figure for figure; only the measured registration times differ
    tables = sorted(path.name for path in (local / "results/demo/tables").glob("*.csv"))
    assert tables and tables == sorted(
        path.name for path in (slurm / "results/demo/tables").glob("*.csv"))
    for name in tables:
        ours = read_rows(slurm / "results/demo/tables" / name)
        theirs = read_rows(local / "results/demo/tables" / name)
        assert len(ours) == len(theirs) > 0, name
        for row, reference in zip(ours, theirs, strict=True):
            assert row.keys() == reference.keys(), name
            differ = {column: (row[column], reference[column]) for column in row
                      if not column.startswith("time_s") and row[column] != reference[column]}
            assert not differ, f"{name}, {row['method']}: SLURM vs local {differ}"

    # every job SLURM ran was submitted by this workflow and completed; its log (kept by the test
    # profile) shows Snakemake running its rules (a group's several) inside it, on the partition
    # the profile sends each of them to
    submitted = {}
    for log in (slurm / ".snakemake" / "log").glob("*.snakemake.log"):
        for line in log.read_text().splitlines():
            match = SUBMITTED.match(line)
            if match:
                submitted[match.group(1)] = Path(match.group(2))
    finished = {}
    for line in (slurm / "logs/slurm_cluster/jobcomp.txt").read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        finished[fields["JobId"]] = fields
    assert submitted and set(submitted) == set(finished)
    for job_id, log in submitted.items():
        assert finished[job_id]["JobState"] == "COMPLETED", finished[job_id]
        rules = set(RULE_RUN.findall(log.read_text()))
        unit = next(part for part in log.parts if part.startswith(("rule_", "group_")))
        if unit.startswith("rule_"):
            assert rules == {unit.removeprefix("rule_")}, log
        assert rules, log
        for rule in rules:
            assert finished[job_id]["Partition"] == expected_partition(rule), (rule, job_id)

    assert run(["git", "status", "--porcelain"], ROOT, 60) == status_before
