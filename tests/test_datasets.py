"""The dataset registry and the one scale rule: a dataset of one's own is its spec and its
preparer, in a file of REGBENCH_DATASET_PATH, and the workflow, the CLI and the tables take it
from there; a scale a dataset does not allow fails when the workflow is planned."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml
from test_workflow import CI, PAPER, ROOT, overlay, parse_jobs, snakemake

from regbench.cli import main
from regbench.data import protocol, registry
from regbench.data.dataset import Dataset
from regbench.data.scale import BLOCKS, WHOLE_VOXELS, check_scale

TOY = textwrap.dedent('''
    """A toy dataset: two boxes per subject, shifted a voxel from one subject to the next."""
    from pathlib import Path

    from regbench.data.registry import Dataset

    SUBJECTS = ["toy1", "toy2", "toy3", "toy4"]


    def prepare(raw, out, subjects=None, *, scale, splits=None):
        import numpy as np

        from regbench.data.dataset import make_manifest, write_manifest, write_subject
        from regbench.data.resolution import crop_grid

        shape, affine = crop_grid(scale)
        chosen = subjects.split(",") if isinstance(subjects, str) else subjects or SUBJECTS
        for shift, subject in enumerate(chosen):
            labels = np.zeros(shape, dtype=np.int32)
            labels[4 + shift:10 + shift, 4:-4, 4:-4] = 1
            labels[-10 - shift:-4 - shift, 4:-4, 4:-4] = 2
            write_subject(out, subject, (labels > 0).astype(np.float32), labels, affine)
        write_manifest(out, make_manifest(
            name="toy", source=f"toy boxes ({raw})", subjects=chosen,
            splits=splits or TOY.default_splits({}), labels={1: "L box", 2: "R box"},
            regions={"Boxes": [1, 2]}, shape=shape, affine=affine))
        return Path(out)


    TOY = Dataset(name="toy", title="Toy", summary="a toy dataset of boxes",
                  preparer=f"{__name__}:prepare", default_scale=0.125,
                  default_splits=lambda settings: {"train": SUBJECTS[:2], "test": SUBJECTS[2:]})
''')


@pytest.fixture
def toy_path(tmp_path, monkeypatch):
    """A folder of REGBENCH_DATASET_PATH holding the toy dataset's file."""
    folder = tmp_path / "my_datasets"
    folder.mkdir()
    (folder / "toy.py").write_text(TOY)
    monkeypatch.setenv(registry.DATASET_PATH_ENV, str(folder))
    return folder


# --- the registry -------------------------------------------------------------------------------


def test_the_suites_datasets_are_registered_in_table_order():
    found = registry.available_datasets()
    assert list(found) == ["demo", "lpba40", "mindboggle101"]
    assert [d.title for d in found.values()] == ["Demo", "LPBA40", "Mindboggle101"]
    assert [d.prepared for d in found.values()] == [False, True, True]
    with pytest.raises(KeyError, match="'nonesuch' is not a registered dataset"):
        registry.get_dataset("nonesuch")


def test_default_splits_are_the_protocols_and_the_demos_rule():
    assert registry.LPBA40.test_subjects({}) == protocol.LPBA40_SPLITS["test"]
    test = registry.MINDBOGGLE101.test_subjects({})
    assert test == [f"OASIS-TRT-20-{n}" for n in range(1, 21)]
    assert registry.MINDBOGGLE101.test_subjects({"subjects": ["NKI-RS-22-1", "OASIS-TRT-20-3",
                                                             "OASIS-TRT-20-1"]}) \
        == ["OASIS-TRT-20-1", "OASIS-TRT-20-3"]
    assert registry.LPBA40.test_subjects({"splits": {"test": ["S02", "S01"]}}) == ["S02", "S01"]
    # the demo's subjects are a count, not a choice of IDs
    assert registry.DEMO.test_subjects({"subjects": 100}) == ["demo097", "demo098", "demo099",
                                                              "demo100"]


def test_settings_take_the_specs_defaults():
    assert registry.MINDBOGGLE101.settings({}) == {"scale": 1, "raw": "raw/mindboggle101"}
    assert registry.LPBA40.settings({"scale": 0.5, "raw": "x"}) == {"scale": 0.5, "raw": "x"}
    assert registry.DEMO.settings({"subjects": 8}) == {"scale": 0.5, "subjects": 8}


