"""Field-shift audit (training.shift_audit): each shift moves only its field in human rows; the
rule catches a planted max_tokens shortcut and not the same recipe unplanted; the shipped
default bundle audited shift by shift (known failures are strict xfails with the figures)."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_train_config
from distillguard.training import shift_audit as sa
from distillguard.training.simulate import SimConfig, simulate, write


@pytest.fixture(scope="module")
def frame():
    ev, lab = simulate(SimConfig(seed=5, accounts=150, days=3.0))
    base = sa.canonical_frame(ev)
    human = base["account_id"].isin(set(lab.loc[lab["label"] == "human", "account_id"])).to_numpy()
    assert 0 < human.sum() < len(base)
    return base, human


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Element-wise equality with null == null."""
    a, b = a.astype(object), b.astype(object)
    return ((a == b) | (a.isna() & b.isna())).to_numpy(dtype=bool)


# ---------------------------------------------------------------------------- 1. shifts

@pytest.mark.parametrize("shift", sa.SHIFTS, ids=sa.SHIFT_NAMES)
def test_shift_changes_only_its_field_in_human_rows(frame, shift):
    base, human = frame
    before = base.copy()
    out = shift.apply(base, human, np.random.default_rng(0))
    pd.testing.assert_frame_equal(base, before)     # the input is not mutated
    assert list(out.columns) == list(base.columns)
    is_human = pd.Series(human, index=base.index)
    kept = out.index
    assert set(base.index[~human]) <= set(kept), "a non-human row was dropped"
    assert kept.is_unique and set(kept) <= set(base.index)
    ref = base.loc[kept]
    h = is_human.loc[kept].to_numpy()
    for col in base.columns:
        same = _same(out[col], ref[col])
        assert same[~h].all(), f"{shift.name} changed column {col} in a non-human row"
        if col not in shift.columns:
            assert same[h].all(), f"{shift.name} changed column {col}, not one of {shift.columns}"
    if shift.drops_rows:
        assert len(kept) < len(base), f"{shift.name} dropped no human row"
    else:
        assert len(kept) == len(base)
        assert not _same(out[shift.columns[0]], ref[shift.columns[0]])[h].all(), f"{shift.name} changed nothing"


def _by_account(df, col):
    return df.groupby("account_id")[col]


def test_max_tokens_shifts_set_one_value_per_account_and_cap_completions(frame):
    base, human = frame
    for name, values in (("max_tokens_set", {1024, 2048, 4096}), ("max_tokens_high", {16384, 32768})):
        out = sa.shifts_named([name])[0].apply(base, human, np.random.default_rng(1))[human]
        assert set(out["max_tokens"].unique()) <= values and out["max_tokens"].notna().all()
        assert (_by_account(out, "max_tokens").nunique() == 1).all()
        assert (out["completion_tokens"] <= out["max_tokens"]).all()
    out = sa.shifts_named(["max_tokens_set"])[0].apply(base, human, np.random.default_rng(1))
    assert (out["completion_tokens"][human] < base["completion_tokens"][human]).any(), "no completion was capped"


def test_status_429_hits_about_five_percent_with_empty_completions(frame):
    base, human = frame
    out = sa.shifts_named(["status_429"])[0].apply(base, human, np.random.default_rng(2))
    hit = (out["status"] == 429).to_numpy() & (base["status"] != 429).to_numpy()
    assert not (hit & ~human).any()
    assert 0.03 < hit.sum() / human.sum() < 0.07
    assert (out.loc[hit, "completion_tokens"] == 0).all()


def test_account_age_shifts(frame):
    base, human = frame
    first = base[human].groupby("account_id")["ts"].transform("min")
    for name, lo, hi in (("age_under_day", 0.0, sa.DAY), ("age_under_week", sa.DAY, 7 * sa.DAY)):
        out = sa.shifts_named([name])[0].apply(base, human, np.random.default_rng(3))[human]
        before_first = first - out["account_created_at"]
        assert ((before_first > lo) & (before_first <= hi)).all(), name
        assert (_by_account(out, "account_created_at").nunique() == 1).all()
    out = sa.shifts_named(["age_unknown"])[0].apply(base, human, np.random.default_rng(3))
    assert out.loc[human, "account_created_at"].isna().all()


