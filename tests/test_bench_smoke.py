"""Smoke test of the benchmark suite (``python -m bench``): every benchmark's code path at
tiny sizes (20 works, 2 small images, stores of 30 and 120 works, a 40-work memory curve,
short CPU windows), so the suite does not rot while nbwork changes. No timing is asserted:
only that a results dict with the expected keys comes out, the table renders, and no
process is left (the busy neighbour of ``--busy`` included).
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
    "rss": {"finished", "curve", "growth_mib", "ratios"},
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
@pytest.mark.timeout(300)  # it starts a Dask cluster too
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
    assert set(results["latency"]["p50_ms"]) == {"nbwork", "huey", "process_pool"}
    assert {"p50_nbwork_over_pool", "p99_nbwork_over_pool"} <= set(results["latency"]["ratios"])
    assert {"worst_round_nbwork_over_huey", "worst_round_nbwork_over_pool"} <= set(
        results["throughput"]["ratios"])
    assert set(results["blur"]["wall_s"]) == {"nbwork", "process_pool", "sequential"}
    assert set(results["scale"]["ratios"]) == set(report.SCALE_FIGURES)
    assert results["idle"]["kernel"]["view"] in ("WorkTable", "observe")
    assert results["idle"]["still_pending"] == SIZES["tiny"].idle_pending
    tiny = SIZES["tiny"]
    rss = results["rss"]
    assert [p["works"] for p in rss["curve"]] == list(
        range(0, tiny.rss_curve_works + 1, tiny.rss_curve_step))
    assert all(0 < p["rss"] <= p["peak"] for p in rss["curve"])
    assert rss["finished"]["large"]["finished_works"] == tiny.scale_large
    assert results["meta"]["busy_neighbour"] is None
    assert not any(results[name]["busy_neighbour"] for name in BENCHMARKS)
    ids = {t["id"] for t in results["targets"]}
    assert {"throughput_vs_huey", "latency_p50_ms", "latency_p99_vs_huey", "blur_vs_pool",
            "scale_enqueue", "rss_large_store", "rss_no_growth", "scheduler_idle_cpu",
            "table_kernel_cpu", "memory_big_global"} <= ids
    assert all(t["pass"] in (True, False) for t in results["targets"])
    # 7, the memory benchmark's two, durability's two, query's, rss's three, dask's one
    assert len(paths) == 16

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


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_busy_neighbour_spins_for_the_whole_run_and_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setenv("NBWORK_HOME", str(tmp_path / "default-store-must-not-be-used"))
    before = _descendants()
    results = run_suite(SIZES["tiny"], ("latency", "rss"), "tiny", workdir=str(tmp_path),
                        on_stop=stop_scheduler, log=lambda line: None, busy=True)

    busy = results["meta"]["busy_neighbour"]
    assert busy["alive_until_stopped"] is True
    assert busy["cpu_s"] > 0  # it spun (how much depends on the machine's load)
    assert results["latency"]["busy_neighbour"] is True
    assert results["rss"]["busy_neighbour"] is True
    leftover = _descendants() - before
    assert not leftover, f"processes left running: {leftover}"


def test_busy_section_goes_after_the_plain_one_and_is_replaced_in_place(tmp_path):
    plain = {"meta": {"busy_neighbour": None, "mode": "tiny"}, "targets": []}
    busy = {"meta": {"busy_neighbour": {"pinned_cpu": 1, "wall_s": 3.0, "cpu_s": 2.9,
                                        "core_share": 0.97, "alive_until_stopped": True},
                     "mode": "tiny"}, "targets": []}
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nIntro.\n\n## Dask: no-op works\n\nTheirs.\n")
    report.update_markdown(str(md), plain)
    report.update_markdown(str(md), busy)
    report.update_markdown(str(md), busy)
    report.update_markdown(str(md), plain)
    text = md.read_text()
    assert text.count(report.BUSY_BEGIN) == 1 and text.count(report.BUSY_END) == 1
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    assert (text.index("Intro.") < text.index(report.END) < text.index(report.BUSY_BEGIN)
            < text.index(report.BUSY_END) < text.index("## Dask: no-op works\n\nTheirs."))
    assert "0.97 of a core" in text and "## The suite beside a busy neighbour" in text
