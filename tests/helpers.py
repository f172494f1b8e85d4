"""Workers and helpers for the integration tests (real scheduler, real worker processes).

The workers are defined here, in a module that is not installed, so nbwork sends them to
the scheduler by value (cloudpickle), as it does for a notebook's workers. Workers that
must wait for the test wait on a *gate file* the test creates: no test sleeps to
synchronise, and no worker runs longer than the test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import psutil

from nbwork import CoroutineWorker, Result, Worker, is_stopped, set_progress
from nbwork._lock import holder_pid

POLL = 0.01


# --- process helpers (used by the tests) --------------------------------------------------


def stable_id(value: object) -> str:
    """A test id that is the same in every process (pytest-xdist's workers must collect the
    same ids): no memory addresses, sets in sorted order."""
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(map(stable_id, value))) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(stable_id, value)) + "]"
    return re.sub(r" (object )?at 0x[0-9a-fA-F]+", "", repr(value))


def is_dead(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its parent counts as dead)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def read_ints(path) -> list[int]:
    """The integers written one per line to ``path`` (empty if it does not exist yet)."""
    try:
        with open(path) as f:
            return [int(line) for line in f.read().split()]
    except FileNotFoundError:
        return []


def touch(path) -> None:
    with open(path, "w"):
        pass


def scheduler_processes(
    store_path: str, modules: tuple[str, ...] = ("nbwork._scheduler_main",)
) -> list[psutil.Process]:
    """Live (not zombie) scheduler processes of one store, found by their command line (with
    ``modules=("nbwork._scheduler_main", "nbwork._supervisor")``, their supervisors too)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if "--store" in cmdline and store_path in cmdline and any(
            module in part for part in cmdline for module in modules
        ):
            found.append(process)
    return found


def stop_scheduler(store_path: str) -> None:
    """Stop every supervisor and scheduler of a store, and every process they started, by
    PID (the fixtures' teardown, and tests that stop a store's processes themselves).

    Found by command line, since one still starting holds no lock yet, and by the lock,
    which a scheduler run in the foreground (``nbwork daemon run``) holds. Supervisors go
    first (one would restart a scheduler stopped under it); a process stopped with SIGSTOP
    is continued so that it can end. Up to three rounds: a supervisor may have started a
    scheduler between the look and the stop."""
    for _ in range(3):
        processes = scheduler_processes(store_path, ("nbwork._scheduler_main",
                                                     "nbwork._supervisor"))
        holder = holder_pid(store_path)
        if holder is not None and all(p.pid != holder for p in processes):
            with contextlib.suppress(psutil.Error):
                processes.append(psutil.Process(holder))
        if not processes:
            return
        processes.sort(key=lambda p: not _is_supervisor(p))
        tree = list(processes)
        for process in processes:
            with contextlib.suppress(psutil.Error):
                tree.extend(process.children(recursive=True))
        for process in processes:
            # (os.kill raises ProcessLookupError, not a psutil.Error, for one gone since.)
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=20)
        for process in alive + tree:
            with contextlib.suppress(psutil.Error):
                if process.is_running():
                    process.kill()
        _wait_ended(tree, timeout=10)


