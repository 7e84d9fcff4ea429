"""The config of one training run: the task, the model, and how to train it.

    task:  {name: mqar, seed: 0, test_size: 1000, params: {vocab_size: 8192, seq_len: 64, num_kv_pairs: 8}}
    model: {name: obs, d_model: 64, n_layers: 1, mixer: {n_nodes: 512, k_min: 4, k_max: 12, m_active: 16}}
    train: {steps: 1000, batch_size: 32, lr: 3.0e-3, ...}

Every section is strict (unknown keys and wrong types are errors naming the key), and the
task's params and the model's mixer keys are validated by their owners when the config is
built, so a bad value is reported before anything runs.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

import onebigstate.baselines  # noqa: F401  (registers the baseline mixers)
from onebigstate.config import StrictModel, config_diff
from onebigstate.nets.stack import ModelConfig
from onebigstate.tasks.base import TaskConfig


# An Adam beta is a decay factor of a running mean: 1 or above never forgets (or grows), below 0 flips.
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class TrainConfig(StrictModel):
    """How to train. Every float must be finite (``inf``/``nan`` are errors naming the key)."""

    model_config = ConfigDict(allow_inf_nan=False)

    steps: int = Field(1000, ge=1, description="optimizer steps in the whole run")
    batch_size: int = Field(32, ge=1, description="sequences (streams) per step")
    lr: float = Field(3e-3, gt=0.0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0.0, description="AdamW decay of weight matrices (not biases, norms, embeddings)")
    betas: tuple[Beta, Beta] = Field((0.9, 0.98), description="AdamW's (beta1, beta2), each in [0, 1)")
    warmup: int = Field(0, ge=0, description="steps of linear warm-up from 0 to lr")
    cosine: bool = Field(True, description="cosine decay from lr to min_lr_ratio*lr after warm-up (else constant)")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    grad_clip: float = Field(1.0, ge=0.0, description="max gradient norm (0: no clipping)")
    eval_every: int = Field(0, ge=0, description="steps between held-out evaluations (0: only at the end)")
    eval_batch_size: int = Field(256, ge=1)
    log_every: int = Field(10, ge=1, description="steps between logged training metrics (means over the window)")
    ckpt_every: int = Field(0, ge=0, description="steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = Field(1, ge=1, description="how many recent checkpoints to keep (the newest is 'last')")
    seed: int = Field(0, ge=0, description="seed of the model's initialisation and of the run's RNGs")
    device: str = Field("cpu", description="cpu, cuda, cuda:1, ... or auto (cuda when available)")
    dtype: Literal["float32", "float64"] = "float32"
    threads: int = Field(0, ge=0, description="intra-op CPU threads (0: leave torch's setting); float "
                                              "results depend on it, so exact resumption needs the same")
    carry_state: bool = Field(False, description="lifelong: carry the model's states across batches "
                                                 "(detached) and store them in checkpoints")
    progress: bool = Field(True, description="show a progress bar")
    shared_state: bool = Field(False, description="data parallel with train.carry_state: stream j of every process "
                                                  "shares one big state; the changes all processes wrote are "
                                                  "summed into every copy every sync_every steps")
    sync_every: int = Field(1, ge=1, description="steps between syncs of the shared state (and at every checkpoint)")
    state_exchange: Literal["auto", "sparse", "dense"] = Field(
        "auto", description="how the shared state's changes travel: (position, value) pairs gathered, a dense "
                            "all-reduce, or auto (whichever moves fewer bytes)")
    init_from: str | None = Field(None, description="start from the weights of this checkpoint or run folder "
                                                    "(a curriculum: same model, other task settings); "
                                                    "optimizer and step start afresh")


    @model_validator(mode="after")
    def _check_shared(self) -> "TrainConfig":
        if self.shared_state and not self.carry_state:
            raise ValueError("train.shared_state=true shares the carried states: it needs train.carry_state=true")
        return self


class RunConfig(StrictModel):
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    out_dir: str = Field("runs", description="folder under which run folders are made")
    run_name: str | None = Field(None, description="run folder name (default: config name + UTC time)")

    @field_validator("model")
    @classmethod
    def _check_model(cls, model: ModelConfig) -> ModelConfig:
        # The mixer's own keys are checked by the mixer registry here, so that a bad value
        # (k_min > k_max, an unknown mixer key) is reported before anything runs.
        model.check()
        return model

    @field_validator("task")
    @classmethod
    def _check_task(cls, task: TaskConfig) -> TaskConfig:
        from onebigstate.tasks.registry import task_params
        task_params(task.name, task.params)
        return task

    def resolved(self) -> "RunConfig":
        """This config with every default of the mixer and the task params written out.

        The run folder and checkpoints store this form, so a run can be repeated exactly even
        after a default changes.
        """
        from onebigstate.nets.mixer import mixer_config
        from onebigstate.tasks.registry import task_params
        mixer = mixer_config(self.model.name, self.model.mixer).model_dump(mode="json")
        params = task_params(self.task.name, self.task.params).model_dump(mode="json")
        return self.model_copy(update={"model": self.model.model_copy(update={"mixer": mixer}),
                                       "task": self.task.model_copy(update={"params": params})})

    def identity(self) -> dict:
        """What a checkpoint must agree with to be loaded into this run: the task and the model.

        Not the OBS scan's backend: every backend runs the same model (tests/test_obs_kernels.py),
        so a run trained on one resumes, evaluates and is compared on another."""
        d = self.resolved().model_dump(mode="json")
        d["model"]["mixer"].pop("backend", None)
        return {"task": d["task"], "model": d["model"]}

    def identity_diff(self, other: "RunConfig", name: str, other_name: str) -> list[str]:
        """The task and model keys on which this run and ``other`` differ (empty: the same run),
        each as ``key: <name> a vs <other_name> b``; train.* keys may differ."""
        return config_diff(self.identity(), other.identity(), name, other_name)
