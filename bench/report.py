"""The targets of issues 7 and 15 (issue 15's where it set one), checked against a run's
results, and the table of a run.

``targets(results)`` lists every target with its figure and pass/fail (None: not
measured in this run); ``table(results)`` is the Markdown of the run; ``update_markdown``
puts it in ``BENCHMARKS.md`` between the suite's markers, leaving the rest of the file
(the Dask section, say) as it is.
"""

from __future__ import annotations

import operator
import os
from typing import Any

BEGIN = "<!-- bench-suite:begin (written by python -m bench; edit bench/report.py) -->"
END = "<!-- bench-suite:end -->"
BUSY_BEGIN = ("<!-- bench-suite-busy:begin (written by python -m bench --busy; edit "
              "bench/report.py) -->")
BUSY_END = "<!-- bench-suite-busy:end -->"

RSS_LIMIT_MIB = 150e6 / 2**20  # issue 15: "RSS < 150 MB"

SCALE_FIGURES = ("enqueue", "enqueue_to_succeeded", "get_by_id", "by_tag", "by_unique_name")

# (id, benchmark, what, path to the figure, comparison, limit, how the limit reads)
TARGETS: list[tuple[str, str, str, tuple[str, ...], str, float, str]] = [
    ("throughput_vs_huey", "throughput", "throughput, nbwork / Huey, worst round",
     ("throughput", "ratios", "worst_round_nbwork_over_huey"), ">=", 3.0, "≥ 3×"),
    ("throughput_vs_pool", "throughput", "throughput, nbwork / raw pool, worst round",
     ("throughput", "ratios", "worst_round_nbwork_over_pool"), ">=", 0.50, "≥ 50 %"),
    ("latency_p50_vs_huey", "latency", "idle latency p50, nbwork / Huey",
     ("latency", "ratios", "p50_nbwork_over_huey"), "<=", 0.03, "≤ 0.03×"),
    ("latency_p99_vs_huey", "latency", "idle latency p99, nbwork / Huey",
     ("latency", "ratios", "p99_nbwork_over_huey"), "<=", 0.05, "≤ 0.05×"),
    ("latency_p50_ms", "latency", "idle latency p50 of nbwork (ms)",
     ("latency", "p50_ms", "nbwork"), "<", 25.0, "< 25 ms"),
    ("blur_vs_pool", "blur", "blur batch wall time, nbwork / raw pool",
     ("blur", "ratios", "nbwork_over_pool"), "<=", 1.05, "≤ 1.05×"),
    ("blur_vs_sequential", "blur", "blur batch speed-up of nbwork over sequential",
     ("blur", "ratios", "sequential_over_nbwork"), ">=", 1.8, "≥ 1.8×"),
    *[(f"scale_{name}", "scale", f"store scale: {name.replace('_', ' ')}, large / small",
       ("scale", "ratios", name), "<=", 1.2, "≤ 1.2×") for name in SCALE_FIGURES],
    ("rss_large_store", "rss", "scheduler peak RSS with 100,000 finished works (MiB)",
     ("rss", "finished", "large", "peak"), "<", RSS_LIMIT_MIB, "< 150 MB"),
    ("rss_no_growth", "rss", "scheduler RSS at the end of the run / after its first quarter",
     ("rss", "ratios", "curve_end_over_warm"), "<=", 1.10, "≤ 1.10×"),
    ("scheduler_idle_cpu", "idle", "scheduler CPU with 1,000 delayed works (% of a core)",
     ("idle", "cpu_percent", "nbwork_processes"), "<", 1.0, "< 1 %"),
    ("table_kernel_cpu", "idle", "kernel CPU with a live table of 1,000 works (%)",
     ("idle", "kernel", "cpu_percent", "table"), "<", 5.0, "< 5 %"),
    ("enqueue_vs_diskcache_process", "durability",
     "enqueue(list) of 10,000, diskcache sets / nbwork, durability process",
     ("durability", "ratios", "enqueue_over_diskcache_process"), ">=", 0.5, "≥ 0.5×"),
    ("enqueue_vs_diskcache_power", "durability",
     "enqueue(list) of 10,000, diskcache sets / nbwork, durability power",
     ("durability", "ratios", "enqueue_over_diskcache_power"), ">=", 0.5, "≥ 0.5×"),
    ("query_refresh_vs_by_id", "query", "WorkQuery of 2,000 infos (refresh), per info / by id",
     ("query", "ratios", "refresh_per_info_over_by_id"), "<=", 0.2, "≤ 0.2×"),
    ("query_refresh_after_change_vs_by_id", "query",
     "WorkQuery of 2,000 infos (refresh after one record changed), per info / by id",
     ("query", "ratios", "refresh_after_change_per_info_over_by_id"), "<=", 0.2, "≤ 0.2×"),
    ("memory_big_global", "memory", "scheduler peak RSS, big global / 1 KiB global",
     ("memory", "ratios", "big_over_small"), "<", 2.0, "< 2×"),
    ("dask_noop_vs_raw", "dask", "Dask: no-op throughput, nbwork / raw client.submit, worst "
     "round", ("dask", "ratios", "worst_round_noop_nbwork_over_raw"), ">=", 0.5, "≥ 0.5×"),
    ("dask_blur_vs_raw", "dask", "Dask: blur batch wall time, nbwork / raw client.map, "
     "worst round", ("dask", "ratios", "worst_round_blur_nbwork_over_raw"), "<=", 1.15,
     "≤ 1.15×"),
]

_OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


def _get(results: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for id, bench, what, path, op, limit, reads in TARGETS:
        figure = _get(results, path)
        out.append({"id": id, "benchmark": bench, "what": what, "figure": figure, "op": op,
                    "limit": limit, "target": reads,
                    "pass": None if figure is None else bool(_OPS[op](figure, limit))})
    return out


# --- formatting -------------------------------------------------------------------------


def _n(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _verdict(results: dict[str, Any], id: str) -> str:
    for t in results.get("targets", []):
        if t["id"] == id:
            return {True: "**pass**", False: "**FAIL**", None: "–"}[t["pass"]]
    return "–"


def _speed_rows(results: dict[str, Any], v: Any) -> list[list[str]]:
    """Throughput and idle latency (1 and 2)."""
    rows: list[list[str]] = []
    t = results.get("throughput")
    if t:
        s = t["per_s"]
        r = t["ratios"]
        rows.append([f"1. throughput, {t['works']:,} no-op works (works/s, medians of "
                     f"{t['rounds']}; ratios: worst round)", _n(s["nbwork"]),
                     _n(s["huey"]), f"pool {_n(s['process_pool'])}",
                     f"{_x(r.get('worst_round_nbwork_over_huey'))} Huey (medians "
                     f"{_x(r['nbwork_over_huey'])})", "≥ 3× Huey", v("throughput_vs_huey")])
        worst_pool = r.get("worst_round_nbwork_over_pool")
        rows.append(["", "", "", "",
                     f"{_pct(worst_pool)} of pool (medians {_pct(r['nbwork_over_pool'])})",
                     "≥ 50 % of pool", v("throughput_vs_pool")])
    lat = results.get("latency")
    if lat:
        p50, p99 = lat["p50_ms"], lat["p99_ms"]
        r = lat["ratios"]
        pool50, pool99 = p50.get("process_pool"), p99.get("process_pool")
        rows.append([f"2. idle latency p50 ({lat['tries']} tries, ms)", _n(p50["nbwork"]),
                     _n(p50["huey"]), f"pool submit→result {_n(pool50, 2)}",
                     f"{_x(r['p50_nbwork_over_huey'])} Huey; "
                     f"{_x(r.get('p50_nbwork_over_pool'))} pool",
                     "≤ 0.03× Huey", v("latency_p50_vs_huey")])
        rows.append(["", "", "", "", "", "< 25 ms", v("latency_p50_ms")])
        rows.append(["   idle latency p99 (ms)", _n(p99["nbwork"]), _n(p99["huey"]),
                     f"pool {_n(pool99, 2)}", f"{_x(r['p99_nbwork_over_huey'])} Huey; "
                     f"{_x(r.get('p99_nbwork_over_pool'))} pool", "≤ 0.05× Huey",
                     v("latency_p99_vs_huey")])
    return rows


def _durability_query_rows(results: dict[str, Any], v: Any) -> list[list[str]]:
    """Durability levels and the wide query (8 and 9)."""
    rows: list[list[str]] = []
    du = results.get("durability")
    if du:
        w, e = du["per_s_worst"], du["enqueue_per_s_worst"]
        rows.append([f"8. throughput, {du['works']:,} no-ops, worst of {du['rounds']} "
                     "(works/s): durability process vs power",
                     f"{_n(w['process'])} vs {_n(w['power'])}", "", "",
                     f"process {_x(du['ratios']['power_over_process_throughput'])} power "
                     "(medians)",
                     "", ""])
        for level in ("process", "power"):
            peer = du["diskcache_per_s_worst"][level]
            rows.append([f"   enqueue(list) of {du['enqueue_count']:,}, {level} (requests/s, "
                         "worst round)", _n(e[level]), "", f"diskcache sets {_n(peer)}",
                         f"{_x(du['ratios'][f'enqueue_over_diskcache_{level}'])} of it "
                         "(worst round)",
                         "≥ 0.5×", v(f"enqueue_vs_diskcache_{level}")])
    q = results.get("query")
    if q:
        rows.append([f"9. WorkQuery returning {q['works']:,} infos, per info (ms, medians; "
                     "ratio: worst round): refresh",
                     _n(q["per_info_refresh_ms"], 3), "", f"by id {_n(q['per_id_ms'], 3)}",
                     f"{_x(q['ratios']['refresh_per_info_over_by_id'])} a by-id read",
                     "≤ 0.2×", v("query_refresh_vs_by_id")])
        if "refresh_after_change_per_info_over_by_id" in q["ratios"]:
            rows.append(["   refresh after one record changed",
                         _n(q["per_info_refresh_after_change_ms"], 3), "", "",
                         f"{_x(q['ratios']['refresh_after_change_per_info_over_by_id'])} a "
                         "by-id read", "≤ 0.2×", v("query_refresh_after_change_vs_by_id")])
        rows.append(["   first query of a new WorkManager", _n(q["per_info_first_ms"], 3),
                     "", "", f"{_x(q['ratios']['first_per_info_over_by_id'])} a by-id read",
                     "", ""])
    return rows


def _rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    v = lambda id: _verdict(results, id)  # noqa: E731
    rows += _speed_rows(results, v)
    ch = results.get("chain")
    if ch:
        hop = ch["per_hop_ms"]
        rows.append([f"3. chain of {ch['length']}, per hop (ms)", _n(hop["nbwork"]),
                     _n(hop["huey"]) + " (pipeline)",
                     f"pool round trip {_n(hop['process_pool'], 2)}",
                     f"{_x(ch['ratios']['nbwork_over_huey'])} Huey", "(none)", ""])
    b = results.get("blur")
    if b:
        w = b["wall_s"]
        what = f"4. blur batch, {b['images']} × {b['pixels']}², level {b['level']} (s)"
        rows.append([what, _n(w["nbwork"]), "", f"pool {_n(w['process_pool'])}",
                     f"{_x(b['ratios']['nbwork_over_pool'])} pool", "≤ 1.05× pool",
                     v("blur_vs_pool")])
        rows.append(["", "", "", f"sequential {_n(w['sequential'])}",
                     f"{_x(b['ratios']['sequential_over_nbwork'])} faster than sequential",
                     "≥ 1.8×", v("blur_vs_sequential")])
    sc = results.get("scale")
    if sc:
        small, large = sc["sizes"]["small"], sc["sizes"]["large"]
        for i, name in enumerate(SCALE_FIGURES):
            p = sc["p50_ms"][name]
            label = (f"5. store scale p50, {large:,} vs {small:,} works (ms): " if i == 0
                     else "   ") + name.replace("_", " ")
            rows.append([label, f"{_n(p['large'], 2)} vs {_n(p['small'], 2)}", "", "",
                         _x(sc["ratios"][name]), "≤ 1.2×", v(f"scale_{name}")])
    rows += _rss_rows(results, v)
    idle = results.get("idle")
    if idle:
        c = idle["cpu_percent"]
        rows.append([f"6. idle CPU, {idle['pending']:,} delayed works (% of a core)",
                     _n(c["nbwork_processes"], 2), _n(c["huey_consumer"], 2), "", "",
                     "< 1 %", v("scheduler_idle_cpu")])
        k = idle["kernel"]
        kind = "WorkTable" if k["view"] == "WorkTable" else f"{k['view']}"
        rows.append([f"   kernel CPU, live {kind} of {k['watching']:,} works (%)",
                     _n(k["cpu_percent"]["table"], 2), "",
                     f"kernel idle {_n(k['cpu_percent']['baseline'], 2)}", "", "< 5 %",
                     v("table_kernel_cpu")])
    mem = results.get("memory")
    if mem:
        p = mem["peak_rss_mib"]
        rows.append([f"7. scheduler peak RSS, {mem['works']} works sharing a "
                     f"{mem['global_mib']} MiB global (MiB)", _n(p["global_big"]), "",
                     f"1 KiB global {_n(p['global_1kib'])}",
                     f"{_x(mem['ratios']['big_over_small'])} the 1 KiB run", "< 2×",
                     v("memory_big_global")])
    rows += _durability_query_rows(results, v)
    rows += _dask_rows(results, v)
    return rows


def _dask_rows(results: dict[str, Any], v: Any) -> list[list[str]]:
    """nbwork's Dask executor against raw Dask on the same cluster (11)."""
    d = results.get("dask")
    if not d:
        return []
    r, per_s, wall = d["ratios"], d["noop_per_s"], d["blur_wall_s"]
    where = f"{d['workers']} Dask workers, {d['worker_threads']} threads, loopback"
    return [
        [f"11. Dask, {d['works']:,} no-op works ({where}; works/s, medians of "
         f"{d['rounds']}; ratio: worst round)", _n(per_s["nbwork"]), "",
         f"client.submit {_n(per_s['raw_dask'])}",
         f"{_x(r['worst_round_noop_nbwork_over_raw'])} raw (median "
         f"{_x(r['noop_nbwork_over_raw'])})", "≥ 0.5×", v("dask_noop_vs_raw")],
        [f"    Dask, blur batch {d['images']} × {d['pixels']}², level {d['level']} (s)",
         _n(wall["nbwork"]), "", f"client.map {_n(wall['raw_dask'])}",
         f"{_x(r['worst_round_blur_nbwork_over_raw'])} raw (median "
         f"{_x(r['blur_nbwork_over_raw'])})", "≤ 1.15×", v("dask_blur_vs_raw")],
    ]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _rss_rows(results: dict[str, Any], v: Any) -> list[list[str]]:
    rss = results.get("rss")
    if not rss:
        return []
    small, large = rss["finished"]["small"], rss["finished"]["large"]
    curve = rss["curve"]
    warm = next(p for p in curve if p["works"] == rss["growth_from_works"])
    return [
        [f"10. scheduler RSS with {large['finished_works']:,} finished works, peak / now (MiB)",
         f"{_n(large['peak'])} / {_n(large['rss'])}", "",
         f"{small['finished_works']:,} works: {_n(small['peak'])} / {_n(small['rss'])}",
         f"{_x(rss['ratios']['large_over_small'])} (now)", "< 150 MB (143 MiB) peak",
         v("rss_large_store")],
        [f"    scheduler RSS over a {rss['curve_works']:,}-work run (MiB): after "
         f"{warm['works']:,} → end", f"{_n(warm['rss'])} → {_n(curve[-1]['rss'])}", "",
         f"start {_n(curve[0]['rss'])}, max {_n(max(p['rss'] for p in curve))}; private "
         f"part (RssAnon) {_n(warm.get('anon'))} → {_n(curve[-1].get('anon'))}",
         _x(rss["ratios"]["curve_end_over_warm"]), "≤ 1.10× (no growth)",
         v("rss_no_growth")],
    ]


def table(results: dict[str, Any]) -> str:
    head = ["benchmark", "nbwork", "Huey", "reference", "ratio", "target", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(results)]
    passed = [t for t in results.get("targets", []) if t["pass"] is True]
    failed = [t for t in results.get("targets", []) if t["pass"] is False]
    lines.append("")
    lines.append(f"Targets met: {len(passed)} of {len(passed) + len(failed)}"
                 + (f"; missed: {', '.join(t['id'] for t in failed)}." if failed else "."))
    return "\n".join(lines)


def _details(results: dict[str, Any]) -> list[str]:
    out = []
    t = results.get("throughput")
    if t:
        secs = ", ".join(f"{k} " + " / ".join(f"{x:.2f}" for x in v)
                         for k, v in t["seconds"].items())
        out.append(f"- Throughput, seconds per round: {secs}.")
    b = results.get("blur")
    if b:
        secs = ", ".join(f"{k} " + " / ".join(f"{x:.1f}" for x in v)
                         for k, v in b["seconds"].items())
        out.append(f"- Blur, seconds per round: {secs}.")
    sc = results.get("scale")
    if sc:
        fill = ", ".join(f"{sc['sizes'][k]:,} works in {v['seconds']} s" for k, v in
                         sc["fill"].items())
        out.append(f"- Store scale: filled {fill}.")
    rss = results.get("rss")
    if rss:
        curve = ", ".join(f"{p['works']:,}: {p['rss']:.1f} ({p.get('anon', 0):.1f})"
                          for p in rss["curve"])
        big = rss["finished"]["large"]
        out.append(f"- Scheduler RSS (MiB; in brackets its private part, `RssAnon`, the rest "
                   f"is mapped files) after each {rss['curve_step']:,} works of the "
                   f"{rss['curve_works']:,}-work run: {curve}. With "
                   f"{big['finished_works']:,} finished works: {big['rss']:.1f} now "
                   f"({big.get('anon', 0):.1f} private), peak {big['peak']:.1f}.")
    idle = results.get("idle")
    if idle:
        c = idle["cpu_percent"]
        out.append(
            f"- Idle: the scheduler process alone {c['nbwork_scheduler']:.2f} %, all "
            f"{idle['processes']['nbwork_processes']} nbwork processes "
            f"{c['nbwork_processes']:.2f} %"
            f" (windows of {idle['window_s']:g} s × {idle['rounds']}); "
            f"{idle['still_pending']:,} works still pending afterwards. Kernel windows of "
            f"{idle['kernel']['window_s']:g} s; the view was `{idle['kernel']['view']}`.")
    return out


METHOD = """\
One command runs the whole suite and writes `bench/results.json` and the table below:

```bash
pip install -e ".[test]"     # huey, jupyter_client and ipykernel come with the test extra
python -m bench              # about 5 minutes on 2 cores
python -m bench --quick      # smaller sizes, about 2 minutes (bench/results-quick.json only)
python -m bench --only throughput,latency --md ''   # a subset, without touching this file
python -m bench --busy       # beside a process spinning on one core (its own section below)
```

Each benchmark runs nbwork and its comparison in the same run, alternating (round by round,
or try by try), and the figures to read are the ratios; absolute times are informational
(2-core machines, shared and noisy). nbwork runs with its defaults: a scheduler per store
and its pool of warm worker processes (one per CPU). The peers:
[Huey](https://huey.readthedocs.io) 3 with `SqliteHuey` on a temp file and a real
`huey_consumer` process (2 process workers for throughput and chains, its default settings
for latency and idle cost), and a raw `ProcessPoolExecutor(2)` (no durability at all: the
ceiling). Waits poll from every millisecond on every side (nbwork's `wm.wait` reads the
store's change counter every millisecond at first, then every 1 % of the time it has waited,
at most 50 ms; Huey results are polled every millisecond (every 2 ms for the count of a
batch's results), not fetched with `get(blocking=True)`, which sleeps 100 ms and more
between polls).

1. **Throughput**: N no-op works enqueued at once (`wm.enqueue(list)`, N Huey task calls,
   N `pool.submit`), until all are done; request construction included.
2. **Idle latency**: one no-op work, enqueue → SUCCEEDED (Huey: → result stored; the raw
   pool: `submit(noop).result()`), p50 and p99; tries alternate one by one, each after a
   random 5–50 ms pause.
3. **Chain hop**: a chain of 20 no-op works, enqueue of the chain → last one done, / 20;
   Huey: a pipeline `noop.s().then(noop)…`; pool: 20 sequential `submit().result()`.
4. **Blur batch**: generated photo-like PNGs, blur level 3: per image `BlurWorker` × 3 and
   `SaveImageToFileWorker`, one chain per image, all enqueued in one call (what `blur_batch`
   does, without its contact sheet). The pool and the sequential baseline run the very same
   worker code per image (`nbwork.testing.run_worker`), so only the orchestration differs.
5. **Store scale**: two stores, one with 100,000 finished works, one with 1,000 (tag
   `batch-K` on every 100 works, unique name `name-K` on every 10). They are filled without
   running anything: `nbwork._ops.enqueue_in` in batches of 5,000, each work marked
   SUCCEEDED in the same store transaction (what the scheduler's last write of a work
   does); each size is filled once per run and copied for every store that needs it.
   Then, with both schedulers running, alternating between the stores: `wm.enqueue` of one
   work (and its enqueue → SUCCEEDED), `get_work_info_by_id`, `get_work_infos_by_tag` (100
   works) and `get_work_infos_for_unique_work` (10 works); p50 of each. The two queries
   start from an empty read memo of the `WorkManager` in both stores (before, the small
   store's 10 tags were all memo hits after warm-up and the large store's 1,000 were not:
   that measured the memo, not the store's size).
6. **Idle cost**: CPU time (psutil, user + system) over fixed windows, as % of one core:
   all of nbwork's processes (supervisor, scheduler, idle workers) with 1,000 works delayed
   by an hour, alternating with Huey's default consumer holding 1,000 tasks scheduled an
   hour ahead; then a real IPython kernel (`jupyter_client`) showing a live
   `nbwork.widgets.WorkTable(tags=...)` of those 1,000 works, against the same kernel
   with nothing live (two windows each, alternating).
7. **Memory**: the scheduler's peak resident memory (`VmHWM`) while 300 one-time works run
   whose function (made as a notebook cell makes one, so pickled by value) refers to a
   20 MiB global, against the same run with a 1 KiB global. No peer: the figure is nbwork
   against itself.
8. **Durability levels** and 9. **a wide `WorkQuery`**: see below the table.
10. **Scheduler memory at size**: the scheduler's resident memory (`/proc/PID/status`:
   `VmHWM` the peak, `VmRSS` now) on a copy of the 100,000-work store of benchmark 5 (and
   of the 1,000-work one), after it started and ran 200 more no-ops; then on a new store,
   a run of 20,000 no-ops, enqueued and waited for 1,000 at a time (nothing pruned), its
   `VmRSS` sampled after each step: the curve, and its end against the sample after a
   quarter of the run (the warm-up: worker pool, imports, SQLite's page cache).

Targets are issue 15's where it set one (throughput against Huey and the pool in the worst
round, latency p50 and p99 against Huey, the blur batch, store scale, scheduler memory),
issue 7's elsewhere.
"""


BUSY_METHOD = """\
The same suite as above, run with `python -m bench --busy`: one more process spins on one
core (a Python `while True: pass`, pinned to the last CPU) from before the first benchmark
to after the last, beside nbwork and its peers alike. Issue 15 asks that the throughput and
latency targets still hold. The spinner's own CPU share over the run is given below (about
1.0 means it really took a core).
"""


def section(results: dict[str, Any]) -> str:
    m = results.get("meta", {})
    dirty = m.get("git_dirty_files")
    state = f"`{m.get('git_head', '?')}`" + (f" with {dirty} files modified" if dirty else "")
    busy = m.get("busy_neighbour")
    title = ("## The suite beside a busy neighbour (`python -m bench --busy`)" if busy else
             "## The suite: nbwork against Huey and a raw process pool (`python -m bench`)")
    loads = [m.get("load_start"), m.get("load_end")]
    load = (f", load average {loads[0][0]:g} at start and {loads[1][0]:g} at the end"
            if all(loads) else "")
    neighbour = ([f"Busy neighbour: pinned to CPU {busy['pinned_cpu']}, "
                  f"{busy['core_share']:.2f} of a core over {busy['wall_s']:g} s.", ""]
                 if busy else [])
    lines = [
        title,
        "",
        BUSY_METHOD if busy else METHOD,
        *neighbour,
        f"### Last run: {m.get('date', '?')}, {m.get('mode', '?')} sizes, {m.get('cpus')} "
        f"CPUs, Python {m.get('python')}, Huey {m.get('huey')}, tree {state}, "
        f"{m.get('seconds', '?')} s{load}",
        "",
        table(results),
        "",
        *_details(results),
    ]
    return "\n".join(lines).rstrip() + "\n"


def update_markdown(path: str, results: dict[str, Any]) -> None:
    """Replace the suite's section of ``path`` (between the markers; a ``--busy`` run has
    markers of its own) with this run's; if the markers are missing, insert the section
    before the first ``## `` heading after the title (a busy run: after the plain section)
    or at the end. Everything else in the file stays."""
    busy = bool(results.get("meta", {}).get("busy_neighbour"))
    begin, end = (BUSY_BEGIN, BUSY_END) if busy else (BEGIN, END)
    block = f"{begin}\n{section(results)}{end}\n"
    text = "# Benchmarks\n\n"
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if busy and begin not in text and END in text:
        # The busy section goes right after the plain one.
        head, tail = text.split(END, 1)
        tail = tail.lstrip("\n")
        text = head + END + "\n\n" + block + ("\n" + tail if tail else "")
    elif begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        tail = tail.lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        at = text.find("\n## ")
        if at == -1:
            text = text.rstrip("\n") + "\n\n" + block
        else:
            text = text[:at + 1] + block + "\n" + text[at + 1:]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
