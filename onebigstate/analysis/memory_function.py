"""The memory function MF(tau) and memory capacity MC of recurrent models.

Drive a model with an i.i.d. scalar input ``u_t ~ U(-1, 1)``. ``MF(tau)`` is how well the input
``tau`` steps back is reconstructed by the best linear read-out of the state ``x_t``:

    MF(tau) = 1 - min_w <(w . x_t + c - u_{t-tau})^2> / var(u),     MC = sum_tau MF(tau)

``tau = 0`` is the input of the current step (the state is read after ``u_t`` has entered it).
For a linear SSM, ``MC -> N`` (the state dimension) as ``tau_max -> inf``, and MF depends only on
the eigenvalues of A (and which modes the input reaches).

Two routes:

- **closed form** (linear SSMs, float64). With the Gram matrix ``G = sum_k A^k B B^T A^kT`` (the
  state covariance over var(u)) and ``v_tau = A^tau B`` (the state's covariance with
  ``u_{t-tau}`` over var(u)), ``MF(tau) = v_tau^T G^+ v_tau``. From eigenvalues ``lam`` and input
  weights ``b`` of a diagonal complex SSM (conjugate pairs implied, real state ``[Re x, Im x]``)
  ``G`` has entries ``b_i b_j^* / (1 - lam_i lam_j^*)`` and ``b_i b_j / (1 - lam_i lam_j)``, a
  Cauchy/Vandermonde-type matrix that becomes ill-conditioned when eigenvalues crowd: its
  condition number (after scaling to unit diagonal, which leaves MF unchanged) is reported, and
  directions below ``rcond`` are dropped. From dense ``(A, B)``, ``G`` solves the discrete
  Lyapunov equation.
- **simulation** (any model with a state vector): run ``washout + n_fit + n_test`` steps, fit
  one ridge read-out per tau on the ``n_fit`` steps, score R^2 on the ``n_test`` held-out
  steps, clipped to [0, 1].

Adapters give every recurrent model in the library a state vector (:func:`adapter_for`); the
scalar input enters through a fixed random input projection ``u_t * w_in`` (``w_in`` a random
direction whose entries have RMS ``input_scale``).

    res = memory_function(S4D(1, S4DConfig(d_state=32)), tau_max=256)           # closed form
    res = memory_function(torch.nn.LSTM(16, 32, batch_first=True), tau_max=64)  # simulation
    res.mf, res.mc
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch
from torch import nn


@dataclass
class MemoryResult:
    taus: np.ndarray          # [tau_max + 1]
    mf: np.ndarray            # [tau_max + 1] in [0, 1]
    mc: float                 # sum of mf
    state_dim: int            # dimension of the vector the read-out sees
    method: str               # "closed_form" or "simulation"
    label: str = ""
    cond: float | None = None  # condition number of the (unit-diagonal) Gram matrix, closed form
    rank: int | None = None    # directions kept, closed form
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        c = "" if self.cond is None else f", cond(G)={self.cond:.3g}, rank {self.rank}"
        return f"{self.label or 'model'}: MC={self.mc:.3f} (state dim {self.state_dim}, {self.method}{c})"


# ---- closed form ----------------------------------------------------------------------------

def _mf_from_gram(G: np.ndarray, V: np.ndarray, rcond: float) -> tuple[np.ndarray, float, int]:
    """MF(tau) = v_tau^T G^+ v_tau for the columns of V [S, taus]; G [S, S] symmetric PSD."""
    d = np.sqrt(np.clip(np.diag(G), 1e-300, None))
    Gs = G / np.outer(d, d)
    Vs = V / d[:, None]
    w, U = np.linalg.eigh(Gs)
    top = max(w.max(), 1e-300)
    cond = float(top / w.min()) if w.min() > 0 else math.inf
    keep = w > rcond * top
    P = U[:, keep].T @ Vs
    mf = (P ** 2 / w[keep, None]).sum(0)
    return np.clip(mf, 0.0, 1.0), cond, int(keep.sum())


def closed_form_diagonal(lam: np.ndarray, b: np.ndarray, tau_max: int, rcond: float = 1e-13,
                         label: str = "") -> MemoryResult:
    """MF of ``x_t = diag(lam) x_{t-1} + b u_t`` (complex modes, conjugates implied), float64.

    The real state is ``[Re x, Im x]`` (2M dims). A real eigenvalue with real ``b`` gives an
    identically zero imaginary part: that direction has zero variance and is dropped (rank).
    """
    lam = np.asarray(lam, dtype=np.complex128)
    b = np.asarray(b, dtype=np.complex128)
    if np.any(np.abs(lam) >= 1):
        raise ValueError(f"closed form needs |lambda| < 1, got max |lambda| = {np.abs(lam).max():.6f}")
    Gc = np.outer(b, b.conj()) / (1 - np.outer(lam, lam.conj()))  # sum_k x_i x_j^*
    Hc = np.outer(b, b) / (1 - np.outer(lam, lam))                  # sum_k x_i x_j
    # Re a Re b = (Re(ab) + Re(a b*)) / 2 ; Im a Im b = (Re(a b*) - Re(ab)) / 2 ;
    # Re a Im b = (Im(ab) - Im(a b*)) / 2
    RR = (Hc.real + Gc.real) / 2
    II = (Gc.real - Hc.real) / 2
    RI = (Hc.imag - Gc.imag) / 2
    G = np.block([[RR, RI], [RI.T, II]])
    taus = np.arange(tau_max + 1)
    v = b[:, None] * lam[:, None] ** taus[None, :]                   # [M, taus]
    V = np.concatenate([v.real, v.imag], 0)
    # Zero-variance directions (an imaginary part that is identically zero) carry no memory.
    live = np.diag(G) > 1e-300 * max(np.diag(G).max(), 1e-300)
    mf, cond, rank = _mf_from_gram(G[np.ix_(live, live)], V[live], rcond)
    return MemoryResult(taus, mf, float(mf.sum()), 2 * len(lam), "closed_form", label, cond, rank)


def closed_form_dense(A: np.ndarray, B: np.ndarray, tau_max: int, rcond: float = 1e-13,
                      label: str = "") -> MemoryResult:
    """MF of the real SSM ``x_t = A x_{t-1} + B u_t`` (A [N, N], B [N]) via the Lyapunov Gram, float64."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64).reshape(-1)
    rho = np.abs(np.linalg.eigvals(A)).max()
    if rho >= 1:
        raise ValueError(f"closed form needs spectral radius < 1, got {rho:.6f}")
    G = scipy.linalg.solve_discrete_lyapunov(A, np.outer(B, B))
    G = (G + G.T) / 2
    V = np.empty((len(B), tau_max + 1))
    v = B.copy()
    for tau in range(tau_max + 1):
        V[:, tau] = v
        v = A @ v
    mf, cond, rank = _mf_from_gram(G, V, rcond)
    return MemoryResult(np.arange(tau_max + 1), mf, float(mf.sum()), len(B), "closed_form", label, cond, rank)


