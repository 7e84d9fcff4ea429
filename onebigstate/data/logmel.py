"""Log-mel features from a waveform: the one implementation used for the shipped
see-and-hear words (``scripts/make_seeandhear.py``) and for SAYCam-format video audio
(``onebigstate.data.saycam``), so both give the same features.

Axis letters: ``M`` mel bins, ``L`` frames (one per ``hop`` samples), ``S`` samples.

Frames are centred: the waveform is padded with ``n_fft // 2`` zeros on both sides, so
frame ``l`` is centred on sample ``l * hop`` (time ``l * hop / sample_rate``), and a
waveform of ``S`` samples gives ``1 + S // hop`` frames. Each frame is Hann-windowed,
its power spectrum ``|rfft|^2`` is summed through a triangular mel filter bank (HTK mel
scale, filters of unit peak), and ``log(mel + eps)`` is taken; silence is therefore
``log(eps)``, the value used for padding.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from onebigstate.config import StrictModel


class LogMelConfig(StrictModel):
    """Parameters of the log-mel front end (defaults: 16 kHz, 32 ms windows every 30 ms)."""

    sample_rate: int = Field(16000, ge=1000)
    n_fft: int = Field(512, ge=16)
    hop: int = Field(480, ge=1, description="samples between frames")
    n_mels: int = Field(40, ge=1)
    fmin: float = Field(60.0, ge=0.0)
    fmax: float = Field(8000.0, gt=0.0)
    eps: float = Field(1e-6, gt=0.0, description="floor inside the log; silence is log(eps)")

    @model_validator(mode="after")
    def _check(self) -> "LogMelConfig":
        if self.fmax > self.sample_rate / 2:
            raise ValueError(f"fmax ({self.fmax}) must be <= sample_rate/2 ({self.sample_rate / 2})")
        if self.fmin >= self.fmax:
            raise ValueError(f"fmin ({self.fmin}) must be < fmax ({self.fmax})")
        return self

    @property
    def silence(self) -> float:
        """The log-mel value of digital silence (used to pad)."""
        return float(np.log(self.eps))


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: LogMelConfig) -> np.ndarray:
    """Triangular filters ``[M, n_fft // 2 + 1]`` (float64), equally spaced on the mel scale."""
    freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lo) / (mid - lo)
    falling = (hi - freqs[None, :]) / (hi - mid)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def log_mel(wave: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    """Log-mel frames ``[M, L]`` (float32) of a mono waveform ``[S]`` at ``cfg.sample_rate``.

    ``L = 1 + S // hop``; an empty waveform gives ``[M, 1]`` of silence.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"log_mel expects a mono waveform [S], got shape {wave.shape}")
    half = cfg.n_fft // 2
    padded = np.pad(wave, (half, half))
    n_frames = 1 + wave.shape[0] // cfg.hop
    need = (n_frames - 1) * cfg.hop + cfg.n_fft
    if padded.shape[0] < need:
        padded = np.pad(padded, (0, need - padded.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[:: cfg.hop][:n_frames]
    power = np.abs(np.fft.rfft(frames * np.hanning(cfg.n_fft + 2)[1:-1], axis=1)) ** 2  # [L, F]
    mel = mel_filterbank(cfg) @ power.T  # [M, L]
    return np.log(mel + cfg.eps).astype(np.float32)


def trim_silence(mel: np.ndarray, cfg: LogMelConfig, top_db: float = 40.0) -> np.ndarray:
    """Frames ``[M, L']`` from the first to the last frame within ``top_db`` dB of the loudest."""
    energy = np.log(np.exp(mel.astype(np.float64)).sum(axis=0))  # [L] natural log of summed mel power
    keep = np.nonzero(energy >= energy.max() - top_db * np.log(10.0) / 10.0)[0]
    return mel[:, keep[0]: keep[-1] + 1]


def fix_frames(mel: np.ndarray, n_frames: int, pad_value: float) -> np.ndarray:
    """Centre ``mel [M, L]`` in exactly ``n_frames`` frames: pad both sides with
    ``pad_value`` when shorter, crop the middle when longer."""
    L = mel.shape[1]
    if L >= n_frames:
        start = (L - n_frames) // 2
        return mel[:, start: start + n_frames]
    before = (n_frames - L) // 2
    return np.pad(mel, ((0, 0), (before, n_frames - L - before)), constant_values=pad_value)


def resample(wave: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """A mono waveform at ``sample_rate`` resampled to ``target_rate`` (scipy's polyphase filter)."""
    from scipy.signal import resample_poly
    wave = np.asarray(wave)            # filtered in its own float type (the shipped words: espeak's)
    if sample_rate == target_rate:
        return wave.astype(np.float64)
    g = np.gcd(int(target_rate), int(sample_rate))
    return resample_poly(wave, target_rate // g, sample_rate // g)


def spoken_word_mel(wave: np.ndarray, sample_rate: int, cfg: LogMelConfig, top_db: float = 40.0) -> np.ndarray:
    """One spoken word ``[S]`` at ``sample_rate`` -> log-mel frames ``[M, L']`` of its non-silent
    part: resampled to ``cfg.sample_rate``, :func:`log_mel`, :func:`trim_silence`. (The shipped
    words then go through ``fix_frames`` to 24 frames: ``data/user_items.word_features``.)"""
    return trim_silence(log_mel(resample(wave, sample_rate, cfg.sample_rate), cfg), cfg, top_db=top_db)
