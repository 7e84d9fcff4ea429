"""The shipped see-and-hear data: real handwritten digits (the objects) and spoken words
(their names), loaded from ``onebigstate/data/assets/seeandhear.npz`` with verification.

Regenerate with ``python scripts/make_seeandhear.py`` (the file's ``meta`` records every
generation parameter). Axis letters: ``N`` images, ``W`` words, ``V`` variants of a word
(voice x speaking rate/pitch), ``M`` mel bins, ``L`` log-mel frames.

Contents (default file): 1797 digit images ``[N, 8, 8]`` of 10 classes, split 80/20 per
class; the words "zero".."nine" (word id = digit), 20 novel words (ids 10..29) and 40
extra training words (ids 30..69), each in 48 variants ``[V, M=40, L=24]``: 16 espeak-ng
voices (8 English accents x 2) x 3 rates and pitches. Voices are split 12 train / 4 test.
The novel words belong to no training split.

Splits (:meth:`SeeHearData.split`):

========= ============== =========================== ===============
split     images         words                       voices
========= ============== =========================== ===============
train     train digits   "zero".."nine" (ids 0..9)   train voices
test      test digits    "zero".."nine" (ids 0..9)   test voices
novel     test digits    20 novel words (ids 10..29) test voices
========= ============== =========================== ===============

``split(name, extra_words=True)`` adds the 40 extra words (ids 30..69) to ``train`` and
``test``: more names to learn from, so that a model generalises better to novel words.

Every problem with the file (missing, checksum mismatch, truncated or not an archive,
missing or unexpected keys, wrong shapes or types) raises :class:`DataFileError` naming
the file and what is wrong.

    >>> data = load_seeandhear()
    >>> s = data.split("novel")
    >>> s.images.shape[1:], s.word_mel.shape[2:], s.word_ids[:3].tolist()
    ((8, 8), (40, 24), [10, 11, 12])
"""
from __future__ import annotations

import functools
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onebigstate.files import sha256_of

DEFAULT_PATH = Path(__file__).resolve().parent / "assets" / "seeandhear.npz"
REGENERATE = "python scripts/make_seeandhear.py"
SPLITS = ("train", "test", "novel")
N_CLASSES = 10

# key -> (dtype kind, number of dims); shapes are checked against each other below
_SCHEMA = {
    "meta": ("U", 0),
    "digit_images": ("u", 3),
    "digit_labels": ("i", 1),
    "digit_split": ("u", 1),
    "digit_words": ("U", 1),
    "novel_words": ("U", 1),
    "extra_words": ("U", 1),
    "voices": ("U", 1),
    "voice_split": ("u", 1),
    "variant_voice": ("i", 1),
    "variant_rate": ("i", 1),
    "variant_pitch": ("i", 1),
    "digit_word_mel": ("f", 4),
    "digit_word_frames": ("i", 2),
    "novel_word_mel": ("f", 4),
    "novel_word_frames": ("i", 2),
    "extra_word_mel": ("f", 4),
    "extra_word_frames": ("i", 2),
}


class DataFileError(ValueError):
    """A data file is missing, corrupt, truncated, or does not match what the code expects."""


@dataclass(frozen=True)
class SeeHearSplit:
    """One split. Images are float32 in [0, 1]; ``word_mel[w, v]`` is word ``word_ids[w]``
    in variant ``v`` (raw log-mel, see :attr:`SeeHearData.mel_mean` to normalise)."""

    name: str
    images: np.ndarray       # [N, 8, 8] float32
    labels: np.ndarray       # [N] int64 object class 0..9
    word_mel: np.ndarray     # [W, V, M, L] float32
    word_ids: np.ndarray     # [W] int64 into SeeHearData.words
    voices: tuple[str, ...]  # voice of each variant, [V]


