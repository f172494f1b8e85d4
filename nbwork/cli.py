"""The ``nbwork`` command: Blur-O-Matic (``demo``, ``blur``, ``batch``), list, inspect and
cancel work, manage the scheduler.

Every command takes ``--store DIR`` (else ``$NBWORK_HOME``, else the per-user default),
before or after the command name. User mistakes print one line and exit 2; work that ends
badly (a failed blur, a batch with failed images) exits 1; Ctrl-C on a blocking command
detaches (the work goes on), says how to follow it and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from .errors import NbworkError, NotAStoreError, StoreError
from .explain import error_headline, why_waiting
from .info import WorkInfo, WorkQuery, WorkState
from .manager import WorkManager, default_store_path


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit code 2."""


def _manager(args: argparse.Namespace, resume: bool = True,
             create: bool = False) -> WorkManager:
    """The store's manager; ``resume=False`` for commands that only look (they must never
    start a scheduler). Only commands that enqueue pass ``create``: the others, on a path
    that is not a store, say so and create nothing."""
    return WorkManager(args.store or default_store_path(), resume=resume, create=create)


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
        "enqueue_time": _when(info.enqueue_time), "start_time": _when(info.start_time),
        "finish_time": _when(info.finish_time),
        "next_schedule_time": _when(info.next_schedule_time),
        # The log file is created by the first output: none is listed until there is one.
        "log_path": info.log_path if info.log_path and os.path.exists(info.log_path) else None,
        "unreadable": info.unreadable_reason,
    }


def _json_default(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


def _dump_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def cmd_list(args: argparse.Namespace) -> int:
    wm = _manager(args, resume=False)
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
               f"{info.run_attempt_count:>5}  {_when(info.enqueue_time):19}  "
               f"{tags[info.id]:{width}}  {notes.get(info.id, '')}").rstrip())
    bad = sum(1 for i in infos if i.unreadable_reason)
    if bad:
        print(f"{bad} work{'s' if bad != 1 else ''} cannot be read (a damaged record) and will "
              f"never run; see 'nbwork show ID', remove with 'nbwork prune --unreadable"
              f"{_store_hint(args)}'", file=sys.stderr)
    return 0


def _error_line(error: str | None, limit: int = 80) -> str:
    """The line of an error that says what happened (its exception line)."""
    line = error_headline(error) or "failed"
    return line if len(line) <= limit else line[:limit - 1] + "…"


