"""How the Dask executor hands attempts to the cluster: in batches, a bounded number at a
time, and what it says while there is no cluster to hand them to.

The batching tests use a stand-in for ``distributed.Client`` (no cluster: they look at what
would be sent); the tests that start a scheduler process are slow-marked.
"""

from __future__ import annotations

import socket
import threading

import pytest

pytest.importorskip("distributed")

from nbwork import OneTimeWorkRequest, WorkManager  # noqa: E402
from nbwork._executors import dask as dask_executor  # noqa: E402
from nbwork._executors.attempt import to_wire  # noqa: E402
from nbwork._executors.base import AttemptSpec  # noqa: E402
from nbwork._rules import Outcome, OutcomeKind  # noqa: E402
from nbwork.cli import main as cli_main  # noqa: E402
from tests.conftest import stop_scheduler, wait_until  # noqa: E402
from tests.helpers import echo  # noqa: E402


class FakeFuture:
    def __init__(self, key: str) -> None:
        self.key = key
        self.callbacks: list = []

    def add_done_callback(self, callback) -> None:
        self.callbacks.append(callback)


class FakeClient:
    """Records each ``map`` (one graph upload) instead of sending it."""

    status = "running"

    def __init__(self) -> None:
        self.maps: list[list[str]] = []

    def map(self, function, *iterables, key, pure):
        assert not pure and all(len(i) == len(key) for i in iterables)
        self.maps.append(list(key))
        return [FakeFuture(k) for k in key]


class Sink:
    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}

    def started(self, token, pid, pid_create_time) -> None:
        pass

    def progress(self, token, progress) -> None:
        pass

    def finished(self, token, outcome) -> None:
        self.outcomes[token] = outcome


def _attempt(i: int) -> AttemptSpec:
    return AttemptSpec(work_id=f"w{i}", token=f"t{i}", worker_name="noop", code_key="k",
                       payload=b"", input_data={})


@pytest.fixture
def executor():
    """A DaskExecutor 'connected' to a FakeClient of a cluster with 2 worker threads."""
    ex = dask_executor.DaskExecutor("dask://127.0.0.1:1")
    ex._monitor_started = True  # never connect for real
    client = FakeClient()
    ex._connection, ex._capacity = (client, 1), 2
    yield ex, client
    ex._connection = None
    ex.shutdown(0.0)


def _hold_control(ex) -> threading.Event:
    """Keep the control thread busy (it sends the first attempt of a turn early) until the
    event returned is set: what is sent then is what the scheduler's turn sends."""
    busy = threading.Event()
    ex._control.submit(busy.wait)
    return busy


def _finish(ex, client_key: str) -> None:
    token = client_key.removeprefix("nbwork-attempt-")
    ex._report("done", token, ("finished", {**to_wire(token, Outcome(OutcomeKind.SUCCESS),
                                                      0.001), "log": ""}))


def test_the_attempts_of_one_turn_go_to_the_cluster_as_one_graph(executor):
    ex, client = executor
    busy = threading.Event()
    ex._control.submit(busy.wait)  # the control thread cannot send early here
    try:
        for i in range(3):
            ex.submit(_attempt(i))
        assert client.maps == []  # taken, not sent yet: the turn may hand out more
        ex.wait_objects()  # the scheduler is about to sleep: its turn is over
        assert client.maps == [[f"nbwork-attempt-t{i}" for i in range(3)]]
    finally:
        busy.set()
    ex._control.submit(lambda: None).result()
    assert len(client.maps) == 1  # nothing sent twice


def test_an_attempt_is_sent_even_if_nobody_polls(executor):
    """``submit`` never waits, but a caller that only waits for the attempt gets it run."""
    ex, client = executor
    ex.submit(_attempt(0))
    wait_until(lambda: client.maps == [["nbwork-attempt-t0"]], timeout=10,
               what="the attempt to be sent")


