"""Guaranteed execution when the store is at fault: a full disk, a corrupt or unloadable
worker payload, and a kernel killed in the middle of enqueueing a big batch."""

from __future__ import annotations

import os
import pickle
import random
import signal
import time

import pytest

from nbwork import OneTimeWorkRequest, StoreError, WorkManager, WorkState
from nbwork._lock import holder_pid
from nbwork._store import Store
from nbwork.testing import TestDriver
from tests.conftest import wait_until
from tests.helpers import add, is_dead, stop_scheduler, touch
from tests.reliability import (
    DELAYED,
    RecordThenWait,
    all_specs,
    consistency_problems,
    corrupt_garbage,
    corrupt_missing_module,
    corrupt_raises,
    fill_disk,
    read_pid_lines,
    scheduler_log,
    wal_writer_pid,
)
from tests.reliability import _RaisesWhenLoaded as RaisesWhenLoaded

# Every test here starts a real scheduler and worker processes.
pytestmark = pytest.mark.slow


def _spec(wm, request):
    return wm._store.get(request.id)


# --- a full disk ----------------------------------------------------------------------------




def test_a_full_disk_fails_enqueue_clearly_and_the_scheduler_carries_on(small_disk, tmp_path):
    store_path = str(small_disk / "store")
    Store(store_path)
    # Its log outside the small disk, so what the scheduler says while the disk is full stays.
    log_path = tmp_path / "scheduler.log"
    os.symlink(log_path, os.path.join(store_path, "scheduler.log"))
    wm = WorkManager(store_path)
    running = OneTimeWorkRequest(RecordThenWait, input_data={
        "dir": str(tmp_path), "gate": str(tmp_path / "gate")})
    wm.enqueue(running)
    wait_until(lambda: read_pid_lines(tmp_path), what="the work to run")
    scheduler = holder_pid(store_path)

    filler = str(small_disk / "filler")
    fill_disk(filler)
    late = OneTimeWorkRequest(add, input_data={"a": 1, "b": 2})
    with pytest.raises(StoreError, match="is full; nothing was written"):
        wm.enqueue(late)
    assert wm.get_work_info_by_id(late.id) is None
    try:  # a new client gets the same clear error (never a bare sqlite3 error), or works
        WorkManager(store_path)
    except StoreError as exc:
        assert "is full" in str(exc)

    # The running work finishes while the disk is full: its result waits, the scheduler stays.
    touch(tmp_path / "gate")
    wait_until(lambda: "1 finished attempt(s) wait until the store can be written"
               in log_path.read_text(), what="the scheduler to meet the full disk")
    assert holder_pid(store_path) == scheduler
    assert _spec(wm, running).state is WorkState.RUNNING

    os.unlink(filler)     # space returns
    wait_until(lambda: _spec(wm, running).state.is_finished, what="the result to be recorded")
    assert _spec(wm, running).state is WorkState.SUCCEEDED
    assert _spec(wm, running).output == {"seen": 0}
    wm.enqueue(late)
    wait_until(lambda: _spec(wm, late).state.is_finished, what="a new work to run")
    assert _spec(wm, late).output == {"sum": 3}
    assert holder_pid(store_path) == scheduler      # carried on: never restarted
    log = log_path.read_text()
    assert "the store cannot be written; trying again every second" in log
    assert "restarting" not in log and "Traceback" not in log
    assert consistency_problems(wm._store) == []


# --- corrupt or unloadable worker payloads --------------------------------------------------


CORRUPTIONS = {
    # how the stored worker code is broken: (payload, what the error must say)
    corrupt_garbage: (b"this is not a pickle", "UnpicklingError"),
    corrupt_raises: (pickle.dumps(RaisesWhenLoaded()),
                     "ValueError: invalid literal for int() with base 10: 'this payload "
                     "unpickles to a ValueError'"),
    corrupt_missing_module: (b"cnbwork_reliability_no_such_module\nworker\n.",
                             "ModuleNotFoundError: No module named "
                             "'nbwork_reliability_no_such_module'"),
}


