"""The Snakemake workflow: lint, the paper's DAG (dry run, no data), environments, and the tiny CI
configuration end to end (demo data -> training -> registration -> per_pair.csv -> tables,
figures, HTML report), with an external method added as a rule."""

from __future__ import annotations

import collections
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper.yaml"
CI = ROOT / "config" / "ci.yaml"
EXTERNAL_RULE_FILE = "workflow/rules/methods/example_external.smk"
EXTERNAL_OVERLAY = {
    "methods": {"example-identity": {"rule_file": EXTERNAL_RULE_FILE,
                                     "label": "Identity (external example)"}},
}
MAIN = ["identity", "affine", "syn", "voxelmorph", "dualprnet"]
ABLATION = ["identity", "dualprnet-ssf", "dualprnet-dsf", "dualprnet"]
SLICE_SPACING = ["identity", "dualprnet", "dualprnet-slice8"]  # identity: step 1 only
TEST_PAIRS = {"lpba40": 10 * 9, "mindboggle101": 20 * 19}


def snakemake(*args: str, cwd: Path = ROOT, check: bool = True,
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``snakemake`` on this repository's Snakefile; output and errors together."""
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{done.stdout[-6000:]}")
    return done


def overlay(tmp_path: Path, name: str, content: dict) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return str(path)


def with_external(config: Path, tmp_path: Path) -> str:
    """An overlay adding the example external method to the main experiment of ``config``."""
    main = yaml.safe_load(config.read_text())["experiments"]["main"]["methods"]
    return overlay(tmp_path, "external.yaml", {
        **EXTERNAL_OVERLAY,
        "experiments": {"main": {"methods": [*main, "example-identity"]}}})


def parse_jobs(out: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run's output lists, grouped jobs too."""
    jobs = []
    for line in out.splitlines():
        start = re.match(r"^\s*(?:local)?rule (\S+):$", line)
        if start:
            jobs.append((start.group(1), {}))
        elif line.strip().startswith("wildcards: ") and jobs:
            jobs[-1][1].update(item.split("=", 1)
                               for item in line.strip().removeprefix("wildcards: ").split(", "))
    assert jobs, out[-3000:]
    return jobs


def dry_run_jobs(*args: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run lists."""
    return parse_jobs(snakemake("-n", *args).stdout)


def learned_rules(datasets) -> set[str]:
    """The rules registering a learned method's test pairs, one per dataset."""
    return {f"register_learned_{dataset}" for dataset in datasets}


# --- lint and the paper's DAG ----------------------------------------------------------------


@pytest.mark.parametrize("configs", [[], [str(PAPER)], [str(ROOT / "config" / "demo_long.yaml")],
                                     [str(CI), "EXTERNAL"]],
                         ids=["demo", "paper", "demo-long", "ci+external"])
def test_lint_reports_nothing(configs, tmp_path):
    configs = [with_external(CI, tmp_path) if c == "EXTERNAL" else c for c in configs]
    args = ["--lint"] + (["--configfile", *configs] if configs else [])
    out = snakemake(*args).stdout
    assert "Congratulations, your workflow is in a good condition" in out, out
    assert "Lints for" not in out, out


def test_demo_long_tests_over_eight_subjects():
    """config/demo_long.yaml makes 8 test subjects: 56 ordered pairs a run, and a test over
    subjects can reach p = 0.008."""
    done = snakemake("-n", "-p", "--configfile", str(ROOT / "config" / "demo_long.yaml"))
    assert "--test-subjects 8" in done.stdout
    pairs = {(w["moving"], w["fixed"]) for rule, w in parse_jobs(done.stdout)
             if rule in ("register", "register_figure_pair") and w.get("run") == "syn"}
    assert len(pairs) == 8 * 7


def test_paper_dry_run_scores_every_test_pair_of_every_run():
    jobs = dry_run_jobs("--configfile", str(PAPER))
    runs = {(dataset, experiment, run): pairs
            for dataset, pairs in TEST_PAIRS.items()
            for experiment, runs in (("main", MAIN), ("ablation", ABLATION),
                                     ("slice_spacing", SLICE_SPACING))
            for run in runs}
    # one scoring job per (dataset, experiment, run), scoring all its test pairs
    scored = collections.Counter((rule.removeprefix("evaluate_"), w["experiment"], w["run"])
                                 for rule, w in jobs if rule.startswith("evaluate_"))
    assert dict(scored) == {key: 1 for key in runs}
    # a method that is not learned: one registration job per pair (the figure pair's its own)
    classic = collections.Counter((w["dataset"], w["experiment"], w["run"]) for rule, w in jobs
                                  if rule in ("register", "register_figure_pair"))
    assert dict(classic) == {key: pairs for key, pairs in runs.items()
                             if key[2] in ("affine", "syn")}
    assert sum(rule == "register_figure_pair" for rule, _ in jobs) == 2 * 2  # affine, syn
    # a learned method: ONE job per (dataset, experiment, run) registers all its test pairs;
    # so does identity, on the CPU (`per_run`)
    learned = collections.Counter((rule.removeprefix("register_learned_"), w["experiment"],
                                   w["run"]) for rule, w in jobs
                                  if rule in learned_rules(TEST_PAIRS))
    assert dict(learned) == {key: 1 for key in runs
                             if key[2] not in ("affine", "syn", "identity")}
    per_run = collections.Counter((rule.removeprefix("register_run_"), w["experiment"],
                                   w["run"]) for rule, w in jobs
                                  if rule.startswith("register_run_"))
    assert dict(per_run) == {key: 1 for key in runs if key[2].startswith("identity")}
    # one model per (dataset, learned method), shared by every experiment
    trained = sorted((w["dataset"], w["model"]) for rule, w in jobs if rule == "train")
    assert trained == sorted((d, m) for d in TEST_PAIRS
                             for m in ("voxelmorph", "dualprnet", "dualprnet-dsf",
                                       "dualprnet-ssf"))
    rules = collections.Counter(rule for rule, _ in jobs)
    assert rules["prepare"] == 2 and rules["download_mindboggle101"] == 1
    assert rules["aggregate"] == 2 * 3


def test_paper_commands_use_the_gpu_ddp_and_slice_thinning(tmp_path):
    thinned = overlay(tmp_path, "thinned.yaml",
                      {"experiments": {"slice_spacing": {"methods": ["dualprnet"],
                                                         "slice_steps": [1, 8],
                                                         "train_thinned": True}}})
    target = "results/lpba40/pairs/slice_spacing/dualprnet-slice8/S31/S32/metrics.json"
    for configs, model in (([str(PAPER)], "dualprnet"),
                           ([str(PAPER), thinned], "dualprnet-slice8")):
        out = snakemake(target, "-n", "-p", "--configfile", *configs).stdout
        commands = [line.strip() for line in out.splitlines()
                    if line.strip().startswith("Shell command: ")]
        register = next(c for c in commands if " register-pairs dualprnet " in c)
        train = next(c for c in commands if " train dualprnet " in c)
        evaluate = next(c for c in commands if " evaluate-pairs " in c)
        assert "--slice-step 8" in register and "--test-pairs" in register
        assert f"--checkpoint results/lpba40/models/{model}/model.pt" in register
        assert "--device cuda" in register
        assert "--out-root results/lpba40/pairs/slice_spacing/dualprnet-slice8 " in register
        assert "--out-root results/lpba40/pairs/slice_spacing/dualprnet-slice8 " in evaluate
        assert "--test-pairs" in evaluate
        assert train.startswith(
            "Shell command: torchrun --standalone --nproc_per_node 4 -m regbench.cli train")
        assert f"--out results/lpba40/models/{model} " in train
        assert "--batch-size 4" in train and "--device cuda" in train
        assert "--no-amp" in train  # the official code trains in float32
        assert ("--slice-step 8" in train) == (model != "dualprnet")


def test_the_order_of_option_keys_changes_no_command(tmp_path):
    """Issue 16: Snakemake retrained ("Params have changed") when only the YAML order of a
    method's options changed."""
    commands = []
    for name, options in (("a.yaml", {"levels": 3, "decoder_channels": 8}),
                          ("b.yaml", {"decoder_channels": 8, "levels": 3})):
        changed = overlay(tmp_path, name, {"methods": {"dualprnet": {"options": options}}})
        out = snakemake("results/demo/models/dualprnet/model.pt", "-n", "-p", "--forceall",
                        "--configfile", str(ROOT / "config.yaml"), changed).stdout
        commands.append([line.strip() for line in out.splitlines()
                         if " train dualprnet " in line])
    assert commands[0] and commands[0] == commands[1], commands
    assert "--option decoder_channels=8 --option levels=3" in commands[0][0]


def test_external_rule_quotes_its_paths():
    """Issue 16: the example external rule broke in a checkout whose path has a space."""
    text = (ROOT / EXTERNAL_RULE_FILE).read_text()
    shell = text[text.index("shell:"):]
    placeholders = re.findall(r"\{((?:params|input|output)\.[a-z_]+(?::q)?)\}", shell)
    assert placeholders and all(p.endswith(":q") for p in placeholders), placeholders


def test_paper_trains_voxelmorph_as_the_authors_2019_script():
    """config/paper.yaml: Adam 1e-4 alone, batch 1 on one GPU, 150,000 steps, no augmentation,
    float32 (docs/protocol.md, VoxelMorph); Dual-PRNet keeps its own recipe."""
    out = snakemake("results/lpba40/models/voxelmorph/model.pt",
                    "results/lpba40/models/dualprnet/model.pt", "-n", "-p", "--configfile",
                    str(PAPER)).stdout
    commands = [line.strip() for line in out.splitlines()
                if line.strip().startswith("Shell command: ")]
    voxelmorph = next(c for c in commands if " train voxelmorph " in c)
    assert voxelmorph.startswith("Shell command: regbench train voxelmorph")
    for flag in ("--steps 150000", "--batch-size 1", "--lr 0.0001", "--warmup-steps 0",
                 "--weight-decay 0", "--clip-grad-norm 0", "--crop-jitter 0", "--no-amp"):
        assert f"{flag} " in f"{voxelmorph} ", flag
    dualprnet = next(c for c in commands if " train dualprnet " in c)
    for flag in ("--batch-size 4", "--weight-decay 1e-05", "--clip-grad-norm 10.0",
                 "--warmup-steps 1088", "--crop-jitter 5"):
        assert f"{flag} " in f"{dualprnet} ", flag


def test_python_m_regbench_cli_runs_the_cli():
    """What torchrun launches for multi-GPU training."""
    done = subprocess.run([sys.executable, "-m", "regbench.cli", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: regbench" in done.stdout


def test_external_method_gets_one_rule_job_per_pair_and_one_evaluation_per_run(tmp_path):
    jobs = dry_run_jobs("--configfile", str(PAPER), with_external(PAPER, tmp_path))
    rules = collections.Counter(rule for rule, _ in jobs)
    assert rules["example_identity"] == sum(TEST_PAIRS.values())
    scored = collections.Counter(rule.removeprefix("evaluate_") for rule, w in jobs
                                 if rule.startswith("evaluate_") and w["run"] == "example-identity")
    assert dict(scored) == {dataset: 1 for dataset in TEST_PAIRS}


def without_raw(config: dict) -> None:
    config["datasets"] = {"lpba40": {}}


@pytest.mark.parametrize("change, message", [
    (lambda c: c["train"].update(stpes=10), "stpes"),
    (without_raw, "raw"),
    (lambda c: c["experiments"]["main"]["methods"].append("nonesuch"), "nonesuch"),
    (lambda c: c["methods"].update(nonesuch={"learned": False}), "not a regbench method"),
    (lambda c: c["experiments"].update(pairs={"methods": ["affine"]}), "reserved"),
    (lambda c: c.update(figures={"moving": "S01", "fixed": "S02"}), "not a test pair"),
    (lambda c: c["datasets"]["lpba40"].update(subjects=["S01", "S31"]), "fewer than 2 test"),
    (lambda c: c["datasets"].update(demo={"subjects": 6, "test_subjects": 5}),
     "datasets.demo: demo: test_subjects=5 must be a whole number from 2 to 4"),
    # issue 22: each failed only when its job ran
    (lambda c: c["methods"].update(affine={"learned": True}),
     "methods.affine: learned: true, but 'affine' is not a learned method"),
    (lambda c: c["methods"].update(syn={"options": {"reg_iterations": "many"}}),
     "methods.syn.options: method 'syn': option reg_iterations='many'"),
    (lambda c: c["experiments"]["ablation"].update(methods=["identity", "dualprnet"]),
     "experiment 'ablation' runs none of dualprnet-ssf, dualprnet-dsf"),
    (lambda c: c["methods"].update(
        mine={"rule_file": "workflow/rules/methods/example_external.smk", "label": "SyN"}),
     "methods.mine: label 'SyN' is the label of method 'syn'"),
    # the audit of issue 22: failed only when the job ran
    (lambda c: c["experiments"]["main"].update(slice_steps=[1, 1000]),
     "config: experiments.main.slice_steps on lpba40: slice step 1000: keeps 1 of the"),
    (lambda c: c["train"].update(crop_jitter=1000),
     "crop_jitter 1000: moving and fixed would part by up to 2000 voxels on a grid of"),
], ids=["unknown-key", "missing-raw", "unknown-method", "method-not-registered",
        "reserved-name", "figure-pair",
        "one-test-subject", "demo-test-subjects", "learned-classical-method", "bad-option",
        "ablation-without-ablation-methods", "external-labelled-like-a-method",
        "slice-step-beyond-the-grid", "crop-jitter-beyond-the-grid"])
def test_bad_configuration_is_refused_with_a_message(change, message, tmp_path):
    config = yaml.safe_load(PAPER.read_text())
    change(config)
    done = snakemake("-n", "--configfile", overlay(tmp_path, "bad.yaml", config), check=False)
    assert done.returncode != 0
    assert message in done.stdout, done.stdout[-3000:]


def test_a_key_given_twice_fails_the_dry_run(tmp_path):
    """Issue 22: YAML keeps the last of two equal keys, so a setting given twice lost a value."""
    twice = tmp_path / "twice.yaml"
    twice.write_text(PAPER.read_text() + "\ntrain:\n  steps: 10\n")
    done = snakemake("-n", "--configfile", str(twice), check=False)
    assert done.returncode != 0
    assert f"config: {twice}, line " in done.stdout, done.stdout[-3000:]
    assert "key 'train' is given twice in one mapping" in done.stdout, done.stdout[-3000:]


NEEDS_ABSENT_PACKAGE = """
from regbench.methods import Method


class NeedsAbsentPackage(Method):
    name = "needs-absent-package"
    label = "Needs an absent package"
    requires = {"regbench-absent-package": "baselines"}
"""


def test_a_method_without_its_package_fails_the_dry_run(tmp_path, monkeypatch):
    """Issue 22: a dry run of config/baselines.yaml passed without FireANTs and elastix."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "needs_absent.py").write_text(NEEDS_ABSENT_PACKAGE)
    monkeypatch.setenv("REGBENCH_METHOD_PATH", str(tmp_path / "methods"))
    config = yaml.safe_load(PAPER.read_text())
    config["methods"]["needs-absent-package"] = {}
    config["experiments"]["main"]["methods"].append("needs-absent-package")
    done = snakemake("-n", "--configfile", overlay(tmp_path, "bad.yaml", config), check=False)
    assert done.returncode != 0
    assert "methods.needs-absent-package: method 'needs-absent-package' needs " \
        "regbench-absent-package, which is not installed" in done.stdout, done.stdout[-3000:]
    assert 'pip install -e ".[baselines]"' in done.stdout, done.stdout[-3000:]


# --- environments and profiles ---------------------------------------------------------------


def conda_specs(path: Path) -> dict[str, Requirement]:
    """Package name -> requirement of a conda environment file (conda and pip sections)."""
    specs = {}
    for entry in yaml.safe_load(path.read_text())["dependencies"]:
        for spec in entry["pip"] if isinstance(entry, dict) else [entry]:
            if spec.startswith("-e ") or spec in ("pip",) or spec.startswith("python="):
                continue
            requirement = Requirement(spec)
            specs[requirement.name.lower()] = requirement
    return specs


@pytest.mark.parametrize("env_file, extras", [("environment.yml", ["dev", "baselines", "slurm"]),
                                               ("workflow/envs/regbench.yaml", [])])
def test_environment_pins_match_pyproject(env_file, extras):
    """The suite's environment has the dependencies and the dev tools, the rules' environment
    the dependencies, each with pyproject.toml's pins."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = conda_specs(ROOT / env_file)
    wanted_all = [*project["dependencies"],
                  *(d for extra in extras for d in project["optional-dependencies"][extra])]
    for dependency in wanted_all:
        wanted = Requirement(dependency)
        assert wanted.name.lower() in specs, f"{env_file} lacks {wanted.name}"
        assert specs[wanted.name.lower()].specifier == wanted.specifier, (
            f"{env_file}: {specs[wanted.name.lower()]} != pyproject's {wanted}")


def test_every_rule_names_the_conda_environment():
    rules = [path for path in (ROOT / "workflow" / "rules").rglob("*.smk")]
    for path in rules:
        text = path.read_text()
        declared = len(re.findall(r"^ *rule(?: \w+)?:", text, flags=re.M))  # `use rule` inherits
        environments = re.findall(r'^( *)conda:\n\1    "([^"]+)"', text, flags=re.M)
        environments = [environment for _, environment in environments]
        assert len(environments) == declared, path
        for environment in environments:
            assert (path.parent / environment).resolve() == (
                ROOT / "workflow" / "envs" / "regbench.yaml"), (path, environment)
    post_deploy = ROOT / "workflow" / "envs" / "regbench.post-deploy.sh"
    assert "REGBENCH_SOURCE" in post_deploy.read_text()


# --- the tiny configuration end to end -------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as table:
        return list(csv.DictReader(table))


def markdown_rows(path: Path) -> list[dict[str, str]]:
    """Rows of the pipe table in a Markdown file, by header."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, body = cells[0], cells[2:]  # cells[1] is the |:---| rule
    return [dict(zip(header, row, strict=True)) for row in body]


def mean_of(cell: str) -> float:
    """The mean of a "mean ± std" cell, without Markdown emphasis."""
    return float(cell.strip("*").split("±")[0])


@pytest.mark.slow
def test_ci_configuration_end_to_end(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    volumes = overlay(tmp_path, "volumes.yaml", {"register": {"keep_volumes": False}})
    configs = ["--configfile", str(CI), with_external(CI, tmp_path), volumes]
    snakemake("--cores", "2", *configs, cwd=work, timeout=900)

    ci = yaml.safe_load(CI.read_text())
    assert ci["train"]["steps"] < 10  # a few steps: this proves the plumbing, not the methods
    test_pairs = 2 * 1  # 6 subjects, the last quarter (at least 2) held out: 2 ordered pairs
    for experiment, runs in (("main", [*MAIN, "example-identity"]), ("ablation", ABLATION),
                             ("slice_spacing", SLICE_SPACING)):
        rows = read_rows(work / "results" / "demo" / experiment / "per_pair.csv")
        assert collections.Counter(
            r["method"] if r["slice_step"] == "1" else f"{r['method']}-slice{r['slice_step']}"
            for r in rows) == {run: test_pairs for run in runs}, experiment
        for row in rows:
            assert 0 <= float(row["mean_dice_faim"]) <= 1
            assert 0 <= float(row["mean_dice_merged"]) <= 1
            assert float(row["time_s"]) >= 0 and row["device"]

    # Table 1: a row per method of the main experiment, the external one by its label
    tables = work / "results" / "demo" / "tables"
    for convention in ("faim", "merged"):
        ours = [row for row in markdown_rows(tables / f"table1_{convention}.md")
                if row["Source"] == "ours"]
        assert [row["Method"] for row in ours] == [
            "Identity", "Affine", "SyN", "VoxelMorph", "Dual-PRNet",
            "Identity (external example)"]
        for row in ours:
            assert 0 <= mean_of(row["Average"]) <= 1
            assert 0 <= mean_of(row["Frontal"]) <= 1
    for stem in ("table1_faim", "table1_merged", "ablation", "slice_spacing"):
        for ext in ("csv", "md", "tex"):
            assert (tables / f"{stem}.{ext}").stat().st_size > 0
    for stem in ("table1", "ablation", "slice_spacing"):
        pairwise = list(csv.DictReader((tables / f"{stem}_pairwise.csv").open()))
        assert pairwise and all(0 <= float(row["p_holm"]) <= 1 for row in pairwise
                                if row["p_holm"])
    figures = work / "figures" / "demo"
    for stem in ("fig2_pyramid", "fig3_warped", "fig4_faim", "fig4_merged", "dice_time_faim",
                 "dice_regularity_faim", "learning_curves"):
        assert (figures / f"{stem}.png").stat().st_size > 0
        assert (figures / f"{stem}.pdf").stat().st_size > 0

    # keep_volumes false: only the figure pair keeps its field and warped volumes; the other
    # pairs keep their records (and an external method its own field)
    figure_pair = ("demo05", "demo06")
    records = ["metrics.json", "runtime.json"]
    volumes = ["field.nii.gz", "warped.nii.gz", "warped_labels.nii.gz"]
    for experiment, runs in (("main", [*MAIN, "example-identity"]), ("ablation", ABLATION),
                             ("slice_spacing", SLICE_SPACING)):
        for run in runs:
            for pair in (figure_pair, figure_pair[::-1]):
                folder = work.joinpath("results", "demo", "pairs", experiment, run, *pair)
                kept = volumes if pair == figure_pair else (
                    ["field.nii.gz"] if run == "example-identity" else [])
                assert sorted(p.name for p in folder.iterdir()) == sorted(records + kept), folder

    # training left its resume state and its learning curve beside the model
    for model in ("voxelmorph", "dualprnet", "dualprnet-dsf", "dualprnet-ssf"):
        folder = work / "results" / "demo" / "models" / model
        assert (folder / "model.pt").is_file() and (folder / "checkpoint.pt").is_file()
        validation = list(csv.DictReader((folder / "validation.csv").open()))
        assert [row["step"] for row in validation] == ["0", "2", "4"]
    # every job logged and benchmarked (one benchmark per job but `all`)
    assert len(list((work / "logs" / "benchmarks").rglob("*.tsv"))) >= 30

    # complete and up to date, the deleted fields included: nothing left to do
    again = snakemake("--cores", "2", *configs, "-n", cwd=work).stdout
    assert "Nothing to be done" in again, again[-3000:]

    # the HTML report holds the tables and figures (the README's `snakemake --report`)
    snakemake(*configs, "--report", "report.html", cwd=work)
    report = (work / "report.html").read_text()
    assert "fig3_warped.png" in report and "table1_faim.csv" in report
    assert "learning_curves.png" in report and "table1_pairwise.csv" in report


@pytest.mark.slow
def test_new_settings_or_new_data_retrain_with_no_manual_step(tmp_path):
    """Changing train.steps, then regenerating the demo with another seed (the same subject IDs),
    and rerunning: each time the model is trained afresh, and nobody deletes anything."""
    work = tmp_path / "work"
    work.mkdir()
    folder = work / "results" / "demo" / "models" / "dualprnet-ssf"

    def run(name: str, changes: dict) -> dict:
        configs = ["--configfile", str(CI)] + ([overlay(tmp_path, name, changes)] if changes
                                               else [])
        snakemake("--cores", "2", f"{folder.relative_to(work)}/model.pt", *configs, cwd=work)
        return json.loads((folder / "train.json").read_text())

    first = run("none.yaml", {})
    assert first["steps"] == 4
    more_steps = run("steps.yaml", {"train": {"steps": 5}})
    assert more_steps["steps"] == 5 and more_steps["resumed_at"] == []  # not from step 2 of 4
    assert json.loads((folder / "stale" / "train.json").read_text())["steps"] == 4
    new_data = run("seed.yaml", {"train": {"steps": 5}, "datasets": {"demo": {"seed": 1}}})
    assert new_data["resumed_at"] == []  # not from step 4 of the run on the old data
    assert new_data["dataset"]["fingerprint"] != more_steps["dataset"]["fingerprint"]
    assert new_data["dataset"]["train"] == more_steps["dataset"]["train"]


def test_learn2reg_folder_is_a_method_by_one_rule_file(tmp_path):
    """workflow/rules/methods/learn2reg_import.smk: one import job per dataset, experiment and
    Learn2Reg method, then the usual scoring job of its run."""
    folder = tmp_path / "l2r"
    folder.mkdir()
    main = yaml.safe_load(CI.read_text())["experiments"]["main"]["methods"]
    entries = {name: {"rule_file": "workflow/rules/methods/learn2reg_import.smk",
                      "label": name.upper(), "options": {"learn2reg_folder": str(folder)}}
               for name in ("entry-a", "entry-b")}
    extra = overlay(tmp_path, "l2r.yaml", {
        "methods": entries, "experiments": {"main": {"methods": [*main, *entries]}}})
    jobs = dry_run_jobs("--configfile", str(CI), extra)
    imports = collections.Counter((rule, w["entry"]) for rule, w in jobs
                                  if rule.startswith("learn2reg_import_"))
    assert imports == {(f"learn2reg_import_{d}", e): 1 for d in ("demo",) for e in entries}
    scored = collections.Counter(rule.removeprefix("evaluate_") for rule, w in jobs
                                 if rule.startswith("evaluate_") and w["run"] in entries)
    assert dict(scored) == {"demo": 2}
