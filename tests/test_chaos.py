"""Chaos, checked as a history (Jepsen's total-queue style): chains of works (300 by default)
are enqueued by client processes and run while the scheduler, its supervisor, worker
processes and clients are SIGKILLed, and the scheduler and workers paused (SIGSTOP), again
and again. Every attempt appends start / heartbeat / end lines with a nonce of its own to a
history file, and so does a helper it starts in a session of its own (see tests/history.py).
At the end the checker reports:

- **lost**: a work acknowledged to its client that is missing or not in the final state its
  chain demands (a chain a killed client had begun but not seen acknowledged must be all
  there or not at all);
- **doubled**: more than one SUCCEEDED in the store's journal (written in the same
  transaction as each change), or a kept output that no run returned;
- **runs after the kept success**: a run of a work started after its kept success returned;
- **overlapping runs**: two runs of one work alive at once, helpers included (a helper that
  outlived its attempt into the re-run would be a side effect running twice at once).

The figures go to ``test-artifacts/chaos-results.json`` (RELIABILITY.md quotes runs).

    NBWORK_CHAOS_WORKS=1500 python -m pytest tests/test_chaos.py -s   # a bigger run
    NBWORK_CHAOS_SEED=7 ...                                              # replay a seed's plan
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import time
import uuid
from collections import Counter

import psutil
import pytest

from nbwork import WorkManager, WorkState, _ops
from nbwork._lock import holder_pid
from nbwork._rules import MAX_CONSECUTIVE_CRASHES
from nbwork._store import Store
from nbwork._wake import notify
from nbwork.info import FINISHED_STATES
from tests.conftest import wait_until
from tests.helpers import stop_scheduler
from tests.history import check, helper_pids
from tests.reliability import (
    REPO,
    consistency_problems,
    descendants,
    live_pid,
    read_lines,
    scheduler_log,
    start_chaos_client,
    store_processes,
    succeeded_count,
    supervisor_of,
)

pytestmark = pytest.mark.slow

WORKS = int(os.environ.get("NBWORK_CHAOS_WORKS", "300"))
SEED = int(os.environ.get("NBWORK_CHAOS_SEED", "0")) or random.SystemRandom().randrange(1, 10**6)
CHAIN = 5
FAILS_AT = 2      # the step at which a failing chain fails
CANCEL_AT = 2     # the step that is cancelled in a cancelled chain
CLIENTS = 4
CLIENT_PAUSE = 0.5
RESUME_WITHIN = 5.0
FAULTS = {        # share of each fault
    "kill_scheduler": 0.2, "kill_worker": 0.35, "kill_supervisor": 0.05,
    "pause_scheduler": 0.1, "pause_worker": 0.1, "kill_client": 0.2,
}
PAUSE = (0.1, 1.0)  # seconds a SIGSTOP lasts
ARTIFACT = os.path.join(REPO, "test-artifacts", "chaos-results.json")


def _kind(chain: int) -> str:
    return {3: "fail", 7: "cancel"}.get(chain % 10, "normal")


def _read_marker(markers: str, pid: int) -> tuple[str, float] | None:
    try:
        with open(os.path.join(markers, str(pid))) as f:
            work_id, created = f.read().split()
        return work_id, float(created)
    except (FileNotFoundError, ValueError):
        return None


def _plan(rng: random.Random, folder) -> dict:
    chains = []
    for c in range(max(1, WORKS // CHAIN)):
        kind = _kind(c)
        chains.append({"c": c, "kind": kind, "client": c % CLIENTS, "steps": [
            {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "input": {
                "history": str(folder / "history"), "markers": str(folder / "markers"),
                "pause": rng.uniform(0.02, 0.12), "fail": kind == "fail" and i == FAILS_AT}}
            for i in range(CHAIN)]})
    return {"chains": chains}


def _expected_states(kind: str, got: list[WorkState]) -> list[str] | None:
    """The final states a chain of ``kind`` must have; None if ``got`` breaks its rule."""
    S, F, C = WorkState.SUCCEEDED, WorkState.FAILED, WorkState.CANCELLED
    if kind == "normal":
        want = [S] * CHAIN
    elif kind == "fail":
        want = [S] * FAILS_AT + [F] * (CHAIN - FAILS_AT)
    else:   # cancelled at CANCEL_AT: the steps before it succeed; from it on S*C*
        tail = got[CANCEL_AT:]
        cut = tail.index(C) if C in tail else len(tail)
        want = [S] * CANCEL_AT + [S] * cut + [C] * (len(tail) - cut)
    return [s.value for s in want]


def test_chaos(tmp_path, store_path):
    rng = random.Random(SEED)
    print(f"chaos: {WORKS} works, seed {SEED} (NBWORK_CHAOS_SEED={SEED} replays the plan)")
    (tmp_path / "markers").mkdir()
    Store(store_path).enable_journal()
    wm = WorkManager(store_path)
    store = wm._store
    plan = _plan(rng, tmp_path)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    chains = plan["chains"]
    total = len(chains) * CHAIN
    # Cancelled chains are cancelled when this many works have finished.
    cancel_when = {ch["c"]: rng.randrange(0, total) for ch in chains if ch["kind"] == "cancel"}

    def journal(i: int) -> str:
        return str(tmp_path / f"client-{i}")

    clients = {i: start_chaos_client(store_path, str(plan_path), i, journal(i), CLIENT_PAUSE)
               for i in range(CLIENTS)}

    def finished() -> int:
        return sum(len(store.state_index(s)) for s in FINISHED_STATES)

    def all_enqueued() -> bool:
        return all(c.poll() is not None for c in clients.values())

    stats: Counter = Counter()
    worker_kills: Counter = Counter()    # work id -> kills of one of its attempts
    resume: list[float] = []
    started = time.monotonic()

    def the_scheduler(timeout: float = RESUME_WITHIN) -> int:
        return wait_until(lambda: holder_pid(store_path), timeout=timeout, what="a scheduler")

    def kill_scheduler() -> None:
        pid = the_scheduler()
        supervised = supervisor_of(pid) is not None
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        stats["scheduler_kills"] += 1
        if not supervised:  # its supervisor was killed before: a client call brings it back
            stats["scheduler_kills_unsupervised"] += 1
            wait_until(lambda: holder_pid(store_path) != pid, what="the lock to be released")
            WorkManager(store_path).daemon.ensure_running()
        # With a supervisor, no client call: only the supervisor may bring it back (clients
        # still enqueueing may do it sooner; both count).
        wait_until(lambda: holder_pid(store_path) not in (None, pid), timeout=RESUME_WITHIN,
                   what="a new scheduler within 5 s")
        resume.append(time.monotonic() - killed_at)

    def kill_supervisor() -> None:
        supervisor = supervisor_of(the_scheduler())
        if supervisor is None:
            stats["supervisor_kills_skipped"] += 1
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor.pid, signal.SIGKILL)
            stats["supervisor_kills"] += 1

    def pause(pid: int, what: str) -> None:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return
        try:
            time.sleep(rng.uniform(*PAUSE))   # the fault itself: a stop of this long
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        stats[f"{what}_pauses"] += 1

    def running_worker() -> tuple[int, str] | None:
        """A worker process of ours running a chaos step, frozen; with the step's work id."""
        ours = {p.pid for p in descendants(store_processes(store_path))}
        running = store.get_many(store.state_index(WorkState.RUNNING))
        rng.shuffle(running)
        for spec in running:
            attempt = spec.attempt
            if attempt is None:
                continue
            process = live_pid(attempt.pid, attempt.pid_create_time)
            if process is None or process.pid not in ours:
                continue
            # Freeze it, then ask it which work it runs (a process runs attempts one after
            # another, so the store's view may be a moment old).
            os.kill(process.pid, signal.SIGSTOP)
            marker = _read_marker(str(tmp_path / "markers"), process.pid)
            if marker is not None and abs(marker[1] - process.create_time()) < 0.01:
                return process.pid, marker[0]
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
        return None

    def kill_worker() -> None:
        found = running_worker()
        if found is None:
            stats["worker_kills_skipped"] += 1  # nothing suitable was running at that moment
            return
        pid, work = found
        # Crashes alone must never fail a chaos work: at most MAX_CONSECUTIVE_CRASHES - 1.
        if worker_kills[work] >= MAX_CONSECUTIVE_CRASHES - 1:
            os.kill(pid, signal.SIGCONT)
            stats["worker_kills_skipped"] += 1
            return
        os.kill(pid, signal.SIGKILL)
        worker_kills[work] += 1
        stats["worker_kills"] += 1

    def pause_worker() -> None:
        found = running_worker()
        if found is None:
            stats["worker_pauses_skipped"] += 1
            return
        os.kill(found[0], signal.SIGCONT)  # running_worker froze it; the pause is timed
        pause(found[0], "worker")

    def kill_client() -> None:
        alive = [i for i, c in clients.items() if c.poll() is None]
        if not alive:
            return
        i = rng.choice(alive)
        if rng.random() < 0.5:  # anywhere in its loop
            time.sleep(rng.uniform(0, CLIENT_PAUSE))
        else:  # as it begins an enqueue: mid-transaction, if it is quick enough
            seen = len(read_lines(journal(i)))
            give_up = time.monotonic() + 2 * CLIENT_PAUSE
            while time.monotonic() < give_up and clients[i].poll() is None:
                lines = read_lines(journal(i))
                if len(lines) > seen and lines[-1].startswith("I "):
                    break
                time.sleep(0.001)
        clients[i].kill()
        clients[i].wait()
        stats["client_kills"] += 1
        # A client comes back and goes on with the chains it had not begun.
        clients[i] = start_chaos_client(store_path, str(plan_path), i, journal(i),
                                        CLIENT_PAUSE)

    faults = {"kill_scheduler": kill_scheduler, "kill_worker": kill_worker,
              "kill_supervisor": kill_supervisor, "kill_client": kill_client,
              "pause_scheduler": lambda: pause(the_scheduler(), "scheduler"),
              "pause_worker": pause_worker}
    names, weights = zip(*FAULTS.items(), strict=True)
    try:
        while not (all_enqueued() and finished() >= len(store.all_ids())):
            # Pace the faults by progress (a fault after every few finished works), so the
            # run makes progress on any machine, however slow.
            target = min(total, finished() + rng.randint(1, 6))
            wait_until(lambda t=target: finished() >= t or (
                all_enqueued() and finished() >= len(store.all_ids())), timeout=120,
                what=f"progress to {target} finished works")
            for c, when in list(cancel_when.items()):
                if finished() >= when and store.get(chains[c]["steps"][CANCEL_AT]["id"]):
                    del cancel_when[c]
                    # The store operation and the wake-up, without WorkManager's "start a
                    # scheduler if none runs" (which would hide a missing restart).
                    _ops.cancel(store, [chains[c]["steps"][CANCEL_AT]["id"]], wm.clock.now())
                    notify(store_path)
                    stats["cancels"] += 1
            if all_enqueued() and finished() >= len(store.all_ids()):
                break
            name = rng.choices(names, weights)[0]
            if name == "kill_client" and all_enqueued():
                name = "kill_worker"
            faults[name]()
        duration = time.monotonic() - started

        # --- the verdict ---------------------------------------------------------------------
        acknowledged, begun = set(), set()
        for i in range(CLIENTS):
            for line in read_lines(journal(i)):
                kind, c = line.split()
                (acknowledged if kind == "A" else begun).add(int(c))
        expected: dict[str, str] = {}
        final: dict[str, tuple[str, str | None]] = {}
        successes: dict[str, int] = {}
        problems: list[str] = []
        states: Counter = Counter()
        partial = 0
        for chain in chains:
            ids = [s["id"] for s in chain["steps"]]
            specs = [store.get(i) for i in ids]
            present = [s for s in specs if s is not None]
            if present and len(present) != CHAIN:
                problems.append(f"chain {chain['c']}: {len(present)} of {CHAIN} steps stored")
                partial += 1
            if chain["c"] not in begun and present:
                problems.append(f"chain {chain['c']}: stored, but no client began it")
            got = [s.state for s in present]
            want = _expected_states(chain["kind"], got) if len(present) == CHAIN else None
            for n, (work, spec) in enumerate(zip(ids, specs, strict=True)):
                if chain["c"] in acknowledged or spec is not None:
                    expected[work] = want[n] if want else "stored"
                if spec is None:
                    continue
                states[spec.state.value] += 1
                final[work] = (spec.state.value, (spec.output or {}).get("nonce"))
                successes[work] = succeeded_count(store, work)
                journal_of = store.journal_of(work)
                finals = [e for e in journal_of if e[1] in {s.value for s in FINISHED_STATES}]
                if len(finals) != 1 or finals[0][1] != spec.state.value:
                    problems.append(f"{work}: finished {len(finals)} times: {journal_of}")
                if spec.state is WorkState.SUCCEEDED and spec.output["n"] != n + 1:
                    problems.append(f"{work}: n = {spec.output['n']}")  # its parent's output
        with open(tmp_path / "history") as f:
            history = f.read().splitlines()
        report = check(history, expected, final, successes)
        log = scheduler_log(store_path)
        results = {
            "works": len(final), "chains": len(chains), "chain_length": CHAIN, "seed": SEED,
            "chains_acknowledged": len(acknowledged),
            "chains_begun_by_a_killed_client": len(begun - acknowledged),
            "scheduler_kills": stats["scheduler_kills"],
            "scheduler_kills_without_supervisor": stats["scheduler_kills_unsupervised"],
            "scheduler_restarts_by_supervisor": log.count("; restarting it in"),
            "supervisor_kills": stats["supervisor_kills"],
            "worker_kills": stats["worker_kills"],
            "worker_kills_skipped": stats["worker_kills_skipped"],
            "works_whose_worker_was_killed": len(worker_kills),
            "client_kills": stats["client_kills"],
            "scheduler_pauses": stats["scheduler_pauses"],
            "worker_pauses": stats["worker_pauses"],
            "cancels": stats["cancels"],
            "recovered_attempts": log.count("left RUNNING by a previous scheduler"),
            "leftover_processes_killed_by_new_schedulers": sum(
                int(line.split("killed ")[1].split()[0]) for line in log.splitlines()
                if "processes left running by a previous scheduler" in line),
            "final_states": dict(states),
            "partial_chains": partial,
            **report.summary(),
            "max_resume_seconds": round(max(resume), 3) if resume else None,
            "mean_resume_seconds": round(sum(resume) / len(resume), 3) if resume else None,
            "duration_seconds": round(duration, 1),
            "consistency_problems": consistency_problems(store),
        }
        os.makedirs(os.path.dirname(ARTIFACT), exist_ok=True)
        with open(ARTIFACT, "w") as f:
            json.dump(results, f, indent=2)
        print(json.dumps(results, indent=2))
        assert report.lost == [], report.lost[:10]
        assert report.doubled == [], report.doubled[:10]
        assert report.after_success == [], report.after_success[:10]
        assert report.overlapping == [], report.overlapping[:10]
        assert problems == [], problems[:10]
        assert results["consistency_problems"] == []
        assert not store.state_index(WorkState.RUNNING)
        assert stats["scheduler_kills"] > 0 and stats["worker_kills"] > 0
        assert report.helper_beats > 0   # the helpers ran, so their overlap was checked
        assert "Traceback" not in _without_orphaned_forks(log), log
    finally:
        for client in clients.values():
            if client.poll() is None:
                client.kill()
                client.wait()
        stop_scheduler(store_path)
        _kill_surviving_helpers(tmp_path / "history", store_path)


ORPHANED_FORK = re.compile(
    r"Traceback \(most recent call last\):\n"
    r"(?:  .*\n)*?  File \".*multiprocessing/forkserver\.py\", line \d+, in main\n"
    r"(?:  .*\n)*?  File \".*multiprocessing/spawn\.py\", line \d+, in _main\n"
    r"(?:  .*\n)*?EOFError: Ran out of input\n")


def _without_orphaned_forks(log: str) -> str:
    """The scheduler's log less the one traceback a SIGKILL may rightly leave: a worker
    process the forkserver forked just as the scheduler was killed reads the start of its
    preparation data from a pipe whose writer is gone, says so and exits (before any of
    nbwork's code runs in it; the next scheduler forks its own)."""
    return ORPHANED_FORK.sub("", log)


def _kill_surviving_helpers(history, store_path: str) -> None:
    """Helpers nbwork failed to kill (a failing run) are stopped by PID: those still running
    in the store's folder (where the scheduler, and so its workers, run)."""
    try:
        lines = history.read_text().splitlines()
    except FileNotFoundError:
        return
    for pid in helper_pids(lines):
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.cwd() == store_path:
                process.kill()
