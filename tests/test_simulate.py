"""Traffic simulator: determinism, file contract, label coverage, campaign structure,
the seed article's low-and-slow rate, and that no single field gives the answer away."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from distillguard.training.simulate import (
    FAMILIES, FAMILY_LABEL, LABELS, SimConfig, accounts_for_events, simulate, write,
)

EVENT_COLUMNS = [
    "event_id", "account_id", "ts", "prompt_tokens", "completion_tokens", "max_tokens", "model",
    "status", "client_fingerprint", "ip_prefix", "account_created_at", "frame_signature", "system_signature",
    "elicits_reasoning",
]
HARVEST = "distillation_harvesting"
SMALL = SimConfig(seed=11, accounts=700, days=3.0)


@pytest.fixture(scope="module")
def sim():
    return simulate(SMALL)


@pytest.fixture(scope="module")
def merged(sim):
    events, labels = sim
    return events.merge(labels, on="account_id", how="left", validate="many_to_one")


# ----------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_frames_and_files(tmp_path):
    cfg = SimConfig(seed=3, accounts=250, days=2.0)
    ev1, lab1 = simulate(cfg)
    ev2, lab2 = simulate(cfg)
    pd.testing.assert_frame_equal(ev1, ev2)
    pd.testing.assert_frame_equal(lab1, lab2)
    for fmt in ("parquet", "csv", "jsonl"):
        p1 = write(ev1, lab1, tmp_path / f"a-{fmt}", fmt=fmt)
        p2 = write(ev2, lab2, tmp_path / f"b-{fmt}", fmt=fmt)
        for x, y in zip(p1, p2):
            assert x.name == y.name
            assert x.read_bytes() == y.read_bytes(), f"{fmt}: {x.name} differs between runs"
    ev3, _ = simulate(SimConfig(seed=4, accounts=250, days=2.0))
    assert len(ev3) != len(ev1) or not ev3["ts"].equals(ev1["ts"])
    assert set(ev3["account_id"]).isdisjoint(set(ev1["account_id"]))


# ----------------------------------------------------------------------------- contract

def test_event_columns_and_types(sim):
    events, _ = sim
    assert list(events.columns) == EVENT_COLUMNS          # no prompt, no session_id by default
    assert len(events) > 5000
    assert events["event_id"].is_unique
    ts = events["ts"].to_numpy()
    assert events["ts"].dtype == np.float64 and np.all(np.diff(ts) >= 0)
    start = pd.Timestamp(SMALL.start).timestamp()
    assert ts.min() >= start and ts.max() < start + SMALL.days * 86400
    for c in ("prompt_tokens", "completion_tokens"):
        assert events[c].dtype.kind == "i" and (events[c] >= 0).all()
    mt = events["max_tokens"]
    assert str(mt.dtype) == "Int64" and 0 < mt.isna().mean() < 1 and (mt.dropna() > 0).all()
    assert events["status"].dtype.kind == "i"
    assert set(events["status"].unique()) <= {200, 400, 429, 500}
    assert (events["status"] == 200).mean() > 0.95
    # Failed requests return no completion.
    assert (events.loc[events["status"] != 200, "completion_tokens"] == 0).all()
    for c in ("event_id", "account_id", "model", "client_fingerprint", "ip_prefix", "frame_signature"):
        vals = events[c]
        assert vals.notna().all() and all(isinstance(v, str) and v for v in vals.iloc[:2000]), c
    assert events["ip_prefix"].str.fullmatch(r"\d+\.\d+\.\d+\.0/24").all()
    from distillguard.model.frames import SIGNATURE_VERSION

    assert events["frame_signature"].str.fullmatch(rf"{SIGNATURE_VERSION:02x}[0-9a-f]{{38}}").all()
    assert events["elicits_reasoning"].dtype == bool and events["elicits_reasoning"].any()
    assert events["account_created_at"].dtype == np.float64
    known = events["account_created_at"].notna()
    assert 0.02 < 1 - known.mean() < 0.2                   # age_unknown_share of the accounts: no creation time
    assert (events.loc[known, "account_created_at"] < events.loc[known, "ts"]).all()


def test_schema_accepts_the_output(sim):
    schema = pytest.importorskip("distillguard.model.schema")
    events, _ = sim
    table = schema.normalise(pa.Table.from_pandas(events.head(3000), preserve_index=False), source="sim")
    assert table.num_rows == 3000


def test_prompts_only_on_request(tmp_path):
    cfg = SimConfig(seed=5, accounts=60, days=1.0, include_prompts=True,
                    families=("human_chat", "harvest_topic_sweep", "benign_eval_harness"))
    events, labels = simulate(cfg)
    assert "prompt" in events.columns and events["prompt"].str.len().min() > 0
    ev_path, _ = write(events, labels, tmp_path / "with", fmt="jsonl", include_prompts=True)
    assert '"prompt"' in ev_path.read_text().splitlines()[0]
    ev_path, _ = write(events, labels, tmp_path / "without", fmt="csv", include_prompts=False)
    assert "prompt" not in pd.read_csv(ev_path, nrows=1).columns
    with pytest.raises(ValueError, match="include_prompts"):
        write(events.drop(columns=["prompt"]), labels, tmp_path / "x", include_prompts=True)


def test_files_read_back(tmp_path, sim):
    events, labels = sim
    for fmt, read in (("parquet", pd.read_parquet), ("csv", pd.read_csv),
                      ("jsonl", lambda p: pd.read_json(p, lines=True))):
        ev_path, lab_path = write(events, labels, tmp_path / fmt, fmt=fmt)
        assert ev_path.name == f"events.{fmt}" and lab_path.name == "labels.csv"
        back = read(ev_path)
        assert list(back.columns) == EVENT_COLUMNS and len(back) == len(events)
        np.testing.assert_allclose(back["ts"].to_numpy(float), events["ts"].to_numpy(), rtol=0, atol=1e-3)
    lab = pd.read_csv(tmp_path / "csv" / "labels.csv", keep_default_na=False)
    assert list(lab.columns) == ["account_id", "label", "family", "campaign"]


# ----------------------------------------------------------------------------- labels

def test_labels_cover_classes_and_families(sim):
    events, labels = sim
    assert labels["account_id"].is_unique
    assert set(labels["account_id"]) == set(events["account_id"])
    assert set(labels["label"]) == set(LABELS)
    per_class = labels.groupby("label")["family"].nunique()
    assert (per_class >= 4).all(), per_class
    assert (labels["family"].map(FAMILY_LABEL) == labels["label"]).all()
    harvest = labels["label"] == HARVEST
    assert (labels.loc[harvest, "campaign"] != "").all()
    assert (labels.loc[~harvest, "campaign"] == "").all()
    assert labels.loc[harvest, "campaign"].value_counts().max() >= 5


def test_family_restriction():
    events, labels = simulate(SimConfig(seed=1, accounts=80, days=1.0, render_prompts=False,
                                        families=("human_chat", "benign_batch_pipeline")))
    assert set(labels["family"]) == {"human_chat", "benign_batch_pipeline"}
    assert events["frame_signature"].isna().all()            # render_prompts=False
    with pytest.raises(ValueError, match="unknown families"):
        simulate(SimConfig(accounts=10, families=("human_chat", "nope")))


# ----------------------------------------------------------------------------- harvest structure

def test_account_age_is_unknown_for_a_share_of_every_class(merged):
    # A missing creation time must not be a class signal: same share in each class.
    unknown = merged.groupby("account_id").agg(na=("account_created_at", lambda s: s.isna().all()),
                                               label=("label", "first"))
    share = unknown.groupby("label")["na"].mean()
    assert set(share.index) == {"human", "benign_automation", HARVEST}
    assert ((share > 0.02) & (share < 0.2)).all(), share


def test_harvest_accounts_young_and_grouped_in_campaigns(merged):
    first = merged.dropna(subset=["account_created_at"]).groupby("account_id").agg(ts=("ts", "min"), created=("account_created_at", "first"),
                                             label=("label", "first"), campaign=("campaign", "first"))
    age_days = (first["ts"] - first["created"]) / 86400
    young = (age_days < 30).groupby(first["label"]).mean()
    med = age_days.groupby(first["label"]).median()
    # Most campaigns make fresh accounts days before use; some buy aged ones (whole campaigns).
    assert young[HARVEST] > 0.4 and young[HARVEST] > 2.5 * young["human"], young
    assert young["benign_automation"] < 0.15 and med["human"] > 90 and med["benign_automation"] > 90, med

    h = merged[merged["label"] == HARVEST]
    shared_fp, shared_ip, batched = [], [], []
    for _, g in h.groupby("campaign"):
        accts = g["account_id"].unique()
        if len(accts) < 3:
            continue
        # A fingerprint or prefix counts as shared when two or more accounts of the campaign use it.
        fp_users = g.groupby("client_fingerprint")["account_id"].nunique()
        ip_users = g.groupby("ip_prefix")["account_id"].nunique()
        fp_shared = set(fp_users[fp_users >= 2].index)
        ip_shared = set(ip_users[ip_users >= 2].index)
        shared_fp.append(g.loc[g["client_fingerprint"].isin(fp_shared), "account_id"].nunique() / len(accts))
        shared_ip.append(g.loc[g["ip_prefix"].isin(ip_shared), "account_id"].nunique() / len(accts))
        created = g.groupby("account_id")["account_created_at"].first().sort_values().to_numpy()
        if np.median(g["ts"].min() - created) > 30 * 86400:
            continue                                          # bought/aged accounts: no batches
        # Batched creation: most accounts made within an hour of another account of the campaign.
        near = np.minimum(np.r_[np.inf, np.diff(created)], np.r_[np.diff(created), np.inf]) < 3600
        batched.append(near.mean())
    assert len(shared_fp) >= 4
    assert np.mean(shared_fp) > 0.9 and np.mean(shared_ip) > 0.8, (shared_fp, shared_ip)
    assert np.median(batched) > 0.8, batched

    # Humans rarely share a prefix with another human; campaigns do all the time.
    hum = merged[merged["label"] == "human"]
    users = hum.groupby("ip_prefix")["account_id"].nunique()
    assert (users >= 2).mean() < 0.1


def test_low_and_slow_rate_matches_seed_article():
    events, labels = simulate(SimConfig(seed=2, accounts=500, days=3.0, render_prompts=False,
                                        families=("harvest_low_and_slow", "human_chat")))
    ev = events.merge(labels, on="account_id")
    ev = ev[ev["family"] == "harvest_low_and_slow"]
    g = ev.groupby("account_id")["ts"]
    span_days = (g.max() - g.min()) / 86400
    n = g.size() - 1
    busy = span_days > 1
    per_day = n[busy].sum() / span_days[busy].sum()
    # 28.8M interactions / 25,000 accounts / ~45 days = 25.6 per account per day.
    assert 22 <= per_day <= 30, per_day
    gap_min = ev.sort_values(["account_id", "ts"]).groupby("account_id")["ts"].diff().dropna() / 60
    assert 47 <= gap_min.mean() <= 65, gap_min.mean()
    hours = ((ev["ts"] % 86400) // 3600).value_counts()
    assert len(hours) == 24 and hours.min() > 0.5 * hours.mean()       # around the clock


# ----------------------------------------------------------------------------- no trivial field

def _best_threshold_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Best accuracy of `x > t` or `x < t` over all thresholds t."""
    o = np.argsort(x, kind="stable")
    xs, ys = x[o], y[o].astype(np.int64)
    n, pos = len(x), int(ys.sum())
    below_pos = np.r_[0, np.cumsum(ys)]                   # positives among the k smallest
    k = np.arange(n + 1)
    cut_ok = np.r_[True, xs[1:] != xs[:-1], True]         # cut only between distinct values
    hi = (k - below_pos) + (pos - below_pos)              # predict positive above the cut
    lo = below_pos + (n - k) - (pos - below_pos)          # predict positive below the cut
    return max(hi[cut_ok].max(), lo[cut_ok].max()) / n


