"""See-and-hear streams: word-object pairings met as an infant meets them, then recalled.

Axis letters: ``B`` streams, ``T`` steps, ``F`` features (layout in
``onebigstate.data.layout``: 64 image pixels then 40x24 log-mel values), ``P`` pairings.

A stream (one row of the batch) is built like this, every choice drawn from a generator
seeded by ``(seed, split, row)``, so a row never depends on the batch size:

1. **A fresh pairing.** ``n_pairs`` of the 10 objects (digit classes) and ``n_pairs``
   words of the split are drawn, and word ``p`` names object ``p``: a new random mapping in
   every stream, so it can only be held in the state. Training streams use "zero".."nine"
   (in a shuffled meaning: "three" may name the 7s), plus 40 extra words with
   ``extra_words=True``; ``split="novel"`` uses 20 words that never appear in training.
2. **Exposures.** Each pairing is met ``e`` times (``e`` drawn from ``exposures``): the
   object is seen for ``view_frames`` continuous image steps (a random exemplar of the
   class, each frame jittered by up to ``image_jitter`` pixels plus pixel noise), then,
   ``name_gap`` steps after the last frame (silence between), its name is heard as one
   discrete audio step (a random voice variant of the word, plus noise). Exposures of all
   pairings are shuffled together, with ``spacing`` filler steps between them.
3. **Queries.** Each pairing is queried once, ``delay`` steps after its last exposure's
   word (``delay`` log-uniform in ``[delay_min, delay_max]``). Later exposures are laid
   out around the queries already placed, so delays are exact, except that a query
   landing on another query moves to the next free step (the real delay is recorded). A
   word query is the word alone (another voice variant unless ``query_same_variant``); its
   target is the object class. An image query (a fraction ``image_query_frac`` of pairings) is the object
   alone, seen for ``view_frames`` steps (another exemplar); the target, on its last frame,
   is ``WORD_TARGET_OFFSET + word id`` (word ids: 0..9 digit words, 10..29 novel words,
   30..69 extra words). Targets thus share one output space of ``n_targets = 80`` classes:
   0..9 objects, then words. A silent step precedes each query.
4. **Filler.** Every other step is silence, a distractor object view (any class, never
   named), a distractor word (a word of the split that is in no pairing of this stream;
   noise when there is none), or noise (random pixels or random log-mel values), in the
   proportions ``p_silence : p_distractor_image : p_distractor_word : p_noise``.

Per step the batch holds ``features [B, T, F]``, ``modality`` (0 none, 1 image, 2 audio),
``continuous`` (True on image steps), ``target`` (-100 off the queries), ``delay`` and
``exposures`` (-1 off the queries), ``query_kind`` (0 none, 1 word->object, 2
object->word), ``event`` (see ``EVENT_NAMES``) and ``item`` (object class on image steps,
word id on audio steps, -1 on noise and silence).

Worked example (2 pairings, 1 exposure each, delay 10, 2 frames per view):

>>> cfg = StreamConfig(n_pairs=2, exposures=[1], delay_min=10, delay_max=10, view_frames=2,
...                    p_silence=1.0, p_distractor_image=0.0, p_distractor_word=0.0, p_noise=0.0)
>>> batch = generate_streams(cfg, n=1, seed=0)
>>> print(describe(batch, 0))  # doctest: +NORMALIZE_WHITESPACE
pairings: 'two'->object 4, 'nine'->object 6
t   0-1  silence
t   2-3  pair-view   object 4
t     4  pair-word   'two'
t   5-8  silence
t  9-10  pair-view   object 6
t    11  pair-word   'nine'
t 12-13  silence
t    14  query-word  'two'  target 4 (delay 10, 1 exposure)
t 15-20  silence
t    21  query-word  'nine'  target 6 (delay 10, 1 exposure)
t 22-60  silence

The object seen at steps 2-3 (a 4) is named 'two' at step 4; at step 14 'two' is heard
alone and the model must answer 4. In another stream 'two' names another object.

Evaluate recall against delay and exposures by fixing them, e.g.
``StreamConfig(split="novel", exposures=[1], delay_min=1000, delay_max=1000)``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from onebigstate.config import StrictModel
from onebigstate.data.layout import AUDIO, IMAGE, NONE, StreamLayout
from onebigstate.data.seeandhear import N_CLASSES, SeeHearData, SeeHearSplit, load_seeandhear

IGNORE = -100
SPLIT_CODES = {"train": 0, "test": 1, "novel": 2}

# event ids of a step
SILENCE, PAIR_VIEW, PAIR_WORD, DISTRACTOR_VIEW, DISTRACTOR_WORD, NOISE_IMAGE, NOISE_AUDIO, QUERY_VIEW, QUERY_WORD = range(9)
EVENT_NAMES = ("silence", "pair-view", "pair-word", "distractor-view", "distractor-word",
               "noise-image", "noise-audio", "query-view", "query-word")
# query kinds
WORD_TO_OBJECT, OBJECT_TO_WORD = 1, 2
# object->word targets are word ids shifted past the object classes
WORD_TARGET_OFFSET = N_CLASSES


def n_targets(data: SeeHearData) -> int:
    """Size of the output space of the targets: the objects, then every word (80 with the shipped file)."""
    return WORD_TARGET_OFFSET + len(data.words)


class StreamConfig(StrictModel):
    """How see-and-hear streams are built (see the module docstring)."""

    split: Literal["train", "test", "novel"] = "train"
    extra_words: bool = Field(False, description="add the 40 extra training words to the train/test vocabulary")
    seq_len: int | None = Field(None, ge=8, description="steps per stream; None: required_len")
    n_pairs: int = Field(5, ge=1, le=N_CLASSES, description="word-object pairings per stream")
    exposures: list[int] = Field(default_factory=lambda: [1, 2, 3, 5], description="exposures per pairing, drawn from this list")
    delay_min: int = Field(10, ge=1, description="steps from the last exposure's word to the query")
    delay_max: int = Field(100, ge=1)
    view_frames: int = Field(3, ge=1, description="continuous image steps per view of an object")
    name_gap: tuple[int, int] = Field((1, 3), description="steps from a view's last frame to its name, min and max")
    spacing: tuple[int, int] = Field((2, 6), description="filler steps between exposures, min and max")
    image_query_frac: float = Field(0.0, ge=0.0, le=1.0, description="fraction of pairings queried object->word")
    query_same_variant: bool = Field(False, description="query with the exposure's own voice variant / exemplar")
    p_silence: float = Field(0.4, ge=0.0)
    p_distractor_image: float = Field(0.2, ge=0.0)
    p_distractor_word: float = Field(0.2, ge=0.0)
    p_noise: float = Field(0.2, ge=0.0)
    image_noise: float = Field(0.05, ge=0.0, description="std of Gaussian pixel noise (pixels in [0, 1])")
    image_jitter: int = Field(1, ge=0, description="largest shift of a frame, in pixels")
    audio_noise: float = Field(0.1, ge=0.0, description="std of Gaussian noise on normalised log-mel")

    @model_validator(mode="after")
    def _check(self) -> "StreamConfig":
        if not self.exposures or min(self.exposures) < 1:
            raise ValueError(f"exposures must be a non-empty list of counts >= 1, got {self.exposures}")
        if self.extra_words and self.split == "novel":
            raise ValueError("extra_words adds training words: use it with split train or test, not novel")
        if self.delay_min > self.delay_max:
            raise ValueError(f"delay_min ({self.delay_min}) must be <= delay_max ({self.delay_max})")
        if not 1 <= self.name_gap[0] <= self.name_gap[1]:
            raise ValueError(f"name_gap must be (min, max) with 1 <= min <= max, got {self.name_gap}")
        if not 0 <= self.spacing[0] <= self.spacing[1]:
            raise ValueError(f"spacing must be (min, max) with 0 <= min <= max, got {self.spacing}")
        if self.p_silence + self.p_distractor_image + self.p_distractor_word + self.p_noise <= 0:
            raise ValueError("the filler probabilities p_silence, p_distractor_image, p_distractor_word, p_noise sum to 0")
        if self.seq_len is not None and self.seq_len < self.required_len:
            raise ValueError(f"seq_len ({self.seq_len}) is too short for this config: streams need up to "
                             f"{self.required_len} steps (or leave seq_len unset)")
        return self

    @property
    def required_len(self) -> int:
        """Steps that always hold the study phase, the latest query and its shifts."""
        event = self.view_frames + self.name_gap[1]
        study = self.n_pairs * max(self.exposures) * (event + self.spacing[1]) + self.spacing[1]
        shifts = self.n_pairs * (event + 2 * self.view_frames + 2)
        return study + self.delay_max + shifts + 1

    @property
    def length(self) -> int:
        return self.seq_len if self.seq_len is not None else self.required_len


@dataclass
class StreamBatch:
    features: torch.Tensor      # [B, T, F] float32
    modality: torch.Tensor      # [B, T] int64: 0 none, 1 image, 2 audio
    continuous: torch.Tensor    # [B, T] bool
    target: torch.Tensor        # [B, T] int64, IGNORE off the queries; objects 0..9, words from WORD_TARGET_OFFSET
    delay: torch.Tensor         # [B, T] int64, -1 off the queries
    exposures: torch.Tensor     # [B, T] int64, -1 off the queries
    query_kind: torch.Tensor    # [B, T] int64: 0, WORD_TO_OBJECT, OBJECT_TO_WORD
    event: torch.Tensor         # [B, T] int64, see EVENT_NAMES
    item: torch.Tensor          # [B, T] int64: object class / word id / -1
    pair_objects: torch.Tensor  # [B, P] object class of pairing p
    pair_words: torch.Tensor    # [B, P] word id of pairing p
    words: tuple[str, ...]      # names of the word ids
    layout: StreamLayout

    def packed(self) -> torch.Tensor:
        """``[B, T, F + 2]``: features, modality id, continuous flag (``StreamLayout.pack``)."""
        return self.layout.pack(self.features, self.modality, self.continuous)

    def to(self, device: torch.device | str) -> "StreamBatch":
        moved = {f.name: (getattr(self, f.name).to(device) if isinstance(getattr(self, f.name), torch.Tensor)
                          else getattr(self, f.name)) for f in fields(self)}
        return StreamBatch(**moved)


def _log_uniform_int(rng: np.random.Generator, lo: int, hi: int, size: int) -> np.ndarray:
    return np.clip(np.floor(np.exp(rng.uniform(np.log(lo), np.log(hi + 1), size=size))), lo, hi).astype(np.int64)


def _plan(cfg: StreamConfig, split: SeeHearSplit, T: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Integer description of one stream: what each step shows (no features yet)."""
    P, view = cfg.n_pairs, cfg.view_frames
    W, V = split.word_mel.shape[:2]
    by_class = [np.nonzero(split.labels == c)[0] for c in range(N_CLASSES)]
    objects = rng.permutation(N_CLASSES)[:P]
    word_order = rng.permutation(W)
    words, distractors = word_order[:P], word_order[P:]
    n_exp = rng.choice(np.asarray(cfg.exposures), size=P)

    s = {k: np.full(T, -1, dtype=np.int64) for k in ("img", "word", "variant", "delay", "exposures")}
    s["event"] = np.full(T, SILENCE, dtype=np.int64)
    s["target"] = np.full(T, IGNORE, dtype=np.int64)
    s["query_kind"] = np.zeros(T, dtype=np.int64)
    busy = np.zeros(T, dtype=bool)

    def view_at(t0: int, exemplar: int, event: int) -> None:
        s["event"][t0: t0 + view], s["img"][t0: t0 + view] = event, exemplar

    delays = _log_uniform_int(rng, cfg.delay_min, cfg.delay_max, P)
    image_query = rng.random(P) < cfg.image_query_frac
    remaining = n_exp.copy()
    last_word = np.zeros(P, dtype=np.int64)
    last_variant = np.zeros(P, dtype=np.int64)
    last_exemplar = np.zeros(P, dtype=np.int64)

    def place_query(p: int) -> None:
        span = view if image_query[p] else 1
        q = int(last_word[p] + delays[p])
        # the query's steps and one silent step before them must be free; only another
        # query can be there already, since exposures are laid out around the queries
        while q < T and busy[q - span: q + 1].any():
            q += 1
        if q >= T:
            raise ValueError(f"a query did not fit in seq_len={T}; use at least {cfg.required_len}")
        busy[q - span: q + 1] = True
        if image_query[p]:
            exemplar = last_exemplar[p] if cfg.query_same_variant else int(rng.choice(by_class[objects[p]]))
            view_at(q - view + 1, exemplar, QUERY_VIEW)
            s["target"][q], s["query_kind"][q] = WORD_TARGET_OFFSET + split.word_ids[words[p]], OBJECT_TO_WORD
        else:
            variant = last_variant[p] if cfg.query_same_variant else int(rng.integers(V))
            s["event"][q], s["word"][q], s["variant"][q] = QUERY_WORD, words[p], variant
            s["target"][q], s["query_kind"][q] = objects[p], WORD_TO_OBJECT
        s["delay"][q], s["exposures"][q] = q - last_word[p], n_exp[p]

    t = int(rng.integers(cfg.spacing[0], cfg.spacing[1] + 1))
    for p in rng.permutation(np.repeat(np.arange(P), n_exp)):
        exemplar = int(rng.choice(by_class[objects[p]]))
        gap = int(rng.integers(cfg.name_gap[0], cfg.name_gap[1] + 1))
        # an exposure goes around the queries already placed, so their delays stay exact
        while busy[t: t + view + gap].any():
            t += 1
        view_at(t, exemplar, PAIR_VIEW)
        t_word = t + view - 1 + gap
        variant = int(rng.integers(V))
        s["event"][t_word], s["word"][t_word], s["variant"][t_word] = PAIR_WORD, words[p], variant
        busy[t: t_word + 1] = True
        last_word[p], last_variant[p], last_exemplar[p] = t_word, variant, exemplar
        remaining[p] -= 1
        if remaining[p] == 0:
            place_query(p)
        t = t_word + 1 + int(rng.integers(cfg.spacing[0], cfg.spacing[1] + 1))

    probs = np.array([cfg.p_silence, cfg.p_distractor_image, cfg.p_distractor_word, cfg.p_noise])
    kinds = rng.choice(4, size=T, p=probs / probs.sum())
    t = 0
    while t < T:
        if busy[t]:
            t += 1
            continue
        kind = kinds[t]
        if kind == 1 and t + view <= T and not busy[t: t + view].any():
            view_at(t, int(rng.choice(by_class[int(rng.integers(N_CLASSES))])), DISTRACTOR_VIEW)
            t += view
            continue
        if kind == 2 and distractors.size:
            s["event"][t], s["word"][t], s["variant"][t] = DISTRACTOR_WORD, rng.choice(distractors), rng.integers(V)
        elif kind in (2, 3):
            s["event"][t] = NOISE_IMAGE if rng.random() < 0.5 else NOISE_AUDIO
        t += 1
    s["pair_objects"], s["pair_words"] = objects.astype(np.int64), split.word_ids[words]
    return s


