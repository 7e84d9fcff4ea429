"""S4D: a diagonal complex state space model per channel, with named eigenvalue initialisations.

Axes: B batch, T time, H channels (= d_model), M = N/2 complex modes per channel, N = d_state
real state dimensions per channel (the modes come in conjugate pairs, so the real state of a
channel is N-dimensional; this is the S4D convention).

Per channel h and mode m, in discrete time (``x_{-1}`` is the carried state, zero to start):

    x_t = lam * x_{t-1} + b * u_t              lam = dA[h, m], b = dB[h, m] (complex)
    y_t = 2 Re(sum_m C[h, m] x_t[m]) + D[h] u_t

``lam`` and ``b`` come from the continuous-time eigenvalue ``A = -exp(log_A_re) + i A_im`` and
the step ``dt = exp(log_dt)`` by ZOH (``lam = exp(dt A)``, ``b = (lam - 1) / A * B``) or the
bilinear transform (``lam = (1 + dt A/2) / (1 - dt A/2)``, ``b = dt / (1 - dt A/2) * B``).

Initialisations (``init``):

- ``s4d_inv``: ``A = -1/2 + i N/pi (N/(2n+1) - 1)`` (S4D-Inv, the HiPPO-derived long memory);
- ``s4d_lin``: ``A = -1/2 + i pi n`` (S4D-Lin);
- ``random``: discrete eigenvalues uniform in the disc of radius ``r_disc`` (upper half plane;
  the conjugates are implied);
- ``linear_mag``: discrete magnitudes linearly spaced in ``[r_min, r_max]``, phases evenly
  spaced in ``(0, pi)``;
- ``two_level``: a two-level step of magnitudes, half the modes at ``r_min`` and half at
  ``r_max``, phases evenly spaced in ``(0, pi)`` within each half.

The last three are given as discrete eigenvalues; they are mapped back to ``A`` through the
chosen discretisation at the sampled ``dt``, so that at initialisation the discrete spectrum is
exactly the one named, whatever the discretisation.

``freeze_recurrent=True`` keeps the eigenvalues and the step fixed (``requires_grad=False``,
reservoir style); ``B``, ``C``, ``D`` and the output projection still train.

Two paths with the same signature: ``mode="conv"`` (kernel by Vandermonde product, FFT
convolution, carried state by closed-form sums) and ``mode="recurrent"`` (an explicit time
loop, the specification).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from onebigstate.config import StrictModel
from onebigstate.nets.mixer import Mixer, register_mixer

INITS = ("s4d_inv", "s4d_lin", "random", "linear_mag", "two_level")


class S4DConfig(StrictModel):
    d_state: int = Field(64, ge=2, description="N, real state dimensions per channel (N/2 complex modes)")
    init: Literal["s4d_inv", "s4d_lin", "random", "linear_mag", "two_level"] = "s4d_inv"
    discretization: Literal["zoh", "bilinear"] = "zoh"
    dt_min: float = Field(1e-3, gt=0.0, description="step sizes are log-uniform in [dt_min, dt_max] per channel")
    dt_max: float = Field(1e-1, gt=0.0)
    r_min: float = Field(0.5, gt=0.0, lt=1.0, description="smallest |lambda| of linear_mag and two_level")
    r_max: float = Field(0.99, gt=0.0, lt=1.0, description="largest |lambda| of linear_mag and two_level")
    r_disc: float = Field(1.0, gt=0.0, le=1.0, description="radius of the disc the random init samples")
    freeze_recurrent: bool = Field(False, description="fix eigenvalues and step size; B, C, D still train")
    learn_b: bool = Field(True, description="train the input weights B (initialised to 1)")
    lr_recurrent: float | None = Field(None, gt=0.0, description="learning rate of the eigenvalues and step "
                                       "(tagged for the optimizer builder; None: the run's lr)")
    mode: Literal["conv", "recurrent"] = "conv"
    init_seed: int | None = Field(None, description="seed of the eigenvalue and step draws (None: torch's RNG)")

    @model_validator(mode="after")
    def _check(self) -> "S4DConfig":
        if self.d_state % 2:
            raise ValueError(f"d_state must be even (N/2 conjugate pairs), got {self.d_state}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) must be <= dt_max ({self.dt_max})")
        if self.r_min > self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must be <= r_max ({self.r_max})")
        return self


# ---- initialisation and discretisation (pure functions) ----------------------------------

def discrete_eigenvalues(init: str, n_modes: int, r_min: float = 0.5, r_max: float = 0.99,
                         r_disc: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Discrete eigenvalues [M] complex128 of the three discrete-time initialisations."""
    M = n_modes
    if init == "random":
        r = torch.rand(M, generator=generator, dtype=torch.float64).sqrt() * r_disc
        # A zero or unit eigenvalue has no continuous-time preimage.
        r = r.clamp(1e-3, 0.9999)
        theta = torch.rand(M, generator=generator, dtype=torch.float64) * math.pi
    elif init == "linear_mag":
        r = torch.linspace(r_min, r_max, M, dtype=torch.float64)
        theta = (torch.arange(M, dtype=torch.float64) + 0.5) * math.pi / M
    elif init == "two_level":
        lo = M // 2
        r = torch.cat([torch.full((lo,), r_min), torch.full((M - lo,), r_max)]).double()
        theta = torch.cat([(torch.arange(lo) + 0.5) * math.pi / max(lo, 1),
                           (torch.arange(M - lo) + 0.5) * math.pi / (M - lo)]).double()
    else:
        raise ValueError(f"'{init}' is not a discrete-time initialisation; expected random, linear_mag or two_level")
    return torch.polar(r, theta)


