"""Security: the store (which holds code that nbwork runs) is private to its owner, a store
that another user owns or can write is refused by clients and by the scheduler, and neither
the scheduler nor anything it starts listens on the network."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys

import psutil
import pytest

from nbwork import OneTimeWorkRequest, StoreError, WorkManager
from nbwork._lock import holder_pid
from nbwork._store import Store
from nbwork._supervisor import SCHEDULER_CODE
from tests.conftest import wait_until
from tests.helpers import stop_scheduler
from tests.reliability import (
    RecordThenWait,
    descendants,
    read_pid_lines,
    supervisor_of,
)

# Every test here starts a real scheduler process (which must refuse the store, or run).
pytestmark = pytest.mark.slow


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_store_and_everything_in_it_are_private(wm, tmp_path):
    request = OneTimeWorkRequest(RecordThenWait, input_data={
        "dir": str(tmp_path), "gate": str(tmp_path / "gate")})
    wm.enqueue(request)
    wait_until(lambda: read_pid_lines(tmp_path), what="the work to run")
    store = wm.store_path
    assert _mode(store) == 0o700 and os.stat(store).st_uid == os.getuid()
    assert _mode(os.path.join(store, "logs")) == 0o700
    assert _mode(os.path.join(store, "scheduler.lock")) == 0o600
    fifo = os.path.join(store, "wake.fifo")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and _mode(fifo) == 0o600
    # A running attempt's log file appears once it has run LOG_COPY_AFTER (before, its
    # output goes to a scratch file of the worker process, private too).
    log = wm._store.log_path(request.id)
    wait_until(lambda: os.path.exists(log), what="the running attempt's log file")
    assert _mode(log) == 0o600
    scratch = [f for f in os.listdir(os.path.dirname(log)) if f.startswith(".slot-")]
    assert scratch and all(_mode(os.path.join(os.path.dirname(log), f)) == 0o600
                           for f in scratch)
    # Whatever else is inside is out of other users' reach through the 0700 directory.


@pytest.fixture
def nobody():
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no 'nobody' user to give the store to")


def _scheduler_refuses(store_path: str) -> str:
    """Run a scheduler in the foreground on ``store_path``; it must refuse to start."""
    done = subprocess.run(
        [sys.executable, "-c", SCHEDULER_CODE, "--store", store_path],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert holder_pid(store_path) is None
    return done.stderr


def test_a_store_owned_by_another_user_is_refused(tmp_path, nobody):
    if os.getuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    path = tmp_path / "theirs"
    Store(str(path)).close()
    os.chown(path, nobody, -1)
    with pytest.raises(StoreError, match=f"belongs to another user \\(uid {nobody}\\)"):
        WorkManager(str(path))
    assert "belongs to another user" in _scheduler_refuses(str(path))


@pytest.mark.parametrize("mode", [0o777, 0o722, 0o730])
def test_a_store_others_can_write_is_refused_by_clients_and_the_scheduler(tmp_path, mode):
    path = tmp_path / "shared"
    Store(str(path)).close()
    os.chmod(path, mode)
    with pytest.raises(StoreError, match="can be written by other users"):
        WorkManager(str(path))
    assert f"chmod 700 {path}" in _scheduler_refuses(str(path))


def test_neither_the_scheduler_nor_its_processes_listen_on_the_network(wm, tmp_path):
    request = OneTimeWorkRequest(RecordThenWait, input_data={
        "dir": str(tmp_path), "gate": str(tmp_path / "gate")})
    wm.enqueue(request)
    wait_until(lambda: read_pid_lines(tmp_path), what="the work to run")
    scheduler = psutil.Process(wm.daemon.pid)
    supervisor = supervisor_of(scheduler.pid)
    [(worker, grandchild)] = read_pid_lines(tmp_path)
    processes = [supervisor, scheduler, *descendants([supervisor])]
    assert {worker, grandchild} <= {p.pid for p in processes}   # workers, forkserver too
    try:
        for process in processes:
            inet = process.net_connections(kind="inet")
            assert inet == [], f"{process.name()} {process.pid} has network sockets: {inet}"
            for conn in process.net_connections(kind="unix"):
                # A named unix socket (the forkserver's) must sit in a private directory.
                if conn.laddr:
                    folder = os.path.dirname(conn.laddr)
                    info = os.stat(folder)
                    assert info.st_uid == os.getuid() and _mode(folder) & 0o077 == 0, (
                        f"{process.name()} {process.pid} listens on {conn.laddr} in a "
                        f"directory others can reach")
    finally:
        stop_scheduler(wm.store_path)
