"""What every ``nbwork`` command shares: the store's manager, ids by prefix, dates, the
progress bar of a followed work, and the line that says how to follow detached work."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime

from ..info import WorkInfo, WorkQuery, WorkState
from ..manager import WorkManager, default_store_path


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit code 2."""


def manager_of(args: argparse.Namespace, resume: bool = True,
             create: bool = False) -> WorkManager:
    """The store's manager; ``resume=False`` for commands that only look (they must never
    start a scheduler). Only commands that enqueue pass ``create``: the others, on a path
    that is not a store, say so and create nothing."""
    return WorkManager(args.store or default_store_path(), resume=resume, create=create)


def resolve_id(wm: WorkManager, prefix: str) -> str:
    """A full id from an id or its unique prefix (``nbwork list`` shows 8 characters)."""
    if wm.get_work_info_by_id(prefix) is not None:
        return prefix
    matches = [i.id for i in wm.get_work_infos() if i.id.startswith(prefix)]
    if not matches:
        raise UsageError(f"no work with id {prefix!r} in {wm.store_path}; see 'nbwork list'")
    if len(matches) > 1:
        raise UsageError(f"id prefix {prefix!r} matches {len(matches)} works; give more of it")
    return matches[0]


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


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


def store_hint(args: argparse.Namespace) -> str:
    return f" --store {shlex.quote(args.store)}" if args.store else ""


def say_detached(args: argparse.Namespace, what: str, follow_hint: str) -> int:
    """Ctrl-C while following: the work goes on; say how to follow it."""
    print(f"\nnbwork: detached; {what} goes on in the background. Follow it with "
          f"'{follow_hint}'.", file=sys.stderr)
    return 130
