"""Action and outcome: predict what is in front of the agent after each action in a grid world.

Every model is trained on the same streams (``configs/gridworld.yaml``'s task: MiniGrid
SimpleCrossingS9N2, a new layout per stream, 48 exploring actions then 8 questions "what happens if
I do X here" about places where X was done once) under one budget, then scored on held-out layouts:
every action, actions new at a place, actions repeated at a place, and the questions. The
replay, planning and consolidation parts of ``python -m onebigstate.experiments.acting`` need the
circuit tracker on one trained OBS model and stay there.

quick: 400 steps of batch 32 (the acting page's budget). cpu: 2,000 steps. full: 5,000
steps, 3 seeds. ``--steps N`` gives the budget curve (its own folder and page per budget).
"""
from __future__ import annotations

from onebigstate.bench.cells import Eval, Options, Suite, make_cells
from onebigstate.tasks.base import TaskConfig

# configs/gridworld.yaml's task
PARAMS = {"env_id": "MiniGrid-SimpleCrossingS9N2-v0", "explore_steps": 48, "n_queries": 8, "p_forward": 0.5}
# the task's held-out metrics shown as columns (tasks/gridworld_task.metric_counts)
COLUMNS = {"acc_novel": "novel action", "acc_seen": "repeated action", "acc_query": "query"}


def build(opts: Options) -> Suite:
    steps = {"quick": 400, "cpu": 2000, "full": 5000}[opts.mode]
    steps, batch = opts.step_budget(steps), 32
    task = TaskConfig(name="gridworld", test_size=256, params=dict(PARAMS))
    cells = make_cells("grid world", task, opts, 64, steps, batch,
                       evals=[Eval("metrics", params={"columns": COLUMNS})], prefix="acting")
    return Suite("acting", "Action and outcome: the next observation in a grid world",
                 f"MiniGrid SimpleCrossingS9N2, a new layout per stream: 48 random exploring actions, then 8 "
                 f"questions about actions taken once at a place; every model predicts what is in front of the "
                 f"agent after each action (4 classes). Trained {steps} steps of batch {batch}; 'accuracy' is "
                 f"every action of 256 held-out layouts; columns: actions new at their place, actions repeated "
                 f"at a place, the questions.", cells, [])
