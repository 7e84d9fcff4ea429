"""The results page of a suite: a table (task setting x model) and plots, from the cell records.

For every (setting, model) the best learning rate is the one with the highest mean held-out
accuracy over seeds (Zoology's rule); the table gives, at that lr, the mean and spread
(population standard deviation) over seeds of the held-out accuracy and of every evaluation
column, the parameter count, the state size in floats per stream counted the Zoology way (for
OBS: the dense N^2 and the entries actually written while reading held-out sequences), and the
mean wall time of a run (training and evaluation).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onebigstate.bench.cells import Cell, Plot, Suite

NUMERIC_COLUMN = re.compile(r"^([A-Za-z_]+)(?:=|<=)([0-9.eE+-]+)$")


@dataclass
class Row:
    setting: str
    model: str
    lr: float
    n_seeds: int
    accuracy: list[float]
    evals: dict[str, list[float]] = field(default_factory=dict)
    n_params: int | None = None
    state_floats: int | None = None
    dense_floats: int | None = None
    written: float | None = None
    wall_s: float | None = None
    diverged: int = 0
    x: dict[str, float] = field(default_factory=dict)
    lrs_tried: dict[float, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracy))


def summarise(cells: list[Cell], results: dict[str, dict]) -> list[Row]:
    """Rows (setting, model) at the best lr; ``results`` maps cell name -> record (missing: not run)."""
    groups: dict[tuple[str, str], dict[float, list[tuple[Cell, dict]]]] = {}
    for c in cells:
        rec = results.get(c.name)
        if rec is None:
            continue
        groups.setdefault((c.setting, c.model), {}).setdefault(c.lr, []).append((c, rec))
    rows = []
    for (setting, model), by_lr in groups.items():
        means = {lr: float(np.mean([r["metrics"]["accuracy"] for _, r in runs])) for lr, runs in by_lr.items()}
        best = max(means, key=lambda lr: (means[lr], -lr))
        runs = by_lr[best]
        ok = [r for _, r in runs if not r.get("diverged")]
        evals: dict[str, list[float]] = {}
        for _, r in runs:
            for k, v in r.get("evals", {}).items():
                evals.setdefault(k, []).append(v)
        written = [r["written_entries"]["mean"] for r in ok if r.get("written_entries")]
        walls = [r["wall_time_s"] + r.get("eval_time_s", 0.0) for r in ok if r.get("wall_time_s") is not None]
        first = ok[0] if ok else {}
        size = first.get("state_size", {}) if first else {}
        rows.append(Row(setting, model, best, len(runs), [r["metrics"]["accuracy"] for _, r in runs], evals,
                        first.get("n_params"), size.get("floats"), size.get("dense_floats"),
                        float(np.mean(written)) if written else None,
                        float(np.mean(walls)) if walls else None, len(runs) - len(ok), runs[0][0].x, means))
    return rows


def _pm(values: list[float]) -> str:
    vals = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}"


def _int(n) -> str:
    return "–" if n is None else f"{int(round(n)):,}"


def markdown_table(rows: list[Row]) -> str:
    """The table: one line per (setting, model), evaluation columns in order of appearance."""
    cols: list[str] = []
    for r in rows:
        for k in r.evals:
            if k not in cols:
                cols.append(k)
    head = ["setting", "model", "accuracy"] + cols + ["params", "state floats", "wall s", "lr", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        state = _int(r.state_floats)
        if r.dense_floats is not None:
            state = f"{_int(r.dense_floats)} dense / {_int(r.written)} written"
        seeds = f"{r.n_seeds}" + (f" ({r.diverged} diverged)" if r.diverged else "")
        cells = [r.setting, r.model, _pm(r.accuracy)] + [_pm(r.evals.get(k, [])) for k in cols]
        cells += [_int(r.n_params), state, "–" if r.wall_s is None else f"{r.wall_s:.0f}", f"{r.lr:g}", seeds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], spec: Plot, path: Path, title: str) -> bool:
    """Draw one plot (matplotlib, Agg) into ``path``; False when there is nothing to draw."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[float, float, float]]] = {}
    if spec.kind == "x":
        for r in rows:
            if spec.key not in r.x:
                continue
            rest = ", ".join(f"{k}={v:g}" for k, v in sorted(r.x.items()) if k != spec.key)
            label = r.model + (f" ({rest})" if rest else "")
            lines.setdefault(label, []).append((r.x[spec.key], r.mean, float(np.std(r.accuracy))))
    else:
        for r in rows:
            for col, vals in r.evals.items():
                m = NUMERIC_COLUMN.match(col)
                if m and m.group(1) == spec.key:
                    label = r.model if len({q.setting for q in rows}) == 1 else f"{r.model} ({r.setting})"
                    lines.setdefault(label, []).append((float(m.group(2)), float(np.mean(vals)),
                                                        float(np.std(vals))))
    if not lines:
        return False
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    # one colour per curve: the default cycle repeats after ten, and a page may have more
    cmap = plt.get_cmap("tab10" if len(lines) <= 10 else "tab20")
    for i, (label, pts) in enumerate(sorted(lines.items())):
        pts.sort()
        xs, ys, es = zip(*pts)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label, color=cmap(i % cmap.N))
    if spec.log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(spec.xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # beside the axes, off the curves
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _provenance(results: dict[str, dict], key: str) -> str:
    """``value (n cells); ...`` over the finished cells; cells from before a field was recorded
    count as 'not recorded' (they are left out of the device and command lists)."""
    counts: dict[str, int] = {}
    for r in results.values():
        value = r.get(key)
        if value is None and key != "commit":
            continue
        value = value or "not recorded (before the bench recorded it)"
        counts[value] = counts.get(value, 0) + 1
    quote = key != "device"
    return "; ".join(f"`{k}` ({n})" if quote and not k.startswith("not recorded") else f"{k} ({n})"
                     for k, n in counts.items())


def write_report(suite: Suite, results: dict[str, dict], out_md: Path, command: str, commit: str,
                 device: str | None) -> list[Row]:
    """Write ``out_md`` (table, plots beside it, the rows as JSON) and return the rows.
    ``device``: where the command ran (None for a page written from finished cells only)."""
    rows = summarise(suite.cells, results)
    done = sum(1 for c in suite.cells if c.name in results)
    trained = _provenance(results, "commit")
    ran_on = _provenance(results, "device")
    commands = _provenance(results, "command")
    parts = [f"# {suite.title}", "",
             f"Produced by `{command}` at commit `{commit}`" + (f" on {device}." if device else "."), "",
             f"{done} of {len(suite.cells)} cells finished; cells trained and evaluated at commit: "
             f"{trained or '-'}" + (f"; on: {ran_on}" if ran_on else "") + ".", "",
             *([f"Cells trained by: {commands}.", ""] if commands else []), suite.description.strip(), "",
             "Accuracy is on held-out sequences (the test seed range), at the best learning rate of each "
             "model (highest mean over seeds), as mean ± population std over seeds. Parameters count "
             "the whole model (embedding included). State floats per stream are counted the Zoology "
             "way at the training length (attention: its KV cache); for OBS, the dense N^2 and the "
             "entries actually written while reading held-out sequences. Wall time is one run, training "
             "and evaluation.", "", markdown_table(rows)]
    for spec, path in _draw_plots(suite, rows, out_md):
        parts += [f"![accuracy vs {spec.xlabel}]({path.name})", ""]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(parts))
    dump = [{**{k: v for k, v in r.__dict__.items() if k != "lrs_tried"},
             "lrs_tried": {f"{k:g}": v for k, v in r.lrs_tried.items()}} for r in rows]
    out_md.with_suffix(".json").write_text(json.dumps(dump, indent=1) + "\n")
    return rows


def rows_from_json(path: Path) -> list[Row]:
    """The rows a page wrote beside itself (``SUITE[_MODE].json``), read back."""
    try:
        dump = json.loads(Path(path).read_text())
        return [Row(**{**d, "lrs_tried": {float(k): v for k, v in d.get("lrs_tried", {}).items()}}) for d in dump]
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a bench page's rows ({e})") from e


def _draw_plots(suite: Suite, rows: list[Row], page: Path) -> list[tuple[Plot, Path]]:
    """The suite's plots of ``rows``, beside ``page`` (``STEM_KEY.png`` unless a plot names its
    file); the (plot, file) pairs drawn, a plot with nothing to draw left out."""
    drawn = []
    for spec in suite.plots:
        path = page.parent / (spec.file or f"{page.stem}_{spec.key}.png")
        if plot(rows, spec, path, f"{page.stem}: accuracy vs {spec.xlabel}"):
            drawn.append((spec, path))
    return drawn


def redraw_plots(suite: Suite, page_json: Path) -> list[Path]:
    """Draw a page's plots again from its rows alone (no cell records needed), under the names
    ``write_report`` gave them; returns the files drawn."""
    return [path for _, path in _draw_plots(suite, rows_from_json(page_json), Path(page_json))]
