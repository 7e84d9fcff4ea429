"""``obs bench speed``: the grid, one cell measured end to end, and the page's target verdicts."""
from __future__ import annotations

import pytest

from onebigstate.bench.speed import SpeedCell, grid, measure, read_rows
from onebigstate.bench.speed_report import repeat_lines, target_lines
from training_helpers import obs_cli


def test_the_cpu_grid_has_the_targets_side_by_side_and_every_model_on_each_sweep():
    cells = grid("cpu", "cpu", threads=2)
    names = [c.name for c in cells]
    assert len(names) == len(set(names))
    targets = [c for c in cells if c.axis == "target"]
    assert {c.threads for c in targets} == {1, 2}
    for n in (1024, 4096):   # the scan aim: both backends at the same setting and thread count
        assert {c.backend for c in targets if c.what == "scan" and c.n_nodes == n and c.threads == 1} == \
            {"cpu", "reversible"}
    sweep = {c.label for c in cells if c.axis == "seq_len"}
    assert {"obs (cpu)", "obs (reversible)", "deltanet", "transformer", "mamba"} <= sweep
    assert {c.n_nodes for c in cells if c.axis == "n_nodes"} == {1024, 4096, 16384, 65536}
    with pytest.raises(ValueError, match="unknown speed mode"):
        grid("huge", "cpu", 1)


def test_a_cell_measures_forward_backward_and_memory():
    res = measure(SpeedCell(what="scan", model="obs", batch=2, seq_len=8, n_nodes=32, backend="cpu"),
                  min_seconds=0.0, max_repeats=2)
    assert res["tok_s_fwd"] > 0 and res["tok_s_fwd_bwd"] > 0
    assert res["s_fwd_bwd"] == pytest.approx(16 / res["tok_s_fwd_bwd"])
    assert res["peak_mb"] >= 0 and res["params"] > 0


def _row(label, what, s, threads=1, **kw):
    base = dict(what=what, model=label.split()[0], label=label, batch=32, seq_len=256, n_nodes=1024,
                threads=threads, axis="target", tok_s_fwd=1.0, tok_s_fwd_bwd=1.0, s_fwd=s, s_fwd_bwd=s,
                peak_mb=1.0, params=1, width=64, pairs=None, state_backend="dense")
    return {**base, **kw}


def test_target_verdicts_are_ratios_of_rows_of_the_run():
    rows = [_row("obs (cpu)", "scan", 0.1), _row("obs (reversible)", "scan", 0.8),
            _row("obs (cpu)", "scan", 0.1, n_nodes=4096), _row("obs (reversible)", "scan", 1.5, n_nodes=4096)]
    lines = "\n".join(target_lines(rows))
    assert "| 8.0x | 10x | no: 0.80 of the aim |" in lines
    assert "| 15.0x | 10x | yes |" in lines


def test_settings_measured_twice_are_listed_with_their_spread():
    rows = [_row("obs (cpu)", "model", 0.1, axis="seq_len", n_nodes=None, tok_s_fwd_bwd=100.0),
            _row("obs (cpu)", "model", 0.1, axis="n_nodes", n_nodes=1024, tok_s_fwd_bwd=150.0),
            _row("lstm", "model", 0.1, axis="seq_len", n_nodes=None)]
    lines = "\n".join(repeat_lines(rows))
    assert "| obs (cpu) | 32 | 256 | 100 | 150 | 1.50 |" in lines and "lstm" not in lines


def test_obs_bench_speed_quick_writes_its_page(tmp_path):
    obs_cli("bench", "speed", "--quick", "--models", "obs,lstm", "--threads", "1", "--docs", str(tmp_path),
            timeout=300)
    meta, rows = read_rows(tmp_path / "speed_quick.json")
    assert meta["command"].startswith("obs bench speed --quick") and meta["commit"]
    assert {r["label"] for r in rows} >= {"obs (cpu)", "obs (reversible)", "lstm"}
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    page = (tmp_path / "speed_quick.md").read_text()
    assert "obs bench speed --quick" in page and "| lstm |" in page
    assert (tmp_path / "speed_quick_seq_len.png").exists()
    # the page can be written again from the rows alone, and says so
    obs_cli("bench", "speed", "--quick", "--models", "obs,lstm", "--threads", "1", "--docs", str(tmp_path),
            "--report-only")
    again = (tmp_path / "speed_quick.md").read_text()
    assert "| lstm |" in again and "Page written again from its rows" in again
    assert read_rows(tmp_path / "speed_quick.json")[1] == rows


def test_a_profile_names_where_the_time_goes():
    from onebigstate.bench.speed_profile import profile_cell
    ops = profile_cell(SpeedCell(what="layer", model="obs", batch=2, seq_len=8, n_nodes=32, backend="cpu"))
    assert 0 < len(ops) <= 8 and all(o["self_ms"] >= 0 for o in ops)
    assert sum(o["share"] for o in ops) <= 1 + 1e-9 and ops[0]["share"] >= ops[-1]["share"]
    assert any("obs_cpu" in o["op"] for o in ops)
