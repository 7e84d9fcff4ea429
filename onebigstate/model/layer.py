"""The OBS layer: an ``nn.Module`` that drops into a model like any sequence layer.

    layer = OBSLayer(OBSConfig(d_model=64, n_nodes=512))
    y, state = layer(x)            # x [B, T, D], sequence interface
    y1, state = layer.step(x1, state)  # x1 [B, D], recurrent interface, same values

Per step (SPEC.md parts 1-7): address the input to the nodes (top-k_max by key score), let
the write module choose k_t, the circuit and signed changes (inside the circuit, from the
active nodes, and from the previous circuit for continuous inputs), write them into the big
state ``S``, read by spreading activation from the touched rows, keep the top-m as the active
set, and output the controller's hidden vector combined with the active nodes' values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from onebigstate.kernels.chunked import ChunkSpec
from onebigstate.kernels.scan import ScanInputs, obs_scan
from onebigstate.kernels.step import StepConfig, StepParams
from onebigstate.model.addressing import Addresser, load_balance_loss
from onebigstate.model.config import RETIRED_SETTINGS, OBSConfig
from onebigstate.model.regularizer import gaussian_strength_loss, write_mass
from onebigstate.model.sparse_state import hashed_initial_state
from onebigstate.model.state import StateStore, initial_state, make_state
from onebigstate.model.write_module import WriteModule


@dataclass
class OBSStats:
    """What the last forward call measured (for losses and inspection)."""

    k_soft: torch.Tensor       # [B, T] differentiable node count
    k_hard: torch.Tensor       # [B, T] node count used
    gates: torch.Tensor        # [B, T, 3 or 4] (g_in, g_as, g_ch[, g_rev])
    active_idx: torch.Tensor   # [B, T, M]
    active_w: torch.Tensor     # [B, T, M] active weights w_t (detached)
    circuit_idx: torch.Tensor  # [B, T, K] candidates (first k_hard are the circuit)
    read: torch.Tensor         # [B, T, Dv] read vector r_t (detached), for analysis
    aux_loss: torch.Tensor     # [] k cost + write cost + Gaussian regulariser + load balance, weighted by the config
    chunk_lengths: list[int] | None = None  # chunked mode: every chunk's length
    chunk_sweeps: list[int] | None = None   # chunked mode: the sweeps every chunk took


class NonFiniteInput(ValueError):
    """The layer's input holds NaN or inf; refused before anything is written into the state."""


