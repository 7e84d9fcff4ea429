"""Tables of a see-and-hear comparison: rich (terminal) and markdown (results pages)."""
from __future__ import annotations

import math

from rich.table import Table

from onebigstate.experiments.recall import RecallResult

WORD_TO_OBJECT, OBJECT_TO_WORD = "word->object", "object->word"


def _cell(res: RecallResult | None, kind: str, e: int, d: int) -> str:
    if res is None:
        return "-"
    acc, n = res.accuracy(kind, e, d)
    return "-" if math.isnan(acc) else f"{acc:.2f}"


def _columns(exp) -> list[tuple[str, str, int, int]]:
    """(header, kind, exposures, delay) of every recall column."""
    g = exp.grid
    cols = [(f"w->o d={d}", WORD_TO_OBJECT, 1, d) for d in g.delays]
    cols += [(f"w->o e={e}", WORD_TO_OBJECT, e, g.exposure_delay) for e in g.exposures if e != 1]
    if g.object_to_word:
        cols += [(f"o->w d={d}", OBJECT_TO_WORD, 1, d) for d in g.delays]
    return cols


def budget_line(exp, rows: list[dict]) -> str:
    steps = sorted({r["steps"] for r in rows})
    b = exp.train.batch_size
    params = ", ".join(f"{r['label']} {r['params']:,}" for r in rows)
    return (f"same budget: {'/'.join(map(str, steps))} steps of {b} streams each; parameters: {params}; "
            f"{exp.grid.n_streams} held-out streams per condition")


def rich_table(exp, rows: list[dict], recalls: dict[str, dict[str, RecallResult]], title: str) -> Table:
    o2w = ("; o->w: object to word (digit and extra words in fresh pairings, test voices), chance 0.02"
           if exp.grid.object_to_word else "")
    table = Table(title=title, caption=budget_line(exp, rows) + ". w->o: word to object, words never heard in "
                  f"training, test voices, chance 0.10{o2w}; d: delay in steps after 1 exposure; e: exposures at "
                  f"d={exp.grid.exposure_delay}. Streamed in {exp.grid.window}-step windows with carried state.")
    table.add_column("model")
    table.add_column("params", justify="right")
    table.add_column("train s", justify="right")
    cols = _columns(exp)
    for head, *_ in cols:
        table.add_column(head, justify="right")
    table.add_column("checkpoint")
    for r in rows:
        cells = [_cell(recalls.get(kind, {}).get(r["label"]), kind, e, d) for _, kind, e, d in cols]
        table.add_row(f"{r['label']} ({r['layers']}L)", f"{r['params']:,}", f"{r['train_s']:.0f}", *cells,
                      "loaded" if r["source"].startswith("loaded") else "trained")
    return table


def markdown_tables(exp, rows: list[dict], recalls: dict[str, dict[str, RecallResult]]) -> str:
    g = exp.grid
    lines = [budget_line(exp, rows) + ".", ""]
    lines += ["| model | layers | params | train steps | train s | recall eval s |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['layers']} | {r['params']:,} | {r['steps']} | {r['train_s']:.0f} | "
                     f"{r['eval_s']:.0f} |")
    for kind in (WORD_TO_OBJECT, OBJECT_TO_WORD):
        res = recalls.get(kind, {})
        if not res:
            continue
        lines += _recall_table(f"**{kind}**, 1 exposure, against delay (accuracy, queries):", rows, res,
                               [(f"d={d}", lambda r, d=d: r.accuracy(kind, 1, d)) for d in g.delays])
        lines += _recall_table(f"**{kind}** at delay {g.exposure_delay}, against exposures:", rows, res,
                               [(f"e={e}", lambda r, e=e: r.accuracy(kind, e, g.exposure_delay))
                                for e in g.exposures])
    return "\n".join(lines) + "\n"


def _recall_table(caption: str, rows: list[dict], res: dict[str, RecallResult], columns: list) -> list[str]:
    """Markdown lines of one recall table: a row per model, a column per ``(head, accuracy_of_result)``."""
    lines = ["", caption, "", "| model | " + " | ".join(head for head, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for _, accuracy in columns:
            acc, n = accuracy(res[r["label"]]) if r["label"] in res else (float("nan"), 0)
            cells.append("-" if math.isnan(acc) else f"{acc:.3f} ({n})")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines
