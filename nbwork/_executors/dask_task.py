"""What runs on a Dask worker: one attempt per Dask task, in a worker process it can kill.

``run_attempt_task`` is the task the Dask executor submits. It hands the attempt to a warm
worker process — the local executor's (``slot.py``), started by a fork server
(``launcher.py``), since a Dask worker process may not start ``multiprocessing`` children
— kept for the next task once the attempt returned, as the local executor keeps its own
(a fresh process per attempt cost more than most works). It forwards the worker's
progress to the nbwork scheduler as Dask events (``Worker.log_event`` on the executor's
topic), and returns the outcome — with the attempt's output log, which lives on this
machine — as the task's result. The scheduler fences that result by the attempt token.
A process that was stopped hard, died or is unwanted is ended, never reused.

Stops arrive out of band (``Client.run(stop_attempt, ...)``, on the worker's event loop):
the task sends the worker a stop message, then terminates its process group after the
grace period, exactly as the local executor does. An attempt also ends itself, at once,
when nobody can take its result any more: its Dask task was released (the nbwork
scheduler that submitted it died or lost the cluster), the Dask worker is closing, or a
newer executor of the same store says it is a stray (``end_strays``).

Every function here runs inside the Dask worker process and imports ``distributed`` there.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pickle
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import wait as wait_for
from typing import Any

from .._rules import Outcome, OutcomeKind
from ..info import StopReason
from .attempt import ProgressRelay, from_wire, send_message, to_wire
from .base import AttemptSpec
from .capture import salvage
from .launcher import Child, Launcher
from .process_groups import GraceThenKill, exit_description, kill_group
from .slot import CODE_CACHE_SIZE

log = logging.getLogger("nbwork.dask")

ORPHAN_CHECK_INTERVAL = 0.5
"""How often (seconds) a running attempt checks that someone still wants its result."""
LOG_LIMIT = 1 << 20
"""At most this many bytes of an attempt's output go back to the store (the end is kept)."""
EVENT_LIMIT = 64 << 10
"""A result up to this size (pickled) is also pushed to the nbwork scheduler as an event, so
that it need not fetch it: a fetch is a round trip through the Dask scheduler to the worker
(``Worker.get_data``), which was most of the Dask worker's time per no-op work."""
_EARLY_STOPS_KEPT = 1000

_launcher = Launcher()
_lock = threading.Lock()
_running: dict[str, "_Remote"] = {}
_idle: list[Child] = []  # warm worker processes waiting for an attempt
_logs: str | None = None  # see _log_dir
# Stops that arrived before their task started here (broadcast to every worker).
_early_stops: collections.OrderedDict[str, str] = collections.OrderedDict()


def task_key(token: str) -> str:
    return f"nbwork-attempt-{token}"


class _Remote:
    """One attempt running in this worker process, as the out-of-band calls see it."""

    def __init__(self, token: str, owner: str, executor_id: str) -> None:
        self.token = token
        self.owner = owner
        self.executor_id = executor_id
        self.stop_reason: str | None = None
        self.grace = 0.0
        self.stray = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)

    def poke(self) -> None:
        try:
            os.write(self.wake_w, b"!")
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.wake_r)
        os.close(self.wake_w)


# --- out-of-band calls (Client.run: on the worker's event loop, so they only take notes) ---


async def stop_attempt(token: str, reason: str, grace: float) -> None:
    """Stop the attempt ``token`` if it runs here; remember the stop if it has not started."""
    with _lock:
        remote = _running.get(token)
        if remote is None:
            _early_stops[token] = reason
            while len(_early_stops) > _EARLY_STOPS_KEPT:
                _early_stops.popitem(last=False)
            return
        if remote.stop_reason is None:
            remote.stop_reason, remote.grace = reason, grace
        remote.poke()  # under the lock: the task closes the pipe only once it left _running


async def end_strays(owner: str, executor_id: str) -> None:
    """End every attempt of store ``owner`` started by another executor than
    ``executor_id``: only one scheduler runs per store, so those are left over from a dead
    one (or from a connection to the cluster that was lost) and their results are unwanted."""
    with _lock:
        strays = [r for r in _running.values()
                  if r.owner == owner and r.executor_id != executor_id]
        for remote in strays:
            remote.stray = True
            remote.poke()


# --- the task -----------------------------------------------------------------------------


def _unwanted(worker: Any, key: str) -> bool:
    """True when this task's result can no longer be taken (released task, closing worker)."""
    try:
        if getattr(worker.status, "name", "running") not in ("running", "paused"):
            return True
        state = worker.state.tasks.get(key)
        return state is None or state.state in ("cancelled", "released", "forgotten")
    except Exception:  # a distributed without these attributes: rely on end_strays
        return False


