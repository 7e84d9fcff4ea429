"""The see-and-hear plots: the touched part of the big state, the circuits of a word and of its
object, recall against delay and against exposures. Each function writes one PNG."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from onebigstate.experiments.obs_state import PairingView  # noqa: E402
from onebigstate.experiments.recall import RecallResult  # noqa: E402


def plot_state_heatmap(view: PairingView, path: Path, max_nodes: int = 64) -> Path:
    """Heat map of ``S_T - S_0`` over the most written nodes (rows: from, columns: to), with
    the word's and the object's circuit nodes marked on the axes."""
    touched = view.touched.numpy()
    delta = view.delta.numpy()
    writes = touched.sum(0) + touched.sum(1)
    marked = list(dict.fromkeys(view.object_nodes + view.word_nodes))
    others = [int(i) for i in np.argsort(-writes) if writes[i] > 0 and int(i) not in marked]
    nodes = marked + others[: max(0, max_nodes - len(marked))]
    sub = delta[np.ix_(nodes, nodes)]
    lim = float(np.abs(sub).max()) or 1.0
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(sub, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="change of connection strength (S_T - S_0)")
    n_obj, n_word = len(view.object_nodes), len(set(view.word_nodes) - set(view.object_nodes))
    for edge in (n_obj - 0.5, n_obj + n_word - 0.5):
        ax.axhline(edge, color="k", lw=0.6)
        ax.axvline(edge, color="k", lw=0.6)
    colors = ["tab:blue" if n in view.object_nodes else "tab:orange" if n in view.word_nodes else "0.4" for n in nodes]
    ax.set_xticks(range(len(nodes)))
    ax.set_yticks(range(len(nodes)))
    ax.set_xticklabels(nodes, fontsize=5, rotation=90)
    ax.set_yticklabels(nodes, fontsize=5)
    for lbl, c in zip(ax.get_xticklabels(), colors):
        lbl.set_color(c)
    for lbl, c in zip(ax.get_yticklabels(), colors):
        lbl.set_color(c)
    n_touched = int(touched.sum())
    ax.set_title(f"Big state after one stream: the {len(nodes)} most written of {delta.shape[0]} nodes\n"
                 f"{n_touched:,} of {delta.size:,} entries written; blue: circuit of object {view.object_class}, "
                 f"orange: circuit of '{view.word}'", fontsize=9)
    ax.set_xlabel("to node")
    ax.set_ylabel("from node")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_circuits(view: PairingView, path: Path, min_frac: float = 0.05) -> Path:
    """The object's circuit (left) and the word's (right) as a graph, right after the word was
    heard: edges are the changes ``S_t - S_0`` between their nodes (width by size, red positive,
    blue negative); an arrow i -> j is ``S[i, j]``, which spreads activation from i to j."""
    obj, word = view.object_nodes, view.word_nodes
    shared = [n for n in obj if n in word]
    left = [n for n in obj if n not in shared]
    right = [n for n in word if n not in shared]
    pos = {}
    for col, group in ((0.0, left), (0.5, shared), (1.0, right)):
        for i, n in enumerate(group):
            pos[n] = (col, 1.0 - (i + 0.5) / max(len(group), 1))
    nodes = left + shared + right
    delta = view.pairing_delta.numpy()
    vals = [(i, j, float(delta[i, j])) for i in nodes for j in nodes if i != j]
    vmax = max((abs(v) for _, _, v in vals), default=1.0) or 1.0
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, j, v in vals:
        if abs(v) < min_frac * vmax:
            continue
        (x0, y0), (x1, y1) = pos[i], pos[j]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", lw=0.3 + 2.5 * abs(v) / vmax,
                                    color="tab:red" if v > 0 else "tab:blue", alpha=0.25 + 0.6 * abs(v) / vmax,
                                    shrinkA=7, shrinkB=7, connectionstyle="arc3,rad=0.08"))
    for n in nodes:
        color = "tab:purple" if n in shared else "tab:blue" if n in obj else "tab:orange"
        ax.scatter(*pos[n], s=260, color=color, zorder=3, edgecolors="k", linewidths=0.5)
        ax.text(*pos[n], str(n), ha="center", va="center", fontsize=6, color="w", zorder=4)
    o2w = float(delta[np.ix_(obj, word)].sum())
    w2o = float(delta[np.ix_(word, obj)].sum())
    ax.text(0.0, 1.04, f"object {view.object_class}\n(last frame, step {view.object_step})", ha="center", fontsize=9)
    ax.text(1.0, 1.04, f"word '{view.word}'\n(step {view.word_step})", ha="center", fontsize=9)
    ax.text(0.5, -0.04, f"sum of changes object -> word {o2w:+.3g}, word -> object {w2o:+.3g}", ha="center",
            fontsize=9)
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylim(-0.08, 1.15)
    ax.axis("off")
    ax.set_title("Circuits of a word and of its object right after the word was heard\n"
                 f"arrow i->j: S[i, j] - S0[i, j] (shown if >= {min_frac:.0%} of the largest)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def _curve_axes(results: dict[str, RecallResult], kind: str, xs: list[int], point) -> tuple:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, res in results.items():
        ys = [point(res, x) for x in xs]
        if all(math.isnan(y) for y in ys):
            continue
        ax.plot(xs, ys, marker="o", lw=2 if name == "obs" else 1.2, label=name)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_ylabel(f"{kind} recall accuracy")
    return fig, ax


def _finish_curve(fig, ax, title: str, chance: float | None, path: Path) -> Path:
    """Chance line, title and legend of a recall curve, then write it to ``path``."""
    if chance is not None:
        ax.axhline(chance, color="0.5", ls="--", lw=1, label="chance")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return Path(path)


def plot_recall_vs_delay(results: dict[str, RecallResult], kind: str, exposures: int, delays: list[int],
                         path: Path, chance: float | None = None) -> Path:
    fig, ax = _curve_axes(results, kind, delays, lambda r, d: r.accuracy(kind, exposures, d)[0])
    ax.set_xscale("log")
    ax.set_xlabel("delay since the pairing (steps, streamed with carried state)")
    return _finish_curve(fig, ax, f"{kind} recall after {exposures} exposure{'s' * (exposures > 1)}", chance, path)


def plot_recall_vs_exposures(results: dict[str, RecallResult], kind: str, delay: int, exposures: list[int],
                             path: Path, chance: float | None = None) -> Path:
    fig, ax = _curve_axes(results, kind, exposures, lambda r, e: r.accuracy(kind, e, delay)[0])
    ax.set_xticks(exposures)
    ax.set_xlabel("exposures to the pairing")
    return _finish_curve(fig, ax, f"{kind} recall {delay} steps after the last exposure", chance, path)
