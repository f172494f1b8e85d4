"""Running work on a Dask cluster: the core behaviours against both executors, and what only
Dask has (a worker or the whole cluster dying mid-attempt, files on a shared path).

The cluster is real: a ``dask scheduler`` and ``dask worker`` processes on loopback, each
started in a process group of its own and stopped by PID at the end of the module (or of
the test that started it). Integration tests: real nbwork schedulers, real worker processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from nbwork import (
    ArrayCreatingInputMerger,
    ExistingWorkPolicy,
    InvalidInputError,
    OneTimeWorkRequest,
    PeriodicWorkRequest,
    Result,
    StopReason,
    Worker,
    WorkManager,
    WorkState,
)
from nbwork.cli import main as cli_main
from nbwork.imaging import blur_batch, sample_images
from tests import helpers
from tests.conftest import stop_scheduler, wait_until
from tests.helpers import is_dead, read_ints
from tests.reliability import LeavesAHelper, helper_lines, is_running, kill_helpers

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


class Cluster:
    """A Dask scheduler and its workers on loopback, each a process group of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"dask://127.0.0.1:{self.port}"

    def _start(self, module: str, *args: str) -> subprocess.Popen:
        log = open(self.folder / f"{module}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        with log:
            return subprocess.Popen(
                [sys.executable, "-m", f"distributed.cli.{module}", *args, "--no-dashboard"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.folder, start_new_session=True)

    def start_scheduler(self) -> None:
        self.scheduler = self._start("dask_scheduler", "--host", "127.0.0.1",
                                     "--port", str(self.port))

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, timeout=60, what="the Dask scheduler to listen")

    def add_worker(self, nthreads: int = 2) -> subprocess.Popen:
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{self.port}", timeout=30,
                    set_as_default=False) as client:
            before = len(client.nthreads())
            worker = self._start("dask_worker", f"tcp://127.0.0.1:{self.port}", "--host",
                                 "127.0.0.1", "--nthreads", str(nthreads), "--nworkers", "1",
                                 "--death-timeout", "60")
            self.workers.append(worker)
            client.wait_for_workers(before + 1, timeout=60)
        return worker

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL a process group we started (a worker: its nanny and worker process)."""
        _kill_group(process, signal.SIGKILL)
        process.wait(30)

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process is not None and process.poll() is None:
                _kill_group(process, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            if process is None:
                continue
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
                process.wait(10)
            _kill_group(process, signal.SIGKILL)  # anything left in its group


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        c.start_scheduler()
        c.add_worker(nthreads=2)
        yield c
    finally:
        c.stop()


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster for one test that kills parts of it."""
    folder = tmp_path / "cluster"
    folder.mkdir()
    c = Cluster(folder)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(params=["local", "dask"])
def executor(request):
    if request.param == "local":
        return "local"
    return request.getfixturevalue("cluster").address


@pytest.fixture
def wm(store_path, executor):
    manager = WorkManager(store_path, executor=executor)
    yield manager
    stop_scheduler(store_path)


@pytest.fixture
def dask_wm(store_path, cluster):
    manager = WorkManager(store_path, executor=cluster.address)
    yield manager
    stop_scheduler(store_path)


def _info(wm, request):
    return wm.get_work_info_by_id(request.id)


def _attempt_handled(wm, request) -> bool:
    spec = wm._store.get(request.id)
    return spec is not None and spec.attempt is None


# --- the core behaviours, on both executors -------------------------------------------------


def test_one_time_work_output_log_and_traceback(wm):
    add = OneTimeWorkRequest(helpers.add, input_data={"a": 2, "b": 40})
    describe = OneTimeWorkRequest(helpers.Describe, input_data={"k": 1}, tags=["t"])
    chatty = OneTimeWorkRequest(helpers.chatty)
    boom = OneTimeWorkRequest(helpers.boom)
    wm.enqueue([add, describe, chatty, boom])
    infos = {i.id: i for i in wm.wait([add, describe, chatty, boom], timeout=60)}
    assert infos[add.id].state is WorkState.SUCCEEDED
    assert infos[add.id].output_data == {"sum": 42}
    seen = infos[describe.id].output_data
    assert (seen["id"], seen["tags"], seen["run_attempt_count"]) == (describe.id, ["t"], 0)
    assert seen["pid"] != os.getpid()
    assert infos[describe.id].run_attempt_count == 1
    log = wm.read_log(chatty.id)
    assert "to-stdout: hello from the worker" in log
    assert "to-stderr: warning from the worker" in log
    assert infos[boom.id].state is WorkState.FAILED
    assert "ValueError: boom-4711: the worker raised on purpose" in infos[boom.id].error
    assert "Traceback (most recent call last)" in infos[boom.id].error
    assert "boom-4711" in wm.read_log(boom.id)


