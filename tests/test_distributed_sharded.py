"""The column-sharded state (``distributed/sharded.py``) against the unsharded run, in 2 and 4 processes.

Each world size starts its gloo processes once (a spawn costs seconds) and runs every check in
them: the sharded scan against ``scan_reference`` on the same dense state (outputs, final state,
written entries, carry, and the gradients of every parameter and of the scores and features),
an ``OBSLayer`` with ``state_backend: sharded`` against the same layer with ``dense`` (both S_0
kinds, two calls in a row), the refusals, and the bytes counter against the formula. N = 13
splits unevenly over 4 ranks (4, 3, 3, 3 columns). Tolerances (float64, ``tests.helpers.rel_err``):
values 1e-12, gradients 1e-10; discrete choices (k_t, A_t, written entries) identical.
"""
from __future__ import annotations

import pytest
import torch

from onebigstate import OBSConfig, OBSLayer
from onebigstate.distributed.launch import LoopbackUnavailable, run_local
from onebigstate.distributed.sharded import column_range, sharding_bytes_per_step
from onebigstate.model.state import make_state
from tests.helpers import rel_err
from tests.test_obs_kernels import BASE, CASES, set_k_logit

pytestmark = pytest.mark.distributed

N = 13                        # over 4 ranks: 4, 3, 3, 3 columns
VALUE_TOL, GRAD_TOL = 1e-12, 1e-10
SCAN_CASES = ["T1", "odd_T", "continuous_mixed", "carried_state", "reverse_assoc", "row_norm", "circuit_direct",
              "state_bound", "every_switch", "k_min_zero", "active_persist"]
N_REG = 23                    # sampled final-state values (the Gaussian regulariser's), compared too
GRAD_NAMES = ["value", "w_summary", "w_out", "b_out", "beta_logit", "scores", "features"]


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    """rel_err, or 0 / inf where the reference is all zero (an unused parameter)."""
    a, b = a.detach(), b.detach()
    if b.numel() == 0 or b.abs().max() == 0:
        return 0.0 if a.numel() == 0 or a.abs().max() == 0 else float("inf")
    return rel_err(a, b)


# ---- what runs inside the processes ------------------------------------------------------------
def _scan_case(case: dict):
    """A case of tests/test_obs_kernels.py at N = 13 as the scan's arguments: (step config, dense
    state [B, N, N], carry, inputs' tensors, parameters' tensors). Every rank builds the same."""
    from onebigstate.kernels.reference import scan_reference
    from onebigstate.kernels.scan import ScanInputs
    from onebigstate.kernels.step import StepParams
    from onebigstate.model.state import DenseState

    cfg = OBSConfig(**{**BASE, **case.get("cfg", {}), "n_nodes": N})
    torch.manual_seed(0)
    layer = OBSLayer(cfg).double()
    set_k_logit(layer, case)
    B, T = case.get("B", 3), case["T"]

    def inputs_of(x, cont):
        idx, scores = layer.addresser(x)
        return ScanInputs(idx, scores, layer.write.features(x), cont)

    with torch.no_grad():
        x = torch.randn(B, T, cfg.d_model, dtype=torch.float64)
        cont = torch.zeros(B, T, dtype=torch.float64)
        if case.get("continuous") == "mixed":
            cont = (torch.rand(B, T, generator=torch.Generator().manual_seed(1)) > 0.5).double()
        inputs = inputs_of(x, cont)
        params = [t.detach().clone() for t in layer.step_params().tensors()]
        dense = layer.s0.unsqueeze(0).expand(B, -1, -1).clone()
        carry = None
        if case.get("carried"):
            pre = inputs_of(torch.randn(B, 5, cfg.d_model, dtype=torch.float64), torch.ones(B, 5, dtype=torch.float64))
            out = scan_reference(DenseState(dense), _empty_carry(B, layer), pre, StepParams.from_tensors(params),
                                 layer.step_cfg, 0)
            dense, carry = out.state.as_dense().clone(), out.carry
    return layer.step_cfg, dense, carry, inputs, params


def _empty_carry(B, layer):
    from onebigstate.kernels.step import Carry
    return Carry.empty(B, layer.step_cfg, torch.float64, torch.device("cpu"))


