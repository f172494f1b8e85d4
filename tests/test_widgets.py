"""The notebook widgets without a browser: traits, ``_repr_*_``, button clicks, live updates.

Real stores and schedulers (the ``wm`` fixture); workers wait on gate files, tests wait for
conditions. Every widget a test makes is closed by the ``widgets`` fixture, which then
checks that no subscription is left behind.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta

import pytest
from IPython.core.formatters import DisplayFormatter
from IPython.lib.pretty import pretty

import nbwork
from nbwork import (
    Data,
    InvalidInputError,
    OneTimeWorkRequest,
    WorkInfo,
    WorkQuery,
    WorkState,
)
from nbwork.imaging import (
    IMAGE_MANIPULATION_WORK_NAME,
    BlurWorker,
    SaveImageToFileWorker,
    sample_images,
)
from nbwork.info import STATE_COLOURS
from nbwork.widgets import (
    HUB,
    BlurOMaticApp,
    ChainGraph,
    ImagePreview,
    WorkCard,
    WorkTable,
    chain_svg,
    pick_image,
)
from nbwork.widgets._html import GAP_X, GAP_Y, NODE_H, NODE_W, PAD
from nbwork.widgets._live import Hub, Subscription, as_query
from nbwork.widgets.preview import thumbnail_bytes
from tests.conftest import wait_until
from tests.helpers import Progressing, boom, chatty, echo, touch, wait_for_gate
from tests.kernels import kernel, run

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def widgets():
    """Collects the widgets of a test; closes them after it and checks nothing still
    observes the store."""
    made: list = []
    yield made
    for widget in made:
        widget.close()
    assert all(w.subscription is None for w in made)
    wait_until(lambda: not HUB.subscriptions, timeout=10, what="no live subscription left")


def badge_state(view) -> str:
    return next(s.value for s in WorkState if f">{s.value}<" in view.who.value)


def info(id: str = "0" * 32, state: WorkState = WorkState.SUCCEEDED, **kwargs) -> WorkInfo:
    return WorkInfo(id=id, state=state, worker_name="tests.helpers.echo", **kwargs)


# --- without widgets: HTML and text ---------------------------------------------------


def test_work_info_renders_as_html_and_text():
    failed = info("a" * 32, WorkState.FAILED, input_data=Data(x=1), tags=frozenset({"t"}),
                  error="Traceback (most recent call last):\nValueError: <bad> & worse")
    page = failed._repr_html_()
    assert STATE_COLOURS[WorkState.FAILED] in page and ">FAILED<" in page
    assert "aaaaaaaa" in page and "echo" in page and "x=1" in page
    assert "ValueError: &lt;bad&gt; &amp; worse" in page  # escaped, never raw HTML
    assert str(failed) == "echo aaaaaaaa FAILED error=ValueError: <bad> & worse"
    text = pretty([failed, info("b" * 32, WorkState.RUNNING, progress=Data(percent=5))])
    assert text == ("[<WorkInfo echo aaaaaaaa FAILED error=ValueError: <bad> & worse>,\n"
                    " <WorkInfo echo bbbbbbbb RUNNING progress={'percent': 5}>]")


def test_lists_of_work_infos_render_as_a_table_once_the_extension_is_loaded(wm):
    class Shell:
        def __init__(self):
            self.display_formatter = DisplayFormatter()
            self.magics = {}

        def register_magic_function(self, function, kind, name):
            self.magics[(kind, name)] = function

    shell = Shell()
    nbwork.load_ipython_extension(shell)
    infos = [info("a" * 32), info("b" * 32, WorkState.CANCELLED)]
    data, _ = shell.display_formatter.format(infos)
    assert data["text/html"].count("<tr>") == 3 and ">CANCELLED<" in data["text/html"]
    data, _ = shell.display_formatter.format([1, 2])
    assert "text/html" not in data  # other lists are left alone
    magic = shell.magics[("line", "nbwork")]
    table = magic(f"--tag blur --state RUNNING --store {wm.store_path}")
    try:
        assert isinstance(table, WorkTable)
        assert table.query == WorkQuery(tags=["blur"], states=[WorkState.RUNNING])
        assert table.wm.store_path == wm.store_path
    finally:
        table.close()
    with pytest.raises(ValueError, match="usage"):
        magic("--no-such-option")


def test_import_nbwork_imports_neither_ipython_nor_ipywidgets():
    code = "import sys, nbwork; print(sorted({'IPython', 'ipywidgets'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_continuation_renders_its_steps_then_their_states(wm):
    first, second = OneTimeWorkRequest(echo, input_data={"n": 1}), OneTimeWorkRequest(echo)
    chain = wm.begin_with(first).then(second)
    assert chain._repr_html_() == "<code>WorkContinuation([echo] -&gt; [echo])</code> " \
                                  "not enqueued yet"
    chain.enqueue()
    wm.wait(chain, timeout=30)
    page = chain._repr_html_()
    assert page.count(">SUCCEEDED<") == 2
    assert page.index(first.id[:8]) < page.index(second.id[:8])  # in chain order


# --- live updates -----------------------------------------------------------------------


@pytest.mark.slow
def test_table_rows_follow_state_changes(wm, widgets, tmp_path):
    gate = str(tmp_path / "gate")
    first = OneTimeWorkRequest(Progressing, input_data={"gate": gate}, tags=["live"])
    second = OneTimeWorkRequest(echo, tags=["live", "second"])
    wm.begin_with(first).then(second).enqueue()
    table = WorkTable(tags="live", wm=wm)
    widgets.append(table)
    assert list(table.rows) == [first.id, second.id]  # drawn at once, in chain order
    row, after = table.rows[first.id], table.rows[second.id]
    wait_until(lambda: badge_state(row) == "RUNNING" and row.bar.value == 50, timeout=30,
               what="the first row RUNNING at 50 %")
    assert badge_state(after) == "BLOCKED"
    assert row.cancel.layout.visibility == "visible" and not row.cancel.disabled
    assert ">50 %<" in row.facts.value and row.bar.bar_style == "info"
    assert ">second<" in after.facts.value and ">live<" in after.facts.value
    assert first.id[:8] in row.who.value and "Progressing" in row.who.value
    touch(gate)
    wait_until(lambda: [badge_state(v) for v in table.rows.values()] == ["SUCCEEDED"] * 2,
               timeout=30, what="both rows SUCCEEDED")
    assert row.bar.value == 100 and row.bar.bar_style == "success"
    assert row.cancel.layout.visibility == "hidden" and row.cancel.disabled
    assert ">SUCCEEDED<" in table.summary.value and "2 works" in table.summary.value
    # New work that matches the query gets a row of its own.
    third = OneTimeWorkRequest(echo, tags=["live"])
    wm.enqueue(third)
    wait_until(lambda: third.id in table.rows, timeout=30, what="a row for new work")
    assert table.wait(timeout=30)[-1].id == third.id
    assert badge_state(table.rows[third.id]) == "SUCCEEDED"
    bundle = table._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == table.model_id


@pytest.mark.slow
def test_a_table_shows_the_newest_max_rows(wm, widgets):
    requests = [OneTimeWorkRequest(echo, tags=["many"]) for _ in range(3)]
    for request in requests:  # one by one: three enqueue times
        wm.enqueue(request)
    table = WorkTable(tags="many", wm=wm, max_rows=2)
    widgets.append(table)
    assert list(table.rows) == [r.id for r in requests[1:]]
    assert table.footer.value == "<i>1 older work not shown</i>"
    assert "3 works" in table.summary.value
    empty = WorkTable(tags="nothing-has-this-tag", wm=wm)
    widgets.append(empty)
    assert not empty.rows and "no work matches" in empty.footer.value


@pytest.mark.slow
def test_cancel_button_cancels_the_work(wm, widgets, tmp_path):
    request = OneTimeWorkRequest(wait_for_gate, input_data={"gate": str(tmp_path / "never")})
    wm.enqueue(request)
    table = WorkTable(request, wm=wm)
    widgets.append(table)
    row = table.rows[request.id]
    wait_until(lambda: badge_state(row) == "RUNNING", timeout=30, what="RUNNING")
    row.cancel.click()
    assert wm.wait(request.id, timeout=30).state is WorkState.CANCELLED
    wait_until(lambda: badge_state(row) == "CANCELLED", timeout=30, what="the row CANCELLED")
    assert row.cancel.layout.visibility == "hidden" and row.bar.bar_style == "warning"


@pytest.mark.slow
def test_a_row_expands_to_input_output_error_and_log(wm, widgets):
    failing, talking = OneTimeWorkRequest(boom), OneTimeWorkRequest(chatty)
    wm.enqueue([failing, talking])
    table = WorkTable([failing, talking], wm=wm)
    widgets.append(table)
    table.wait(timeout=30)
    bad, good = table.rows[failing.id], table.rows[talking.id]
    assert bad.details.layout.display == "none"
    bad.expand.value = True
    assert bad.details.layout.display == "" and bad.expand.description == "▾"
    assert "boom-4711: the worker raised on purpose" in bad.details.value
    assert "Traceback" in bad.details.value and failing.id in bad.details.value
    good.expand.value = True
    assert "to-stdout: hello from the worker" in good.details.value
    assert "<code>said</code> = 2" in good.details.value
    good.expand.value = False
    assert good.details.layout.display == "none"


@pytest.mark.slow
def test_work_card_shows_one_work(wm, widgets, tmp_path):
    gate = str(tmp_path / "gate")
    request = OneTimeWorkRequest(Progressing, input_data={"gate": gate}, tags=["card"])
    wm.enqueue(request)
    card = WorkCard(request, wm=wm)
    widgets.append(card)
    wait_until(lambda: card.view and badge_state(card.view) == "RUNNING", timeout=30,
               what="the card RUNNING")
    assert request.id in card.message.value and "Progressing" in card.message.value
    assert card.view.details.layout.display == ""  # a card always shows its details
    touch(gate)
    assert card.wait(timeout=30)[0].state is WorkState.SUCCEEDED
    assert badge_state(card.view) == "SUCCEEDED" and "done" in card.view.details.value
    missing = WorkCard("no-such-id", wm=wm)
    widgets.append(missing)
    assert "no work with id no-such-id" in missing.message.value
    with pytest.raises(ValueError, match="one work"):
        WorkCard(WorkQuery(tags=["card"]), wm=wm)


@pytest.mark.slow
def test_one_redraw_thread_and_one_watcher_for_many_widgets(wm, widgets):
    request = OneTimeWorkRequest(echo)
    wm.enqueue(request)
    for _ in range(4):
        widgets.extend([WorkTable(request, wm=wm), WorkCard(request, wm=wm),
                        ImagePreview(request, wm=wm), ChainGraph(request, wm=wm)])

    def ours() -> list[str]:
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("nbwork-"))

    wait_until(lambda: ours() == ["nbwork-watcher", "nbwork-widgets"], timeout=10,
               what="one watcher thread and one redraw thread for 16 widgets")
    assert len(HUB.subscriptions) == 16


@pytest.mark.slow
def test_closing_widgets_cancels_their_observers(wm):
    request = OneTimeWorkRequest(echo)
    wm.enqueue(request)
    made = [WorkTable(request, wm=wm), WorkCard(request, wm=wm), ImagePreview(request, wm=wm),
            ChainGraph(request, wm=wm), BlurOMaticApp(wm)]
    subscriptions = [w.subscription for w in made]
    subscriptions += [made[-1].preview.subscription, made[-1].table.subscription]
    assert all(s.handle.active for s in subscriptions)
    for widget in made:
        widget.close()
    assert not any(s.handle.active for s in subscriptions)
    assert all(w.subscription is None for w in made) and not HUB.subscriptions
    assert made[0].comm is None and made[-1].go_button.comm is None  # closed, children too
    wait_until(lambda: HUB.thread is None, timeout=10, what="the redraw thread to end")


class FakeManager:
    """Just ``observe``: the test calls the callback itself."""

    def __init__(self):
        self.callback = None
        self.cancelled = False

    def observe(self, query, callback):
        self.callback = callback
        callback([0])
        manager = self

        class Handle:
            active = True

            def cancel(self):
                manager.cancelled = True

        return Handle()


def test_redraws_are_throttled_and_never_lose_the_last_state():
    hub = Hub(max_per_second=10)
    manager = FakeManager()
    drawn: list[tuple[float, list]] = []
    subscription = Subscription(manager, WorkQuery(), lambda infos: drawn.append(
        (time.monotonic(), infos)), hub=hub)
    assert drawn == [(drawn[0][0], [0])]  # the first draw is immediate, in this thread
    for n in range(1, 2001):  # a burst of changes: far more than ten a second
        manager.callback([n])
    subscription.wait_drawn(lambda infos: infos == [2000], timeout=10)
    times = [t for t, _ in drawn]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= hub.interval * 0.99, gaps
    assert [infos for _, infos in drawn] == sorted(infos for _, infos in drawn)  # in order
    subscription.close()
    assert manager.cancelled
    wait_until(lambda: hub.thread is None, timeout=10, what="the hub thread to end")
    manager.callback([2001])  # a late callback after close draws nothing
    assert drawn[-1][1] == [2000]


def test_as_query_accepts_the_usual_targets(wm):
    a, b = OneTimeWorkRequest(echo), OneTimeWorkRequest(echo)
    chain = wm.begin_with(a).then(b)
    assert as_query(a) == WorkQuery(ids=[a.id])
    assert as_query(a.id) == WorkQuery(ids=[a.id])
    assert as_query([a, b.id]) == WorkQuery(ids=[a.id, b.id])
    assert as_query(chain) == WorkQuery(ids=[a.id, b.id])
    assert as_query(None, tags="x") == WorkQuery(tags=["x"])
    assert as_query() == WorkQuery()
    with pytest.raises(InvalidInputError, match="not both"):
        as_query(a, tags="x")
    with pytest.raises(InvalidInputError, match="cannot show a int"):
        as_query(42)


# --- images and graphs ------------------------------------------------------------------


def test_pick_image_prefers_the_newest_existing_output(tmp_path):
    source, first, second = (tmp_path / n for n in ("source.png", "one.png", "two.png"))
    for path in (source, first):
        path.write_bytes(b"x")
    now = datetime.now()
    a = info("a" * 32, WorkState.SUCCEEDED, input_data=Data(image_uri=str(source)),
             output_data=Data(image_uri=str(first)), finish_time=now, enqueue_time=now)
    b = info("b" * 32, WorkState.SUCCEEDED, prerequisites=(a.id,), enqueue_time=now,
             output_data=Data(image_uri=str(second)), finish_time=now + timedelta(seconds=1))
    c = info("c" * 32, WorkState.BLOCKED, prerequisites=(b.id,), enqueue_time=now)
    picked = pick_image([c, b, a])
    assert (picked.path, picked.where, picked.step) == (str(first), "output", 1)  # two.png gone
    second.write_bytes(b"x")
    assert pick_image([c, b, a]).path == str(second)
    waiting = info("d" * 32, WorkState.ENQUEUED, input_data=Data(image_uri=str(source)))
    assert pick_image([waiting]).where == "input"
    assert pick_image([info()]) is None


@pytest.mark.slow
def test_image_preview_follows_a_chain_from_input_to_saved_image(wm, widgets, tmp_path):
    gate = str(tmp_path / "gate")
    source = str(sample_images()[0])
    hold = OneTimeWorkRequest(wait_for_gate, input_data={"gate": gate})
    blur = OneTimeWorkRequest(BlurWorker, input_data={"image_uri": source, "strips": 2})
    save = OneTimeWorkRequest(SaveImageToFileWorker, input_data={"out_dir": str(tmp_path)})
    chain = wm.begin_with(hold).then(blur).then(save)
    chain.enqueue()
    preview = ImagePreview(chain, wm=wm, width=120)
    widgets.append(preview)
    shown: list[str] = []
    preview.image.observe(lambda change: shown.append(preview.path), names="value")
    assert preview.path == source and "input of step 2 of 3" in preview.caption.value
    assert preview.image.value[:2] == b"\xff\xd8" and preview.image.layout.display == ""
    touch(gate)
    preview.wait(timeout=60)
    saved = wm.get_work_info_by_id(save.id).output_data["image_uri"]
    # The saved file is a byte copy of the blurred one: once the blurred one was drawn
    # (when the save step is slow), showing the copy changes no pixel, so fires no change.
    assert preview.path == saved and shown and preview.image.value == thumbnail_bytes(saved, 120)
    assert "output of step 3 of 3" in preview.caption.value
    assert set(shown) <= {saved, wm.get_work_info_by_id(blur.id).output_data["image_uri"]}


def test_chain_svg_draws_nodes_coloured_by_state_and_edges():
    a = info("a" * 32, WorkState.SUCCEEDED)
    b = info("b" * 32, WorkState.RUNNING, prerequisites=(a.id,), progress=Data(percent=40))
    c = info("c" * 32, WorkState.BLOCKED, prerequisites=(a.id,))
    d = info("d" * 32, WorkState.BLOCKED, prerequisites=(b.id, c.id, "pruned-work"))
    svg = chain_svg([d, c, b, a])
    assert svg.count('class="nbwork-node"') == 4 and svg.count('class="nbwork-edge"') == 4
    for node in (a, b, c, d):
        assert f'data-id="{node.id}" data-state="{node.state.value}"' in svg
    assert svg.count(f'fill="{STATE_COLOURS[WorkState.BLOCKED]}"') == 2
    assert f'fill="{STATE_COLOURS[WorkState.RUNNING]}"' in svg
    width = 2 * PAD + 3 * (NODE_W + GAP_X) - GAP_X  # three columns: a | b, c | d
    height = 2 * PAD + 2 * (NODE_H + GAP_Y) - GAP_Y  # at most two works in a column
    assert f'width="{width}" height="{height}"' in svg
    assert 'viewBox="0 0 ' in svg and svg.startswith("<svg")


@pytest.mark.slow
def test_chain_graph_of_one_id_shows_its_whole_chain_live(wm, widgets):
    a, b, c = OneTimeWorkRequest(echo), OneTimeWorkRequest(echo), OneTimeWorkRequest(boom)
    wm.begin_with(a).then([b, c]).enqueue()
    graph = ChainGraph(b.id, wm=wm)
    widgets.append(graph)
    assert set(graph.query.ids) == {a.id, b.id, c.id}
    graph.wait(timeout=30)
    svg = graph.svg.value
    assert svg.count('class="nbwork-node"') == 3 and svg.count('class="nbwork-edge"') == 2
    assert f'data-id="{c.id}" data-state="FAILED"' in svg


# --- the Blur-O-Matic app ---------------------------------------------------------------


@pytest.mark.slow
def test_blur_o_matic_app_go_see_file_and_cancel(wm, widgets):
    app = BlurOMaticApp(wm)
    widgets.append(app)
    assert app.picker.value == str(sample_images()[0]) and app.source.value
    assert app.cancel_button.disabled and app.see_file_button.disabled
    app.level.value = 2
    app.go_button.click()
    infos = app.wait(timeout=60)
    assert [i.state for i in infos] == [WorkState.SUCCEEDED] * 4  # cleanup, 2 blurs, save
    assert app.progress.value == 100 and app.progress.bar_style == "success"
    assert "Done: saved" in app.status.value and os.path.isfile(app.saved_path)
    assert app.preview.path == app.saved_path
    assert len(app.table.rows) == 4
    app.see_file_button.click()
    assert app.saved.layout.display == "" and app.saved_path in app.saved_caption.value
    # A long blur (many strips, a wide radius), cancelled with the Cancel button.
    slow = BlurOMaticApp(wm, strips=5000, radius=60)
    widgets.append(slow)
    job = slow.go(level=3)
    wait_until(lambda: wm.get_work_info_by_id(job.blur_ids[0]).state is WorkState.RUNNING
               and not slow.cancel_button.disabled, timeout=30, what="the first blur RUNNING")
    assert "working on BlurWorker" in slow.status.value
    slow.cancel_button.click()
    slow.wait(timeout=60)
    states = {i.id: i.state for i in wm.get_work_infos(WorkQuery(ids=job.ids))}
    assert states[job.cleanup_id] is WorkState.SUCCEEDED
    assert {states[i] for i in [*job.blur_ids, job.save_id]} == {WorkState.CANCELLED}
    assert "Cancelled." in slow.status.value and slow.progress.bar_style == "warning"
    # The first app follows the unique work: it shows the cancelled chain too.
    app.wait(timeout=30)
    assert "Cancelled." in app.status.value


def test_blur_o_matic_app_refuses_a_bad_image(wm, widgets, tmp_path):
    app = BlurOMaticApp(wm)
    widgets.append(app)
    app.path.value = str(tmp_path / "missing.png")
    assert app.picker.value == "" and "no such file" in app.status.value
    with pytest.raises(InvalidInputError, match="no such file"):
        app.go()
    assert wm.get_work_infos_for_unique_work(IMAGE_MANIPULATION_WORK_NAME) == []
    not_image = tmp_path / "notes.png"
    not_image.write_bytes(b"hello")
    app.upload.value = ({"name": "../notes.png", "type": "image/png", "size": 5,
                         "content": memoryview(b"hello"), "last_modified": datetime.now()},)
    uploaded = pathlib.Path(app.path.value)
    assert uploaded.parent == pathlib.Path(wm.store_path) / "uploads"
    assert uploaded.name == "notes.png" and uploaded.read_bytes() == b"hello"
    assert "not an image" in app.status.value


# --- after a kernel restart ---------------------------------------------------------------


@pytest.mark.slow
def test_a_table_shown_again_after_a_kernel_restart_is_live(store_path, tmp_path):
    gate = str(tmp_path / "gate")
    env = {"NBWORK_HOME": store_path,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    enqueue = (f"from nbwork import WorkManager, OneTimeWorkRequest\n"
               f"from nbwork.widgets import WorkTable\n"
               f"from tests.helpers import wait_for_gate\n"
               f"request = OneTimeWorkRequest(wait_for_gate, input_data={{'gate': {gate!r}}},"
               f" tags=['restart'])\n"
               f"WorkManager.get_instance().enqueue(request)\n"
               f"table = WorkTable(tags='restart')\n"
               f"print(request.id)")
    show = ("from nbwork.widgets import WorkTable\n"
            "table = WorkTable(tags='restart')\n"
            "print([(i, s) for i, v in table.rows.items() "
            "for s in ('ENQUEUED', 'RUNNING', 'SUCCEEDED') if f'>{s}<' in v.who.value])")
    with kernel(str(tmp_path), env) as (km, kc):
        work_id = run(kc, enqueue).strip()
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=60)
        rows = run(kc, show).strip()
        assert rows in (f"[('{work_id}', 'ENQUEUED')]", f"[('{work_id}', 'RUNNING')]")
        touch(gate)
        run(kc, "table.wait(timeout=60)")
        assert run(kc, "print(table.summary.value)").count(">SUCCEEDED<") == 1
        run(kc, "table.close()")
