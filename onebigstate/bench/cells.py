"""Cells, suites and the model zoo every suite draws from.

A :class:`Cell` is one training run (task setting x model x lr x seed) plus the evaluations
run on its final weights (:class:`Eval`). Cells of one (setting, model) differ only in lr and
seed; the report picks the best lr by mean held-out accuracy over seeds (as Zoology does) and
gives the mean and spread over seeds at that lr.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from onebigstate.model.config import PLAIN_LAYER
from onebigstate.nets.stack import ModelConfig
from onebigstate.tasks.base import TaskConfig
from onebigstate.training.config import RunConfig, TrainConfig

# quick: minutes on CPU (learning speed on a tiny budget); cpu: a real budget at settings one CPU
# core affords in about an hour per suite; full: the real grid (GPU).
Mode = Literal["quick", "cpu", "full"]

# Every registered model the suites run by default; `obs bench --models` picks among them and
# the opt-in variants.
MODELS = ["obs", "transformer", "lstm", "mamba", "deltanet", "gated_deltanet", "hopfield", "titans", "s4d"]
# OBS's bench recipe, the model `obs` of every suite, and since 2026-12-05 the layer's own default
# (model/config.py): row_norm and balance_cost (recall after 100,000 distractor tokens:
# docs/results/retention_cpu.md) and the new circuit counted as active at a quarter strength,
# circuit_direct 1.0 (capacity at N = 1024 to 16384 and retention at lr 3e-3, 3 seeds each:
# docs/results/circuit_direct.md), trained at lr 3e-3. Named in full so every cell's config.yaml
# records it. Until 2026-11-24 `obs` was the plain layer at lr 1e-2, now `obs_plain` (pages
# produced before then: docs/bench.md, "The bench's obs").
OBS_RECIPE = {"balance_cost": 0.1, "row_norm": True, "circuit_direct": 1.0}
# The see-and-hear recipe over OBS_RECIPE (the variant obs_reverse_wc1_persist1, docs/results/write_cost.md):
# the reverse association, a cost on writes, and the previously active nodes kept active
SEEANDHEAR_RECIPE = {"reverse_assoc": True, "write_cost": 1.0, "active_persist": 1.0}
# OBS variants still in use (name -> mixer settings over the recipe), run only when named. Those
# of past sweeps live beside the pages that measured them: HISTORY_FILE.
VARIANTS = {"obs_plain": PLAIN_LAYER,   # the layer's defaults before the recipe: no balance cost, row norm, direct term
            # the reverse association (the new circuit wired back to what was active): the
            # see-and-hear suite's OBS has it, for object -> word
            "obs_reverse": {"reverse_assoc": True},
            # and a cost on the writes' gates (write_cost): the trained gates sat near 1 on every step,
            # silence included, and recall fell with delay (docs/results/write_cost.md)
            **{f"obs_reverse_wc{c:g}": {"reverse_assoc": True, "write_cost": float(c)} for c in (0.1, 0.3, 1)},
            # and 4x the nodes in the sparse store: do fewer shared nodes keep a pairing longer?
            "obs_reverse_wc1_n4096": {"reverse_assoc": True, "write_cost": 1.0, "n_nodes": 4096,
                                      "state_backend": "sparse"},
            # and at least 8 nodes per circuit: does a word spread over more nodes share fewer of them?
            "obs_reverse_wc1_k8": {"reverse_assoc": True, "write_cost": 1.0, "k_min": 8},
            # and no spread from the previous active set's rows: do hubs stop sustaining themselves?
            "obs_reverse_wc1_nospread": {"reverse_assoc": True, "write_cost": 1.0, "spread_from_active": False},
            # and a per-node bias on the circuit choice moved against each node's load (address_balance):
            # silence's circuit and the nodes every word shares took 44% of the circuit slots, and
            # became the hubs that fill a late query's active set (docs/results/write_cost.md)
            **{f"obs_reverse_wc1_bal{r:g}": {"reverse_assoc": True, "write_cost": 1.0, "address_balance": float(r)}
               for r in (1e-3, 1e-2)},
            # and no lower bound on k_t (k_min 0): a step may choose no node, and then writes nothing and
            # reads only the spread from the active nodes. Silence's fixed circuit was the hubs that
            # filled the gap between a view and its name; a step that chooses nothing carries the view on
            "obs_reverse_wc1_k0": {"reverse_assoc": True, "write_cost": 1.0, "k_min": 0},
            "obs_reverse_wc1_k0_kc": {"reverse_assoc": True, "write_cost": 1.0, "k_min": 0, "k_cost": 0.3},
            # and the active nodes kept active (active_persist): one more silent step between a view
            # and its name cut recall at delay 10 from 0.72 to 0.49, likely because silence's circuit
            # replaced the view's nodes in A_t and the name was wired to silence
            **{f"obs_reverse_wc1_persist{p:g}": {**SEEANDHEAR_RECIPE, "active_persist": float(p)} for p in (1, 3)},
            # the see-and-hear recipe at other N (dense 256, sparse 4096): does recall after long delays
            # depend on the number of nodes? (docs/results/write_cost.md, section 8)
            "obs_reverse_wc1_persist1_n256": {**SEEANDHEAR_RECIPE, "n_nodes": 256},
            "obs_reverse_wc1_persist1_n4096": {**SEEANDHEAR_RECIPE, "n_nodes": 4096, "state_backend": "sparse"},
            # and a higher write cost, or a larger active set: do fewer writes by distractor words, or
            # more of the context carried, keep a pairing longer? (docs/results/write_cost.md, section 8)
            "obs_reverse_wc3_persist1": {**SEEANDHEAR_RECIPE, "write_cost": 3.0},
            "obs_reverse_wc1_persist1_m32": {**SEEANDHEAR_RECIPE, "m_active": 32},
            # the recipe with the active nodes kept active: does carrying what was seen help acting?
            "obs_persist1": {"active_persist": 1.0},
            # a soft bound c on |S| (state_bound): does a bounded lifelong state keep recall?
            # (docs/results/bounded_state.md)
            **{f"obs_bound{c:g}": {"state_bound": float(c)} for c in (1, 4, 16)},
            # trained in chunked mode: chunks of 16 steps, 2 sweeps each (kernels/chunked.py;
            # docs/results/chunked.md)
            "obs_chunk16": {"scan_mode": "chunked", "max_chunk": 16, "chunk_sweeps": 2}}
# OBS (the recipe) with a learned discretiser of its last hidden vector (model/discretiser.py), the
# acting page's "obs + fsq discretiser": name -> the discretiser's config
DISCRETISED = {"obs_fsq": {"kind": "fsq", "levels": [8, 5, 5]}}
# An OBS model in another stack: name -> (the OBS model whose layer it uses, ModelConfig settings).
# The baselines have 2 layers, OBS 1 and no MLP; on the grid world (acting) OBS trailed the LSTM most
# on actions new at a place, which need computation over what is recalled more than memory
# (docs/results/acting_cpu.md)
STACKED = {"obs_mlp": ("obs", {"mlp_ratio": 4.0}), "obs_2l": ("obs", {"n_layers": 2}),
           "obs_mlp_persist1": ("obs_persist1", {"mlp_ratio": 4.0})}
# name -> {settings (over the plain layer), why, pages}; in the source tree, beside the pages
HISTORY_FILE = Path(__file__).resolve().parents[2] / "docs" / "results" / "obs_variants.yaml"


@functools.cache
def history_variants() -> dict[str, dict]:
    """The OBS variants of past sweeps (``docs/results/obs_variants.yaml``, read once); empty outside a
    source tree."""
    if not HISTORY_FILE.exists():
        return {}
    return yaml.safe_load(HISTORY_FILE.read_text())


def obs_settings(name: str) -> dict[str, Any] | None:
    """The mixer settings of OBS model ``name`` on top of the bench's sizes (None: not an OBS model)."""
    if name == "obs" or name in DISCRETISED:
        return dict(OBS_RECIPE)
    if name in STACKED:
        return obs_settings(STACKED[name][0])
    if name in VARIANTS:
        return {**OBS_RECIPE, **VARIANTS[name]}
    old = history_variants().get(name)
    return {**PLAIN_LAYER, **old["settings"]} if old is not None else None