def _run_scan(store, carry, inputs, params, cfg, backend: str, n_reg: int = N_REG):
    """obs_scan with leaf copies of the parameters, scores and features, and the backward of a fixed
    random loss of the outputs: (outputs, gradients by name)."""
    from onebigstate.kernels.scan import ScanInputs, obs_scan
    from onebigstate.kernels.step import StepParams

    ps = [t.clone().requires_grad_(True) for t in params]
    scores = inputs.scores.clone().requires_grad_(True)
    features = inputs.features.clone().requires_grad_(True)
    ins = ScanInputs(inputs.circuit_idx, scores, features, inputs.continuous)
    out = obs_scan(store, carry, ins, StepParams.from_tensors(ps), cfg, backend=backend, n_reg_samples=n_reg)
    gen = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, dtype=t.dtype, generator=gen)).sum()
               for t in (out.read, out.k_soft, out.gates, out.reg_values))
    loss.backward()
    grads = dict(zip(GRAD_NAMES, [p.grad for p in ps] + [scores.grad, features.grad]))
    return out, {n: (g if g is not None else torch.zeros(())) for n, g in grads.items()}


def _compare_scan(name: str) -> dict:
    """Errors of the sharded scan against the reference for one case (every rank returns its own)."""
    from onebigstate.distributed.sharded import ColumnShardedState
    from onebigstate.model.state import DenseState

    cfg, dense, carry, inputs, params = _scan_case(CASES[name])
    ref, g_ref = _run_scan(DenseState(dense.clone()), carry, inputs, params, cfg, "reference")
    sh, g_sh = _run_scan(ColumnShardedState.from_dense(dense), carry, inputs, params, cfg, "auto")
    out = {"same_choices": torch.equal(ref.k_hard, sh.k_hard) and torch.equal(ref.active_idx, sh.active_idx)
           and torch.equal(ref.carry.active_idx, sh.carry.active_idx)
           and torch.equal(ref.carry.circuit_idx, sh.carry.circuit_idx),
           "same_written": torch.equal(sh.state.written_map(), ref.state.touched)
           and torch.equal(sh.state.entries_written(), ref.state.entries_written())}
    values = {f: _err(getattr(sh, f), getattr(ref, f)) for f in ("read", "k_soft", "gates", "active_w", "reg_values")}
    values["state"] = _err(sh.state.as_dense(), ref.state.as_dense())
    values["carry_active_w"] = _err(sh.carry.active_w, ref.carry.active_w)
    values["carry_alpha"] = _err(sh.carry.alpha, ref.carry.alpha)
    out["values"] = values
    out["grads"] = {n: _err(g_sh[n], g_ref[n]) for n in GRAD_NAMES}
    return out


def _compare_layers(s0_kind: str) -> dict:
    """The same layer with state_backend sharded and dense: two calls in a row (the second
    continuing from the first's state), outputs and parameter gradients."""
    def run(state_backend: str, backend: str):
        torch.manual_seed(0)
        layer = OBSLayer(OBSConfig(**{**BASE, "n_nodes": N, "state_backend": state_backend, "state_init": s0_kind,
                                      "backend": backend, "row_norm": True, "circuit_direct": 1.0,
                                      "state_bound": 0.5, "gaussian_reg": dict(weight=0.3, n_samples=17)})).double()
        gen = torch.Generator().manual_seed(3)
        x1, x2 = (torch.randn(2, T, BASE["d_model"], dtype=torch.float64, generator=gen) for T in (6, 5))
        y1, state = layer(x1, continuous=True)
        y2, state = layer(x2, state, continuous=False)
        loss = (y1 * torch.randn(y1.shape, dtype=torch.float64, generator=gen)).sum() \
            + (y2 * torch.randn(y2.shape, dtype=torch.float64, generator=gen)).sum() + layer.last_stats.aux_loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
        return (y1.detach(), y2.detach()), grads, state
    (y1_d, y2_d), g_d, s_d = run("dense", "reference")
    (y1_s, y2_s), g_s, s_s = run("sharded", "auto")
    return {"kind": type(s_s).__name__, "y1": _err(y1_s, y1_d), "y2": _err(y2_s, y2_d),
            "state": _err(s_s.as_dense(), s_d.as_dense()),
            "same_written": torch.equal(s_s.entries_written(), s_d.entries_written()),
            "same_grad_names": sorted(g_s) == sorted(g_d),
            "grads": {n: _err(g_s[n], g_d[n]) for n in g_d}}


