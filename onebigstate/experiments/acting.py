"""Action and outcome: OBS against baselines in the grid world, and the circuit tracker at work.

    python -m onebigstate.experiments.acting [--steps 400] [--layouts 30] [--out docs/results]
        [--obs-set model.mixer.active_persist=1 --obs-set model.mlp_ratio=4]   # another OBS

1. **Next observation.** OBS, LSTM and Transformer are trained with ``obs train``'s trainer on
   ``configs/gridworld.yaml`` (same streams, same budget; run folders under ``runs/acting/``
   are reused when they hold a finished run of the same length) and evaluated on held-out
   layouts: accuracy of what is in front of the agent after each action, split into novel
   actions, actions repeated at a place, and the end-of-stream queries about places where
   the action was taken once. The majority class per split is the floor.
2. **Replay.** In a new layout the agent walks a route once; the trained OBS model runs over
   the stream and the tracker records the circuits of the observation steps (the places).
   ``replay(first place, L)`` is scored against the true places walked (a replayed circuit
   counts as right when the place it last stood for is the true one).
3. **Plan.** The agent explores a new layout once; the tracker remembers (place circuit,
   action) -> next place circuit. For random (start, goal) pairs among visited places,
   ``plan`` gives actions that are executed in the true layout. Against: random actions and a
   greedy agent that knows its position and the goal's but has no memory (no tracker), both
   with 3x the shortest path's number of actions.
4. **Consolidation.** A route is walked once in layout A, then 48 steps in layout B
   interfere, then the model is asked what each once-taken action of the route does. Before
   the interference the tracker replays the route's circuits and ``consolidate`` writes them
   back into the state (chain writes of a given strength); a shuffled replay with the same
   number of writes is the control.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from onebigstate.config import load_config
from onebigstate.tasks.gridworld import (FORWARD, IGNORE, N_ACTIONS, NOVEL, QUERY, SEEN, DIR_VEC, GridConfig,
                                         Layout, action_features, make_layout, obs_features, random_walk)
from onebigstate.tasks.gridworld_task import continuous_flags
from onebigstate.tracker import CircuitTracker
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.config import RunConfig
from onebigstate.training.trainer import CONFIG_FILE, RESULTS_FILE, model_from_checkpoint, train

CONFIG = Path("configs/gridworld.yaml")
# run name -> overrides of configs/gridworld.yaml (same streams, same budget)
MODELS = {
    "obs": [],
    "obs + fsq discretiser": ["model.discretiser={kind: fsq, levels: [8, 5, 5]}"],
    "lstm": ["model.name=lstm", "model.mixer={}"],
    "transformer": ["model.name=transformer", "model.mixer={}"],
}
RUN_DIRS = {"obs": "obs", "obs + fsq discretiser": "obs_fsq", "lstm": "lstm", "transformer": "transformer"}
OBS_MODELS = ("obs", "obs + fsq discretiser")
# seeds of the tracker experiments' layouts: far from the task's train and test ranges
LAYOUT_SEED0 = 5_000_000


def train_or_reuse(name: str, steps: int, runs: Path, obs_set: list[str] = ()) -> tuple[dict, bool]:
    """(results, reused): the finished run of ``name`` in ``runs`` when it was trained with this
    config, else a new one (``obs_set``: overrides of the OBS models, e.g. ``model.mixer.active_persist=1``)."""
    run_dir = runs / RUN_DIRS[name]
    overrides = MODELS[name] + (list(obs_set) if name in OBS_MODELS else []) + [f"train.steps={steps}",
                                                                                "train.progress=false"]
    cfg = load_config(RunConfig, str(CONFIG), overrides)
    res_path = run_dir / RESULTS_FILE
    if res_path.exists() and (run_dir / CONFIG_FILE).read_text() == cfg.resolved().to_yaml():
        print(f"reusing {run_dir} ({steps} steps)")
        return json.loads(res_path.read_text()), True
    if run_dir.exists():
        import shutil
        shutil.rmtree(run_dir)
    return train(cfg, run_dir), False


def majority_floor(task_cfg) -> dict[str, float]:
    from onebigstate.tasks.registry import build_task
    task = build_task(task_cfg)
    _, y = task.test_set()
    y = y[y[..., 0] != IGNORE]
    out = {}
    for name, m in [("accuracy", torch.ones(len(y), dtype=torch.bool)), ("acc_novel", y[:, 1] == NOVEL),
                    ("acc_seen", y[:, 1] == SEEN), ("acc_query", y[:, 1] == QUERY)]:
        counts = torch.bincount(y[m, 0], minlength=4).double()
        out[name] = float(counts.max() / counts.sum())
    return out


@torch.no_grad()
def discretiser_usage(run_dir: Path) -> dict:
    """Code usage of a model's discretiser over its held-out set."""
    from onebigstate.training.trainer import evaluate
    task, model = model_from_checkpoint(read_checkpoint(run_dir))
    model.discretiser.reset_usage()
    evaluate(model, task, 64)
    u = model.discretiser.usage()
    return {k: v for k, v in u.items() if k != "counts"}


