"""Property-based tests of the offline event loaders (Parquet, CSV, JSON Lines) and of
`--on-error skip|fail`.

Whatever the file holds (random column sets and arrow types, nulls, odd encodings,
malformed rows, truncation, corruption) a loader either returns canonical rows or
raises SchemaError; never another exception, never a hang. With on_error="skip" every
good row comes through, in order, and every bad one is counted and listed (by row,
never with prompt text). Examples are bounded and derandomised: the file runs in
well under a minute, the same way each time (DG_FUZZ_EXAMPLES=N for a deeper, random run).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from distillguard.model.readers import iter_event_batches, load_events
from distillguard.model.schema import (CANONICAL_SCHEMA, INPUT_COLUMNS, REQUIRED_COLUMNS, Rejects, SchemaError,
                                       normalise)

pytestmark = pytest.mark.timeout(120)

# DG_FUZZ_EXAMPLES=2000 explores further, with fresh random examples each run.
_DEEP = int(os.environ.get("DG_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 60, deadline=None, derandomize=not _DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SECRET = "SECRETPROMPT"          # every generated prompt holds it; no rejects file may
LATIN1 = "ZZLATIN1ZZ"            # replaced by the latin-1 bytes b"caf\xe9" in the file


class Collect(Rejects):
    """A Rejects that also keeps what it was given, for the assertions."""

    def __init__(self, path=None):
        super().__init__(path)
        self.records: list[tuple] = []

    def add(self, source, row, column, error, *value):
        super().add(source, row, column, error, *value)
        self.records.append((source, row, column, error))


# ---------------------------------------------------------------------------- values

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
ISO_GOOD = ["2024-05-01T12:00:00Z", "2024-05-01 12:00:00+02:00", "2024-05-01", "2024-05-01T12:00:00.123456",
            "2024-05-01t12:00z"]

GOOD = {
    "ts": st.one_of(st.integers(0, 4_000_000_000), st.floats(0, 4e9, allow_nan=False),
                    st.sampled_from(ISO_GOOD), st.integers(0, 4_000_000_000).map(lambda i: f"{i}.5")),
    "prompt_tokens": st.one_of(st.integers(0, 2**40), st.sampled_from(["12", " 7 ", "1e3", 3.0])),
    "completion_tokens": st.one_of(st.integers(0, 2**40), st.sampled_from(["0", "4.0"])),
    "session_id": st.one_of(st.none(), text),
    "model": st.one_of(st.none(), text),
    "event_id": st.one_of(st.none(), text),
    "prompt": st.one_of(st.none(), text.map(lambda t: SECRET + t)),
    "max_tokens": st.one_of(st.none(), st.integers(0, 2**31)),
    "status": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    "elicits_reasoning": st.sampled_from([None, True, False, "yes", "0", "T"]),
    "account_created_at": st.one_of(st.none(), st.integers(0, 4_000_000_000), st.sampled_from(ISO_GOOD)),
}
# Values every format must refuse in that column (NaN only where the column is required:
# in an optional float column NaN is a null by design).
BAD = {
    "account_id": [None, ""],
    "ts": [None, "notatime", "2024-13-45T00:00:00", 1.7e12, "nan", float("nan"), [1, 2], "1e400"],
    "prompt_tokens": [None, -1, 2.5, "many", 2**70, True, "-0.5"],
    "completion_tokens": [None, -7, "1.5", "x1", [3]],
    "max_tokens": [-3, "x"],
    "status": [2**40, "abc"],
    "elicits_reasoning": ["maybe", 2],
    "account_created_at": ["garbage", 1e13],
}
BAD_JSON_LINES = ['{"account_id": "x", ', "[1, 2]", "not json", '"just a string"', "{" * 5000]
OPTIONAL = tuple(GOOD.keys() - set(REQUIRED_COLUMNS))


def cell(v) -> str:
    """A value as CSV text (None -> empty field, i.e. null)."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return repr(v) if isinstance(v, float) else str(v)


def csv_line(fields: list[str], eol: str) -> str:
    # Python's csv.writer leaves a lone "\r" unquoted when the line ends in "\n": quote by hand.
    def quote(f: str) -> str:
        return '"' + f.replace('"', '""') + '"' if any(ch in f for ch in ',"\r\n') else f
    return ",".join(quote(f) for f in fields) + eol


def parquet_column(values: list) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) == 1 and not kinds & {list, bytes}:
        try:
            return pa.array(values)
        except (pa.ArrowInvalid, OverflowError, pa.ArrowTypeError):
            pass
    return pa.array([None if v is None else cell(v) for v in values], pa.string())