def test_a_large_turn_is_sent_in_chunks(executor, monkeypatch):
    monkeypatch.setattr(dask_executor, "SUBMIT_CHUNK", 4)
    ex, client = executor
    busy = _hold_control(ex)
    for i in range(10):
        ex.submit(_attempt(i))
    ex.poll(Sink())
    busy.set()
    assert [len(m) for m in client.maps] == [4, 4, 2]
    assert sorted(k for m in client.maps for k in m) == sorted(
        f"nbwork-attempt-t{i}" for i in range(10))


def test_an_attempt_stopped_before_it_was_sent_is_never_sent(executor):
    ex, client = executor
    busy = _hold_control(ex)
    ex.submit(_attempt(0))
    ex.submit(_attempt(1))
    ex.stop("t0", "CANCELLED_BY_USER")
    sink = Sink()
    ex.poll(sink)
    busy.set()
    assert client.maps == [["nbwork-attempt-t1"]]
    assert sink.outcomes["t0"].kind is OutcomeKind.STOPPED
    assert sink.outcomes["t0"].stop_reason == "CANCELLED_BY_USER"


def test_a_huge_batch_is_handed_out_a_bounded_number_at_a_time(executor):
    """What a scheduler loop does with 2,000 due works: never more attempts out on the
    cluster than its threads times SHORT_DEPTH, whatever the backlog."""
    ex, client = executor
    ex._short = True  # short works: the deepest the executor ever goes
    bound = 2 * dask_executor.SHORT_DEPTH
    backlog = [_attempt(i) for i in range(2000)]
    sink, out, most = Sink(), set(), 0
    while backlog or out:
        for _ in range(max(0, ex.room())):
            if backlog:
                ex.submit(backlog.pop())
        ex.wait_objects()
        out |= {k for m in client.maps for k in m}
        client.maps.clear()
        most = max(most, len(out))
        assert len(ex.running()) <= bound
        for key in sorted(out)[:5]:  # the cluster finishes a few
            _finish(ex, key)
            out.discard(key)
        ex.poll(sink)
    assert len(sink.outcomes) == 2000
    assert most == bound


