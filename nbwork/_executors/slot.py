"""A warm worker process: runs attempts one after another, sent over a pipe.

Forking a fresh process for every attempt cost more than most works themselves, so the
local executor keeps a few of these alive (one per slot of its capacity). Each one:

- is the leader of its own process group and a *child subreaper*, so every process an
  attempt starts stays in reach: after each attempt, whatever it left running is killed,
  and a stop that the worker ignores kills the whole group (this process included; the
  executor starts a fresh one);
- redirects stdout and stderr to the attempt's log for the attempt's duration and restores
  the working directory afterwards;
- keeps the worker code it loaded (by content key), so a batch of works with one worker
  loads its code once.

What an attempt leaves in module globals stays for the next attempt in the same process,
as in one Android app process; threads it leaves running keep running.

Messages from the parent: ``("run", AttemptSpec)`` (queued here in order: the executor may
hand a slot a few short works at once), ``("stop", token, reason)`` (a queued attempt that
is stopped is skipped).
To the parent: ``("started", token, pid)``, ``("progress", token, dict)``,
``("result", token, kind, output, error)``.
"""

from __future__ import annotations

import collections
import ctypes
import os
import queue
import signal
import sys
import threading
import traceback
from typing import Any

import psutil

from .._code import load_worker
from ..data import Data
from ..worker import Result, WorkerParameters, instantiate

NICE_INCREMENT = 10
"""Worker processes run niced so the notebook stays responsive."""
CODE_CACHE_SIZE = 64
_PR_SET_CHILD_SUBREAPER = 36


def _become_group_leader_and_subreaper() -> None:
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        os.nice(NICE_INCREMENT)
    except OSError:
        pass
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: descendants are found while parents live
        pass


def _end_own_group() -> None:
    """The scheduler is gone: end this process and everything its attempt started, so a
    recovered work never runs twice at once."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        if os.getpgid(0) == os.getpid():
            os.killpg(0, signal.SIGKILL)
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _has_children() -> bool:
    """Cheap check for descendants (as subreaper, orphans become our children)."""
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                if f.read().strip():
                    return True
        return False
    except OSError:
        return bool(psutil.Process().children())


def _kill_leftovers() -> None:
    """Kill every process the last attempt left behind, and reap them."""
    if not _has_children():
        return
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0 and not _has_children():
            return


class _Output:
    """Points fds 1 and 2 at an attempt's log, and back at the process's own afterwards."""

    def __init__(self) -> None:
        self._saved = (os.dup(1), os.dup(2))

    def to_log(self, path: str | None) -> None:
        if not path:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    def restore(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)


def slot_main(conn: Any) -> None:
    """Entry point of a warm worker process."""
    _become_group_leader_and_subreaper()
    # Line-buffered streams on fds 1 and 2, whatever they point at for the moment.
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    send_lock = threading.Lock()
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    current: dict[str, WorkerParameters] = {}
    stopped_early: set[str] = set()  # stopped while still queued here: never run them

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    def listen() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                _end_own_group()
                return
            if message[0] == "run":
                inbox.put(message[1])
            elif message[0] == "stop":
                params = current.get(message[1])
                if params is None:
                    stopped_early.add(message[1])
                else:
                    print(f"nbwork: stop requested ({message[2]})", file=sys.stderr, flush=True)
                    try:
                        params.stop(message[2])
                    except Exception:
                        traceback.print_exc()

    threading.Thread(target=listen, name="nbwork-slot-listener", daemon=True).start()
    output = _Output()
    codes: collections.OrderedDict[str, Any] = collections.OrderedDict()
    home = os.getcwd()
    while True:
        attempt = inbox.get()
        token = attempt.token
        if token in stopped_early:
            stopped_early.discard(token)
            send(("result", token, Result.FAILURE, {}, None))
            continue
        params = WorkerParameters(
            id=attempt.work_id, input_data=Data(attempt.input_data), tags=attempt.tags,
            run_attempt_count=attempt.run_attempt_count, generation=attempt.generation,
            progress_sink=lambda data, token=token: send(("progress", token, data.to_dict())),
        )
        current[token] = params
        output.to_log(attempt.log_path)
        send(("started", token, os.getpid()))
        message = _run(attempt, params, codes)
        output.restore()
        try:
            os.chdir(home)
        except OSError:
            pass
        _kill_leftovers()
        del current[token]
        try:
            send(message)
        except Exception:  # an output that cannot be sent is the worker's failure, not ours
            send(("result", token, Result.FAILURE, {}, traceback.format_exc()))


def _run(attempt: Any, params: WorkerParameters, codes: collections.OrderedDict) -> tuple:
    try:
        worker = codes.get(attempt.code_key)
        if worker is None:
            worker = load_worker(attempt.payload)
            codes[attempt.code_key] = worker
            if len(codes) > CODE_CACHE_SIZE:
                codes.popitem(last=False)
        else:
            codes.move_to_end(attempt.code_key)
        result = instantiate(worker, params).run()
        return ("result", attempt.token, result.kind, result.output_data.to_dict(), None)
    except BaseException as exc:  # anything the worker raises fails the work, with its traceback
        error = traceback.format_exc()
        sys.stderr.write(error)
        if isinstance(exc, SystemExit) and not exc.code:
            return ("result", attempt.token, Result.SUCCESS, {}, None)
        return ("result", attempt.token, Result.FAILURE, {}, error)
