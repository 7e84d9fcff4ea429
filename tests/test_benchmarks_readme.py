"""Every script of benchmarks/ is in its README's table, and every table row is a script there."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_readme_lists_every_script():
    folder = ROOT / "benchmarks"
    scripts = {p.name for p in folder.iterdir() if p.suffix in (".py", ".sh")}
    listed = set(re.findall(r"^\| `([\w.]+)` \|", (folder / "README.md").read_text(), flags=re.M))
    assert listed == scripts
