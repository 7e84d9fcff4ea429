"""benchmarks/capacity_curve.py: the capacity grid's rows and OBS's zero-shot columns on one axis."""
from __future__ import annotations

import json

import pytest

from training_helpers import load_benchmark


def _row(model, setting, x, acc, evals=None, seeds=1):
    return {"setting": setting, "model": model, "lr": 0.003, "n_seeds": seeds, "accuracy": acc,
            "evals": evals or {}, "n_params": 1000, "x": x}


def test_zero_shot_columns_map_to_pairs_and_both_protocols_share_a_table(tmp_path):
    cc = load_benchmark("capacity_curve")
    capacity = [_row("s4d", "P=64 T=256 d=64", {"pairs": 64, "width": 64}, [0.5, 0.7], seeds=2),
                _row("s4d", "P=256 T=1024 d=64", {"pairs": 256, "width": 64}, [0.1])]
    extrap = [_row("obs", "train T=128 P=32 d=64", {"width": 64}, [1.0],
                   {"T=128": [1.0], "T=256": [0.9], "T=1024": [0.8], "T=4096": [0.4]}),
              _row("lstm", "train T=128 P=32 d=64", {"width": 64}, [0.0], {"T=256": [0.0]})]
    zero = cc.zero_shot_points(extrap, ["obs"])
    assert [c["points"] for c in zero] == [{64: 0.9, 256: 0.8, 1024: 0.4}]   # T=128 is the training size
    trained = cc.trained_points(capacity)
    assert trained[0]["points"] == {64: pytest.approx(0.6), 256: 0.1}
    text = cc.table(zero + trained, [64, 256, 1024])
    assert "| obs | 64 | zero-shot from P=32 | 1,000 | 0.900 | 0.800 | 0.400 | 1 |" in text
    assert "| s4d | 64 | trained at each P | 1,000 | 0.600 | 0.100 | - | 1/2 |" in text

    (tmp_path / "c.json").write_text(json.dumps(capacity))
    (tmp_path / "e.json").write_text(json.dumps(extrap))
    out = tmp_path / "curve.md"
    none = ["--probes", str(tmp_path / "none")]     # not the repository's own probe records
    assert cc.main(["--capacity", str(tmp_path / "c.json"), "--extrapolation", str(tmp_path / "e.json"),
                    *none, "--out", str(out)]) == 0
    text = out.read_text()
    assert "zero-shot from P=32" in text and out.with_suffix(".png").stat().st_size > 1000
    # the page's baselines are drawn zero-shot too, beside their rows trained at each P
    assert "| lstm | 64 | zero-shot from P=32 | 1,000 | 0.000 | - | - | 1 |" in text
    assert cc.main(["--capacity", str(tmp_path / "c.json"), "--extrapolation", str(tmp_path / "e.json"),
                    "--baselines", "", *none, "--out", str(out)]) == 0
    assert "| lstm |" not in out.read_text()
    with pytest.raises(SystemExit, match="not found"):
        cc.main(["--capacity", str(tmp_path / "missing.json")])


def _probe(model, pairs, acc, seed=0, lr=0.003, setting="train T=128 P=32 d=64"):
    return {"bench": {"model": model, "seed": seed, "lr": lr, "setting": setting}, "d_model": 64,
            "task_params": {"num_kv_pairs": pairs, "seq_len": 4 * pairs},
            "metrics": {"accuracy": acc}, "n_params": 1000, "test_size": 64}


def test_obs_eval_probes_extend_the_zero_shot_curves(tmp_path):
    cc = load_benchmark("capacity_curve")
    extrap = [_row("obs", "train T=128 P=32 d=64", {"width": 64}, [1.0], {"T=256": [0.9], "T=1024": [0.8]})]
    zero = cc.zero_shot_points(extrap, ["obs"])
    used = cc.add_probes(zero, [_probe("obs", 512, 0.5), _probe("obs", 512, 0.7, seed=1),
                                _probe("obs", 64, 0.1),          # the bench measured P=64: kept
                                _probe("lstm", 512, 0.0),        # not an OBS model of the page
                                _probe("obs", 1024, 0.3, lr=0.01)], ["obs"])   # another lr: its own curve
    assert len(used) == 3
    assert zero[0]["points"] == {64: 0.9, 256: 0.8, 512: pytest.approx(0.6)} and zero[0]["seeds"][512] == 2
    assert zero[1]["model"] == "obs (lr 0.01, trained at P=32)" and zero[1]["points"] == {1024: 0.3}
    assert zero[1]["width"] == 64 and zero[1]["protocol"] == "zero-shot from P=32 (obs eval)"

    (tmp_path / "c.json").write_text(json.dumps([_row("s4d", "P=64 T=256 d=64", {"pairs": 64, "width": 64}, [0.5])]))
    (tmp_path / "e.json").write_text(json.dumps(extrap))
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "a.json").write_text(json.dumps(_probe("obs", 512, 0.5)))
    out = tmp_path / "curve.md"
    assert cc.main(["--capacity", str(tmp_path / "c.json"), "--extrapolation", str(tmp_path / "e.json"),
                    "--probes", str(probes), "--out", str(out)]) == 0
    text = out.read_text()
    assert "P=512 (T=2048)" in text and "| 0.500 |" in text


