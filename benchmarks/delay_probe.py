"""Why does a see-and-hear pairing fade with delay? Two probes of a trained OBS cell.

    python benchmarks/delay_probe.py RUN [RUN ...] --out docs/results/write_cost/delay_probe.json

1. **Which filler hurts.** Word -> object recall after one exposure at a short and a long delay,
   on the novel split as the suite measures it (``experiments/recall.measure_recall``, windows of
   512 with the state carried), with the filler between pairing and query made of one kind only
   (silence, distractor views, distractor words, noise) or with one kind left out.
2. **What the query reads.** At each word query, the share of the active set's weight on the nodes
   of the paired object's circuit (its pair-view steps in the same stream) and on the 10 nodes
   most often active over the whole read (the hubs), at the short and the long delay.
3. **Where the hubs come from.** How unevenly the circuits load the nodes (over the long delay's
   read), and the hubs' share of the circuit slots of silence steps and of word steps.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))      # its sibling, also when loaded by path
from k_by_input import novel_config  # noqa: E402
from onebigstate.files import atomic_write_text  # noqa: E402

FILLERS = {"as trained": {},
           "silence only": dict(p_silence=1, p_distractor_image=0, p_distractor_word=0, p_noise=0),
           "distractor views only": dict(p_silence=0, p_distractor_word=0, p_noise=0),
           "distractor words only": dict(p_silence=0, p_distractor_image=0, p_noise=0),
           "noise only": dict(p_silence=0, p_distractor_image=0, p_distractor_word=0),
           "no distractor views": dict(p_distractor_image=0),
           "no distractor words": dict(p_distractor_word=0)}


def filler_recall(run, delays: tuple[int, int], n_streams: int) -> dict[str, dict[str, float]]:
    from onebigstate.experiments.recall import RecallGrid, measure_recall
    grid = RecallGrid(exposures=(1,), delays=delays, exposure_delay=delays[0])
    base = novel_config(run.config.task.params)
    out = {}
    for name, update in FILLERS.items():
        res = measure_recall(run.model, base.model_copy(update=update), grid, n_streams, seed=0)
        out[name] = {f"d={d}": res.accuracy("word->object", 1, d)[0] for d in delays}
    return out


@torch.no_grad()
def query_reads(run, delay: int, n_streams: int, window: int = 512) -> dict[str, float]:
    """Mean share of the active weight at word queries on the paired object's nodes and on the hubs."""
    from onebigstate.data.streams import EVENT_NAMES, StreamConfig, generate_streams
    from onebigstate.model.layer import obs_layers
    layer = obs_layers(run.model)[0]
    base = novel_config(run.config.task.params)
    cfg = StreamConfig(**base.model_copy(update={"exposures": [1], "delay_min": delay, "delay_max": delay}).model_dump())
    batch = generate_streams(cfg, n_streams, 5)
    x = batch.packed()
    logs, states = collections.defaultdict(list), None
    for start in range(0, x.shape[1], window):
        _, states = run.model(x[:, start:start + window], states, in_place=True)
        st = layer.last_stats
        for name in ("active_idx", "active_w", "circuit_idx", "k_hard"):
            logs[name].append(getattr(st, name))
    act, w, circ, k = (torch.cat(logs[n], 1) for n in ("active_idx", "active_w", "circuit_idx", "k_hard"))
    counts = torch.bincount(act.flatten(), minlength=layer.cfg.n_nodes)
    hubs = counts.topk(10).indices
    pair_view, query_word = EVENT_NAMES.index("pair-view"), EVENT_NAMES.index("query-word")
    on_object, on_hubs = [], []
    for b, t in (batch.event == query_word).nonzero().tolist():
        views = ((batch.event[b] == pair_view) & (batch.item[b] == batch.target[b, t])).nonzero().flatten()
        nodes = torch.cat([circ[b, v, :k[b, v]] for v in views.tolist()])
        weight = w[b, t].clamp_min(0)
        total = weight.sum().clamp_min(1e-12)
        on_object.append(float(weight[torch.isin(act[b, t], nodes)].sum() / total))
        on_hubs.append(float(weight[torch.isin(act[b, t], hubs)].sum() / total))
    return {"queries": len(on_object), "on_object": sum(on_object) / len(on_object),
            "on_hubs": sum(on_hubs) / len(on_hubs), "hub_slots": float(counts[hubs].sum() / counts.sum()),
            **circuit_load(batch, circ, hubs, layer.cfg.n_nodes, layer.step_cfg.sure_slots)}


def circuit_load(batch, circ: torch.Tensor, hubs: torch.Tensor, n_nodes: int, k: int) -> dict[str, float]:
    """How unevenly the circuits (their first ``k`` slots, always used; k >= 1) load the nodes, and where
    the hubs of the active sets come from: their share of silence's circuits and of words'."""
    from onebigstate.data.streams import EVENT_NAMES
    load = torch.bincount(circ[..., :k].flatten(), minlength=n_nodes).double()
    load = load / load.mean()
    words = [EVENT_NAMES.index(e) for e in ("pair-word", "distractor-word", "query-word")]
    by_event = {"silence": batch.event == EVENT_NAMES.index("silence"), "words": torch.isin(batch.event,
                                                                                         torch.tensor(words))}
    hub_share = {f"hubs_in_{name}": float(torch.isin(circ[..., :k][mask], hubs).double().mean())
                 for name, mask in by_event.items()}
    return {"load_max": float(load.max()), "load_top10": float(load.topk(10).values.sum() / load.sum()),
            "unused_nodes": float((load == 0).double().mean()), **hub_share}


def main(argv=None) -> None:
    from onebigstate.training.loading import load_run
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--delays", default="10,1000", help="the short and the long delay (default: 10,1000)")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    short, long = (int(d) for d in args.delays.split(","))
    torch.set_num_threads(1)
    rows = []
    for path in args.runs:
        run = load_run(path, device="cpu")
        row = {"run": str(path), "filler": filler_recall(run, (short, long), args.streams),
               "reads": {f"d={d}": query_reads(run, d, min(args.streams, 32)) for d in (short, long)}}
        rows.append(row)
        print(path.name, json.dumps(row["reads"]), flush=True)
    lines = ["| filler between pairing and query | " + " | ".join(
        f"{Path(r['run']).name}: d={short} | d={long}" for r in rows) + " |",
        "|---|" + "---:|---:|" * len(rows)]
    for name in FILLERS:
        lines.append(f"| {name} | " + " | ".join(f"{r['filler'][name][f'd={short}']:.3f} | "
                                                  f"{r['filler'][name][f'd={long}']:.3f}" for r in rows) + " |")
    lines += ["", "| run | delay | active weight on the object's nodes | on the 10 hubs | hubs' share of all active "
                  "slots |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        for d, v in r["reads"].items():
            lines.append(f"| {Path(r['run']).name} | {d[2:]} | {v['on_object']:.3f} | {v['on_hubs']:.3f} | "
                         f"{v['hub_slots']:.3f} |")
    lines += ["", "| run | most used node's circuit load / mean | 10 most used nodes' share of circuit slots | nodes "
                  "in no circuit | hubs' share of silence's circuits | of words' circuits |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        v = r["reads"][f"d={long}"]
        lines.append(f"| {Path(r['run']).name} | {v['load_max']:.1f} | {v['load_top10']:.3f} | {v['unused_nodes']:.3f} | "
                     f"{v['hubs_in_silence']:.3f} | {v['hubs_in_words']:.3f} |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"delays": [short, long], "streams": args.streams, "rows": rows},
                                           indent=1) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), table + "\n")


if __name__ == "__main__":
    main()
