"""model.sessions: caller session ids, idle-gap cuts (strictly > gap), stable order."""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from distillguard.model.readers import load_events
from distillguard.model.schema import CANONICAL_SCHEMA, normalise
from distillguard.model.sessions import DEFAULT_GAP_S, assign_sessions, is_new_session, session_bounds


def events(rows: list[tuple]) -> pa.Table:
    """rows of (account_id, ts[, session_id]) in file order -> canonical table."""
    return normalise(pa.table({
        "account_id": [r[0] for r in rows],
        "ts": [float(r[1]) for r in rows],
        "prompt_tokens": list(range(len(rows))),  # doubles as a row tag
        "completion_tokens": [1] * len(rows),
        "session_id": pa.array([r[2] if len(r) > 2 else None for r in rows], pa.string()),
    }))


def sessions_of(t: pa.Table) -> dict[str, list[int]]:
    """session_id -> row tags (prompt_tokens) in output order."""
    out: dict[str, list[int]] = {}
    for sid, tag in zip(t["session_id"].to_pylist(), t["prompt_tokens"].to_pylist()):
        out.setdefault(sid, []).append(tag)
    return out


def test_default_gap_is_a_day():
    assert DEFAULT_GAP_S == 86_400.0


def test_is_new_session_rule():
    assert is_new_session(None, 5.0, 10.0)
    assert not is_new_session(0.0, 10.0, 10.0)  # exactly the gap: same session
    assert is_new_session(0.0, 10.000001, 10.0)
    assert not is_new_session(10.0, 3.0, 10.0)  # out of order: negative gap
    assert not is_new_session(0.0, DEFAULT_GAP_S, DEFAULT_GAP_S)
    assert is_new_session(0.0, DEFAULT_GAP_S + 1, DEFAULT_GAP_S)


@pytest.mark.parametrize("gap_s", [100.0, DEFAULT_GAP_S])
def test_cut_at_exactly_gap_vs_gap_plus_one(gap_s):
    t = assign_sessions(events([("a", 0), ("a", gap_s), ("a", 2 * gap_s + 1), ("a", 2 * gap_s + 1)]),
                        gap_s=gap_s)
    assert sessions_of(t) == {"a:0": [0, 1], "a:1": [2, 3]}


def test_default_gap_used():
    t = assign_sessions(events([("a", 0), ("a", 86_400), ("a", 172_801)]))
    assert t["session_id"].to_pylist() == ["a:0", "a:0", "a:1"]


def test_sessions_are_per_account_and_sorted():
    rows = [("b", 50), ("a", 10), ("b", 0), ("a", 500), ("a", 0), ("b", 1000)]
    t = assign_sessions(events(rows), gap_s=100)
    assert t.schema == CANONICAL_SCHEMA
    assert t["account_id"].to_pylist() == ["a", "a", "a", "b", "b", "b"]
    assert sessions_of(t) == {"a:0": [4, 1], "a:1": [3], "b:0": [2, 0], "b:1": [5]}
    assert t["_row"].to_pylist() == [4, 1, 3, 2, 0, 5]
    assert session_bounds(t).tolist() == [0, 2, 3, 5, 6]


def test_caller_session_id_respected():
    rows = [("a", 0, "s1"), ("a", 10_000_000, "s1"),  # a huge gap does not cut a caller session
            ("a", 5), ("a", 20_000_000, "s2"), ("a", 50)]
    t = assign_sessions(events(rows), gap_s=100)
    assert sessions_of(t) == {"a:0": [2, 4], "s1": [0, 1], "s2": [3]}


def test_caller_rows_do_not_split_the_implicit_stream():
    # Online, a request with its own session_id never touches the account's implicit
    # session, so it must not count as "the previous event" here either.
    rows = [("a", 0), ("a", 90, "x"), ("a", 150)]
    t = assign_sessions(events(rows), gap_s=100)
    assert sessions_of(t) == {"a:1": [2], "a:0": [0], "x": [1]}


def test_ties_keep_file_order():
    rows = [("a", 5), ("a", 5), ("a", 1), ("a", 5), ("b", 5, "s"), ("b", 5, "s")]
    t = assign_sessions(events(rows), gap_s=100)
    assert t["prompt_tokens"].to_pylist() == [2, 0, 1, 3, 4, 5]


def test_ties_follow_row_even_when_input_is_shuffled():
    base = events([("a", 5), ("a", 5), ("a", 5), ("a", 0), ("b", 1), ("a", 500)])
    shuffled = base.take(pa.array([5, 2, 4, 0, 3, 1]))
    a = assign_sessions(base, gap_s=100)
    b = assign_sessions(shuffled, gap_s=100)
    assert a.equals(b)
    assert a["_row"].to_pylist() == [3, 0, 1, 2, 5, 4]


