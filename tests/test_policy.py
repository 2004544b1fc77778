import numpy as np
import pytest

from distillguard.model import features
from distillguard.model.schema import LABELS
from distillguard.serving.policy import (BLOCK, CHALLENGE, DEGRADE, GROUP_CODES, PolicyConfig, decide_events,
                                         empty_decisions, reason_evidence)

IDX = {n: i for i, n in enumerate(features.FEATURE_NAMES)}
TH = {"throttle": 0.3, "challenge": 0.4, "degrade": 0.5, "block": 0.6}


def _rows(n, age_days=None, repeat=0.0, n_prev=None):
    rows = np.zeros((n, features.N_FEATURES), np.float32)
    if age_days is None:
        rows[:, IDX["account_age_missing"]] = 1
    else:
        rows[:, IDX["log_account_age_days"]] = np.log1p(age_days) / 6
    rows[:, IDX["frac_template_repeat"]] = repeat
    rows[:, IDX["log_n_prev"]] = np.log1p(np.arange(n) if n_prev is None else n_prev) / 7
    return rows


def _probs(p_distill):
    p = np.asarray(p_distill, dtype=np.float64)
    return np.stack([1 - p, np.zeros_like(p), p], axis=1)


def _run(p_distill, rows=None, cfg=None, explain=None):
    """One session, all events in one call (as batch scoring)."""
    p = np.asarray(p_distill, dtype=np.float64)
    rows = _rows(len(p), repeat=0.9) if rows is None else rows
    cfg = cfg or PolicyConfig(thresholds=TH)
    return decide_events(_probs(p), rows, LABELS, cfg, np.zeros(len(p), np.int64), empty_decisions(1), explain)


def test_one_spiky_request_never_blocks_and_decays():
    """A person's session with one request the model is sure about: the evidence rises by
    at most clip - drift, never to DEGRADE, and falls back on the next ordinary requests."""
    cfg = PolicyConfig(thresholds=TH)
    p = [0.01] * 5 + [0.999999] + [0.01] * 20
    _, acts, _, score = _run(p, cfg=cfg)
    assert max(score) <= (cfg.evidence_clip - cfg.evidence_drift) / cfg.evidence_cap + 1e-9
    assert not {"DEGRADE", "BLOCK"} & set(acts)
    assert score[-1] < score[5]


def test_a_harvester_who_looks_clean_for_a_while_stays_flagged():
    _, acts, _, score = _run([0.9999] * 12 + [0.05] * 6)
    assert acts[11] == "BLOCK"
    assert acts[-1] == "BLOCK" and score[-1] >= TH["block"]


def test_short_sessions_and_single_crossings_stop_at_challenge():
    # min_events: two certain requests are not enough for DEGRADE/BLOCK
    cfg = PolicyConfig(thresholds={"throttle": 0.05, "challenge": 0.1, "degrade": 0.15, "block": 0.2})
    _, acts, _, score = _run([0.9999] * 2, cfg=cfg)
    assert score[-1] >= cfg.thresholds["block"] and acts == ["CHALLENGE", "CHALLENGE"]
    # consecutive: the first event at the DEGRADE bar is one in a row, not two
    _, acts, _, _ = _run([0.0] * 3 + [0.9999] * 3, cfg=cfg)
    assert acts[3] == "CHALLENGE" and acts[4] in ("DEGRADE", "BLOCK")


def test_enforcement_needs_a_behavioural_reason():
    """An explanation naming only context (a young account) caps the action at CHALLENGE."""
    young = np.full((1, 3), -1, np.int8)
    young[0, 0] = GROUP_CODES.index("YOUNG_ACCOUNT")
    timing = young.copy()
    timing[0, 1] = GROUP_CODES.index("MACHINE_TIMING")
    p = [0.9999] * 10
    _, acts, reasons, _ = _run(p, explain=lambda idx: np.repeat(young, len(idx), axis=0))
    assert set(acts[3:]) == {"CHALLENGE"} and reasons[-1][0][0] == "YOUNG_ACCOUNT"
    _, acts, reasons, _ = _run(p, explain=lambda idx: np.repeat(timing, len(idx), axis=0))
    assert acts[-1] == "BLOCK" and [c for c, _ in reasons[-1]] == ["YOUNG_ACCOUNT", "MACHINE_TIMING"]


