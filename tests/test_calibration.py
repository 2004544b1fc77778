"""Calibration (temperature, ECE, reliability plot) and FPR-targeted action thresholds."""
import numpy as np
import pytest
from scipy.special import softmax

from distillguard.training import calibration as cal
from distillguard.serving.policy import actions


def _synthetic(n: int, seed: int, t_true: float = 2.5):
    """Labels drawn from softmax(logits) (calibrated by construction) and the
    over-confident probs a model with temperature 1/t_true would output."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n, 3)) + rng.normal(0.0, 1.0, size=(1, 3))
    p_true = softmax(logits, axis=1)
    y = (rng.random((n, 1)) > np.cumsum(p_true, axis=1)).sum(axis=1)
    p_over = softmax(logits * t_true, axis=1).astype(np.float32)
    return p_true, p_over, y


def test_labels_match_model_order():
    from distillguard.model.schema import LABELS
    assert tuple(LABELS) == cal.LABELS


def test_fit_temperature_recovers_known_t():
    _, p_over, y = _synthetic(20_000, seed=0)
    T = cal.fit_temperature(p_over, y)
    assert abs(T - 2.5) < 0.3


def test_temperature_reduces_nll_and_ece():
    _, p_val, y_val = _synthetic(20_000, seed=1)
    _, p_test, y_test = _synthetic(20_000, seed=2)
    T = cal.fit_temperature(p_val, y_val)
    after = cal.apply_temperature(p_test, T)
    assert cal.negative_log_likelihood(after, y_test) < cal.negative_log_likelihood(p_test, y_test) - 0.05
    ece_before = cal.expected_calibration_error(p_test, y_test)["ece"]
    ece_after = cal.expected_calibration_error(after, y_test)["ece"]
    assert ece_after < 0.03 < ece_before and ece_after < ece_before / 3
    summary = cal.calibration_summary(p_test, y_test, T)
    assert summary["ece_after"] == pytest.approx(ece_after) and summary["nll_after"] < summary["nll_before"]


def test_temperature_one_is_identity_and_scaling_matches_logits():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(500, 3))
    p = softmax(logits, axis=1)
    np.testing.assert_allclose(cal.apply_temperature(p, 1.0), p, atol=1e-9)
    # The exactness the design relies on: scaling probs == scaling logits.
    np.testing.assert_allclose(cal.apply_temperature(p, 1.7), softmax(logits / 1.7, axis=1), atol=1e-9)


def test_apply_temperature_handles_zeros_float32_and_per_event_shape():
    p = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    for T in (0.05, 0.5, 1.0, 3.0, 20.0):
        out = cal.apply_temperature(p, T)
        assert out.dtype == np.float32 and np.isfinite(out).all()
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
        assert (out.argmax(axis=1) == p.argmax(axis=1)).all()   # temperature keeps the ranking
    per_event = np.stack([p, p[::-1]])                           # (batch, time, classes)
    np.testing.assert_allclose(cal.apply_temperature(per_event, 2.0)[1], cal.apply_temperature(p[::-1], 2.0))
    with pytest.raises(ValueError):
        cal.apply_temperature(p, 0.0)


def test_fit_temperature_edge_cases():
    assert cal.fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
    # Hard 0/1 outputs with one wrong answer: must stay finite and inside the bounds.
    p = np.eye(3)[np.array([0, 1, 2, 0, 1, 2])]
    y = np.array([0, 1, 2, 0, 1, 1])
    T = cal.fit_temperature(p, y)
    assert 0.05 <= T <= 20.0 and np.isfinite(T) and T > 1.0
    with pytest.raises(ValueError):
        cal.fit_temperature(p, np.array([0, 1, 2, 0, 1, 3]))


def test_ece_small_when_calibrated_large_when_overconfident():
    p_true, p_over, y = _synthetic(20_000, seed=4)
    good = cal.expected_calibration_error(p_true, y)
    bad = cal.expected_calibration_error(p_over, y)
    assert good["ece"] < 0.03 and good["classwise_ece"] < 0.03
    assert bad["ece"] > 0.08
    top = good["top_label"]
    assert len(top["bin_edges"]) == 16 and len(top["confidence"]) == 15
    assert sum(top["counts"]) == good["n"] == 20_000
    assert set(good["per_class"]) == set(cal.LABELS)


def test_ece_hand_computation_and_empty_bins():
    # Two bins: conf 0.9 (right, right, wrong) -> |2/3 - 0.9|; conf 0.4 (right) -> |1 - 0.4|.
    p = np.array([[0.9, 0.05, 0.05]] * 3 + [[0.4, 0.3, 0.3]])
    y = np.array([0, 0, 1, 0])
    r = cal.expected_calibration_error(p, y, n_bins=10)
    assert r["ece"] == pytest.approx(0.75 * abs(2 / 3 - 0.9) + 0.25 * 0.6)
    assert r["top_label"]["confidence"][0] is None                 # empty bins -> None
    assert np.isnan(np.asarray(r["top_label"]["accuracy"], dtype=float)[0])
    # A confidence of exactly 1.0 falls in the last bin, not past it.
    r1 = cal.expected_calibration_error(np.array([[1.0, 0.0, 0.0]]), np.array([0]), n_bins=15)
    assert r1["top_label"]["counts"][-1] == 1 and r1["ece"] == 0.0


def test_threshold_at_fpr_never_exceeds_target_on_random_data():
    rng = np.random.default_rng(5)
    for n in (7, 100, 999, 1000, 1001, 12_345):
        for target in (0.1, 0.01, 0.005, 0.001):
            for p in (rng.random(n), rng.beta(0.3, 5, n).astype(np.float32),
                      np.round(rng.random(n), 2)):                # ties
                d = cal.threshold_at_fpr(p, target)
                assert d["achieved_fpr"] <= target
                assert d["achieved_fpr"] == np.mean(p >= d["threshold"])
                assert np.mean(p > d["quantile"]) <= target
                # The policy flags exactly the sessions counted as false positives.
                flagged = np.array(actions(p, {"throttle": d["threshold"], "challenge": 2.0,
                                               "degrade": 2.0, "block": 2.0})) != "ALLOW"
                assert flagged.sum() == d["n_above"]


def test_threshold_at_fpr_small_grid_by_hand():
    p = np.arange(1, 21) / 20.0          # 0.05, 0.10, ..., 1.00: 20 humans
    # 10%: 2 humans may sit above -> q = 18th smallest = 0.90, threshold just above it.
    d = cal.threshold_at_fpr(p, 0.10)
    assert d["quantile"] == pytest.approx(0.90) and d["threshold"] == pytest.approx(0.900001)
    assert d["n_above"] == 2 and d["achieved_fpr"] == pytest.approx(0.10)
    # 7%: floor(1.4) = 1 allowed above -> q = 0.95.
    d = cal.threshold_at_fpr(p, 0.07)
    assert d["quantile"] == pytest.approx(0.95) and d["n_above"] == 1
    # 1%: nobody may be flagged -> threshold above the top score.
    d = cal.threshold_at_fpr(p, 0.01)
    assert d["quantile"] == 1.0 and d["threshold"] > 1.0 and d["achieved_fpr"] == 0.0
    # Ties at the quantile are never flagged: 4 of 10 humans at 0.8, budget 2 -> q = 0.8, none above.
    d = cal.threshold_at_fpr(np.array([0.1] * 6 + [0.8] * 4), 0.2)
    assert d["quantile"] == 0.8 and d["achieved_fpr"] == 0.0


def test_threshold_strictly_above_quantile_in_float32():
    # 0.12345699... as float32 sits 1e-10 below the 6-decimal grid point 0.123457, which
    # rounds onto it in float32; the threshold must skip to the next grid point.
    q = np.float32(0.123457)
    p = np.concatenate([np.zeros(99, dtype=np.float32), [q]])
    d = cal.threshold_at_fpr(p, 0.001)
    assert np.float32(d["threshold"]) > q and d["achieved_fpr"] == 0.0


def test_reliability_flag_needs_ten_over_target_humans():
    rng = np.random.default_rng(6)
    assert not cal.threshold_at_fpr(rng.random(9_999), 0.001)["reliable"]
    d = cal.threshold_at_fpr(rng.random(10_000), 0.001)
    assert d["reliable"] and d["min_n_human"] == 10_000 and d["n_human"] == 10_000
    assert cal.min_humans_for(0.01) == 1_000 and cal.min_humans_for(0.002) == 5_000
    empty = cal.threshold_at_fpr(np.array([]), 0.001)
    assert not empty["reliable"] and empty["achieved_fpr"] is None


def test_action_thresholds_monotone_floors_and_fpr():
    rng = np.random.default_rng(7)
    low = rng.random(5_000) * 0.3            # clean validation humans: floors decide
    r = cal.action_thresholds(low)
    assert r["thresholds"] == cal.DEFAULT_FLOORS
    assert all(d["bound_by"] == "floor" for d in r["details"].values())
    spread = rng.random(20_000)              # humans over [0, 1]: FPR quantiles decide
    r = cal.action_thresholds(spread)
    t = [r["thresholds"][a] for a in cal.ESCALATION_ORDER]
    assert t == sorted(t) and t[0] > 0.98 and t[-1] > 0.998
    for a, d in r["details"].items():
        assert d["achieved_fpr"] <= cal.DEFAULT_TARGETS[a] and d["bound_by"] == "fpr"
        assert d["reliable"] and d["threshold"] >= cal.DEFAULT_FLOORS[a]
    # A target out of escalation order is overruled by the previous action, never lowered.
    r = cal.action_thresholds(spread, targets={"throttle": 0.001, "challenge": 0.01},
                              floors={"throttle": 0.0, "challenge": 0.0})
    assert r["thresholds"]["challenge"] == r["thresholds"]["throttle"]
    assert r["details"]["challenge"]["bound_by"] == "previous"
    # A ceiling keeps actions reachable when humans saturate, and says what it cost.
    r = cal.action_thresholds(np.ones(2_000, dtype=np.float32), ceiling=0.999)
    assert set(r["thresholds"].values()) == {0.999}
    assert r["details"]["block"]["bound_by"] == "ceiling" and r["details"]["block"]["achieved_fpr"] == 1.0


def test_reliability_png_is_valid_image(tmp_path):
    _, p_over, y = _synthetic(3_000, seed=8)
    T = cal.fit_temperature(p_over, y)
    path = cal.plot_reliability(p_over, cal.apply_temperature(p_over, T), y, tmp_path / "sub" / "rel.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    from matplotlib.image import imread
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert cal.plot_reliability(p_over, None, y, tmp_path / "before.png").stat().st_size > 0
