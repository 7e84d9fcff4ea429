"""SAYCam-format video as a self-supervised :class:`Task`: predict the next step.

A folder of videos with audio tracks (:mod:`onebigstate.data.saycam`) has no labels, so the
objective is next-step prediction: every clip is laid out as a stream of ``2 N`` steps (an
image step, continuous, then an audio step, discrete, per sampled frame:
:func:`~onebigstate.data.saycam.clip_to_steps`), and at each step ``t`` of a window the model
predicts the raw features of step ``t + 1`` (pixels in [0, 1] for an image step, normalised
log-mel for an audio step) from steps ``<= t``. The loss is the mean squared error over the
features of the next step's modality (the other modality's part is zero and not scored).

Metrics (``loss`` is the model's MSE):

- ``baseline_mse``: the MSE of copying the last frame of the same modality (step ``t - 1``,
  since image and audio steps alternate) as the prediction of step ``t + 1``;
- ``r2``: ``1 - SSE(model) / SSE(copy-last)`` summed over the set: 0 is as good as copying the
  last frame, 1 is perfect, below 0 is worse than copying;
- ``cosine`` and ``baseline_cosine``: mean cosine similarity, per step, of the prediction (or
  the copied last frame) with the next step's features.

Windows: ``seq_len`` steps of inputs, with one step before them (the baseline's last frame) and
one after (the last target), all inside one clip. Training window ``b`` of batch ``step`` comes
from ``np.random.default_rng(batch_seed(seed, step))``: a clip segment chosen in proportion to
its number of windows, then a start in it. The held-out set is ``test_size`` windows drawn the
same way from ``heldout_seed(seed)`` over the held-out part: whole clips (``holdout=clips``, a
``test_fraction`` of the clips chosen by a permutation from the seed, at least one, never all) or
the last ``test_fraction`` of every clip's time (``holdout=time``).

Log-mel is normalised by the mean and std of the training part's log-mel, so train and test
share one scale. Inputs are packed steps ``[B, T, F + 2]`` for the see-and-hear model
(:class:`~onebigstate.tasks.seeandhear_task.StreamSeqModel`: a ``MultimodalEncoder``, and the
continuous flags reach OBS); labels ``[B, T, 2 F + 1]`` are the next step's features, the
copy-last baseline's features and the next step's modality id.

A missing folder, a folder without videos, an unreadable video or a clip too short for one
window raises :class:`SayCamTaskError` (a ``SayCamError`` and a ``ConfigError``, so
``obs train`` prints it without a traceback) naming the path.

    obs train configs/saycam.yaml task.params.folder=PATH
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from onebigstate.config import ConfigError, StrictModel
from onebigstate.data.layout import AUDIO, IMAGE, StreamLayout
from onebigstate.data.saycam import SayCamConfig, SayCamError, SayCamFolder, clip_to_steps
from onebigstate.nets.stack import ModelConfig
from onebigstate.tasks.base import Task, TaskConfig, batch_seed, heldout_seed
from onebigstate.tasks.registry import register_task
from onebigstate.tasks.seeandhear_task import StreamSeqModel


class SayCamTaskError(SayCamError, ConfigError):
    """The SAYCam folder of a run cannot be used (names the path)."""


class SayCamParams(StrictModel):
    folder: str = Field(..., description="SAYCam-format folder of videos with audio tracks (searched recursively)")
    fps: float = Field(2.0, gt=0.0, description="image frames sampled per second")
    image_size: tuple[int, int] = Field((32, 32), description="(H, W) of the sampled grayscale frames")
    audio_frames: int = Field(24, ge=1, description="log-mel frames in each step's audio window")
    seq_len: int = Field(32, ge=2, description="window length in steps (an image and an audio step per frame)")
    holdout: Literal["clips", "time"] = Field(
        "clips", description="held-out set from whole clips, or from the last part of every clip's time")
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="fraction of the clips, or of each clip's time, held out")
    max_seconds: float | None = Field(None, gt=0.0, description="read at most this much of each video")
    require_audio: bool = Field(True, description="a video without an audio track is an error (else silence)")


def _split_segments(n_steps: list[int], p: SayCamParams, seed: int) -> tuple[list, list]:
    """(train, test) segments ``(clip, first step, end step)``."""
    n = len(n_steps)
    if p.holdout == "clips":
        if n < 2:
            raise ValueError(f"holdout=clips needs at least 2 videos, found {n}; use task.params.holdout=time")
        n_test = min(max(1, int(round(p.test_fraction * n))), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        test = set(order[:n_test].tolist())
        return ([(i, 0, n_steps[i]) for i in range(n) if i not in test],
                [(i, 0, n_steps[i]) for i in sorted(test)])
    train, test = [], []
    for i, m in enumerate(n_steps):
        cut = int(round(m * (1.0 - p.test_fraction)))
        cut -= cut % 2  # keep image/audio pairs together
        train.append((i, 0, cut))
        test.append((i, cut, m))
    return train, test


@register_task("saycam", SayCamParams)
class SayCamTask(Task):
    def __init__(self, cfg: TaskConfig, params: SayCamParams):
        super().__init__(cfg, params)
        p = params
        self.saycam = SayCamConfig(fps=p.fps, image_size=p.image_size, audio_frames=p.audio_frames,
                                   max_seconds=p.max_seconds, require_audio=p.require_audio)
        self.layout: StreamLayout = self.saycam.layout
        self.n_out = self.layout.feature_dim
        self.d_input = self.layout.packed_dim
        try:
            folder = SayCamFolder(p.folder, self.saycam)
            clips = list(folder)
        except SayCamError as err:
            raise SayCamTaskError(str(err)) from None
        self.videos = list(folder.videos)
        n_steps = [2 * c.frames.shape[0] for c in clips]
        try:
            self.train_segments, self.test_segments = _split_segments(n_steps, p, cfg.seed)
        except ValueError as err:
            raise SayCamTaskError(f"{folder.root}: {err}") from None
        span = p.seq_len + 2
        for name, segs in (("training", self.train_segments), ("held-out", self.test_segments)):
            if not any(e - s >= span for _, s, e in segs):
                raise SayCamTaskError(
                    f"{folder.root}: no {name} clip part holds a window of {span} steps (seq_len {p.seq_len} + 2; "
                    f"{p.fps:g} frames/s, 2 steps per frame): longest {max(e - s for _, s, e in segs)} steps "
                    f"({', '.join(self.videos[i].name for i, _, _ in segs)}); use longer videos, a higher fps "
                    f"or a shorter seq_len")
        # log-mel scale from the training part only
        mels = [clips[i].audio_windows[s // 2: e // 2] for i, s, e in self.train_segments if e > s]
        allmel = np.concatenate([m.reshape(-1) for m in mels])
        self.mel_mean, self.mel_std = float(allmel.mean()), float(allmel.std()) + 1e-6
        self.steps = []
        for c in clips:
            st = clip_to_steps(c, self.mel_mean, self.mel_std)
            self.steps.append(self.layout.pack(st["features"], st["modality"], st["continuous"]))

    def build_model(self, cfg: ModelConfig) -> StreamSeqModel:
        return StreamSeqModel(cfg, self.n_out, self.layout)

    def _windows(self, segments: list, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        T, Fd = self.params.seq_len, self.layout.feature_dim
        span = T + 2
        counts = np.array([max(e - s - span + 1, 0) for _, s, e in segments], dtype=np.float64)
        rng = np.random.default_rng(seed)
        which = rng.choice(len(segments), size=n, p=counts / counts.sum())
        offsets = rng.integers(0, counts[which].astype(np.int64))
        xs, ys = [], []
        for k, off in zip(which, offsets):
            clip, start, _ = segments[k]
            w = self.steps[clip][start + off: start + off + span]  # [T + 2, F + 2]
            xs.append(w[1:T + 1])
            target, baseline = w[2:, :Fd], w[:T, :Fd]
            ys.append(torch.cat([target, baseline, w[2:, Fd:Fd + 1]], dim=-1))
        return torch.stack(xs), torch.stack(ys)

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._windows(self.train_segments, batch_size, batch_seed(self.cfg.seed, step))

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._windows(self.test_segments, self.cfg.test_size, heldout_seed(self.cfg.seed))

    def _parts(self, outputs: torch.Tensor, labels: torch.Tensor):
        """(prediction, target, baseline, mask) ``[B, T, F]``; the mask selects the next step's modality."""
        Fd = self.layout.feature_dim
        labels = labels.float()
        target, baseline, modality = labels[..., :Fd], labels[..., Fd:2 * Fd], labels[..., 2 * Fd].round().long()
        cols = torch.arange(Fd, device=labels.device)
        is_img = (cols >= self.layout.image_slice.start) & (cols < self.layout.image_slice.stop)
        is_aud = (cols >= self.layout.audio_slice.start) & (cols < self.layout.audio_slice.stop)
        mask = ((modality == IMAGE).unsqueeze(-1) & is_img) | ((modality == AUDIO).unsqueeze(-1) & is_aud)
        return outputs.float(), target, baseline, mask.float()

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pred, target, _, mask = self._parts(outputs, labels)
        return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)

    def metrics(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {k: s / n if n else math.nan for k, (s, n) in self.metric_counts(outputs, labels).items()}

    def metric_counts(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[float, float]]:
        pred, target, baseline, mask = self._parts(outputs, labels)
        n_el = float(mask.sum())
        sse = float(((pred - target) ** 2 * mask).sum())
        sse_base = float(((baseline - target) ** 2 * mask).sum())
        steps = mask.any(-1)
        n_steps = float(steps.sum())
        cos = F.cosine_similarity(pred * mask, target * mask, dim=-1, eps=1e-8)[steps]
        cos_base = F.cosine_similarity(baseline * mask, target * mask, dim=-1, eps=1e-8)[steps]
        # r2 = 1 - sum SSE / sum SSE_base over all batches: (SSE_base - SSE, SSE_base) as (sum, count)
        return {"loss": (sse, n_el), "baseline_mse": (sse_base, n_el), "r2": (sse_base - sse, sse_base),
                "cosine": (float(cos.sum()), n_steps), "baseline_cosine": (float(cos_base.sum()), n_steps)}
