"""benchmarks/circuit_load.py: node load statistics of OBS circuits in MQAR sequences."""
from __future__ import annotations

import pytest
import torch

from onebigstate.tasks.common import IGNORE

from training_helpers import load_benchmark, train_tiny_mqar


def test_sequence_load_counts_tokens_per_node_and_tokens_without_an_own_node():
    load = load_benchmark("circuit_load").sequence_load
    tokens = torch.tensor([5, 6, 5, 7])
    k = torch.tensor([2, 2, 2, 2])
    # 5 -> {0, 1}, 6 -> {1, 2}, 7 -> {3, 4} (the third slot is beyond k and ignored)
    circuits = torch.tensor([[0, 1, 9], [1, 2, 9], [1, 0, 9], [3, 4, 9]])
    assert load(tokens, circuits, k, 10) == {"tokens": 3, "nodes": 5, "load": pytest.approx(6 / 5), "no_own": 0.0}
    # 6 -> {1, 0}: 5 and 6 share both their nodes, 7 keeps its own
    circuits[1] = torch.tensor([1, 0, 9])
    out = load(tokens, circuits, k, 10)
    assert out["nodes"] == 4 and out["load"] == pytest.approx(6 / 4) and out["no_own"] == pytest.approx(2 / 3)


def test_circuit_load_page_for_a_trained_mqar_run(tmp_path, one_thread):
    run = train_tiny_mqar(tmp_path / "run", vocab_size=64, seq_len=16, num_kv_pairs=4, test_size=4)
    out = tmp_path / "load.md"
    assert load_benchmark("circuit_load").main([str(run), "--n", "2", "--settings", "16:4,32:8", "--out", str(out)]) == 0
    page = out.read_text()
    assert "--settings 16:4,32:8" in page and out.with_suffix(".png").exists()
    assert page.count("| run | N |") == 1 and page.count("| 32 | 16 | 4 |") == 1 and page.count("| 32 | 32 | 8 |") == 1
    with pytest.raises(SystemExit):
        load_benchmark("circuit_load").main([str(run), "--settings", "16"])


def test_key_min_load_is_the_least_crowded_node_of_the_key_circuit():
    key_min_load = load_benchmark("circuit_load").key_min_load
    tokens = torch.tensor([5, 6, 7, 8])
    k = torch.tensor([2, 2, 1, 2])
    # 5 -> {0, 1}, 6 -> {1, 2}, 7 -> {1} (its slot 2 is beyond k), 8 -> {3, 0}: node 1 serves 3 tokens
    circuits = torch.tensor([[0, 1, 9], [1, 2, 9], [1, 3, 9], [3, 0, 9]])
    out = key_min_load(tokens, circuits, k, 10, torch.tensor([0, 1, 2, 3]))
    assert out.tolist() == [2.0, 1.0, 3.0, 1.0]


def test_circuit_load_by_key_load_table(tmp_path, one_thread):
    run = train_tiny_mqar(tmp_path / "run", vocab_size=64, seq_len=16, num_kv_pairs=4, test_size=4)
    out = tmp_path / "load.md"
    bench = load_benchmark("circuit_load")
    assert bench.main([str(run), "--n", "2", "--settings", "16:4", "--by-key-load", "32:8", "--out", str(out)]) == 0
    page = out.read_text()
    assert "--by-key-load 32:8" in page and "least loaded node (T = 32, 8 pairs)" in page
    row = [line for line in page.splitlines() if line.startswith("| run") and "all" in line]
    assert row and row[0].endswith("| 1 | 2-3 | 4-7 | 8-15 | >= 16 |")
    with pytest.raises(SystemExit):
        bench.main([str(run), "--by-key-load", "32"])
    # every query lands in one bin, and the bins' accuracies add up to the overall one
    cell = bench.TrainedRun(run)
    _, y, _, _ = cell.read(32, 8, 2)
    out = bench.recall_by_key_load(cell, 2, 32, 8)
    n_queries = int((y != IGNORE).sum())
    assert sum(n for _, n in out["bins"].values()) == n_queries > 0
    assert sum((acc or 0.0) * n for acc, n in out["bins"].values()) / n_queries == pytest.approx(out["accuracy"])
