"""What the Work panel sees of one store: a cache of its ``WorkInfo``, kept current cheaply.

A store may hold tens of thousands of works, and reading them all costs half a second. But
a finished work never changes again, so ``refresh()`` re-reads only what can have changed
since the last look: the works that were unfinished, plus the ids that are new (the state
indexes list every id without reading any work). When the store's change counter stands
still, a refresh reads one number. Everything goes through the public ``WorkManager`` API;
the view never starts a scheduler (``resume=False``) and writes only when asked to cancel
or prune.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nbwork import WorkInfo, WorkManager, WorkQuery, WorkState, in_chain_order
from nbwork.explain import error_headline

PAGE_LIMIT = 500
"""The most rows one page of the list may ask for."""
RECENT = 3600.0
READ_SLICE = 250
NOTICES_KEPT = 200
"""How many "a chain finished" notices the view remembers for pages that poll."""


def _recent(info: WorkInfo) -> bool:
    """Enqueued in the last RECENT seconds: on a first look at a store, such finished work
    may still be news to a page opened before the store was (pages filter by their own
    start)."""
    return bool(info.enqueue_time) and info.enqueue_time.timestamp() > time.time() - RECENT


def _epoch(when: datetime | None) -> float | None:
    return when.timestamp() if when else None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return repr(value)


def data_dict(data: Any) -> dict[str, Any]:
    """A ``Data`` as JSON-ready values (bytes become a size: a page shows text only)."""
    return {str(k): _jsonable(v) for k, v in data.items()}


def exception_line(error: str | None) -> str:
    """The line that says what went wrong (``ValueError: bad image``), as every view shows
    it."""
    return error_headline(error)


def row(info: WorkInfo) -> dict[str, Any]:
    """The JSON of one list row."""
    percent = info.progress.get("percent")
    return {
        "id": info.id,
        "state": info.state.value,
        "worker": info.worker_name.rsplit(".", 1)[-1],
        "worker_name": info.worker_name,
        "tags": sorted(info.tags),
        "unique_work_name": info.unique_work_name,
        "attempts": info.run_attempt_count,
        "progress": data_dict(info.progress),
        "percent": percent if isinstance(percent, (int, float)) and not isinstance(
            percent, bool) else None,
        "stop_reason": info.stop_reason.value if info.stop_reason else None,
        "error_line": exception_line(info.error),
        "enqueue_time": _epoch(info.enqueue_time),
        "start_time": _epoch(info.start_time),
        "finish_time": _epoch(info.finish_time),
        "next_schedule_time": _epoch(info.next_schedule_time),
        "is_periodic": info.is_periodic,
        "prerequisites": list(info.prerequisites),
        "dependents": list(info.dependents),
    }


@dataclass(frozen=True)
class Filter:
    """Which rows a page shows: every non-empty field must match (text: a substring of the
    id, worker, tags, unique name or error line, any case)."""

    states: tuple[WorkState, ...] = ()
    tags: tuple[str, ...] = ()
    unique_work_names: tuple[str, ...] = ()
    text: str = ""

    def matches(self, info: WorkInfo, ignore_state: bool = False) -> bool:
        if self.states and not ignore_state and info.state not in self.states:
            return False
        if self.tags and not info.tags.intersection(self.tags):
            return False
        if self.unique_work_names and info.unique_work_name not in self.unique_work_names:
            return False
        if self.text:
            needle = self.text.lower()
            haystack = " ".join([info.id, info.worker_name, *info.tags,
                                 info.unique_work_name or "", exception_line(info.error)])
            if needle not in haystack.lower():
                return False
        return True


@dataclass
class Notice:
    """A chain (or a single work) reached its end: what a page may toast about."""

    seq: int
    id: str
    state: str
    worker: str
    size: int
    enqueue_time: float | None
    error_line: str = ""
    ids: list[str] = field(default_factory=list)


class StoreView:
    """The panel's cache of one store (thread-safe: refreshed on a worker thread)."""

    def __init__(self, path: str) -> None:
        self.path = path
        # A viewer only looks: it neither starts a scheduler nor creates a store.
        self.manager = WorkManager(path, resume=False, create=False)
        self._lock = threading.RLock()
        self._infos: dict[str, WorkInfo] = {}
        self._unfinished: set[str] = set()
        self._order: list[str] | None = None  # newest chains first; None: to sort again
        self._counter: int | None = None
        self._notices: deque[Notice] = deque(maxlen=NOTICES_KEPT)
        self._seq = itertools.count(1)
        self.last_seq = 0

    @property
    def counter(self) -> int | None:
        return self._counter

    def refresh(self) -> bool:
        """Bring the cache up to date; True when something changed."""
        with self._lock:
            counter = self.manager.change_counter()  # before the reads: a change in
            if counter == self._counter:  # between shows up as a change next time
                return False
            first = self._counter is None
            ids = set(self.manager.get_work_ids())
            gone = self._infos.keys() - ids
            new = ids - self._infos.keys()
            again = (self._unfinished & ids) | new
            fresh = self._read(sorted(again))
            for id in gone:
                del self._infos[id]
            self._unfinished -= gone
            ended = []
            for info in fresh:
                if not info.state.is_finished:
                    self._unfinished.add(info.id)
                elif info.id in self._unfinished or (info.id in new and (
                        not first or _recent(info))):
                    self._unfinished.discard(info.id)
                    ended.append(info)
                self._infos[info.id] = info
            # Works that vanished between listing and reading: gone next time round.
            for id in again - {i.id for i in fresh}:
                self._infos.pop(id, None)
                self._unfinished.discard(id)
            if gone or new:
                self._order = None
            self._counter = counter
            self._notice_chains(ended)
            return True

    def _read(self, ids: list[str]) -> list[WorkInfo]:
        # In slices: a query matches each work against its tuple of ids, so one query of
        # 10,000 ids costs seconds where 40 of 250 cost a tenth of one.
        return [info for start in range(0, len(ids), READ_SLICE)
                for info in self.manager.get_work_infos(
                    WorkQuery(ids=ids[start:start + READ_SLICE]))]

    def _chain_of(self, info: WorkInfo) -> list[WorkInfo]:
        """The works linked to ``info`` through prerequisites and dependents."""
        seen = {info.id}
        todo = [info]
        chain = []
        while todo:
            current = todo.pop()
            chain.append(current)
            for link in (*current.prerequisites, *current.dependents):
                if link not in seen and link in self._infos:
                    seen.add(link)
                    todo.append(self._infos[link])
        return chain

    def _notice_chains(self, ended: list[WorkInfo]) -> None:
        done: set[str] = set()
        for info in ended:
            if info.id in done:
                continue
            chain = self._chain_of(info)
            done.update(i.id for i in chain)
            if not all(i.state.is_finished for i in chain):
                continue
            failed = [i for i in chain if i.state is WorkState.FAILED]
            if failed:
                state, about = "FAILED", failed[0]
            elif all(i.state is WorkState.SUCCEEDED for i in chain):
                state, about = "SUCCEEDED", in_chain_order(chain)[-1]
            else:
                continue  # cancelled: the user did it, no toast needed
            seq = next(self._seq)
            self.last_seq = seq
            self._notices.append(Notice(
                seq=seq, id=about.id, state=state, worker=row(about)["worker"],
                size=len(chain), enqueue_time=_epoch(about.enqueue_time),
                error_line=exception_line(about.error), ids=sorted(i.id for i in chain)))

    def notices(self, after: int) -> list[dict[str, Any]]:
        with self._lock:
            return [vars(n) for n in self._notices if n.seq > after]

    def _ordered(self) -> list[str]:
        if self._order is None:
            infos = self._infos.values()
            by_time: dict[float, list[WorkInfo]] = {}
            for info in infos:
                by_time.setdefault(_epoch(info.enqueue_time) or 0.0, []).append(info)
            order = []
            for when in sorted(by_time, reverse=True):
                group = by_time[when]
                order.extend(i.id for i in (in_chain_order(group) if len(group) > 1 else group))
            self._order = order
        return self._order

    def page(self, where: Filter, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """One page of rows (newest chains first) and the counts per state of the works
        that match the filter's other fields."""
        with self._lock:
            counts = {s.value: 0 for s in WorkState}
            rows = []
            total = 0
            tags: dict[str, int] = {}
            for id in self._ordered():
                info = self._infos[id]
                if not where.matches(info, ignore_state=True):
                    continue
                counts[info.state.value] += 1
                for tag in info.tags:
                    tags[tag] = tags.get(tag, 0) + 1
                if where.states and info.state not in where.states:
                    continue
                if offset <= total < offset + limit:
                    rows.append(row(info))
                total += 1
            return {"store": self.path, "counter": self._counter, "total": total,
                    "offset": offset, "limit": limit, "counts": counts, "works": rows,
                    "tags": sorted(tags, key=lambda t: (-tags[t], t))[:50],
                    "notice_seq": self.last_seq, "now": time.time()}

    def ids_matching(self, where: Filter) -> list[str]:
        with self._lock:
            return [id for id, info in self._infos.items() if where.matches(info)]

    def cached(self, ids: Iterable[str]) -> dict[str, WorkInfo]:
        with self._lock:
            return {id: self._infos[id] for id in ids if id in self._infos}
