import numpy as np

from distillguard.model import features
from distillguard.model.schema import LABELS
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
    assert codes0["TEMPLATE_REPETITION"] == "18/20 earlier requests reuse a frame (1 distinct)"
    assert codes0["OUTPUT_SATURATION"] == "80% of outputs at max_tokens"
    assert "OUTPUT_SATURATION" in codes0 and "YOUNG_ACCOUNT" not in codes0
    assert ev[1] == []


def test_decide_returns_label_action_reasons():
    probs = np.array([[0.9, 0.05, 0.05], [0.01, 0.01, 0.98]])
    rows = np.zeros((2, features.N_FEATURES), np.float32)
    rows[0, IDX["account_age_missing"]] = 1
    rows[1, IDX["log_account_age_days"]] = np.log1p(1.0) / 6
    labels, acts, reasons = decide(probs, rows, LABELS, DEFAULT_THRESHOLDS)
    assert labels == ["human", "distillation_harvesting"] and acts == ["ALLOW", "BLOCK"]
    assert reasons[0] == [] and reasons[1][0] == ("YOUNG_ACCOUNT", "account 1.0 days old")


def _rows(n, age_days=None):
    rows = np.zeros((n, features.N_FEATURES), np.float32)
    if age_days is None:
        rows[:, IDX["account_age_missing"]] = 1
    else:
        rows[:, IDX["log_account_age_days"]] = np.log1p(age_days) / 6
    return rows


def test_benign_automation_is_never_blocked_by_default():
    from distillguard.serving.policy import PolicyConfig

    # a policy whose thresholds sit below the benign argmax region, to reach the cap
    cfg = PolicyConfig(thresholds={"throttle": 0.1, "challenge": 0.2, "degrade": 0.3, "block": 0.35})
    probs = np.array([[0.05, 0.55, 0.40]])
    labels, acts, _ = decide(probs, _rows(1), LABELS, cfg)
    assert labels == ["benign_automation"] and acts == ["THROTTLE"]
    labels, acts, _ = decide(probs, _rows(1), LABELS, PolicyConfig(thresholds=cfg.thresholds,
                                                                    benign_max_action="BLOCK"))
    assert acts == ["BLOCK"]


def test_young_accounts_get_a_graduated_release():
    from distillguard.serving.policy import PolicyConfig

    cfg = PolicyConfig()
    probs = np.array([[0.65, 0.05, 0.30]])          # below the normal THROTTLE bar (0.5)
    assert decide(probs, _rows(1, age_days=1.0), LABELS, cfg)[1] == ["THROTTLE"]
    assert decide(probs, _rows(1, age_days=30.0), LABELS, cfg)[1] == ["ALLOW"]
    assert decide(probs, _rows(1), LABELS, cfg)[1] == ["ALLOW"]          # unknown age: no rule
    assert decide(np.array([[0.9, 0.05, 0.05]]), _rows(1, age_days=1.0), LABELS, cfg)[1] == ["ALLOW"]


def test_policy_round_trips_through_bundle_metadata(tiny_bundle):
    import json

    from distillguard.serving.bundle import load_bundle
    from distillguard.serving.policy import PolicyConfig

    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    cfg = PolicyConfig.from_metadata(meta)
    assert cfg.thresholds == meta["thresholds"] and cfg.shadow is False
    assert load_bundle(tiny_bundle).policy == cfg


def test_reasons_name_the_behaviour_each_family_was_built_with(tmp_path):
    """Score simulated families with the default bundle: the reasons of flagged sessions
    name what the family's generator does."""
    import pandas as pd

    from distillguard.serving import DEFAULT_BUNDLE
    from distillguard.serving.batch import score_file
    from distillguard.training.simulate import SimConfig, simulate, write

    expected = {
        "harvest_reasoning": "REASONING_ELICITATION",     # reasoning-trace elicitation
        "harvest_low_and_slow": "ROUND_THE_CLOCK",        # ~26 requests a day, 24/7
        "harvest_topic_sweep": "TEMPLATE_REPETITION",     # sweeps through a shared template pool
        "benign_batch_pipeline": "TEMPLATE_REPETITION",   # one fixed template
        "benign_eval_harness": "CONCURRENCY",             # bursts of concurrent benchmark items
        "benign_scheduled_job": "ROUND_THE_CLOCK",        # cron, day and night
    }
    ev, lab = simulate(SimConfig(seed=5, accounts=400, days=3.0, families=tuple(expected)))
    events, _ = write(ev, lab, tmp_path)
    score_file(DEFAULT_BUNDLE, events, tmp_path / "s.parquet", progress=False)
    df = pd.read_parquet(tmp_path / "s.parquet").merge(lab, on="account_id", suffixes=("", "_true"))
    df = df[df["n_events"] >= 10]
    for family, code in expected.items():
        sessions = df[df["family"] == family]
        assert len(sessions) >= 3, family
        share = sessions["reasons"].str.contains(code).mean()
        assert share >= 0.6, (family, code, share)
