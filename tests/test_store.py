"""The store directory: private creation, refusing shared directories, pruning."""

from __future__ import annotations

import os
import stat

import pytest

from nbwork import InvalidRequestError, OneTimeWorkRequest, StoreError, WorkManager, WorkState
from nbwork._store import Store
from tests import helpers


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_store_directory_is_created_private(tmp_path):
    path = tmp_path / "a" / "b" / "store"
    Store(str(path))
    assert _mode(path) == 0o700
    assert _mode(path / "logs") == 0o700


def test_the_store_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        Store(str(tmp_path / "store"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "store") == 0o700


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o720])
def test_a_store_others_can_write_is_refused_with_the_chmod_to_run(tmp_path, mode):
    path = tmp_path / "shared"
    path.mkdir()
    os.chmod(path, mode)
    with pytest.raises(StoreError) as caught:
        WorkManager(str(path))
    message = str(caught.value)
    assert f"chmod 700 {path}" in message
    assert oct(mode)[2:] in message
    assert os.listdir(path) == []            # nothing was written into it
    os.chmod(path, 0o700)
    WorkManager(str(path))                    # fixed as told: accepted


def test_a_store_readable_by_others_but_not_writable_is_accepted(tmp_path):
    path = tmp_path / "readable"
    path.mkdir()
    os.chmod(path, 0o755)
    WorkManager(str(path))


def test_a_file_is_not_a_store(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(StoreError, match="not a directory"):
        WorkManager(str(path))


@pytest.mark.slow
def test_prune_removes_finished_work_without_unfinished_dependents_and_their_logs(wm, tmp_path):
    gate = tmp_path / "gate"
    done = OneTimeWorkRequest(helpers.chatty)
    failed = OneTimeWorkRequest(helpers.boom)
    cancelled = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    parent = OneTimeWorkRequest(helpers.emit, input_data={"key": "k", "value": 1})
    running_child = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate)})
    queued = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    wm.enqueue([done, failed, cancelled, queued])
    wm.begin_with(parent).then(running_child).enqueue()
    wm.cancel_work_by_id(cancelled.id)
    wm.wait([done, failed, parent], timeout=30)
    done_log = wm.get_work_info_by_id(done.id).log_path
    assert os.path.exists(done_log)

    pruned = wm.prune_work()
    assert sorted(pruned) == sorted([done.id, failed.id, cancelled.id])
    for request in (done, failed, cancelled):
        assert wm.get_work_info_by_id(request.id) is None
        assert wm.read_log(request.id) == ""
    assert not os.path.exists(done_log)
    # A finished prerequisite of unfinished work stays (its output is still needed).
    assert wm.get_work_info_by_id(parent.id).state is WorkState.SUCCEEDED
    assert wm.get_work_info_by_id(queued.id).state is WorkState.ENQUEUED
    assert {i.id for i in wm.get_work_infos()} == {parent.id, running_child.id, queued.id}

    helpers.touch(gate)
    assert wm.wait(running_child, timeout=30).state is WorkState.SUCCEEDED
    wm.cancel_work_by_id(queued.id)
    assert sorted(wm.prune_work()) == sorted([parent.id, running_child.id, queued.id])
    assert wm.get_work_infos() == []
    assert wm.prune_work() == []


@pytest.mark.slow
def test_prune_drops_the_worker_code_nobody_uses_any_more(wm):
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    wm.enqueue(request)
    wm.wait(request, timeout=30)
    code_key = wm._store.get(request.id).code_key
    assert wm._store.get_code(code_key) is not None
    wm.prune_work()
    assert wm._store.get_code(code_key) is None


@pytest.mark.slow
def test_pruned_work_is_gone_from_every_index(wm):
    request = OneTimeWorkRequest(helpers.echo, tags=["t"])
    wm.enqueue_unique_work("name", "REPLACE", [request])
    wm.wait(request, timeout=30)
    wm.prune_work()
    assert wm.get_work_infos_by_tag("t") == []
    assert wm.get_work_infos_for_unique_work("name") == []
    assert wm.get_work_infos() == []


@pytest.mark.slow
def test_a_second_work_manager_sees_the_same_store(wm):
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    wm.enqueue(request)
    other = WorkManager(wm.store_path)
    assert other.wait(request.id, timeout=30).output_data == {"sum": 3}
    assert other.store_path == wm.store_path


def test_a_batch_holding_one_work_already_enqueued_is_refused_whole(client, monkeypatch):
    """The ids of a batch are checked in one read per few hundred, not one each; a batch
    that repeats one enqueued request still writes nothing."""
    from nbwork._store import codec

    first = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    client.enqueue(first)
    fresh = [OneTimeWorkRequest(helpers.add, input_data={"a": i, "b": 0}) for i in range(20)]
    single_reads = []
    real = codec.read_spec
    monkeypatch.setattr("nbwork._store.transaction.read_spec",
                        lambda cache, id, unreadable: single_reads.append(id) or real(
                            cache, id, unreadable))
    with pytest.raises(InvalidRequestError, match=f"request {first.id} .* was already "
                       "enqueued; a request can be enqueued only once"):
        client.enqueue([*fresh[:10], first, *fresh[10:]])
    assert all(client.get_work_info_by_id(r.id) is None for r in fresh)
    client.enqueue(fresh)
    assert {client.get_work_info_by_id(r.id).state for r in fresh} == {WorkState.ENQUEUED}
    assert not set(single_reads) & {r.id for r in fresh}
