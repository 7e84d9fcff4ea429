"""The shipped see-and-hear data: contents, splits, and a clear error for every broken file."""
from __future__ import annotations

import doctest
import hashlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onebigstate.data import espeak, logmel, seeandhear
from onebigstate.data.seeandhear import DEFAULT_PATH, DataFileError, load_seeandhear

REPO = Path(__file__).resolve().parents[1]


def _copy_asset(tmp_path: Path) -> Path:
    dst = tmp_path / "seeandhear.npz"
    shutil.copy(DEFAULT_PATH, dst)
    shutil.copy(DEFAULT_PATH.with_name(DEFAULT_PATH.name + ".sha256"), tmp_path / "seeandhear.npz.sha256")
    return dst


def _write_npz_with_checksum(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(buf.getvalue()).hexdigest()}  {path.name}\n")


def _shipped_arrays() -> dict[str, np.ndarray]:
    with np.load(DEFAULT_PATH) as z:
        return {k: z[k] for k in z.files}


def test_shipped_file_contents():
    data = load_seeandhear()
    assert data.images.shape == (1797, 8, 8) and 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert sorted(np.unique(data.labels).tolist()) == list(range(10))
    assert data.words[:10] == ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert len(data.words) == 70 and len(set(data.words)) == 70
    assert data.word_mel.shape == (70, 48, 40, 24)
    assert len(data.voices) == 16 and data.voice_is_test.sum() == 4
    # every stored utterance holds speech: louder than the silence it was padded with
    silence = data.meta["logmel"]["eps"]
    assert (data.word_mel.max(axis=(2, 3)) > np.log(silence) + 10).all()
    assert data.meta["n_frames"] == 24 and data.meta["format_version"] == 2
    assert DEFAULT_PATH.stat().st_size < 5_000_000


def test_splits_are_disjoint_and_novel_words_never_in_train():
    data = load_seeandhear()
    train, test, novel = (data.split(s) for s in ("train", "test", "novel"))
    assert set(train.voices).isdisjoint(test.voices) and set(test.voices) == set(novel.voices)
    assert len(set(train.voices)) == 12 and len(set(test.voices)) == 4
    novel_ids = set(data.novel_word_ids.tolist())
    assert novel_ids == set(range(10, 30)) and novel_ids.isdisjoint(train.word_ids.tolist())
    assert novel_ids.isdisjoint(test.word_ids.tolist()) and set(novel.word_ids.tolist()) == novel_ids
    assert train.images.shape[0] + test.images.shape[0] == 1797
    # the extra words are training words: never novel, only in train/test when asked for
    extra = data.split("train", extra_words=True)
    assert set(extra.word_ids.tolist()) == set(range(10)) | set(range(30, 70))
    assert novel_ids.isdisjoint(extra.word_ids.tolist())
    assert novel_ids.isdisjoint(data.split("test", extra_words=True).word_ids.tolist())
    assert {data.words[i] for i in novel_ids}.isdisjoint(data.words[i] for i in extra.word_ids)
    with pytest.raises(ValueError, match="not novel"):
        data.split("novel", extra_words=True)
    # every class in both image splits
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="split must be one of"):
        data.split("validation")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataFileError, match=r"nothere\.npz.*missing.*make_seeandhear"):
        load_seeandhear(tmp_path / "nothere.npz")


def test_missing_checksum_file(tmp_path):
    path = _copy_asset(tmp_path)
    path.with_name(path.name + ".sha256").unlink()
    with pytest.raises(DataFileError, match=r"seeandhear\.npz: checksum file .*missing"):
        load_seeandhear(path)


def test_checksum_mismatch_names_file(tmp_path):
    path = _copy_asset(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match=rf"{path.name}: sha256 mismatch") as e:
        load_seeandhear(path)
    assert str(path.resolve()) in str(e.value)
    # unverified, the damage is still caught when the archive is read
    with pytest.raises(DataFileError, match=rf"{path.name}: not a readable \.npz archive"):
        load_seeandhear(path, verify=False)


def test_loaded_arrays_are_read_only():
    data = load_seeandhear()
    with pytest.raises(ValueError, match="read-only"):
        data.images[0, 0, 0] = 1.0


