"""The executor contract (``nbwork/_executors/base.py``) as one test class, run against every
executor: ``tests/test_executors.py`` has a subclass per executor (inline, local, Dask on a
real loopback cluster) that only says how to make one.

Each test drives an executor the way the scheduler does, with no scheduler and no store:
``submit`` an attempt, ``poll`` into a sink until its one outcome comes. What an executor
cannot do by design (the inline one runs an attempt inside ``submit``, in the test's own
process: nothing to stop, no process to die) its subclass replaces with what it does
instead, by overriding the test of the same name.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid

import pytest

from nbwork import Result, Worker
from nbwork._code import serialize_worker
from nbwork._executors.base import AttemptSpec
from nbwork._rules import Outcome, OutcomeKind
from tests import helpers
from tests.conftest import wait_until

STOP_GRACE = 0.5
"""Seconds an executor under test gives a stopped attempt before it ends it."""


class Recorder:
    """A sink that keeps every report, and checks that each attempt finishes once."""

    def __init__(self) -> None:
        self.pids: dict[str, int | None] = {}
        self.reported: dict[str, list[dict]] = {}  # progress, by token
        self.outcomes: dict[str, Outcome] = {}

    def started(self, token: str, pid: int | None, create_time: float | None) -> None:
        self.pids[token] = pid

    def progress(self, token: str, values: dict) -> None:
        self.reported.setdefault(token, []).append(values)

    def finished(self, token: str, outcome: Outcome) -> None:
        assert token not in self.outcomes, f"attempt {token} finished twice"
        self.outcomes[token] = outcome


def make_attempt(worker, tmp_path, log: str = "work.log", **input_data) -> AttemptSpec:
    key, payload = serialize_worker(worker, getattr(worker, "__qualname__", "w"))
    return AttemptSpec(work_id=str(uuid.uuid4()), token=uuid.uuid4().hex, worker_name="w",
                       code_key=key, payload=payload, input_data=input_data,
                       log_path=str(tmp_path / log))


def read(path) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


class AlwaysRetry(Worker):
    def do_work(self) -> Result:
        return Result.retry()


def exit_zero() -> dict:
    sys.exit(0)


class ExecutorContract:
    """Behaviours every executor has. A subclass provides the ``executor`` fixture."""

    runs_in_submit = False
    """True for an executor that runs the attempt inside ``submit`` (the inline one)."""

    @pytest.fixture
    def executor(self):
        raise NotImplementedError("a subclass makes the executor under test")

    @pytest.fixture
    def sink(self) -> Recorder:
        return Recorder()

    def outcome(self, executor, sink: Recorder, attempt: AttemptSpec,
                timeout: float = 60) -> Outcome:
        """Poll until ``attempt`` has finished; its outcome."""
        def finished():
            executor.poll(sink)
            return sink.outcomes.get(attempt.token)
        return wait_until(finished, timeout=timeout, what=f"the attempt to finish ({attempt})")

    def submit(self, executor, attempt: AttemptSpec) -> None:
        """As the scheduler does: only while the executor has room (a Dask executor has
        none until it has connected)."""
        wait_until(lambda: executor.room() > 0, timeout=60, what="room in the executor")
        executor.submit(attempt)

    def run(self, executor, sink: Recorder, attempt: AttemptSpec) -> Outcome:
        self.submit(executor, attempt)
        return self.outcome(executor, sink, attempt)

    # --- success, failure, retry -----------------------------------------------------------

    def test_a_returned_result_is_its_outcome(self, executor, sink, tmp_path):
        outcome = self.run(executor, sink, make_attempt(helpers.add, tmp_path, a=2, b=40))
        assert outcome == Outcome(OutcomeKind.SUCCESS, output={"sum": 42})
        described = dataclasses.replace(make_attempt(helpers.Describe, tmp_path, k=1),
                                        tags=("t",), run_attempt_count=3)
        seen = self.run(executor, sink, described).output
        assert (seen["id"], seen["tags"], seen["run_attempt_count"], seen["input"]) == (
            described.work_id, ["t"], 3, ["k"])
        assert not executor.running()

    def test_an_exception_fails_the_attempt_with_its_traceback(self, executor, sink, tmp_path):
        outcome = self.run(executor, sink, make_attempt(helpers.boom, tmp_path))
        assert outcome.kind is OutcomeKind.FAILURE
        assert "Traceback (most recent call last)" in outcome.error
        assert "ValueError: boom-4711: the worker raised on purpose" in outcome.error

    def test_sys_exit_fails_the_attempt_even_with_code_0(self, executor, sink, tmp_path):
        outcome = self.run(executor, sink, make_attempt(exit_zero, tmp_path))
        assert outcome.kind is OutcomeKind.FAILURE
        assert outcome.error.startswith("worker called sys.exit(0): a work succeeds only by "
                                        "returning")

    def test_a_retry_is_its_outcome(self, executor, sink, tmp_path):
        outcome = self.run(executor, sink, make_attempt(AlwaysRetry, tmp_path))
        assert outcome == Outcome(OutcomeKind.RETRY)

    # --- progress and output ---------------------------------------------------------------

    def test_progress_is_reported_before_the_outcome(self, executor, sink, tmp_path):
        gate = tmp_path / "gate"
        if self.runs_in_submit:
            helpers.touch(gate)  # it runs to its end inside submit
        attempt = make_attempt(helpers.Progressing, tmp_path, gate=str(gate))
        self.submit(executor, attempt)

        def reported():
            executor.poll(sink)
            return sink.reported.get(attempt.token)
        assert wait_until(reported, what="the progress") == [{"percent": 50, "step": "half"}]
        helpers.touch(gate)
        assert self.outcome(executor, sink, attempt) == Outcome(OutcomeKind.SUCCESS,
                                                                output={"done": True})

    def test_what_a_worker_prints_goes_to_its_log(self, executor, sink, tmp_path):
        chatty = make_attempt(helpers.chatty, tmp_path, log="chatty.log")
        quiet = make_attempt(helpers.add, tmp_path, log="quiet.log", a=1, b=1)
        boom = make_attempt(helpers.boom, tmp_path, log="boom.log")
        for attempt in (chatty, quiet, boom):
            self.run(executor, sink, attempt)
        log = read(chatty.log_path)
        assert "to-stdout: hello from the worker" in log
        assert "to-stderr: warning from the worker" in log
        assert "boom-4711" in read(boom.log_path)  # the traceback is in the log too
        assert not os.path.exists(quiet.log_path)  # no output, no file

    # --- stops ---------------------------------------------------------------------------

    def test_a_stopped_worker_sees_it_and_its_outcome_is_stopped(self, executor, sink, tmp_path):
        attempt = make_attempt(helpers.StopAware, tmp_path, dir=str(tmp_path))
        self.submit(executor, attempt)
        wait_until((tmp_path / "started").exists, what="the worker to start")
        executor.stop(attempt.token, "CANCELLED_BY_APP")
        outcome = self.outcome(executor, sink, attempt)
        assert outcome == Outcome(OutcomeKind.STOPPED, stop_reason="CANCELLED_BY_APP")
        assert (tmp_path / "saw_stop").read_text() == "CANCELLED_BY_APP"
        assert (tmp_path / "on_stopped").exists()

    def test_a_worker_that_ignores_its_stop_is_ended_with_what_it_started(
            self, executor, sink, tmp_path):
        attempt = make_attempt(helpers.Stubborn, tmp_path, dir=str(tmp_path))
        self.submit(executor, attempt)
        wait_until((tmp_path / "pids").exists, what="the worker and its grandchild to start")
        worker_pid, grandchild = helpers.read_ints(tmp_path / "pids")
        executor.stop(attempt.token, "CANCELLED_BY_APP")
        outcome = self.outcome(executor, sink, attempt)
        assert outcome == Outcome(OutcomeKind.STOPPED, stop_reason="CANCELLED_BY_APP")
        for pid in (worker_pid, grandchild):
            wait_until(lambda pid=pid: helpers.is_dead(pid), what=f"process {pid} to end")

    # --- a worker process that dies ------------------------------------------------------

    def test_a_worker_process_that_dies_is_a_crash(self, executor, sink, tmp_path):
        outcome = self.run(executor, sink, make_attempt(helpers.kill_myself, tmp_path))
        assert outcome.kind is OutcomeKind.CRASH
        assert "worker process died: signal 9 (SIGKILL)" in outcome.error
        # And the executor goes on running attempts.
        after = self.run(executor, sink, make_attempt(helpers.add, tmp_path, a=2, b=3))
        assert after.output == {"sum": 5}
