"""Your own words and pictures: features made as the shipped ones were, streams and recall on them."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from onebigstate.data.seeandhear import load_seeandhear
from onebigstate.data.user_items import image_features, with_user_items, word_features
from training_helpers import ROOT


@pytest.fixture(scope="module")
def tts():
    from onebigstate.data.espeak import Espeak
    try:
        return Espeak()
    except Exception as err:                      # noqa: BLE001 - the loader's own error says why
        pytest.skip(f"espeak-ng not available: {err}")


def test_word_features_equal_the_shipped_words_pipeline(tts, tmp_path):
    data = load_seeandhear()
    # variant 0 of the shipped file (make_seeandhear.py), synthesised in a fresh process as the
    # script does: espeak-ng keeps settings of earlier calls in this process (other tests' voices)
    code = ("import numpy as np; from onebigstate.data.espeak import Espeak; t = Espeak(); "
            f"np.save({str(tmp_path / 'w.npy')!r}, t.synth('zero', voice='en+m1', rate=140, pitch=35))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
    wave = np.load(tmp_path / "w.npy")
    got = word_features(wave, tts.sample_rate)
    assert got.shape == data.word_mel.shape[2:] and got.dtype == np.float32
    np.testing.assert_allclose(got, data.word_mel[0, 0], atol=2e-2)          # the file stores float16
    # any sample rate: the same word recorded at 44.1 kHz (resampled here) gives nearly the same frames
    from onebigstate.data.logmel import resample
    at_44k = word_features(resample(wave, tts.sample_rate, 44100), 44100)
    assert np.abs(at_44k - got).mean() < 0.2
    stereo = word_features(np.stack([wave, wave], 1), tts.sample_rate)
    np.testing.assert_allclose(stereo, got, atol=1e-5)


@pytest.mark.parametrize("bad, msg", [(np.zeros(0), "non-empty mono"), (np.zeros((2, 2, 2)), "non-empty mono"),
                                      (np.array([0.0, np.nan]), "NaN")])
def test_word_features_refuse_bad_waveforms(bad, msg):
    with pytest.raises(ValueError, match=msg):
        word_features(bad, 16000)
    with pytest.raises(ValueError, match="sample_rate must be in Hz"):
        word_features(np.ones(100), 16)


def test_image_features_area_average_to_the_scans_size_and_range():
    img = np.zeros((32, 32), dtype=np.uint8)
    img[8:24, 12:20] = 255                         # a bright bar on black
    f = image_features(img, fit=False)
    assert f.shape == (8, 8) and f.dtype == np.float32 and f.min() == 0 and f.max() == 1
    np.testing.assert_allclose(f[2:6, 3:5], 1.0)
    fitted = image_features(img)                   # cropped to the ink: the bar fills the box's height
    assert fitted[1:7].min(axis=0).max() > 0.9 and (fitted > 0.5).sum() > (f > 0.5).sum()
    rgb = np.repeat(img[..., None], 3, axis=2)
    np.testing.assert_allclose(image_features(rgb, fit=False), f, atol=1e-6)
    np.testing.assert_allclose(image_features(255 - img, invert=True, fit=False), f, atol=1e-6)   # dark ink
    assert image_features(np.full((5, 7), 3.0)).max() == 0                              # a blank picture
    with pytest.raises(ValueError, match="picture"):
        image_features(np.zeros((4, 4, 2)))


def _user_words(n: int = 6) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {f"word{i}": [rng.normal(-5, 2, (40, 24)).astype(np.float32) for _ in range(1 + i % 3)] for i in range(n)}


def test_streams_and_recall_run_on_user_items():
    from onebigstate.data.streams import StreamConfig, generate_streams
    from onebigstate.experiments.recall import RecallGrid, measure_recall
    from onebigstate.nets.stack import ModelConfig
    from onebigstate.tasks.seeandhear_task import StreamSeqModel, n_targets
    shipped = load_seeandhear()
    images = np.random.default_rng(1).random((12, 8, 8)).astype(np.float32)
    labels = [0, 1, 2, 3] * 3
    data = with_user_items(images, labels, _user_words())
    novel = data.split("novel")
    assert [data.words[i] for i in novel.word_ids] == [f"word{i}" for i in range(6)]
    assert novel.images.shape[0] == 12 + int((shipped.image_is_test & (shipped.labels >= 4)).sum())
    np.testing.assert_array_equal(novel.images[:12], images)
    assert data.split("train").images.shape == shipped.split("train").images.shape       # training data kept
    assert data.mel_mean == shipped.mel_mean and data.mel_std == shipped.mel_std
    cfg = StreamConfig(split="novel", n_pairs=3, exposures=[1], delay_min=5, delay_max=5, extra_words=False)
    batch = generate_streams(cfg, 4, 0, data=data)
    heard = batch.item[(batch.item >= 10)].unique().tolist()
    assert heard and all(10 <= w < 16 for w in heard)                          # only the user's words
    torch.manual_seed(0)
    model = StreamSeqModel(ModelConfig(name="obs", d_model=16, mixer={"n_nodes": 32, "k_min": 2, "k_max": 4,
                                                                          "m_active": 4}),
                           n_targets(shipped), batch.layout)
    res = measure_recall(model, cfg, RecallGrid(exposures=(1,), delays=(5,), exposure_delay=5), 4, 0, data=data)
    acc, n = res.accuracy("word->object", 1, 5)
    assert n == 4 * 3 and 0 <= acc <= 1


def test_user_items_refuse_what_streams_cannot_use():
    words, img = _user_words(), np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="object ids 0..9"):
        with_user_items(img, [0, 10], words)
    with pytest.raises(ValueError, match="one label per image"):
        with_user_items(img, [0], words)
    with pytest.raises(ValueError, match="among the training words"):
        with_user_items(img, [0, 1], {"zero": [np.zeros((40, 24))]})
    with pytest.raises(ValueError, match=r"recordings of shape \(40, 24\)"):
        with_user_items(img, [0, 1], {"cup": [np.zeros((40, 20))]})
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        with_user_items(img + 2, [0, 1], words)
