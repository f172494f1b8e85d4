"""An attempt's stdout and stderr: written to a scratch file, copied into the work's log.

Creating a file per attempt cost almost a millisecond on these disks, more than a no-op work,
so a warm worker process points fds 1 and 2 at one scratch file of its own
(``.slot-<pid>.out`` beside the logs, ``O_APPEND``) for every attempt. What an attempt
wrote is appended to its log when it ends; an attempt that runs longer than
``LOG_COPY_AFTER`` has its output copied into its log as it comes (every
``LOG_COPY_INTERVAL``), so ``nbwork logs`` follows it live.

The copy never moves fds 1 and 2. Pointing them at the log once an attempt ran long (as
nbwork once did) lost output: a write in flight at the switch, and every process the attempt
had started before it (they hold the scratch file as their stdout), went on writing into
the scratch file, which the switch had emptied. Here every byte goes to the scratch file, in
order, and the copy follows it.

A work's log is capped (``NBWORK_LOG_MAX_BYTES``, 16 MiB by default): an attempt's output
past the cap is cut in the middle, with a line saying how much, and its last part kept
(where a traceback is); a log already past half the cap when an attempt starts writing
loses what earlier attempts wrote (said in a line too), so a periodic work's log stays
bounded.

If the process dies mid-attempt, ``salvage`` appends what its attempt wrote and had not yet
been copied; a small state file beside the scratch file (``.slot-<pid>.at``) says how far
the copy had got.
"""

from __future__ import annotations

import ctypes
import io
import os
import struct
import sys
import threading
import time

import psutil

from .._layout import scratch_path, scratch_pid
from .._layout import scratch_state_path as _state_path

LOG_COPY_AFTER = 0.5
"""Seconds an attempt runs before its output is copied into its log as it comes."""
LOG_COPY_INTERVAL = 0.1
DEFAULT_LOG_MAX_BYTES = 16 << 20
TAIL_MAX = 1 << 20
"""Bytes of the end of an attempt's output kept after a cut (at most a quarter of the cap)."""
SCRATCH_TRIM = 8 << 20
"""Once an attempt's output is past the cap, what was copied of its scratch file is freed
whenever this much more was written, so a flood fills no disk (its last part is kept in
memory)."""
_CHUNK = 1 << 20
_STATE = struct.Struct("qq")  # bytes of the scratch file already in the log; log opened?


