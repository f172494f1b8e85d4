"""HTML and SVG text of the widgets: pure functions of ``WorkInfo``s (tested without a kernel)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from ..data import Data
from ..explain import error_headline
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


def percent_text(value: float) -> str:
    """``8.3 %``: a percentage rounded to one decimal (none when whole)."""
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} %"


def number_text(value: object) -> str:
    """A value as a person reads it: floats rounded to three decimals, the rest as ``repr``."""
    if isinstance(value, float):
        return f"{round(value, 3):g}" if abs(value) < 1e15 else f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(number_text(v) for v in value) + "]"
    return repr(value)


def span(seconds: float) -> str:
    """``12 s``, ``3 min``, ``2 h``, ``4 d`` (whole units, rounded down)."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def age(when: datetime | None, now: datetime | None = None) -> str:
    """The time since ``when`` as ``span`` shows it ('' if unknown)."""
    if when is None:
        return ""
    return span(((now or datetime.now()) - when).total_seconds())


def elapsed(info: WorkInfo, now: datetime | None = None) -> tuple[str, str]:
    """(text, tooltip) of a work's time: an unfinished work's age since it was enqueued
    (as of ``now``: it grows while the work waits or runs), a finished work's duration,
    from its start (else its enqueue) to its end."""
    if info.state.is_finished and info.finish_time is not None:
        began = info.start_time or info.enqueue_time
        seconds = (info.finish_time - began).total_seconds() if began else None
        took = "" if seconds is None else f"{max(0.0, seconds):.1f} s" if seconds < 10 \
            else span(seconds)
        return took, (f"ran {took}, finished {info.finish_time:%Y-%m-%d %H:%M:%S}"
                      if info.start_time else
                      f"finished {info.finish_time:%Y-%m-%d %H:%M:%S} without running")
    if info.enqueue_time is None:
        return "", ""
    tip = f"enqueued {info.enqueue_time:%Y-%m-%d %H:%M:%S}"
    if info.start_time is not None and info.state is WorkState.RUNNING:
        tip += f", running for {age(info.start_time, now)}"
    return age(info.enqueue_time, now), tip


AGGREGATE_PARTS = (("done", (WorkState.SUCCEEDED,)), ("running", (WorkState.RUNNING,)),
                   ("failed", (WorkState.FAILED,)), ("cancelled", (WorkState.CANCELLED,)))
"""The segments of ``aggregate_bar``, left to right; the rest of the bar is waiting work."""


def aggregate_counts(infos: Sequence[WorkInfo]) -> dict[str, int]:
    """How many works are done, running, failed, cancelled and waiting."""
    counts = {name: sum(1 for i in infos if i.state in states)
              for name, states in AGGREGATE_PARTS}
    counts["waiting"] = len(infos) - sum(counts.values())
    return counts


def aggregate_bar(infos: Sequence[WorkInfo]) -> str:
    """One bar for many works (a batch), as Dask's progress bar: a segment each for the
    done, running, failed and cancelled ones, out of all of them, with the counts in words
    (``12 done · 2 running · 1 failed of 20``)."""
    total = len(infos)
    counts = aggregate_counts(infos)
    segments = "".join(
        f'<div class="nbwork-aggregate-{name}" title="{counts[name]} {name}" style="width:'
        f'{100 * counts[name] / total:.2f}%;background:{STATE_COLOURS[states[0]]}"></div>'
        for name, states in AGGREGATE_PARTS if counts[name]) if total else ""
    words = " · ".join(f"{counts[name]} {name}" for name, _ in AGGREGATE_PARTS if counts[name])
    return (f'<div class="nbwork-aggregate" style="display:flex;align-items:center;gap:8px;'
            f'margin:4px 0"><div style="flex:1 1 auto;min-width:60px;max-width:480px;'
            f'height:10px;display:flex;background:#e0e0e0;border-radius:5px;overflow:hidden">'
            f'{segments}</div><span class="nbwork-aggregate-text" style="white-space:nowrap">'
            f"{words or 'none started'} of {total}</span></div>")


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
    return "<br>".join(f"<code>{html.escape(k)}</code> = {html.escape(number_text(v))[:300]}"
                       for k, v in data.items())


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def error_html(error: str) -> str:
    """A failed work's error: the exception line first, the traceback folded under it."""
    pre = ('style="max-height:16em;overflow:auto;background:#f7f7f7;padding:6px;'
           'font-size:11px;white-space:pre-wrap;margin:2px 0"')
    return (f'<div class="nbwork-error"><b class="nbwork-error-line" style="color:'
            f'{STATE_COLOURS[WorkState.FAILED]}">{html.escape(error_headline(error))}</b>'
            f'<details class="nbwork-traceback"><summary style="cursor:pointer;color:#555">'
            f"traceback</summary><pre {pre}>{html.escape(error)}</pre></details></div>")


def log_without(log: str, error: str | None) -> str:
    """The log, less the traceback the worker process also wrote into it (shown once, as
    the error)."""
    if error and error in log:
        return log.replace(error, "").rstrip("\n") + "\n(the traceback is shown above)\n"
    return log


def details(info: WorkInfo, log: str, waiting: str | None = None) -> str:
    """An expanded row: everything about one work, its error (once) and its log.
    ``waiting`` says why an unfinished work has not started (``explain.why_waiting``)."""
    facts = [
        ("id", f"<code>{info.id}</code>"),
        ("worker", f"<code>{html.escape(info.worker_name)}</code>"),
        ("state", badge(info.state) + (f" stop reason {info.stop_reason.value}"
                                       if info.stop_reason else "")),
        *([("waiting", f'<span class="nbwork-waiting">{html.escape(waiting)}</span>')]
          if waiting else []),
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
    if info.content_triggers:  # Background Task Inspector shows a work's constraints too
        paths = ", ".join(f"<code>{html.escape(t.path)}</code>"
                          + (" and below" if t.descendants else "")
                          for t in info.content_triggers)
        state = ("waiting for a change" if info.waiting_for_content else "changed: "
                 + ", ".join(f"<code>{html.escape(p)}</code>"
                             for p in info.triggered_content_paths[:20]))
        facts.append(("content", f"{paths}; {state}"))
    rows = "".join(f'<tr><th style="text-align:right;vertical-align:top;padding-right:8px;'
                   f'color:#555">{k}</th><td style="text-align:left">{v}</td></tr>'
                   for k, v in facts)
    pre = ('style="max-height:16em;overflow:auto;background:#f7f7f7;padding:6px;'
           'font-size:11px;white-space:pre-wrap"')
    parts = [error_html(info.error)] if info.error else []
    parts.append(f'<table style="font-size:12px">{rows}</table>')
    log = log_without(log, info.error)
    tail = log[-LOG_TAIL_CHARS:]
    cut = "…" if len(log) > len(tail) else ""
    parts.append(f'<b>log</b><pre class="nbwork-log" {pre}>{cut}'
                 f"{html.escape(tail) or '(nothing printed)'}</pre>")
    return ('<div class="nbwork-details" style="border-left:3px solid #ccc;padding-left:8px;'
            'margin:2px 0 8px 30px;line-height:1.4;overflow-wrap:anywhere">'
            + "".join(parts) + "</div>")


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
            tip += "\n" + error_headline(info.error)
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
