"""Cost of a shadow model: the in-process scorer with and without a second bundle.

Same simulated requests, same served bundle; the shadow is a copy of it (a different model
of the same size costs the same: one more onnxruntime call and one more policy pass per
batch). Runs alternate (off, on, off, on, ...) so drift on a shared machine hits both
alike, and the figures are medians over the runs: microseconds per request scored one at a
time (the idle gateway's path) and in batches of 32 (the loaded one), and their ratios.
"""
from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..model.files import publish_text


def _requests(events: int, seed: int):
    from ..training.simulate import SimConfig, accounts_for_events, simulate
    from ..serving.scorer import ScoreInput

    accounts = max(accounts_for_events(events, 2.0), 20)
    while True:     # small requests can fall short of the estimate: simulate more accounts
        ev, _ = simulate(SimConfig(seed=seed, accounts=accounts, days=2.0))
        if len(ev) >= events:
            break
        accounts *= 2
    ev = ev.head(events)
    out = []
    for r in ev.itertuples(index=False):
        out.append(ScoreInput(
            account_id=r.account_id, event_id=r.event_id, ts=float(r.ts), prompt_tokens=int(r.prompt_tokens),
            max_tokens=0 if r.max_tokens is pd.NA else int(r.max_tokens), model=r.model,
            frame_signature=r.frame_signature or "", elicits_reasoning=bool(r.elicits_reasoning),
            client_fingerprint=r.client_fingerprint or "",
            account_created_at=0.0 if np.isnan(r.account_created_at) else float(r.account_created_at)))
    return out


def _run(bundle, shadow, reqs, batch: int) -> float:
    """Seconds per request over one pass of `reqs` through a fresh scorer."""
    from ..serving.scorer import Scorer

    scorer = Scorer(bundle, shadow_model=shadow, max_sessions=len(reqs) + 1)
    try:
        t = time.perf_counter()
        if batch == 1:
            for r in reqs:
                last = [scorer.score(r)]
        else:
            for i in range(0, len(reqs), batch):
                last = scorer.score_many(reqs[i:i + batch])
        dt = (time.perf_counter() - t) / len(reqs)
        # A shadow that failed (and was only counted) would time the cheap path: refuse.
        if shadow is not None and (scorer.shadow_errors or any(v.shadow_verdict is None for v in last)):
            raise RuntimeError(f"the shadow model did not score ({scorer.shadow_errors} failed batches)")
        return dt
    finally:
        scorer.close()


def run_shadow_bench(model, events: int = 3000, repeats: int = 5, seed: int = 1,
                     workdir: Path = Path("bench")) -> dict:
    from ..serving.bundle import load_bundle

    reqs = _requests(events, seed)
    with tempfile.TemporaryDirectory(prefix="distillguard-shadow-") as tmp:
        shadow_path = Path(shutil.copytree(model, Path(tmp) / "shadow"))
        bundle, shadow = load_bundle(model, threads=1), load_bundle(shadow_path, threads=1)
        res = {"events": len(reqs), "repeats": repeats, "model": str(model)}
        for batch in (1, 32):
            off, on = [], []
            for _ in range(repeats):
                off.append(_run(bundle, None, reqs, batch))
                on.append(_run(bundle, shadow, reqs, batch))
            m_off, m_on = statistics.median(off), statistics.median(on)
            res[f"batch_{batch}"] = {"us_per_request_off": m_off * 1e6, "us_per_request_on": m_on * 1e6,
                                     "added_us": (m_on - m_off) * 1e6, "ratio_on_off": m_on / m_off,
                                     "runs_off_us": [x * 1e6 for x in off], "runs_on_us": [x * 1e6 for x in on]}
    workdir.mkdir(parents=True, exist_ok=True)
    publish_text(workdir / "shadow_bench.json", json.dumps(res, indent=2) + "\n")
    for batch in (1, 32):
        b = res[f"batch_{batch}"]
        print(f"shadow model, requests {'one at a time' if batch == 1 else 'in batches of 32'}: "
              f"{b['us_per_request_off']:.0f} -> {b['us_per_request_on']:.0f} us/request "
              f"(+{b['added_us']:.0f} us, {b['ratio_on_off']:.2f}x; medians of {repeats} alternating runs "
              f"of {len(reqs):,} requests)")
    return res
