"""Chaos: chains of works (300 by default) run while the scheduler and random worker processes
are SIGKILLed again and again. At the end every work is in the state its semantics demand,
every work that ran to success succeeded exactly once, and nothing ran again after its
success. The figures go to ``test-artifacts/chaos-results.json`` (RELIABILITY.md quotes a
run).

    NBWORK_CHAOS_WORKS=3000 python -m pytest tests/test_chaos.py   # a bigger run
    NBWORK_CHAOS_SEED=7 ...                                          # replay a seed

How "succeeded once" is checked (see RELIABILITY.md): the store journals every state change
in the same transaction as the change (``Store.enable_journal``), so the journal counts the
SUCCEEDED transitions the store really committed. Execution is at-least-once, so a step may
run more than once (its process killed before its result was recorded); each run that
reaches the end appends "<run_attempt_count> <nonce>" to the work's record file, and the
nonce of the run whose result the store kept must be the last line: nothing ran after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections import Counter

import pytest

from nbwork import BackoffPolicy, OneTimeWorkRequest, WorkManager, WorkState, _ops
from nbwork._lock import holder_pid
from nbwork._rules import MAX_CONSECUTIVE_CRASHES
from nbwork._store import Store
from nbwork._wake import notify
from nbwork.info import FINISHED_STATES
from tests.conftest import wait_until
from tests.reliability import (
    REPO,
    ChaosStep,
    consistency_problems,
    descendants,
    live_pid,
    scheduler_log,
    stop_store_processes,
    store_processes,
    succeeded_count,
)

pytestmark = pytest.mark.slow

WORKS = int(os.environ.get("NBWORK_CHAOS_WORKS", "300"))
SEED = int(os.environ.get("NBWORK_CHAOS_SEED", "0")) or random.SystemRandom().randrange(1, 10**6)
CHAIN = 5
FAILS_AT = 2      # the step at which a failing chain fails
CANCEL_AT = 2     # the step that is cancelled in a cancelled chain
RESUME_WITHIN = 5.0
SCHEDULER_KILL_SHARE = 0.25
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


def _record_lines(path: str) -> list[tuple[int, str]]:
    try:
        with open(path) as f:
            return [(int(a), n) for a, n in (line.split() for line in f if line.strip())]
    except FileNotFoundError:
        return []


def test_chaos(tmp_path, store_path):
    rng = random.Random(SEED)
    print(f"chaos: {WORKS} works, seed {SEED} (NBWORK_CHAOS_SEED={SEED} replays the plan)")
    records, markers = tmp_path / "records", tmp_path / "markers"
    records.mkdir()
    markers.mkdir()
    Store(store_path).enable_journal()
    wm = WorkManager(store_path)
    store = wm._store

    chains: list[tuple[str, list[OneTimeWorkRequest]]] = []
    for c in range(max(1, WORKS // CHAIN)):
        kind = _kind(c)
        steps = [OneTimeWorkRequest(
            ChaosStep, tags=["chaos", f"chain-{c}"], backoff_policy=BackoffPolicy.LINEAR,
            backoff_delay=0, input_data={
                "record": str(records / f"{c}-{i}"), "markers": str(markers),
                "pause": rng.uniform(0.02, 0.12), "fail": kind == "fail" and i == FAILS_AT})
            for i in range(CHAIN)]
        chains.append((kind, steps))
    # Cancelled chains are cancelled when this many works have finished.
    cancel_when = {c: rng.randrange(0, len(chains) * CHAIN)
                   for c, (kind, _) in enumerate(chains) if kind == "cancel"}
    for _, steps in chains:
        continuation = wm.begin_with(steps[0])
        for step in steps[1:]:
            continuation = continuation.then(step)
        continuation.enqueue()
    every = [s for _, steps in chains for s in steps]
    total = len(every)

    def finished() -> int:
        return sum(len(store.state_index(s)) for s in FINISHED_STATES)

    stats: Counter = Counter()
    worker_kills: Counter = Counter()    # work id -> kills of one of its attempts
    resume: list[float] = []
    started = time.monotonic()
    wait_until(lambda: holder_pid(store_path), what="the scheduler")

    def kill_scheduler() -> None:
        pid = wait_until(lambda: holder_pid(store_path), timeout=RESUME_WITHIN,
                         what="a scheduler to kill")
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        stats["scheduler_kills"] += 1
        # No client call here or anywhere in the loop: only the supervisor can bring it back.
        wait_until(lambda: holder_pid(store_path) not in (None, pid), timeout=RESUME_WITHIN,
                   what="a new scheduler within 5 s")
        resume.append(time.monotonic() - killed_at)

    def kill_a_worker() -> None:
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
            # another, so the store's view may be a moment old), and kill it only if that
            # work has been killed fewer than MAX_CONSECUTIVE_CRASHES - 1 times: crashes
            # alone must never fail a chaos work.
            os.kill(process.pid, signal.SIGSTOP)
            killed = False
            try:
                marker = _read_marker(str(markers), process.pid)
                if marker is None or abs(marker[1] - process.create_time()) > 0.01:
                    continue
                if worker_kills[marker[0]] >= MAX_CONSECUTIVE_CRASHES - 1:
                    continue
                os.kill(process.pid, signal.SIGKILL)
                killed = True
                worker_kills[marker[0]] += 1
                stats["worker_kills"] += 1
                return
            finally:
                if not killed:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGCONT)
        stats["worker_kills_skipped"] += 1   # nothing suitable was running at that moment

    try:
        while finished() < total:
            # Pace the faults by progress (a kill after every few finished works), so the
            # run makes progress on any machine, however slow.
            target = min(total, finished() + rng.randint(1, 6))
            wait_until(lambda t=target: finished() >= t, timeout=120,
                       what=f"progress to {target} finished works")
            for c, when in list(cancel_when.items()):
                if finished() >= when:
                    del cancel_when[c]
                    # The store operation and the wake-up, without WorkManager's "start a
                    # scheduler if none runs" (which would hide a missing restart).
                    _ops.cancel(store, [chains[c][1][CANCEL_AT].id], wm.clock.now())
                    notify(store_path)
                    stats["cancels"] += 1
            if finished() >= total:
                break
            if rng.random() < SCHEDULER_KILL_SHARE:
                kill_scheduler()
            else:
                kill_a_worker()
        duration = time.monotonic() - started

        # --- the verdict ---------------------------------------------------------------------
        lost: list[str] = []
        duplicated: list[str] = []
        problems: list[str] = []
        executions = attempts_started = 0
        states: Counter = Counter()
        for c, (kind, steps) in enumerate(chains):
            specs = [store.get(s.id) for s in steps]
            if any(s is None for s in specs):
                lost.extend(s.id for s, spec in zip(steps, specs, strict=True) if spec is None)
                continue
            got = [s.state for s in specs]
            states.update(s.value for s in got)
            S, F, C = WorkState.SUCCEEDED, WorkState.FAILED, WorkState.CANCELLED
            if kind == "normal":
                expected_ok = got == [S] * CHAIN
            elif kind == "fail":
                expected_ok = got == [S] * FAILS_AT + [F] * (CHAIN - FAILS_AT)
            else:   # cancelled at CANCEL_AT: the steps before it succeed; from it on S*C*
                tail = got[CANCEL_AT:]
                cut = tail.index(C) if C in tail else len(tail)
                expected_ok = (got[:CANCEL_AT] == [S] * CANCEL_AT
                               and tail == [S] * cut + [C] * (len(tail) - cut))
            if not expected_ok:
                lost.extend(s.id for s in steps)
                problems.append(f"chain {c} ({kind}): {[s.value for s in got]}")
            for i, (step, spec) in enumerate(zip(steps, specs, strict=True)):
                lines = _record_lines(str(records / f"{c}-{i}"))
                executions += len(lines)
                journal = store.journal_of(step.id)
                attempts_started += sum(1 for e in journal if e[1] == "RUNNING")
                finals = [e for e in journal if e[1] in {s.value for s in FINISHED_STATES}]
                if len(finals) != 1 or finals[0][1] != spec.state.value:
                    problems.append(f"{c}-{i}: finished {len(finals)} times: {journal}")
                if spec.state is S:
                    last = lines[-1] if lines else None
                    attempts = [a for a, _ in lines]
                    if (succeeded_count(store, step.id) != 1
                            or last != (spec.output["attempt"], spec.output["nonce"])
                            or attempts != sorted(set(attempts))):
                        duplicated.append(step.id)
                        problems.append(f"{c}-{i}: journal {journal}, runs {lines}, "
                                        f"output {spec.output}")
                    if spec.output["n"] != i + 1:   # each step got its parent's output
                        problems.append(f"{c}-{i}: n = {spec.output['n']}")
                elif succeeded_count(store, step.id):
                    duplicated.append(step.id)
                    problems.append(f"{c}-{i}: {spec.state.value} yet SUCCEEDED in {journal}")
        log = scheduler_log(store_path)
        results = {
            "works": total, "chains": len(chains), "chain_length": CHAIN, "seed": SEED,
            "scheduler_kills": stats["scheduler_kills"],
            "scheduler_restarts": log.count("; restarting it in"),
            "worker_kills": stats["worker_kills"],
            "worker_kills_skipped": stats["worker_kills_skipped"],
            "works_whose_worker_was_killed": len(worker_kills),
            "cancels": stats["cancels"],
            "recovered_attempts": log.count("left RUNNING by a previous scheduler"),
            "attempts_started": attempts_started,
            "executions_to_success": executions,
            "final_states": dict(states),
            "lost": len(set(lost)), "duplicated": len(set(duplicated)),
            "max_resume_seconds": round(max(resume), 3) if resume else None,
            "mean_resume_seconds": round(sum(resume) / len(resume), 3) if resume else None,
            "duration_seconds": round(duration, 1),
            "consistency_problems": consistency_problems(store),
        }
        os.makedirs(os.path.dirname(ARTIFACT), exist_ok=True)
        with open(ARTIFACT, "w") as f:
            json.dump(results, f, indent=2)
        print(json.dumps(results, indent=2))
        assert problems == [], problems[:10]
        assert results["lost"] == 0 and results["duplicated"] == 0
        assert results["consistency_problems"] == []
        assert not store.state_index(WorkState.RUNNING)
        assert stats["scheduler_kills"] > 0 and stats["worker_kills"] > 0
        assert results["scheduler_restarts"] >= stats["scheduler_kills"]
        assert "Traceback" not in log
    finally:
        stop_store_processes(store_path)
