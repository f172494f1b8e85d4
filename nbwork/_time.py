"""Clocks and duration parsing.

Daemon code takes time from a ``Clock`` so tests can move time without patching ``time``.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

from .errors import InvalidInputError


class Clock:
    """Wall-clock time in seconds since the epoch (what the store records), and a monotonic
    time for intervals (the system's: what executors' deadlines are given in)."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock(Clock):
    """A clock that only moves when told to; for tests of time-based rules."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        # Both move together, only when told to: an interval is what the test advanced.
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def to_seconds(value: object, what: str, *, allow_none: bool = False) -> float | None:
    """Turn seconds (int/float) or a ``timedelta`` into non-negative float seconds.

    ``what`` names the argument in the error message.
    """
    if value is None:
        if allow_none:
            return None
        raise InvalidInputError(f"{what} must be a number of seconds or a timedelta, not None")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(
            f"{what} must be a number of seconds or a datetime.timedelta, "
            f"not {type(value).__name__} ({value!r})"
        )
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidInputError(f"{what} must be a finite number of seconds, not {value!r}")
    if seconds < 0:
        raise InvalidInputError(f"{what} must be zero or more seconds, not {value!r}")
    return seconds
