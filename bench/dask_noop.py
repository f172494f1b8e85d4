"""Dask figures: no-op works through nbwork on a Dask cluster against raw ``client.submit`` of
the same function on the same cluster, in the same run.

    python bench/dask_noop.py [--works 2000] [--tries 20] [--threads 2]
                              [--address dask://HOST:PORT] [--out bench/results-dask.json]

Without ``--address`` it starts a ``dask scheduler`` and one ``dask worker`` (``--threads``
threads) on loopback and stops them at the end. Measured: enqueue→SUCCEEDED latency of one
idle no-op work against ``client.submit(noop).result()``, and ``--works`` no-op works end to
end (enqueued in one call, waited for) against as many ``client.submit`` calls gathered.
nbwork adds to Dask what it is for: each work's state committed to the store at every
transition, and each attempt run in a fresh process that can be killed. Absolute times
are informational (machines here are noisy); the ratios are the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from distributed import Client

from nbwork import OneTimeWorkRequest, WorkManager, WorkQuery


def noop(i: int = 0) -> None:
    return None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def start_cluster(folder: str, threads: int) -> tuple[str, list[subprocess.Popen]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = []
    for module, args in (("dask_scheduler", ["--host", "127.0.0.1", "--port", str(port)]),
                         ("dask_worker", [f"tcp://127.0.0.1:{port}", "--host", "127.0.0.1",
                                          "--nthreads", str(threads), "--nworkers", "1"])):
        with open(os.path.join(folder, f"{module}.log"), "wb") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", f"distributed.cli.{module}", *args, "--no-dashboard"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return f"dask://127.0.0.1:{port}", processes


def stop_cluster(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass


def nbwork_latency(wm: WorkManager, tries: int) -> list[float]:
    times = []
    for _ in range(tries):
        request = OneTimeWorkRequest(noop)
        start = time.perf_counter()
        wm.enqueue(request)
        wm.wait(request.id, timeout=60)
        times.append(time.perf_counter() - start)
    return times


def raw_latency(client: Client, tries: int) -> list[float]:
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        client.submit(noop, pure=False).result()
        times.append(time.perf_counter() - start)
    return times


def nbwork_batch(wm: WorkManager, works: int) -> float:
    requests = [OneTimeWorkRequest(noop, input_data={"i": i}) for i in range(works)]
    start = time.perf_counter()
    wm.enqueue(requests)
    infos = wm.wait(WorkQuery(ids=[r.id for r in requests]), timeout=1800)
    elapsed = time.perf_counter() - start
    assert all(i.state.value == "SUCCEEDED" for i in infos)
    return elapsed


def raw_batch(client: Client, works: int) -> float:
    start = time.perf_counter()
    client.gather([client.submit(noop, i, pure=False) for i in range(works)])
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--works", type=int, default=2000)
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--address", help="an existing cluster (dask://HOST:PORT)")
    parser.add_argument("--out", default="bench/results-dask.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        processes: list[subprocess.Popen] = []
        address = args.address
        if address is None:
            address, processes = start_cluster(tmp, args.threads)
        try:
            client = Client(address.replace("dask://", "tcp://"), timeout=60,
                            set_as_default=False)
            client.wait_for_workers(1, timeout=60)
            threads = sum(client.nthreads().values())
            wm = WorkManager(f"{tmp}/store", executor=address)
            wm.daemon.start()
            raw_latency(client, 3)
            nbwork_latency(wm, 3)  # warm both sides up (connection, fork server)
            lat_nb, lat_raw = [], []
            for _ in range(2):  # alternate, so drift on a noisy machine hits both
                lat_nb += nbwork_latency(wm, args.tries // 2)
                lat_raw += raw_latency(client, args.tries // 2)
            batch_raw = raw_batch(client, args.works)
            batch_nb = nbwork_batch(wm, args.works)
            wm.daemon.stop()
            client.close()
        finally:
            stop_cluster(processes)
    result = {
        "cluster": {"address": "loopback" if args.address is None else address,
                    "worker_threads": threads, "cpus": os.cpu_count()},
        "latency_p50_ms": {"nbwork_dask": 1000 * statistics.median(lat_nb),
                           "raw_submit": 1000 * statistics.median(lat_raw)},
        "latency_p99_ms": {"nbwork_dask": 1000 * percentile(lat_nb, 0.99),
                           "raw_submit": 1000 * percentile(lat_raw, 0.99)},
        f"{args.works}_noop_seconds": {"nbwork_dask": batch_nb, "raw_submit": batch_raw},
        "throughput_per_s": {"nbwork_dask": args.works / batch_nb,
                             "raw_submit": args.works / batch_raw},
        "ratios": {"throughput_nbwork_over_raw": batch_raw / batch_nb,
                   "latency_p50_nbwork_over_raw":
                       statistics.median(lat_nb) / statistics.median(lat_raw)},
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    json.dump(result, sys.stdout, indent=2)
    print()
    ratios = result["ratios"]
    print(f"throughput: nbwork on Dask runs {ratios['throughput_nbwork_over_raw']:.3f}x the "
          f"works per second of raw client.submit; idle latency is "
          f"{ratios['latency_p50_nbwork_over_raw']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
