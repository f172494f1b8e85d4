"""Helpers and workers of the fault-injection suite (test_reliability*.py, test_chaos.py,
test_security.py).

Processes are found and stopped by PID, and only those of the test's own temporary store
(their command line names it). Workers live here, in a module that is not installed, so
nbwork sends them by value, as it does a notebook's workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import traceback
import uuid

import psutil

from nbwork import Result, Worker
from nbwork._spec import WorkSpec
from nbwork._store import Store
from nbwork.info import WorkState
from tests.conftest import wait_until
from tests.helpers import append_line, scheduler_processes

POLL = 0.01
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- processes of one store -----------------------------------------------------------------


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def store_processes(store_path: str) -> list[psutil.Process]:
    """Live supervisors and schedulers of a store (their command line names the store)."""
    return scheduler_processes(store_path, ("nbwork._scheduler_main", "nbwork._supervisor"))


def is_supervisor(process: psutil.Process) -> bool:
    return any("nbwork._supervisor" in part for part in _cmdline(process))


def supervisor_of(pid: int) -> psutil.Process | None:
    """The supervisor that runs scheduler ``pid`` (its parent), or None."""
    try:
        parent = psutil.Process(pid).parent()
    except psutil.Error:
        return None
    return parent if parent is not None and is_supervisor(parent) else None


def supervisors(store_path: str) -> list[psutil.Process]:
    return [p for p in store_processes(store_path) if is_supervisor(p)]


def descendants(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            found.extend(process.children(recursive=True))
    return found


def live_pid(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The process ``pid`` if it still is the one that was recorded (not a reused pid)."""
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        if create_time and abs(process.create_time() - create_time) > 0.01:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None


