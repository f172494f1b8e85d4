"""The local executor on its own (no scheduler, no store): warm slots, batches of short
works, stops of queued attempts, cleanup of what an attempt leaves running."""

from __future__ import annotations

import dataclasses
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from nbwork._code import serialize_worker
from nbwork._executors.base import AttemptSpec
from nbwork._executors.local import LocalExecutor
from tests import helpers
from tests.conftest import wait_until

# Every test here starts real worker processes.
pytestmark = pytest.mark.slow


class Sink:
    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.outcomes: dict = {}

    def started(self, token, pid, create_time) -> None:
        self.pids[token] = pid

    def progress(self, token, values) -> None:
        self.progress_seen = values

    def finished(self, token, outcome) -> None:
        self.outcomes[token] = outcome


def attempt(worker, tmp_path, log: str = "log", **input_data) -> AttemptSpec:
    key, payload = serialize_worker(worker, getattr(worker, "__qualname__", "w"))
    return AttemptSpec(work_id=str(uuid.uuid4()), token=uuid.uuid4().hex, worker_name="w",
                       code_key=key, payload=payload, input_data=input_data,
                       log_path=str(tmp_path / log))


@pytest.fixture
def executor():
    ex = LocalExecutor(capacity=2, stop_grace=0.5)
    yield ex
    ex.shutdown(grace=1.0)
    multiprocessing.forkserver._forkserver._stop()  # the forkserver this test started


def run_until_done(ex, sink, tokens, timeout=60):
    def done():
        ex.poll(sink)
        return all(t in sink.outcomes for t in tokens)
    wait_until(done, timeout=timeout, what="the attempts to finish")


def run_to_the_end(ex, sink, specs: list[AttemptSpec]) -> list:
    """Submit ``specs`` as room allows and return their final outcomes, in order. Attempts
    taken back from behind a slow one (``not_started``: a slot's first attempt may wait
    for its process to boot) are handed out again, as the scheduler does."""
    final: dict[int, object] = {}
    pending = list(enumerate(specs))
    while pending:
        for _, spec in pending:
            while ex.room() == 0:
                ex.poll(sink)
            ex.submit(spec)
        run_until_done(ex, sink, [spec.token for _, spec in pending])
        for i, spec in pending:
            if sink.outcomes[spec.token].kind != "not_started":
                final[i] = sink.outcomes[spec.token]
        pending = [(i, dataclasses.replace(spec, token=uuid.uuid4().hex))
                   for i, spec in pending if i not in final]
    return [final[i] for i in range(len(specs))]


def print_then(text: str, then: str = "return", gate: str = "") -> dict:
    print(text, flush=True)
    if then == "die":
        os._exit(3)
    while then == "wait" and not os.path.exists(gate):
        time.sleep(0.01)
    return {}


def read(path) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def teach_both_slots_short(executor, sink, tmp_path) -> None:
    """Run short works until both slots take queues (a slot's first attempt, which waits
    for the process to boot, may not count as short)."""
    def both_slots_take_queues():
        executor.poll(sink)
        if len([s for s in executor._slots if s.alive and s.depth > 1]) == 2:
            return True
        if not executor.running():
            for _ in range(2):
                executor.submit(attempt(helpers.add, tmp_path, a=1, b=1))
        return False
    wait_until(both_slots_take_queues, what="both slots to have run short works")


