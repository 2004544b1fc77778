"""Redis session store against a real redis-server (tests/conftest.py starts one).

Parity with the in-process store (same feature rows and scores), several scorers sharing
one Redis (stale local copies are caught and redone), TTL idle expiry, bounded values,
namespaces per feature spec, flagged sessions outliving a flood under maxmemory."""
import time

import numpy as np
import pytest
import redis

from distillguard.serving import DEFAULT_BUNDLE
from distillguard.model import features
from distillguard.serving.bundle import load_bundle
from distillguard.serving.redis_store import HEADER, RECORD, TOKEN_LEN, RedisStore, session_key
from distillguard.serving.scorer import CompleteInput, Scorer, ScoreInput
from distillguard.serving.state import MemoryStore, event_key
from distillguard.serving.stores import open_store

T0 = 1.78e9


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(DEFAULT_BUNDLE, threads=1)


def _traffic(n_sessions=6, n_events=45, seed=0):
    """Interleaved Score/Complete calls of scripted and human-like sessions, some with
    retries (a repeated event id) and one implicit (no session id) session."""
    rng = np.random.default_rng(seed)
    calls = []
    for s in range(n_sessions):
        scripted = s % 2 == 0
        acct, sid = f"acct:{s % 4}", ("" if s == 5 else f"s{s}")
        t = T0 + rng.uniform(0, 600)
        for e in range(n_events):
            t += rng.normal(900, 30) if scripted else rng.exponential(120) + 1
            req = ScoreInput(account_id=acct, session_id=sid, event_id=f"{s}-{e}", ts=t,
                             prompt_tokens=int(rng.integers(50, 1500)), max_tokens=1024 if scripted else 0,
                             template_hash=f"{int(rng.integers(0, 2 if scripted else 30)):016x}",
                             client_fingerprint="python-httpx/0.27" if scripted else "Mozilla/5.0",
                             account_created_at=T0 - 86400 * (2 if scripted else 400),
                             elicits_reasoning=bool(scripted and e % 3))
            calls.append((t, "score", req))
            if e % 7 == 3:
                calls.append((t + 0.5, "score", req))          # a client retry
            calls.append((t + 30, "complete", CompleteInput(
                account_id=acct, session_id=sid, event_id=f"{s}-{e}",
                completion_tokens=1024 if scripted else int(rng.integers(10, 800)), status=200)))
    calls.sort(key=lambda c: c[0])
    return [(kind, req) for _, kind, req in calls]


def _run(scorers, calls):
    """Send calls round-robin over `scorers`; the answers, comparable across stores."""
    out = []
    for i, (kind, req) in enumerate(calls):
        sc = scorers[i % len(scorers)]
        if kind == "score":
            v = sc.score(req)
            out.append(("score", v.probs, v.action, v.events_in_session, v.session_id, v.duplicate))
        else:
            out.append(("complete", sc.complete(req)))
    return out


def _redis_scorer(bundle, url):
    return Scorer(bundle, state=url)


def test_redis_store_gives_the_memory_stores_scores_and_rows(bundle, redis_url):
    calls = _traffic()
    mem = Scorer(bundle)
    red = _redis_scorer(bundle, redis_url)
    assert isinstance(mem.store, MemoryStore) and isinstance(red.store, RedisStore)
    assert _run([mem], calls) == _run([red], calls)
    # GetSession: the same held events and feature rows, bit for bit.
    for key in [("acct:0", "s0"), ("acct:1", "s1"), ("acct:1", "")]:
        a, b = mem.get_session(*key), red.get_session(*key)
        assert a.session_id == b.session_id and a.events_in_session == b.events_in_session
        assert a.events == b.events and a.latest.probs == b.latest.probs
    assert red.store.stats["conflicts"] == 0 and red.store.stats["writes"] > 0
    assert red.end_session("acct:0", "s0") and not red.end_session("acct:0", "s0")
    assert red.get_session("acct:0", "s0") is None
    red.close()


