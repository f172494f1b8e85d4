"""The local executor: a bounded pool of niced worker processes, one per attempt.

Each attempt runs in a fresh process forked from a forkserver (fast, and clean: it holds
none of the scheduler's files or locks), in a process group of its own. Stopping sends a
stop message (the worker sees ``is_stopped`` and ``on_stopped()``), then SIGTERM to the
group after the grace period and SIGKILL shortly after, so a worker that ignores the stop
and everything it started are gone. When an attempt's process ends, its group is killed
too, so no grandchild outlives its attempt.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from .._rules import Outcome
from ..info import StopReason
from .base import AttemptSpec, Sink
from .child import run_attempt

log = logging.getLogger("nbwork.executor")

DEFAULT_STOP_GRACE = 5.0
"""Seconds a stopped worker gets to return before its process group is terminated."""
_KILL_AFTER_TERM = 2.0


def _kill_group(pid: int, sig: int, group_only: bool = False) -> None:
    """Signal the process group of an attempt; with no such group, the process itself unless
    ``group_only`` (once the process has been reaped its pid may belong to someone else)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        if group_only:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    except PermissionError:
        pass


def exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        return f"worker process died: signal {-exitcode} ({name})"
    return f"worker process exited with code {exitcode} before returning a result"


@dataclass
class _Running:
    attempt: AttemptSpec
    process: Any
    conn: Any
    result: Outcome | None = None
    stop_reason: str | None = None
    term_at: float | None = None
    kill_at: float | None = None
    progress: list = field(default_factory=list)


class LocalExecutor:
    def __init__(self, capacity: int | None = None, stop_grace: float = DEFAULT_STOP_GRACE) -> None:
        self.capacity = max(1, capacity or os.cpu_count() or 1)
        self.stop_grace = stop_grace
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["nbwork._executors.child"])
        self._running: dict[str, _Running] = {}

    def running(self) -> set[str]:
        return set(self._running)

    def submit(self, attempt: AttemptSpec) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=run_attempt, args=(child_conn, attempt),
            name=f"nbwork-{attempt.work_id[:8]}", daemon=False,
        )
        process.start()
        child_conn.close()
        self._running[attempt.token] = _Running(attempt, process, parent_conn)

    def stop(self, token: str, reason: str) -> None:
        run = self._running.get(token)
        if run is None or run.stop_reason is not None:
            return
        run.stop_reason = reason
        run.term_at = time.monotonic() + self.stop_grace
        try:
            run.conn.send(("stop", reason))
        except OSError:
            pass

    def wait_objects(self) -> list[Any]:
        objects: list[Any] = []
        for run in self._running.values():
            if not run.conn.closed:
                objects.append(run.conn)
            objects.append(run.process.sentinel)
        return objects

    def next_deadline(self) -> float | None:
        times = [t for r in self._running.values() for t in (r.term_at, r.kill_at) if t]
        return min(times) if times else None

    def poll(self, sink: Sink) -> None:
        now = time.monotonic()
        for token, run in list(self._running.items()):
            self._read_messages(token, run, sink)
            if run.process.exitcode is None:
                if run.kill_at is not None and now >= run.kill_at:
                    _kill_group(run.process.pid, signal.SIGKILL)
                    run.kill_at = None
                elif run.term_at is not None and now >= run.term_at:
                    log.info("attempt %s ignored its stop; terminating it", token)
                    _kill_group(run.process.pid, signal.SIGTERM)
                    run.term_at = None
                    run.kill_at = now + _KILL_AFTER_TERM
                continue
            self._read_messages(token, run, sink)
            run.process.join()
            # Grandchildren left behind die with the attempt.
            _kill_group(run.process.pid, signal.SIGKILL, group_only=True)
            run.conn.close()
            del self._running[token]
            if run.stop_reason is not None:
                outcome = Outcome("stopped", stop_reason=run.stop_reason)
            elif run.result is not None:
                outcome = run.result
            else:
                outcome = Outcome("crash", error=exit_description(run.process.exitcode))
            sink.finished(token, outcome)

    def _read_messages(self, token: str, run: _Running, sink: Sink) -> None:
        while not run.conn.closed:
            try:
                if not run.conn.poll():
                    return
                message = run.conn.recv()
            except (EOFError, OSError):
                run.conn.close()
                return
            kind = message[0]
            if kind == "started":
                pid = message[1]
                try:
                    created = psutil.Process(pid).create_time()
                except psutil.Error:
                    created = None
                sink.started(token, pid, created)
            elif kind == "progress":
                sink.progress(token, message[1])
            elif kind == "result":
                run.result = Outcome(message[1], output=message[2], error=message[3])

    def shutdown(self, grace: float) -> None:
        for token in list(self._running):
            # A StopReason value (the worker may parse it); the work is recovered to
            # ENQUEUED with this same reason.
            self.stop(token, StopReason.SCHEDULER_RESTARTED.value)
        deadline = time.monotonic() + grace
        for run in self._running.values():
            run.process.join(max(0.0, deadline - time.monotonic()))
            reaped = run.process.exitcode is not None
            _kill_group(run.process.pid, signal.SIGKILL, group_only=reaped)
            run.process.join(1.0)
        self._running.clear()
