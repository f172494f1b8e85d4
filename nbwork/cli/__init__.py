"""The ``nbwork`` command: Blur-O-Matic (``demo``, ``blur``, ``batch``), list, inspect and
cancel work, manage the scheduler.

Every command takes ``--store DIR`` (else ``$NBWORK_HOME``, else the per-user default),
before or after the command name. User mistakes print one line and exit 2; work that ends
badly (a failed blur, a batch with failed images) exits 1; Ctrl-C on a blocking command
detaches (the work goes on), says how to follow it and exits 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import NbworkError
from ..info import WorkState
from ._blur_commands import cmd_batch, cmd_blur, cmd_demo, cmd_watch
from ._common import UsageError
from ._daemon_commands import cmd_daemon
from ._work_commands import cmd_cancel, cmd_list, cmd_logs, cmd_prune, cmd_show


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
