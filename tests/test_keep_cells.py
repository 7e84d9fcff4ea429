"""benchmarks/keep_cells.py: a page's cell records, kept apart from the run folders, read back the same."""
from __future__ import annotations

from onebigstate.bench.cells import Suite
from onebigstate.bench.runner import load_cell, run_suite
from tests.test_bench import _tiny_cells
from training_helpers import load_benchmark


def test_kept_records_give_the_same_cells_without_checkpoints(tmp_path):
    kc = load_benchmark("keep_cells")
    cells = _tiny_cells((10, 11))
    src, dest = tmp_path / "runs" / "tiny", tmp_path / "kept" / "tiny"
    run_suite(Suite("tiny", "tiny", "", cells), src, log=lambda m: None, commit="abc123")
    (src / cells[1].name / "bench.json").unlink()                # an unfinished cell is not kept
    assert kc.keep(src, dest, "^L_") == [cells[0].name]
    assert load_cell(cells[0], dest) == load_cell(cells[0], src)
    assert load_cell(cells[1], dest) is None
    kept = {p.name for p in (dest / cells[0].name).iterdir()}
    assert kept == {"results.json", "bench.json", "config.yaml"}     # no checkpoints, no logs
    assert kc.keep(src, tmp_path / "none", "no such cell") == []
    assert kc.keep(src, tmp_path / "logs", with_log=True) == [cells[0].name]   # the log, for training_curves
    assert (tmp_path / "logs" / cells[0].name / kc.METRICS_FILE).read_bytes() \
        == (src / cells[0].name / kc.METRICS_FILE).read_bytes()
