import numpy as np

from distillguard.model import features
from distillguard.serving.policy import DEFAULT_THRESHOLDS, actions, decide, reason_evidence

IDX = {n: i for i, n in enumerate(features.FEATURE_NAMES)}


def test_actions_escalate_with_p_distill():
    p = np.array([0.1, 0.5, 0.8, 0.95, 0.99])
    assert actions(p, DEFAULT_THRESHOLDS) == ["ALLOW", "THROTTLE", "CHALLENGE", "DEGRADE", "BLOCK"]


def test_reasons_come_with_evidence_and_need_enough_events():
    row = np.zeros((2, features.N_FEATURES), np.float32)
    row[:, IDX["frac_template_repeat"]] = 0.9
    row[:, IDX["frac_saturated"]] = 0.8
    row[0, IDX["log_n_prev"]] = np.log1p(20) / 7
    row[1, IDX["log_n_prev"]] = np.log1p(1) / 7          # one earlier event: not evidence yet
    row[:, IDX["account_age_missing"]] = 1
    ev = reason_evidence(row)
    codes0 = dict(ev[0])
    assert codes0["TEMPLATE_REPETITION"] == "repeat_share=0.90"
    assert "OUTPUT_SATURATION" in codes0 and "YOUNG_ACCOUNT" not in codes0
    assert ev[1] == []


def test_decide_returns_label_action_reasons():
    probs = np.array([[0.9, 0.05, 0.05], [0.01, 0.01, 0.98]])
    rows = np.zeros((2, features.N_FEATURES), np.float32)
    rows[0, IDX["account_age_missing"]] = 1
    rows[1, IDX["log_account_age_days"]] = np.log1p(1.0) / 6
    labels, acts, reasons = decide(probs, rows, ("human", "benign_automation", "distillation_harvesting"),
                                   DEFAULT_THRESHOLDS)
    assert labels == ["human", "distillation_harvesting"] and acts == ["ALLOW", "BLOCK"]
    assert reasons[0] == [] and reasons[1][0] == ("YOUNG_ACCOUNT", "account_age_days=1.0")
