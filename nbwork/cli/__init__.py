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
from . import _blur_commands, _daemon_commands, _work_commands
from ._common import UsageError


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
    # In this order in the help: Blur-O-Matic first, the store's work, then its scheduler.
    _blur_commands.add_commands(sub, common)
    _work_commands.add_commands(sub, common)
    _daemon_commands.add_commands(sub, common)
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
