"""Regenerate the shipped see-and-hear data: ``onebigstate/data/assets/seeandhear.npz``
and its checksum ``seeandhear.npz.sha256``.

Two sources, both offline:
- the 1797 handwritten 8x8 digit scans bundled with scikit-learn (``load_digits``);
- the spoken words "zero".."nine", 20 other words (the novel words, never used in
  training) and 40 extra words (optional extra names for training, disjoint from both)
  synthesised with espeak-ng (``espeakng-loader``) in 16 voices (8 English accents x 2
  voice variants) at 3 speaking rates/pitches: 48 variants per word.

Each utterance is resampled to 16 kHz, turned into log-mel frames by
``onebigstate.data.logmel`` (40 mel bins, 30 ms hop), trimmed to its non-silent part and
centred in 24 frames (padding with silence, or cropping the middle), stored as float16.
Voices are split 12 for training, 4 for test; digits are split 80/20 per class with a
fixed seed. The archive is written byte-for-byte reproducibly (fixed zip timestamps), so
running this script again gives the same sha256 when espeak-ng gives the same samples.

    python scripts/make_seeandhear.py            # rewrite the asset and its checksum
    python scripts/make_seeandhear.py --check    # regenerate in memory, compare to the shipped file
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
from onebigstate.data.espeak import Espeak
from onebigstate.data.logmel import LogMelConfig, fix_frames, spoken_word_mel

ASSET = Path(__file__).resolve().parents[1] / "onebigstate" / "data" / "assets" / "seeandhear.npz"
FORMAT_VERSION = 2

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NOVEL_WORDS = ("apple", "ball", "banana", "bird", "book", "car", "cat", "chair", "cup", "dog",
               "duck", "fish", "flower", "hat", "house", "milk", "shoe", "spoon", "tree", "truck")
# more names for training only: a model that has heard many words generalises better to new ones
EXTRA_WORDS = ("baby", "bath", "bear", "bed", "blanket", "bottle", "bowl", "box", "bread", "bunny",
               "button", "cheese", "clock", "coat", "cookie", "cow", "door", "egg", "frog", "grape",
               "horse", "juice", "key", "kitty", "lamp", "moon", "mouse", "nose", "orange", "pig",
               "plate", "sock", "star", "sun", "table", "teddy", "toy", "train", "water", "window")
# 8 English accents of espeak-ng, each with a male and a female voice variant. Variants with
# "breath" (f2, f3, f5) or the klatt synthesiser add noise that differs run to run, so they are
# left out: with these, the same script gives the same samples.
VOICES = ("en+m1", "en+f1", "en-us+m2", "en-us+f4", "en-gb-scotland+m3", "en-gb-scotland+anika",
          "en-gb-x-rp+m4", "en-gb-x-rp+belinda", "en-029+m5", "en-029+linda", "en-us-nyc+m6", "en-us-nyc+Annie",
          "en-gb-x-gbclan+m7", "en-gb-x-gbclan+steph", "en-gb-x-gbcwmd+m8", "en-gb-x-gbcwmd+aunty")
TEST_VOICES = ("en-us+f4", "en-029+m5", "en-gb-x-gbclan+m7", "en-gb-x-gbcwmd+aunty")
# (words per minute, pitch 0..100): slow and low, normal, fast and high
PROSODY = ((140, 35), (175, 55), (215, 75))
N_FRAMES = 24
MEL = LogMelConfig(sample_rate=16000, n_fft=512, hop=480, n_mels=40, fmin=60.0, fmax=8000.0, eps=1e-6)
TRIM_TOP_DB = 40.0
DIGIT_TEST_FRACTION = 0.2
DIGIT_SPLIT_SEED = 0


def synth_words(tts: Espeak, words: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel [W, V, M, L] float16, trimmed frame counts [W, V] int16) for every word and variant."""
    W, V = len(words), len(VOICES) * len(PROSODY)
    mels = np.zeros((W, V, MEL.n_mels, N_FRAMES), dtype=np.float16)
    lengths = np.zeros((W, V), dtype=np.int16)
    for w, word in enumerate(words):
        for v, (voice, (rate, pitch)) in enumerate((vo, pr) for vo in VOICES for pr in PROSODY):
            wave = tts.synth(word, voice=voice, rate=rate, pitch=pitch)
            mel = spoken_word_mel(wave, tts.sample_rate, MEL, top_db=TRIM_TOP_DB)
            lengths[w, v] = mel.shape[1]
            mels[w, v] = fix_frames(mel, N_FRAMES, MEL.silence)
    return mels, lengths


