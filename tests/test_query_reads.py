"""Queries read many records at once and decode each stored version of a work only once."""

from __future__ import annotations

import os
import time

from nbwork import WorkManager, WorkQuery, WorkState, _ops
from nbwork import _spec as spec_module
from nbwork._code import serialize_worker
from nbwork._records import spec_of_request as _spec_of
from nbwork._store import Store
from nbwork.request import OneTimeWorkRequest
from tests import helpers


def _fill(path: str, count: int) -> list[str]:
    """``count`` SUCCEEDED works, written as the client and the scheduler would, no process."""
    store = Store(path)
    works = []
    for i in range(count):
        request = OneTimeWorkRequest(helpers.add, tags=[f"t{i % 3}"])
        code_key, payload = serialize_worker(request.worker, request.worker_name)
        works.append(_ops.NewWork(_spec_of(request, code_key, (), None), payload))
    _ops.enqueue(store, works, [], time.time())
    with store.transaction() as txn:
        for work in works:
            spec = txn.get(work.spec.id)
            spec.state = WorkState.SUCCEEDED
            txn.put(spec)
    store.close()
    return [w.spec.id for w in works]


def _count_decodes(monkeypatch) -> list[int]:
    calls = [0]
    original = spec_module.WorkSpec.from_record.__func__

    def counting(cls, values):
        calls[0] += 1
        return original(cls, values)

    monkeypatch.setattr(spec_module.WorkSpec, "from_record", classmethod(counting))
    return calls


def test_a_repeated_query_decodes_only_the_records_that_changed(store_path, monkeypatch):
    ids = _fill(store_path, 1200)   # more than one SELECT's worth of ids
    wm = WorkManager(store_path, resume=False)
    decodes = _count_decodes(monkeypatch)
    query = WorkQuery(states=[WorkState.SUCCEEDED])
    first = wm.get_work_infos(query)
    assert [i.id for i in first] == ids
    assert first == [wm.get_work_info_by_id(i) for i in ids]   # the same as reads by id
    decodes[0] = 0
    again = wm.get_work_infos(query)
    assert again == first and decodes[0] == 0
    # A change to one work (by another client) is seen, and only that record is decoded.
    other = Store(store_path)
    with other.transaction() as txn:
        spec = txn.get(ids[7])
        spec.state = WorkState.FAILED
        spec.error = "changed elsewhere"
        txn.put(spec)
    with other.transaction() as txn:
        txn.delete(ids[8])
    other.close()
    decodes[0] = 0
    now = wm.get_work_infos(WorkQuery(ids=ids))
    assert decodes[0] == 1
    assert len(now) == len(ids) - 1 and ids[8] not in {i.id for i in now}
    changed = next(i for i in now if i.id == ids[7])
    assert changed.state is WorkState.FAILED and changed.error == "changed elsewhere"
    assert wm.get_work_infos(WorkQuery(tags=["t1"])) == [
        i for i in now if "t1" in i.tags]


def test_a_change_that_keeps_a_record_s_length_is_seen(store_path):
    """The memo tells versions apart by when they were written and their length, without
    reading them: a record rewritten to exactly as many bytes is read again all the same."""
    ids = _fill(store_path, 40)
    wm = WorkManager(store_path, resume=False)
    assert [i.output_data for i in wm.get_work_infos(WorkQuery(ids=ids))] == [{}] * 40
    other = Store(store_path)
    for value in ("a", "b"):
        with other.transaction() as txn:
            spec = txn.get(ids[3])
            spec.output = {"v": value}  # the same length both times
            txn.put(spec)
        [info] = [i for i in wm.get_work_infos(WorkQuery(ids=ids)) if i.id == ids[3]]
        assert info.output_data == {"v": value}
    other.close()