@st.composite
def event_files(draw, fmt: str):
    """(file bytes, expected good account ids, bad data-row numbers, header, jsonl_missing)."""
    extra = draw(st.lists(st.sampled_from(OPTIONAL), unique=True, max_size=len(OPTIONAL)))
    header = list(REQUIRED_COLUMNS) + [c for c in extra if c != "model"] + ["model", "extra col"]
    header = draw(st.permutations(header))
    n = draw(st.integers(0, 12))
    kinds = ["good", "good", "good", "value", "latin1"] + (["malformed"] if fmt != "parquet" else [])
    rows, good_ids, bad_rows = [], [], []
    for i in range(n):
        kind = draw(st.sampled_from(kinds))
        row = {"account_id": f"a{i}-" + draw(text), "extra col": draw(text)}
        for c in header:
            if c in GOOD:
                row[c] = draw(GOOD[c])
        if kind == "value":
            col = draw(st.sampled_from([c for c in header if c in BAD]))
            row[col] = draw(st.sampled_from(BAD[col]))
        elif kind == "latin1":
            row["model"] = LATIN1
        rows.append((kind, row))
        if kind == "good":
            good_ids.append(row["account_id"])
        else:
            bad_rows.append(i + 1)
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    blank_after = draw(st.lists(st.booleans(), min_size=n, max_size=n))

    if fmt == "csv":
        out = csv_line(header, eol)
        for (kind, row), blank in zip(rows, blank_after):
            fields = [cell(row.get(c)) for c in header]
            if kind == "malformed":
                fields = fields + ["surplus"] if draw(st.booleans()) else fields[:-1]
            out += csv_line(fields, eol) + (eol if blank else "")
        data = out.encode("utf-8")
        if draw(st.booleans()):
            data = b"\xef\xbb\xbf" + data
        missing = False
    elif fmt == "jsonl":
        ascii_only = draw(st.booleans())
        lines = []
        for (kind, row), blank in zip(rows, blank_after):
            if kind == "malformed":
                lines.append(draw(st.sampled_from(BAD_JSON_LINES)))
            else:
                omit_nulls = draw(st.booleans())
                obj = {c: row.get(c) for c in header if not (omit_nulls and row.get(c) is None)}
                lines.append(json.dumps(obj, ensure_ascii=ascii_only))
            if blank:
                lines.append("")
        data = "".join(line + eol for line in lines).encode("utf-8")
        # JSON Lines has no header: a required key in no object at all may read as a
        # missing column (arrow's reader) or as a null in every row (the line parser).
        objs = [row for kind, row in rows if kind != "malformed"]
        missing = any(all(r.get(c) is None for r in objs) for c in REQUIRED_COLUMNS) and bool(objs)
    else:
        cols = {}
        for c in header:
            vals = [row.get(c) for _, row in rows]
            if c == "model" and any(v == LATIN1 for v in vals):
                cols[c] = pa.array([None if v is None else (b"caf\xe9" if v == LATIN1 else v.encode())
                                    for v in vals], pa.binary())
            else:
                cols[c] = parquet_column(vals) if n else pa.array([], pa.string())
        sink = io.BytesIO()
        pq.write_table(pa.table(cols), sink, row_group_size=draw(st.sampled_from([1, 3, 100])))
        data = sink.getvalue()
        missing = False
    data = data.replace(LATIN1.encode(), b"caf\xe9")
    return data, good_ids, bad_rows, header, missing


def _load(path: Path, on_error: str, batch_rows: int, rejects=None):
    return pa.concat_tables([CANONICAL_SCHEMA.empty_table()] + list(
        iter_event_batches(path, batch_rows=batch_rows, on_error=on_error, rejects=rejects)))


