"""What the widgets show of a work, without a browser: rounded numbers, an age that grows,
a duration that is right, why a work waits, a failed work's error (once, its exception line
first), a batch's aggregate bar, and the Blur-O-Matic app re-attaching to a chain."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from nbwork import Constraints, OneTimeWorkRequest, WorkInfo, WorkManager, WorkState
from nbwork.imaging import blur_o_matic, sample_images
from nbwork.testing import TestDriver
from nbwork.widgets import HUB, BlurOMaticApp, WorkCard, WorkTable, _html
from nbwork.widgets.table import WorkView
from tests.conftest import wait_until
from tests.helpers import boom, echo, wait_for_gate
from tests.kernels import kernel, run


@pytest.fixture
def widgets():
    made: list = []
    yield made
    for widget in made:
        widget.close()
    wait_until(lambda: not HUB.subscriptions, timeout=10, what="no live subscription left")


def time_cell(view: WorkView) -> str:
    return re.findall(r">([^<>]*)</div>", view.facts.value)[-1]


def test_numbers_are_rounded(wm):
    running = WorkInfo(id="a" * 32, state=WorkState.RUNNING, worker_name="m.W",
                       progress={"percent": 100 / 12, "ratio": 2 / 3})
    view = WorkView(wm, running)
    assert ">8.3 %<" in view.facts.value
    assert _html.percent_text(50.0) == "50 %"
    details = _html.details(running, "")
    assert "8.333" in details and "8.33333" not in details and "0.667" in details
    assert "</progress> 8.3 %" in running._repr_html_()  # without widgets too


def test_a_finished_work_shows_how_long_it_ran(wm):
    began = datetime.now() - timedelta(hours=3)
    done = WorkInfo(id="a" * 32, state=WorkState.SUCCEEDED, worker_name="m.W",
                    enqueue_time=began, start_time=began + timedelta(seconds=1),
                    finish_time=began + timedelta(seconds=43))
    view = WorkView(wm, done)
    assert time_cell(view) == "42 s"  # its duration, not "3 h" nor "0 s"
    assert "ran 42 s" in view.facts.value


@pytest.mark.slow
def test_the_age_of_unfinished_work_keeps_growing(wm, widgets):
    request = OneTimeWorkRequest(echo, initial_delay=3600)
    wm.enqueue(request)
    table = WorkTable(request, wm=wm)
    widgets.append(table)
    row = table.rows[request.id]
    assert time_cell(row) == "0 s"
    # Nothing about the work changes; the row is redrawn because time passes.
    wait_until(lambda: time_cell(row) not in ("0 s", "1 s"), timeout=10,
               what="the age to reach 2 s without any change of the work")
    wm.cancel_work_by_id(request.id)


@pytest.mark.slow
def test_a_tick_redraws_the_rows_facts_without_sorting_the_whole_table(wm, widgets,
                                                                       monkeypatch):
    """Every second a table of unfinished work is redrawn with the same infos (its ages
    grow): sorting and summing all of them again was most of a kernel's CPU for a table
    of 1,000 works waiting an hour. Only new infos are sorted again."""
    from nbwork.widgets import table as table_module

    requests = [OneTimeWorkRequest(echo, initial_delay=3600) for _ in range(3)]
    wm.enqueue(requests)
    table = WorkTable(requests, wm=wm)
    widgets.append(table)
    sorts: list[int] = []
    real = table_module.in_chain_order
    monkeypatch.setattr(table_module, "in_chain_order",
                        lambda infos: sorts.append(len(infos)) or real(infos))
    drawn = table._drawn
    assert drawn is not None and len(drawn) == 3
    table._draw(drawn)  # a tick
    assert sorts == []
    table._draw(list(drawn))  # new infos (equal or not): drawn in full
    assert sorts == [3]


@pytest.mark.slow
def test_why_a_work_waits_is_in_the_row_tooltip_and_the_card(wm, widgets, tmp_path):
    gate = str(tmp_path / "never")
    first = OneTimeWorkRequest(wait_for_gate, input_data={"gate": gate})
    second = OneTimeWorkRequest(echo)
    delayed = OneTimeWorkRequest(echo, initial_delay=3600,
                                 constraints=Constraints(requires_charging=True))
    wm.begin_with(first).then(second).enqueue()
    wm.enqueue(delayed)
    table = WorkTable([first, second, delayed], wm=wm)
    widgets.append(table)
    wait_until(lambda: "RUNNING" in table.rows[first.id].who.value, timeout=30,
               what="the first work RUNNING")
    wait_until(lambda: f"waits for prerequisite wait_for_gate {first.id[:8]} (RUNNING)"
               in table.rows[second.id].who.value, timeout=10, what="the blocked row's tip")
    assert "initial delay until" in table.rows[delayed.id].who.value
    assert "the charger plugged in" in table.rows[delayed.id].who.value
    card = WorkCard(delayed, wm=wm)
    widgets.append(card)
    assert 'class="nbwork-waiting"' in card.view.details.value
    assert "initial delay until" in card.view.details.value
    wm.cancel_all_work()


@pytest.mark.slow
def test_a_failed_work_shows_its_exception_line_first_and_the_traceback_once(wm, widgets):
    failing = OneTimeWorkRequest(boom)
    wm.enqueue(failing)
    table = WorkTable(failing, wm=wm)
    widgets.append(table)
    table.wait(timeout=30)
    row = table.rows[failing.id]
    row.expand.value = True
    page = row.details.value
    headline = "ValueError: boom-4711: the worker raised on purpose"
    assert page.count("Traceback (most recent call last)") == 1
    assert page.index(headline) < page.index("Traceback")
    assert page.index(headline) < page.index("<table")  # first, above the facts
    assert '<details class="nbwork-traceback">' in page  # folded
    assert "(the traceback is shown above)" in page


@pytest.mark.slow
def test_a_batch_gets_one_aggregate_bar(wm, widgets):
    requests = [OneTimeWorkRequest(echo) for _ in range(3)] + [OneTimeWorkRequest(boom)]
    wm.enqueue(requests)
    table = WorkTable(requests, wm=wm)
    widgets.append(table)
    table.wait(timeout=60)
    wait_until(lambda: "3 done · 1 failed of 4" in table.summary.value, timeout=10,
               what="the aggregate bar's counts")
    assert 'class="nbwork-aggregate-done"' in table.summary.value
    assert 'style="width:75.00%' in table.summary.value
    single = WorkTable(requests[0], wm=wm)
    widgets.append(single)
    assert "nbwork-aggregate" not in single.summary.value


@pytest.mark.slow
def test_a_new_app_shows_the_image_and_level_of_the_chain_under_way(wm, widgets):
    driver = TestDriver(wm)
    driver.set_device_state(charging=False)  # the save step waits: the chain stays unfinished
    image = str(sample_images()[-1])
    job = blur_o_matic(wm, image, level=2, requires_charging=True)
    app = BlurOMaticApp(wm, level=1)  # as after a kernel restart: a fresh app
    widgets.append(app)
    assert app.image_path == image and app.level.value == 2
    assert app.picker.value == image
    # The user's own choice afterwards is kept while the same chain runs.
    app.level.value = 3
    wait_until(lambda: wm.get_work_info_by_id(job.blur_ids[-1]).state is WorkState.SUCCEEDED,
               timeout=60, what="the blurs done")
    assert app.level.value == 3
    wm.cancel_all_work()
    driver.clear_device_state()


@pytest.mark.slow
def test_after_a_kernel_restart_the_app_shows_the_chain_under_way(store_path, tmp_path):
    root = str(Path(__file__).resolve().parent.parent)
    env = {"NBWORK_HOME": store_path,
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    image = str(sample_images()[-1])
    start = ("from nbwork import WorkManager\n"
             "from nbwork.testing import TestDriver\n"
             "from nbwork.widgets import BlurOMaticApp\n"
             "TestDriver(WorkManager.get_instance()).set_device_state(charging=False)\n"
             "app = BlurOMaticApp()\n"
             "app.requires_charging.value = True\n"
             f"app.go({image!r}, level=3)\n")
    show = ("from nbwork.widgets import BlurOMaticApp\n"
            "app = BlurOMaticApp()\n"
            "print(app.image_path, app.level.value)\n"
            "app.close()")
    try:
        with kernel(str(tmp_path), env) as (km, kc):
            run(kc, start)
            km.restart_kernel(now=True)
            kc.wait_for_ready(timeout=60)
            assert run(kc, show).strip() == f"{image} 3"  # not the defaults: the first sample, 1
    finally:
        wm = WorkManager(store_path)
        wm.cancel_all_work()
        TestDriver(wm).clear_device_state()