def _refusals() -> dict:
    """The message of each refused call (None where nothing was raised)."""
    from onebigstate.distributed.sharded import ColumnShardedState
    from onebigstate.kernels.scan import obs_scan
    from onebigstate.kernels.step import StepParams

    def message(fn):
        try:
            fn()
        except (ValueError, NotImplementedError) as err:
            return str(err)
        return None
    cfg, dense, carry, inputs, params = _scan_case(CASES["odd_T"])
    ps = StepParams.from_tensors(params)
    store = ColumnShardedState.from_dense(dense)
    out = {b: message(lambda b=b: obs_scan(store, None, inputs, ps, cfg, backend=b))
           for b in ("cpu", "reversible", "triton")}
    layer = OBSLayer(OBSConfig(**{**BASE, "n_nodes": N, "state_backend": "sharded", "scan_mode": "chunked"})).double()
    out["chunked"] = message(lambda: layer(torch.randn(2, 4, BASE["d_model"], dtype=torch.float64)))
    out["base_view"] = message(store.base_view)
    return out


def _count_bytes(world: int) -> dict:
    """Bytes the counter measured in one scan (forward under no_grad; forward and backward)
    against sharding_bytes_per_step's column_gather, times T steps."""
    from onebigstate.distributed.sharded import ColumnShardedState, count_comm
    from onebigstate.kernels.scan import obs_scan
    from onebigstate.kernels.step import StepParams

    case = {"T": 7, "continuous": "mixed", "cfg": dict(row_norm=True, state_bound=0.5)}
    cfg, dense, carry, inputs, params = _scan_case(case)
    B, T, _ = inputs.circuit_idx.shape
    formula = lambda backward: T * sharding_bytes_per_step(
        N, cfg.k_max, cfg.m_active, cfg.writes_per_step(with_chain=True), B, world, 8, row_norm=True,
        state_bound=True, backward=backward)["column_gather"]
    with torch.no_grad(), count_comm() as forward:
        obs_scan(ColumnShardedState.from_dense(dense), carry, inputs, StepParams.from_tensors(params), cfg)
    with count_comm() as both:
        _run_scan(ColumnShardedState.from_dense(dense), carry, inputs, params, cfg, "auto", n_reg=0)
    return {"forward": (forward.bytes, formula(False)), "forward_and_backward": (both.bytes, formula(True))}


def _no_grad_and_store() -> dict:
    """Evaluation (no_grad, in place) against the reference, and the store's own methods against a
    dense mirror: errors, and whether each identity held."""
    from onebigstate.distributed.sharded import ColumnShardedState
    from onebigstate.kernels.scan import obs_scan
    from onebigstate.kernels.step import StepParams
    from onebigstate.model.state import DenseState

    cfg, dense, carry, inputs, params = _scan_case(CASES["every_switch"])
    ps = StepParams.from_tensors(params)
    store = ColumnShardedState.from_dense(dense)
    with torch.no_grad():
        ref = obs_scan(DenseState(dense.clone()), carry, inputs, ps, cfg, backend="reference")
        sh = obs_scan(store, carry, inputs, ps, cfg, in_place=True)
    out = {"in_place": sh.state is store, "no_grad_read": _err(sh.read, ref.read),
           "no_grad_state": _err(store.as_dense(), ref.state.as_dense()),
           "no_grad_written": torch.equal(store.written_map(), ref.state.touched)}
    mirror = DenseState(store.as_dense().clone())
    gen = torch.Generator().manual_seed(4)
    B = dense.shape[0]
    pos = torch.randint(0, B * N * N, (B, 9), generator=gen)
    rows = torch.randint(0, N, (B, 6), generator=gen)
    coeff = torch.randn(B, 6, dtype=torch.float64, generator=gen)
    out["values_at"] = _err(store.values_at(pos), mirror.values_at(pos))
    out["rows"] = _err(store.rows(rows), mirror.rows(rows))
    (a_s, sc_s), (a_d, sc_d) = store.spread(rows, coeff, True), mirror.spread(rows, coeff, True)
    out["spread"] = max(_err(a_s, a_d), _err(sc_s, sc_d))
    copy = store.clone()
    vals = torch.randn(pos.shape, dtype=torch.float64, generator=gen)
    store.add_(pos, vals); mirror.add_(pos, vals)
    out["add_"] = _err(store.as_dense(), mirror.as_dense())
    out["clone_apart"] = _err(copy.as_dense(), mirror.as_dense()) > 0
    back = ColumnShardedState.from_tensors({k: v.clone() for k, v in store.to_tensors().items()})
    out["checkpoint"] = torch.equal(back.as_dense(), store.as_dense()) and torch.equal(
        back.written_map(), store.written_map()) and torch.equal(back.carry.active_idx, store.carry.active_idx)
    return out


