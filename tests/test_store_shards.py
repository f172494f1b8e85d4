"""The memo of a state index: another process's commit re-reads only the shards it changed,
and the memo is the store's index whatever the mix of commits."""

from __future__ import annotations

import pickle
import uuid

from nbwork._spec import WorkSpec
from nbwork._store import Store, shards
from nbwork._store.codec import SHARDS
from nbwork.info import WorkState


class CountingPickle:
    def __init__(self) -> None:
        self.loads_calls = 0

    def loads(self, data: bytes):
        self.loads_calls += 1
        return pickle.loads(data)


def _spec(state: WorkState = WorkState.ENQUEUED, first: str = "") -> WorkSpec:
    id = first + uuid.uuid4().hex[len(first):]
    return WorkSpec(id=id, worker_name="w", code_key="c", state=state)


def _add(store: Store, *specs: WorkSpec) -> None:
    with store.transaction() as txn:
        for spec in specs:
            txn.add(spec)


def _stored_index(path: str, state: WorkState) -> dict[str, float]:
    fresh = Store(path)
    try:
        return dict(fresh.state_index(state))
    finally:
        fresh.close()


def test_a_commit_by_another_process_rereads_only_the_shards_it_changed(tmp_path, monkeypatch):
    path = str(tmp_path / "s")
    reader, writer = Store(path), Store(path)
    try:
        _add(writer, *[_spec(first=c) for c in SHARDS])
        before = reader.state_index(WorkState.ENQUEUED)
        assert len(before) == 16
        counting = CountingPickle()
        monkeypatch.setattr(shards, "pickle", counting)
        added = _spec(first="7")
        _add(writer, added)                          # the other "process": shard 7 only
        after = reader.state_index(WorkState.ENQUEUED)
        assert counting.loads_calls == 1
        assert set(after) == set(before) | {added.id}
        assert len(before) == 16                     # the index handed out is never mutated
        assert reader.state_index(WorkState.RUNNING) == {}
    finally:
        reader.close()
        writer.close()


def test_the_memo_is_the_stored_index_through_own_and_other_commits(tmp_path):
    path = str(tmp_path / "s")
    mine, other = Store(path), Store(path)
    try:
        specs = [_spec() for _ in range(40)]
        _add(other, *specs[:20])
        mine.state_index(WorkState.ENQUEUED)
        mine.state_index(WorkState.RUNNING)
        for step, spec in enumerate(specs[20:]):
            _add(mine if step % 3 else other, spec)
            if step % 4 == 0:  # one of ours moves a work to RUNNING
                with mine.transaction() as txn:
                    moved = txn.get(specs[step].id)
                    moved.state = WorkState.RUNNING
                    txn.put(moved)
            for state in (WorkState.ENQUEUED, WorkState.RUNNING):
                assert mine.state_index(state) == _stored_index(path, state)
    finally:
        mine.close()
        other.close()
