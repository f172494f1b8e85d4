"""Starting, finding and stopping the scheduler process of a store.

The scheduler runs detached: a session of its own (``start_new_session``), so a kernel
restart, which kills the kernel's process group, does not touch it; its output goes to
``scheduler.log`` in the store. The scheduler process itself starts in
``_scheduler_main.py``; ``Daemon.run()`` runs it in the foreground.

Environment (read by the client that starts the scheduler): ``NBWORK_IDLE_EXIT`` seconds
without unfinished work before it exits; ``NBWORK_STOP_GRACE`` seconds a stopped worker
gets before its process group is terminated; ``NBWORK_SUPERVISE=0`` starts the scheduler
without its supervisor (``_supervisor.py``), e.g. when a service manager restarts it;
``NBWORK_HUNG_AFTER`` seconds without a heartbeat before the supervisor ends a hung one.

Stopping and status read only the lock and the liveness files (``_liveness.py``), never
the database: they work on a store whose database is broken, and never start anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime

import psutil

from . import _layout
from ._liveness import clear_note, read_beat, read_note
from ._lock import holder_pid, last_holder_pid
from ._storedir import StoreDir
from ._supervisor import (
    FORMER_SCHEDULER_CODES,
    GIVE_UP_HOLD,
    SCHEDULER_CODE,
    SUPERVISOR_CODE,
    _hung_after,
    _store_of,
)
from .errors import SchedulerError, SchedulerWarning, caller_stacklevel

START_TIMEOUT = 20.0
_children: list[subprocess.Popen] = []


def _wait_until(condition, timeout: float) -> bool:
    """Wait for ``condition()`` with a short, growing poll (processes give no event to wait on)."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def store_processes(store_path: str) -> list[psutil.Process]:
    """The live supervisors and schedulers of a store, found by their command line: one
    that is still starting, or a supervisor waiting to restart one, holds no lock."""
    real = os.path.realpath(store_path)
    programs = {SCHEDULER_CODE, SUPERVISOR_CODE, *FORMER_SCHEDULER_CODES}
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if (process.pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE
                or len(cmdline) < 3 or cmdline[1] != "-c" or cmdline[2] not in programs):
            continue
        store = _store_of(cmdline[3:])
        if store is not None and os.path.realpath(store) == real:
            found.append(process)
    return found


def _is_supervisor(process: psutil.Process) -> bool:
    try:
        return SUPERVISOR_CODE in process.cmdline()
    except psutil.Error:
        return False


def open_log(store_path: str, dir_fd: int | None = None):
    """``scheduler.log`` of the store, for appending; private (0600) whatever the umask."""
    name = (_layout.SCHEDULER_LOG if dir_fd is not None
            else _layout.scheduler_log_path(store_path))
    fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)  # one made by an older nbwork (0644, or 0666 under umask 0)
    except OSError:
        pass  # not ours to change (a link to a log kept elsewhere): the store check judged it
    return os.fdopen(fd, "ab")


def _reap() -> None:
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


@dataclass(frozen=True)
class SchedulerStatus:
    """What ``wm.daemon.status()`` and ``nbwork daemon status`` say about a store's scheduler.

    ``pid``: the scheduler that holds the store (None: none does); ``supervisor_pid``: its
    supervisor; ``starting``: a scheduler or supervisor process runs but none holds the store
    yet; ``heartbeat_age``: seconds since the scheduler's loop last turned; ``state``:
    ``"running"``, or why it waits (a store that cannot be opened yet); ``hung_after``: the
    age at which its supervisor ends it as hung; ``gave_up``: why the supervisor stopped
    restarting it, if it did recently (``gave_up_at``: when).
    """

    pid: int | None
    supervisor_pid: int | None
    starting: bool
    heartbeat_age: float | None
    state: str | None
    hung_after: float
    gave_up: str | None
    gave_up_at: datetime | None

    @property
    def responding(self) -> bool:
        """False when the scheduler holds the store but its heartbeat is late (stopped or hung)."""
        return self.pid is None or self.heartbeat_age is None or (
            self.heartbeat_age <= min(self.hung_after / 2, 10.0))

    def describe(self) -> str:
        """One line for people: running, not responding, starting, stopped or given up."""
        if self.pid is not None:
            line = f"running, pid {self.pid}"
            if self.heartbeat_age is not None:
                line += f", heartbeat {self.heartbeat_age:.1f} s ago"
                if not self.responding:
                    line += (f"; NOT RESPONDING (stopped or hung); its supervisor ends it "
                             f"after {self.hung_after:g} s without a heartbeat")
            if self.state and self.state != "running":
                line += f"; {self.state}"
            return line
        if self.starting:
            return "starting" + (f" ({self.state})" if self.state and self.state != "running"
                                 else "")
        if self.gave_up:
            return f"not running: {self.gave_up}"
        return "not running"


