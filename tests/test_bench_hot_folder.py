"""Smoke test of ``python -m bench.hot_folder`` at a tiny size, so it does not rot. No
timing is asserted: only that its figures come out and no process is left behind."""

from __future__ import annotations

import psutil
import pytest

from bench.hot_folder import run


@pytest.mark.slow
def test_the_hot_folder_bench_runs_at_a_tiny_size():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = run(files=300, window=0.5, drops=2, settle=0.2)
    assert result["files"] == 300 and result["drops"] == 2
    assert result["write_to_running_p50_ms"] > 0
    assert result["scheduler_cpu_percent"] >= 0
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, left