def test_several_extrapolation_pages_a_later_row_replaces_and_lrs_label_the_curves(tmp_path):
    cc = load_benchmark("capacity_curve")
    big = "obs_balanced_rownorm_n4096"
    main_page = [_row("obs", "train T=128 P=32 d=64", {"width": 64}, [0.9], {"T=256": [0.9]}),
                 {**_row(big, "train T=128 P=32 d=64", {"width": 64}, [0.5], {"T=256": [0.5]}), "lr": 0.01}]
    own_page = [_row(big, "train T=128 P=32 d=64", {"width": 64}, [1.0], {"T=256": [0.99]}),
                {**_row(big, "train T=128 P=32 d=64", {"width": 64}, [0.6], {"T=256": [0.6]}), "lr": 0.01}]
    zero = cc.zero_shot_points(main_page + own_page, ["obs", big])
    assert {c["model"]: c["points"][64] for c in zero} == {"obs": 0.9, f"{big} (lr 0.01)": 0.6, f"{big} (lr 0.003)": 0.99}
    cc.add_probes(zero, [_probe(big, 512, 0.4, lr=0.01)], [big])      # joins its lr's curve
    assert next(c for c in zero if c["model"] == f"{big} (lr 0.01)")["points"][512] == 0.4

    (tmp_path / "c.json").write_text(json.dumps([_row("s4d", "P=64 T=256 d=64", {"pairs": 64, "width": 64}, [0.5])]))
    (tmp_path / "e.json").write_text(json.dumps(main_page))
    (tmp_path / "own.json").write_text(json.dumps(own_page))
    out = tmp_path / "curve.md"
    assert cc.main(["--capacity", str(tmp_path / "c.json"), "--extrapolation", str(tmp_path / "e.json"),
                    str(tmp_path / "own.json"), "--obs-models", f"obs,{big}", "--probes", str(tmp_path / "none"),
                    "--out", str(out)]) == 0
    assert f"| {big} (lr 0.003) | 64 | zero-shot from P=32 | 1,000 | 0.990 | 1 |" in out.read_text()


def test_cells_trained_at_more_pairs_are_curves_of_their_own(tmp_path):
    """obs bench extrapolation --train 512:128: same model and lr, another training setting."""
    cc = load_benchmark("capacity_curve")
    rows = [_row("obs", "train T=128 P=32 d=64", {"width": 64}, [1.0], {"T=256": [0.9], "T=4096": [0.5]}),
            _row("obs", "train T=512 P=128 d=64", {"width": 64}, [1.0], {"T=256": [0.95], "T=4096": [0.8]})]
    zero = cc.zero_shot_points(rows, ["obs"])
    assert [(c["model"], c["protocol"], c["points"][1024]) for c in zero] == [
        ("obs (trained at P=32)", "zero-shot from P=32", 0.5), ("obs (trained at P=128)", "zero-shot from P=128", 0.8)]
    used = cc.add_probes(zero, [_probe("obs", 2047, 0.3), _probe("obs", 2047, 0.6, setting="train T=512 P=128 d=64")],
                         ["obs"])
    assert len(used) == 2 and [c["points"][2047] for c in zero] == [0.3, 0.6]
    with pytest.raises(ValueError, match="no training pairs"):     # a record that does not say its setting
        cc.add_probes(zero, [_probe("obs", 2047, 0.3, setting=None)], ["obs"])


def test_obs_curves_are_styled_by_nodes_variant_lr_and_training_pairs():
    cc = load_benchmark("capacity_curve")

    def style(name, lr, pairs=32):
        return cc.obs_style({"model": name, "name": name, "lr": lr, "setting": f"train T={4 * pairs} P={pairs} d=64"})

    plain = style("obs_balanced_rownorm", 0.01)
    assert (plain["color"], plain["linestyle"], plain["marker"], plain["markerfacecolor"]) == \
        ("tab:blue", "-", "o", "none")                        # N = 1024, plain, 32 pairs, lr 1e-2: open
    big = style("obs_balanced_rownorm_n16384_direct1", 0.003)
    assert (big["color"], big["linestyle"], big["markerfacecolor"]) == ("tab:red", "--", "tab:red")
    assert style("obs_balanced_rownorm_n16384_direct", 0.003)["linestyle"] == ":"
    assert style("obs_plain", 0.01)["linestyle"] == "-."
    assert style("obs", 0.003) == style("obs_balanced_rownorm_direct1", 0.003)     # the bench's recipe
    assert style("obs_balanced_rownorm", 0.01, pairs=128)["marker"] == "^"
    assert style("obs_balanced_rownorm_n2048", 0.01)["color"] == "tab:orange"
    wide = cc.obs_style({"name": "obs", "lr": 0.003, "setting": "train T=512 P=128 d=128", "width": 128})
    assert wide["linewidth"] > style("obs", 0.003)["linewidth"]      # width 128: a thicker line
    with pytest.raises(ValueError, match="not an OBS model"):
        style("lstm", 0.01)
    with pytest.raises(ValueError, match="no training pairs"):
        cc.obs_style({"model": "obs", "name": "obs", "lr": 0.01, "setting": "T=128"})
