"""Every ```python block of the README runs, so the docs cannot drift from the code."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_python_block_runs(i):
    exec(compile(BLOCKS[i], f"README.md block {i}", "exec"), {"__name__": "readme"})


def test_readme_has_python_blocks():
    assert BLOCKS, "README.md should show the layer in use"