def _features(cfg: StreamConfig, s: dict[str, np.ndarray], split: SeeHearSplit, data: SeeHearData,
              layout: StreamLayout, rng: np.random.Generator, out: np.ndarray) -> None:
    """Write the ``[T, F]`` features of a planned stream into ``out`` (zeros on entry)."""
    H, Wd = layout.image_shape
    img_steps = np.nonzero(s["img"] >= 0)[0]
    if img_steps.size:
        j = cfg.image_jitter
        pix = np.pad(split.images[s["img"][img_steps]], ((0, 0), (j, j), (j, j)))
        dy, dx = rng.integers(-j, j + 1, size=(2, img_steps.size, 1, 1))
        rows = np.arange(H)[None, :, None] - dy + j
        cols = np.arange(Wd)[None, None, :] - dx + j
        pix = pix[np.arange(img_steps.size)[:, None, None], rows, cols]
        pix = pix + cfg.image_noise * rng.standard_normal(pix.shape)
        out[img_steps, layout.image_slice] = np.clip(pix, 0.0, 1.0).reshape(img_steps.size, -1)
    noise_img = np.nonzero(s["event"] == NOISE_IMAGE)[0]
    out[noise_img, layout.image_slice] = rng.random((noise_img.size, layout.image_dim))
    word_steps = np.nonzero(s["word"] >= 0)[0]
    if word_steps.size:
        mel = (split.word_mel[s["word"][word_steps], s["variant"][word_steps]] - data.mel_mean) / data.mel_std
        mel = mel + cfg.audio_noise * rng.standard_normal(mel.shape)
        out[word_steps, layout.audio_slice] = mel.reshape(word_steps.size, -1)
    noise_aud = np.nonzero(s["event"] == NOISE_AUDIO)[0]
    out[noise_aud, layout.audio_slice] = rng.standard_normal((noise_aud.size, layout.audio_dim))