def _note(log_path: str, text: str) -> None:
    """Say in the attempt's own log what happened to it here (it goes back to the store)."""
    log.info("%s", text)
    try:
        with open(log_path, "a") as f:
            f.write(f"nbwork: {text}\n")
    except OSError:
        pass


def _read_log(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_LIMIT))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    if size > LOG_LIMIT:
        text = f"[nbwork: {size - LOG_LIMIT} earlier bytes of output cut]\n{text}"
    return text


def _where(worker: Any) -> str:
    return f"Dask worker {worker.address} (host {socket.gethostname()})"


def _explain(error: str | None, worker: Any) -> str | None:
    """Add where the attempt ran to an error about a file it could not read."""
    if error and any(s in error for s in ("FileNotFoundError", "PermissionError",
                                          "No such file or directory")):
        error += (f"\nnbwork: this attempt ran on the {_where(worker)}. Files named in the "
                  "work's Data must be on a path every Dask worker can read (a shared file "
                  "system), under the same name.")
    return error


def run_attempt_task(attempt_blob: bytes, topic: str, owner: str, executor_id: str) -> dict:
    """The Dask task of one attempt (a pickled ``AttemptSpec``). Returns its outcome in
    the wire form (``attempt.to_wire``, with how many ``seconds`` the worker ran, from its
    start to its result) and the attempt's output ``log``."""
    from distributed import get_worker

    attempt: AttemptSpec = pickle.loads(attempt_blob)
    worker = get_worker()
    token = attempt.token
    remote = _Remote(token, owner, executor_id)
    with _lock:
        early = _early_stops.pop(token, None)
        if early is None:
            _running[token] = remote
    if early is not None:
        remote.close()
        return {**to_wire(token, Outcome(OutcomeKind.STOPPED, stop_reason=early)), "log": ""}
    log_path = os.path.join(_log_dir(worker), f"{token}.log")
    child = None
    keep = False
    try:
        child = _hand_over(dataclasses.replace(attempt, log_path=log_path))
        outcome, seconds, keep = _supervise(worker, task_key(token), remote, child, topic,
                                            partial(_note, log_path))
    except Exception as exc:
        log.exception("attempt %s could not run", token)
        outcome, seconds = Outcome(OutcomeKind.CRASH, error=(
            f"the attempt could not be started on the {_where(worker)}: {exc}")), 0.0
    finally:
        with _lock:
            _running.pop(token, None)
        if child is not None:
            _put_back(child, keep, log_path)
        remote.close()
        text = _read_log(log_path)
        try:
            os.unlink(log_path)
        except OSError:
            pass
    if outcome.kind in (OutcomeKind.FAILURE, OutcomeKind.RETRY):
        outcome = dataclasses.replace(outcome, error=_explain(outcome.error, worker))
    result = {**to_wire(token, outcome, seconds), "log": text}
    _push(worker, topic, token, result)
    return result


def _push(worker: Any, topic: str, token: str, result: dict) -> None:
    """Send a small ``result`` ahead of the task's end, on the same stream as the task's
    completion (so it arrives first). The task still returns it: should the event be lost,
    the executor fetches it as before."""
    try:
        blob = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an output that does not pickle: the fetch says why
        return
    if len(blob) <= EVENT_LIMIT:
        worker.log_event(topic, ["result", token, blob])


def _log_dir(worker: Any) -> str:
    """This worker process's folder for its attempts' logs (and its worker processes'
    scratch files, see capture.py), made on first use. Inside the Dask worker's own local
    directory: Dask removes that when the worker stops, and the next worker on the machine
    purges the one of a worker that was killed (a folder in /tmp stayed behind)."""
    global _logs
    with _lock:
        if _logs is None:
            parent = getattr(worker, "local_directory", None)
            if not parent or not os.path.isdir(parent):
                parent = None
            _logs = tempfile.mkdtemp(prefix="nbwork-dask-", dir=parent)
        return _logs


def _hand_over(attempt: AttemptSpec) -> Child:
    """Send ``attempt`` to an idle warm worker process (a new one if none is idle, or if
    the idle one turns out dead); its code only if that process lacks it."""
    for tries_left in (1, 0):
        with _lock:
            child = _idle.pop() if _idle else None
        if child is None:
            child = _launcher.launch()
        try:
            _send_code(child, attempt)
            send_message(child.conn, ("run", dataclasses.replace(attempt, payload=None)))
            return child
        except OSError:  # it died while idle (killed): end it, and try another once
            _put_back(child, False, None)
            if not tries_left:
                raise
    raise AssertionError("unreachable")


