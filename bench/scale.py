"""Benchmarks of a big store: latencies at 100,000 finished works against 1,000 (5, ``scale``)
and the scheduler's resident memory with many finished works and over a long run (10,
``rss``), both of issue 15.

A store of N finished works is filled once per run (``template``) and copied for every
store that needs it, so the 100,000-work store costs its fill once, not once per benchmark.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from typing import Any

from nbwork import OneTimeWorkRequest, WorkState

from .harness import NbworkStore, Run, close_all, median, ms, rotated
from .tasks import noop

FILL_BATCH = 5000
WORKS_PER_TAG = 100
WORKS_PER_NAME = 10


def fill_finished(path: str, count: int) -> dict[str, float]:
    """Put ``count`` finished (SUCCEEDED) no-op works in a new store, without a scheduler.

    Through ``nbwork._ops.enqueue_in`` (the client's enqueue, here in batches of
    ``FILL_BATCH``), each work then marked SUCCEEDED in the same transaction, as the
    scheduler's last write of a work would: a work goes straight into the SUCCEEDED index,
    and each batch costs one commit. Work ``i`` has tag ``batch-{i // 100}`` and unique
    name ``name-{i // 10}``.
    """
    from nbwork import _ops
    from nbwork._code import serialize_worker
    from nbwork._records import spec_of_request as _spec_of
    from nbwork._store import Store

    store = Store(path)
    start = time.perf_counter()
    code_key = payload = None
    try:
        for first in range(0, count, FILL_BATCH):
            now = time.time()
            works = []
            for i in range(first, min(count, first + FILL_BATCH)):
                request = OneTimeWorkRequest(noop, tags=[f"batch-{i // WORKS_PER_TAG}"])
                if payload is None:
                    code_key, payload = serialize_worker(request.worker, request.worker_name)
                spec = _spec_of(request, code_key, (), f"name-{i // WORKS_PER_NAME}")
                works.append(_ops.NewWork(spec, payload))
            with store.transaction() as txn:
                _ops.enqueue_in(txn, works, [], now)
                for work in works:
                    spec = txn.get(work.spec.id)
                    spec.state = WorkState.SUCCEEDED
                    spec.run_attempt_count = 1
                    spec.start_time = spec.finish_time = now
                    txn.put(spec)
    finally:
        store.close()
    seconds = time.perf_counter() - start
    return {"works": count, "seconds": seconds, "per_s": count / seconds}


def finished_store(run: Run, name: str, count: int) -> tuple[NbworkStore, dict[str, float]]:
    """A store ``name`` holding ``count`` finished works, its scheduler running: a copy of
    this run's template of that size (filled on first use; the fill's figures returned)."""
    templates = run.cache.setdefault("finished_templates", {})
    if count not in templates:
        run.log(f"  filling a store with {count:,} finished works")
        path = os.path.join(run.root, f"template-{count}")
        templates[count] = (path, fill_finished(path, count))
    template, fill = templates[count]

    def copy(path: str) -> None:
        shutil.copytree(template, path)  # copy2 keeps the store's private modes

    return run.nbwork(name, copy), fill


def _scale_figures(store: NbworkStore, size: int, rng: random.Random,
                   ids: list[str]) -> dict[str, Callable[[], float]]:
    wm = store.wm
    tags, names = max(1, size // WORKS_PER_TAG), max(1, size // WORKS_PER_NAME)
    last_enqueued: list[tuple[str, float]] = []

    def timed(f: Callable[[], Any]) -> float:
        start = time.perf_counter()
        f()
        return time.perf_counter() - start

    def cold(f: Callable[[], Any]) -> float:
        # The manager keeps what it decoded (its read memo): a store of 1,000 works has 10
        # tags and 100 names, so after a few tries every query there would be a memo hit,
        # while at 100,000 works (1,000 tags, 10,000 names) nearly every one decodes its
        # records: that compared the memo with SQLite + unpickling, not store sizes. Each
        # query here starts from an empty memo, in both stores.
        # (And from no kept query result: ``_query_results``, which a query with the change
        # counter where it was would return without reading anything.)
        for memo in ("_read_memo", "_info_memo", "_query_results"):
            if not isinstance(getattr(wm, memo, None), dict):
                raise RuntimeError(f"WorkManager.{memo} is gone: bench/scale.py must empty "
                                   "the manager's read memo another way")
            getattr(wm, memo).clear()
        return timed(f)

    def enqueue() -> float:
        request = OneTimeWorkRequest(noop, tags=["probe"])
        start = time.perf_counter()
        wm.enqueue(request)
        elapsed = time.perf_counter() - start
        wm.wait(request.id, timeout=60)
        last_enqueued.append((request.id, time.perf_counter() - start))
        return elapsed

    def enqueue_to_succeeded() -> float:
        return last_enqueued[-1][1]

    return {
        "enqueue": enqueue,
        "enqueue_to_succeeded": enqueue_to_succeeded,
        "get_by_id": lambda: timed(lambda: wm.get_work_info_by_id(rng.choice(ids))),
        "by_tag": lambda: cold(lambda: wm.get_work_infos_by_tag(
            f"batch-{rng.randrange(tags)}")),
        "by_unique_name": lambda: cold(lambda: wm.get_work_infos_for_unique_work(
            f"name-{rng.randrange(names)}")),
    }


def bench_scale(run: Run) -> dict[str, Any]:
    s = run.sizes
    sizes = {"small": s.scale_small, "large": s.scale_large}
    fills: dict[str, dict[str, float]] = {}
    stores: dict[str, NbworkStore] = {}
    for label, size in sizes.items():
        stores[label], fills[label] = finished_store(run, f"scale-{label}", size)
    rng = random.Random(11)
    ids = {label: list(store.wm._store.state_index(WorkState.SUCCEEDED))
           for label, store in stores.items()}
    figures = {label: _scale_figures(store, sizes[label], rng, ids[label])
               for label, store in stores.items()}
    for label in stores:  # warm up (page cache, worker processes)
        for f in figures[label].values():
            f()
            f()
    samples: dict[str, dict[str, list[float]]] = {name: {"small": [], "large": []}
                                                  for name in figures["small"]}
    for name in samples:
        tries = s.scale_tries if name.startswith(("get", "by")) else max(3, s.scale_tries // 2)
        if name == "enqueue_to_succeeded":
            continue  # measured with enqueue
        for i in range(tries):
            for label in rotated(["small", "large"], i):
                samples[name][label].append(figures[label][name]())
                if name == "enqueue":
                    samples["enqueue_to_succeeded"][label].append(
                        figures[label]["enqueue_to_succeeded"]())
    close_all(run, *stores.values())
    p50 = {name: {label: median(v) for label, v in by.items()} for name, by in samples.items()}
    return {
        "sizes": sizes,
        "fill": {k: {"seconds": round(v["seconds"], 1), "per_s": round(v["per_s"])}
                 for k, v in fills.items()},
        "p50_ms": {name: {label: ms(v) for label, v in by.items()} for name, by in p50.items()},
        "ratios": {name: by["large"] / by["small"] for name, by in p50.items()},
    }


# --- 10. the scheduler's memory at size ---------------------------------------------------


_STATUS_FIELDS = {"VmRSS": "rss", "VmHWM": "peak", "RssAnon": "anon", "RssFile": "file"}


def proc_memory_mib(pid: int) -> dict[str, float]:
    """Resident memory of a live process in MiB, from ``/proc/<pid>/status``: now
    (``rss``), at its peak (``peak``), and now split into private memory (``anon``: the
    Python heap, SQLite's page cache) and mapped files (``file``: the interpreter's
    libraries and the pages of the store's database SQLite memory-maps, which the kernel
    can drop)."""
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name = _STATUS_FIELDS.get(line.split(":", 1)[0])
            if name:
                found[name] = int(line.split()[1]) / 1024
    if len(found) != len(_STATUS_FIELDS):
        raise RuntimeError(f"/proc/{pid}/status lacks some of {sorted(_STATUS_FIELDS)}")
    return found


def run_noops(store: NbworkStore, count: int, tag: str = "rss") -> None:
    """``count`` no-op works enqueued in one call, waited for; all must succeed."""
    requests = [OneTimeWorkRequest(noop, tags=[tag]) for _ in range(count)]
    store.wm.enqueue(requests)
    infos = store.wm.wait([r.id for r in requests], timeout=600)
    bad = [i for i in infos if i.state is not WorkState.SUCCEEDED]
    if bad:
        raise RuntimeError(f"{len(bad)} no-op works did not succeed: {bad[0]}")


def _scheduler_pid(store: NbworkStore) -> int:
    pid = store.wm.daemon.pid
    if not pid:
        raise RuntimeError(f"no scheduler is running for {store.path}")
    return pid


def rss_with_finished(run: Run, label: str, count: int) -> dict[str, float]:
    """The scheduler's memory on a store of ``count`` finished works, after it started
    (its resume pass reads the store) and ran ``rss_warm_works`` more no-ops."""
    store, _ = finished_store(run, f"rss-{label}", count)
    pid = _scheduler_pid(store)
    run_noops(store, run.sizes.rss_warm_works)
    figures = proc_memory_mib(pid)
    if store.wm.daemon.pid != pid:
        raise RuntimeError("the scheduler was restarted during the memory benchmark")
    close_all(run, store)
    return {"finished_works": count, **{k: round(v, 1) for k, v in figures.items()}}


def rss_curve(run: Run) -> list[dict[str, float]]:
    """The scheduler's resident memory after every ``rss_curve_step`` works of a run of
    ``rss_curve_works`` no-ops on a new store (each step enqueued in one call and waited
    for; nothing pruned, so the finished works pile up as in a real run)."""
    total, step = run.sizes.rss_curve_works, run.sizes.rss_curve_step
    store = run.nbwork("rss-curve")
    pid = _scheduler_pid(store)
    curve = [{"works": 0, **proc_memory_mib(pid)}]
    for done in range(step, total + 1, step):
        run_noops(store, step)
        curve.append({"works": done, **proc_memory_mib(pid)})
    if store.wm.daemon.pid != pid:
        raise RuntimeError("the scheduler was restarted during the memory curve")
    close_all(run, store)
    return [{k: round(v, 1) if k != "works" else v for k, v in point.items()}
            for point in curve]


def bench_rss(run: Run) -> dict[str, Any]:
    s = run.sizes
    small = rss_with_finished(run, "small", s.scale_small)
    large = rss_with_finished(run, "large", s.scale_large)
    run.log(f"  scheduler RSS: {small['rss']:.0f} MiB with {s.scale_small:,} finished works, "
            f"{large['rss']:.0f} MiB with {s.scale_large:,} (peaks {small['peak']:.0f} / "
            f"{large['peak']:.0f} MiB)")
    curve = rss_curve(run)
    # "No growth": the last sample against the first one after a quarter of the run (the
    # warm-up: worker pool, imports, SQLite's page cache filling up).
    warm = next(p for p in curve if p["works"] >= s.rss_curve_works / 4)
    last = curve[-1]
    run.log("  scheduler RSS curve (works: MiB, anon + file): "
            + ", ".join(f"{p['works']:,}: {p['rss']:.1f} ({p['anon']:.1f} + {p['file']:.1f})"
                        for p in curve))
    return {
        "finished": {"small": small, "large": large},
        "curve": curve, "curve_works": s.rss_curve_works, "curve_step": s.rss_curve_step,
        "growth_mib": round(last["rss"] - warm["rss"], 1), "growth_from_works": warm["works"],
        "anon_growth_mib": round(last["anon"] - warm["anon"], 1),
        "ratios": {"large_over_small": large["rss"] / small["rss"],
                   "curve_end_over_warm": last["rss"] / warm["rss"]},
    }
