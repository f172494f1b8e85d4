"""Smoke test of the benchmark suite (``python -m bench``): every benchmark's code path at
tiny sizes (20 works, 2 small images, stores of 30 and 120 works, short CPU windows), so
the suite does not rot while nbwork changes. No timing is asserted: only that a results
dict with the expected keys comes out, the table renders, and no process is left.
"""

from __future__ import annotations

import psutil
import pytest

from tests.conftest import stop_scheduler

pytest.importorskip("huey")
pytest.importorskip("jupyter_client")

from bench import report  # noqa: E402
from bench.suite import BENCHMARKS, SIZES, run_suite  # noqa: E402

EXPECTED = {
    "throughput": {"works", "seconds", "per_s", "ratios"},
    "latency": {"tries", "p50_ms", "p99_ms", "ratios"},
    "chain": {"length", "per_hop_ms", "ratios"},
    "blur": {"images", "seconds", "wall_s", "ratios"},
    "scale": {"sizes", "fill", "p50_ms", "ratios"},
    "idle": {"cpu_percent", "kernel", "pending"},
    "memory": {"works", "peak_rss_mib", "ratios"},
    "durability": {"per_s_worst", "enqueue_per_s_worst", "diskcache_per_s_worst", "ratios"},
    "query": {"per_id_ms", "per_info_refresh_ms", "per_info_first_ms", "ratios"},
}


def _descendants() -> set[tuple[int, float]]:
    found = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                found.add((p.pid, p.create_time()))
        except psutil.Error:
            pass
    return found


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_suite_runs_at_tiny_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("NBWORK_HOME", str(tmp_path / "default-store-must-not-be-used"))
    before = _descendants()
    paths: list[str] = []
    # Each nbwork store's scheduler is stopped through conftest's stop_scheduler (by pid),
    # then by the suite itself; Huey's consumer and the kernel by their pids.
    results = run_suite(SIZES["tiny"], BENCHMARKS, "tiny", workdir=str(tmp_path),
                        on_stop=stop_scheduler, log=lambda line: None, store_paths=paths)

    assert set(BENCHMARKS) <= set(results)
    for name, keys in EXPECTED.items():
        assert keys <= set(results[name]), (name, sorted(results[name]))
    assert set(results["throughput"]["per_s"]) == {"nbwork", "huey", "process_pool"}
    assert set(results["blur"]["wall_s"]) == {"nbwork", "process_pool", "sequential"}
    assert set(results["scale"]["ratios"]) == set(report.SCALE_FIGURES)
    assert results["idle"]["kernel"]["view"] in ("WorkTable", "observe")
    assert results["idle"]["still_pending"] == SIZES["tiny"].idle_pending
    ids = {t["id"] for t in results["targets"]}
    assert {"throughput_vs_huey", "latency_p50_ms", "blur_vs_pool", "scale_enqueue",
            "scheduler_idle_cpu", "table_kernel_cpu", "memory_big_global"} <= ids
    assert all(t["pass"] in (True, False) for t in results["targets"])
    assert len(paths) == 12  # 7, the memory benchmark's two, durability's two, query's

    # The Markdown section goes between its markers and leaves other sections alone.
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nIntro.\n\n## Dask: no-op works\n\nTheirs.\n")
    report.update_markdown(str(md), results)
    report.update_markdown(str(md), results)
    text = md.read_text()
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    assert "## Dask: no-op works\n\nTheirs." in text and "Intro." in text
    assert "| 1. throughput" in text

    leftover = _descendants() - before
    assert not leftover, f"processes left running: {leftover}"
