"""The benchmark suite of issue 7: nbwork against its peers, in the same run, alternating.

    python -m bench                # the full suite, about 5 minutes on 2 cores
    python -m bench --quick        # smaller sizes, about 2 minutes
    python -m bench --only throughput,latency
    python -m bench --busy         # the same beside a process spinning on one core

Writes ``bench/results.json`` (``bench/results-quick.json`` with ``--quick``) and, for a
full run, the table of the last run in ``BENCHMARKS.md``. Machines here are noisy: read the
ratios; absolute times are informational. The benchmarks:

1. ``throughput``: N no-op one-time works enqueued at once, until all SUCCEEDED; against
   Huey (``SqliteHuey``, ``huey_consumer -w 2 -k process``) and a raw
   ``ProcessPoolExecutor(2)`` (no durability: the ceiling).
2. ``latency``: enqueue → SUCCEEDED of one no-op work on an idle system, p50 and p99;
   against Huey with its default consumer (enqueue → result available) and the raw pool's
   ``submit(noop).result()``. The tries alternate one by one, with a random pause of
   5-50 ms before each.
3. ``chain``: a chain of 20 no-op works, time per hop; against a Huey pipeline
   (``noop.s().then(noop)...``) and 20 sequential round trips through the raw pool.
4. ``blur``: 64 images of 1024×1024, blur level 3 (``BlurWorker`` × 3 then
   ``SaveImageToFileWorker`` per image, one chain per image, all enqueued in one call as
   ``blur_batch`` does, without its contact sheet); against the same worker code run by
   ``nbwork.testing.run_worker`` per image in a raw ``ProcessPoolExecutor(2)``, and one
   image after the other in this process.
5. ``scale``: a store holding 100,000 finished works against one holding 1,000: latency of
   an enqueue (and of that work's enqueue → SUCCEEDED), and of queries by id, by tag (100
   works per tag) and by unique name (10 works per name). The stores are filled through
   ``nbwork._ops.enqueue_in`` in batches, each work marked SUCCEEDED in the same
   transaction (as the scheduler's last write of a work would), so no worker runs; filled
   once per run and copied (``bench/scale.py``).
10. ``rss``: the scheduler's resident memory on a copy of that 100,000-work store (and of
   the 1,000-work one), and its curve over a 20,000-work run (``bench/scale.py``).
7. ``memory``: the scheduler's peak resident memory (``VmHWM``) while 300 one-time works
   run whose function refers to a 20 MiB global, against the same with a 1 KiB global
   (issue 17: each queued attempt used to carry its own copy of the worker's code).
6. ``idle``: CPU of the scheduler's processes (supervisor, scheduler, warm workers) with
   1,000 delayed works pending, next to Huey's default consumer with 1,000 scheduled tasks;
   and the CPU of a real Jupyter kernel showing a live ``nbwork.widgets.WorkTable`` of those
   1,000 works (``wm.observe`` if the widgets are missing), next to the same kernel idle.
11. ``dask``: no-op works and the blur batch through nbwork's Dask executor against raw
   ``client.submit`` / ``client.map`` on the same 2-worker loopback cluster
   (``bench/dask_bench.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbwork import OneTimeWorkRequest, WorkContinuation, WorkQuery, WorkState

from . import report
from .dask_bench import bench_dask
from .harness import (
    REPO,
    BusyNeighbour,
    HueyConsumer,
    Kernel,
    Run,
    close_all,
    median,
    ms,
    percentile,
    poll,
    rotated,
)
from .harness import CpuMeter as _CpuMeter
from .scale import bench_rss, bench_scale, fill_finished
from .tasks import blur_pipeline, global_carrier, noop

BENCHMARKS = ("throughput", "latency", "chain", "blur", "scale", "rss", "idle", "memory",
              "durability", "query", "dask")


@dataclass(frozen=True)
class Sizes:
    throughput_works: int = 2000
    throughput_rounds: int = 5
    latency_tries: int = 100
    chain_length: int = 20
    chain_tries: int = 10
    blur_images: int = 64
    blur_pixels: int = 1024
    blur_level: int = 3
    blur_rounds: int = 2
    blur_sequential_rounds: int = 1
    scale_small: int = 1000
    scale_large: int = 100_000
    scale_tries: int = 100
    rss_warm_works: int = 200
    rss_curve_works: int = 20_000
    rss_curve_step: int = 1000
    idle_pending: int = 1000
    idle_window: float = 8.0
    idle_rounds: int = 2
    table_window: float = 5.0
    memory_works: int = 300
    memory_global_mib: int = 20
    durability_works: int = 2000
    durability_enqueue: int = 10_000
    durability_rounds: int = 3
    query_works: int = 2000
    query_rounds: int = 3
    dask_works: int = 2000
    dask_rounds: int = 3
    dask_blur_images: int = 16
    dask_blur_pixels: int = 512


SIZES = {
    "full": Sizes(),
    "quick": Sizes(throughput_works=1000, throughput_rounds=1, latency_tries=40,
                   chain_tries=4, blur_images=16, blur_rounds=1,
                   scale_tries=40, rss_curve_works=5000, rss_curve_step=500,
                   idle_window=3.0, idle_rounds=1, table_window=3.0,
                   durability_works=1000, durability_enqueue=5000, durability_rounds=1,
                   query_rounds=1, dask_works=1000, dask_blur_images=8),
    # For the smoke test: every code path, no meaningful figure.
    "tiny": Sizes(throughput_works=20, throughput_rounds=1, latency_tries=3, chain_length=4,
                  chain_tries=1, blur_images=2, blur_pixels=96, blur_level=2, blur_rounds=1,
                  scale_small=30, scale_large=120, scale_tries=3, rss_warm_works=5,
                  rss_curve_works=40, rss_curve_step=10, idle_pending=20,
                  idle_window=0.3, idle_rounds=1, table_window=0.3, memory_works=20,
                  memory_global_mib=2, durability_works=20, durability_enqueue=50,
                  durability_rounds=1, query_works=30, query_rounds=1, dask_works=10,
                  dask_rounds=1, dask_blur_images=2, dask_blur_pixels=96),
}


# --- 1. throughput ----------------------------------------------------------------------


def nbwork_batch(wm, works: int, timeout: float = 600.0) -> float:
    start = time.perf_counter()
    requests = [OneTimeWorkRequest(noop) for _ in range(works)]
    wm.enqueue(requests)
    infos = wm.wait([r.id for r in requests], timeout=timeout)
    elapsed = time.perf_counter() - start
    bad = [i for i in infos if i.state is not WorkState.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} no-op works did not succeed: {bad[0]}")
    return elapsed


def huey_batch(consumer: HueyConsumer, works: int, timeout: float = 600.0) -> float:
    storage = consumer.huey.storage
    storage.flush_results()
    start = time.perf_counter()
    for _ in range(works):
        consumer.noop()
    # A read-only count of stored results (reading each result would delete it: a write
    # that competes with the consumer's own).
    poll(lambda: storage.result_store_size() >= works, timeout, "huey results", 0.002)
    elapsed = time.perf_counter() - start
    storage.flush_results()
    return elapsed


def pool_batch(pool: ProcessPoolExecutor, works: int) -> float:
    start = time.perf_counter()
    for future in [pool.submit(noop) for _ in range(works)]:
        future.result()
    return time.perf_counter() - start


def bench_throughput(run: Run) -> dict[str, Any]:
    n, rounds = run.sizes.throughput_works, run.sizes.throughput_rounds
    store = run.nbwork("throughput")
    consumer = run.huey("throughput", ["-w", "2", "-k", "process"])
    pool = run.pool()
    consumer.warm_up(8)
    nbwork_batch(store.wm, 20)
    store.wm.prune_work()
    seconds: dict[str, list[float]] = {"nbwork": [], "huey": [], "process_pool": []}
    contenders = [
        ("nbwork", lambda: nbwork_batch(store.wm, n)),
        ("huey", lambda: huey_batch(consumer, n)),
        ("process_pool", lambda: pool_batch(pool, n)),
    ]
    for r in range(rounds):
        for name, go in rotated(contenders, r):
            seconds[name].append(go())
            run.log(f"  throughput round {r + 1}: {name} {n / seconds[name][-1]:.0f} /s")
            if name == "nbwork":
                store.wm.prune_work()
    close_all(run, store, consumer, pool)
    per_s = {k: n / median(v) for k, v in seconds.items()}
    # Issue 15 reads the worst round: each round's ratio (its contenders ran one right
    # after the other), the lowest of them.
    worst = {peer: min(p / w for w, p in zip(seconds["nbwork"], seconds[peer], strict=True))
             for peer in ("huey", "process_pool")}
    return {
        "works": n, "rounds": rounds, "seconds": seconds,
        "per_s": {k: round(v, 1) for k, v in per_s.items()},
        "ratios": {"nbwork_over_huey": per_s["nbwork"] / per_s["huey"],
                   "nbwork_over_pool": per_s["nbwork"] / per_s["process_pool"],
                   "worst_round_nbwork_over_huey": worst["huey"],
                   "worst_round_nbwork_over_pool": worst["process_pool"]},
    }


# --- 2. idle latency --------------------------------------------------------------------


def nbwork_once(wm) -> float:
    start = time.perf_counter()
    request = OneTimeWorkRequest(noop)
    wm.enqueue(request)
    info = wm.wait(request.id, timeout=60)
    elapsed = time.perf_counter() - start
    if info.state is not WorkState.SUCCEEDED:
        raise RuntimeError(f"no-op work ended {info.state.value}")
    return elapsed


def huey_once(consumer: HueyConsumer) -> float:
    start = time.perf_counter()
    result = consumer.noop()
    consumer.wait_result(result)
    return time.perf_counter() - start


def pool_once(pool: ProcessPoolExecutor) -> float:
    start = time.perf_counter()
    pool.submit(noop).result()
    return time.perf_counter() - start


def bench_latency(run: Run) -> dict[str, Any]:
    tries = run.sizes.latency_tries
    store = run.nbwork("latency")
    consumer = run.huey("latency", [])  # Huey's default consumer settings
    pool = run.pool()
    consumer.warm_up(3)
    for _ in range(3):
        nbwork_once(store.wm)
    times: dict[str, list[float]] = {"nbwork": [], "huey": [], "process_pool": []}
    contenders = [("nbwork", lambda: nbwork_once(store.wm)),
                  ("huey", lambda: huey_once(consumer)),
                  ("process_pool", lambda: pool_once(pool))]
    rng = random.Random(7)
    for i in range(tries):
        for name, go in rotated(contenders, i):
            time.sleep(rng.uniform(0.005, 0.05))
            times[name].append(go())
    close_all(run, store, consumer, pool)
    p50 = {k: median(v) for k, v in times.items()}
    p99 = {k: percentile(v, 0.99) for k, v in times.items()}
    return {
        "tries": tries,
        "p50_ms": {k: ms(v) for k, v in p50.items()},
        "p99_ms": {k: ms(v) for k, v in p99.items()},
        "ratios": {"p50_nbwork_over_huey": p50["nbwork"] / p50["huey"],
                   "p99_nbwork_over_huey": p99["nbwork"] / p99["huey"],
                   "p50_nbwork_over_pool": p50["nbwork"] / p50["process_pool"],
                   "p99_nbwork_over_pool": p99["nbwork"] / p99["process_pool"]},
        "samples_ms": {k: [ms(x) for x in v] for k, v in times.items()},
    }


# --- 3. chain hop -----------------------------------------------------------------------


def nbwork_chain(wm, length: int) -> float:
    start = time.perf_counter()
    requests = [OneTimeWorkRequest(noop) for _ in range(length)]
    chain = wm.begin_with(requests[0])
    for request in requests[1:]:
        chain = chain.then(request)
    chain.enqueue()
    info = wm.wait(requests[-1].id, timeout=120)
    elapsed = time.perf_counter() - start
    if info.state is not WorkState.SUCCEEDED:
        raise RuntimeError(f"the chain's last work ended {info.state.value}")
    return elapsed / length


def huey_chain(consumer: HueyConsumer, length: int) -> float:
    start = time.perf_counter()
    pipeline = consumer.noop.s()
    for _ in range(length - 1):
        pipeline = pipeline.then(consumer.noop)
    results = consumer.huey.enqueue(pipeline)
    last = list(results)[-1] if length > 1 else results
    consumer.wait_result(last, 120)
    return (time.perf_counter() - start) / length


def pool_chain(pool: ProcessPoolExecutor, length: int) -> float:
    start = time.perf_counter()
    for _ in range(length):
        pool.submit(noop).result()
    return (time.perf_counter() - start) / length


def bench_chain(run: Run) -> dict[str, Any]:
    length, tries = run.sizes.chain_length, run.sizes.chain_tries
    store = run.nbwork("chain")
    consumer = run.huey("chain", ["-w", "2", "-k", "process"])
    pool = run.pool()
    consumer.warm_up(4)
    nbwork_chain(store.wm, 3)
    per_hop: dict[str, list[float]] = {"nbwork": [], "huey": [], "process_pool": []}
    contenders = [("nbwork", lambda: nbwork_chain(store.wm, length)),
                  ("huey", lambda: huey_chain(consumer, length)),
                  ("process_pool", lambda: pool_chain(pool, length))]
    for i in range(tries):
        for name, go in rotated(contenders, i):
            time.sleep(0.02)
            per_hop[name].append(go())
    close_all(run, store, consumer, pool)
    hop = {k: median(v) for k, v in per_hop.items()}
    return {
        "length": length, "tries": tries,
        "per_hop_ms": {k: ms(v) for k, v in hop.items()},
        "ratios": {"nbwork_over_huey": hop["nbwork"] / hop["huey"],
                   "nbwork_over_pool": hop["nbwork"] / hop["process_pool"]},
        "samples_ms": {k: [ms(x) for x in v] for k, v in per_hop.items()},
    }


# --- 4. blur batch ----------------------------------------------------------------------


def make_image(path: str, pixels: int, seed: int) -> str:
    """A photo-like RGB PNG: smooth colour fields, a disc and some sensor noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:pixels, 0:pixels].astype(np.float32) / pixels
    f = rng.uniform(2, 9, size=6)
    p = rng.uniform(0, 6.3, size=6)
    planes = [
        np.sin(f[0] * x + p[0]) * np.cos(f[1] * y + p[1]),
        np.sin(f[2] * (x + y) + p[2]) * np.cos(f[3] * x + p[3]),
        np.cos(f[4] * (x - y) + p[4]) * np.sin(f[5] * y + p[5]),
    ]
    rgb = np.stack([(plane + 1) * 110 for plane in planes], axis=-1)
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
    rgb[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, size=3)
    rgb += rng.normal(0, 6, size=rgb.shape)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(path)
    return path