def test_every_acted_on_verdict_has_a_reason_and_allow_has_none():
    rng = np.random.default_rng(0)
    n_sess, per = 40, 30
    p = rng.beta(0.5, 0.5, size=n_sess * per)
    rows = rng.random((n_sess * per, features.N_FEATURES)).astype(np.float32)
    seg = np.repeat(np.arange(n_sess), per)
    _, acts, reasons, _ = decide_events(_probs(p), rows, LABELS, PolicyConfig(thresholds=TH), seg,
                                        empty_decisions(n_sess))
    assert {"ALLOW", "THROTTLE"} <= set(acts)
    for a, r in zip(acts, reasons):
        assert bool(r) == (a != "ALLOW"), (a, r)


def test_event_by_event_with_carried_state_equals_one_pass():
    """Online (one request per call, state carried) == offline (all events at once)."""
    rng = np.random.default_rng(1)
    n_sess, per = 6, 40
    p = np.clip(rng.beta(0.7, 0.5, size=n_sess * per), 0, 1)
    rows = rng.random((n_sess * per, features.N_FEATURES)).astype(np.float32)
    seg = np.repeat(np.arange(n_sess), per)
    explain = lambda idx: np.tile(np.array([[2, 0, -1]], np.int8), (len(idx), 1))   # noqa: E731
    cfg = PolicyConfig(thresholds=TH, explain_every=5)
    one = decide_events(_probs(p), rows, LABELS, cfg, seg, empty_decisions(n_sess), explain)
    state = empty_decisions(n_sess)
    acts, score, reasons = [None] * len(p), np.zeros(len(p)), [None] * len(p)
    for t in range(per):           # interleaved sessions, one event each per call
        idx = np.arange(n_sess) * per + t
        _, a, r, sc = decide_events(_probs(p[idx]), rows[idx], LABELS, cfg, np.arange(n_sess), state, explain)
        for j, i in enumerate(idx):
            acts[i], score[i], reasons[i] = a[j], sc[j], r[j]
    assert acts == one[1] and reasons == one[2]
    np.testing.assert_allclose(score, one[3], atol=1e-12)


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
    assert "YOUNG_ACCOUNT" not in codes0
    assert ev[1] == []


def test_benign_automation_is_never_blocked_by_default():
    probs = np.array([[0.05, 0.55, 0.40]] * 10)
    # evidence "none": session_score is p_distill itself, 0.40 above every threshold here
    cfg = PolicyConfig(thresholds={"throttle": 0.05, "challenge": 0.1, "degrade": 0.15, "block": 0.2},
                       evidence="none")
    seg, rows = np.zeros(10, np.int64), _rows(10, repeat=0.9)
    labels, acts, _, _ = decide_events(probs, rows, LABELS, cfg, seg, empty_decisions(1))
    assert labels[-1] == "benign_automation" and set(acts) <= {"ALLOW", "THROTTLE"}
    cfg.benign_max_action = "BLOCK"
    _, acts, _, _ = decide_events(probs, rows, LABELS, cfg, seg, empty_decisions(1))
    assert acts[-1] == "BLOCK"


def test_young_account_release_is_off_by_default_and_works_when_set():
    p = [0.3] * 6                                  # below every threshold of TH but throttle
    rows = _rows(6, age_days=1.0)
    cfg = PolicyConfig(thresholds={"throttle": 0.9, "challenge": 0.95, "degrade": 0.97, "block": 0.99})
    assert set(_run(p, rows, cfg)[1]) == {"ALLOW"}
    cfg.young_throttle_at = 0.25
    assert set(_run(p, rows, cfg)[1]) == {"THROTTLE"}
    assert set(_run(p, _rows(6, age_days=30.0), cfg)[1]) == {"ALLOW"}


def test_legacy_metadata_keeps_its_per_event_thresholds():
    """A bundle from before the accumulator set thresholds on p_distill: it is read with
    evidence 'none' (session_score = the event's p_distill), never a CUSUM it was not fixed on."""
    cfg = PolicyConfig.from_metadata({"thresholds": TH})
    assert cfg.evidence == "none"
    _, acts, _, score = _run([0.45, 0.45, 0.7, 0.7, 0.7, 0.7], cfg=cfg)
    np.testing.assert_allclose(score, [0.45, 0.45, 0.7, 0.7, 0.7, 0.7])
    # the gates still apply: BLOCK once 4 earlier requests back a behavioural rule
    assert acts[:2] == ["CHALLENGE", "CHALLENGE"] and acts[-1] == "BLOCK"
    with pytest.raises(ValueError, match="evidence"):
        PolicyConfig(evidence="sprt")


