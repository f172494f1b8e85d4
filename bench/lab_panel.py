"""The Work panel at scale: a store of 10,000 finished works plus 100 unfinished ones.

    python -m bench.lab_panel            # about 2 minutes on 2 cores
    python -m bench.lab_panel --finished 1000 --window 10   # smaller, quicker

Measures, against a real JupyterLab server process with the nbwork server extension:

1. the REST API: a 100-row page (``/nbwork/api/works?limit=100``), p50 and p90 of 200
   requests one after the other, while two of the unfinished works run and report progress
   every 0.1 s (so the store's change counter keeps moving and the cache keeps refreshing);
   also the first request (which builds the cache of the store) and a filtered page;
2. the browser: headless Chromium opens JupyterLab with the panel; the time from the panel's
   first ``works`` request to its first row on screen, and from navigation start;
3. idle: CPU of the server process over a window, with the panel open in the browser and
   nothing happening in the store (every work finished).

Writes ``bench/results-lab.json`` and prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from nbwork import OneTimeWorkRequest, WorkManager, set_progress

from .harness import REPO, kill_leftovers, measure_cpu, ms, percentile, poll, tree
from .tasks import noop

CHROMIUM = os.environ.get("NBWORK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

FIRST_ROW = """() => {
    window.nbworkFirstRow = null;
    new MutationObserver((_, observer) => {
        if (document.querySelector('#nbwork-panel .nbwork-Row')) {
            window.nbworkFirstRow = performance.now();
            observer.disconnect();
        }
    }).observe(document, {childList: true, subtree: true});
}"""


def ticking(gate: str) -> dict:
    """Reports progress every 0.1 s until the file ``gate`` exists."""
    import os
    import time

    step = 0
    while not os.path.exists(gate):
        step += 1
        set_progress({"percent": step % 100})
        time.sleep(0.1)
    return {"steps": step}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(store: str, finished: int, unfinished: int, gate: str) -> WorkManager:
    wm = WorkManager(store)
    requests = [OneTimeWorkRequest(noop, tags=["done"]) for _ in range(finished)]
    for start in range(0, finished, 1000):
        wm.enqueue(requests[start:start + 1000])
    wm.wait([r.id for r in requests], timeout=1800)
    wm.enqueue([OneTimeWorkRequest(ticking, input_data={"gate": gate}, tags=["ticking"])
                for _ in range(unfinished)])
    return wm


def get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", type=int, default=10_000)
    parser.add_argument("--unfinished", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds of the idle CPU measurement")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="nbwork-bench-lab-"))
    store, gate = str(base / "store"), str(base / "gate")
    (base / "root").mkdir()
    results: dict[str, object] = {"finished": args.finished, "unfinished": args.unfinished,
                                  "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    started = time.perf_counter()
    wm = fill(store, args.finished, args.unfinished, gate)
    results["fill_s"] = round(time.perf_counter() - started, 1)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NBWORK_HOME": store, "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get(
               "PYTHONPATH")]))}
    labextensions = base / "jupyter-data" / "labextensions"
    labextensions.mkdir(parents=True)
    (labextensions / "nbwork-labextension").symlink_to(REPO / "nbwork" / "labextension")
    env["JUPYTER_PATH"] = str(base / "jupyter-data")
    log = open(base / "lab.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.ip=127.0.0.1",
         "--allow-root", f"--ServerApp.root_dir={base / 'root'}",
         "--ServerApp.jpserver_extensions={'nbwork.jupyter': True}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    processes = []
    try:
        def ready() -> bool:
            try:
                return get(f"{url}/api/status") >= 0
            except OSError:
                return False

        poll(ready, 60, "JupyterLab to answer", pause=0.1)
        processes = tree(server.pid)
        page_url = f"{url}/nbwork/api/works?limit=100"
        results["api_first_request_ms"] = ms(get(page_url))
        times = [get(page_url) for _ in range(args.requests)]
        results["api_page_p50_ms"] = ms(percentile(times, 0.5))
        results["api_page_p90_ms"] = ms(percentile(times, 0.9))
        filtered = [get(page_url + "&state=SUCCEEDED&q=noop") for _ in range(50)]
        results["api_filtered_page_p50_ms"] = ms(percentile(filtered, 0.5))
        results["counter_moved"] = wm.get_work_infos_by_tag("ticking")[0].progress != {}

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.add_init_script(f"({FIRST_ROW})()")
                page.goto(f"{url}/lab?reset")
                page.locator("li.lm-TabBar-tab[data-id='nbwork-panel']").click()
                page.locator("#nbwork-panel .nbwork-Row").first.wait_for(timeout=120_000)
                first_row = page.evaluate("window.nbworkFirstRow")
                request_start = page.evaluate("""() => performance.getEntriesByType('resource')
                    .filter(e => e.name.includes('/nbwork/api/works'))[0].startTime""")
                results["browser_first_rows_after_request_ms"] = round(
                    first_row - request_start, 1)
                results["browser_first_rows_after_navigation_ms"] = round(first_row, 1)
                results["browser_rows_shown"] = page.locator("#nbwork-panel .nbwork-Row").count()
                Path(gate).touch()
                wm.wait([i.id for i in wm.get_work_infos_by_tag("ticking")], timeout=600)
                time.sleep(3)  # let the last pushes and page refreshes pass
                results["idle_server_cpu"] = measure_cpu(lambda: [psutil.Process(server.pid)],
                                                         args.window)
                page.close()
            finally:
                browser.close()
    finally:
        Path(gate).touch()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        kill_leftovers(processes)
        log.close()
        wm.daemon.stop()
    results["load_after"] = os.getloadavg()
    out = REPO / "bench" / "results-lab.json"
    out.write_text(json.dumps(results, indent=2))
    cpu = results["idle_server_cpu"]
    print(json.dumps(results, indent=2))
    print(f"""
| measure | figure |
|---|---|
| store | {args.finished:,} finished + {args.unfinished} unfinished works |
| API, 100-row page, p50 / p90 ({args.requests} requests, counter moving) | \
{results['api_page_p50_ms']} / {results['api_page_p90_ms']} ms |
| API, filtered page (state + text), p50 | {results['api_filtered_page_p50_ms']} ms |
| API, first request (builds the server's cache of the store) | \
{results['api_first_request_ms']} ms |
| browser, panel's first request → first rows on screen | \
{results['browser_first_rows_after_request_ms']} ms |
| browser, navigation start → first rows (JupyterLab's own start included) | \
{results['browser_first_rows_after_navigation_ms']} ms |
| server CPU, idle store, panel open ({args.window:g} s) | \
{cpu['cpu_percent']:.2f} % of a core |""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
