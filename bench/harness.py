"""Processes and measurements shared by the benchmarks.

Every process started here is stopped by its pid (recorded as ``psutil.Process`` objects,
so a recycled pid is never hit): the Huey consumer and its workers, the nbwork scheduler
with its supervisor and worker processes, the Jupyter kernel of the live-table figure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from nbwork import WorkManager

from .tasks import noop

REPO = Path(__file__).resolve().parent.parent


# --- statistics -------------------------------------------------------------------------


def percentile(values: Iterable[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in [0, 1]) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


def poll(condition: Callable[[], object], timeout: float, what: str,
         pause: float = 0.001) -> object:
    """Call ``condition()`` every ``pause`` seconds until it is truthy; raise on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(pause)


# --- stopping processes by pid ----------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants (those alive now)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def kill_leftovers(processes: Iterable[psutil.Process], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, each of ``processes`` still running (psutil refuses a pid
    that was reused by another process since the object was made)."""
    alive = []
    for process in processes:
        try:
            if process.is_running():
                process.terminate()
                alive.append(process)
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=grace)
    for process in still:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=grace)


class CpuMeter:
    """CPU seconds (user + system) used by a set of processes over a window."""

    def __init__(self, roots: Callable[[], list[psutil.Process]]) -> None:
        self._roots = roots  # called at start and end: children may come and go
        self._start: dict[tuple[int, float], float] = {}
        self._t0 = 0.0

    @staticmethod
    def _times(processes: list[psutil.Process]) -> dict[tuple[int, float], float]:
        out = {}
        for p in processes:
            try:
                t = p.cpu_times()
                out[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def start(self) -> None:
        self._start = self._times(self._roots())
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        end = self._times(self._roots())
        wall = time.monotonic() - self._t0
        used = sum(v - self._start.get(k, 0.0) for k, v in end.items())
        return {"cpu_s": used, "wall_s": wall, "cpu_percent": 100 * used / wall,
                "processes": len(end)}


def measure_cpu(roots: Callable[[], list[psutil.Process]], window: float) -> dict[str, float]:
    meter = CpuMeter(roots)
    meter.start()
    time.sleep(window)
    return meter.stop()


# --- nbwork -----------------------------------------------------------------------------


class NbworkStore:
    """A store in a temp dir with its scheduler running; ``stop()`` ends the scheduler,
    its supervisor and its worker processes (``Daemon.stop``, then by pid if any is left)."""

    def __init__(self, path: str, on_stop: Callable[[str], None] | None = None,
                 durability: str | None = None, executor: str | None = None) -> None:
        self.path = path
        self.wm = WorkManager(path, durability=durability, executor=executor)
        self._on_stop = on_stop
        self._seen: dict[int, psutil.Process] = {}

    def start(self) -> NbworkStore:
        self.wm.daemon.start()
        self.processes()
        return self

    def scheduler(self) -> psutil.Process | None:
        pid = self.wm.daemon.pid
        try:
            return psutil.Process(pid) if pid else None
        except psutil.Error:
            return None

    def processes(self) -> list[psutil.Process]:
        """Supervisor, scheduler and workers running now (remembered for ``stop``)."""
        scheduler = self.scheduler()
        if scheduler is None:
            return []
        found = [scheduler]
        try:
            parent = scheduler.parent()
            if parent is not None and any("nbwork._supervisor" in part
                                          for part in parent.cmdline()):
                found.insert(0, parent)
            found += scheduler.children(recursive=True)
        except psutil.Error:
            pass
        for p in found:
            self._seen.setdefault(p.pid, p)
        return found

    def stop(self) -> None:
        self.processes()
        try:
            if self._on_stop is not None:
                self._on_stop(self.path)
            self.wm.daemon.stop()
        finally:
            kill_leftovers(list(self._seen.values()))
            self._seen.clear()


# --- a busy neighbour -------------------------------------------------------------------

SPIN = """\
import os, sys
cpu = int(sys.argv[1])
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
while True:
    pass
