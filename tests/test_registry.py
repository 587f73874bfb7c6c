"""The method registry: built-in methods, user method files on REGBENCH_METHOD_PATH, options."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tomllib
from packaging.requirements import Requirement

from regbench.cli import main
from regbench.io import read_field
from regbench.methods import METHOD_PATH_ENV, Method, available_methods, get_method

USER_METHOD = textwrap.dedent('''
    """A user's method: a constant displacement along one axis."""
    import numpy as np

    from regbench.methods import Method


    class ConstantShift(Method):
        name = "user-shift"
        label = "User shift"
        defaults = {"shift": 0.0, "axis": 0}

        def register(self, moving, fixed, spacing):
            field = np.zeros((3, *fixed.shape), dtype=np.float32)
            field[self.options["axis"]] = self.options["shift"]
            return field
''')

DUPLICATE = textwrap.dedent('''
    from regbench.methods import Method


    class MyAffine(Method):
        name = "affine"
        label = "Not ANTs"
''')


def test_builtin_methods_are_registered():
    methods = available_methods()
    expected = {"affine": ("Affine", False), "syn": ("SyN", False),
                "voxelmorph": ("VoxelMorph", True), "dualprnet": ("Dual-PRNet", True),
                "identity": ("Identity", False),
                "voxelmorph-0.2": ("VoxelMorph (release 0.2)", True),
                "voxelmorph-diff": ("VoxelMorph (diffeomorphic)", True)}
    for name, (label, learned) in expected.items():
        assert (methods[name].label, methods[name].learned) == (label, learned)
    with pytest.raises(KeyError, match="no-such-method"):
        get_method("no-such-method")


def test_user_method_file_is_found_and_usable_from_the_cli(tmp_path, monkeypatch, capsys,
                                                           demo_dataset):
    folder = tmp_path / "my_methods"
    folder.mkdir()
    (folder / "shift.py").write_text(USER_METHOD)
    monkeypatch.setenv(METHOD_PATH_ENV, str(folder))
    cls = get_method("user-shift")
    assert issubclass(cls, Method) and not cls.learned
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert "user-shift" in listing and "User shift" in listing
    assert listing.index("affine") < listing.index("syn") < listing.index("user-shift")
    out = tmp_path / "pair"
    code = main(["register", "user-shift", "--data", str(demo_dataset.root), "--moving",
                 "demo05", "--fixed", "demo06", "--out", str(out), "--option", "shift=1.5",
                 "--option", "axis=2"])
    assert code == 0
    field, _ = read_field(out / "field.nii.gz")
    assert np.all(field[2] == 1.5) and not field[:2].any()
    runtime = json.loads((out / "runtime.json").read_text())
    assert runtime["method"] == "user-shift" and runtime["options"] == {"shift": 1.5, "axis": 2}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "user-shift" and metrics["options"]["shift"] == 1.5


def test_duplicate_method_name_raises(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(DUPLICATE)
    monkeypatch.setenv(METHOD_PATH_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="'affine'.*already taken"):
        available_methods()


def test_unknown_option_raises(tmp_path, demo_dataset, capsys):
    with pytest.raises(ValueError, match="no option"):
        get_method("syn")(not_an_option=1)
    with pytest.raises(SystemExit) as exit_info:
        main(["register", "affine", "--data", str(demo_dataset.root), "--moving", "demo05",
              "--fixed", "demo06", "--out", str(tmp_path), "--option", "not_an_option=1"])
    assert exit_info.value.code == 2
    assert "not_an_option" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["register", "affine", "--data", str(demo_dataset.root), "--moving", "demo05",
              "--fixed", "demo06", "--out", str(tmp_path), "--option", "threads"])
    assert "KEY=VALUE" in capsys.readouterr().err


def test_optional_packages_are_those_of_their_extra():
    """Issue 22: FireANTs and elastix without their packages ended in ModuleNotFoundError. Each
    method names the distributions it imports and the extra of pyproject.toml that has them."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = {extra: {Requirement(spec).name.lower() for spec in specs}
              for extra, specs in pyproject["project"]["optional-dependencies"].items()}
    requires = {name: cls.requires for name, cls in available_methods().items() if cls.requires}
    assert set(requires) >= {"fireants", "elastix"}
    for name, packages in requires.items():
        for package, extra in packages.items():
            assert package in extras[extra], (name, package, extra)
