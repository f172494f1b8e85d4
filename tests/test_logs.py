"""Work logs: nothing an attempt writes is lost (however big its writes, whoever writes), a
log is capped with a visible cut, and ``read_log`` reads a bounded tail of a valid id."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from nbwork import OneTimeWorkRequest, WorkManager, WorkState
from nbwork.errors import InvalidInputError
from tests.conftest import wait_until
from tests.reliability import scheduler_log

CHUNK = 1 << 20


def _chunk(tag: str, n: int) -> bytes:
    head = f"<{tag}:{n}>".encode()
    return head + b"." * (CHUNK - 2 * len(head) - 1) + head + b"\n"


def write_chunks(tag: str, chunks: int, pause: float, child_after: float) -> dict:
    """Starts a child process that prints a line after ``child_after`` seconds (it writes
    to the stdout it inherited), and writes ``chunks`` chunks of 1 MiB to fd 1, ``pause``
    seconds apart; waits for the child."""
    child = subprocess.Popen([sys.executable, "-c",
                              f"import time; time.sleep({child_after}); print('child of {tag}')"])
    for n in range(chunks):
        os.write(1, _chunk(tag, n))
        time.sleep(pause)
    child.wait()
    return {}


def _expected(tag: str, chunks: int) -> bytes:
    return b"".join(_chunk(tag, n) for n in range(chunks)) + f"child of {tag}\n".encode()


@pytest.mark.slow
def test_no_output_is_lost_when_many_works_write_big_chunks(wm):
    """40 works each write 6 MiB in 1 MiB writes across the moment their log starts being
    followed live, while a process they started writes too: every byte arrives, in order.
    (Before: the hand-over to the log lost the write in flight, and everything a child
    process wrote after it.)"""
    chunks = 6
    requests = [OneTimeWorkRequest(write_chunks, input_data={
        "tag": f"w{i}", "chunks": chunks, "pause": 0.15, "child_after": 0.8})
        for i in range(40)]
    wm.enqueue(requests)
    infos = wm.wait([r.id for r in requests], timeout=600)
    assert [i.state for i in infos] == [WorkState.SUCCEEDED] * len(requests)
    wrong = []
    for i, request in enumerate(requests):
        with open(wm._store.log_path(request.id), "rb") as f:
            got = f.read()
        if got != _expected(f"w{i}", chunks):
            seen = re.findall(rb"<(w\d+:\d+)>", got)[::2]
            wrong.append(f"w{i}: {len(got)} bytes, chunks {seen}, child {b'child of' in got}")
    assert wrong == []


def flood(megabytes: int, last: str) -> dict:
    """Writes ``megabytes`` MiB, then ``last``; outputs the disk space its stdout's file
    takes by then."""
    for n in range(megabytes):
        os.write(1, _chunk("flood", n))
        time.sleep(0.04)
    print(last, flush=True)
    return {"stdout_disk_bytes": os.fstat(1).st_blocks * 512}


@pytest.mark.slow
def test_a_log_is_capped_with_a_marker_and_keeps_its_end(store_path, monkeypatch):
    limit = 1 << 20
    monkeypatch.setenv("NBWORK_LOG_MAX_BYTES", str(limit))
    wm = WorkManager(store_path)
    request = OneTimeWorkRequest(flood, input_data={"megabytes": 40, "last": "THE-END"})
    wm.enqueue(request)
    info = wm.wait(request.id, timeout=300)
    assert info.state is WorkState.SUCCEEDED
    # Past the cap, what was copied is freed as it comes: the flood did not fill the disk.
    assert info.output_data["stdout_disk_bytes"] < 20 * CHUNK
    with open(wm._store.log_path(request.id), "rb") as f:
        log = f.read()
    assert len(log) <= limit + 200
    assert log.startswith(_chunk("flood", 0)[:CHUNK // 2])
    assert log.endswith(b"<flood:39>\nTHE-END\n")
    marker = re.search(rb"\n\[nbwork: (\d+) bytes of output cut here: a work's log is capped "
                       rb"at 1048576 bytes \(NBWORK_LOG_MAX_BYTES\); the last (\d+) bytes "
                       rb"follow\]\n", log)
    assert marker, log[:200]
    cut, tail = int(marker.group(1)), int(marker.group(2))
    kept = marker.start() + tail
    assert log[marker.end():] and len(log) - marker.end() == tail
    total = 40 * CHUNK + len(b"THE-END\n")
    assert total - kept - cut >= 0 and cut > 36 * CHUNK  # the middle was cut, no more


def test_read_log_refuses_what_is_not_a_work_id(store_path):
    wm = WorkManager(store_path)
    outside = os.path.join(os.path.dirname(store_path), "x.log")
    with open(outside, "w") as f:
        f.write("a file outside the logs")
    for bad in ("../../x", "../x", "/etc/passwd", "", "abc"):
        with pytest.raises(InvalidInputError, match="is not a work id: a work id is a UUID"):
            wm.read_log(bad)
    with pytest.raises(ValueError):  # InvalidInputError is a ValueError too
        wm.read_log("../../x")


def test_read_log_reads_a_bounded_tail(store_path):
    wm = WorkManager(store_path)
    work_id = str(uuid.uuid4())
    with open(wm._store.log_path(work_id), "w") as f:
        f.write("a" * 100 + "the end\n")
    assert wm.read_log(work_id, max_bytes=None) == "a" * 100 + "the end\n"
    assert wm.read_log(work_id.upper()) == "a" * 100 + "the end\n"  # any spelling of a UUID
    assert wm.read_log(work_id, max_bytes=8) == (
        "[nbwork: 100 earlier bytes of this log not shown; read_log(id, max_bytes=None) "
        "reads all of it]\nthe end\n")
    big = str(uuid.uuid4())
    with open(wm._store.log_path(big), "wb") as f:
        f.truncate(3 << 20)  # 3 MiB: the default reads the last 1 MiB only
    assert len(wm.read_log(big)) < (1 << 20) + 200
    assert wm.read_log(str(uuid.uuid4())) == ""
    with pytest.raises(InvalidInputError, match="max_bytes"):
        wm.read_log(work_id, max_bytes=-1)


@pytest.mark.slow
def test_a_bad_log_cap_is_said_and_the_default_used(store_path, monkeypatch):
    monkeypatch.setenv("NBWORK_LOG_MAX_BYTES", "lots")
    wm = WorkManager(store_path)
    request = OneTimeWorkRequest(flood, input_data={"megabytes": 1, "last": "done"})
    wm.enqueue(request)
    assert wm.wait(request.id, timeout=120).state is WorkState.SUCCEEDED
    assert wm.read_log(request.id, max_bytes=None).endswith("done\n")
    wait_until(lambda: "NBWORK_LOG_MAX_BYTES='lots' is not a number of bytes"
               in scheduler_log(store_path), what="the scheduler log to say the cap is wrong")
