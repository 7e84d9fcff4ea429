"""Every headline number of the README has a config in ``configs/headline/`` that trains it: the file
must be the measured cell's resolved config, field for field (run_name aside)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from onebigstate.config import load_config
from onebigstate.training import RunConfig

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = sorted((ROOT / "configs" / "headline").glob("*.yaml"))


def test_there_are_headline_configs_and_the_readme_names_them():
    assert len(HEADLINE) >= 4
    readme = (ROOT / "README.md").read_text()
    for path in HEADLINE:
        assert f"configs/headline/{path.name}" in readme, f"README does not point at {path.name}"


@pytest.mark.parametrize("path", HEADLINE, ids=[p.stem for p in HEADLINE])
def test_headline_config_is_the_measured_cells_config(path):
    cell = re.search(r"kept cell's config.yaml \((\S+/config.yaml)\)", path.read_text())
    assert cell, f"{path.name} must name the cell it reproduces"
    ours = load_config(RunConfig, path).model_dump()
    measured = load_config(RunConfig, ROOT / cell.group(1)).model_dump()
    assert ours.pop("run_name") == path.stem
    measured.pop("run_name")
    assert ours == measured
