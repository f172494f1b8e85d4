"""Plain-language explanations of a ``WorkInfo``: why a work waits, what an error says.

Pure functions of ``WorkInfo`` snapshots (and the clock), shared by every view: the
widgets' row tooltip and card, ``nbwork show``, and any other front end. They use only
what ``WorkInfo`` carries, so they give the same answer wherever the infos were read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from .info import WorkInfo, WorkState
from .request import Constraints, NetworkType, RunAfter

__all__ = ["PrerequisiteLookup", "constraint_words", "error_headline", "why_waiting"]

PrerequisiteLookup = Mapping[str, WorkInfo] | Callable[[str], WorkInfo | None]
"""How ``why_waiting`` finds a prerequisite's info: a mapping by id (say, the infos a
widget already shows) or a function such as ``wm.get_work_info_by_id``."""

_CONSTRAINT_WORDS = {
    "requires_charging": "the charger plugged in",
    "requires_battery_not_low": "a battery that is not low",
    "requires_device_idle": "an idle computer",
    "requires_storage_not_low": "disk space that is not low",
}
_NETWORK_WORDS = {
    NetworkType.CONNECTED: "a network connection",
    NetworkType.UNMETERED: "an unmetered network",
    NetworkType.NOT_ROAMING: "a network that is not roaming",
    NetworkType.METERED: "a metered network",
    NetworkType.TEMPORARILY_UNMETERED: "a temporarily unmetered network",
}


def constraint_words(constraints: Constraints) -> list[str]:
    """The conditions ``constraints`` require, in words (empty when it requires none)."""
    return _device_words(constraints) + [
        f"a change in {t.path}" + (" (or below)" if t.descendants else "")
        for t in constraints.content_triggers]


def _device_words(constraints: Constraints) -> list[str]:
    words = [_NETWORK_WORDS[constraints.network_type]] if (
        constraints.network_type in _NETWORK_WORDS) else []
    words += [text for name, text in _CONSTRAINT_WORDS.items() if getattr(constraints, name)]
    return words


def _clock(when: datetime) -> str:
    return when.strftime("%H:%M:%S") if when.date() == datetime.now().date() else \
        when.strftime("%Y-%m-%d %H:%M:%S")


def _lookup(prerequisites: PrerequisiteLookup | None, id: str) -> WorkInfo | None:
    if prerequisites is None:
        return None
    if callable(prerequisites):
        return prerequisites(id)
    return prerequisites.get(id)


def _name(info: WorkInfo) -> str:
    return f"{info.worker_name.rsplit('.', 1)[-1]} {info.short_id}"


def _delay_kind(info: WorkInfo) -> str:
    """What an ENQUEUED work's future ``next_schedule_time`` is: its initial delay, its
    backoff after a retry, or its period (``run_attempt_count`` starts again at 0 each
    period of periodic work)."""
    attempts = info.run_attempt_count
    if attempts:
        return f"backoff after {attempts} attempt{'s' if attempts != 1 else ''}"
    if not info.is_periodic or info.start_time is None:
        if info.initial_delay > 0 or not info.is_periodic:
            return "initial delay"
        return "first period (flex window)"
    return "next period"


def why_waiting(info: WorkInfo, prerequisites: PrerequisiteLookup | None = None,
                now: datetime | None = None, scheduler_state: str | None = None) -> str | None:
    """Why ``info``'s work has not started yet, in one sentence; None when it is not
    waiting (RUNNING or finished).

    BLOCKED work names the prerequisites it still waits for (with their states, when
    ``prerequisites`` can look them up), and says when it runs whatever they end as
    (``RunAfter.ALL_FINISHED``); ENQUEUED work names its initial delay, backoff
    or next period and when it ends, else the conditions it needs, else says it is due.
    ``now`` (local time, default: the clock) decides whether a delay is still running.
    ``scheduler_state`` is ``wm.daemon.status().state``: when it says why the scheduler
    starts nothing ("waiting for the cluster: ...", "waiting for the store: ..."), due work
    says that rather than that it waits for a free worker process.
    """
    if info.state is WorkState.BLOCKED:
        waits = []
        for id in info.prerequisites:
            parent = _lookup(prerequisites, id)
            if parent is None:
                waits.append(id[:8])
            elif not parent.state.is_finished:
                waits.append(f"{_name(parent)} ({parent.state.value})")
        # A RunAfter.ALL_FINISHED work is not doomed by a failed prerequisite: say so.
        whatever = (" (it runs whatever they end as)"
                    if info.run_after is RunAfter.ALL_FINISHED else "")
        if not waits:
            return "waits for its prerequisites to finish" + whatever
        return ("waits for prerequisite" + ("s " if len(waits) > 1 else " ") + ", ".join(waits)
                + whatever)
    if info.state is not WorkState.ENQUEUED:
        return None
    now = now or datetime.now()
    reasons = []
    when = info.next_schedule_time
    if info.waiting_for_content:
        reasons.append("waits for a change in " + ", ".join(
            t.path for t in info.content_triggers))
    elif when is not None and when > now:
        kind = ("update delay after its content changed" if info.triggered_content_paths
                and not info.run_attempt_count else _delay_kind(info))
        reasons.append(f"{kind} until {_clock(when)}")
    needs = _device_words(info.constraints)
    if info.stop_reason is not None and info.stop_reason.value.startswith("CONSTRAINT_"):
        reasons.append(f"stopped because a constraint stopped holding "
                       f"({info.stop_reason.value}); runs again once it holds")
    elif needs:
        reasons.append("runs only with " + ", ".join(needs))
    if reasons:
        return "; ".join(reasons)
    if scheduler_state and scheduler_state != "running":
        return f"due: {scheduler_state}"
    return "due: waits for a free worker process"


def error_headline(error: str | None) -> str:
    """The line of an error traceback that says what went wrong (``BadImageError: cannot
    blur …``): the last exception line, not the lines nbwork adds after it (such as the
    Dask worker that ran the attempt). '' for no error."""
    if not error:
        return ""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    if "Traceback (most recent call last):" not in error:
        return lines[-1].strip() if lines else ""
    # The exception line follows the last frame (lines indented by two or four spaces).
    last_frame = max((i for i, line in enumerate(lines) if line.startswith("  ")), default=-1)
    rest = lines[last_frame + 1:]
    return (rest or lines)[0 if rest else -1].strip()
