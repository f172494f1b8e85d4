"""The scheduler's supervisor: it restarts a scheduler that died, with no client call.

A client starts this small process (in a session of its own, see ``Daemon.spawn``) instead
of the scheduler itself. It runs the scheduler as its child (again a session leader) and
waits for it to end:

- exit 0 (an idle exit, or a stop by SIGTERM / SIGINT): the supervisor exits too;
- another scheduler holds the store's lock (this one lost a start race, or a client
  started a new one meanwhile): the supervisor exits, that one runs the store;
- any other end (SIGKILL, the out-of-memory killer, a segfault, an uncaught exception):
  it starts a new scheduler, which recovers the attempts its predecessor left RUNNING.
  The pause before a restart doubles from ``RESTART_PAUSE`` while schedulers keep dying
  within ``FAST_CRASH`` seconds of their start, up to ``MAX_RESTART_PAUSE``, so a killed
  scheduler is back within about a second however often it is killed.
- A scheduler that *fails* — exits with an error, or dies before it could take the store's
  lock (it cannot even start) — ``MAX_FAILURES`` times in a row is not restarted again.
- A scheduler that dies after a good start *without recording a single result* (the
  out-of-memory killer, a crash in a loop, a hang: see below) counts as a fruitless death:
  the pause doubles with each one in a row up to ``MAX_DEATH_PAUSE``, and after
  ``MAX_DEATHS`` of them in a row it is not restarted. A scheduler that recorded results
  before it died (a kill in normal operation) resets the count: kills never add up.

On giving up it says why in ``scheduler.log`` and in ``supervisor.note`` (see
``_liveness``): ``nbwork daemon status`` and ``wm.daemon.status()`` show it, and clients
warn instead of starting a scheduler by themselves for ``GIVE_UP_HOLD`` seconds (an explicit
``wm.daemon.start()`` / ``nbwork daemon start`` tries again at once).

Liveness: the scheduler's loop writes a heartbeat (``scheduler.beat``) every second. A
scheduler whose heartbeat is older than ``NBWORK_HUNG_AFTER`` seconds (default
``HUNG_AFTER``: far longer than any wait inside its loop) is stopped or hung: the
supervisor SIGKILLs it, waits for its death (only then is the store's lock free), and
restarts it as after any death. Two schedulers never run: the lock sees to that.

SIGTERM or SIGINT sent to the supervisor is passed on to the scheduler and ends the
supervision. A machine reboot ends both; the first client use afterwards (``WorkManager()``
when unfinished work exists, or any enqueue / wait) starts them again.

It imports no more than the lock query and the liveness files, and never opens the store's
database.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from ._liveness import read_beat, write_note
from ._lock import holder_pid, last_holder_pid

SCHEDULER_CODE = "import sys; from nbwork._scheduler_main import main; sys.exit(main())"
"""The ``python -c`` program of the scheduler ("-c" rather than "-m": see ``Daemon.spawn``)."""
FORMER_SCHEDULER_CODES = ("import sys; from nbwork._daemon import main; sys.exit(main())",)
"""What older nbwork versions ran as the scheduler: a scheduler (or a supervisor) started
before an upgrade still runs under these, and must still be found and stopped."""
SUPERVISOR_CODE = "import sys; from nbwork._supervisor import supervise; sys.exit(supervise())"

FAST_CRASH = 1.0
"""A scheduler that dies within this many seconds of its start counts as a quick death."""
RESTART_PAUSE = 0.1
MAX_RESTART_PAUSE = 1.0
"""The pause before a restart: RESTART_PAUSE doubled per quick death in a row, at most this
(so a killed scheduler is back well within 5 s)."""
MAX_FAILURES = 10
"""Failures in a row (an error exit, or a death before taking the lock) before giving up."""
MAX_DEATHS = 8
"""Deaths in a row after a good start with no result recorded, before giving up."""
MAX_DEATH_PAUSE = 30.0
"""Seconds: the longest pause before restarting a scheduler after fruitless deaths."""
HUNG_AFTER = 120.0
"""Seconds without a heartbeat after which a scheduler counts as hung (``NBWORK_HUNG_AFTER``).
Generous: a step may wait up to a minute for a store locked by a client."""
WATCH_INTERVAL = 1.0
"""Seconds between two looks at the scheduler's heartbeat."""
GIVE_UP_HOLD = 600.0
"""Seconds after a give-up during which clients do not start a scheduler by themselves."""
HELD_BYTES = 64 * 1024
_HELD_MARK = b"(the following lines were held while the log could not be written)\n"

log = logging.getLogger("nbwork.supervisor")