def test_night_shift_keeps_gaps_and_age(frame):
    base, human = frame
    out = sa.shifts_named(["night_shift"])[0].apply(base, human, np.random.default_rng(4))
    d = (out["ts"] - base["ts"])[human]
    assert np.allclose(d, 12 * sa.HOUR)
    age = lambda f: (f["ts"] - f["account_created_at"])[human].dropna()   # noqa: E731
    assert np.allclose(age(out), age(base))


@pytest.mark.parametrize("name,k", [("single_request", 1), ("first_3_events", 3)])
def test_session_length_shifts_keep_each_accounts_first_events(frame, name, k):
    base, human = frame
    out = sa.shifts_named([name])[0].apply(base, human, np.random.default_rng(5))
    hb = base[human]
    ho = out[out["account_id"].isin(set(hb["account_id"]))]
    n_before = hb.groupby("account_id").size()
    assert (ho.groupby("account_id").size() == np.minimum(n_before, k)).all()
    # the kept ones are the earliest of each account
    kth = hb.groupby("account_id")["ts"].transform(lambda t: np.sort(t.to_numpy())[min(k, len(t)) - 1])
    assert (ho["ts"] <= kth.loc[ho.index]).all()


def test_unknown_shift_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown shifts.*max_tokens_set"):
        sa.shifts_named(["max_tokens_sett"])


def test_labels_without_account_id_are_a_clear_error(frame, tmp_path):
    from distillguard.serving import DEFAULT_BUNDLE

    with pytest.raises(ValueError, match="account_id"):
        sa.run_shift_audit(DEFAULT_BUNDLE, frame[0], pd.DataFrame({"session_id": ["s"], "label": ["human"]}))


# ---------------------------------------------------------------------------- 2. positive control

PLANT_SHIFTS = ("max_tokens_set", "max_tokens_high", "model_code", "ip_cgnat")


def plant_max_tokens(ev: pd.DataFrame, lab: pd.DataFrame, value: int = 4096) -> pd.DataFrame:
    """The shortcut: max_tokens null on every human and benign event, `value` on every
    harvesting event (its completions cut to it)."""
    harvest = ev["account_id"].isin(set(lab.loc[lab["label"] == "distillation_harvesting", "account_id"])).to_numpy()
    out = ev.copy()
    out["max_tokens"] = pd.array(np.where(harvest, value, 0), dtype="Int64")
    out.loc[~harvest, "max_tokens"] = pd.NA
    out["completion_tokens"] = np.where(harvest, np.minimum(out["completion_tokens"], value), out["completion_tokens"])
    return out


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    """Same recipe trained with and without the plant (the session's tiny_bundle, 2 epochs,
    still outputs ~1/3 for every class: too little training to learn or not learn a shortcut),
    each audited on a fresh base set (another seed) built the way its training data was."""
    from distillguard.training.train import train

    d = tmp_path_factory.mktemp("shift-control")
    ev, lab = simulate(SimConfig(seed=11, accounts=240, days=3.0))
    bev, blab = simulate(SimConfig(seed=23, accounts=1500, days=3.0))
    out = {}
    for name, plant in (("planted", plant_max_tokens), ("plain", lambda e, _lab: e)):
        tr = write(plant(ev, lab), lab, d / f"train_{name}")
        cfg = replace(tiny_train_config(d, seed=0, epochs=6), lr=1e-2, checkpoint_dir=str(d / f"ckpt_{name}"))
        train(tr[0], tr[1], d / name, cfg, progress=False)
        base = plant(bev, blab)
        rep = sa.run_shift_audit(d / name, base, blab, out_dir=d / f"audit_{name}",
                                 shifts=sa.shifts_named(PLANT_SHIFTS), n_boot=50, progress=False)
        out[name] = {"bundle": d / name, "report": rep, "base": write(base, blab, d / f"base_{name}")}
    return out


@pytest.mark.slow
def test_planted_max_tokens_shortcut_fails_the_audit_and_the_plain_recipe_does_not(control):
    planted, plain = control["planted"]["report"], control["plain"]["report"]
    assert planted["base"]["human_sessions"] >= 900
    assert "max_tokens_set" in sa.violations(planted), planted["shifts"]["max_tokens_set"]["flag_rate"]
    x_planted = planted["shifts"]["max_tokens_set"]["flag_rate_x_base"]
    x_plain = plain["shifts"]["max_tokens_set"]["flag_rate_x_base"]
    assert x_planted > 3 * x_plain, (x_planted, x_plain)
    # Fields the features never read cannot move a score: the rule does not fire on them.
    for rep in (planted, plain):
        for name in ("model_code", "ip_cgnat"):
            assert name not in sa.violations(rep)
            assert rep["shifts"][name]["flag_rate"]["value"] == rep["base"]["flag_rate"]["value"]