def is_obs(name: str) -> bool:
    return obs_settings(name) is not None


# Baselines through flash-linear-attention's Triton kernels (a CUDA machine with fla installed;
# elsewhere building them raises): name -> (registered mixer, its settings). Run only when named,
# so a page never mixes our PyTorch DeltaNet with fla's under one name.
FLA_BASELINES = {"deltanet_fla": ("deltanet", {"impl": "fla"}),
                 "mamba2_fla": ("mamba", {"impl": "fla_mamba2"})}


@dataclass
class Eval:
    """An evaluation of a trained cell.

    kind ``params``: the held-out set of the same task with ``params`` changed (longer sequences,
    more pairs), each sequence from a fresh state, read in windows of the training length with
    the state carried when longer (same numbers, bounded memory); one column ``label``.
    kind ``grouped``: the task's held-out set, accuracy per group (distance, phase, length bucket).
    kind ``lifelong``: the task's ``lifelong_set()`` streamed in windows of ``window`` tokens,
    the state carried from window to window; accuracy per group.
    kind ``metrics``: the task's own held-out metrics, ``params["columns"]`` mapping a metric's name
    to its column.
    kind ``recall``: see-and-hear recall (:func:`onebigstate.bench.evaluate.recall_columns`), its
    grid in ``params``: word->object after one exposure at each delay (columns ``d=...``), after
    each number of exposures (``exp=...``), and object->word (``obj->word``).
    """

    kind: Literal["params", "grouped", "lifelong", "recall", "metrics"]
    label: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    window: int = 0