def digit_split(labels: np.ndarray) -> np.ndarray:
    """0 (train) / 1 (test) per image: ``DIGIT_TEST_FRACTION`` of each class, seeded."""
    rng = np.random.default_rng(DIGIT_SPLIT_SEED)
    split = np.zeros(labels.shape[0], dtype=np.uint8)
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        split[rng.permutation(idx)[: round(DIGIT_TEST_FRACTION * idx.size)]] = 1
    return split


def build() -> dict[str, np.ndarray]:
    import sklearn
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # [1797, 8, 8] in 0..16
    labels = digits.target.astype(np.int64)
    tts = Espeak()
    digit_mel, digit_len = synth_words(tts, DIGIT_WORDS)
    novel_mel, novel_len = synth_words(tts, NOVEL_WORDS)
    # synthesised last: espeak-ng carries some state from one utterance to the next, so this
    # order keeps the digit and novel words identical to format version 1
    extra_mel, extra_len = synth_words(tts, EXTRA_WORDS)
    variant_voice = np.repeat(np.arange(len(VOICES)), len(PROSODY)).astype(np.int64)
    meta = {
        "format_version": FORMAT_VERSION,
        "sources": {"images": f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
                    "speech": f"espeak-ng {tts.version} via espeakng-loader, synthesised at {tts.sample_rate} Hz"},
        "logmel": MEL.model_dump(), "n_frames": N_FRAMES, "trim_top_db": TRIM_TOP_DB,
        "voices": list(VOICES), "test_voices": list(TEST_VOICES),
        "prosody_rate_pitch": [list(p) for p in PROSODY],
        "digit_words": list(DIGIT_WORDS), "novel_words": list(NOVEL_WORDS), "extra_words": list(EXTRA_WORDS),
        "digit_test_fraction": DIGIT_TEST_FRACTION, "digit_split_seed": DIGIT_SPLIT_SEED,
        "command": "python scripts/make_seeandhear.py",
    }
    return {
        "meta": np.array(json.dumps(meta, sort_keys=True)),
        "digit_images": images,
        "digit_labels": labels,
        "digit_split": digit_split(labels),
        "digit_words": np.array(DIGIT_WORDS),
        "novel_words": np.array(NOVEL_WORDS),
        "extra_words": np.array(EXTRA_WORDS),
        "voices": np.array(VOICES),
        "voice_split": np.array([int(v in TEST_VOICES) for v in VOICES], dtype=np.uint8),
        "variant_voice": variant_voice,
        "variant_rate": np.array([r for _ in VOICES for r, _ in PROSODY], dtype=np.int64),
        "variant_pitch": np.array([p for _ in VOICES for _, p in PROSODY], dtype=np.int64),
        "digit_word_mel": digit_mel,
        "digit_word_frames": digit_len,
        "novel_word_mel": novel_mel,
        "novel_word_frames": novel_len,
        "extra_word_mel": extra_mel,
        "extra_word_frames": extra_len,
    }


def archive_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (deflated zip of ``.npy`` members) with fixed timestamps: same arrays, same bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ASSET, help="archive to write (checksum goes beside it)")
    parser.add_argument("--check", action="store_true", help="compare with the existing file instead of writing")
    args = parser.parse_args(argv)
    arrays = build()
    data = archive_bytes(arrays)
    digest = hashlib.sha256(data).hexdigest()
    sums = args.out.with_name(args.out.name + ".sha256")
    if args.check:
        shipped = hashlib.sha256(args.out.read_bytes()).hexdigest()
        same = shipped == digest
        print(f"{args.out}: shipped {shipped}, regenerated {digest}: {'identical' if same else 'DIFFERENT'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    sums.write_text(f"{digest}  {args.out.name}\n")
    dw, nw, ew = arrays["digit_word_frames"], arrays["novel_word_frames"], arrays["extra_word_frames"]
    print(f"wrote {args.out} ({len(data) / 1e6:.2f} MB, sha256 {digest[:16]}...) and {sums.name}")
    print(f"  digits {arrays['digit_images'].shape}, words {arrays['digit_word_mel'].shape} + novel "
          f"{arrays['novel_word_mel'].shape} + extra {arrays['extra_word_mel'].shape}; utterances longer than "
          f"{N_FRAMES} frames (cropped): {int((dw > N_FRAMES).sum())}/{dw.size} digit words, "
          f"{int((nw > N_FRAMES).sum())}/{nw.size} novel words, {int((ew > N_FRAMES).sum())}/{ew.size} extra words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