def spawn_sleeper(pid_file: str) -> dict:
    """Starts a grandchild that would sleep ten minutes, records its pid, and returns."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    helpers.append_line(pid_file, child.pid)
    return {}


def test_a_flood_of_short_works_is_batched_into_warm_slots(executor, tmp_path):
    sink = Sink()
    outcomes = run_to_the_end(executor, sink, [attempt(helpers.add, tmp_path, a=i, b=1)
                                               for i in range(200)])
    assert [o.output["sum"] for o in outcomes] == [i + 1 for i in range(200)]
    assert len(set(sink.pids.values())) <= 2, "two warm processes ran all 200 attempts"


def test_long_works_are_handed_out_one_per_slot(executor, tmp_path):
    gate = tmp_path / "gate"
    sink = Sink()
    first = attempt(helpers.wait_for_gate, tmp_path, gate=str(gate))
    executor.submit(first)
    assert executor.room() == 1  # the other slot, not a queue behind a work of unknown length
    helpers.touch(gate)
    run_until_done(executor, sink, [first.token])


def test_a_stopped_attempt_still_queued_is_never_run(executor, tmp_path):
    sink = Sink()
    teach_both_slots_short(executor, sink, tmp_path)
    gate = tmp_path / "gate"
    marker = tmp_path / "ran"
    blockers = [attempt(helpers.wait_for_gate, tmp_path, gate=str(gate)) for _ in range(2)]
    for a in blockers:
        executor.submit(a)
    queued = attempt(helpers.append_line, tmp_path, path=str(marker), value=1)
    executor.submit(queued)
    executor.stop(queued.token, "CANCELLED_BY_APP")
    helpers.touch(gate)
    run_until_done(executor, sink, [queued.token, *(a.token for a in blockers)])
    assert sink.outcomes[queued.token].kind == "stopped"
    assert not marker.exists()


def test_what_an_attempt_leaves_running_is_killed_when_it_returns(executor, tmp_path):
    sink = Sink()
    pid_file = tmp_path / "pids"
    a = attempt(spawn_sleeper, tmp_path, pid_file=str(pid_file))
    executor.submit(a)
    run_until_done(executor, sink, [a.token])
    assert sink.outcomes[a.token].kind == "success"
    (grandchild,) = helpers.read_ints(pid_file)
    wait_until(lambda: helpers.is_dead(grandchild), what="the leftover grandchild to die")
    assert not helpers.is_dead(sink.pids[a.token]), "the warm process itself lives on"


def _pids_of_seven_attempts(ex: LocalExecutor, tmp_path) -> list[int]:
    sink = Sink()
    try:
        tokens = []
        for i in range(7):
            a = attempt(helpers.add, tmp_path, a=i, b=0)
            while ex.room() == 0:
                ex.poll(sink)
            ex.submit(a)
            tokens.append(a.token)
            run_until_done(ex, sink, [a.token])
        return [sink.pids[t] for t in tokens]
    finally:
        ex.shutdown(grace=1.0)
        multiprocessing.forkserver._forkserver._stop()


def test_a_slot_is_retired_after_its_quota_of_attempts(tmp_path):
    pids = _pids_of_seven_attempts(
        LocalExecutor(capacity=1, max_runs_per_process=3, min_process_lifetime=0), tmp_path)
    assert len(set(pids)) == 3 and pids[:3] == [pids[0]] * 3
    assert os.getpid() not in pids


@pytest.mark.slow
def test_a_young_slot_is_not_retired_for_its_quota(tmp_path):
    """A flood of no-ops reached the quota in a fraction of a second: replacing the process
    then cost more than the works did. The quota counts once the process is old enough."""
    pids = _pids_of_seven_attempts(
        LocalExecutor(capacity=1, max_runs_per_process=3, min_process_lifetime=60), tmp_path)
    assert len(set(pids)) == 1 and os.getpid() not in pids


def test_short_works_queued_behind_a_long_one_are_taken_back_for_an_idle_process(
        executor, tmp_path):
    sink = Sink()
    teach_both_slots_short(executor, sink, tmp_path)
    gates = [tmp_path / "gate-a", tmp_path / "gate-b"]
    blockers = [attempt(helpers.wait_for_gate, tmp_path, gate=str(g)) for g in gates]
    for a in blockers:
        executor.submit(a)
    shorts = [attempt(helpers.add, tmp_path, a=i, b=1) for i in range(6)]
    for a in shorts:
        executor.submit(a)  # into the queues behind both blockers
    helpers.touch(gates[1])  # one process frees up; the other stays blocked
    run_until_done(executor, sink, [blockers[1].token, *(a.token for a in shorts)])
    kinds = {sink.outcomes[a.token].kind for a in shorts}
    assert "not_started" in kinds and kinds <= {"success", "not_started"}
    assert blockers[0].token not in sink.outcomes  # still running, never disturbed
    helpers.touch(gates[0])
    run_until_done(executor, sink, [blockers[0].token])
    assert sink.outcomes[blockers[0].token].kind == "success"


def test_a_long_attempts_output_is_in_its_log_while_it_runs(executor, tmp_path):
    sink = Sink()
    gate = tmp_path / "gate"
    long = attempt(print_then, tmp_path, log="long.log", text="still working", then="wait",
                   gate=str(gate))
    executor.submit(long)
    wait_until(lambda: read(long.log_path) == "still working\n", what="the log, live")
    assert long.token not in sink.outcomes
    helpers.touch(gate)
    run_until_done(executor, sink, [long.token])
    assert read(long.log_path) == "still working\n"  # once, not copied again at the end


def test_what_an_attempt_printed_before_its_process_died_is_kept(executor, tmp_path):
    sink = Sink()
    dying = attempt(print_then, tmp_path, log="dying.log", text="last words", then="die")
    executor.submit(dying)
    run_until_done(executor, sink, [dying.token])
    assert sink.outcomes[dying.token].kind == "crash"
    assert read(dying.log_path) == "last words\n"
    assert not (tmp_path / f".slot-{sink.pids[dying.token]}.out").exists()


def test_scratch_files_of_dead_worker_processes_are_removed(executor, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".slot-{dead.pid}.out"
    stale.write_text("left by a worker process whose scheduler was killed")
    alive = tmp_path / f".slot-{os.getpid()}.out"
    alive.write_text("a live process's")
    sink = Sink()
    a = attempt(helpers.add, tmp_path, a=1, b=1)
    executor.submit(a)
    run_until_done(executor, sink, [a.token])
    assert not stale.exists() and alive.exists()


def test_shutdown_waits_for_attempts_not_for_warm_processes_to_end(tmp_path):
    ex = LocalExecutor(capacity=2, stop_grace=600)
    sink = Sink()
    try:
        gate = tmp_path / "gate"
        running = attempt(helpers.wait_for_gate, tmp_path, gate=str(gate))
        done = attempt(helpers.add, tmp_path, a=1, b=1)
        for a in (running, done):
            ex.submit(a)
        run_until_done(ex, sink, [done.token])
        wait_until(lambda: ex.poll(sink) or running.token in sink.pids, what="it to start")
        slots = list(ex._slots)
        # wait_for_gate returns when stopped: shutdown must end as soon as it has, though
        # both worker processes (warm, idle) would live on for ever.
        shutdown = threading.Thread(target=ex.shutdown, kwargs={"grace": 600}, daemon=True)
        shutdown.start()
        shutdown.join(30)
        ended = not shutdown.is_alive()
        if not ended:  # end the wait the regression is stuck in, then fail
            for slot in slots:
                os.killpg(slot.process.pid, signal.SIGKILL)
            shutdown.join()
        assert ended, "shutdown waited out the grace period for processes that never end"
        assert not ex._slots
    finally:
        multiprocessing.forkserver._forkserver._stop()


@pytest.mark.slow
def test_each_process_is_sent_a_worker_code_once_whatever_the_number_of_attempts(
        executor, tmp_path):
    """Attempts carry no payload: the executor reads the code from its source only for a
    process that lacks it (once per process and key), never once per attempt."""
    key, payload = serialize_worker(helpers.add, "add")
    reads = []

    def source(code_key):
        reads.append(code_key)
        return len(payload), iter([payload[:10], payload[10:]])  # sent in pieces

    executor.set_code_source(source)
    sink = Sink()
    outcomes = run_to_the_end(executor, sink, [
        AttemptSpec(work_id=str(uuid.uuid4()), token=uuid.uuid4().hex, worker_name="w",
                    code_key=key, payload=None, input_data={"a": i, "b": 1},
                    log_path=str(tmp_path / "log")) for i in range(40)])
    assert [o.output["sum"] for o in outcomes] == list(range(1, 41))
    # Two processes (capacity 2), so two reads at most for 40 attempts.
    assert set(reads) == {key} and len(reads) <= 2


def test_a_worker_process_sends_progress_at_most_once_per_interval_and_the_latest_always():
    """Each progress message wakes the scheduler (a turn of its loop): a blur reporting per
    strip cost it one per report. The first goes at once; later ones wait for their turn
    (a timer sends the latest); one still waiting when the attempt is stopped goes at once;
    nothing after the attempt ended."""
    from nbwork._executors.attempt import PROGRESS_INTERVAL
    from nbwork._executors.slot import _TimedProgress
    from nbwork._rules import Outcome, OutcomeKind

    sent: list = []
    progress = _TimedProgress(sent.append, "t1")
    started = time.monotonic()
    for strip in (1, 2, 3):
        progress.reported({"strip": strip})
    assert sent == [["progress", "t1", {"strip": 1}]]
    wait_until(lambda: len(sent) == 2, what="the latest progress, sent by the timer")
    assert sent[1] == ["progress", "t1", {"strip": 3}]
    assert time.monotonic() - started >= PROGRESS_INTERVAL
    progress.reported({"strip": 4})  # just after a send: waits
    assert len(sent) == 2
    progress.end(Outcome(OutcomeKind.STOPPED))
    assert sent[2] == ["progress", "t1", {"strip": 4}]
    progress.reported({"strip": 5})  # a thread the attempt left running: ignored
    assert len(sent) == 3
