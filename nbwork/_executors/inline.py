"""The inline executor: runs each attempt in the scheduler's own process, at submit time.

For fast, deterministic tests of the scheduler's logic (``Scheduler.step()`` with a manual
clock); no isolation, no hard stop. Never used by the daemon.
"""

from __future__ import annotations

import traceback
from typing import Any

from .._code import load_worker
from .._rules import Outcome
from ..data import Data
from ..worker import WorkerParameters, instantiate
from .base import AttemptSpec, Sink


class InlineExecutor:
    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self._reports: list[tuple[str, str, Any]] = []
        self.submitted: list[AttemptSpec] = []

    def running(self) -> set[str]:
        return set()

    def submit(self, attempt: AttemptSpec) -> None:
        self.submitted.append(attempt)
        token = attempt.token
        params = WorkerParameters(
            id=attempt.work_id, input_data=Data(attempt.input_data), tags=attempt.tags,
            run_attempt_count=attempt.run_attempt_count, generation=attempt.generation,
            triggered_content_paths=attempt.extra.get("triggered_content_paths", ()),
            progress_sink=lambda d: self._reports.append(("progress", token, d.to_dict())),
        )
        try:
            result = instantiate(load_worker(attempt.payload), params).run()
            outcome = Outcome(result.kind, output=result.output_data.to_dict())
        except Exception:
            outcome = Outcome("failure", error=traceback.format_exc())
        self._reports.append(("finished", token, outcome))

    def stop(self, token: str, reason: str) -> None:
        """Attempts finish inside ``submit``: there is never one to stop."""

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

    def shutdown(self, grace: float, sink: Any = None) -> None:
        self._reports.clear()