def make_images(folder: str, count: int, pixels: int, seed: int = 1,
                pool: ProcessPoolExecutor | None = None) -> list[str]:
    """``count`` images ``image-NNN.png`` in ``folder`` (made in ``pool`` when given)."""
    jobs = [(os.path.join(folder, f"image-{i:03d}.png"), pixels, seed * 100_000 + i)
            for i in range(count)]
    if pool is None:
        return [make_image(*job) for job in jobs]
    return [f.result() for f in [pool.submit(make_image, *job) for job in jobs]]


def _blur_args(level: int) -> dict[str, Any]:
    from nbwork.imaging import DEFAULT_RADIUS, DEFAULT_STRIPS

    return {"level": level, "radius": DEFAULT_RADIUS, "strips": DEFAULT_STRIPS}


def nbwork_blur(wm, images: list[str], work_dir: str, level: int) -> float:
    from nbwork.imaging import KEY_IMAGE_URI, BlurWorker, SaveImageToFileWorker

    args = _blur_args(level)
    blur_dir, out_dir = os.path.join(work_dir, "blur"), os.path.join(work_dir, "out")
    start = time.perf_counter()
    chains, ids = [], []
    for image in images:
        steps = [OneTimeWorkRequest(BlurWorker, input_data={
            "source": image, "output_dir": blur_dir, "radius": args["radius"],
            "strips": args["strips"], **({KEY_IMAGE_URI: image} if i == 0 else {})})
            for i in range(level)]
        name = f"blurred-{Path(image).stem}.png"
        steps.append(OneTimeWorkRequest(SaveImageToFileWorker, input_data={
            "source": image, "out_dir": out_dir, "file_name": name}))
        chain = wm.begin_with(steps[0])
        for step in steps[1:]:
            chain = chain.then(step)
        chains.append(chain)
        ids += [s.id for s in steps]
    WorkContinuation.combine(chains).enqueue()
    infos = wm.wait(ids, timeout=1800)
    elapsed = time.perf_counter() - start
    bad = [i for i in infos if i.state is not WorkState.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} blur works did not succeed: {bad[0].error}")
    return elapsed


