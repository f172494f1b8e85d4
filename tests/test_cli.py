"""The ``nbwork`` command, run for real in subprocesses on temporary stores (``--store``)."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbwork import ExistingWorkPolicy, OneTimeWorkRequest, WorkManager, WorkState, cli
from nbwork._lock import holder_pid
from nbwork.examples import SleepWorker
from nbwork.imaging import IMAGE_MANIPULATION_WORK_NAME, SAVED_DIR_NAME, sample_images
from tests import helpers
from tests.conftest import stop_scheduler, wait_until
from tests.helpers import is_dead

CLI = [sys.executable, "-m", "nbwork.cli"]

# Before the store's teardown, every scheduler a client spawned must hold the lock or be gone.
pytestmark = pytest.mark.usefixtures("settle_schedulers")



def nbwork(*args: str, store: str | None = None, expect: int | None = 0,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``nbwork ARGS --store STORE``; check the exit code (unless ``expect`` is None)."""
    command = [*CLI, *args] + (["--store", store] if store else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    if expect is not None:
        assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
    return done


def saved_path(stdout: str) -> Path:
    match = re.search(r"^saved: (.+)$", stdout, re.MULTILINE)
    assert match, stdout
    return Path(match.group(1))


def sharpness(path) -> float:
    a = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    return float((np.diff(a, axis=0) ** 2).mean() + (np.diff(a, axis=1) ** 2).mean())


def listed(store: str, *filters: str) -> list[dict]:
    return json.loads(nbwork("list", "--json", *filters, store=store).stdout)


@pytest.mark.slow
def test_demo_runs_blur_o_matic_and_prints_the_saved_image(store_path):
    done = nbwork("demo", store=store_path)
    saved = saved_path(done.stdout)
    assert saved.is_file() and saved.parent == Path(store_path, SAVED_DIR_NAME)
    shapes = next(p for p in sample_images() if p.stem == "shapes")
    assert sharpness(saved) < 0.3 * sharpness(shapes)      # level 3: clearly blurry
    # The last line opens the notebooks from any folder: an absolute path, and the install.
    last = done.stdout.strip().splitlines()[-1]
    match = re.search(r"jupyter lab (\S+)", last)
    assert match and Path(match.group(1)).is_absolute(), last
    assert (Path(match.group(1)) / "blur_o_matic.ipynb").is_file()
    assert "pip install jupyterlab" in last
    works = listed(store_path, "--unique", IMAGE_MANIPULATION_WORK_NAME)
    assert len(works) == 5 and {w["state"] for w in works} == {"SUCCEEDED"}


@pytest.mark.slow
def test_blur_saves_into_out_and_store_may_come_first(store_path, tmp_path):
    out = tmp_path / "gallery"
    done = nbwork("--store", store_path, "blur", str(sample_images()[0]), "--level", "2",
                  "--out", str(out))
    saved = saved_path(done.stdout)
    assert saved.parent == out and re.fullmatch(r"blurred-[\d-]+\.png", saved.name)
    assert store_path in done.stdout
    assert len(listed(store_path)) == 4                    # cleanup, 2 blurs, save


@pytest.mark.slow
def test_blur_detach_then_list_show_and_logs(store_path):
    done = nbwork("blur", str(sample_images()[1]), "--detach", store=store_path)
    assert "nbwork list --unique" in done.stdout and "nbwork show" in done.stdout
    works = listed(store_path, "--unique", IMAGE_MANIPULATION_WORK_NAME)
    assert len(works) == 3
    infos = WorkManager(store_path).wait([w["id"] for w in works], timeout=60)
    assert {i.state for i in infos} == {WorkState.SUCCEEDED}
    save = next(w for w in works if w["worker"].endswith("SaveImageToFileWorker"))
    assert save["tags"] == ["OUTPUT"]
    shown = json.loads(nbwork("show", save["id"][:8], "--json", store=store_path).stdout)
    assert Path(shown["output"]["image_uri"]).is_file() and shown["state"] == "SUCCEEDED"
    text = nbwork("show", save["id"][:8], store=store_path).stdout
    assert "state: SUCCEEDED" in text and shown["output"]["image_uri"] in text
    table = nbwork("list", store=store_path).stdout
    assert "SaveImageToFileWorker" in table and save["id"][:8] in table
    assert nbwork("logs", save["id"], store=store_path).stdout == ""
    assert listed(store_path, "--state", "FAILED") == []


@pytest.mark.slow
def test_logs_and_the_error_of_a_failed_work(store_path):
    wm = WorkManager(store_path)
    talk, fail = OneTimeWorkRequest(helpers.chatty), OneTimeWorkRequest(helpers.boom)
    wm.enqueue([talk, fail])
    wm.wait([talk, fail], timeout=60)
    log = nbwork("logs", talk.id[:8], store=store_path).stdout
    assert "to-stdout: hello from the worker" in log and "to-stderr: warning" in log
    shown = nbwork("show", fail.id, store=store_path).stdout
    assert "state: FAILED" in shown and "ValueError: boom-4711" in shown
    assert [w["state"] for w in listed(store_path, "--state", "FAILED")] == ["FAILED"]


def _table_ids(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines()[1:]]


@pytest.mark.slow
def test_list_shows_a_chain_in_chain_order(store_path):
    wm = WorkManager(store_path)
    steps = [OneTimeWorkRequest(helpers.echo, initial_delay=3600)] + [
        OneTimeWorkRequest(helpers.echo) for _ in range(7)]
    chain = wm.begin_with(steps[0])
    for step in steps[1:]:
        chain = chain.then(step)
    chain.enqueue()
    expected = [r.id for r in steps]
    assert _table_ids(nbwork("list", store=store_path).stdout) == [i[:8] for i in expected]
    assert [w["id"] for w in listed(store_path)] == expected


@pytest.mark.slow
def test_a_work_failed_by_its_prerequisite_names_it_in_show_and_list(store_path):
    wm = WorkManager(store_path)
    bad, after = OneTimeWorkRequest(helpers.boom), OneTimeWorkRequest(helpers.echo)
    wm.begin_with(bad).then(after).enqueue()
    wm.wait([bad, after], timeout=60)
    named = f"prerequisite {bad.id[:8]} (boom) failed"
    assert named in nbwork("show", after.id[:8], store=store_path).stdout
    table = nbwork("list", store=store_path).stdout.splitlines()
    assert table[0].split()[-1] == "NOTE"
    assert table[1].startswith(bad.id[:8]) and "ValueError: boom-4711" in table[1]
    assert table[2].startswith(after.id[:8]) and named in table[2]


@pytest.mark.slow
def test_logs_and_show_of_a_work_that_printed_nothing_say_so(store_path):
    wm = WorkManager(store_path)
    silent, talk = OneTimeWorkRequest(helpers.echo), OneTimeWorkRequest(helpers.chatty)
    wm.enqueue([silent, talk])
    wm.wait([silent, talk], timeout=60)
    logs = nbwork("logs", silent.id[:8], store=store_path)
    assert logs.stdout == ""                             # stdout stays the log itself
    assert f"work {silent.id[:8]} (SUCCEEDED) has printed nothing" in logs.stderr
    shown = nbwork("show", silent.id, store=store_path).stdout
    assert "log_path: - (it has printed nothing)" in shown and ".log" not in shown
    assert json.loads(nbwork("show", silent.id, "--json", store=store_path).stdout)[
        "log_path"] is None
    talked = json.loads(nbwork("show", talk.id, "--json", store=store_path).stdout)
    assert Path(talked["log_path"]).is_file()
    assert nbwork("logs", talk.id, store=store_path).stderr == ""


def test_every_argument_has_help_and_shows_its_default():
    from nbwork.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert commands.help
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, (name, action.dest)
        text = sub.format_help()
        assert "(default: $NBWORK_HOME" in text, name
        if name in ("demo", "blur", "batch"):
            level = next(a for a in sub._actions if a.dest == "level")
            # Not the same default everywhere, so the help says why.
            assert f"(default: {level.default}: " in " ".join(text.split()), name
            assert "(default: blurred_images" in " ".join(text.split()) or name == "batch"
    demo = commands.choices["demo"].format_help()
    assert "blur and batch default to 1" in " ".join(demo.split())


def _folder(tmp_path) -> Path:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for path in sample_images()[:2]:
        shutil.copy(path, folder)
    (folder / "corrupt.jpg").write_bytes(sample_images()[0].read_bytes()[:300])
    return folder


@pytest.mark.slow
def test_batch_blurs_a_folder_and_names_the_corrupt_file(store_path, tmp_path):
    folder, out = _folder(tmp_path), tmp_path / "out"
    done = nbwork("batch", str(folder), "--out", str(out), store=store_path, expect=1)
    assert "blurred 2 of 3 images" in done.stdout
    assert f"contact sheet: {out / 'contact-sheet.png'}" in done.stdout
    assert re.search(r"failed: .*corrupt\.jpg: .*truncated", done.stderr), done.stderr
    report = json.loads((out / "report.json").read_text())
    states = {Path(e["source"]).name: e["state"] for e in report["images"]}
    assert states == {"corrupt.jpg": "FAILED",
                      **{p.name: "SUCCEEDED" for p in sample_images()[:2]}}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["contact-sheet.png", "report.json"] +
        [f"blurred-{p.stem}.png" for p in sample_images()[:2]])