@dataclass
class Cell:
    name: str                      # folder under the suite's run folder, unique
    setting: str                   # the task setting, a row group of the table
    model: str                     # model label, a row of the table
    lr: float
    seed: int
    config: RunConfig
    x: dict[str, float] = field(default_factory=dict)       # plot coordinates of the setting
    evals: list[Eval] = field(default_factory=list)


@dataclass
class Plot:
    """``kind="x"``: accuracy against ``cell.x[key]`` (one line per model and remaining coordinates);
    ``kind="evals"``: accuracy against the number in the eval columns ``key=NUMBER`` or ``key<=NUMBER``."""

    kind: Literal["x", "evals"]
    key: str
    xlabel: str
    log_x: bool = True
    file: str = ""


@dataclass
class Suite:
    name: str
    title: str
    description: str
    cells: list[Cell]
    plots: list[Plot] = field(default_factory=list)


@dataclass
class Options:
    """What ``obs bench`` passes to a suite's ``build``."""

    mode: Mode = "quick"
    models: list[str] | None = None          # None: every model of MODELS
    seeds: list[int] | None = None           # None: the mode's default (quick, cpu: [0]; full: [0, 1, 2])
    device: str = "cpu"
    lrs: list[float] | None = None           # None: each model's own grid (lr_grid)
    # extrapolation only: train at (seq_len, pairs) instead of the mode's setting, the batch scaled
    # so that a step sees as many tokens (None: the mode's own training setting)
    train: tuple[int, int] | None = None
    # mqar, capacity, extrapolation: the model widths to run instead of the mode's own (None: the mode's)
    widths: tuple[int, ...] | None = None
    # every suite: the training steps of every cell instead of the mode's budget (None: the mode's)
    steps: int | None = None
    # seeandhear only: the longest delay from a pairing to its query in training (None: the suite's 30)
    train_delay: int | None = None

    def width_list(self, mode_widths: tuple[int, ...]) -> list[int]:
        return list(self.widths) if self.widths else list(mode_widths)

    def step_budget(self, mode_steps: int) -> int:
        return self.steps if self.steps is not None else mode_steps

    def model_list(self) -> list[str]:
        return list(self.models) if self.models else list(MODELS)

    def seed_list(self) -> list[int]:
        if self.seeds is not None:
            return list(self.seeds)
        return [0, 1, 2] if self.mode == "full" else [0]


