"""One source for every training setting: the config, the command line and the workflow's schema
agree with :data:`regbench.training.config.SETTINGS`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from regbench.cli import build_parser
from regbench.training.config import SETTINGS, TrainConfig, command_line, setting_type

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_ONLY_DEFAULTS = {
    "device": "the workflow chooses cpu or cuda, to ask the scheduler for GPUs; the command line "
              "takes auto",
    "threads": "the workflow's threads are the job's (Snakemake's threads); the command line's "
               "default is PyTorch's",
}


def schema() -> dict:
    return yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


def test_the_config_takes_every_setting_and_its_default():
    fields = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    assert fields == {name: setting.default for name, setting in SETTINGS.items()}


def test_the_schema_repeats_the_defaults_and_ranges():
    document = schema()
    ranges = document["definitions"]["train_settings"]["properties"]
    defaults = {key: value["default"]
                for key, value in document["properties"]["train"]["properties"].items()}
    shared = sorted(set(ranges) & set(SETTINGS))
    assert {"steps", "lr", "validate_every", "amp", "seed", "select", "lr_schedule"} <= set(shared)
    for name in shared:
        setting = SETTINGS[name]
        if name not in WORKFLOW_ONLY_DEFAULTS:
            assert defaults[name] == setting.default, name
        assert ranges[name].get("minimum") == setting.minimum, name
        assert ("exclusiveMinimum" in ranges[name]) == setting.positive, name
        assert ranges[name].get("enum") == (list(setting.choices) if setting.choices else
                                            ranges[name].get("enum")), name


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.flag is not None])
def test_each_flag_sets_its_setting(name):
    parser = build_parser()
    kind = setting_type(name)
    value = {int: 7, float: 0.5, str: "cpu", bool: not SETTINGS[name].default}[kind]
    if SETTINGS[name].choices:
        value = SETTINGS[name].choices[-1]
    argv = ["train", "dualprnet", "--data", "d", "--out", "o"]
    argv += " ".join(command_line({name: value})).split()
    args = parser.parse_args(argv)
    assert getattr(args, name) == value
    assert parser.parse_args(argv[:6]).__dict__.get(name) is None  # unset: the config's default


def test_validate_every_defaults_to_the_workflows_value():
    """It disagreed: 0 in TrainConfig, 100 in the schema. The workflow draws learning curves from
    every model's validation.csv, so a model trained by hand validates by default too."""
    assert TrainConfig().validate_every == 100 > 0
