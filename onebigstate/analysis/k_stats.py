"""How many nodes the write module activates (k_t), per kind of input: evidence that k_t is
learned and input-dependent rather than a constant."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def collect_k(model, inputs: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """k_t of the first OBS mixer for every step: inputs [n, T] -> k [n, T] long."""
    obs = [m for m in getattr(model, "mixers", []) if hasattr(m, "last_stats")]
    if not obs:
        raise ValueError("model has no OBS layer: k_t exists only for OBS")
    model.eval()
    out = []
    for i in range(0, inputs.shape[0], batch_size):
        model.hidden(inputs[i:i + batch_size])
        out.append(obs[0].last_stats.k_hard.cpu())
    return torch.cat(out)


def mqar_roles(inputs: torch.Tensor, labels: torch.Tensor, num_kv_pairs: int) -> dict[str, torch.Tensor]:
    """Boolean masks [n, T] for MQAR's kinds of steps: key, value, query, filler."""
    n, T = inputs.shape
    pos = torch.arange(T).expand(n, T)
    ctx = pos < 2 * num_kv_pairs
    key = ctx & (pos % 2 == 0)
    value = ctx & (pos % 2 == 1)
    query = labels != -100
    filler = ~ctx & ~query
    return {"key": key, "value": value, "query": query, "filler": filler}


def k_histogram_table(k: torch.Tensor, groups: dict[str, torch.Tensor], k_min: int, k_max: int) -> dict:
    """Per group: counts of each k in [k_min, k_max], mean and std."""
    table = {}
    for name, mask in groups.items():
        vals = k[mask].numpy()
        counts = np.bincount(vals, minlength=k_max + 1)[k_min:k_max + 1]
        table[name] = {"mean": float(vals.mean()) if vals.size else float("nan"),
                       "std": float(vals.std()) if vals.size else float("nan"),
                       "counts": counts.tolist(), "n": int(vals.size)}
    return table


def plot_k_histogram(table: dict, k_min: int, k_max: int, path: str | Path, title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.arange(k_min, k_max + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / max(1, len(table))
    for i, (name, row) in enumerate(table.items()):
        frac = np.array(row["counts"]) / max(1, row["n"])
        ax.bar(ks + (i - (len(table) - 1) / 2) * width, frac, width, label=f"{name} (mean {row['mean']:.2f})")
    ax.set_xlabel("k_t (nodes in the step's circuit)")
    ax.set_ylabel("fraction of steps (log)")
    ax.set_yscale("log")
    ax.set_xticks(ks)
    ax.legend(fontsize=8)
    ax.set_title(title or "k_t by kind of input")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