# ---- the model zoo ----------------------------------------------------------------------------
def model_config(name: str, d_model: int, mode: Mode) -> ModelConfig:
    """The benchmark's configuration of model ``name`` at width ``d_model``.

    Baselines: 2 layers, as in Zoology's MQAR sweeps, and 2 heads where they have heads. OBS: 1
    layer with N = 1024 nodes (quick: 256), the sizes of its MQAR recipe (configs/mqar_64_8.yaml),
    plus :func:`obs_settings` (``OBS_RECIPE`` for ``obs``, then a variant's own settings); the
    ``STACKED`` models change the stack around it (an MLP after the mixer, 2 layers).
    """
    obs = obs_settings(name)
    if obs is not None:
        stack = STACKED[name][1] if name in STACKED else {}
        return ModelConfig(name="obs", d_model=d_model, **{"n_layers": 1, **stack},
                           mixer={"n_nodes": 256 if mode == "quick" else 1024, "k_min": 4, "k_max": 12,
                                  "m_active": 16, **obs}, discretiser=DISCRETISED.get(name))
    mixer: dict[str, Any] = {}
    if name in FLA_BASELINES:
        name, fla_settings = FLA_BASELINES[name]
        mixer.update(fla_settings)
    if name in ("transformer", "hopfield", "deltanet", "gated_deltanet"):
        # 2 heads at every width: the reference DeltaNet (2 layers at width 128, about 16k
        # state floats) has heads of width 64. 4 heads of 32 at width 128 halved the state and left
        # the Transformer near chance at 32 pairs after 1000 steps (docs/results/width128/heads.md).
        mixer["n_heads"] = 2
    if name == "hopfield":
        mixer["conv_size"] = 4                 # keys must carry the preceding token (MQAR needs it)
    if name == "titans":
        mixer.update(heads=2, chunk_size=4)
    return ModelConfig(name=name, d_model=d_model, n_layers=2, mixer=mixer)


def lr_grid(name: str, mode: Mode) -> list[float]:
    """Learning rates swept per model.

    One grid for every model, 1e-3, 3e-3, 1e-2. quick: the middle one only. cpu: OBS at 3e-3
    (where its recipe was measured: docs/results/circuit_direct.md), the baselines at 3e-3 and
    1e-2 (a sweep OBS does not get). full: all three.
    """
    obs = is_obs(name)
    grid = [1e-3, 3e-3, 1e-2]
    if mode == "quick":
        return [grid[1]]
    if mode == "cpu":
        return [grid[1]] if obs else grid[1:]
    return grid


def weight_decay(name: str) -> float:
    # OBS's tuned recipe trains without weight decay; the baselines use Zoology's 0.1.
    return 0.0 if is_obs(name) else 0.1


def make_cells(setting: str, task: TaskConfig, opts: Options, d_model: int, steps: int, batch_size: int,
               x: dict[str, float] | None = None, evals: list[Eval] | None = None,
               train_overrides: dict[str, Any] | None = None, prefix: str | None = None) -> list[Cell]:
    """One cell per model, lr and seed of ``opts`` for one task setting, under one budget."""
    cells = []
    for name in opts.model_list():
        if name not in MODELS and not is_obs(name) and name not in FLA_BASELINES:
            raise ValueError(f"unknown model '{name}' for the benchmark; known: "
                             f"{MODELS + list(VARIANTS) + list(DISCRETISED) + list(STACKED) + list(FLA_BASELINES)} and "
                             f"the variants of past sweeps "
                             f"in {HISTORY_FILE}")
        model = model_config(name, d_model, opts.mode)
        for lr in (opts.lrs or lr_grid(name, opts.mode)):
            for seed in opts.seed_list():
                keys = dict(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay(name),
                            warmup=max(1, steps // 10), seed=seed, device=opts.device,
                            threads=1 if opts.device == "cpu" else 0, progress=False,
                            ckpt_every=max(1, steps // 4), log_every=max(1, min(10, steps // 10)),
                            eval_batch_size=64)
                train = TrainConfig(**{**keys, **(train_overrides or {})})
                t = task.model_copy(update={"seed": seed})
                cfg = RunConfig(task=t, model=model, train=train)
                folder = f"{prefix or _slug(setting)}__{name}__lr{lr:g}__s{seed}"
                cells.append(Cell(folder, setting, name, lr, seed, cfg, dict(x or {}), list(evals or [])))
    return cells


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")
