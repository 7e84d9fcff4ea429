"""The core installs and runs alone; the lab sits beside it (docs/architecture.md).

The core is the OBS layer, its op and backends, the state stores, the LM stack and the
distributed state: the packages in ``CORE``. It may import the standard library, its own
modules and the core dependencies of ``pyproject.toml`` (torch, numpy, pydantic, pyyaml), plus the
optional accelerators named in ``OPTIONAL`` (imported only when that feature is used). Three
checks, from cheap to real:

- the import graph, read from the source: no core module imports a lab module or a lab
  dependency, and neither the core nor the whole package has an import cycle;
- a process where every lab dependency fails to import trains an OBS LM (dense and sparse store,
  sequential and chunked), and ``obs`` names the missing extra;
- (slow) a fresh venv with ``pip install .`` (no extras) holds only the core's dependencies and
  runs the same script.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "onebigstate"
CORE = ("onebigstate", "onebigstate.config", "onebigstate.files", "onebigstate.model", "onebigstate.kernels",
        "onebigstate.nets", "onebigstate.distributed")
CORE_DEPS = {"torch", "numpy", "pydantic", "yaml"}
# core modules that import an optional accelerator, only when the feature is used
OPTIONAL = {"onebigstate.kernels.triton_": {"triton"}, "onebigstate.model.discretiser": {"vector_quantize_pytorch"}}
# lab modules a core module imports inside a function, only when that function is called
LAZY_LAB = {"onebigstate": {"onebigstate.training.loading"}}
# the import names of the lab's dependencies (pyproject's [lab] extra), blocked in the runtime check
LAB_IMPORTS = ["scipy", "tqdm", "rich", "tensorboard", "safetensors", "matplotlib", "sklearn", "mambapy",
               "vector_quantize_pytorch", "espeakng_loader", "av", "minigrid", "gymnasium", "titans_pytorch",
               "triton", "ninja"]


def _is_core(module: str) -> bool:
    return module == "onebigstate" or any(module == c or module.startswith(c + ".") for c in CORE[1:])


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: set[str] = frozenset()) -> set[str]:
    """Every module ``name`` imports, at any depth of the file (function-level imports count);
    ``modules``: the package's modules, to tell ``from pkg import submodule`` from a name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names} & modules
            # `from pkg import submodule` depends on the submodule; `from mod import name` on mod
            found.update(subs if len(subs) == len(node.names) else subs | {mod})
    return found


def _graph(core_only: bool) -> dict[str, set[str]]:
    mods = _modules()
    return {name: {m for m in _imports(name, path, set(mods)) if m in mods and m != name}
            for name, path in mods.items() if _is_core(name) or not core_only}


def test_core_modules_import_only_the_core_and_its_dependencies():
    bad = []
    for name, path in _modules().items():
        if not _is_core(name):
            continue
        allowed = CORE_DEPS | next((deps for prefix, deps in OPTIONAL.items() if name.startswith(prefix)), set())
        for mod in _imports(name, path):
            top = mod.split(".")[0]
            if top == "onebigstate":
                if not _is_core(mod) and mod not in LAZY_LAB.get(name, ()):
                    bad.append(f"{name} imports the lab module {mod}")
            elif top and top not in sys.stdlib_module_names and top != "__future__" and top not in allowed:
                bad.append(f"{name} imports {top}, not a core dependency")
    assert not bad, "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("core_only", [True, False], ids=["core", "whole package"])