# ---- simulation -----------------------------------------------------------------------------

def scalar_input(n_steps: int, seed: int) -> np.ndarray:
    """The i.i.d. U(-1, 1) drive, float64 [n_steps]."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, n_steps)


def mf_from_states(states: np.ndarray, u: np.ndarray, tau_max: int, washout: int, n_fit: int,
                   ridge: float = 1e-12) -> np.ndarray:
    """Held-out R^2 of ridge read-outs of u(t - tau) from states [T, S]; returns MF [tau_max + 1].

    Steps ``washout .. washout+n_fit`` fit the read-out (with intercept), the rest score it.
    Columns are standardised on the fit steps; ``ridge`` is relative to that unit variance.
    """
    T = len(u)
    if washout < tau_max:
        raise ValueError(f"washout ({washout}) must be >= tau_max ({tau_max}) so every target exists")
    if washout + n_fit >= T:
        raise ValueError(f"washout + n_fit ({washout + n_fit}) leaves no held-out steps of {T}")
    X = np.asarray(states[washout:], dtype=np.float64)
    t = np.arange(washout, T)
    Y = u[t[:, None] - np.arange(tau_max + 1)[None, :]]           # [T', taus]
    Xf, Yf, Xt, Yt = X[:n_fit], Y[:n_fit], X[n_fit:], Y[n_fit:]
    mx, my = Xf.mean(0), Yf.mean(0)
    sx = Xf.std(0)
    # Standardised columns (constant ones dropped): modes of very different variance would
    # otherwise leave the small ones below the ridge.
    live = sx > 1e-12 * max(sx.max(), 1e-300)
    Xf, Xt = (Xf[:, live] - mx[live]) / sx[live], (Xt[:, live] - mx[live]) / sx[live]
    Yf = Yf - my
    Sxx = Xf.T @ Xf
    W = scipy.linalg.solve(Sxx + ridge * len(Xf) * np.eye(len(Sxx)), Xf.T @ Yf, assume_a="pos")
    err = ((Xt @ W + my - Yt) ** 2).mean(0)
    var = Yt.var(0)
    return np.clip(1 - err / var, 0.0, 1.0)


# ---- adapters: a state vector for every recurrent model ---------------------------------------

class StateAdapter:
    """Runs a model on a scalar sequence and returns the state after every step.

    ``run(u [T]) -> states [T, S]`` (float64 numpy); ``state_dim``; ``describe`` says what the
    state vector is; ``linear`` (optional) returns what the closed form needs.
    """

    state_dim: int = 0
    describe: str = ""

    def run(self, u: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def closed_form(self, tau_max: int, label: str) -> MemoryResult | None:
        return None


def _input_projection(d: int, seed: int, scale: float) -> torch.Tensor:
    """A fixed random direction [d] with entries of RMS ``scale`` (norm scale * sqrt(d)), float64."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    return w / w.norm() * math.sqrt(d) * scale