def cmd_show(args: argparse.Namespace) -> int:
    wm = _manager(args, resume=False)
    info = wm.get_work_info_by_id(_resolve_id(wm, args.id))
    assert info is not None
    values = _info_dict(info)
    waiting = why_waiting(info, wm.get_work_info_by_id)
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
    wm = _manager(args, resume=False)
    work_id = _resolve_id(wm, args.id)
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
    wm = _manager(args)
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
    if args.unreadable:
        pruned = _manager(args).prune_work(unreadable=True)
        print(f"removed {len(pruned)} unreadable work{'s' if len(pruned) != 1 else ''}"
              + "".join(f"\n  {i}" for i in pruned))
        return 0
    pruned = _manager(args).prune_work()
    print(f"pruned {len(pruned)} finished work{'s' if len(pruned) != 1 else ''}")
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    if args.executor is not None and args.action not in ("start", "run"):
        raise UsageError("--executor goes with 'daemon start' or 'daemon run'")
    if args.durability is not None and args.action not in ("start", "run"):
        raise UsageError("--durability goes with 'daemon start' or 'daemon run'")
    path = args.store or default_store_path()
    if args.action == "stop":
        # Only the lock and the processes: a store whose database is broken can be stopped.
        from ._daemon import Daemon

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
    from ._daemon import Daemon

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
        print(f"supervisor gave up at {_when(status.gave_up_at)}; 'nbwork daemon start' "
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


def _store_hint(args: argparse.Namespace) -> str:
    return f" --store {shlex.quote(args.store)}" if args.store else ""


def _detached(args: argparse.Namespace, what: str, follow_hint: str) -> int:
    """Ctrl-C while following: the work goes on; say how to follow it."""
    print(f"\nnbwork: detached; {what} goes on in the background. Follow it with "
          f"'{follow_hint}'.", file=sys.stderr)
    return 130


def _run_blur(args: argparse.Namespace, image: str, level: int, intro: str = "") -> int:
    """Enqueue Blur-O-Matic for ``image``; follow it unless ``--detach``; print the saved path.

    ``intro`` is printed once the work is enqueued (a mistake prints its error alone)."""
    from .imaging import IMAGE_MANIPULATION_WORK_NAME, blur_o_matic

    wm = _manager(args, create=True)
    job = blur_o_matic(wm, image, level=level, out_dir=args.out,
                       requires_charging=getattr(args, "requires_charging", False))
    if intro:
        print(intro)
    hint = f"nbwork show {job.save_id[:8]}{_store_hint(args)}"
    print(f"enqueued Blur-O-Matic for {image} (level {level}) as unique work "
          f"{IMAGE_MANIPULATION_WORK_NAME!r} in {wm.store_path}", flush=True)
    if getattr(args, "detach", False):
        print(f"steps: {' -> '.join(i[:8] for i in job.ids)} (the last one saves the image)")
        print(f"follow it: nbwork list --unique {IMAGE_MANIPULATION_WORK_NAME}"
              f"{_store_hint(args)}")
        print(f"saved path, when done: {hint} (output image_uri)")
        return 0
    try:
        infos = follow(wm, job.ids)
    except KeyboardInterrupt:
        return _detached(args, "the blur", hint)
    save = next(i for i in infos if i.id == job.save_id)
    if save.state is WorkState.SUCCEEDED:
        print(f"saved: {save.output_data['image_uri']}")
        return 0
    failed = [i for i in infos if i.error]
    if failed:
        reason = failed[0].error.strip().splitlines()[-1]
    elif save.state is WorkState.CANCELLED:
        reason = "it was cancelled (a newer blur replaces the one under way)"
    else:
        reason = f"it ended {save.state.value}"
    print(f"nbwork: the blur did not finish: {reason}", file=sys.stderr)
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .imaging import sample_images

    samples = sample_images()
    sample = next((p for p in samples if p.stem == "shapes"), samples[0])
    intro = (f"Blur-O-Matic (the WorkManager codelab): blur the bundled sample {sample.name} "
             f"at level {args.level} in background steps: cleanup -> blur x {args.level} "
             "-> save")
    status = _run_blur(args, str(sample), args.level, intro)
    if status == 0 and not args.detach:
        print(_notebooks_hint())
    return status


def _notebooks_hint() -> str:
    """How to open the notebooks, from any folder: their absolute path (they come with the
    project's sources, beside the package), and that JupyterLab must be installed."""
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "notebooks"
    needs = "(needs JupyterLab: pip install jupyterlab)"
    if (folder / "blur_o_matic.ipynb").is_file():
        return f"Open the notebooks: jupyter lab {shlex.quote(str(folder))}  {needs}"
    return ("Open the notebooks: they are in the notebooks/ folder of the nbwork sources; "
            f"run 'jupyter lab PATH/TO/nbwork/notebooks'  {needs}")


def cmd_blur(args: argparse.Namespace) -> int:
    return _run_blur(args, args.image, args.level)


def cmd_batch(args: argparse.Namespace) -> int:
    from .imaging import blur_batch

    wm = _manager(args, create=True)
    job = blur_batch(wm, args.folder, level=args.level, out_dir=args.out)
    hint = f"nbwork list --tag {job.tag}{_store_hint(args)}"
    print(f"enqueued a batch blur of {len(job.branches)} images of {args.folder} (level "
          f"{args.level}) in {wm.store_path}", flush=True)
    print(f"output folder: {job.out_dir}", flush=True)
    if args.detach:
        print(f"contact sheet step: {job.sheet_id[:8]}; follow it: {hint}")
        print(f"the report, when done: nbwork show {job.sheet_id[:8]}{_store_hint(args)}")
        return 0
    try:
        infos = follow(wm, job.ids)
    except KeyboardInterrupt:
        return _detached(args, "the batch", hint)
    sheet = next(i for i in infos if i.id == job.sheet_id)
    if sheet.state is not WorkState.SUCCEEDED:
        reason = (sheet.error.strip().splitlines()[-1] if sheet.error
                  else f"it ended {sheet.state.value}")
        print(f"nbwork: the contact sheet was not made: {reason}", file=sys.stderr)
        return 1
    out = sheet.output_data
    try:
        with open(out["report"]) as f:
            bad = [e for e in json.load(f)["images"] if e["state"] != "SUCCEEDED"]
    except (OSError, ValueError, KeyError):  # the report was removed or changed since
        bad = [{"source": name, "error": "see the report"} for name in out["failed_files"]]
    print(f"blurred {out['succeeded']} of {out['succeeded'] + out['failed']} images into "
          f"{job.out_dir}")
    print(f"contact sheet: {out['contact_sheet']}")
    print(f"report: {out['report']}")
    for entry in bad[:10]:
        print(f"failed: {entry['source']}: {entry['error']}", file=sys.stderr)
    if len(bad) > 10:
        print(f"... and {len(bad) - 10} more; see the report", file=sys.stderr)
    return 1 if out["failed"] else 0


def _file_line(info: WorkInfo, folder: str) -> str:
    """One line about a hot-folder file's work: its name, its state, where it went or
    why it failed."""
    source = str(info.input_data.get("path", "?"))
    name = os.path.relpath(source, folder) if source.startswith(folder) else source
    line = f"{name}  {info.state.value}"
    if info.state is WorkState.SUCCEEDED and "image_uri" in info.output_data:
        line += f" -> {info.output_data['image_uri']}"
    elif info.error:
        line += f": {info.error.strip().splitlines()[-1]}"
    return line


def cmd_watch(args: argparse.Namespace) -> int:
    from .imaging import hot_folder

    # Listing and stopping only look at the store: they start no scheduler and create no
    # store; a new watch enqueues work, so it creates one as blur and batch do.
    only_looks = bool(args.list or args.stop)
    wm = _manager(args, resume=not only_looks, create=not only_looks)
    if args.list:
        watches = wm.watches()
        for watch in watches:
            print(f"{watch.name}\t{watch.folder}\t{watch.pattern}\tsettle {watch.settle:g} s"
                  f"\t{watch.request_for_file}")
        if not watches:
            print("no folder is watched")
        return 0
    if args.stop:
        if not wm.stop_watching(args.stop):
            raise UsageError(f"no watch named {args.stop!r}; see 'nbwork watch --list'")
        print(f"stopped watching ({args.stop}); work already enqueued goes on")
        return 0
    if not args.folder:
        raise UsageError("give the FOLDER to watch (or --list, or --stop NAME)")
    watch = hot_folder(wm, args.folder, level=args.level, out_dir=args.out, name=args.name,
                       settle=args.settle)
    out = wm.get_work_infos_by_tag(watch.tag)
    print(f"watching {watch.folder} as {watch.name!r}: every file dropped in comes out "
          f"blurred (level {args.level}); Ctrl-C detaches, the watch goes on", flush=True)
    shown = {i.id: i.state for i in out}  # what earlier runs already reported
    try:
        while True:
            for info in wm.get_work_infos_by_tag(watch.tag):
                if shown.get(info.id) is not info.state and info.state in (
                        WorkState.RUNNING, *[s for s in WorkState if s.is_finished]):
                    shown[info.id] = info.state
                    print(_file_line(info, watch.folder), flush=True)
            wm.daemon.ensure_running()
            time.sleep(0.2)
    except KeyboardInterrupt:
        print(f"\nnbwork: detached; the watch {watch.name!r} goes on in the background. Stop "
              f"it with 'nbwork watch --stop {watch.name}{_store_hint(args)}'.",
              file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit 2), like every other error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help says it already or there is none to
    show (an unset option, or a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (
                action.help or ""):
            return action.help
        return super()._get_help_string(action)


LEVEL_HELP = "how blurry: 1, 2 or 3 blur steps, the codelab's 'a little', 'more', 'the most'"


def _blur_options(p: argparse.ArgumentParser, out_default: str, level: int,
                  level_why: str) -> None:
    p.add_argument("--level", type=int, choices=[1, 2, 3],
                   help=f"{LEVEL_HELP} (default: {level}: {level_why})")
    p.add_argument("--out", metavar="DIR",
                   help=f"the folder to save into; it is created if needed and must be "
                        f"writable (default: {out_default})")
    p.add_argument("--detach", action="store_true",
                   help="enqueue, print the ids and how to follow them, and return at once")
    p.set_defaults(level=level)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand without --store keeps the one given before it.
    common.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS,
                        help="store directory (default: $NBWORK_HOME, else the per-user store)")
    parser = _Parser(
        prog="nbwork", parents=[common],
        description="Durable background work for notebooks (WorkManager for Jupyter).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do; 'nbwork COMMAND --help' tells more")

    p = sub.add_parser("demo", parents=[common],
                       help="Blur-O-Matic on a bundled sample image, followed in the terminal")
    _blur_options(p, "blurred_images in the store", 3,
                  "the demo shows the longest chain; blur and batch default to 1")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("blur", parents=[common],
                       help="blur an image in background steps (cleanup, blur x N, save)")
    p.add_argument("image", help="the image file (PNG, JPEG, ...)")
    _blur_options(p, "blurred_images in the store", 1,
                  "the codelab's default, and the quickest")
    p.add_argument("--requires-charging", action="store_true",
                   help="the save step waits until the computer is on mains power")
    p.set_defaults(func=cmd_blur)
    p = sub.add_parser("batch", parents=[common],
                       help="blur every image of a folder in parallel, then a contact sheet")
    p.add_argument("folder", help="the folder whose images to blur (not its subfolders)")
    _blur_options(p, "a new batch-... folder in blurred_images of the store", 1,
                  "a batch has many images; each level adds a step per image")
    p.set_defaults(func=cmd_batch)
    p = sub.add_parser("watch", parents=[common],
                       help="a hot folder: blur every image dropped into FOLDER")
    p.add_argument("folder", nargs="?", help="the folder to watch")
    p.add_argument("--level", type=int, choices=[1, 2, 3], default=1,
                   help="how blurry: 1, 2 or 3 blur steps (default 1)")
    p.add_argument("--out", metavar="DIR",
                   help="where the blurred images go (default: blurred_images/NAME in the store)")
    p.add_argument("--name", help="the watch's name (default: hot-<folder name>)")
    p.add_argument("--settle", type=float, default=1.0, metavar="SECONDS",
                   help="a file is taken once it has not changed for this long (default 1)")
    p.add_argument("--stop", metavar="NAME", help="stop the watch NAME")
    p.add_argument("--list", action="store_true", help="list the watches of the store")
    p.set_defaults(func=cmd_watch)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "store"):  # --store given nowhere (SUPPRESS keeps it unset)
        args.store = None
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"nbwork: error: {exc}", file=sys.stderr)
        return 2
    except (NbworkError, ValueError, TypeError, ImportError) as exc:
        print(f"nbwork: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `nbwork list | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a folder that cannot be read, a full disk...: one line too
        print(f"nbwork: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nnbwork: detached; the work goes on in the background. Follow it with "
              "'nbwork list' or 'nbwork show ID'.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
