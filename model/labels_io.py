"""Labels files and labels stores -> one label table (`read_labels`), validated as
docs/labels.md describes. The label names themselves are `schema.LABELS`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .readers import _csv_error, _csv_options, _event_files, _format_of, _jsonl_lines
from .schema import LABELS, SchemaError, _Ctx, _epoch, _np_bool, _strings, plain_array

_LABEL_KEYS = ("session_id", "account_id")
# Every column a labels file may carry (docs/labels.md), in the order read_labels returns
# them; a file may have any subset beside a key and `label` (the simulator's labels.csv
# has account_id, label, family, campaign). Other columns are ignored.
_LABEL_COLUMNS = _LABEL_KEYS + ("label", "family", "campaign", "incident_id", "labelled_at",
                                "window_start", "window_end", "note", "source", "reported_by",
                                "model_version")
_LABEL_TIMES = ("labelled_at", "window_start", "window_end")   # -> float64 epoch seconds
LABEL_SOURCES = ("investigator", "feedback", "simulated")


def _read_label_file(path: Path, source: str) -> pa.Table:
    """A whole labels file (small) with the label columns it has, as read."""
    fmt = _format_of(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.ParquetFile(path).schema_arrow.names
            return pq.read_table(path, columns=[c for c in names if c in _LABEL_COLUMNS])
        except (OSError, pa.ArrowException) as e:
            raise SchemaError(f"{source}: not a readable Parquet file: {e}", source=source) from e
    if fmt == "jsonl":
        tables = list(_jsonl_lines(path, source, 1 << 62, skip=0, columns=_LABEL_COLUMNS, always=()))
        return tables[0] if tables else pa.table({})
    import pyarrow.csv as pcsv

    try:
        convert, parse = _csv_options(None, _LABEL_COLUMNS)
        names = pcsv.open_csv(path, convert_options=convert, parse_options=parse).schema.names
        convert, parse = _csv_options([c for c in names if c in _LABEL_COLUMNS] or names[:1],
                                      _LABEL_COLUMNS)
        return pcsv.read_csv(path, convert_options=convert, parse_options=parse).select(
            [c for c in names if c in _LABEL_COLUMNS])
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return pa.table({})
        raise _csv_error(path, source, e) from e
    except OSError as e:
        raise SchemaError(f"{source}: could not read CSV: {e}", source=source) from e


def read_labels(path: str | os.PathLike, provenance: bool = False) -> pa.Table:
    """Labels file, or a labels store (a directory of them, read recursively like event
    directories), -> one table; docs/labels.md describes the format.

    Columns: those of `_LABEL_COLUMNS` that some file has, in that order; text columns
    as strings (empty -> null), `labelled_at` / `window_start` / `window_end` as float64
    UTC epoch seconds (epoch seconds or ISO-8601 in the file). With `provenance` two more
    columns say where each row came from: `_file` (path) and `_row` (1-based data row,
    as error messages number rows). Files with no rows are skipped.

    Every row needs a key (`session_id` and/or `account_id`) and a valid label; a bad
    time, a `source` outside LABEL_SOURCES, a window on a row that names a session, or a
    window that ends before it starts is a SchemaError naming file, column and row. One
    key labelled twice differently is *not* an error here: the label rows are resolved
    against sessions by training.labels.resolve, which reports such conflicts.
    """
    parts = []
    for f in _event_files(path):
        source = str(f)
        raw = _read_label_file(f, source)
        if raw.num_rows == 0:
            continue
        names = raw.column_names
        keys = [c for c in _LABEL_KEYS if c in names]
        need = ([] if keys else ["'session_id' (or 'account_id')"]) + ([] if "label" in names else ["'label'"])
        if need:
            raise SchemaError(f"{source}: missing required column(s) {', '.join(need)} "
                              f"(columns found: {', '.join(names) if names else 'none'})",
                              source=source, column="label" if keys else "session_id")
        n = raw.num_rows
        ctx = _Ctx(source, np.arange(n, dtype=np.int64))
        cols = {c: (_epoch if c in _LABEL_TIMES else _strings)(ctx, c, plain_array(raw.column(c)), required=False)
                for c in _LABEL_COLUMNS if c in names}
        # With both keys a row needs one of them; with one key, that one.
        no_key = np.ones(n, dtype=bool)
        for k in keys:
            no_key &= ~_np_bool(cols[k].is_valid())
        ctx.fail(keys[0] if len(keys) == 1 else "session_id", no_key,
                 "expected a non-empty " + " or ".join(keys), plain_array(raw.column(keys[0])))
        label = cols["label"]
        ctx.fail("label", ~_np_bool(pc.is_in(label, pa.array(LABELS))),
                 f"expected one of {', '.join(LABELS)}", plain_array(raw.column("label")))
        if "source" in cols:
            src = cols["source"]
            ctx.fail("source", _np_bool(src.is_valid()) & ~_np_bool(pc.is_in(src, pa.array(LABEL_SOURCES))),
                     f"expected one of {', '.join(LABEL_SOURCES)} (or empty)", plain_array(raw.column("source")))
        _check_label_windows(ctx, cols, raw)
        t = pa.table(cols)
        if provenance:
            t = t.append_column("_file", pa.array([source] * n, pa.string()))
            t = t.append_column("_row", pa.array(np.arange(1, n + 1, dtype=np.int64)))
        parts.append(t)
    if not parts:
        t = pa.table({c: pa.array([], pa.string()) for c in ("session_id", "account_id", "label")})
        if provenance:
            t = t.append_column("_file", pa.array([], pa.string())).append_column("_row", pa.array([], pa.int64()))
        return t
    t = pa.concat_tables(parts, promote_options="permissive")
    order = [c for c in _LABEL_COLUMNS if c in t.column_names] + (["_file", "_row"] if provenance else [])
    return t.select(order)


def _check_label_windows(ctx: _Ctx, cols: dict, raw: pa.Table) -> None:
    # A window narrows an account-wide label to the sessions it overlaps; on a row that
    # names one session it would mean nothing, and silently ignoring it hides a mistake.
    ws, we = cols.get("window_start"), cols.get("window_end")
    if "session_id" in cols:
        named = _np_bool(cols["session_id"].is_valid())
        for c, w in (("window_start", ws), ("window_end", we)):
            if w is not None:
                ctx.fail(c, named & _np_bool(w.is_valid()),
                         f"a window applies to account rows only, but this row names a session_id "
                         f"({c} must be empty here)", plain_array(raw.column(c)))
    if ws is not None and we is not None:
        ctx.fail("window_end", _np_bool(pc.less(we, ws)), "expected a time >= window_start of the row",
                 plain_array(raw.column("window_end")))