def pool_blur(pool: ProcessPoolExecutor, images: list[str], work_dir: str, level: int) -> float:
    args = _blur_args(level)
    blur_dir, out_dir = os.path.join(work_dir, "blur"), os.path.join(work_dir, "out")
    start = time.perf_counter()
    futures = [pool.submit(blur_pipeline, image, blur_dir, out_dir, **args) for image in images]
    for future in futures:
        future.result()
    return time.perf_counter() - start


def sequential_blur(images: list[str], work_dir: str, level: int) -> float:
    args = _blur_args(level)
    blur_dir, out_dir = os.path.join(work_dir, "blur"), os.path.join(work_dir, "out")
    start = time.perf_counter()
    for image in images:
        blur_pipeline(image, blur_dir, out_dir, **args)
    return time.perf_counter() - start


def bench_blur(run: Run) -> dict[str, Any]:
    s = run.sizes
    pool = run.pool()
    images = make_images(run.folder("images"), s.blur_images, s.blur_pixels, pool=pool)
    warm = make_images(run.folder("images-warm"), 2, 64, seed=2)
    store = run.nbwork("blur")
    scratch = run.folder("blur-scratch")

    def fresh(name: str) -> str:
        path = os.path.join(scratch, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    # Warm up both sides: Pillow and the worker code loaded in every process.
    nbwork_blur(store.wm, warm, fresh("warm"), 1)
    pool_blur(pool, warm + warm, fresh("warm"), 1)
    store.wm.prune_work()
    seconds: dict[str, list[float]] = {"nbwork": [], "process_pool": [], "sequential": []}
    for r in range(s.blur_rounds):
        contenders = [("nbwork", lambda d: nbwork_blur(store.wm, images, d, s.blur_level)),
                      ("process_pool", lambda d: pool_blur(pool, images, d, s.blur_level))]
        if r < s.blur_sequential_rounds:
            contenders.append(("sequential", lambda d: sequential_blur(images, d, s.blur_level)))
        for name, go in rotated(contenders, r):
            seconds[name].append(go(fresh(name)))
            run.log(f"  blur round {r + 1}: {name} {seconds[name][-1]:.1f} s")
            shutil.rmtree(os.path.join(scratch, name), ignore_errors=True)
            if name == "nbwork":
                store.wm.prune_work()
    close_all(run, store, pool)
    wall = {k: median(v) for k, v in seconds.items()}
    return {
        "images": s.blur_images, "pixels": s.blur_pixels, "level": s.blur_level,
        "seconds": seconds, "wall_s": {k: round(v, 3) for k, v in wall.items()},
        "ratios": {"nbwork_over_pool": wall["nbwork"] / wall["process_pool"],
                   "sequential_over_nbwork": wall["sequential"] / wall["nbwork"]},
    }


# --- 6. idle cost -----------------------------------------------------------------------

KERNEL_SETUP = """
import time
from nbwork import WorkManager, WorkQuery
wm = WorkManager({store!r})
try:
    from nbwork.widgets import WorkTable
    _view_kind = "WorkTable"
except ImportError:
    WorkTable = None
    _view_kind = "observe"
"""

KERNEL_OPEN = """
if WorkTable is not None:
    _view = WorkTable(tags={tag!r}, wm=wm)
    display(_view)
else:
    _view = wm.observe(WorkQuery(tags=[{tag!r}]), lambda infos: None)
time.sleep({settle})  # the first redraws are over before the window opens
"""

KERNEL_CLOSE = """
_view.close() if WorkTable is not None else _view.cancel()
del _view
time.sleep({settle})
"""


def _measure(meters: dict[str, _CpuMeter], window: float) -> dict[str, dict[str, float]]:
    for meter in meters.values():
        meter.start()
    time.sleep(window)
    return {name: meter.stop() for name, meter in meters.items()}


def bench_idle(run: Run) -> dict[str, Any]:
    s = run.sizes
    store = run.nbwork("idle")
    store.wm.enqueue([OneTimeWorkRequest(noop, tags=["idle"], initial_delay=3600)
                      for _ in range(s.idle_pending)])
    consumer = run.huey("idle", [])  # default settings
    consumer.warm_up(2)
    for _ in range(s.idle_pending):
        consumer.noop.schedule(delay=3600)
    time.sleep(min(2.0, 4 * s.idle_window))  # both settle into their idle state
    meters = {
        "nbwork_processes": _CpuMeter(store.processes),
        "nbwork_scheduler": _CpuMeter(lambda: [p for p in [store.scheduler()] if p]),
        "huey_consumer": _CpuMeter(consumer.processes),
    }
    cpu: dict[str, list[dict[str, float]]] = {k: [] for k in meters}
    for r in range(s.idle_rounds):
        for side in rotated(["nbwork", "huey"], r):
            chosen = {k: m for k, m in meters.items() if k.startswith(side)}
            for name, figure in _measure(chosen, s.idle_window).items():
                cpu[name].append(figure)
    pending = len(store.wm.get_work_infos(WorkQuery(tags=["idle"], states=["ENQUEUED"])))
    close_all(run, consumer)

    # A live table in a real kernel, against the same kernel with nothing live.
    kernel_cpu: dict[str, list[float]] = {"table": [], "baseline": []}
    view_kind = "unavailable"
    try:
        kernel = Kernel(run.folder("kernel"))
    except Exception as exc:  # no jupyter_client / ipykernel here
        run.log(f"  idle: no Jupyter kernel ({exc}); live table not measured")
        kernel = None
    if kernel is not None:
        run.stack.callback(kernel.stop)
        kernel.run(KERNEL_SETUP.format(store=store.path))
        meter = _CpuMeter(kernel.processes)
        settle = min(1.0, s.table_window)
        for r in range(2):
            meter.start()
            time.sleep(s.table_window)
            kernel_cpu["baseline"].append(meter.stop()["cpu_percent"])
            kernel.run(KERNEL_OPEN.format(tag="idle", settle=settle))
            meter.start()
            time.sleep(s.table_window)
            kernel_cpu["table"].append(meter.stop()["cpu_percent"])
            kernel.run(KERNEL_CLOSE.format(settle=settle / 2))
            run.log(f"  idle kernel round {r + 1}: table {kernel_cpu['table'][-1]:.2f} % "
                    f"baseline {kernel_cpu['baseline'][-1]:.2f} %")
        view_kind = _kernel_value(kernel, "_view_kind")
        kernel.stop()
    close_all(run, store)

    def pct(name: str) -> float:
        return round(median(x["cpu_percent"] for x in cpu[name]), 3)

    return {
        "pending": s.idle_pending, "still_pending": pending, "window_s": s.idle_window,
        "rounds": s.idle_rounds,
        "cpu_percent": {"nbwork_processes": pct("nbwork_processes"),
                        "nbwork_scheduler": pct("nbwork_scheduler"),
                        "huey_consumer": pct("huey_consumer")},
        "processes": {k: v[-1]["processes"] for k, v in cpu.items()},
        "kernel": {
            "view": view_kind, "watching": s.idle_pending, "window_s": s.table_window,
            "cpu_percent": {k: round(median(v), 3) if v else None
                            for k, v in kernel_cpu.items()},
            "samples": kernel_cpu,
        },
    }


def _kernel_value(kernel: Kernel, name: str) -> str:
    values: list[str] = []

    def on_output(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            values.append(msg["content"]["text"])

    kernel.kc.execute_interactive(f"print({name})", timeout=30, output_hook=on_output)
    return "".join(values).strip()


# --- the run ----------------------------------------------------------------------------

# --- 7. memory: a worker that captured a big global ------------------------------------


def _peak_rss_mib(pid: int) -> float:
    """The peak resident memory of a live process, from ``/proc`` (Linux's ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def scheduler_peak_with_global(run: Run, name: str, size: int, works: int) -> float:
    import warnings

    from nbwork import LargeWorkerWarning

    store = run.nbwork(name)
    pid = store.wm.daemon.pid
    worker = global_carrier(size)
    with warnings.catch_warnings():  # the warning is the point of another test
        warnings.simplefilter("ignore", LargeWorkerWarning)
        requests = [OneTimeWorkRequest(worker, input_data={"n": i}) for i in range(works)]
        store.wm.enqueue(requests)
    ids = [r.id for r in requests]
    poll(lambda: all(i.state.is_finished for i in store.wm.get_work_infos(WorkQuery(ids=ids))),
         timeout=600, what=f"{works} works sharing a {size:,}-byte global", pause=0.05)
    if store.wm.daemon.pid != pid:
        raise RuntimeError("the scheduler was restarted during the memory benchmark")
    peak = _peak_rss_mib(pid)
    store.stop()
    return peak


def bench_memory(run: Run) -> dict[str, Any]:
    n, mib = run.sizes.memory_works, run.sizes.memory_global_mib
    small = scheduler_peak_with_global(run, "memory-small", 1024, n)
    big = scheduler_peak_with_global(run, "memory-big", mib << 20, n)
    run.log(f"  scheduler peak RSS: {small:.0f} MiB with 1 KiB, {big:.0f} MiB with {mib} MiB")
    return {"works": n, "global_mib": mib,
            "peak_rss_mib": {"global_1kib": round(small, 1), "global_big": round(big, 1)},
            "ratios": {"big_over_small": big / small}}


# --- 8. durability levels -----------------------------------------------------------------

DURABILITIES = ("process", "power")


def nbwork_enqueue_list(wm, count: int, tag: str) -> float:
    """``enqueue(list)`` of ``count`` requests (built beforehand), until it returned: durable
    at the store's level. Delayed an hour, so the scheduler does not run them meanwhile."""
    requests = [OneTimeWorkRequest(noop, tags=[tag], initial_delay=3600) for _ in range(count)]
    start = time.perf_counter()
    wm.enqueue(requests)
    return time.perf_counter() - start


def diskcache_sets(path: str, count: int, synchronous: int) -> float:
    """The peer of ``nbwork_enqueue_list``: one diskcache ``set`` per request (a record of
    about a request's size) in one transaction, at the same SQLite synchronous level."""
    import diskcache

    cache = diskcache.Cache(path, sqlite_synchronous=synchronous)
    try:
        records = [{"id": f"{i:032x}", "state": "ENQUEUED", "worker": "0" * 64, "input": {},
                    "tags": ["t"], "enqueue_time": time.time(), "next_run_at": 0.0,
                    "attempts": 0} for i in range(count)]
        start = time.perf_counter()
        with cache.transact():
            for record in records:
                cache.set(f"w:{record['id']}", record)
        elapsed = time.perf_counter() - start
        cache.clear()
        return elapsed
    finally:
        cache.close()


def bench_durability(run: Run) -> dict[str, Any]:
    """Throughput of no-op works and ``enqueue(list)`` under each durability level."""
    from nbwork._store import DURABILITY_LEVELS

    n, count, rounds = (run.sizes.durability_works, run.sizes.durability_enqueue,
                        run.sizes.durability_rounds)
    stores = {level: run.nbwork(f"durability-{level}", durability=level)
              for level in DURABILITIES}
    for store in stores.values():
        nbwork_batch(store.wm, 20)
        store.wm.prune_work()
    throughput: dict[str, list[float]] = {level: [] for level in DURABILITIES}
    enqueue: dict[str, list[float]] = {level: [] for level in DURABILITIES}
    peer: dict[str, list[float]] = {level: [] for level in DURABILITIES}
    for r in range(rounds):
        for level in rotated(list(DURABILITIES), r):
            wm = stores[level].wm
            throughput[level].append(nbwork_batch(wm, n))
            wm.prune_work()
            enqueue[level].append(nbwork_enqueue_list(wm, count, f"round-{r}"))
            wm.cancel_all_work_by_tag(f"round-{r}")
            wm.prune_work()
            peer[level].append(diskcache_sets(run.folder(f"diskcache-{level}"), count,
                                              DURABILITY_LEVELS[level]))
            run.log(f"  durability round {r + 1}: {level}: {n / throughput[level][-1]:.0f} "
                    f"works/s; enqueue of {count:,} {enqueue[level][-1]:.2f} s, diskcache "
                    f"sets {peer[level][-1]:.2f} s")
    close_all(run, *stores.values())
    # The worst round is the figure (issue 15): ratios are taken round by round, nbwork
    # against its peer measured right after it, and the worst of them reported.
    return {
        "works": n, "enqueue_count": count, "rounds": rounds,
        "throughput_s": throughput, "enqueue_s": enqueue, "diskcache_s": peer,
        "per_s_worst": {k: round(n / max(v), 1) for k, v in throughput.items()},
        "enqueue_per_s_worst": {k: round(count / max(v), 1) for k, v in enqueue.items()},
        "diskcache_per_s_worst": {k: round(count / max(v), 1) for k, v in peer.items()},
        "ratios": {
            **{f"enqueue_over_diskcache_{k}": min(
                p / e for p, e in zip(peer[k], enqueue[k], strict=True)) for k in DURABILITIES},
            "power_over_process_throughput": median(throughput["process"])
            / median(throughput["power"]),
        },
    }


# --- 9. a query returning many infos ----------------------------------------------------


def touch_record(path: str, id: str, note: str) -> None:
    """Change one work's record (its ``error`` text) as another process would: one commit."""
    from nbwork._store import Store

    store = Store(path, create=False)
    try:
        with store.transaction() as txn:
            spec = txn.get(id)
            spec.error = note
            txn.put(spec)
    finally:
        store.close()


def bench_query(run: Run) -> dict[str, Any]:
    """``get_work_infos(WorkQuery(states=[SUCCEEDED]))`` returning N infos, against N ×
    ``get_work_info_by_id`` of the same works, alternating, in one store. Three query
    figures: a refresh (the same manager asks again with nothing changed: several views of
    one process asking the same query), a refresh after one work's record changed (what a
    live table does on every change) and a first query (a new ``WorkManager``; it shares
    what the managers of its store in the process decoded, see ``nbwork/_query_memo.py``)."""
    from nbwork import WorkManager

    n, rounds = run.sizes.query_works, run.sizes.query_rounds
    store = run.nbwork("query", fill=lambda path: fill_finished(path, n))
    wm = store.wm
    query = WorkQuery(states=[WorkState.SUCCEEDED])
    ids = [i.id for i in wm.get_work_infos(query)]
    by_id: list[float] = []
    refresh: list[float] = []
    changed: list[float] = []
    first: list[float] = []
    for r in range(rounds):
        start = time.perf_counter()
        for id in ids:
            wm.get_work_info_by_id(id)
        by_id.append(time.perf_counter() - start)
        start = time.perf_counter()
        count = len(wm.get_work_infos(query))
        refresh.append(time.perf_counter() - start)
        # A live table refreshes because something changed: one work's record did.
        touch_record(store.path, ids[r % len(ids)], f"touched in round {r + 1}")
        start = time.perf_counter()
        count = len(wm.get_work_infos(query))
        changed.append(time.perf_counter() - start)
        fresh = WorkManager(store.path, resume=False)
        start = time.perf_counter()
        count = len(fresh.get_work_infos(query))
        first.append(time.perf_counter() - start)
    close_all(run, store)
    # Ratios round by round (a query against the by-id reads just before it), the worst
    # round reported: the machine's load changes faster than a run.
    per_id = [1000 * b / len(ids) for b in by_id]
    return {
        "works": count, "rounds": rounds, "by_id_s": by_id, "refresh_s": refresh,
        "refresh_after_change_s": changed, "first_s": first, "per_id_ms": median(per_id),
        "per_info_refresh_ms": 1000 * median(refresh) / count,
        "per_info_refresh_after_change_ms": 1000 * median(changed) / count,
        "per_info_first_ms": 1000 * median(first) / count,
        "ratios": {
            "refresh_per_info_over_by_id": max(
                1000 * r / count / p for r, p in zip(refresh, per_id, strict=True)),
            "refresh_after_change_per_info_over_by_id": max(
                1000 * c / count / p for c, p in zip(changed, per_id, strict=True)),
            "first_per_info_over_by_id": max(
                1000 * f / count / p for f, p in zip(first, per_id, strict=True)),
        },
    }


RUNNERS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "throughput": bench_throughput, "latency": bench_latency, "chain": bench_chain,
    "blur": bench_blur, "scale": bench_scale, "rss": bench_rss, "idle": bench_idle,
    "memory": bench_memory,
    "durability": bench_durability, "query": bench_query, "dask": bench_dask,
}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def meta(mode: str, sizes: Sizes) -> dict[str, Any]:
    import huey

    import nbwork

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "mode": mode, "sizes": dataclasses.asdict(sizes),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "nbwork": getattr(nbwork, "__version__", "?"),
        "huey": huey.__version__,
        "git_head": _git("rev-parse", "--short", "HEAD"),
        "git_dirty_files": len([x for x in _git("status", "--porcelain").splitlines() if x]),
        "load_start": _load(),
    }


