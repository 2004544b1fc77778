"""Incident labels: the labels file/store format, resolution to sessions (windows, conflicts,
unmatched rows), and `train --events LOGDIR --labels STORE --mix-simulated` end to end."""
import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from distillguard.model.labels_io import read_labels
from distillguard.model.readers import load_events
from distillguard.model.schema import LABELS, SchemaError, normalise
from distillguard.training import labels as labels_mod
from distillguard.training.data import prepare

T0 = 1_780_000_000.0          # 2026-05-28T20:26:40Z
H = 3600.0
GAP = H                       # session gap used with the hand-made events below


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Dict rows as CSV / JSON Lines / Parquet by suffix (None: empty cell, absent key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(k for r in rows for k in r))
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        t = pa.table({c: pa.array([None if r.get(c) is None else str(r[c]) for r in rows], pa.string())
                      for c in names})
        pcsv.write_csv(t, path)
    else:
        pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in names}), path)
    return path


def events_table() -> pa.Table:
    """Account a: implicit sessions a:0 (T0) and a:1 (T0+10h), caller session chat-1 (T0+20h);
    account b: b:0 (T0) and its own chat-1 (T0+5h). Two events per session."""
    rows = [("a", T0, None), ("a", T0 + 60, None), ("a", T0 + 10 * H, None), ("a", T0 + 10 * H + 60, None),
            ("a", T0 + 20 * H, "chat-1"), ("a", T0 + 20 * H + 60, "chat-1"),
            ("b", T0, None), ("b", T0 + 30, None), ("b", T0 + 5 * H, "chat-1"), ("b", T0 + 5 * H + 30, "chat-1")]
    n = len(rows)
    return normalise(pa.table({"account_id": [r[0] for r in rows], "ts": [r[1] for r in rows],
                               "session_id": pa.array([r[2] for r in rows], pa.string()),
                               "prompt_tokens": [100] * n, "completion_tokens": [200] * n}), source="test events")


def resolved(labels: pa.Table, on_conflict: str = "exclude"):
    p = prepare(events_table(), labels, GAP, on_conflict=on_conflict)
    got = {(a, s): LABELS[y] for a, s, y in zip(p.accounts, p.session_ids, p.y)}
    return got, p


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_read_incident_columns_iso_and_epoch(tmp_path, suffix):
    rows = [{"account_id": "a", "label": "distillation_harvesting", "incident_id": "INC-1",
             "labelled_at": "2026-11-20T10:00:00Z", "window_start": "2026-05-28T00:00:00+02:00",
             "window_end": str(int(T0 + 12 * H)), "note": "campaign 7", "source": "investigator",
             "reported_by": "trust@x"},
            {"session_id": "chat-1", "account_id": "b", "label": "human", "incident_id": "fb-0123456789ab",
             "labelled_at": "1780000000.5", "source": "feedback", "model_version": "v1"}]
    p = write_rows(tmp_path / f"labels{suffix}", rows)
    t = read_labels(p, provenance=True)
    assert t.column_names == ["session_id", "account_id", "label", "incident_id", "labelled_at", "window_start",
                              "window_end", "note", "source", "reported_by", "model_version", "_file", "_row"]
    assert t.schema.field("labelled_at").type == pa.float64()
    assert t["labelled_at"].to_pylist() == [epoch("2026-11-20T10:00:00+00:00"), 1_780_000_000.5]
    assert t["window_start"].to_pylist() == [epoch("2026-05-27T22:00:00+00:00"), None]   # +02:00 honoured
    assert t["window_end"].to_pylist() == [T0 + 12 * H, None]
    assert t["session_id"].to_pylist() == [None, "chat-1"] and t["note"].to_pylist() == ["campaign 7", None]
    assert t["_file"].to_pylist() == [str(p)] * 2 and t["_row"].to_pylist() == [1, 2]
    assert "_file" not in read_labels(p).column_names


def test_read_parquet_timestamp_columns_and_store(tmp_path):
    store = tmp_path / "store"
    write_rows(store / "2026" / "x.csv", [{"account_id": "b", "label": "human"}])
    pq.write_table(pa.table({"account_id": ["a"], "label": ["human"],
                             "labelled_at": pa.array([int(T0 * 1000)], pa.timestamp("ms", tz="UTC"))}),
                   store / "2026" / "y.parquet")
    (store / ".partial.csv").write_text("garbage\n")     # hidden and '_' names are not labels
    (store / "_notes.csv").write_text("not,a,labels,file\n")
    (store / "empty.jsonl").write_text("")                # an empty feedback file labels nothing
    t = read_labels(store, provenance=True)
    assert t["account_id"].to_pylist() == ["b", "a"]     # sorted paths: 2026/x.csv, 2026/y.parquet
    assert t["labelled_at"].to_pylist() == [None, T0]
    assert [Path(f).name for f in t["_file"].to_pylist()] == ["x.csv", "y.parquet"]