def test_a_chain_with_an_array_merger(wm):
    parts = [OneTimeWorkRequest(helpers.emit, input_data={"key": "value", "value": v})
             for v in (1, 2, 3)]
    middle = OneTimeWorkRequest(helpers.sum_values, input_merger=ArrayCreatingInputMerger)
    last = OneTimeWorkRequest(helpers.echo, input_data={"own": 1})
    chain = wm.begin_with(parts).then(middle).then(last)
    chain.enqueue()
    infos = {i.id: i for i in wm.wait(chain, timeout=60)}
    assert all(i.state is WorkState.SUCCEEDED for i in infos.values())
    assert infos[middle.id].output_data == {"total": 6, "count": 3}
    assert infos[last.id].output_data == {"own": 1, "total": 6, "count": 3}
    assert infos[middle.id].start_time >= max(infos[p.id].finish_time for p in parts)


def test_unique_work_replace_stops_the_running_chain(wm, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    old = OneTimeWorkRequest(helpers.StopAware, input_data={"dir": str(folder)})
    old_next = OneTimeWorkRequest(helpers.echo)
    wm.begin_unique_work("job", ExistingWorkPolicy.REPLACE, old).then(old_next).enqueue()
    wait_until(lambda: (folder / "started").exists(), what="the first chain to run")
    new = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    wm.enqueue_unique_work("job", ExistingWorkPolicy.REPLACE, [new])
    assert wm.wait(new, timeout=60).output_data == {"sum": 3}
    wait_until(lambda: (folder / "on_stopped").exists(), what="on_stopped() of the old work")
    wait_until(lambda: _attempt_handled(wm, old), what="the scheduler to handle the stop")
    assert _info(wm, old).state is WorkState.CANCELLED
    assert _info(wm, old).output_data == {}          # its late success is ignored
    assert _info(wm, old_next).state is WorkState.CANCELLED
    assert [i.id for i in wm.get_work_infos_for_unique_work("job")] == [new.id]


def test_periodic_work_runs_and_waits_for_its_next_period(wm, tmp_path):
    record = str(tmp_path / "runs")
    request = PeriodicWorkRequest(helpers.RecordRun, repeat_interval=3600,
                                  input_data={"record": record})
    wm.enqueue(request)
    wait_until(lambda: len(read_ints(record)) == 1, what="the first period")
    info = wait_until(lambda: (i := _info(wm, request)).state is WorkState.ENQUEUED and i,
                      what="the wait for the next period")
    assert info.next_schedule_time is not None and info.next_schedule_time > info.start_time
    wm.cancel_work_by_id(request.id)
    assert wm.wait(request, timeout=30).state is WorkState.CANCELLED
    assert read_ints(record) == [0]


# --- Dask only -----------------------------------------------------------------------------


class HangOnce(Worker):
    """First run: writes its pid to ``<dir>/first`` and hangs. Any later run (Dask's re-run of
    the same attempt after its worker died) succeeds and reports its pid."""

    def do_work(self) -> Result:
        first = os.path.join(self.input_data["dir"], "first")
        if not os.path.exists(first):
            helpers._write_atomically(first, str(os.getpid()))
            while True:
                time.sleep(helpers.POLL)
        return Result.success({"pid": os.getpid()})


def test_a_dask_worker_killed_mid_attempt_and_then_the_whole_cluster(
        store_path, own_cluster, tmp_path):
    own_cluster.start_scheduler()
    victim = own_cluster.add_worker(nthreads=1)
    wm = WorkManager(store_path, executor=own_cluster.address)
    folder = tmp_path / "hang"
    folder.mkdir()
    record = str(tmp_path / "after")
    hang = OneTimeWorkRequest(HangOnce, input_data={"dir": str(folder)})
    after = OneTimeWorkRequest(helpers.RecordRun, input_data={"record": record})
    wm.begin_with(hang).then(after).enqueue()
    wait_until((folder / "first").exists, timeout=60, what="the attempt to run on the worker")
    first_pid = int((folder / "first").read_text())
    own_cluster.kill(victim)
    # Its attempt process notices that its Dask worker is gone and ends itself.
    wait_until(lambda: is_dead(first_pid), what="the orphaned attempt process to end")
    assert _info(wm, hang).state is WorkState.RUNNING    # Dask keeps the task for a worker
    own_cluster.add_worker(nthreads=1)
    info = wm.wait(hang, timeout=60)
    assert info.state is WorkState.SUCCEEDED
    assert info.output_data["pid"] != first_pid
    assert wm.wait(after, timeout=60).state is WorkState.SUCCEEDED
    assert read_ints(record) == [0]                      # completed once: its dependent ran once

    # Now the whole cluster dies mid-attempt and comes back at the same address.
    again_dir = tmp_path / "again"
    again_dir.mkdir()
    again = OneTimeWorkRequest(HangOnce, input_data={"dir": str(again_dir)})
    wm.enqueue(again)
    wait_until((again_dir / "first").exists, timeout=60, what="the second attempt to run")
    second_pid = int((again_dir / "first").read_text())
    own_cluster.stop()
    wait_until(lambda: is_dead(second_pid), what="the attempt of the dead cluster to end")
    info = wait_until(lambda: (i := _info(wm, again)).state is WorkState.ENQUEUED and i,
                      what="the cut-short attempt to go back to the queue")
    assert info.stop_reason is StopReason.SCHEDULER_RESTARTED and info.error is None
    own_cluster.workers.clear()
    own_cluster.start_scheduler()
    own_cluster.add_worker(nthreads=1)
    info = wm.wait(again, timeout=90)
    assert info.state is WorkState.SUCCEEDED and info.output_data["pid"] != second_pid
    assert info.run_attempt_count == 2
    stop_scheduler(store_path)


def read_text_file(path: str) -> dict:
    with open(path) as f:
        return {"text": f.read()}


def test_a_file_the_dask_worker_cannot_read_fails_with_a_clear_error(dask_wm, tmp_path):
    missing = str(tmp_path / "not-on-a-shared-path.txt")
    request = OneTimeWorkRequest(read_text_file, input_data={"path": missing})
    dask_wm.enqueue(request)
    info = dask_wm.wait(request, timeout=60)
    assert info.state is WorkState.FAILED
    assert "FileNotFoundError" in info.error and missing in info.error
    assert "a path every Dask worker can read (a shared file system)" in info.error


def test_blur_o_matic_batch_runs_on_dask_unchanged(dask_wm, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for sample in sample_images()[:2]:
        shutil.copy(sample, folder / sample.name)
    out = tmp_path / "out"
    job = blur_batch(dask_wm, folder, level=1, out_dir=out)
    infos = dask_wm.wait(job.ids, timeout=120)
    assert all(i.state is WorkState.SUCCEEDED for i in infos), [
        (i.worker_name, i.state, i.error) for i in infos]
    sheet = dask_wm.get_work_info_by_id(job.sheet_id)
    assert sheet.output_data["succeeded"] == 2 and sheet.output_data["failed"] == 0
    assert Image.open(sheet.output_data["contact_sheet"]).size[0] > 0
    assert sorted(p.name for p in out.glob("blurred-*.png")) == sorted(
        f"blurred-{p.stem}.png" for p in folder.iterdir())


def test_the_executor_is_kept_in_the_store_and_a_change_restarts_the_scheduler(
        store_path, cluster):
    local = WorkManager(store_path)
    assert local.executor == "local"
    first = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 1})
    local.enqueue(first)
    local.wait(first, timeout=30)
    old_pid = wait_until(lambda: local.daemon.pid, what="the local scheduler")
    assert local._store.get_value("lease")["executor"] == "LocalExecutor"
    remote = WorkManager(store_path, executor=cluster.address.replace("dask://", "tcp://"))
    assert remote.executor == cluster.address            # tcp:// is taken as dask://
    assert remote.daemon.pid != old_pid                  # stopped, to start on the new one
    wait_until(lambda: is_dead(old_pid), what="the local scheduler to exit")
    assert WorkManager(store_path).executor == cluster.address   # kept: None keeps it
    second = OneTimeWorkRequest(helpers.add, input_data={"a": 2, "b": 2})
    remote.enqueue(second)
    assert remote.wait(second, timeout=60).output_data == {"sum": 4}
    assert remote._store.get_value("lease")["executor"] == "DaskExecutor"
    stop_scheduler(store_path)