def _store_of(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--store" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--store="):
            return arg.split("=", 1)[1]
    return None


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _HoldingHandler(logging.Handler):
    """Log lines to stderr (the store's ``scheduler.log``); what cannot be written (the log
    is on a full disk) is held, the last ``HELD_BYTES`` of it, and written before the next
    line, so what happened while the disk was full is not lost."""

    def __init__(self) -> None:
        super().__init__()
        self._held = b""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode(errors="replace")
        except Exception:
            self.handleError(record)
            return
        if self._held and not self._held.startswith(_HELD_MARK):
            self._held = _HELD_MARK + self._held
        data = self._held + line
        try:
            while data:
                data = data[os.write(2, data):]
        except OSError:
            pass
        self._held = data[-HELD_BYTES:]


def configure_logging() -> None:
    """Timestamped lines with the pid, through ``_HoldingHandler`` (for the supervisor and
    the scheduler, whose stderr is the store's log)."""
    handler = _HoldingHandler()
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s [{os.getpid()}] %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _hung_after() -> float:
    try:
        return max(1.0, float(os.environ.get("NBWORK_HUNG_AFTER", HUNG_AFTER)))
    except ValueError:
        return HUNG_AFTER


def _wait(child: subprocess.Popen, store: str, hung_after: float) -> tuple[int, bool]:
    """Wait for the scheduler to end; SIGKILL it if its heartbeat is older than
    ``hung_after`` while it holds the lock. Returns (exit code, whether it was hung)."""
    while True:
        try:
            return child.wait(WATCH_INTERVAL), False
        except subprocess.TimeoutExpired:
            pass
        beat = read_beat(store)
        if beat is None or beat.pid != child.pid or beat.age <= hung_after:
            continue
        if holder_pid(store) != child.pid:
            continue
        log.error("scheduler %d has not turned its loop for %.0f s (stopped or hung); killing "
                  "it", child.pid, beat.age)
        child.kill()  # SIGKILL ends a stopped process too
        return child.wait(), True  # its death frees the lock: only then may another start


def supervise(argv: list[str] | None = None) -> int:
    """Run the scheduler (``argv`` are its arguments) until it ends normally."""
    args = list(sys.argv[1:] if argv is None else argv)
    store = _store_of(args)
    if store is None:
        print("nbwork supervisor: --store DIR is required", file=sys.stderr)
        return 2
    configure_logging()
    command = [sys.executable, "-c", SCHEDULER_CODE, *args]
    hung_after = _hung_after()
    stopping = False
    child: subprocess.Popen | None = None

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.returncode is None:
            try:
                child.send_signal(signum)
            except OSError:
                pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    quick_deaths = failures = deaths = 0
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, close_fds=True,
                                 start_new_session=True)
        if stopping:  # a stop that came while the child was being started
            child.terminate()
        code, hung = _wait(child, store, hung_after)
        if stopping or (not hung and code in (0, -signal.SIGTERM, -signal.SIGINT)):
            return 0
        holder = holder_pid(store)
        if holder is not None:
            log.info("scheduler %d %s; scheduler %d runs this store, so this supervisor "
                     "exits", child.pid, _describe(code), holder)
            return 0
        failed = code > 0 or last_holder_pid(store) != child.pid
        failures = failures + 1 if failed else 0
        beat = read_beat(store)
        productive = beat is not None and beat.pid == child.pid and beat.recorded > 0
        deaths = 0 if failed or productive else deaths + 1
        what = f"scheduler {child.pid} {_describe(code)}" + (" (hung)" if hung else "")
        if failures >= MAX_FAILURES or deaths >= MAX_DEATHS:
            why = (f"it failed {failures} times in a row" if failures >= MAX_FAILURES else
                   f"it died {deaths} times in a row without recording a result (out of "
                   "memory? a crash in a loop? see the log above)")
            log.error("%s; %s, so it is not restarted. Clients do not start one by "
                      "themselves for %.0f minutes; 'nbwork daemon start' (or "
                      "wm.daemon.start()) tries again now", what, why, GIVE_UP_HOLD / 60)
            write_note(store, f"{what}; {why}, so the supervisor stopped restarting it. See "
                              "scheduler.log in the store; 'nbwork daemon start' (or "
                              "wm.daemon.start()) tries again")
            return 1
        quick_deaths = quick_deaths + 1 if time.monotonic() - started < FAST_CRASH else 0
        pause = min(RESTART_PAUSE * 2 ** quick_deaths, MAX_RESTART_PAUSE)
        if deaths:
            pause = max(pause, min(RESTART_PAUSE * 2 ** deaths, MAX_DEATH_PAUSE))
        log.warning("%s; restarting it in %.1f s", what, pause)
        deadline = time.monotonic() + pause
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.02)
    return 0

