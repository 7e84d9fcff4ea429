"""Achieved bytes/s of OBS's row reads as a fraction of the GPU's HBM bandwidth, from the speed
suite's rows on a GPU (``docs/results/speed_gpu.json``), appended to the page beside them.

    python benchmarks/gpu_bandwidth.py docs/results/speed_gpu.json

The bound counted is the forward's dominant traffic: each step reads R = k_max + m_active whole
rows of N floats per stream (the bench's OBS: k_max 12, m_active 16), so bytes per token =
R x N x bytes per float. Writes (k^2 + m k entries) and the logs are left out, so the fraction is a
lower bound of the bandwidth used.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# HBM bandwidth by device name (bytes/s): the vendors' figures for the SXM parts
HBM = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}
K_MAX, M_ACTIVE, BENCH_N = 12, 16, 1024


def bandwidth(machine: str) -> tuple[str, float] | None:
    for name, bw in HBM.items():
        if name in machine:
            return name, bw
    return None


def main(path: str) -> int:
    data = json.loads(Path(path).read_text())
    meta, rows = data["meta"], data["rows"]
    found = bandwidth(meta.get("machine", ""))
    if found is None:
        print(f"unknown GPU in {meta.get('machine')!r}: no bandwidth figure; known: {list(HBM)}")
        return 1
    name, bw = found
    lines = ["", "## Bandwidth", "",
             f"Forward row reads of OBS (R = {K_MAX + M_ACTIVE} rows of N float32 per stream and step) at the "
             f"measured forward tokens/s, against the {name}'s {bw / 1e12:.2f} TB/s "
             f"(`python benchmarks/gpu_bandwidth.py {path}`):", "",
             "| backend | width | B | T | N | tokens/s fwd | GB/s read | share of HBM |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("model") != "obs" or "tok_s_fwd" not in r or r.get("state_backend", "dense") != "dense":
            continue
        n = r.get("n_nodes") or BENCH_N
        rate = r["tok_s_fwd"] * (K_MAX + M_ACTIVE) * n * 4
        lines.append(f"| {r['backend']} | {r['width']} | {r['batch']} | {r['seq_len']} | {n} | {r['tok_s_fwd']:,.0f} | "
                     f"{rate / 1e9:,.1f} | {rate / bw:.1%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    page = Path(path).with_suffix(".md")
    if page.exists() and "## Bandwidth" not in page.read_text():
        page.write_text(page.read_text() + text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/speed_gpu.json"))
