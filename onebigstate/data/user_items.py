"""Your own words and pictures in see-and-hear streams: the same features the models were trained on.

    from onebigstate.data.user_items import image_features, word_features, with_user_items

    words = {"cup": [word_features(wave, 44100) for wave in cup_recordings], ...}   # any sample rate
    images = [image_features(photo) for photo in photos]                              # any size, grey or RGB
    data = with_user_items(images, labels, words)       # labels: which of 10 objects each image shows
    batch = generate_streams(StreamConfig(split="novel", ...), 8, seed=0, data=data)
    result = measure_recall(model, StreamConfig(split="novel", ...), RecallGrid(), 64, 0, data=data)

A word becomes what ``scripts/make_seeandhear.py`` made of every shipped word (the settings
are read from the data file's ``meta``, so they are the ones the model was trained on):
resampled to 16 kHz, log-mel frames (``onebigstate.data.logmel``), trimmed to its non-silent
part and centred in 24 frames. An image becomes an 8 x 8 grey picture in [0, 1] like the
shipped digit scans (bright ink on a dark ground; ``invert=True`` for dark ink on paper).

:func:`with_user_items` returns the shipped data with the ``novel`` split made of your items:
your words in place of the novel words (spoken by the "test voices": each word's recordings
fill those variants in turn) and your images in place of the test scans. Training words,
training scans and the normalisation of the log-mel values are left as they are, so a
trained model reads your items as it read the held-out ones.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from onebigstate.data.logmel import LogMelConfig, fix_frames, spoken_word_mel
from onebigstate.data.seeandhear import N_CLASSES, SeeHearData, load_seeandhear


def _word_settings(data: SeeHearData | None) -> tuple[LogMelConfig, int, float]:
    meta = (data if data is not None else load_seeandhear()).meta
    return LogMelConfig(**meta["logmel"]), int(meta["n_frames"]), float(meta["trim_top_db"])


def word_features(wave: np.ndarray, sample_rate: int, data: SeeHearData | None = None) -> np.ndarray:
    """One spoken word ``[S]`` (mono; ``[S, C]`` channels are averaged) at any sample rate ->
    its log-mel frames ``[M, L]`` float32, as the shipped words were made (``M = 40``, ``L = 24``)."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"word_features expects a non-empty mono waveform [S] (or [S, channels]), "
                         f"got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise ValueError("word_features: the waveform holds NaN or inf")
    if int(sample_rate) < 1000:
        raise ValueError(f"word_features: sample_rate must be in Hz (>= 1000), got {sample_rate}")
    mel_cfg, n_frames, top_db = _word_settings(data)
    mel = spoken_word_mel(wave, int(sample_rate), mel_cfg, top_db=top_db)
    return fix_frames(mel, n_frames, mel_cfg.silence).astype(np.float32)