def test_no_import_cycle(core_only):
    graph = _graph(core_only)
    # Tarjan's strongly connected components; a component of more than one module is a cycle
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_lab_extra_lists_the_dependencies_blocked_here():
    """LAB_IMPORTS must keep up with pyproject: every [lab] requirement has its import name here."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {d.split(">")[0].split("=")[0].split("[")[0] for d in meta["dependencies"]} == {
        "torch", "numpy", "pydantic", "pyyaml"}
    import_name = {"scikit-learn": "sklearn", "espeakng-loader": "espeakng_loader", "titans-pytorch": "titans_pytorch",
                   "vector-quantize-pytorch": "vector_quantize_pytorch"}
    extras = meta["optional-dependencies"]
    lab = [d for d in extras["lab"] if not d.startswith("onebigstate[")] + extras["compiled"] + extras["discretiser"]
    names = {import_name.get(n, n) for n in (d.split(">")[0].split("=")[0] for d in lab)}
    assert names <= set(LAB_IMPORTS), sorted(names - set(LAB_IMPORTS))


# Trains an OBS LM with every core path a user reaches first; prints the onebigstate modules it
# loaded, then what `obs` says without the lab.
CORE_SCRIPT = r'''
import sys
import torch
from onebigstate import OBSConfig, OBSLayer, OBSLM
from onebigstate.kernels import obs_scan  # noqa: F401
torch.manual_seed(0)
for store in ("dense", "sparse"):
    for mode in ("sequential", "chunked"):
        cfg = OBSConfig(d_model=16, n_nodes=48, d_key=8, d_value=8, d_hidden=8, d_write=8, k_min=2, k_max=4,
                        m_active=4, backend="reversible", state_backend=store, scan_mode=mode, max_chunk=4)
        lm = OBSLM(vocab_size=11, n_layers=2, obs=cfg)
        opt = torch.optim.AdamW(lm.parameters(), lr=1e-3)
        tokens = torch.randint(0, 11, (2, 9))
        logits, states = lm(tokens)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        loss.backward()
        opt.step()
        logits2, _ = lm(tokens, states)                      # carried state
        assert torch.isfinite(logits2).all()
layer = OBSLayer(OBSConfig(d_model=8, n_nodes=32, k_min=2, k_max=4, m_active=4, backend="auto"))
y, s = layer(torch.randn(1, 5, 8))
print("core-modules", ",".join(sorted(m for m in sys.modules if m.startswith("onebigstate"))))
from onebigstate.cli.main import main
print("obs-exit", main(["--help"]))
'''


def _site_without(blocked: list[str], into: Path) -> Path:
    """This interpreter's site-packages as links, less the blocked distributions: a process on it
    (``python -S``) finds them missing exactly as if they were never installed."""
    site = Path(sysconfig.get_paths()["purelib"])
    into.mkdir()
    drop = {b.lower().replace("-", "_") for b in blocked}
    for entry in site.iterdir():
        stem = entry.name.split("-")[0].split(".")[0].lower().replace("-", "_")
        if stem in drop or entry.suffix == ".pth" or stem == "__editable__":
            continue
        (into / entry.name).symlink_to(entry)
    return into


def _run_core_script(python: list[str], cwd: Path, env: dict | None = None):
    proc = subprocess.run(python + ["-c", CORE_SCRIPT], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = next(line for line in proc.stdout.splitlines() if line.startswith("core-modules")).split()[1]
    lab_loaded = [m for m in loaded.split(",") if not _is_core(m) and m != "onebigstate.cli"
                  and not m.startswith("onebigstate.cli.main")]
    assert not lab_loaded, f"the core loaded lab modules: {lab_loaded}"
    return proc


def test_the_core_trains_with_every_lab_dependency_missing(tmp_path):
    site = _site_without(LAB_IMPORTS + ["scikit_learn", "espeakng_loader", "titans_pytorch", "vector_quantize_pytorch"],
                         tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    env.pop("TRITON_INTERPRET", None)
    proc = _run_core_script([sys.executable, "-S"], tmp_path, env)
    assert "obs-exit 2" in proc.stdout
    assert "pip install 'onebigstate[lab]'" in proc.stderr


@pytest.mark.slow
def test_a_fresh_venv_with_the_core_alone(tmp_path):
    """``pip install .`` into an empty venv: only the core's dependencies arrive, and it runs."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["torch==2.13.0"], check=True, timeout=900)          # the CPU wheel, first
    subprocess.run(pip + [str(ROOT)], check=True, timeout=900, cwd=tmp_path)
    listed = subprocess.run([py, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    names = {line.split("==")[0].replace("_", "-") for line in listed.splitlines()}
    lab = {"scipy", "tqdm", "rich", "tensorboard", "safetensors", "matplotlib", "scikit-learn", "mambapy",
           "vector-quantize-pytorch", "espeakng-loader", "av", "minigrid", "titans-pytorch", "triton", "ninja"}
    assert not names & lab, sorted(names & lab)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = _run_core_script([py], tmp_path, env)
    assert "obs-exit 2" in proc.stdout