class Daemon:
    """The scheduler process of one store: ``pid``, ``start()``, ``stop()``, ``status()``."""

    def __init__(self, store_path: str, idle_exit: float | None = None,
                 store_dir: StoreDir | None = None) -> None:
        self.store_path = store_path
        # The open store directory (see _storedir), when the caller has it: the log and the
        # lock file are reached through it (the path is for messages and for the processes
        # started here, which open the store themselves). Held, so it stays open as long.
        self.store_dir = store_dir
        self._access = store_dir.access if store_dir is not None else store_path
        self.idle_exit = idle_exit
        self._spawned: subprocess.Popen | None = None
        self._spawned_at = 0.0
        self._holder_at_spawn: int | None = None
        self._warned_note: float | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the running scheduler, or None."""
        return holder_pid(self._access)

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    def status(self) -> SchedulerStatus:
        """The scheduler's state, read from its lock and liveness files (not the database)."""
        pid = holder_pid(self.store_path)
        processes = store_processes(self.store_path)
        supervisor = next((p.pid for p in processes if _is_supervisor(p)), None)
        beat = read_beat(self.store_path)
        live_beat = beat if beat is not None and (
            beat.pid == pid or (pid is None and any(p.pid == beat.pid for p in processes))
        ) else None
        note = self._give_up_note()
        return SchedulerStatus(
            pid=pid, supervisor_pid=supervisor, starting=pid is None and bool(processes),
            heartbeat_age=live_beat.age if live_beat else None,
            state=live_beat.state if live_beat else None, hung_after=_hung_after(),
            gave_up=note.message if note else None,
            gave_up_at=datetime.fromtimestamp(note.time) if note else None)

    def state(self) -> str | None:
        """What the live scheduler says it is doing ("running", "waiting for the cluster:
        …", "waiting for the store: …"), read from its heartbeat file alone; None when no
        live scheduler beats. Cheap enough for every redraw of a widget: ``status()`` also
        looks through the machine's processes."""
        beat = read_beat(self.store_path)
        if beat is None or beat.age > _hung_after() or not psutil.pid_exists(beat.pid):
            return None
        return beat.state

    def _give_up_note(self):
        note = read_note(self.store_path)
        return note if note is not None and note.age < GIVE_UP_HOLD else None

    def spawn(self) -> None:
        """Start a scheduler in the background without waiting (a duplicate exits by itself)."""
        _reap()
        # "-c" rather than "-m": the worker processes forked later must not re-import a
        # main module, and nbwork itself imports this module.
        command = [sys.executable, "-c", SCHEDULER_CODE, "--store", self.store_path]
        idle = self.idle_exit if self.idle_exit is not None else os.environ.get("NBWORK_IDLE_EXIT")
        if idle is not None:
            command += ["--idle-exit", str(idle)]
        grace = os.environ.get("NBWORK_STOP_GRACE")
        if grace is not None:
            command += ["--stop-grace", grace]
        if os.environ.get("NBWORK_SUPERVISE", "1") != "0":
            # Under a supervisor that restarts it if it dies (SIGKILL, out of memory, a
            # crash), so work resumes with no client call; it gets the same arguments.
            command = [sys.executable, "-c", SUPERVISOR_CODE, *command[3:]]
        # Who held the lock before this spawn: ensure_running tells from it whether the
        # scheduler spawned here has taken the lock yet (the supervisor's pid never does).
        self._holder_at_spawn = last_holder_pid(self._access)
        try:
            store_dir = self.store_dir
            with open_log(self.store_path, store_dir.fd if store_dir else None) as log_file:
                self._spawned = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                    start_new_session=True, close_fds=True, cwd=self.store_path,
                )
            self._spawned_at = time.monotonic()
            _children.append(self._spawned)
        except OSError as exc:
            raise SchedulerError(f"could not start the scheduler: {exc}") from exc

    def ensure_running(self) -> None:
        """Spawn a scheduler unless one holds the store or ours is still starting up.

        Not while its supervisor's give-up stands (``GIVE_UP_HOLD``): a scheduler that kept
        dying is not restarted by every client call; this warns (``SchedulerWarning``, once
        per give-up) instead, and ``start()`` tries again."""
        if self.is_running:
            return
        note = self._give_up_note()
        if note is not None:
            if self._warned_note != note.time:
                self._warned_note = note.time
                warnings.warn(f"the scheduler of {self.store_path} is not running: "
                              f"{note.message}", SchedulerWarning, stacklevel=caller_stacklevel())
            return
        spawned = self._spawned
        # A live process we spawned that does not hold the lock is either still starting
        # (it will take the lock and see our work) or exiting after an idle spell (it has
        # let the lock go, and will not look at the store again): only the first may be
        # waited for, or work committed now would be stranded until the next client call.
        if (spawned is not None and spawned.poll() is None
                and time.monotonic() - self._spawned_at < START_TIMEOUT
                and last_holder_pid(self._access) == self._holder_at_spawn):
            return
        self.spawn()

    def start(self, timeout: float = START_TIMEOUT) -> int:
        """Start the scheduler unless it runs; return its pid once it holds the store."""
        pid = self.pid
        if pid is not None:
            return pid
        clear_note(self.store_path)  # asked for explicitly: try again after a give-up
        self.spawn()
        if not _wait_until(lambda: self.pid is not None, timeout):
            raise SchedulerError(
                f"the scheduler did not start within {timeout:g} s; see "
                f"{_layout.scheduler_log_path(self.store_path)}"
            )
        return self.pid  # type: ignore[return-value]

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the scheduler and its supervisor (running attempts are stopped and go back
        to ENQUEUED); also a scheduler that is still starting, or a supervisor waiting to
        restart one. Reads no database and starts nothing.

        Returns False if none was there. Work still queued restarts it on the next
        client call that needs it.
        """
        _reap()
        processes = store_processes(self.store_path)
        holder = self.pid
        if holder is not None and all(p.pid != holder for p in processes):
            try:  # e.g. ``nbwork daemon run`` in a terminal
                processes.append(psutil.Process(holder))
            except psutil.Error:
                pass
        if not processes:
            return False
        # Supervisors first: each passes the stop on to its scheduler and exits, and
        # restarts nothing.
        processes.sort(key=lambda p: not _is_supervisor(p))
        for process in processes:
            try:
                process.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(processes, timeout)
        for process in alive:  # supervisors first: a SIGKILLed scheduler is a crash to them
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, 5.0)
        _reap()
        return True

    def run(self) -> int:
        """Run the scheduler in this process, in the foreground, until it exits: when idle
        (after ``idle_exit`` seconds if given, else the scheduler's default), or on SIGTERM
        or Ctrl-C (``nbwork daemon run``). Returns its exit status: 0 after a clean exit,
        1 when another scheduler holds the store, 2 when its executor cannot run here."""
        from ._scheduler_main import main

        argv = ["--store", self.store_path]
        if self.idle_exit is not None:
            argv += ["--idle-exit", str(self.idle_exit)]
        return main(argv)

    def __repr__(self) -> str:
        return f"Daemon(store={self.store_path!r}, pid={self.pid})"


def main(argv: list[str] | None = None) -> int:
    """The scheduler process under its former name: a supervisor started by an older nbwork
    restarts its scheduler as ``from nbwork._daemon import main`` after an upgrade."""
    from ._scheduler_main import main as run_scheduler

    return run_scheduler(argv)
