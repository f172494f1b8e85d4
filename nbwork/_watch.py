"""The scheduler's eyes on the file system: content triggers and hot folders.

One ``ContentMonitor`` per scheduler. A watchdog observer (inotify on Linux) says *which*
paths were touched; listings say *what* changed, so an event that is lost (an overflowed
inotify queue, a network share that sends none) costs latency, never a change:

- every waiting content-triggered work is listed against the listing taken when it was
  enqueued (kept in the store, so changes made while no scheduler ran count too);
- every hot folder is listed on start against its seen-state in the store, so files that
  arrived while no scheduler ran are found;
- everything is listed again every ``rescan_interval`` (at least ``RESCAN_INTERVAL``
  seconds, longer when listing is costly, so a folder of 100,000 files costs well under
  1 % of a core), and every ``POLL_INTERVAL`` where no notifications can be had.

A hot-folder file is taken once it has settled: no change seen for ``settle`` seconds and
its modification time at least that old. Its work is enqueued in the transaction that
marks it seen (see ``_watches.py``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from . import _content, _ops, _watches
from ._code import load_worker
from ._content import CONTENT_WAIT
from ._fs_events import POLL_INTERVAL, EventObserver, PathEvents
from ._ops import CONTENT_LISTING_KEY
from ._records import RecordMaker
from ._store import Store
from ._time import Clock
from .errors import NbworkError, StoreError
from .info import WorkState
from .request import ExistingWorkPolicy, OneTimeWorkRequest, WorkRequest

log = logging.getLogger("nbwork.watch")

RESCAN_INTERVAL = 60.0
"""Seconds between full listings of everything watched (overflowed events are found)."""
RESCAN_CPU_SHARE = 0.002
"""A full listing that takes longer spaces the next one out so that listings take at most
this share of a core."""
REFRESH_INTERVAL = 0.05
"""Seconds between looks for new or stopped watches and newly enqueued triggered works."""
POLL_CPU_SHARE = 0.02
MAX_BATCH = 500
"""Files enqueued per transaction (a burst of thousands commits in a few steps)."""


class _WaitingWork:
    def __init__(self, work_id: str, triggers: tuple[_content.ContentTrigger, ...],
                 listing: dict[str, Any]) -> None:
        self.id = work_id
        self.triggers = triggers
        self.listing = listing


class _Folder:
    def __init__(self, record: dict[str, Any], payload: bytes, seen: dict) -> None:
        self.record = record
        self.name: str = record["name"]
        self.folder: str = record["folder"]
        self.pattern: str = record["pattern"]
        self.settle: float = record["settle"]
        self.payload = payload
        self.seen = seen  # relative path -> identity, of every file taken
        self.known: dict[str, _watches.Identity] = {}  # path -> identity, as last listed
        self.pending: dict[str, tuple[_watches.Identity, float]] = {}  # path -> (id, since)
        self._maker: Any = None

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.folder)

    def note(self, path: str, ident: _watches.Identity | None, now: float) -> None:
        """A file was seen as ``ident`` (None: gone) at monotonic ``now``."""
        if ident is None:
            self.pending.pop(path, None)
            self.known.pop(path, None)
            return
        self.known[path] = ident
        if tuple(self.seen.get(self.rel(path), ())) == ident:
            self.pending.pop(path, None)
            return
        current = self.pending.get(path)
        if current is None or current[0] != ident:
            self.pending[path] = (ident, now)

    def relist(self, now: float) -> None:
        files = _watches.files_under(self.folder, self.pattern)
        for path in list(self.known):
            if path not in files:
                self.note(path, None, now)
        for path, ident in files.items():
            if self.known.get(path) != ident:
                self.note(path, ident, now)

    def next_deadline(self) -> float | None:
        return min((since + self.settle for _, since in self.pending.values()), default=None)

    def request_for(self, path: str) -> WorkRequest:
        if self._maker is None:
            self._maker = load_worker(self.payload)
        if self.record.get("maker_is_worker"):
            # "image_uri" too: the codelab's key, so Blur-O-Matic's BlurWorker (and workers
            # written after it) can be watched directly.
            return OneTimeWorkRequest(self._maker, input_data={"path": path, "image_uri": path})
        request = self._maker(path)
        if not isinstance(request, OneTimeWorkRequest):
            raise NbworkError(
                f"request_for_file of watch {self.name!r} returned {request!r} for {path}; "
                "it must return a OneTimeWorkRequest")
        return request


class ContentMonitor:
    """Watches for the scheduler: ``step()`` each turn, ``next_deadline()`` to sleep."""

    def __init__(self, store: Store, clock: Clock, poke: Callable[[], None]) -> None:
        self.store = store
        self.clock = clock
        self._events = PathEvents(poke)
        self._observer = EventObserver(self._events)
        self._works: dict[str, _WaitingWork] = {}
        self._folders: dict[str, _Folder] = {}
        self._index_seen: Any = None
        self._next_refresh = 0.0
        self._watches_counter = -1
        self._records: dict[str, dict[str, Any]] = {}
        self.rescan_interval = RESCAN_INTERVAL
        self._next_rescan = time.monotonic() + RESCAN_INTERVAL
        self._next_poll: float | None = None
        self._record_maker = RecordMaker()

    @property
    def has_watches(self) -> bool:
        """Folder watches keep the scheduler alive (they wait for files, not for work).
        The store is asked too: a watch added while this scheduler decides to exit must
        keep it (the client that added it saw the lock held and started none)."""
        return bool(self._folders) or bool(_watches.watch_records(self.store))

    def close(self) -> None:
        self._observer.close()

    def rescan(self) -> None:
        """List everything again at the next step (and look for new works at once)."""
        self._next_rescan = 0.0
        self._next_refresh = 0.0

    # --- the step ---------------------------------------------------------------------

    def step(self) -> None:
        """Look at what changed and act on it. A fault here (other than the store's) is
        logged and left for the next step: watching files must never stop work running."""
        try:
            self._step()
        except StoreError:
            raise
        except Exception:
            log.exception("watching files failed; trying again at the next step")
            self.rescan()
            self._next_rescan = time.monotonic() + POLL_INTERVAL

    def _step(self) -> None:
        now = time.monotonic()
        # At most every REFRESH_INTERVAL: in a flood of short works the store changes at
        # every step, and a watch or a work seen a little late loses nothing (a work's
        # changes are measured against the listing taken when it was enqueued).
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_INTERVAL
            self._refresh_watches(now)
            self._refresh_works()
        touched = self._events.take()
        if not (self._works or self._folders):  # nothing to list (nor to log about)
            self._next_rescan = now + self.rescan_interval
        full = now >= self._next_rescan
        poll = self._next_poll is not None and now >= self._next_poll
        if touched or full or poll:
            began = time.process_time()
            self._look_at_works(touched, full or poll)
            for folder in self._folders.values():
                self._look_at_folder(folder, touched, full or (
                    poll and (folder.folder, True) in self._observer.polled), now)
            if full:
                cost = time.process_time() - began
                self.rescan_interval = max(RESCAN_INTERVAL, cost / RESCAN_CPU_SHARE)
                self._next_rescan = now + self.rescan_interval
                log.info("listed everything watched in %.3f s of CPU; next full listing in "
                         "%.0f s", cost, self.rescan_interval)
            if poll:
                # A huge polled tree is listed less often: at most POLL_CPU_SHARE of a core.
                cost = time.process_time() - began
                self._next_poll = now + max(POLL_INTERVAL, cost / POLL_CPU_SHARE)
        if self._observer.polled and self._next_poll is None:
            self._next_poll = now + POLL_INTERVAL
        elif not self._observer.polled:
            self._next_poll = None
        for folder in self._folders.values():
            if folder.pending:
                self._take_settled(folder, now)

    def next_deadline(self) -> float | None:
        """The next ``time.monotonic()`` at which ``step()`` has something to do."""
        if not (self._works or self._folders):
            return None
        deadlines = [self._next_rescan]
        if self._next_poll is not None:
            deadlines.append(self._next_poll)
        for folder in self._folders.values():
            due = folder.next_deadline()
            if due is not None:
                deadlines.append(due)
        return min(deadlines)

    # --- content-triggered works ------------------------------------------------------

    def _refresh_works(self) -> None:
        enqueued = self.store.state_index(WorkState.ENQUEUED)
        if enqueued is self._index_seen:
            return
        self._index_seen = enqueued
        waiting = {wid for wid, t in enqueued.items() if t >= CONTENT_WAIT}
        # A triggered work in its update delay is still ours to watch until it starts.
        keep = {wid for wid in self._works if wid in enqueued}
        gone = [wid for wid in self._works if wid not in waiting and wid not in keep]
        if gone:
            with self.store.transaction() as txn:
                for wid in gone:
                    work = self._works.pop(wid)
                    for trigger in work.triggers:
                        self._observer.remove(trigger.path, trigger.descendants)
                    spec = txn.get(wid)
                    if spec is None or spec.state is not WorkState.ENQUEUED \
                            or spec.run_attempt_count:
                        txn.delete_value(CONTENT_LISTING_KEY.format(wid))
        new = [wid for wid in waiting if wid not in self._works]
        for spec in self.store.get_many(new):
            triggers = _content.triggers_of(spec.constraints)
            listing = self.store.get_value(CONTENT_LISTING_KEY.format(spec.id))
            if listing is None:  # enqueued by an older nbwork, or updated: from now on
                listing = _content.triggers_listing(triggers)
            work = _WaitingWork(spec.id, triggers, dict(listing))
            self._works[spec.id] = work
            for trigger in triggers:
                self._observer.add(trigger.path, trigger.descendants)
            # What changed between its enqueue and now (a scheduler that was down, or
            # the moment before this watch began) counts.
            self._check_works([work])

    def _look_at_works(self, touched: set[str], everything: bool) -> None:
        if everything:
            self._check_works(list(self._works.values()))
            return
        if not touched:
            return
        hit = [w for w in self._works.values()
               if any(_content.under(p, t) for p in touched for t in w.triggers)]
        self._check_works(hit)

    def _check_works(self, works: list[_WaitingWork]) -> None:
        changes = {}
        for work in works:
            now_listing = _content.triggers_listing(work.triggers)
            changed = _content.changed_paths(work.listing, now_listing)
            if changed:
                changes[work.id] = (changed, now_listing)
        if not changes:
            return
        now = self.clock.now()
        with self.store.transaction() as txn:
            for wid, (paths, listing) in changes.items():
                spec = txn.get(wid)
                if spec is None or spec.state not in (WorkState.ENQUEUED, WorkState.BLOCKED) \
                        or not _content.has_triggers(spec):  # (updated since, without them)
                    continue
                if _content.record_change(spec, paths, now):
                    if spec.state is WorkState.BLOCKED:
                        spec.next_run_at = 0.0  # set when it is unblocked
                    txn.put(spec)
                    txn.set_value(CONTENT_LISTING_KEY.format(wid), listing)
        for wid, (paths, listing) in changes.items():
            self._works[wid].listing = listing
            log.info("content of %s changed: %s", wid, ", ".join(paths[:5]))

    # --- hot folders ------------------------------------------------------------------

    def _refresh_watches(self, now: float) -> None:
        counter = self.store.change_counter()
        if counter == self._watches_counter:
            return
        self._watches_counter = counter
        records = _watches.watch_records(self.store)
        if records == self._records:
            return
        self._records = records
        for name in [n for n, f in self._folders.items() if records.get(n) != f.record]:
            folder = self._folders.pop(name)
            self._observer.remove(folder.folder, True)
            log.info("stopped watching %s (%s)", folder.folder, name)
        for name, record in records.items():
            if name in self._folders:
                continue
            payload = self.store.get_value(f"wcode:{name}")
            if payload is None:
                continue
            folder = _Folder(record, payload, _watches.load_seen(self.store, record))
            self._folders[name] = folder
            self._observer.add(folder.folder, True)
            # Files that came while no scheduler watched are found here.
            folder.relist(now)
            log.info("watching %s for %s (%s): %d file(s) to take", folder.folder,
                     folder.pattern, name, len(folder.pending))

    def _look_at_folder(self, folder: _Folder, touched: set[str], everything: bool,
                        now: float) -> None:
        if everything:
            folder.relist(now)
            return
        prefix = folder.folder.rstrip(os.sep) + os.sep
        for path in touched:
            if not path.startswith(prefix):
                continue
            if os.path.isdir(path):  # a folder moved in: its files count
                for inner, ident in _watches.files_under(path, folder.pattern).items():
                    folder.note(inner, ident, now)
                continue
            if _watches.matches(os.path.basename(path), folder.pattern):
                folder.note(path, _watches.file_identity(path), now)

    def _take_settled(self, folder: _Folder, now: float) -> None:
        wall = time.time()
        ready: dict[str, _watches.Identity] = {}
        for path, (ident, since) in list(folder.pending.items()):
            if now - since < folder.settle:
                continue
            current = _watches.file_identity(path)
            if current != ident:  # changed again (or gone) since we looked
                folder.note(path, current, now)
                continue
            age = wall - ident[1] / 1e9
            # Written meanwhile in a way no event told us (a time in the future, from a
            # skewed clock, is ignored).
            if 0 <= age < folder.settle:
                folder.pending[path] = (ident, now - max(0.0, age))
                continue
            ready[path] = ident
            if len(ready) >= MAX_BATCH:
                break
        if ready:
            self._enqueue_files(folder, ready)

    def _enqueue_files(self, folder: _Folder, ready: dict[str, _watches.Identity]) -> None:
        works: list[_ops.NewWork] = []
        groups: list[_ops.UniqueGroup] = []
        by_rel: dict[str, _watches.Identity] = {}
        failed: dict[str, _watches.Identity] = {}
        ids: set[str] = set()
        tag = _watches.WATCH_TAG.format(folder.name)
        for path, ident in ready.items():
            rel = folder.rel(path)
            try:
                request = folder.request_for(path)
                work = self._record_maker.new_work(request, unique_name=f"{tag}:{rel}", tag=tag)
            except Exception as exc:  # the user's function: this file only
                log.warning("watch %s: no work for %s: %s", folder.name, path, exc)
                failed[rel] = ident
                continue
            if request.id in ids:
                log.warning("watch %s: no work for %s: request_for_file returned a request "
                            "it had returned for another file; build a new one per file",
                            folder.name, path)
                failed[rel] = ident
                continue
            ids.add(request.id)
            works.append(work)
            groups.append(_ops.UniqueGroup(f"{tag}:{rel}", ExistingWorkPolicy.REPLACE,
                                           members=[work.spec.id], roots=[work.spec.id]))
            by_rel[rel] = ident
        try:
            taken = self._commit_files(folder, works, groups, by_rel, failed, tag)
        except StoreError:
            raise
        except Exception as exc:  # one bad request (e.g. a reused id) spoils the batch
            log.warning("watch %s: a batch of %d file(s) could not be enqueued (%s); "
                        "trying them one by one", folder.name, len(works), exc)
            taken = []
            for i, work in enumerate(works):
                rel = _rel_of(work.spec.unique_name, tag)
                try:
                    taken += self._commit_files(folder, [work], [groups[i]],
                                                {rel: by_rel[rel]}, {}, tag)
                except StoreError:
                    raise
                except Exception as exc:
                    log.warning("watch %s: no work for %s: %s", folder.name, rel, exc)
                    self._commit_files(folder, [], [], {}, {rel: by_rel[rel]}, tag)
        for path in ready:
            rel = folder.rel(path)
            folder.pending.pop(path, None)
            folder.seen[rel] = ready[path]
        if taken:
            log.info("watch %s: %d new file(s)", folder.name, len(taken))

    def _commit_files(self, folder: _Folder, works: list[_ops.NewWork],
                      groups: list[_ops.UniqueGroup], by_rel: dict[str, _watches.Identity],
                      failed: dict[str, _watches.Identity], tag: str) -> list[str]:
        """Enqueue the works of files not seen yet and mark every one of them seen, in one
        transaction; returns the relative paths whose work was enqueued."""
        listings = _ops.content_listings(works)
        now = self.clock.now()
        taken: list[str] = []
        with self.store.transaction() as txn:
            record = (txn.get_value(_watches.WATCHES_KEY) or {}).get(folder.name)
            if record is None or record["id"] != folder.record["id"]:
                return []  # stopped (or replaced) meanwhile
            fresh = _watches.unseen(txn, folder.record, by_rel)
            keep = [i for i, w in enumerate(works) if _rel_of(w.spec.unique_name, tag) in fresh]
            works = [works[i] for i in keep]
            groups = [groups[i] for i in keep]
            if works:
                _ops.enqueue_in(txn, works, groups, now, listings)
            taken = [_rel_of(w.spec.unique_name, tag) for w in works]
            _watches.mark_seen(txn, folder.record,
                               {**{rel: by_rel[rel] for rel in taken}, **failed})
        return taken


def _rel_of(unique_name: str | None, tag: str) -> str:
    return (unique_name or "")[len(tag) + 1:]