def test_daemon_start_with_an_executor_from_the_command_line(store_path, cluster, capsys):
    assert cli_main(["daemon", "start", "--executor", cluster.address,
                     "--store", store_path]) == 0
    assert "scheduler running, pid" in capsys.readouterr().out
    assert cli_main(["daemon", "status", "--store", store_path]) == 0
    assert f"executor: {cluster.address}" in capsys.readouterr().out
    assert cli_main(["daemon", "stop", "--executor", "local", "--store", store_path]) == 2
    assert "--executor goes with 'daemon start'" in capsys.readouterr().err
    stop_scheduler(store_path)


def test_bad_executors_and_a_missing_distributed_are_refused_politely(
        store_path, monkeypatch, capsys):
    for bad in ("dask:/127.0.0.1:8786", "spark://host:7077", "dask://host", "dask://h:99999",
                "", None, 8786):
        with pytest.raises(InvalidInputError, match="'dask://HOST:PORT'"):
            WorkManager(store_path, executor=bad) if bad is not None else WorkManager(
                store_path, executor=8786)
    monkeypatch.setitem(sys.modules, "distributed", None)   # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'nbwork\[dask\]'"):
        WorkManager(store_path, executor="dask://127.0.0.1:8786")
    assert WorkManager(store_path).executor == "local"      # nothing was kept
    assert cli_main(["daemon", "start", "--executor", "dask://127.0.0.1:8786",
                     "--store", store_path]) == 2
    assert "pip install 'nbwork[dask]'" in capsys.readouterr().err


