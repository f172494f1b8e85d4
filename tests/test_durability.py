"""The durability level: kept in the store, applied to every connection that writes it."""

from __future__ import annotations

import threading

import pytest

from nbwork import InvalidInputError, OneTimeWorkRequest, WorkManager
from nbwork._store import Store
from nbwork.cli import main as cli_main
from tests import helpers
from tests.conftest import stop_scheduler, wait_until
from tests.helpers import is_dead

NORMAL, FULL = 1, 2


def _synchronous_in_a_new_thread(store: Store) -> int:
    """diskcache opens one connection per thread: a new thread gets a new connection."""
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(store.synchronous()))
    thread.start()
    thread.join()
    return seen[0]


def test_the_default_is_process_durability_on_every_connection(store_path):
    wm = WorkManager(store_path, resume=False)
    assert wm.durability == "process"
    store = wm._store
    assert store.synchronous() == NORMAL
    assert _synchronous_in_a_new_thread(store) == NORMAL
    assert store._blob_connection().execute("PRAGMA synchronous").fetchone()[0] == NORMAL


def test_power_durability_is_kept_in_the_store_for_every_later_connection(store_path):
    wm = WorkManager(store_path, resume=False, durability="power")
    assert wm.durability == "power"
    assert wm._store.synchronous() == FULL
    assert wm._store._blob_connection().execute("PRAGMA synchronous").fetchone()[0] == FULL
    # Another client opening the store later, with no choice of its own, takes the store's.
    other = Store(store_path)
    assert other.durability() == "power"
    assert other.synchronous() == FULL
    assert _synchronous_in_a_new_thread(other) == FULL
    assert WorkManager(store_path, resume=False).durability == "power"
    # And back: "process" is written down too, for the next ones.
    assert WorkManager(store_path, resume=False, durability=" Process ").durability == "process"
    assert Store(store_path).synchronous() == NORMAL


def test_an_unknown_durability_is_refused_and_changes_nothing(store_path, capsys):
    WorkManager(store_path, resume=False, durability="power")
    for bad in ("disk", "", "full", 2, None):
        with pytest.raises(InvalidInputError, match="'process'.*'power'"):
            WorkManager(store_path, resume=False,
                        durability=bad if bad is not None else ["power"])
    assert Store(store_path).durability() == "power"
    assert cli_main(["daemon", "start", "--durability", "disk", "--store", store_path]) == 2
    assert "durability must be 'process'" in capsys.readouterr().err
    assert cli_main(["daemon", "stop", "--durability", "power", "--store", store_path]) == 2
    assert "--durability goes with 'daemon start'" in capsys.readouterr().err
    assert Store(store_path).durability() == "power"


@pytest.mark.slow
def test_the_scheduler_commits_at_the_store_level_and_a_change_restarts_it(store_path, capsys):
    assert cli_main(["daemon", "start", "--durability", "power", "--store", store_path]) == 0
    wm = WorkManager(store_path)
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    wm.enqueue(request)
    assert wm.wait(request, timeout=30).output_data == {"sum": 3}
    lease = wait_until(lambda: (wm._store.get_value("lease") or {}).get("synchronous") and
                       wm._store.get_value("lease"), what="the scheduler's lease")
    assert lease["synchronous"] == FULL
    old_pid = lease["pid"]
    capsys.readouterr()
    assert cli_main(["daemon", "status", "--store", store_path]) == 0
    assert "durability: power" in capsys.readouterr().out
    # A change restarts the scheduler, which then commits at the new level.
    changed = WorkManager(store_path, durability="process")
    wait_until(lambda: is_dead(old_pid), what="the old scheduler to exit")
    again = OneTimeWorkRequest(helpers.add, input_data={"a": 2, "b": 2})
    changed.enqueue(again)
    assert changed.wait(again, timeout=30).output_data == {"sum": 4}
    lease = wait_until(lambda: (lambda x: x if x and x["pid"] != old_pid else None)(
        changed._store.get_value("lease")), what="the new scheduler's lease")
    assert lease["synchronous"] == NORMAL
    stop_scheduler(store_path)
