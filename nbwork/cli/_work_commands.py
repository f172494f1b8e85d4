"""``nbwork list``, ``show``, ``logs``, ``cancel`` and ``prune``: the store's work."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..explain import error_headline, why_waiting
from ..info import WorkInfo, WorkQuery, WorkState
from ._common import UsageError, format_time, manager_of, resolve_id, store_hint


def _info_dict(info: WorkInfo) -> dict[str, Any]:
    values = _plain_info_dict(info)
    if info.content_triggers:
        values["content_triggers"] = [
            t.path + (" (and below)" if t.descendants else "") for t in info.content_triggers]
        values["waiting_for_content"] = info.waiting_for_content
        values["triggered_content_paths"] = list(info.triggered_content_paths)
    return values


def _plain_info_dict(info: WorkInfo) -> dict[str, Any]:
    return {
        "id": info.id, "state": info.state.value, "worker": info.worker_name,
        "tags": sorted(info.tags), "unique_work_name": info.unique_work_name,
        "run_attempt_count": info.run_attempt_count, "generation": info.generation,
        "input": info.input_data.to_dict(), "output": info.output_data.to_dict(),
        "progress": info.progress.to_dict(), "error": info.error,
        "stop_reason": info.stop_reason.value if info.stop_reason else None,
        "prerequisites": list(info.prerequisites), "run_after": info.run_after.value,
        "dependents": list(info.dependents),
        "enqueue_time": format_time(info.enqueue_time), "start_time": format_time(info.start_time),
        "finish_time": format_time(info.finish_time),
        "next_schedule_time": format_time(info.next_schedule_time),
        # The log file is created by the first output: none is listed until there is one.
        "log_path": info.log_path if info.log_path and os.path.exists(info.log_path) else None,
        "unreadable": info.unreadable_reason,
    }


def _json_default(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def _dump_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def cmd_list(args: argparse.Namespace) -> int:
    wm = manager_of(args, resume=False)
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
    # Oldest first, and a chain from its first step to its last (get_work_infos' order).
    tags = {i.id: ",".join(sorted(i.tags)) for i in infos}
    width = max(4, *map(len, tags.values()))
    notes = {i.id: _error_line(i.error) for i in infos if i.state is WorkState.FAILED}
    print((f"{'ID':8}  {'STATE':10}  {'WORKER':24}  {'TRIES':>5}  {'ENQUEUED':19}  "
           f"{'TAGS':{width}}" + ("  NOTE" if notes else "")).rstrip())
    for info in infos:
        worker = info.worker_name.rsplit(".", 1)[-1][:24]
        state = "UNREADABLE" if info.unreadable_reason else info.state.value
        print((f"{info.short_id:8}  {state:10}  {worker:24}  "
               f"{info.run_attempt_count:>5}  {format_time(info.enqueue_time):19}  "
               f"{tags[info.id]:{width}}  {notes.get(info.id, '')}").rstrip())
    bad = sum(1 for i in infos if i.unreadable_reason)
    if bad:
        print(f"{bad} work{'s' if bad != 1 else ''} cannot be read (a damaged record) and will "
              f"never run; see 'nbwork show ID', remove with 'nbwork prune --unreadable"
              f"{store_hint(args)}'", file=sys.stderr)
    return 0


def _error_line(error: str | None, limit: int = 80) -> str:
    """The line of an error that says what happened (its exception line)."""
    line = error_headline(error) or "failed"
    return line if len(line) <= limit else line[:limit - 1] + "…"


def cmd_show(args: argparse.Namespace) -> int:
    wm = manager_of(args, resume=False)
    info = wm.get_work_info_by_id(resolve_id(wm, args.id))
    assert info is not None
    values = _info_dict(info)
    waiting = None
    if not info.state.is_finished:
        waiting = why_waiting(info, wm.get_work_info_by_id,
                              scheduler_state=wm.daemon.status().state)
    if waiting:  # right after the state, where a reader looks for it
        at = list(values).index("state") + 1
        items = list(values.items())
        values = dict([*items[:at], ("waiting", waiting), *items[at:]])
    if args.json:
        _dump_json(values)
        return 0
    for key, value in values.items():
        if key == "error" and value:
            print("error:")
            print("  " + str(value).rstrip().replace("\n", "\n  "))
        elif key == "log_path" and value is None:
            print(f"log_path: - (it has printed nothing{_so_far(info)})")
        else:
            print(f"{key}: {value}")
    return 0


def _so_far(info: WorkInfo) -> str:
    return "" if info.state.is_finished else " so far"


def cmd_logs(args: argparse.Namespace) -> int:
    wm = manager_of(args, resume=False)
    work_id = resolve_id(wm, args.id)
    text = wm.read_log(work_id)
    if not text:  # on stderr: stdout stays exactly the log, for pipes
        info = wm.get_work_info_by_id(work_id)
        print(f"nbwork: work {work_id[:8]} ({info.state.value if info else 'gone'}) has "
              f"printed nothing{_so_far(info) if info else ''}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    chosen = [x for x in (args.id, args.tag, args.unique, args.all or None) if x]
    if len(chosen) != 1:
        raise UsageError("say what to cancel: an ID, or one of --tag T, --unique NAME, --all")
    wm = manager_of(args)
    if args.id:
        work_id = resolve_id(wm, args.id)
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
    if args.unreadable:
        pruned = manager_of(args).prune_work(unreadable=True)
        print(f"removed {len(pruned)} unreadable work{'s' if len(pruned) != 1 else ''}"
              + "".join(f"\n  {i}" for i in pruned))
        return 0
    pruned = manager_of(args).prune_work()
    print(f"pruned {len(pruned)} finished work{'s' if len(pruned) != 1 else ''}")
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Their subcommands, on ``sub``; ``common``: the options every command takes."""
    p = sub.add_parser("list", parents=[common],
                       help="list work, oldest first, each chain from its first step")
    p.add_argument("--tag", action="append",
                   help="only work with this tag (repeatable; default: any tag)")
    p.add_argument("--state", action="append", type=str.upper,
                   choices=[s.value for s in WorkState],
                   help="only work in this state (repeatable; default: any state)")
    p.add_argument("--unique", action="append",
                   help="only work under this unique name (repeatable; default: any)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", parents=[common], help="show one work (id or id prefix)")
    p.add_argument("id", help="a work id, or its first characters as 'nbwork list' shows")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("logs", parents=[common], help="print the captured output of a work")
    p.add_argument("id", help="a work id, or its first characters as 'nbwork list' shows")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("cancel", parents=[common],
                       help="cancel work and what depends on it (give exactly one target)")
    p.add_argument("id", nargs="?", help="a work id or id prefix: that work and its "
                   "dependents, even the dependents of a finished work")
    p.add_argument("--tag", help="the unfinished work with this tag, and its dependents")
    p.add_argument("--unique", metavar="NAME",
                   help="the unfinished work under this unique name, and its dependents")
    p.add_argument("--all", action="store_true", help="all unfinished work")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("prune", parents=[common],
                       help="forget finished work that no unfinished work depends on")
    p.add_argument("--unreadable", action="store_true",
                   help="instead, remove the works whose stored record cannot be read "
                   "(shown as UNREADABLE by 'nbwork list'); the works waiting for them are "
                   "cancelled")
    p.set_defaults(func=cmd_prune)