def _load() -> list[float] | None:
    """The machine's load averages (1, 5, 15 min): other jobs on it show in every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_suite(sizes: Sizes, only: tuple[str, ...] = BENCHMARKS, mode: str = "full",
              workdir: str | None = None, on_stop: Callable[[str], None] | None = None,
              log: Callable[[str], None] = print, store_paths: list[str] | None = None,
              busy: bool = False) -> dict[str, Any]:
    """Run the benchmarks ``only`` and return the results (with ``targets``).

    With ``busy``, a ``BusyNeighbour`` spins on one core from before the first benchmark to
    after the last, and every result says so (``busy_neighbour``). Every process started
    is stopped before this returns, even on an error. The store paths used are appended to
    ``store_paths`` when given.
    """
    results: dict[str, Any] = {"meta": meta(mode, sizes)}
    results["meta"]["busy_neighbour"] = None
    started = time.perf_counter()
    neighbour = BusyNeighbour() if busy else None
    try:
        with tempfile.TemporaryDirectory(prefix="nbwork-bench-", dir=workdir) as root:
            run = Run(root, sizes, on_stop, log)
            try:
                for name in only:
                    results[name] = _run_one(run, name, neighbour)
            finally:
                if store_paths is not None:
                    store_paths.extend(run.store_paths)
    finally:
        if neighbour is not None:
            results["meta"]["busy_neighbour"] = neighbour.stop()
    figures = results["meta"]["busy_neighbour"]
    if figures is not None and not figures["alive_until_stopped"]:
        raise RuntimeError("the busy neighbour died during the run: the figures are not "
                           "busy-neighbour figures")
    results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    results["meta"]["load_end"] = _load()
    results["targets"] = report.targets(results)
    return results


def _run_one(run: Run, name: str, neighbour: BusyNeighbour | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    run.log(f"{name} ..." + (" (busy neighbour)" if neighbour else ""))
    with contextlib.ExitStack() as stack:  # stops what the benchmark started
        run.stack = stack
        result = RUNNERS[name](run)
    if neighbour is not None and not neighbour.alive():
        raise RuntimeError(f"the busy neighbour died during {name}")
    result["busy_neighbour"] = neighbour is not None
    result["bench_seconds"] = round(time.perf_counter() - t0, 1)
    run.log(f"{name}: done in {result['bench_seconds']} s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 2 min)")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--busy", action="store_true",
                        help="run every benchmark beside a busy neighbour: one process "
                             "spinning on one core for the whole run (results are tagged; "
                             "-busy is added to the default results file name)")
    parser.add_argument("--out", help="results JSON (default bench/results.json, "
                                      "bench/results-quick.json with --quick, "
                                      "bench/results[-quick]-busy.json with --busy)")
    parser.add_argument("--md", help="Markdown file whose suite section (its busy-neighbour "
                                     "section with --busy) gets the table (default "
                                     "BENCHMARKS.md for a full run of all benchmarks; '' "
                                     "for none)")
    args = parser.parse_args(argv)
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = [x for x in only if x not in RUNNERS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    mode = "quick" if args.quick else "full"
    suffix = ("-quick" if args.quick else "") + ("-busy" if args.busy else "")
    out = args.out or str(REPO / "bench" / f"results{suffix}.json")
    md = args.md
    if md is None:
        md = str(REPO / "BENCHMARKS.md") if mode == "full" and only == BENCHMARKS else ""
    results = run_suite(SIZES[mode], only, mode, busy=args.busy)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(report.table(results))
    print(f"\nresults: {out}")
    if md:
        report.update_markdown(md, results)
        print(f"table: {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
