"""``obs memory MODEL...``: the memory function MF(tau) of models, plotted, with MC printed."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


from onebigstate.config import ConfigError, load_yaml

HELP = """Drive each MODEL with i.i.d. uniform scalar input (through a fixed random input projection)
and measure how well the input tau steps back is read linearly from its state: MF(tau), and
MC = sum over tau. Linear SSMs (the S4D inits, s4_dense) use the closed form unless
--method simulation; the others are simulated. MODEL: s4d (all five inits), s4d_inv, s4d_lin,
random, linear_mag, two_level, s4_dense, lstm, mamba, deltanet, obs. Writes memory.png and
memory.json to --out and prints MC per model."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("memory", help="memory function MF(tau) and capacity MC of models", description=HELP)
    p.add_argument("models", nargs="+", metavar="MODEL", help="models to compare (one curve each)")
    p.add_argument("--config", metavar="FILE", help="YAML mapping of the models' own config keys "
                   "(applied to every MODEL; a top-level key named after a model applies to that model only)")
    p.add_argument("--n-state", type=int, default=32, help="read-out state dimension per model (default 32)")
    p.add_argument("--tau-max", type=int, default=200, help="largest delay (default 200)")
    p.add_argument("--method", choices=["auto", "closed_form", "simulation"], default="auto")
    p.add_argument("--n-fit", type=int, default=8000, help="simulated steps to fit the read-out")
    p.add_argument("--n-test", type=int, default=8000, help="held-out simulated steps to score it")
    p.add_argument("--seed", type=int, default=0, help="seed of the model parameters and the input")
    p.add_argument("--log-tau", action="store_true", help="log-scaled delay axis")
    p.add_argument("--out", metavar="DIR", default="memory_out", help="output folder (default memory_out)")
    p.set_defaults(func=run)


def _config_for(name: str, tree: dict) -> dict:
    from onebigstate.analysis.memory_models import MEMORY_MODELS
    shared = {k: v for k, v in tree.items() if k not in MEMORY_MODELS}
    own = tree.get(name, {}) or {}
    if not isinstance(own, dict):
        raise ConfigError(f"config key '{name}' must hold a mapping, got {type(own).__name__}")
    return {**shared, **own}


def run(args: argparse.Namespace) -> int:
    from onebigstate.analysis.memory_function import memory_function, plot_memory_functions
    from onebigstate.analysis.memory_models import build_memory_model, full_state_size
    from onebigstate.baselines.s4d import INITS

    tree: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        tree = load_yaml(path.read_text(), str(path)) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
    names = [n for m in args.models for n in (INITS if m == "s4d" else (m,))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, rows = [], []
    for name in names:
        model, desc = build_memory_model(name, args.n_state, _config_for(name, tree), seed=args.seed)
        res = memory_function(model, tau_max=args.tau_max, method=args.method, n_fit=args.n_fit,
                              n_test=args.n_test, seed=args.seed, label=name)
        results.append(res)
        rows.append({"model": name, "description": desc, "mc": res.mc, "read_out_dim": res.state_dim,
                     "full_state_floats": full_state_size(model), "method": res.method, "cond": res.cond,
                     "mf": res.mf.tolist()})
        cond = "" if res.cond is None else f"  cond(G)={res.cond:.2e}"
        print(f"{name:12s} MC = {res.mc:7.3f} / {res.state_dim:4d}  ({res.method}; {desc}){cond}")
    plot_memory_functions(results, out / "memory.png", title=f"memory function, n_state={args.n_state}",
                          log_tau=args.log_tau)
    (out / "memory.json").write_text(json.dumps({"n_state": args.n_state, "tau_max": args.tau_max,
                                                 "seed": args.seed, "models": rows}, indent=1) + "\n")
    print(f"wrote {out / 'memory.png'} and {out / 'memory.json'}")
    return 0
