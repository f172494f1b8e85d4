"""One attempt, in whatever process runs it, and the one form its outcome travels in.

Every executor runs an attempt with ``run_attempt``: the inline executor in the scheduler's
own process, the local and Dask executors in a warm worker process (``slot.py``; on Dask
started by the task's fork server). What differs between them is around it (where output
goes, how a stop arrives, who is told the result), never the attempt itself:

- the worker code is loaded (``load``: a process that keeps code passes its cache);
- the ``Worker`` is built from ``WorkerParameters`` (``worker_parameters``) and run, with
  the attempt's stdout and stderr sent to its log while it runs (``output``);
- its ``Result`` becomes an ``Outcome``; anything it raises, ``sys.exit()`` included (a
  work succeeds only by returning), is a failure with its traceback.

Between processes an outcome is a plain dict of plain values (``to_wire`` / ``from_wire``):
a process running another version of nbwork (a Dask worker) still sends something this
side can read, or can tell it apart. Its progress goes out through a ``ProgressRelay``.
"""

from __future__ import annotations

import pickle
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from .._code import load_worker
from .._rules import Outcome, OutcomeKind
from ..data import Data
from ..worker import WorkerParameters, instantiate
from .base import AttemptSpec


class Output(Protocol):
    """Where an attempt's stdout and stderr go while it runs."""

    def to_log(self, path: str | None) -> None:
        """The attempt begins: its output goes to the log at ``path`` (None: nowhere new)."""

    def restore(self) -> None:
        """The attempt is over (and what it started is gone): the rest of its output is in
        its log, and the process's own streams are back."""


def load_payload(attempt: AttemptSpec) -> Any:
    """The worker code an attempt carries (the default ``load``)."""
    if attempt.payload is None:
        raise RuntimeError(f"attempt {attempt.token} carries no worker code")
    return load_worker(attempt.payload)


def worker_parameters(attempt: AttemptSpec,
                      progress: Callable[[dict], None]) -> WorkerParameters:
    """What the worker of ``attempt`` sees; its progress goes to ``progress`` (a dict)."""
    return WorkerParameters(
        id=attempt.work_id, input_data=Data(attempt.input_data), tags=attempt.tags,
        run_attempt_count=attempt.run_attempt_count, generation=attempt.generation,
        triggered_content_paths=attempt.extra.get("triggered_content_paths", ()),
        progress_sink=lambda data: progress(data.to_dict()),
    )


def exit_reason(exc: BaseException) -> str:
    """The first line of the error of a worker that called ``sys.exit()``: even
    ``sys.exit(0)`` fails the work (a work succeeds only by returning), and says so."""
    if isinstance(exc, SystemExit):
        code = "" if exc.code is None else repr(exc.code)
        return (f"worker called sys.exit({code}): a work succeeds only by returning "
                "(a Result or a dict), so it FAILED\n")
    return ""


def run_attempt(attempt: AttemptSpec, params: WorkerParameters, *,
                load: Callable[[AttemptSpec], Any] = load_payload,
                output: Output | None = None,
                after: Callable[[], None] | None = None) -> tuple[Outcome, float]:
    """Run one attempt here and now; its outcome and the seconds its worker ran.

    ``after`` runs once the worker returned and before its output is closed (a worker
    process kills what the attempt left running there, so what they printed is kept).
    """
    if output is not None:
        output.to_log(attempt.log_path)
    began = time.monotonic()
    try:
        result = instantiate(load(attempt), params).run()
        outcome = Outcome(OutcomeKind(result.kind), output=result.output_data.to_dict())
    except BaseException as exc:  # anything the worker raises fails the work, with its traceback
        error = traceback.format_exc()
        sys.stderr.write(error)
        outcome = Outcome(OutcomeKind.FAILURE, error=exit_reason(exc) + error)
    seconds = time.monotonic() - began
    try:
        if after is not None:
            after()
    finally:
        if output is not None:
            output.restore()
    return outcome, seconds


PROGRESS_INTERVAL = 0.1
"""Seconds between two progress messages of one attempt: a worker that reports progress
often (a blur, per strip) sent one per report, each waking the nbwork scheduler (a turn of
its loop, half a millisecond on a slow machine) or, on Dask, a trip through the Dask
scheduler. The latest progress is always sent, at most this late; none after the attempt
succeeded or failed (its record then shows no progress)."""


class ProgressRelay:
    """The progress messages of one attempt, at most one per ``PROGRESS_INTERVAL``; whoever
    runs the attempt calls ``send_due`` when ``due`` comes."""

    def __init__(self, send: Callable[[list], None], token: str) -> None:
        self._send = send
        self._token = token
        self._latest: dict | None = None
        self._sent_at: float | None = None
        self.due: float | None = None  # when the latest must be sent, if it waits

    def reported(self, values: dict) -> None:
        self._latest = values
        if self.due is None:
            self.due = (time.monotonic() if self._sent_at is None
                        else self._sent_at + PROGRESS_INTERVAL)

    def send_due(self) -> None:
        """Send the latest progress if it is due."""
        if self._latest is None or self.due is None:
            return
        now = time.monotonic()
        if now >= self.due:
            self._send(["progress", self._token, self._latest])
            self._latest, self.due, self._sent_at = None, None, now

    def flush(self) -> None:
        if self._latest is not None:
            self.due = time.monotonic()
            self.send_due()

    def end(self, outcome: Outcome) -> None:
        """The attempt ended: a progress still waiting goes now, unless it succeeded or
        failed (its record then shows no progress)."""
        if outcome.kind not in (OutcomeKind.SUCCESS, OutcomeKind.FAILURE):
            self.flush()
        self._latest = self.due = None


# --- the wire form ----------------------------------------------------------------------


def to_wire(token: str, outcome: Outcome, seconds: float = 0.0) -> dict[str, Any]:
    """An outcome as plain values, to send to another process."""
    return {"token": token, "kind": outcome.kind.value, "output": outcome.output,
            "error": outcome.error, "stop_reason": outcome.stop_reason, "seconds": seconds}


def from_wire(message: Any) -> tuple[str, Outcome, float]:
    """``(token, outcome, seconds)`` from what ``to_wire`` made; a ``ValueError`` for
    anything else (say, a worker running another version of nbwork)."""
    try:
        outcome = Outcome(OutcomeKind(message["kind"]), output=message.get("output") or {},
                          error=message.get("error"), stop_reason=message.get("stop_reason"))
        return str(message["token"]), outcome, float(message.get("seconds") or 0.0)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ValueError(f"not an nbwork outcome: {type(message).__name__}") from exc


def send_message(conn: Any, message: Any) -> None:
    """``conn.send(message)`` (a ``multiprocessing`` pipe end), read back by ``conn.recv()``
    as before, without its ``ForkingPickler``: that builds a pickler and copies its table
    of reducers for every message, a tenth of a warm worker's time per no-op attempt on a
    slow machine. Nothing sent here holds a pipe, socket or other object only it reduces."""
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
