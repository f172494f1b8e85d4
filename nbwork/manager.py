"""The client API: ``WorkManager`` (with ``WorkContinuation`` and ``Operation``), and the
questions a viewer asks about a path (``default_store_path``, ``is_store``, ``check_store``).

A ``WorkManager`` is a view of one store directory. It validates requests, writes them in
one transaction, wakes (or starts) the store's scheduler, and reads ``WorkInfo`` back. Any
number of processes may use the same store at once. Its parts live beside it:
``_arguments`` checks what callers pass, ``_records`` turns a request into its stored
record, ``_continuation`` holds chains and ``_observe`` follows changes (``wait``,
``observe``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _observe, _ops, _storedir, _watches
from ._arguments import (
    Requests,
    as_request_list,
    check_distinct,
    check_file_pattern,
    check_id,
    check_name,
    check_request_maker,
    check_watched_folder,
    check_work_id,
)
from ._code import serialize_worker
from ._continuation import WorkContinuation
from ._daemon import Daemon
from ._executor_address import check_executor, require_distributed
from ._observe import ObserverHandle, enqueue_order, target_query, watcher_of
from ._query_memo import READ_MEMO_LIMIT, memo_of  # noqa: F401  (READ_MEMO_LIMIT: was here)
from ._records import RecordMaker
from ._spec import WorkSpec
from ._store import Store, Unreadable, check_durability
from ._time import Clock, to_seconds
from ._wake import notify
from ._watches import FolderWatch
from .errors import InvalidInputError, InvalidRequestError
from .info import UpdateResult, WorkInfo, WorkQuery, WorkState
from .request import (
    ExistingPeriodicWorkPolicy,
    ExistingWorkPolicy,
    PeriodicWorkRequest,
    WorkRequest,
)
from .worker import worker_name

READ_LOG_MAX_BYTES = 1 << 20
"""Bytes ``read_log`` returns by default: the end of a log, never all of a big one."""


def default_store_path() -> str:
    """``$NBWORK_HOME``, else ``$XDG_DATA_HOME/nbwork`` (``~/.local/share/nbwork``)."""
    home = os.environ.get("NBWORK_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "nbwork")


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an nbwork store (what ``WorkManager(path, create=False)`` opens).
    Opens and creates nothing."""
    return _storedir.is_store(os.path.abspath(os.path.expanduser(os.fspath(path))))


def check_store(path: str | os.PathLike) -> None:
    """Return if ``path`` is a store this user may open; else raise ``NotAStoreError`` (not
    a store) or ``StoreError`` (another user owns it or can write to it: it holds code that
    nbwork runs as you), in the words ``WorkManager`` uses. Opens no database and creates
    nothing: cheap enough for a viewer to call on every request."""
    _storedir.check_store_path(os.path.abspath(os.path.expanduser(os.fspath(path))))


