"""The scheduler's exclusive lock: one POSIX record lock on ``scheduler.lock``.

A POSIX lock is released by the kernel the moment its holder dies (no stale lease to time
out), is not inherited by forked worker processes, and can be *queried* without taking it
(``F_GETLK`` names the holder's pid), so clients can check for a live scheduler without
ever getting in its way.
"""

from __future__ import annotations

import fcntl
import os
import struct

from ._layout import lock_path

# struct flock { short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid; }
_FLOCK = "@hhqqi"


def last_holder_pid(store_path: str) -> int | None:
    """The pid of the last process that took the lock (it may hold it still, or be gone)."""
    try:
        fd = os.open(lock_path(store_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return int(f.read().strip() or 0) or None
    except (FileNotFoundError, ValueError):
        return None


def holder_pid(store_path: str) -> int | None:
    """The pid of the process holding the scheduler lock, or None when nobody holds it."""
    try:
        fd = os.open(lock_path(store_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        l_type, _, _, _, pid = struct.unpack(_FLOCK, answer)
        return None if l_type == fcntl.F_UNLCK else pid
    finally:
        os.close(fd)


class SchedulerLock:
    """Held by the one scheduler of a store for its whole life."""

    def __init__(self, store_path: str) -> None:
        self.path = lock_path(store_path)
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        # Record who took it. The record outlives the lock, so a client that sees the lock
        # free can tell a scheduler that is still starting (never took it) from one that is
        # exiting (took it, then let go): see Daemon.ensure_running.
        record = f"{os.getpid()}\n".encode().ljust(12)  # fixed size: rewritten in place
        try:
            os.pwrite(fd, record, 0)
        except OSError:
            pass  # a full disk: the lock holds all the same (the record only helps clients)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the POSIX lock
            self.fd = None
