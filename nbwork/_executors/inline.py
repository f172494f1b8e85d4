"""The inline executor: runs each attempt in the scheduler's own process, at submit time.

For fast, deterministic tests of the scheduler's logic (``Scheduler.step()`` with a manual
clock); no isolation, no hard stop. Never used by the daemon. The attempt runs as in any
worker process (``attempt.run_attempt``), its printed output going to its log.

With ``hold=True`` it runs nothing: attempts stay running until the test ends them with
``finish(token, outcome)`` (an outcome the test makes up: a late result, a crash), which
the next ``poll`` reports; ``stopped`` lists the stop requests it received.
"""

from __future__ import annotations

from typing import Any

from .._rules import Outcome
from .attempt import run_attempt, worker_parameters
from .base import DEFAULT_STOP_GRACE, AttemptSpec, Sink
from .capture import StreamCapture


class InlineExecutor:
    def __init__(self, capacity: int = 1, hold: bool = False,
                 stop_grace: float = DEFAULT_STOP_GRACE) -> None:
        self.capacity = capacity
        self.stop_grace = stop_grace
        self.hold = hold
        self.submitted: list[AttemptSpec] = []
        self.stopped: list[tuple[str, str]] = []
        self._held: set[str] = set()
        self._reports: list[tuple[str, str, Any]] = []
        self._output = StreamCapture()

    def running(self) -> set[str]:
        return set(self._held)

    def room(self) -> int:
        return self.capacity - len(self._held)

    def submit(self, attempt: AttemptSpec) -> None:
        self.submitted.append(attempt)
        token = attempt.token
        if self.hold:
            self._held.add(token)
            return
        params = worker_parameters(
            attempt, lambda values: self._reports.append(("progress", token, values)))
        outcome, _ = run_attempt(attempt, params, output=self._output)
        self._reports.append(("finished", token, outcome))

    def finish(self, token: str, outcome: Outcome) -> None:
        """(``hold``) End attempt ``token`` with ``outcome``, reported at the next poll; any
        token will do, as a late report of an attempt that is not this executor's."""
        self._held.discard(token)
        self._reports.append(("finished", token, outcome))

    def stop(self, token: str, reason: str) -> None:
        """Noted in ``stopped``; an attempt run at submit time has finished already, and a
        held one ends only with ``finish``."""
        self.stopped.append((token, reason))

    def wait_objects(self) -> list[Any]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def poll(self, sink: Sink) -> None:
        reports, self._reports = self._reports, []
        for kind, token, value in reports:
            if kind == "progress":
                sink.progress(token, value)
            else:
                sink.finished(token, value)

    def shutdown(self, grace: float, sink: Sink | None = None) -> None:
        if sink is not None:  # what the attempts reported before the end
            self.poll(sink)
        self._reports.clear()
        self._held.clear()
