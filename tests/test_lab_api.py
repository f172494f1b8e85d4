"""The Work panel's REST API (``/nbwork/api/``) against a real JupyterLab server process,
a real store and a real scheduler; and the server extension's push over the event bus."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nbwork import OneTimeWorkRequest, WorkManager, WorkState
from nbwork._lock import holder_pid
from tests import helpers
from tests.conftest import stop_scheduler, wait_until
from tests.helpers import scheduler_processes
from tests.test_browser import ROOT, running_lab

pytestmark = pytest.mark.slow

TOKEN = "nbwork-test-token"
XSS_TAG = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, default store path) of a JupyterLab with a token, for this module."""
    base = tmp_path_factory.mktemp("api")
    root, store = base / "root", base / "store"
    root.mkdir()
    other = base / "other-store"
    with running_lab(base, root, store, token=TOKEN,
                     args=(f"--NbworkExtension.stores={other}",)) as url:
        yield url, str(store)


def call(url: str, path: str, body: dict | None = None, token: str | None = TOKEN,
         raw: bytes | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of ``/nbwork/api/PATH`` (a POST when there is a body)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"{url}/nbwork/api/{path}", data=data,
                                     method="POST" if data is not None else "GET")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def ok(url: str, path: str, body: dict | None = None) -> dict:
    status, answer = call(url, path, body)
    assert status == 200, answer
    return answer


def refused(url: str, path: str, status: int, body: dict | None = None, **kwargs) -> str:
    got, answer = call(url, path, body, **kwargs)
    assert got == status, answer
    assert set(answer) == {"error"} and "\n" not in answer["error"], answer
    return answer["error"]


@pytest.fixture
def store(server, tmp_path):
    """A fresh store of this test (named in each request), its scheduler stopped after."""
    path = tmp_path / "store"
    yield str(path)
    stop_scheduler(str(path))


def test_a_page_of_rows_with_counts_filters_and_paging(server, store, tmp_path):
    url, _ = server
    wm = WorkManager(store)
    gate = str(tmp_path / "gate")
    running = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": gate},
                                 tags=["slow-one"])
    failing = OneTimeWorkRequest(helpers.boom, tags=[XSS_TAG])
    done = [OneTimeWorkRequest(helpers.emit, input_data={"key": "k", "value": i},
                               tags=["batch"]) for i in range(5)]
    wm.enqueue([running, failing, *done])
    wm.wait([failing.id, *[r.id for r in done]], timeout=60)
    wait_until(lambda: wm.get_work_info_by_id(running.id).state is WorkState.RUNNING)

    page = ok(url, f"works?store={store}")
    assert page["total"] == 7 and len(page["works"]) == 7
    assert page["counts"]["SUCCEEDED"] == 5 and page["counts"]["FAILED"] == 1
    assert page["counts"]["RUNNING"] == 1
    row = {w["id"]: w for w in page["works"]}[failing.id]
    assert row["state"] == "FAILED" and row["worker"] == "boom"
    assert row["error_line"] == "ValueError: boom-4711: the worker raised on purpose"
    assert row["tags"] == [XSS_TAG]  # stored and served as text: the page shows it as text
    assert XSS_TAG in page["tags"]

    by_state = ok(url, f"works?store={store}&state=SUCCEEDED")
    assert by_state["total"] == 5 and {w["state"] for w in by_state["works"]} == {"SUCCEEDED"}
    assert by_state["counts"]["FAILED"] == 1  # counts ignore the state filter
    by_tag = ok(url, f"works?store={store}&tag=slow-one")
    assert [w["id"] for w in by_tag["works"]] == [running.id]
    by_text = ok(url, f"works?store={store}&q=BOOM-4711")
    assert [w["id"] for w in by_text["works"]] == [failing.id]
    first = ok(url, f"works?store={store}&limit=3")
    second = ok(url, f"works?store={store}&limit=3&offset=3")
    assert len(first["works"]) == 3 and len(second["works"]) == 3
    assert not {w["id"] for w in first["works"]} & {w["id"] for w in second["works"]}
    helpers.touch(gate)
    wm.wait(running.id, timeout=30)


