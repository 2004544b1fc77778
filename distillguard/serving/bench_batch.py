"""Batch-scoring benchmark: scoring vs just reading + sorting the same Parquet file.

Each measurement runs in its own Python process so its peak RSS is its own; timings are
medians of `repeats` runs, baseline and scorer interleaved so machine noise hits both.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

_READ_SORT = """
import json, resource, sys, time
import pyarrow.compute as pc
import pyarrow.parquet as pq
t = time.perf_counter()
tab = pq.read_table(sys.argv[1])
idx = pc.sort_indices(tab, sort_keys=[("account_id", "ascending"), ("ts", "ascending")])
tab = tab.take(idx)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "events": tab.num_rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_SCORE = """
import json, resource, sys
from distillguard.serving.batch import score_file
s = score_file(sys.argv[1], sys.argv[2], sys.argv[3], per_event=sys.argv[4] == "1", progress=False)
print(json.dumps({"seconds": s.seconds, "events": s.events, "sessions": s.sessions,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_events(workdir: Path, events: int, seed: int) -> Path:
    """Simulate the benchmark input once per (events, seed); it is input, not a result."""
    from ..training.simulate import SimConfig, accounts_for_events, simulate, write

    d = workdir / f"sim-{events}-{seed}"
    path = d / "events.parquet"
    if not path.exists():
        print(f"simulating ~{events:,} events into {d} (once) ...", flush=True)
        ev, lab = simulate(SimConfig(seed=seed, accounts=accounts_for_events(events, 7.0), days=7.0))
        write(ev, lab, d)
    return path


def run_batch_bench(model, events: int, workdir: Path, seed: int = 1, per_event: bool = True,
                    repeats: int = 3) -> dict:
    path = ensure_events(workdir, events, seed)
    out = workdir / "scored.parquet"
    base, score = [], []
    for _ in range(repeats):
        base.append(_run(_READ_SORT, path))
        score.append(_run(_SCORE, model, path, out, 0))
    res = {
        "events": score[0]["events"], "sessions": score[0]["sessions"],
        "read_sort_s": statistics.median(r["seconds"] for r in base),
        "score_s": statistics.median(r["seconds"] for r in score),
        "read_sort_peak_mb": max(r["peak_rss_mb"] for r in base),
        "score_peak_mb": max(r["peak_rss_mb"] for r in score),
    }
    res["read_sort_ev_s"] = res["events"] / res["read_sort_s"]
    res["score_ev_s"] = res["events"] / res["score_s"]
    res["score_vs_read_sort_time"] = res["score_s"] / res["read_sort_s"]
    if per_event:
        pe = _run(_SCORE, model, path, workdir / "scored_events.parquet", 1)
        res["per_event_s"] = pe["seconds"]
        res["per_event_ev_s"] = pe["events"] / pe["seconds"]
        res["per_event_peak_mb"] = pe["peak_rss_mb"]
    print(f"batch scoring benchmark: {res['events']:,} events, {res['sessions']:,} sessions, "
          f"median of {repeats}")
    print(f"  read+sort (pyarrow)     {res['read_sort_s']:7.2f} s  {res['read_sort_ev_s']:>12,.0f} ev/s  "
          f"peak {res['read_sort_peak_mb']:.0f} MB")
    print(f"  score (session-level)   {res['score_s']:7.2f} s  {res['score_ev_s']:>12,.0f} ev/s  "
          f"peak {res['score_peak_mb']:.0f} MB  ({res['score_vs_read_sort_time']:.1f}x read+sort time)")
    if per_event:
        print(f"  score --per-event       {res['per_event_s']:7.2f} s  {res['per_event_ev_s']:>12,.0f} ev/s  "
              f"peak {res['per_event_peak_mb']:.0f} MB")
    (workdir / "batch_bench.json").write_text(json.dumps(res, indent=2))
    return res