def _wait_ended(processes: list[psutil.Process], timeout: float) -> None:
    """Wait until each process has ended. A zombie has: the worker processes' forkserver
    and resource tracker are the scheduler's children, left to init once it is gone, and
    init here reaps them a second or more later (``psutil.wait_procs`` waited for that:
    more than a second of every test that ran a scheduler)."""
    def ended(process: psutil.Process) -> bool:  # (is_running: not a new process on its pid)
        return not process.is_running() or is_dead(process.pid)

    deadline = time.monotonic() + timeout
    while not all(ended(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)


def _is_supervisor(process: psutil.Process) -> bool:
    try:
        return any("nbwork._supervisor" in part for part in process.cmdline())
    except psutil.Error:
        return False


def all_schedulers_settled(store: str) -> bool:
    """Every scheduler process of ``store`` holds its lock (or there is none)."""
    return all(p.pid == holder_pid(store) for p in scheduler_processes(store))


def run_together(target, args: tuple, count: int, timeout: float) -> tuple[list, list]:
    """Run ``target(*args, barrier, results)`` in ``count`` fresh (spawned) processes that
    pass a barrier together; returns what they put on ``results`` and their exit codes."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    processes = [ctx.Process(target=target, args=(*args, barrier, results))
                 for _ in range(count)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=timeout) for _ in processes]
    finally:
        for process in processes:
            process.join(30)
            if process.exitcode is None:
                process.kill()
    return outcomes, [p.exitcode for p in processes]


def append_line(path: str, value: object) -> None:
    with open(path, "a") as f:
        f.write(f"{value}\n")
        f.flush()
        os.fsync(f.fileno())


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# --- function workers ---------------------------------------------------------------------


def echo(**values) -> dict:
    """Returns its whole input as output."""
    return values


def add(a: int, b: int) -> dict:
    return {"sum": a + b}


def emit(key: str, value: int) -> dict:
    """Outputs ``{key: value}``."""
    return {key: value}


def wait_for_gate(gate: str, value: int = 0) -> dict:
    """Waits until the file ``gate`` exists (or the work is stopped), outputs ``value``."""
    while not os.path.exists(gate):
        if is_stopped():
            return {"stopped": True}
        time.sleep(POLL)
    return {"value": value, "gate": gate}


def boom() -> dict:
    raise ValueError("boom-4711: the worker raised on purpose")


def too_big() -> dict:
    return {"text": "x" * 20_000}


def not_data() -> dict:
    return {"things": {1, 2, 3}}


def chatty() -> dict:
    print("to-stdout: hello from the worker")
    print("to-stderr: warning from the worker", file=sys.stderr)
    return {"said": 2}


def kill_myself() -> dict:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached
    return {}


def sum_values(value: list) -> dict:
    """Sums a key merged by ArrayCreatingInputMerger (a list)."""
    return {"total": sum(value), "count": len(value)}


# --- Worker subclasses --------------------------------------------------------------------


class Describe(Worker):
    """Outputs what the worker sees of its attempt."""

    def do_work(self) -> Result:
        return Result.success({
            "id": self.id,
            "tags": sorted(self.tags),
            "run_attempt_count": self.run_attempt_count,
            "input": sorted(self.input_data),
            "pid": os.getpid(),
        })


class RetryTwice(Worker):
    """Appends the run_attempt_count it sees to ``record``; retries until it has seen 2."""

    def do_work(self) -> Result:
        append_line(self.input_data["record"], self.run_attempt_count)
        if self.run_attempt_count < 2:
            return Result.retry()
        return Result.success({"seen": self.run_attempt_count})


class StopAware(Worker):
    """Writes ``<dir>/started``; works until stopped; ``on_stopped`` writes ``<dir>/on_stopped``;
    then returns a success that must be ignored because the work was cancelled."""

    def do_work(self) -> Result:
        folder = self.input_data["dir"]
        _write_atomically(os.path.join(folder, "started"), str(os.getpid()))
        while not self.is_stopped:
            time.sleep(POLL)
        _write_atomically(os.path.join(folder, "saw_stop"), self.stop_reason or "")
        return Result.success({"late": "result after the stop"})

    def on_stopped(self) -> None:
        _write_atomically(os.path.join(self.input_data["dir"], "on_stopped"), "1")


class Stubborn(Worker):
    """Starts a grandchild ``sleep``, records both pids in ``<dir>/pids``, ignores stops."""

    def do_work(self) -> Result:
        folder = self.input_data["dir"]
        child = subprocess.Popen(["sleep", "300"])
        _write_atomically(os.path.join(folder, "pids"), f"{os.getpid()}\n{child.pid}\n")
        while True:  # never looks at is_stopped
            time.sleep(POLL)


class SlowFirstAttempt(Worker):
    """First attempt: records its pid and a grandchild's pid in ``<dir>/pids`` and then hangs.
    Later attempts succeed at once and report the attempt count they saw."""

    def do_work(self) -> Result:
        folder = self.input_data["dir"]
        if self.run_attempt_count == 0:
            child = subprocess.Popen(["sleep", "300"])
            _write_atomically(os.path.join(folder, "pids"), f"{os.getpid()}\n{child.pid}\n")
            while True:
                time.sleep(POLL)
        return Result.success({"seen": self.run_attempt_count, "pid": os.getpid()})


class GateWorker(Worker):
    """Waits for the file ``gate`` (stops early when stopped); outputs ``value``. Creates
    the file ``started``, if given, once it has begun: RUNNING in the store only says the
    attempt was handed to a worker process, which may not have begun it yet."""

    def do_work(self) -> Result:
        if self.input_data.get("started"):
            touch(self.input_data["started"])
        gate = self.input_data["gate"]
        while not os.path.exists(gate):
            if self.is_stopped:
                return Result.failure({"stopped": True})
            time.sleep(POLL)
        return Result.success({"value": self.input_data.get("value", 0)})


class TooBigResult(Worker):
    def do_work(self) -> Result:
        return Result.success({"text": "y" * 20_000})


class Progressing(Worker):
    """Reports progress, then waits for the file ``gate``."""

    def do_work(self) -> Result:
        self.set_progress({"percent": 50, "step": "half"})
        gate = self.input_data["gate"]
        while not os.path.exists(gate):
            time.sleep(POLL)
        return Result.success({"done": True})


def progressing_function(gate: str) -> dict:
    set_progress({"percent": 10})
    while not os.path.exists(gate):
        time.sleep(POLL)
    return {"done": 1}


class AsyncStopAware(CoroutineWorker):
    """Writes ``<dir>/started``, then awaits forever; cancelling the work cancels it."""

    async def do_work(self) -> Result:
        folder = self.input_data["dir"]
        _write_atomically(os.path.join(folder, "started"), str(os.getpid()))
        try:
            while True:
                await asyncio.sleep(POLL)
        except asyncio.CancelledError:
            _write_atomically(os.path.join(folder, "cancelled"), "1")
            raise


class AsyncAdd(CoroutineWorker):
    async def do_work(self) -> Result:
        await asyncio.sleep(0)
        return Result.success({"sum": self.input_data["a"] + self.input_data["b"]})


class RecordRun(Worker):
    """Appends its run_attempt_count to ``record`` (one line per run)."""

    def do_work(self) -> Result:
        append_line(self.input_data["record"], self.run_attempt_count)
        return Result.success()


class NextTransactionHook:
    """Wraps ``store.transaction`` so that its next transaction runs ``inside(txn)`` just
    before it commits (raise there to make it fail, as a full disk does) or ``after()`` right
    after it committed (another process's commit between two of the scheduler's steps);
    later transactions are untouched. ``fired`` says whether it ran."""

    def __init__(self, monkeypatch, store, inside=None, after=None) -> None:
        self.fired = False
        original = store.transaction

        @contextlib.contextmanager
        def transaction():
            with original() as txn:
                yield txn
                if inside is not None and not self.fired:
                    self.fired = True
                    inside(txn)
            if after is not None and not self.fired:
                self.fired = True
                after()

        monkeypatch.setattr(store, "transaction", transaction)


def interruptible() -> None:
    """``preexec_fn`` for a child a test sends SIGINT (Ctrl-C) to: a shell starts background
    jobs (``pytest … &``, nohup) with SIGINT ignored, children inherit that, and a Python
    started with SIGINT ignored never raises KeyboardInterrupt; a terminal gives the
    default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