def test_details_with_log_chain_and_why_a_work_waits(server, store, tmp_path):
    url, _ = server
    wm = WorkManager(store)
    gate = str(tmp_path / "gate")
    talk = OneTimeWorkRequest(helpers.chatty)
    first = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": gate})
    second = OneTimeWorkRequest(helpers.echo, input_data={"x": 1})
    wm.enqueue(talk)
    wm.begin_with(first).then(second).enqueue()
    wm.wait(talk.id, timeout=60)

    log = ok(url, f"works/{talk.id}/log?store={store}")
    assert "to-stdout: hello from the worker" in log["text"] and not log["truncated"]
    tail = ok(url, f"works/{talk.id}/log?store={store}&tail=10")
    assert tail["truncated"] and len(tail["text"].encode()) <= 10
    blocked = ok(url, f"works/{second.id}?store={store}")
    assert blocked["state"] == "BLOCKED"
    assert "prerequisite" in blocked["why_waiting"] and first.id[:8] in blocked["why_waiting"]
    assert {n["id"] for n in blocked["chain"]} == {first.id, second.id}
    assert blocked["input"] == {"x": 1}
    helpers.touch(gate)
    wm.wait(second.id, timeout=30)
    done = ok(url, f"works/{second.id}?store={store}")
    assert done["state"] == "SUCCEEDED" and done["why_waiting"] == ""


