"""The ``nbwork`` command: run the demo, list, inspect and cancel work, manage the scheduler.

Every command takes ``--store DIR`` (else ``$NBWORK_HOME``, else the per-user default).
User mistakes print one line and exit 2; Ctrl-C on a blocking command detaches (the work
goes on) and says how to follow it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .errors import NbworkError
from .info import WorkInfo, WorkQuery, WorkState
from .manager import WorkManager, default_store_path


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit code 2."""


def _manager(args: argparse.Namespace) -> WorkManager:
    return WorkManager(args.store or default_store_path())


def _resolve_id(wm: WorkManager, prefix: str) -> str:
    """A full id from an id or its unique prefix (``nbwork list`` shows 8 characters)."""
    if wm.get_work_info_by_id(prefix) is not None:
        return prefix
    matches = [i.id for i in wm.get_work_infos() if i.id.startswith(prefix)]
    if not matches:
        raise UsageError(f"no work with id {prefix!r} in {wm.store_path}; see 'nbwork list'")
    if len(matches) > 1:
        raise UsageError(f"id prefix {prefix!r} matches {len(matches)} works; give more of it")
    return matches[0]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _info_dict(info: WorkInfo) -> dict[str, Any]:
    return {
        "id": info.id, "state": info.state.value, "worker": info.worker_name,
        "tags": sorted(info.tags), "unique_work_name": info.unique_work_name,
        "run_attempt_count": info.run_attempt_count, "generation": info.generation,
        "input": info.input_data.to_dict(), "output": info.output_data.to_dict(),
        "progress": info.progress.to_dict(), "error": info.error,
        "stop_reason": info.stop_reason.value if info.stop_reason else None,
        "prerequisites": list(info.prerequisites), "dependents": list(info.dependents),
        "enqueue_time": _when(info.enqueue_time), "start_time": _when(info.start_time),
        "finish_time": _when(info.finish_time),
        "next_schedule_time": _when(info.next_schedule_time), "log_path": info.log_path,
    }


