"""The page of ``obs bench speed``: targets, sweep tables and plots, every ratio from one run."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

# (what, label of the fast path, label of the path it is measured against, minimum speed-up, setting)
# for the targets of the CPU speed issue; the ratio is taken at each thread count measured
TARGETS = [
    ("scan", "obs (cpu)", "obs (reversible)", 10.0, dict(batch=32, seq_len=256, n_nodes=1024)),
    ("scan", "obs (cpu)", "obs (reversible)", 10.0, dict(batch=32, seq_len=256, n_nodes=4096)),
    ("layer", "obs (cpu)", "obs (reversible)", 6.0, dict(batch=8, seq_len=128, n_nodes=1024)),
    ("train", "obs (cpu)", "deltanet", 1.0, dict(batch=16, seq_len=256, n_nodes=None)),
]
SPARSE_TARGET = dict(what="train", label="obs (cpu, sparse)", batch=32, seq_len=128, n_nodes=16384, seconds=1.0)


_SYMBOL = {"batch": "B", "seq_len": "T", "n_nodes": "N"}


def _ok(r: dict) -> bool:
    return "error" not in r and r.get("s_fwd_bwd") is not None


def _find(rows, **kw) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def _fmt_tok(v: float) -> str:
    return f"{v:,.0f}"


def _cell_text(r: dict | None) -> str:
    if r is None:
        return ""
    if not _ok(r):
        return f"error: {r['error'][:60]}"
    mem = "" if math.isnan(r.get("peak_mb", float("nan"))) else f" / {r['peak_mb']:,.0f} MB"
    return f"{_fmt_tok(r['tok_s_fwd'])} / {_fmt_tok(r['tok_s_fwd_bwd'])}{mem}"


def target_results(rows: list[dict]) -> list[dict]:
    """Every target measured in ``rows``, at each thread count: the fast path's row, the row it is
    compared with (None for the seconds aim), the speed-up or seconds, and whether the aim is met."""
    out = []
    threads = sorted({r["threads"] for r in rows if r["axis"] == "target"})
    for what, fast, slow, aim, setting in TARGETS:
        for t in threads:
            a = _find(rows, axis="target", what=what, label=fast, threads=t, **setting)
            b = _find(rows, axis="target", what=what, label=slow, threads=t, **setting)
            if not a or not b or not (_ok(a[0]) and _ok(b[0])):
                continue
            ratio = b[0]["s_fwd_bwd"] / a[0]["s_fwd_bwd"]
            where = ", ".join(f"{_SYMBOL[k]}={v}" for k, v in setting.items() if v is not None)
            out.append(dict(what=f"{what} ({where})", threads=t, fast=a[0], slow=b[0], value=ratio, aim=aim,
                            met=ratio >= aim, kind="ratio"))
    s = SPARSE_TARGET
    for t in threads:
        a = _find(rows, axis="target", what=s["what"], label=s["label"], threads=t, batch=s["batch"],
                  seq_len=s["seq_len"], n_nodes=s["n_nodes"])
        if a and _ok(a[0]):
            ref = _find(rows, axis="target", what=s["what"], label="obs (reversible, sparse)", threads=t,
                        batch=s["batch"], seq_len=s["seq_len"], n_nodes=s["n_nodes"])
            out.append(dict(what=f"train (B={s['batch']}, T={s['seq_len']}, N={s['n_nodes']}, sparse)", threads=t,
                            fast=a[0], slow=ref[0] if ref and _ok(ref[0]) else None, value=a[0]["s_fwd_bwd"],
                            aim=s["seconds"], met=a[0]["s_fwd_bwd"] < s["seconds"], kind="seconds"))
    return out


def target_lines(rows: list[dict]) -> list[str]:
    lines = ["| target | threads | fast path | against | fwd+bwd s (fast / against) | speed-up | aim | met |",
             "|---|---:|---|---|---|---:|---:|---|"]
    for r in target_results(rows):
        slow_s = f"{r['slow']['s_fwd_bwd']:.3f}" if r["slow"] else "-"
        against = r["slow"]["label"] if r["slow"] else "-"
        if r["kind"] == "ratio":
            met = "yes" if r["met"] else f"no: {r['value'] / r['aim']:.2f} of the aim"
            lines.append(f"| {r['what']} | {r['threads']} | {r['fast']['label']} | {against} | "
                         f"{r['fast']['s_fwd_bwd']:.3f} / {slow_s} | {r['value']:.1f}x | {r['aim']:g}x | {met} |")
        else:
            met = "yes" if r["met"] else f"no: {r['value'] / r['aim']:.2f}x the aim"
            lines.append(f"| {r['what']} | {r['threads']} | {r['fast']['label']} | {against} | "
                         f"{r['value']:.3f} / {slow_s} | - | < {r['aim']:g} s | {met} |")
    return lines


def missed_fast_rows(rows: list[dict]) -> list[dict]:
    """The fast path's row of every target missed (to profile)."""
    return [r["fast"] for r in target_results(rows) if not r["met"]]