def _account_stats(merged: pd.DataFrame) -> pd.DataFrame:
    ev = merged.sort_values(["account_id", "ts"], kind="stable")
    ev = ev.assign(gap=ev.groupby("account_id")["ts"].diff(),
                   ratio=ev["completion_tokens"] / ev["max_tokens"].astype("float64").fillna(8192),
                   hour=(ev["ts"] % 86400) // 3600)
    g = ev.groupby("account_id")
    span = (g["ts"].max() - g["ts"].min()) / 86400
    return pd.DataFrame({
        "mean_completion_tokens": g["completion_tokens"].mean(),
        "max_completion_tokens": g["completion_tokens"].max(),
        "mean_prompt_tokens": g["prompt_tokens"].mean(),
        "template_repeat_rate": 1 - g["frame_signature"].nunique() / g.size(),
        "mean_gap_s": g["gap"].mean().fillna(1e9),
        "median_gap_s": g["gap"].median().fillna(1e9),
        "account_age_days": (g["ts"].min() - g["account_created_at"].first()) / 86400,
        "events_per_day": g.size() / (span + 1 / 24),
        "completion_over_max_tokens": g["ratio"].mean(),
        "reasoning_share": g["elicits_reasoning"].mean(),
        "distinct_ip_prefixes": g["ip_prefix"].nunique(),
        "utc_hours_covered": g["hour"].nunique(),
        "label": g["label"].first(),
        "fingerprint": g["client_fingerprint"].agg(lambda s: s.mode().iloc[0]),
        "model": g["model"].agg(lambda s: s.mode().iloc[0]),
    })


def test_no_single_field_separates_harvest(merged):
    st = _account_stats(merged)
    y = (st["label"] == HARVEST).to_numpy()
    assert 0.1 < y.mean() < 0.5
    scores = {}
    for c in st.columns.drop(["label", "fingerprint", "model"]):
        scores[c] = _best_threshold_accuracy(st[c].to_numpy(float), y)
    # Categorical fields: predict the majority class of each value.
    for c in ("fingerprint", "model"):
        tab = pd.crosstab(st[c], y)
        scores[c] = tab.max(axis=1).sum() / len(st)
    # Perfect separation by one statistic would make the task trivial; leave a margin so that
    # a handful of outliers cannot be the only thing standing between us and 100%.
    too_good = {k: round(v, 4) for k, v in scores.items() if v > 0.985}
    assert not too_good, too_good


def test_overlaps_exist_across_classes(merged):
    """The overlaps the design relies on, stated directly."""
    st = _account_stats(merged)
    fam = merged.groupby("account_id")["family"].first()
    st = st.join(fam)
    # Eval harnesses repeat templates as much as harvesters do.
    rep = st.groupby("family")["template_repeat_rate"].median()
    assert rep["benign_eval_harness"] > rep["harvest_topic_sweep"]
    # Some humans get long answers (documents, translations, verbose users).
    assert (st.loc[st["label"] == "human", "max_completion_tokens"] > 2000).any()
    # Campaign-level choices need more campaigns than the small fixture has: numbers only.
    events, labels = simulate(SimConfig(seed=11, accounts=3000, days=2.0, render_prompts=False))
    ev = events.merge(labels, on="account_id")
    h = ev[ev["label"] == HARVEST]
    # Some harvesters send a browser User-Agent and no max_tokens, like the web app.
    assert h["client_fingerprint"].str.contains("Mozilla").any() and h["max_tokens"].isna().any()
    # Some harvest accounts are old (bought/aged), some humans brand new.
    first = ev.groupby("account_id").agg(ts=("ts", "min"), created=("account_created_at", "first"),
                                         label=("label", "first"))
    age = (first["ts"] - first["created"]) / 86400
    assert (age[first["label"] == HARVEST] > 30).any() and (age[first["label"] == "human"] < 7).any()


# ----------------------------------------------------------------------------- sizing

def test_accounts_for_events_hits_target():
    target = 40_000
    n = accounts_for_events(target, 2.0)
    events, _ = simulate(SimConfig(accounts=n, days=2.0, render_prompts=False))
    assert 0.7 * target <= len(events) <= 1.3 * target, (n, len(events))


def test_every_family_generates_events():
    for fam in FAMILIES:
        events, labels = simulate(SimConfig(seed=9, accounts=12, days=2.0, render_prompts=False, families=(fam,)))
        assert len(events) > 0 and set(labels["family"]) == {fam}, fam


def test_cli_family_selection(tmp_path, capsys):
    """simulate --families / --exclude-families (the retraining demo's "new" family)."""
    import pandas as pd

    from distillguard.cli import main

    assert main(["simulate", "--seed", "3", "--accounts", "60", "--days", "1", "--families", "harvest_agentic",
                 "--start", "2026-05-04T00:00:00Z", "--out", str(tmp_path / "only")]) == 0
    lab = pd.read_csv(tmp_path / "only/labels.csv")
    assert set(lab.family) == {"harvest_agentic"}
    ev = pd.read_parquet(tmp_path / "only/events.parquet")
    assert ev.ts.min() >= pd.Timestamp("2026-05-04", tz="UTC").timestamp()      # epoch seconds
    assert main(["simulate", "--seed", "3", "--accounts", "200", "--days", "1", "--exclude-families",
                 "harvest_agentic", "--out", str(tmp_path / "without")]) == 0
    lab = pd.read_csv(tmp_path / "without/labels.csv")
    assert "harvest_agentic" not in set(lab.family) and lab.label.nunique() == 3
    capsys.readouterr()
    assert main(["simulate", "--accounts", "10", "--families", "harvest_agnetic", "--out", str(tmp_path / "x")]) == 2
    assert "unknown families harvest_agnetic" in capsys.readouterr().err


def test_system_prompts_are_signed_per_owner_and_never_written_as_text():
    from distillguard.model.frames import SIGNATURE_VERSION, parse_signature

    events, labels = simulate(SimConfig(seed=2, accounts=1500, days=1.0))
    assert "system_prompt" not in events.columns
    m = events.merge(labels, on="account_id")
    sigs = m["system_signature"].dropna()
    assert len(sigs) and all(parse_signature(s)[0] == SIGNATURE_VERSION for s in sigs.unique())
    # One fixed text per owner: every account (benign) and every campaign sends one signature.
    assert (m.groupby("account_id")["system_signature"].nunique(dropna=True) <= 1).all()
    harv = m[(m["label"] == HARVEST) & m["system_signature"].notna()]
    assert (harv.groupby("campaign")["system_signature"].nunique() == 1).all()
    assert m.loc[m["label"] == "benign_automation", "system_signature"].notna().all()