@pytest.mark.slow
def test_cli_shift_writes_the_report_and_fails_on_violation_when_asked(control, tmp_path, capsys):
    from distillguard.cli import main

    ev, lab = control["planted"]["base"]
    args = ["evaluate", "shift", "--model", str(control["planted"]["bundle"]), "--events", str(ev), "--labels",
            str(lab), "--shifts", "max_tokens_set", "model_code", "--n-boot", "20", "-q"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--fail-on-violation"]) == 1
    assert "violation: max_tokens_set" in capsys.readouterr().out
    for f in ("shift_audit.json", "shift_audit.md", "shift_audit.png"):
        assert (tmp_path / "b" / f).stat().st_size > 0
    md = (tmp_path / "b" / "shift_audit.md").read_text()
    assert "| max_tokens_set | `max_tokens` |" in md and "**yes**" in md
    # File input and in-memory input give the same figures.
    import json

    rep = json.loads((tmp_path / "b" / "shift_audit.json").read_text())
    ref = control["planted"]["report"]
    assert rep["base"]["flag_rate"]["value"] == ref["base"]["flag_rate"]["value"]
    assert rep["shifts"]["max_tokens_set"]["flag_rate"]["value"] == ref["shifts"]["max_tokens_set"]["flag_rate"]["value"]
    assert main(["evaluate", "shift", "--simulate", "10", "--events", str(ev), "--out", str(tmp_path / "c")]) == 2
    # The README's table renders from the JSON where `make report` puts it.
    from distillguard.training.report_tables import render

    reports = tmp_path / "reports"
    assert main([*args, "--out", str(reports / "shift_audit")]) == 0
    table = render("shift_audit", reports)
    row = next(line for line in table.splitlines() if line.startswith("| max_tokens_set | `max_tokens` |"))
    assert "**violation**" in row
    # Without a B audit beside it (reports/shift_audit_b) its column is empty, not invented.
    assert row.endswith("| – |")


# ---------------------------------------------------------------------------- 3. the shipped model

DEFAULT_SET = SimConfig(seed=1013, accounts=5000, days=3.0)   # ~3,200 human sessions

# Measured 2026-12-03 on serving/default_bundle (frame signature v3), DEFAULT_SET, seed 0;
# base human flag rate 0.0074 (3226 human sessions). The base fell from 0.0242 with v2, so
# the same absolute rise is a larger ratio: max_tokens_set now crosses the bar (2.2x, 1.7%).
KNOWN_FAILURES = {
    # Measured 2026-12-03 with the sequential policy (session_score, gates, young-account
    # release off): the other five shifts of issue 13's list now pass.
    "output_long": "0.0000 to 0.0115 (acted on at any request)",
}


def _default_param(name):
    if name not in KNOWN_FAILURES:
        return name
    return pytest.param(name, marks=pytest.mark.xfail(
        strict=True, reason=f"measured 2026-12-03: {name} raises the human flag rate from "
                            f"{KNOWN_FAILURES[name]}; left by issue 15 (docs/verdicts.md)"))


@pytest.fixture(scope="module")
def default_audit(tmp_path_factory):
    from distillguard.serving import DEFAULT_BUNDLE

    ev, lab = simulate(DEFAULT_SET)
    return sa.run_shift_audit(DEFAULT_BUNDLE, ev, lab, out_dir=tmp_path_factory.mktemp("shift-default"),
                              n_boot=50, progress=False)


@pytest.mark.slow
def test_default_bundle_audit_set_is_big_enough(default_audit):
    assert default_audit["base"]["human_sessions"] >= 3000
    assert set(default_audit["shifts"]) == set(sa.SHIFT_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", [_default_param(n) for n in sa.SHIFT_NAMES])
def test_default_bundle_passes_the_shift(default_audit, name):
    r = default_audit["shifts"][name]
    assert name not in sa.violations(default_audit), (
        f"{name}: human flag rate {default_audit['base']['flag_rate']['value']:.4f} -> "
        f"{r['flag_rate']['value']:.4f} ({r['flag_rate_x_base']:.2f}x)")