def scheduler_log(store_path: str) -> str:
    try:
        with open(os.path.join(store_path, "scheduler.log"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# --- the store, read directly ---------------------------------------------------------------


def all_specs(store: Store) -> dict[str, WorkSpec]:
    """Every work record of a store, read from the records themselves (not the indexes)."""
    specs = {}
    for key in store._cache.iterkeys():
        if isinstance(key, str) and key.startswith("w:"):
            raw = store._cache.get(key)
            if raw is not None:
                spec = WorkSpec.from_record(raw)
                specs[spec.id] = spec
    return specs


def consistency_problems(store: Store) -> list[str]:
    """Everything on which the indexes and the records of a store disagree ([] if none)."""
    problems: list[str] = []
    cache = store._cache
    specs = all_specs(store)
    keys = [k for k in cache.iterkeys() if isinstance(k, str)]
    for state in WorkState:
        index = store.state_index(state)
        expected = {i for i, s in specs.items() if s.state is state}
        if set(index) != expected:
            problems.append(f"state index {state.value}: {len(set(index) - expected)} ids "
                            f"without such a record, {len(expected - set(index))} missing")
        if state is WorkState.ENQUEUED:
            wrong = [i for i in set(index) & expected if index[i] != specs[i].next_run_at]
            if wrong:
                problems.append(f"ENQUEUED index: wrong due time for {len(wrong)} works")
    tags: dict[str, set[str]] = {}
    names: dict[str, set[str]] = {}
    codes: dict[str, int] = {}
    for spec in specs.values():
        for tag in spec.tags:
            tags.setdefault(tag, set()).add(spec.id)
        if spec.unique_name is not None:
            names.setdefault(spec.unique_name, set()).add(spec.id)
        codes[spec.code_key] = codes.get(spec.code_key, 0) + 1
        for pid in spec.prerequisites:
            parent = specs.get(pid)
            if parent is not None and spec.id not in parent.dependents:
                problems.append(f"{spec.id} depends on {pid}, which does not list it")
        for did in spec.dependents:
            if did not in specs:
                problems.append(f"{spec.id} lists a dependent {did} that does not exist")
    referenced = set(codes)
    for key in keys:
        if key.startswith("i:t:"):
            ids = set(cache.get(key, {}))
            if ids != tags.pop(key[4:], set()):
                problems.append(f"tag index {key} disagrees with the records")
        elif key.startswith("i:u:"):
            ids = cache.get(key, [])
            if len(ids) != len(set(ids)) or set(ids) != names.pop(key[4:], set()):
                problems.append(f"unique index {key} disagrees with the records")
        elif key.startswith("i:c:"):
            if cache.get(key) != codes.pop(key[4:], 0):
                problems.append(f"code reference count {key} disagrees with the records")
        elif key.startswith("code:") and key[5:] not in referenced:
            problems.append(f"code blob {key} that no work uses")
    for tag in tags:
        problems.append(f"tag {tag!r} has no index")
    for name in names:
        problems.append(f"unique name {name!r} has no index")
    for key in codes:
        problems.append(f"code {key} has no reference count")
    for spec in specs.values():
        if f"code:{spec.code_key}" not in keys:
            problems.append(f"the code of {spec.id} is missing")
    return problems


_FLOCK = "@hhqqi"
_WAL_WRITE_LOCK = 120  # SQLite's unix VFS: the WAL write lock is byte 120 of the -shm file


def wal_writer_pid(store_path: str) -> int | None:
    """The pid of the process inside a write transaction of the store's database (it holds
    SQLite's WAL write lock), or None.

    Never call this from a process that has the store open: closing a descriptor of the
    -shm file drops every POSIX lock the process holds on it, SQLite's own included.
    """
    try:
        fd = os.open(os.path.join(store_path, "db", "cache.db-shm"), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _WAL_WRITE_LOCK, 1, 0)
        l_type, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
        return None if l_type == fcntl.F_UNLCK else pid
    finally:
        os.close(fd)


def succeeded_count(store: Store, work_id: str) -> int:
    """How often the store committed a transition of ``work_id`` into SUCCEEDED."""
    return sum(1 for _, new, _ in store.journal_of(work_id) if new == WorkState.SUCCEEDED.value)


# --- a small tmpfs (a disk that can be filled) ----------------------------------------------


def mount_tmpfs(path: str, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; None on success, else why it is impossible."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           path], capture_output=True, text=True)
    if done.returncode != 0:
        return f"mount -t tmpfs failed: {done.stderr.strip()}"
    return None


def unmount(path: str) -> None:
    if subprocess.run(["umount", path], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)


def fill_disk(path: str) -> int:
    """Write ``path`` until the disk is full; the number of bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * size
            try:
                while True:
                    written += os.write(fd, block)
            except OSError:
                continue
    finally:
        os.close(fd)
    return written


# --- workers ----------------------------------------------------------------------------------


def _record_pids(folder: str, grandchild: bool = True) -> None:
    """Append "<attempt pid> <grandchild pid>" to ``<folder>/pids`` (one line per attempt)."""
    child = subprocess.Popen(["sleep", "300"]) if grandchild else None
    append_line(os.path.join(folder, "pids"), f"{os.getpid()} {child.pid if child else 0}")


def read_pid_lines(folder) -> list[tuple[int, int]]:
    try:
        with open(os.path.join(folder, "pids")) as f:
            return [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except FileNotFoundError:
        return []


class DieHow(Worker):
    """Starts a grandchild, records both pids, then dies as ``how`` says: ``sigkill`` (waits to
    be killed from outside), ``segfault``, ``exit`` (os._exit(3)), ``memory`` (allocates past
    a small RLIMIT_AS: a MemoryError). With ``gate``, it succeeds once that file exists."""

    def do_work(self) -> Result:
        folder, how = self.input_data["dir"], self.input_data["how"]
        _record_pids(folder)
        gate = self.input_data.get("gate")
        if gate and os.path.exists(gate):
            return Result.success({"survived": self.run_attempt_count})
        if how == "sigkill":
            while not (gate and os.path.exists(gate)):  # the test kills this process
                time.sleep(POLL)
            return Result.success({"survived": self.run_attempt_count})
        if how == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        if how == "exit":
            os._exit(3)
        if how == "memory":
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            used = psutil.Process().memory_info().vms
            resource.setrlimit(resource.RLIMIT_AS, (used + (64 << 20), hard))
            try:
                hog = bytearray(1 << 30)  # 1 GiB, far past the limit
                return Result.success({"allocated": len(hog)})
            finally:
                # A warm worker process runs later attempts: do not leave them the limit.
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        raise AssertionError(f"unknown way to die: {how}")


class RecordThenWait(Worker):
    """Records its pids (and a grandchild's), then waits for the file ``gate``; outputs the
    attempt count it saw."""

    def do_work(self) -> Result:
        _record_pids(self.input_data["dir"])
        gate = self.input_data["gate"]
        while not os.path.exists(gate):
            if self.is_stopped:
                return Result.failure({"stopped": True})
            time.sleep(POLL)
        done = self.input_data.get("done")
        if done:
            append_line(done, self.id)
        return Result.success({"seen": self.run_attempt_count})


def noop() -> dict:
    return {}


def corrupt_garbage() -> dict:
    return {"ran": "garbage"}


def corrupt_raises() -> dict:
    return {"ran": "raises"}


def corrupt_missing_module() -> dict:
    return {"ran": "missing"}


class _RaisesWhenLoaded:
    """Pickles to a call that raises when unpickled (a payload that loads to an error)."""

    def __reduce__(self):
        return (int, ("this payload unpickles to a ValueError",))


class ChaosStep(Worker):
    """One step of a chaos chain; writes its history (see tests/history.py) to ``history``.

    Writes ``<markers>/<pid>`` (its work id) while it runs, so the chaos driver knows which
    work a process runs when it kills it; starts a helper in a session of its own (forked,
    so it costs no interpreter start) that beats every ``beat`` seconds until it is killed
    (nbwork must kill it: two beating helpers of one work would be a side effect run twice
    at once); works for ``pause`` seconds, beating too; fails if ``fail``; on success
    outputs n + 1 and its nonce."""

    def do_work(self) -> Result:
        from tests.history import append, now

        data = self.input_data
        history, nonce, beat = data["history"], uuid.uuid4().hex, data.get("beat", 0.02)
        append(history, f"S {self.id} {nonce} {self.run_attempt_count} {now()}")
        marker = os.path.join(data["markers"], str(os.getpid()))
        with open(f"{marker}.tmp", "w") as f:
            f.write(f"{self.id} {psutil.Process().create_time()}")
        os.replace(f"{marker}.tmp", marker)
        helper = os.fork()
        if helper == 0:  # the helper: beats until killed (at most HELPER_LIFETIME)
            try:
                os.setsid()
                give_up = time.monotonic() + HELPER_LIFETIME
                while time.monotonic() < give_up:
                    append(history, f"H {self.id} {nonce} {os.getpid()} {now()}")
                    time.sleep(beat)
            finally:
                os._exit(0)
        try:
            ends = time.monotonic() + data["pause"]
            while time.monotonic() < ends:  # the work itself (the chaos driver kills here)
                time.sleep(min(beat, max(0.0, ends - time.monotonic())))
                append(history, f"B {self.id} {nonce} {now()}")
            if data.get("fail"):
                append(history, f"E {self.id} {nonce} fail {now()}")
                return Result.failure({"failed": self.id})
            append(history, f"E {self.id} {nonce} ok {now()}")
            return Result.success({"n": data.get("n", 0) + 1, "nonce": nonce,
                                   "attempt": self.run_attempt_count})
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)


HELPER_LIFETIME = 120.0


class LeavesAHelper(Worker):
    """Checks that no helper of an earlier attempt still runs (else appends a line to
    ``<dir>/overlaps``), starts a helper in a session of its own, records "<attempt pid>
    <helper pid> <helper start time>" in ``<dir>/helpers``, then ends as ``how`` says:
    ``return``, ``exit`` (os._exit), ``ignore`` (ignores its stop for ever), ``wait`` (until
    the file ``gate`` exists)."""

    def do_work(self) -> Result:
        folder, how = self.input_data["dir"], self.input_data["how"]
        for line in read_lines(os.path.join(folder, "helpers")):
            _, pid, created = line.split()
            if is_running(int(pid), float(created)):
                append_line(os.path.join(folder, "overlaps"), f"{self.run_attempt_count} {pid}")
        helper = subprocess.Popen(["sleep", "600"], start_new_session=True)
        created = psutil.Process(helper.pid).create_time()
        append_line(os.path.join(folder, "helpers"), f"{os.getpid()} {helper.pid} {created}")
        if how == "exit":
            os._exit(3)
        if how == "ignore":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            while True:
                time.sleep(0.01)
        gate = self.input_data.get("gate")
        while gate and not os.path.exists(gate):
            time.sleep(0.01)
        return Result.success({"attempt": self.run_attempt_count})


def read_lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return [line for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def is_running(pid: int, created: float) -> bool:
    try:
        process = psutil.Process(pid)
        return (abs(process.create_time() - created) < 0.01
                and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def helper_lines(folder) -> list[tuple[int, int, float]]:
    return [(int(a), int(h), float(c)) for a, h, c in
            (line.split() for line in read_lines(os.path.join(folder, "helpers")))]


def kill_helpers(folder) -> None:
    """A failing test leaves helpers running: stop them by PID."""
    for _, helper, created in helper_lines(folder):
        if is_running(helper, created):
            os.kill(helper, signal.SIGKILL)


# --- a client process of the chaos suite -------------------------------------------------------


def chaos_client(store: str, plan_path: str, index: int, journal: str, pause: float) -> None:
    """Enqueue this client's chains of the chaos plan (``plan_path``, JSON: chains with their
    step ids and inputs), one chain per enqueue, ``pause`` seconds apart. Around each it
    appends "I <chain>" (about to enqueue) and "A <chain>" (acknowledged) to ``journal``;
    a client started again (after it was killed) skips every chain it had begun."""
    from nbwork import BackoffPolicy, OneTimeWorkRequest, WorkManager
    from tests.history import append

    with open(plan_path) as f:
        plan = json.load(f)
    begun = {line.split()[1] for line in read_lines(journal)}
    wm = WorkManager(store)
    for chain in plan["chains"]:
        if chain["client"] != index or str(chain["c"]) in begun:
            continue
        steps = [OneTimeWorkRequest(ChaosStep, id=step["id"], tags=["chaos", f"chain-{chain['c']}"],
                                    backoff_policy=BackoffPolicy.LINEAR, backoff_delay=0,
                                    input_data=step["input"]) for step in chain["steps"]]
        continuation = wm.begin_with(steps[0])
        for step in steps[1:]:
            continuation = continuation.then(step)
        append(journal, f"I {chain['c']}")
        continuation.enqueue()
        append(journal, f"A {chain['c']}")
        time.sleep(pause)


def start_chaos_client(store: str, plan: str, index: int, journal: str,
                       pause: float) -> subprocess.Popen:
    code = ("import sys; from tests.reliability import chaos_client; chaos_client(sys.argv[1], "
            "sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))")
    return subprocess.Popen([sys.executable, "-c", code, store, plan, str(index), journal,
                             str(pause)], cwd=REPO, stdin=subprocess.DEVNULL)


# --- a client process for the concurrency test ------------------------------------------------


POLICIES = ("REPLACE", "KEEP", "APPEND", "APPEND_OR_REPLACE")
DELAYED = 3600.0


def concurrent_client(store: str, start: str, index: int, rounds: int, out: str) -> None:
    """Run by each client process: waits for the file ``start``, then enqueues, enqueues
    unique work with each policy, cancels and queries, all mixed; writes what it did (and
    every exception it saw) to ``out`` as JSON."""
    from nbwork import (
        ExistingWorkPolicy,
        OneTimeWorkRequest,
        WorkManager,
        WorkQuery,
    )
    from tests.helpers import add

    report: dict = {"plain": [], "unique": {p: {"enqueued": [], "dropped": []} for p in POLICIES},
                    "cancel": [], "errors": [], "queries": 0}
    try:
        wm = WorkManager(store)
        wait_until(lambda: os.path.exists(start), timeout=60, what="the start signal")
        for r in range(rounds):
            try:
                # Plain works that run now (the scheduler writes while we do).
                batch = [OneTimeWorkRequest(add, input_data={"a": index, "b": r + k},
                                            tags=[f"client-{index}"]) for k in range(2)]
                report["plain"].extend(wm.enqueue(batch).enqueued)
                # Unique work with each policy: delayed, so it stays unfinished (KEEP must
                # then drop every later request, APPEND must build one chain...).
                for policy in POLICIES:
                    request = OneTimeWorkRequest(noop, initial_delay=DELAYED,
                                                 tags=[f"unique-{index}"])
                    op = wm.enqueue_unique_work(f"u-{policy}", ExistingWorkPolicy[policy],
                                                request)
                    report["unique"][policy]["enqueued"].extend(op.enqueued)
                    report["unique"][policy]["dropped"].extend(op.dropped)
                # Works that this client cancels.
                doomed = OneTimeWorkRequest(noop, initial_delay=DELAYED,
                                            tags=[f"cancel-{index}"])
                wm.enqueue(doomed)
                report["cancel"].append(doomed.id)
                if r % 3 == 2:
                    wm.cancel_all_work_by_tag(f"cancel-{index}")
                # Queries of every kind.
                wm.get_work_infos_by_tag(f"client-{index}")
                wm.get_work_infos_for_unique_work("u-APPEND")
                wm.get_work_infos(WorkQuery(states=[WorkState.RUNNING, WorkState.SUCCEEDED]))
                wm.get_work_info_by_id(batch[0].id)
                report["queries"] += 4
            except Exception as exc:
                report["errors"].append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}\n"
                                        f"{traceback.format_exc()}")
        wm.cancel_all_work_by_tag(f"cancel-{index}")
    except Exception as exc:
        report["errors"].append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}\n"
                                f"{traceback.format_exc()}")
    with open(f"{out}.tmp", "w") as f:
        json.dump(report, f)
    os.replace(f"{out}.tmp", out)


def start_client(store: str, start: str, index: int, rounds: int, out: str) -> subprocess.Popen:
    code = ("import sys; from tests.reliability import concurrent_client; "
            "concurrent_client(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "
            "sys.argv[5])")
    return subprocess.Popen([sys.executable, "-c", code, store, start, str(index), str(rounds),
                             out], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
