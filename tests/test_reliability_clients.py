"""Several client processes use one store at once: they enqueue, enqueue unique work with
each policy, cancel and query, all at the same time. Nothing is lost, no unique work is
duplicated, and no "database is locked" (or any other error) reaches them."""

from __future__ import annotations

import json

import pytest

from nbwork import WorkManager, WorkState
from nbwork._store import Store
from tests.conftest import wait_until
from tests.helpers import stop_scheduler, touch
from tests.reliability import (
    POLICIES,
    all_specs,
    consistency_problems,
    scheduler_log,
    start_client,
)

CLIENTS = 4
ROUNDS = 20


@pytest.mark.slow
def test_concurrent_clients_lose_nothing_and_duplicate_no_unique_work(tmp_path, store_path):
    WorkManager(store_path)
    start = tmp_path / "start"
    outs = [tmp_path / f"client-{i}.json" for i in range(CLIENTS)]
    clients = [start_client(store_path, str(start), i, ROUNDS, str(outs[i]))
               for i in range(CLIENTS)]
    try:
        touch(start)    # all at once
        for client in clients:
            client.wait(timeout=240)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    try:
        printed = [client.stdout.read().decode(errors="replace") for client in clients]
        assert [c.returncode for c in clients] == [0] * CLIENTS, printed
        reports = [json.loads(out.read_text()) for out in outs]
        errors = [e for r in reports for e in r["errors"]]
        assert errors == [], errors[0]          # no "database is locked", no StoreError...
        store = Store(store_path)
        specs = all_specs(store)

        # Nothing lost, nothing made up: the store holds exactly what the clients enqueued.
        enqueued = [i for r in reports for i in r["plain"] + r["cancel"]]
        for r in reports:
            for policy in POLICIES:
                enqueued.extend(r["unique"][policy]["enqueued"])
        assert len(enqueued) == len(set(enqueued))
        assert set(specs) == set(enqueued)
        dropped = {i for r in reports for p in POLICIES for i in r["unique"][p]["dropped"]}
        assert not dropped & set(specs)

        def unique(policy: str) -> list[str]:
            return [i for r in reports for i in r["unique"][policy]["enqueued"]]

        attempts = CLIENTS * ROUNDS
        # KEEP: the first request stays unfinished (delayed), so every later one is dropped.
        assert len(unique("KEEP")) == 1 and len(dropped) == attempts - 1
        assert store.unique_ids("u-KEEP") == unique("KEEP")
        # REPLACE: each replaced the one before; one work is left under the name.
        replace = unique("REPLACE")
        assert len(replace) == attempts
        [kept] = store.unique_ids("u-REPLACE")
        for wid in replace:
            if wid != kept:
                assert specs[wid].state is WorkState.CANCELLED and specs[wid].unique_name is None
        assert specs[kept].state is WorkState.ENQUEUED
        # APPEND and APPEND_OR_REPLACE (no failed leaf): one chain holding every request.
        for policy in ("APPEND", "APPEND_OR_REPLACE"):
            chain = unique(policy)
            assert len(chain) == attempts
            assert set(store.unique_ids(f"u-{policy}")) == set(chain)
            roots = [w for w in chain if not specs[w].prerequisites]
            assert len(roots) == 1, f"{policy}: {len(roots)} chains under one name"
            assert all(len(specs[w].prerequisites) <= 1 and len(specs[w].dependents) <= 1
                       for w in chain), f"{policy}: not one straight chain"
            assert specs[roots[0]].state is WorkState.ENQUEUED
            assert sum(specs[w].state is WorkState.BLOCKED for w in chain) == attempts - 1
        # Cancelled by their clients.
        for r in reports:
            assert all(specs[w].state is WorkState.CANCELLED for w in r["cancel"])
        # The plain works all run.
        plain = [i for r in reports for i in r["plain"]]
        wait_until(lambda: all(store.get(w).state.is_finished for w in plain), timeout=120,
                   what="the plain works to run")
        assert all(store.get(w).state is WorkState.SUCCEEDED for w in plain)
        assert consistency_problems(store) == []
        log = scheduler_log(store_path)
        assert "Traceback" not in log and "OperationalError" not in log
        assert "database is locked" not in "".join(printed)
    finally:
        stop_scheduler(store_path)
