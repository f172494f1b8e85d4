"""Waking the scheduler the moment something changes, with no poll interval.

A named pipe (FIFO) in the store directory: the scheduler keeps it open for reading and
selects on it; a client writes one byte after a commit that gives the scheduler work. No
network socket is involved. Writes never block: with no reader (no scheduler) the open
fails at once and is ignored, and a full pipe already holds a pending wake-up.
"""

from __future__ import annotations

import errno
import os
import stat

from ._layout import fifo_path


def notify(store_path: str) -> bool:
    """Wake the scheduler of ``store_path``; False when none is listening."""
    try:
        fd = os.open(fifo_path(store_path), os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            return False
        raise
    try:
        os.write(fd, b"!")
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return True


class WakeReceiver:
    """The scheduler's end: a file descriptor to select on, and ``drain()``."""

    def __init__(self, store_path: str) -> None:
        path = fifo_path(store_path)
        try:
            mode = os.stat(path).st_mode
            if not stat.S_ISFIFO(mode):
                os.unlink(path)
                raise FileNotFoundError(path)
        except FileNotFoundError:
            os.mkfifo(path, 0o600)
        # O_RDWR keeps a writer open ourselves, so the pipe never reports end-of-file.
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def fileno(self) -> int:
        return self.fd

    def poke(self) -> None:
        """Make the FIFO readable from inside the scheduler (safe in a signal handler)."""
        try:
            os.write(self.fd, b"!")
        except OSError:  # full: a wake-up is already pending; closed: nothing waits
            pass

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)
