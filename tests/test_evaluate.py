"""Tests for distillguard.training.evaluate on synthetic scores whose answers are known."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from matplotlib.image import imread

from distillguard.training import evaluate as ev
from distillguard.model.schema import LABELS
from distillguard.training.evaluate import compute_metrics, write_report

H, B, D = 0, 1, 2


def probs_for(pred: np.ndarray, p_dist: np.ndarray | None = None) -> np.ndarray:
    """[n, 3] probabilities.

    Without p_dist: 0.9 on `pred`, so argmax == pred. With p_dist: column D is p_dist and
    the rest is split 0.9/0.1 towards `pred` (evenly when pred == D); argmax then follows
    pred only where p_dist is clearly high or low, which tests relying on it ensure.
    """
    n = pred.size
    if p_dist is None:
        out = np.full((n, 3), 0.05)
        out[np.arange(n), pred] = 0.9
        return out
    out = np.zeros((n, 3))
    out[:, D] = p_dist
    rest = 1.0 - p_dist
    main = np.where(pred == B, B, H)
    out[np.arange(n), main] = np.where(pred == D, rest / 2, rest * 0.9)
    out[np.arange(n), B + H - main] = np.where(pred == D, rest / 2, rest * 0.1)
    return out


def accounts_for(n: int, per_account: int, prefix: str = "a") -> np.ndarray:
    return np.array([f"{prefix}{i // per_account}" for i in range(n)])


def assert_strict_json(m: dict) -> None:
    json.dumps(m, allow_nan=False)


def test_perfect_classifier():
    y = np.repeat([H, B, D], [3000, 1000, 1000])
    acc = accounts_for(y.size, 10)
    m = compute_metrics(y, probs_for(y), acc, n_boot=50)
    assert m["macro_f1"] == 1.0
    assert m["accuracy"] == 1.0
    assert m["macro_f1_ci95"] == [1.0, 1.0]
    for name in LABELS:
        c = m["per_class"][name]
        assert c["precision"] == c["recall"] == c["f1"] == 1.0
        assert c["roc_auc"] == 1.0 and c["pr_auc"] == 1.0
    for key in ("1%", "0.1%"):
        e = m["recall_at_human_fpr"][key]
        assert e["recall"] == 1.0
        assert e["achieved_human_fpr"] == 0.0
        assert e["recall_ci95"] == [1.0, 1.0]
    assert m["confusion_matrix"]["counts"] == [[3000, 0, 0], [0, 1000, 0], [0, 0, 1000]]
    assert m["set_sizes"]["sessions_per_class"] == {"human": 3000, "benign_automation": 1000,
                                                    "distillation_harvesting": 1000}
    assert m["set_sizes"]["accounts_per_class"] == {"human": 300, "benign_automation": 100,
                                                    "distillation_harvesting": 100}
    assert_strict_json(m)


def test_random_classifier_is_at_chance():
    rng = np.random.default_rng(1)
    y = np.repeat([H, B, D], 10_000)
    probs = rng.dirichlet(np.ones(3), size=y.size)  # independent of y
    m = compute_metrics(y, probs, accounts_for(y.size, 5), n_boot=20)
    assert m["macro_f1"] == pytest.approx(1 / 3, abs=0.03)
    assert m["accuracy"] == pytest.approx(1 / 3, abs=0.03)
    for name in LABELS:
        assert m["per_class"][name]["roc_auc"] == pytest.approx(0.5, abs=0.03)
        assert m["per_class"][name]["pr_auc"] == pytest.approx(1 / 3, abs=0.03)
    # at chance the distillation score is distributed like the human one: recall == FPR
    assert m["recall_at_human_fpr"]["1%"]["recall"] == pytest.approx(0.01, abs=0.005)
    assert m["recall_at_human_fpr"]["0.1%"]["recall"] == pytest.approx(0.001, abs=0.002)


def test_recall_at_fpr_threshold_uniform_human_scores():
    rng = np.random.default_rng(2)
    # humans uniform on [0, 0.9]: thresholds ~0.891 (1%) and ~0.8991 (0.1%); 700 of the
    # 1000 harvesting scores lie above 0.95, the other 300 below 0.5, so recall is 0.7 at both
    h = rng.uniform(0, 0.9, 20_000)
    d = np.concatenate([rng.uniform(0.0, 0.5, 300), rng.uniform(0.95, 1.0, 700)])
    y = np.concatenate([np.full(h.size, H), np.full(d.size, D)])
    scores = np.concatenate([h, d])
    probs = probs_for(np.where(scores > 0.5, D, H), scores)
    m = compute_metrics(y, probs, accounts_for(y.size, 4), n_boot=0)
    for fpr, key in ((0.01, "1%"), (0.001, "0.1%")):
        e = m["recall_at_human_fpr"][key]
        thr = np.quantile(h, 1 - fpr, method="higher")
        assert e["threshold"] == thr
        assert e["achieved_human_fpr"] <= fpr
        assert e["achieved_human_fpr"] == pytest.approx(fpr, abs=2 / h.size)  # and not far below it
        assert e["achieved_human_fpr"] == np.mean(h > thr)
        assert e["flagged_human_sessions"] == int(np.sum(h > thr))
        assert e["recall"] == np.mean(d > thr)
        assert e["reliable"] is True and e["note"] is None
        assert e["threshold"] == pytest.approx(0.9 * (1 - fpr), abs=0.002)
        assert e["recall"] == 0.7
    assert m["per_class"]["distillation_harvesting"]["support"] == 1000


def test_recall_at_fpr_exact_grid():
    # human scores 0.000, 0.001, ..., 0.999: the "higher" 99% quantile is 0.990 exactly
    h = np.arange(1000) / 1000
    d = np.array([0.2, 0.95, 0.989, 0.9905, 0.993, 0.9989, 0.99995])
    y = np.concatenate([np.full(h.size, H), np.full(d.size, D)])
    scores = np.concatenate([h, d])
    probs = probs_for(np.where(scores > 0.5, D, H), scores)
    m = compute_metrics(y, probs, accounts_for(y.size, 1), n_boot=0)
    e1 = m["recall_at_human_fpr"]["1%"]
    assert e1["threshold"] == pytest.approx(0.990)
    assert e1["flagged_human_sessions"] == 9  # 0.991 .. 0.999; the one at the threshold is not flagged
    assert e1["achieved_human_fpr"] == pytest.approx(0.009)
    assert e1["recall"] == pytest.approx(4 / 7)
    e01 = m["recall_at_human_fpr"]["0.1%"]
    assert e01["threshold"] == pytest.approx(0.999)
    assert e01["flagged_human_sessions"] == 0
    assert e01["recall"] == pytest.approx(1 / 7)


def test_bootstrap_unit_is_the_account_single_account_collapses():
    # One harvesting account, 1000 sessions, half caught. Every resample that draws the
    # account draws all its sessions, so its recall is exactly 0.5 in every resample;
    # resampling sessions would give an interval about +-0.03 wide.
    n_d = 1000
    pred_d = np.where(np.arange(n_d) % 2 == 0, D, B)
    y = np.concatenate([np.full(200, H), np.full(200, B), np.full(n_d, D)])
    pred = np.concatenate([np.full(200, H), np.full(200, B), pred_d])
    acc = np.concatenate([accounts_for(200, 20, "h"), accounts_for(200, 20, "b"), np.full(n_d, "harvester")])
    m = compute_metrics(y, probs_for(pred), acc, n_boot=200, seed=3)
    assert m["per_class"]["distillation_harvesting"]["recall"] == 0.5
    assert m["per_class"]["distillation_harvesting"]["recall_ci95"] == [0.5, 0.5]
    assert m["bootstrap"]["unit"] == "account"


def test_bootstrap_unit_is_the_account_correlated_accounts_widen_ci():
    # 20 harvesting accounts x 50 identical sessions, 10 accounts fully caught, 10 missed.
    # Over accounts the recall's sd is sqrt(0.25/20) ~ 0.11 (95% width ~0.44); over the
    # 1000 sessions it would be ~0.016 (width ~0.06).
    n_acc, per = 20, 50
    caught = np.repeat(np.arange(n_acc) < 10, per)
    y = np.concatenate([np.full(2000, H), np.full(n_acc * per, D)])
    pred = np.concatenate([np.full(2000, H), np.where(caught, D, H)])
    acc = np.concatenate([accounts_for(2000, 20, "h"), accounts_for(n_acc * per, per, "d")])
    m = compute_metrics(y, probs_for(pred), acc, n_boot=400, seed=4)
    lo, hi = m["per_class"]["distillation_harvesting"]["recall_ci95"]
    assert hi - lo > 0.25
    assert lo < 0.5 < hi
    rlo, rhi = m["recall_at_human_fpr"]["1%"]["recall_ci95"]
    assert rhi - rlo > 0.25


def test_weighted_bootstrap_equals_materialised_resample():
    # The vectorised bootstrap weights each session by its account's draw count; this must
    # equal concatenating the drawn accounts' sessions and scoring that set from scratch.
    rng = np.random.default_rng(5)
    n_acc = 60
    sizes = rng.integers(1, 40, n_acc)
    acc_idx = np.repeat(np.arange(n_acc), sizes)
    y = np.array([H, H, B, D])[acc_idx % 4]
    probs = rng.dirichlet(np.ones(3), size=acc_idx.size)
    probs[np.arange(y.size), y] += rng.uniform(0, 1, y.size)
    probs /= probs.sum(1, keepdims=True)
    accounts = np.array([f"acc{i:03d}" for i in acc_idx])
    names, inv = np.unique(accounts, return_inverse=True)
    present = np.bincount(y, minlength=3) > 0
    for _ in range(5):
        draws = rng.integers(0, n_acc, n_acc)
        idx = np.concatenate([np.flatnonzero(inv == a) for a in draws])
        ref = compute_metrics(y[idx], probs[idx], accounts[idx], n_boot=0)
        w = ev._account_draw_weights(draws[None, :], n_acc)[:, inv]
        got = ev._metrics_from_weights(w, y, probs.argmax(1), probs[:, D], present, ev.TARGET_FPRS)
        assert got["macro_f1"][0] == pytest.approx(ref["macro_f1"])
        for k, name in enumerate(LABELS):
            assert got["recall"][0, k] == pytest.approx(ref["per_class"][name]["recall"])
            assert got["precision"][0, k] == pytest.approx(ref["per_class"][name]["precision"])
        for fpr in ev.TARGET_FPRS:
            e = ref["recall_at_human_fpr"][ev.fpr_key(fpr)]
            assert got[f"thr@{fpr}"][0] == pytest.approx(e["threshold"])
            assert got[f"recall@{fpr}"][0] == pytest.approx(e["recall"])


def test_bootstrap_is_seeded_and_fast():
    rng = np.random.default_rng(6)
    n = 50_000
    acc_idx = rng.integers(0, 5000, n)
    y = acc_idx % 3
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    acc = acc_idx.astype(str)
    t0 = time.perf_counter()
    a = compute_metrics(y, probs, acc, n_boot=200, seed=7)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0, f"200 account resamples of 50k sessions took {elapsed:.1f} s"
    b = compute_metrics(y, probs, acc, n_boot=200, seed=7)
    assert a == b
    lo, hi = a["macro_f1_ci95"]
    assert lo < a["macro_f1"] < hi


@pytest.mark.parametrize(
    "n_human, reliable_1, reliable_01",
    [(500, False, False), (999, False, False), (1000, True, False), (9999, True, False), (10_000, True, True)],
)
def test_reliability_flag_follows_human_count(n_human, reliable_1, reliable_01):
    y = np.concatenate([np.full(n_human, H), np.full(100, D)])
    m = compute_metrics(y, probs_for(y), accounts_for(y.size, 1), n_boot=0)
    e1, e01 = m["recall_at_human_fpr"]["1%"], m["recall_at_human_fpr"]["0.1%"]
    assert e1["min_human_sessions"] == 1000 and e01["min_human_sessions"] == 10_000
    assert e1["reliable"] is reliable_1 and e01["reliable"] is reliable_01
    for e, ok in ((e1, reliable_1), (e01, reliable_01)):
        assert e["human_sessions"] == n_human
        if ok:
            assert e["note"] is None
        else:
            assert "not reliable" in e["note"] and str(n_human) in e["note"]
            assert e["note"] in m["notes"]
    assert e1["recall"] == 1.0  # still computed; the flag says how far to trust it


def test_absent_class_is_null_not_crash():
    rng = np.random.default_rng(8)
    y = np.repeat([H, D], [400, 100])
    pred = y.copy()
    pred[:20] = B  # benign is predicted though never true
    m = compute_metrics(y, probs_for(pred), accounts_for(y.size, 5), n_boot=30)
    benign = m["per_class"]["benign_automation"]
    assert benign["support"] == 0
    assert benign["recall"] is None and benign["f1"] is None and benign["recall_ci95"] is None
    assert benign["roc_auc"] is None and benign["pr_auc"] is None
    assert benign["precision"] == 0.0  # predicted 20 times, never right
    assert m["macro_f1_classes"] == ["human", "distillation_harvesting"]
    # human F1 = 2*380/(400+380), distillation F1 = 1
    assert m["macro_f1"] == pytest.approx((2 * 380 / 780 + 1.0) / 2)
    assert any("absent" in n for n in m["notes"])
    assert_strict_json(m)

    # no human sessions: there is no FPR to fix a threshold at
    y2 = np.repeat([B, D], 50)
    m2 = compute_metrics(y2, probs_for(y2), accounts_for(y2.size, 5), n_boot=10, seed=rng.integers(100))
    for e in m2["recall_at_human_fpr"].values():
        assert e["threshold"] is None and e["recall"] is None and e["reliable"] is False
    assert m2["per_class"]["human"]["recall"] is None
    assert_strict_json(m2)

    # no harvesting sessions: recall undefined, threshold still defined
    y3 = np.repeat([H, B], 50)
    m3 = compute_metrics(y3, probs_for(y3), accounts_for(y3.size, 5), n_boot=10)
    e = m3["recall_at_human_fpr"]["1%"]
    assert e["threshold"] is not None and e["recall"] is None and e["recall_ci95"] is None
    assert_strict_json(m3)


def test_per_family_breakdown():
    # held-out harvesting family: 30% of its sessions score high; a human family never does
    n = 1000
    fam = np.array(["human_chat"] * n + ["harvest_new"] * n + ["ci_bot"] * n)
    y = np.repeat([H, D, B], n)
    rng = np.random.default_rng(10)
    # humans spread over [0, 0.1] so the 1% threshold sits just below 0.1
    p_dist = np.concatenate([rng.uniform(0, 0.1, n), np.where(np.arange(n) < 300, 0.99, 0.05), np.full(n, 0.02)])
    pred = np.concatenate([np.full(n, H), np.where(np.arange(n) < 300, D, B), np.full(n, B)])
    m = compute_metrics(y, probs_for(pred, p_dist), accounts_for(3 * n, 10), n_boot=0, families=fam)
    f = m["per_family"]["harvest_new"]
    assert f["sessions"] == n and f["accounts"] == 100 and f["true_class"] == "distillation_harvesting"
    assert f["recall_true_class"] == pytest.approx(0.3)
    assert f["flagged_distillation_share"] == pytest.approx(0.3)
    assert f["predicted_share"] == pytest.approx(
        {"human": 0.0, "benign_automation": 0.7, "distillation_harvesting": 0.3})
    assert np.array_equal(probs_for(pred, p_dist).argmax(1), pred)
    h = m["per_family"]["human_chat"]
    assert h["recall_true_class"] == 1.0
    assert h["flagged_distillation_share"] == m["recall_at_human_fpr"]["1%"]["achieved_human_fpr"] <= 0.01
    assert m["per_family"]["ci_bot"]["flagged_distillation_share"] == 0.0
    assert set(m["per_family"]) == {"human_chat", "harvest_new", "ci_bot"}
    assert_strict_json(m)


def test_events_to_detection_summary():
    y = np.array([D, D, D, D, D, H, H])
    etd = np.array([3, 5, np.inf, np.inf, np.inf, 1, 1])  # human entries are false alarms: ignored
    m = compute_metrics(y, probs_for(y), accounts_for(y.size, 1), n_boot=0, events_to_detection=etd)
    s = m["events_to_detection"]
    assert s["sessions"] == 5 and s["detected"] == 2
    assert s["detected_share"] == pytest.approx(0.4)
    assert s["median_all"] == "never"
    assert s["median_detected"] == 4.0
    assert_strict_json(m)

    etd2 = np.array([2, 7, 4, np.inf, np.nan, 1, 1])  # NaN = not computed, left out
    s2 = compute_metrics(y, probs_for(y), accounts_for(y.size, 1), n_boot=0,
                         events_to_detection=etd2)["events_to_detection"]
    assert s2["sessions"] == 4 and s2["detected"] == 3
    assert s2["median_all"] == pytest.approx(5.5)
    assert s2["median_detected"] == 4.0


def test_bad_inputs_raise_clear_errors():
    y = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(y, np.ones((3, 2)) / 2, np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="0..2"):
        compute_metrics(np.array([0, 1, 3]), probs_for(y), np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="accounts"):
        compute_metrics(y, probs_for(y), np.array(["a", "b"]))
    # label names are accepted as well as indices
    m = compute_metrics(np.array(LABELS), probs_for(y), np.array(["a", "b", "c"]), n_boot=0)
    assert m["accuracy"] == 1.0


def test_write_report_writes_valid_files(tmp_path):
    rng = np.random.default_rng(9)
    n = 3000
    acc_idx = rng.integers(0, 300, n)
    y = acc_idx % 3
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    fam = np.array(["fam_a", "fam_b"])[acc_idx % 2]
    etd = np.where(rng.random(n) < 0.5, np.inf, rng.integers(1, 50, n).astype(float))
    m = compute_metrics(y, probs, acc_idx.astype(str), n_boot=50, families=fam, events_to_detection=etd)
    out = tmp_path / "report"
    path = write_report(m, y, probs, out, title="test report")
    assert path == out / "report.md"
    for name in ("metrics.json", "report.md", "confusion.png", "roc.png", "pr.png", "score_hist.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("confusion.png", "roc.png", "pr.png", "score_hist.png"):
        img = imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, name
        assert img.std() > 0.01, f"{name} is blank"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(m))
    text = path.read_text()
    assert text.startswith("# test report")
    assert "macro-F1" in text and "0.1%" in text and "1%" in text
    assert "not reliable" in text  # 1000 humans are too few for 0.1%
    assert "fam_a" in text and "Events to detection" in text
    for name in ("confusion.png", "roc.png", "pr.png", "score_hist.png"):
        assert f"({name})" in text


def test_write_report_without_optional_sections(tmp_path):
    y = np.repeat([H, D], [50, 50])  # benign absent: its curves are skipped, not crashed on
    m = compute_metrics(y, probs_for(y), accounts_for(y.size, 5), n_boot=0)
    path = write_report(m, y, probs_for(y), tmp_path)
    text = path.read_text()
    assert "Per family" not in text and "Events to detection" not in text
    assert imread(tmp_path / "roc.png").ndim == 3
