"""benchmarks/dead_keys.py: MQAR keys never recalled, and the write gates at them."""
from __future__ import annotations

import math

from training_helpers import load_benchmark, train_tiny_mqar


def test_dead_keys_are_those_asked_twice_and_always_wrong():
    dead, live, asked = load_benchmark("dead_keys").dead_and_live(
        [5, 5, 6, 6, 7, 8, 8], [False, False, True, True, False, True, False])
    assert (dead, live, asked) == ({5}, {6}, 3)          # 7 was asked once; 8 is neither


def test_dead_keys_table_for_a_trained_mqar_run(tmp_path, one_thread):
    run = train_tiny_mqar(tmp_path / "run", vocab_size=32, seq_len=16, num_kv_pairs=4, test_size=16)
    dk = load_benchmark("dead_keys")
    s = dk.dead_key_stats(run, 16)
    assert s["N"] == 32 and s["step"] == 2 and 0 <= s["dead"] <= s["asked"] > 0
    assert 0.0 <= s["accuracy"] <= 1.0
    assert all(math.isnan(v) or -1.0 <= v <= 1.0 for v in (*s["g_in"], *s["g_as"]))
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in s["active"])
    out = tmp_path / "dead.md"
    assert dk.main([str(run / "checkpoints" / "last"), "--n", "8", "--out", str(out)]) == 0
    assert "| run (last) | 32 | 2 |" in out.read_text()


def test_written_entries_of_a_trained_run_at_another_setting(tmp_path, one_thread, capsys):
    """benchmarks/written_entries.py: more pairs, more entries, counted on the same run."""
    run = train_tiny_mqar(tmp_path / "run", vocab_size=32, seq_len=16, num_kv_pairs=4, test_size=16)
    we = load_benchmark("written_entries")
    short, long = we.entries_at(str(run), 16, 4, 8), we.entries_at(str(run), 24, 6, 8)
    assert 0 < short["mean"] <= short["max"] <= 32 * 32 and long["mean"] > short["mean"]
    assert we.main(["24:6", str(run), "--n", "8"]) == 0
    assert f"T=24 P=6: {long['mean']:,.0f} entries written" in capsys.readouterr().out