def test_a_new_manager_of_the_same_store_starts_from_what_another_decoded(store_path,
                                                                          monkeypatch):
    ids = _fill(store_path, 30)
    first = WorkManager(store_path, resume=False)
    query = WorkQuery(states=[WorkState.SUCCEEDED])
    infos = first.get_work_infos(query)
    decodes = _count_decodes(monkeypatch)
    second = WorkManager(store_path, resume=False)
    assert second.get_work_infos(query) == infos and decodes[0] == 0
    # What changed since is still seen by both, decoded once for the two of them.
    other = Store(store_path)
    with other.transaction() as txn:
        spec = txn.get(ids[3])
        spec.error = "changed elsewhere"
        txn.put(spec)
    other.close()
    decodes[0] = 0
    seen = [next(i for i in m.get_work_infos(query) if i.id == ids[3])
            for m in (second, first)]
    assert [i.error for i in seen] == ["changed elsewhere"] * 2 and decodes[0] == 1


def test_the_shared_read_memo_lives_as_long_as_a_manager_of_its_store(store_path):
    import gc

    from nbwork._query_memo import memo_of

    _fill(store_path, 5)
    wm = WorkManager(store_path, resume=False)
    wm.get_work_infos()
    created = Store(store_path).get_value("meta")["created"]
    memo = memo_of(wm.store_path, created)
    assert len(memo.records) == 5 and memo is wm._memo
    del wm, memo
    gc.collect()
    assert memo_of(os.path.abspath(store_path), created).records == {}


def test_a_query_asked_again_before_any_change_reads_no_record(store_path, monkeypatch):
    ids = _fill(store_path, 10)
    wm = WorkManager(store_path, resume=False)
    query = WorkQuery(tags=["t1"])
    infos = wm.get_work_infos(query)
    reads = []
    original = Store.read_many
    monkeypatch.setattr(Store, "read_many", lambda self, *a, **k: reads.append(1) or
                        original(self, *a, **k))
    again = wm.get_work_infos(query)
    assert again == infos and again is not infos and reads == []
    again.clear()  # the caller's list: the next result is whole
    assert WorkManager(store_path, resume=False).get_work_infos(query) == infos
    # Any commit moves the change counter: the next query reads the store again.
    other = Store(store_path)
    with other.transaction() as txn:
        txn.delete(ids[1])
    other.close()
    assert wm.get_work_infos(query) == [i for i in infos if i.id != ids[1]] and reads == [1]


def test_a_store_made_again_at_the_same_path_gets_no_result_kept_for_the_old_one(tmp_path):
    import shutil

    path = str(tmp_path / "store")
    _fill(path, 3)
    old = WorkManager(path, resume=False)
    assert len(old.get_work_infos()) == 3
    counter = old.change_counter()
    old._store.close()
    shutil.rmtree(path)
    ids = _fill(path, 2)
    other = Store(path)
    while other.change_counter() < counter:  # the same counter as the old store had
        other.set_device_state(None)
    other.close()
    assert WorkManager(path, resume=False).change_counter() == counter
    assert [i.id for i in WorkManager(path, resume=False).get_work_infos()] == ids


def test_the_kept_query_results_stay_within_the_memo_limit(store_path, monkeypatch):
    from nbwork import _query_memo

    _fill(store_path, 6)
    monkeypatch.setattr(_query_memo, "READ_MEMO_LIMIT", 4)
    wm = WorkManager(store_path, resume=False)
    assert len(wm.get_work_infos()) == 6 and wm._query_results == {}  # too big to keep
    infos = wm.get_work_infos(WorkQuery(tags=["t1"]))
    assert list(wm._query_results) == [WorkQuery(tags=["t1"])]  # small enough: kept...
    wm.get_work_infos()  # ...until the memo holds more records than its limit:
    wm.get_work_infos(WorkQuery(tags=["t2"]))  # the next query forgets them all first
    assert list(wm._query_results) == [WorkQuery(tags=["t2"])]
    assert wm.get_work_infos(WorkQuery(tags=["t1"])) == infos


