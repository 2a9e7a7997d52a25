"""bench/batch_cost and bench/gpu run end to end on small inputs; their accounting adds up (never their speed)."""

from __future__ import annotations

from bench import batch_cost, gpu


def test_batch_cost_accounts_every_part_of_the_learning_thread(capsys):
    costs = batch_cost.main(["--events", "3000", "--windows", "100,1000"])
    out = capsys.readouterr().out
    assert [c.window for c in costs] == [100, 1000]
    for cost in costs:
        assert cost.events == 3000 and cost.batches == 3000 // cost.window
        assert cost.parts["learner"] > 0 and cost.parts["decode + window"] > 0
        # The parts are timed inside the run, on its thread: together they cannot exceed it.
        assert sum(cost.parts.values()) <= cost.thread_cpu * 1.01
        assert 0 < cost.fixed < cost.thread_cpu
    assert "| **fixed: all but the learner** |" in out
    assert "verdict: fixed cost of a 100-event batch" in out


def test_gpu_script_runs_on_the_cpu_and_says_it_has_no_gpu(capsys, monkeypatch):
    monkeypatch.setattr(gpu, "BATCHES", (256,))
    results = gpu.main(["--device", "cpu", "--seconds", "0.2", "--skip-engine"])
    out = capsys.readouterr().out
    assert results["device"] == "cpu"
    assert [cell["learner"] for cell in results["cells"]] == list(gpu.VARIANTS)
    assert all(cell["rows_per_s"]["cpu"] > 0 and cell["syncs_per_batch"] is None for cell in results["cells"])
    assert "n/a" in out  # no verdict on a CPU's figures
