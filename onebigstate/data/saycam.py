"""SAYCam-format loader: a folder of videos with audio tracks (head-camera recordings, as
in SAYCam) becomes a stream of image frames at a chosen rate and log-mel audio aligned to
them, decoded with PyAV and featurised with the same log-mel code as the shipped words.

Axis letters: ``N`` sampled image frames (steps of the clip), ``H x W`` frame size, ``M``
mel bins, ``L`` log-mel frames (one per ``logmel.hop`` samples), ``A`` log-mel frames per
step window (``audio_frames``).

For each video (``.mp4 .mov .avi .mkv .webm .m4v``, sorted by name, in the folder and its
subfolders):

- frames are sampled at ``fps``: step ``k`` is the first decoded frame at or after time
  ``k / fps``; it is converted to grayscale and resized to ``image_size`` (H, W) by FFmpeg,
  pixels in [0, 1];
- the audio track is mixed to mono, resampled to ``logmel.sample_rate``, cut to the
  video's duration and turned into log-mel frames ``[M, L]``; frame ``l`` is centred at
  ``l * hop / sample_rate`` seconds;
- step ``k``'s audio window ``[M, A]`` is the ``A`` log-mel frames ending at the end of
  the step (time ``(k + 1) / fps``), padded with silence where the recording has none;
- an optional transcript beside the video (same name, ``.srt``, or ``.txt`` with lines
  ``START END TEXT``, times in seconds) gives the text heard during each step.

:func:`clip_to_steps` lays a clip out as a multimodal stream in the common layout of
``onebigstate.data.layout`` (an image step, continuous, then an audio step, discrete, per
sampled frame), so the see-and-hear encoders and models take it unchanged.

Every problem (missing folder, no videos, a file FFmpeg cannot decode, a video without a
video or audio track, a malformed transcript) raises :class:`SayCamError` naming the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from onebigstate.config import StrictModel
from onebigstate.data.layout import AUDIO, IMAGE, StreamLayout
from onebigstate.data.logmel import LogMelConfig, log_mel

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


class SayCamError(ValueError):
    """A SAYCam-format folder or file cannot be read."""


class SayCamConfig(StrictModel):
    fps: float = Field(2.0, gt=0.0, description="image frames sampled per second")
    image_size: tuple[int, int] = Field((32, 32), description="(H, W) of the sampled frames")
    audio_frames: int = Field(24, ge=1, description="log-mel frames in each step's audio window")
    logmel: LogMelConfig = Field(default_factory=LogMelConfig)
    max_seconds: float | None = Field(None, gt=0.0, description="read at most this much of each video")
    require_audio: bool = Field(True, description="a video without an audio track is an error (else silence)")

    @property
    def layout(self) -> StreamLayout:
        return StreamLayout(image_shape=tuple(self.image_size), n_mels=self.logmel.n_mels,
                            audio_frames=self.audio_frames)


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


@dataclass
class Clip:
    path: Path
    frames: np.ndarray         # [N, H, W] float32 in [0, 1]
    frame_times: np.ndarray    # [N] seconds
    mel: np.ndarray            # [M, L] float32 log-mel of the whole track
    mel_times: np.ndarray      # [L] seconds (frame centres)
    audio_windows: np.ndarray  # [N, M, A] the audio of each step
    duration: float
    fps: float
    transcript: list[Cue] = field(default_factory=list)

    def step_text(self, k: int) -> str:
        """Transcript text overlapping step ``k`` (``[k / fps, (k + 1) / fps)``), joined by spaces."""
        t0, t1 = self.frame_times[k], self.frame_times[k] + 1.0 / self.fps
        return " ".join(c.text for c in self.transcript if c.start < t1 and c.end > t0)


def _av():
    try:
        import av
    except ImportError as e:
        raise SayCamError("reading videos needs PyAV (pip install av)") from e
    return av


def _srt_time(text: str, path: Path, line: int) -> float:
    m = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})\s*", text)
    if not m:
        raise SayCamError(f"{path}:{line}: bad SRT time {text.strip()!r} (expected HH:MM:SS,mmm)")
    h, mi, s, ms = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def read_transcript(path: Path) -> list[Cue]:
    """Cues of an ``.srt`` file, or of a ``.txt`` file with lines ``START END TEXT`` (seconds)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    cues: list[Cue] = []
    if path.suffix.lower() == ".srt":
        i = 0
        while i < len(lines):
            if "-->" not in lines[i]:
                i += 1
                continue
            start, end = lines[i].split("-->")
            j = i + 1
            while j < len(lines) and lines[j].strip():
                j += 1
            cues.append(Cue(_srt_time(start, path, i + 1), _srt_time(end, path, i + 1),
                            " ".join(s.strip() for s in lines[i + 1: j])))
            i = j
        return cues
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        try:
            start, end = float(parts[0]), float(parts[1])
        except (ValueError, IndexError) as e:
            raise SayCamError(f"{path}:{n}: expected 'START END TEXT' with times in seconds, got {line!r}") from e
        cues.append(Cue(start, end, parts[2].strip() if len(parts) > 2 else ""))
    return cues


