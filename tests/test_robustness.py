"""Robustness sweep: each knob really changes the harvesters' traffic, and the sweep reports
recall per value with files a report can embed."""
import json

import pytest

from distillguard.serving import DEFAULT_BUNDLE
from distillguard.training.robustness import KNOBS, Knob, run_robustness
from distillguard.training.simulate import SimConfig, simulate

pytestmark = pytest.mark.slow   # simulates and evaluates a sweep


def test_the_rate_knob_changes_the_harvesters_rate():
    knob = next(k for k in KNOBS if k.field == "requests_per_day")
    rates = []
    for v in (6.0, 150.0):
        ev, lab = simulate(SimConfig(seed=3, accounts=300, days=2.0, params=knob.override(v)))
        harvest = lab.loc[lab["label"] == "distillation_harvesting", "account_id"]
        per_acct = ev[ev["account_id"].isin(harvest)].groupby("account_id").size()
        rates.append(per_acct.median())
    assert rates[1] > 4 * rates[0]


def test_sweep_reports_recall_per_value(tmp_path):
    knob = Knob("paraphrase_share", "paraphrase_share", (0.0, 1.0))
    res = run_robustness(DEFAULT_BUNDLE, tmp_path, knobs=(knob,), accounts=300, days=1.5, progress=False)
    pts = res["paraphrase_share"]["points"]
    assert [p["value"] for p in pts] == [0.0, 1.0]
    for p in pts:
        assert p["harvest_sessions"] > 0 and p["human_sessions"] > 0
        for key in ("recall_at_1pct_fpr", "recall_at_block_threshold"):
            assert p[key] is None or 0.0 <= p[key] <= 1.0
        assert p["reliable_0.1pct"] is False       # a few hundred humans cannot pin 0.1%
    assert json.loads((tmp_path / "robustness.json").read_text()) == res
    assert (tmp_path / "robustness.png").stat().st_size > 5000
    assert "| 1.0 |" in (tmp_path / "robustness.md").read_text()
