"""11. ``dask``: nbwork's Dask executor against raw Dask on the same loopback cluster.

A ``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` (two worker processes,
one thread each) on loopback, started for the benchmark and stopped at its end. In the same
run, alternating which goes first each round:

- ``noop``: N no-op one-time works enqueued in one call until all SUCCEEDED, on a store
  whose executor is the cluster, against N ``client.submit`` of the same function
  gathered. nbwork adds what it is for: every transition committed to the store, every
  attempt run in a warm process on the Dask worker that a stop really kills.
- ``blur``: the suite's blur batch (one chain per image, ``BlurWorker`` × level then
  ``SaveImageToFileWorker``) run by nbwork on the cluster, against ``client.map`` of
  ``bench.tasks.blur_pipeline`` (the same worker code through ``nbwork.testing.run_worker``)
  over the same images.

Ratios are per round; the targets read the worst round.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from .harness import REPO, Run, median, rotated
from .tasks import blur_pipeline, noop


class LoopbackCluster:
    """A Dask scheduler and worker processes on loopback, each a process group of its own
    (so ``stop`` ends the nannies' children too)."""

    def __init__(self, folder: str, workers: int = 2, threads: int = 1) -> None:
        self.folder = folder
        self.workers, self.threads = workers, threads
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.processes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"dask://127.0.0.1:{self.port}"

    def start(self) -> LoopbackCluster:
        # The workers import bench.tasks (raw Dask pickles it by reference) and nbwork
        # from this checkout.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        tcp = f"tcp://127.0.0.1:{self.port}"
        for module, args in (
                ("dask_scheduler", ["--host", "127.0.0.1", "--port", str(self.port)]),
                ("dask_worker", [tcp, "--host", "127.0.0.1", "--nthreads", str(self.threads),
                                 "--nworkers", str(self.workers)])):
            with open(os.path.join(self.folder, f"{module}.log"), "wb") as log:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", f"distributed.cli.{module}", *args,
                     "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT, env=env,
                    cwd=self.folder, start_new_session=True))
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            except ProcessLookupError:
                pass
        self.processes.clear()


def raw_noop(client: Any, works: int) -> float:
    start = time.perf_counter()
    client.gather([client.submit(noop, i, pure=False) for i in range(works)])
    return time.perf_counter() - start


def raw_blur(client: Any, images: list[str], work_dir: str, level: int) -> float:
    from .suite import _blur_args

    args = _blur_args(level)
    blur_dir, out_dir = os.path.join(work_dir, "blur"), os.path.join(work_dir, "out")
    n = len(images)
    start = time.perf_counter()
    client.gather(client.map(blur_pipeline, images, [blur_dir] * n, [out_dir] * n,
                             [args["level"]] * n, [args["radius"]] * n, [args["strips"]] * n,
                             pure=False))
    return time.perf_counter() - start


def bench_dask(run: Run) -> dict[str, Any]:
    from distributed import Client

    from .suite import make_images, nbwork_batch, nbwork_blur

    s = run.sizes
    cluster = LoopbackCluster(run.folder("dask-cluster"))
    run.stack.callback(cluster.stop)
    cluster.start()
    client = Client(cluster.address.replace("dask://", "tcp://"), timeout=60,
                    set_as_default=False)
    run.stack.callback(client.close)
    client.wait_for_workers(cluster.workers, timeout=120)
    store = run.nbwork("dask", executor=cluster.address)
    images = make_images(run.folder("dask-images"), s.dask_blur_images, s.dask_blur_pixels)
    scratch = run.folder("dask-scratch")

    def fresh(name: str) -> str:
        path = os.path.join(scratch, name)
        shutil.rmtree(path, ignore_errors=True)
        return path

    # Warm up both sides: the connection, the warm worker processes, Pillow.
    raw_noop(client, 20)
    nbwork_batch(store.wm, 20)
    raw_blur(client, images[:2], fresh("warm"), 1)
    nbwork_blur(store.wm, images[:2], fresh("warm"), 1)
    store.wm.prune_work()
    noop_s: dict[str, list[float]] = {"nbwork": [], "raw_dask": []}
    blur_s: dict[str, list[float]] = {"nbwork": [], "raw_dask": []}
    for r in range(s.dask_rounds):
        for name, go in rotated([("nbwork", lambda: nbwork_batch(store.wm, s.dask_works)),
                                 ("raw_dask", lambda: raw_noop(client, s.dask_works))], r):
            noop_s[name].append(go())
            run.log(f"  dask no-op round {r + 1}: {name} {noop_s[name][-1]:.1f} s")
        store.wm.prune_work()
        for name, go in rotated([
                ("nbwork", lambda d: nbwork_blur(store.wm, images, d, s.blur_level)),
                ("raw_dask", lambda d: raw_blur(client, images, d, s.blur_level))], r):
            blur_s[name].append(go(fresh(name)))
            run.log(f"  dask blur round {r + 1}: {name} {blur_s[name][-1]:.1f} s")
            shutil.rmtree(os.path.join(scratch, name), ignore_errors=True)
        store.wm.prune_work()
    threads = sum(client.nthreads().values())
    store.stop()
    client.close()
    cluster.stop()
    noop_ratios = [raw / nb for nb, raw in zip(noop_s["nbwork"], noop_s["raw_dask"],
                                               strict=True)]
    blur_ratios = [nb / raw for nb, raw in zip(blur_s["nbwork"], blur_s["raw_dask"],
                                               strict=True)]
    return {
        "workers": cluster.workers, "worker_threads": threads, "works": s.dask_works,
        "rounds": s.dask_rounds, "images": len(images), "pixels": s.dask_blur_pixels,
        "level": s.blur_level,
        "noop_seconds": noop_s, "blur_seconds": blur_s,
        "noop_per_s": {k: s.dask_works / median(v) for k, v in noop_s.items()},
        "blur_wall_s": {k: round(median(v), 3) for k, v in blur_s.items()},
        "ratios": {"noop_nbwork_over_raw": median(noop_ratios),
                   "worst_round_noop_nbwork_over_raw": min(noop_ratios),
                   "blur_nbwork_over_raw": median(blur_ratios),
                   "worst_round_blur_nbwork_over_raw": max(blur_ratios)},
    }
