"""``nbwork daemon start|stop|status|run``: the store's scheduler."""

from __future__ import annotations

import argparse
import os

from ..errors import NotAStoreError, StoreError
from ..info import WorkQuery, WorkState
from ..manager import WorkManager, default_store_path
from ._common import UsageError, format_time


def cmd_daemon(args: argparse.Namespace) -> int:
    if args.executor is not None and args.action not in ("start", "run"):
        raise UsageError("--executor goes with 'daemon start' or 'daemon run'")
    if args.durability is not None and args.action not in ("start", "run"):
        raise UsageError("--durability goes with 'daemon start' or 'daemon run'")
    path = args.store or default_store_path()
    if args.action == "stop":
        # Only the lock and the processes: a store whose database is broken can be stopped.
        from .._daemon import Daemon

        print("scheduler stopped" if Daemon(os.path.abspath(os.path.expanduser(path))).stop()
              else "no scheduler was running")
        return 0
    if args.action == "status":
        return _daemon_status(path)
    wm = WorkManager(path, executor=args.executor, resume=False, durability=args.durability,
                     create=args.action in ("start", "run"))
    if args.action == "start":
        print(f"scheduler running, pid {wm.daemon.start()}")
    else:
        return wm.daemon.run()
    return 0


def _daemon_status(path: str) -> int:
    """The scheduler's state first (read without the database: it shows even when the
    database cannot be opened), then the store's work."""
    from .._daemon import Daemon

    path = os.path.abspath(os.path.expanduser(path))
    try:
        wm = WorkManager(path, resume=False, create=False)
        problem = None
    except NotAStoreError:
        raise  # said first, and alone: there is no scheduler to describe
    except StoreError as exc:  # (shown after the scheduler's state, which needs no database)
        wm, problem = None, exc
    status = Daemon(path).status()
    print(f"store: {path}")
    print(f"scheduler: {status.describe()}")
    if status.supervisor_pid is not None:
        print(f"supervisor: pid {status.supervisor_pid}")
    if status.gave_up and status.pid is None and status.gave_up_at is not None:
        print(f"supervisor gave up at {format_time(status.gave_up_at)}; 'nbwork daemon start' "
              "tries again")
    if wm is None:
        raise problem
    print(f"executor: {wm.executor}")
    print(f"durability: {wm.durability}")
    counts = {s.value: len(wm.get_work_infos(WorkQuery(states=[s]))) for s in WorkState}
    print("work: " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"))
    watches = wm.watches()
    if watches:
        print("watching: " + ", ".join(f"{w.folder} ({w.name})" for w in watches))
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Their subcommands, on ``sub``; ``common``: the options every command takes."""
    p = sub.add_parser("daemon", parents=[common], help="manage the scheduler process")
    p.add_argument("action", choices=["start", "stop", "status", "run"],
                   help="start it in the background, stop it, show its status, or run it "
                   "in this terminal (until Ctrl-C)")
    p.add_argument("--executor", metavar="ADDR",
                   help="where work runs: 'local', or 'dask://HOST:PORT' for a Dask cluster "
                   "(kept in the store; a running scheduler is restarted on it; default: "
                   "the store's choice, 'local' at first)")
    p.add_argument("--durability", metavar="LEVEL",
                   help="what an enqueue that returned survives: 'process' (any process "
                   "crash; the default) or 'power' (a power loss too, slower commits); kept "
                   "in the store; a running scheduler is restarted on it")
    p.set_defaults(func=cmd_daemon)
