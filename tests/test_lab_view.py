"""The server side of the Work panel without a server: the store view's cache, filters,
rows, 'why it waits', and which store paths it refuses."""

from __future__ import annotations

import os

import pytest

from nbwork import Data, OneTimeWorkRequest, WorkInfo, WorkManager, WorkQuery, WorkState
from nbwork.jupyter.handlers import ApiError, _filter_from
from nbwork.jupyter.stores import StoreRefused, check_store
from nbwork.jupyter.view import Filter, StoreView, exception_line, row
from tests import helpers

TRACEBACK = """Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: the image is empty

"""


def info(**fields) -> WorkInfo:
    return WorkInfo(**{"id": "1234abcd-0000", "state": WorkState.ENQUEUED,
                       "worker_name": "pkg.BlurWorker", **fields})


def test_the_exception_line_is_the_last_line_of_a_traceback():
    assert exception_line(TRACEBACK) == "ValueError: the image is empty"
    assert exception_line(None) == "" and exception_line("  \n") == ""


def test_a_row_is_json_with_text_only_values():
    r = row(info(state=WorkState.RUNNING, progress=Data({"percent": 12.5, "blob": b"abc"}),
                 tags=frozenset({"<b>x</b>"}), error=TRACEBACK))
    assert r["worker"] == "BlurWorker" and r["percent"] == 12.5
    assert r["progress"]["blob"] == "<3 bytes>" and r["tags"] == ["<b>x</b>"]
    assert r["error_line"] == "ValueError: the image is empty"
    assert row(info(state=WorkState.RUNNING, progress=Data({"percent": True})))["percent"] \
        is None


def test_a_filter_matches_every_field_it_has():
    work = info(tags=frozenset({"blur"}), unique_work_name="IMG", error=TRACEBACK)
    assert Filter().matches(work)
    assert Filter(text="IMAGE IS EMPTY").matches(work)
    assert Filter(text="1234ab", tags=("blur",)).matches(work)
    assert not Filter(tags=("other",)).matches(work)
    assert not Filter(unique_work_names=("other",)).matches(work)
    assert not Filter(states=(WorkState.RUNNING,)).matches(work)
    assert Filter(states=(WorkState.RUNNING,)).matches(work, ignore_state=True)


def test_a_bad_filter_is_a_400_that_says_what_to_use():
    with pytest.raises(ApiError, match="unknown state 'SLEEPING'") as error:
        _filter_from({"state": ["RUNNING", "SLEEPING"]})
    assert error.value.status == 400
    with pytest.raises(ApiError, match="tag must be a string or a list of strings"):
        _filter_from({"tag": [1]})
    assert _filter_from({"state": "running,failed", "q": " x "}) == Filter(
        states=(WorkState.RUNNING, WorkState.FAILED), text="x")


def test_only_an_own_private_store_is_opened(tmp_path):
    with pytest.raises(StoreRefused, match="does not exist") as error:
        check_store(str(tmp_path / "missing"))
    assert error.value.status == 404
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreRefused, match="not a folder"):
        check_store(str(tmp_path / "file"))
    with pytest.raises(StoreRefused, match="not an nbwork store"):
        check_store(str(tmp_path))
    (tmp_path / "db").mkdir()  # a database folder alone does not make a store
    with pytest.raises(StoreRefused, match="not an nbwork store") as error:
        check_store(str(tmp_path))
    assert error.value.status == 400
    store = tmp_path / "store"
    WorkManager(store)
    contents = sorted(os.listdir(store))
    check_store(str(store))
    for unsafe in (store / "db", store):  # the store's own rule, in the store's own words
        unsafe.chmod(0o777)
        with pytest.raises(StoreRefused, match="can be written by other users") as error:
            check_store(str(store))
        assert error.value.status == 403
        unsafe.chmod(0o700)
    assert sorted(os.listdir(store)) == contents


@pytest.mark.slow
def test_the_cache_follows_new_finished_and_pruned_works(wm: WorkManager, store_path):
    view = StoreView(store_path)
    assert view.refresh() and not view.refresh()  # nothing changed: nothing read
    first = OneTimeWorkRequest(helpers.echo)
    wm.enqueue(first)
    wm.wait(first.id, timeout=60)
    assert view.refresh()
    # Works that start and finish between two looks still come in, and are noticed.
    quick = [OneTimeWorkRequest(helpers.echo) for _ in range(3)]
    wm.enqueue(quick)
    wm.wait([r.id for r in quick], timeout=60)
    assert view.refresh()
    page = view.page(Filter(), 0, 10)
    assert {w["id"] for w in page["works"]} == {first.id, *[r.id for r in quick]}
    assert page["counts"]["SUCCEEDED"] == 4
    assert {n["id"] for n in view.notices(0)} >= {r.id for r in quick}
    wm.prune_work()
    view.refresh()
    assert view.page(Filter(), 0, 10)["total"] == 0
    assert set(wm.get_work_ids()) == set()
    counter = wm.change_counter()
    wm.enqueue(OneTimeWorkRequest(helpers.echo, initial_delay=3600))
    assert wm.change_counter() != counter
    assert len(wm.get_work_ids(WorkQuery(states=[WorkState.ENQUEUED]))) == 1
