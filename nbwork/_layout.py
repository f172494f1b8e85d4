"""The layout of a store directory: the one module that names what lives in it.

    db/                 the database (diskcache: SQLite in WAL mode, ``cache.db``)
    nbwork.store        the marker: "this directory is a store and its database exists"
    nbwork.damaged      written by a scheduler that found the database damaged
    logs/<id>.log       each work's captured output
    logs/.slot-<pid>.*  a warm worker process's scratch output and how much of it is copied
    scheduler.lock      the scheduler's exclusive lock (and the pid of its last holder)
    scheduler.beat      the scheduler's heartbeat
    scheduler.log       what the scheduler and its supervisor say
    supervisor.note     why the supervisor gave up restarting the scheduler
    wake.fifo           a client writes a byte here to wake the scheduler
    blur_outputs/       Blur-O-Matic's temporary images, by default
    blurred_images/     Blur-O-Matic's saved images, by default

Every other module asks here for a name or a path instead of spelling it, so a file moves
in one place, and the store's own check (``_storedir.OWN_ENTRIES``) knows every entry
nbwork makes. Names are relative to the store directory; the ``*_path`` functions join
them to a store path (or to the ``/proc/self/fd`` path of an open store, see
``_storedir.StoreDir.access``). Nothing here touches the disk.
"""

from __future__ import annotations

import os

DB_DIR = "db"
DB_FILE = "cache.db"
"""The database file in ``DB_DIR`` (diskcache's name for it)."""
DB_FILES = (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm")
"""The database file and SQLite's write-ahead log and shared memory beside it."""
MARKER = "nbwork.store"
DAMAGED = "nbwork.damaged"
LOGS_DIR = "logs"
LOCK = "scheduler.lock"
BEAT = "scheduler.beat"
SCHEDULER_LOG = "scheduler.log"
SUPERVISOR_NOTE = "supervisor.note"
FIFO = "wake.fifo"
BLUR_OUTPUTS_DIR = "blur_outputs"
BLURRED_IMAGES_DIR = "blurred_images"

OWN_ENTRIES = frozenset({DB_DIR, LOGS_DIR, MARKER, DAMAGED, LOCK, FIFO, SCHEDULER_LOG})
"""Entries of the store that nbwork creates and the store's check requires private to the
owner (the heartbeat and the supervisor's note are written ``0600`` but not checked)."""

_SCRATCH_PREFIX = ".slot-"
_SCRATCH_ENDS = (".out", ".at")


def in_store(store: str, *names: str) -> str:
    """``names`` joined to the store directory ``store``."""
    return os.path.join(store, *names)


def database_path(store: str) -> str:
    return os.path.join(store, DB_DIR, DB_FILE)


def lock_path(store: str) -> str:
    return os.path.join(store, LOCK)


def beat_path(store: str) -> str:
    return os.path.join(store, BEAT)


def scheduler_log_path(store: str) -> str:
    return os.path.join(store, SCHEDULER_LOG)


def note_path(store: str) -> str:
    return os.path.join(store, SUPERVISOR_NOTE)


def fifo_path(store: str) -> str:
    return os.path.join(store, FIFO)


def logs_dir(store: str) -> str:
    return os.path.join(store, LOGS_DIR)


def work_log_name(work_id: str) -> str:
    """A work's log, relative to the logs folder (kept so in its record)."""
    return f"{work_id}.log"


def work_log_path(store: str, work_id: str) -> str:
    return os.path.join(store, LOGS_DIR, work_log_name(work_id))


def scratch_path(log_dir: str, pid: int) -> str:
    """The scratch output file of worker process ``pid``, beside the logs it feeds."""
    return os.path.join(log_dir, f"{_SCRATCH_PREFIX}{pid}{_SCRATCH_ENDS[0]}")


def scratch_state_path(log_dir: str, pid: int) -> str:
    """How much of ``scratch_path(log_dir, pid)`` is already in the attempt's log."""
    return os.path.join(log_dir, f"{_SCRATCH_PREFIX}{pid}{_SCRATCH_ENDS[1]}")


def scratch_pid(name: str) -> int | None:
    """The pid of the worker process whose scratch file is ``name``, or None when ``name``
    is no scratch file (a work's log, say)."""
    if name.startswith(_SCRATCH_PREFIX) and name.endswith(_SCRATCH_ENDS):
        pid = name[len(_SCRATCH_PREFIX):].rsplit(".", 1)[0]
        return int(pid) if pid.isdigit() else None
    return None


def blur_outputs_dir(store: str) -> str:
    return os.path.join(store, BLUR_OUTPUTS_DIR)


def blurred_images_dir(store: str) -> str:
    return os.path.join(store, BLURRED_IMAGES_DIR)
