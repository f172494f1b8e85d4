"""The executor contract (``tests/executor_contract.py``) against every executor: inline, local
and Dask on a real loopback cluster; and the outcome they all report."""

from __future__ import annotations

import multiprocessing.forkserver

import pytest

from nbwork._executors.inline import InlineExecutor
from nbwork._executors.local import LocalExecutor
from nbwork._rules import Outcome, OutcomeKind
from tests import helpers
from tests.executor_contract import STOP_GRACE, ExecutorContract, make_attempt


def exit_three() -> dict:
    raise SystemExit(3)


class TestInlineExecutor(ExecutorContract):
    """In the test's own process, inside ``submit``: what it does where a process would be
    stopped or die is tested in place of those behaviours."""

    runs_in_submit = True

    @pytest.fixture
    def executor(self):
        executor = InlineExecutor(capacity=2, stop_grace=STOP_GRACE)
        yield executor
        executor.shutdown(grace=STOP_GRACE)

    def test_a_stopped_worker_sees_it_and_its_outcome_is_stopped(self, executor, sink, tmp_path):
        """The attempt has finished inside ``submit``: a stop comes too late to change its
        outcome, and is only noted."""
        gate = tmp_path / "gate"
        helpers.touch(gate)
        attempt = make_attempt(helpers.GateWorker, tmp_path, gate=str(gate), value=7)
        executor.submit(attempt)
        executor.stop(attempt.token, "CANCELLED_BY_APP")
        assert self.outcome(executor, sink, attempt) == Outcome(OutcomeKind.SUCCESS,
                                                                output={"value": 7})
        assert executor.stopped == [(attempt.token, "CANCELLED_BY_APP")]

    def test_a_worker_that_ignores_its_stop_is_ended_with_what_it_started(
            self, executor, sink, tmp_path):
        """A held attempt (``hold=True``) runs until the test ends it: a stop is noted, and
        the outcome is the one the test gives."""
        held = InlineExecutor(hold=True)
        attempt = make_attempt(helpers.Stubborn, tmp_path, dir=str(tmp_path))
        held.submit(attempt)
        held.stop(attempt.token, "CANCELLED_BY_APP")
        assert held.running() == {attempt.token} and held.room() == 0
        held.finish(attempt.token, Outcome(OutcomeKind.STOPPED, stop_reason="CANCELLED_BY_APP"))
        assert self.outcome(held, sink, attempt).stop_reason == "CANCELLED_BY_APP"
        assert not held.running() and held.stopped == [(attempt.token, "CANCELLED_BY_APP")]
        assert not (tmp_path / "pids").exists()  # never run

    def test_a_worker_process_that_dies_is_a_crash(self, executor, sink, tmp_path):
        """There is no worker process: what would end one (``sys.exit(3)``) fails the
        attempt, and the executor goes on."""
        outcome = self.run(executor, sink, make_attempt(exit_three, tmp_path))
        assert outcome.kind is OutcomeKind.FAILURE and "sys.exit(3)" in outcome.error
        after = self.run(executor, sink, make_attempt(helpers.add, tmp_path, a=2, b=3))
        assert after.output == {"sum": 5}


@pytest.mark.slow
class TestLocalExecutor(ExecutorContract):
    @pytest.fixture
    def executor(self):
        executor = LocalExecutor(capacity=2, stop_grace=STOP_GRACE)
        yield executor
        executor.shutdown(grace=1.0)
        multiprocessing.forkserver._forkserver._stop()  # the forkserver this test started

    def test_a_worker_process_that_dies_is_a_crash(self, executor, sink, tmp_path):
        super().test_a_worker_process_that_dies_is_a_crash(executor, sink, tmp_path)
        died, fresh = sink.pids.values()
        assert died != fresh and helpers.is_dead(died)  # a fresh process took its place


@pytest.fixture(scope="module")
def dask_cluster():
    """Two Dask worker processes on loopback, stopped with the module."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                       host="127.0.0.1", dashboard_address=None)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.slow
class TestDaskExecutor(ExecutorContract):
    @pytest.fixture
    def executor(self, dask_cluster):
        from nbwork._executors.dask import DaskExecutor

        address = dask_cluster.scheduler_address.replace("tcp://", "dask://")
        executor = DaskExecutor(address, stop_grace=STOP_GRACE)
        yield executor
        executor.shutdown(grace=1.0)


def test_an_outcome_kind_is_an_enum_read_from_its_string_form():
    """Executors of another nbwork version (a Dask worker) send plain strings; an outcome
    with a kind nbwork does not know is refused, never taken for a failure."""
    assert Outcome("success").kind is OutcomeKind.SUCCESS
    assert Outcome("not_started") == Outcome(OutcomeKind.NOT_STARTED)
    with pytest.raises(ValueError, match="'finished' is not a valid OutcomeKind"):
        Outcome("finished")


def test_finish_attempt_takes_a_kind_left_a_string_by_unpickling():
    """``pickle`` restores a frozen dataclass without ``__post_init__``: the rules read the
    kind through ``OutcomeKind`` all the same."""
    from nbwork._rules import MemoryWorkSet, finish_attempt, start_attempt
    from nbwork._spec import WorkSpec
    from nbwork.info import WorkState

    spec = WorkSpec(id="w", worker_name="tests.w", code_key="code", state=WorkState.ENQUEUED)
    start_attempt(spec, "token", 10.0)
    old = Outcome(OutcomeKind.SUCCESS, output={"a": 1})
    object.__setattr__(old, "kind", "success")
    finish_attempt(MemoryWorkSet([spec]), spec, old, 11.0)
    assert spec.state is WorkState.SUCCEEDED and spec.output == {"a": 1}
