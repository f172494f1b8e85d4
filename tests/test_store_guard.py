"""The store cannot be swapped, widened or silently replaced, and one bad record does not stop
it: the path is walked and opened safely, what is in it must be the owner's, a vanished or
damaged database is refused, and an undecodable record or index shard is reported (or
rebuilt) while everything else goes on."""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from nbwork import (
    Constraints,
    InvalidRequestError,
    OneTimeWorkRequest,
    PeriodicWorkRequest,
    StoreError,
    WorkManager,
    WorkQuery,
    WorkState,
    _ops,
    _storedir,
)
from nbwork._code import serialize_worker
from nbwork._daemon import Daemon, open_log
from nbwork._lock import SchedulerLock, holder_pid, last_holder_pid
from nbwork._records import spec_of_request as _spec_of
from nbwork._spec import RECORD_FIELDS, WorkSpec
from nbwork._store import Store
from nbwork._wake import WakeReceiver
from nbwork.errors import NotAStoreError
from nbwork.testing import TestDriver
from tests import helpers

CLI = [sys.executable, "-m", "nbwork.cli"]
SCHEDULER = [sys.executable, "-c", "import sys; from nbwork._daemon import main; sys.exit(main())"]


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def nobody():
    if os.getuid() != 0:
        pytest.skip("giving a file to another user needs root")
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no 'nobody' user to give files to")


def _enqueue_quietly(store: Store, *requests, prerequisites=()) -> None:
    """Write works as an enqueue does, without waking or starting a scheduler."""
    works = []
    for request in requests:
        code_key, payload = serialize_worker(request.worker, request.worker_name)
        works.append(_ops.NewWork(_spec_of(request, code_key, tuple(prerequisites), None),
                                  payload))
    _ops.enqueue(store, works, [], 1000.0)


def _set_raw(store_path: str, key: str, value: bytes) -> None:
    """Overwrite what the database holds under ``key`` with ``value`` (as a pickle would be)."""
    with sqlite3.connect(os.path.join(store_path, "db", "cache.db")) as db:
        changed = db.execute("UPDATE Cache SET value = ?, mode = 4 WHERE key = ? AND raw = 1",
                             (value, key)).rowcount
    assert changed == 1, key