def test_an_image_named_by_an_output_is_served_and_nothing_else(server, store):
    url, _ = server
    wm = WorkManager(store)
    image = str(ROOT / "nbwork" / "samples" / "rings.png")
    request = OneTimeWorkRequest(helpers.echo, input_data={"image_uri": image,
                                                           "note": "/etc/passwd"})
    wm.enqueue(request)
    wm.wait(request.id, timeout=60)
    info = ok(url, f"works/{request.id}?store={store}")
    assert {(i["where"], i["key"]) for i in info["images"]} == {("input", "image_uri"),
                                                                 ("output", "image_uri")}
    fetch = urllib.request.Request(
        f"{url}/nbwork/api/works/{request.id}/image?store={store}&where=output&key=image_uri",
        headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(fetch, timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert response.read() == Path(image).read_bytes()
    assert "names no image" in refused(
        url, f"works/{request.id}/image?store={store}&where=output&key=note", 404)


def test_the_error_of_a_failed_work_starts_with_its_exception_line(server, store):
    url, _ = server
    wm = WorkManager(store)
    failing = OneTimeWorkRequest(helpers.boom)
    wm.enqueue(failing)
    wm.wait(failing.id, timeout=60)
    info = ok(url, f"works/{failing.id}?store={store}")
    assert info["exception"] == "ValueError: boom-4711: the worker raised on purpose"
    assert info["error"].startswith("Traceback")


def test_bad_input_gets_a_4xx_with_a_one_line_error_and_writes_nothing(server, store,
                                                                       tmp_path):
    url, _ = server
    wm = WorkManager(store)
    unknown = "00000000-0000-0000-0000-000000000000"
    assert "no work with id" in refused(url, f"works/{unknown}?store={store}", 404)
    assert "unknown state" in refused(url, f"works?store={store}&state=SLEEPING", 400)
    refused(url, f"works?store={store}&limit=0", 400)
    refused(url, f"works?store={store}&limit=many", 400)
    refused(url, f"works/{unknown}/log?store={store}&tail=-1", 400)
    not_a_store = tmp_path / "plain-folder"
    not_a_store.mkdir()
    assert "not an nbwork store" in refused(url, f"works?store={not_a_store}", 400)
    assert os.listdir(not_a_store) == []  # nothing was created there
    missing = tmp_path / "missing"
    refused(url, f"works?store={missing}", 404)
    assert not missing.exists()
    refused(url, "works?store=relative/path", 400)
    refused(url, "cancel", 400, {"store": store, "id": unknown, "tag": "both"})
    refused(url, "cancel", 400, raw=b"{not json")
    refused(url, "cancel", 404, {"store": store, "id": unknown})
    refused(url, "cancel", 400, {"store": store, "filter": {"state": ["NOPE"]}})
    os.chmod(store, 0o777)
    try:
        assert "can be written by other users" in refused(url, f"works?store={store}", 403)
    finally:
        os.chmod(store, 0o700)
    assert wm.get_work_infos() == []


def test_every_handler_needs_authentication(server):
    url, _ = server
    for path in ("stores", "works", "notices"):
        status, _ = call(url, path, token=None)
        assert status == 403, path
    status, _ = call(url, "prune", {}, token=None)
    assert status == 403


def test_reading_starts_no_scheduler(server, store):
    url, _ = server
    wm = WorkManager(store)
    waiting = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    wm.enqueue(waiting)
    # The enqueue spawned a supervisor that starts the scheduler: one not yet running its
    # own program cannot be found to be stopped, so wait for the scheduler to hold the store.
    wait_until(lambda: holder_pid(store) is not None, what="the scheduler to start")
    stop_scheduler(store)
    wait_until(lambda: not scheduler_processes(store, ("nbwork._scheduler_main",
                                                       "nbwork._supervisor")),
               what="the scheduler and its supervisor to stop")
    ok(url, f"works?store={store}")
    ok(url, f"works/{waiting.id}?store={store}")
    ok(url, f"works/{waiting.id}/log?store={store}")
    ok(url, f"notices?store={store}")
    # A scheduler starts through its supervisor: look for both.
    assert holder_pid(store) is None
    assert not scheduler_processes(store, ("nbwork._scheduler_main", "nbwork._supervisor"))


def test_cancel_by_id_tag_unique_name_and_filter_then_prune(server, store, tmp_path):
    url, _ = server
    wm = WorkManager(store)
    gate = str(tmp_path / "never")
    by_id, by_tag, by_filter = (
        OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": gate}, tags=[t])
        for t in ("one", "two", "three"))
    unique = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": gate})
    # Alone first: works due at the same moment start in no promised order, and with two
    # slots (os.cpu_count() here) the others may take both of them before it.
    wm.enqueue(by_id)
    wait_until(lambda: wm.get_work_info_by_id(by_id.id).state is WorkState.RUNNING,
               what="the first work to run")
    wm.enqueue([by_tag, by_filter])
    wm.enqueue_unique_work("the-unique", "KEEP", unique)

    answer = ok(url, "cancel", {"store": store, "id": by_id.id})
    assert answer["cancelled_running"] == [by_id.id]
    ok(url, "cancel", {"store": store, "tag": "two"})
    ok(url, "cancel", {"store": store, "unique": "the-unique"})
    ok(url, "cancel", {"store": store, "filter": {"tag": ["three"]}})
    infos = wm.wait([by_id.id, by_tag.id, by_filter.id, unique.id], timeout=60)
    assert [i.state for i in infos] == [WorkState.CANCELLED] * 4
    assert ok(url, "prune", {"store": store})["pruned"] == 4
    assert wm.get_work_infos() == []


def test_notices_tell_when_a_chain_or_a_work_ends(server, store):
    url, _ = server
    wm = WorkManager(store)
    ok(url, f"works?store={store}")  # the view starts following the store here
    first, second = OneTimeWorkRequest(helpers.echo), OneTimeWorkRequest(helpers.echo)
    failing = OneTimeWorkRequest(helpers.boom)
    wm.begin_with(first).then(second).enqueue()
    wm.enqueue(failing)
    wm.wait([second.id, failing.id], timeout=60)

    def notices():
        ok(url, f"works?store={store}")
        return ok(url, f"notices?store={store}&after=0")["notices"]

    found = wait_until(lambda: len(notices()) == 2 and notices(), what="two notices")
    by_state = {n["state"]: n for n in found}
    assert by_state["SUCCEEDED"]["size"] == 2 and by_state["SUCCEEDED"]["id"] == second.id
    assert by_state["FAILED"]["id"] == failing.id
    assert by_state["FAILED"]["error_line"].startswith("ValueError: boom-4711")


def test_changes_are_pushed_on_the_event_bus(server, store):
    url, _ = server
    wm = WorkManager(store)
    ok(url, f"works?store={store}")
    request = OneTimeWorkRequest(helpers.echo)

    async def listen() -> tuple[dict, int]:
        from tornado.websocket import websocket_connect

        ws_url = url.replace("http", "ws") + f"/api/events/subscribe?token={TOKEN}"
        connection = await websocket_connect(ws_url)
        try:
            await asyncio.to_thread(wm.enqueue, request)
            await asyncio.to_thread(wm.wait, request.id, 60)
            # A page's request sees the change first (most likely before the server's
            # follower does): the change must still be pushed to every page.
            seen = (await asyncio.to_thread(ok, url, f"works?store={store}"))["counter"]
            while True:
                message = json.loads(await asyncio.wait_for(connection.read_message(), 30))
                if message.get("schema_id", "").endswith("/work-changed") and \
                        message["store"] == str(Path(store)) and message["counter"] >= seen:
                    return message, seen
        finally:
            connection.close()

    event, seen = asyncio.run(listen())
    assert event["counter"] >= seen and set(event) >= {"store", "counter", "notice_seq"}


def test_the_store_list_offers_the_default_and_configured_stores(server):
    url, default = server
    answer = ok(url, "stores")
    assert answer["default"] == default
    assert answer["stores"] == [
        {"path": default, "default": True, "exists": False},
        {"path": os.path.join(os.path.dirname(default), "other-store"), "default": False,
         "exists": False}]