@pytest.mark.slow
def test_batch_detach_returns_at_once(store_path, tmp_path):
    done = nbwork("batch", str(_folder(tmp_path)), "--level", "1", "--detach",
                  store=store_path)
    tag = re.search(r"nbwork list --tag (\S+)", done.stdout).group(1)
    works = listed(store_path, "--tag", tag)
    assert len(works) == 6                                  # 3 x (blur, save)
    sheet = re.search(r"nbwork show (\w+)", done.stdout).group(1)
    sheet_id = json.loads(nbwork("show", sheet, "--json", store=store_path).stdout)["id"]
    info = WorkManager(store_path).wait(sheet_id, timeout=60)
    assert info.state is WorkState.SUCCEEDED and info.output_data["failed"] == 1
    assert info.run_attempt_count == 1   # it waited for the branches, not by retrying
    assert Path(info.output_data["contact_sheet"]).is_file()


@pytest.mark.slow
def test_cancel_by_id_tag_unique_and_all_then_prune(store_path):
    wm = WorkManager(store_path)
    by_id, by_tag, by_all = (OneTimeWorkRequest(SleepWorker, initial_delay=3600, tags=[t])
                             for t in ("one", "two", "three"))
    unique = OneTimeWorkRequest(SleepWorker, initial_delay=3600)
    wm.enqueue([by_id, by_tag, by_all])
    wm.enqueue_unique_work("nightly", ExistingWorkPolicy.KEEP, unique)

    def state(request):
        return wm.get_work_info_by_id(request.id).state

    assert "cancelled" in nbwork("cancel", by_id.id[:8], store=store_path).stdout
    assert state(by_id) is WorkState.CANCELLED and state(by_tag) is WorkState.ENQUEUED
    nbwork("cancel", "--tag", "two", store=store_path)
    assert state(by_tag) is WorkState.CANCELLED and state(by_all) is WorkState.ENQUEUED
    nbwork("cancel", "--unique", "nightly", store=store_path)
    assert state(unique) is WorkState.CANCELLED and state(by_all) is WorkState.ENQUEUED
    nbwork("cancel", "--all", store=store_path)
    assert state(by_all) is WorkState.CANCELLED
    assert nbwork("prune", store=store_path).stdout.strip() == "pruned 4 finished works"
    assert "no work in" in nbwork("list", store=store_path).stdout


