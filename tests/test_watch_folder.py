"""Hot folders (``wm.watch_folder``): real files, a real scheduler and its supervisor.

Workers append ``path<TAB>work id`` to a side file, so the tests count real executions,
not records."""

from __future__ import annotations

import os
import pwd
import signal
import threading
import time

import psutil
import pytest

from nbwork import (
    InvalidInputError,
    InvalidRequestError,
    OneTimeWorkRequest,
    Result,
    Worker,
    WorkManager,
    WorkState,
)
from nbwork._lock import holder_pid
from tests.conftest import wait_until

SIDE = "NBWORK_TEST_SIDE_FILE"


class RecordWorker(Worker):
    """Appends one line per real execution: the path, the work id, the size it read."""

    def do_work(self) -> Result:
        path = self.input_data["path"]
        with open(path, "rb") as f:
            size = len(f.read())
        line = f"{path}\t{self.id}\t{size}\n"
        fd = os.open(os.environ[SIDE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return Result.success({"size": size})


def request_with_tag(path: str) -> OneTimeWorkRequest:
    """A ``request_for_file`` function: the path as input, a tag of its own."""
    return OneTimeWorkRequest(RecordWorker, input_data={"path": path}, tags=["made"])


@pytest.fixture
def side(tmp_path, monkeypatch):
    path = tmp_path / "side.txt"
    monkeypatch.setenv(SIDE, str(path))  # inherited by the scheduler and its workers
    return path


@pytest.fixture
def inbox(tmp_path):
    path = tmp_path / "inbox"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    return path


def _lines(side) -> list[list[str]]:
    if not side.exists():
        return []
    return [line.split("\t") for line in side.read_text().splitlines()]


def _finished(wm: WorkManager, tag: str, count: int) -> bool:
    infos = wm.get_work_infos_by_tag(tag)
    return len(infos) >= count and all(i.state.is_finished for i in infos)


def _write_files(folder, names, pause: float = 0.0) -> None:
    for name in names:
        (folder / name).write_bytes(name.encode() * 10)
        if pause:
            time.sleep(pause)


# --- bad input --------------------------------------------------------------------------


def test_a_missing_folder_is_refused(wm, tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist; create the folder first"):
        wm.watch_folder("w", tmp_path / "nope", RecordWorker)
    assert wm.watches() == []


def test_a_file_is_not_a_folder(wm, tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        wm.watch_folder("w", tmp_path / "a.png", RecordWorker)


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_folder_others_can_write_is_refused_as_a_store_would_be(wm, inbox, mode):
    os.chmod(inbox, mode)
    with pytest.raises(InvalidInputError, match=r"can be written by other users.*chmod go-w"):
        wm.watch_folder("w", inbox, RecordWorker)
    assert wm.watches() == []


def test_a_folder_of_another_user_is_refused(wm, inbox):
    if os.getuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(inbox, nobody, -1)
    with pytest.raises(InvalidInputError, match=f"belongs to another user \\(uid {nobody}\\)"):
        wm.watch_folder("w", inbox, RecordWorker)


def test_a_symlink_loop_is_refused(wm, tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(InvalidInputError, match="symbolic link loop"):
        wm.watch_folder("w", tmp_path / "a", RecordWorker)


def test_other_bad_arguments_are_refused(wm, inbox):
    with pytest.raises(InvalidInputError, match="pattern must be a file-name pattern"):
        wm.watch_folder("w", inbox, RecordWorker, pattern="sub/*.png")
    with pytest.raises(InvalidInputError, match="settle must be zero or more"):
        wm.watch_folder("w", inbox, RecordWorker, settle=-1)
    with pytest.raises(InvalidRequestError, match="request_for_file must be a Worker class"):
        wm.watch_folder("w", inbox, OneTimeWorkRequest(RecordWorker))
    with pytest.raises(InvalidRequestError, match="non-empty string"):
        wm.watch_folder("", inbox, RecordWorker)
    assert wm.watches() == []
    assert wm.stop_watching("w") is False


# --- behaviour ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_pattern_that_matches_nothing_waits_and_a_loop_inside_is_not_followed(
        wm, inbox, side):
    os.symlink(inbox, inbox / "loop")  # a link back to the folder itself
    watch = wm.watch_folder("pics", inbox, request_with_tag, pattern="*.png", settle=0.2)
    assert [w.name for w in wm.watches()] == ["pics"] and watch.tag == "watch:pics"
    (inbox / "notes.txt").write_text("not a png")
    (inbox / ".hidden.png").write_bytes(b"a partial download")
    (inbox / "a.png").write_bytes(b"png")
    wait_until(lambda: _finished(wm, "watch:pics", 1), what="a.png's work")
    infos = wm.get_work_infos_by_tag("watch:pics")
    assert [i.input_data["path"] for i in infos] == [str(inbox / "a.png")]
    assert infos[0].unique_work_name == "watch:pics:a.png"
    assert infos[0].tags == {"made", "watch:pics"}
    assert [line[0] for line in _lines(side)] == [str(inbox / "a.png")]


@pytest.mark.slow
def test_a_burst_of_1000_files_is_processed_exactly_once(wm, inbox, side):
    wm.watch_folder("burst", inbox, RecordWorker, settle=0.2)
    names = [f"f{i:04d}.dat" for i in range(1000)]
    _write_files(inbox, names)
    wait_until(lambda: _finished(wm, "watch:burst", 1000), timeout=240,
               what="1,000 works to finish")
    infos = wm.get_work_infos_by_tag("watch:burst")
    assert len(infos) == 1000
    assert {i.state for i in infos} == {WorkState.SUCCEEDED}
    lines = _lines(side)
    assert sorted(line[0] for line in lines) == sorted(str(inbox / n) for n in names)


@pytest.mark.slow
def test_a_killed_scheduler_resumes_the_watch_and_takes_each_file_once(wm, inbox, side):
    wm.watch_folder("chaos", inbox, RecordWorker, settle=0.2)
    pid = wm.daemon.start()
    supervisor = psutil.Process(pid).parent()
    names = [f"c{i:03d}.dat" for i in range(300)]
    writer = threading.Thread(target=_write_files, args=(inbox, names[:150], 0.005))
    writer.start()
    wait_until(lambda: len(_lines(side)) >= 40, timeout=120, what="the burst to be under way")
    os.kill(pid, signal.SIGKILL)
    writer.join()
    # Files that arrive while no scheduler runs (the supervisor restarts it in a moment).
    _write_files(inbox, names[150:])
    wait_until(lambda: holder_pid(wm.store_path) not in (None, pid), timeout=60,
               what="the supervisor to restart the scheduler")
    assert psutil.Process(holder_pid(wm.store_path)).parent().pid == supervisor.pid
    wait_until(lambda: _finished(wm, "watch:chaos", 300), timeout=240,
               what="300 works to finish")
    infos = wm.get_work_infos_by_tag("watch:chaos")
    assert len(infos) == 300  # one work per file: none enqueued twice
    assert {i.state for i in infos} == {WorkState.SUCCEEDED}
    by_path: dict[str, set[str]] = {}
    for path, work_id, _ in _lines(side):
        by_path.setdefault(path, set()).add(work_id)
    assert sorted(by_path) == sorted(str(inbox / n) for n in names)
    assert all(len(ids) == 1 for ids in by_path.values())
    # An attempt cut short by the kill runs again (at-least-once, as WorkManager); that
    # is the only way a file's work may show twice in the side file.
    again = {i.id for i in infos if i.run_attempt_count > 1}
    counts: dict[str, int] = {}
    for _, work_id, _ in _lines(side):
        counts[work_id] = counts.get(work_id, 0) + 1
    assert {w for w, n in counts.items() if n > 1} <= again


@pytest.mark.slow
def test_a_file_written_slowly_is_taken_once_whole_after_it_settles(wm, inbox, side):
    wm.watch_folder("slow", inbox, RecordWorker, settle=1.0)
    wm.daemon.start()
    chunk = b"x" * 1000
    with open(inbox / "big.dat", "wb") as f:
        for _ in range(30):  # 3 s of writing
            f.write(chunk)
            f.flush()
            time.sleep(0.1)
    wait_until(lambda: _finished(wm, "watch:slow", 1), timeout=60, what="the work")
    lines = _lines(side)
    assert [(line[0], int(line[2])) for line in lines] == [(str(inbox / "big.dat"), 30_000)]
    assert len(wm.get_work_infos_by_tag("watch:slow")) == 1


@pytest.mark.slow
def test_the_watch_is_durable_and_a_file_runs_again_only_for_new_content(wm, inbox, side):
    wm.watch_folder("keep", inbox, RecordWorker, settle=0.2)
    (inbox / "one.dat").write_bytes(b"1")
    wait_until(lambda: _finished(wm, "watch:keep", 1), what="one.dat")
    assert wm.daemon.stop()
    # While no scheduler runs: a new file, and the old one unchanged.
    (inbox / "two.dat").write_bytes(b"22")
    again = WorkManager(wm.store_path)  # a client after a reboot: it resumes the watch
    wait_until(lambda: _finished(again, "watch:keep", 2), what="two.dat")
    (inbox / "two.dat").write_bytes(b"new content")
    wait_until(lambda: len(_lines(side)) == 3, what="two.dat's new content")
    assert sorted((line[0], line[2]) for line in _lines(side)) == [
        (str(inbox / "one.dat"), "1"), (str(inbox / "two.dat"), "11"),
        (str(inbox / "two.dat"), "2")]
    assert again.stop_watching("keep")
    assert again.watches() == []


def picky_request(path: str) -> OneTimeWorkRequest:
    """A ``request_for_file`` with bugs: it raises for some files, returns the wrong thing
    for others."""
    if path.endswith(".raise"):
        raise ValueError("this function does not like .raise files")
    if path.endswith(".none"):
        return None  # type: ignore[return-value]
    return OneTimeWorkRequest(RecordWorker, input_data={"path": path})


SAME = OneTimeWorkRequest(RecordWorker, input_data={"path": "the same request every time"})


def same_request(path: str) -> OneTimeWorkRequest:
    return SAME  # one request enqueued twice: refused for the second file only


@pytest.mark.slow
def test_a_faulty_request_for_file_costs_its_own_file_only(wm, inbox, side, tmp_path):
    wm.watch_folder("picky", inbox, picky_request, settle=0.1)
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    wm.watch_folder("same", other, same_request, settle=0.1)
    for name in ("a.raise", "b.none", "c.ok"):
        (inbox / name).write_text(name)
    for name in ("x", "y"):
        (other / name).write_text(name)
    wait_until(lambda: _finished(wm, "watch:picky", 1) and _finished(wm, "watch:same", 1),
               what="the good files' works")
    pid = wm.daemon.pid
    (inbox / "d.ok").write_text("later")  # the scheduler still watches, and is the same one
    wait_until(lambda: _finished(wm, "watch:picky", 2), what="a later file")
    assert wm.daemon.pid == pid
    assert sorted(os.path.basename(i.input_data["path"])
                  for i in wm.get_work_infos_by_tag("watch:picky")) == ["c.ok", "d.ok"]
    assert len(wm.get_work_infos_by_tag("watch:same")) == 1
    with open(os.path.join(wm.store_path, "scheduler.log")) as f:
        log = f.read()
    assert "does not like .raise files" in log and "must return a OneTimeWorkRequest" in log
    assert "returned for another file" in log or "was already enqueued" in log


@pytest.mark.slow
def test_without_notifications_the_folder_is_listed_instead(wm, inbox, side, monkeypatch):
    """What a network share gets (inotify sees no other machine's writes there)."""
    monkeypatch.setenv("NBWORK_WATCH_POLL", "1")  # inherited by the scheduler
    wm.watch_folder("polled", inbox, RecordWorker, settle=0.2)
    wm.daemon.start()
    (inbox / "remote.dat").write_text("written by another machine")
    wait_until(lambda: _finished(wm, "watch:polled", 1), what="the listed file's work")
    assert [line[0] for line in _lines(side)] == [str(inbox / "remote.dat")]
    with open(os.path.join(wm.store_path, "scheduler.log")) as f:
        assert "is on a network share: listed every" in f.read()


@pytest.mark.slow
def test_blur_o_matics_blur_worker_can_be_watched_directly(wm, inbox, tmp_path):
    import shutil

    from nbwork.imaging import BlurWorker, sample_images

    wm.watch_folder("pics", inbox, BlurWorker, pattern="*.png", settle=0.2)
    shutil.copy(sample_images()[0], inbox / "photo.png")
    wait_until(lambda: _finished(wm, "watch:pics", 1), timeout=60, what="the blur")
    info = wm.get_work_infos_by_tag("watch:pics")[0]
    assert info.state is WorkState.SUCCEEDED, info.error
    assert os.path.isfile(info.output_data["image_uri"])
