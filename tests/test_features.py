"""Feature code: golden values, causality, and offline == incremental (the online path)."""
import numpy as np
import pytest

from distillguard.model import features as F
from distillguard.model.features import RawEvents, compute, empty_state, fold

IDX = {n: i for i, n in enumerate(F.FEATURE_NAMES)}


def _events(n, rng, n_templates=5):
    return RawEvents(
        ts=1.7e9 + np.cumsum(rng.exponential(120, n)),
        prompt_tokens=rng.integers(0, 2000, n), completion_tokens=rng.integers(0, 4000, n),
        max_tokens=np.where(rng.random(n) < 0.2, -1, rng.integers(64, 4096, n)),
        status=rng.choice([200, 200, 200, 429, 500, -1], n),
        template_key=np.where(rng.random(n) < 0.15, -1, rng.integers(0, n_templates, n) * 7919 + 12345),
        elicits_reasoning=rng.integers(0, 2, n).astype(np.int8),
        browser_client=rng.integers(-1, 2, n).astype(np.int8),
        account_created_at=np.where(rng.random(n) < 0.3, np.nan, 1.69e9))


def _one(ts, prompt, completion, max_tokens, template, reasoning=0):
    n = len(ts)
    return RawEvents(ts=np.array(ts, float), prompt_tokens=np.array(prompt), completion_tokens=np.array(completion),
                     max_tokens=np.array(max_tokens), status=np.full(n, 200), template_key=np.array(template),
                     elicits_reasoning=np.full(n, reasoning, np.int8), browser_client=np.zeros(n, np.int8),
                     account_created_at=np.full(n, ts[0] - 2 * 86400.0))


def test_golden_values_of_a_three_event_session():
    ev = _one([1000.0, 1010.0, 1010.5], [100, 50, 80], [1000, 20, 5], [1000, 1000, -1], [7, 9, 7])
    X = compute(empty_state(1), np.zeros(3, np.int64), ev)
    assert X.shape == (3, F.N_FEATURES) and X.dtype == np.float32
    r0, r1, r2 = X
    assert r0[IDX["is_first"]] == 1 and r0[IDX["log_gap"]] == 0 and r0[IDX["log_n_prev"]] == 0
    assert r0[IDX["log_prev_completion"]] == 0            # nothing before the first event
    assert r1[IDX["log_gap"]] == pytest.approx(np.log1p(10.0) / 12)
    assert r1[IDX["log_prev_completion"]] == pytest.approx(np.log1p(1000) / 10)
    assert r1[IDX["prev_saturation"]] == pytest.approx(1.0)   # 1000 of max 1000
    # event 1 arrives 10 s after a 1000-token answer that needs ~17 s to generate
    assert r1[IDX["overlaps_prev"]] == 1
    assert r2[IDX["burst"]] == 1                              # 0.5 s gap
    assert r2[IDX["log_template_prior_count"]] == pytest.approx(np.log1p(1) / 5)
    assert r2[IDX["template_new"]] == 0 and r1[IDX["template_new"]] == 1
    assert r2[IDX["frac_saturated"]] == pytest.approx(0.5)   # events 0 (yes) and 1 (no)
    assert r2[IDX["max_tokens_missing"]] == 1
    assert r0[IDX["log_account_age_days"]] == pytest.approx(np.log1p(2.0) / 6)
    assert r2[IDX["mean_log_completion"]] == pytest.approx((np.log1p(1000) + np.log1p(20)) / 2 / 10)


def test_a_row_never_sees_its_own_completion():
    rng = np.random.default_rng(1)
    ev = _events(20, rng)
    X1 = compute(empty_state(1), np.zeros(20, np.int64), ev)
    ev.completion_tokens[-1] = 999_999   # change only the last event's completion
    X2 = compute(empty_state(1), np.zeros(20, np.int64), ev)
    np.testing.assert_array_equal(X1, X2)


@pytest.mark.parametrize("window", [1, 4, 32])
def test_ring_plus_state_gives_the_offline_rows(window):
    """The online path: state folded up to the ring's start + raw ring events -> same rows."""
    rng = np.random.default_rng(window)
    n_sessions, n = 3, 150
    seg = np.sort(rng.integers(0, n_sessions, n))
    ev = _events(n, rng)
    X = compute(empty_state(n_sessions), seg, ev)
    assert not np.isnan(X).any()
    for s in range(n_sessions):
        idx = np.flatnonzero(seg == s)
        state = empty_state(1)
        for t in range(len(idx)):
            lo = max(0, t - window + 1)
            ring = ev.take(idx[lo:t + 1])
            got = compute(state, np.zeros(t - lo + 1, np.int64), ring)
            np.testing.assert_allclose(got, X[idx[lo:t + 1]], atol=1e-6)
            if t - window + 1 >= 0:   # the oldest ring event leaves the ring: fold it in
                state = fold(state, np.zeros(1, np.int64), ev.take(idx[lo:lo + 1]))


def test_fold_one_by_one_equals_fold_at_once():
    rng = np.random.default_rng(3)
    seg = np.sort(rng.integers(0, 4, 80))
    ev = _events(80, rng)
    a = empty_state(4)
    for i in range(80):
        a = fold(a, seg[i:i + 1], ev.take(slice(i, i + 1)))
    b = fold(empty_state(4), seg, ev)
    for name in F.State.__dataclass_fields__:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, err_msg=name)


def test_spec_hash_is_stable_and_sensitive():
    h = F.feature_spec_hash()
    assert h == F.feature_spec_hash() and len(h) == 16
    spec = F.feature_spec()
    spec["burst_s"] = 2.0
    assert F.feature_spec_hash(spec) != h
