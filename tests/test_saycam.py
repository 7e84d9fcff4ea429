"""SAYCam-format loader: a 2-second clip with an audio track, written here and read back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onebigstate.data.layout import AUDIO, IMAGE
from onebigstate.data.saycam import (SayCamConfig, SayCamError, SayCamFolder, clip_to_steps, load_clip,
                                     read_transcript, write_clip)
from onebigstate.encoders import MultimodalEncoder

FPS, SIZE, SR, SECONDS = 10, 32, 16000, 2


def _frames() -> np.ndarray:
    """A white vertical bar moving right by 1 pixel per frame."""
    frames = np.zeros((FPS * SECONDS, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(len(frames)):
        frames[i, :, 4 + i] = 255
    return frames


def _tone_in_second_half() -> np.ndarray:
    t = np.arange(SR * SECONDS) / SR
    return np.where(t >= 1.0, 0.5 * np.sin(2 * np.pi * 800.0 * t), 0.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("saycam")
    write_clip(root / "day1.mp4", _frames(), FPS, _tone_in_second_half(), SR)
    (root / "day1.srt").write_text("1\n00:00:00,100 --> 00:00:00,800\nlook at the ball\n\n"
                                   "2\n00:00:01,200 --> 00:00:01,600\nball\n")
    return root


def test_clip_round_trip(folder):
    cfg = SayCamConfig(fps=5, image_size=(16, 16), audio_frames=24)
    clips = SayCamFolder(folder, cfg)
    assert len(clips) == 1
    clip = clips[0]
    # 2 s at 5 frames per second; log-mel: 1 + 32000 // 480 frames, cut to the video's duration
    assert clip.frames.shape == (10, 16, 16) and clip.frames.dtype == np.float32
    assert np.allclose(clip.frame_times, np.arange(10) / 5)
    assert abs(clip.duration - 2.0) < 1e-6
    assert clip.mel.shape == (40, 1 + 32000 // 480) and clip.mel_times.shape == (clip.mel.shape[1],)
    assert clip.audio_windows.shape == (10, 40, 24)
    # step k shows video frame 2k: the bar (at column 4 + 2k of 32) moves right at half scale
    bar = clip.frames.mean(axis=1).argmax(axis=1)
    assert np.array_equal(bar, (4 + 2 * np.arange(10)) // 2)
    # the tone starts at 1.0 s: silent windows before, loud ones after
    loud = clip.audio_windows.max(axis=(1, 2))
    assert (loud[:4] < cfg.logmel.silence + 3).all() and (loud[6:] > cfg.logmel.silence + 10).all()
    # the 800 Hz tone is in the right mel bin
    centre_bin = clip.mel[:, -5].argmax()
    from onebigstate.data.logmel import hz_to_mel, mel_to_hz
    centres = mel_to_hz(np.linspace(hz_to_mel(60.0), hz_to_mel(8000.0), 42))[1:-1]
    assert abs(centres[centre_bin] - 800.0) < 100.0
    assert [clip.step_text(k) for k in (0, 3, 4, 6, 8)] == ["look at the ball", "look at the ball", "", "ball", ""]


def test_max_seconds_reads_the_start(folder):
    clip = load_clip(folder / "day1.mp4", SayCamConfig(fps=5, image_size=(8, 8), max_seconds=1.0))
    assert clip.frames.shape == (5, 8, 8) and clip.duration == 1.0
    assert clip.mel.shape == (40, 1 + 16000 // 480) and clip.audio_windows.shape == (5, 40, 24)


def test_clip_as_stream_feeds_the_encoders(folder):
    clip = load_clip(folder / "day1.mp4", SayCamConfig(fps=5, image_size=(8, 8)))
    steps = clip_to_steps(clip)
    assert steps["features"].shape == (20, 64 + 40 * 24)
    assert steps["modality"].tolist() == [IMAGE, AUDIO] * 10
    assert torch.equal(steps["continuous"], steps["modality"] == IMAGE)
    enc = MultimodalEncoder(SayCamConfig(image_size=(8, 8)).layout, d_model=16)
    x, cont = enc(steps["features"][None], steps["modality"][None], steps["continuous"][None])
    assert x.shape == (1, 20, 16) and torch.isfinite(x).all() and torch.equal(cont[0], steps["continuous"])


def test_unreadable_file_names_it(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SayCamError, match=r"broken\.mp4: cannot decode"):
        load_clip(bad)
    with pytest.raises(SayCamError, match=r"broken\.mp4"):
        SayCamFolder(tmp_path)[0]


def test_folder_errors(tmp_path):
    with pytest.raises(SayCamError, match="does not exist"):
        SayCamFolder(tmp_path / "absent")
    with pytest.raises(SayCamError, match="no videos"):
        SayCamFolder(tmp_path)
    with pytest.raises(SayCamError, match=r"nope\.mp4: no such video file"):
        load_clip(tmp_path / "nope.mp4")


def test_video_without_audio(tmp_path):
    import av

    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = SIZE, SIZE, "yuv420p"
        for img in _frames()[:10]:
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    with pytest.raises(SayCamError, match=r"silent\.mp4: has no audio track"):
        load_clip(path)
    clip = load_clip(path, SayCamConfig(fps=10, require_audio=False))
    assert clip.frames.shape[0] == 10 and np.allclose(clip.audio_windows, clip.audio_windows.min())


def test_transcript_formats(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("# start end text\n0.5 1.25 hello there\n2 3\n")
    cues = read_transcript(txt)
    assert [(c.start, c.end, c.text) for c in cues] == [(0.5, 1.25, "hello there"), (2.0, 3.0, "")]
    txt.write_text("0.5 hello\n")
    with pytest.raises(SayCamError, match=r"a\.txt:1: expected 'START END TEXT'"):
        read_transcript(txt)
    srt = tmp_path / "b.srt"
    srt.write_text("1\n00:00:01,5 --> 00:01:00,000\nfirst\nline two\n")
    assert [(c.start, c.end, c.text) for c in read_transcript(srt)] == [(1.5, 60.0, "first line two")]
    srt.write_text("1\n1.5 --> 2\nx\n")
    with pytest.raises(SayCamError, match=r"b\.srt:2: bad SRT time"):
        read_transcript(srt)