def test_truncated_file(tmp_path):
    path = _copy_asset(tmp_path)
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DataFileError, match=r"seeandhear\.npz: sha256 mismatch: file \(100000 bytes\)"):
        load_seeandhear(path)
    # without the checksum (or with one rewritten for the broken file) the archive itself is refused
    with pytest.raises(DataFileError, match=r"seeandhear\.npz: not a readable \.npz archive \(100000 bytes"):
        load_seeandhear(path, verify=False)


def test_wrong_keys(tmp_path):
    arrays = _shipped_arrays()
    arrays["novel_mel"] = arrays.pop("novel_word_mel")
    path = tmp_path / "wrongkeys.npz"
    _write_npz_with_checksum(path, arrays)
    with pytest.raises(DataFileError, match=r"wrongkeys\.npz: wrong keys: missing \['novel_word_mel'\], unexpected \['novel_mel'\]"):
        load_seeandhear(path)


@pytest.mark.parametrize("key,value,message", [
    ("novel_word_mel", lambda a: a[:, :10], r"key 'novel_word_mel' has shape \(20, 10, 40, 24\), expected \(20, 48, 40, 24\)"),
    ("digit_images", lambda a: a.astype(np.float32), r"key 'digit_images' should be a 3-d array of dtype kind 'u'"),
    ("digit_labels", lambda a: a + 5, r"digit labels outside 0\.\.9"),
    ("novel_words", lambda a: np.concatenate([a[:-1], ["seven"]]), r"novel words \['seven'\] also appear among the training words"),
    ("extra_words", lambda a: np.concatenate([a[:-1], ["apple"]]), r"novel words \['apple'\] also appear among the training words"),
    ("extra_word_frames", lambda a: a[:5], r"key 'extra_word_frames' has shape \(5, 48\), expected \(40, 48\)"),
], ids=["shape", "dtype", "labels", "novel-digit-overlap", "novel-extra-overlap", "extra-shape"])
def test_mismatched_contents(tmp_path, key, value, message):
    arrays = _shipped_arrays()
    arrays[key] = value(arrays[key])
    path = tmp_path / "bad.npz"
    _write_npz_with_checksum(path, arrays)
    with pytest.raises(DataFileError, match=rf"bad\.npz: {message}"):
        load_seeandhear(path)


def test_logmel_sine_peaks_at_its_mel_bin():
    cfg = logmel.LogMelConfig()
    t = np.arange(16000) / cfg.sample_rate
    mel = logmel.log_mel(np.sin(2 * np.pi * 1000.0 * t), cfg)
    assert mel.shape == (cfg.n_mels, 1 + 16000 // cfg.hop)
    centres = logmel.mel_to_hz(np.linspace(logmel.hz_to_mel(cfg.fmin), logmel.hz_to_mel(cfg.fmax), cfg.n_mels + 2))[1:-1]
    assert abs(centres[mel[:, 10].argmax()] - 1000.0) < 100.0
    assert np.allclose(logmel.log_mel(np.zeros(4000), cfg), cfg.silence)
    padded = logmel.fix_frames(mel[:, :5], 24, cfg.silence)
    assert padded.shape == (40, 24) and np.array_equal(padded[:, 9:14], mel[:, :5]) and (padded[:, 0] == cfg.silence).all()
    assert np.array_equal(logmel.fix_frames(mel, 24, cfg.silence), mel[:, 5:29])  # 34 frames, middle 24


def test_espeak_synthesises_and_rejects_unknown_voice():
    tts = espeak.Espeak()
    wave = tts.synth("one", voice="en-us+m2", rate=175, pitch=50)
    assert wave.dtype == np.float32 and 0.1 < wave.shape[0] / tts.sample_rate < 2.0 and np.abs(wave).max() > 0.1
    with pytest.raises(espeak.EspeakError, match="no voice 'xx-nonexistent'"):
        tts.synth("one", voice="xx-nonexistent")


def test_module_docstring_examples():
    assert doctest.testmod(seeandhear, raise_on_error=True).attempted >= 1


@pytest.mark.slow
def test_regeneration_reproduces_the_shipped_file():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "make_seeandhear.py"), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "identical" in out.stdout