# ---- running the OBS model on a hand-built stream --------------------------------------------
def stream(layout: Layout, states, actions, query: bool = False) -> np.ndarray:
    """Interleaved features [2 len(actions) + 1, F] of a walk."""
    feats = []
    for s, a in zip(states[:-1], actions):
        feats += [obs_features(layout, s, query), action_features(layout.size, a, query)]
    feats.append(obs_features(layout, states[-1], query))
    return np.stack(feats)


@torch.no_grad()
def run_obs(model, feats: np.ndarray, states=None):
    """(hidden [1, T, D], states, OBSStats) of the model on one stream."""
    x = torch.from_numpy(feats).unsqueeze(0).to(model.head.weight.dtype)
    h, states = model.hidden(x, states, continuous_flags(x))
    return h, states, model.mixers[0].last_stats


# ---- 2. replay -----------------------------------------------------------------------------
def replay_accuracy(model, cfg: GridConfig, lengths, n_layouts: int, variants) -> dict:
    out = {}
    for name, order, overlap, order_model in variants:
        per_len = {}
        for L in lengths:
            accs, full, shared = [], [], []
            for i in range(n_layouts):
                layout = make_layout(cfg.env_id, LAYOUT_SEED0 + i)
                rng = np.random.default_rng(1000 + i)
                states, acts = random_walk(layout, L, rng, cfg.p_forward)
                _, _, st = run_obs(model, stream(layout, states, acts))
                tr = CircuitTracker(order=order, min_overlap=overlap)
                ids = tr.observe_stats(st, 0, steps=range(0, 2 * L + 1, 2), labels=states)
                if order_model == "gru":
                    tr.fit_gru()
                rep = tr.replay(ids[0], L, model=order_model)
                got = [tr.labels[c] for c in rep] + [None] * (L - len(rep))
                hits = [g == s for g, s in zip(got, states[1:])]
                accs.append(float(np.mean(hits)))
                full.append(float(all(hits)))
                stood_for: dict = {}
                for c, s in zip(ids, states):
                    stood_for.setdefault(c, set()).add(s)
                shared.append(float(np.mean([len(v) > 1 for v in stood_for.values()])))
            per_len[L] = {"accuracy": float(np.mean(accs)), "whole_route": float(np.mean(full)),
                          "circuits_shared_by_places": float(np.mean(shared))}
        out[name] = per_len
    return out


# ---- 3. plan -------------------------------------------------------------------------------
def greedy_action(layout: Layout, s, goal, rng) -> int:
    """Reactive, memoryless: face the goal's direction of travel; forward when free, else turn."""
    x, y, d = s
    gx, gy, gd = goal
    if (x, y) == (gx, gy):
        return 1 if (gd - d) % 4 in (1, 2) else 0
    wanted = [k for k in range(4) if np.sign(gx - x) == DIR_VEC[k, 0] != 0 or np.sign(gy - y) == DIR_VEC[k, 1] != 0]
    if d in wanted and layout.step(s, FORWARD) != s:
        return FORWARD
    if d in wanted or rng.random() < 0.3:
        return int(rng.choice([0, 1, FORWARD]))
    target = wanted[0]
    return 1 if (target - d) % 4 in (1, 2) else 0


def run_policy(layout: Layout, start, goal, budget: int, policy, rng) -> bool:
    s = start
    for _ in range(budget):
        if s == goal:
            return True
        s = layout.step(s, policy(s, rng))
    return s == goal