def _change(path: str, id: str, **fields) -> None:
    """Change one work's record as another client would: one commit."""
    other = Store(path)
    try:
        with other.transaction() as txn:
            spec = txn.get(id)
            for name, value in fields.items():
                setattr(spec, name, value)
            txn.put(spec)
    finally:
        other.close()


def _fresh(path: str, query: WorkQuery) -> list:
    """What a manager with nothing kept returns (no memo of this process shared)."""
    from nbwork import _query_memo

    memo = _query_memo.ReadMemo()
    wm = WorkManager(path, resume=False)
    wm._memo, wm._read_memo = memo, memo.records
    return wm.get_work_infos(query)


def _spy_patched(monkeypatch) -> list:
    """What each ``ReadMemo.patched`` call returned (None: evaluated in full)."""
    from nbwork import _query_memo

    returned: list = []
    original = _query_memo.ReadMemo.patched

    def spy(self, *args):
        returned.append(original(self, *args))
        return returned[-1]

    monkeypatch.setattr(_query_memo.ReadMemo, "patched", spy)
    return returned


def test_a_refresh_after_one_change_keeps_every_other_info_and_remakes_that_one(
        store_path, monkeypatch):
    """A live table's refresh after one work changed: the last result, with the changed
    work's info made again in its place (not a new check, sort and lookup of every info)."""
    ids = _fill(store_path, 300)
    wm = WorkManager(store_path, resume=False)
    query = WorkQuery(states=[WorkState.SUCCEEDED])
    before = wm.get_work_infos(query)
    _change(store_path, ids[10], error="noted", progress={"p": 1})
    patched = _spy_patched(monkeypatch)
    after = wm.get_work_infos(query)
    assert patched[0] is not None
    assert after == _fresh(store_path, query)
    assert after[10].error == "noted" and after[10] is not before[10]
    assert all(a is b for i, (a, b) in enumerate(zip(after, before, strict=True)) if i != 10)


def test_a_refresh_sees_works_that_leave_join_or_stop_matching_the_query(store_path):
    ids = _fill(store_path, 300)
    _change(store_path, ids[5], state=WorkState.FAILED)
    wm = WorkManager(store_path, resume=False)
    by_state = WorkQuery(states=[WorkState.SUCCEEDED])
    by_tag = WorkQuery(tags=["t1"], states=[WorkState.SUCCEEDED])
    for query in (by_state, by_tag):
        assert len(wm.get_work_infos(query)) in (299, 100)
    # As many works in the state as before, but one left and another joined.
    _change(store_path, ids[2], state=WorkState.CANCELLED)
    _change(store_path, ids[5], state=WorkState.SUCCEEDED, error="back")
    for query in (by_state, by_tag):
        assert wm.get_work_infos(query) == _fresh(store_path, query)
    assert len(wm.get_work_infos(by_state)) == 299
    # The tag query reads the same works (by its tag), one of them no longer SUCCEEDED.
    _change(store_path, ids[4], state=WorkState.FAILED)
    for query in (by_state, by_tag):
        assert wm.get_work_infos(query) == _fresh(store_path, query)
    assert ids[4] not in {i.id for i in wm.get_work_infos(by_tag)}


def test_a_refresh_after_many_changes_is_made_in_full_and_right(store_path, monkeypatch):
    ids = _fill(store_path, 100)
    wm = WorkManager(store_path, resume=False)
    query = WorkQuery(states=[WorkState.SUCCEEDED])
    wm.get_work_infos(query)
    other = Store(store_path)
    with other.transaction() as txn:
        for id in ids[:20]:  # 20 % of them: past PATCH_SHARE
            spec = txn.get(id)
            spec.error = "many"
            txn.put(spec)
    other.close()
    patched = _spy_patched(monkeypatch)
    assert wm.get_work_infos(query) == _fresh(store_path, query)
    assert patched[0] is None  # evaluated in full
    assert [i.error for i in wm.get_work_infos(query)][:21] == ["many"] * 20 + [None]