def test_a_dataset_file_registers_its_spec(toy_path):
    toy = registry.get_dataset("toy")
    assert (toy.title, toy.prepared, toy.scale_rule) == ("Toy", True, BLOCKS)
    assert registry.title("toy") == "Toy" and registry.caption_name("toy") == "Toy"
    assert registry.paper_numbers_of("toy") == ("toy", "")
    (toy_path / "toy_copy.py").write_text(TOY)
    with pytest.raises(ValueError, match="toy_copy.py: dataset 'toy' is already registered"):
        registry.available_datasets()


def test_the_schemas_dataset_choices_follow_the_registry():
    """The schema names the datasets that are made by a command of their own (the demo); every
    other name takes the settings of a prepared dataset, and the workflow checks that it is
    registered. No scale default in the schema: each is its dataset's spec's."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    datasets = schema["properties"]["datasets"]
    assert list(datasets["properties"]) == [d.name for d in registry.BUILT_IN if not d.prepared]
    assert datasets["additionalProperties"] == {"$ref": "#/definitions/prepared_dataset"}
    assert all(d.name in " ".join(datasets["description"].split()) for d in registry.BUILT_IN)
    settings = [datasets["properties"]["demo"], schema["definitions"]["prepared_dataset"]]
    assert all("default" not in s["properties"]["scale"] for s in settings)
    assert "raw" in settings[1]["properties"] and "download" in settings[1]["properties"]


# --- the CLI ------------------------------------------------------------------------------------


def test_regbench_prepare_runs_a_registered_preparer(toy_path, tmp_path, capsys):
    out = tmp_path / "data" / "toy"
    assert main(["prepare", "toy", "--raw", str(tmp_path), "--out", str(out)]) == 0
    data = Dataset.load(out)
    assert (data.name, data.shape, data.test) == ("toy", (20, 24, 20), ["toy3", "toy4"])
    assert main(["prepare", "toy", "--raw", str(tmp_path), "--out", str(out), "--scale", "0.25",
                 "--subjects", "toy1,toy2", "--test", "toy1,toy2"]) == 0
    data = Dataset.load(out)
    assert (data.shape, data.subjects, data.test) == ((40, 48, 40), ["toy1", "toy2"],
                                                      ["toy1", "toy2"])


def test_regbench_prepare_refuses_a_scale_before_anything_is_written(toy_path, tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["prepare", "toy", "--raw", str(tmp_path), "--out", str(out),
                 "--scale", "0.33"]) == 2
    assert "scale=0.33: this dataset is downsampled by whole blocks" in capsys.readouterr().err
    assert not out.exists()


def test_regbench_datasets_lists_every_registered_dataset(toy_path, capsys):
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "title", "scale", "(default)"]
    names = [line.split()[0] for line in lines[1:] if not line.startswith(" ")]
    assert names == ["demo", "lpba40", "mindboggle101", "toy"]
    assert "whole voxels (0.5)" in lines[1] and "blocks (0.125)" in lines[-1]
    assert "    layouts: delineation_space, nifti" in lines


def test_regbench_download_says_how_to_get_what_it_cannot_download(tmp_path, capsys):
    assert main(["download", "lpba40", "--out", str(tmp_path / "raw")]) == 2
    assert registry.LPBA40.how_to_get in capsys.readouterr().err


# --- the workflow -------------------------------------------------------------------------------


def test_the_workflow_plans_a_registered_dataset_with_no_other_file_changed(toy_path, tmp_path):
    raw = tmp_path / "toy_raw"
    config = overlay(tmp_path, "toy.yaml", {
        "datasets": {"toy": {"raw": str(raw)}},
        "methods": {"identity": {"per_run": True}, "affine": {}},
        "experiments": {"main": {"methods": ["identity", "affine"]}},
    })
    done = snakemake("-n", "-p", "--configfile", config, "--directory", str(tmp_path))
    jobs = parse_jobs(done.stdout)
    assert ("prepare", {"dataset": "toy"}) in jobs
    assert (f"regbench prepare toy --raw {raw} --out data/toy --scale 0.125 "
            "> logs/toy/prepare.log 2>&1") in " ".join(done.stdout.split())
    pairs = {(w["moving"], w["fixed"]) for rule, w in jobs
             if rule in ("register", "register_figure_pair")}
    assert pairs == {("toy3", "toy4"), ("toy4", "toy3")}
    assert {rule for rule, _ in jobs} >= {"register_run_toy", "evaluate_toy", "aggregate",
                                          "tables_main"}


def test_a_configured_dataset_must_be_registered(tmp_path):
    config = yaml.safe_load(CI.read_text())
    config["datasets"] = {"toy": {"raw": "x"}}
    done = snakemake("-n", "--configfile", overlay(tmp_path, "toy.yaml", config), check=False)
    assert done.returncode != 0
    assert ("config: datasets.toy: not a registered dataset (demo, lpba40, mindboggle101); add a "
            f"file declaring its Dataset to a folder of {registry.DATASET_PATH_ENV}") in done.stdout


@pytest.mark.parametrize("config, dataset, scale, message", [
    (PAPER, "mindboggle101", 0.33,
     "scale=0.33: this dataset is downsampled by whole blocks of the 160x192x160 crop; use one "
     "of 1, 0.5, 0.25, 0.125, 0.0625, 0.03125"),
    (ROOT / "config.yaml", "demo", 0.3,
     "scale=0.3 does not split the 160x192x160 crop into whole voxels (48 x 57.6 x 48); use "
     "e.g. 1, 0.5, 0.25 or 0.125"),
    (ROOT / "config.yaml", "demo", 1.5, "scale=1.5: must be a number in (0, 1]"),
], ids=["mindboggle101-third", "demo-not-whole-voxels", "demo-above-one"])
def test_a_scale_the_dataset_does_not_allow_fails_when_planned(config, dataset, scale, message,
                                                               tmp_path):
    bad = overlay(tmp_path, "bad.yaml", {"datasets": {dataset: {"scale": scale}}})
    done = snakemake("-n", "--configfile", str(config), bad, check=False)
    assert done.returncode != 0
    line = f"config: datasets.{dataset}.scale: {message}"
    assert any(text.startswith(line) for text in done.stdout.splitlines()), done.stdout[-2000:]


# --- the scale rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("rule, scale, allowed", [
    (BLOCKS, 1, True), (BLOCKS, 0.5, True), (BLOCKS, 0.03125, True), (BLOCKS, 0.75, False),
    (BLOCKS, 0.33, False), (WHOLE_VOXELS, 0.75, True), (WHOLE_VOXELS, 0.125, True),
    (WHOLE_VOXELS, 0.0625, False), (WHOLE_VOXELS, 0.3, False), (WHOLE_VOXELS, 0, False),
    (BLOCKS, float("nan"), False), (WHOLE_VOXELS, True, False), (BLOCKS, "0.5", False),
])
def test_check_scale(rule, scale, allowed):
    if allowed:
        assert check_scale(scale, rule) == scale
    else:
        with pytest.raises(ValueError, match="scale="):
            check_scale(scale, rule)


def test_every_dataset_allows_its_default_scale():
    for dataset in registry.BUILT_IN:
        assert dataset.check_scale(dataset.default_scale) == dataset.default_scale


def test_the_readmes_example_registers(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## Adding a dataset\n.*?```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "mine.py").write_text(example)
    monkeypatch.setenv(registry.DATASET_PATH_ENV, str(tmp_path))
    mine = registry.get_dataset("mine")
    assert (mine.title, mine.prepared, mine.test_subjects({})) == ("Mine", True, ["s3", "s4"])
    assert callable(mine.prepare_function())


def test_a_dataset_of_ones_own_needs_a_preparer(tmp_path, monkeypatch):
    (tmp_path / "bare.py").write_text(textwrap.dedent('''
        from regbench.data.registry import Dataset

        BARE = Dataset(name="bare", title="Bare", summary="no preparer",
                       default_splits=lambda settings: {"test": ["a", "b"]})
    '''))
    monkeypatch.setenv(registry.DATASET_PATH_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="bare.py: dataset 'bare' names no preparer"):
        registry.available_datasets()