@pytest.mark.slow
def test_daemon_start_status_stop(store_path):
    started = nbwork("daemon", "start", store=store_path).stdout
    pid = int(re.search(r"pid (\d+)", started).group(1))
    status = nbwork("daemon", "status", store=store_path).stdout
    assert f"running, pid {pid}" in status and "work: none" in status
    assert nbwork("daemon", "stop", store=store_path).stdout.strip() == "scheduler stopped"
    wait_until(lambda: is_dead(pid), what="the scheduler to exit")
    assert "scheduler: not running" in nbwork("daemon", "status", store=store_path).stdout
    assert "no scheduler was running" in nbwork("daemon", "stop", store=store_path).stdout


@pytest.mark.slow
def test_daemon_run_holds_the_store_in_the_foreground_until_stopped(store_path):
    process = subprocess.Popen([*CLI, "daemon", "run", "--store", store_path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: holder_pid(store_path) == process.pid or process.poll() is not None,
                   what="the foreground scheduler to take the store")
        assert holder_pid(store_path) == process.pid, process.communicate(timeout=10)
        assert f"running, pid {process.pid}" in nbwork("daemon", "status",
                                                       store=store_path).stdout
        wm = WorkManager(store_path)
        request = OneTimeWorkRequest(SleepWorker, input_data={"seconds": 0})
        wm.enqueue(request)
        assert wm.wait(request.id, timeout=60).state is WorkState.SUCCEEDED
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, (stdout, stderr)
    assert holder_pid(store_path) is None


@pytest.mark.slow
def test_ctrl_c_detaches_and_the_blur_goes_on(store_path, tmp_path):
    big = tmp_path / "big.bmp"
    pixels = np.random.default_rng(1).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(big)
    process = subprocess.Popen([*CLI, "blur", str(big), "--store", store_path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=helpers.interruptible)
    try:
        assert process.stdout.readline().startswith("enqueued Blur-O-Matic")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (stdout, stderr)
    assert "detached" in stderr and "nbwork show" in stderr and "Traceback" not in stderr
    wm = WorkManager(store_path)
    ids = [i.id for i in wm.get_work_infos_for_unique_work(IMAGE_MANIPULATION_WORK_NAME)]
    assert len(ids) == 3
    infos = wm.wait(ids, timeout=120)
    assert {i.state for i in infos} == {WorkState.SUCCEEDED}   # it went on without us


@pytest.mark.parametrize("args, message", [
    (["blur", "/no/such/image.png"], "no such file"),
    (["blur", "{text}"], "not an image"),
    (["blur", "{sample}", "--level", "5"], "invalid choice: 5"),
    (["blur", "{sample}", "--level", "two"], "invalid int value"),
    (["blur", "{sample}", "--out", "{text}"], "is a file"),
    (["blur", "{sample}", "--out", "{text}/sub"], "cannot be created"),
    (["blur", "{sample}", "--out", "/proc/nbwork-out"], "cannot be created"),
    (["demo", "--out", "/proc/nbwork-out"], "cannot be created"),
    (["batch", "{samples}", "--out", "/proc/nbwork-out/batch"], "cannot be created"),
    (["blur"], "required: image"),
    (["batch", "/no/such/folder"], "no such folder"),
    (["batch", "{empty}"], "no images"),
    (["show", "ffffffff"], "is not an nbwork store"),   # (the store does not exist)
    (["logs", "ffffffff"], "is not an nbwork store"),
    (["cancel"], "say what to cancel"),
    (["list", "--state", "bogus"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_user_mistakes_are_one_line_and_a_non_zero_exit(store_path, tmp_path, capsys,
                                                         args, message):
    """Run in this process (the argument handling is the same; the fast lane keeps it):
    ``test_a_mistake_from_the_real_command_is_one_line`` runs one as a real command."""
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    (tmp_path / "empty").mkdir()
    values = {"text": str(text), "sample": str(sample_images()[0]),
              "empty": str(tmp_path / "empty"), "samples": str(sample_images()[0].parent)}
    try:
        code = cli.main([*[a.format(**values) for a in args], "--store", store_path])
    except SystemExit as exc:  # argparse's mistakes end in parser.exit()
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbwork") and "error" in lines[0], lines
    assert message in lines[0]
    assert out == ""
    if Path(store_path).exists():
        assert WorkManager(store_path).get_work_infos() == []   # nothing was enqueued


@pytest.mark.slow
def test_a_mistake_from_the_real_command_is_one_line(store_path):
    done = nbwork("show", "ffffffff", store=store_path, expect=2)
    # (The store does not exist: a read-only command says so and creates nothing.)
    assert done.stdout == "" and done.stderr.startswith("nbwork: error: ")
    assert "is not an nbwork store" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_store_given_after_the_command_is_not_the_default(tmp_path, monkeypatch):
    """Every command takes --store; none of them touches $NBWORK_HOME when it is given."""
    home, store = tmp_path / "home", tmp_path / "elsewhere"
    monkeypatch.setenv("NBWORK_HOME", str(home))
    try:
        nbwork("blur", str(sample_images()[0]), "--detach", "--store", str(store))
        assert WorkManager(str(store)).get_work_infos() and not home.exists()
    finally:
        wait_until(lambda: helpers.all_schedulers_settled(str(store)), what="schedulers to settle")
        stop_scheduler(str(store))
