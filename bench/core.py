"""Core figures: idle enqueue→SUCCEEDED latency of a no-op work, and 1,000 no-op works end to
end, each against a raw ``ProcessPoolExecutor(2)`` in the same run (the no-durability ceiling).

    python bench/core.py [--works 1000] [--tries 50] [--out bench/results-core.json]

Absolute times are informational (machines here are noisy); the ratios are the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from nbwork import OneTimeWorkRequest, WorkManager, WorkQuery


def noop() -> None:
    return None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def nbwork_latency(wm: WorkManager, tries: int) -> list[float]:
    times = []
    for _ in range(tries):
        request = OneTimeWorkRequest(noop)
        start = time.perf_counter()
        wm.enqueue(request)
        wm.wait(request.id, timeout=60)
        times.append(time.perf_counter() - start)
    return times


def pool_latency(pool: ProcessPoolExecutor, tries: int) -> list[float]:
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        pool.submit(noop).result()
        times.append(time.perf_counter() - start)
    return times


def nbwork_batch(wm: WorkManager, works: int) -> float:
    requests = [OneTimeWorkRequest(noop, tags=["bench"]) for _ in range(works)]
    start = time.perf_counter()
    wm.enqueue(requests)
    wm.wait(WorkQuery(ids=[r.id for r in requests]), timeout=600)
    return time.perf_counter() - start


def pool_batch(pool: ProcessPoolExecutor, works: int) -> float:
    start = time.perf_counter()
    for future in [pool.submit(noop) for _ in range(works)]:
        future.result()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--works", type=int, default=1000)
    parser.add_argument("--tries", type=int, default=50)
    parser.add_argument("--out", default="bench/results-core.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(2) as pool:
        wm = WorkManager(f"{tmp}/store")
        wm.daemon.start()
        pool.submit(noop).result()
        nbwork_latency(wm, 3)  # warm both sides up
        lat_nb, lat_pool = [], []
        for _ in range(2):  # alternate, so drift on a noisy machine hits both
            lat_nb += nbwork_latency(wm, args.tries // 2)
            lat_pool += pool_latency(pool, args.tries // 2)
        batch_nb = nbwork_batch(wm, args.works)
        batch_pool = pool_batch(pool, args.works)
        wm.daemon.stop()
    result = {
        "latency_p50_ms": {"nbwork": 1000 * statistics.median(lat_nb),
                           "process_pool": 1000 * statistics.median(lat_pool)},
        "latency_p99_ms": {"nbwork": 1000 * percentile(lat_nb, 0.99),
                           "process_pool": 1000 * percentile(lat_pool, 0.99)},
        f"{args.works}_noop_seconds": {"nbwork": batch_nb, "process_pool": batch_pool},
        "throughput_per_s": {"nbwork": args.works / batch_nb,
                             "process_pool": args.works / batch_pool},
        "ratios": {"throughput_nbwork_over_pool": batch_pool / batch_nb},
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
