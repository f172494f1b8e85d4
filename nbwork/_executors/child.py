"""The body of a worker process: runs one attempt and reports over a pipe.

Runs in a process of its own group (so a stop kills every process the worker started),
with stdout and stderr going to the work's log file. Messages to the parent:
``("started", pid)``, ``("progress", dict)``, ``("result", kind, output, error)``.
From the parent: ``("stop", reason)``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import traceback
from typing import Any

from .._code import load_worker
from ..data import Data
from ..worker import Result, WorkerParameters, instantiate
from .leftovers import kill_descendants

NICE_INCREMENT = 10
"""Worker processes run niced so the notebook stays responsive."""


def _redirect_output(log_path: str | None) -> None:
    if not log_path:
        return
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # These streams live as long as the process: no context manager.
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115


_PR_SET_CHILD_SUBREAPER = 36


def become_group_leader(subreaper: bool = False) -> None:
    """Lead a process group of our own (a stop kills it whole), niced; as a *child
    subreaper*, processes orphaned below us become our children, so none escapes."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        os.nice(NICE_INCREMENT)
    except OSError:
        pass
    if subreaper:
        become_subreaper()


def become_subreaper() -> None:
    """Processes orphaned below this one become its children (Linux), so none escapes."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: descendants are found while parents live
        pass


def end_own_group() -> None:
    """Our parent is gone: end this process and everything its attempt started, so a
    recovered work never runs twice at once."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:  # first what left the group (start_new_session=True), while this process lives
        kill_descendants()
    except Exception:
        pass
    try:
        if os.getpgid(0) == os.getpid():  # only a group of our own (see become_group_leader)
            os.killpg(0, signal.SIGKILL)
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def exit_reason(exc: BaseException) -> str:
    """The first line of the error of a worker that called ``sys.exit()``: even
    ``sys.exit(0)`` fails the work (a work succeeds only by returning), and says so."""
    if isinstance(exc, SystemExit):
        code = "" if exc.code is None else repr(exc.code)
        return (f"worker called sys.exit({code}): a work succeeds only by returning "
                "(a Result or a dict), so it FAILED\n")
    return ""


def run_attempt(conn: Any, attempt: Any) -> None:
    """Entry point of the worker process (``attempt`` is an ``AttemptSpec``)."""
    become_group_leader(subreaper=True)
    _redirect_output(attempt.log_path)
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    params = WorkerParameters(
        id=attempt.work_id,
        input_data=Data(attempt.input_data),
        tags=attempt.tags,
        run_attempt_count=attempt.run_attempt_count,
        generation=attempt.generation,
        triggered_content_paths=attempt.extra.get("triggered_content_paths", ()),
        progress_sink=lambda data: send(("progress", data.to_dict())),
    )

    def listen() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                # The scheduler is gone (killed): nobody can take this attempt's result, and
                # the next scheduler runs the work again. End this attempt and everything it
                # started now, so the work never runs twice at once. (The new scheduler also
                # kills orphans, but only those whose pid reached the store before the crash.)
                end_own_group()
                return
            if message[0] == "stop":
                print(f"nbwork: stop requested ({message[1]})", file=sys.stderr, flush=True)
                try:
                    params.stop(message[1])
                except Exception:
                    traceback.print_exc()

    threading.Thread(target=listen, name="nbwork-stop-listener", daemon=True).start()
    send(("started", os.getpid()))
    try:
        worker = load_worker(attempt.payload)
        result = instantiate(worker, params).run()
        message = ("result", result.kind, result.output_data.to_dict(), None)
    except BaseException as exc:  # anything the worker raises fails the work, with its traceback
        error = traceback.format_exc()
        sys.stderr.write(error)
        message = ("result", Result.FAILURE, {}, exit_reason(exc) + error)
    # What the attempt left running dies before its result is told (as a subreaper this
    # process has every orphan below it, whatever its session).
    kill_descendants()
    try:
        send(message)
    except Exception:  # an output that cannot be sent is the worker's failure, not ours
        send(("result", Result.FAILURE, {}, traceback.format_exc()))
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit at once: a thread the worker left running must not keep the attempt alive.
    os._exit(0)
