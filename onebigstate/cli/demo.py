"""``obs demo``: the see-and-hear association experiment, the project's main job.

The run itself lives in :mod:`onebigstate.experiments.demo` (settings: the defaults of
:class:`onebigstate.experiments.seeandhear.SeeHearExperiment`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from onebigstate.experiments.demo import DEFAULT_RUN, demo_experiment, run_demo

HELP = f"""Run the demo: the see-and-hear association experiment on the shipped data (real
handwritten digits, real synthesised speech), on CPU. An object is seen, its name is heard, and
later the name alone must bring back the object (and the object the name); the pairing is new in
every stream and the held-out words were never heard in training, so only the model's state can
hold it. OBS and the baselines (Transformer, LSTM, Mamba, DeltaNet) are trained on the same
streams with the same budget, then recall is measured against delay and exposures, and a table is
printed. The run folder ({DEFAULT_RUN}, or --out) receives each model's run (models/<name>/),
the plots (the touched part of OBS's big state, the circuits of a word and its object, recall
against delay and exposures), results.md and summary.json. Run again, it loads the checkpoints it
trained before (the table says so); --fresh trains anew. key=value overrides change the
experiment's settings (e.g. train.steps=60 grid.n_streams=16); --config FILE replaces them."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the see-and-hear experiment: OBS vs baselines, recall of new pairings",
                       description=HELP)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the experiment settings")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_RUN), help=f"run folder (default: {DEFAULT_RUN})")
    p.add_argument("--config", metavar="FILE", help="YAML experiment settings instead of the embedded defaults")
    p.add_argument("--fresh", action="store_true", help="train every model again even if a matching run exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_demo(demo_experiment(args.config, args.overrides), Path(args.out), fresh=args.fresh)
    return 0