def generate_streams(cfg: StreamConfig, n: int, seed: int, data: SeeHearData | None = None,
                     dtype: torch.dtype = torch.float32) -> StreamBatch:
    """``n`` streams of ``cfg.length`` steps. Row ``b`` depends only on ``(cfg, seed, b)``.

    ``dtype`` is the features' dtype (``torch.float16`` halves the memory of long streams:
    ``[8, 10_137, 1024]`` is 332 MB in float32).
    """
    data = data if data is not None else load_seeandhear()
    split = data.split(cfg.split, extra_words=cfg.extra_words)
    layout = StreamLayout(image_shape=tuple(split.images.shape[1:]), n_mels=split.word_mel.shape[2],
                          audio_frames=split.word_mel.shape[3])
    T = cfg.length
    features = torch.zeros(n, T, layout.feature_dim, dtype=dtype)
    row = np.zeros((T, layout.feature_dim), dtype=np.float32)
    plans = []
    for b in range(n):
        rng = np.random.default_rng([seed, SPLIT_CODES[cfg.split], b])
        plans.append(_plan(cfg, split, T, rng))
        row[:] = 0.0
        _features(cfg, plans[-1], split, data, layout, rng, row)
        features[b] = torch.from_numpy(row)

    def stack(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([p[key] for p in plans]))

    event = stack("event")
    is_image = (stack("img") >= 0) | (event == NOISE_IMAGE)
    is_audio = (stack("word") >= 0) | (event == NOISE_AUDIO)
    modality = torch.full_like(event, NONE)
    modality[is_image], modality[is_audio] = IMAGE, AUDIO
    img = stack("img")
    item = torch.full_like(event, -1)
    labels = torch.from_numpy(split.labels)
    item[img >= 0] = labels[img[img >= 0]]
    word = stack("word")
    item[word >= 0] = torch.from_numpy(split.word_ids)[word[word >= 0]]
    return StreamBatch(
        features=features, modality=modality, continuous=modality == IMAGE,
        target=stack("target"), delay=stack("delay"), exposures=stack("exposures"),
        query_kind=stack("query_kind"), event=event, item=item,
        pair_objects=stack("pair_objects"), pair_words=stack("pair_words"),
        words=data.words, layout=layout)


