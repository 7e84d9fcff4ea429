"""Configuration of the OBS layer, with the paper's symbols named.

    N = n_nodes      nodes of the big state S (N x N per stream)
    k = k_t          nodes in the step's new circuit I_t, learned in [k_min, k_max]
    m = m_active     most active nodes A_t carried to the next step
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from onebigstate.config import StrictModel

# Settings that no kept run ever changed (the 80 kept cell configs under docs/results/ and every
# configs/*.yaml, checked 2026-12-05), retired from the config into constants of the layer. A
# config that still names one is accepted with exactly this value (old run folders, kept cells)
# and refused with another, since this version no longer builds that model.
RETIRED_SETTINGS: dict[str, Any] = {
    "value_from_key": True,        # V[n] = V_free[n] + K[n] W_kv: values start aligned with addresses
    "beta_init": 0.02,             # initial gate of the spread from A_{t-1}'s rows
    "gate_scale": 1.0,             # largest |change| of a write gate (the op's StepConfig default)
    "gate_init": 0.5,              # initial value of the write gates
    "k_mask_temperature": 4.0,     # sharpness of the soft k_t mask (the op's StepConfig default)
}
# The layer's defaults until 2026-12-05, when the measured recipe (row_norm, balance_cost 0.1,
# circuit_direct 1.0) became the default. Configs and code that reproduce pages made with the
# plain layer pin these; the bench calls that model `obs_plain`.
PLAIN_LAYER: dict[str, Any] = {"row_norm": False, "balance_cost": 0.0, "circuit_direct": 0.0}


class GaussianRegConfig(StrictModel):
    """Pushes sampled written connection strengths towards N(mean, std) (1-D Wasserstein)."""

    weight: float = Field(0.0, ge=0.0)
    mean: float = 0.0
    std: float = Field(0.5, gt=0.0)
    n_samples: int = Field(1024, ge=1)


class OBSCoreConfig(StrictModel):
    """Everything of the OBS layer but its width (the mixer config inside a model stack).

    The defaults are the measured recipe: ``row_norm``, ``balance_cost`` 0.1 and ``circuit_direct``
    1.0, trained at lr 3e-3 without weight decay (capacity, length extrapolation and retention on
    MQAR, 3 seeds each: docs/results/circuit_direct.md, README's results). ``PLAIN_LAYER`` gives the
    plain layer of the earlier pages.
    """

    n_nodes: int = Field(512, ge=2, description="N, nodes of the big state")
    d_key: int = Field(64, ge=1, description="width of the node address keys K[n]")
    d_value: int = Field(64, ge=1, description="width of the node value embeddings V[n]")
    d_hidden: int = Field(64, ge=1, description="width of the controller's hidden vector")
    d_write: int = Field(64, ge=1, description="hidden width of the write module")
    k_min: int = Field(4, ge=0, description="fewest nodes in a circuit (0: a step may choose none, and then "
                                            "writes nothing and reads only the spread from the active nodes)")
    k_max: int = Field(12, ge=1, description="most nodes in a circuit")
    m_active: int = Field(16, ge=1, description="m, most active nodes carried between steps")
    init_std: float = Field(0.01, ge=0.0, description="std of the seeded Gaussian initial state")
    state_seed: int = 0
    spread_from_active: bool = Field(True, description="read also spreads from A_{t-1}'s rows (gated)")
    reverse_assoc: bool = Field(False, description="also wire the new circuit back to the active nodes "
                                                   "(S[I_t, A_{t-1}]), so a later cue recalls what preceded it")
    row_norm: bool = Field(True, description="read each row divided by 1 + its L2 norm (detached), so nodes "
                                             "worn by heavy traffic do not drown a cue seen once")
    circuit_direct: float = Field(1.0, ge=0.0, description="the new circuit counts as active directly: each of its "
                                  "nodes adds circuit_direct x alpha / k_max to its activation, so a negative "
                                  "intra-circuit gate cannot push it out of A_t (0: only through its writes)")
    active_persist: float = Field(0.0, ge=0.0, description="the active nodes stay active: each node of A_{t-1} adds "
                                  "active_persist x w_{t-1} / k_max to its activation (w sums to k_max), so one step "
                                  "of "
                                  "an input about nothing (silence between a view and its name) does not replace what "
                                  "was active (0: the previous set enters A_t only through the gated spread)")
    state_bound: float = Field(0.0, ge=0.0, description="soft bound c on |S|: a write v moves its entry s towards "
                               "sign(v) c by the fraction 1 - exp(-|v| / c) (about v (1 - sign(v) s / c) for small "
                               "v), so entries stay near [-c, c] along a stream of any length (0: writes are plain "
                               "sums, unbounded)")
    address_balance: float = Field(0.0, ge=0.0, description="rate of a per-node bias on the circuit choice, moved "
                                   "after every training window against the node's load (top-k of score + bias, "
                                   "the weights still from the scores; Wang et al. 2024's loss-free balancing): "
                                   "without it a fixed input such as silence and the nodes shared by all words take "
                                   "most circuit slots, and 40% of the nodes none (docs/results/write_cost.md; 0: off)")
    k_cost: float = Field(0.0, ge=0.0, description="penalty on mean k_t / k_max (prefers small circuits)")
    write_cost: float = Field(0.0, ge=0.0, description="penalty on the mean |gate| of the step's writes (each gate "
                              "weighted by the entries it scales), so a step writes only where the loss needs it: "
                              "without it the trained gates sit near 1 on every step, silence and noise included "
                              "(docs/results/write_cost.md)")
    balance_cost: float = Field(0.1, ge=0.0, description="weight of the node load-balancing loss on addressing "
                                                         "(spreads circuits over the nodes; 1.0 = even load)")
    continuous: bool = Field(False, description="default modality flag when none is passed")
    backend: Literal["auto", "cpu", "reversible", "reference", "triton"] = Field(
        "auto", description="scan backend (kernels/scan.py): cpu (compiled), reversible (the Python loop), "
                            "reference (the specification, small sizes), triton (fused GPU kernels, dense "
                            "and sparse store, sequential mode); auto: cpu on CPU when it builds, else "
                            "reversible")
    scan_mode: Literal["sequential", "chunked"] = Field(
        "sequential", description="sequential: each step handed the previous step's carry; chunked: chunks of up "
                                  "to max_chunk steps computed in parallel sweeps, each step handed the previous "
                                  "sweep's carry (kernels/chunked.py; exact after as many sweeps as steps)")
    max_chunk: int = Field(16, ge=1, description="chunked mode: longest chunk C")
    chunk_sweeps: int = Field(2, ge=0, description="chunked mode: sweeps per chunk (at most C are used); 0: sweep "
                                                   "until the active sets and weights stop changing (exact)")
    chunk_gate: Literal["none", "rule"] = Field(
        "none", description="chunked mode: none, chunks of max_chunk; rule, also cut before a step that re-reads a "
                            "circuit of the chunk or a continuous input whose circuit shares no node with the last")
    state_backend: Literal["dense", "sparse", "sharded"] = Field(
        "dense", description="dense: one N x N tensor per stream; sparse: a hash-generated S_0 plus the entries "
                             "written (memory grows with what was written, not N^2); sharded: the dense state "
                             "split by columns over the processes of a torch.distributed group "
                             "(distributed/sharded.py; scan backend auto or reference, sequential mode)")
    state_init: Literal["auto", "randn", "hash"] = Field(
        "auto", description="how S_0 is drawn: randn (torch's seeded Gaussian; dense only), hash (a Gaussian "
                            "from an integer hash of (seed, i, j); the sparse backend's, and the dense one's "
                            "when it must match it); auto: randn for dense and sharded, hash for sparse")
    gaussian_reg: GaussianRegConfig = GaussianRegConfig()

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key, value in RETIRED_SETTINGS.items():
            if key in data:
                if data[key] != value:
                    raise ValueError(f"'{key}' was retired: every kept run used {value!r}, now a constant of the "
                                     f"layer; this config asks for {data[key]!r}, a model this version does not build")
                data = {k: v for k, v in data.items() if k != key}
        return data

    @model_validator(mode="after")
    def _check_sizes(self) -> "OBSCoreConfig":
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        if self.k_max > self.n_nodes:
            raise ValueError(f"k_max ({self.k_max}) must be <= n_nodes ({self.n_nodes})")
        if self.m_active > self.n_nodes:
            raise ValueError(f"m_active ({self.m_active}) must be <= n_nodes ({self.n_nodes})")
        if self.state_backend == "sparse" and self.state_init == "randn":
            raise ValueError("state_init 'randn' needs the whole N x N matrix; the sparse backend generates S_0 "
                             "by hashing (state_init: hash or auto)")
        return self

    @property
    def s0_kind(self) -> str:
        """'randn' or 'hash': the resolved ``state_init``."""
        if self.state_init != "auto":
            return self.state_init
        return "hash" if self.state_backend == "sparse" else "randn"


class OBSConfig(OBSCoreConfig):
    """The OBS layer's config.

    Episodic or lifelong is not a layer setting: ``layer(x)`` starts every stream from the
    seeded initial state (episodic); passing the returned state back in, ``layer(x, state)``,
    continues the streams (lifelong). In training runs, ``train.carry_state`` does the latter.
    """

    d_model: int = Field(64, ge=1, description="width of the layer's input and output")
