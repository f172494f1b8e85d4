"""The scheduler's supervisor: it restarts a scheduler that died, with no client call.

A client starts this small process (in a session of its own, see ``Daemon.spawn``) instead
of the scheduler itself. It runs the scheduler as its child (again a session leader) and
waits for it to end:

- exit 0 (an idle exit, or a stop by SIGTERM / SIGINT): the supervisor exits too;
- another scheduler holds the store's lock (this one lost a start race, or a client
  started a new one meanwhile): the supervisor exits, that one runs the store;
- any other end (SIGKILL, the out-of-memory killer, a segfault, an uncaught exception):
  it starts a new scheduler at once, which recovers the attempts its predecessor left
  RUNNING. The pause before a restart doubles from ``RESTART_PAUSE`` while schedulers keep
  dying within ``FAST_CRASH`` seconds of their start, up to ``MAX_RESTART_PAUSE``, so a
  killed scheduler is back within about a second however often it is killed.
- A scheduler that *fails* — exits with an error, or dies before it could take the store's
  lock (it cannot even start) — ``MAX_FAILURES`` times in a row is not restarted again
  (no endless crash loop); the next client call starts a new supervisor. Deaths by a signal
  after a good start (kills, the out-of-memory killer) never count as failures.

SIGTERM or SIGINT sent to the supervisor is passed on to the scheduler and ends the
supervision. A machine reboot ends both; the first client use afterwards (``WorkManager()``
when unfinished work exists, or any enqueue / wait) starts them again.

It imports no more than the lock query, and never touches the store itself.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from ._lock import holder_pid, last_holder_pid

SCHEDULER_CODE = "import sys; from nbwork._daemon import main; sys.exit(main())"
"""The ``python -c`` program of the scheduler ("-c" rather than "-m": see ``Daemon.spawn``)."""
SUPERVISOR_CODE = "import sys; from nbwork._supervisor import supervise; sys.exit(supervise())"

FAST_CRASH = 1.0
"""A scheduler that dies within this many seconds of its start counts as a quick death."""
RESTART_PAUSE = 0.1
MAX_RESTART_PAUSE = 1.0
"""The pause before a restart: RESTART_PAUSE doubled per quick death in a row, at most this
(so a killed scheduler is back well within 5 s)."""
MAX_FAILURES = 10
"""Failures in a row (an error exit, or a death before taking the lock) before giving up."""

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


def supervise(argv: list[str] | None = None) -> int:
    """Run the scheduler (``argv`` are its arguments) until it ends normally."""
    args = list(sys.argv[1:] if argv is None else argv)
    store = _store_of(args)
    if store is None:
        print("nbwork supervisor: --store DIR is required", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s [{os.getpid()}] %(name)s %(levelname)s %(message)s",
    )
    command = [sys.executable, "-c", SCHEDULER_CODE, *args]
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
    quick_deaths = failures = 0
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, close_fds=True,
                                 start_new_session=True)
        if stopping:  # a stop that came while the child was being started
            child.terminate()
        code = child.wait()
        if stopping or code in (0, -signal.SIGTERM, -signal.SIGINT):
            return 0
        holder = holder_pid(store)
        if holder is not None:
            log.info("scheduler %d %s; scheduler %d runs this store, so this supervisor "
                     "exits", child.pid, _describe(code), holder)
            return 0
        failed = code > 0 or last_holder_pid(store) != child.pid
        failures = failures + 1 if failed else 0
        if failures >= MAX_FAILURES:
            log.error("scheduler %d %s; it failed %d times in a row, so it is not restarted "
                      "(the next client call starts one again)", child.pid, _describe(code),
                      failures)
            return 1
        quick_deaths = quick_deaths + 1 if time.monotonic() - started < FAST_CRASH else 0
        pause = min(RESTART_PAUSE * 2 ** quick_deaths, MAX_RESTART_PAUSE)
        log.warning("scheduler %d %s; restarting it in %.1f s", child.pid, _describe(code), pause)
        deadline = time.monotonic() + pause
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.02)
    return 0