def _json_default(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def _dump_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def cmd_list(args: argparse.Namespace) -> int:
    wm = _manager(args)
    query = WorkQuery(tags=args.tag or (), states=args.state or (),
                      unique_work_names=args.unique or ())
    infos = wm.get_work_infos(query)
    if args.json:
        _dump_json([_info_dict(i) for i in infos])
        return 0
    if not infos:
        print(f"no work in {wm.store_path}" + (" matching the filters" if args.tag or args.state
                                                or args.unique else ""))
        return 0
    print(f"{'ID':8}  {'STATE':9}  {'WORKER':24}  {'TRIES':>5}  {'ENQUEUED':19}  TAGS")
    for info in infos:
        worker = info.worker_name.rsplit(".", 1)[-1][:24]
        print(f"{info.short_id:8}  {info.state.value:9}  {worker:24}  "
              f"{info.run_attempt_count:>5}  {_when(info.enqueue_time):19}  "
              f"{','.join(sorted(info.tags))}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    wm = _manager(args)
    info = wm.get_work_info_by_id(_resolve_id(wm, args.id))
    assert info is not None
    values = _info_dict(info)
    if args.json:
        _dump_json(values)
        return 0
    for key, value in values.items():
        if key == "error" and value:
            print("error:")
            print("  " + str(value).rstrip().replace("\n", "\n  "))
        else:
            print(f"{key}: {value}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    wm = _manager(args)
    sys.stdout.write(wm.read_log(_resolve_id(wm, args.id)))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    wm = _manager(args)
    chosen = [x for x in (args.id, args.tag, args.unique, args.all or None) if x]
    if len(chosen) != 1:
        raise UsageError("say what to cancel: an ID, or one of --tag T, --unique NAME, --all")
    if args.id:
        work_id = _resolve_id(wm, args.id)
        wm.cancel_work_by_id(work_id)
        print(f"cancelled {work_id[:8]} ({wm.get_work_info_by_id(work_id).state.value})")
    elif args.tag:
        wm.cancel_all_work_by_tag(args.tag)
        print(f"cancelled the unfinished work tagged {args.tag!r}")
    elif args.unique:
        wm.cancel_unique_work(args.unique)
        print(f"cancelled the unfinished unique work {args.unique!r}")
    else:
        wm.cancel_all_work()
        print("cancelled all unfinished work")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    pruned = _manager(args).prune_work()
    print(f"pruned {len(pruned)} finished work{'s' if len(pruned) != 1 else ''}")
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    wm = _manager(args)
    if args.action == "start":
        print(f"scheduler running, pid {wm.daemon.start()}")
    elif args.action == "stop":
        print("scheduler stopped" if wm.daemon.stop() else "no scheduler was running")
    elif args.action == "run":
        from ._daemon import main as run_scheduler

        return run_scheduler(["--store", wm.store_path])
    else:
        pid = wm.daemon.pid
        counts = {s.value: len(wm.get_work_infos(WorkQuery(states=[s]))) for s in WorkState}
        print(f"store: {wm.store_path}")
        print(f"scheduler: {'running, pid ' + str(pid) if pid else 'not running'}")
        print("work: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "work: none")
    return 0


def _progress_line(infos: list[WorkInfo]) -> str:
    done = sum(1 for i in infos if i.state.is_finished)
    running = [i for i in infos if i.state is WorkState.RUNNING]
    percent = 0.0
    for info in infos:
        if info.state.is_finished:
            percent += 100
        elif info.state is WorkState.RUNNING:
            percent += float(info.progress.get("percent", 0) or 0)
    percent /= max(1, len(infos))
    bar = "#" * int(percent / 4)
    step = running[0].worker_name.rsplit(".", 1)[-1] if running else ""
    return f"\r[{bar:<25}] {percent:5.1f}%  {done}/{len(infos)} steps  {step:<24}"


def follow(wm: WorkManager, ids: list[str], out=sys.stdout) -> list[WorkInfo]:
    """Show a progress bar until every work in ``ids`` is finished; return their infos."""
    tty = out.isatty()
    while True:
        infos = wm.get_work_infos(WorkQuery(ids=ids))
        if tty:
            out.write(_progress_line(infos))
            out.flush()
        if all(i.state.is_finished for i in infos):
            if tty:
                out.write("\n")
            return infos
        try:
            wm.wait(ids, timeout=0.2)
        except TimeoutError:
            pass


def cmd_demo(args: argparse.Namespace) -> int:
    from .data import ArrayCreatingInputMerger
    from .examples import count_to, square, total
    from .request import OneTimeWorkRequest

    wm = _manager(args)
    counts = [OneTimeWorkRequest(count_to, input_data={"n": n, "pause": 0.05}, tags=["demo"])
              for n in (10, 20, 30)]
    squares = [OneTimeWorkRequest(square, tags=["demo"]) for _ in counts]
    join = OneTimeWorkRequest(total, tags=["demo"], input_merger=ArrayCreatingInputMerger)
    chains = [wm.begin_with(c).then(s) for c, s in zip(counts, squares, strict=True)]
    from .manager import WorkContinuation

    WorkContinuation.combine(chains).then(join).enqueue()
    ids = [r.id for r in (*counts, *squares, join)]
    print(f"enqueued a demo chain of {len(ids)} works in {wm.store_path}")
    print("three counters run in parallel, each result is squared, then the squares are summed")
    start = time.monotonic()
    infos = follow(wm, ids)
    final = next(i for i in infos if i.id == join.id)
    if final.state is not WorkState.SUCCEEDED:
        print(f"the demo ended {final.state.value}: {final.error or ''}", file=sys.stderr)
        return 1
    print(f"total = {final.output_data['total']} (10² + 20² + 30²), "
          f"in {time.monotonic() - start:.1f} s")
    print("Open the notebooks: jupyter lab notebooks/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="DIR",
                        help="store directory (default: $NBWORK_HOME, else the per-user store)")
    parser = argparse.ArgumentParser(
        prog="nbwork", parents=[common],
        description="Durable background work for notebooks (WorkManager for Jupyter).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="run a small demo chain and follow it")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("list", parents=[common], help="list work")
    p.add_argument("--tag", action="append", help="only work with this tag (repeatable)")
    p.add_argument("--state", action="append", type=str.upper,
                   choices=[s.value for s in WorkState], help="only work in this state")
    p.add_argument("--unique", action="append", help="only work under this unique name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", parents=[common], help="show one work (id or id prefix)")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("logs", parents=[common], help="print the captured output of a work")
    p.add_argument("id")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("cancel", parents=[common], help="cancel work")
    p.add_argument("id", nargs="?")
    p.add_argument("--tag")
    p.add_argument("--unique")
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("prune", parents=[common], help="forget finished work")
    p.set_defaults(func=cmd_prune)
    p = sub.add_parser("daemon", parents=[common], help="manage the scheduler process")
    p.add_argument("action", choices=["start", "stop", "status", "run"])
    p.set_defaults(func=cmd_daemon)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"nbwork: error: {exc}", file=sys.stderr)
        return 2
    except (NbworkError, ValueError, TypeError) as exc:
        print(f"nbwork: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `nbwork list | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("\nnbwork: detached; the work goes on in the background. Follow it with "
              "'nbwork list' or 'nbwork show ID'.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
