"""See and hear: an object is seen and named once, later the name alone must bring the object back.

Every model is trained on the same see-and-hear streams (``configs/seeandhear.yaml``'s task: a
fresh word-to-object pairing in every stream, the image encoder pretrained on single steps first;
half the training queries ask the object for its word)
under one budget, then recall is measured on the novel split (words never heard in training, test
voices, test scans), streamed with the state carried (``bench/evaluate.recall_columns``).

quick: 150 steps of batch 16; delays 10, 100, 1,000; 32 streams per condition. cpu: 1,000 steps of
batch 32; delays 10 .. 10,000; 64 streams. full: 3,000 steps of batch 32; delays 10 .. 100,000
(lifelong: streams of 10^5 steps read in windows); 64 streams; 3 seeds. Every mode: 1, 2, 3 and 5
exposures at delay 100, and object -> word (on the test split: a classifier cannot name a word it
never heard) at delay 100.

``obs bench seeandhear --train-delay D`` trains with queries up to D steps after their pairing
(instead of 30), the batch scaled so that a batch holds about as many steps: are long delays
recalled better once training asks for them?
"""
from __future__ import annotations

from onebigstate.bench.cells import Eval, Options, Plot, Suite, make_cells
from onebigstate.tasks.base import TaskConfig

# configs/seeandhear.yaml's streams (the demo's), with half the queries object -> word as in
# configs/seeandhear_experiment_reverse.yaml: a direction never asked in training is not measured
STREAMS = {"n_pairs": 3, "exposures": [1, 2], "delay_min": 3, "delay_max": 30, "view_frames": 2,
           "name_gap": [1, 2], "spacing": [1, 4], "image_query_frac": 0.5, "extra_words": True,
           "test_split": "novel", "pretrain_steps": 150, "freeze_encoder": True}


def train_batch(batch: int, delay_max: int) -> int:
    """The batch of streams whose queries come up to ``delay_max`` steps after their pairing that holds
    about as many steps as ``batch`` streams of the suite's own (``STREAMS``, delays up to 30)."""
    from onebigstate.data.streams import StreamConfig
    keep = set(StreamConfig.model_fields) - {"extra_words"}

    def length(longest: int) -> int:
        return StreamConfig(**{k: v for k, v in {**STREAMS, "delay_max": longest}.items() if k in keep}).required_len
    return max(1, round(batch * length(STREAMS["delay_max"]) / length(delay_max)))


def build(opts: Options) -> Suite:
    if opts.mode == "full":
        steps, batch, delays, n_streams = 3000, 32, [10, 100, 1000, 10000, 100000], 64
    elif opts.mode == "cpu":
        steps, batch, delays, n_streams = 1000, 32, [10, 100, 1000, 10000], 64
    else:
        steps, batch, delays, n_streams = 150, 16, [10, 100, 1000], 32
    steps = opts.step_budget(steps)
    streams = dict(STREAMS)
    if opts.train_delay is not None:
        batch = train_batch(batch, opts.train_delay)
        streams["delay_max"] = opts.train_delay
    task = TaskConfig(name="seeandhear", test_size=128, params=streams)
    grid = {"delays": delays, "exposures": [1, 2, 3, 5], "exposure_delay": 100, "n_streams": n_streams,
            "window": 512, "batch_size": 8 if max(delays) > 10000 else 32, "object_to_word": True}
    cells = make_cells("see and hear", task, opts, 64, steps, batch, evals=[Eval("recall", params=grid)],
                       prefix="seeandhear")
    return Suite("seeandhear", "See and hear: recall of a word-object pairing against delay and exposures",
                 f"Streams of images (8x8 digit scans) and spoken words (log-mel): an object is seen and named, "
                 f"later the word alone is asked for the object (or, in half the training queries, the object for its word), "
                 f"{STREAMS['delay_min']} to {streams['delay_max']} steps after the pairing in training. Trained "
                 f"{steps} steps of batch {batch}; "
                 f"'accuracy' is the held-out streams (novel words). Columns d=D: word->object recall after "
                 f"one exposure, D steps later (streamed in windows of 512 with the state carried); exp=E: "
                 f"after E exposures at delay 100; obj->word: the object asked for its name (test split). "
                 f"Chance 0.10 for word->object. {n_streams} streams per condition.", cells,
                 [Plot("evals", "d", "delay since the pairing (steps)"),
                  Plot("evals", "exp", "exposures to the pairing", log_x=False)])
