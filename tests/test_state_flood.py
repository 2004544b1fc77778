"""Session-state bounds under a flood of new session ids (the 25,000-accounts pattern, and
1M ids in a burst): memory stays bounded, the least recent unflagged sessions are evicted
first, flagged sessions (and so a harvester's score) survive, and evictions are counted
on the store and in the `distillguard_evictions` metric."""
import time

import grpc
import numpy as np
import pytest

from distillguard.serving import DEFAULT_BUNDLE
from distillguard.model import features
from distillguard.serving.scorer import CompleteInput, Scorer, ScoreInput
from distillguard.serving.state import MemoryStore, event_key
from distillguard.serving.stubs import pb, pb_grpc

# Two days ago (inside the server's ts bounds), at 09:00 UTC: the model reads the hour of day, so a
# wall-clock T0 would make the flood's verdicts depend on when the suite runs.
T0 = (time.time() // 86400.0 - 2) * 86400.0 + 9 * 3600.0


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _ev(ts, i=0):
    return {"ts": ts, "prompt_tokens": 100 + i % 7, "completion_tokens": 0, "max_tokens": 1024, "status": -1,
            "template_key": 11 + i % 2, "elicits_reasoning": 1, "browser_client": 0, "account_created_at": T0 - 86400}


@pytest.mark.slow
def test_a_million_fresh_ids_stay_within_capacity_and_spare_flagged_sessions():
    cap, n_harv, n_old, flood, B = 50_000, 1_000, 1_000, 1_000_000, 4096
    s = MemoryStore(max_sessions=cap, ring=31)          # the served ring (W = 32)
    # Harvesters: 40 events each (ring full, 9 folded into the aggregates), then flagged.
    for i in range(40):
        keys = [(f"harv-{k}", "") for k in range(n_harv)]
        slots = [s.open(k, T0 + i * 60.0)[0].slot for k in keys]
        s.append(np.array(slots), [_ev(T0 + i * 60.0, i)] * n_harv, [event_key(f"h{k}-{i}") for k in range(n_harv)])
    for k in range(n_harv):
        s.set_flagged((f"harv-{k}", ""), True)
    # Older ordinary sessions, less recent than every flood id.
    slots = [s.open((f"old-{k}", ""), T0 + 2400.0)[0].slot for k in range(n_old)]
    s.append(np.array(slots), [_ev(T0 + 2400.0)] * n_old, list(range(n_old)))
    harv_slots = np.array([s.get((f"harv-{k}", "")).slot for k in range(n_harv)])
    agg_before = s.agg.take(harv_slots)
    ring_before = {name: arr[harv_slots].copy() for name, arr in s.ring.items()}
    seen_before = [s.events_seen(int(x)) for x in harv_slots]

    rss, t = {}, time.perf_counter()
    for start in range(0, flood, B):
        ids = range(start, min(flood, start + B))
        ts = T0 + 2500.0 + start * 1e-3                  # the whole flood within ~20 min of event time
        slots = [s.open((f"flood-{i}", ""), ts)[0].slot for i in ids]
        s.append(np.array(slots), [_ev(ts)] * len(slots), list(ids))
        done = start + len(ids)
        if done >= flood // 4 and "quarter" not in rss:
            rss["quarter"] = _rss_mb()
    rss["end"] = _rss_mb()
    seconds = time.perf_counter() - t

    # Bounded: exactly `cap` live sessions, no free slot leaked, and memory flat over the
    # last 750k ids (an unbounded store would need ~2 KB x 750k = 1.5 GB more).
    assert len(s) == cap and not s._free
    assert rss["end"] - rss["quarter"] < 32, rss
    # Flagged first-class: every harvester is live, still flagged, and its state untouched.
    assert all(s.is_flagged((f"harv-{k}", "")) for k in range(n_harv))
    assert [s.events_seen(s.get((f"harv-{k}", "")).slot) for k in range(n_harv)] == seen_before
    assert np.array_equal(harv_slots, [s.get((f"harv-{k}", "")).slot for k in range(n_harv)])
    for f in features.STATE_FIELDS:
        assert np.array_equal(getattr(s.agg, f)[harv_slots], getattr(agg_before, f)), f
    for name, arr in ring_before.items():
        assert np.array_equal(s.ring[name][harv_slots], arr), name
    # LRU among the unflagged: the older sessions went first, the newest flood ids remain.
    keep = cap - n_harv
    assert all(s.get((f"old-{k}", "")) is None for k in range(n_old))
    assert s.get((f"flood-{flood - keep}", "")) is not None and s.get((f"flood-{flood - keep - 1}", "")) is None
    assert {k[0] for k, _, f in s.sessions_in_order() if not f} == {f"flood-{i}" for i in range(flood - keep, flood)}
    # Counted: every session that left was a capacity eviction.
    assert s.evictions == {"capacity": n_harv + n_old + flood - cap, "idle": 0, "ended": 0}
    assert seconds < 45, f"flood took {seconds:.1f}s"
    print(f"\n1M-id flood into {cap:,} slots: {seconds:.1f}s, RSS {rss['quarter']:.0f} -> {rss['end']:.0f} MB, "
          f"{s.bytes_per_session()} B/session slab")


def test_when_everything_is_flagged_the_least_recent_flagged_session_goes():
    s = MemoryStore(max_sessions=3, ring=4)
    for k in range(3):
        s.open((f"h{k}", ""), T0 + k)
        s.set_flagged((f"h{k}", ""), True)
    s.open(("fresh", ""), T0 + 10)
    assert s.get(("h0", "")) is None and s.get(("h1", "")) and s.get(("h2", "")) and s.get(("fresh", ""))
    assert s.evictions["capacity"] == 1


# ---------------------------------------------------------------------------- through the scorer

def _harvester(acct="harvester", n=40):
    """A scripted harvesting session: one template, saturated outputs, ~25 min apart."""
    out = []
    for i in range(n):
        out.append(dict(account_id=acct, session_id="", event_id=f"{acct}-{i}", ts=T0 + i * 1500.0,
                        prompt_tokens=150 + (i * 37) % 90, max_tokens=1024, template_hash="00000000000abcde",
                        client_fingerprint="python-requests/2.31", account_created_at=T0 - 86400.0))
    return out


def _feed(scorer, events):
    for e in events:
        scorer.score(ScoreInput(**e), timeout=30)
        assert scorer.complete(CompleteInput(account_id=e["account_id"], event_id=e["event_id"],
                                             completion_tokens=1024, status=200), timeout=30)


@pytest.fixture(scope="module")
def bundle():
    from distillguard.serving.bundle import load_bundle

    return load_bundle(DEFAULT_BUNDLE)


def test_a_flood_through_the_scorer_does_not_reset_a_harvesters_score(bundle):
    harv = _harvester()
    flooded, calm = Scorer(bundle, max_sessions=2_000), Scorer(bundle, max_sessions=2_000)
    for sc in (flooded, calm):
        _feed(sc, harv[:-1])
    key = ("harvester", "")
    assert flooded.store.is_flagged(key), "the default model should flag a scripted harvester"
    n = 20_000
    acted = 0
    for start in range(0, n, 500):
        vs = flooded.score_many([ScoreInput(account_id=f"fresh-{i}", event_id="e0", ts=T0 + 30_000.0 + i * 0.5,
                                            prompt_tokens=40, client_fingerprint="Mozilla/5.0")
                                 for i in range(start, start + 500)], timeout=60)
        acted += sum(v.action != "ALLOW" for v in vs)
    # The premise: one browser request each is not flagged (else the flood evicts by right).
    assert acted == 0, f"the default model acted on {acted}/{n} single-request browser sessions"
    assert len(flooded.store) == 2_000 and flooded.store.evictions["capacity"] == n - 1_999
    a, b = flooded.score(ScoreInput(**harv[-1])), calm.score(ScoreInput(**harv[-1]))
    assert a.events_in_session == b.events_in_session == len(harv)
    assert a.probs == b.probs and a.action == b.action and a.session_id == b.session_id == "harvester:0"


def test_flood_through_grpc_counts_evictions_in_metrics(bundle):
    from distillguard.serving.harness import scrape_metrics
    from distillguard.serving.server import ServeConfig, create_server

    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(max_sessions=300, threads=4))
    try:
        _, mport = srv.metrics.serve(0)
        harv = _harvester("grpc-harvester", 20)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            for e in harv:
                stub.Score(pb.ScoreRequest(**e), timeout=10)
                stub.Complete(pb.CompleteRequest(account_id=e["account_id"], event_id=e["event_id"],
                                                 completion_tokens=1024, status=200), timeout=10)
            assert srv.scorer.store.is_flagged(("grpc-harvester", ""))
            n = 2_000
            for start in range(0, n, 200):
                stub.ScoreBatch(pb.ScoreBatchRequest(requests=[
                    pb.ScoreRequest(account_id=f"flood-{i}", event_id="e0", ts=T0 + 40_000.0 + i, prompt_tokens=30)
                    for i in range(start, start + 200)]), timeout=30)
            info = stub.GetSession(pb.SessionRef(account_id="grpc-harvester"), timeout=10)
            assert info.found and info.events_in_session == len(harv)
        m = scrape_metrics(mport)
        assert m.samples("distillguard_evictions", reason="capacity") == [({"reason": "capacity"}, n - 299)], m
        assert m.samples("distillguard_evictions", reason="idle") == [({"reason": "idle"}, 0.0)], m
        assert m.value("distillguard_live_sessions") == 300.0
    finally:
        srv.stop(1)