def test_policy_round_trips_through_bundle_metadata(tiny_bundle):
    import json

    from distillguard.serving.bundle import load_bundle
    from distillguard.serving.policy import PolicyConfig

    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    cfg = PolicyConfig.from_metadata(meta)
    assert cfg.thresholds == meta["thresholds"] and cfg.shadow is False
    assert load_bundle(tiny_bundle).policy == cfg


def test_occluding_the_named_group_lowers_the_score(tmp_path):
    """A reason names a group whose inputs moved this score: setting the group's inputs to
    the occlusion baseline in the event's window lowers p(distillation) there (the shipped
    bundle: a tiny test model flags too little to explain)."""
    from distillguard.model import readers, windows
    from distillguard.model.sessions import assign_sessions
    from distillguard.serving import DEFAULT_BUNDLE
    from distillguard.serving.bundle import explain_windows, load_bundle, score_events
    from distillguard.training.simulate import SimConfig, simulate, write

    b = load_bundle(DEFAULT_BUNDLE)
    ev, lab = simulate(SimConfig(seed=9, accounts=400, days=2.0))
    events, _ = write(ev, lab, tmp_path)
    sr = windows.featurize(assign_sessions(readers.load_events(events), gap_s=b.gap_s))
    v = score_events(b, sr)
    seg = np.repeat(np.arange(len(sr.lengths)), sr.lengths)
    # Explanations are computed where a session is first acted on (and at later level
    # changes) and carried in between: check them where they were computed.
    acted = np.array([a != "ALLOW" for a in v.actions])
    first = np.zeros(len(acted), dtype=bool)
    for s0, s1 in zip(sr.starts[:-1], sr.starts[1:]):
        hit = np.flatnonzero(acted[s0:s1])
        if len(hit):
            first[s0 + hit[0]] = True
    named = [(i, v.reasons[i][0][0]) for i in np.flatnonzero(first) if v.reasons[i][0][0] in GROUP_CODES]
    assert len(named) >= 20
    idx = np.array([i for i, _ in named[:200]])
    begin = np.maximum(sr.starts[:-1][seg[idx]], idx - b.window + 1)
    x = windows.gather(sr.rows, begin, idx - begin + 1)
    drops = explain_windows(b, x, idx - begin + 1)
    g = np.array([GROUP_CODES.index(c) for _, c in named[:200]])
    assert (drops[np.arange(len(idx)), g] > 0).all()


# What each harvest family's generator was built around (training.simulate): the model's
# own reasons should name it. Measured with the default bundle (seed 5, 600 accounts, 3
# days): output saturation and prompt lengths carry most families instead.
BUILT_WITH = {
    "harvest_mixed": ("MACHINE_TIMING", None),
    "harvest_mimic": ("REASONING_ELICITATION", None),
    "harvest_topic_sweep": ("TEMPLATE_REPETITION", "measured 0/99 acted-on sessions: the model leans on "
                            "prompt lengths and output saturation"),
    "harvest_reasoning": ("REASONING_ELICITATION", "measured 16/72: output saturation first"),
    "harvest_agentic": ("PROMPT_LENGTHS", "measured 13/74: output saturation in 73/74"),
    "harvest_low_and_slow": ("ROUND_THE_CLOCK", "measured 0/121: output saturation and timing instead"),
}


@pytest.fixture(scope="module")
def family_reasons(tmp_path_factory):
    import pandas as pd

    from distillguard.serving import DEFAULT_BUNDLE
    from distillguard.serving.batch import score_file
    from distillguard.training.simulate import SimConfig, simulate, write

    tmp = tmp_path_factory.mktemp("families")
    ev, lab = simulate(SimConfig(seed=5, accounts=600, days=3.0, families=tuple(BUILT_WITH)))
    events, _ = write(ev, lab, tmp)
    score_file(DEFAULT_BUNDLE, events, tmp / "s.parquet", progress=False)
    df = pd.read_parquet(tmp / "s.parquet").merge(lab, on="account_id", suffixes=("", "_true"))
    return df[(df["n_events"] >= 10) & (df["action"] != "ALLOW")]


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=why))
                                    if why else f for f, (_, why) in BUILT_WITH.items()])
def test_reasons_name_the_behaviour_each_family_was_built_with(family_reasons, family):
    """Flagged sessions of each harvest family name the behaviour it was built with among
    their reasons (every harvest family also returns long answers, so not always first)."""
    code = BUILT_WITH[family][0]
    sessions = family_reasons[family_reasons["family"] == family]
    assert len(sessions) >= 20, family
    share = sessions["reasons"].str.contains(code).mean()
    assert share >= 0.5, (family, code, share)
