"""Session store bounds: capacity LRU with flagged sessions last, idle expiry, fixed bytes."""
import numpy as np

from distillguard.serving.state import MemoryStore, event_key

T0 = 1.78e9


def _ev(ts):
    return {"ts": ts, "prompt_tokens": 10, "completion_tokens": 0, "max_tokens": 100, "status": -1,
            "template_key": 5, "elicits_reasoning": 0, "browser_client": 0, "account_created_at": np.nan}


def _add(store, key, ts, i=0):
    meta, _ = store.open(key, ts)
    store.append(np.array([meta.slot]), [_ev(ts)], [event_key(f"{key}-{i}")])
    return meta


def test_capacity_evicts_least_recent_unflagged_first():
    s = MemoryStore(max_sessions=3, ring=4)
    _add(s, ("harvester", ""), T0)
    s.set_flagged(("harvester", ""), True)
    for k in range(10):                        # a flood of fresh ids
        _add(s, (f"fresh-{k}", ""), T0 + 1 + k)
    assert len(s) == 3
    assert s.get(("harvester", "")) is not None          # flagged survives the flood
    assert s.get(("fresh-9", "")) is not None and s.get(("fresh-0", "")) is None
    assert s.evictions["capacity"] == 8


def test_sessions_idle_longer_than_the_gap_expire_in_event_time():
    s = MemoryStore(max_sessions=100, ring=4, gap_s=3600)
    _add(s, ("old", ""), T0)
    _add(s, ("new", ""), T0 + 10)
    _add(s, ("new", ""), T0 + 3700, 1)          # watermark moves past old's last event + gap
    _add(s, ("other", ""), T0 + 3710)
    assert s.get(("old", "")) is None and s.evictions["idle"] >= 1
    assert s.get(("new", "")) is not None


def test_ring_folds_oldest_into_aggregates_and_bytes_stay_fixed():
    s = MemoryStore(max_sessions=10, ring=4)
    for i in range(50):
        meta = _add(s, ("long", ""), T0 + i * 60, i)
    assert s.length[meta.slot] == 4 and s.agg.n[meta.slot] == 46 and s.events_seen(meta.slot) == 50
    assert s.find_event(meta.slot, event_key("('long', '')-49")) == 3
    assert s.find_event(meta.slot, event_key("('long', '')-0")) == -1
    assert MemoryStore(max_sessions=1, ring=31).bytes_per_session() <= 2048


def test_gap_restarts_an_implicit_session_with_the_next_number():
    s = MemoryStore(max_sessions=10, ring=4, gap_s=100)
    m = _add(s, ("acct", ""), T0)
    assert m.name == "acct:0"
    meta, is_new = s.open(("acct", ""), T0 + 50)
    assert not is_new
    meta, is_new = s.open(("acct", ""), T0 + 50 + 101)
    assert is_new and meta.name == "acct:1" and s.length[meta.slot] == 0


def test_a_session_is_never_expired_while_it_is_being_served():
    s = MemoryStore(max_sessions=10, ring=4, gap_s=3600)
    _add(s, ("ahead", ""), T0 + 10 * 3600)          # the newest event time seen: watermark far ahead
    for i in range(5):                              # a lagging session keeps arriving
        meta = _add(s, ("lagging", ""), T0 + i, i)
    assert s.events_seen(meta.slot) == 5
