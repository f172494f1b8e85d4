"""The scheduler process: takes the store's lock, opens the store, and runs the scheduler
with the executor the store names, until it exits (idle, or stopped by SIGTERM / Ctrl-C).

Its own module, apart from ``_daemon.py`` (the client's control of that process), so that
the client never loads the scheduler or an executor. Started as ``python -c SCHEDULER_CODE``
(see ``_supervisor.py``) by ``Daemon.spawn``, or in the foreground by ``Daemon.run``
(``nbwork daemon run``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time

from ._liveness import BeatWriter
from ._lock import SchedulerLock
from ._supervisor import configure_logging
from .errors import StoreError

STORE_RETRY_MAX = 30.0
"""Seconds: the longest wait between two tries to open a store that cannot be opened yet (a
full disk) when a scheduler starts; the wait doubles from one second."""

GC_YOUNG_THRESHOLD = 10_000
"""Allocations between two collections of young objects (Python's default is 700): a
scheduler turn makes thousands of short-lived objects, nearly all freed by their reference
count, so the default ran a collection every few works."""


def _open_store(path: str, beat: BeatWriter):
    """The store, once it can be opened: a full disk (or a store locked for a minute) is
    waited out, with a pause doubling up to ``STORE_RETRY_MAX``, so work resumes with no
    client call once space returns. Meanwhile the heartbeat says why (``nbwork daemon
    status`` shows it) and the log lines are held until the log can be written."""
    from ._store import Store

    log = logging.getLogger("nbwork.scheduler")
    pause, since = 1.0, None
    while True:
        try:
            store = Store(path, create=False)
            store.check_integrity()
        except StoreError as exc:
            if not exc.transient:
                raise
            if since is None:
                since = time.monotonic()
                log.warning("the store cannot be opened: %s; waiting and trying again "
                            "(every %g s at most)", exc, STORE_RETRY_MAX)
            beat.state = f"waiting for the store: {exc}"
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline:
                beat.beat()  # alive, not hung: the supervisor must not end it
                time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
            pause = min(pause * 2, STORE_RETRY_MAX)
            continue
        if since is not None:
            log.info("the store can be opened again after %.0f s; starting",
                     time.monotonic() - since)
        return store


def main(argv: list[str] | None = None) -> int:
    from ._executors.local import DEFAULT_STOP_GRACE, LocalExecutor
    from ._scheduler import DEFAULT_IDLE_EXIT, Scheduler
    from ._storedir import StoreDir

    parser = argparse.ArgumentParser(prog="nbwork-scheduler")
    parser.add_argument("--store", required=True)
    parser.add_argument("--idle-exit", type=float, default=DEFAULT_IDLE_EXIT)
    parser.add_argument("--stop-grace", type=float, default=DEFAULT_STOP_GRACE)
    args = parser.parse_args(argv)
    configure_logging()
    log = logging.getLogger("nbwork.scheduler")
    try:
        # Before anything else: the whole path is walked and checked, and the store directory
        # stays open; the lock, heartbeat and store are reached through it (see _storedir).
        store_dir = StoreDir(os.path.abspath(os.path.expanduser(args.store)), create=False)
        store_dir.check_private()
    except StoreError as exc:
        log.error("%s", exc)
        return 1
    path = store_dir.path
    # The lock first: the one scheduler of the store may have to wait for it to open.
    lock = SchedulerLock(store_dir.access)
    if not lock.acquire():
        log.info("another scheduler holds the lock of %s; exiting", path)
        return 1
    beat = BeatWriter(store_dir.access)
    try:
        # Checked again in full (the files in the store, and the database's pages: a
        # damaged store must not run half-broken).
        store = _open_store(path, beat)
    except StoreError as exc:
        log.error("%s", exc)
        return 1
    store.bound_memory()  # it runs for hours: its memory must not grow with the store
    address = store.executor()  # chosen by WorkManager(path, executor=...), kept in the store
    if address == "local":
        executor = LocalExecutor(stop_grace=args.stop_grace)
    else:
        import socket

        from ._executors.dask import DaskExecutor

        try:
            executor = DaskExecutor(address, stop_grace=args.stop_grace,
                                    owner=f"{socket.gethostname()}:{store.path}")
        except ImportError as exc:
            log.error("cannot run work on %s: %s", address, exc)
            return 2
    scheduler = Scheduler(store, executor=executor, idle_exit=args.idle_exit, lock=lock,
                          beat=beat)
    # What exists now lives as long as the process: no collection needs to look at it again.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
    return scheduler.run()


if __name__ == "__main__":
    sys.exit(main())
