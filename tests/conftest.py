"""Shared fixtures: a tiny synthetic demo dataset built once per test session."""

from __future__ import annotations

import pytest

from regbench.data.dataset import Dataset


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Six-subject demo at scale 0.25 (40x48x40 voxels of 4 mm); train demo01-04, test demo05-06."""
    from regbench.data.demo import make_demo

    root = make_demo(tmp_path_factory.mktemp("demo") / "demo", subjects=6, scale=0.25, seed=0)
    return Dataset.load(root)