# ---------------------------------------------------------------------------- properties


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@FUZZ
@given(data=st.data())
def test_skip_keeps_every_good_row_and_counts_every_bad_one(fmt, data):
    content, good_ids, bad_rows, header, missing = data.draw(event_files(fmt))
    batch_rows = data.draw(st.sampled_from([1, 2, 5, 262_144]))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"events.{fmt}"
        path.write_bytes(content)
        rejects = Collect(Path(d) / "rejects.jsonl")
        try:
            t = _load(path, "skip", batch_rows, rejects)
        except SchemaError as e:
            assert missing and "missing required column" in str(e), e
            return
        rejects.close()
        written = (Path(d) / "rejects.jsonl").read_text(encoding="utf-8")
        if missing and not good_ids:
            assert t.num_rows == 0
            return
        assert t["account_id"].to_pylist() == good_ids
        assert rejects.count == len(bad_rows)
        assert sorted(r[1] for r in rejects.records) == bad_rows
        assert all(r[0] == str(path) for r in rejects.records)
        assert len(written.splitlines()) == len(bad_rows)
        assert SECRET not in written
        for line in written.splitlines():
            rec = json.loads(line)
            assert set(rec) <= {"source", "row", "column", "error", "value"}
            assert rec["column"] != "prompt" or "value" not in rec

        # fail mode: the same rows when nothing is bad, else a SchemaError naming a bad row
        try:
            whole = _load(path, "fail", batch_rows)
        except SchemaError as e:
            assert bad_rows, e
            assert e.row is None or e.row in bad_rows, (e, bad_rows)
            assert str(path) in str(e)
            assert SECRET not in str(e)
        else:
            assert not bad_rows
            assert whole.equals(t)


ARROW_TYPES = {
    "int8": (pa.int8(), st.integers(-128, 127)),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "float32": (pa.float32(), st.floats(width=32)),
    "float64": (pa.float64(), st.floats()),
    "string": (pa.string(), text),
    "large_string": (pa.large_string(), text),
    "string_view": (pa.string_view(), text),
    "binary": (pa.binary(), st.binary(max_size=6)),
    "bool": (pa.bool_(), st.booleans()),
    "ts_s": (pa.timestamp("s"), st.integers(-(2**40), 2**40)),
    "ts_ns_utc": (pa.timestamp("ns", "UTC"), st.integers(-(2**62), 2**62)),
    "ts_ms_tz": (pa.timestamp("ms", "Europe/Paris"), st.integers(-(2**50), 2**50)),
    "date32": (pa.date32(), st.integers(-(10**6), 10**6)),
    "list": (pa.list_(pa.int64()), st.lists(st.integers(-5, 5), max_size=2)),
    "decimal": (pa.decimal128(12, 2), st.decimals(-(10**9), 10**9, places=2, allow_nan=False)),
}
COLUMN_NAMES = st.sampled_from(INPUT_COLUMNS + ("_row", "extra", "Ts", ""))


@st.composite
def arrow_tables(draw):
    n = draw(st.integers(0, 8))
    names = [c for c in REQUIRED_COLUMNS if draw(st.integers(0, 9))]   # each present 90% of the time
    names += draw(st.lists(COLUMN_NAMES, max_size=6))
    arrays = []
    for _ in names:
        kind = draw(st.sampled_from(sorted(ARROW_TYPES) + ["null", "dictionary"]))
        if kind == "null":
            arrays.append(pa.nulls(n))
            continue
        typ, values = ARROW_TYPES["string" if kind == "dictionary" else kind]
        vals = draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))
        arr = pa.array(vals, typ)
        arrays.append(arr.dictionary_encode() if kind == "dictionary" else arr)
    return pa.Table.from_arrays(arrays, names=names)


@FUZZ
@given(table=arrow_tables())
def test_normalise_any_table_in_both_modes(table):
    """Any arrow table: SchemaError or canonical rows; skip mode keeps exactly the rows
    that fail mode accepts on their own, and drops the row fail mode names."""
    try:
        strict = normalise(table, source="t")
        strict_error = None
    except SchemaError as e:
        strict, strict_error = None, e
    rejects = Collect()
    try:
        kept = normalise(table, source="t", rejects=rejects)
    except SchemaError as e:   # a whole-table problem: the same in both modes
        assert strict_error is not None and str(e) == str(strict_error)
        assert e.row is None
        return
    assert kept.schema == CANONICAL_SCHEMA
    assert kept.num_rows + rejects.count == table.num_rows
    if strict_error is None:
        assert rejects.count == 0 and kept.equals(strict)
        return
    bad = [r[1] for r in rejects.records]
    assert strict_error.row in bad
    if "_row" in table.column_names:
        return   # rows numbered by the table's own `_row`: positions are not row - 1
    # Every kept row passes fail mode alone, with the same values.
    keep = np.setdiff1d(np.arange(table.num_rows), np.array(bad, dtype=np.int64) - 1)
    takeable = pa.Table.from_arrays(   # arrow has no take kernel for string_view
        [c.cast(pa.string()) if pa.types.is_string_view(c.type) else c for c in table.columns],
        names=table.column_names)
    alone = normalise(takeable.take(pa.array(keep, pa.int64())), source="t")
    assert alone.drop_columns("_row").equals(kept.drop_columns("_row"))