def _nbwork(*args: str, store: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *args, "--store", store], capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _scheduler_refuses(store_path: str) -> str:
    """A scheduler run in the foreground on ``store_path`` refuses to start; its log."""
    done = subprocess.run([*SCHEDULER, "--store", store_path], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert holder_pid(store_path) is None
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


# --- the path ---------------------------------------------------------------------------------


def test_a_rename_above_the_store_after_it_was_opened_redirects_nothing(tmp_path):
    """Every later access goes through the open directory: the store, its database (new
    SQLite connections and their write-ahead files), lock, FIFO and log stay the ones that
    were checked, though a folder above was renamed and a decoy put in its place."""
    original = tmp_path / "a" / "store"
    store = Store(str(original))
    with store.transaction() as txn:
        txn.set_value("who", "original")
    os.rename(tmp_path / "a", tmp_path / "moved")
    decoy = Store(str(original))                     # the attacker's store at the old path
    with decoy.transaction() as txn:
        txn.set_value("who", "decoy")
    decoy.close()
    moved = tmp_path / "moved" / "store"
    decoy_files = sorted(os.listdir(original)), sorted(os.listdir(original / "db"))

    seen = []

    def new_connection() -> None:   # diskcache opens one SQLite connection per thread
        seen.append(store.get_value("who"))
        with store.transaction() as txn:
            txn.set_value("written", True)
        names = os.listdir(moved / "db")
        seen.append({n for n in names if n.endswith(("-wal", "-shm"))})

    thread = threading.Thread(target=new_connection)
    thread.start()
    thread.join()
    assert seen == ["original", {"cache.db-wal", "cache.db-shm"}]
    assert Store(str(moved)).get_value("written") is True

    lock = SchedulerLock(store.dir.access)
    assert lock.acquire()
    # A client's Daemon reads the lock through the open directory, not the (decoy's) path:
    assert last_holder_pid(Daemon(store.path, store_dir=store.dir)._access) == os.getpid()
    wake = WakeReceiver(store.dir.access)
    open_log(store.path, store.dir.fd).close()
    try:
        assert {"scheduler.lock", "wake.fifo", "scheduler.log"} <= set(os.listdir(moved))
    finally:
        wake.close()
        lock.release()
    assert (sorted(os.listdir(original)), sorted(os.listdir(original / "db"))) == decoy_files
    decoy = Store(str(original))
    assert decoy.get_value("who") == "decoy" and decoy.get_value("written") is None


def test_a_link_swapped_in_after_the_path_was_resolved_is_refused(tmp_path, monkeypatch):
    """The walk opens each folder with O_NOFOLLOW: a link that appears between the path's
    resolution and the open (the attacker's swap) fails the open instead of being followed."""
    (tmp_path / "elsewhere" / "store").mkdir(parents=True, mode=0o700)
    os.symlink(tmp_path / "elsewhere", tmp_path / "swapped")
    # As if the path had been resolved a moment before the link was planted:
    monkeypatch.setattr(_storedir.os.path, "realpath", lambda path: path)
    with pytest.raises(StoreError, match="changed while nbwork opened it: .*swapped' is now a "
                                         "symbolic link"):
        WorkManager(str(tmp_path / "swapped" / "store"))


def test_a_link_in_the_path_given_is_resolved_once_and_accepted(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    wm = WorkManager(str(tmp_path / "link" / "store"))
    assert wm.store_path == str(tmp_path / "real" / "store")


def test_a_folder_above_the_store_owned_by_another_user_is_refused(tmp_path, nobody):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    Store(str(theirs / "store")).close()
    os.chown(theirs, nobody, -1)
    with pytest.raises(StoreError, match=f"above the store .* belongs to another user \\(uid "
                                         f"{nobody}\\)"):
        WorkManager(str(theirs / "store"))
    assert "belongs to another user" in _scheduler_refuses(str(theirs / "store"))


def test_a_folder_above_the_store_others_can_write_is_refused_unless_sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    Store(str(shared / "store")).close()
    os.chmod(shared, 0o777)
    with pytest.raises(StoreError, match=f"above the store .* can be written by other users "
                                         f"\\(mode 777\\).*chmod go-w {shared}"):
        WorkManager(str(shared / "store"))
    os.chmod(shared, 0o1777)      # sticky, as /tmp: others cannot rename what is not theirs
    WorkManager(str(shared / "store"))


def test_a_0755_store_is_accepted_but_a_database_file_others_can_write_is_refused(tmp_path):
    path = tmp_path / "readable"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    WorkManager(str(path))        # readable by others: accepted (nothing in it is theirs)
    database = path / "db" / "cache.db"
    os.chmod(database, 0o666)
    with pytest.raises(StoreError, match="cache.db' in the store can be written by other users "
                                         "\\(mode 666\\)"):
        WorkManager(str(path))
    assert "can be written by other users" in _scheduler_refuses(str(path))
    os.chmod(database, 0o600)
    os.chmod(path / "db", 0o777)
    with pytest.raises(StoreError, match="db' in the store can be written by other users"):
        WorkManager(str(path))


def test_a_file_of_another_user_in_the_store_is_refused(tmp_path, nobody):
    path = tmp_path / "store"
    Store(str(path)).close()
    planted = path / "db" / "cache.db-wal"
    planted.write_bytes(b"")
    os.chown(planted, nobody, -1)
    with pytest.raises(StoreError, match=f"cache.db-wal' in the store belongs to another user "
                                         f"\\(uid {nobody}\\)"):
        WorkManager(str(path))


@pytest.mark.slow
def test_everything_is_created_private_whatever_the_umask(tmp_path):
    path = tmp_path / "store"
    old = os.umask(0)
    try:
        wm = WorkManager(str(path))
        request = OneTimeWorkRequest(helpers.chatty)
        wm.enqueue(request)     # the scheduler, spawned now, inherits the umask too
        assert wm.wait(request, timeout=60).state is WorkState.SUCCEEDED
        files = {name: _mode(path / name) for name in (
            "db/cache.db", "db/cache.db-wal", "db/cache.db-shm", "nbwork.store",
            "scheduler.log", "scheduler.lock", "wake.fifo", f"logs/{request.id}.log")}
        folders = {name: _mode(path / name) for name in (".", "db", "logs")}
    finally:
        os.umask(old)
        pid = holder_pid(str(path))
        if pid:
            wm.daemon.stop()
    assert files == dict.fromkeys(files, 0o600)
    assert folders == dict.fromkeys(folders, 0o700)


# --- a database that vanished or is damaged ---------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_a_database_that_vanished_is_refused_not_replaced_by_an_empty_store(tmp_path, how):
    path = tmp_path / "store"
    store = Store(str(path))
    _enqueue_quietly(store, OneTimeWorkRequest(helpers.echo))
    store.close()
    database = path / "db" / "cache.db"
    for leftover in ("cache.db-wal", "cache.db-shm"):
        (path / "db" / leftover).unlink(missing_ok=True)
    if how == "deleted":
        database.unlink()
    else:
        database.write_bytes(b"")
    expected = "is missing" if how == "deleted" else "is empty \\(0 bytes: truncated\\?\\)"
    with pytest.raises(StoreError, match=f"database of the store .* {expected}; nbwork will not "
                                         "start an empty store in its place"):
        WorkManager(str(path))
    done = _nbwork("list", store=str(path))
    assert done.returncode == 2 and "will not start an empty store" in done.stderr
    assert done.stdout == ""
    # Nothing new was made in its place.
    assert (database.stat().st_size == 0) if how == "truncated" else not database.exists()


def _damage_a_page(path) -> None:
    """Overwrite the header of one b-tree page that opening the store does not read, so only
    an integrity check finds it (pages are tried from the end of the file)."""
    database = path / "db" / "cache.db"
    intact = database.read_bytes()
    for page in range(len(intact) // 4096 - 1, 1, -1):
        damaged = bytearray(intact)
        damaged[page * 4096:page * 4096 + 48] = b"\x0d" + b"\x00" * 7 + b"\xff" * 40
        database.write_bytes(bytes(damaged))
        try:
            store = Store(str(path))
        except StoreError:
            continue
        try:
            store._cache._sql("SELECT count(*) FROM Cache").fetchall()
            rows = store._cache._sql("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError:
            rows = [("malformed",)]
        finally:
            store.close()
        if rows != [("ok",)]:
            return
    pytest.fail("no page could be damaged unnoticed by the open")


@pytest.mark.slow
def test_a_scheduler_refuses_a_store_with_damaged_pages_and_clients_then_refuse_it(tmp_path):
    path = tmp_path / "store"
    store = Store(str(path))
    _enqueue_quietly(store, *[OneTimeWorkRequest(helpers.echo, input_data={"text": "x" * 300})
                              for _ in range(200)])
    store.close()
    _damage_a_page(path)
    log = _scheduler_refuses(str(path))
    assert "the database of the store" in log and "is damaged" in log and "quick_check" in log
    assert (path / "nbwork.damaged").exists()
    with pytest.raises(StoreError, match="is damaged: PRAGMA quick_check found: .* then delete "
                                         f"{path / 'nbwork.damaged'}"):
        WorkManager(str(path))


# --- read-only use of a path that is no store ----------------------------------------------


def test_a_path_that_is_not_a_store_is_not_made_one_by_a_read_only_open(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(NotAStoreError, match="is not an nbwork store: it does not exist"):
        WorkManager(str(missing), create=False)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    with pytest.raises(NotAStoreError, match="is not an nbwork store .*nothing was created"):
        WorkManager(str(empty), create=False)
    assert os.listdir(empty) == []
    WorkManager(str(empty))            # the default still creates a store
    assert WorkManager(str(empty), create=False).get_work_infos() == []
    # A shared folder that is no store: said so, not "make it private".
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o775)
    with pytest.raises(NotAStoreError, match="is not an nbwork store"):
        WorkManager(str(shared), create=False)
    assert os.listdir(shared) == []


@pytest.mark.slow
@pytest.mark.parametrize("command", [["list"], ["show", "abc"], ["logs", "abc"],
                                     ["cancel", "--all"], ["prune"], ["prune", "--unreadable"],
                                     ["daemon", "status"]])
def test_read_only_commands_on_a_path_that_is_not_a_store_say_so_and_create_nothing(
        tmp_path, command):
    for path in (tmp_path / "missing", tmp_path / "empty"):
        if path.name == "empty":
            path.mkdir(mode=0o700)
        done = _nbwork(*command, store=str(path))
        assert done.returncode == 2, done
        assert "is not an nbwork store" in done.stderr
        assert "othing was created" in done.stderr
        assert (os.listdir(path) == []) if path.exists() else path.name == "missing"


# --- one bad record ---------------------------------------------------------------------------


BAD_PICKLE = b"\x80\x05\x95garbage that no unpickler accepts"


def _unknown_state(store: Store, work_id: str) -> None:
    record = list(store._cache.get(f"w:{work_id}"))
    record[1 + RECORD_FIELDS.index("state")] = "EXPLODED"
    store._cache.set(f"w:{work_id}", tuple(record))


def test_an_undecodable_record_is_listed_as_unreadable_and_everything_else_reads(tmp_path):
    path = tmp_path / "store"
    store = Store(str(path))
    good, bad, odd = (OneTimeWorkRequest(helpers.echo, tags=["t"]) for _ in range(3))
    _enqueue_quietly(store, good, bad, odd)
    _ops.cancel(store, [good.id, bad.id, odd.id], 2000.0)   # finished: no scheduler starts
    _set_raw(str(path), f"w:{bad.id}", BAD_PICKLE)
    _unknown_state(store, odd.id)
    store.close()

    wm = WorkManager(str(path))
    infos = {i.id: i for i in wm.get_work_infos()}
    assert set(infos) == {good.id, bad.id, odd.id}
    assert infos[good.id].unreadable_reason is None and infos[good.id].state is \
        WorkState.CANCELLED
    assert "UnpicklingError" in infos[bad.id].unreadable_reason
    assert "EXPLODED" in infos[odd.id].unreadable_reason
    assert infos[bad.id].state is WorkState.CANCELLED     # what its index still knows
    assert "prune --unreadable" in infos[bad.id].error
    assert {i.id for i in wm.get_work_infos_by_tag("t")} == {good.id, bad.id, odd.id}
    assert wm.get_work_info_by_id(bad.id).unreadable_reason
    assert wm.get_work_infos(WorkQuery(states=[WorkState.ENQUEUED])) == []

    listing = _nbwork("list", store=str(path))
    assert listing.returncode == 0
    assert listing.stdout.count("UNREADABLE") == 2
    assert "2 works cannot be read" in listing.stderr and "prune --unreadable" in listing.stderr
    shown = _nbwork("show", bad.id[:8], store=str(path))
    assert shown.returncode == 0 and "UnpicklingError" in shown.stdout

    removed = _nbwork("prune", "--unreadable", store=str(path))
    assert removed.returncode == 0 and "removed 2 unreadable works" in removed.stdout
    assert [i.id for i in wm.get_work_infos()] == [good.id]
    assert [i.id for i in wm.get_work_infos_by_tag("t")] == [good.id]


def test_waiting_for_an_unreadable_work_says_why_instead_of_waiting_forever(tmp_path):
    path = tmp_path / "store"
    store = Store(str(path))
    bad = OneTimeWorkRequest(helpers.echo)
    _enqueue_quietly(store, bad)
    _ops.cancel(store, [bad.id], 2000.0)
    _set_raw(str(path), f"w:{bad.id}", BAD_PICKLE)
    wm = WorkManager(str(path))
    with pytest.raises(StoreError, match="cannot be waited for: its stored record cannot be "
                                         "read .* prune --unreadable"):
        wm.wait(bad.id, timeout=5)


def test_removing_an_unreadable_prerequisite_cancels_the_work_that_waited_for_it(tmp_path):
    path = tmp_path / "store"
    store = Store(str(path))
    first = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    then = OneTimeWorkRequest(helpers.echo)
    _enqueue_quietly(store, first)
    _enqueue_quietly(store, then, prerequisites=[first.id])
    _set_raw(str(path), f"w:{first.id}", BAD_PICKLE)
    removed = _ops.prune_unreadable(store, 3000.0)
    assert removed == [first.id]
    assert store.get(then.id).state is WorkState.CANCELLED
    assert store.read(first.id) is None
    assert all(first.id not in store.state_index(s) for s in WorkState)


def test_an_undecodable_index_shard_is_rebuilt_from_the_records(tmp_path):
    path = tmp_path / "store"
    store = Store(str(path))
    requests = [OneTimeWorkRequest(helpers.echo, tags=["t"]) for _ in range(20)]
    _enqueue_quietly(store, *requests)
    # (Finished states are one row per work, not shards: tests/test_store_index.py.)
    shard = requests[0].id[0]
    _set_raw(str(path), f"i:s:ENQUEUED:{shard}", BAD_PICKLE)
    _set_raw(str(path), "i:t:t", BAD_PICKLE)
    store.close()

    wm = WorkManager(str(path), resume=False)  # (ENQUEUED works: start no scheduler)
    assert sorted(i.id for i in wm.get_work_infos()) == sorted(r.id for r in requests)
    assert len(wm.get_work_infos_by_tag("t")) == 20
    # Written back: the next reader finds an intact index.
    with sqlite3.connect(os.path.join(path, "db", "cache.db")) as db:
        [(value,)] = db.execute("SELECT value FROM Cache WHERE key = ?",
                                (f"i:s:ENQUEUED:{shard}",)).fetchall()
    assert value != BAD_PICKLE


def test_a_corrupt_code_blob_is_replaced_by_the_next_enqueue_of_its_worker(tmp_path):
    path = tmp_path / "store"
    store = Store(str(path))
    first = OneTimeWorkRequest(helpers.echo)
    _enqueue_quietly(store, first)
    key = store.get(first.id).code_key
    intact = store.get_code(key)
    with store.transaction() as txn:
        txn.set_value(f"code:{key}", b"not the worker any more")
    _enqueue_quietly(store, OneTimeWorkRequest(helpers.echo))
    assert store.get_code(key) == intact


@pytest.mark.slow
def test_one_undecodable_record_does_not_stop_the_scheduler_from_running_the_others(wm):
    driver = TestDriver(wm)
    driver.set_device_state(charging=False)
    requests = [OneTimeWorkRequest(helpers.add, input_data={"a": i, "b": 1},
                                   constraints=Constraints(requires_charging=True))
                for i in range(10)]
    wm.enqueue(requests)
    scheduler = wm.daemon.start()
    bad, odd = requests[3], requests[7]
    _set_raw(wm.store_path, f"w:{bad.id}", BAD_PICKLE)
    _unknown_state(wm._store, odd.id)
    driver.clear_device_state()         # now all ten are due
    others = [r for r in requests if r not in (bad, odd)]
    infos = wm.wait(others, timeout=60)
    assert [i.state for i in infos] == [WorkState.SUCCEEDED] * 8
    assert wm.daemon.pid == scheduler                       # never crashed
    unreadable = {i.id for i in wm.get_work_infos() if i.unreadable_reason}
    assert unreadable == {bad.id, odd.id}
    assert sorted(wm.prune_work(unreadable=True)) == sorted([bad.id, odd.id])
    assert len(wm.get_work_infos()) == 8


# --- delays too long to be dates --------------------------------------------------------------


@pytest.mark.parametrize("build, field", [
    (lambda: OneTimeWorkRequest(helpers.echo, initial_delay=timedelta(days=10**7)),
     "initial_delay"),
    (lambda: OneTimeWorkRequest.Builder(helpers.echo).set_initial_delay(1e300), "initial_delay"),
    (lambda: PeriodicWorkRequest(helpers.echo, repeat_interval=timedelta(days=10**7)),
     "repeat_interval"),
])
def test_a_delay_too_long_to_be_a_date_is_refused_at_the_call(build, field):
    with pytest.raises(InvalidRequestError, match=f"{field} of .* is too long to be a date"):
        build()


def test_a_stored_date_past_any_calendar_does_not_fail_the_listing(tmp_path):
    """A record written before delays were checked (next run in the year 29,000) is read."""
    path = tmp_path / "store"
    store = Store(str(path))
    far, near = OneTimeWorkRequest(helpers.echo), OneTimeWorkRequest(helpers.echo)
    _enqueue_quietly(store, far, near)
    _ops.cancel(store, [far.id, near.id], 2000.0)
    # (As such an old version wrote it: a dict, layout 1.)
    record = WorkSpec.from_record(store._cache.get(f"w:{far.id}")).to_dict()
    record["enqueue_time"] = record["finish_time"] = 8.64e11
    store._cache.set(f"w:{far.id}", record)
    wm = WorkManager(str(path))
    infos = {i.id: i for i in wm.get_work_infos()}
    assert set(infos) == {far.id, near.id}
    assert infos[far.id].unreadable_reason is None
    assert _nbwork("list", store=str(path)).returncode == 0


def test_a_closed_store_leaves_no_descriptor_open(tmp_path):
    """Each open store keeps its directory open; closing it closes that too."""
    for _ in range(20):
        Store(str(tmp_path / "store")).close()
    assert _open_on(tmp_path / "store") == 0


def test_a_database_made_readable_by_others_by_an_older_nbwork_is_made_private(tmp_path):
    path = tmp_path / "store"
    Store(str(path)).close()
    os.chmod(path / "db" / "cache.db", 0o644)   # what SQLite's default mode gave before
    Store(str(path)).close()
    assert _mode(path / "db" / "cache.db") == 0o600


def _open_on(path) -> int:
    """How many descriptors of this process are open on the folder ``path`` itself."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return count


def test_a_store_dropped_without_close_leaves_no_descriptor_open(tmp_path):
    """Each open store keeps its folder open; garbage collection closes it with the store."""
    import gc

    path = tmp_path / "store"
    for _ in range(20):
        WorkManager(str(path))
    gc.collect()
    # (The first store opened stays: the process's change watcher of that store keeps it.)
    assert _open_on(path) == 1


def test_the_scheduler_runs_the_other_due_works_and_does_not_count_an_unreadable_one(
        tmp_path, monkeypatch):
    """Step by step (no daemon): the bad record is skipped, every other due work starts, and
    the unreadable work is neither due (the loop would spin) nor unfinished (no idle exit)."""
    from nbwork._executors.inline import InlineExecutor
    from nbwork._scheduler import Scheduler
    from nbwork._time import ManualClock

    path = tmp_path / "store"
    clock = ManualClock()
    client = WorkManager(str(path))
    client.clock = clock
    monkeypatch.setattr(client.daemon, "ensure_running", lambda: None)
    requests = [OneTimeWorkRequest(helpers.add, input_data={"a": i, "b": 1}) for i in range(10)]
    client.enqueue(requests)
    bad = requests[0]
    _set_raw(str(path), f"w:{bad.id}", BAD_PICKLE)
    scheduler = Scheduler(Store(str(path)), executor=InlineExecutor(capacity=10), clock=clock)
    for _ in range(3):
        scheduler.step()
        clock.advance(1)
    infos = {i.id: i for i in client.get_work_infos()}
    assert [infos[r.id].state for r in requests[1:]] == [WorkState.SUCCEEDED] * 9
    assert infos[bad.id].unreadable_reason
    enqueued = scheduler.store.state_index(WorkState.ENQUEUED)
    assert list(enqueued) == [bad.id]
    assert scheduler._first_due(enqueued) is None
    assert not scheduler._unfinished()
    assert client.daemon.pid is None


def test_a_swap_of_a_folder_just_after_its_check_does_not_redirect_the_open(tmp_path, monkeypatch):
    """The attacker's move: swap a folder above the store for their own right after nbwork
    checked it. The walk checks the descriptor it opened and goes on from that descriptor,
    so the store opened is the one checked, whatever the name points to by then."""
    original = Store(str(tmp_path / "a" / "store"))
    with original.transaction() as txn:
        txn.set_value("who", "original")
    original.close()
    decoy = Store(str(tmp_path / "decoy" / "store"))
    with decoy.transaction() as txn:
        txn.set_value("who", "decoy")
    decoy.close()
    checked = _storedir._check_ancestor
    swapped = []

    def check_then_swap(info, where, store):
        checked(info, where, store)
        if where == str(tmp_path / "a") and not swapped:
            os.rename(tmp_path / "a", tmp_path / "hold")
            os.rename(tmp_path / "decoy", tmp_path / "a")
            swapped.append(where)

    monkeypatch.setattr(_storedir, "_check_ancestor", check_then_swap)
    store = Store(str(tmp_path / "a" / "store"))
    assert swapped and store.get_value("who") == "original"
    assert os.readlink(store.dir.access) == str(tmp_path / "hold" / "store")


@pytest.mark.slow
def test_a_wait_on_a_store_whose_scheduler_found_it_damaged_says_so(tmp_path):
    """The client opened the store before its pages were damaged; its wait ends with the
    scheduler's finding instead of watching ENQUEUED work that never runs."""
    path = tmp_path / "store"
    store = Store(str(path))
    filler = [OneTimeWorkRequest(helpers.echo, input_data={"text": "x" * 300})
              for _ in range(200)]
    _enqueue_quietly(store, *filler)
    _ops.cancel(store, [r.id for r in filler], 2000.0)    # finished: no scheduler starts
    store.close()
    wm = WorkManager(str(path))
    request = OneTimeWorkRequest(helpers.echo)
    _damage_a_page(path)
    try:
        # Whichever meets the damage first says so: the scheduler's check (its finding
        # reaches the wait), or this client's own read of a damaged page (the layout, and so
        # which pages the enqueue touches, varies with the random ids).
        with pytest.raises(StoreError, match="the database of the store .* is damaged"):
            wm.enqueue(request)
            wm.wait(request, timeout=60)
    finally:
        wm.daemon.stop()
