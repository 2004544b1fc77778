"""The retraining loop end to end, as `make retrain-demo` runs it, at a test's size.

serve v1 (never saw harvest_agentic) -> replay a harvest_agentic campaign -> investigators
label the incident, support reports wrong verdicts over gRPC -> train v2 on the event log +
labels store + v1's data -> v2 as shadow -> champion vs challenger on a frozen holdout ->
gated promote -> the live server hot-reloads v2 and flags the family -> rollback and
promote again. Real processes throughout: `distillguard` subcommands, a gRPC server on
loopback, onnxruntime, Parquet files. Figures are read back from the artifacts.
"""
import json
import math

import pandas as pd
import pytest

from distillguard.demos.retrain_demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow   # the whole retraining loop: trains two models (minutes)

# Half of make retrain-demo's sizes (~2-3 min on 2 cores), the same network and the
# default promotion tolerance (0.01).
TEST_CONFIG = DemoConfig(
    base_accounts=1500, campaign_accounts=150, ordinary_accounts=80, shadow_accounts=30, after_accounts=30,
    holdout_accounts=1000, holdout_campaign_accounts=80, mix_human_events=75_000)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    w = tmp_path_factory.mktemp("retrain-loop")
    return w, run_demo(w, TEST_CONFIG)


def test_v1_misses_the_new_family_and_v2_catches_it_live(loop):
    w, r = loop
    assert r.v1_version and r.v2_version and r.v1_version != r.v2_version
    assert r.campaign_flagged_v1 < 0.3, r.campaign_flagged_v1          # the family is new to v1
    assert r.promoted
    assert r.served_after_promote == r.v2_version                      # hot reload, no restart
    assert r.campaign_flagged_v2 >= 0.7, r.campaign_flagged_v2
    # The live rows after the promotion carry v2's version, read from the event log.
    log = pd.concat([pd.read_parquet(p) for p in sorted((w / "event-log").glob("part-*.parquet"))])
    after = set(pd.read_csv(w / "live/after/labels.csv").account_id)
    assert set(log[log.account_id.isin(after)].model_version) == {r.v2_version}
    # The server drained and exited 0 at the end (its log says so).
    assert '"event": "stopped"' in (w / "serve.log").read_text()


def test_challenger_beats_champion_on_the_family_without_worse_human_fpr(loop):
    w, r = loop
    comp = r.comparison
    assert comp["verdict"] == "PROMOTE", json.dumps(comp.get("failing"), indent=1)
    crit = {c["name"]: c for c in comp["criteria"]}
    fpr = crit["human_fpr"]
    assert fpr["challenger"] <= fpr["champion"] + TEST_CONFIG.tolerance
    fam = comp["metrics"]["family_acted_on.harvest_agentic"]
    assert fam["challenger"] >= fam["champion"] + 0.4, fam
    assert fam["difference_ci95"][0] > 0, fam                         # paired bootstrap over accounts
    # Both versions and the content hashes the promotion was checked against.
    assert comp["challenger"]["version"] == r.v2_version and comp["champion"]["version"] == r.v1_version


def test_labels_and_feedback_reach_the_training_run(loop):
    w, r = loop
    assert r.feedback_rows >= 2                                         # filed through the gRPC RPC
    rows = [json.loads(line) for f in (w / "labels-store").glob("feedback-*.jsonl") for line in open(f)]
    assert all(x["source"] == "feedback" and x["session_id"] and x["labelled_at"] for x in rows)
    meta = json.loads((w / "v2/metadata.json").read_text())
    td = meta["training_data"]
    # Every label row went in: v1's labels, the incident file and the feedback lines.
    store = w / "labels-store"
    incident = pd.read_csv(store / "incident-INC-2026-0001.csv")
    base = pd.read_csv(w / "base/labels.csv")
    assert td["labels"]["files"] == 2 + len(list(store.glob("feedback-*.jsonl")))
    assert td["labels"]["rows"] == len(base) + len(incident) + len(rows)
    assert td["labels"]["conflicting_sessions"] == 0
    # v2 learned from logged campaign sessions: labelled harvesting sessions beyond v1's.
    v1 = json.loads((w / "v1/metadata.json").read_text())["training_data"]
    assert td["sessions_per_class"]["distillation_harvesting"] > v1["sessions_per_class"]["distillation_harvesting"]
    # ... topped up with simulated humans only (train --mix-simulated --mix-classes human).
    sim = td["sessions_per_class_by_source"]["simulated"]
    assert sim["human"] > 0 and sim["benign_automation"] == sim["distillation_harvesting"] == 0
    # The log's completions fed training (v2 saw output lengths, not zeros).
    assert any((w / "event-log/_completions").glob("part-*.parquet"))


def test_shadow_report_shows_the_flips_and_rollback_is_one_command(loop):
    w, r = loop
    sh = r.shadow
    assert sh["sessions"]["flagged_by_shadow_only"] > 0, sh["sessions"]
    assert sh["events_compared"] > 0
    assert (w / "shadow-report/report.md").is_file()
    assert r.rolled_back_to == r.v1_version
    assert r.served_at_end == r.v2_version
    hist = [json.loads(line) for line in open(w / "registry/history.jsonl")]
    assert [h["action"] for h in hist].count("rollback") == 1
    assert not math.isnan(r.campaign_flagged_v1)
    assert json.loads((w / "demo.json").read_text())["served_at_end"] == r.v2_version
