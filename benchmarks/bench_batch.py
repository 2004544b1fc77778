"""Batch-scoring benchmark: scoring vs just reading + sorting the same Parquet file, and
(with ray=True) the local engine vs the Ray engine (a local Ray instance) on that file.

Each measurement runs in its own Python process so its peak RSS is its own; timings are
medians of `repeats` runs, baseline and scorer interleaved so machine noise hits both.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from ..model.files import publish_text

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
s = score_file(sys.argv[1], sys.argv[2], sys.argv[3], per_event=sys.argv[4] == "1", progress=False,
               engine=sys.argv[5] if len(sys.argv) > 5 else "local")
print(json.dumps({"seconds": s.seconds, "events": s.events, "sessions": s.sessions, "startup_s": s.startup_s,
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


def _same_rows(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    key = [("session_id", "ascending")]
    return pq.read_table(a).sort_by(key).equals(pq.read_table(b).sort_by(key))


def run_batch_bench(model, events: int, workdir: Path, seed: int = 1, per_event: bool = True,
                    repeats: int = 3, ray: bool = False) -> dict:
    path = ensure_events(workdir, events, seed)
    out = workdir / "scored.parquet"
    out_ray = workdir / "scored_ray.parquet"
    base, score, rays = [], [], []
    for _ in range(repeats):
        base.append(_run(_READ_SORT, path))
        score.append(_run(_SCORE, model, path, out, 0))
        if ray:   # the Ray engine on the same file, interleaved like the others
            rays.append(_run(_SCORE, model, path, out_ray, 0, "ray"))
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
    if ray:
        # Ray's seconds include starting the local instance (startup_s); on a running cluster
        # that cost is not paid per job, so both figures are kept. Peak RSS is the driver's.
        res["ray_score_s"] = statistics.median(r["seconds"] for r in rays)
        res["ray_startup_s"] = statistics.median(r["startup_s"] for r in rays)
        res["ray_score_excl_startup_s"] = statistics.median(r["seconds"] - r["startup_s"] for r in rays)
        res["ray_score_ev_s"] = res["events"] / res["ray_score_s"]
        res["ray_score_excl_startup_ev_s"] = res["events"] / res["ray_score_excl_startup_s"]
        res["ray_vs_local_time"] = res["ray_score_s"] / res["score_s"]
        res["ray_vs_local_time_excl_startup"] = res["ray_score_excl_startup_s"] / res["score_s"]
        res["ray_driver_peak_mb"] = max(r["peak_rss_mb"] for r in rays)
        res["ray_runs_s"] = [r["seconds"] for r in rays]
        res["local_runs_s"] = [r["seconds"] for r in score]
        res["ray_output_identical"] = _same_rows(out, out_ray)
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
    if ray:
        print(f"  score --engine ray      {res['ray_score_s']:7.2f} s  {res['ray_score_ev_s']:>12,.0f} ev/s  "
              f"driver peak {res['ray_driver_peak_mb']:.0f} MB  ({res['ray_vs_local_time']:.2f}x local time; "
              f"output identical: {res['ray_output_identical']})")
        print(f"    without instance start {res['ray_score_excl_startup_s']:6.2f} s  "
              f"{res['ray_score_excl_startup_ev_s']:>12,.0f} ev/s  ({res['ray_vs_local_time_excl_startup']:.2f}x local "
              f"time; starting the local Ray instance took {res['ray_startup_s']:.1f} s)")
    publish_text(workdir / "batch_bench.json", json.dumps(res, indent=2))
    return res