def _send_code(child: Child, attempt: AttemptSpec) -> None:
    key = attempt.code_key
    if key in child.codes:
        child.codes.move_to_end(key)
        return
    payload = attempt.payload or b""
    send_message(child.conn, ("code", key, len(payload)))
    child.conn.send_bytes(payload)
    child.codes[key] = None
    while len(child.codes) > CODE_CACHE_SIZE:
        old, _ = child.codes.popitem(last=False)
        send_message(child.conn, ("forget", old))


def _put_back(child: Child, keep: bool, log_path: str | None) -> None:
    """An attempt is over: its process waits for the next one, or (``keep`` False: it was
    stopped hard, it died, it is unwanted) it is ended with its group and what it wrote
    and had not yet copied goes to ``log_path``."""
    if keep:
        with _lock:
            _idle.append(child)
        return
    kill_group(child.pid, signal.SIGKILL)
    child.close()
    if _logs is not None:
        salvage(_logs, child.pid, log_path)


def _supervise(worker: Any, key: str, remote: _Remote, child: Child, topic: str,
               note: Callable[[str], None]) -> tuple[Outcome, float, bool]:
    """Relay the worker process's messages until the attempt ends; carry out stops. The
    outcome, the seconds its worker ran, and whether the process can run another."""
    token = remote.token
    result: tuple[Outcome, float] | None = None
    stopping: str | None = None
    ending = GraceThenKill()
    exit_code: int | None = None
    next_check = time.monotonic() + ORPHAN_CHECK_INTERVAL
    ended = False
    progress = ProgressRelay(partial(worker.log_event, topic), token)
    while result is None and not ended:
        deadlines = [t for t in (ending.deadline(), next_check, progress.due) if t is not None]
        watched = [child.exit_fd, remote.wake_r] + ([] if child.conn.closed else [child.conn])
        ready = wait_for(watched, max(0.0, min(deadlines) - time.monotonic()))
        if remote.wake_r in ready:
            try:
                os.read(remote.wake_r, 4096)
            except OSError:
                pass
        if child.exit_fd in ready:
            exit_code = child.read_exit_code()
            ended = True
        # After the exit, read what is left: the result may have been the last message.
        result = _relay(child, progress) or result
        if result is not None or ended:
            # (Stopped, retried or dead: its record may show it.)
            progress.end(result[0] if result is not None else Outcome(OutcomeKind.CRASH))
            break
        progress.send_due()
        now = time.monotonic()
        if remote.stray or (now >= next_check and _unwanted(worker, key)):
            # Nobody takes this result any more, and the work may already run elsewhere:
            # end it at once, as a local attempt does when its scheduler dies.
            if stopping is None:
                note(f"ended on the {_where(worker)}: nobody can take its result any more "
                     "(its nbwork scheduler died or lost the cluster)")
            kill_group(child.pid, signal.SIGKILL)
            stopping = stopping or StopReason.SCHEDULER_RESTARTED.value
            ending.cancel()
        if now >= next_check:
            next_check = now + ORPHAN_CHECK_INTERVAL
        if remote.stop_reason is not None and stopping is None:
            stopping = remote.stop_reason
            try:
                send_message(child.conn, ("stop", token, stopping))
            except OSError:
                pass
            ending.start(now, remote.grace)
        due = ending.due(now)
        if due == signal.SIGTERM:
            note(f"the attempt ignored its stop for {remote.grace:g} s; terminating it")
        if due is not None:
            kill_group(child.pid, due)
    alive = not ended and not child.conn.closed
    if stopping is not None:
        return Outcome(OutcomeKind.STOPPED, stop_reason=stopping), 0.0, alive
    if result is not None:
        return result[0], result[1], alive
    return Outcome(OutcomeKind.CRASH, error=(
        f"{exit_description(exit_code)} (on the {_where(worker)})")), 0.0, False


def _relay(child: Any, progress: ProgressRelay) -> tuple[Outcome, float] | None:
    """Take the progress the child sent so far; its result, if it came."""
    result = None
    while not child.conn.closed:
        try:
            if not child.conn.poll():
                break
            message = child.conn.recv()
        except (EOFError, OSError):
            child.conn.close()
            break
        if message[0] == "progress":
            progress.reported(message[2])
        elif message[0] == "result":
            _, outcome, seconds = from_wire(message[1])
            result = outcome, seconds
    return result
