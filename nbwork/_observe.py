"""Following ``WorkInfo`` changes: ``wait``, ``observe`` and ``flow`` of ``WorkManager``.

Nothing here asks the scheduler anything: every follower reads the store's change counter
(one small read) and looks at its works only when it moved. One ``StoreWatcher`` thread per
store and process fans a change out to every observer; ``wait`` polls on its own thread,
more slowly the longer it waits.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._arguments import check_id
from ._continuation import WorkContinuation
from ._spec import WorkSpec
from ._store import Store, Unreadable
from .errors import InvalidInputError, StoreError
from .info import WorkInfo, WorkQuery
from .request import WorkRequest

if TYPE_CHECKING:
    from .manager import WorkManager

WATCH_INTERVAL = 0.01
"""How often (seconds) the watcher reads the store's change counter while anyone observes
and the store changed in the last ``WATCH_QUIET_AFTER`` seconds; ``WATCH_QUIET_INTERVAL``
while it did not (a live table of work that waits for an hour read it 100 times a second:
1 % of a slow machine's core, for nothing)."""
WATCH_QUIET_AFTER = 2.0
WATCH_QUIET_INTERVAL = 0.05
WAIT_POLL_SHARE = 0.01
MIN_WAIT_POLL = 0.001
MAX_WAIT_POLL = 0.05
"""``wait`` reads the store's change counter every this share of the time it has waited so
far (between MIN_ and MAX_WAIT_POLL seconds), and looks at its works only when the counter
moved: a short work's result is seen within a millisecond, while a wait for a flood of works
does not spend a core re-reading the state indexes after every commit of the scheduler (it
ends at most 1 % late)."""
ENSURE_RUNNING_INTERVAL = 0.5


def target_query(target: Any) -> tuple[WorkQuery, bool]:
    """(query, is it a single work) for the targets wait/observe/flow accept."""
    if isinstance(target, WorkQuery):
        return target, False
    if isinstance(target, WorkContinuation):
        return WorkQuery(ids=target.ids), False
    if isinstance(target, (str, WorkRequest)):
        return WorkQuery(ids=[check_id(target)]), True
    if isinstance(target, Iterable):
        return WorkQuery(ids=[check_id(t) for t in target]), False
    raise InvalidInputError(
        f"cannot watch a {type(target).__name__}; pass a work id, a request, a list of them, "
        "a WorkContinuation or a WorkQuery"
    )


def enqueue_order(spec: WorkSpec) -> tuple[float, int, str]:
    """Oldest first; the works of one enqueue call (a chain) in the order they were given."""
    return (spec.enqueue_time, spec.enqueue_order, spec.id)


# --- observing ------------------------------------------------------------------------------


class ObserverHandle:
    """Returned by ``observe``; ``cancel()`` stops the callbacks."""

    def __init__(self, watcher: "StoreWatcher", callback: Callable[[], None],
                 lock: threading.RLock) -> None:
        self._watcher = watcher
        self._callback = callback
        self._lock = lock
        self.active = True

    def cancel(self) -> None:
        """No callback starts after this returns (one in progress on another thread is
        waited for; calling it from inside the callback is fine)."""
        # The watcher thread works on a copy of its listener list, so removing the listener
        # alone could still let one more delivery through: the flag, under the delivery
        # lock, closes that gap.
        with self._lock:
            self.active = False
        self._watcher.remove(self._callback)


class StoreWatcher:
    """One thread per store in a process: reads the change counter and fans changes out."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.counter = store.change_counter()
        self._thread: threading.Thread | None = None

    def add(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(listener)
        self._ensure_thread()

    def remove(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="nbwork-watcher",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        changed_at = time.monotonic()
        while True:
            with self._lock:
                listeners = list(self._listeners)
                if not listeners:
                    self._thread = None
                    return
            try:
                counter = self.store.change_counter()
            except Exception:
                counter = self.counter
            now = time.monotonic()
            if counter != self.counter:
                self.counter = counter
                changed_at = now
                for listener in listeners:
                    try:
                        listener()
                    except Exception:  # one observer's bug must not stop the others
                        traceback.print_exc()
            quiet = now - changed_at >= WATCH_QUIET_AFTER
            time.sleep(WATCH_QUIET_INTERVAL if quiet else WATCH_INTERVAL)


_watchers: dict[str, StoreWatcher] = {}
_watchers_lock = threading.Lock()


def watcher_of(store: Store) -> StoreWatcher:
    """The process's watcher of ``store`` (one per path, shared by its managers)."""
    with _watchers_lock:
        return _watchers.setdefault(store.path, StoreWatcher(store))


def observe(manager: WorkManager, query: WorkQuery,
            callback: Callable[[list[WorkInfo]], None]) -> ObserverHandle:
    """Deliver the query's infos now and after every change that alters them."""
    last: list[list[WorkInfo] | None] = [None]
    lock = threading.RLock()

    def deliver() -> None:
        with lock:
            if not handle.active:
                return
            infos = manager.get_work_infos(query)
            if infos != last[0]:
                last[0] = infos
                callback(infos)

    handle = ObserverHandle(manager._watcher, deliver, lock)
    deliver()
    manager._watcher.add(deliver)
    return handle


# --- waiting ----------------------------------------------------------------------------


class Wait:
    """One ``wm.wait(...)``: looks at its works whenever the change counter moved."""

    def __init__(self, manager: WorkManager, query: WorkQuery, single: bool,
                 timeout: float | None) -> None:
        self.manager = manager
        self.store = manager._store
        self.query = query
        self.single = single
        self.timeout = timeout
        self.started = time.monotonic()
        self.deadline = None if timeout is None else self.started + timeout
        self.by_id = bool(query.ids) and not (query.states or query.tags
                                              or query.unique_work_names)
        # Works named by id are read one at a time, from the front: the first one that is
        # not finished ends a look (works tend to finish in order), and a finished record
        # never changes, so it is not read again. Reloading thousands of records (or the
        # state indexes) after every commit would slow down the very scheduler waited for.
        self.order = deque(dict.fromkeys(query.ids)) if self.by_id else deque()
        self.finished: dict[str, WorkSpec] = {}
        self.ensured_at = 0.0

    def run(self) -> Any:
        """The infos once every work is finished (one info for a single target)."""
        while True:
            seen = self.store.change_counter()
            done, result = self._look_by_id() if self.by_id else self._look_by_query()
            if done:
                return result
            self._pause_until_change(seen, result)

    def _look_by_id(self) -> tuple[bool, Any]:
        """(True, the result) when done, else (False, the ids still waited for)."""
        while self.order:
            spec = self.store.read(self.order[0])
            if isinstance(spec, Unreadable):
                raise StoreError(
                    f"work {spec.id} cannot be waited for: its stored record cannot be "
                    f"read ({spec.reason}), so it will never run. Remove it with "
                    "'nbwork prune --unreadable' (wm.prune_work(unreadable=True))")
            if spec is not None and not spec.state.is_finished:
                return False, list(self.order)
            if spec is not None:
                self.finished[spec.id] = spec
            self.order.popleft()
        if not self.finished:
            raise InvalidInputError(
                f"no work with id {', '.join(self.query.ids)} in this store")
        specs = sorted(self.finished.values(), key=enqueue_order)
        infos = [self.manager._info(s) for s in specs]
        return True, infos[0] if self.single else infos

    def _look_by_query(self) -> tuple[bool, Any]:
        infos = self.manager.get_work_infos(self.query)
        unfinished = [i.id for i in infos if not i.state.is_finished and not i.unreadable_reason]
        return (False, unfinished) if unfinished else (True, infos)

    def _pause_until_change(self, seen: int, waiting_ids: list[str]) -> None:
        """Sleep until the change counter moves past ``seen``; keep the scheduler running
        meanwhile; ``TimeoutError`` at the deadline."""
        while True:
            now = time.monotonic()
            if now - self.ensured_at >= ENSURE_RUNNING_INTERVAL:
                # Again and again, not once: a scheduler that dies while we wait (killed,
                # OOM) is replaced, or this wait would last until its timeout. One that
                # found the database damaged refuses to run: say so instead of waiting.
                self.store.check_not_damaged()
                self.manager.daemon.ensure_running()
                self.ensured_at = now
            if self.deadline is not None and now >= self.deadline:
                waiting = self.manager.get_work_infos(WorkQuery(ids=waiting_ids))
                states = ", ".join(f"{i.short_id} {i.state.value}" for i in waiting
                                   if not i.state.is_finished)
                raise TimeoutError(f"work not finished after {self.timeout:g} s: {states}")
            pause = min(MAX_WAIT_POLL,
                        max(MIN_WAIT_POLL, WAIT_POLL_SHARE * (now - self.started)))
            if self.deadline is not None:
                pause = min(pause, self.deadline - now)
            time.sleep(pause)
            if self.store.change_counter() != seen:
                return
