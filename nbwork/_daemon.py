"""Starting, finding and stopping the scheduler process of a store.

The scheduler runs detached: a session of its own (``start_new_session``), so a kernel
restart, which kills the kernel's process group, does not touch it; its output goes to
``scheduler.log`` in the store. ``main()`` here runs it in the foreground.

Environment (read by the client that starts the scheduler): ``NBWORK_IDLE_EXIT`` seconds
without unfinished work before it exits; ``NBWORK_STOP_GRACE`` seconds a stopped worker
gets before its process group is terminated; ``NBWORK_SUPERVISE=0`` starts the scheduler
without its supervisor (``_supervisor.py``), e.g. when a service manager restarts it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

import psutil

from ._lock import holder_pid, last_holder_pid
from ._supervisor import SCHEDULER_CODE, SUPERVISOR_CODE
from .errors import SchedulerError

LOG_NAME = "scheduler.log"
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


def _stop_supervisor_of(pid: int) -> None:
    """SIGKILL the supervisor of scheduler ``pid``, if it has one (it restarts nothing then)."""
    try:
        parent = psutil.Process(pid).parent()
        if parent is not None and any("nbwork._supervisor" in part for part in parent.cmdline()):
            parent.kill()
    except psutil.Error:
        pass


def _reap() -> None:
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


class Daemon:
    """The scheduler process of one store: ``pid``, ``start()``, ``stop()``."""

    def __init__(self, store_path: str, idle_exit: float | None = None) -> None:
        self.store_path = store_path
        self.idle_exit = idle_exit
        self._spawned: subprocess.Popen | None = None
        self._spawned_at = 0.0
        self._holder_at_spawn: int | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the running scheduler, or None."""
        return holder_pid(self.store_path)

    @property
    def is_running(self) -> bool:
        return self.pid is not None

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
        self._holder_at_spawn = last_holder_pid(self.store_path)
        try:
            with open(os.path.join(self.store_path, LOG_NAME), "ab") as log_file:
                self._spawned = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                    start_new_session=True, close_fds=True, cwd=self.store_path,
                )
            self._spawned_at = time.monotonic()
            _children.append(self._spawned)
        except OSError as exc:
            raise SchedulerError(f"could not start the scheduler: {exc}") from exc

    def ensure_running(self) -> None:
        """Spawn a scheduler unless one holds the store or ours is still starting up."""
        if self.is_running:
            return
        spawned = self._spawned
        # A live process we spawned that does not hold the lock is either still starting
        # (it will take the lock and see our work) or exiting after an idle spell (it has
        # let the lock go, and will not look at the store again): only the first may be
        # waited for, or work committed now would be stranded until the next client call.
        if (spawned is not None and spawned.poll() is None
                and time.monotonic() - self._spawned_at < START_TIMEOUT
                and last_holder_pid(self.store_path) == self._holder_at_spawn):
            return
        self.spawn()

    def start(self, timeout: float = START_TIMEOUT) -> int:
        """Start the scheduler unless it runs; return its pid once it holds the store."""
        pid = self.pid
        if pid is not None:
            return pid
        self.spawn()
        if not _wait_until(lambda: self.pid is not None, timeout):
            raise SchedulerError(
                f"the scheduler did not start within {timeout:g} s; see "
                f"{os.path.join(self.store_path, LOG_NAME)}"
            )
        return self.pid  # type: ignore[return-value]

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the scheduler (running attempts are stopped and go back to ENQUEUED).

        Returns False if none was running. Work still queued restarts it on the next
        client call that needs it.
        """
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        if not _wait_until(lambda: self.pid != pid, timeout):
            # Its supervisor would take a SIGKILL for a crash and restart it: end it first.
            _stop_supervisor_of(pid)
            os.kill(pid, signal.SIGKILL)
            _wait_until(lambda: self.pid != pid, 5.0)
        _reap()
        return True

    def __repr__(self) -> str:
        return f"Daemon(store={self.store_path!r}, pid={self.pid})"


def main(argv: list[str] | None = None) -> int:
    from ._executors.local import DEFAULT_STOP_GRACE, LocalExecutor
    from ._scheduler import DEFAULT_IDLE_EXIT, Scheduler
    from ._store import Store

    parser = argparse.ArgumentParser(prog="nbwork-scheduler")
    parser.add_argument("--store", required=True)
    parser.add_argument("--idle-exit", type=float, default=DEFAULT_IDLE_EXIT)
    parser.add_argument("--stop-grace", type=float, default=DEFAULT_STOP_GRACE)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s [{os.getpid()}] %(name)s %(levelname)s %(message)s",
    )
    store = Store(args.store)
    address = store.executor()  # chosen by WorkManager(path, executor=...), kept in the store
    if address == "local":
        executor = LocalExecutor(stop_grace=args.stop_grace)
    else:
        import socket

        from ._executors.dask import DaskExecutor

        try:
            executor = DaskExecutor(address, stop_grace=args.stop_grace,
                                    owner=f"{socket.gethostname()}:{store.path}")
        except ImportError as exc:
            logging.getLogger("nbwork.scheduler").error("cannot run work on %s: %s", address, exc)
            return 2
    return Scheduler(store, executor=executor, idle_exit=args.idle_exit).run()


if __name__ == "__main__":
    sys.exit(main())