def test_same_caller_session_id_in_two_accounts_stays_apart():
    t = assign_sessions(events([("b", 1, "s"), ("a", 2, "s"), ("b", 3, "s"), ("a", 0, "s")]))
    assert t["account_id"].to_pylist() == ["a", "a", "b", "b"]
    assert session_bounds(t).tolist() == [0, 2, 4]


def test_many_sessions_lexicographic_ids_stay_contiguous():
    rows = [("a", i * 1000) for i in range(12)]  # 12 sessions: "a:10" sorts before "a:2"
    t = assign_sessions(events(rows), gap_s=100)
    sids = t["session_id"].to_pylist()
    assert sorted(set(sids)) == sorted(f"a:{k}" for k in range(12))
    assert sids == sorted(sids)
    assert dict(zip(t["prompt_tokens"].to_pylist(), sids)) == {k: f"a:{k}" for k in range(12)}


def test_mixed_random_rows_match_online_rule():
    rng = np.random.default_rng(3)
    n, gap = 3000, 600.0
    accts = rng.integers(0, 20, n).astype(str)
    ts = np.round(rng.random(n) * 50_000)  # whole seconds: plenty of ties and exact gaps
    caller = np.where(rng.random(n) < 0.2, np.char.add("c", rng.integers(0, 5, n).astype(str)), "")
    t = events([(a, x, c or None) for a, x, c in zip(accts, ts, caller)])
    out = assign_sessions(t, gap_s=gap)

    # Online replay: per account, walk the implicit events in (ts, row) order.
    expected = {}
    last: dict[str, float] = {}
    k: dict[str, int] = {}
    for i in sorted(range(n), key=lambda i: (accts[i], ts[i], i)):
        if caller[i]:
            expected[i] = caller[i]
            continue
        a = accts[i]
        if is_new_session(last.get(a), ts[i], gap):
            k[a] = k.get(a, -1) + 1
        last[a] = ts[i]
        expected[i] = f"{a}:{k[a]}"
    got = dict(zip(out["_row"].to_pylist(), out["session_id"].to_pylist()))
    assert got == expected

    # Sorted by (account_id, session_id, ts, _row); sessions contiguous.
    keys = list(zip(out["account_id"].to_pylist(), out["session_id"].to_pylist(),
                    out["ts"].to_pylist(), out["_row"].to_pylist()))
    assert keys == sorted(keys)
    b = session_bounds(out)
    pairs = [keys[s][:2] for s in b[:-1]]
    assert len(pairs) == len(set(pairs)) == len({k[:2] for k in keys})


def test_gap_zero_and_bad_gap():
    t = assign_sessions(events([("a", 0), ("a", 0), ("a", 1)]), gap_s=0)
    assert t["session_id"].to_pylist() == ["a:0", "a:0", "a:1"]
    with pytest.raises(ValueError):
        assign_sessions(events([("a", 0)]), gap_s=-1)
    with pytest.raises(ValueError):
        assign_sessions(events([("a", 0)]), gap_s=float("nan"))


def test_empty_table_and_bounds():
    t = assign_sessions(CANONICAL_SCHEMA.empty_table())
    assert t.num_rows == 0 and t.schema == CANONICAL_SCHEMA
    assert session_bounds(t).tolist() == [0]
    with pytest.raises(ValueError, match="assign_sessions"):
        session_bounds(events([("a", 0)]))


def test_table_without_row_or_session_columns():
    t = pa.table({"account_id": ["a", "a"], "ts": [5.0, 1.0]})
    out = assign_sessions(t)
    assert out["session_id"].to_pylist() == ["a:0", "a:0"] and out["_row"].to_pylist() == [1, 0]


def test_from_files_across_a_directory(tmp_path):
    # _row restarts in every file; equal (account, ts, _row) keep the files' order.
    (tmp_path / "a.csv").write_text("account_id,ts,prompt_tokens,completion_tokens\nx,5,1,0\nx,9,2,0\n")
    (tmp_path / "b.csv").write_text("account_id,ts,prompt_tokens,completion_tokens\nx,5,3,0\n")
    t = assign_sessions(load_events(tmp_path))
    assert t["prompt_tokens"].to_pylist() == [1, 3, 2]
    assert t["session_id"].to_pylist() == ["x:0"] * 3


def test_one_million_rows_is_fast():
    n = 1_000_000
    rng = np.random.default_rng(0)
    t = normalise(pa.table({"account_id": pa.array(np.char.add("acct", rng.integers(0, 20_000, n).astype(str))),
                            "ts": 1.7e9 + rng.random(n) * 86_400 * 45,
                            "prompt_tokens": rng.integers(0, 4000, n),
                            "completion_tokens": rng.integers(0, 4000, n)}))
    t0 = time.perf_counter()
    out = assign_sessions(t)
    took = time.perf_counter() - t0
    assert out.num_rows == n
    b = session_bounds(out)
    assert b[0] == 0 and b[-1] == n and np.all(np.diff(b) > 0)
    assert took < 6.0, f"assign_sessions took {took:.2f}s for 1M rows"  # ~0.6-1.1 s measured here