def _worker(rank: int, world: int) -> dict:
    return {"columns": column_range(N, rank, world),
            "scan": {name: _compare_scan(name) for name in SCAN_CASES},
            "layer": {kind: _compare_layers(kind) for kind in ("randn", "hash")},
            "refusals": _refusals(),
            "bytes": _count_bytes(world),
            "store": _no_grad_and_store()}


# ---- the tests ---------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=[2, 4], ids=lambda p: f"P{p}")
def ranks(request) -> list[dict]:
    """Every rank's results for one world size (one spawn of the processes per world size)."""
    try:
        return run_local(_worker, request.param)
    except LoopbackUnavailable as err:
        pytest.skip(f"no loopback networking for gloo processes: {err}")


def test_sharded_scan_equals_the_reference(ranks):
    for rank, res in enumerate(ranks):
        for name, case in res["scan"].items():
            where = f"rank {rank}, case {name}"
            assert case["same_choices"], where
            assert case["same_written"], where
            for k, e in case["values"].items():
                assert e < VALUE_TOL, f"{where}: {k} rel err {e:.2e}"
            for k, e in case["grads"].items():
                assert e < GRAD_TOL, f"{where}: grad of {k} rel err {e:.2e}"


def test_sharded_layer_equals_the_dense_layer(ranks):
    for rank, res in enumerate(ranks):
        for kind, r in res["layer"].items():
            where = f"rank {rank}, S_0 {kind}"
            assert r["kind"] == "ColumnShardedState", where
            assert r["same_written"] and r["same_grad_names"], where
            for k in ("y1", "y2", "state"):
                assert r[k] < VALUE_TOL, f"{where}: {k} rel err {r[k]:.2e}"
            for n, e in r["grads"].items():
                assert e < GRAD_TOL, f"{where}: grad of {n} rel err {e:.2e}"


def test_backends_that_cannot_run_a_sharded_state_refuse_it(ranks):
    for res in ranks:
        msgs = res["refusals"]
        for backend in ("cpu", "reversible", "triton"):
            assert msgs[backend] is not None and f"'{backend}'" in msgs[backend], msgs[backend]
        assert msgs["chunked"] is not None and "chunked" in msgs["chunked"], msgs["chunked"]
        assert msgs["base_view"] is not None


def test_evaluation_in_place_and_the_store_methods_equal_the_dense_ones(ranks):
    for rank, res in enumerate(ranks):
        r = res["store"]
        for k, v in r.items():
            assert (v is True) if isinstance(v, bool) else (v < VALUE_TOL), f"rank {rank}: {k} = {v}"


def test_bytes_counter_equals_the_column_formula(ranks):
    for res in ranks:
        for what, (measured, formula) in res["bytes"].items():
            assert measured == formula, (what, measured, formula)
            assert measured > 0


def test_columns_cover_the_nodes_once(ranks):
    world = len(ranks)
    assert [r["columns"] for r in ranks] == [column_range(N, r, world) for r in range(world)]
    assert [column_range(13, r, 4) for r in range(4)] == [(0, 4), (4, 7), (7, 10), (10, 13)]
    # more ranks than nodes: the last ranks hold no column
    assert [column_range(3, r, 5) for r in range(5)] == [(0, 1), (1, 2), (2, 3), (3, 3), (3, 3)]


def test_without_a_process_group_is_a_clear_error():
    with pytest.raises(RuntimeError, match="process group.*torchrun"):
        make_state("sharded", 2, n_nodes=N, std=0.1)
    layer = OBSLayer(OBSConfig(**{**BASE, "n_nodes": N, "state_backend": "sharded"}))
    with pytest.raises(RuntimeError, match="process group"):
        layer(torch.randn(1, 2, BASE["d_model"]))


def test_column_layout_moves_fewer_bytes_than_the_row_layouts():
    b = sharding_bytes_per_step(65536, 12, 16, 480, 8, 8, 4, row_norm=True, state_bound=True)
    assert b["column_topm"] < b["column_gather"] < b["row_partial"] < b["row_fetch"]
    # even split: the gathered activation is (P-1) B N b exactly
    assert sharding_bytes_per_step(64, 4, 5, 0, 2, 4, 8)["column_gather"] == 3 * 2 * 64 * 8