@dataclass(frozen=True)
class SeeHearData:
    path: Path
    meta: dict
    images: np.ndarray          # [1797, 8, 8] float32 in [0, 1]
    labels: np.ndarray          # [1797] int64
    image_is_test: np.ndarray   # [1797] bool
    words: tuple[str, ...]      # 70 names: digit words (ids 0..9), novel words (10..29), extra words (30..69)
    word_mel: np.ndarray        # [70, V, M, L] float32 raw log-mel
    word_frames: np.ndarray     # [30, V] frames of speech before centring in L frames
    voices: tuple[str, ...]     # [n_voices]
    voice_is_test: np.ndarray   # [n_voices] bool
    variant_voice: np.ndarray   # [V] int64 index into voices
    variant_rate: np.ndarray    # [V] words per minute
    variant_pitch: np.ndarray   # [V] espeak pitch 0..100
    n_digit_words: int
    n_novel_words: int

    @property
    def novel_word_ids(self) -> np.ndarray:
        return np.arange(self.n_digit_words, self.n_digit_words + self.n_novel_words)

    @property
    def extra_word_ids(self) -> np.ndarray:
        return np.arange(self.n_digit_words + self.n_novel_words, len(self.words))

    @property
    def digit_word_ids(self) -> np.ndarray:
        return np.arange(self.n_digit_words)

    def variants(self, test: bool) -> np.ndarray:
        """Variant indices spoken by the test voices (``test=True``) or the train voices."""
        return np.nonzero(self.voice_is_test[self.variant_voice] == test)[0]

    @functools.cached_property
    def mel_mean(self) -> float:
        """Mean of the train split's log-mel values (streams normalise with it and :attr:`mel_std`)."""
        return float(self.word_mel[: self.n_digit_words][:, self.variants(False)].mean())

    @functools.cached_property
    def mel_std(self) -> float:
        return float(self.word_mel[: self.n_digit_words][:, self.variants(False)].std())

    def split(self, name: str, extra_words: bool = False) -> SeeHearSplit:
        """``"train"``, ``"test"`` or ``"novel"`` (see the module docstring's table);
        ``extra_words`` adds the extra words to ``train`` and ``test``."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        if extra_words and name == "novel":
            raise ValueError("extra_words adds training words: it applies to the train and test splits, not novel")
        test = name != "train"
        img = np.nonzero(self.image_is_test == test)[0]
        ids = self.novel_word_ids if name == "novel" else self.digit_word_ids
        if extra_words:
            ids = np.concatenate([ids, self.extra_word_ids])
        var = self.variants(test)
        return SeeHearSplit(name=name, images=self.images[img], labels=self.labels[img],
                            word_mel=self.word_mel[ids][:, var], word_ids=ids,
                            voices=tuple(self.voices[v] for v in self.variant_voice[var]))


def _expected_checksum(path: Path) -> str:
    sums = path.with_name(path.name + ".sha256")
    if not sums.is_file():
        raise DataFileError(f"{path}: checksum file {sums} is missing (regenerate both with `{REGENERATE}`)")
    fields = sums.read_text().split()
    if len(fields) < 1 or len(fields[0]) != 64 or any(c not in "0123456789abcdef" for c in fields[0].lower()):
        raise DataFileError(f"{path}: checksum file {sums} does not start with a sha256 hex digest")
    return fields[0].lower()


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        size = path.stat().st_size
        raise DataFileError(f"{path}: not a readable .npz archive ({size} bytes; truncated or corrupt?): "
                            f"{type(e).__name__}: {e}") from e


def _check_schema(path: Path, z: dict[str, np.ndarray]) -> None:
    missing = sorted(set(_SCHEMA) - set(z))
    extra = sorted(set(z) - set(_SCHEMA))
    if missing or extra:
        raise DataFileError(f"{path}: wrong keys: missing {missing}, unexpected {extra} "
                            f"(expected {sorted(_SCHEMA)})")
    for key, (kind, ndim) in _SCHEMA.items():
        a = z[key]
        if a.dtype.kind != kind or a.ndim != ndim:
            raise DataFileError(f"{path}: key {key!r} should be a {ndim}-d array of dtype kind {kind!r}, "
                                f"got shape {a.shape} dtype {a.dtype}")
    n = z["digit_images"].shape[0]
    nw_d, nw_n, nw_e = z["digit_words"].shape[0], z["novel_words"].shape[0], z["extra_words"].shape[0]
    n_voices = z["voices"].shape[0]
    V = z["variant_voice"].shape[0]
    M, L = z["digit_word_mel"].shape[2:]
    expect = {
        "digit_images": (n, 8, 8), "digit_labels": (n,), "digit_split": (n,),
        "voice_split": (n_voices,), "variant_rate": (V,), "variant_pitch": (V,),
        "digit_word_mel": (nw_d, V, M, L), "digit_word_frames": (nw_d, V),
        "novel_word_mel": (nw_n, V, M, L), "novel_word_frames": (nw_n, V),
        "extra_word_mel": (nw_e, V, M, L), "extra_word_frames": (nw_e, V),
    }
    for key, shape in expect.items():
        if z[key].shape != shape:
            raise DataFileError(f"{path}: key {key!r} has shape {z[key].shape}, expected {shape}")
    if nw_d != N_CLASSES:
        raise DataFileError(f"{path}: expected {N_CLASSES} digit words, got {nw_d}")
    labels = z["digit_labels"]
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise DataFileError(f"{path}: digit labels outside 0..{N_CLASSES - 1}")
    if z["variant_voice"].min() < 0 or z["variant_voice"].max() >= n_voices:
        raise DataFileError(f"{path}: variant_voice indexes outside the {n_voices} voices")
    for name, values in (("digit_split", z["digit_split"]), ("voice_split", z["voice_split"])):
        if set(np.unique(values).tolist()) != {0, 1}:
            raise DataFileError(f"{path}: {name} must hold both 0 (train) and 1 (test), got {np.unique(values)}")
    digit, novel, extra = (set(z[k].tolist()) for k in ("digit_words", "novel_words", "extra_words"))
    if novel & (digit | extra):
        raise DataFileError(f"{path}: novel words {sorted(novel & (digit | extra))} also appear among the training words")
    if digit & extra:
        raise DataFileError(f"{path}: extra words {sorted(digit & extra)} repeat digit words")
    try:
        json.loads(str(z["meta"]))
    except json.JSONDecodeError as e:
        raise DataFileError(f"{path}: key 'meta' is not JSON: {e}") from e


def load_seeandhear(path: str | Path | None = None, verify: bool = True) -> SeeHearData:
    """Load and check the see-and-hear file (default: the shipped asset).

    ``verify`` compares the file's sha256 with ``<path>.sha256`` first. Loads are cached
    per (path, size, modification time), so calling this again is free; the arrays are
    shared between callers and therefore read-only.
    """
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise DataFileError(f"{path}: see-and-hear data file is missing (regenerate it with `{REGENERATE}`)")
    st = path.stat()
    return _load_cached(path.resolve(), st.st_size, st.st_mtime_ns, verify)


@functools.lru_cache(maxsize=4)
def _load_cached(path: Path, size: int, mtime_ns: int, verify: bool) -> SeeHearData:
    if verify:
        expected = _expected_checksum(path)
        actual = sha256_of(path)
        if actual != expected:
            raise DataFileError(f"{path}: sha256 mismatch: file ({size} bytes) has {actual}, "
                                f"{path.name}.sha256 expects {expected}; the file is corrupt or truncated, "
                                f"or was regenerated without its checksum (`{REGENERATE}` writes both)")
    z = _read_arrays(path)
    _check_schema(path, z)
    words = tuple(z["digit_words"].tolist()) + tuple(z["novel_words"].tolist()) + tuple(z["extra_words"].tolist())
    data = SeeHearData(
        path=path,
        meta=json.loads(str(z["meta"])),
        images=(z["digit_images"].astype(np.float32) / 16.0),
        labels=z["digit_labels"].astype(np.int64),
        image_is_test=z["digit_split"].astype(bool),
        words=words,
        word_mel=np.concatenate([z["digit_word_mel"], z["novel_word_mel"], z["extra_word_mel"]]).astype(np.float32),
        word_frames=np.concatenate([z["digit_word_frames"], z["novel_word_frames"],
                                    z["extra_word_frames"]]).astype(np.int64),
        voices=tuple(z["voices"].tolist()),
        voice_is_test=z["voice_split"].astype(bool),
        variant_voice=z["variant_voice"].astype(np.int64),
        variant_rate=z["variant_rate"].astype(np.int64),
        variant_pitch=z["variant_pitch"].astype(np.int64),
        n_digit_words=len(z["digit_words"]),
        n_novel_words=len(z["novel_words"]),
    )
    for value in vars(data).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return data