def _input_map(d: int, seed: int, scale: float, bias: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, b) float32 [d]: the scalar input enters as u_t * w + b. ``b`` is a second fixed random
    direction with RMS ``bias`` (zero when bias = 0); it breaks the u -> -u symmetry that lets a
    model keep only even functions of u (which a linear read-out cannot see)."""
    w = _input_projection(d, seed, scale).float()
    b = _input_projection(d, seed + 7919, bias).float() if bias else torch.zeros(d)
    return w, b


class DiagonalSSMAdapter(StateAdapter):
    """S4D, or any (lam, b) pair: the real state [Re x, Im x] of every channel."""

    def __init__(self, model=None, lam=None, b=None, channel: int | None = None,
                 input_seed: int = 0, input_scale: float = 1.0):
        from onebigstate.baselines.s4d import S4D
        if model is not None:
            if not isinstance(model, S4D):
                raise TypeError(f"expected an S4D, got {type(model).__name__}")
            with torch.no_grad():
                lam_t, _, b_t = model.discrete()
            lam, b = lam_t.cdouble().numpy(), b_t.cdouble().numpy()
        lam = np.atleast_2d(np.asarray(lam, dtype=np.complex128))
        b = np.atleast_2d(np.asarray(b, dtype=np.complex128))
        H = lam.shape[0]
        if channel is not None:
            lam, b, w = lam[channel:channel + 1], b[channel:channel + 1], np.ones(1)
        elif H == 1:
            w = np.ones(1)
        else:
            w = _input_projection(H, input_seed, input_scale).numpy()
        self.lam, self.b, self.w = lam, b * w[:, None], w
        self.state_dim = 2 * lam.size
        self.describe = "real and imaginary parts of the diagonal state, all channels"

    def run(self, u: np.ndarray) -> np.ndarray:
        lam, b = self.lam.reshape(-1), self.b.reshape(-1)
        x = np.zeros_like(lam)
        out = np.empty((len(u), 2 * len(lam)))
        for t, ut in enumerate(u):
            x = lam * x + b * ut
            out[t, :len(lam)] = x.real
            out[t, len(lam):] = x.imag
        return out

    def closed_form(self, tau_max: int, label: str) -> MemoryResult:
        return closed_form_diagonal(self.lam.reshape(-1), self.b.reshape(-1), tau_max, label=label)


class DenseSSMAdapter(StateAdapter):
    """The dense SSM (one channel, or all channels through the input projection)."""

    def __init__(self, model, channel: int | None = None, input_seed: int = 0, input_scale: float = 1.0):
        A = model.A.detach().double().numpy()
        B = model.B.detach().double().numpy()
        H, N = B.shape
        if channel is not None:
            A, B = A[channel:channel + 1], B[channel:channel + 1]
        elif H > 1:
            B = B * _input_projection(H, input_seed, input_scale).numpy()[:, None]
        self.A = scipy.linalg.block_diag(*A)
        self.B = B.reshape(-1)
        self.state_dim = len(self.B)
        self.describe = "the dense real state"

    def run(self, u: np.ndarray) -> np.ndarray:
        x = np.zeros(self.state_dim)
        out = np.empty((len(u), self.state_dim))
        for t, ut in enumerate(u):
            x = self.A @ x + self.B * ut
            out[t] = x
        return out

    def closed_form(self, tau_max: int, label: str) -> MemoryResult:
        return closed_form_dense(self.A, self.B, tau_max, label=label)


class LSTMAdapter(StateAdapter):
    """torch.nn.LSTM (batch_first or not): [h, c] of every layer after each step."""

    def __init__(self, lstm: nn.LSTM, input_seed: int = 0, input_scale: float = 1.0, input_bias: float = 0.0):
        self.lstm = lstm
        self.w, self.b = _input_map(lstm.input_size, input_seed, input_scale, input_bias)
        self.state_dim = 2 * lstm.num_layers * lstm.hidden_size
        self.describe = "hidden h and cell c of every layer"

    @torch.no_grad()
    def run(self, u: np.ndarray) -> np.ndarray:
        # h for all steps from one call; c from the gates, whose pre-activations depend only on
        # x_t and h_{t-1}, so only the elementwise c recursion remains a loop.
        lstm = self.lstm
        if lstm.bidirectional or lstm.proj_size:
            raise ValueError("the LSTM adapter supports unidirectional LSTMs without projections")
        dtype = next(lstm.parameters()).dtype
        x = torch.as_tensor(u, dtype=dtype)[:, None] * self.w.to(dtype) + self.b.to(dtype)  # [T, D]
        hs, cs = [], []
        for layer in range(lstm.num_layers):
            W_ih, W_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
            b = (getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")) if lstm.bias else 0
            h = self._layer_h(x, layer)
            h_prev = torch.cat([h.new_zeros(1, h.shape[1]), h[:-1]])
            i, f, g, _ = (x @ W_ih.T + h_prev @ W_hh.T + b).chunk(4, dim=1)
            i, f, g = torch.sigmoid(i).numpy(), torch.sigmoid(f).numpy(), torch.tanh(g).numpy()
            c = np.empty_like(i)
            c_t = np.zeros(i.shape[1], dtype=i.dtype)
            for t in range(len(u)):
                c_t = f[t] * c_t + i[t] * g[t]
                c[t] = c_t
            hs.append(h.double().numpy())
            cs.append(c.astype(np.float64))
            x = h
        return np.concatenate(hs + cs, axis=1)

    def _layer_h(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """h of one layer over the whole sequence, from a one-layer LSTM sharing its weights."""
        lstm = self.lstm
        one = nn.LSTM(x.shape[1], lstm.hidden_size, bias=lstm.bias).to(x.dtype)
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if lstm.bias else [])
        one.load_state_dict({f"{n}_l0": getattr(lstm, f"{n}_l{layer}") for n in names})
        return one(x)[0]


class MambaAdapter(StateAdapter):
    """mambapy's Mamba: the SSM hidden states h [ED, N] of every layer (step mode), flattened.

    The short convolution's input cache is not part of the vector (``include_conv=True`` adds it).
    """

    def __init__(self, mamba, input_seed: int = 0, input_scale: float = 1.0, input_bias: float = 0.0,
                 include_conv: bool = False):
        self.mamba = mamba
        c = mamba.config
        self.w, self.b = _input_map(c.d_model, input_seed, input_scale, input_bias)
        self.include_conv = include_conv
        per = c.d_inner * c.d_state + (c.d_inner * (c.d_conv - 1) if include_conv else 0)
        self.state_dim = c.n_layers * per
        self.describe = "selective-SSM hidden states h of every layer" + (" and conv caches" if include_conv else "")

    @torch.no_grad()
    def run(self, u: np.ndarray) -> np.ndarray:
        c = self.mamba.config
        xs = torch.as_tensor(u, dtype=torch.float32)[:, None] * self.w + self.b
        caches = [(None, torch.zeros(1, c.d_inner, c.d_conv - 1)) for _ in range(c.n_layers)]
        out = np.empty((len(u), self.state_dim))
        for t in range(len(u)):
            _, caches = self.mamba.step(xs[t:t + 1], caches)
            parts = [h.reshape(-1) for h, _ in caches]
            if self.include_conv:
                parts += [inp.reshape(-1) for _, inp in caches]
            out[t] = torch.cat(parts).double().numpy()
        return out


class DeltaNetAdapter(StateAdapter):
    """The library's DeltaNet mixer (``onebigstate.baselines.deltanet``), stepped one input at a
    time: the fast-weight matrices S [H, K, V] of all heads, flattened (``include_conv=True``
    adds the short convolutions' caches)."""

    def __init__(self, mixer, input_seed: int = 0, input_scale: float = 1.0, input_bias: float = 0.0,
                 include_conv: bool = False):
        if mixer.cfg.impl == "fla":
            raise ValueError("the memory function steps the model; use deltanet impl 'recurrent' or 'chunk'")
        self.mixer = mixer
        self.include_conv = include_conv
        self.w, self.b = _input_map(mixer.d_model, input_seed, input_scale, input_bias)
        sizes = mixer.state_size(0)
        self.state_dim = sizes["floats"] if include_conv else sizes["matrix_floats"]
        self.describe = "delta-rule fast-weight matrices S of all heads" + (" and conv caches" if include_conv else "")

    @torch.no_grad()
    def run(self, u: np.ndarray) -> np.ndarray:
        xs = torch.as_tensor(u, dtype=torch.float32)[:, None] * self.w + self.b
        state = None
        out = np.empty((len(u), self.state_dim))
        for t in range(len(u)):
            _, state = self.mixer.step(xs[t:t + 1], state)
            parts = [state["S"].reshape(-1)]
            if self.include_conv and state["conv"] is not None:
                parts += [c.reshape(-1) for c in state["conv"]]
            out[t] = torch.cat(parts).double().numpy()
        return out


class OBSAdapter(StateAdapter):
    """The OBS layer. The state vector is, by ``features``:

    - ``"active"`` (default): the N-dim vector of active weights, ``w_t`` scattered at the active
      nodes ``A_t`` (zeros elsewhere), from ``OBSLayer.last_stats`` after the step: which nodes
      the current input and what it recalls light up, and how strongly. The big state ``S``
      itself (N^2) is not read out: it is the memory, this is what one step of reading it gives.
    - ``"output"``: the layer's output y_t (d_model), a fixed linear map of the controller's
      hidden vector and the normalised read vector r_t.
    - ``"both"``: the two concatenated.

    The layer runs over the whole sequence in one forward call (one stream, episodic), which
    equals stepping it (``OBSLayer.step`` is that forward on one step; a test of the layer checks it).
    """

    def __init__(self, layer, features: str = "active", input_seed: int = 0, input_scale: float = 1.0,
                 input_bias: float = 0.0):
        if features not in ("active", "output", "both"):
            raise ValueError(f"features must be 'active', 'output' or 'both', got '{features}'")
        self.layer, self.features = layer, features
        c = layer.cfg
        self.w, self.b = _input_map(c.d_model, input_seed, input_scale, input_bias)
        self.state_dim = {"active": c.n_nodes, "output": c.d_model, "both": c.n_nodes + c.d_model}[features]
        self.describe = {"active": "active weights w_t scattered at A_t (N dims)",
                         "output": "layer output y_t (d_model dims)",
                         "both": "active weights at A_t and layer output"}[features]

    @torch.no_grad()
    def run(self, u: np.ndarray) -> np.ndarray:
        was = self.layer.training
        self.layer.eval()
        xs = (torch.as_tensor(u, dtype=torch.float32)[:, None] * self.w + self.b).unsqueeze(0)
        y, _ = self.layer(xs)
        self.layer.train(was)
        st = self.layer.last_stats
        parts = []
        if self.features in ("active", "both"):
            dense = torch.zeros(len(u), self.layer.cfg.n_nodes)
            dense.scatter_add_(1, st.active_idx[0], st.active_w[0].float())
            parts.append(dense)
        if self.features in ("output", "both"):
            parts.append(y[0])
        return torch.cat(parts, 1).double().numpy()


def adapter_for(model, input_seed: int = 0, input_scale: float = 1.0, input_bias: float = 0.0,
                **kwargs) -> StateAdapter:
    """The state adapter of a library model (S4D, DenseSSM, nn.LSTM, mambapy Mamba, OBSLayer,
    DeltaNetMixer), or ``(lam, b)`` / ``("dense", A, B)`` tuples for raw linear SSMs."""
    if isinstance(model, StateAdapter):
        return model
    if isinstance(model, tuple):
        if len(model) == 3 and model[0] == "dense":
            return _RawDense(model[1], model[2])
        lam, b = model
        return DiagonalSSMAdapter(lam=lam, b=b)
    from onebigstate.baselines.s4_dense import DenseSSM
    from onebigstate.baselines.s4d import S4D
    from onebigstate.model.layer import OBSLayer
    if isinstance(model, S4D):
        return DiagonalSSMAdapter(model, input_seed=input_seed, input_scale=input_scale, **kwargs)
    if isinstance(model, DenseSSM):
        return DenseSSMAdapter(model, input_seed=input_seed, input_scale=input_scale, **kwargs)
    if isinstance(model, nn.LSTM):
        return LSTMAdapter(model, input_seed, input_scale, input_bias)
    if isinstance(model, OBSLayer):
        return OBSAdapter(model, input_seed=input_seed, input_scale=input_scale, input_bias=input_bias, **kwargs)
    from onebigstate.baselines.deltanet import DeltaNetMixer
    if isinstance(model, DeltaNetMixer):
        return DeltaNetAdapter(model, input_seed, input_scale, input_bias, **kwargs)
    if type(model).__name__ == "Mamba" and hasattr(model, "step") and hasattr(model, "config"):
        return MambaAdapter(model, input_seed, input_scale, input_bias, **kwargs)
    raise TypeError(f"no memory-function adapter for {type(model).__name__}; expected S4D, DenseSSM, "
                    f"nn.LSTM, mambapy Mamba, OBSLayer, DeltaNetMixer or a StateAdapter")


class _RawDense(DenseSSMAdapter):
    def __init__(self, A, B):
        self.A = np.asarray(A, dtype=np.float64)
        self.B = np.asarray(B, dtype=np.float64).reshape(-1)
        self.state_dim = len(self.B)
        self.describe = "the dense real state"


def memory_function(model_or_ssm, tau_max: int = 100, method: str = "auto", *, n_fit: int = 8000,
                    n_test: int = 8000, washout: int | None = None, ridge: float = 1e-12, seed: int = 0,
                    input_seed: int = 0, input_scale: float = 1.0, input_bias: float = 0.0, label: str = "",
                    **adapter_kwargs) -> MemoryResult:
    """MF(tau) for tau = 0..tau_max and MC, by closed form (linear SSMs) or simulation.

    ``method``: "closed_form", "simulation", or "auto" (closed form where the model is linear).
    Simulation uses ``washout`` (default max(tau_max, 1000)) steps, then ``n_fit`` to fit and
    ``n_test`` to score; ``seed`` seeds the input sequence, ``input_seed`` the input projection.
    ``input_bias`` (nonlinear models only; for linear ones a constant input only shifts the state,
    which the read-out's intercept absorbs) adds a fixed random offset to the projected input.
    """
    if method not in ("auto", "closed_form", "simulation"):
        raise ValueError(f"method must be 'auto', 'closed_form' or 'simulation', got '{method}'")
    if input_bias:
        adapter_kwargs["input_bias"] = input_bias
    adapter = adapter_for(model_or_ssm, input_seed=input_seed, input_scale=input_scale, **adapter_kwargs)
    if method in ("auto", "closed_form"):
        res = adapter.closed_form(tau_max, label)
        if res is not None:
            res.extra["describe"] = adapter.describe
            return res
        if method == "closed_form":
            raise ValueError(f"{type(model_or_ssm).__name__} is not a linear SSM; use method='simulation'")
    washout = max(tau_max, 1000) if washout is None else washout
    u = scalar_input(washout + n_fit + n_test, seed)
    states = adapter.run(u)
    mf = mf_from_states(states, u, tau_max, washout, n_fit, ridge)
    return MemoryResult(np.arange(tau_max + 1), mf, float(mf.sum()), adapter.state_dim, "simulation", label,
                        extra={"describe": adapter.describe, "n_fit": n_fit, "n_test": n_test,
                               "washout": washout, "seed": seed})


def plot_memory_functions(results: list[MemoryResult], path, title: str = "", log_tau: bool = False) -> None:
    """MF against tau, one curve per result (labels carry MC), saved to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in results:
        ax.plot(r.taus + (1 if log_tau else 0), r.mf, label=f"{r.label} (MC={r.mc:.1f}/{r.state_dim})")
    ax.set_xlabel("delay tau" + (" + 1" if log_tau else ""))
    ax.set_ylabel("MF(tau)")
    if log_tau:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
