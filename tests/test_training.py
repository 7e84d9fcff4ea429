"""The training loop: exact resumption after a kill, lifelong state carried through checkpoints,
a NaN loss that stops the run without harming checkpoints, outputs of a finished run, the
optimizer's parameter groups and the determinism of the task's batches."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from onebigstate.config import StrictModel, build_config
from onebigstate.tasks.base import TEST_SEED_OFFSET, Task, TaskConfig, batch_seed, heldout_seed
from onebigstate.tasks.mqar_task import MQARTask
from onebigstate.tasks.registry import build_task, register_task
from onebigstate.training.checkpoint import read_checkpoint
from onebigstate.training.config import RunConfig, TrainConfig
from onebigstate.training.optim import build_optimizer, lr_factor, param_settings
from onebigstate.training.trainer import TrainingDiverged, train
from training_helpers import ROOT, read_metrics, single_thread, tiny_tree, write_config


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(overrides: list[str] | None = None, **train_kw) -> RunConfig:
    return build_config(RunConfig, tiny_tree(**train_kw), overrides)


def _last_step(run_dir) -> int | None:
    last = run_dir / "checkpoints" / "last"
    return int(os.readlink(last).split("_")[1]) if last.is_symlink() else None


def test_killed_run_resumes_to_identical_metrics(tmp_path):
    """SIGKILL `obs train` after its first checkpoint, resume it: metrics.jsonl equals an uninterrupted run's."""
    cfg_file = write_config(tmp_path / "run.yaml", steps=40, ckpt_every=4, log_every=2, eval_every=20)
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "onebigstate.cli.main", "train", str(cfg_file), "--out",
                             str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Kill once a checkpoint exists and the run has logged past it (so resuming must drop lines).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        step = _last_step(killed)
        if step is not None and (killed / "metrics.jsonl").exists():
            logged = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()
                      if x.endswith("}")]
            if logged and logged[-1] > step:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way: {proc.stderr.read()}"
    assert not (killed / "results.json").exists()
    ckpt_step = _last_step(killed)
    assert 0 < ckpt_step < 40

    from onebigstate.cli.main import main
    with single_thread():
        assert main(["train", "--resume", str(killed)]) == 0
        assert main(["train", str(cfg_file), "--out", str(tmp_path / "whole")]) == 0
    resumed = (killed / "metrics.jsonl").read_text()
    assert resumed == (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert len(resumed.splitlines()) == 40 // 2 + 40 // 20
    a = json.loads((killed / "results.json").read_text())
    b = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert a["metrics"] == b["metrics"] and a["step"] == b["step"] == 40


def test_lifelong_resume_restores_big_state_exactly(tmp_path):
    """carry_state: a run stopped at step 6 and continued to 12 equals a 12-step run; S keeps growing."""
    kw = dict(carry_state=True, cosine=False, warmup=0, eval_every=6, ckpt_every=6, log_every=2)
    with single_thread():
        train(_cfg(steps=12, **kw), tmp_path / "whole")
        train(_cfg(steps=6, **kw), tmp_path / "parts")
        first = read_checkpoint(tmp_path / "parts")
        (s6,) = first.states()
        train(_cfg(steps=12, **kw), tmp_path / "parts", resume=first)
    assert read_metrics(tmp_path / "parts") == read_metrics(tmp_path / "whole")
    (s12,) = read_checkpoint(tmp_path / "parts").states()
    (w12,) = read_checkpoint(tmp_path / "whole").states()
    assert torch.equal(s12.S, w12.S) and torch.equal(s12.touched, w12.touched)
    # carried, not reset per batch: the streams' written entries keep accumulating
    assert (s12.entries_written() > s6.entries_written()).all()


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss = MQARTask.loss
    calls = {"n": 0}

    def loss_with_nan_at_step_7(self, outputs, labels):
        calls["n"] += 1
        loss = real_loss(self, outputs, labels)
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(MQARTask, "loss", loss_with_nan_at_step_7)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 7.*last good checkpoint .*step_00000006 is intact"):
        train(_cfg(steps=12, ckpt_every=2, keep_checkpoints=1), tmp_path / "run")
    ckpt = read_checkpoint(tmp_path / "run")  # verifies sizes and checksums
    assert ckpt.step == 6
    assert all(torch.isfinite(t).all() for t in ckpt.model_tensors().values())
    assert not (tmp_path / "run" / "results.json").exists()


def test_huge_lr_reports_divergence_through_cli(tmp_path, capsys):
    from onebigstate.cli.main import main
    cfg_file = write_config(tmp_path / "run.yaml", steps=40, ckpt_every=1, grad_clip=0.0)
    rc = main(["train", str(cfg_file), "--out", str(tmp_path / "run"), "train.lr=1e30",
               "train.weight_decay=0.0"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "obs train: stopped:" in err and ("nan" in err or "inf" in err)
    ckpt = read_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in ckpt.model_tensors().values())


def test_finished_run_writes_results_config_tensorboard_and_metrics(tmp_path):
    with single_thread():
        res = train(_cfg(), tmp_path / "run")
    run = tmp_path / "run"
    saved = json.loads((run / "results.json").read_text())
    assert saved == res
    assert set(saved["metrics"]) == {"loss", "accuracy"} and 0.0 <= saved["metrics"]["accuracy"] <= 1.0
    assert saved["n_params"] == sum(p.numel() for p in build_model_of(_cfg()).parameters())
    assert saved["state_size"]["dense_floats"] == 32 * 32
    assert saved["wall_time_s"] > 0
    assert build_config(RunConfig, __import__("yaml").safe_load((run / "config.yaml").read_text())) \
        .identity() == _cfg().identity()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    records = read_metrics(run)
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [6, 12]
    final_eval = [r for r in records if r["kind"] == "eval"][-1]
    assert {k: final_eval[k] for k in saved["metrics"]} == saved["metrics"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last", "step_00000012"]


def build_model_of(cfg: RunConfig):
    from onebigstate.training.trainer import build_run
    return build_run(cfg)[1]


def test_obs_learns_mqar_a_little_in_few_steps(tmp_path):
    """Loss falls on the tiny task within 40 steps (the loop really trains)."""
    with single_thread():
        train(_cfg(steps=40, lr=1e-2, log_every=10, eval_every=0, ckpt_every=0), tmp_path / "run")
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert losses[-1] < losses[0] - 0.2


def test_compiled_and_python_scans_train_the_same_loss_curve(tmp_path):
    """50 MQAR steps (the bench recipe's switches, float32) on backend cpu and reversible: the
    training losses agree step for step within 1e-5 relative (measured: 1.2e-7, float32 rounding)."""
    curves = {}
    for backend in ("reversible", "cpu"):
        tree = tiny_tree(steps=50, log_every=1, eval_every=0, ckpt_every=0, warmup=5, batch_size=8)
        tree["task"]["params"] = {"vocab_size": 64, "seq_len": 32, "num_kv_pairs": 4}
        tree["model"]["mixer"].update(n_nodes=64, backend=backend, row_norm=True, circuit_direct=1.0)
        with single_thread():
            train(build_config(RunConfig, tree), tmp_path / backend, log=lambda m: None)
        curves[backend] = [r["loss"] for r in read_metrics(tmp_path / backend) if r["kind"] == "train"]
    assert len(curves["cpu"]) == 50
    assert curves["cpu"][-1] < curves["cpu"][0] - 0.2          # it trains
    for step, (a, b) in enumerate(zip(curves["reversible"], curves["cpu"])):
        assert abs(a - b) <= 1e-5 * abs(a), (step, a, b)


class _Tagged(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.keys = nn.Parameter(torch.randn(6, 4))
        self.keys._optim = {"weight_decay": 0.0, "lr": 1e-4}
        self.frozen = nn.Parameter(torch.randn(3, 3), requires_grad=False)


def test_optimizer_groups_skip_decay_for_bias_norm_embedding_and_honour_optim_tags(capsys):
    model = _Tagged()
    settings = param_settings(model, 0.1)
    assert settings == {"emb.weight": {"weight_decay": 0.0}, "lin.weight": {"weight_decay": 0.1},
                        "lin.bias": {"weight_decay": 0.0}, "norm.weight": {"weight_decay": 0.0},
                        "norm.bias": {"weight_decay": 0.0}, "keys": {"weight_decay": 0.0, "lr": 1e-4}}
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1, lr=1e-3))
    printed = capsys.readouterr().out
    assert "lr=0.0001" in printed and "keys" in printed and "frozen" not in printed
    by_wd = {(g["weight_decay"], g["lr"]): len(g["params"]) for g in opt.param_groups}
    assert by_wd == {(0.0, 1e-3): 4, (0.1, 1e-3): 1, (0.0, 1e-4): 1}


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_min_ratio():
    tc = TrainConfig(steps=110, warmup=10, min_lr_ratio=0.1)
    assert lr_factor(0, tc) == pytest.approx(0.1) and lr_factor(9, tc) == pytest.approx(1.0)
    assert lr_factor(10, tc) == pytest.approx(1.0) and lr_factor(60, tc) == pytest.approx(0.55)
    assert lr_factor(110, tc) == pytest.approx(0.1)
    assert lr_factor(50, TrainConfig(steps=110, warmup=0, cosine=False)) == 1.0


def test_task_batches_are_a_function_of_seed_and_step_and_test_seeds_are_disjoint():
    task = build_task(TaskConfig(**tiny_tree()["task"]))
    x1, y1 = task.train_batch(5, 4)
    x2, y2 = build_task(TaskConfig(**tiny_tree()["task"])).train_batch(5, 4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(task.train_batch(6, 4)[0], x1)
    other = build_task(TaskConfig(**{**tiny_tree()["task"], "seed": 1}))
    assert not torch.equal(other.train_batch(5, 4)[0], x1)
    assert all(batch_seed(s, i) < TEST_SEED_OFFSET <= heldout_seed(s) for s in range(3) for i in range(100))
    xt, yt = task.test_set()
    assert xt.shape == (32, 16) and torch.equal(xt, task.test_set()[0])


def test_the_scan_backend_is_not_part_of_a_runs_identity():
    """A run trained on one scan backend resumes and is evaluated on another (same model)."""
    a = _cfg(["model.mixer.backend=reversible"])
    b = _cfg(["model.mixer.backend=cpu"])
    assert a.identity() == b.identity()
    assert a.identity() != _cfg(["model.mixer.n_nodes=64"]).identity()


def test_configs_shipped_in_repo_are_valid():
    from onebigstate.config import load_config
    for name in ("demo", "mqar_64_8", "mqar_256_32"):
        cfg = load_config(RunConfig, ROOT / "configs" / f"{name}.yaml")
        assert cfg.model.name == "obs" and cfg.task.name == "mqar"
    big = load_config(RunConfig, ROOT / "configs" / "mqar_256_32.yaml")
    assert (big.task.params["vocab_size"], big.task.params["seq_len"], big.task.params["num_kv_pairs"]) == (8192, 256, 32)


class _ToyFeatureParams(StrictModel):
    d_input: int = 3
    seq_len: int = 8


@register_task("toy_features_for_tests", _ToyFeatureParams)
class _ToyFeatureTask(Task):
    """Feature inputs [B, T, 3]: predict the sign of the first feature (a d_input task)."""

    def __init__(self, cfg, params):
        super().__init__(cfg, params)
        self.d_input, self.n_out = params.d_input, 2

    def _make(self, n, seed):
        x = torch.randn(n, self.params.seq_len, self.d_input, generator=torch.Generator().manual_seed(seed))
        return x, (x[..., 0] > 0).long()

    def train_batch(self, step, batch_size):
        return self._make(batch_size, batch_seed(self.cfg.seed, step))

    def test_set(self):
        return self._make(self.cfg.test_size, heldout_seed(self.cfg.seed))

    def loss(self, outputs, labels):
        return nn.functional.cross_entropy(outputs.reshape(-1, 2), labels.reshape(-1))

    def metrics(self, outputs, labels):
        return {"loss": float(self.loss(outputs, labels)), "accuracy": float((outputs.argmax(-1) == labels).float().mean())}


def test_feature_input_task_trains_in_float64(tmp_path):
    tree = tiny_tree(steps=4, ckpt_every=2, eval_every=2, dtype="float64")
    tree["task"] = {"name": "toy_features_for_tests", "test_size": 8, "params": {"d_input": 3}}
    res = train(build_config(RunConfig, tree), tmp_path / "run")
    assert res["step"] == 4 and set(res["metrics"]) == {"loss", "accuracy"}
    ckpt = read_checkpoint(tmp_path / "run")
    assert all(t.dtype == torch.float64 for t in ckpt.model_tensors().values() if t.is_floating_point())


@pytest.mark.slow
def test_demo_config_learns_mqar_to_high_held_out_accuracy(tmp_path):
    """configs/demo.yaml (what `obs demo` runs): held-out accuracy >= 0.95 after its 250 steps."""
    from onebigstate.config import load_config
    res = train(load_config(RunConfig, ROOT / "configs" / "demo.yaml"), tmp_path / "demo")
    assert res["metrics"]["accuracy"] >= 0.95, res


def test_init_from_loads_weights_of_another_run(tmp_path):
    """train.init_from starts a run (a curriculum stage) from another run's weights."""
    from onebigstate.config import build_config
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.config import RunConfig
    from onebigstate.training.trainer import model_from_checkpoint, train

    base = {"task": {"name": "mqar", "test_size": 8, "params": {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2}},
            "model": {"name": "obs", "d_model": 16, "mixer": {"n_nodes": 32, "k_min": 2, "k_max": 4, "m_active": 4,
                                                            "d_key": 8, "d_value": 8, "d_hidden": 8, "d_write": 8}},
            "train": {"steps": 2, "batch_size": 4, "progress": False}}
    first = build_config(RunConfig, base)
    train(first, tmp_path / "a", log=lambda m: None)
    second = build_config(RunConfig, base, [f"train.init_from={tmp_path / 'a'}", "train.steps=1", "train.lr=1e-12",
                                            "task.params.seq_len=24", "task.params.num_kv_pairs=4"])
    msgs = []
    train(second, tmp_path / "b", log=msgs.append)
    assert any("initialised the weights from" in m for m in msgs)
    _, m_a = model_from_checkpoint(read_checkpoint(tmp_path / "a"))
    _, m_b = model_from_checkpoint(read_checkpoint(tmp_path / "b"))
    for (n, pa), (_, pb) in zip(m_a.named_parameters(), m_b.named_parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), n


def test_training_and_evaluation_drop_each_batchs_states_before_the_next_forward(tmp_path, monkeypatch):
    # At large N the states are the biggest tensors (a dense N^2 per sequence): one batch's final
    # states kept alive into the next forward doubled the memory of evaluation and training.
    import weakref

    from onebigstate.training.trainer import build_run, evaluate
    refs, alive_at_call = [], []
    forward = MQARTask.forward

    def spy(self, model, x, y, states=None, **kw):
        alive_at_call.append(sum(r() is not None for r in refs))
        out = forward(self, model, x, y, states, **kw)
        refs.extend(weakref.ref(s) for s in out[2])
        return out

    monkeypatch.setattr(MQARTask, "forward", spy)
    cfg = build_config(RunConfig, tiny_tree(steps=3, eval_every=0, ckpt_every=3))
    task, model = build_run(cfg)
    evaluate(model, task, batch_size=8, test_set=task.test_set())      # 32 sequences: 4 batches
    assert alive_at_call == [0, 0, 0, 0]
    refs.clear()
    alive_at_call.clear()
    train(cfg, tmp_path / "run", log=lambda m: None)                    # 3 steps, then the final evaluation
    assert len(alive_at_call) >= 4 and alive_at_call == [0] * len(alive_at_call)
