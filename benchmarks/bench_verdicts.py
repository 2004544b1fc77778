"""Cost of faithful reasons: the in-process scorer with occlusion explanations vs rule checks.

Same simulated requests, same bundle; the "rules" copy has no occlusion baseline, so its
reasons are rule checks on the feature row (no extra model call). Explanations run when a
session's action changes level and every `explain_every` acted-on events
(serving.policy), so their cost per request depends on how much traffic is acted on: the
stream here is the simulator's mix (about a quarter of its sessions harvest). Runs
alternate (occlusion, rules, ...) and the figures are medians over runs: per-request
latency p50 / p99 one request at a time (the idle gateway's path), microseconds per
request in batches of 32, and the share of requests that computed an explanation.
"""
from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..model.files import publish_text
from .bench_shadow import _requests


def _run(bundle, reqs, batch: int) -> dict:
    from ..serving import policy
    from ..serving.scorer import Scorer

    scorer = Scorer(bundle, max_sessions=len(reqs) + 1)
    calls = {"explained": 0}
    orig = policy.top_groups

    def counting(drops, *a, **k):
        calls["explained"] += len(drops)
        return orig(drops, *a, **k)

    policy.top_groups = counting
    try:
        lat = []
        t = time.perf_counter()
        if batch == 1:
            for r in reqs:
                t0 = time.perf_counter()
                scorer.score(r)
                lat.append(time.perf_counter() - t0)
        else:
            for i in range(0, len(reqs), batch):
                scorer.score_many(reqs[i:i + batch])
        total = time.perf_counter() - t
    finally:
        policy.top_groups = orig
        scorer.close()
    out = {"us_per_request": 1e6 * total / len(reqs), "explained_share": calls["explained"] / len(reqs)}
    if lat:
        a = np.array(lat) * 1e6
        out.update(p50_us=float(np.percentile(a, 50)), p99_us=float(np.percentile(a, 99)))
    return out


def run_verdicts_bench(model, events: int = 3000, repeats: int = 3, seed: int = 1,
                       workdir: Path = Path("bench")) -> dict:
    from ..serving.bundle import load_bundle

    reqs = _requests(events, seed)
    with tempfile.TemporaryDirectory(prefix="distillguard-verdicts-") as tmp:
        rules_path = Path(shutil.copytree(model, Path(tmp) / "rules"))
        meta = json.loads((rules_path / "metadata.json").read_text())
        if meta.pop("occlusion_baseline", None) is None:
            raise ValueError(f"{model}: the bundle has no occlusion baseline (retrain it): nothing to compare")
        (rules_path / "metadata.json").write_text(json.dumps(meta))
        variants = {"occlusion": load_bundle(model, threads=1), "rules": load_bundle(rules_path, threads=1)}
        res = {"events": len(reqs), "repeats": repeats, "model": str(model)}
        for batch in (1, 32):
            runs = {k: [] for k in variants}
            for _ in range(repeats):
                for k, b in variants.items():
                    runs[k].append(_run(b, reqs, batch))
            res[f"batch_{batch}"] = {k: {m: statistics.median(r[m] for r in v) for m in v[0]}
                                     for k, v in runs.items()}
    workdir.mkdir(parents=True, exist_ok=True)
    publish_text(workdir / "verdicts_bench.json", json.dumps(res, indent=2) + "\n")
    b1, b32 = res["batch_1"], res["batch_32"]
    print(f"reasons by occlusion vs rule checks, {len(reqs)} requests, median of {repeats}:")
    for k in variants:
        print(f"  {k:9s} batch 1: p50 {b1[k]['p50_us']:.0f} us, p99 {b1[k]['p99_us']:.0f} us | batch 32: "
              f"{b32[k]['us_per_request']:.0f} us/request | explained {100 * b1[k]['explained_share']:.1f}% "
              f"of requests")
    print(f"  -> {workdir / 'verdicts_bench.json'}")
    return res