@dataclass
class Operation:
    """What an enqueue or cancel did (WorkManager's ``Operation``, already complete)."""

    enqueued: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    cancelled_running: list[str] = field(default_factory=list)


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
        self._watcher = watcher_of(self._store)
        self._waits_in_progress = 0  # for tests that act while a wait() blocks
        # Queries reuse what they (or another manager of this store) decoded while a
        # record's stored bytes stay the same.
        self._memo = memo_of(self._store.path, (self._store.get_value("meta") or {}).get(
            "created"))
        self._read_memo = self._memo.records
        self._info_memo = self._memo.infos
        self._query_results = self._memo.results
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
        items = as_request_list(requests, "enqueue()")
        # Not through begin_with(): a continuation refuses periodic work (it cannot be
        # chained), but wm.enqueue(PeriodicWorkRequest(...)) is how periodic work starts.
        check_distinct(items)
        return self._write([(r, ()) for r in items], [])

    def begin_with(self, requests: Requests) -> "WorkContinuation":
        """Start a chain: ``wm.begin_with([a, b]).then(c).enqueue()``."""
        return WorkContinuation(self, as_request_list(requests, "begin_with()"))

    def begin_unique_work(self, name: str, policy: ExistingWorkPolicy | str,
                          requests: Requests) -> "WorkContinuation":
        """Start a chain that is unique work ``name``, with ``policy`` for existing work."""
        return WorkContinuation(self, as_request_list(requests, "begin_unique_work()"),
                                unique=(check_name(name), ExistingWorkPolicy.parse(policy)))

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
        group = _ops.UniqueGroup(check_name(name), ExistingPeriodicWorkPolicy.parse(policy),
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
        work = RecordMaker().new_work(request)
        result = _ops.update(self._store, work.spec, work.payload)
        if result is not UpdateResult.NOT_APPLIED:
            self._wake_scheduler()
        return result

    def _write(self, items: list[tuple[WorkRequest, tuple[str, ...]]],
               groups: list[_ops.UniqueGroup],
               named: dict[str, str] | None = None) -> Operation:
        """``named``: request id -> unique name, for works under a name but no policy."""
        names = {**(named or {}), **{m: g.name for g in groups for m in g.members}}
        records = RecordMaker()
        works = [records.new_work(request, prerequisites, names.get(request.id))
                 for request, prerequisites in items]
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
        record = self._store.read(check_id(id))
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
        counter = store.change_counter()
        infos = self._memo.result(query, counter)
        if infos is None:
            infos = self._query(query)
            self._memo.keep(query, counter, infos)
        return infos

    def _query(self, query: WorkQuery) -> list[WorkInfo]:
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
        self._memo.trim()
        records = store.read_many(dict.fromkeys(candidates), self._read_memo)
        infos = self._memo.patched(query, records, lambda s: _matches(s, query),
                                   enqueue_order, self._memo_info)
        if infos is not None:
            return infos
        seen: set[str] = set()
        specs = []
        unreadable = []  # found through the query's own index: shown, never dropped
        for record in records:
            if isinstance(record, Unreadable):
                if not query.states or record.state in query.states:
                    unreadable.append(record)
                continue
            if record.id in seen or not _matches(record, query):
                continue
            seen.add(record.id)
            specs.append(record)
        specs.sort(key=enqueue_order)
        infos = [*(self._memo_info(s) for s in specs), *(self._info(u) for u in unreadable)]
        self._memo.keep_basis(query, records, infos, specs)
        return infos

    def _memo_info(self, spec: WorkSpec) -> WorkInfo:
        """The info of a spec from the read memo: made once per stored version of a work
        (the live tables re-run the same queries on every change)."""
        return self._memo.info(spec, self._info)

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
        work_id = check_work_id(id)
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
        query, single = target_query(target)
        self._waits_in_progress += 1
        try:
            return _observe.Wait(self, query, single, timeout).run()
        finally:
            self._waits_in_progress -= 1

    def observe(self, target: Any, callback: Callable[[list[WorkInfo]], None]) -> ObserverHandle:
        """Call ``callback(list_of_WorkInfo)`` now and on every change of the target's work.

        Callbacks run on a background thread. ``handle.cancel()`` stops them.
        """
        query, _ = target_query(target)
        return _observe.observe(self, query, callback)

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
        return self._cancelled(_ops.cancel(self._store, [check_id(id)], self.clock.now()))

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
        name = check_name(name)
        path = check_watched_folder(folder)
        pattern = check_file_pattern(pattern)
        settle = to_seconds(settle, "settle")
        maker_is_worker = check_request_maker(request_for_file)
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
        stopped = _watches.remove_watch(self._store, check_name(name))
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


def _matches(spec: WorkSpec, query: WorkQuery) -> bool:
    if query.ids and spec.id not in query.ids:
        return False
    if query.states and spec.state not in query.states:
        return False
    if query.tags and not set(query.tags) & set(spec.tags):
        return False
    return not (query.unique_work_names and spec.unique_name not in query.unique_work_names)