def continuous_eigenvalues(init: str, d_state: int) -> torch.Tensor:
    """Continuous-time eigenvalues [M] complex128 of S4D-Inv and S4D-Lin (N = d_state)."""
    N, M = d_state, d_state // 2
    n = torch.arange(M, dtype=torch.float64)
    if init == "s4d_inv":
        imag = N / math.pi * (N / (2 * n + 1) - 1)
    elif init == "s4d_lin":
        imag = math.pi * n
    else:
        raise ValueError(f"'{init}' is not a continuous-time initialisation; expected s4d_inv or s4d_lin")
    return torch.complex(torch.full((M,), -0.5, dtype=torch.float64), imag)


def discretize(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) continuous [..., M] complex, dt [..., 1] -> (lam, b) discrete, same shapes."""
    dtA = dt * A
    if method == "zoh":
        lam = torch.exp(dtA)
        return lam, (lam - 1) / A * B
    if method == "bilinear":
        den = 1 - dtA / 2
        return (1 + dtA / 2) / den, dt / den * B
    raise ValueError(f"unknown discretization '{method}'; expected 'zoh' or 'bilinear'")


def undiscretize(lam: torch.Tensor, dt: torch.Tensor, method: str) -> torch.Tensor:
    """The continuous eigenvalue A whose discretisation at ``dt`` is ``lam`` (|lam| < 1)."""
    if method == "zoh":
        return torch.log(lam) / dt
    if method == "bilinear":
        return 2 / dt * (lam - 1) / (lam + 1)
    raise ValueError(f"unknown discretization '{method}'; expected 'zoh' or 'bilinear'")


# ---- the two paths (ops) -------------------------------------------------------------------

def s4d_conv(u: torch.Tensor, lam: torch.Tensor, lam_log: torch.Tensor, b: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor, x0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """FFT path. u [B, T, H] real; lam, lam_log, b, C [H, M] complex; D [H]; x0 [B, H, M] or None.

    Returns (y [B, T, H], x_last [B, H, M]), with x_last the state after the last step.
    """
    Bsz, T, H = u.shape
    pows = torch.exp(lam_log.unsqueeze(-1) * torch.arange(T, device=u.device))  # [H, M, T] lam^l
    K = 2 * torch.einsum("hm,hml->hl", C * b, pows).real                        # [H, T]
    n = 2 * T
    y = torch.fft.irfft(torch.fft.rfft(u.transpose(1, 2), n=n) * torch.fft.rfft(K, n=n), n=n)[..., :T]
    y = y.transpose(1, 2) + D * u
    # x_last = sum_t lam^(T-1-t) b u_t (+ lam^T x0)
    x_last = b * torch.einsum("hmt,bth->bhm", pows.flip(-1), u.to(pows.dtype))
    if x0 is not None:
        fwd = torch.exp(lam_log.unsqueeze(-1) * torch.arange(1, T + 1, device=u.device))    # [H, M, T]
        y = y + 2 * torch.einsum("hm,bhm,hmt->bth", C, x0, fwd).real
        x_last = x_last + fwd[..., -1] * x0
    return y, x_last


def s4d_recurrent(u: torch.Tensor, lam: torch.Tensor, b: torch.Tensor, C: torch.Tensor, D: torch.Tensor,
                  x0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference path, an explicit loop; same signature and results as :func:`s4d_conv`."""
    Bsz, T, H = u.shape
    x = u.new_zeros(Bsz, H, lam.shape[-1], dtype=lam.dtype) if x0 is None else x0
    ys = []
    for t in range(T):
        x = lam * x + b * u[:, t, :, None]
        ys.append(2 * (C * x).sum(-1).real + D * u[:, t])
    return torch.stack(ys, 1), x


