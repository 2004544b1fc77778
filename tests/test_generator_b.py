"""Generator B (training/generator_b, issue 13): the frozen, independent yardstick.

Frozen output, determinism, independence from the project's own simulator, loading
through the real pipeline, and checks that fail when one of its mechanisms breaks.
"""
from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distillguard.model.readers import load_events
from distillguard.training import generator_b as G
from distillguard.training.generator_b import (FAMILIES_B, FAMILY_LABEL_B, BConfig, accounts_for_events_b,
                                               simulate_b, write_b)
from distillguard.training.generator_b import common as C

PKG = Path(G.__file__).parent
DIGEST_CFG = BConfig(seed=7, accounts=300, days=2.0)
DIGEST = "9d6851337e7b9e93fe216a0fe69efc314aee88626d9e8560f0b532b087e71efc"


@pytest.fixture(scope="module")
def small():
    return simulate_b(DIGEST_CFG)


@pytest.fixture(scope="module")
def mid():
    """A few thousand events per class: enough for the mechanism checks."""
    ev, lab = simulate_b(BConfig(seed=3, accounts=900, days=3.0))
    fam = ev["account_id"].map(dict(zip(lab["account_id"], lab["family"])))
    return ev.assign(family=fam, label=fam.map(FAMILY_LABEL_B)).sort_values(["account_id", "ts"], kind="stable"), lab