def recall_counts(logits: torch.Tensor, batch: StreamBatch) -> dict[tuple[str, int, int], tuple[int, int]]:
    """Correct and total answers per ``(query kind, exposures, delay)``, from model outputs
    ``logits [B, T, n_targets]`` (or predicted classes ``[B, T]``): the numbers behind recall
    against exposures and against delay. Query kinds are ``"word->object"`` and ``"object->word"``.
    """
    pred = logits.argmax(-1) if logits.dim() == 3 else logits
    if pred.shape != batch.target.shape:
        raise ValueError(f"predictions must be [B, T] = {tuple(batch.target.shape)}, got {tuple(pred.shape)}")
    mask = batch.target != IGNORE
    names = {WORD_TO_OBJECT: "word->object", OBJECT_TO_WORD: "object->word"}
    counts: dict[tuple[str, int, int], list[int]] = {}
    for kind, n_exp, delay, ok in zip(batch.query_kind[mask].tolist(), batch.exposures[mask].tolist(),
                                      batch.delay[mask].tolist(), (pred[mask] == batch.target[mask]).tolist()):
        c = counts.setdefault((names[kind], n_exp, delay), [0, 0])
        c[0] += int(ok)
        c[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(counts.items())}


def describe(batch: StreamBatch, b: int, start: int = 0, stop: int | None = None) -> str:
    """Readable listing of stream ``b`` (steps ``start:stop``), one line per run of equal steps."""
    words = batch.words
    pairs = ", ".join(f"{words[w]!r}->object {o}" for o, w in zip(batch.pair_objects[b].tolist(), batch.pair_words[b].tolist()))
    lines = [f"pairings: {pairs}"]
    ev, item = batch.event[b].tolist(), batch.item[b].tolist()
    stop = len(ev) if stop is None else stop
    t = start
    while t < stop:
        u = t
        while u + 1 < stop and ev[u + 1] == ev[t] and item[u + 1] == item[t] and batch.target[b, u].item() == IGNORE:
            u += 1
        name = EVENT_NAMES[ev[t]]
        what = ""
        if batch.modality[b, t] == IMAGE and item[t] >= 0:
            what = f"object {item[t]}"
        elif batch.modality[b, t] == AUDIO and item[t] >= 0:
            what = repr(words[item[t]])
        tgt = batch.target[b, u].item()
        if tgt != IGNORE:
            n_exp = batch.exposures[b, u].item()
            answer = repr(words[tgt - WORD_TARGET_OFFSET]) if batch.query_kind[b, u] == OBJECT_TO_WORD else str(tgt)
            what += f"  target {answer} (delay {batch.delay[b, u].item()}, {n_exp} exposure{'s' * (n_exp > 1)})"
        span = f"{t}" if u == t else f"{t}-{u}"
        lines.append(f"t {span:>5}  {name:<10}  {what}".rstrip())
        t = u + 1
    return "\n".join(lines)
