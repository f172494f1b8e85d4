"""``nbwork watch``: Blur-O-Matic's hot folder, run for real in a subprocess."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from nbwork import WorkManager, WorkState
from nbwork.imaging import sample_images
from tests import helpers
from tests.conftest import wait_until

CLI = [sys.executable, "-m", "nbwork.cli"]

pytestmark = pytest.mark.usefixtures("settle_schedulers")


def _run(*args: str, store: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args, "--store", store], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def inbox(tmp_path):
    path = tmp_path / "inbox"
    path.mkdir()
    os.chmod(path, 0o755)
    return path


def test_watch_refuses_a_missing_folder_and_an_output_inside_it(store_path, tmp_path, inbox):
    done = _run("watch", str(tmp_path / "nope"), store=store_path)
    assert done.returncode == 2
    assert "does not exist; create the folder first" in done.stderr
    assert "Traceback" not in done.stderr
    done = _run("watch", str(inbox), "--out", str(inbox / "out"), store=store_path)
    assert done.returncode == 2 and "inside the watched folder" in done.stderr
    done = _run("watch", "--stop", "nothing", store=store_path)
    assert done.returncode == 2 and "no watch named 'nothing'" in done.stderr


@pytest.mark.slow
def test_watch_blurs_each_image_with_a_line_per_file_and_ctrl_c_detaches(
        store_path, tmp_path, inbox):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [*CLI, "watch", str(inbox), "--out", str(out), "--level", "2", "--settle", "0.3",
         "--store", store_path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=helpers.interruptible)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout],
                     daemon=True).start()
    seen: list[str] = []

    def line_with(text: str) -> bool:
        while not lines.empty():
            seen.append(lines.get())
        return any(text in line for line in seen)

    try:
        wait_until(lambda: line_with("watching"), timeout=60, what="the watch to start")
        shutil.copy(sample_images()[0], inbox / "photo.png")
        (inbox / "notes.txt").write_text("not an image")
        wait_until(lambda: line_with("photo.png  SUCCEEDED") and line_with("notes.txt  FAILED"),
                   timeout=120, what="both files' lines")
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130  # detached, as every following command
    assert "detached; the watch 'hot-inbox' goes on" in err and "Traceback" not in err
    assert (out / "blurred-photo.png").is_file()
    failed = next(line for line in seen if "notes.txt  FAILED" in line)
    assert "not an image" in failed or "cannot identify" in failed or "image" in failed
    wm = WorkManager(store_path)
    states = {os.path.basename(str(i.input_data["path"])): i.state
              for i in wm.get_work_infos_by_tag("watch:hot-inbox")}
    assert states == {"photo.png": WorkState.SUCCEEDED, "notes.txt": WorkState.FAILED}

    status = _run("daemon", "status", store=store_path)
    assert f"watching: {inbox} (hot-inbox)" in status.stdout
    listed = _run("watch", "--list", store=store_path)
    assert listed.returncode == 0 and "hot-inbox" in listed.stdout and str(inbox) in listed.stdout
    # The watch went on after Ctrl-C: a new image is still blurred.
    shutil.copy(sample_images()[1], inbox / "second.png")
    wait_until(lambda: (out / "blurred-second.png").is_file(), timeout=60,
               what="the second image, after the detach")
    stopped = _run("watch", "--stop", "hot-inbox", store=store_path)
    assert stopped.returncode == 0 and "stopped watching" in stopped.stdout
    assert wm.watches() == []
