"""HTML and SVG text of the widgets: pure functions of ``WorkInfo``s (tested without a kernel)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from ..data import Data
from ..info import STATE_COLOURS, WorkInfo, WorkState, in_chain_order

LOG_TAIL_CHARS = 8000
"""An expanded row shows at most the last this many characters of a work's log."""


def block(content: str) -> str:
    """Wrapped text in an ``HTML`` widget, at a normal line height (the widget's own is one
    input row, 28 px, per line)."""
    return f'<div style="line-height:1.4;padding:2px 0">{content}</div>'


def short_name(worker_name: str) -> str:
    """``nbwork.imaging.BlurWorker`` -> ``BlurWorker``."""
    return worker_name.rsplit(".", 1)[-1] or "?"


def badge(state: WorkState) -> str:
    return (f'<span class="nbwork-badge nbwork-{state.value.lower()}" style="background:'
            f'{STATE_COLOURS[state]};color:#fff;padding:2px 8px;border-radius:10px;'
            f'font-size:11px;font-weight:600;letter-spacing:.03em">{state.value}</span>')


def percent_of(info: WorkInfo) -> float:
    """How far a work is, 0-100: 100 once SUCCEEDED, else its ``percent`` progress (if any)."""
    if info.state is WorkState.SUCCEEDED:
        return 100.0
    value = info.progress.get("percent")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(min(100, max(0, value)))
    return 0.0


def age(when: datetime | None, now: datetime | None = None) -> str:
    """``12 s``, ``3 min``, ``2 h``, ``4 d`` since ``when`` ('' if unknown)."""
    if when is None:
        return ""
    seconds = max(0.0, ((now or datetime.now()) - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def tags_html(tags: frozenset[str]) -> str:
    """Tag chips on one line (cut with … when too long; the tooltip lists them all)."""
    chips = " ".join(f'<span style="background:#eceff1;color:#37474f;padding:1px 5px;'
                     f'border-radius:4px;font-size:11px">{html.escape(t)}</span>'
                     for t in sorted(tags))
    return (f'<div title="{html.escape(", ".join(sorted(tags)))}" style="white-space:nowrap;'
            f'overflow:hidden;text-overflow:ellipsis">{chips}</div>')


def _data(data: Data) -> str:
    if not data:
        return '<span style="color:#999">-</span>'
    return "<br>".join(f"<code>{html.escape(k)}</code> = {html.escape(repr(v))[:300]}"
                       for k, v in data.items())


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def details(info: WorkInfo, log: str) -> str:
    """An expanded row: everything about one work, its error traceback and its log."""
    facts = [
        ("id", f"<code>{info.id}</code>"),
        ("worker", f"<code>{html.escape(info.worker_name)}</code>"),
        ("state", badge(info.state) + (f" stop reason {info.stop_reason.value}"
                                       if info.stop_reason else "")),
        ("attempts", f"{info.run_attempt_count} (generation {info.generation})"),
        ("unique work", html.escape(info.unique_work_name or "-")
         + (" (periodic)" if info.is_periodic else "")),
        ("times", f"enqueued {_when(info.enqueue_time)}, started {_when(info.start_time)}, "
                  f"finished {_when(info.finish_time)}"
                  + (f", next run {_when(info.next_schedule_time)}"
                     if info.next_schedule_time else "")),
        ("after", ", ".join(f"<code>{p[:8]}</code>" for p in info.prerequisites) or "-"),
        ("before", ", ".join(f"<code>{d[:8]}</code>" for d in info.dependents) or "-"),
        ("input", _data(info.input_data)),
        ("output", _data(info.output_data)),
        ("progress", _data(info.progress)),
    ]
    rows = "".join(f'<tr><th style="text-align:right;vertical-align:top;padding-right:8px;'
                   f'color:#555">{k}</th><td style="text-align:left">{v}</td></tr>'
                   for k, v in facts)
    pre = ('style="max-height:16em;overflow:auto;background:#f7f7f7;padding:6px;'
           'font-size:11px;white-space:pre-wrap"')
    parts = [f'<table style="font-size:12px">{rows}</table>']
    if info.error:
        parts.append(f'<b style="color:{STATE_COLOURS[WorkState.FAILED]}">error</b>'
                     f"<pre {pre}>{html.escape(info.error)}</pre>")
    tail = log[-LOG_TAIL_CHARS:]
    cut = "…" if len(log) > len(tail) else ""
    parts.append(f"<b>log</b><pre {pre}>{cut}{html.escape(tail) or '(nothing printed)'}</pre>")
    return ('<div class="nbwork-details" style="border-left:3px solid #ccc;padding-left:8px;'
            'margin:2px 0 8px 30px;line-height:1.4">' + "".join(parts) + "</div>")


# --- the chain graph --------------------------------------------------------------------

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 190, 50, 46, 14, 8


def layers(infos: Sequence[WorkInfo]) -> dict[str, int]:
    """Each work's column: the length of the longest chain of prerequisites before it."""
    by_id = {i.id: i for i in infos}
    column: dict[str, int] = {}
    for info in in_chain_order(infos):  # prerequisites come first
        parents = [column[p] for p in info.prerequisites if p in by_id and p in column]
        column[info.id] = 1 + max(parents, default=-1)
    return column


def chain_svg(infos: Sequence[WorkInfo]) -> str:
    """The DAG of ``infos`` as SVG: one box per work coloured by state, left to right,
    an arrow from each prerequisite to its dependent."""
    infos = in_chain_order(infos)
    if not infos:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0"></svg>'
    column = layers(infos)
    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    for info in infos:
        c = column[info.id]
        r = rows.get(c, 0)
        rows[c] = r + 1
        where[info.id] = (PAD + c * (NODE_W + GAP_X), PAD + r * (NODE_H + GAP_Y))
    width = PAD * 2 + (max(column.values()) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values()) * (NODE_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="nbwork-graph" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="max-width:100%;'
        f'font-family:sans-serif">',
        '<defs><marker id="nbwork-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#78909c"/></marker></defs>',
    ]
    for info in infos:
        x2, y2 = where[info.id]
        for parent in info.prerequisites:
            if parent not in where:
                continue
            x1, y1 = where[parent]
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
            mid = (sx + ex) / 2
            parts.append(f'<path class="nbwork-edge" d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, '
                         f'{ex} {ey}" fill="none" stroke="#78909c" stroke-width="1.5" '
                         f'marker-end="url(#nbwork-arrow)"/>')
    for info in infos:
        x, y = where[info.id]
        colour = STATE_COLOURS[info.state]
        tip = f"{info.worker_name}\n{info.id}\n{info.state.value}"
        if info.error:
            tip += "\n" + info.error.strip().splitlines()[-1]
        parts.append(
            f'<g class="nbwork-node" data-id="{info.id}" data-state="{info.state.value}">'
            f"<title>{html.escape(tip)}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" '
            f'fill="{colour}"/>'
            f'<text x="{x + 10}" y="{y + 20}" fill="#fff" font-size="13" font-weight="600">'
            f"{html.escape(short_name(info.worker_name)[:22])}</text>"
            f'<text x="{x + 10}" y="{y + 38}" fill="#fff" font-size="11">'
            f"{info.short_id} · {info.state.value}</text>")
        if info.state is WorkState.RUNNING:
            done = NODE_W - 20
            parts.append(f'<rect x="{x + 10}" y="{y + NODE_H - 7}" width="{done}" height="3" '
                         f'fill="#fff" fill-opacity="0.35"/><rect x="{x + 10}" '
                         f'y="{y + NODE_H - 7}" width="{done * percent_of(info) / 100:.0f}" '
                         f'height="3" fill="#fff"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
