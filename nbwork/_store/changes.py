"""The change signal: one byte written to ``changes.signal`` after every commit that bumps
the change counter, so that waiters (``nbwork._changes``) learn of it from the kernel
(inotify) the moment it is committed, instead of polling the database.

The byte is written *after* SQLite's commit returned, so a waiter woken by it always reads
the new counter. It is the same byte at the same offset every time: the file never grows,
and each write is one ``pwrite`` into the page cache (no fsync: the signal is no data).
A lost signal (no file, an error) costs a waiter its safety-net poll, never a change.
"""

from __future__ import annotations

import contextlib
import os

from .. import _layout
from .._storedir import StoreDir

_OPEN_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class ChangeSignal:
    """The writing end, kept open by a ``Store`` (a forked child shares the descriptor)."""

    def __init__(self, store_dir: StoreDir) -> None:
        self.path = store_dir.join(_layout.CHANGES)
        """The file to watch: resolves through the store's open directory."""
        self._fd: int | None = None
        try:
            store_dir.create_file(_layout.CHANGES)
            self._fd = os.open(_layout.CHANGES, _OPEN_FLAGS, dir_fd=store_dir.fd)
        except OSError:  # a read-only store, say: its waiters poll
            self._fd = None

    def send(self) -> None:
        """Tell every waiter that a commit changed the store."""
        fd = self._fd
        if fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(fd, b"!", 0)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