@FUZZ
@given(table=arrow_tables(), row_group=st.sampled_from([1, 4, 64]))
def test_any_parquet_file_loads_or_raises_schema_error(table, row_group):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "e.parquet"
        table = pa.Table.from_arrays(
            [c.cast(pa.large_string()) if pa.types.is_string_view(c.type) else c for c in table.columns],
            names=table.column_names)
        try:
            pq.write_table(table, path, row_group_size=row_group)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            assume(False)   # a type Parquet cannot store: nothing to load
        for on_error in ("fail", "skip"):
            try:
                t = load_events(path, on_error=on_error)
            except SchemaError as e:
                assert str(path) in str(e)
            else:
                assert t.schema == CANONICAL_SCHEMA and t.num_rows <= table.num_rows


def _good_rows(n: int, prompts: bool = True) -> list[dict]:
    # Distinct prompts cost a template hash each: the large files go without.
    return [{"account_id": f"acct-{i}", "ts": 1_700_000_000 + 60 * i, "prompt_tokens": 10 + i,
             "completion_tokens": 100 + i, "prompt": f"{SECRET} number {i} ünï €" if prompts else "",
             "model": "model-name-0123456789"}
            for i in range(n)]


def _file_text(fmt: str, rows: list[dict]) -> tuple[bytes, list[int]]:
    """File bytes and, for each row, the byte offset of the newline that ends it."""
    parts = [b"account_id,ts,prompt_tokens,completion_tokens,prompt,model\n"] if fmt == "csv" else []
    size = sum(map(len, parts))
    ends = []
    for r in rows:
        line = (",".join(cell(r[c]) for c in r) if fmt == "csv" else json.dumps(r, ensure_ascii=False))
        parts.append((line + "\n").encode())
        size += len(parts[-1])
        ends.append(size - 1)
    return b"".join(parts), ends


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@FUZZ
@given(n=st.integers(1, 20), cut=st.floats(0, 1), batch_rows=st.sampled_from([1, 3, 262_144]))
def test_truncated_text_file_keeps_its_complete_rows(fmt, n, cut, batch_rows):
    """A CSV/JSONL file cut anywhere (mid-row, mid-character): fail mode errors or loads; skip
    mode keeps every complete row, and the one cut row is either kept or rejected."""
    data, ends = _file_text(fmt, _good_rows(n))
    k = int(cut * len(data))
    complete = sum(1 for e in ends if e <= k)              # row text wholly before the cut
    start = ends[complete - 1] + 1 if complete else (data.index(b"\n") + 1 if fmt == "csv" else 0)
    partial = int(complete < n and k > start)              # some of the next row is there
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"e.{fmt}"
        path.write_bytes(data[:k])
        try:
            _load(path, "fail", batch_rows)
        except SchemaError as e:
            assert str(path) in str(e) and SECRET not in str(e)
        rejects = Collect()
        try:
            t = _load(path, "skip", batch_rows, rejects)
        except SchemaError as e:   # only a header cut short is a whole-file problem
            assert fmt == "csv" and k <= data.index(b"\n"), e
            return
        ids = t["account_id"].to_pylist()
        assert ids[:complete] == [f"acct-{i}" for i in range(complete)]
        assert complete <= t.num_rows <= complete + partial
        assert t.num_rows + rejects.count == complete + partial


@FUZZ
@given(n=st.integers(1, 30), cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                                   max_size=4))
def test_truncated_or_corrupted_parquet_is_a_schema_error_naming_the_file(n, cut, flips):
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(_good_rows(n)), sink, row_group_size=7)
    data = bytearray(sink.getvalue())
    for where, byte in flips:
        data[int(where * (len(data) - 1))] = byte
    k = int(cut * len(data))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "e.parquet"
        path.write_bytes(bytes(data[:k]))
        for on_error in ("fail", "skip"):
            try:
                t = load_events(path, on_error=on_error)
            except SchemaError as e:
                assert str(path) in str(e)
            else:   # a flipped byte inside a value may go unnoticed: still canonical rows
                assert k == len(data) and t.schema == CANONICAL_SCHEMA


# ---------------------------------------------------------------------------- examples