@pytest.mark.parametrize("validate", ["never", "always", "auto"])
def test_scorers_sharing_redis_answer_as_one_process(bundle, redis_url, validate):
    """Three scorers (as three worker processes would) take turns on every session: their
    local copies go stale. validate=never: the commit script catches it and they redo on
    fresh state; always: prepare checks every copy first; auto: switches to checking once
    stale copies are common."""
    calls = _traffic(seed=1)
    want = _run([Scorer(bundle)], calls)
    scorers = [_redis_scorer(bundle, f"{redis_url}?validate={validate}") for _ in range(3)]
    assert _run(scorers, calls) == want
    stats = {k: sum(s.store.stats[k] for s in scorers) for k in scorers[0].store.stats}
    assert stats["stale_copies"] > 0 and stats["fetched"] > 0
    if validate == "never":
        assert stats["conflicts"] > 0                 # the stale-copy path ran at commit
    else:
        assert stats["conflicts"] < stats["stale_copies"] / 5     # found before computing
        assert all(s.store._validating for s in scorers)
    # Batched: a micro-batch of many sessions goes through one commit.
    a = _redis_scorer(bundle, redis_url)
    reqs = [ScoreInput(account_id=f"b{i}", event_id="e0", ts=T0 + i, prompt_tokens=10) for i in range(40)]
    before = a.store.stats["commits"]
    vs = a.score_many(reqs)
    assert [v.events_in_session for v in vs] == [1] * 40 and a.store.stats["commits"] == before + 1


def _store(url, **kw):
    kw.setdefault("spec_hash", features.feature_spec_hash())
    return open_store(url, max_sessions=0, ring=kw.pop("ring", 4), gap_s=kw.pop("gap_s", 86400.0), **kw)


def _ev(ts):
    return {"ts": ts, "prompt_tokens": 10, "completion_tokens": 0, "max_tokens": 100, "status": -1,
            "template_key": 5, "elicits_reasoning": 0, "browser_client": 0, "account_created_at": np.nan}


def _add(store, key, ts, i=0, flagged=None):
    store.prepare([key])
    meta, _ = store.open(key, ts)
    store.append(np.array([meta.slot]), [_ev(ts)], [event_key(f"{key}-{i}")])
    if flagged is not None:
        store.set_flagged(key, flagged)
    assert store.commit() == set()
    return meta


def test_idle_sessions_expire_by_ttl_and_flagged_ones_live_longer(redis_url):
    s = _store(redis_url + "?ttl=1&flagged_ttl=30")
    r = redis.Redis.from_url(redis_url)
    _add(s, ("idle", "x"), T0)
    _add(s, ("harv", "x"), T0, flagged=True)
    assert 0 < r.pttl(s.key_of(("idle", "x"))) <= 1000
    assert 20_000 < r.pttl(s.key_of(("harv", "x"))) <= 30_000
    time.sleep(1.3)
    assert r.get(s.key_of(("idle", "x"))) is None and r.exists(s.key_of(("harv", "x")))
    # The local copy still holds "idle": the commit finds Redis's empty key and the
    # session starts again from zero events instead of continuing on stale state.
    s.prepare([("idle", "x")])
    meta, _ = s.open(("idle", "x"), T0 + 60)
    s.append(np.array([meta.slot]), [_ev(T0 + 60)], [event_key("again")])
    assert s.commit() == {("idle", "x")}
    meta = _add(s, ("idle", "x"), T0 + 60, 1)
    assert s.events_seen(meta.slot) == 1
    assert s.evictions["idle"] >= 1 or r.info("stats")["expired_keys"] >= 1


def test_values_stay_bounded_however_long_the_session(redis_url):
    s = _store(redis_url, ring=8)
    r = redis.Redis.from_url(redis_url)
    k = s.key_of(("long", "s"))
    sizes = []
    for i in range(60):
        meta = _add(s, ("long", "s"), T0 + 60 * i, i)
        sizes.append(r.strlen(k))
    assert s.events_seen(meta.slot) == 60 and s.length[meta.slot] == 8
    bound = TOKEN_LEN + HEADER.itemsize + 8 * RECORD.itemsize
    assert max(sizes) == bound and sizes[-1] == sizes[8] and bound < 2048
    # A fresh process reading it (no local copy) sees the same aggregates and ring.
    t = _store(redis_url, ring=8)
    t.prepare([("long", "s")])
    m2 = t.get(("long", "s"))
    assert t.events_seen(m2.slot) == 60
    for name in features.STATE_FIELDS:
        assert np.array_equal(getattr(t.agg, name)[m2.slot], getattr(s.agg, name)[meta.slot]), name
    assert all(np.array_equal(t.ring[c][m2.slot], s.ring[c][meta.slot]) for c in s.ring)
    # A reader with a shorter ring folds the surplus into the aggregates, as `append` would.
    u = _store(redis_url, ring=4)
    u.prepare([("long", "s")])
    m3 = u.get(("long", "s"))
    assert u.length[m3.slot] == 4 and u.events_seen(m3.slot) == 60
    assert np.array_equal(u.ring["ts"][m3.slot], s.ring["ts"][meta.slot, 4:])


