"""A dense-A S4-style SSM with a chosen spectrum, for the S4 / S4D equivalence check.

Axes: B batch, T time, H channels, N real state dimensions per channel.

Per channel, a real N x N transition ``A = P diag(lam, conj lam) P^-1`` (written in real form:
``P`` times the 2 x 2 rotation-scaling blocks ``[[Re lam, -Im lam], [Im lam, Re lam]]`` times
``P^-1``), with ``P`` a random real matrix of chosen condition number. ``B = P b_r`` and
``C = c_r P^-1``, where ``b_r, c_r`` are the real forms of an S4D's ``b`` and ``C``: so
:meth:`DenseSSM.from_s4d` gives a model with the S4D's outputs, in a state basis where ``A``
is dense. The memory function depends only on the state up to an invertible linear map, hence
only on the spectrum; this module is how we check that numerically.

    x_t = A x_{t-1} + B u_t,   y_t = C x_t + D u_t
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from onebigstate.baselines.s4d import S4D, S4DConfig
from onebigstate.nets.mixer import Mixer, register_mixer


class DenseSSMConfig(S4DConfig):
    """The spectrum is drawn as for S4D (same keys); then the dense basis change."""

    p_seed: int = Field(0, description="seed of the basis change P")
    p_cond: float = Field(10.0, ge=1.0, description="condition number of P")
    mode: Literal["recurrent"] = Field("recurrent", description="the dense SSM has only the loop path")


def random_basis(n: int, cond: float, seed: int) -> torch.Tensor:
    """A real [n, n] matrix U diag(s) V^T with singular values log-spaced in [1, cond], float64."""
    gen = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    return U @ torch.diag(s) @ V.T


def real_form(lam: torch.Tensor, b: torch.Tensor, C: torch.Tensor):
    """Diagonal complex (lam, b, C) [H, M] -> real (A_r [H, 2M, 2M], b_r [H, 2M], c_r [H, 2M]).

    State order (Re x_1, Im x_1, Re x_2, Im x_2, ...); ``y = 2 Re(C x) = c_r . x_r``.
    """
    H, M = lam.shape
    A_r = torch.zeros(H, 2 * M, 2 * M, dtype=lam.real.dtype)
    i = torch.arange(M) * 2
    A_r[:, i, i] = lam.real
    A_r[:, i, i + 1] = -lam.imag
    A_r[:, i + 1, i] = lam.imag
    A_r[:, i + 1, i + 1] = lam.real
    b_r = torch.stack([b.real, b.imag], -1).reshape(H, 2 * M)
    c_r = torch.stack([2 * C.real, -2 * C.imag], -1).reshape(H, 2 * M)
    return A_r, b_r, c_r


@register_mixer("s4_dense", DenseSSMConfig)
class DenseSSM(Mixer):
    """x [B, T, H] -> (y [B, T, H], state [B, H, N]). A dense, learnable A per channel."""

    def __init__(self, d_model: int, cfg: DenseSSMConfig | None = None, s4d: S4D | None = None):
        super().__init__()
        cfg = cfg or DenseSSMConfig()
        self.cfg = cfg
        if s4d is None:
            s4d = S4D(d_model, S4DConfig(**cfg.model_dump(exclude={"p_seed", "p_cond", "mode"})))
        H, N = d_model, 2 * s4d.n_modes
        self.d_model, self.d_state = H, N
        with torch.no_grad():
            lam, _, b = s4d.discrete()
            C = torch.view_as_complex(s4d.C_ri)
            A_r, b_r, c_r = real_form(lam.cdouble(), b.cdouble(), C.cdouble())
            P = random_basis(N, cfg.p_cond, cfg.p_seed)
            P_inv = torch.linalg.inv(P)
            A = P @ A_r @ P_inv
            Bm = b_r @ P.T
            Cm = c_r @ P_inv
        train_rec = not cfg.freeze_recurrent
        self.A = nn.Parameter(A.float(), requires_grad=train_rec)
        self.B = nn.Parameter(Bm.float())
        self.C = nn.Parameter(Cm.float())
        self.D = nn.Parameter(s4d.D.detach().clone())
        self.out = nn.Linear(H, H)
        with torch.no_grad():
            self.out.load_state_dict(s4d.out.state_dict())

    @classmethod
    def from_s4d(cls, s4d: S4D, p_seed: int = 0, p_cond: float = 10.0) -> "DenseSSM":
        """A dense SSM with the S4D's spectrum, input weights and outputs."""
        cfg = DenseSSMConfig(**{**s4d.cfg.model_dump(), "mode": "recurrent", "p_seed": p_seed, "p_cond": p_cond})
        return cls(s4d.d_model, cfg, s4d=s4d)

    def linear_system_matrices(self, channel: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(A [N, N], B [N]) of one channel as float64 numpy, for the Lyapunov closed form."""
        return self.A[channel].detach().double().numpy(), self.B[channel].detach().double().numpy()

    def ssm(self, u: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """u [B, T, H] -> (y [B, T, H], state [B, H, N]); an explicit loop (the only path)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"DenseSSM expects x of shape [B, T, d_model={self.d_model}], got {tuple(u.shape)}")
        Bsz, T, H = u.shape
        x = u.new_zeros(Bsz, H, self.d_state) if state is None else state
        ys = []
        for t in range(T):
            x = torch.einsum("hij,bhj->bhi", self.A, x) + self.B * u[:, t, :, None]
            ys.append((self.C * x).sum(-1) + self.D * u[:, t])
        return torch.stack(ys, 1), x

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, state = self.ssm(x, state)
        return self.out(torch.nn.functional.gelu(y)), state

    def state_size(self, seq_len: int = 0) -> dict[str, int]:
        return {"floats": self.d_model * self.d_state}