"""


class BusyNeighbour:
    """One process spinning on one core (pinned to the last CPU where the OS allows it) for
    as long as it runs: issue 15's "busy neighbour". ``stop()`` ends it by its pid and says
    how much of a core it really took (a neighbour that was starved or died is visible)."""

    def __init__(self) -> None:
        cpus = os.cpu_count() or 1
        self.cpu = cpus - 1 if hasattr(os, "sched_setaffinity") and cpus > 1 else -1
        self.process = subprocess.Popen([sys.executable, "-c", SPIN, str(self.cpu)],
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self._handle = psutil.Process(self.process.pid)
        self._t0 = time.monotonic()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        alive = self.alive()
        try:
            times = self._handle.cpu_times()
            cpu_s = times.user + times.system
        except psutil.Error:
            cpu_s = float("nan")
        kill_leftovers([self._handle])
        self.process.wait(5)
        return {"pinned_cpu": self.cpu if self.cpu >= 0 else None, "wall_s": round(wall, 1),
                "cpu_s": round(cpu_s, 1), "core_share": round(cpu_s / wall, 3) if wall else 0.0,
                "alive_until_stopped": alive}


# --- Huey -------------------------------------------------------------------------------


class HueyConsumer:
    """``huey_consumer bench.huey_app.huey [ARGS]`` on the sqlite file ``db``, as a real
    subprocess (``python -m huey.bin.huey_consumer``, the program of that script)."""

    def __init__(self, db: str, args: list[str], log_path: str) -> None:
        from bench import huey_app

        self.db = db
        self.args = args
        env = dict(os.environ)
        env[huey_app.DB_ENV] = db
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                          env.get("PYTHONPATH")]))
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "huey.bin.huey_consumer", "bench.huey_app.huey", *args],
                cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        self._seen: dict[int, psutil.Process] = {}
        huey_app.use_db(db)
        self.huey = huey_app.huey
        self.noop = huey_app.noop

    def processes(self) -> list[psutil.Process]:
        found = tree(self.process.pid)
        for p in found:
            self._seen.setdefault(p.pid, p)
        return found

    def wait_result(self, result, timeout: float = 60.0) -> None:
        """Poll the result store every millisecond (as ``nbwork``'s wait does at first) rather than
        Huey's ``get(blocking=True)``, which starts at 100 ms between polls."""
        poll(result.is_ready, timeout, f"huey task {result.id}")

    def warm_up(self, tasks: int = 4, timeout: float = 60.0) -> None:
        """Wait until the consumer runs tasks (it is up, its workers too)."""
        for _ in range(tasks):
            if self.process.poll() is not None:
                raise RuntimeError(f"huey_consumer exited with {self.process.returncode}")
            self.wait_result(self.noop(), timeout)
        self.processes()

    def stop(self) -> None:
        self.processes()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # Huey: stop now (SIGINT waits)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        kill_leftovers(list(self._seen.values()))
        self._seen.clear()


# --- a Jupyter kernel -------------------------------------------------------------------


class Kernel:
    """A real IPython kernel (``jupyter_client``), for the CPU a live widget costs it."""

    def __init__(self, cwd: str) -> None:
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=cwd, env=dict(os.environ))
        self._seen: dict[int, psutil.Process] = {}
        self.pid = self.km.provisioner.process.pid  # type: ignore[union-attr]
        self.processes()
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=60)
        except BaseException:
            self.stop()
            raise

    def processes(self) -> list[psutil.Process]:
        found = tree(self.pid)
        for p in found:
            self._seen.setdefault(p.pid, p)
        return found

    def run(self, code: str, timeout: float = 120.0) -> None:
        errors: list[str] = []

        def on_output(msg: dict) -> None:
            if msg["msg_type"] == "error":
                errors.append("\n".join(msg["content"].get("traceback", [])))

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=on_output)
        if reply["content"]["status"] != "ok" or errors:
            raise RuntimeError(f"kernel code failed:\n{code}\n" + "\n".join(errors))

    def stop(self) -> None:
        self.processes()
        try:
            self.kc.stop_channels()
        except Exception:
            pass
        try:
            self.km.shutdown_kernel(now=True)
        finally:
            kill_leftovers(list(self._seen.values()))
            self._seen.clear()


# --- a run of the suite ---------------------------------------------------------------


class Run:
    """One run of the suite: its temp dir, sizes, and every process to stop at the end."""

    def __init__(self, root: str, sizes: Any,
                 on_stop: Callable[[str], None] | None = None, log: Callable[[str], None] = print
                 ) -> None:
        self.root = root
        self.sizes = sizes
        self.on_stop = on_stop
        self.log = log
        self.store_paths: list[str] = []
        self.stack = contextlib.ExitStack()
        self.cache: dict[str, Any] = {}  # what benchmarks share within a run (templates)

    def folder(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(path, exist_ok=True)
        return path

    def nbwork(self, name: str, fill: Callable[[str], Any] | None = None,
               durability: str | None = None, executor: str | None = None) -> NbworkStore:
        """A new store ``name`` (``fill(path)`` first, before any scheduler), scheduler on;
        its attempts run on ``executor`` (``WorkManager``'s; None: this machine)."""
        path = os.path.join(self.root, f"store-{name}")
        self.store_paths.append(path)
        if fill is not None:
            fill(path)
        store = NbworkStore(path, self.on_stop, durability, executor)
        self.stack.callback(store.stop)
        return store.start()

    def huey(self, name: str, args: list[str]) -> HueyConsumer:
        consumer = HueyConsumer(os.path.join(self.root, f"huey-{name}.db"), args,
                                os.path.join(self.root, f"huey-{name}.log"))
        self.stack.callback(consumer.stop)
        return consumer

    def pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(2)
        self.stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        pool.submit(noop).result()
        return pool


def close_all(run: Run, *things: Any) -> None:
    """Stop what a benchmark started, now, all at once (each is also on the run's stack,
    in case of an error: stopping twice is harmless)."""
    from concurrent.futures import ThreadPoolExecutor

    def stop(thing: Any) -> None:
        if isinstance(thing, ProcessPoolExecutor):
            thing.shutdown(wait=True, cancel_futures=True)
        else:
            thing.stop()

    with ThreadPoolExecutor(max(1, len(things))) as threads:
        for future in [threads.submit(stop, thing) for thing in things]:
            future.result()


def rotated(items: list, shift: int) -> list:
    shift %= len(items)
    return items[shift:] + items[:shift]
