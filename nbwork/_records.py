"""From a request to the record the store keeps: the one place that maps a ``WorkRequest``
onto a ``WorkSpec`` (androidx.work's ``WorkSpec``) and its worker's code, and that says which
fields of a record a request decides.

Every path that writes a request goes through ``RecordMaker.new_work``: ``enqueue``, unique
work and chains (with their prerequisites and unique name), ``update_work``, and the
scheduler's hot folders (with their watch tag).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._code import serialize_worker
from ._spec import WorkSpec
from .request import MERGER_NAMES, PeriodicWorkRequest, WorkRequest

REQUEST_FIELDS = ("worker_name", "code_key", "input", "tags", "constraints", "initial_delay",
                  "backoff_policy", "backoff_delay", "keep_results_for", "repeat_interval",
                  "flex_interval", "input_merger")
"""The fields of a record that its request decides: what ``update_work`` replaces (the rest
is the work's identity and place, or what happened to it)."""


@dataclass
class NewWork:
    """A work to insert: its record (prerequisites inside the batch already set) and code."""

    spec: WorkSpec
    payload: bytes


def spec_of_request(request: WorkRequest, code_key: str, prerequisites: tuple[str, ...],
                    unique_name: str | None) -> WorkSpec:
    """The record a request is stored as (its worker's code is stored under ``code_key``)."""
    periodic = isinstance(request, PeriodicWorkRequest)
    return WorkSpec(
        id=request.id,
        worker_name=request.worker_name,
        code_key=code_key,
        input=request.input_data.to_dict(),
        tags=tuple(sorted(request.tags)),
        unique_name=unique_name,
        prerequisites=prerequisites,
        input_merger=MERGER_NAMES[request.input_merger],
        run_after=request.run_after.value,
        constraints=request.constraints.to_dict(),
        initial_delay=request.initial_delay,
        backoff_policy=request.backoff_policy.value,
        backoff_delay=request.backoff_delay,
        keep_results_for=request.keep_results_for,
        repeat_interval=request.repeat_interval if periodic else None,
        flex_interval=request.flex_interval if periodic else None,
        log_name=f"{request.id}.log",
    )


class RecordMaker:
    """Makes the records of requests, serializing each worker once however many requests
    share it (a chain of one worker, a burst of files for one hot folder)."""

    def __init__(self) -> None:
        # id(worker) -> (worker, key, payload); the worker is kept so that its id is not
        # reused by another object while this maker lives.
        self._codes: dict[int, tuple[Any, str, bytes]] = {}

    def code_of(self, request: WorkRequest) -> tuple[str, bytes]:
        """``(content key, payload)`` of the request's worker."""
        worker = request.worker
        known = self._codes.get(id(worker))
        if known is None or known[0] is not worker:
            known = (worker, *serialize_worker(worker, request.worker_name))
            self._codes[id(worker)] = known
        return known[1], known[2]

    def new_work(self, request: WorkRequest, prerequisites: tuple[str, ...] = (),
                 unique_name: str | None = None, tag: str | None = None) -> NewWork:
        """The record and code of ``request``; ``tag``: one more tag the writer adds (a hot
        folder's)."""
        code_key, payload = self.code_of(request)
        spec = spec_of_request(request, code_key, prerequisites, unique_name)
        if tag is not None:
            spec.tags = tuple(sorted({*spec.tags, tag}))
        return NewWork(spec, payload)