def test_state_is_keyed_by_raw_format_and_survives_a_feature_spec_change(redis_url):
    """A deploy with another feature spec reads the same sessions: ring, flag and generation
    kept, aggregates rebuilt from the ring (counted; lossy where the session outran it)."""
    from distillguard.serving.state import RAW_FORMAT

    a = _store(redis_url, spec_hash="aaaa")
    for i in range(6):                       # ring 4: two events folded into the aggregates
        _add(a, ("acct", "long"), T0 + i, i=i, flagged=True if i == 5 else None)
    _add(a, ("acct", "short"), T0)
    ma = a.get(("acct", "long"))
    assert int(a.agg.n[ma.slot]) == 2
    r = redis.Redis.from_url(redis_url)
    assert sorted(r.keys("*")) == [f"dg:{RAW_FORMAT}:acct:long".encode(), f"dg:{RAW_FORMAT}:acct:short".encode()]

    b = _store(redis_url, spec_hash="bbbb")
    b.prepare([("acct", "long"), ("acct", "short")])
    mb = b.get(("acct", "long"))
    assert mb is not None and ("acct", "long") in b._flagged and mb.generation == ma.generation
    assert b.ring["ts"][mb.slot, :b.length[mb.slot]].tolist() == [T0 + 2, T0 + 3, T0 + 4, T0 + 5]
    assert int(b.agg.n[mb.slot]) == 0 and not b.agg.tcount[mb.slot].any()
    assert b.rebuilt == {"lossless": 1, "lossy": 1}
    # The same spec reads its aggregates back as written, nothing rebuilt.
    c = _store(redis_url, spec_hash="aaaa")
    c.prepare([("acct", "long")])
    assert int(c.agg.n[c.get(("acct", "long")).slot]) == 2 and c.rebuilt == {"lossless": 0, "lossy": 0}
    assert session_key("dg", "h", ("a:b", "c")) != session_key("dg", "h", ("a", "b:c"))
    assert session_key("dg", "h", ("a:b", "c")) == b"dg:h:a%3Ab:c"


def test_a_flood_evicts_unflagged_sessions_first_under_maxmemory(redis_url):
    """maxmemory + volatile-ttl (docs/scaling.md): flagged sessions carry the longer TTL, so
    Redis evicts unflagged ones first and a flood of fresh ids leaves the harvesters."""
    r = redis.Redis.from_url(redis_url)
    r.config_set("maxmemory", "4mb")
    r.config_set("maxmemory-policy", "volatile-ttl")
    evicted0 = r.info("stats")["evicted_keys"]      # the session's server: count from here
    s = _store(redis_url + "?ttl=3600&flagged_ttl=86400", ring=8)
    for h in range(20):
        _add(s, ("harvester", f"h{h}"), T0, flagged=True)
    for start in range(0, 6000, 200):                  # ~6000 x ~0.6 KB: well past 4 MB
        keys = [(f"fresh{i}", "") for i in range(start, start + 200)]
        s.prepare(keys)
        slots = [s.open(k, T0 + 1)[0].slot for k in keys]
        s.append(np.array(slots), [_ev(T0 + 1)] * len(keys), [event_key("e")] * len(keys))
        s.commit()
    assert r.info("stats")["evicted_keys"] > evicted0 and s.evictions["capacity"] >= 0
    assert all(r.exists(s.key_of(("harvester", f"h{h}"))) for h in range(20))


def test_unreachable_redis_is_a_clear_error(bundle):
    with pytest.raises(OSError, match="cannot reach Redis"):
        Scorer(bundle, state="redis://127.0.0.1:1/0?timeout=0.5")
    with pytest.raises(ValueError, match="unknown session store"):
        Scorer(bundle, state="memcached://x")
