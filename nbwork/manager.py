"""The client API: ``WorkManager`` and ``WorkContinuation``.

A ``WorkManager`` is a view of one store directory. It validates requests, writes them in
one transaction, wakes (or starts) the store's scheduler, and reads ``WorkInfo`` back. Any
number of processes may use the same store at once.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from . import _ops, _watches
from ._code import serialize_worker
from ._daemon import Daemon
from ._executor_address import check_executor, require_distributed
from ._ops import spec_of_request as _spec_of
from ._spec import WorkSpec
from ._store import Store, Unreadable, check_durability
from ._storedir import sharing_problem
from ._time import Clock, to_seconds
from ._wake import notify
from ._watches import FolderWatch
from .errors import InvalidInputError, InvalidRequestError, StoreError
from .info import UpdateResult, WorkInfo, WorkQuery, WorkState
from .request import (
    ExistingPeriodicWorkPolicy,
    ExistingWorkPolicy,
    PeriodicWorkRequest,
    WorkRequest,
    _check_worker,
)
from .worker import is_worker_class, worker_name

Requests = Union[WorkRequest, Sequence[WorkRequest]]
WATCH_INTERVAL = 0.01
"""How often (seconds) the watcher reads the store's change counter while anyone observes."""
WAIT_POLL_SHARE = 0.01
MIN_WAIT_POLL = 0.001
MAX_WAIT_POLL = 0.05
# Decoded records and infos kept for queries (per WorkManager), forgotten all at once past it.
READ_MEMO_LIMIT = 20_000
"""``wait`` reads the store's change counter every this share of the time it has waited so
far (between MIN_ and MAX_WAIT_POLL seconds), and looks at its works only when the counter
moved: a short work's result is seen within a millisecond, while a wait for a flood of works
does not spend a core re-reading the state indexes after every commit of the scheduler (it
ends at most 1 % late)."""
ENSURE_RUNNING_INTERVAL = 0.5
READ_LOG_MAX_BYTES = 1 << 20
"""Bytes ``read_log`` returns by default: the end of a log, never all of a big one."""


