"""The local executor: a bounded pool of warm, niced worker processes (``slot.py``).

Each slot is a process started from a forkserver (clean: it holds none of the scheduler's
files or locks), leader of a process group of its own, that runs attempts one after
another. Stopping sends a stop message (the worker sees ``is_stopped`` and
``on_stopped()``), then SIGTERM to the slot's group after the grace period and SIGKILL
shortly after, so a worker that ignores the stop and everything it started are gone; a
fresh slot replaces it. After every attempt the slot kills whatever the attempt left
running, so no grandchild outlives its attempt. A slot is retired after
``MAX_RUNS_PER_PROCESS`` attempts once it has lived ``MIN_PROCESS_LIFETIME``, so leaks in
user code cannot grow without bound.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from .._rules import Outcome, OutcomeKind
from ..info import StopReason
from .attempt import from_wire, send_message
from .base import DEFAULT_STOP_GRACE, AttemptSpec, CodeSource, DiscardSink, Sink
from .capture import remove_stale, salvage
from .leftovers import MARK, Cgroups
from .process_groups import (
    GraceThenKill,
    exit_description,
    kill_group,
    kill_orphans_of,
    kill_processes,
    same_process,
)
from .reaper import REAPER_PARENT
from .slot import CODE_CACHE_SIZE, slot_main

log = logging.getLogger("nbwork.executor")

MAX_RUNS_PER_PROCESS = 500
MIN_PROCESS_LIFETIME = 30.0
"""Seconds a slot lives at least before it is retired for its count of attempts: a flood of
no-ops reached 500 in a quarter of a second, and a fresh process (fork, code, a queue that
starts one deep) cost more than the work it replaced, most of all on a busy machine."""
SHORT_WORK = 0.02
"""Seconds: a slot whose last attempt was shorter than this is handed a queue of attempts,
about ``QUEUE_SECONDS`` of them at that pace (at most ``BATCH_DEPTH``), so a flood of small
works costs one store transaction per batch rather than per work, and the slot never waits
for the scheduler between two of them. Longer works are handed out one per slot."""
QUEUE_SECONDS = 0.05
BATCH_DEPTH = 256
"""(256 rather than 64: a flood of no-ops then took 13 transactions per 2,000 works instead
of 32, each rewriting the queue's index shards; ``QUEUE_SECONDS`` still bounds how long an
attempt waits in a queue, whatever this depth.)"""
RECLAIM_AFTER = 0.1
"""Seconds: when an attempt runs this much longer than its slot expected while another slot
could take work, the attempts queued behind it are taken back (``not_started``) and run
elsewhere: a long work never holds short ones back while a process idles."""


_SLOT_PIDS: set[int] = set()
"""The worker processes of every local executor in this process: they share one forkserver,
so none of them is taken for an orphan there."""


def _kill_slot_tree(slot: _Slot) -> None:
    """SIGKILL a live worker process and everything below it, in or out of its group."""
    process = same_process(slot.process.pid, slot.create_time)
    if process is not None:
        kill_processes([process])
    kill_group(slot.process.pid, signal.SIGKILL)
    Cgroups.kill(slot.cgroup)
    slot.cgroup = None


@dataclass
class _Slot:
    process: Any
    conn: Any
    create_time: float | None = None
    tokens: list[str] = field(default_factory=list)  # in order: the first one runs
    stop_reasons: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    ending: GraceThenKill = field(default_factory=GraceThenKill)  # of its running attempt
    runs: int = 0
    born: float = field(default_factory=time.monotonic)
    last_duration: float | None = None  # of its last attempt, None before any
    unqueuing: set[str] = field(default_factory=set)  # taken back, not yet confirmed
    dead: bool = False  # its process ended (set by poll)
    log_dir: str | None = None  # where its scratch output file is (see slot.py)
    log_paths: dict[str, str | None] = field(default_factory=dict)  # token -> its log
    # The code keys this process holds, least recently used first (it keeps what it is sent
    # until told to forget it), and the key of each attempt handed to it.
    codes: collections.OrderedDict[str, None] = field(default_factory=collections.OrderedDict)
    code_of: dict[str, str] = field(default_factory=dict)
    cgroup: str | None = None  # its own cgroup, where the machine allows (see leftovers.py)
    parent_pid: int | None = None  # the forkserver that started it (a subreaper)

    @property
    def alive(self) -> bool:
        """As of the last poll (which notices a death): no wait() call per question."""
        return not self.dead and not self.conn.closed

    @property
    def depth(self) -> int:
        last = self.last_duration
        if last is None or last >= SHORT_WORK:
            return 1
        return max(2, min(BATCH_DEPTH, int(QUEUE_SECONDS / max(last, 1e-4))))


class LocalExecutor:
    def __init__(self, capacity: int | None = None, stop_grace: float = DEFAULT_STOP_GRACE,
                 max_runs_per_process: int = MAX_RUNS_PER_PROCESS,
                 min_process_lifetime: float = MIN_PROCESS_LIFETIME) -> None:
        self.capacity = max(1, capacity or os.cpu_count() or 1)
        self.stop_grace = stop_grace
        self.max_runs_per_process = max_runs_per_process
        self.min_process_lifetime = min_process_lifetime
        self._ctx = multiprocessing.get_context("forkserver")
        # The forkserver adopts what a dying worker process orphans (see reaper.py).
        self._ctx.set_forkserver_preload(["nbwork._executors.reaper", "nbwork._executors.slot"])
        self._cgroups: Cgroups | None = None  # made with the first worker process
        self._slots: list[_Slot] = []
        self._by_token: dict[str, _Slot] = {}
        self._tidied: set[str] = set()  # log folders cleared of dead processes' scratch files
        self._handed_over: list[str] = []  # tokens whose process the sink has not heard of
        self._code_source: CodeSource | None = None

    def set_code_source(self, source: CodeSource) -> None:
        """Where attempts without a payload get their code: read for a process that lacks
        it, streamed to it in pieces, and kept there (see ``_send_code``)."""
        self._code_source = source

    def running(self) -> set[str]:
        """Attempts handed to a slot (running, or queued right behind a short one)."""
        return set(self._by_token)

    def room(self) -> int:
        """How many more attempts ``submit`` takes now.

        A slot with a queue counts only once its queue is down to half: it has work for a
        while, and topping it up one attempt at a time would cost a store transaction each.
        """
        live = [s for s in self._slots if s.alive]
        spare = sum(s.depth - len(s.tokens) for s in live if len(s.tokens) * 2 <= s.depth)
        return spare + max(0, self.capacity - len(live))

    def _new_slot(self) -> _Slot:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=slot_main, args=(child_conn,), name="nbwork-slot",
                                    daemon=False)
        # Only for the forkserver, which the first start() spawns: no other process of ours
        # may take itself for it (a supervisor a test starts, say).
        os.environ[REAPER_PARENT] = str(os.getpid())
        try:
            process.start()
        finally:
            os.environ.pop(REAPER_PARENT, None)
        _SLOT_PIDS.add(process.pid)
        child_conn.close()
        slot = _Slot(process, parent_conn)
        if self._cgroups is None:
            self._cgroups = Cgroups(os.environ.get(MARK))
        # Before its first attempt: it has started nothing yet, so everything it will start
        # is in its cgroup.
        slot.cgroup = self._cgroups.add(process.pid)
        try:
            ps = psutil.Process(process.pid)
            slot.create_time, slot.parent_pid = ps.create_time(), ps.ppid()
        except psutil.Error:
            pass
        self._slots.append(slot)
        return slot

    def submit(self, attempt: AttemptSpec) -> None:
        live = [s for s in self._slots if s.alive]
        idle = [s for s in live if not s.tokens]
        if idle:
            slot = idle[0]
        elif len(live) < self.capacity:
            slot = self._new_slot()
        else:
            open_slots = [s for s in live if len(s.tokens) < s.depth]
            if not open_slots:
                raise RuntimeError("LocalExecutor.submit() with no room(); wait for room first")
            slot = min(open_slots, key=lambda s: len(s.tokens))
        if not slot.tokens:
            slot.started_at = time.monotonic()
        try:
            self._send_code(slot, attempt)
            send_message(slot.conn, ("run", attempt if attempt.payload is None
                                         else dataclasses.replace(attempt, payload=None)))
        except OSError:  # it died since the last poll: poll() retires it; try another
            slot.dead = True
            self.submit(attempt)
            return
        except BaseException:
            # The code could not be read midway through: the process waits for the rest
            # of it, so it is ended (poll() reports what it was running).
            slot.dead = True
            slot.conn.close()
            raise
        slot.tokens.append(attempt.token)
        slot.code_of[attempt.token] = attempt.code_key
        self._handed_over.append(attempt.token)
        slot.log_paths[attempt.token] = attempt.log_path
        if attempt.log_path:
            slot.log_dir = os.path.dirname(attempt.log_path)
            if slot.log_dir not in self._tidied:
                self._tidied.add(slot.log_dir)
                remove_stale(slot.log_dir)
        slot.runs += 1
        self._by_token[attempt.token] = slot

    def _send_code(self, slot: _Slot, attempt: AttemptSpec) -> None:
        """Send the attempt's code to the slot unless it has it: once per process and key,
        never once per attempt, and in pieces (``("code", key, size)`` then raw bytes)."""
        key = attempt.code_key
        if key in slot.codes:
            slot.codes.move_to_end(key)
            return
        if attempt.payload is not None:
            size, pieces = len(attempt.payload), iter([attempt.payload])
        elif self._code_source is not None:
            size, pieces = self._code_source(key)
        else:
            raise RuntimeError(f"attempt {attempt.token} has no payload and no code source")
        send_message(slot.conn, ("code", key, size))
        for piece in pieces:
            slot.conn.send_bytes(piece)
        slot.codes[key] = None
        if len(slot.codes) > CODE_CACHE_SIZE:
            # Forget the least recently used, never one a queued attempt still needs.
            needed = {slot.code_of.get(t) for t in slot.tokens} | {key}
            for old in [k for k in slot.codes if k not in needed]:
                if len(slot.codes) <= CODE_CACHE_SIZE:
                    break
                del slot.codes[old]
                send_message(slot.conn, ("forget", old))

    def stop(self, token: str, reason: str) -> None:
        slot = self._by_token.get(token)
        if slot is None or token in slot.stop_reasons:
            return
        slot.stop_reasons[token] = reason
        if slot.tokens[0] == token:
            slot.ending.start(time.monotonic(), self.stop_grace)
        try:
            send_message(slot.conn, ("stop", token, reason))
        except OSError:
            pass

    def wait_objects(self) -> list[Any]:
        objects: list[Any] = []
        for slot in self._slots:
            if not slot.conn.closed:
                objects.append(slot.conn)
            objects.append(slot.process.sentinel)
        return objects

    def next_deadline(self) -> float | None:
        times = [t for s in self._slots if (t := s.ending.deadline()) is not None]
        if self._free_process():  # else nothing could be reclaimed: no reason to wake
            times += [s.started_at + RECLAIM_AFTER for s in self._slots
                      if s.started_at is not None and len(s.tokens) > 1 + len(s.unqueuing)]
        return min(times) if times else None

    def poll(self, sink: Sink) -> None:
        now = time.monotonic()
        # The process that runs (or will run, once those before it in its queue are done)
        # each attempt handed over since the last poll: recorded with the work, so a
        # scheduler that takes over after a crash can end it.
        handed_over, self._handed_over = self._handed_over, []
        for token in handed_over:
            slot = self._by_token.get(token)
            if slot is not None:
                sink.started(token, slot.process.pid, slot.create_time)
        for slot in list(self._slots):
            self._read_messages(slot, sink)
            if slot.process.exitcode is None:
                due = slot.ending.due(now)
                if due == signal.SIGKILL:
                    _kill_slot_tree(slot)
                elif due == signal.SIGTERM:
                    log.info("attempt %s ignored its stop; terminating it", slot.tokens[:1])
                    kill_group(slot.process.pid, signal.SIGTERM, group_only=False)
                elif (not slot.tokens and slot.runs >= self.max_runs_per_process
                      and now - slot.born >= self.min_process_lifetime):
                    self._retire(slot)
                continue
            slot.dead = True
            self._read_messages(slot, sink)
            if slot.tokens and slot.log_dir:  # what the attempt printed before it died
                salvage(slot.log_dir, slot.process.pid, slot.log_paths.get(slot.tokens[0]))
            self._retire(slot)
            for position, token in enumerate(slot.tokens):
                del self._by_token[token]
                reason = slot.stop_reasons.get(token)
                if reason is not None:
                    outcome = Outcome(OutcomeKind.STOPPED, stop_reason=reason)
                elif position == 0:
                    outcome = Outcome(OutcomeKind.CRASH,
                                      error=exit_description(slot.process.exitcode))
                else:  # queued behind the one that died: it never ran, back to the queue
                    outcome = Outcome(OutcomeKind.NOT_STARTED)
                sink.finished(token, outcome)
            slot.tokens.clear()
        self._reclaim_queues(now)

    def _free_process(self) -> bool:
        live = [s for s in self._slots if s.alive]
        return len(live) < self.capacity or any(not s.tokens for s in live)

    def _reclaim_queues(self, now: float) -> None:
        """Take back what waits behind an attempt that turned out long, if a process is
        free to run it (see RECLAIM_AFTER)."""
        if not self._free_process():
            return
        for slot in (s for s in self._slots if s.alive):
            if (len(slot.tokens) > 1 and slot.started_at is not None
                    and now - slot.started_at > RECLAIM_AFTER):
                for token in slot.tokens[1:]:
                    if token in slot.unqueuing or token in slot.stop_reasons:
                        continue
                    slot.unqueuing.add(token)
                    try:
                        send_message(slot.conn, ("unqueue", token))
                    except OSError:
                        break

    def _retire(self, slot: _Slot) -> None:
        """End a slot and everything in its process group."""
        if slot in self._slots:
            self._slots.remove(slot)
        reaped = slot.process.exitcode is not None
        if not reaped:
            slot.conn.close()  # the slot ends itself and its group when its pipe closes
            slot.process.join(1.0)
            reaped = slot.process.exitcode is not None
        # Grandchildren left behind die with it (only the group once the pid is reaped).
        kill_group(slot.process.pid, signal.SIGKILL, group_only=reaped)
        slot.process.join()
        # And what escaped its group: in its cgroup, or orphaned to the forkserver.
        Cgroups.kill(slot.cgroup)
        slot.cgroup = None
        _SLOT_PIDS.discard(slot.process.pid)
        if slot.parent_pid is not None:
            kill_orphans_of(slot.parent_pid, keep=_SLOT_PIDS)
        if slot.log_dir:
            salvage(slot.log_dir, slot.process.pid, None)
        if not slot.conn.closed:
            slot.conn.close()

    def _read_messages(self, slot: _Slot, sink: Sink) -> None:
        while not slot.conn.closed:
            try:
                if not slot.conn.poll():
                    return
                message = slot.conn.recv()
            except (EOFError, OSError):
                slot.conn.close()
                return
            if message[0] == "progress":
                if message[1] in slot.tokens:  # else: of an attempt this slot no longer runs
                    sink.progress(message[1], message[2])
                continue
            token, outcome, seconds = from_wire(message[1])
            if token in slot.tokens:
                self._finished(slot, token, outcome, seconds, sink)

    def _finished(self, slot: _Slot, token: str, outcome: Outcome, seconds: float,
                  sink: Sink) -> None:
        del self._by_token[token]
        slot.tokens.remove(token)
        slot.log_paths.pop(token, None)
        slot.code_of.pop(token, None)
        now = time.monotonic()
        slot.unqueuing.discard(token)
        if outcome.kind not in (OutcomeKind.NOT_STARTED, OutcomeKind.STOPPED):
            slot.last_duration = seconds  # measured in the slot: no pipe or scheduler delay
        slot.started_at = now if slot.tokens else None
        slot.ending.cancel()
        reason = slot.stop_reasons.pop(token, None)
        if slot.tokens and slot.tokens[0] in slot.stop_reasons:
            slot.ending.start(now, self.stop_grace)  # the next one was stopped too
        if reason is not None:
            outcome = Outcome(OutcomeKind.STOPPED, stop_reason=reason)
        sink.finished(token, outcome)

    def shutdown(self, grace: float, sink: Sink | None = None) -> None:
        for token in list(self._by_token):
            # A StopReason value (the worker may parse it); the work is recovered to
            # ENQUEUED with this same reason.
            self.stop(token, StopReason.SCHEDULER_RESTARTED.value)
        # Wait for the attempts to return (not for the processes to end: a warm process
        # lives on after its attempt, and joining it waited out the whole grace period).
        deadline = time.monotonic() + grace
        sink = sink or DiscardSink()
        while True:
            busy = [s for s in self._slots if s.tokens and s.alive]
            remaining = deadline - time.monotonic()
            if not busy or remaining <= 0:
                break
            multiprocessing.connection.wait(
                [o for s in busy for o in (s.conn, s.process.sentinel)], remaining)
            for slot in busy:
                self._read_messages(slot, sink)
                if slot.process.exitcode is not None:
                    slot.dead = True
        for slot in list(self._slots):
            self._retire(slot)
        self._slots.clear()
        self._by_token.clear()
        if self._cgroups is not None:
            self._cgroups.close()
            self._cgroups = None