def test_a_corrupt_or_unloadable_payload_fails_only_its_own_work(wm):
    store = wm._store
    broken = {}
    for worker in CORRUPTIONS:
        first = OneTimeWorkRequest(worker, initial_delay=DELAYED)
        then = OneTimeWorkRequest(add, input_data={"a": 0, "b": 0})
        wm.begin_with(first).then(then).enqueue()
        broken[worker] = (first, then)
    healthy = OneTimeWorkRequest(add, input_data={"a": 2, "b": 3}, initial_delay=DELAYED)
    wm.enqueue(healthy)
    scheduler = wm.daemon.start()
    for worker, (first, _) in broken.items():
        store._cache.set(f"code:{_spec(wm, first).code_key}", CORRUPTIONS[worker][0])
    driver = TestDriver(wm)
    for first, _ in broken.values():
        driver.set_initial_delay_met(first.id)
    driver.set_initial_delay_met(healthy.id)
    everything = [r for pair in broken.values() for r in pair] + [healthy]
    wait_until(lambda: all(_spec(wm, r).state.is_finished for r in everything),
               what="every work to finish")
    for worker, (first, then) in broken.items():
        spec = _spec(wm, first)
        assert spec.state is WorkState.FAILED, worker.__name__
        assert CORRUPTIONS[worker][1] in spec.error
        assert spec.run_attempt_count == 1          # failed once, not crash-looped
        assert _spec(wm, then).state is WorkState.FAILED
    assert _spec(wm, healthy).state is WorkState.SUCCEEDED
    assert _spec(wm, healthy).output == {"sum": 5}
    assert holder_pid(wm.store_path) == scheduler   # the scheduler itself never failed
    assert "Traceback" not in scheduler_log(wm.store_path)


# --- a kernel killed in the middle of enqueueing a big batch ---------------------------------


BATCH = 5000
KERNEL_PID = "import os; print(os.getpid())"
ENQUEUE = '''
from nbwork import OneTimeWorkRequest, WorkManager

def noop():
    return {{}}

wm = WorkManager({store!r})
batch = [OneTimeWorkRequest(noop, tags=[{tag!r}], initial_delay=3600) for _ in range({n})]
wm.enqueue(batch)
print("enqueued")
'''


@pytest.mark.slow
def test_a_kernel_killed_mid_enqueue_leaves_all_of_the_batch_or_none(tmp_path, store_path):
    """The kernel is SIGKILLed while it enqueues 5,000 requests in one call: in two trials
    while it is frozen inside the store transaction (it holds SQLite's write lock), in four
    at a random moment after it entered it. The store then holds all or none of the batch,
    and its indexes agree with its records."""
    from tests.kernels import kernel, run

    Store(store_path).close()
    outcomes = []
    rng = random.Random(4)
    try:
        for trial, inside in enumerate([True, True, False, False, False, False]):
            tag = f"batch-{trial}"
            with kernel(str(tmp_path)) as (km, kc):
                pid = int(run(kc, KERNEL_PID))
                kc.execute(ENQUEUE.format(store=store_path, tag=tag, n=BATCH))
                # This test process keeps the store closed while it watches the lock (see
                # wal_writer_pid): it polls without sleeping, the transaction lasts ~0.3 s.
                wait_until(lambda p=pid: wal_writer_pid(store_path) == p, timeout=120,
                           what="the kernel to enter the enqueue transaction")
                if inside:
                    os.kill(pid, signal.SIGSTOP)
                    inside = wal_writer_pid(store_path) == pid   # frozen inside the transaction
                else:
                    # Fault timing, not synchronisation: somewhere in or after the transaction.
                    moment = time.monotonic() + rng.uniform(0.0, 1.0)
                    wait_until(lambda m=moment: time.monotonic() >= m, what="the chosen moment")
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda p=pid: is_dead(p), what="the kernel to die")
            store = Store(store_path)
            try:
                records = sum(1 for s in all_specs(store).values() if tag in s.tags)
                outcomes.append((inside, records))
                assert records in (0, BATCH), f"trial {trial}: {records} of {BATCH} stored"
                assert len(store.tag_ids(tag)) == records
                assert consistency_problems(store) == []
            finally:
                store.close()
    finally:
        stop_scheduler(store_path)
    print("kernel kills (frozen inside the transaction, works stored):", outcomes)
    # The frozen kills did interrupt a transaction: none of those batches was stored.
    assert any(inside and records == 0 for inside, records in outcomes), outcomes