def plan_success(model, cfg: GridConfig, n_layouts: int, explore: int, pairs: int) -> dict:
    rows = {"tracker plan": [], "plan found": [], "tracker plan, exact node sets": [],
            "plan found, exact node sets": [], "tracker on true places": [], "random actions": [],
            "greedy, no tracker": []}
    lengths = []
    for i in range(n_layouts):
        layout = make_layout(cfg.env_id, LAYOUT_SEED0 + 500 + i)
        rng = np.random.default_rng(2000 + i)
        states, acts = random_walk(layout, explore, rng, cfg.p_forward)
        _, _, st = run_obs(model, stream(layout, states, acts))
        tr = CircuitTracker(order=1, min_overlap=0.5, actions=range(N_ACTIONS))
        places = tr.circuits_of(st, 0, steps=range(0, 2 * explore + 1, 2))
        ids = tr.observe_actions(places, acts)
        exact = CircuitTracker(order=1, min_overlap=1.0, actions=range(N_ACTIONS))
        exact_ids = exact.observe_actions(places, acts)
        first_exact = {}
        for s, c in zip(states, exact_ids):
            first_exact.setdefault(s, c)
        first_id = {}
        for s, c in zip(states, ids):
            first_id.setdefault(s, c)
        # the same tracker over the true places (x, y, dir) instead of OBS circuits: the
        # planning method alone, without errors in identifying places from circuits
        oracle = CircuitTracker(order=1, actions=range(N_ACTIONS))
        place_of = {s: j for j, s in enumerate(dict.fromkeys(states))}
        oracle.observe_actions([[place_of[s]] for s in states], acts)
        visited = list(first_id)
        for _ in range(pairs):
            a, b = rng.choice(len(visited), size=2, replace=False)
            start, goal = visited[a], visited[b]
            best = layout.shortest_path(start, goal)
            plan = tr.plan(first_id[start], first_id[goal])
            rows["plan found"].append(plan is not None)
            ok = False
            if plan is not None:
                s = start
                for act in plan.actions:
                    s = layout.step(s, act)
                ok = s == goal
                lengths.append((len(plan), best))
            rows["tracker plan"].append(ok)
            eplan = exact.plan(first_exact[start], first_exact[goal])
            rows["plan found, exact node sets"].append(eplan is not None)
            s = start
            for act in (eplan.actions if eplan is not None else []):
                s = layout.step(s, act)
            rows["tracker plan, exact node sets"].append(eplan is not None and s == goal)
            oplan = oracle.plan(oracle.lookup([place_of[start]]), oracle.lookup([place_of[goal]]))
            s = start
            for act in (oplan.actions if oplan is not None else []):
                s = layout.step(s, act)
            rows["tracker on true places"].append(oplan is not None and s == goal)
            budget = 3 * best
            p_turn = (1 - cfg.p_forward) / 2
            rows["random actions"].append(run_policy(
                layout, start, goal, budget, lambda s, r: int(r.choice(3, p=[p_turn, p_turn, cfg.p_forward])), rng))
            rows["greedy, no tracker"].append(run_policy(
                layout, start, goal, budget, lambda s, r: greedy_action(layout, s, goal, r), rng))
    out = {k: float(np.mean(v)) for k, v in rows.items()}
    out["n_pairs"] = len(rows["tracker plan"])
    if lengths:
        out["plan_len_over_shortest"] = float(np.mean([p / max(b, 1) for p, b in lengths]))
    return out


# ---- 4. consolidation ----------------------------------------------------------------------
def consolidation_effect(model, cfg: GridConfig, n_layouts: int, route: int, interfere: int,
                         strengths) -> dict:
    results = {}
    modes = ("replay", "replay, places only", "shuffled")
    for mode, strength in [("none", 0.0)] + [(m, s) for s in strengths for m in modes]:
        correct, total = 0, 0
        for i in range(n_layouts):
            rng = np.random.default_rng(3000 + i)
            la = make_layout(cfg.env_id, LAYOUT_SEED0 + 1000 + i)
            lb = make_layout(cfg.env_id, LAYOUT_SEED0 + 2000 + i)
            sa, aa = random_walk(la, route, rng, cfg.p_forward)
            sb, ab = random_walk(lb, interfere, rng, cfg.p_forward)
            counts: dict = {}
            for s, a in zip(sa[:-1], aa):
                counts[(s, a)] = counts.get((s, a), 0) + 1
            once = [k for k, n in counts.items() if n == 1]
            if not once:
                continue
            _, states, st = run_obs(model, stream(la, sa, aa))
            if mode != "none":
                # the GRU order model replays a once-walked route best (part 2)
                tr = CircuitTracker(order=3)
                steps = range(0, 2 * route + 1, 2) if mode == "replay, places only" else None
                ids = tr.observe_stats(st, 0, steps=steps)
                tr.fit_gru()
                seq = [ids[0]] + tr.replay(ids[0], len(ids) - 1, model="gru")
                if mode == "shuffled":
                    seq = [seq[j] for j in np.random.default_rng(i).permutation(len(seq))]
                # strength in units of the spread of what the route itself wrote
                st0 = states[0]
                scale = float(st0.S[0][st0.touched[0]].std())
                tr.consolidate(st0, seq, strength=strength * scale)
            q = []
            for s, a in once:
                q += [obs_features(la, s, True), action_features(la.size, a, True)]
            feats = np.concatenate([stream(lb, sb, ab), np.stack(q)])
            h, _, _ = run_obs(model, feats, states)
            logits = model.head(h[0, -2 * len(once) + 1::2])
            truth = torch.tensor([la.front(*la.step(s, a)) for s, a in once])
            correct += int((logits.argmax(-1) == truth).sum())
            total += len(once)
        results[f"{mode} {strength:g}" if mode != "none" else "none"] = correct / max(total, 1)
    return results


