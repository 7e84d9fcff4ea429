"""Word-to-object recall of a trained see-and-hear model on words and pictures made outside the data file.

    python benchmarks/user_items_recall.py runs/chunked/seeandhear/models/obs \
        --out docs/results/user_items/recall.json

The "user" items: 10 words that are in no vocabulary of the file ("piano", "rabbit", ...), spoken
by 4 espeak-ng voices the file does not use, and the digits 0-9 drawn with Pillow's default font
(5 sizes and offsets each, strokes 1 pixel wider) as the pictures of the 10 objects. Everything goes through the public
API (``onebigstate.data.user_items``: ``word_features``, ``image_features``, ``with_user_items``;
``measure_recall(..., data=...)``): compare the ``user_items`` block of this file with
``scripts/make_seeandhear.py``. Recall is measured on the same grid for the shipped novel split,
for the user's words with the shipped scans, and for the user's words and pictures.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from onebigstate.files import atomic_write_text

WORDS = ("piano", "rabbit", "lemon", "guitar", "pencil", "rocket", "tiger", "kettle", "camera", "pillow")
VOICES = ("en+m3", "en+m6", "en-us+m4", "en-us+f1")


def font_digits(per_digit: int = 5) -> tuple[list[np.ndarray], list[int]]:
    """Digits 0-9 drawn in white on black with Pillow's default font, at a few sizes and offsets."""
    from PIL import Image, ImageDraw, ImageFont
    pictures, labels = [], []
    for d in range(10):
        for k in range(per_digit):
            img = Image.new("L", (32, 32), 0)
            font = ImageFont.load_default(size=20 + 2 * k)
            ImageDraw.Draw(img).text((8 + k % 3 - 1, 2 + k % 2), str(d), fill=255, font=font, stroke_width=1,
                                     stroke_fill=255)
            pictures.append(np.asarray(img))
            labels.append(d)
    return pictures, labels


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a see-and-hear run folder (obs train configs/seeandhear.yaml, obs demo)")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from onebigstate.data.espeak import Espeak
    from onebigstate.data.seeandhear import load_seeandhear
    from onebigstate.data.streams import StreamConfig
    from onebigstate.experiments.recall import RecallGrid, measure_recall
    from onebigstate.training.checkpoint import read_checkpoint
    from onebigstate.training.trainer import model_from_checkpoint

    # ---- user_items: the glue a user writes -----------------------------------------------
    from onebigstate.data.user_items import image_features, with_user_items, word_features
    tts = Espeak()
    words = {w: [word_features(tts.synth(w, voice=v), tts.sample_rate) for v in VOICES] for w in WORDS}
    pictures, labels = font_digits()
    both = with_user_items([image_features(p) for p in pictures], labels, words)
    # --------------------------------------------------------------------------------------------
    test_scans = load_seeandhear().split("test")                     # the words alone, with the shipped scans
    words_only = with_user_items(test_scans.images, test_scans.labels, words)

    ckpt = read_checkpoint(args.run)
    _, model = model_from_checkpoint(ckpt, device="cpu")
    keep = set(StreamConfig.model_fields) - {"split", "image_query_frac", "seq_len", "extra_words"}
    base = StreamConfig(**{k: v for k, v in ckpt.config.task.params.items() if k in keep}, split="novel",
                        image_query_frac=0.0, extra_words=False)
    grid = RecallGrid(exposures=(1, 2, 3), delays=(10, 100), exposure_delay=10)
    rows = []
    for label, data in [("shipped novel words, shipped test scans", None),
                        ("user words (4 new voices), shipped test scans", words_only),
                        ("user words, user pictures (font digits)", both)]:
        res = measure_recall(model, base, grid, args.streams, 0, data=data)
        cells = {f"e={e} d={d}": res.accuracy("word->object", e, d) for e, d in grid.conditions()}
        rows.append({"data": label, "recall": {k: v[0] for k, v in cells.items()},
                     "queries": {k: v[1] for k, v in cells.items()}})
        print(label, {k: round(v[0], 3) for k, v in cells.items()}, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"run": str(args.run), "words": WORDS, "voices": VOICES,
                                            "streams": args.streams, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
