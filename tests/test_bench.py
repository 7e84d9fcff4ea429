"""The benchmark harness: a killed bench resumes and skips finished cells; the results table
picks the best lr and reports mean and spread over seeds; suites build their cells."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from onebigstate.bench.cells import Cell, Eval, Options, Plot, Suite, make_cells
from onebigstate.bench.report import markdown_table, redraw_plots, rows_from_json, summarise, write_report
from onebigstate.bench.suites import SUITES, build_suite
from onebigstate.cli.main import main
from onebigstate.tasks.base import TaskConfig

TINY_SUITE = """
import json, sys
from pathlib import Path
from onebigstate.bench.cells import Eval, Options, Suite, make_cells
from onebigstate.bench.runner import run_suite
from onebigstate.tasks.base import TaskConfig

opts = Options(mode="quick", models=["s4d"], seeds=[0])
cells = []
for body in (10, 11, 12):          # cell folders sort in run order
    task = TaskConfig(name="selective_copy", test_size=16, params={"vocab_size": 8, "body_len": body, "n_tokens": 2})
    cells += make_cells(f"L={body}", task, opts, 16, STEPS, 4, evals=[Eval("grouped")],
                        train_overrides={"ckpt_every": 5, "log_every": 5})
counts = run_suite(Suite("tiny", "tiny", "", cells), Path(sys.argv[1]), log=lambda m: print(m, flush=True))
print("COUNTS " + json.dumps(counts), flush=True)
"""


def _script(tmp_path: Path, steps: int) -> Path:
    p = tmp_path / "tiny_suite.py"
    p.write_text(TINY_SUITE.replace("STEPS", str(steps)))
    return p


@pytest.mark.slow
def test_killed_bench_resumes_and_skips_finished_cells(tmp_path):
    """SIGKILL in the middle of the second cell's training; the rerun skips the first cell,
    resumes the second from its checkpoint and trains the third. (About 10 s on an idle CPU.)"""
    steps = 120
    script, root = _script(tmp_path, steps), tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(root)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    first = second = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            cells = sorted(root.glob("*")) if root.exists() else []
            if len(cells) >= 2:
                first, second = cells[0], cells[1]
                if (first / "bench.json").exists() and (second / "checkpoints" / "last").exists() \
                        and not (second / "results.json").exists():
                    break
            time.sleep(0.02)
        else:
            pytest.fail("the tiny bench never reached the middle of its second cell")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first_bench = (first / "bench.json").read_text()
    first_mtime = (first / "bench.json").stat().st_mtime_ns
    assert not (second / "bench.json").exists()

    out = subprocess.run([sys.executable, str(script), str(root)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    counts = json.loads(out.stdout.split("COUNTS ")[1])
    assert counts == {"skipped": 1, "resumed": 1, "trained": 1}
    assert (first / "bench.json").stat().st_mtime_ns == first_mtime
    assert (first / "bench.json").read_text() == first_bench
    for cell in root.glob("*"):
        res = json.loads((cell / "results.json").read_text())
        assert res["step"] == steps
        assert "all" in json.loads((cell / "bench.json").read_text())["evals"]

    again = subprocess.run([sys.executable, str(script), str(root)], env=env, capture_output=True, text=True,
                           timeout=120)
    assert json.loads(again.stdout.split("COUNTS ")[1]) == {"skipped": 3}


def test_run_suite_skips_finished_cells_and_resumes_a_half_trained_one(tmp_path):
    from onebigstate.bench.runner import run_suite
    cells = _tiny_cells()
    suite = Suite("tiny", "tiny", "", cells)
    root = tmp_path / "runs"
    assert run_suite(Suite("tiny", "tiny", "", cells[:2]), root, log=lambda m: None, commit="abc123") \
        == {"trained": 2}
    bench = json.loads((root / cells[0].name / "bench.json").read_text())
    assert (bench["commit"], bench["command"]) == ("abc123", None) and bench["device"].startswith("CPU")
    # the second cell as a kill after its last checkpoint leaves it: checkpoints, no results
    (root / cells[1].name / "results.json").unlink()
    (root / cells[1].name / "bench.json").unlink()
    before = (root / cells[0].name / "bench.json").stat().st_mtime_ns
    assert run_suite(suite, root, log=lambda m: None) == {"skipped": 1, "resumed": 1, "trained": 1}
    assert (root / cells[0].name / "bench.json").stat().st_mtime_ns == before
    assert json.loads((root / cells[1].name / "results.json").read_text())["step"] == 6
    assert run_suite(suite, root, log=lambda m: None) == {"skipped": 3}


def test_a_cell_folder_of_another_recipe_is_an_error_not_a_skipped_cell(tmp_path):
    """A finished or half-trained cell whose saved config differs from the cell the suite builds
    now (a default model or budget changed since) must not be skipped or resumed under its name."""
    from onebigstate.bench.runner import run_suite
    cell = _tiny_cells(bodies=(10,))[0]
    root = tmp_path / "runs"
    run_suite(Suite("tiny", "tiny", "", [cell]), root, log=lambda m: None)
    assert run_suite(Suite("tiny", "tiny", "", [cell]), root, log=lambda m: None) == {"skipped": 1}
    for changed in (cell.config.model_copy(update={"model": cell.config.model.model_copy(update={"d_model": 8})}),
                    cell.config.model_copy(update={"train": cell.config.train.model_copy(update={"steps": 9})})):
        other = Cell(cell.name, cell.setting, cell.model, cell.lr, cell.seed, changed, cell.x, cell.evals)
        stale = (rf"(?s)1 cell folder\(s\) under .*\n{cell.name}: "
                 r"(model.d_model: saved 16 vs now 8|train.steps: saved 6 vs now 9)")
        for jobs in (1, 2):
            with pytest.raises(ValueError, match=stale):
                run_suite(Suite("tiny", "tiny", "", [other]), root, log=lambda m: None, jobs=jobs)
    # what does not define the measurement (device, progress bars) may differ
    quiet = cell.config.model_copy(update={"train": cell.config.train.model_copy(update={"progress": True})})
    same = Cell(cell.name, cell.setting, cell.model, cell.lr, cell.seed, quiet, cell.x, cell.evals)
    assert run_suite(Suite("tiny", "tiny", "", [same]), root, log=lambda m: None) == {"skipped": 1}
    (root / cell.name / "config.yaml").write_text("model: [unclosed")
    with pytest.raises(ValueError, match="saved run config is unreadable"):
        run_suite(Suite("tiny", "tiny", "", [cell]), root, log=lambda m: None)


def test_report_only_refuses_cells_of_another_recipe(tmp_path, capsys):
    """A page is never written from kept cell records whose config is not the cell the suite
    builds now (the bench's obs became the recipe; a kept plain cell must not become its row)."""
    cell = build_suite("state_tracking", Options(mode="quick", models=["obs"])).cells[0]
    old = cell.config.model_copy(update={"model": build_suite(
        "state_tracking", Options(mode="quick", models=["obs_plain"])).cells[0].config.model})
    folder = tmp_path / "state_tracking_quick" / cell.name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(old.resolved().to_yaml())
    args = ["bench", "state_tracking", "--quick", "--models", "obs", "--out", str(tmp_path), "--docs", str(tmp_path)]
    assert main(args + ["--report-only"]) == 2
    err = capsys.readouterr().err
    assert cell.name in err and "model.mixer.circuit_direct: saved 0.0 vs now 1.0" in err
    assert not (tmp_path / "state_tracking_quick.md").exists()


def test_obs_eval_names_the_bench_cell_before_its_evaluation_is_written(tmp_path, capsys):
    """``cell.json`` is written before training, so an ``obs eval`` probe of a cell still training
    or awaiting evaluation records which cell it is (capacity_curve.py files probes by it)."""
    from onebigstate.bench.runner import cell_identity, run_suite
    cell = _tiny_cells(bodies=(10,))[0]
    root = tmp_path / "runs"
    run_suite(Suite("tiny", "tiny", "", [cell]), root, log=lambda m: None, commit="abc123")
    cell_dir = root / cell.name
    identity = cell_identity(cell_dir)
    assert identity == {"cell": cell.name, "model": "s4d", "seed": 0, "lr": cell.lr, "setting": "L=10",
                        "commit": "abc123"}
    (cell_dir / "bench.json").unlink()
    assert cell_identity(cell_dir) == identity
    out = tmp_path / "probe.json"
    assert main(["eval", str(cell_dir), "task.test_size=4", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["bench"] == identity
    (cell_dir / "cell.json").unlink()          # a plain run folder: no cell to name
    assert cell_identity(cell_dir) is None
    assert main(["eval", str(cell_dir), "task.test_size=4", "--out", str(out)]) == 0
    assert "bench" not in json.loads(out.read_text())
    (cell_dir / "cell.json").write_text('{"cell": "trunc')
    with pytest.raises(ValueError, match="cell.json: not a readable cell record"):
        cell_identity(cell_dir)


def _tiny_cells(bodies=(10, 11, 12)) -> list:
    opts = Options(mode="quick", models=["s4d"], seeds=[0])
    cells = []
    for body in bodies:
        task = TaskConfig(name="selective_copy", test_size=8,
                          params={"vocab_size": 8, "body_len": body, "n_tokens": 2})
        cells += make_cells(f"L={body}", task, opts, 16, 6, 4, evals=[Eval("grouped")],
                            train_overrides={"ckpt_every": 2, "log_every": 2})
    return cells


def test_parallel_jobs_give_the_same_cells_as_one_job(tmp_path):
    from onebigstate.bench.runner import cell_cost, run_suite
    cells = _tiny_cells()
    suite = Suite("tiny", "tiny", "", cells)
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_suite(suite, one, log=lambda m: None) == {"trained": 3}
    logs: list[str] = []
    assert run_suite(Suite("tiny", "tiny", "", cells[:1]), two, log=lambda m: None) == {"trained": 1}
    assert run_suite(suite, two, log=logs.append, jobs=2) == {"skipped": 1, "trained": 2}
    assert len(logs) == 2 and all("trained in" in m for m in logs)
    for c in cells:   # training is seeded per cell: the same numbers whichever process ran it
        a, b = (json.loads((r / c.name / "bench.json").read_text())["evals"] for r in (one, two))
        assert a == b
    assert cell_cost(cells[0]) == 6 * 4     # steps x batch (x seq_len where the task has one)
    assert run_suite(suite, two, log=lambda m: None, jobs=2) == {"skipped": 3}
    with pytest.raises(ValueError, match="jobs"):
        run_suite(suite, two, jobs=0)


def test_cells_out_of_memory_beside_others_run_again_alone(tmp_path):
    from training_helpers import out_of_memory_once

    from onebigstate.bench.runner import run_suite
    logs: list[str] = []
    suite = Suite("tiny", "tiny", "", _tiny_cells((10, 11)))
    assert run_suite(suite, tmp_path, log=logs.append, jobs=2, worker=out_of_memory_once) == {"trained": 2}
    assert sum("failed (RuntimeError: CUDA out of memory" in m for m in logs) == 2
    assert "2 cells ran out of memory beside others (or lost their worker): running them again one at a time" \
        in logs


def test_cells_whose_worker_was_killed_run_again_alone(tmp_path):
    from training_helpers import killed_once

    from onebigstate.bench.runner import run_suite
    logs: list[str] = []
    suite = Suite("tiny", "tiny", "", _tiny_cells((10, 11)))
    assert run_suite(suite, tmp_path, log=logs.append, jobs=2, worker=killed_once) == {"trained": 2}
    assert any("BrokenProcessPool" in m for m in logs)


def test_fla_baselines_are_named_variants_that_say_they_need_fla():
    from onebigstate.bench.cells import FLA_BASELINES, model_config
    from onebigstate.nets.stack import build_model
    cfg = model_config("deltanet_fla", 64, "full")
    assert (cfg.name, cfg.mixer["impl"], cfg.mixer["n_heads"]) == ("deltanet", "fla", 2)
    assert model_config("mamba2_fla", 128, "full").mixer["impl"] == "fla_mamba2"
    assert set(FLA_BASELINES) == {"deltanet_fla", "mamba2_fla"}
    cells = make_cells("x", TaskConfig(name="mqar", test_size=8, params={}), Options(models=["deltanet_fla"]),
                       64, 10, 4)
    assert [c.model for c in cells] == ["deltanet_fla"]
    if importlib.util.find_spec("fla") is None:   # no silent fallback to our own DeltaNet
        with pytest.raises(ImportError, match="flash-linear-attention"):
            build_model(cfg, n_out=16, vocab_size=16)


def _fake_suite() -> Suite:
    cells = []
    for model in ("obs", "lstm"):
        for lr in (1e-3, 1e-2):
            for seed in (0, 1, 2):
                cells.append(Cell(f"{model}_{lr}_{seed}", "T=64 P=4", model, lr, seed, None, {"seq_len": 64},
                                  [Eval("params", "T=128")]))
    return Suite("fake", "Fake suite", "Made-up results.", cells,
                 [Plot("evals", "T", "test length"), Plot("x", "seq_len", "sequence length")])


def _fake_results(suite: Suite) -> dict:
    acc = {("obs", 1e-3): [0.5, 0.6, 0.7], ("obs", 1e-2): [0.9, 1.0, 0.95],
           ("lstm", 1e-3): [0.3, 0.2, 0.1], ("lstm", 1e-2): [0.0, 0.1, 0.2]}
    out = {}
    for c in suite.cells:
        a = acc[(c.model, c.lr)][c.seed]
        size = {"floats": 65_536 + 28, "dense_floats": 65_536} if c.model == "obs" else {"floats": 256}
        out[c.name] = {"metrics": {"accuracy": a, "loss": 1.0}, "evals": {"T=64": a, "T=128": a / 2},
                       "n_params": 1234 if c.model == "obs" else 999, "state_size": size,
                       "written_entries": {"mean": 100.0 + c.seed, "max": 110.0} if c.model == "obs" else None,
                       "wall_time_s": 10.0, "eval_time_s": 2.0, "diverged": False}
    # one lstm seed at lr 1e-2 diverged: it counts as 0
    out["lstm_0.01_0"] = {"diverged": True, "metrics": {"accuracy": 0.0}, "evals": {}, "n_params": None,
                          "state_size": {}, "wall_time_s": None, "written_entries": None}
    return out


def test_table_picks_the_best_lr_and_gives_mean_and_spread(tmp_path):
    suite = _fake_suite()
    rows = {r.model: r for r in summarise(suite.cells, _fake_results(suite))}
    assert rows["obs"].lr == 1e-2 and rows["obs"].accuracy == [0.9, 1.0, 0.95]
    assert rows["lstm"].lr == 1e-3 and rows["lstm"].diverged == 0
    assert rows["obs"].written == pytest.approx(101.0)
    table = markdown_table(list(rows.values()))
    lines = table.splitlines()
    assert lines[0] == ("| setting | model | accuracy | T=64 | T=128 | params | state floats | wall s | lr "
                        "| seeds |")
    assert "| T=64 P=4 | obs | 0.950 ± 0.041 | 0.950 ± 0.041 | 0.475 ± 0.020 | 1,234 | "\
           "65,536 dense / 101 written | 12 | 0.01 | 3 |" in lines
    assert ("| T=64 P=4 | lstm | 0.200 ± 0.082 | 0.200 ± 0.082 | 0.100 ± 0.041 | 999 | 256 | 12 | 0.001 "
            "| 3 |") in lines

    md = tmp_path / "docs" / "fake.md"
    results = _fake_results(suite)
    for i, r in enumerate(results.values()):   # where each cell ran and by which command
        r.update(device="GPU X" if i < 4 else "CPU", command="obs bench fake --full --device cuda" if i < 4 else None)
    write_report(suite, results, md, "obs bench fake --quick", "abc123", "CPU")
    text = md.read_text()
    assert text.startswith("# Fake suite\n\nProduced by `obs bench fake --quick` at commit `abc123` on CPU.")
    assert "12 of 12 cells finished" in text
    assert "; on: GPU X (4); CPU (8)." in text
    assert "Cells trained by: `obs bench fake --full --device cuda` (4)." in text
    assert (tmp_path / "docs" / "fake_T.png").stat().st_size > 1000
    assert (tmp_path / "docs" / "fake_seq_len.png").exists()
    assert json.loads(md.with_suffix(".json").read_text())[0]["model"] == "obs"

    # the page's rows read back equal the rows it was written from, and redraw its plots alone
    written = write_report(suite, results, md, "obs bench fake --quick", "abc123", "CPU")
    assert rows_from_json(md.with_suffix(".json")) == written
    for png in ("fake_T.png", "fake_seq_len.png"):
        (tmp_path / "docs" / png).unlink()
    page = md.read_text()
    assert sorted(p.name for p in redraw_plots(suite, md.with_suffix(".json"))) == ["fake_T.png", "fake_seq_len.png"]
    assert (tmp_path / "docs" / "fake_T.png").stat().st_size > 1000 and md.read_text() == page
    (tmp_path / "bad.json").write_text('{"not": "rows"}')
    with pytest.raises(ValueError, match="bad.json: not a bench page's rows"):
        rows_from_json(tmp_path / "bad.json")


def test_a_diverged_lr_loses_and_is_reported():
    suite = _fake_suite()
    res = _fake_results(suite)
    for s in range(3):                   # every lstm lr-1e-3 run diverged
        res[f"lstm_0.001_{s}"] = res["lstm_0.01_0"]
    row = next(r for r in summarise(suite.cells, res) if r.model == "lstm")
    assert row.lr == 1e-2 and row.diverged == 1
    assert "3 (1 diverged)" in markdown_table([row])


@pytest.mark.parametrize("name", SUITES)
def test_every_suite_builds_quick_and_full_grids(name):
    quick = build_suite(name, Options(mode="quick"))
    full = build_suite(name, Options(mode="full", models=["obs", "deltanet"]))
    assert quick.cells and full.cells
    assert len({c.name for c in quick.cells}) == len(quick.cells)
    assert len({c.name for c in full.cells}) == len(full.cells)
    assert {c.seed for c in full.cells} == {0, 1, 2} and {c.seed for c in quick.cells} == {0}
    assert {c.model for c in full.cells} == {"obs", "deltanet"}
    # one budget per setting: every model gets the same steps and batch
    by_setting = {}
    for c in full.cells:
        by_setting.setdefault(c.setting, set()).add((c.config.train.steps, c.config.train.batch_size))
    assert all(len(v) == 1 for v in by_setting.values())


def test_capacity_full_grid_has_pairs_up_to_4096_at_4x_length():
    suite = build_suite("capacity", Options(mode="full", models=["obs"], seeds=[0]))
    got = {(c.config.task.params["num_kv_pairs"], c.config.task.params["seq_len"], c.config.model.d_model)
           for c in suite.cells}
    assert got == {(P, 4 * P, d) for P in (64, 256, 1024, 4096) for d in (64, 128)}


def test_cli_lists_cells_and_rejects_unknown_names(capsys):
    assert main(["bench", "sequential", "--quick", "--models", "obs,lstm", "--list"]) == 0
    out = capsys.readouterr().out
    assert "selcopy_L32_K4__obs__lr0.003__s0" in out and "4 cells under runs/bench/sequential_quick" in out
    assert main(["bench", "mqar", "--models", "lstm", "--lrs", "1e-3,1e-2", "--seeds", "0,1", "--list"]) == 0
    assert "8 cells" in capsys.readouterr().out
    assert main(["bench", "nope", "--list"]) == 2
    assert main(["bench", "mqar", "--models", "gpt5", "--list"]) == 2
    capsys.readouterr()
    assert main(["bench", "capacity", "--full", "--models", "s4d", "--lrs", "1e-3", "--seeds", "0",
                 "--cells", "P_(64|256)_", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert sorted(n.split("__")[0] for n in names if "__" in n) == sorted(
        f"P_{p}_T_{4 * p}_d_{d}" for p in (64, 256) for d in (64, 128))
    assert main(["bench", "capacity", "--full", "--cells", "nothing-like-this", "--list"]) == 2
    assert main(["bench", "capacity", "--full", "--cells", "(", "--list"]) == 2
    assert main(["bench", "capacity", "--quick", "--jobs", "0", "--list"]) == 2
    capsys.readouterr()
    assert main(["bench", "mqar", "--replot", "--docs", "/nonexistent/docs"]) == 2
    assert "--replot: no page rows at /nonexistent/docs/mqar_quick.json" in capsys.readouterr().err


def test_extrapolation_trains_at_another_setting_with_the_same_tokens_per_step(capsys):
    """--train T:P: the readout meets more pairs in training; the test columns and token budget stay."""
    own = build_suite("extrapolation", Options(mode="cpu", models=["obs"]))
    more = build_suite("extrapolation", Options(mode="cpu", models=["obs"], train=(512, 128)))
    (a,), (b,) = own.cells, more.cells
    assert b.name == "train_T_512_P_128_d_64__obs__lr0.003__s0"
    assert (b.config.task.params["seq_len"], b.config.task.params["num_kv_pairs"]) == (512, 128)
    assert b.config.train.batch_size * 512 == a.config.train.batch_size * 128 and b.config.train.steps == 1000
    assert b.evals == a.evals
    with pytest.raises(ValueError, match="4 tokens per pair"):
        build_suite("extrapolation", Options(mode="cpu", train=(500, 128)))
    with pytest.raises(ValueError, match="suite 'retention' has none to set"):
        build_suite("retention", Options(mode="cpu", train=(512, 128)))
    assert main(["bench", "extrapolation", "--cpu", "--models", "obs", "--train", "512:128", "--list"]) == 0
    assert "1 cells under runs/bench/extrapolation_cpu_train_T512_P128" in capsys.readouterr().out
    assert main(["bench", "extrapolation", "--cpu", "--train", "512", "--list"]) == 2
    assert "--train: expected T:P" in capsys.readouterr().err


def test_steps_set_every_suites_budget_in_its_own_folder(capsys):
    """--steps: every suite's cells train for N steps (warm-up, checkpoints and the page's text follow),
    nothing else changes, and the cells and page go to their own folder."""
    for name in SUITES:
        own = build_suite(name, Options(mode="quick", models=["lstm"]))
        longer = build_suite(name, Options(mode="quick", models=["lstm"], steps=300))
        assert [c.name for c in longer.cells] == [c.name for c in own.cells]
        for a, b in zip(own.cells, longer.cells):
            assert (b.config.train.steps, b.config.train.warmup, b.config.train.ckpt_every) == (300, 30, 75)
            assert b.config.train.model_copy(update={"steps": a.config.train.steps, "warmup": a.config.train.warmup,
                                                     "ckpt_every": a.config.train.ckpt_every,
                                                     "log_every": a.config.train.log_every}) == a.config.train
            assert (b.config.task, b.config.model, b.evals) == (a.config.task, a.config.model, a.evals)
        assert "300 steps" in longer.description and "300 steps" not in own.description
    with pytest.raises(ValueError, match="--steps: expected at least 10"):
        build_suite("mqar", Options(steps=0))
    assert main(["bench", "extrapolation", "--cpu", "--models", "obs", "--widths", "128", "--steps", "3000",
                 "--list"]) == 0
    assert "1 cells under runs/bench/extrapolation_cpu_d128_steps3000" in capsys.readouterr().out


def test_train_delay_sets_the_seeandhear_training_delays_in_its_own_folder(capsys):
    """--train-delay D: see-and-hear cells train with queries up to D steps after their pairing, the batch
    scaled to about as many steps, the evaluation unchanged; other suites refuse it."""
    from onebigstate.bench.suites.seeandhear import train_batch
    own = build_suite("seeandhear", Options(mode="cpu", models=["lstm"]))
    longer = build_suite("seeandhear", Options(mode="cpu", models=["lstm"], train_delay=300))
    a, b = own.cells[0], longer.cells[0]
    assert (a.config.task.params["delay_max"], b.config.task.params["delay_max"]) == (30, 300)
    assert a.config.train.batch_size == 32 and b.config.train.batch_size == train_batch(32, 300) < 32
    assert (b.evals, b.config.model) == (a.evals, a.config.model)
    assert "3 to 300 steps after the pairing" in longer.description
    with pytest.raises(ValueError, match="suite 'mqar' has none to set"):
        build_suite("mqar", Options(train_delay=300))
    with pytest.raises(ValueError, match="at least 3 steps"):
        build_suite("seeandhear", Options(train_delay=2))
    assert main(["bench", "seeandhear", "--cpu", "--models", "obs", "--train-delay", "300", "--list"]) == 0
    assert "1 cells under runs/bench/seeandhear_cpu_delay300" in capsys.readouterr().out


def test_widths_run_other_widths_in_their_own_folder(capsys):
    """--widths: the same settings and budget at other widths (the baselines keep 2 heads); a suite without
    a width grid says so; the cells and page go to their own folder, never the mode's."""
    own = build_suite("extrapolation", Options(mode="cpu", models=["obs", "transformer"]))
    wide = build_suite("extrapolation", Options(mode="cpu", models=["obs", "transformer"], widths=(128,)))
    assert [c.name.replace("d_128", "d_64") for c in wide.cells] == [c.name for c in own.cells]
    for a, b in zip(own.cells, wide.cells):
        assert b.config.model.d_model == 128 and a.config.model.d_model == 64
        assert (b.config.task, b.config.train, b.evals) == (a.config.task, a.config.train, a.evals)
    assert wide.cells[-1].config.model.mixer["n_heads"] == 2     # heads of width 64, as the reference
    both = build_suite("capacity", Options(mode="quick", models=["lstm"], widths=(64, 128)))
    assert {(c.x["pairs"], c.x["width"]) for c in both.cells} == {(P, d) for P in (8, 16, 32) for d in (64, 128)}
    full = build_suite("mqar", Options(mode="full", models=["lstm"], seeds=[0], lrs=[1e-3])).cells
    assert build_suite("mqar", Options(mode="full", models=["lstm"], seeds=[0], lrs=[1e-3], widths=(128,))).cells \
        == full[len(full) // 2:]   # the full grid's width-128 half, in its order
    with pytest.raises(ValueError, match="suite 'retention' runs at width 64 only"):
        build_suite("retention", Options(mode="cpu", widths=(128,)))
    for bad in ((66,), (128, 128)):      # heads of odd width (33); a width twice (the same cell names)
        with pytest.raises(ValueError, match="distinct positive multiples of 4"):
            build_suite("mqar", Options(widths=bad))
    assert main(["bench", "extrapolation", "--cpu", "--models", "obs", "--widths", "128", "--train", "512:128",
                 "--list"]) == 0
    assert "1 cells under runs/bench/extrapolation_cpu_train_T512_P128_d128" in capsys.readouterr().out
    assert main(["bench", "capacity", "--widths", "64,x", "--list"]) == 2
    assert "--widths: expected comma-separated integers" in capsys.readouterr().err


def test_params_eval_longer_than_training_reads_in_windows_of_the_training_length(monkeypatch):
    import torch

    import onebigstate.bench.evaluate as evaluate_mod
    from onebigstate.tasks.registry import build_task
    from onebigstate.training.trainer import evaluate
    task_cfg = TaskConfig(name="mqar", test_size=64, params={"vocab_size": 72, "seq_len": 16, "num_kv_pairs": 2})
    cell = make_cells("x", task_cfg, Options(models=["lstm"]), 16, 2, 4)[0]
    task = build_task(task_cfg)
    torch.manual_seed(0)
    model = task.build_model(cell.config.model)
    windows: list[int] = []
    real = evaluate_mod.grouped_accuracy
    monkeypatch.setattr(evaluate_mod, "grouped_accuracy",
                        lambda *a, **k: windows.append(k["window"]) or real(*a, **k))
    longer = {"seq_len": 64, "num_kv_pairs": 8}
    out = evaluate_mod.run_eval(Eval("params", "T=64", longer), model, task, cell.config)
    assert windows == [16]
    other = build_task(task_cfg.model_copy(update={"params": {**task_cfg.params, **longer}}))
    # an untrained model, but a small vocabulary: some answers right by chance, so equality says something
    assert out == {"T=64": evaluate(model, other, 64)["accuracy"]} and out["T=64"] > 0
    assert evaluate_mod.run_eval(Eval("params", "T=16", {}), model, task, cell.config) == \
        {"T=16": evaluate(model, task, 64)["accuracy"]} and windows == [16]


@pytest.mark.parametrize("name", ["lstm", "obs"])
def test_lifelong_windows_with_carried_state_equal_one_pass(name):
    import torch

    from onebigstate.bench.cells import model_config
    from onebigstate.bench.evaluate import grouped_accuracy, written_entries
    from onebigstate.tasks.registry import build_task
    task = build_task(TaskConfig(name="retention", test_size=4,
                                 params={"vocab_size": 32, "n_pairs": 4, "seq_len": 20,
                                         "test_distances": [2, 6, 14, 30], "lifelong_streams": 3}))
    cfg = model_config(name, 16, "quick")
    if name == "obs":
        cfg = cfg.model_copy(update={"mixer": {"n_nodes": 24, "k_min": 2, "k_max": 4, "m_active": 4}})
    torch.manual_seed(0)
    model = task.build_model(cfg)
    data = task.lifelong_set()
    whole = grouped_accuracy(model, data, batch_size=2)
    windowed = grouped_accuracy(model, data, batch_size=2, window=7)
    assert whole == windowed and set(whole) == {"d=2", "d=6", "d=14", "d=30", "all"}
    written = written_entries(model, task, n=4)
    if name == "obs":
        assert 0 < written["mean"] <= written["max"] <= 24 * 24
    else:
        assert written is None


def test_cpu_mode_gives_every_model_one_budget_and_the_baselines_an_lr_sweep():
    from onebigstate.bench.suites import CPU_SUITES
    for name in CPU_SUITES:
        suite = build_suite(name, Options(mode="cpu", models=["obs", "obs_balanced", "deltanet"]))
        budget = (2000, 32) if name == "acting" else (1000, 32)    # acting's streams are short: a longer budget
        assert {(c.config.train.steps, c.config.train.batch_size) for c in suite.cells} == {budget}
        lrs = {m: sorted({c.lr for c in suite.cells if c.model == m}) for m in ("obs", "obs_balanced", "deltanet")}
        assert lrs == {"obs": [3e-3], "obs_balanced": [3e-3], "deltanet": [3e-3, 1e-2]}
        assert {c.seed for c in suite.cells} == {0}
        balanced = next(c for c in suite.cells if c.model == "obs_balanced").config.model.mixer
        assert balanced["balance_cost"] > 0 and balanced["n_nodes"] == 1024
        # the bench's obs is its measured recipe, the variant obs_balanced_rownorm_direct1 by another name
        from onebigstate.bench.cells import model_config
        recipe = next(c for c in suite.cells if c.model == "obs").config.model
        assert recipe == model_config("obs_balanced_rownorm_direct1", 64, "cpu")
        assert recipe.mixer["circuit_direct"] == 1.0 and recipe.mixer["row_norm"]
    variants = build_suite("retention", Options(mode="cpu", models=["obs_rownorm", "obs_balanced_rownorm",
                                                                    "obs_balanced_rownorm_n4096"])).cells
    mixers = {c.model: c.config.model.mixer for c in variants}
    # a variant of a past sweep is its settings over the plain layer, the layer's defaults when it ran
    assert mixers["obs_rownorm"]["row_norm"] and mixers["obs_rownorm"]["balance_cost"] == 0.0
    assert mixers["obs_rownorm"]["circuit_direct"] == 0.0
    assert mixers["obs_balanced_rownorm"]["row_norm"] and mixers["obs_balanced_rownorm"]["balance_cost"] > 0
    assert mixers["obs_balanced_rownorm"]["n_nodes"] == 1024
    assert {**mixers["obs_balanced_rownorm"], "n_nodes": 4096} == mixers["obs_balanced_rownorm_n4096"]
    plain = build_suite("retention", Options(mode="quick", models=["obs_plain"])).cells[0].config.model.mixer
    assert plain == {"n_nodes": 256, "k_min": 4, "k_max": 12, "m_active": 16, "balance_cost": 0.0,
                     "row_norm": False, "circuit_direct": 0.0}   # the layer's defaults before the recipe
    # every variant, current or of a past sweep, is a valid OBS layer config
    from onebigstate.bench.cells import VARIANTS, history_variants, model_config
    from onebigstate.model.config import OBSConfig
    history = history_variants()
    assert "obs_balanced_rownorm_n16384_direct1" in history and not set(history) & set(VARIANTS)
    for name, settings in [*VARIANTS.items(), *((n, h["settings"]) for n, h in history.items())]:
        cfg = OBSConfig(d_model=64, **model_config(name, 64, "cpu").mixer)
        assert cfg.n_nodes == settings.get("n_nodes", 1024)
    # the recipe is the layer's default
    assert OBSConfig(**model_config("obs", 64, "cpu").mixer) == OBSConfig(n_nodes=1024, k_min=4, k_max=12, m_active=16)
    assert OBSConfig(**model_config("obs_balanced_rownorm_n16384", 64, "cpu").mixer).state_backend == "sparse"
    with pytest.raises(ValueError, match="no --cpu grid"):
        build_suite("sequential", Options(mode="cpu"))
    assert main(["bench", "capacity", "--cpu", "--list"]) == 2


def test_commit_given_in_the_environment_wins_over_git(monkeypatch):
    """A tree copied to a GPU machine may hold a stale .git; the sender names the commit."""
    from onebigstate.cli.bench import git_commit
    monkeypatch.delenv("OBS_GIT_COMMIT", raising=False)
    assert git_commit() != ""
    monkeypatch.setenv("OBS_GIT_COMMIT", "abc123")
    assert git_commit() == "abc123 (as given by OBS_GIT_COMMIT)"


def test_seeandhear_suite_measures_recall_against_delay_exposures_and_direction():
    import torch

    from onebigstate.bench.evaluate import recall_columns
    from onebigstate.data.seeandhear import load_seeandhear
    from onebigstate.data.streams import StreamConfig, generate_streams
    from onebigstate.nets.stack import ModelConfig
    from onebigstate.tasks.seeandhear_task import StreamSeqModel, n_targets
    suite = build_suite("seeandhear", Options(mode="quick", models=["obs", "lstm"]))
    assert {c.model for c in suite.cells} == {"obs", "lstm"}
    ev = suite.cells[0].evals[0]
    assert ev.kind == "recall" and ev.params["delays"] == [10, 100, 1000] and ev.params["object_to_word"]
    assert {p.key for p in suite.plots} == {"d", "exp"}
    cfg = suite.cells[0].config
    layout = generate_streams(StreamConfig(), 1, 0).layout
    torch.manual_seed(0)
    model = StreamSeqModel(ModelConfig(name="obs", d_model=16, mixer={"n_nodes": 32, "k_min": 2, "k_max": 4,
                                                                          "m_active": 4}),
                           n_targets(load_seeandhear()), layout)
    cols = recall_columns(model, cfg, {"delays": [5, 20], "exposures": [1, 2], "exposure_delay": 5, "n_streams": 4,
                                       "window": 16, "object_to_word": True})
    assert set(cols) == {"d=5", "d=20", "exp=1", "exp=2", "obj->word"}
    assert all(0 <= v <= 1 for v in cols.values())
    assert cols["d=5"] == cols["exp=1"]                    # one condition, two columns


def test_acting_suite_trains_and_reports_the_task_metrics_as_columns(tmp_path):
    """obs bench acting: OBS with its discretiser and a baseline a few steps each; the page has the grid
    world's held-out metrics (new, repeated actions, questions) as columns."""
    out, docs = tmp_path / "runs", tmp_path / "docs"
    assert main(["bench", "acting", "--quick", "--models", "obs_fsq,lstm", "--steps", "10", "--out", str(out),
                 "--docs", str(docs)]) == 0
    page = (docs / "acting_quick_steps10.md").read_text()
    assert "| novel action | repeated action | query |" in page
    assert "| grid world | obs_fsq |" in page and "| grid world | lstm |" in page
    cell = json.loads((out / "acting_quick_steps10" / "acting__obs_fsq__lr0.003__s0" / "bench.json").read_text())
    assert set(cell["evals"]) == {"novel action", "repeated action", "query"}
    assert yaml.safe_load((out / "acting_quick_steps10" / "acting__obs_fsq__lr0.003__s0" / "config.yaml")
                          .read_text())["model"]["discretiser"]["kind"] == "fsq"


def test_stacked_obs_models_change_the_stack_and_keep_the_recipe():
    from onebigstate.bench.cells import OBS_RECIPE, model_config
    plain, mlp, two = (model_config(n, 64, "cpu") for n in ("obs", "obs_mlp", "obs_2l"))
    assert (plain.n_layers, plain.mlp_ratio) == (1, 0.0)
    assert (mlp.n_layers, mlp.mlp_ratio) == (1, 4.0) and (two.n_layers, two.mlp_ratio) == (2, 0.0)
    assert all(m.mixer == plain.mixer and OBS_RECIPE.items() <= m.mixer.items() for m in (mlp, two))
    both = model_config("obs_mlp_persist1", 64, "cpu")
    assert both.mlp_ratio == 4.0 and both.mixer == {**plain.mixer, "active_persist": 1.0}


def test_metrics_eval_shows_the_trainers_final_metrics_and_needs_them():
    from onebigstate.bench.evaluate import run_eval
    ev = Eval("metrics", params={"columns": {"acc_query": "query"}})
    assert run_eval(ev, None, None, None, {"acc_query": 0.25, "accuracy": 0.5}) == {"query": 0.25}
    with pytest.raises(ValueError, match="pass final_metrics"):
        run_eval(ev, None, None, None)
