"""model.schema: real files in CSV, Parquet and JSON Lines; every error names file, column, row."""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillguard.model.labels_io import read_labels
from distillguard.model.readers import iter_event_batches, load_events
from distillguard.model.schema import (
    CANONICAL_SCHEMA,
    LABELS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SchemaError,
    normalise,
)

FORMATS = ("csv", "parquet", "jsonl")
T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def write(path: Path, rows: list[dict], fmt: str | None = None) -> Path:
    """Write dict rows as `fmt`; values are written as given (strings stay strings)."""
    fmt = fmt or path.suffix.lstrip(".")
    names = list(dict.fromkeys(k for r in rows for k in r))
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        def cell(v):
            if v is None:
                return ""
            s = str(v)
            return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s
        lines = [",".join(names)] + [",".join(cell(r.get(c)) for c in names) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "parquet":
        pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in names}), path)
    else:
        raise AssertionError(fmt)
    return path


def good_rows(n: int = 5) -> list[dict]:
    return [{"account_id": f"acct{i % 2}", "ts": T0 + 60 * i, "prompt_tokens": 10 + i,
             "completion_tokens": 100 + i} for i in range(n)]


def error_of(fn, *args, **kwargs) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        fn(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- good input


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_each_format(tmp_path, fmt):
    rows = good_rows(5)
    rows[1].update(session_id="s1", model="m", status=200, max_tokens=512, event_id="e1",
                   template_hash="abc", client_fingerprint="fp", ip_prefix="10.0.0.0/24",
                   account_created_at=T0 - 86400, elicits_reasoning=True)
    t = load_events(write(tmp_path / f"events.{fmt}", rows))
    assert t.schema == CANONICAL_SCHEMA
    assert t.num_rows == 5
    assert t["account_id"].to_pylist() == [f"acct{i % 2}" for i in range(5)]
    assert t["ts"].to_pylist() == [T0 + 60 * i for i in range(5)]
    assert t["prompt_tokens"].to_pylist() == [10, 11, 12, 13, 14]
    assert t["_row"].to_pylist() == [0, 1, 2, 3, 4]
    r = t.slice(1, 1).to_pylist()[0]
    assert r["session_id"] == "s1" and r["model"] == "m" and r["status"] == 200
    assert r["max_tokens"] == 512 and r["event_id"] == "e1" and r["template_hash"] == "abc"
    assert r["account_created_at"] == T0 - 86400 and r["elicits_reasoning"] is True
    # optional columns are null where the rows did not give them
    assert t["session_id"].to_pylist() == [None, "s1", None, None, None]
    assert t["status"].null_count == 4


def test_constants():
    assert REQUIRED_COLUMNS == ("account_id", "ts", "prompt_tokens", "completion_tokens")
    assert "prompt" in OPTIONAL_COLUMNS and "prompt" not in CANONICAL_SCHEMA.names
    assert CANONICAL_SCHEMA.names[-1] == "_row"
    assert LABELS == ("human", "benign_automation", "distillation_harvesting")
    assert issubclass(SchemaError, ValueError)


def test_csv_ids_keep_leading_zeros(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("account_id,ts,prompt_tokens,completion_tokens,session_id,event_id\n"
                 "007,1,1,1,0012,00\nNA,2,1,1,null,1e3\n")
    t = load_events(p)
    assert t["account_id"].to_pylist() == ["007", "NA"]  # "NA" is an id, not a null
    assert t["session_id"].to_pylist() == ["0012", "null"]
    assert t["event_id"].to_pylist() == ["00", "1e3"]


def test_numeric_ids_become_strings(tmp_path):
    pq.write_table(pa.table({"account_id": [7, 8], "ts": [1, 2], "prompt_tokens": [1, 2],
                             "completion_tokens": [3, 4], "session_id": [1, None]}), tmp_path / "e.parquet")
    t = load_events(tmp_path / "e.parquet")
    assert t["account_id"].to_pylist() == ["7", "8"]
    assert t["session_id"].to_pylist() == ["1", None]


@pytest.mark.parametrize("fmt", FORMATS)
def test_extra_columns_ignored(tmp_path, fmt):
    rows = good_rows(4)
    for i, r in enumerate(rows):
        r["notes"] = "x" if i % 2 else 3  # a type arrow cannot settle on
        r["nested_or_odd"] = None
    t = load_events(write(tmp_path / f"e.{fmt}", rows, fmt) if fmt != "parquet"
                    else _parquet_with_extra(tmp_path / "e.parquet", good_rows(4)))
    assert t.schema == CANONICAL_SCHEMA and t.num_rows == 4


def _parquet_with_extra(path: Path, rows: list[dict]) -> Path:
    t = pa.table({c: [r[c] for r in rows] for c in rows[0]})
    t = t.append_column("extra", pa.array([[1, 2]] * len(rows)))  # a list column, never read
    pq.write_table(t, path)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_nulls_in_optional_columns_ok(tmp_path, fmt):
    rows = good_rows(3)
    for r in rows:
        r.update(session_id=None, status=None, max_tokens=None, account_created_at=None,
                 elicits_reasoning=None, model=None)
    rows[2].update(status=404, max_tokens=7)
    t = load_events(write(tmp_path / f"e.{fmt}", rows))
    assert t["status"].to_pylist() == [None, None, 404]
    assert t["max_tokens"].to_pylist() == [None, None, 7]
    assert t["session_id"].null_count == 3 and t["account_created_at"].null_count == 3


def test_token_forms():
    t = normalise(pa.table({"account_id": ["a"] * 4, "ts": [1.0] * 4,
                            "prompt_tokens": ["12", " 3 ", "1e3", "4.0"],
                            "completion_tokens": pa.array([1.0, 2.0, 0.0, 5.0])}))
    assert t["prompt_tokens"].to_pylist() == [12, 3, 1000, 4]
    assert t["completion_tokens"].to_pylist() == [1, 2, 0, 5]
    assert t["prompt_tokens"].type == pa.int64()


# ------------------------------------------------------------------------- time forms


def test_ts_forms_are_equivalent():
    expected = T0 + 0.5
    forms = {
        "epoch int": pa.array([int(T0)]),
        "epoch float": pa.array([expected]),
        "epoch string": pa.array([str(expected)]),
        "iso Z": pa.array(["2024-01-01T00:00:00.5Z"]),
        "iso lower z": pa.array(["2024-01-01t00:00:00.5z"]),
        "iso +02:00": pa.array(["2024-01-01T02:00:00.5+02:00"]),
        "iso -0530": pa.array(["2023-12-31T18:30:00.5-0530"]),
        "iso naive = UTC": pa.array(["2024-01-01 00:00:00.5"]),
        "timestamp tz": pa.array([dt.datetime(2024, 1, 1, 1, 0, 0, 500000,
                                              tzinfo=dt.timezone(dt.timedelta(hours=1)))],
                                 pa.timestamp("ms", "+01:00")),
        "timestamp utc ns": pa.array([int(expected * 1e9)], pa.timestamp("ns", "UTC")),
        "timestamp naive us": pa.array([dt.datetime(2024, 1, 1, 0, 0, 0, 500000)], pa.timestamp("us")),
    }
    for name, ts in forms.items():
        if name == "epoch int":
            want = T0
        else:
            want = expected
        t = normalise(pa.table({"account_id": ["a"], "ts": ts, "prompt_tokens": [1],
                                "completion_tokens": [1]}))
        assert t["ts"].to_pylist() == [want], name
        assert t["ts"].type == pa.float64()
    d = normalise(pa.table({"account_id": ["a"], "ts": pa.array([dt.date(2024, 1, 1)]),
                            "prompt_tokens": [1], "completion_tokens": [1]}))
    assert d["ts"].to_pylist() == [T0]


@pytest.mark.parametrize("fmt", ("csv", "jsonl"))
def test_ts_forms_mixed_in_one_file(tmp_path, fmt):
    stamps = [T0, "2024-01-01T00:00:00Z", "2024-01-01T02:00:00+02:00", "2024-01-01 00:00:00", str(T0)]
    rows = [dict(account_id="a", ts=s, prompt_tokens=1, completion_tokens=1,
                 account_created_at=s) for s in stamps]
    t = load_events(write(tmp_path / f"e.{fmt}", rows))
    assert t["ts"].to_pylist() == [T0] * len(stamps)
    assert t["account_created_at"].to_pylist() == [T0] * len(stamps)


def test_parquet_timestamp_column(tmp_path):
    ts = pa.array([int(T0 * 1000), int(T0 * 1000) + 1500], pa.timestamp("ms", "America/New_York"))
    pq.write_table(pa.table({"account_id": ["a", "b"], "ts": ts, "prompt_tokens": [1, 2],
                             "completion_tokens": [3, 4]}), tmp_path / "e.parquet")
    assert load_events(tmp_path / "e.parquet")["ts"].to_pylist() == [T0, T0 + 1.5]


# --------------------------------------------------------------------------- errors

BAD_VALUES = [
    # column, bad value, text expected in the message
    ("account_id", "", "expected a non-empty string"),
    ("account_id", None, "expected a non-empty string"),
    ("ts", "yesterday", "expected epoch seconds, an ISO-8601 string or a timestamp"),
    ("ts", None, "expected epoch seconds"),
    ("ts", "2024-13-01T00:00:00Z", "ISO-8601"),
    ("ts", 1_704_067_200_000, "looks like milliseconds"),
    ("prompt_tokens", -3, "expected an integer >= 0"),
    ("prompt_tokens", 2.5, "expected an integer >= 0"),
    ("prompt_tokens", "many", "expected an integer >= 0"),
    ("prompt_tokens", None, "expected an integer >= 0"),
    ("completion_tokens", "-1", "expected an integer >= 0"),
    ("status", "abc", "expected an integer status code"),
    ("max_tokens", -5, "expected an integer >= 0"),
    ("account_created_at", "last week", "expected epoch seconds"),
    ("elicits_reasoning", "maybe", "expected a boolean"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("column,value,what", BAD_VALUES)
def test_bad_value_names_file_column_row(tmp_path, fmt, column, value, what):
    rows = good_rows(30)
    for r in rows:  # the column is present (and valid) on every row but the bad one
        r.setdefault(column, {"status": 200, "max_tokens": 10, "account_created_at": T0,
                              "elicits_reasoning": False}.get(column))
    rows[16][column] = value
    if fmt == "parquet":
        # Parquet columns have one type: put every value in as text, the bad one too.
        for r in rows:
            r[column] = None if r[column] is None else str(r[column])
    path = write(tmp_path / f"events.{fmt}", rows)
    e = error_of(load_events, path)
    msg = str(e)
    assert msg.startswith(f"{path}: column '{column}', row 17: "), msg
    assert what in msg
    assert e.column == column and e.row == 17 and e.source == str(path)
    if value not in (None, ""):
        assert str(value) in msg


def test_message_format_example(tmp_path):
    rows = good_rows(20)
    rows[16]["prompt_tokens"] = "-3"
    path = write(tmp_path / "events.csv", rows)
    assert str(error_of(load_events, path)) == (
        f"{path}: column 'prompt_tokens', row 17: expected an integer >= 0, got '-3'")


def test_long_value_truncated():
    e = error_of(normalise, pa.table({"account_id": ["a"], "ts": ["x" * 500],
                                      "prompt_tokens": [1], "completion_tokens": [1]}), "mem")
    assert str(e).startswith("mem: column 'ts', row 1:") and len(str(e)) < 250


def test_more_bad_rows_counted():
    e = error_of(normalise, pa.table({"account_id": ["a"] * 4, "ts": [1, 2, 3, 4],
                                      "prompt_tokens": [1, -1, -2, -3], "completion_tokens": [1] * 4}))
    assert "row 2:" in str(e) and "2 more" in str(e)


def test_nan_required_is_error_nan_optional_is_null():
    base = {"account_id": ["a", "b"], "ts": [1.0, 2.0], "prompt_tokens": [1, 2], "completion_tokens": [1, 2]}
    e = error_of(normalise, pa.table({**base, "ts": [1.0, float("nan")]}))
    assert "column 'ts', row 2" in str(e)
    e = error_of(normalise, pa.table({**base, "prompt_tokens": [1.0, float("inf")]}))
    assert "column 'prompt_tokens', row 2" in str(e)
    t = normalise(pa.table({**base, "max_tokens": [float("nan"), 5.0],
                            "account_created_at": [float("nan"), 3.0]}))
    assert t["max_tokens"].to_pylist() == [None, 5]
    assert t["account_created_at"].to_pylist() == [None, 3.0]


def test_bool_is_not_a_token_count():
    e = error_of(normalise, pa.table({"account_id": ["a"], "ts": [1], "prompt_tokens": [True],
                                      "completion_tokens": [1]}), "mem")
    assert "column 'prompt_tokens', row 1" in str(e)


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_required_column(tmp_path, fmt):
    rows = [{k: v for k, v in r.items() if k != "ts"} for r in good_rows(3)]
    path = write(tmp_path / f"events.{fmt}", rows)
    e = error_of(load_events, path)
    assert str(e).startswith(f"{path}: missing required column 'ts'")
    assert "columns found: account_id, prompt_tokens, completion_tokens" in str(e)
    assert e.column == "ts"


def test_missing_required_column_header_only(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("account_id,ts,prompt_tokens\n")
    assert "missing required column 'completion_tokens'" in str(error_of(load_events, p))


def test_normalise_missing_columns_and_duplicates():
    e = error_of(normalise, pa.table({"account_id": ["a"], "x": [1]}), "gw")
    assert str(e) == ("gw: missing required columns 'ts', 'prompt_tokens', 'completion_tokens' "
                      "(columns found: account_id, x)")
    dup = pa.Table.from_arrays([pa.array(["a"]), pa.array([1]), pa.array([1]), pa.array([1]), pa.array([2])],
                               names=["account_id", "ts", "prompt_tokens", "completion_tokens", "ts"])
    assert "column 'ts' appears 2 times" in str(error_of(normalise, dup))


def test_unknown_extension_missing_file_and_unreadable(tmp_path):
    (tmp_path / "events.txt").write_text("hello")
    assert "unknown event file type" in str(error_of(load_events, tmp_path / "events.txt"))
    assert "no such file or directory" in str(error_of(load_events, tmp_path / "nope.csv"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    e = error_of(load_events, tmp_path / "bad.parquet")
    assert str(e).startswith(f"{tmp_path / 'bad.parquet'}: not a readable Parquet file")


def test_malformed_csv_row_is_located(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("account_id,ts,prompt_tokens,completion_tokens\na,1,1,1\n\"b\nc\",2,2,2\nd,3,3\n")
    e = error_of(load_events, p)
    assert str(e).startswith(f"{p}: row 3: malformed CSV row: expected 4 fields, got 3")


def test_csv_quoted_newlines_are_values(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text('account_id,ts,prompt_tokens,completion_tokens,model\n"a\nb",1,1,1,"x,y"\n')
    t = load_events(p)
    assert t["account_id"].to_pylist() == ["a\nb"] and t["model"].to_pylist() == ["x,y"]


def test_csv_invalid_utf8_is_located(tmp_path):
    p = tmp_path / "e.csv"
    p.write_bytes(b"account_id,ts,prompt_tokens,completion_tokens\na,1,1,1\nb\xff,2,2,2\n")
    e = error_of(load_events, p)
    assert str(e).startswith(f"{p}: column 'account_id', row 2: expected UTF-8 text")


def test_invalid_json_line_is_located(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text(json.dumps(good_rows(1)[0]) + "\n\n" + '{"account_id": "a", "ts": \n')
    e = error_of(load_events, p)
    assert str(e).startswith(f"{p}: row 2 (line 3): invalid JSON")
    p.write_text(json.dumps(good_rows(1)[0]) + "\n[1, 2]\n")
    assert "row 2 (line 2): expected a JSON object per line" in str(error_of(load_events, p))


# ------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_equals_one_batch(tmp_path, fmt):
    rows = good_rows(53)
    for i, r in enumerate(rows):
        r["model"] = None if i % 3 else f"m{i}"
    path = write(tmp_path / f"e.{fmt}", rows)
    whole = load_events(path)
    batches = list(iter_event_batches(path, batch_rows=7))
    assert [b.num_rows for b in batches] == [7] * 7 + [4]
    assert all(b.schema == CANONICAL_SCHEMA for b in batches)
    assert pa.concat_tables(batches).equals(whole)
    assert whole["_row"].to_pylist() == list(range(53))


@pytest.mark.parametrize("fmt", FORMATS)
def test_error_row_counts_across_batches(tmp_path, fmt):
    rows = good_rows(50)
    rows[36]["completion_tokens"] = -7
    path = write(tmp_path / f"e.{fmt}", rows)
    it = iter_event_batches(path, batch_rows=8)
    good = [next(it) for _ in range(4)]  # rows 1..32 are fine and come out first
    assert sum(b.num_rows for b in good) == 32
    with pytest.raises(SchemaError) as info:
        next(it)
    msg = str(info.value)
    assert msg.startswith(f"{path}: column 'completion_tokens', row 37: expected an integer >= 0, got ")
    assert "-7" in msg


def test_jsonl_type_drift_after_first_block(tmp_path):
    # Arrow's JSON reader infers types from its first block (1 MiB) and refuses a
    # later block that disagrees; the rest must still load, numbered correctly.
    n = 40_000
    p = tmp_path / "e.jsonl"
    with p.open("w") as f:
        for i in range(n):
            acct = 7 if i < n // 2 else "007"
            f.write(json.dumps({"account_id": acct, "ts": T0 + i, "prompt_tokens": 1,
                                "completion_tokens": 2, "extra": i}) + "\n")
        f.write(json.dumps({"account_id": "z", "ts": T0, "prompt_tokens": 1,
                            "completion_tokens": 2, "new_field": {"a": 1}}) + "\n")
    batches = list(iter_event_batches(p, batch_rows=5_000))
    t = pa.concat_tables(batches)
    assert t.num_rows == n + 1
    assert t["_row"].to_pylist() == list(range(n + 1))
    acct = t["account_id"].to_pylist()
    assert acct[0] == "7" and acct[n - 1] == "007" and acct[n] == "z"
    with p.open("a") as f:
        f.write(json.dumps({"account_id": "z", "ts": T0, "prompt_tokens": "x", "completion_tokens": 2}) + "\n")
    e = error_of(load_events, p)
    assert str(e).startswith(f"{p}: column 'prompt_tokens', row {n + 2}: expected an integer >= 0, got 'x'")


def test_jsonl_date_like_ids_stay_text(tmp_path):
    rows = [dict(r, session_id="2024-01-01") for r in good_rows(2)]
    t = load_events(write(tmp_path / "e.jsonl", rows))
    assert t["session_id"].to_pylist() == ["2024-01-01"] * 2


def test_compressed_csv_and_jsonl(tmp_path):
    import gzip

    for fmt in ("csv", "jsonl"):
        plain = write(tmp_path / f"p.{fmt}", good_rows(4))
        gz = tmp_path / f"p.{fmt}.gz"
        gz.write_bytes(gzip.compress(plain.read_bytes()))
        assert load_events(gz).equals(load_events(plain))


# -------------------------------------------------------------------- empty, directories


@pytest.mark.parametrize("content", ["", "account_id,ts,prompt_tokens,completion_tokens\n"])
def test_empty_csv_gives_no_batches(tmp_path, content):
    p = tmp_path / "e.csv"
    p.write_text(content)
    assert list(iter_event_batches(p)) == []
    t = load_events(p)
    assert t.num_rows == 0 and t.schema == CANONICAL_SCHEMA


def test_empty_jsonl_and_parquet(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    assert list(iter_event_batches(tmp_path / "e.jsonl")) == []
    schema = pa.schema([("account_id", pa.string()), ("ts", pa.float64()),
                        ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64())])
    pq.write_table(schema.empty_table(), tmp_path / "e.parquet")
    assert list(iter_event_batches(tmp_path / "e.parquet")) == []
    assert load_events(tmp_path / "e.parquet").schema == CANONICAL_SCHEMA


def test_directory_of_files(tmp_path):
    d = tmp_path / "events"
    (d / "sub").mkdir(parents=True)
    write(d / "b.csv", good_rows(2))
    write(d / "a.parquet", good_rows(3))
    write(d / "sub" / "c.jsonl", good_rows(1))
    (d / "_SUCCESS").write_text("")
    (d / ".hidden.csv").write_text("garbage")
    batches = list(iter_event_batches(d))
    assert [b.num_rows for b in batches] == [3, 2, 1]  # a.parquet, b.csv, sub/c.jsonl
    assert load_events(d)["_row"].to_pylist() == [0, 1, 2, 0, 1, 0]  # _row is per file
    (d / "README.md").write_text("x")
    assert "README.md: unknown event file type" in str(error_of(load_events, d))
    (tmp_path / "empty").mkdir()
    assert "holds no event files" in str(error_of(load_events, tmp_path / "empty"))


def test_error_in_directory_names_the_file(tmp_path):
    write(tmp_path / "a.csv", good_rows(2))
    rows = good_rows(2)
    rows[1]["ts"] = "never"
    bad = write(tmp_path / "b.csv", rows)
    assert str(error_of(load_events, tmp_path)).startswith(f"{bad}: column 'ts', row 2:")


# --------------------------------------------------------------------- normalise itself


def test_normalise_is_idempotent_and_keeps_row():
    t = normalise(pa.table({"account_id": ["a", "b"], "ts": ["2024-01-01T00:00:00Z", "1"],
                            "prompt_tokens": [1, 2], "completion_tokens": [3, 4]}), row_offset=10)
    assert t["_row"].to_pylist() == [10, 11]
    assert normalise(t).equals(t)


def test_normalise_accepts_dictionary_and_chunked_columns():
    acct = pa.chunked_array([pa.array(["a", "b"]).dictionary_encode(), pa.array(["a"]).dictionary_encode()])
    t = normalise(pa.table({"account_id": acct, "ts": pa.chunked_array([[1, 2], [3]]),
                            "prompt_tokens": [1, 2, 3], "completion_tokens": [1, 1, 1]}))
    assert t["account_id"].to_pylist() == ["a", "b", "a"]


def test_optional_empty_strings_become_null():
    t = normalise(pa.table({"account_id": ["a", "b"], "ts": [1, 2], "prompt_tokens": [1, 2],
                            "completion_tokens": [3, 4], "session_id": ["", "s"], "model": ["m", ""]}))
    assert t["session_id"].to_pylist() == [None, "s"] and t["model"].to_pylist() == ["m", None]


def test_elicits_reasoning_forms():
    t = normalise(pa.table({"account_id": ["a"] * 5, "ts": [1] * 5, "prompt_tokens": [1] * 5,
                            "completion_tokens": [1] * 5,
                            "elicits_reasoning": ["true", "False", "1", "", None]}))
    assert t["elicits_reasoning"].to_pylist() == [True, False, True, None, None]


def test_prompt_is_signed_then_dropped(tmp_path):
    from distillguard.model import frames, templates

    prompts = ["Summarise this article: the cat sat on the mat.",
               "Think step by step and explain your reasoning: why is the sky blue?",
               None, "given hash wins", "given signature wins"]
    rows = [dict(r, prompt=p) for r, p in zip(good_rows(5), prompts)]
    rows[3]["template_hash"] = "given"
    rows[0]["system_prompt"] = "You are the Acme support assistant. Answer politely."
    for key in (None, b"secret"):
        given = frames.frame_signature("another text entirely", key)
        rows[4]["frame_signature"] = given
        t = load_events(write(tmp_path / "e.csv", rows), hmac_key=key)
        assert "prompt" not in t.column_names and "system_prompt" not in t.column_names
        assert t.schema == CANONICAL_SCHEMA
        sigs = t["frame_signature"].to_pylist()
        assert sigs[0] == frames.frame_signature(prompts[0], key)
        assert sigs[1] == frames.frame_signature(prompts[1], key)
        assert frames.parse_signature(sigs[0])[1] == frames.key_id(key)
        assert sigs[2] is None
        assert sigs[3] == frames.legacy_signature("given") and t["template_hash"][3].as_py() == "given"
        assert sigs[4] == given
        assert t["system_signature"].to_pylist()[0] == frames.system_signature(rows[0]["system_prompt"], key)
        assert t["system_signature"].to_pylist()[1:] == [None] * 4
        flags = t["elicits_reasoning"].to_pylist()
        assert flags[:2] == [templates.elicits_reasoning(prompts[0]), templates.elicits_reasoning(prompts[1])]
        assert flags[2] is None


def test_signature_of_another_key_or_malformed_is_an_error_naming_column_and_row(tmp_path):
    from distillguard.model import frames

    rows = good_rows(3)
    rows[1]["frame_signature"] = frames.frame_signature("Summarise: x", b"gateway-key")
    with pytest.raises(SchemaError) as e:
        load_events(write(tmp_path / "e.csv", rows), hmac_key=b"other-key")
    assert e.value.column == "frame_signature" and e.value.row == 2 and "key id" in str(e.value)
    with pytest.raises(SchemaError) as e:       # unkeyed loading of keyed signatures: also a mismatch
        load_events(write(tmp_path / "e.csv", rows))
    assert e.value.column == "frame_signature" and "--signature-key" in str(e.value)
    assert load_events(write(tmp_path / "e.csv", rows), hmac_key=b"gateway-key").num_rows == 3
    rows[1]["frame_signature"] = "zz" * 20
    with pytest.raises(SchemaError, match="40 hex"):
        load_events(write(tmp_path / "e.csv", rows), hmac_key=b"gateway-key")
    # skip mode drops the bad row and keeps the good ones
    from distillguard.model.schema import Rejects
    rej = Rejects()
    t = load_events(write(tmp_path / "e.csv", rows), hmac_key=b"gateway-key", on_error="skip", rejects=rej)
    assert t.num_rows == 2 and rej.count == 1


def test_normalise_one_million_rows_is_fast():
    n = 1_000_000
    rng = np.random.default_rng(0)
    t = pa.table({"account_id": pa.array(np.char.add("acct", rng.integers(0, 5000, n).astype(str))),
                  "ts": T0 + rng.random(n) * 86400 * 30,
                  "prompt_tokens": rng.integers(0, 4000, n), "completion_tokens": rng.integers(0, 4000, n),
                  "status": np.full(n, 200), "model": pa.array(["m"] * n), "extra": rng.random(n)})
    normalise(t.slice(0, 1000))
    t0 = time.perf_counter()
    out = normalise(t)
    took = time.perf_counter() - t0
    assert out.num_rows == n
    assert took < 3.0, f"normalise took {took:.2f}s for 1M rows"  # ~0.03-0.25 s measured here


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_labels(tmp_path, fmt):
    rows = [{"session_id": "s1", "label": "human", "family": "f1", "campaign": None},
            {"session_id": "s2", "label": "distillation_harvesting", "family": "f2", "campaign": "c9"},
            {"session_id": "s1", "label": "human", "family": "f1", "campaign": None}]
    t = read_labels(write(tmp_path / f"labels.{fmt}", rows))
    assert t.column_names == ["session_id", "label", "family", "campaign"]
    assert t["label"].to_pylist() == ["human", "distillation_harvesting", "human"]
    assert t["campaign"].to_pylist() == [None, "c9", None]


def test_read_labels_by_account(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("account_id,label,extra\n007,benign_automation,x\n")
    t = read_labels(p)
    assert t.column_names == ["account_id", "label"] and t["account_id"].to_pylist() == ["007"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_labels_bad_label(tmp_path, fmt):
    rows = [{"session_id": "s1", "label": "human"}, {"session_id": "s2", "label": "bot"}]
    p = write(tmp_path / f"labels.{fmt}", rows)
    assert str(error_of(read_labels, p)) == (
        f"{p}: column 'label', row 2: expected one of human, benign_automation, "
        f"distillation_harvesting, got 'bot'")


def test_read_labels_errors(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("session,label\ns1,human\n")
    assert "missing required column(s) 'session_id' (or 'account_id')" in str(error_of(read_labels, p))
    p.write_text("session_id,label\ns1,human\n,human\n")
    assert str(error_of(read_labels, p)).startswith(f"{p}: column 'session_id', row 2:")
    p.write_text("session_id,label\ns1,human\ns2,\n")
    assert str(error_of(read_labels, p)).startswith(f"{p}: column 'label', row 2:")
    # Two labels for one key are read as given: resolving them against sessions reports the
    # conflict (training.labels, tests/test_labels.py).
    p.write_text("session_id,label\ns1,human\ns2,human\ns1,benign_automation\n")
    assert read_labels(p)["label"].to_pylist() == ["human", "human", "benign_automation"]


def test_hash_only_copy_keeps_sessions_and_carries_each_frame_as_an_upstream_hash():
    from distillguard.model import frames
    from distillguard.training.data import hash_only_copy

    rows = good_rows(3)
    for r, p in zip(rows, ["Summarise this article: a.", "Summarise this article: b.", None]):
        r["prompt"] = p
    t = normalise(pa.Table.from_pylist(rows))
    h = hash_only_copy(t)
    assert h.schema == CANONICAL_SCHEMA and h["account_id"].equals(t["account_id"])
    sigs, up = t["frame_signature"].to_pylist(), h["template_hash"].to_pylist()
    assert up == sigs and h["frame_signature"].to_pylist() == [frames.legacy_signature(sigs[0]),
                                                              frames.legacy_signature(sigs[1]), None]