def test_short_works_are_topped_up_once_half_of_them_are_done(executor):
    """Not one by one as each result comes: a transaction and a graph per few works cost
    the scheduler more than the works themselves."""
    ex, client = executor
    ex._short = True
    limit = 2 * dask_executor.SHORT_DEPTH
    assert ex.room() == limit
    for i in range(limit):
        ex.submit(_attempt(i))
    ex.wait_objects()
    sink = Sink()
    keys = [k for m in client.maps for k in m]
    for done, key in enumerate(keys[:limit // 2], start=1):
        _finish(ex, key)
        ex.poll(sink)
        assert ex.room() == (0 if done < limit // 2 else limit // 2), done


def test_a_result_pushed_as_an_event_is_not_fetched_again(executor):
    ex, client = executor
    ex.submit(_attempt(0))
    ex.wait_objects()
    import pickle

    result = {**to_wire("t0", Outcome(OutcomeKind.SUCCESS), 0.001), "log": "hello\n"}
    ex._on_event((0.0, ["result", "t0", pickle.dumps(result)]))
    fetched = threading.Event()
    ex._fetchers.submit = lambda *a, **k: fetched.set()
    ex._on_done("t0", object())  # the task's completion, right after its event
    assert not fetched.is_set()
    sink = Sink()
    ex.poll(sink)
    assert sink.outcomes["t0"].kind is OutcomeKind.SUCCESS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_executor_with_no_cluster_says_it_waits_for_the_cluster():
    ex = dask_executor.DaskExecutor(f"dask://127.0.0.1:{_free_port()}", connect_timeout=0.5)
    try:
        assert ex.capacity == 0  # starts connecting
        wait_until(lambda: ex._last_error is not None, timeout=30,
                   what="the first connection to fail")
        waiting = ex.waiting_for()
        assert waiting.startswith("waiting for the cluster: cannot reach the scheduler of")
        assert ex.address in waiting
    finally:
        ex.shutdown(0.0)


def test_an_executor_on_a_cluster_without_workers_says_so(executor):
    ex, _ = executor
    assert ex.waiting_for() is None
    ex._capacity = 0
    assert ex.waiting_for() == ("waiting for the cluster: the Dask cluster at "
                                "dask://127.0.0.1:1 has no worker")


@pytest.mark.slow
def test_status_show_and_widgets_say_work_waits_for_the_cluster(store_path, capsys):
    """A scheduler pointed at an address where no cluster runs: its work stays ENQUEUED,
    and ``wm.daemon.status()``, ``nbwork show``, a ``WorkTable`` row and the Work panel's
    details all say why."""
    from nbwork.jupyter.details import details
    from nbwork.widgets import WorkTable

    address = f"dask://127.0.0.1:{_free_port()}"
    wm = WorkManager(store_path, executor=address)
    try:
        request = OneTimeWorkRequest(echo)
        wm.enqueue(request)
        wait_until(lambda: (wm.daemon.status().state or "").startswith(
            "waiting for the cluster: cannot reach"), timeout=60,
            what="the scheduler to say it waits")
        status = wm.daemon.status()
        assert address in status.state and "waiting for the cluster" in status.describe()
        assert cli_main(["--store", store_path, "show", request.id]) == 0
        out = capsys.readouterr().out
        assert "due: waiting for the cluster: cannot reach the scheduler of" in out
        info = wm.get_work_info_by_id(request.id)
        assert info.state.value == "ENQUEUED"
        assert wm.daemon.state() == status.state
        assert details(wm, info)["why_waiting"] == f"due: {status.state}"
        table = WorkTable(ids=[request.id], wm=wm)
        try:
            wait_until(lambda: request.id in table.rows, timeout=30, what="the row")
            assert f"due: {status.state}" in table.rows[request.id].tooltip()
        finally:
            table.close()
    finally:
        stop_scheduler(store_path)


def test_progress_goes_to_the_cluster_at_most_once_per_interval_and_the_latest_always(
        monkeypatch):
    """Each progress event is a trip through the Dask scheduler: a worker reporting per
    strip of a blur sent one per report. The first goes at once, later ones at most one per
    ``PROGRESS_INTERVAL``, the latest value always (``flush`` for an attempt that stopped)."""
    from nbwork._executors import attempt

    now = [100.0]
    monkeypatch.setattr(attempt.time, "monotonic", lambda: now[0])
    sent: list = []
    progress = attempt.ProgressRelay(sent.append, "t1")
    progress.reported({"strip": 1})
    progress.send_due()
    assert sent == [["progress", "t1", {"strip": 1}]]
    for strip in (2, 3, 4):
        progress.reported({"strip": strip})
        progress.send_due()
    assert len(sent) == 1 and progress.due == 100.0 + attempt.PROGRESS_INTERVAL
    now[0] += attempt.PROGRESS_INTERVAL
    progress.send_due()
    assert sent[-1] == ["progress", "t1", {"strip": 4}] and len(sent) == 2
    progress.send_due()
    assert len(sent) == 2 and progress.due is None  # nothing new: nothing sent
    progress.reported({"strip": 5})
    progress.flush()
    assert sent[-1] == ["progress", "t1", {"strip": 5}]


@pytest.mark.parametrize("kind, kept", [(OutcomeKind.SUCCESS, False), (OutcomeKind.FAILURE, False),
                                        (OutcomeKind.RETRY, True), (OutcomeKind.STOPPED, True)])
def test_a_progress_waiting_when_the_attempt_ends_goes_unless_it_succeeded_or_failed(
        kind, kept):
    """A success or failure clears the record's progress, so the last one is not sent; a
    retry or a stop keeps it (the work shows it while it waits to run again)."""
    from nbwork._executors import attempt

    sent: list = []
    progress = attempt.ProgressRelay(sent.append, "t1")
    progress.reported({"strip": 1})
    progress.send_due()
    progress.reported({"strip": 2})  # too soon: waits for its turn
    progress.send_due()
    progress.end(Outcome(kind))
    assert sent[1:] == ([["progress", "t1", {"strip": 2}]] if kept else [])
    assert progress.due is None
