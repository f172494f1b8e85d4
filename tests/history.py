"""A history checker for the chaos suite, in the style of Jepsen's total-queue checker.

Every attempt of a chaos step appends lines to one history file (one ``write`` each, with
``O_APPEND``), naming its work and a nonce of its own (one per attempt):

    S <work> <nonce> <attempt> <time>      the attempt started
    B <work> <nonce> <time>                it is still running (a heartbeat)
    H <work> <nonce> <pid> <time>          its helper, a process in a session of its own, runs
    E <work> <nonce> ok|fail <time>        it returned (success or failure)

Times are ``time.time()`` of the writing process (one clock for the whole machine).
A run's interval is from its S line to the last line of its nonce, its helper's included.
Given what the store kept, ``check`` reports:

- **lost**: a work acknowledged to its client that is missing, or not in the final state
  its chain demands;
- **doubled**: a work whose journal shows more than one SUCCEEDED, or whose kept output
  names a run that never returned ok;
- **after success**: a run of a work that started after the run whose success the store
  kept had returned;
- **overlapping**: two runs of one work alive at once (helpers included).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


def append(path: str, line: str) -> None:
    """Append one line in one write (never interleaved with another process's line)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def now() -> str:
    return f"{time.time():.6f}"


@dataclass
class Run:
    work: str
    nonce: str
    attempt: int = -1
    start: float | None = None
    last: float = 0.0
    ended: str | None = None  # "ok" or "fail" once it returned
    end_time: float | None = None
    helper_last: float | None = None

    @property
    def alive_until(self) -> float:
        return max(self.last, self.helper_last or 0.0)


@dataclass
class Report:
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    after_success: list[str] = field(default_factory=list)
    overlapping: list[str] = field(default_factory=list)
    runs: int = 0
    runs_returned_ok: int = 0
    helper_beats: int = 0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.doubled or self.after_success or self.overlapping)

    def summary(self) -> dict:
        return {"lost": len(self.lost), "doubled": len(self.doubled),
                "runs_after_kept_success": len(self.after_success),
                "overlapping_runs": len(self.overlapping), "runs": self.runs,
                "runs_returned_ok": self.runs_returned_ok, "helper_beats": self.helper_beats}


def parse(lines: list[str]) -> tuple[dict[str, list[Run]], int]:
    """Runs per work, in order of start; and how many helper heartbeats there were."""
    runs: dict[str, Run] = {}
    helper_beats = 0
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue  # a line cut by a kill mid-write cannot happen (one write), but be safe
        kind, work, nonce = parts[0], parts[1], parts[2]
        run = runs.setdefault(nonce, Run(work, nonce))
        at = float(parts[-1])
        if kind == "S":
            run.attempt, run.start = int(parts[3]), at
            run.last = max(run.last, at)
        elif kind == "B":
            run.last = max(run.last, at)
        elif kind == "H":
            helper_beats += 1
            run.helper_last = max(run.helper_last or 0.0, at)
        elif kind == "E":
            run.ended, run.end_time = parts[3], at
            run.last = max(run.last, at)
    by_work: dict[str, list[Run]] = {}
    for run in runs.values():
        by_work.setdefault(run.work, []).append(run)
    for work_runs in by_work.values():
        work_runs.sort(key=lambda r: r.start if r.start is not None else r.last)
    return by_work, helper_beats


def helper_pids(history: list[str]) -> set[int]:
    return {int(line.split()[3]) for line in history if line.startswith("H ")}


def check(history: list[str], expected: dict[str, str], final: dict[str, tuple[str, str | None]],
          successes: dict[str, int]) -> Report:
    """``expected``: work -> the final state its chain demands, for every acknowledged work;
    ``final``: work -> (state, nonce of the kept output or None) for every work in the store;
    ``successes``: work -> SUCCEEDED transitions in the store's journal."""
    by_work, helper_beats = parse(history)
    report = Report(helper_beats=helper_beats)
    for work, state in expected.items():
        if work not in final:
            report.lost.append(f"{work}: acknowledged, not in the store")
        elif final[work][0] != state:
            report.lost.append(f"{work}: {final[work][0]}, expected {state}")
    for work, (state, kept_nonce) in final.items():
        runs = by_work.get(work, [])
        report.runs += len(runs)
        report.runs_returned_ok += sum(1 for r in runs if r.ended == "ok")
        if successes.get(work, 0) > 1 or (state != "SUCCEEDED" and successes.get(work, 0)):
            report.doubled.append(f"{work}: {successes.get(work)} SUCCEEDED in the journal, "
                                  f"now {state}")
        if state == "SUCCEEDED":
            kept = next((r for r in runs if r.nonce == kept_nonce), None)
            if kept is None or kept.ended != "ok" or kept.end_time is None:
                report.doubled.append(f"{work}: kept output of run {kept_nonce}, which never "
                                      "returned ok")
            else:
                later = [r for r in runs if r.start is not None and r.start > kept.end_time]
                if later:
                    report.after_success.append(
                        f"{work}: {len(later)} runs after the kept success "
                        f"({kept.nonce} ended {kept.end_time}; first {later[0].nonce} "
                        f"started {later[0].start})")
        latest: Run | None = None  # of the runs started so far, the one alive longest
        for run in (r for r in runs if r.start is not None):
            if latest is not None and latest.alive_until > run.start:  # type: ignore[operator]
                what = "its helper" if (latest.helper_last or 0) > latest.last else "it"
                report.overlapping.append(
                    f"{work}: run {latest.nonce} (attempt {latest.attempt}; {what} alive "
                    f"until {latest.alive_until:.3f}) overlaps run {run.nonce} (attempt "
                    f"{run.attempt}, started {run.start:.3f})")
            if latest is None or run.alive_until > latest.alive_until:
                latest = run
    return report