def _transcript_for(video: Path) -> list[Cue]:
    for ext in (".srt", ".txt"):
        p = video.with_suffix(ext)
        if p.is_file():
            return read_transcript(p)
    return []


def _decode_video(av, path: Path, cfg: SayCamConfig) -> tuple[np.ndarray, np.ndarray, float]:
    H, W = cfg.image_size
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise SayCamError(f"{path}: has no video track")
        stream = container.streams.video[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        frames, times = [], []
        k = 0
        last_time = 0.0
        for frame in container.decode(video=0):
            t = float(frame.time) if frame.time is not None else last_time
            last_time = t
            if cfg.max_seconds is not None and t >= cfg.max_seconds:
                break
            # step k shows the first frame at or after k / fps
            while t >= k / cfg.fps - 1e-6:
                if not frames or times[-1] != t:
                    img = frame.reformat(width=W, height=H, format="gray").to_ndarray()
                else:
                    img = frames[-1]
                frames.append(img)
                times.append(t)
                k += 1
    if not frames:
        raise SayCamError(f"{path}: no video frames could be decoded")
    if duration is None:
        duration = last_time + 1.0 / cfg.fps
    if cfg.max_seconds is not None:
        duration = min(duration, cfg.max_seconds)
    n = len(frames)
    return np.stack(frames).astype(np.float32) / 255.0, np.arange(n) / cfg.fps, duration


def _decode_audio(av, path: Path, cfg: SayCamConfig, duration: float) -> np.ndarray | None:
    sr = cfg.logmel.sample_rate
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        chunks, start, n = [], None, 0
        for frame in container.decode(audio=0):
            if start is None:
                start = float(frame.time) if frame.time is not None else 0.0
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                n += chunks[-1].size
            if cfg.max_seconds is not None and n >= (cfg.max_seconds + 1) * sr:
                break
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    wave = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    # place the samples on the video's clock: pad a late start, then cut to the duration
    lead = int(round(max(start or 0.0, 0.0) * sr))
    wave = np.concatenate([np.zeros(lead, dtype=np.float32), wave])
    return wave[: int(round(duration * sr))]


def audio_windows(mel: np.ndarray, n_steps: int, fps: float, cfg: LogMelConfig, width: int) -> np.ndarray:
    """``[N, M, A]``: for step ``k`` the ``A`` log-mel frames whose centres fall up to time
    ``(k + 1) / fps``, padded with silence before the recording starts or after it ends."""
    M, L = mel.shape
    padded = np.concatenate([np.full((M, width), cfg.silence, dtype=np.float32), mel,
                             np.full((M, width), cfg.silence, dtype=np.float32)], axis=1)
    end = np.floor((np.arange(1, n_steps + 1) / fps) * cfg.sample_rate / cfg.hop + 1e-9).astype(np.int64)
    end = np.minimum(end, L - 1 + width)  # last frame index (inclusive) of each window
    idx = end[:, None] - width + 1 + np.arange(width)[None, :] + width  # into padded
    return np.transpose(padded[:, idx], (1, 0, 2))


def load_clip(path: str | Path, cfg: SayCamConfig | None = None) -> Clip:
    """Decode one video (see the module docstring)."""
    cfg = cfg or SayCamConfig()
    path = Path(path)
    if not path.is_file():
        raise SayCamError(f"{path}: no such video file")
    av = _av()
    try:
        frames, times, duration = _decode_video(av, path, cfg)
        wave = _decode_audio(av, path, cfg, duration)
    except SayCamError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise SayCamError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e
    if wave is None:
        if cfg.require_audio:
            raise SayCamError(f"{path}: has no audio track (set require_audio=False to read it as silence)")
        wave = np.zeros(int(round(duration * cfg.logmel.sample_rate)), dtype=np.float32)
    mel = log_mel(wave, cfg.logmel)
    mel_times = np.arange(mel.shape[1]) * cfg.logmel.hop / cfg.logmel.sample_rate
    return Clip(path=path, frames=frames, frame_times=times, mel=mel, mel_times=mel_times,
                audio_windows=audio_windows(mel, len(frames), cfg.fps, cfg.logmel, cfg.audio_frames),
                duration=duration, fps=cfg.fps, transcript=_transcript_for(path))


class SayCamFolder:
    """The videos of a SAYCam-format folder, decoded on access (``folder[i]`` is a :class:`Clip`)."""

    def __init__(self, root: str | Path, cfg: SayCamConfig | None = None):
        self.root, self.cfg = Path(root), cfg or SayCamConfig()
        if not self.root.is_dir():
            raise SayCamError(f"{self.root}: SAYCam folder does not exist")
        self.videos = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if not self.videos:
            raise SayCamError(f"{self.root}: no videos ({', '.join(VIDEO_EXTENSIONS)}) in this folder")

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> Clip:
        return load_clip(self.videos[i], self.cfg)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def clip_to_steps(clip: Clip, mel_mean: float | None = None, mel_std: float | None = None) -> dict[str, torch.Tensor]:
    """A clip as a stream of ``2 N`` steps in the common layout: for each sampled frame an
    image step (continuous) then an audio step with that step's window (discrete).

    Log-mel values are normalised by ``(mel - mel_mean) / mel_std`` (default: the clip's own
    mean and std). Returns ``features [2N, F]``, ``modality [2N]``, ``continuous [2N]``,
    ``time [2N]`` (seconds).
    """
    N, H, W = clip.frames.shape
    _, M, A = clip.audio_windows.shape
    layout = StreamLayout(image_shape=(H, W), n_mels=M, audio_frames=A)
    mean = float(clip.mel.mean()) if mel_mean is None else mel_mean
    std = float(clip.mel.std()) + 1e-6 if mel_std is None else mel_std
    features = torch.zeros(2 * N, layout.feature_dim)
    features[0::2, layout.image_slice] = torch.from_numpy(clip.frames.reshape(N, -1))
    features[1::2, layout.audio_slice] = torch.from_numpy(((clip.audio_windows - mean) / std).reshape(N, -1))
    modality = torch.tensor([IMAGE, AUDIO]).repeat(N)
    return {"features": features, "modality": modality, "continuous": modality == IMAGE,
            "time": torch.from_numpy(np.repeat(clip.frame_times, 2))}


def write_clip(path: str | Path, frames: np.ndarray, fps: int, audio: np.ndarray, sample_rate: int) -> Path:
    """Write ``frames [N, H, W, 3]`` uint8 and mono ``audio [S]`` float in [-1, 1] to an mp4
    (MPEG-4 video, AAC audio): a clip in the format the loader reads (used by the tests)."""
    av = _av()
    path = Path(path)
    N, H, W, _ = frames.shape
    with av.open(str(path), "w") as container:
        vs = container.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        aus = container.add_stream("aac", rate=sample_rate)
        aus.layout = "mono"
        for img in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        block = 1024
        for s in range(0, audio.shape[0], block):
            fr = av.AudioFrame.from_ndarray(audio[s: s + block].astype(np.float32)[None], format="flt", layout="mono")
            fr.sample_rate, fr.pts = sample_rate, s
            for packet in aus.encode(fr):
                container.mux(packet)
        for packet in list(vs.encode()) + list(aus.encode()):
            container.mux(packet)
    return path