def log_max_bytes() -> int:
    """The cap from ``NBWORK_LOG_MAX_BYTES`` (bytes, at least 1 KiB), else the default."""
    raw = os.environ.get("NBWORK_LOG_MAX_BYTES")
    if not raw:
        return DEFAULT_LOG_MAX_BYTES
    try:
        value = int(raw)
        if value < 1024:
            raise ValueError
        return value
    except ValueError:
        print(f"nbwork: NBWORK_LOG_MAX_BYTES={raw!r} is not a number of bytes of at least "
              f"1024; using {DEFAULT_LOG_MAX_BYTES}", file=sys.stderr, flush=True)
        return DEFAULT_LOG_MAX_BYTES


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class LogWriter:
    """Appends one attempt's output to its log file, within the cap. ``fresh``: the attempt
    starts writing now (a log past half the cap is emptied first); else it goes on with a
    log it already wrote to (a salvage)."""

    def __init__(self, path: str, limit: int, fresh: bool = True) -> None:
        self.path, self.limit, self.fresh = path, limit, fresh
        self.fd: int | None = None
        self.head_left = 0
        self.tail_keep = 0
        self.tail = bytearray()
        self.cut = 0  # bytes left out between the head and the tail

    @property
    def opened(self) -> bool:
        return self.fd is not None

    @property
    def full(self) -> bool:
        return self.fd is not None and self.head_left == 0

    def open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(fd).st_size
        if self.fresh and size > self.limit // 2:
            os.ftruncate(fd, 0)
            _write_all(fd, (f"[nbwork: {size} bytes written by earlier attempts were removed: "
                            f"this work's log is capped at {self.limit} bytes "
                            "(NBWORK_LOG_MAX_BYTES)]\n").encode())
            size = os.fstat(fd).st_size
        budget = max(0, self.limit - size)
        self.tail_keep = min(TAIL_MAX, budget // 4)
        self.head_left = budget - self.tail_keep
        self.fd = fd
        return fd

    def write(self, data: bytes) -> None:
        fd = self.fd if self.fd is not None else self.open()
        if self.head_left:
            head = data[:self.head_left]
            _write_all(fd, head)
            self.head_left -= len(head)
            data = data[len(head):]
        if data:
            self.tail += data
            excess = len(self.tail) - self.tail_keep
            if excess > 0:
                del self.tail[:excess]
                self.cut += excess

    def close(self) -> None:
        if self.fd is None:
            return
        try:
            if self.cut:
                _write_all(self.fd, (
                    f"\n[nbwork: {self.cut} bytes of output cut here: a work's log is capped at "
                    f"{self.limit} bytes (NBWORK_LOG_MAX_BYTES); the last {len(self.tail)} "
                    "bytes follow]\n").encode())
            if self.tail:
                _write_all(self.fd, self.tail)
        finally:
            os.close(self.fd)
            self.fd = None


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _punch_hole(fd: int, end: int) -> bool:
    """Free the disk space of bytes 0..end of ``fd``, keeping its size (Linux); False where
    the system or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        return libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, 0, end) == 0
    except (OSError, AttributeError):
        return False


def _copy(scratch_fd: int, start: int, writer: LogWriter) -> int:
    """Append the scratch file from ``start`` on to ``writer``; returns where it ended."""
    end = os.fstat(scratch_fd).st_size
    while start < end:
        chunk = os.pread(scratch_fd, min(_CHUNK, end - start), start)
        if not chunk:
            break
        writer.write(chunk)
        start += len(chunk)
    return start


class Capture:
    """Points fds 1 and 2 at the scratch file for an attempt, and back afterwards."""

    def __init__(self) -> None:
        self._saved = (os.dup(1), os.dup(2))
        self._limit = log_max_bytes()
        self._scratch_fd: int | None = None
        self._state_fd: int | None = None
        self._lock = threading.Lock()
        self._writer: LogWriter | None = None
        self._copied = 0
        self._freed = 0  # the scratch file's bytes before this have been freed (see _copy_now)
        self._due: float | None = None
        self._state_dirty = False
        threading.Thread(target=self._copier, name="nbwork-log", daemon=True).start()

    def to_log(self, path: str | None) -> None:
        if not path:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        if self._scratch_fd is None:
            # Beside the logs, named by pid: if this process dies mid-attempt, the executor
            # moves what the attempt wrote into its log (see salvage).
            log_dir, pid = os.path.dirname(path), os.getpid()
            flags = os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            self._scratch_fd = os.open(scratch_path(log_dir, pid), flags | os.O_RDWR | os.O_APPEND,
                                       0o600)
            self._state_fd = os.open(_state_path(log_dir, pid), flags | os.O_WRONLY, 0o600)
            self._state_dirty = True
        if os.fstat(self._scratch_fd).st_size:
            os.ftruncate(self._scratch_fd, 0)
        with self._lock:  # the copier polls: waking it cost more than a no-op work
            self._writer = LogWriter(path, self._limit)
            self._copied = self._freed = 0
            if self._state_dirty:
                self._save_state()
            self._due = time.monotonic() + LOG_COPY_AFTER
        os.dup2(self._scratch_fd, 1)
        os.dup2(self._scratch_fd, 2)

    def _save_state(self) -> None:
        assert self._state_fd is not None and self._writer is not None
        opened = self._writer.opened
        os.pwrite(self._state_fd, _STATE.pack(self._copied, opened), 0)
        self._state_dirty = bool(self._copied or opened)

    def _copy_now(self) -> None:
        """Called with the lock held."""
        writer, scratch = self._writer, self._scratch_fd
        assert writer is not None and scratch is not None
        if not writer.opened:
            writer.open()  # the log of a running attempt exists, if empty, to be followed
        self._copied = _copy(scratch, self._copied, writer)
        # Past the cap nothing more goes into the log but its last part (kept in memory by
        # the writer): free what was copied, so a flood fills no disk. Punching a hole frees
        # the copied bytes while the writers append on; where a file system cannot, the file
        # is emptied only while nobody writes (one size check before: a write in between
        # would be lost, but it would have been cut anyway unless it was the very last).
        if writer.full and self._copied - self._freed > SCRATCH_TRIM:
            if _punch_hole(scratch, self._copied):
                self._freed = self._copied
            elif os.fstat(scratch).st_size == self._copied:
                os.ftruncate(scratch, 0)
                self._copied = self._freed = 0
        self._save_state()

    def _copier(self) -> None:
        while True:
            time.sleep(LOG_COPY_INTERVAL)  # polled: late by at most one interval
            with self._lock:
                if self._writer is None or self._due is None or time.monotonic() < self._due:
                    continue
                try:
                    self._copy_now()
                except OSError:
                    pass  # a full disk, say: the next round (or restore) tries again

    def restore(self) -> None:
        """The attempt is over (and what it started is gone): the rest of its output goes
        into its log, fds 1 and 2 back to the process's own."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        with self._lock:
            writer, self._writer, self._due = self._writer, None, None
            if writer is None:
                return
            end: int | None = None  # the scratch file's size, once copied
            try:
                end = _copy(self._scratch_fd, self._copied, writer)  # type: ignore[arg-type]
                writer.close()
            except OSError as exc:
                print(f"nbwork: could not write the log {writer.path}: {exc}", file=sys.stderr)
            # All of it is in the log now: a death before the next attempt's to_log must not
            # salvage it into that attempt's log.
            self._copied = self._freed = 0
            self._writer = None
            if end is None:
                end = os.fstat(self._scratch_fd).st_size  # type: ignore[arg-type]
            if end:
                os.ftruncate(self._scratch_fd, 0)  # type: ignore[arg-type]
            if self._state_dirty:
                os.pwrite(self._state_fd, _STATE.pack(0, 0), 0)  # type: ignore[arg-type]
                self._state_dirty = False


class _LogStream(io.TextIOBase):
    """A text stream into a ``LogWriter`` (which creates the log at its first byte)."""

    def __init__(self, writer: LogWriter) -> None:
        self._writer = writer

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._writer.write(text.encode("utf-8", errors="replace"))
        return len(text)


class StreamCapture:
    """Sends ``sys.stdout`` and ``sys.stderr`` to an attempt's log while it runs, for an
    attempt run in a process that is not the attempt's own (the inline executor): only
    what Python code prints is caught, not what child processes write to fds 1 and 2."""

    def __init__(self) -> None:
        self._saved: tuple | None = None
        self._writer: LogWriter | None = None

    def to_log(self, path: str | None) -> None:
        if not path:
            return
        self._writer = LogWriter(path, log_max_bytes())
        stream = _LogStream(self._writer)
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = stream

    def restore(self) -> None:
        if self._saved is None:
            return
        sys.stdout, sys.stderr = self._saved
        self._saved = None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def salvage(log_dir: str, pid: int, log_path: str | None) -> None:
    """After the process ``pid`` died: append what its last attempt wrote (and had not yet
    been copied) to that attempt's log ``log_path``, and remove its scratch files."""
    path = scratch_path(log_dir, pid)
    try:
        if log_path:
            copied, opened = 0, False
            try:
                with open(_state_path(log_dir, pid), "rb") as f:
                    copied, opened = _STATE.unpack(f.read(_STATE.size))
            except (OSError, struct.error):
                pass
            with open(path, "rb") as scratch:
                writer = LogWriter(log_path, log_max_bytes(), fresh=not opened)
                try:
                    _copy(scratch.fileno(), copied, writer)
                finally:
                    writer.close()
    except OSError:
        pass
    for leftover in (path, _state_path(log_dir, pid)):
        try:
            os.unlink(leftover)
        except OSError:
            pass


def remove_stale(log_dir: str) -> None:
    """Remove the scratch files of worker processes that are gone (their scheduler was
    killed, and they ended themselves with nobody left to tidy up)."""
    try:
        names = os.listdir(log_dir)
    except OSError:
        return
    for name in names:
        pid = scratch_pid(name)
        if pid is not None and not psutil.pid_exists(pid):
            try:
                os.unlink(os.path.join(log_dir, name))
            except OSError:
                pass
