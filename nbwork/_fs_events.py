"""Which paths were touched: watchdog's events (inotify on Linux), handed from its thread to
the scheduler's, and the paths where events cannot be trusted (network shares), which are
listed every ``POLL_INTERVAL`` instead. What changed is for the listings of ``_watch`` to
say: a lost event costs latency, never a change."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import psutil

log = logging.getLogger("nbwork.watch")

POLL_INTERVAL = 2.0
"""Seconds between listings of what cannot be watched with notifications."""
NO_NOTIFICATIONS = frozenset({
    "nfs", "nfs4", "cifs", "smbfs", "smb3", "9p", "afs", "fuse.sshfs", "fuse.rclone",
    "fuse.s3fs", "davfs", "fuse.davfs2", "vboxsf", "ceph", "glusterfs", "fuse.glusterfs"})
"""File systems where inotify sees only this machine's own changes (network shares): their
paths are listed every POLL_INTERVAL instead. ``NBWORK_WATCH_POLL=1`` does that for all."""


class PathEvents:
    """The paths watchdog reported, handed from its thread to the scheduler's."""

    def __init__(self, poke: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._paths: set[str] = set()
        self._poke = poke

    def dispatch(self, event: Any) -> None:  # watchdog's handler interface
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type in ("modified", "closed"):
            # A folder's own time changes with each entry, and each entry has its event:
            # taking this one too would list a whole (big) folder for every new file.
            return
        with self._lock:
            fresh = not self._paths
            self._paths.add(os.fsdecode(event.src_path))
            dest = getattr(event, "dest_path", "")
            if dest:
                self._paths.add(os.fsdecode(dest))
        if fresh:
            self._poke()

    def take(self) -> set[str]:
        with self._lock:
            paths, self._paths = self._paths, set()
        return paths


class EventObserver:
    """watchdog's observer with counted watches; paths it cannot watch are polled."""

    def __init__(self, events: PathEvents) -> None:
        self._events = events
        self._observer: Any = None
        self._handles: dict[tuple[str, bool], Any] = {}
        self._users: dict[tuple[str, bool], int] = {}
        self.polled: set[tuple[str, bool]] = set()

    def add(self, path: str, recursive: bool) -> None:
        key = (path, recursive)
        self._users[key] = self._users.get(key, 0) + 1
        if self._users[key] > 1:
            return
        if not notifications_work(path):
            log.info("%s is on a network share: listed every %g s", path, POLL_INTERVAL)
            self.polled.add(key)
            return
        try:
            if self._observer is None:
                from watchdog.observers import Observer

                self._observer = Observer()
                self._observer.daemon = True
                self._observer.start()
            # A file is watched through its folder (inotify reports entries of a folder).
            target = path if os.path.isdir(path) else os.path.dirname(path)
            self._handles[key] = self._observer.schedule(self._events, target,
                                                         recursive=recursive)
        except Exception as exc:  # no watchdog, no inotify, too many watches, a share
            log.warning("cannot watch %s for notifications (%s); it is listed every %g s "
                        "instead", path, exc, POLL_INTERVAL)
            self.polled.add(key)

    def remove(self, path: str, recursive: bool) -> None:
        key = (path, recursive)
        self._users[key] = self._users.get(key, 1) - 1
        if self._users[key] > 0:
            return
        del self._users[key]
        self.polled.discard(key)
        handle = self._handles.pop(key, None)
        if handle is not None and self._observer is not None:
            try:
                self._observer.unschedule(handle)
            except Exception:  # the folder is gone: its watch went with it
                pass

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


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