def test_read_labels_error_messages(tmp_path):
    def err(rows, name="l.csv"):
        p = write_rows(tmp_path / name, rows)
        with pytest.raises(SchemaError) as info:
            read_labels(p)
        return p, str(info.value), info.value

    p, msg, e = err([{"account_id": "a", "label": "human"}, {"account_id": "b", "label": "bot"}])
    assert msg == (f"{p}: column 'label', row 2: expected one of human, benign_automation, "
                   "distillation_harvesting, got 'bot'")
    assert (e.source, e.column, e.row) == (str(p), "label", 2)
    p, msg, _ = err([{"account_id": "a", "label": "human", "labelled_at": "last tuesday"}])
    assert msg == (f"{p}: column 'labelled_at', row 1: expected epoch seconds, an ISO-8601 string or a "
                   "timestamp, got 'last tuesday'")
    p, msg, _ = err([{"account_id": "a", "label": "human", "window_start": "1780000000000"}])
    assert msg == (f"{p}: column 'window_start', row 1: expected epoch seconds (this looks like milliseconds "
                   "or finer), got '1780000000000'")
    p, msg, _ = err([{"session_id": "s1", "account_id": "a", "label": "human"},
                     {"session_id": None, "account_id": None, "label": "human"}])
    assert msg == f"{p}: column 'session_id', row 2: expected a non-empty session_id or account_id, got null"
    p, msg, _ = err([{"account_id": "a", "label": "human", "window_start": iso(T0), "window_end": iso(T0 - H)}])
    assert msg == (f"{p}: column 'window_end', row 1: expected a time >= window_start of the row, "
                   f"got '{iso(T0 - H)}'")
    p, msg, _ = err([{"session_id": None, "account_id": "a", "label": "human", "window_start": iso(T0)},
                     {"session_id": "s1", "account_id": "a", "label": "human", "window_start": iso(T0)}])
    assert msg == (f"{p}: column 'window_start', row 2: a window applies to account rows only, but this row "
                   f"names a session_id (window_start must be empty here), got '{iso(T0)}'")
    p, msg, _ = err([{"account_id": "a", "label": "human", "source": "rumour"}], "l.jsonl")
    assert msg == (f"{p}: column 'source', row 1: expected one of investigator, feedback, simulated "
                   "(or empty), got 'rumour'")
    p, msg, _ = err([{"account_id": "a", "incident_id": "INC-1"}])
    assert msg == f"{p}: missing required column(s) 'label' (columns found: account_id, incident_id)"


# --------------------------------------------------------------------------- resolution


def test_account_labels_with_and_without_window(tmp_path):
    f = write_rows(tmp_path / "l.csv", [
        {"account_id": "a", "label": "distillation_harvesting", "incident_id": "INC-1"}])
    got, p = resolved(read_labels(f, provenance=True))
    assert got == {("a", "a:0"): "distillation_harvesting", ("a", "a:1"): "distillation_harvesting",
                   ("a", "chat-1"): "distillation_harvesting"}
    assert p.n_unlabelled == 2 and p.unmatched.num_rows == 0 and p.conflicts.num_rows == 0
    # [T0+9h, T0+11h] overlaps a:1 only; open-ended windows take everything after / before.
    f = write_rows(tmp_path / "w.csv", [
        {"account_id": "a", "label": "human", "window_start": iso(T0 + 9 * H), "window_end": iso(T0 + 11 * H)},
        {"account_id": "b", "label": "benign_automation", "window_start": T0 + 60}])
    got, _ = resolved(read_labels(f, provenance=True))
    assert got == {("a", "a:1"): "human", ("b", "chat-1"): "benign_automation"}
    # A window touching a session's first or last event overlaps it.
    f = write_rows(tmp_path / "t.csv", [{"account_id": "a", "label": "human", "window_end": T0 + 10 * H},
                                        {"account_id": "b", "label": "human", "window_start": T0 + 5 * H + 30}])
    got, _ = resolved(read_labels(f))
    assert got == {("a", "a:0"): "human", ("a", "a:1"): "human", ("b", "chat-1"): "human"}


