"""benchmarks/training_curves.py: when runs learn, from their logs, with a clear error for a folder that is not a run."""
from __future__ import annotations

import json

import pytest

from training_helpers import load_benchmark, train_tiny_mqar


def test_first_step_reaching_each_threshold():
    tc = load_benchmark("training_curves")
    curve = [(10, 0.02), (20, 0.3), (30, 0.6), (40, 0.55)]
    assert [tc.first_step(curve, t) for t in tc.THRESHOLDS] == [20, 30, None]


def test_page_has_a_row_per_run_and_the_plot(tmp_path):
    tc = load_benchmark("training_curves")
    run = train_tiny_mqar(tmp_path / "tiny", vocab_size=32, seq_len=16, num_kv_pairs=4, test_size=8)
    out = tmp_path / "curves.md"
    assert tc.main([f"{run}=tiny OBS", str(run), "--out", str(out), "--title", "Tiny"]) == 0
    page = out.read_text()
    assert page.startswith("# Tiny") and f"`python benchmarks/training_curves.py '{run}=tiny OBS'" in page
    rows = [line for line in page.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2 and rows[0].split(" | ")[1:3] == ["obs", "16"] and rows[0].split(" | ")[6] == "2"
    assert out.with_suffix(".png").stat().st_size > 0
    with pytest.raises(SystemExit, match="not a run folder"):
        tc.main([str(tmp_path), "--out", str(out)])
    (run / "metrics.jsonl").write_text('{"step": 2, "kind": "train", "accuracy"')
    with pytest.raises(SystemExit, match="line 1 is not JSON"):
        tc.main([str(run), "--out", str(out)])


def test_a_run_cut_off_before_its_end_is_drawn_to_its_last_step(tmp_path):
    """A bench killed at a device's time limit leaves config and log but no results.json."""
    tc = load_benchmark("training_curves")
    run = train_tiny_mqar(tmp_path / "tiny", vocab_size=32, seq_len=16, num_kv_pairs=4, test_size=8)
    (run / "results.json").unlink()
    out = tmp_path / "curves.md"
    assert tc.main([f"{run}=cut", "--out", str(out)]) == 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| cut"))
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_step = max(r["step"] for r in logged if r["kind"] == "train")
    assert row.endswith(f"| cut off at step {last_step} |") and row.split(" | ")[7] == "-"