def test_whole_file_problems_fail_even_with_skip(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("account_id,ts,prompt_tokens\na,1,1\n")
    with pytest.raises(SchemaError, match="missing required column 'completion_tokens'"):
        load_events(p, on_error="skip")
    p = tmp_path / "e.parquet"
    p.write_bytes(b"PAR1 not really")
    with pytest.raises(SchemaError, match=f"{p}: not a readable Parquet file"):
        load_events(p, on_error="skip")
    with pytest.raises(ValueError, match="on_error"):
        load_events(p, on_error="ignore")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_skip_after_the_first_block_numbers_rows_exactly(tmp_path, fmt):
    # Large enough that arrow has streamed batches out before it meets the bad row; the
    # rest is read by the line parser from there, rows numbered as in the file.
    rows = _good_rows(40_000, prompts=False)
    data, _ = _file_text(fmt, rows)
    assert len(data) > 2 << 20   # arrow reads 1 MiB blocks: the bad rows are in later ones
    lines = data.split(b"\n")
    head = 1 if fmt == "csv" else 0
    lines[head + 30_000] = b"acct-bad,1,2" if fmt == "csv" else b'{"account_id": "acct-bad", '
    lines[head + 35_000] = (b"acct-35000,notatime,1,1,p,m" if fmt == "csv" else   # no ts key below
                            b'{"account_id": "acct-35000", "tz": 1, "prompt_tokens": 1, "completion_tokens": 1}')
    p = tmp_path / f"e.{fmt}"
    p.write_bytes(b"\n".join(lines))
    rejects = Collect()
    batches = list(iter_event_batches(p, batch_rows=8_192, on_error="skip", rejects=rejects))
    t = pa.concat_tables(batches)
    assert t.num_rows == 40_000 - 2 and rejects.count == 2
    assert sorted(r[1] for r in rejects.records) == [30_001, 35_001]
    want = [i for i in range(40_000) if i not in (30_000, 35_000)]
    assert t["_row"].to_pylist() == want
    assert t["account_id"].to_pylist() == [f"acct-{i}" for i in want]


@pytest.mark.slow
def test_score_cli_on_error_skip_writes_rejects_without_prompts(tmp_path):
    from distillguard.serving import DEFAULT_BUNDLE

    rows = _good_rows(30)
    rows[3]["prompt_tokens"] = -4
    rows[7]["ts"] = "yesterday"
    p = tmp_path / "events.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"account_id": "cut", "prompt": "' + SECRET)
    out = tmp_path / "scores.csv"
    cmd = [sys.executable, "-m", "distillguard.cli", "score", "--model", str(DEFAULT_BUNDLE),
           "--input", str(p), "--output", str(out), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and not out.exists()
    assert f"{p}: row 31 (line 31): invalid JSON" in r.stderr and SECRET not in r.stderr
    r = subprocess.run(cmd + ["--on-error", "skip"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rejects = tmp_path / "scores.csv.rejects.jsonl"
    assert "skipped 3 bad row(s)" in r.stderr and str(rejects) in r.stderr
    recs = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert sorted(x["row"] for x in recs) == [4, 8, 31]
    assert SECRET not in rejects.read_text()
    scored = pacsv.read_csv(out)
    assert sum(scored["n_events"].to_pylist()) == 28
    custom = tmp_path / "elsewhere" / "bad.jsonl"
    r = subprocess.run(cmd + ["--on-error", "skip", "--rejects", str(custom)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and len(custom.read_text().splitlines()) == 3


def test_score_file_skip_is_the_same_with_spill_partitions(tmp_path):
    from distillguard.serving import DEFAULT_BUNDLE
    from distillguard.serving.batch import score_file

    rows = _good_rows(3_000, prompts=False)
    for i, r in enumerate(rows):
        r["account_id"] = f"acct-{i % 40}"
    rows[10]["ts"], rows[2_000]["completion_tokens"], rows[2_999]["account_id"] = "soon", -1, ""
    p = tmp_path / "e.csv"
    p.write_bytes(_file_text("csv", rows)[0])
    one, parts = tmp_path / "one.parquet", tmp_path / "parts.parquet"
    a = score_file(DEFAULT_BUNDLE, p, one, progress=False, threads=1, on_error="skip")
    b = score_file(DEFAULT_BUNDLE, p, parts, partition_rows=500, progress=False, threads=1, on_error="skip")
    assert a.skipped == b.skipped == 3 and a.events == b.events == 2_997
    key = [("session_id", "ascending")]
    assert pq.read_table(one).sort_by(key).equals(pq.read_table(parts).sort_by(key))
    for s in (a, b):
        recs = [json.loads(x) for x in s.rejects_path.read_text().splitlines()]
        assert sorted((x["row"], x["column"]) for x in recs) == [
            (11, "ts"), (2_001, "completion_tokens"), (3_000, "account_id")]
