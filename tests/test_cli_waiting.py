"""``nbwork show`` says why a work waits (the same words as the widgets: nbwork.explain)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nbwork import Constraints, OneTimeWorkRequest
from tests.helpers import echo

pytestmark = pytest.mark.usefixtures("settle_schedulers")


def show(store: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "nbwork.cli", "show", *args, "--store", store],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_show_says_why_a_work_waits(wm, store_path, tmp_path):
    first = OneTimeWorkRequest(echo, initial_delay=3600,
                               constraints=Constraints(requires_charging=True))
    second = OneTimeWorkRequest(echo)
    wm.begin_with(first).then(second).enqueue()
    lines = show(store_path, first.id[:8]).splitlines()
    state = lines.index("state: ENQUEUED")
    assert lines[state + 1].startswith("waiting: initial delay until ")
    assert "the charger plugged in" in lines[state + 1]
    blocked = show(store_path, second.id[:8])
    assert f"waiting: waits for prerequisite echo {first.id[:8]} (ENQUEUED)" in blocked
    as_json = json.loads(show(store_path, second.id, "--json"))
    assert as_json["waiting"].startswith("waits for prerequisite echo")
    assert as_json["run_after"] == "ALL_SUCCEEDED"
    join = OneTimeWorkRequest(echo, run_after="all_finished")
    wm.begin_with(OneTimeWorkRequest(echo, initial_delay=3600)).then(join).enqueue()
    shown = show(store_path, join.id[:8])
    assert "run_after: ALL_FINISHED" in shown
    assert "(it runs whatever they end as)" in shown
    wm.cancel_all_work()
    assert "waiting:" not in show(store_path, first.id)
