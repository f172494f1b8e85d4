"""The body of a process that runs one attempt and reports over a pipe (the Dask side).

Runs in a process of its own group (so a stop kills every process the worker started),
with stdout and stderr going to the attempt's log file. The attempt itself is
``attempt.run_attempt``, as in every executor. Messages to the parent: ``("started", pid)``,
``("progress", dict)``, ``("result", outcome)`` (its wire form, ``attempt.to_wire``).
From the parent: ``("stop", reason)``.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Any

from .._rules import Outcome, OutcomeKind
from .attempt import run_attempt, to_wire, worker_parameters
from .process_groups import become_group_leader, end_own_group, kill_leftovers


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


def run_attempt_process(conn: Any, attempt: Any) -> None:
    """Entry point of the attempt's process (``attempt`` is an ``AttemptSpec``)."""
    become_group_leader(subreaper=True)
    _redirect_output(attempt.log_path)
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    params = worker_parameters(attempt, lambda values: send(("progress", values)))

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
    # What the attempt left running dies before its result is told (as a subreaper this
    # process has every orphan below it, whatever its session).
    outcome, seconds = run_attempt(attempt, params, after=kill_leftovers)
    try:
        send(("result", to_wire(attempt.token, outcome, seconds)))
    except Exception:  # an output that cannot be sent is the worker's failure, not ours
        send(("result", to_wire(attempt.token, Outcome(OutcomeKind.FAILURE,
                                                       error=traceback.format_exc()))))
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit at once: a thread the worker left running must not keep the attempt alive.
    os._exit(0)
