"""End to end on real files: simulate -> train -> score -> evaluate, through the CLI."""
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from distillguard.cli import main
from distillguard.model.schema import LABELS
from distillguard.serving.batch import EVENT_COLUMNS, SESSION_COLUMNS, score_file
from distillguard.serving.policy import Action


def test_score_writes_the_contract_columns(tiny_bundle, sim_data, tmp_path):
    out = tmp_path / "scores.parquet"
    assert main(["score", "--model", str(tiny_bundle), "--input", str(sim_data[0]), "--output", str(out), "-q"]) == 0
    df = pd.read_parquet(out)
    assert tuple(df.columns) == SESSION_COLUMNS
    assert df["session_id"].is_unique
    events = pq.read_table(sim_data[0])
    assert df["n_events"].sum() == events.num_rows          # every event lands in one session
    p = df[[f"p_{c}" for c in LABELS]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert set(df["label"]) <= set(LABELS)
    assert set(df["action"]) <= {a.value for a in Action}
    assert (df["label"] == np.array(LABELS)[p.argmax(axis=1)]).all()


def test_session_row_is_the_score_at_its_last_event(tiny_bundle, sim_data, tmp_path):
    s = tmp_path / "s.parquet"
    e = tmp_path / "e.parquet"
    score_file(tiny_bundle, sim_data[0], s, progress=False)
    score_file(tiny_bundle, sim_data[0], e, per_event=True, progress=False)
    sess = pd.read_parquet(s).set_index("session_id")
    ev = pd.read_parquet(e)
    assert tuple(ev.columns) == EVENT_COLUMNS
    last = ev.sort_values(["session_id", "event_index"]).groupby("session_id").tail(1).set_index("session_id")
    last = last.loc[sess.index]
    for c in LABELS:
        np.testing.assert_allclose(last[f"p_{c}"], sess[f"p_{c}"], atol=1e-6)
    assert (last["action"] == sess["action"]).all()


def test_partitioned_streaming_equals_in_memory(tiny_bundle, sim_data, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    score_file(tiny_bundle, sim_data[0], a, progress=False)
    score_file(tiny_bundle, sim_data[0], b, partition_rows=2_000, progress=False)   # spills to several parts
    da = pd.read_parquet(a).sort_values("session_id").reset_index(drop=True)
    db = pd.read_parquet(b).sort_values("session_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(da, db, atol=1e-6)


def test_csv_input_scores_like_parquet(tiny_bundle, sim_data, tmp_path):
    csv = tmp_path / "events.csv"
    pd.read_parquet(sim_data[0]).to_csv(csv, index=False)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    score_file(tiny_bundle, sim_data[0], a, progress=False)
    score_file(tiny_bundle, csv, b, progress=False)
    da = pd.read_csv(a).sort_values("session_id").reset_index(drop=True)
    db = pd.read_csv(b).sort_values("session_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(da, db, atol=1e-5)


def test_evaluate_writes_a_report(tiny_bundle, sim_data, tmp_path):
    rep = tmp_path / "report"
    assert main(["evaluate", "--model", str(tiny_bundle), "--events", str(sim_data[0]),
                 "--labels", str(sim_data[1]), "--report", str(rep), "-q"]) == 0
    m = json.loads((rep / "metrics.json").read_text())
    assert 0.0 <= m["macro_f1"] <= 1.0
    assert "1%" in m["recall_at_human_fpr"]
    assert (rep / "report.md").read_text().count("macro") >= 1
    for png in ("confusion.png", "roc.png", "pr.png", "calibration.png"):
        assert (rep / png).stat().st_size > 1000
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "<table>" in html    # self-contained
    assert 'src="confusion.png"' not in html
    assert m["calibration"]["temperature"] > 0 and 0 <= m["calibration"]["ece_served"] <= 1


def test_bad_input_is_a_clear_error_not_a_crash(tiny_bundle, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("account_id,ts,prompt_tokens,completion_tokens\na,1700000000,10,5\nb,1700000001,-3,5\n")
    rc = main(["score", "--model", str(tiny_bundle), "--input", str(bad), "--output", str(tmp_path / "o.csv")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "prompt_tokens" in err and "bad.csv" in err


def test_missing_model_is_a_clear_error(tmp_path, sim_data, capsys):
    rc = main(["score", "--model", str(tmp_path / "nope"), "--input", str(sim_data[0]),
               "--output", str(tmp_path / "o.parquet")])
    assert rc == 2
    assert "nope" in capsys.readouterr().err


def test_failed_scoring_leaves_no_partial_output(tiny_bundle, tmp_path):
    bad = tmp_path / "bad.csv"
    rows = ["account_id,ts,prompt_tokens,completion_tokens"] + [f"a{i},{1.7e9 + i},10,5" for i in range(50)]
    rows.append("z,not-a-time,1,1")
    bad.write_text("\n".join(rows) + "\n")
    out = tmp_path / "o.parquet"
    with pytest.raises(Exception, match="ts"):
        score_file(tiny_bundle, bad, out, progress=False)
    assert not out.exists()
    assert bad.read_text().count("\n") == 52          # the input is untouched


def _csv_with_bad_rows(sim_data, tmp_path, bad_rows=(3, 40)):
    """The simulated events as CSV with negative prompt_tokens in `bad_rows` (1-based data rows)."""
    df = pd.read_parquet(sim_data[0])
    for r in bad_rows:
        df.loc[df.index[r - 1], "prompt_tokens"] = -7
    path = tmp_path / "events.csv"
    df.to_csv(path, index=False)
    return path, len(df)


@pytest.mark.slow
def test_evaluate_and_train_skip_bad_rows_when_asked(tiny_bundle, sim_data, tmp_path, capsys):
    events, _ = _csv_with_bad_rows(sim_data, tmp_path)
    args = ["--events", str(events), "--labels", str(sim_data[1])]
    assert main(["evaluate", "--model", str(tiny_bundle), *args, "--report", str(tmp_path / "r1"), "-q"]) == 2
    assert "prompt_tokens" in capsys.readouterr().err          # default: fail, naming the column
    assert main(["evaluate", "--model", str(tiny_bundle), *args, "--report", str(tmp_path / "r2"), "-q",
                 "--on-error", "skip"]) == 0
    rej = [json.loads(line) for line in (tmp_path / "r2" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["column"]) for r in rej] == [(3, "prompt_tokens"), (40, "prompt_tokens")]
    assert (tmp_path / "r2" / "metrics.json").exists()
    out = tmp_path / "bundle"
    assert main(["train", *args, "--out", str(out), "--epochs", "1", "--window", "8", "--d-model", "8",
                 "--layers", "1", "--heads", "2", "--checkpoint-dir", str(tmp_path / "ck"), "-q",
                 "--on-error", "skip"]) == 0
    assert "skipped 2 bad row(s)" in capsys.readouterr().out
    assert len((tmp_path / "bundle.rejects.jsonl").read_text().splitlines()) == 2
    fp = json.loads((out / "metadata.json").read_text())["training_data"]
    assert fp["skipped_rows"] == 2
    assert main(["train", *args, "--out", str(tmp_path / "b2"), "--rejects", str(tmp_path / "x.jsonl")]) == 2
