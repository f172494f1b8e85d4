"""The details of one work for the panel's details tab: the row, its input and output, the
error with its exception line first, why it waits, its chain, its images and its log tail."""

from __future__ import annotations

import os
import time
from typing import Any

from nbwork import WorkInfo, WorkManager, WorkQuery, WorkState

from .view import _epoch, data_dict, exception_line, row

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp"}
"""Files a details tab previews (no SVG: it can carry script)."""
MAX_IMAGE_BYTES = 50 * 1024 * 1024
CHAIN_LIMIT = 200
"""The most works of a chain the graph shows (a batch of thousands would not be readable)."""


def why_waiting(info: WorkInfo, chain: dict[str, WorkInfo], now: float) -> str:
    """Why an unfinished work is not running yet, in words ('' when it is not waiting)."""
    if info.state is WorkState.BLOCKED:
        waits = [p for p in info.prerequisites
                 if p not in chain or not chain[p].state.is_finished]
        names = ", ".join(f"{chain[p].worker_name.rsplit('.', 1)[-1]} {p[:8]} "
                          f"({chain[p].state.value})" if p in chain else p[:8] for p in waits)
        return f"waiting for its prerequisites to succeed: {names}" if names else \
            "waiting for its prerequisites"
    if info.state is not WorkState.ENQUEUED:
        return ""
    constraints = getattr(info, "constraints", None)
    when = _epoch(info.next_schedule_time)
    if when is not None and when > now:
        at = time.strftime("%H:%M:%S", time.localtime(when))
        if info.is_periodic and info.run_attempt_count == 0 and info.start_time:
            return f"waiting for its next period, due at {at}"
        if info.run_attempt_count:
            return (f"backing off after {info.run_attempt_count} attempt"
                    f"{'s' if info.run_attempt_count > 1 else ''}: next attempt at {at}")
        return f"waiting for its initial delay: due at {at}"
    if constraints:
        return f"due; runs when its constraints are met ({constraints}) and a worker is free"
    return "due; waiting for a free worker (or for the store's scheduler to start)"


def images(info: WorkInfo) -> list[dict[str, str]]:
    """The input and output values that name an existing image file."""
    found = []
    for where, data in (("input", info.input_data), ("output", info.output_data)):
        for key, value in data.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for index, item in enumerate(values):
                if (isinstance(item, str) and os.path.splitext(item)[1].lower() in IMAGE_TYPES
                        and os.path.isfile(item)):
                    name = key if len(values) == 1 else f"{key}[{index}]"
                    found.append({"where": where, "key": name, "path": item})
    return found


def chain_of(manager: WorkManager, info: WorkInfo) -> dict[str, WorkInfo]:
    """The works linked to ``info`` through prerequisites and dependents (fresh reads)."""
    chain = {info.id: info}
    todo = [info]
    while todo and len(chain) < CHAIN_LIMIT:
        links = [i for current in todo for i in (*current.prerequisites, *current.dependents)
                 if i not in chain]
        todo = manager.get_work_infos(WorkQuery(ids=list(dict.fromkeys(links)))) if links \
            else []
        for other in todo:
            chain[other.id] = other
    return chain


def details(manager: WorkManager, info: WorkInfo) -> dict[str, Any]:
    chain = chain_of(manager, info)
    return {
        **row(info),
        "store": manager.store_path,
        "input": data_dict(info.input_data),
        "output": data_dict(info.output_data),
        "error": info.error or "",
        "exception": exception_line(info.error),
        "generation": info.generation,
        "why_waiting": why_waiting(info, chain, time.time()),
        "constraints": str(getattr(info, "constraints", "") or ""),
        "images": images(info),
        "log_path": info.log_path,
        "chain": [{"id": c.id, "state": c.state.value,
                   "worker": c.worker_name.rsplit(".", 1)[-1],
                   "prerequisites": [p for p in c.prerequisites if p in chain]}
                  for c in chain.values()],
        "chain_truncated": len(chain) >= CHAIN_LIMIT,
    }


def log_tail(info: WorkInfo, max_bytes: int) -> dict[str, Any]:
    """The last ``max_bytes`` of a work's captured output (its log may be huge: only the
    tail is read)."""
    if not info.log_path:
        return {"text": "", "size": 0, "truncated": False}
    try:
        with open(info.log_path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read(size - start)
    except FileNotFoundError:
        return {"text": "", "size": 0, "truncated": False}
    return {"text": data.decode("utf-8", errors="replace"), "size": size,
            "truncated": start > 0}
