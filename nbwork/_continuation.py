"""``WorkContinuation``: a chain (or graph) of requests, enqueued together in one step.

It only collects steps; ``enqueue()`` hands the manager each request with its
prerequisites and the unique groups of the chain, and the manager writes them at once.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import _ops
from ._arguments import Requests, as_request_list, check_distinct
from .errors import InvalidRequestError
from .info import WorkInfo, WorkQuery, work_infos_html
from .request import ExistingWorkPolicy, PeriodicWorkRequest, WorkRequest

if TYPE_CHECKING:
    from .manager import Operation, WorkManager


class WorkContinuation:
    """A chain (or graph) of requests to enqueue together: ``begin_with(a).then(b)``."""

    def __init__(self, manager: WorkManager, requests: list[WorkRequest],
                 parents: Sequence["WorkContinuation"] = (),
                 unique: tuple[str, ExistingWorkPolicy] | None = None,
                 unique_name: str | None = None) -> None:
        for request in requests:
            if isinstance(request, PeriodicWorkRequest):
                raise InvalidRequestError(
                    "periodic work cannot be chained; enqueue it with wm.enqueue() or "
                    "wm.enqueue_unique_periodic_work()"
                )
        self.manager = manager
        self.requests = list(requests)
        self.parents = list(parents)
        self.unique = unique
        self.unique_name = unique[0] if unique else unique_name
        self.enqueued = False
        _check_no_repeats(self)

    def then(self, requests: Requests) -> "WorkContinuation":
        """Add a step that runs after every request of this step has succeeded (or, for a
        request with ``run_after=RunAfter.ALL_FINISHED``, finished)."""
        return WorkContinuation(self.manager, as_request_list(requests, "then()"), [self],
                                unique_name=self.unique_name)

    @staticmethod
    def combine(continuations: Sequence["WorkContinuation"]) -> "WorkContinuation":
        """Join chains: a ``then`` after this depends on the last step of each."""
        continuations = list(continuations)
        if not continuations or not all(isinstance(c, WorkContinuation) for c in continuations):
            raise InvalidRequestError("combine() takes a non-empty list of WorkContinuations")
        managers = {c.manager.store_path for c in continuations}
        if len(managers) > 1:
            raise InvalidRequestError("combine() needs continuations of the same WorkManager")
        return WorkContinuation(continuations[0].manager, [], continuations)

    @property
    def ids(self) -> list[str]:
        """Ids of every request in this continuation and the ones before it."""
        return [r.id for c in self._graph() for r in c.requests]

    def _graph(self) -> list["WorkContinuation"]:
        """Continuations in dependency order (parents first), each once."""
        order: list[WorkContinuation] = []
        seen: set[int] = set()

        def visit(c: WorkContinuation) -> None:
            if id(c) in seen:
                return
            seen.add(id(c))
            for parent in c.parents:
                visit(parent)
            order.append(c)

        visit(self)
        return order

    def _leaves(self) -> list[str]:
        if self.requests:
            return [r.id for r in self.requests]
        return [i for p in self.parents for i in p._leaves()]

    def enqueue(self) -> "Operation":
        """Enqueue every request of the graph not yet enqueued, in one atomic step."""
        graph = [c for c in self._graph() if not c.enqueued]
        items: list[tuple[WorkRequest, tuple[str, ...]]] = []
        groups: dict[int, _ops.UniqueGroup] = {}
        root_of: dict[int, int] = {}
        # Steps of a named chain whose policy was applied by an earlier enqueue(): as in
        # WorkManager they go under the name too (no policy: they only extend the chain).
        later_steps: dict[str, str] = {}
        for c in graph:
            prerequisites = tuple(i for p in c.parents for i in p._leaves())
            items.extend((r, prerequisites) for r in c.requests)
            if c.unique:
                groups[id(c)] = _ops.UniqueGroup(c.unique[0], c.unique[1],
                                                 roots=[r.id for r in c.requests])
                root_of[id(c)] = id(c)
            elif c.unique_name and len(c.parents) == 1 and id(c.parents[0]) in root_of:
                root_of[id(c)] = root_of[id(c.parents[0])]
            elif c.unique_name:
                later_steps.update((r.id, c.unique_name) for r in c.requests)
            if id(c) in root_of:
                groups[root_of[id(c)]].members.extend(r.id for r in c.requests)
        operation = self.manager._write(items, list(groups.values()), later_steps)
        for c in graph:
            c.enqueued = True
        return operation

    def get_work_infos(self) -> list[WorkInfo]:
        return self.manager.get_work_infos(WorkQuery(ids=self.ids))

    def __repr__(self) -> str:
        steps = " -> ".join(
            "[" + ", ".join(r.worker_name.rsplit(".", 1)[-1] for r in c.requests) + "]"
            for c in self._graph() if c.requests)
        return f"WorkContinuation({steps})"

    def _repr_html_(self) -> str:
        """The steps; once enqueued, each work's state (for notebooks without widgets)."""
        title = f"<code>{html.escape(repr(self))}</code>"
        if not self.enqueued:
            return f"{title} not enqueued yet"
        return title + work_infos_html(self.get_work_infos())


def _check_no_repeats(continuation: WorkContinuation) -> None:
    check_distinct([r for c in continuation._graph() for r in c.requests])