def test_a_stray_attempt_of_a_dead_scheduler_is_ended(store_path, cluster, tmp_path):
    """The nbwork scheduler is SIGKILLed while its attempt runs on the cluster: the attempt,
    whose result nobody can take any more, ends; the next scheduler runs the work again."""
    wm = WorkManager(store_path, executor=cluster.address)
    folder = tmp_path / "hang"
    folder.mkdir()
    request = OneTimeWorkRequest(HangOnce, input_data={"dir": str(folder)})
    wm.enqueue(request)
    wait_until((folder / "first").exists, timeout=60, what="the attempt to run")
    first_pid = int((folder / "first").read_text())
    psutil.Process(wm.daemon.pid).kill()   # its supervisor (or wm.wait) starts another
    wait_until(lambda: is_dead(first_pid), what="the stray attempt to end")
    info = wm.wait(request, timeout=60)
    assert info.state is WorkState.SUCCEEDED and info.output_data["pid"] != first_pid
    assert info.run_attempt_count == 2
    stop_scheduler(store_path)


@pytest.mark.parametrize("how", ["exit", "ignore"])
def test_a_helper_that_left_the_attempts_process_group_ends_with_it(
        store_path, cluster, tmp_path, monkeypatch, how):
    """A helper in a session of its own, started by an attempt that then exits (os._exit)
    or ignores its cancel, is killed too (the attempt launcher is a subreaper)."""
    monkeypatch.setenv("NBWORK_STOP_GRACE", "0.5")
    wm = WorkManager(store_path, executor=cluster.address)
    try:
        request = OneTimeWorkRequest(LeavesAHelper, backoff_delay=3600,
                                     input_data={"dir": str(tmp_path), "how": how})
        wm.enqueue(request)
        wait_until(lambda: helper_lines(tmp_path), timeout=60, what="the helper to start")
        if how == "ignore":
            wm.cancel_work_by_id(request.id)
        _, helper, created = helper_lines(tmp_path)[0]
        wait_until(lambda: not is_running(helper, created), timeout=30,
                   what=f"helper {helper} (in a session of its own) to be killed")
    finally:
        stop_scheduler(store_path)
        kill_helpers(tmp_path)