def profile_lines(rows: list[dict]) -> list[str]:
    """Where the time goes in the fast path of each missed target (rows given a ``profile``)."""
    out = []
    for r in target_results(rows):
        prof = r["fast"].get("profile")
        if r["met"] or prof is None:
            continue
        out += [f"**{r['what']}, {r['threads']} thread{'s' if r['threads'] > 1 else ''}, {r['fast']['label']}**: "
                "operators by self time in one forward+backward (torch.profiler; the compiled scan's forward is "
                "the `GeneratedBackwardFor_obs_cpu_scan_forward` node, its backward `obs_cpu::scan_backward`):", ""]
        if isinstance(prof, str):
            out += [f"(profile failed: {prof})", ""]
            continue
        out += ["| operator | self ms | share |", "|---|---:|---:|"]
        out += [f"| `{p['op'][:70]}` | {p['self_ms']:.1f} | {100 * p['share']:.0f}% |" for p in prof] + [""]
    return out


def backend_lines(rows: list[dict]) -> list[str]:
    """Every OBS scan and layer cell of the targets, with the compiled backend's speed-up over the
    reversible one measured beside it."""
    sel = [r for r in rows if r["axis"] == "target" and r["what"] in ("scan", "layer") and r["model"] == "obs"]
    if not sel:
        return []
    lines = ["| what | B | T | N | threads | backend | tokens/s fwd | tokens/s fwd+bwd | peak MB | "
             "fwd+bwd speed-up over reversible |", "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in sel:
        if not _ok(r):
            lines.append(f"| {r['what']} | {r['batch']} | {r['seq_len']} | {r['n_nodes']} | {r['threads']} | "
                         f"{r['backend']} | error: {r['error'][:60]} | | | |")
            continue
        twin = _find(sel, what=r["what"], batch=r["batch"], seq_len=r["seq_len"], n_nodes=r["n_nodes"],
                     threads=r["threads"], backend="reversible")
        up = f"{twin[0]['s_fwd_bwd'] / r['s_fwd_bwd']:.1f}x" if twin and _ok(twin[0]) else "-"
        lines.append(f"| {r['what']} | {r['batch']} | {r['seq_len']} | {r['n_nodes']} | {r['threads']} | "
                     f"{r['backend']} | {_fmt_tok(r['tok_s_fwd'])} | {_fmt_tok(r['tok_s_fwd_bwd'])} | "
                     f"{r['peak_mb']:,.0f} | {up} |")
    return lines + [""]


def train_lines(rows: list[dict]) -> list[str]:
    out = []
    for t in sorted({r["threads"] for r in rows if r["axis"] == "target" and r["what"] == "train"}):
        sel = [r for r in _find(rows, axis="target", what="train", threads=t, n_nodes=None)]
        if not sel:
            continue
        out += [f"One training step of MQAR ({sel[0]['seq_len']} tokens, {sel[0]['pairs']} pairs, vocabulary "
                f"8192), batch {sel[0]['batch']}, width {sel[0]['width']}, {t} thread{'s' if t > 1 else ''}:", "",
                "| model | parameters | s per step | tokens/s |", "|---|---:|---:|---:|"]
        for r in sorted(sel, key=lambda r: r.get("s_fwd_bwd") or 1e9):
            if _ok(r):
                out.append(f"| {r['label']} | {r['params']:,} | {r['s_fwd_bwd']:.3f} | {_fmt_tok(r['tok_s_fwd_bwd'])} |")
            else:
                out.append(f"| {r['label']} | | error: {r['error'][:80]} | |")
        out.append("")
    return out


def sweep_lines(rows: list[dict], axis: str, key: str, title: str) -> list[str]:
    """One table per setting of the other knobs (batch, length, width, threads): the GPU grid
    sweeps N at two batches and two widths."""
    sel = [r for r in rows if r["axis"] == axis]
    if not sel:
        return []
    knobs = [k for k in ("batch", "seq_len", "width", "threads") if k != key]
    groups: dict[tuple, list[dict]] = {}
    for r in sel:
        groups.setdefault(tuple(r[k] for k in knobs), []).append(r)
    lines = [f"### {title}", ""]
    for fixed, group in groups.items():
        values = sorted({r[key] for r in group})
        labels = sorted({r["label"] for r in group}, key=lambda s: (not s.startswith("obs"), s))
        head = ", ".join(f"{k} {v}" for k, v in zip(knobs, fixed))
        lines += [f"tokens/s forward / tokens/s forward+backward / peak MB of a forward+backward ({head}):", "",
                  "| model | parameters | " + " | ".join(f"{key} = {v}" for v in values) + " |",
                  "|---|---:|" + "---|" * len(values)]
        for lab in labels:
            by = {r[key]: r for r in group if r["label"] == lab}
            params = next((f"{r['params']:,}" for r in by.values() if _ok(r)), "")
            lines.append(f"| {lab} | {params} | " + " | ".join(_cell_text(by.get(v)) for v in values) + " |")
        lines.append("")
    return lines


def plot(rows: list[dict], axis: str, key: str, path: Path, xlabel: str) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sel = [r for r in rows if r["axis"] == axis and _ok(r)]
    if not sel:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    series = defaultdict(list)
    for r in sel:
        series[r["label"]].append(r)
    for lab, rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r[key])
        style = dict(lw=2.5, marker="o") if lab.startswith("obs") else dict(lw=1, marker=".", alpha=0.8)
        axes[0].plot([r[key] for r in rs], [r["tok_s_fwd_bwd"] for r in rs], label=lab, **style)
        axes[1].plot([r[key] for r in rs], [max(r["peak_mb"], 1e-1) for r in rs], label=lab, **style)
    for ax, ylab in zip(axes, ("tokens/s, forward + backward", "peak MB of a forward + backward")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def repeat_lines(rows: list[dict]) -> list[str]:
    """Settings the run measured twice (a sweep's shared point): how far this machine's timings
    move between two measurements of the same thing."""
    seen: dict[tuple, dict] = {}
    pairs = []
    for r in rows:
        if not _ok(r) or r["axis"] == "target":
            continue
        n = r["n_nodes"] or (1024 if r["model"] == "obs" else None)
        key = (r["label"], r["what"], r["batch"], r["seq_len"], n, r["width"], r["threads"], r["state_backend"])
        if key in seen:
            pairs.append((seen[key], r))
        else:
            seen[key] = r
    if not pairs:
        return []
    lines = ["The same setting measured twice in this run (once per sweep that contains it), tokens/s "
             "forward+backward: the spread is this machine's noise, not the code's.", "",
             "| model | B | T | first | second | ratio |", "|---|---:|---:|---:|---:|---:|"]
    for a, b in pairs:
        ratio = max(a["tok_s_fwd_bwd"], b["tok_s_fwd_bwd"]) / min(a["tok_s_fwd_bwd"], b["tok_s_fwd_bwd"])
        lines.append(f"| {a['label']} | {a['batch']} | {a['seq_len']} | {_fmt_tok(a['tok_s_fwd_bwd'])} | "
                     f"{_fmt_tok(b['tok_s_fwd_bwd'])} | {ratio:.2f} |")
    return lines + [""]


def write_page(rows: list[dict], path: Path, meta: dict, rewritten: dict | None = None) -> Path:
    """The page from the rows and their run's ``meta`` (command, commit, machine, started);
    ``rewritten``: the command and commit that wrote the page again from those rows, if any."""
    stem = path.stem
    again = (f" Page written again from its rows by `{rewritten['command']}` at commit `{rewritten['commit']}`."
             if rewritten else "")
    lines = [f"# Speed and memory ({stem.replace('_', ' ')})", "",
             f"Command: `{meta['command']}` at commit `{meta['commit']}`, on {meta['machine']}, started "
             f"{meta.get('started', '?')}.{again} Every row comes from this one run; every ratio is between rows "
             "of it. Cells ran one after another, each in a fresh process.", "",
             "Units: tokens/s = batch x sequence length / seconds (the median of the repeats after a warm-up); "
             "`fwd` is a forward pass without gradients, `fwd+bwd` a forward with gradients and the backward "
             "(for training steps also the loss and AdamW). Peak MB: the most resident memory of the process "
             "during one forward+backward, above its resident memory once the model was built (on a GPU: "
             "the most allocated). `scan` rows time the OBS scan alone; `layer` one OBS layer; models are built "
             "as the benchmarks build them (OBS: 1 layer with its recipe; baselines: 2 layers, 2 heads), on "
             "random tokens of a vocabulary of 256 (definitions: `onebigstate/bench/speed.py`).", ""]
    tgt = target_lines(rows)
    if len(tgt) > 2:
        lines += ["## Targets", ""] + tgt + [""]
    bl = backend_lines(rows)
    if bl:
        lines += ["## The OBS scan and layer, backend by backend", ""] + bl
    pl = profile_lines(rows)
    if pl:
        lines += ["## Where the time goes in the targets missed", ""] + pl
    tl = train_lines(rows)
    if tl:
        lines += ["## Training steps", ""] + tl
    sweeps = [("seq_len", "seq_len", "Against sequence length", "sequence length T"),
              ("n_nodes", "n_nodes", "Against N (OBS only)", "N (nodes)"),
              ("batch", "batch", "Against batch size", "batch B")]
    body = []
    for axis, key, title, xlabel in sweeps:
        sl = sweep_lines(rows, axis, key, title)
        if not sl:
            continue
        body += sl
        png = plot(rows, axis, key, path.parent / f"{stem}_{axis}.png", xlabel)
        if png is not None:
            body += [f"![{title}]({png.name})", ""]
    if body:
        lines += ["## Sweeps", ""] + body
    rep = repeat_lines(rows)
    if rep:
        lines += ["## Repeatability", ""] + rep
    errors = [r for r in rows if not _ok(r)]
    if errors:
        lines += ["## Cells that did not finish", ""] + [f"- {r['label']} {r['what']} B={r['batch']} "
                                                           f"T={r['seq_len']}: {r['error']}" for r in errors] + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
