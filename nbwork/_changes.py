"""Learning that the store changed without polling it: an inotify watch (Linux, through
ctypes: no dependency) on the store's change signal, which every process that commits a
change writes right after the commit (``nbwork._store.changes``).

A ``ChangeListener`` is registered *before* its owner reads the change counter, so a commit
that lands between that read and the wait has already queued an event: no wake-up is lost.
Where there is no inotify (another system, no file, too many instances, a network share
whose other machines' writes inotify cannot see) ``available`` is False and the owner keeps
polling; where it works, the owner still polls now and then as a safety net (a process of an
older nbwork commits without writing the signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import select
import sys
import threading
from collections.abc import Iterator

import psutil

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000
_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_MOVE_SELF = 0x800
_IN_DELETE_SELF = 0x400
_IN_IGNORED = 0x8000
_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_MOVE_SELF | _IN_DELETE_SELF
_GONE = _IN_MOVE_SELF | _IN_DELETE_SELF | _IN_IGNORED
_HEADER = 16  # struct inotify_event: wd, mask, cookie, len; then len bytes of name

NO_NOTIFICATIONS = frozenset({
    "nfs", "nfs4", "cifs", "smbfs", "smb3", "9p", "afs", "fuse.sshfs", "fuse.rclone",
    "fuse.s3fs", "davfs", "fuse.davfs2", "vboxsf", "ceph", "glusterfs", "fuse.glusterfs"})
"""File systems where inotify sees only this machine's own changes (network shares): the
scheduler lists their paths every ``_fs_events.POLL_INTERVAL`` instead, and ``wait`` polls
a store there. ``NBWORK_WATCH_POLL=1`` does that for all."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        return libc
    except (OSError, AttributeError):
        return None


_trusted: dict[str, bool] = {}
_trusted_lock = threading.Lock()


def _notifications_work(store_path: str) -> bool:
    """Cached per store: asking for the mounts costs about a millisecond."""
    with _trusted_lock:
        if store_path not in _trusted:
            _trusted[store_path] = notifications_work(store_path)
        return _trusted[store_path]


class ChangeListener:
    """One owner's inotify watch on a store's change signal (``signal_path``), whose inode
    is ``inode`` (see ``listening``)."""

    def __init__(self, signal_path: str, store_path: str, inode: int = 0) -> None:
        self.fd: int | None = None
        self.inode = inode
        libc = _libc()
        if libc is None or not inode or not _notifications_work(store_path):
            return
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:  # EMFILE: the user's inotify instances are all taken
            return
        if libc.inotify_add_watch(fd, os.fsencode(signal_path), _MASK) < 0:
            os.close(fd)
            return
        self.fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    @property
    def available(self) -> bool:
        """Whether a change wakes ``wait`` (else its owner must poll)."""
        return self.fd is not None

    def wait(self, timeout: float) -> bool:
        """Block until a change was signalled since the last ``wait`` (True: the events
        are consumed) or ``timeout`` seconds passed (False)."""
        if self.fd is None:
            return False
        if not self._poll.poll(max(0, int(timeout * 1000 + 0.999))):
            return False
        self._drain()
        return True

    def _drain(self) -> None:
        """Consume the queued events (without blocking)."""
        fd = self.fd
        if fd is None:
            return
        try:
            while True:
                data = os.read(fd, 4096)
                offset = 0
                while offset + _HEADER <= len(data):
                    mask = int.from_bytes(data[offset + 4:offset + 8], sys.byteorder)
                    if mask & _GONE:
                        # The file went (a store removed or rebuilt): nothing will wake us
                        # any more, so the owner goes back to polling.
                        self.close()
                        return
                    offset += _HEADER + int.from_bytes(data[offset + 12:offset + 16],
                                                       sys.byteorder)
        except BlockingIOError:
            pass

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> ChangeListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


MAX_IDLE = 4
"""Listeners kept open per store for the next waits. Closing an inotify instance waits for
the kernel's RCU grace period (milliseconds, tens on a loaded machine): a wait that closed
its own would end that much later, so the next one reuses it instead."""
_idle: dict[str, list[ChangeListener]] = {}
_idle_pid = os.getpid()
_idle_lock = threading.Lock()


def _signal_inode(signal_path: str) -> int:
    try:
        return os.stat(signal_path).st_ino
    except OSError:
        return 0


def _take(signal_path: str, store_path: str) -> ChangeListener:
    global _idle_pid
    inode = _signal_inode(signal_path)
    with _idle_lock:
        if _idle_pid != os.getpid():  # a forked child must not read its parent's events
            forgotten = [ls for pool in _idle.values() for ls in pool]
            _idle.clear()
            _idle_pid = os.getpid()
            for listener in forgotten:  # (the parent's instance stays open: this is fast)
                listener.close()
        pool = _idle.get(store_path, [])
        while pool:
            listener = pool.pop()
            if listener.inode == inode:
                listener._drain()  # what it heard while idle is old news now
                if listener.available:
                    return listener
            listener.close()  # the store was made anew at this path: a watch of the old one
    return ChangeListener(signal_path, store_path, inode)


def _give_back(store_path: str, listener: ChangeListener) -> None:
    with _idle_lock:
        pool = _idle.setdefault(store_path, [])
        if listener.available and len(pool) < MAX_IDLE and _idle_pid == os.getpid():
            pool.append(listener)
            return
    listener.close()


@contextlib.contextmanager
def listening(signal_path: str, store_path: str) -> Iterator[ChangeListener]:
    """A listener registered for the store's changes from now on (a reused one, if any:
    see MAX_IDLE), given back when done."""
    listener = _take(signal_path, store_path)
    try:
        yield listener
    finally:
        _give_back(store_path, listener)


def notifications_work(path: str) -> bool:
    """Whether file events can be trusted for ``path`` (not on a network share)."""
    if os.environ.get("NBWORK_WATCH_POLL", "0") not in ("", "0"):
        return False
    try:
        mounts = psutil.disk_partitions(all=True)
    except Exception:
        return True
    real = os.path.realpath(path)
    best = None
    for mount in mounts:
        point = mount.mountpoint.rstrip(os.sep) + os.sep
        if (real + os.sep).startswith(point) and (best is None or len(point) > len(best[0])):
            best = (point, mount.fstype)
    return best is None or best[1].lower() not in NO_NOTIFICATIONS