def default_store_path() -> str:
    """``$NBWORK_HOME``, else ``$XDG_DATA_HOME/nbwork`` (``~/.local/share/nbwork``)."""
    home = os.environ.get("NBWORK_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "nbwork")


def _as_list(requests: Requests, what: str = "requests") -> list[WorkRequest]:
    items = [requests] if isinstance(requests, WorkRequest) else list(requests)
    if not items:
        raise InvalidRequestError(f"{what} is empty; pass at least one work request")
    for item in items:
        if not isinstance(item, WorkRequest):
            raise InvalidRequestError(
                f"expected a OneTimeWorkRequest (or a list of them), got {type(item).__name__}"
            )
    return items


@dataclass
class Operation:
    """What an enqueue or cancel did (WorkManager's ``Operation``, already complete)."""

    enqueued: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    cancelled_running: list[str] = field(default_factory=list)


class ObserverHandle:
    """Returned by ``observe``; ``cancel()`` stops the callbacks."""

    def __init__(self, watcher: "_Watcher", callback: Callable[[], None],
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


class _Watcher:
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
            if counter != self.counter:
                self.counter = counter
                for listener in listeners:
                    try:
                        listener()
                    except Exception:  # one observer's bug must not stop the others
                        import traceback

                        traceback.print_exc()
            time.sleep(WATCH_INTERVAL)


_watchers: dict[str, _Watcher] = {}
_watchers_lock = threading.Lock()


class WorkManager:
    """The entry point: enqueue, chain, query, observe and cancel work in one store.

    ``WorkManager.get_instance()`` uses the default store (``$NBWORK_HOME``, else a per-user
    data directory); ``WorkManager(path)`` an explicit one.
    """

    _instances: dict[str, "WorkManager"] = {}

    def __init__(self, path: str | os.PathLike | None = None,
                 executor: str | None = None, *, resume: bool = True,
                 durability: str | None = None, create: bool = True) -> None:
        """``executor``: where the store's work runs, ``"local"`` (worker processes on this
        machine) or ``"dask://HOST:PORT"`` (the Dask cluster whose scheduler is there). It is
        kept in the store, for every client and the scheduler; None keeps the store's choice
        (local if none was made). A change restarts a running scheduler: its running
        attempts go back to the queue and run again on the new executor.

        ``durability``: what an enqueue that returned survives, ``"process"`` (the default:
        any process crash, but a power loss may lose the last commits) or ``"power"`` (a
        power loss too: every commit waits for the disk). Kept in the store like the
        executor; None keeps the store's choice. A change restarts a running scheduler;
        other processes that have the store open take it when they open it again.

        ``resume=False``: opening the manager does not start a scheduler for work left
        unfinished (for tools that only look, like ``nbwork list``); an enqueue or a wait
        still does.

        ``create=False`` opens only an existing store: a path that is not one raises
        ``nbwork.errors.NotAStoreError`` (a ``StoreError``) and nothing is created."""
        address = None if executor is None else check_executor(executor)
        level = None if durability is None else check_durability(durability)
        if address is not None and address != "local":
            require_distributed()
        self._store = Store(os.fspath(path) if path is not None else default_store_path(),
                            create=create)
        self.clock: Clock = Clock()
        self.daemon = Daemon(self._store.path, store_dir=self._store.dir)
        with _watchers_lock:
            self._watcher = _watchers.setdefault(self._store.path, _Watcher(self._store))
        self._waits_in_progress = 0  # for tests that act while a wait() blocks
        # Queries reuse what they decoded while a record's stored bytes stay the same.
        self._read_memo: dict[str, tuple[bytes, WorkSpec]] = {}
        self._info_memo: dict[str, tuple[WorkSpec, WorkInfo]] = {}
        if address is not None and address != self._store.executor():
            self._store.set_executor(address)
            # The scheduler picked its executor when it started: start it again on this one.
            self.daemon.stop()
        if level is not None and level != self._store.durability():
            self._store.set_durability(level)
            # The scheduler's connections took the level when it opened the store.
            self.daemon.stop()
        # Work left unfinished (a reboot, an idle exit) resumes on the first client use.
        store = self._store
        if resume and (store.state_index(WorkState.ENQUEUED)
                       or store.state_index(WorkState.RUNNING)
                       or _watches.watch_records(store)):
            self.daemon.ensure_running()

    @classmethod
    def get_instance(cls) -> "WorkManager":
        """The WorkManager of the default store (one per process and path)."""
        path = default_store_path()
        if path not in cls._instances:
            cls._instances[path] = cls(path)
        return cls._instances[path]

    @property
    def store_path(self) -> str:
        return self._store.path

    @property
    def executor(self) -> str:
        """Where this store's work runs: ``"local"`` or ``"dask://HOST:PORT"``."""
        return self._store.executor()

    @property
    def durability(self) -> str:
        """What a commit survives: ``"process"`` or ``"power"`` (see ``__init__``)."""
        return self._store.durability()

    def __repr__(self) -> str:
        return f"WorkManager({self.store_path!r})"

    # --- enqueueing ---------------------------------------------------------------------

    def enqueue(self, requests: Requests) -> Operation:
        """Enqueue one request or a list of independent requests; durable when it returns."""
        items = _as_list(requests, "enqueue()")
        # Not through begin_with(): a continuation refuses periodic work (it cannot be
        # chained), but wm.enqueue(PeriodicWorkRequest(...)) is how periodic work starts.
        _check_distinct(items)
        return self._write([(r, ()) for r in items], [])

    def begin_with(self, requests: Requests) -> "WorkContinuation":
        """Start a chain: ``wm.begin_with([a, b]).then(c).enqueue()``."""
        return WorkContinuation(self, _as_list(requests, "begin_with()"))

    def begin_unique_work(self, name: str, policy: ExistingWorkPolicy | str,
                          requests: Requests) -> "WorkContinuation":
        """Start a chain that is unique work ``name``, with ``policy`` for existing work."""
        return WorkContinuation(self, _as_list(requests, "begin_unique_work()"),
                                unique=(_check_name(name), ExistingWorkPolicy.parse(policy)))

    def enqueue_unique_work(self, name: str, policy: ExistingWorkPolicy | str,
                            requests: Requests) -> Operation:
        """Enqueue ``requests`` (run in parallel) as unique work ``name``."""
        return self.begin_unique_work(name, policy, requests).enqueue()

    def enqueue_unique_periodic_work(self, name: str, policy: ExistingPeriodicWorkPolicy | str,
                                     request: PeriodicWorkRequest) -> Operation:
        """Enqueue periodic work under a unique name (KEEP, UPDATE or CANCEL_AND_REENQUEUE)."""
        if not isinstance(request, PeriodicWorkRequest):
            raise InvalidRequestError(
                "enqueue_unique_periodic_work takes a PeriodicWorkRequest; use "
                "enqueue_unique_work for one-time work"
            )
        group = _ops.UniqueGroup(_check_name(name), ExistingPeriodicWorkPolicy.parse(policy),
                                 members=[request.id], roots=[request.id])
        return self._write([(request, ())], [group])

    def update_work(self, request: WorkRequest) -> UpdateResult:
        """Change a not-yet-finished work to ``request`` (same id), ``generation`` + 1.

        Returns ``UpdateResult.APPLIED_IMMEDIATELY`` (a waiting work is rescheduled under
        the new request: its initial delay, interval or backoff), ``APPLIED_FOR_NEXT_RUN``
        (it is running: the attempt in flight is not stopped) or ``NOT_APPLIED`` (it is
        already finished). A ``str`` enum, equal to those names as plain strings.
        """
        if not isinstance(request, WorkRequest):
            raise InvalidRequestError(
                f"update_work takes a work request, not {type(request).__name__}")
        code_key, payload = serialize_worker(request.worker, request.worker_name)
        result = _ops.update(self._store, _spec_of(request, code_key, (), None), payload)
        if result is not UpdateResult.NOT_APPLIED:
            self._wake_scheduler()
        return result

    def _write(self, items: list[tuple[WorkRequest, tuple[str, ...]]],
               groups: list[_ops.UniqueGroup],
               named: dict[str, str] | None = None) -> Operation:
        """``named``: request id -> unique name, for works under a name but no policy."""
        names = {**(named or {}), **{m: g.name for g in groups for m in g.members}}
        codes: dict[int, tuple[str, bytes]] = {}
        works = []
        for request, prerequisites in items:
            key = id(request.worker)
            if key not in codes:
                codes[key] = serialize_worker(request.worker, request.worker_name)
            code_key, payload = codes[key]
            works.append(_ops.NewWork(_spec_of(request, code_key, prerequisites,
                                               names.get(request.id)), payload))
        outcome = _ops.enqueue(self._store, works, groups, self.clock.now())
        if outcome.enqueued or outcome.updated or outcome.stop:
            self._wake_scheduler()
        return Operation(enqueued=outcome.enqueued, dropped=outcome.dropped,
                         updated=outcome.updated, cancelled_running=outcome.stop)

    def _wake_scheduler(self) -> None:
        notify(self._store.dir.access)
        self.daemon.ensure_running()

    # --- reading ------------------------------------------------------------------------

    def _info(self, record: WorkSpec | Unreadable) -> WorkInfo:
        """The WorkInfo of a record; a stand-in (``WorkInfo.unreadable_reason``) for one that
        cannot be read or shown, so one bad record never fails a whole listing."""
        if isinstance(record, Unreadable):
            return WorkInfo.unreadable(record.id, record.reason, record.state)
        try:
            return record.to_info(self._store.log_dir)
        except Exception as exc:
            return WorkInfo.unreadable(record.id, f"{type(exc).__name__}: {exc}", record.state,
                                       record.worker_name)

    def get_work_info_by_id(self, id: str) -> WorkInfo | None:
        record = self._store.read(_check_id(id))
        return self._info(record) if record else None

    def get_work_infos_by_tag(self, tag: str) -> list[WorkInfo]:
        return self.get_work_infos(WorkQuery(tags=[tag]))

    def get_work_infos_for_unique_work(self, name: str) -> list[WorkInfo]:
        return self.get_work_infos(WorkQuery(unique_work_names=[name]))

    def get_work_infos(self, query: WorkQuery | None = None) -> list[WorkInfo]:
        """Every work matching ``query`` (all work when None), oldest first; the works
        enqueued together (a chain) in the order they were enqueued."""
        query = query or WorkQuery()
        store = self._store
        if query.ids:
            candidates: Iterable[str] = query.ids
        elif query.unique_work_names:
            candidates = [i for n in query.unique_work_names for i in store.unique_ids(n)]
        elif query.tags:
            candidates = [i for t in query.tags for i in store.tag_ids(t)]
        elif query.states:
            candidates = [i for s in query.states for i in store.state_index(s)]
        else:
            candidates = store.all_ids()
        if len(self._read_memo) > READ_MEMO_LIMIT:
            self._read_memo.clear()
            self._info_memo.clear()
        seen: set[str] = set()
        specs = []
        unreadable = []  # found through the query's own index: shown, never dropped
        for record in store.read_many(dict.fromkeys(candidates), self._read_memo):
            if isinstance(record, Unreadable):
                if not query.states or record.state in query.states:
                    unreadable.append(record)
                continue
            if record.id in seen or not _matches(record, query):
                continue
            seen.add(record.id)
            specs.append(record)
        specs.sort(key=_enqueue_order)
        return [*(self._memo_info(s) for s in specs), *(self._info(u) for u in unreadable)]

    def _memo_info(self, spec: WorkSpec) -> WorkInfo:
        """The info of a spec from the read memo: made once per stored version of a work
        (the live tables re-run the same queries on every change)."""
        hit = self._info_memo.get(spec.id)
        if hit is not None and hit[0] is spec:
            return hit[1]
        info = self._info(spec)
        self._info_memo[spec.id] = (spec, info)
        return info

    def get_work_ids(self, query: WorkQuery | None = None) -> list[str]:
        """The ids of the works matching ``query`` (all work when None), in no set order.

        Cheap for a query by state only (or no query): it reads the state indexes, not the
        works, so a viewer can notice new and removed works in a store of many thousands."""
        query = query or WorkQuery()
        if not (query.ids or query.tags or query.unique_work_names):
            states = query.states or tuple(WorkState)
            return [i for s in dict.fromkeys(states) for i in self._store.state_index(s)]
        return [i.id for i in self.get_work_infos(query)]

    def change_counter(self) -> int:
        """A number that changes whenever anything in the store changes (a state, progress,
        a new or removed work): two equal readings mean nothing changed in between. One
        small read: a viewer can follow a store by reading it a few times a second."""
        return self._store.change_counter()

    def read_log(self, id: str, max_bytes: int | None = READ_LOG_MAX_BYTES) -> str:
        """The captured stdout and stderr of a work's attempts ('' if it printed nothing).

        Only the last ``max_bytes`` bytes (1 MiB by default; ``None`` for all of it), after
        a line saying how much came before: a log can be big (up to
        ``NBWORK_LOG_MAX_BYTES``, 16 MiB by default).
        """
        work_id = _check_work_id(id)
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 0):
            raise InvalidInputError(f"max_bytes is a number of bytes >= 0 or None, not "
                                    f"{max_bytes!r}")
        try:
            with open(self._store.log_path(work_id), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                skipped = 0 if max_bytes is None else max(0, size - max_bytes)
                f.seek(skipped)
                text = f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        if skipped:
            text = (f"[nbwork: {skipped} earlier bytes of this log not shown; "
                    f"read_log(id, max_bytes=None) reads all of it]\n{text}")
        return text

    # --- waiting and observing ----------------------------------------------------------

    def wait(self, target: Any, timeout: float | None = None) -> Any:
        """Block until the target's work is finished; return its WorkInfo (a list for several).

        Raises ``TimeoutError`` after ``timeout`` seconds, naming the state it is in.
        """
        query, single = _target_query(target)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        self._waits_in_progress += 1
        try:
            return self._wait(query, single, started, deadline, timeout)
        finally:
            self._waits_in_progress -= 1

    def _wait(self, query: WorkQuery, single: bool, started: float, deadline: float | None,
              timeout: float | None) -> Any:
        by_id = bool(query.ids) and not (query.states or query.tags or query.unique_work_names)
        # Works named by id are read one at a time, from the front: the first one that is
        # not finished ends a look (works tend to finish in order), and a finished record
        # never changes, so it is not read again. Reloading thousands of records (or the
        # state indexes) after every commit would slow down the very scheduler waited for.
        order = deque(dict.fromkeys(query.ids)) if by_id else deque()
        finished: dict[str, WorkSpec] = {}
        ensured_at = 0.0
        while True:
            seen = self._store.change_counter()
            if by_id:
                while order:
                    spec = self._store.read(order[0])
                    if isinstance(spec, Unreadable):
                        raise StoreError(
                            f"work {spec.id} cannot be waited for: its stored record cannot be "
                            f"read ({spec.reason}), so it will never run. Remove it with "
                            "'nbwork prune --unreadable' (wm.prune_work(unreadable=True))")
                    if spec is not None and not spec.state.is_finished:
                        break
                    if spec is not None:
                        finished[spec.id] = spec
                    order.popleft()
                if not order:
                    if not finished:
                        raise InvalidInputError(
                            f"no work with id {', '.join(query.ids)} in this store")
                    specs = sorted(finished.values(), key=_enqueue_order)
                    infos = [self._info(s) for s in specs]
                    return infos[0] if single else infos
                waiting_ids = list(order)
            else:
                infos = self.get_work_infos(query)
                unfinished = [i.id for i in infos
                              if not i.state.is_finished and not i.unreadable_reason]
                if not unfinished:
                    return infos
                waiting_ids = unfinished
            while True:
                now = time.monotonic()
                if now - ensured_at >= ENSURE_RUNNING_INTERVAL:
                    # Again and again, not once: a scheduler that dies while we wait (killed,
                    # OOM) is replaced, or this wait would last until its timeout. One that
                    # found the database damaged refuses to run: say so instead of waiting.
                    self._store.check_not_damaged()
                    self.daemon.ensure_running()
                    ensured_at = now
                if deadline is not None and now >= deadline:
                    waiting = self.get_work_infos(WorkQuery(ids=waiting_ids))
                    states = ", ".join(f"{i.short_id} {i.state.value}" for i in waiting
                                       if not i.state.is_finished)
                    raise TimeoutError(f"work not finished after {timeout:g} s: {states}")
                pause = min(MAX_WAIT_POLL, max(MIN_WAIT_POLL, WAIT_POLL_SHARE * (now - started)))
                if deadline is not None:
                    pause = min(pause, deadline - now)
                time.sleep(pause)
                if self._store.change_counter() != seen:
                    break

    def observe(self, target: Any, callback: Callable[[list[WorkInfo]], None]) -> ObserverHandle:
        """Call ``callback(list_of_WorkInfo)`` now and on every change of the target's work.

        Callbacks run on a background thread. ``handle.cancel()`` stops them.
        """
        query, _ = _target_query(target)
        last: list[list[WorkInfo] | None] = [None]
        lock = threading.RLock()

        def deliver() -> None:
            with lock:
                if not handle.active:
                    return
                infos = self.get_work_infos(query)
                if infos != last[0]:
                    last[0] = infos
                    callback(infos)

        handle = ObserverHandle(self._watcher, deliver, lock)
        deliver()
        self._watcher.add(deliver)
        return handle

    async def flow(self, target: Any) -> AsyncIterator[list[WorkInfo]]:
        """``async for infos in wm.flow(target)``: the current infos, then each change."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[WorkInfo]] = asyncio.Queue()
        handle = self.observe(target, lambda infos: loop.call_soon_threadsafe(
            queue.put_nowait, infos))
        try:
            while True:
                yield await queue.get()
        finally:
            handle.cancel()

    # --- cancelling and pruning ---------------------------------------------------------

    def _cancelled(self, running: list[str]) -> Operation:
        self._wake_scheduler() if running else notify(self._store.dir.access)
        return Operation(cancelled_running=running)

    def cancel_work_by_id(self, id: str) -> Operation:
        """Cancel the work and its unfinished dependents, transitively. A finished work
        stays as it is, but its unfinished dependents are still cancelled."""
        return self._cancelled(_ops.cancel(self._store, [_check_id(id)], self.clock.now()))

    def cancel_all_work_by_tag(self, tag: str) -> Operation:
        """Cancel the unfinished work with ``tag`` and its unfinished dependents. As in
        WorkManager, finished tagged work is not selected: its dependents are left alone."""
        return self._cancelled(_ops.cancel_tag(self._store, tag, self.clock.now()))

    def cancel_unique_work(self, name: str) -> Operation:
        """Cancel the unfinished work under ``name`` and its unfinished dependents (the
        dependents of finished work under the name are left alone, as in WorkManager)."""
        return self._cancelled(_ops.cancel_unique(self._store, name, self.clock.now()))

    def cancel_all_work(self) -> Operation:
        """Cancel every unfinished work."""
        return self._cancelled(_ops.cancel_all(self._store, self.clock.now()))

    # --- hot folders ----------------------------------------------------------------------

    def watch_folder(self, name: str, folder: str | os.PathLike,
                     request_for_file: type | Callable[[str], WorkRequest], *,
                     pattern: str = "*", settle: float = 1.0,
                     existing: bool = True) -> FolderWatch:
        """Keep a durable watch on ``folder``: each file below it whose name matches
        ``pattern`` becomes work once it has not changed for ``settle`` seconds.

        ``request_for_file``: a Worker class (its ``input_data`` is ``{"path": path,
        "image_uri": path}``, the latter being the codelab's key)
        or a function ``path -> OneTimeWorkRequest``; it runs in the scheduler. Each file
        is unique work ``"watch:NAME:RELATIVE_PATH"`` tagged ``"watch:NAME"``, enqueued once
        per content (size and modification time): a changed file runs again, an
        unchanged one never. The watch lives in the store: it survives scheduler and
        machine restarts, and files that arrive while no scheduler runs are taken on the
        next start. ``existing=False`` skips the files already there. Watching ``name``
        again replaces that watch (on the same folder, what it has seen still holds).
        """
        name = _check_name(name)
        path = _check_watched_folder(folder)
        if not isinstance(pattern, str) or not pattern or os.sep in pattern:
            raise InvalidInputError(
                f"pattern must be a file-name pattern such as '*.png' (no folders), not "
                f"{pattern!r}")
        settle = to_seconds(settle, "settle")
        maker_is_worker = is_worker_class(request_for_file)
        if maker_is_worker:
            _check_worker(request_for_file)
        elif not callable(request_for_file) or isinstance(request_for_file, WorkRequest):
            raise InvalidRequestError(
                f"request_for_file must be a Worker class or a function path -> "
                f"OneTimeWorkRequest, not {request_for_file!r}")
        maker = worker_name(request_for_file)
        _, payload = serialize_worker(request_for_file, maker)
        record = _watches.watch_record(name, path, pattern, settle, maker, maker_is_worker)
        seen = None
        if not existing:
            seen = {os.path.relpath(p, path): ident
                    for p, ident in _watches.files_under(path, pattern).items()}
        _watches.put_watch(self._store, record, payload, seen)
        self._wake_scheduler()
        return _watches.as_watch(record)

    def stop_watching(self, name: str) -> bool:
        """End a folder watch (its works already enqueued go on); False if none had that
        name."""
        stopped = _watches.remove_watch(self._store, _check_name(name))
        if stopped:
            notify(self._store.path)
        return stopped

    def watches(self) -> list[FolderWatch]:
        """Every folder watch of this store, by name."""
        records = _watches.watch_records(self._store)
        return [_watches.as_watch(records[n]) for n in sorted(records)]

    def prune_work(self, *, unreadable: bool = False) -> list[str]:
        """Forget every finished work that no unfinished work depends on; returns their ids.

        ``unreadable=True`` instead removes every work whose stored record cannot be read
        (``WorkInfo.unreadable_reason``), and cancels the work that waited for one of them."""
        if unreadable:
            return _ops.prune_unreadable(self._store, self.clock.now())
        return _ops.prune(self._store, self.clock.now())


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
        return WorkContinuation(self.manager, _as_list(requests, "then()"), [self],
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

    def enqueue(self) -> Operation:
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
        import html

        from .info import work_infos_html

        title = f"<code>{html.escape(repr(self))}</code>"
        if not self.enqueued:
            return f"{title} not enqueued yet"
        return title + work_infos_html(self.get_work_infos())


def _check_no_repeats(continuation: WorkContinuation) -> None:
    _check_distinct([r for c in continuation._graph() for r in c.requests])


def _check_distinct(requests: Iterable[WorkRequest]) -> None:
    seen: set[str] = set()
    for r in requests:
        if r.id in seen:
            raise InvalidRequestError(
                f"request {r!r} appears twice in this chain; each step needs its own "
                "request object (build another request with the same worker)"
            )
        seen.add(r.id)


def _check_watched_folder(folder: object) -> str:
    """The absolute path of a folder that may be watched, or a clear error."""
    if not isinstance(folder, (str, os.PathLike)):
        raise InvalidInputError(f"folder must be a path, not {type(folder).__name__}")
    path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInputError(
                f"cannot watch {path!r}: it is a symbolic link loop (too many levels of "
                "symbolic links); point it at a real folder") from None
        if exc.errno == errno.ENOENT:
            raise InvalidInputError(
                f"cannot watch {path!r}: it does not exist; create the folder first "
                f"(mkdir -p {path})") from None
        raise InvalidInputError(f"cannot watch {path!r}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(
            f"cannot watch {path!r}: it is a file, not a folder; watch the folder it is in")
    problem = sharing_problem(path, info, "the watched folder",
                              "whatever others drop there would run as your work, so make "
                              "it yours only", f"chmod go-w {path}")
    if problem:
        raise InvalidInputError(f"cannot watch it: {problem}")
    return path


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"a unique work name must be a non-empty string, not {name!r}")
    return name


def _check_id(id: object) -> str:
    if isinstance(id, WorkRequest):
        return id.id
    if not isinstance(id, str):
        raise InvalidInputError(f"a work id is a string (request.id), not {type(id).__name__}")
    return id


def _check_work_id(id: object) -> str:
    """A work id that names a file safely: a UUID, as every request's id is."""
    work_id = _check_id(id)
    try:
        canonical = str(uuid.UUID(work_id))
    except ValueError:
        raise InvalidInputError(
            f"{work_id!r} is not a work id: a work id is a UUID such as "
            "'1b4e28ba-2fa1-11d2-883f-0016d3cca427' (request.id, or a WorkInfo's id)") from None
    return canonical


def _target_query(target: Any) -> tuple[WorkQuery, bool]:
    """(query, is it a single work) for the targets wait/observe/flow accept."""
    if isinstance(target, WorkQuery):
        return target, False
    if isinstance(target, WorkContinuation):
        return WorkQuery(ids=target.ids), False
    if isinstance(target, (str, WorkRequest)):
        return WorkQuery(ids=[_check_id(target)]), True
    if isinstance(target, Iterable):
        return WorkQuery(ids=[_check_id(t) for t in target]), False
    raise InvalidInputError(
        f"cannot watch a {type(target).__name__}; pass a work id, a request, a list of them, "
        "a WorkContinuation or a WorkQuery"
    )


def _enqueue_order(spec: WorkSpec) -> tuple[float, int, str]:
    """Oldest first; the works of one enqueue call (a chain) in the order they were given."""
    return (spec.enqueue_time, spec.enqueue_order, spec.id)


def _matches(spec: WorkSpec, query: WorkQuery) -> bool:
    if query.ids and spec.id not in query.ids:
        return False
    if query.states and spec.state not in query.states:
        return False
    if query.tags and not set(query.tags) & set(spec.tags):
        return False
    return not (query.unique_work_names and spec.unique_name not in query.unique_work_names)
