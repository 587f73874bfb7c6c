"""The Snakemake profiles against the paper's configuration: GPU jobs on the GPU partition, short
CPU jobs grouped into few submissions, retries that ask for more memory and time.

The SLURM profile is read by Snakemake itself in a dry run, minus the two settings a test machine
cannot honour (`executor: slurm` needs the plugin, `use-conda` needs conda)."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper.yaml"
SLURM = ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
LOCAL_GPU = ROOT / "workflow" / "profiles" / "local-gpu" / "config.yaml"
GPU_PARTITION = "gpu"
"""The shipped profile's GPU partition (users rename it for their cluster)."""
GROUPED = {"register": "register_cpu", "register_figure_pair": "register_cpu"}
"""The short, numerous CPU jobs and their groups."""


class Job(NamedTuple):
    rule: str
    group: str | None
    resources: dict[str, str]


def parse_dry_run(out: str) -> tuple[list[Job], collections.Counter]:
    """The jobs of a dry run's output, and how many group jobs of each group it submits."""
    jobs, groups, group = [], collections.Counter(), None
    for line in out.splitlines():
        submitted = re.match(r"^\[.*\] Group job (\S+) ", line)
        job = re.match(r"^( *)(?:local)?rule (\S+):$", line)
        if submitted:
            group = submitted.group(1)
            groups[group] += 1
        elif job:
            if not job.group(1):
                group = None
            jobs.append(Job(job.group(2), group, {}))
        elif line.strip().startswith("resources: ") and jobs:
            jobs[-1].resources.update(item.split("=", 1) for item in
                                      line.strip().removeprefix("resources: ").split(", "))
    assert jobs, out[-3000:]
    return jobs, groups


@pytest.fixture(scope="module")
def slurm_profile() -> dict:
    return yaml.safe_load(SLURM.read_text())


@pytest.fixture(scope="module")
def paper_on_slurm(slurm_profile, tmp_path_factory) -> tuple[list[Job], collections.Counter]:
    """A dry run of the paper's configuration with the SLURM profile (but executor, conda)."""
    folder = tmp_path_factory.mktemp("profile")
    testable = {k: v for k, v in slurm_profile.items() if k not in ("executor", "use-conda")}
    (folder / "config.yaml").write_text(yaml.safe_dump(testable))
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
         "--configfile", str(PAPER), "--profile", str(folder)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
    return parse_dry_run(done.stdout)


def partition(profile: dict, rule: str) -> str:
    """The SLURM partition the profile sends a rule's jobs to."""
    chosen = (profile.get("set-resources") or {}).get(rule, {})
    return chosen.get("slurm_partition", profile["default-resources"]["slurm_partition"])


def misplaced_gpu_rules(profile: dict, jobs: list[Job]) -> set[str]:
    """Rules with a job that asks for a GPU but goes elsewhere than the GPU partition, or as
    more than one task (torchrun starts the processes of multi-GPU training)."""
    return {job.rule for job in jobs if int(job.resources.get("gpu", 0)) > 0
            and (partition(profile, job.rule) != GPU_PARTITION
                 or profile["set-resources"][job.rule].get("tasks_per_gpu") != 0)}


def test_every_gpu_job_goes_to_the_gpu_partition(slurm_profile, paper_on_slurm):
    jobs, _ = paper_on_slurm
    gpu_rules = {job.rule for job in jobs if int(job.resources.get("gpu", 0)) > 0}
    assert {"train", "register_learned_lpba40", "register_learned_mindboggle101",
            "figure_pyramid"} <= gpu_rules
    assert misplaced_gpu_rules(slurm_profile, jobs) == set()
    # and the GPU partition gets GPU work only
    on_gpu = {job.rule for job in jobs if partition(slurm_profile, job.rule) == GPU_PARTITION}
    assert on_gpu == gpu_rules


def test_the_check_catches_a_gpu_rule_left_on_the_cpu_partition(slurm_profile, paper_on_slurm):
    jobs, _ = paper_on_slurm
    profile = {**slurm_profile, "set-resources": {
        rule: settings for rule, settings in slurm_profile["set-resources"].items()
        if rule != "figure_pyramid"}}
    assert misplaced_gpu_rules(profile, jobs) == {"figure_pyramid"}


def test_short_cpu_jobs_reach_the_scheduler_in_groups(slurm_profile, paper_on_slurm):
    jobs, groups = paper_on_slurm
    for job in jobs:
        if job.rule in GROUPED:
            assert job.group == GROUPED[job.rule], job
    assert set(groups) == set(slurm_profile["group-components"])
    # at most: the jobs of localrules (aggregate, tables, ...) run where Snakemake runs
    submissions = sum(groups.values()) + sum(job.group is None for job in jobs)
    assert len(jobs) > 900 and submissions < 250, (len(jobs), submissions, groups)
    # one learned-registration job per (dataset, experiment, run) of a learned method, one
    # scoring job per run (Identity runs at slice step 1 only: 12 runs per dataset)
    assert sum(job.rule.startswith("register_learned_") for job in jobs) == 2 * 7
    assert sum(job.rule.startswith("evaluate_") for job in jobs) == 2 * 12


def test_retries_ask_for_more_memory_and_time(slurm_profile):
    """Every job's mem_mb and runtime at the second and third attempt, as Snakemake computes
    them on a retry (the rules' resources, else the profile's defaults)."""
    from snakemake.api import SnakemakeApi
    from snakemake.resources import DefaultResources
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
    )

    assert slurm_profile["retries"] >= 1
    defaults = DefaultResources([f"{name}={value}" for name, value
                                 in slurm_profile["default-resources"].items()])
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1, default_resources=defaults),
            config_settings=ConfigSettings(configfiles=[PAPER]),
            snakefile=ROOT / "Snakefile", workdir=ROOT)
        workflow_api.dag(DAGSettings()).execute_workflow(executor="dryrun")
        dag = workflow_api._workflow._dag  # the dry run's DAG (Snakemake 9 internals)
        checked = set()
        for job in dag.jobs:
            asked = [job.rule.expand_resources(job.wildcards, job.input, attempt)
                     for attempt in (1, 2, 3)]
            for name in ("mem_mb", "runtime"):
                first = asked[0][name]
                assert [a[name] for a in asked] == [first, 2 * first, 3 * first], (job, name)
            checked.add(job.rule.name)
    assert {"train", "register", "register_learned_lpba40", "evaluate_lpba40", "figure_pyramid",
            "prepare"} <= checked


def test_local_gpu_profile_holds_the_gpu_one_job_at_a_time():
    local = yaml.safe_load(LOCAL_GPU.read_text())
    assert local["resources"]["gpu"] >= 1
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
         "results/lpba40/pairs/main/dualprnet/S31/S32/metrics.json",
         "--profile", str(LOCAL_GPU.parent), "--configfile", str(PAPER)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
    jobs, _ = parse_dry_run(done.stdout)
    assert sorted(job.rule for job in jobs) == [
        "evaluate_lpba40", "prepare", "register_learned_lpba40", "train"]
    for job in jobs:
        assert int(job.resources.get("gpu", 0)) == (
            job.rule in ("train", "register_learned_lpba40")), job