def test_session_labels_match_session_and_account(tmp_path):
    f = write_rows(tmp_path / "l.jsonl", [{"session_id": "chat-1", "account_id": "b", "label": "human"},
                                          {"session_id": "a:1", "label": "benign_automation"}])
    got, p = resolved(read_labels(f))
    assert got == {("b", "chat-1"): "human", ("a", "a:1"): "benign_automation"}
    # Without an account a session row labels that session id in every account.
    f = write_rows(tmp_path / "m.jsonl", [{"session_id": "chat-1", "label": "human"}])
    got, _ = resolved(read_labels(f))
    assert got == {("a", "chat-1"): "human", ("b", "chat-1"): "human"}


def test_conflicts_reported_and_excluded_or_fail(tmp_path):
    store = tmp_path / "store"
    write_rows(store / "incidents.csv", [
        {"account_id": "a", "label": "distillation_harvesting", "incident_id": "INC-1", "labelled_at": iso(T0)},
        {"session_id": "a:1", "account_id": "a", "label": "human", "incident_id": "INC-2"}])
    # A second incident with the same label for the account: agreement, not a conflict.
    write_rows(store / "more.csv", [{"account_id": "a", "label": "distillation_harvesting", "incident_id": "INC-3"}])
    labels = read_labels(store, provenance=True)
    got, p = resolved(labels)
    assert got == {("a", "a:0"): "distillation_harvesting", ("a", "chat-1"): "distillation_harvesting"}
    assert p.n_unlabelled == 2             # b's sessions; the conflicting a:1 is counted apart
    assert p.conflicts.to_pylist() == [{
        "session_id": "a:1", "account_id": "a", "labels": "distillation_harvesting;human",
        "incident_ids": "INC-1;INC-2;INC-3",
        "label_rows": f"{store / 'incidents.csv'}:1;{store / 'incidents.csv'}:2;{store / 'more.csv'}:1"}]
    with pytest.raises(SchemaError) as info:
        resolved(labels, on_conflict="fail")
    assert str(info.value) == (
        "1 session(s) get conflicting labels: session 'a:1' of account 'a' is labelled distillation_harvesting "
        f"and human (incidents: INC-1, INC-2, INC-3; label rows {store / 'incidents.csv'}:1, "
        f"{store / 'incidents.csv'}:2, {store / 'more.csv'}:1)")


def test_unmatched_label_rows_counted_with_reason(tmp_path):
    f = write_rows(tmp_path / "l.csv", [
        {"account_id": "a", "label": "human"},
        {"account_id": "acount-a", "label": "human", "incident_id": "INC-9"},           # typo
        {"session_id": "chat-9", "account_id": None, "label": "human"},
        {"session_id": "chat-1", "account_id": "c", "label": "human"},
        {"account_id": "b", "label": "human", "window_start": iso(T0 + 30 * H)}])
    got, p = resolved(read_labels(f, provenance=True))
    assert len(got) == 3
    assert p.n_label_rows == 5
    assert [(r["row"], r["incident_id"], r["reason"]) for r in p.unmatched.to_pylist()] == [
        (2, "INC-9", "no events of this account"), (3, None, "no session with this session_id"),
        (4, None, "that session_id belongs to another account"),
        (5, None, "no session of this account overlaps the window")]
    assert set(p.unmatched["file"].to_pylist()) == {str(f)}


def test_simulator_labels_still_work(sim_data):
    events_path, labels_path = sim_data
    sim = read_labels(labels_path)
    assert sim.column_names == ["account_id", "label", "family", "campaign"]
    p = prepare(load_events(events_path), sim, 86_400.0)
    truth = dict(zip(sim["account_id"].to_pylist(), sim["label"].to_pylist()))
    assert p.n_unlabelled == 0 and p.conflicts.num_rows == 0 and p.unmatched.num_rows == 0
    assert len(p.y) >= len(truth) and (p.families != "").all()
    assert [LABELS[y] for y in p.y] == [truth[a] for a in p.accounts]


