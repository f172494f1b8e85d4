"""The widgets in a real JupyterLab, driven by headless Chromium (playwright).

One JupyterLab server for this module: a free port, a temporary root folder holding the
notebooks, a temporary store (``NBWORK_HOME``) and temporary Lab settings; stopped by PID
at the end, with the kernels it started and the store's scheduler. Screenshots go to
``test-artifacts/`` (not in git).

Without Chromium, playwright or JupyterLab these tests skip, saying how to install them;
with ``NBWORK_REQUIRE_BROWSER=1`` (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from nbwork import WorkManager, WorkState
from tests.conftest import stop_scheduler, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("NBWORK_CHROMIUM", "/usr/bin/chromium")
INSTALL = "apt-get install -y chromium && pip install playwright jupyterlab"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _missing() -> str | None:
    import importlib.util

    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM}"
    for module in ("playwright", "jupyterlab"):
        if importlib.util.find_spec(module) is None:
            return f"the Python package {module} is not installed"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        message = f"{missing}; install with: {INSTALL}"
        if os.environ.get("NBWORK_REQUIRE_BROWSER") == "1":
            pytest.fail(f"NBWORK_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LONG_JOB = """\
import time
from nbwork import WorkManager, OneTimeWorkRequest, is_stopped
from nbwork.widgets import WorkTable

def long_job(seconds: float = 600) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not is_stopped():
        time.sleep(0.05)
    return {}

wm = WorkManager.get_instance()
request = OneTimeWorkRequest(long_job, tags=["browser-long"])
wm.enqueue(request)
WorkTable(request, title="a long job")
"""


NARROW_CELLS = [LONG_JOB.replace('tags=["browser-long"]', 'tags=["narrow-long", '
                                 '"a-rather-long-tag-name", "another-long-tag-name"]'), """\
from nbwork.imaging import BadImageError

def bad_blur() -> dict:
    print("opening holiday.png")
    raise BadImageError("cannot blur 'holiday.png': the file is damaged or truncated")

failing = OneTimeWorkRequest(bad_blur, tags=["narrow-failed"])
wm.enqueue(failing)
failed_table = WorkTable(failing, title="a failed blur")
failed_table.wait(60)
failed_table.rows[failing.id].expand.value = True
failed_table
""", """\
from nbwork.testing import TestDriver
from nbwork.widgets import BlurOMaticApp

