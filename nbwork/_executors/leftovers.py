"""Ending every process an attempt started, however it started them.

A worker may start processes that leave its process group (``start_new_session=True``,
``setsid``, a daemon's double fork): killing the group misses them, and a helper that
outlives its attempt can run beside the attempt's re-run. Three nets, strongest first:

1. **A cgroup per worker process** (cgroup v2, created under the scheduler's own cgroup
   where this user may; nothing where it may not, or with ``NBWORK_CGROUPS=0``). Whatever
   the worker process starts stays in it; killing the cgroup ends them all, even after the
   worker process itself died.
2. **Child subreapers** (Linux): a worker process is one, so what its attempt orphans
   becomes its child and is killed after the attempt (the recursive child list, taken while
   it lives); the forkserver the worker processes come from is one too (see ``reaper.py``),
   so what a dead worker process orphaned becomes the forkserver's child, where the
   executor finds it.
3. **A mark in the environment** (``NBWORK_STORE_PROCESS``, the store's path), inherited by
   every process a scheduler starts: a scheduler that takes over a store from a dead one
   first kills every process still carrying the store's mark, and the cgroups the dead one
   left, so a work never runs twice at once.

Trees are killed frozen (``process_groups.kill_processes``).
Out of reach: a process that clears its environment *and* escapes its parent, on a machine
without cgroups, after its scheduler was SIGKILLed while its worker process could not act.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid

import psutil

from .process_groups import kill_processes

log = logging.getLogger("nbwork.executor")

MARK = "NBWORK_STORE_PROCESS"
"""Environment variable that every process a store's scheduler starts inherits."""


# --- the environment mark ---------------------------------------------------------------


def mark_children(store_path: str) -> None:
    """Every process this one starts from now on carries ``store_path`` in its environment."""
    os.environ[MARK] = store_path


def _marked(store_path: str, spare: set[int]) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        if process.pid in spare:
            continue
        try:
            if process.environ().get(MARK) == store_path:
                found.append(process)
        except psutil.Error:  # gone, or another user's
            continue
    return found


def end_leftovers(store_path: str) -> int:
    """Before a scheduler runs a store's work: kill what the store's dead schedulers left
    (processes carrying its mark, their cgroups); returns how many processes were killed.
    This process and its ancestors are spared (one of them may carry the mark when a work
    started a client of its own store)."""
    me = psutil.Process()
    spare = {me.pid, *(p.pid for p in me.parents())}
    killed = kill_processes(_marked(store_path, spare), with_descendants=True)
    killed += Cgroups.end_dead(store_path)
    return killed


# --- cgroups ------------------------------------------------------------------------------


def _own_cgroup_dir() -> str | None:
    """The directory of this process's cgroup v2, or None without cgroup v2."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
        if path is None:
            return None
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                separator = fields.index("-")
                if fields[separator + 1] == "cgroup2":
                    root, mount = fields[3], fields[4]
                    if root != "/" and (path == root or path.startswith(root + "/")):
                        path = path[len(root):]  # a mount of a subtree (a container's)
                    return os.path.join(mount, path.lstrip("/"))
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_key(store_path: str | None) -> str:
    if not store_path:
        return "nostore"
    return hashlib.sha256(store_path.encode()).hexdigest()[:12]


def _kill_cgroup(path: str) -> int:
    """Kill every process in cgroup ``path`` and below it, and remove them; how many."""
    killed = 0
    for sub in sorted((os.path.join(path, d) for d in _subdirs(path)), reverse=True):
        killed += _kill_cgroup(sub)
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(line) for line in f if line.strip()]
    except (OSError, ValueError):
        pids = []
    killed += kill_processes([p for p in (_process(pid) for pid in pids) if p], False)
    with contextlib.suppress(OSError), open(os.path.join(path, "cgroup.kill"), "w") as f:
        f.write("1")  # Linux 5.14 and later: also what forked meanwhile
    _remove_cgroup(path)
    return killed


def _remove_cgroup(path: str) -> None:
    # A cgroup can be removed once its last process has been reaped: wait a little for that.
    deadline = time.monotonic() + 2.0
    pause = 0.001
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                log.warning("could not remove the cgroup %s: processes still in it", path)
                return
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _subdirs(path: str) -> list[str]:
    try:
        return [e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


class Cgroups:
    """One cgroup per worker process, under ``nbwork-<store key>-<pid>-<n>`` in this process's
    own cgroup. ``enabled`` is False where cgroups cannot be made (then every method is a
    no-op returning None)."""

    def __init__(self, store_path: str | None = None) -> None:
        self.root: str | None = None
        if os.environ.get("NBWORK_CGROUPS", "1") == "0":
            return
        base = _own_cgroup_dir()
        if base is None:
            return
        name = f"nbwork-{_cgroup_key(store_path)}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            os.mkdir(os.path.join(base, name), 0o755)
        except OSError as exc:
            log.info("no cgroup per worker process here (%s): subreapers and the process "
                     "list take their place", exc)
            return
        self.root = os.path.join(base, name)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def add(self, pid: int) -> str | None:
        """Put process ``pid`` (which has started nothing yet) into a new cgroup of its own."""
        if self.root is None:
            return None
        path = os.path.join(self.root, f"worker-{pid}")
        try:
            os.mkdir(path, 0o755)
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError as exc:
            log.info("cgroups are not usable here (%s); worker processes run without", exc)
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return None
        return path

    @staticmethod
    def kill(path: str | None) -> int:
        """Kill every process in the cgroup ``path`` and remove it."""
        return _kill_cgroup(path) if path else 0

    def close(self) -> None:
        if self.root is not None:
            _kill_cgroup(self.root)
            self.root = None

    @staticmethod
    def end_dead(store_path: str) -> int:
        """Kill and remove the cgroups of this store whose scheduler process is gone."""
        base = _own_cgroup_dir()
        if base is None or os.environ.get("NBWORK_CGROUPS", "1") == "0":
            return 0
        prefix = f"nbwork-{_cgroup_key(store_path)}-"
        killed = 0
        for name in _subdirs(base):
            if not name.startswith(prefix):
                continue
            owner = name[len(prefix):].split("-")[0]
            if owner.isdigit() and int(owner) != os.getpid() and not psutil.pid_exists(int(owner)):
                killed += _kill_cgroup(os.path.join(base, name))
        return killed