def test_feedback_jsonl_in_store_is_applied(tmp_path):
    """Interface (b): rows appended by serving.feedback to STORE/feedback-YYYYMMDD.jsonl."""
    store = tmp_path / "store"
    write_rows(store / "investigations" / "2026-05.csv", [
        {"account_id": "b", "label": "distillation_harvesting", "incident_id": "INC-7", "source": "investigator"}])
    fb = [{"session_id": "a:1", "account_id": "a", "label": "human", "incident_id": "fb-1a2b3c4d5e6f",
           "labelled_at": "2026-11-28T12:34:56.789Z", "note": "support ticket 4411", "source": "feedback",
           "reported_by": "support@example", "model_version": "0.7.0+abcd1234.ef"},
          {"session_id": "chat-1", "account_id": "b", "label": "human", "incident_id": "fb-000000000001",
           "labelled_at": "2026-11-28T13:00:00Z", "note": "not a harvester", "source": "feedback",
           "reported_by": "support@example", "model_version": None}]
    (store / "feedback-20261128.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fb))
    labels = read_labels(store, provenance=True)
    assert labels["labelled_at"].to_pylist() == [epoch("2026-11-28T12:34:56.789+00:00"),
                                                  epoch("2026-11-28T13:00:00+00:00"), None]
    assert labels["source"].to_pylist() == ["feedback", "feedback", "investigator"]
    got, p = resolved(labels)
    assert got == {("a", "a:1"): "human", ("b", "b:0"): "distillation_harvesting"}
    assert dict(zip(p.session_ids, p.sources)) == {"a:1": "feedback", "b:0": "investigator"}
    # The feedback contradicts the investigator's account label for b's chat-1: reported.
    assert p.conflicts["session_id"].to_pylist() == ["chat-1"]
    assert p.conflicts["incident_ids"].to_pylist() == ["fb-000000000001;INC-7"]


def test_mix_classes_choice():
    cfg = labels_mod.MixConfig(events=10, min_class_sessions=50)
    counts = {"human": 400, "benign_automation": 3, "distillation_harvesting": 49}
    assert labels_mod.mix_classes(cfg, counts) == ("benign_automation", "distillation_harvesting")
    assert labels_mod.mix_classes(labels_mod.MixConfig(events=10, classes="all"), counts) == LABELS
    assert labels_mod.mix_classes(labels_mod.MixConfig(events=10, classes="human, human"), counts) == ("human",)
    with pytest.raises(ValueError, match="unknown: harvest"):
        labels_mod.MixConfig(events=10, classes="human,harvest")
    assert labels_mod._free_prefix("sim:", np.array(["sim:x", "sim-2:y", "a"])) == "sim-3:"


# --------------------------------------------------------------------------- train on an event log


def write_event_log(events: pa.Table, logdir: Path, parts: int = 2) -> None:
    """Events as `serve --event-log` parts: the log's schema, with the verdict columns."""
    from distillguard.model.sessions import assign_sessions
    from distillguard.serving.event_log import LOG_SCHEMA

    t = assign_sessions(events, gap_s=86_400.0)     # session_id as the scorer names implicit sessions
    n = t.num_rows
    verdict = {"p_human": pa.array(np.full(n, 0.5)), "p_benign_automation": pa.array(np.full(n, 0.2)),
               "p_distillation_harvesting": pa.array(np.full(n, 0.3)), "label": pa.array(["human"] * n),
               "action": pa.array(["ALLOW"] * n), "model_version": pa.array(["champion-1"] * n),
               "events_in_session": pa.array(np.ones(n, np.int64)), "logged_at": pa.array(t["ts"])}
    cols = [t.column(f.name) if f.name in t.column_names else verdict.get(f.name, pa.nulls(n, f.type))
            for f in LOG_SCHEMA]
    log = pa.Table.from_arrays([pa.chunked_array(c) if isinstance(c, pa.ChunkedArray) else c for c in cols],
                               schema=LOG_SCHEMA)
    assert "p_human" in log.column_names and "label" in log.column_names
    logdir.mkdir(parents=True)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    for i in range(parts):
        pq.write_table(log.slice(bounds[i], bounds[i + 1] - bounds[i]), logdir / f"part-0.1-{i:06d}-x.parquet")
    (logdir / ".part-0.1-000009.parquet.tmp").write_bytes(b"half a part")   # a writer's temp: skipped


@pytest.mark.slow
def test_train_on_event_log_with_incident_store_and_simulated_mix(tmp_path, capsys):
    from distillguard.cli import main
    from distillguard.serving.event_log import join_completions
    from distillguard.training.simulate import SimConfig, simulate

    fams = ("human_chat", "human_coding", "harvest_topic_sweep", "harvest_reasoning")
    ev, lab = simulate(SimConfig(seed=21, accounts=90, days=2.0, families=fams))
    events = normalise(pa.Table.from_pandas(ev, preserve_index=False))
    logdir = tmp_path / "eventlog"
    write_event_log(events, logdir)

    store = tmp_path / "labels-store"
    rows = [{"account_id": a, "label": l, "incident_id": f"INC-{i}", "labelled_at": "2026-11-20T09:00:00Z",
             "source": "investigator", "family": f} for i, (a, l, f) in
            enumerate(zip(lab["account_id"], lab["label"], lab["family"]))]
    rows.append({"account_id": "acct_typo", "label": "human", "incident_id": "INC-typo"})
    write_rows(store / "incidents.csv", rows)
    harvester = lab.loc[lab["label"] == "distillation_harvesting", "account_id"].iloc[0]
    (store / "feedback-20261128.jsonl").write_text(json.dumps(
        {"session_id": f"{harvester}:0", "account_id": harvester, "label": "human", "incident_id": "fb-aaaaaaaaaaaa",
         "labelled_at": "2026-11-28T10:00:00Z", "note": "disputed", "source": "feedback",
         "reported_by": "support", "model_version": "champion-1"}) + "\n")
    # What the labels alone give (reference for the fingerprint): the same prepare, no mixing.
    ref = prepare(load_events(logdir, join=join_completions), read_labels(store), 86_400.0)
    ref_counts = {c: int((ref.y == i).sum()) for i, c in enumerate(LABELS)}
    assert ref_counts["benign_automation"] == 0 and min(ref_counts["human"], ref_counts["distillation_harvesting"]) >= 5

    out = tmp_path / "bundle"
    tiny = ["--window", "16", "--d-model", "16", "--heads", "2", "--layers", "1", "--ple-bins", "8",
            "--epochs", "1", "--batch-size", "64", "--checkpoint-dir", str(tmp_path / "ckpt"), "-q"]
    argv = ["train", "--events", str(logdir), "--labels", str(store), "--out", str(out), "--seed", "3",
            "--mix-simulated", "3000", "--min-class-sessions", "5", "--sim-days", "2"] + tiny
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "label conflicts: 1 session(s) left out" in printed and "unmatched label rows: 1" in printed

    fp = json.loads((out / "metadata.json").read_text())["training_data"]
    mix = fp["simulated_mix"]
    assert mix["classes"] == ["benign_automation"] and mix["account_prefix"] == "sim:" and mix["seed"] == 3
    assert set(mix["families"]) == {"benign_batch_pipeline", "benign_eval_harness", "benign_agent_loop",
                                    "benign_scheduled_job"}
    assert 1500 <= mix["events"] <= 6000
    by = fp["sessions_per_class_by_source"]
    assert by["labels"] == ref_counts
    assert by["simulated"]["benign_automation"] > 0
    assert by["simulated"]["human"] == by["simulated"]["distillation_harvesting"] == 0
    assert fp["sessions"] == sum(ref_counts.values()) + by["simulated"]["benign_automation"]
    store_files = [store / "feedback-20261128.jsonl", store / "incidents.csv"]
    assert fp["labels"]["sha256"] == hashlib.sha256(b"".join(f.read_bytes() for f in store_files)).hexdigest()
    assert fp["labels"] == {"sha256": fp["labels"]["sha256"], "files": 2, "rows": len(rows) + 1,
                                 "conflicting_sessions": 1, "unmatched_rows": 1}
    conflicts = pcsv.read_csv(tmp_path / "bundle.label-conflicts.csv").to_pylist()
    assert [(r["session_id"], r["labels"]) for r in conflicts] == [(f"{harvester}:0", "distillation_harvesting;human")]
    unmatched = pcsv.read_csv(tmp_path / "bundle.label-unmatched.csv").to_pylist()
    assert [(r["account_id"], r["reason"]) for r in unmatched] == [("acct_typo", "no events of this account")]

    # --on-label-conflict fail stops before training and names the session.
    assert main(argv[:-len(tiny)] + ["--on-label-conflict", "fail", "--out", str(tmp_path / "b2")] + tiny) == 2
    err = capsys.readouterr().err
    assert f"1 session(s) get conflicting labels: session '{harvester}:0' of account '{harvester}'" in err
    assert not (tmp_path / "b2").exists()


def test_label_reports_only_when_there_is_something_to_report(tmp_path):
    """No empty CSVs beside every bundle; a clean rerun removes the previous run's report."""
    from distillguard.training.labels import CONFLICTS_SCHEMA, UNMATCHED_SCHEMA
    from distillguard.training.train import label_report_paths, write_label_reports

    out = tmp_path / "bundle"
    conflicts_path, unmatched_path = label_report_paths(out)
    row = {f.name: ("x" if pa.types.is_string(f.type) else None) for f in CONFLICTS_SCHEMA}
    write_label_reports(pa.Table.from_pylist([row], schema=CONFLICTS_SCHEMA), UNMATCHED_SCHEMA.empty_table(), out)
    assert conflicts_path.is_file() and not unmatched_path.exists()
    write_label_reports(CONFLICTS_SCHEMA.empty_table(), UNMATCHED_SCHEMA.empty_table(), out)
    assert not conflicts_path.exists() and not unmatched_path.exists()