TestDriver(wm).set_device_state(charging=False)  # the save step waits for the charger
app = BlurOMaticApp()
app.requires_charging.value = True
app.go(level=3)
app
"""]
"""A table, a failed work expanded and the app with a chain under way, for a laptop screen."""


def _write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(cell) for cell in cells],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}})
    nbformat.write(nb, path)


def _write_notebooks(root: Path) -> None:
    shutil.copy(ROOT / "notebooks" / "blur_o_matic.ipynb", root)
    _write_notebook(root / "long_job.ipynb", [LONG_JOB])
    _write_notebook(root / "narrow.ipynb", NARROW_CELLS)


def lab_env(base: Path, store: Path) -> dict[str, str]:
    """The environment of a JupyterLab for tests: a temporary store (``NBWORK_HOME``),
    temporary Lab settings and runtime folders, and this tree's nbwork (kernels, the server
    extension and the prebuilt Work panel, whatever else is installed)."""
    settings = base / "settings"
    # The "get notified about Jupyter news" toast would cover the page.
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # JupyterLab finds the panel in JUPYTER_PATH first: this tree's build, not an installed one.
    labextensions = base / "jupyter-data" / "labextensions"
    labextensions.mkdir(parents=True, exist_ok=True)
    link = labextensions / "nbwork-labextension"
    if not link.exists():
        link.symlink_to(ROOT / "nbwork" / "labextension")
    return {**os.environ, "NBWORK_HOME": str(store), "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
            "JUPYTER_PATH": os.pathsep.join(filter(None, [
                str(base / "jupyter-data"), os.environ.get("JUPYTER_PATH")])),
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [
                os.environ.get("PYTHONPATH")])])}


@contextlib.contextmanager
def running_lab(base: Path, root: Path, store: Path, token: str = "",
                args: tuple[str, ...] = ()):
    """A JupyterLab serving ``root`` with the nbwork server extension, on a free port;
    yields its URL. Stopped by PID at the end, with the kernels it started and the store's
    scheduler."""
    env = lab_env(base, store)
    port = _free_port()
    log = open(base / "lab.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         f"--IdentityProvider.token={token}", "--ServerApp.password=",
         "--ServerApp.ip=127.0.0.1", "--allow-root", f"--ServerApp.root_dir={root}",
         "--ServerApp.port_retries=0",
         "--ServerApp.jpserver_extensions={'nbwork.jupyter': True}", *args],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert server.poll() is None, (base / "lab.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}",
                                        timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, timeout=60, what="JupyterLab to answer /api/status")
        yield url
    finally:
        try:
            kernels = psutil.Process(server.pid).children(recursive=True)
        except psutil.Error:
            kernels = []
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        for kernel in kernels:  # normally shut down by the server already
            try:
                kernel.kill()
            except psutil.Error:
                pass
        log.close()
        stop_scheduler(str(store))


@pytest.fixture(scope="module")
def lab(browser, tmp_path_factory):
    """(base url, store path) of a JupyterLab started for this module."""
    base = tmp_path_factory.mktemp("lab")
    root, store = base / "root", base / "store"
    root.mkdir()
    _write_notebooks(root)
    with running_lab(base, root, store) as url:
        yield url, str(store)


def _open(browser, url: str, name: str, width: int = 1400, height: int = 1600):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/lab/tree/{name}?reset")
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell .cm-editor")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           state="attached")
    return page


def _run_all(page) -> None:
    # The kernel must be connected: before that, "Run All" is a disabled menu item, and a
    # click on it does nothing.
    page.locator(".jp-StatusBar-Widget:has-text('| Idle')").first.wait_for()
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click(".lm-Menu-item[data-command='runmenu:run-all']:not(.lm-mod-disabled)")
    page.locator(".jp-InputArea-prompt:has-text('[1]')").first.wait_for(state="attached")


def _shot(page, name: str, element=None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (element or page).screenshot(path=str(ARTIFACTS / name))


CELLS = """() => [...document.querySelectorAll('.jp-CodeCell')].map(cell => [
    (cell.querySelector('.jp-InputArea-prompt') || {}).textContent,
    ((cell.querySelector('.jp-InputArea-editor') || {}).textContent || '').slice(0, 60),
    ((cell.querySelector('.jp-OutputArea') || {}).textContent || '').slice(-400)])"""


def _failed(page, name: str) -> None:
    """What a failed notebook test leaves to read: a screenshot, and every code cell's
    prompt, start and output (a screenshot shows only the cells in view), also printed."""
    _shot(page, f"{name}_failure.png")
    try:
        cells = page.evaluate(CELLS)
    except Exception as exc:  # the page itself is gone
        cells = [["", "", f"the cells could not be read: {exc}"]]
    text = "\n".join(f"{prompt} {start!r}\n    {output!r}" for prompt, start, output in cells)
    (ARTIFACTS / f"{name}_failure_cells.txt").write_text(text)
    print(text)


RECORD_WIDTHS = """() => {
    window.nbworkWidths = [];
    setInterval(() => {
        for (const bar of document.querySelectorAll('.nbwork-chain-progress .progress-bar'))
            window.nbworkWidths.push(bar.style.width);
    }, 20);
}"""


def test_blur_o_matic_run_all(browser, lab):
    url, store = lab
    page = _open(browser, url, "blur_o_matic.ipynb")
    try:
        page.evaluate(RECORD_WIDTHS)
        _run_all(page)
        app = page.locator(".nbwork-blur-app")
        app.locator("text=Done: saved").wait_for(timeout=180_000)
        # The chain of the app (level 3): cleanup, three blurs, save, all SUCCEEDED.
        table = app.locator(".nbwork-table")
        badges = table.locator(".nbwork-row .nbwork-badge")
        wait_until(lambda: badges.all_inner_texts() == ["SUCCEEDED"] * 5, timeout=30,
                   what="five SUCCEEDED badges in the app's table")
        # The preview shows an image that the browser decoded.
        preview = app.locator(".nbwork-preview img")
        preview.wait_for(state="visible")
        assert preview.evaluate("img => img.complete && img.naturalWidth > 0")
        # The progress bar moved: seen between 0 and 100 %, and at 100 % in the end.
        widths = [float(w.rstrip("%")) for w in page.evaluate("window.nbworkWidths") if w]
        assert any(0 < w < 100 for w in widths), sorted(set(widths))
        wait_until(lambda: app.locator(".nbwork-chain-progress .progress-bar").evaluate(
            "bar => bar.style.width") == "100%", timeout=30, what="the progress bar at 100%")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                               state="attached", timeout=120_000)
        app.locator("button:has-text('See File')").click()
        app.locator("img.nbwork-saved").wait_for(state="visible")
        app.scroll_into_view_if_needed()
        _shot(page, "blur_o_matic_app.png", app)
        _shot(page, "blur_o_matic_page.png")
        errors = page.locator(".jp-OutputArea-output[data-mime-type="
                              "'application/vnd.jupyter.stderr']:has-text('Traceback')")
        assert errors.count() == 0, errors.first.inner_text()
    except BaseException:
        _failed(page, "blur_o_matic")
        raise
    finally:
        page.close()
    chain = WorkManager(store).get_work_infos_for_unique_work("image_manipulation_work")
    assert [i.state for i in chain] == [WorkState.SUCCEEDED] * 5


def test_cancel_button_cancels_a_long_job(browser, lab):
    url, store = lab
    page = _open(browser, url, "long_job.ipynb")
    try:
        _run_all(page)
        table = page.locator(".jp-OutputArea .nbwork-table")
        table.locator(".nbwork-row .nbwork-badge.nbwork-running").wait_for()
        _shot(page, "long_job_running.png", table)
        table.locator("button:has-text('Cancel')").click()
        table.locator(".nbwork-row .nbwork-badge.nbwork-cancelled").wait_for()
        _shot(page, "long_job_cancelled.png", table)
        assert table.locator("button:has-text('Cancel')").is_hidden()
    except BaseException:
        _failed(page, "long_job")
        raise
    finally:
        page.close()
    infos = WorkManager(store).get_work_infos_by_tag("browser-long")
    assert [i.state for i in infos] == [WorkState.CANCELLED]


IN_SIGHT = """button => {
    button.scrollIntoView({block: "center", inline: "nearest"});
    const box = button.getBoundingClientRect();
    const x = box.left + box.width / 2, y = box.top + box.height / 2;
    const top = document.elementFromPoint(x, y);
    for (let box = button.parentElement; box; box = box.parentElement)
        if (box.scrollLeft > 0) return false;  // shown only by scrolling sideways
    return box.width > 0 && box.right <= window.innerWidth && box.left >= 0
        && top !== null && (top === button || button.contains(top));
}"""
"""Whether a button is in sight once scrolled to vertically: not cut off (the element at its
centre is the button itself, so an ``overflow: hidden`` box fails this) and not reachable
only by scrolling a box sideways."""


def test_laptop_screen_with_the_sidebar_open(browser, lab):
    """1280x800 with JupyterLab's file browser open: every unfinished row's Cancel button
    is in sight, in a table and in the Blur-O-Matic app, and a failed work shows its
    exception line first, its traceback folded and shown once."""
    url, store = lab
    page = _open(browser, url, "narrow.ipynb", width=1280, height=800)
    try:
        if not page.locator("#filebrowser").is_visible():
            page.click(".jp-SideBar [data-id='filebrowser']")
        page.locator("#filebrowser").wait_for(state="visible")
        _run_all(page)
        outputs = page.locator(".jp-OutputArea")
        long_table = outputs.locator(".nbwork-table:has-text('a long job')")
        long_table.locator(".nbwork-row .nbwork-badge.nbwork-running").wait_for(timeout=120_000)
        assert long_table.locator("button:has-text('Cancel')").evaluate(IN_SIGHT)
        # The tags that do not fit are cut with an ellipsis, the whole list in a tooltip.
        assert long_table.locator("[title*='a-rather-long-tag-name']").count() >= 1
        _shot(page, "laptop_table.png")

        failed = outputs.locator(".nbwork-table:has-text('a failed blur')")
        details = failed.locator(".nbwork-details")
        details.wait_for(timeout=120_000)
        headline = details.locator(".nbwork-error-line")
        assert headline.inner_text().endswith(
            "BadImageError: cannot blur 'holiday.png': the file is damaged or truncated")
        headline.scroll_into_view_if_needed()
        assert headline.is_visible()
        traceback = details.locator("details.nbwork-traceback pre")
        assert traceback.is_hidden()  # folded under the exception line
        assert details.inner_html().count("Traceback (most recent call last)") == 1
        assert "opening holiday.png" in details.locator(".nbwork-log").inner_text()
        _shot(page, "laptop_failed_work.png", failed)
        details.locator("details.nbwork-traceback summary").click()
        traceback.wait_for(state="visible")
        box, line = traceback.bounding_box(), headline.bounding_box()
        assert line["y"] < box["y"]  # the exception line stays first

        app = outputs.locator(".nbwork-blur-app")
        rows = app.locator(".nbwork-table .nbwork-row")
        wait_until(lambda: rows.count() == 5, timeout=120, what="the app's five rows")
        waiting = app.locator(".nbwork-row:has(.nbwork-enqueued) button:has-text('Cancel')")
        waiting.first.wait_for(timeout=120_000)
        assert waiting.first.evaluate(IN_SIGHT)
        assert app.locator("button:has-text('Go')").evaluate(IN_SIGHT)
        _shot(page, "laptop_app.png", app)
    except BaseException:
        _failed(page, "laptop")
        raise
    finally:
        page.close()
        wm = WorkManager(store)
        wm.cancel_all_work_by_tag("narrow-long")
        wm.cancel_unique_work("image_manipulation_work")
        from nbwork.testing import TestDriver

        TestDriver(wm).clear_device_state()
