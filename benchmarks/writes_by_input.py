"""How hard does a trained see-and-hear OBS write on each kind of input? Mean |gate| per event.

    python benchmarks/writes_by_input.py RUN [RUN ...] --out docs/results/write_cost/writes_by_input.json

Each step's writes are scaled by the write module's signed gates (``kernels/step.py``): g_in the
new circuit's own pairs, g_as from the active nodes to it, g_ch from the previous circuit (continuous
inputs), g_rev back to the active nodes (``reverse_assoc``). The write mass is their |mean|, each
weighted by the entries it scales (``model/regularizer.write_mass``: 1 = every entry at full
strength). Read over novel-split streams (``k_by_input.read_novel_streams``), grouped by the event a
step shows (``data.streams.EVENT_NAMES``): the pairing's view and name, distractors, noise, silence,
and the queries. A model that writes as hard on silence as on a pairing fills its state with writes
no query needs.

Second table, why a pairing fades with delay: how the novel words' circuits share nodes. For every
word, its top-4 nodes over all its utterances (voices differ); the distinct nodes of all words, the
mean share of a word's top 4 that another word also has, the most words on one node, and how much
of an utterance's circuit is its word's top 4 (the rest changes with the voice).
"""
from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))      # its sibling, also when loaded by path
from k_by_input import probe_parser, read_novel_streams  # noqa: E402
from onebigstate.files import atomic_write_text

GATES = ("g_in", "g_as", "g_ch", "g_rev")


def gates_by_event(run: Path, n_streams: int, seed: int) -> dict:
    """event -> {steps, mean k_t, mean |gate| per gate, write mass}, plus the whole read's write mass."""
    from onebigstate.data.streams import EVENT_NAMES
    from onebigstate.model.regularizer import write_mass
    layer, batch = read_novel_streams(run, n_streams, seed)
    stats = layer.last_stats
    gates, k = stats.gates.abs(), stats.k_hard.float()
    rows = {}
    for i, event in enumerate(EVENT_NAMES):
        mask = batch.event == i
        if not mask.any():
            continue
        rows[event] = {"steps": int(mask.sum()), "k": float(k[mask].mean()),
                       **{g: float(gates[mask][:, j].mean()) for j, g in enumerate(GATES[:gates.shape[-1]])},
                       "mass": float(write_mass(stats.gates[mask][None], layer.step_cfg))}
    mixer = read_mixer(run)
    words = collections.defaultdict(collections.Counter)       # word id -> node -> utterances using it
    utterances = collections.Counter()
    is_word = torch.tensor(["word" in e for e in EVENT_NAMES])[batch.event]
    for b, t in is_word.nonzero().tolist():
        word = int(batch.item[b, t])
        words[word].update(stats.circuit_idx[b, t, :int(stats.k_hard[b, t])].tolist())
        utterances[word] += 1
    top = {w: {n for n, _ in c.most_common(4)} for w, c in words.items()}
    ids = sorted(top)
    shared = [len(top[a] & top[b]) / 4 for i, a in enumerate(ids) for b in ids[i + 1:]]
    per_node = collections.Counter(n for nodes in top.values() for n in nodes)
    in_top = sum(sum(words[w][n] for n in top[w]) for w in ids) / sum(sum(words[w].values()) for w in ids)
    circuits = {"words": len(ids), "distinct_nodes": len(per_node),
                "mean_shared": sum(shared) / max(1, len(shared)), "most_words_on_a_node": max(per_node.values()),
                "utterance_in_top4": in_top}
    return {"run": str(run), "write_cost": mixer.get("write_cost", 0.0),
            "reverse_assoc": mixer.get("reverse_assoc", False),
            "mass": float(write_mass(stats.gates, layer.step_cfg)), "events": rows, "word_circuits": circuits}


def read_mixer(run: Path) -> dict:
    import yaml
    return yaml.safe_load((run / "config.yaml").read_text())["model"]["mixer"]


def short(run: str) -> str:
    """A bench cell's folder name without its suite prefix (``seeandhear__obs__lr0.01__s0`` -> ``obs__lr0.01__s0``)."""
    return Path(run).name.split("__", 1)[-1]


def table(results: list[dict]) -> str:
    """Markdown: one row per event, the write mass of every run (and its mean |gate|s: g_in, g_as, g_ch,
    g_rev)."""
    events = list(results[0]["events"])
    head = "| event | steps | " + " | ".join(f"{short(r['run'])} (write_cost {r['write_cost']:g})" for r in results) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(results)]
    for e in events:
        cells = []
        for r in results:
            row = r["events"].get(e)
            cells.append("-" if row is None else f"{row['mass']:.3f} (" + ", ".join(
                f"{row[g]:.2f}" for g in GATES if g in row) + ")")
        lines.append(f"| {e} | {results[0]['events'][e]['steps']:,} | " + " | ".join(cells) + " |")
    lines.append("| every step | | " + " | ".join(f"{r['mass']:.3f}" for r in results) + " |")
    lines += ["", "| run | words | distinct nodes of their top 4 | mean share of a top 4 in another's | most words on "
              "a node | an utterance's nodes in its word's top 4 |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        c = r["word_circuits"]
        lines.append(f"| {short(r['run'])} | {c['words']} | {c['distinct_nodes']} | {c['mean_shared']:.3f} | "
                     f"{c['most_words_on_a_node']} | {c['utterance_in_top4']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = probe_parser(__doc__).parse_args(argv)
    torch.set_num_threads(1)
    results = [gates_by_event(run, args.streams, args.seed) for run in args.runs]
    text = table(results)
    print(text, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"streams": args.streams, "seed": args.seed, "runs": results},
                                           indent=1) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), text + "\n")


if __name__ == "__main__":
    main()
