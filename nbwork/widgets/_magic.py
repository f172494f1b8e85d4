"""``%load_ext nbwork``: the ``%nbwork`` line magic, and HTML for lists of ``WorkInfo``."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..info import WorkInfo, WorkQuery, work_infos_html
from ..manager import WorkManager
from .graph import ChainGraph
from .table import WorkTable

USAGE = """%nbwork [ID ...] [--tag T] [--unique NAME] [--state S] [--store DIR] [--graph]

Show the live work table of the default store ($NBWORK_HOME), or of --store DIR:
all work, or the work with these ids, tags, unique names or states (each may repeat).
--graph shows the chain graph instead of the table."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%nbwork", usage=USAGE, add_help=False,
                                     exit_on_error=False)
    parser.add_argument("ids", nargs="*")
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--unique", action="append", default=[])
    parser.add_argument("--state", action="append", default=[])
    parser.add_argument("--store")
    parser.add_argument("--graph", action="store_true")
    parser.add_argument("--help", "-h", action="store_true")
    return parser


def nbwork_magic(line: str) -> Any:
    """``%nbwork ...``: see ``USAGE``. Returns the widget (so the cell shows it)."""
    try:
        args = _parser().parse_args(shlex.split(line))
    except (argparse.ArgumentError, ValueError) as exc:
        raise ValueError(f"{exc}\n\nusage: {USAGE}") from None
    if args.help:
        print(USAGE)
        return None
    wm = WorkManager(args.store) if args.store else WorkManager.get_instance()
    query = WorkQuery(ids=args.ids, tags=args.tag, unique_work_names=args.unique,
                      states=args.state)
    return ChainGraph(query, wm=wm) if args.graph else WorkTable(query, wm=wm)


def _infos_html(value: list) -> str | None:
    if value and all(isinstance(v, WorkInfo) for v in value):
        return work_infos_html(value)
    return None  # not ours: IPython shows the list as usual


def register_list_html(ipython: Any) -> None:
    """Lists of ``WorkInfo`` (what ``wm.get_work_infos`` returns) display as a table."""
    ipython.display_formatter.formatters["text/html"].for_type(list, _infos_html)


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magic_function(nbwork_magic, "line", "nbwork")
    register_list_html(ipython)
