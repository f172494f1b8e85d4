"""Checkpoints of the write-ahead log, kept off the path of every commit.

SQLite copies the write-ahead log back into the database file (a checkpoint, with two
``fdatasync``) inside whichever commit finds the log over its ``wal_autocheckpoint`` pages:
a client's enqueue, the scheduler's claim or its finish. On an idle machine that commit
took 5-12 ms instead of well under one, once every 1.5 s of one work at a time, which made
the slowest of 100 enqueue -> SUCCEEDED round trips 2-3x the typical one (issue 15's p99).

So every connection of a store checkpoints only as a backstop (``AUTOCHECKPOINT_PAGES``,
16 MiB of log: a store with no scheduler, or a flood), and the scheduler runs a
``Checkpointer``: a thread with its own connection that checkpoints (PASSIVE: it never
blocks a reader or a writer) every ``CHECKPOINT_INTERVAL`` seconds when the log was
written since its last look. SQLite releases the GIL while it checkpoints, so the
scheduler's own thread goes on deciding and committing meanwhile.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

from .reads import connect_unmapped

log = logging.getLogger("nbwork.store")

AUTOCHECKPOINT_PAGES = 4000
"""SQLite's ``wal_autocheckpoint`` of every connection (pages of 4 KiB; SQLite's own
default is 1,000): reached only when no ``Checkpointer`` keeps the log short."""
CHECKPOINT_INTERVAL = 1.0
"""Seconds between the ``Checkpointer``'s looks at the log (a stat when nothing was
written). The log file grows a little bigger than with SQLite's own checkpoints: its peak
over an enqueue of 20,000 no-ops and their run was 20 MiB, against 13 MiB."""


class Checkpointer:
    """Checkpoints of the database at ``database`` (its path) in a thread of its own."""

    def __init__(self, database: str, synchronous: int,
                 interval: float = CHECKPOINT_INTERVAL) -> None:
        self.database = database
        self.synchronous = synchronous
        self.interval = interval
        self.checkpoints = 0
        self._wal = f"{database}-wal"
        self._seen: tuple[int, int] | None = None
        self._con: sqlite3.Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def checkpoint_if_written(self) -> bool:
        """Checkpoint now if the log changed since the last look; True if it did."""
        try:
            stat = os.stat(self._wal)
        except FileNotFoundError:
            return False  # no log: nothing was written since the last connection closed
        # (Taken before the checkpoint: a write during it shows as a change next time.)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._seen:
            return False
        if self._con is None:
            self._con = connect_unmapped(self.database, self.synchronous)
        self._con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self._seen = stamp
        self.checkpoints += 1
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nbwork-checkpoint",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._look()

    def _look(self) -> None:
        try:
            self.checkpoint_if_written()
        except (OSError, sqlite3.Error) as exc:
            # Never a reason to stop: the connections' own checkpoints are the backstop.
            if not self._failed:
                log.warning("could not checkpoint the store's write-ahead log (SQLite's "
                            "own checkpoints take over): %s", exc)
                self._failed = True
        else:
            self._failed = False

    def close(self) -> None:
        """Stop the thread, after one last checkpoint of what was written."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._look()
        if self._con is not None:
            self._con.close()
            self._con = None