# ---- the layer -------------------------------------------------------------------------------

@register_mixer("s4d", S4DConfig)
class S4D(Mixer):
    """S4D mixer: x [B, T, H] -> (Linear(GELU(ssm(x))) [B, T, H], state [B, H, M] complex)."""

    def __init__(self, d_model: int, cfg: S4DConfig | None = None):
        super().__init__()
        cfg = cfg or S4DConfig()
        self.cfg = cfg
        H, M = d_model, cfg.d_state // 2
        self.d_model, self.n_modes = H, M
        gen = None if cfg.init_seed is None else torch.Generator().manual_seed(cfg.init_seed)
        log_dt = (torch.rand(H, generator=gen, dtype=torch.float64)
                  * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        if cfg.init in ("s4d_inv", "s4d_lin"):
            A = continuous_eigenvalues(cfg.init, cfg.d_state).expand(H, M)
        else:
            lam = torch.stack([discrete_eigenvalues(cfg.init, M, cfg.r_min, cfg.r_max, cfg.r_disc, gen)
                               for _ in range(H)])
            A = undiscretize(lam, log_dt.exp().unsqueeze(-1), cfg.discretization)
        train_rec = not cfg.freeze_recurrent
        self.log_dt = nn.Parameter(log_dt.float(), requires_grad=train_rec)
        self.log_A_re = nn.Parameter(torch.log(-A.real).float(), requires_grad=train_rec)
        self.A_im = nn.Parameter(A.imag.float().clone(), requires_grad=train_rec)
        for p in (self.log_dt, self.log_A_re, self.A_im):
            # The S4 convention: no weight decay on the recurrent parameters, optionally their own lr.
            p._optim = {"weight_decay": 0.0, **({"lr": cfg.lr_recurrent} if cfg.lr_recurrent else {})}
        self.B_ri = nn.Parameter(torch.stack([torch.ones(H, M), torch.zeros(H, M)], -1), requires_grad=cfg.learn_b)
        self.C_ri = nn.Parameter(torch.randn(H, M, 2) * math.sqrt(0.5 / M))
        self.D = nn.Parameter(torch.randn(H))
        self.out = nn.Linear(H, H)

    # ---- parameters in the paper's symbols ----------------------------------------------
    def continuous(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A [H, M] complex, B [H, M] complex, dt [H, 1])."""
        A = torch.complex(-torch.exp(self.log_A_re), self.A_im)
        return A, torch.view_as_complex(self.B_ri), torch.exp(self.log_dt).unsqueeze(-1)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lam [H, M], log(lam) [H, M], b [H, M]), complex: the discrete eigenvalues and input weights."""
        A, B, dt = self.continuous()
        lam, b = discretize(A, B, dt, self.cfg.discretization)
        lam_log = dt * A if self.cfg.discretization == "zoh" else torch.log(lam)
        return lam, lam_log, b

    def linear_system(self, channel: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(eigenvalues [M], input weights [M]) of one channel, complex128, for the closed-form MF."""
        with torch.no_grad():
            lam, _, b = self.discrete()
        return lam[channel].cdouble().numpy(), b[channel].cdouble().numpy()

    # ---- interfaces ---------------------------------------------------------------------
    def ssm(self, u: torch.Tensor, state: torch.Tensor | None = None,
            mode: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear SSM alone: u [B, T, H] -> (y [B, T, H], state [B, H, M] complex)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"S4D expects x of shape [B, T, d_model={self.d_model}], got {tuple(u.shape)}")
        if state is not None and state.shape != (u.shape[0], self.d_model, self.n_modes):
            raise ValueError(f"state must be [B, H, M] = {(u.shape[0], self.d_model, self.n_modes)}, "
                             f"got {tuple(state.shape)}")
        lam, lam_log, b = self.discrete()
        C = torch.view_as_complex(self.C_ri)
        mode = mode or self.cfg.mode
        if mode == "conv":
            return s4d_conv(u, lam, lam_log, b, C, self.D, state)
        if mode == "recurrent":
            return s4d_recurrent(u, lam, b, C, self.D, state)
        raise ValueError(f"unknown mode '{mode}'; expected 'conv' or 'recurrent'")

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, state = self.ssm(x, state)
        return self.out(F.gelu(y)), state

    def step(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x [B, H] -> (y [B, H], state). Equal to ``forward`` on the whole sequence."""
        y, state = self.ssm(x.unsqueeze(1), state, mode="recurrent")
        return self.out(F.gelu(y.squeeze(1))), state

    def state_size(self, seq_len: int = 0) -> dict[str, int]:
        return {"floats": self.d_model * self.cfg.d_state}
