"""The details of one work for the panel's details tab: the row, its input and output, the
error with its exception line first, why it waits (in the words of ``nbwork.explain``, as
every view), its chain, its images and its log tail."""

from __future__ import annotations

import os
from typing import Any

from nbwork import WorkInfo, WorkManager, WorkQuery, WorkState
from nbwork.explain import constraint_words, why_waiting

from .view import data_dict, exception_line, row

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp"}
"""Files a details tab previews (no SVG: it can carry script)."""
MAX_IMAGE_BYTES = 50 * 1024 * 1024
CHAIN_LIMIT = 200
"""The most works of a chain the graph shows (a batch of thousands would not be readable)."""


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
        "why_waiting": why_waiting(info, chain, scheduler_state=(
            manager.daemon.state() if info.state is WorkState.ENQUEUED else None)) or "",
        "constraints": ", ".join(constraint_words(info.constraints)),
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