# ---- the page ------------------------------------------------------------------------------
def fmt(v: float) -> str:
    return f"{v:.3f}"


def write_page(out: Path, res: dict, command: str) -> Path:
    # consolidation by the number of actions in between (a JSON of before 2026-12-05: one number)
    by_len = ({str(res["consol_interfere"]): res["consolidation"]} if isinstance(res["consol_interfere"], int)
              else res["consolidation"])
    lines = ["# Action and outcome: OBS, baselines and the circuit tracker in a grid world", "",
             f"Made by `{command}` ({res['wall_s']:.0f} s on {res['threads']} CPU thread(s), commit {res['commit']}"
             + (f"; the trained models reused from an earlier run of it, {res['train_s']:.0f} s of training"
                if res.get("train_s") is not None and res.get("reused") else "") + ").",
             ("Small budgets throughout: read the numbers as directions on one seed, not laws." if res["steps"] < 1000
              else "One seed: read the numbers as directions, not laws."), "",
             f"World: `{res['grid']['env_id']}` (MiniGrid, offline, a new layout per stream), random exploring "
             f"walks (forward with p={res['grid']['p_forward']}), streams of {res['grid']['explore_steps']} "
             f"actions then {res['grid']['n_queries']} queries. Observation = position, direction and what is in "
             "front; the label of an action is what is in front after it.", "",
             "## 1. Next observation (held-out layouts)", "",
             f"Each model trained {res['steps']} steps of batch 32 (`configs/gridworld.yaml`, `model.name=...`)"
             + (f"; the OBS models with {', '.join(f'`{o}`' for o in res['obs_set'])}, and parts 2-4 use that OBS"
                if res.get("obs_set") else "") + ".", "",
             "| model | params | all actions | novel action at a place | action repeated at a place | query: action taken once there |",
             "|---|---|---|---|---|---|"]
    for name, r in res["next_obs"].items():
        m = r["metrics"]
        lines.append(f"| {name} | {r['n_params']:,} | {fmt(m['accuracy'])} | {fmt(m['acc_novel'])} | "
                     f"{fmt(m['acc_seen'])} | {fmt(m['acc_query'])} |")
    cu = res["code_usage"]
    f = res["majority"]
    lines += [f"| majority class | - | {fmt(f['accuracy'])} | {fmt(f['acc_novel'])} | {fmt(f['acc_seen'])} | "
              f"{fmt(f['acc_query'])} |", "",
              f"The discretiser's codes over the held-out set (every position, {int(cu['total']):,} in all): "
              f"{cu['used_codes']} of {cu['n_codes']} codes used, perplexity {cu['perplexity']:.1f}; the head "
              "decides from the code alone.", "",
              "## 2. Replay of a route walked once, against its length", "",
              f"{res['n_layouts']} new layouts per length; the trained OBS model's circuits of the observation steps "
              "are recorded by the tracker, which replays from the first place. Accuracy = fraction of replayed "
              "places that are the true ones; whole route = routes replayed without a single error.", ""]
    rep = res["replay"]
    lengths = list(next(iter(rep.values())).keys())
    lines += ["| tracker | " + " | ".join(f"L={L}" for L in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for name, per in rep.items():
        lines.append(f"| {name} | " + " | ".join(f"{fmt(per[L]['accuracy'])} ({fmt(per[L]['whole_route'])})"
                                                  for L in lengths) + " |")
    p = res["plan"]
    ex = rep[next(k for k in rep if "exact" in k)]
    ov = rep[next(k for k in rep if "overlap" in k)]
    lines += ["", "Cells: accuracy (whole-route rate). Circuits that stood for more than one place on the route: "
              + ", ".join(f"L={L}: {fmt(ex[L]['circuits_shared_by_places'])} exact / "
                          f"{fmt(ov[L]['circuits_shared_by_places'])} overlap" for L in lengths) + ".", "",
              "## 3. Planning in layouts explored once", "",
              f"{res['n_layouts']} new layouts, each explored once by a {res['plan_explore']}-action random walk; "
              f"{p['n_pairs']} (start, goal) pairs of visited places in all. Random and greedy get 3x the shortest "
              "path's number of actions; the tracker's plan is executed as given.", "",
              "| agent | success rate |", "|---|---|",
              f"| tracker plan over OBS circuits, node sets matched at overlap >= 0.5 (found a plan: "
              f"{fmt(p['plan found'])}) | {fmt(p['tracker plan'])} |",
              f"| tracker plan over OBS circuits, exact node sets (found a plan: "
              f"{fmt(p['plan found, exact node sets'])}) | {fmt(p['tracker plan, exact node sets'])} |",
              f"| the same planner over true places (x, y, direction) instead of circuits | "
              f"{fmt(p['tracker on true places'])} |",
              f"| random actions | {fmt(p['random actions'])} |",
              f"| greedy towards the goal, no memory (no tracker) | {fmt(p['greedy, no tracker'])} |", "",
              "Plans found over overlap-matched circuits were "
              + (f"{p['plan_len_over_shortest']:.2f}x the true shortest path on average "
                 + ("(below 1: merged circuits made shortcuts that do not exist)."
                    if p["plan_len_over_shortest"] < 1 else "(above 1: detours through the places walked).")
                 if "plan_len_over_shortest" in p else "never found."),
              "",
              "## 4. Consolidation and later recall", "",
              f"A {res['consol_route']}-action route in layout A, then {' or '.join(map(str, by_len))} actions in "
              "layout B, "
              "then queries about every action taken once on the route (OBS's accuracy at predicting what is in "
              "front after it). `replay s`: the tracker (GRU order model) replays the circuits of every step of the "
              "route from its first one and `consolidate` writes them back right after the route, with strength s "
              "times the std of the entries the route wrote; `replay, places only s`: the same over the "
              "observation steps' circuits alone (the action circuits are shared by every step); `shuffled s`: "
              "the replayed circuits in a random order (same number of writes).", "",
              "| consolidation | " + " | ".join(f"query accuracy after {n} actions" for n in by_len) + " |",
              "|---|" + "---|" * len(by_len)]
    for k in next(iter(by_len.values())):
        lines.append(f"| {k} | " + " | ".join(fmt(c[k]) for c in by_len.values()) + " |")
    lines += ["", "## Reading (sentences computed from the numbers above)", ""]
    nxt = {m: r["metrics"]["acc_query"] for m, r in res["next_obs"].items()}
    best = max(nxt, key=nxt.get)
    lines.append(f"- Queries about actions taken once: best {best} ({fmt(nxt[best])}); OBS {fmt(nxt['obs'])}, "
                 f"{'above' if nxt['obs'] > f['acc_query'] else 'not above'} the majority class "
                 f"({fmt(f['acc_query'])}), after the same {res['steps']} steps.")
    Lmax = lengths[-1]
    best_rep = max(rep, key=lambda k: rep[k][Lmax]["accuracy"])
    lines.append(f"- Replay at L={Lmax}: best order model {best_rep} ({fmt(rep[best_rep][Lmax]['accuracy'])})"
                 + ("; a Markov model with a few steps of context loses its way where the walk turns on the spot "
                    "and revisits places (the same circuit, several successors), the GRU's context is the whole "
                    "replayed prefix." if best_rep.startswith("GRU") else "."))
    lines.append(f"- Planning: over exact node sets the tracker reached {fmt(p['tracker plan, exact node sets'])} of "
                 f"the goals, random actions {fmt(p['random actions'])}, the memoryless greedy agent "
                 f"{fmt(p['greedy, no tracker'])}; the same planner over true places {fmt(p['tracker on true places'])}"
                 ": the gap to it is the cost of places that OBS's circuits do not tell apart, or tell apart "
                 "when they are the same.")
    for n, cons in by_len.items():
        best_c = max(cons, key=cons.get)
        lines.append(f"- Consolidation, {n} actions in between: without it {fmt(cons['none'])}; best row {best_c} "
                     f"({fmt(cons[best_c])})"
                     + ("." if best_c != "none" else ": no consolidation tried here helped later recall."))
    lines += ["", "## The state of the OBS + FSQ model, drawn by `obs inspect`", "",
              f"`{res['inspect_command']}`", "",
              "![circuits](acting_inspect/circuits.png)", "",
              "![strengths](acting_inspect/strengths.png)", "",
              "![firing](acting_inspect/firing.png)", "",
              "![codes](acting_inspect/codes.png)", "",
              "Raw numbers: `acting.json` beside this page."]
    path = out / "acting.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _counts(text: str) -> list[int]:
    """``--interfere``: comma-separated positive action counts."""
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers of actions, e.g. 48,480; "
                                         f"got '{text}'")
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400, help="training steps per model")
    ap.add_argument("--layouts", type=int, default=30, help="new layouts per tracker measurement")
    ap.add_argument("--runs", default="runs/acting", help="run folders of the trained models")
    ap.add_argument("--out", default="docs/results", help="folder of acting.md and acting.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--interfere", default="48", type=_counts,
                    help="comma-separated actions in another layout between a route and its queries (consolidation)")
    ap.add_argument("--obs-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of the OBS models' config (repeatable), e.g. model.mixer.active_persist=1")
    ap.add_argument("--page-only", action="store_true", help="rewrite acting.md from acting.json, computing nothing")
    args = ap.parse_args(argv)
    if args.page_only:
        res = json.loads((Path(args.out) / "acting.json").read_text())
        for part in ("replay",):
            res[part] = {k: {int(L): v for L, v in per.items()} for k, per in res[part].items()}
        cmd = res.get("command") or (f"python -m onebigstate.experiments.acting --steps {res['steps']} "
                                     f"--layouts {res['n_layouts']}")
        print(f"wrote {write_page(Path(args.out), res, cmd)}")
        return 0
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    # the code that computes the numbers: the commit at the start of the run
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trained = {m: train_or_reuse(m, args.steps, runs, args.obs_set) for m in MODELS}
    next_obs = {m: r for m, (r, _) in trained.items()}
    reused = all(was_reused for _, was_reused in trained.values())
    ckpt = read_checkpoint(runs / "obs")
    _, model = model_from_checkpoint(ckpt)
    model.eval()
    grid = GridConfig.model_validate(ckpt.config.task.params)
    torch.manual_seed(0)
    code_usage = discretiser_usage(runs / RUN_DIRS["obs + fsq discretiser"])
    res = {"code_usage": code_usage, "steps": args.steps, "obs_set": args.obs_set, "reused": reused,
           "train_s": sum(r["wall_time_s"] for r in next_obs.values()), "n_layouts": args.layouts,
           "threads": args.threads, "grid": grid.model_dump(),
           "next_obs": {m: {"metrics": r["metrics"], "n_params": r["n_params"]} for m, r in next_obs.items()},
           "majority": majority_floor(ckpt.config.task)}
    print("replay ...")
    res["replay"] = replay_accuracy(model, grid, [4, 8, 16, 32, 64], args.layouts,
                                    [("Markov order 3, exact node sets", 3, 1.0, "markov"),
                                     ("Markov order 1, exact node sets", 1, 1.0, "markov"),
                                     ("GRU, exact node sets", 1, 1.0, "gru"),
                                     ("Markov order 3, overlap >= 0.5", 3, 0.5, "markov"),
                                     ("Markov order 1, overlap >= 0.5", 1, 0.5, "markov"),
                                     ("GRU, overlap >= 0.5", 1, 0.5, "gru")])
    print("plan ...")
    res["plan_explore"] = 150
    res["plan"] = plan_success(model, grid, args.layouts, explore=150, pairs=10)
    print("consolidation ...")
    res["consol_route"], res["consol_interfere"] = 24, args.interfere
    res["consolidation"] = {str(n): consolidation_effect(model, grid, args.layouts, 24, n, [0.01, 0.1, 1.0])
                            for n in res["consol_interfere"]}
    from onebigstate.cli.main import main as obs_main
    inspect_args = ["inspect", str(runs / RUN_DIRS["obs + fsq discretiser"]), "--out", str(out / "acting_inspect")]
    obs_main(inspect_args)
    res["inspect_command"] = "obs " + " ".join(inspect_args)
    res["wall_s"] = time.perf_counter() - t0
    res["commit"] = commit
    cmd = "python -m onebigstate.experiments.acting " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    res["command"] = cmd.strip()
    (out / "acting.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    page = write_page(out, res, cmd.strip())
    print(f"wrote {page} and {out / 'acting.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
