"""What the scheduler and its supervisor say about themselves, in small files beside the
database: read without opening it (``nbwork daemon status`` and ``stop`` work on a store
whose database is broken, and the supervisor never opens it).

    scheduler.beat     the scheduler's heartbeat: its pid, when its loop last turned (on the
                       system's monotonic clock, shared by every process of a boot), how many
                       attempts it has recorded, what it is doing (``running``, or waiting
                       for a store that cannot be opened), and its temp folder. Rewritten in
                       place, a fixed-size record: no new disk block is needed on a full disk.
    supervisor.note    why the supervisor stopped restarting the scheduler, and when. While
                       it is recent, clients do not start a scheduler by themselves (they
                       warn); ``wm.daemon.start()`` / ``nbwork daemon start`` clears it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from ._layout import beat_path, note_path

_BEAT_SIZE = 512


@dataclass(frozen=True)
class Beat:
    pid: int
    monotonic: float
    time: float
    recorded: int
    state: str
    tmpdir: str | None

    @property
    def age(self) -> float:
        """Seconds since the scheduler's loop last turned."""
        return max(0.0, time.monotonic() - self.monotonic)


class BeatWriter:
    """The scheduler's end: ``beat()`` rewrites the record in place."""

    def __init__(self, store_path: str) -> None:
        self.path = beat_path(store_path)
        self.fd: int | None = None
        self.recorded = 0
        self.state = "running"
        self.tmpdir: str | None = None

    def beat(self) -> None:
        record = json.dumps({
            "pid": os.getpid(), "monotonic": time.monotonic(), "time": time.time(),
            "recorded": self.recorded, "state": self.state[:300], "tmpdir": self.tmpdir,
        }).encode()
        record = record[:_BEAT_SIZE - 1].ljust(_BEAT_SIZE - 1) + b"\n"
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.pwrite(self.fd, record, 0)
        except OSError:
            pass  # status only: a beat that cannot be written is late, nothing else

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_beat(store_path: str) -> Beat | None:
    """The last heartbeat written in the store (by a live scheduler or a dead one)."""
    for _ in range(3):  # a read that met a write in progress is read again
        try:
            with open(beat_path(store_path), "rb") as f:
                raw: dict[str, Any] = json.loads(f.read(_BEAT_SIZE))
            return Beat(int(raw["pid"]), float(raw["monotonic"]), float(raw["time"]),
                        int(raw.get("recorded", 0)), str(raw.get("state", "running")),
                        raw.get("tmpdir"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def remove_dead_tmpdir(beat: Beat | None, own: str | None) -> str | None:
    """Remove the temp folder a dead scheduler left (``/tmp/pymp-*``: multiprocessing's,
    removed at a clean exit, never after a SIGKILL). Called with the store's lock held, so
    the scheduler of ``beat`` is dead. Returns the folder removed, if any."""
    path = beat.tmpdir if beat is not None else None
    if not path or path == own or not os.path.basename(path).startswith("pymp-"):
        return None
    if os.path.dirname(path) != tempfile.gettempdir():
        return None
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return None
    shutil.rmtree(path, ignore_errors=True)
    return path


# --- the supervisor's note ----------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    time: float
    message: str

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.time)


def write_note(store_path: str, message: str) -> None:
    path = note_path(store_path)
    temporary = f"{path}.{os.getpid()}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"time": time.time(), "message": message}, f)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def read_note(store_path: str) -> Note | None:
    try:
        with open(note_path(store_path)) as f:
            raw = json.load(f)
        return Note(float(raw["time"]), str(raw["message"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_note(store_path: str) -> None:
    try:
        os.unlink(note_path(store_path))
    except OSError:
        pass
