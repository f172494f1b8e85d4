"""The scheduler's record cache and its one rule: what it holds is the store's as of change
counter ``seen``; any sign of a commit by somebody else forgets it and raises ``news``."""

from __future__ import annotations

import gc
import weakref

from nbwork._scheduler_records import RecordCache
from nbwork._spec import WorkSpec
from nbwork.info import WorkState


class FakeTransaction:
    """What the cache uses of a store transaction: the counter, adopt/get, and the commit's
    counters and state moves."""

    def __init__(self, counter: int, stored: dict[str, WorkSpec] | None = None) -> None:
        self.counter = counter
        self.stored = stored or {}
        self.adopted: list[str] = []
        self.read: list[str] = []
        self.counter_before: int | None = None
        self.counter_after: int | None = None
        self.index_moves: list[tuple] = []

    def change_counter(self) -> int:
        return self.counter

    def adopt(self, spec: WorkSpec) -> WorkSpec:
        self.adopted.append(spec.id)
        return spec

    def get(self, work_id: str) -> WorkSpec | None:
        self.read.append(work_id)
        return self.stored.get(work_id)

    def commit(self, moved: tuple[str, ...] = ()) -> FakeTransaction:
        self.counter_before, self.counter_after = self.counter, self.counter + 1
        self.index_moves = [(None, None, wid, 0.0) for wid in moved]
        return self


def _spec(work_id: str) -> WorkSpec:
    return WorkSpec(id=work_id, worker_name="w", code_key="c", state=WorkState.ENQUEUED)


def test_a_record_read_outside_is_adopted_while_nobody_else_writes():
    cache = RecordCache()
    cache.look(5)
    assert cache.take_news()                      # the first look is news
    cache.read(5, [_spec("a")])
    txn = FakeTransaction(5)
    assert cache.current(txn, "a").id == "a"
    assert txn.adopted == ["a"] and txn.read == []
    cache.committed(txn.commit())                 # our own commit: still true after it
    assert not cache.take_news()
    later = FakeTransaction(6)
    cache.current(later, "a")
    assert later.adopted == ["a"]


def test_a_commit_by_somebody_else_forgets_everything_and_is_news():
    cache = RecordCache()
    cache.look(5)
    cache.take_news()
    cache.read(5, [_spec("a")])
    cache.constraints["a"] = {"requires_charging": True}
    txn = FakeTransaction(6, {"a": _spec("a")})   # somebody committed: 6, not 5
    cache.current(txn, "a")
    assert txn.read == ["a"] and txn.adopted == []
    assert cache.constraints == {}
    assert cache.take_news() and not cache.take_news()


def test_a_commit_of_ours_that_did_not_follow_seen_shows_the_one_before_it():
    cache = RecordCache()
    cache.look(5)
    cache.take_news()
    cache.read(5, [_spec("a")])
    # A client's cancel committed (as 6) between our look and our transaction.
    cache.committed(FakeTransaction(6).commit(), written=[_spec("b")])
    assert cache.take_news()
    assert not cache.holds("a") and cache.holds("b")


def test_records_whose_state_our_commit_moved_are_dropped_and_the_written_kept():
    cache = RecordCache()
    cache.look(5)
    cache.read(5, [_spec("a"), _spec("b"), _spec("c")])
    cache.committed(FakeTransaction(5).commit(moved=("a", "b", "c")), written=[_spec("b")],
                    ended=["c"])
    assert [cache.holds(w) for w in "abc"] == [False, True, False]


def test_a_failed_transaction_forgets_what_it_may_have_changed():
    cache = RecordCache()
    cache.look(5)
    cache.take_news()
    cache.read(5, [_spec("a")])
    cache.failed()
    assert not cache.holds("a")


def test_the_cache_does_not_keep_a_transaction_alive():
    # A transaction holds every index shard it read; kept after it ended, the scheduler's
    # memory grew with every finished work.
    cache = RecordCache()
    cache.read(5, [_spec("a")])
    txn = FakeTransaction(5)
    cache.current(txn, "a")
    cache.committed(txn.commit())
    gone = weakref.ref(txn)
    del txn
    gc.collect()
    assert gone() is None


def test_one_counter_read_per_transaction():
    cache = RecordCache()
    cache.read(5, [_spec("a"), _spec("b")])
    txn = FakeTransaction(5)
    reads = []
    txn.change_counter = lambda: reads.append(1) or 5
    cache.current(txn, "a")
    cache.current(txn, "b")
    assert reads == [1] and txn.adopted == ["a", "b"]
