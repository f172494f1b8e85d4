"""Process groups and process trees: every signal nbwork sends to an attempt goes through here.

An attempt runs in a process that leads a process group of its own (so a stop reaches every
process the worker started in it) and is a *child subreaper* (so what it orphans, even in
another session, becomes its child and stays in reach). Ending an attempt that ignores its
stop is always the same two steps: SIGTERM to its group after its grace period, SIGKILL
``KILL_AFTER_TERM`` seconds later (``GraceThenKill``). Trees are killed frozen: every
process is stopped (SIGSTOP) before any is killed, and the list is taken again until no new
process appears, so nothing forks its way out meanwhile.

A pid is only signalled while it is known to be the process we mean: a group whose leader
was reaped may be gone and its pid reused, so callers say ``group_only`` then, and a pid
read back from the store is checked against its creation time (``same_process``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from dataclasses import dataclass

import psutil

NICE_INCREMENT = 10
"""Worker processes run niced so the notebook stays responsive."""
KILL_AFTER_TERM = 2.0
"""Seconds between SIGTERM and SIGKILL of a stopped attempt's process group."""
_PR_SET_CHILD_SUBREAPER = 36
_FREEZE_ROUNDS = 50


# --- this process ------------------------------------------------------------------------


def become_group_leader(subreaper: bool = False) -> None:
    """Lead a process group of our own (a stop kills it whole), niced; as a *child
    subreaper*, processes orphaned below us become our children, so none escapes."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    with contextlib.suppress(OSError):
        os.nice(NICE_INCREMENT)
    if subreaper:
        become_subreaper()


def become_subreaper() -> None:
    """Processes orphaned below this one become its children (Linux), so none escapes."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: descendants are found while parents live
        pass


def end_own_group() -> None:
    """Our parent is gone: end this process and everything its attempt started, so a
    recovered work never runs twice at once."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):  # first what left the group, while this process lives
        kill_descendants()
    with contextlib.suppress(OSError):
        if os.getpgid(0) == os.getpid():  # only a group of our own (see become_group_leader)
            os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def has_children() -> bool:
    """Cheap check for descendants, one system call (as subreaper, orphans become our
    children; a grandchild whose parent lives has a live child of ours above it)."""
    try:
        os.waitpid(-1, os.WNOHANG)  # reaps one that ended, if any: there may be more
    except ChildProcessError:
        return False
    return True


def child_pids() -> set[int] | None:
    """This process's children, read from ``/proc`` (Linux); None where it cannot tell.
    Far cheaper than ``psutil``'s ``children()``, which reads every process's status: a
    cost per attempt that halved the attempts a busy Dask worker ran."""
    pids: set[int] = set()
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.update(int(pid) for pid in f.read().split())
    except (OSError, ValueError):
        return None
    return pids


def kill_leftovers() -> None:
    """Kill every process the last attempt left behind (whatever its session or group: as
    a subreaper this process has them all below it), and reap them."""
    if not has_children():
        return
    kill_descendants()
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0 and not has_children():
            return


# --- other processes ---------------------------------------------------------------------


def kill_group(pid: int, sig: int, group_only: bool = True) -> None:
    """Signal the process group led by ``pid``; with no such group, the process itself
    unless ``group_only`` (once a process has been reaped its pid may be someone else's)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        if not group_only:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
    except PermissionError:
        pass


def same_process(pid: int, create_time: float | None) -> psutil.Process | None:
    """The process ``pid`` (perhaps a zombie) if it is the one created at ``create_time``
    (None: any), else None."""
    try:
        process = psutil.Process(pid)
        if create_time is not None and abs(process.create_time() - create_time) > 0.01:
            return None  # the pid was reused by an unrelated process
    except psutil.Error:
        return None
    return process


def kill_recorded(pid: int | None, create_time: float | None) -> None:
    """SIGKILL the group of a process known by its pid and creation time (read back from
    the store after its scheduler died), if it is still there (a zombie leader's group
    may still have live members)."""
    if pid is not None and same_process(pid, create_time or None) is not None:
        kill_group(pid, signal.SIGKILL, group_only=False)


def kill_processes(roots: list[psutil.Process], with_descendants: bool = True) -> int:
    """SIGKILL ``roots`` (and everything below them), frozen first; returns how many."""
    frozen: dict[int, psutil.Process] = {}
    pending = list(roots)
    for _ in range(_FREEZE_ROUNDS):
        new = []
        for process in pending:
            if process.pid in frozen or process.pid == os.getpid():
                continue
            try:
                process.send_signal(signal.SIGSTOP)
            except psutil.Error:
                continue
            frozen[process.pid] = process
            new.append(process)
        if not new or not with_descendants:
            break
        pending = []
        for process in new:
            with contextlib.suppress(psutil.Error):
                pending.extend(process.children(recursive=True))
    for process in frozen.values():
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGKILL)
    return len(frozen)


def kill_descendants(pid: int | None = None) -> int:
    """SIGKILL every descendant of ``pid`` (this process by default), frozen first."""
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return 0
    return kill_processes(children) if children else 0


def kill_orphans_of(parent_pid: int, keep: set[int]) -> int:
    """SIGKILL the children of ``parent_pid`` (a subreaper) that are not in ``keep``, and what
    they started: processes orphaned by a worker process that died."""
    if parent_pid == os.getpid():
        children = child_pids()
        if children is not None and children <= keep:
            return 0  # nothing orphaned: no need to read every process's status
    try:
        children = [c for c in psutil.Process(parent_pid).children() if c.pid not in keep]
    except psutil.Error:
        return 0
    children = [c for c in children if _alive(c)]
    return kill_processes(children) if children else 0


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def exit_description(exitcode: int | None) -> str:
    """Why a worker process ended without a result, from its exit code (``-N``: signal N)."""
    if exitcode is None:
        return "worker process vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        return f"worker process died: signal {-exitcode} ({name})"
    return f"worker process exited with code {exitcode} before returning a result"


@dataclass
class GraceThenKill:
    """The end of a stopped attempt that does not return: after ``grace`` seconds SIGTERM
    to its group, ``KILL_AFTER_TERM`` seconds later SIGKILL. Times are ``time.monotonic()``."""

    term_at: float | None = None
    kill_at: float | None = None

    def start(self, now: float, grace: float) -> None:
        """The stop was asked for at ``now``; a running countdown is left as it is."""
        if self.term_at is None and self.kill_at is None:
            self.term_at = now + grace

    def cancel(self) -> None:
        """The attempt returned: nothing to send."""
        self.term_at = self.kill_at = None

    def deadline(self) -> float | None:
        """When ``due`` next has a signal to give, if ever."""
        return self.term_at if self.term_at is not None else self.kill_at

    def due(self, now: float) -> int | None:
        """The signal to send now (SIGTERM, then SIGKILL), once each; None if none is due."""
        if self.term_at is not None and now >= self.term_at:
            self.term_at, self.kill_at = None, now + KILL_AFTER_TERM
            return signal.SIGTERM
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            return signal.SIGKILL
        return None