def canonical_digest(events: pd.DataFrame, labels: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for df in (events, labels):
        h.update(df.to_csv(index=False, float_format="%.3f", lineterminator="\n").encode("utf-8"))
    return h.hexdigest()


def test_frozen_digest(small):
    """Generator B is the project's frozen yardstick: later issues may not tune it. A
    change to its output is its own commit with a reason (and the Faker pin in
    pyproject.toml is part of it); only then update this digest."""
    assert canonical_digest(*small) == DIGEST


def test_deterministic(small):
    ev2, lab2 = simulate_b(DIGEST_CFG)
    pd.testing.assert_frame_equal(small[0], ev2)
    pd.testing.assert_frame_equal(small[1], lab2)
    ev3, _ = simulate_b(BConfig(seed=8, accounts=300, days=2.0))
    assert len(ev3) != len(ev2) or not ev3["ts"].equals(ev2["ts"])


def test_independent_of_simulator_a_and_columns(small):
    for py in sorted(PKG.glob("*.py")):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] + [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert "simulate" not in n and "prompt_bank" not in n, f"{py.name} imports {n}"
    ev, lab = small
    assert tuple(ev.columns) == G.EVENT_COLUMNS and tuple(lab.columns) == G.LABEL_COLUMNS
    assert not {"frame_signature", "template_hash", "elicits_reasoning", "session_id"} & set(ev.columns)
    assert ev["event_id"].is_unique and ev["ts"].is_monotonic_increasing
    assert (ev["prompt_tokens"] >= 0).all() and (ev.loc[ev["status"] != 200, "completion_tokens"] == 0).all()
    assert ev["max_tokens"].dtype == "Int64" and ev["max_tokens"].isna().any() and ev["max_tokens"].notna().any()
    assert ev["account_created_at"].isna().any()
    assert set(lab["label"]) == set(FAMILY_LABEL_B.values()) and set(lab["family"]) == set(FAMILIES_B)
    harvest = lab["label"] == "distillation_harvesting"
    assert (lab.loc[harvest, "campaign"] != "").all() and (lab.loc[~harvest, "campaign"] == "").all()
    assert set(ev["account_id"]) == set(lab["account_id"])
    assert ev["prompt"].str.len().max() <= 13_000


@pytest.mark.parametrize("writer", ["simulate.write", "write_b"])
def test_loads_through_pipeline(small, tmp_path, writer):
    ev, lab = small
    if writer == "write_b":
        path, _ = write_b(ev, lab, tmp_path)
    else:
        from distillguard.training.simulate import write   # the integrator's writer (the test may use it)
        path, _ = write(ev, lab, tmp_path)
    table = load_events(path)                  # on_error="fail": any bad row would raise here
    assert table.num_rows == len(ev)
    assert table.column("frame_signature").null_count == 0
    assert "prompt" not in table.column_names
    again = load_events(write_b(ev, lab, tmp_path / "again")[0])
    assert again.column("frame_signature").equals(load_events(write_b(ev, lab, tmp_path / "once")[0]).column("frame_signature"))


def test_human_turns_wait_for_generation_and_reading(mid):
    ev, _ = mid
    prev_ct = ev.groupby("account_id")["completion_tokens"].shift()
    gap = ev.groupby("account_id")["ts"].diff()
    bound = C.generation_lower_bound_s(prev_ct) + C.reading_lower_bound_s(prev_ct)
    # ts are rounded to the millisecond
    human = (ev["label"] == "human") & gap.notna()
    assert human.sum() > 1000
    assert (gap[human] >= bound[human] - 2e-3).all()
    # the check can fail: a script playing the user (zero reading time) answers faster than
    # an average reader could read, in most turns
    script = (ev["family"] == "b_harvest_scripted_dialogue") & gap.notna() & (gap < 600)
    avg_read = prev_ct * C.WORDS_PER_TOKEN / (C.READ_WPM / 60) + C.generation_lower_bound_s(prev_ct)
    assert script.sum() > 200 and (gap[script] < avg_read[script]).mean() > 0.8
    assert (gap[human & (gap < 600)] < avg_read[human & (gap < 600)]).mean() < 0.6


def test_harvest_workers_pull_about_26_a_day(mid):
    ev, lab = mid
    h = ev[ev["label"] == "distillation_harvesting"].groupby("account_id")["ts"].agg(["size", "min", "max"])
    h = h[h["size"] >= 10]
    per_day = h["size"] / ((h["max"] - h["min"]) / C.DAY)
    assert 13 <= per_day.median() <= 52
    # campaigns: many accounts each, created in 1-3 bursts (a few hours of creation times)
    sizes = lab.loc[lab["campaign"] != "", "campaign"].value_counts()
    assert sizes.median() >= 5
    made = ev[ev["label"] == "distillation_harvesting"].groupby("account_id")[["account_created_at"]].first()
    made = made.join(lab.set_index("account_id")["campaign"]).dropna()
    hours = made.groupby("campaign")["account_created_at"].apply(lambda t: (t // 3600).nunique())
    assert hours.median() <= 10 < made.groupby("campaign").size().median()


def test_agent_context_grows_within_episode(mid):
    ev, _ = mid
    a = ev[ev["family"] == "b_benign_agent_loop"]          # one agent per account, episodes in turn
    episode = a["prompt"].str.startswith("Task:").groupby(a["account_id"]).cumsum()
    steps = a.assign(ep=episode.values).groupby(["account_id", "ep"])["prompt_tokens"]
    d = steps.diff().dropna()
    assert len(d) > 500 and (d >= 0).all() and (d > 0).mean() > 0.8


def test_human_overlaps_exist(mid):
    ev, _ = mid
    h = ev[ev["label"] == "human"]
    new = h.groupby("account_id")["ts"].diff().isna() | (h.groupby("account_id")["ts"].diff() > C.DAY)
    sessions = new.cumsum()
    sizes = sessions.value_counts()
    assert (sizes == 1).sum() >= 50                       # single-request sessions
    sets_mt = h.groupby("account_id")["max_tokens"].apply(lambda s: s.notna().any())
    assert 0.05 < sets_mt.mean() < 0.5                     # some humans set max_tokens, most do not
    assert h["client_fingerprint"].str.startswith(("lyra-python", "python-", "curl", "Go-http", "lyra-node")).any()
    young = (h["ts"] - h["account_created_at"]) < C.DAY
    assert young.any()                                     # accounts made today (cohorts, new sign-ups)
    cjk = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
    assert h["prompt"].map(lambda s: bool(cjk.search(s))).mean() > 0.03
    zh = ev[ev["family"] == "b_harvest_zh_campaign"]["prompt"]
    assert zh.map(lambda s: bool(cjk.search(s))).mean() > 0.7


def test_accounts_for_events_and_config_errors():
    n = accounts_for_events_b(60_000, 3.0)
    ev, _ = simulate_b(BConfig(seed=2, accounts=n, days=3.0))
    assert 0.5 * 60_000 < len(ev) < 2 * 60_000
    with pytest.raises(ValueError, match="unknown families"):
        BConfig(families=("b_nope",))
    with pytest.raises(ValueError, match="start"):
        BConfig(start="yesterday")
    ev, lab = simulate_b(BConfig(seed=2, accounts=40, days=1.0, families=("b_human_mobile_quick",)))
    assert set(lab["family"]) == {"b_human_mobile_quick"} and len(lab) == 40


def test_cli_generator_b(tmp_path, capsys):
    from distillguard.cli import main
    rc = main(["simulate", "--generator", "b", "--accounts", "60", "--days", "1", "--seed", "5",
               "--families", "b_human_chat_visitor", "b_harvest_cot_queue", "--out", str(tmp_path)])
    assert rc == 0
    lab = pd.read_csv(tmp_path / "labels.csv", keep_default_na=False)
    assert set(lab["family"]) == {"b_human_chat_visitor", "b_harvest_cot_queue"}
    assert load_events(tmp_path / "events.parquet").column("frame_signature").null_count == 0
    assert main(["simulate", "--generator", "b", "--accounts", "5", "--families", "b_nope", "--out", str(tmp_path)]) == 2
    assert "unknown generator-b families" in capsys.readouterr().err
