"""The Work panel in a real JupyterLab, driven by headless Chromium: work started from the
CLI shows up live with no kernel, Cancel stops a running work, the details tab tails the
log, a failure toasts, and user text is never HTML. Uses test_browser's recipe (its
``browser`` fixture, ``running_lab`` and screenshots into ``test-artifacts/``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from nbwork import OneTimeWorkRequest, WorkManager, WorkState, is_stopped
from tests import helpers
from tests.conftest import wait_until
from tests.test_browser import ROOT, _shot, browser, lab_env, running_lab  # noqa: F401

pytestmark = pytest.mark.slow

XSS_TAG = '<img src=x onerror="window.nbworkXss=1">'


def raise_with_html() -> dict:
    raise ValueError(f"boom-4711 {XSS_TAG}")


def talk_until_gates(first_gate: str, second_gate: str) -> dict:
    """Prints a line, waits for ``first_gate``, prints another, waits for ``second_gate``."""
    print("first line from the worker", flush=True)
    while not os.path.exists(first_gate) and not is_stopped():
        time.sleep(0.02)
    print("second line, printed later", flush=True)
    while not os.path.exists(second_gate) and not is_stopped():
        time.sleep(0.02)
    return {"said": 2}


@pytest.fixture(scope="module")
def panel_lab(browser, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """(url, store) of a JupyterLab for this module (no notebook opened: no kernel)."""
    base = tmp_path_factory.mktemp("panel")
    root, store = base / "root", base / "store"
    root.mkdir()
    with running_lab(base, root, store) as url:
        yield url, str(store), base


@pytest.fixture
def page(browser, panel_lab):  # noqa: F811
    url, _, _ = panel_lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/lab?reset")
    page.locator("li.lm-TabBar-tab[data-id='nbwork-panel']").click()
    page.locator("#nbwork-panel .nbwork-Status").wait_for()
    yield page
    page.close()


def rows(page):
    return page.locator("#nbwork-panel .nbwork-Row")


def row(page, id: str):
    return page.locator(f"#nbwork-panel .nbwork-Row[data-work-id='{id}']")


RECORD_ROWS = """() => {
    window.nbworkSeen = [];
    setInterval(() => {
        const rows = [...document.querySelectorAll('#nbwork-panel .nbwork-Row')];
        window.nbworkSeen.push(rows.map(r => [r.dataset.workId, r.dataset.state,
            r.querySelector('.nbwork-ProgressFill').style.width]));
    }, 50);
}"""


def test_a_cli_batch_appears_and_moves_live_with_no_kernel(page, panel_lab):
    url, store, base = panel_lab
    images = base / "images"
    images.mkdir()
    from PIL import Image

    for name in sorted(os.listdir(ROOT / "nbwork" / "samples"))[:4]:
        # Bigger than the samples, so the blurs take long enough to be seen running.
        Image.open(ROOT / "nbwork" / "samples" / name).convert("RGB").resize(
            (1600, 1200)).save(images / (os.path.splitext(name)[0] + ".png"))
    page.evaluate(RECORD_ROWS)
    try:
        subprocess.run([sys.executable, "-m", "nbwork.cli", "batch", str(images), "--level",
                        "3", "--detach", "--store", store], check=True, timeout=120,
                       env=lab_env(base, base / "store"), capture_output=True)
        wm = WorkManager(store)
        ids = [i.id for i in wm.get_work_infos()]
        wait_until(lambda: rows(page).count() == len(ids), what="a row per work of the batch")
        assert sorted(rows(page).evaluate_all("rs => rs.map(r => r.dataset.workId)")) == \
            sorted(ids)
        wm.wait(ids, timeout=300)
        wait_until(lambda: page.locator("#nbwork-panel .nbwork-Row[data-state='SUCCEEDED']")
                   .count() == len(ids), what="every row SUCCEEDED in the panel")
        _shot(page, "lab_panel_batch.png", page.locator("#nbwork-panel"))
    except BaseException:
        _shot(page, "lab_panel_batch_failure.png")
        raise
    seen = page.evaluate("window.nbworkSeen")
    done_counts = [sum(state == "SUCCEEDED" for _, state, _ in sample) for sample in seen]
    # Live: without a reload, the panel showed the batch part-done on its way (then all
    # done, above). On an idle machine the batch takes a second or two, so one part-done
    # refresh is all there may be room for.
    assert any(0 < c < len(ids) for c in done_counts), sorted(set(done_counts))
    states_of = {}
    for sample in seen:
        for id, state, _ in sample:
            states_of.setdefault(id, []).append(state)
    sheet = [id for id, states in states_of.items() if "BLOCKED" in states]
    assert sheet and states_of[sheet[0]][-1] == "SUCCEEDED"
    with urllib.request.urlopen(f"{url}/api/kernels") as response:
        assert json.loads(response.read()) == []  # no kernel was needed


def test_cancel_in_the_panel_cancels_the_work_in_the_store(page, panel_lab, tmp_path):
    _, store, _ = panel_lab
    wm = WorkManager(store)
    request = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(
        tmp_path / "never")}, tags=["panel-cancel"])
    wm.enqueue(request)
    try:
        row(page, request.id).and_(page.locator("[data-state='RUNNING']")).wait_for()
        row(page, request.id).locator("button.nbwork-Cancel").click()
        assert wm.wait(request.id, timeout=60).state is WorkState.CANCELLED
        row(page, request.id).and_(page.locator("[data-state='CANCELLED']")).wait_for()
        assert row(page, request.id).locator("button.nbwork-Cancel").count() == 0
    except BaseException:
        _shot(page, "lab_panel_cancel_failure.png")
        raise


def test_cancel_all_shown_and_prune_finished_ask_first(page, panel_lab, tmp_path):
    _, store, _ = panel_lab
    wm = WorkManager(store)
    gate = str(tmp_path / "never")
    shown = [OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": gate},
                                tags=["cancel-these"]) for _ in range(2)]
    other = OneTimeWorkRequest(helpers.wait_for_gate, initial_delay=3600,
                               input_data={"gate": gate}, tags=["keep-this"])
    wm.enqueue([*shown, other])
    try:
        panel = page.locator("#nbwork-panel")
        wait_until(lambda: "cancel-these" in panel.locator(".nbwork-TagFilter").inner_text(),
                   what="the tag in the tag filter")
        panel.locator(".nbwork-TagFilter").select_option("cancel-these")
        wait_until(lambda: rows(page).count() == 2, what="only the two tagged rows")
        panel.locator("button.nbwork-CancelShown").click()
        page.locator(".jp-Dialog:has-text('Cancel the 2 unfinished works')").wait_for()
        page.locator(".jp-Dialog .jp-mod-reject").click()  # "Keep them": nothing happens
        assert [i.state.is_finished for i in wm.get_work_infos_by_tag("cancel-these")] == \
            [False, False]
        panel.locator("button.nbwork-CancelShown").click()
        page.locator(".jp-Dialog .jp-mod-accept").click()
        infos = wm.wait([r.id for r in shown], timeout=60)
        assert [i.state for i in infos] == [WorkState.CANCELLED] * 2
        assert wm.get_work_info_by_id(other.id).state is WorkState.ENQUEUED
        panel.locator(".nbwork-TagFilter").select_option("")
        panel.locator("button.nbwork-Prune").click()
        page.locator(".jp-Dialog .jp-mod-accept").click()
        wait_until(lambda: rows(page).count() == 1, what="the finished rows pruned")
        assert wm.get_work_ids() == [other.id]
    except BaseException:
        _shot(page, "lab_panel_cancel_all_failure.png")
        raise
    finally:
        wm.cancel_work_by_id(other.id)


def test_the_details_tab_tails_the_log_live(page, panel_lab, tmp_path):
    _, store, _ = panel_lab
    wm = WorkManager(store)
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    request = OneTimeWorkRequest(talk_until_gates, input_data={
        "first_gate": first, "second_gate": second})
    wm.enqueue(request)
    try:
        row(page, request.id).click()
        details = page.locator(f".nbwork-Details[data-work-id='{request.id}']")
        log = details.locator(".nbwork-Log")
        log.locator("text=first line from the worker").wait_for()
        assert "second line" not in log.inner_text()
        helpers.touch(first)
        log.locator("text=second line, printed later").wait_for()
        _shot(page, "lab_panel_details.png", details)
        helpers.touch(second)
        details.locator(".nbwork-DetailsHeader .nbwork-Badge-SUCCEEDED").wait_for()
        assert details.locator("[data-fact='id']").inner_text() == request.id
    except BaseException:
        _shot(page, "lab_panel_details_failure.png")
        raise


def test_a_failure_toasts_and_user_text_stays_text(page, panel_lab):
    _, store, _ = panel_lab
    wm = WorkManager(store)
    request = OneTimeWorkRequest(raise_with_html, tags=[XSS_TAG])
    wm.enqueue(request)
    try:
        toast = page.locator(".Toastify__toast:has-text('boom-4711')")
        toast.wait_for()
        assert "FAILED" in toast.inner_text() and XSS_TAG in toast.inner_text()
        tags = row(page, request.id).locator(".nbwork-Tags")
        assert tags.inner_text() == XSS_TAG
        assert row(page, request.id).locator(".nbwork-ErrorLine").inner_text().startswith(
            f"ValueError: boom-4711 {XSS_TAG}")
        toast.locator("button:has-text('Details')").click()
        details = page.locator(f".nbwork-Details[data-work-id='{request.id}']")
        details.locator(".nbwork-Exception:has-text('ValueError: boom-4711')").wait_for()
        assert details.locator(".nbwork-Exception").inner_text() == \
            f"ValueError: boom-4711 {XSS_TAG}"
        assert details.locator("[data-fact='tags']").inner_text() == XSS_TAG
        _shot(page, "lab_panel_failure.png")
        assert page.locator(
            "#nbwork-panel img, .nbwork-Details img, .Toastify__toast img").count() == 0
        assert page.evaluate("window.nbworkXss") is None
    except BaseException:
        _shot(page, "lab_panel_failure_failure.png")
        raise


def test_no_toast_when_notifications_are_off(browser, panel_lab):  # noqa: F811
    url, store, base = panel_lab
    settings = base / "settings" / "nbwork-labextension" / "plugin.jupyterlab-settings"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"notifications": False}))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{url}/lab?reset")
        page.locator("li.lm-TabBar-tab[data-id='nbwork-panel']").click()
        page.locator("#nbwork-panel .nbwork-Status").wait_for()
        wm = WorkManager(store)
        request = OneTimeWorkRequest(helpers.boom)
        wm.enqueue(request)
        row(page, request.id).and_(page.locator("[data-state='FAILED']")).wait_for()
        # The page has dealt with the notice of that failure, and showed no toast.
        wait_until(lambda: int(page.locator("#nbwork-panel").get_attribute(
            "data-notice-seq") or 0) > 0, what="the page to take the notice")
        assert page.locator(".Toastify__toast:has-text('boom-4711')").count() == 0
    except BaseException:
        _shot(page, "lab_panel_quiet_failure.png")
        raise
    finally:
        page.close()
        settings.unlink()


def test_a_kernel_restart_changes_nothing_in_the_panel(browser, panel_lab):  # noqa: F811
    import nbformat

    url, store, base = panel_lab
    root = base / "root"
    nbformat.write(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("1 + 1")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}}), root / "restart.ipynb")
    wm = WorkManager(store)
    wm.enqueue(OneTimeWorkRequest(helpers.echo, initial_delay=3600, tags=["waits"]))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{url}/lab/tree/restart.ipynb?reset")
        page.locator(".jp-StatusBar-Widget:has-text('| Idle')").first.wait_for()
        page.locator("li.lm-TabBar-tab[data-id='nbwork-panel']").click()
        shown = "rs => rs.map(r => [r.dataset.workId, r.dataset.state])"
        wait_until(lambda: rows(page).count() == len(wm.get_work_ids()), what="every row")
        before = rows(page).evaluate_all(shown)
        page.click("li.lm-MenuBar-item:has-text('Kernel')")
        page.click(".lm-Menu-item[data-command='kernelmenu:restart']")
        page.click(".jp-Dialog .jp-mod-accept")
        page.locator(".jp-StatusBar-Widget:has-text('Restarting')").first.wait_for(
            state="detached")
        page.locator(".jp-StatusBar-Widget:has-text('| Idle')").first.wait_for()
        page.locator("#nbwork-panel button.nbwork-Count-RUNNING").click()  # a fresh fetch
        page.locator("#nbwork-panel button.nbwork-Count-RUNNING").click()
        wait_until(lambda: rows(page).evaluate_all(shown) == before,
                   what="the same rows after the restart")
        # "Insert code" in a details tab adds a cell that reads the work to the notebook.
        waiting = wm.get_work_infos_by_tag("waits")[0]
        row(page, waiting.id).click()
        page.locator(f".nbwork-Details[data-work-id='{waiting.id}'] .nbwork-InsertCode").click()
        page.locator(f".jp-NotebookPanel .jp-Cell .cm-content:has-text('{waiting.id}')").wait_for()
        assert f'wm.get_work_info_by_id("{waiting.id}")' in page.locator(
            ".jp-NotebookPanel .jp-Cell .cm-content").nth(1).inner_text()
    except BaseException:
        _shot(page, "lab_panel_restart_failure.png")
        raise
    finally:
        page.close()


def test_a_post_without_the_xsrf_token_is_refused_and_changes_nothing(panel_lab, tmp_path):
    url, store, _ = panel_lab
    wm = WorkManager(store)
    request = OneTimeWorkRequest(helpers.wait_for_gate, initial_delay=3600,
                                 input_data={"gate": str(tmp_path / "never")})
    wm.enqueue(request)
    post = urllib.request.Request(f"{url}/nbwork/api/cancel", method="POST",
                                  data=json.dumps({"id": request.id}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=30)
    assert refused.value.code == 403
    assert wm.get_work_info_by_id(request.id).state is WorkState.ENQUEUED
    wm.cancel_work_by_id(request.id)