def image_features(image, size: int = 8, invert: bool = False, fit: bool = True) -> np.ndarray:
    """A picture ``[H, W]`` (grey) or ``[H, W, 3|4]`` (RGB(A)), integer or float, of any size ->
    ``[size, size]`` float32 in [0, 1]: grey, scaled to its own range, area-averaged to the
    shipped scans' 8 x 8. The scans are bright ink on a dark ground: pass ``invert=True`` for
    dark ink on light paper. ``fit`` first crops to the ink (pixels above a quarter of the
    range) with a one-eighth margin, squared, as the scans' digits fill their box."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114])
    if a.ndim != 2 or min(a.shape) == 0:
        raise ValueError(f"image_features expects a picture [H, W] or [H, W, 3|4], got shape {np.shape(image)}")
    if not np.isfinite(a).all():
        raise ValueError("image_features: the picture holds NaN or inf")
    lo, hi = a.min(), a.max()
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    if invert:
        a = 1.0 - a
    if fit and (a > 0.25).any():
        a = _fit_to_ink(a)
    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    return F.interpolate(t, size=(size, size), mode="area")[0, 0].numpy().astype(np.float32)


def _fit_to_ink(a: np.ndarray) -> np.ndarray:
    """The ink's bounding box, squared and with a margin of 1/8 of its side, on a dark ground."""
    rows, cols = np.nonzero(a > 0.25)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = max(r1 - r0, c1 - c0)
    pad = max(1, side // 8)
    out = np.zeros((side + 2 * pad, side + 2 * pad))
    top, left = pad + (side - (r1 - r0)) // 2, pad + (side - (c1 - c0)) // 2
    out[top:top + r1 - r0, left:left + c1 - c0] = a[r0:r1, c0:c1]
    return out


def with_user_items(images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[int],
                    words: Mapping[str, Sequence[np.ndarray]], data: SeeHearData | None = None) -> SeeHearData:
    """The see-and-hear data with its ``novel`` split made of your items.

    images: ``[N, 8, 8]`` in [0, 1] (:func:`image_features`); labels: which object each shows,
    0..9 (the models answer one of 10 objects; objects you give no picture of keep the shipped
    test scans, since a stream shows all 10).
    words: name -> one or more recordings as :func:`word_features` gives them ``[M, L]``.
    At least as many objects and words as a stream pairs (``StreamConfig.n_pairs``)."""
    data = data if data is not None else load_seeandhear()
    imgs = np.stack([np.asarray(i, dtype=np.float32) for i in images]) if len(images) else np.zeros((0, 8, 8))
    labs = np.asarray(labels, dtype=np.int64)
    if imgs.ndim != 3 or imgs.shape[1:] != data.images.shape[1:]:
        raise ValueError(f"images must be {data.images.shape[1:]} each (image_features makes them), got {imgs.shape[1:]}")
    if labs.shape != (imgs.shape[0],) or imgs.shape[0] == 0:
        raise ValueError(f"give one label per image (and at least one image): {imgs.shape[0]} images, "
                         f"{labs.shape[0] if labs.ndim else 0} labels")
    if labs.min() < 0 or labs.max() >= N_CLASSES:
        raise ValueError(f"labels must be object ids 0..{N_CLASSES - 1}, got values in [{labs.min()}, {labs.max()}]")
    if not np.isfinite(imgs).all() or imgs.min() < 0 or imgs.max() > 1:
        raise ValueError("images must hold values in [0, 1] (image_features makes them)")
    shape = data.word_mel.shape[2:]
    if not words:
        raise ValueError("give at least one word")
    training_words = {data.words[i] for i in np.concatenate([data.digit_word_ids, data.extra_word_ids])}
    clash = sorted(set(words) & training_words)
    if clash:
        raise ValueError(f"words {clash} are among the training words; user words are scored as novel words")
    V = data.word_mel.shape[1]
    # the novel split reads the test-voice variants: they take a word's recordings in turn
    turn = np.arange(V)
    turn[data.variants(True)] = np.arange(len(data.variants(True)))
    mels = np.zeros((len(words), V) + shape, dtype=np.float32)
    for w, (name, recs) in enumerate(words.items()):
        recs = [np.asarray(r, dtype=np.float32) for r in recs]
        if not recs or any(r.shape != shape for r in recs):
            raise ValueError(f"word {name!r}: give one or more recordings of shape {shape} (word_features makes "
                             f"them), got {[r.shape for r in recs] or 'none'}")
        if not all(np.isfinite(r).all() for r in recs):
            raise ValueError(f"word {name!r}: a recording holds NaN or inf")
        for v in range(V):
            mels[w, v] = recs[turn[v] % len(recs)]
    nd, nn = data.n_digit_words, data.n_novel_words
    ids = slice(nd, nd + nn)
    word_mel = np.concatenate([data.word_mel[:nd], mels, data.word_mel[nd + nn:]])
    frames = np.full((len(words), V), shape[1], dtype=np.int64)
    word_frames = np.concatenate([data.word_frames[:nd], frames, data.word_frames[nd + nn:]])
    train = ~data.image_is_test
    # a stream shows all 10 objects (as pairs or distractors): objects without a picture of yours
    # keep the shipped test scans
    given = sorted(set(labs.tolist()))
    missing = np.setdiff1d(np.arange(N_CLASSES), labs)
    keep = data.image_is_test & np.isin(data.labels, missing)
    imgs, labs = np.concatenate([imgs, data.images[keep]]), np.concatenate([labs, data.labels[keep]])
    out = dataclasses.replace(
        data, words=data.words[:nd] + tuple(words) + data.words[ids.stop:],
        word_mel=word_mel, word_frames=word_frames, n_novel_words=len(words),
        images=np.concatenate([data.images[train], imgs]), labels=np.concatenate([data.labels[train], labs]),
        image_is_test=np.concatenate([np.zeros(int(train.sum()), bool), np.ones(imgs.shape[0], bool)]),
        meta={**data.meta, "user_items": {"words": list(words), "objects": given,
                                          "shipped_objects": missing.tolist()}})
    return out