class OBSLayer(nn.Module):
    def __init__(self, cfg: OBSConfig):
        super().__init__()
        self.cfg = cfg
        self.step_cfg = StepConfig.from_config(cfg)
        self.chunk_spec = ChunkSpec.from_config(cfg)
        # data parallel training sets this to its process group: the balance loss then uses the
        # whole batch's node loads (distributed/data_parallel.py)
        self.balance_group = None
        self.addresser = Addresser(cfg.d_model, cfg.n_nodes, cfg.d_key, cfg.k_max, cfg.address_balance)
        self.write = WriteModule(cfg.d_model, cfg.d_value, cfg.d_write, RETIRED_SETTINGS["gate_init"],
                                 cfg.reverse_assoc)
        # A node's value embedding is its address key mapped by a shared matrix plus a small free
        # part: the circuit of a token then reads out as that token, which decoding can generalise
        # across a large vocabulary without per-token learning.
        self.value = nn.Parameter(torch.randn(cfg.n_nodes, cfg.d_value) * 0.1)
        self.key_to_value = nn.Linear(cfg.d_key, cfg.d_value, bias=False)
        beta = RETIRED_SETTINGS["beta_init"]
        self.beta_logit = nn.Parameter(torch.tensor(math.log(beta / (1 - beta))))
        self.controller = nn.Linear(cfg.d_model, cfg.d_hidden)
        self.read_norm = nn.LayerNorm(cfg.d_value)
        self.out = nn.Linear(cfg.d_hidden + cfg.d_value, cfg.d_model)
        # Address keys, value embeddings and the spread gate are per-node memories, not
        # weights to shrink: no weight decay.
        for p in (self.addresser.keys, self.value, self.beta_logit):
            p._optim = {"weight_decay": 0.0}
        # The dense backend keeps S_0 [N, N] as a buffer; the sparse one generates it when read. The
        # sharded one starts from the dense one's S_0: its columns of the buffer for randn (drawn
        # whole), of the hash generated column by column otherwise.
        s0 = None
        if cfg.state_backend == "dense" or (cfg.state_backend == "sharded" and cfg.s0_kind == "randn"):
            make_s0 = initial_state if cfg.s0_kind == "randn" else hashed_initial_state
            s0 = make_s0(cfg.n_nodes, cfg.init_std, cfg.state_seed)
        self.register_buffer("s0", s0, persistent=False)
        self.last_stats: OBSStats | None = None

    # ---- state -------------------------------------------------------------------------
    def init_state(self, batch: int) -> StateStore:
        """A fresh state per stream: the seeded Gaussian S_0, empty carry."""
        c = self.cfg
        return make_state(c.state_backend, batch, s0=self.s0, n_nodes=c.n_nodes, std=c.init_std,
                          seed=c.state_seed, dtype=self.value.dtype, device=self.value.device)

    def initial_matrix(self) -> torch.Tensor:
        """S_0 as a dense [N, N] tensor (analysis at small N; the sparse backend builds it)."""
        if self.s0 is not None:
            return self.s0
        c = self.cfg
        return hashed_initial_state(c.n_nodes, c.init_std, c.state_seed, self.value.dtype, self.value.device)

    def state_size(self) -> dict[str, int]:
        """State size per stream the two ways: dense N^2 floats, plus the carry."""
        c = self.cfg
        return {"dense_floats": c.n_nodes * c.n_nodes, "carry_floats": c.m_active + c.k_max}

    def node_values(self) -> torch.Tensor:
        """V [N, Dv], the value embedding of every node."""
        return self.value + self.key_to_value(self.addresser.keys)

    def step_params(self) -> StepParams:
        return StepParams(self.node_values(), self.write.w_summary, self.write.w_out, self.write.b_out,
                          self.beta_logit)

    # ---- interfaces ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: StateStore | None = None,
                continuous: torch.Tensor | bool | None = None, *,
                in_place: bool = False) -> tuple[torch.Tensor, StateStore]:
        """x [B, T, D] -> (y [B, T, D], new state). ``state=None`` starts every stream afresh.

        The state handed in is left as it was: the returned state is a new object, and calling
        the layer twice from one state gives the same outputs (in training mode with
        ``address_balance``, each call also moves the addressing bias). ``in_place=True`` advances the
        state handed in instead and returns that same object, which saves a copy of B x N^2
        floats per call; lifelong training and streamed evaluation ask for it (the caller must
        not need the old state afterwards).
        """
        self._check_input(x)
        B, T, _ = x.shape
        if state is None:
            state, in_place = self.init_state(B), True      # a fresh state is ours to advance
        else:
            self._check_state(state, x)
        cont = self._continuous_flags(continuous, B, T, x)
        balance = self.cfg.balance_cost > 0 and self.training
        if balance:
            circuit_idx, scores, mean_prob = self.addresser(x, mean_prob=True)
        else:
            circuit_idx, scores = self.addresser(x)
        sure_slots = self.step_cfg.sure_slots
        if self.cfg.address_balance > 0 and self.training:
            self.addresser.update_bias(circuit_idx, sure_slots, self.balance_group)
        inputs = ScanInputs(circuit_idx, scores, self.write.features(x), cont)
        reg = self.cfg.gaussian_reg
        n_samples = reg.n_samples if (reg.weight > 0 and self.training) else 0
        out = obs_scan(state, state.carry, inputs, self.step_params(), self.step_cfg, backend=self.cfg.backend,
                       in_place=in_place, n_reg_samples=n_samples, chunks=self.chunk_spec)
        hidden = F.gelu(self.controller(x))
        y = self.out(torch.cat([hidden, self.read_norm(out.read)], dim=-1))
        aux = x.new_zeros(())
        if self.cfg.k_cost > 0:
            aux = aux + self.cfg.k_cost * (out.k_soft / self.cfg.k_max).mean()
        if self.cfg.write_cost > 0:
            aux = aux + self.cfg.write_cost * write_mass(out.gates, self.step_cfg)
        if n_samples > 0:
            aux = aux + reg.weight * gaussian_strength_loss(out.reg_values, reg.mean, reg.std)
        if balance:
            aux = aux + self.cfg.balance_cost * load_balance_loss(mean_prob, circuit_idx, sure_slots,
                                                                  self.balance_group)
        self.last_stats = OBSStats(out.k_soft, out.k_hard, out.gates, out.active_idx, out.active_w, circuit_idx,
                                   out.read.detach(), aux, out.chunk_lengths, out.chunk_sweeps)
        return y, out.state

    def step(self, x: torch.Tensor, state: StateStore | None = None,
             continuous: torch.Tensor | bool | None = None, *,
             in_place: bool = False) -> tuple[torch.Tensor, StateStore]:
        """One step: x [B, D] -> (y [B, D], new state). Equal to ``forward`` on the whole
        sequence; like it, leaves ``state`` unchanged unless ``in_place=True``."""
        if x.dim() != 2:
            raise ValueError(f"step expects x of shape [B, d_model={self.cfg.d_model}], got {tuple(x.shape)}")
        if isinstance(continuous, torch.Tensor):
            continuous = continuous.reshape(-1, 1)
        y, state = self.forward(x.unsqueeze(1), state, continuous, in_place=in_place)
        return y.squeeze(1), state

    # ---- helpers -------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"OBSLayer expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.cfg.d_model:
            raise ValueError(f"OBSLayer expects x of shape [B, T, d_model={self.cfg.d_model}], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"OBSLayer expects a floating-point x, got dtype {x.dtype}")
        if x.dtype != self.value.dtype:
            raise ValueError(f"input dtype {x.dtype} does not match the layer's parameters ({self.value.dtype})")
        if x.shape[1] == 0:
            raise ValueError("OBSLayer needs at least one step (T >= 1)")
        if x.shape[0] == 0:
            raise ValueError("OBSLayer needs at least one stream (a batch of 0 was given)")
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).any(-1)                        # [B, T]
            streams = bad.any(1).nonzero().flatten().tolist()
            first = {b: int(bad[b].nonzero()[0]) for b in streams[:8]}
            raise NonFiniteInput(f"OBSLayer input holds NaN or inf in {len(streams)} stream(s) (stream: first step "
                             f"{first}); refused, so that nothing non-finite is written into the big state")

    def _check_state(self, state, x: torch.Tensor) -> None:
        """A state this layer can continue: its store kind, sizes, dtype and carry."""
        c = self.cfg
        if not isinstance(state, StateStore):
            raise TypeError(f"state must be a StateStore returned by this layer (or None for a fresh one), "
                            f"got {type(state).__name__}")
        if state.kind != c.state_backend:
            raise ValueError(f"state is a {state.kind}-store state but the layer has state_backend='{c.state_backend}'")
        B = x.shape[0]
        if state.batch != B or state.n_nodes != c.n_nodes:
            raise ValueError(f"state holds {state.batch} streams of N={state.n_nodes} nodes, but the input "
                             f"has {B} streams and the layer N={c.n_nodes}")
        if state.dtype != x.dtype:
            raise ValueError(f"state dtype {state.dtype} does not match input dtype {x.dtype}")
        carry = state.carry
        if carry is not None and (carry.active_idx.shape[-1] != c.m_active or carry.circuit_idx.shape[-1] != c.k_max):
            raise ValueError(f"state comes from a layer with m_active={carry.active_idx.shape[-1]}, "
                             f"k_max={carry.circuit_idx.shape[-1]}; this layer has m_active={c.m_active}, "
                             f"k_max={c.k_max}")

    def _continuous_flags(self, continuous, B: int, T: int, x: torch.Tensor) -> torch.Tensor:
        if continuous is None:
            continuous = self.cfg.continuous
        if isinstance(continuous, bool):
            return x.new_full((B, T), float(continuous))
        if not isinstance(continuous, torch.Tensor):
            raise TypeError(f"continuous must be a bool or a [B, T] tensor of flags in [0, 1], "
                            f"got {type(continuous).__name__} {continuous!r}")
        cont = continuous.to(x.dtype)
        if cont.shape != (B, T):
            raise ValueError(f"continuous flags must be [B, T] = {(B, T)}, got {tuple(cont.shape)}")
        if cont.numel() and not bool(((cont >= 0) & (cont <= 1)).all()):
            raise ValueError(f"continuous flags must lie in [0, 1] (they scale the chain write), got values in "
                             f"[{float(cont.min())}, {float(cont.max())}]")
        return cont


def obs_layers(model: nn.Module) -> list[OBSLayer]:
    """Every OBS layer inside ``model``, in module order (empty for the baselines)."""
    return [m for m in model.modules() if isinstance(m, OBSLayer)]
