"""Load, validate and normalise event files into the canonical event table.

Every event source (Parquet, CSV, JSON Lines, a directory of those, or an in-memory
table from the gateway) goes through `normalise`, so the rest of the package sees one
shape: `CANONICAL_SCHEMA` (docs/architecture.md, "Canonical event table").

Bad input raises `SchemaError` naming the source, the column, the first bad row
(1-based data row in the file, header excluded, counted across streamed batches) and
the offending value. Nothing is silently dropped or coerced into something else: a
row is either normalised exactly or the load stops with a message.

Decisions worth knowing:
- Numbers in `ts` / `account_created_at` are epoch *seconds*. A magnitude >= 1e11
  (year 5138) is rejected as "looks like milliseconds" rather than reinterpreted.
- ISO-8601 strings: a `Z` or `+hh:mm`/`+hhmm`/`+hh` offset is honoured; naive
  strings are UTC.
- Empty strings in optional string columns become null (CSV cannot tell them
  apart, so the other formats follow CSV); an empty `account_id` is an error.
- NaN in an optional float input column is null (pandas writes missing values so);
  NaN in a required one is an error.
- An input `_row` column with integer values and no nulls is kept (normalising a
  canonical table again is then a no-op); files never supply `_row`: only the
  columns named in `INPUT_COLUMNS` are read from files.
- `prompt` fills `template_hash` where that is null, and `elicits_reasoning` where
  that is null (even on rows whose hash was given); the text is then dropped.
- JSON Lines: arrow's reader first; where it refuses the file (types that change
  between blocks, a field first seen late, date-like ids) the rest is read by a
  line parser, so such files load, only more slowly.
- An empty file (no bytes, a header only, or a Parquet file with no rows) yields
  zero batches from `iter_event_batches`; `load_events` then returns an empty
  table with `CANONICAL_SCHEMA`. A header that lacks a required column is still an
  error. An empty directory is an error (a mistyped path, most likely).
- Prompt text never appears in an error message or a rejects file: a bad `prompt`
  value is reported by row and column only.

On errors (`on_error`): "fail" (the default) stops at the first bad row as above.
"skip" drops each bad row, keeps every good one, and hands the dropped ones to a
`Rejects` (counted, and written to a JSON Lines file when it has a path). Row-level
problems are skipped: a value of the wrong type, a null or empty required value, a
negative count, an unparseable time, a malformed CSV row, a bad JSON line, text that
is not UTF-8. Whole-file problems still fail: an unreadable or truncated Parquet file,
a missing required column, a duplicated column, an unknown file type. Both modes go
through the same validation code: in "skip" mode `_Ctx.fail` marks rows instead of
raising, and readers hand their row-level errors to `_row_error`. Once arrow refuses a
CSV file in skip mode (a malformed row, text that is not UTF-8), the rest of it is read
by Python's csv module (slower; rows numbered exactly), as JSON Lines falls back to its
line parser. Rejects are listed in the order found, not sorted by row.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LABELS = ("human", "benign_automation", "distillation_harvesting")

REQUIRED_COLUMNS = ("account_id", "ts", "prompt_tokens", "completion_tokens")
# Optional *input* columns. `prompt` is read, hashed and dropped; it is not in the
# canonical table. `elicits_reasoning` travels with a gateway-computed hash.
OPTIONAL_COLUMNS = (
    "session_id",
    "template_hash",
    "elicits_reasoning",
    "prompt",
    "max_tokens",
    "model",
    "status",
    "client_fingerprint",
    "ip_prefix",
    "account_created_at",
    "event_id",
)
INPUT_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

CANONICAL_SCHEMA = pa.schema(
    [
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("ts", pa.float64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("session_id", pa.string()),
        pa.field("template_hash", pa.string()),
        pa.field("elicits_reasoning", pa.bool_()),
        pa.field("max_tokens", pa.int64()),
        pa.field("model", pa.string()),
        pa.field("status", pa.int32()),
        pa.field("client_fingerprint", pa.string()),
        pa.field("ip_prefix", pa.string()),
        pa.field("account_created_at", pa.float64()),
        pa.field("event_id", pa.string()),
        pa.field("_row", pa.int64(), nullable=False),
    ]
)
CANONICAL_COLUMNS = tuple(CANONICAL_SCHEMA.names)

_OPTIONAL_STRINGS = ("session_id", "template_hash", "model", "client_fingerprint", "ip_prefix", "event_id")

# Epoch values this large are almost surely milliseconds (or micro/nanoseconds);
# 1e11 s is the year 5138, so no real event time is lost by refusing them.
_MAX_EPOCH_S = 1e11

_NUM_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_INT_RE = r"^[+-]?\d+$"
# What arrow's ISO-8601 cast accepts, after upper-casing (so 't'/'z' work too).
_ISO_RE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$"
# A zone needs a time part: a date alone ends in "-dd", which is not an offset.
_ZONED_RE = r"^\d{4}-\d{2}-\d{2}[T ].*(Z|[+-]\d{2}(:?\d{2})?)$"

_TS_WHAT = "expected epoch seconds, an ISO-8601 string or a timestamp"
_TOKENS_WHAT = "expected an integer >= 0"
_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
# Arrow decompresses these by extension for CSV and JSON Lines.
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")


ON_ERROR = ("fail", "skip")

log = logging.getLogger("distillguard.schema")


class SchemaError(ValueError):
    """Bad event or label input. `str(e)` names the file, column, row and value."""

    def __init__(self, message: str, *, source: str | None = None, column: str | None = None,
                 row: int | None = None, value: object = None, reason: str | None = None):
        super().__init__(message)
        self.source = source
        self.column = column
        self.row = row  # 1-based data row in the source, None when not row-specific
        self.value = value
        self.reason = reason  # what is wrong, without the source, row or value


_UNSET = object()
# Columns whose values never leave the loader: not in messages, not in rejects files.
_PRIVATE_COLUMNS = ("prompt",)


def _json_value(value: object) -> object:
    """A short JSON-safe rendering of a rejected value (for the rejects file)."""
    if value is None or isinstance(value, bool) or isinstance(value, int) and abs(value) < 2**53:
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= 60 else value[:60] + "..."
    return _show(value)


class Rejects:
    """Rows refused under on_error="skip": counted, and written to `path` when given.

    The file is JSON Lines, one object per refused row: `source` (file), `row` (1-based
    data row, header excluded; null where the row could not be numbered), `column`
    (null for a whole-row problem such as a malformed CSV row or a bad JSON line),
    `error` (what was expected) and, for a bad value of a column other than `prompt`,
    `value` (truncated to 60 characters). Raw input lines and prompt text are never
    written. The file is written under a temporary name beside `path`
    (`.<name>.tmp-<pid>`) and renamed by `close()`, so a reader never sees a partial
    file; `abort()` removes it.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.by_column: Counter = Counter()
        self._f = None
        self._tmp = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            try:
                self._f = open(self._tmp, "w", encoding="utf-8")
            except OSError as e:
                raise OSError(e.errno, f"cannot write rejects file {self.path}: {e.strerror or e}") from e

    def add(self, source: str | None, row: int | None, column: str | None, error: str,
            value: object = _UNSET) -> None:
        self.count += 1
        self.by_column[column or "(row)"] += 1
        if self._f is None:
            return
        rec = {"source": source, "row": row, "column": column, "error": error}
        if value is not _UNSET and column not in _PRIVATE_COLUMNS:
            rec["value"] = _json_value(value)
        try:
            self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        except OSError as e:
            raise OSError(e.errno, f"cannot write rejects file {self.path}: {e.strerror or e}") from e

    def reject(self, e: SchemaError) -> None:
        """A row-level error found by a reader: recorded (never raised) in skip mode."""
        self.add(e.source, e.row, e.column, e.reason or str(e),
                 _UNSET if e.value is None else e.value)

    def summary(self) -> str:
        cols = ", ".join(f"{c}: {n}" for c, n in self.by_column.most_common())
        return f"skipped {self.count:,} bad row(s)" + (f" ({cols})" if cols else "")

    def close(self) -> None:
        """Publish the rejects file under its final name (no-op without a path)."""
        if self._f is None:
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            os.replace(self._tmp, self.path)
        except OSError as e:
            self.abort()
            raise OSError(e.errno, f"cannot write rejects file {self.path}: {e.strerror or e}") from e

    def abort(self) -> None:
        """Drop the unfinished rejects file (an earlier file at `path` is left as it was)."""
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def _row_error(rejects: Rejects | None, e: SchemaError) -> None:
    """A reader's row-level error: raised in fail mode, recorded in skip mode."""
    if rejects is None:
        raise e
    rejects.reject(e)


def _show(value: object, limit: int = 60, column: str | None = None) -> str:
    if column in _PRIVATE_COLUMNS and value is not None:
        return "a value not shown (prompt text is private)"
    if value is None:
        return "null"
    if isinstance(value, (bytes, str)) and len(value) > limit:
        return repr(value[:limit]) + "..."
    text = repr(value)
    return text if len(text) <= limit + 2 else text[:limit] + "..."


def _value_at(values: pa.Array, i: int) -> object:
    scalar = values[i]
    try:
        return scalar.as_py()
    except Exception:  # e.g. a timestamp outside Python's datetime range (str() fails too)
        raw = getattr(scalar, "value", None)
        return f"{raw} ({values.type})" if isinstance(raw, int) else f"a {values.type} value"


class _BadRows:
    """Skip mode: which rows of a batch are bad, and the first problem of each."""

    def __init__(self, n: int):
        self.mask = np.zeros(n, dtype=bool)
        self.first: dict[int, tuple[str, str, object]] = {}

    def mark(self, positions: np.ndarray, column: str, what: str, values: pa.Array,
             idx: np.ndarray) -> None:
        new = ~self.mask[positions]
        for p, i in zip(positions[new].tolist(), idx[new].tolist()):
            self.first[p] = (column, what, _value_at(values, i))
        self.mask[positions] = True


class _Ctx:
    """Where a batch came from, so an error can name the file row of a batch index.

    With `bad` set (skip mode) `fail` marks the bad rows there and returns; the
    parsers then go on with placeholder values in those rows, which are dropped."""

    def __init__(self, source: str, rows: np.ndarray, bad: _BadRows | None = None,
                 index: np.ndarray | None = None):
        self.source = source
        self.rows = rows
        self.bad = bad
        # Position of each of this context's rows in the batch (a sub-context covers some).
        self.index = np.arange(len(rows)) if index is None else index

    def sub(self, pos: np.ndarray) -> "_Ctx":
        return _Ctx(self.source, self.rows[pos], self.bad, self.index[pos])

    def fail(self, column: str, bad: np.ndarray, what: str, values: pa.Array) -> None:
        idx = np.flatnonzero(bad)
        if idx.size == 0:
            return
        if self.bad is not None:
            self.bad.mark(self.index[idx], column, what, values, idx)
            return
        i = int(idx[0])
        row = int(self.rows[i]) + 1
        value = _value_at(values, i)
        if column in _PRIVATE_COLUMNS:
            value = None
        more = ""
        if idx.size > 1:
            more = (f" (and {idx.size - 1} more bad value(s) in rows "
                    f"{int(self.rows[0]) + 1}-{int(self.rows[-1]) + 1})")
        shown = _show(_value_at(values, i), column=column)
        raise SchemaError(
            f"{self.source}: column '{column}', row {row}: {what}, got {shown}{more}",
            source=self.source, column=column, row=row, value=value, reason=what,
        )

    def fail_at(self, column: str, i: int, what: str, values: pa.Array) -> None:
        bad = np.zeros(len(values), dtype=bool)
        bad[i] = True
        self.fail(column, bad, what, values)


# ---------------------------------------------------------------------------
# small arrow helpers


def plain_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous, dictionary-decoded array (shared by the modules reading columns)."""
    if isinstance(col, pa.ChunkedArray):
        if pa.types.is_dictionary(col.type):
            # Chunks may carry different dictionaries; decode before combining.
            col = pa.chunked_array([c.dictionary_decode() for c in col.chunks], col.type.value_type)
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def _np_bool(mask: pa.Array) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _is_text(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t))


def _first_cast_failure(arr: pa.Array, target: pa.DataType) -> int:
    # Only reached on the error path: the whole-array cast failed and we need the row.
    # Invariant: arr[:lo] casts, arr[:hi] does not.
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(arr.slice(0, mid), target)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return hi - 1


def _cast_failures(arr: pa.Array, target: pa.DataType) -> np.ndarray:
    """Skip mode's error path: every index of `arr` whose cast fails (divide and conquer,
    so k bad values among n cost about 2k log(n/k) casts)."""
    bad: list[int] = []

    def visit(lo: int, hi: int) -> None:
        try:
            pc.cast(arr.slice(lo, hi - lo), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if hi - lo == 1:
                bad.append(lo)
            else:
                mid = (lo + hi) // 2
                visit(lo, mid)
                visit(mid, hi)

    visit(0, len(arr))
    return np.array(bad, dtype=np.int64)


def _placeholder(target: pa.DataType) -> pa.Scalar:
    return pa.scalar("", target) if pa.types.is_string(target) else pa.scalar(0, target)


def _cast_or_fail(ctx: _Ctx, column: str, arr: pa.Array, target: pa.DataType, what: str,
                  positions: np.ndarray, original: pa.Array) -> pa.Array:
    """Cast `arr` (the rows `positions` of `original`) or name the first row that fails.

    Skip mode: mark every row that fails and put a placeholder there."""
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if ctx.bad is None:
            ctx.fail_at(column, int(positions[_first_cast_failure(arr, target)]), what, original)
            raise  # unreachable: fail_at raises
    failed = _cast_failures(arr, target)
    marked = np.zeros(len(original), dtype=bool)
    marked[positions[failed]] = True
    ctx.fail(column, marked, what, original)
    mask = np.zeros(len(arr), dtype=bool)
    mask[failed] = True
    mask = pa.array(mask)
    out = pc.cast(pc.if_else(mask, pa.scalar(None, arr.type), arr), target)
    return pc.if_else(mask, _placeholder(target), out)


def _clean_strings(arr: pa.Array) -> pa.Array:
    """Text -> trimmed utf8 with empty strings as null."""
    s = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)


def _to_utf8(ctx: _Ctx, column: str, arr: pa.Array) -> pa.Array:
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_string(arr.type):
        try:
            # Arrow's JSON and Parquet readers do not check that text is UTF-8.
            arr.validate(full=True)
            return arr
        except pa.ArrowInvalid:
            arr = arr.cast(pa.binary())   # same bytes; the cast back below names the bad rows
    if pa.types.is_nested(arr.type):
        ctx.fail(column, _np_bool(arr.is_valid()), "expected a string", arr)
        return pa.nulls(len(arr), pa.string())
    positions = np.arange(len(arr))
    return _cast_or_fail(ctx, column, arr, pa.string(), "expected a (UTF-8) string", positions, arr)


# ---------------------------------------------------------------------------
# column parsers; each returns canonical arrow arrays or raises SchemaError


def _strings(ctx: _Ctx, column: str, arr: pa.Array, required: bool) -> pa.Array:
    s = _to_utf8(ctx, column, arr)
    if required:
        empty = _np_bool(pc.or_kleene(s.is_null(), pc.equal(s, "")))
        ctx.fail(column, empty, "expected a non-empty string", arr)
        return s
    return pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)


def _ns_to_seconds(ns: np.ndarray) -> np.ndarray:
    # Split whole seconds from the fraction so large epochs keep their sub-second part.
    whole, frac = np.divmod(ns, 1_000_000_000)
    return whole.astype(np.float64) + frac.astype(np.float64) / 1e9


_UNIT_PER_S = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _timestamps_to_seconds(arr: pa.Array) -> np.ndarray:
    # Arrow stores tz-aware timestamps as UTC instants; naive ones are taken as UTC.
    per_s = _UNIT_PER_S[arr.type.unit]
    v = pc.fill_null(pc.cast(arr, pa.int64()), 0).to_numpy()
    whole, frac = np.divmod(v, per_s)
    return whole.astype(np.float64) + frac.astype(np.float64) / per_s


def _epoch(ctx: _Ctx, column: str, arr: pa.Array, required: bool) -> pa.Array:
    """Any supported time representation -> float64 UTC epoch seconds."""
    n = len(arr)
    t = arr.type
    valid = _np_bool(arr.is_valid())
    if pa.types.is_null(t):
        out = np.zeros(n)
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        # Unsafe: integers above 2**53 lose precision, and are refused below as too large.
        out = pc.fill_null(pc.cast(arr, pa.float64(), safe=False), 0.0).to_numpy()
        nan = valid & np.isnan(out)
        if required:
            ctx.fail(column, nan, _TS_WHAT, arr)
        else:
            valid &= ~nan
        ctx.fail(column, valid & np.isinf(out), _TS_WHAT, arr)
    elif pa.types.is_timestamp(t):
        out = _timestamps_to_seconds(arr)
    elif pa.types.is_date(t):
        out = _timestamps_to_seconds(pc.cast(arr, pa.timestamp("s" if pa.types.is_date32(t) else "ms")))
    elif _is_text(t):
        out, valid = _epoch_from_strings(ctx, column, arr)
    else:
        ctx.fail(column, valid if valid.any() else np.ones(n, bool), _TS_WHAT, arr)
        out, valid = np.zeros(n), np.zeros(n, dtype=bool)  # skip mode: those rows are marked
    if required:
        ctx.fail(column, ~valid, _TS_WHAT, arr)
    ctx.fail(column, valid & (np.abs(out) >= _MAX_EPOCH_S),
             "expected epoch seconds (this looks like milliseconds or finer)", arr)
    if valid.all():
        return pa.array(out, pa.float64())
    return pa.array(np.where(valid, out, 0.0), pa.float64(), mask=~valid)


def _epoch_from_strings(ctx: _Ctx, column: str, arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    s = pc.utf8_upper(_clean_strings(_to_utf8(ctx, column, arr)))
    valid = _np_bool(s.is_valid())
    num = _np_bool(pc.match_substring_regex(s, _NUM_RE))
    iso = _np_bool(pc.match_substring_regex(s, _ISO_RE))
    ctx.fail(column, valid & ~num & ~iso, _TS_WHAT, arr)
    out = np.zeros(len(s))
    if num.any():
        pos = np.flatnonzero(num)
        out[pos] = _cast_or_fail(ctx, column, s.take(pos), pa.float64(), _TS_WHAT, pos, arr).to_numpy()
        ctx.fail(column, num & ~np.isfinite(out), _TS_WHAT, arr)
    if iso.any():
        zoned = iso & _np_bool(pc.match_substring_regex(s, _ZONED_RE))
        # arrow refuses offsets when casting to a naive type and requires one for a
        # tz-aware type, so the two kinds are cast separately.
        for mask, target in ((zoned, pa.timestamp("ns", "UTC")), (iso & ~zoned, pa.timestamp("ns"))):
            if mask.any():
                pos = np.flatnonzero(mask)
                ts = _cast_or_fail(ctx, column, s.take(pos), target,
                                   "expected a valid ISO-8601 time between 1677 and 2262", pos, arr)
                out[pos] = _ns_to_seconds(pc.cast(ts, pa.int64()).to_numpy())
    return out, valid


def _integers(ctx: _Ctx, column: str, arr: pa.Array, required: bool, what: str,
              lo: int, hi: int, target: pa.DataType) -> pa.Array:
    """Integers, whole floats or numeric strings -> `target`, checked against [lo, hi]."""
    n = len(arr)
    t = arr.type
    valid = _np_bool(arr.is_valid())
    if pa.types.is_null(t):
        out = np.zeros(n, np.int64)
    elif pa.types.is_integer(t):
        if pa.types.is_uint64(t):
            # The bound as uint64: an int64 scalar would make arrow cast the column to int64 and fail.
            ctx.fail(column, valid & _np_bool(pc.greater(arr, pa.scalar(2**63 - 1, pa.uint64()))), what, arr)
        # Unsafe: a uint64 above int64's range was marked just above (skip mode goes on).
        out = pc.fill_null(pc.cast(arr, pa.int64(), safe=False), 0).to_numpy()
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        out, valid = _whole_floats(ctx, column, pc.cast(arr, pa.float64()), valid, required, what, arr)
    elif _is_text(t):
        s = _clean_strings(_to_utf8(ctx, column, arr))
        valid = _np_bool(s.is_valid())
        isint = _np_bool(pc.match_substring_regex(s, _INT_RE))
        isnum = _np_bool(pc.match_substring_regex(s, _NUM_RE))
        ctx.fail(column, valid & ~isnum, what, arr)
        out = np.zeros(n, np.int64)
        if isint.any():
            pos = np.flatnonzero(isint)
            out[pos] = _cast_or_fail(ctx, column, s.take(pos), pa.int64(), what, pos, arr).to_numpy()
        other = isnum & ~isint  # "12.0", "1e3"
        if other.any():
            pos = np.flatnonzero(other)
            f = pc.cast(s.take(pos), pa.float64())
            vals, _ = _whole_floats(ctx.sub(pos), column, f,
                                    np.ones(len(pos), bool), True, what, arr.take(pos))
            out[pos] = vals
    else:  # bool, nested, binary blobs...: not a count
        ctx.fail(column, valid if valid.any() else np.ones(n, bool), what, arr)
        out, valid = np.zeros(n, np.int64), np.zeros(n, dtype=bool)  # skip mode: rows marked
    if required:
        ctx.fail(column, ~valid, what, arr)
    out_of_range = valid & ((out < lo) | (out > hi))
    ctx.fail(column, out_of_range, what, arr)
    out = np.where(out_of_range, 0, out).astype(target.to_pandas_dtype(), copy=False)
    if valid.all():
        return pa.array(out, target)
    return pa.array(np.where(valid, out, 0), target, mask=~valid)


def _whole_floats(ctx: _Ctx, column: str, f: pa.Array, valid: np.ndarray, required: bool,
                  what: str, original: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    x = pc.fill_null(f, 0.0).to_numpy()
    nan = valid & np.isnan(x)
    if required:
        ctx.fail(column, nan, what, original)
    else:
        valid = valid & ~nan
    x = np.where(valid, x, 0.0)
    # 2**63 as a float is already out of int64 range, hence >= on the upper side.
    bad = valid & (~np.isfinite(x) | (x != np.floor(x)) | (x >= 2.0**63) | (x < -(2.0**63)))
    ctx.fail(column, bad, what, original)
    return np.where(bad, 0.0, x).astype(np.int64), valid


_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


def _booleans(ctx: _Ctx, column: str, arr: pa.Array) -> pa.Array:
    t = arr.type
    what = "expected a boolean (true/false, 1/0)"
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.bool_())
    if pa.types.is_boolean(t):
        return arr
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        f = pc.cast(arr, pa.float64())
        ok = pc.or_kleene(pc.equal(f, 0.0), pc.equal(f, 1.0))
        nan = pc.is_nan(f)
        ctx.fail(column, _np_bool(pc.and_not(pc.invert(ok), nan)), what, arr)
        return pc.if_else(nan, pa.scalar(None, pa.bool_()), pc.equal(f, 1.0))
    if _is_text(t):
        s = pc.utf8_lower(_clean_strings(_to_utf8(ctx, column, arr)))
        is_t = pc.is_in(s, pa.array(_TRUE))
        is_f = pc.is_in(s, pa.array(_FALSE))
        ctx.fail(column, _np_bool(pc.and_(s.is_valid(), pc.invert(pc.or_(is_t, is_f)))), what, arr)
        return pc.if_else(s.is_valid(), is_t, pa.scalar(None, pa.bool_()))
    ctx.fail(column, _np_bool(arr.is_valid()), what, arr)
    return pa.nulls(len(arr), pa.bool_())


def _row_numbers(table: pa.Table, row_offset: int) -> pa.Array:
    n = table.num_rows
    if table.column_names.count("_row") == 1:
        given = plain_array(table.column("_row"))
        if pa.types.is_integer(given.type) and given.null_count == 0:
            try:
                return pc.cast(given, pa.int64())
            except pa.ArrowInvalid:   # uint64 beyond int64: not our numbering
                pass
    return pa.array(np.arange(row_offset, row_offset + n, dtype=np.int64))


def _hash_prompts(prompt: pa.Array, template_hash: pa.Array, elicits: pa.Array,
                  hmac_key: bytes | None) -> tuple[pa.Array, pa.Array]:
    """Fill a null template_hash / elicits_reasoning from the prompt text of that row."""
    has_prompt = _np_bool(prompt.is_valid())
    need_hash = np.flatnonzero(has_prompt & ~_np_bool(template_hash.is_valid()))
    need_flag = np.flatnonzero(has_prompt & ~_np_bool(elicits.is_valid()))
    if need_hash.size == 0 and need_flag.size == 0:
        return template_hash, elicits
    # Lazy: templates.py is only needed when raw prompts arrive.
    from distillguard.model.templates import hash_prompts, reasoning_flags

    n = len(prompt)
    if need_hash.size:
        # Equal prompts hash equal: compute each distinct text once.
        texts = prompt.take(need_hash)
        uniq = pc.unique(texts)
        hashes = pa.array(hash_prompts(uniq.to_pylist(), key=hmac_key), pa.string())
        filled = hashes.take(pc.index_in(texts, uniq))
        template_hash = _scatter(template_hash, need_hash, filled, n)
    if need_flag.size:
        texts = prompt.take(need_flag)
        uniq = pc.unique(texts)
        flags = pa.array(reasoning_flags(uniq.to_pylist()), pa.bool_())
        elicits = _scatter(elicits, need_flag, flags.take(pc.index_in(texts, uniq)), n)
    return template_hash, elicits


def _scatter(base: pa.Array, positions: np.ndarray, values: pa.Array, n: int) -> pa.Array:
    take = np.arange(n, dtype=np.int64)
    take[positions] = n + np.arange(len(positions), dtype=np.int64)
    return pa.concat_arrays([base, values.cast(base.type)]).take(pa.array(take))


# ---------------------------------------------------------------------------
# public API


def normalise(table: pa.Table | pa.RecordBatch, source: str = "<table>", row_offset: int = 0,
              hmac_key: bytes | None = None, rejects: Rejects | None = None) -> pa.Table:
    """Validate `table` and return it in `CANONICAL_SCHEMA` (see module docstring).

    `row_offset` is the 0-based file row of the table's first row, so a streamed
    batch reports rows as numbered in the file. With `rejects` (on_error="skip") bad
    rows are handed to it and left out of the result instead of raising.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    names = table.column_names
    _check_header(source, names)
    for c in INPUT_COLUMNS:
        if names.count(c) > 1:
            raise SchemaError(f"{source}: column '{c}' appears {names.count(c)} times",
                              source=source, column=c)

    n = table.num_rows
    rows = _row_numbers(table, row_offset)
    bad = _BadRows(n) if rejects is not None else None
    ctx = _Ctx(source, rows.to_numpy(), bad)

    def col(name: str) -> pa.Array | None:
        return plain_array(table.column(name)) if name in names else None

    out: dict[str, pa.Array] = {"_row": rows}
    out["account_id"] = _strings(ctx, "account_id", col("account_id"), required=True)
    out["ts"] = _epoch(ctx, "ts", col("ts"), required=True)
    for c in ("prompt_tokens", "completion_tokens"):
        out[c] = _integers(ctx, c, col(c), True, _TOKENS_WHAT, 0, 2**63 - 1, pa.int64())
    for c in _OPTIONAL_STRINGS:
        a = col(c)
        out[c] = pa.nulls(n, pa.string()) if a is None else _strings(ctx, c, a, required=False)
    a = col("max_tokens")
    out["max_tokens"] = (pa.nulls(n, pa.int64()) if a is None else
                         _integers(ctx, "max_tokens", a, False, _TOKENS_WHAT, 0, 2**63 - 1, pa.int64()))
    a = col("status")
    out["status"] = (pa.nulls(n, pa.int32()) if a is None else
                     _integers(ctx, "status", a, False, "expected an integer status code (int32)",
                               -(2**31), 2**31 - 1, pa.int32()))
    a = col("account_created_at")
    out["account_created_at"] = (pa.nulls(n, pa.float64()) if a is None else
                                 _epoch(ctx, "account_created_at", a, required=False))
    a = col("elicits_reasoning")
    out["elicits_reasoning"] = pa.nulls(n, pa.bool_()) if a is None else _booleans(ctx, "elicits_reasoning", a)

    prompt = col("prompt")
    if prompt is not None and prompt.null_count < n:
        prompt = _to_utf8(ctx, "prompt", prompt)
        out["template_hash"], out["elicits_reasoning"] = _hash_prompts(
            prompt, out["template_hash"], out["elicits_reasoning"], hmac_key)

    result = pa.Table.from_arrays([out[c] for c in CANONICAL_COLUMNS], schema=CANONICAL_SCHEMA)
    if bad is not None and bad.mask.any():
        file_rows = ctx.rows
        for i in np.flatnonzero(bad.mask).tolist():
            column, what, value = bad.first[i]
            rejects.add(source, int(file_rows[i]) + 1, column, what, value)
        result = result.filter(pa.array(~bad.mask))
    return result


# ---------------------------------------------------------------------------
# files


def _format_of(path: Path) -> str | None:
    name = path.name.lower()
    for comp in _COMPRESSIONS:
        if name.endswith(comp):
            fmt = _FORMATS.get(Path(name[: -len(comp)]).suffix)
            # Parquet compresses inside the file; an outer layer is not readable.
            return fmt if fmt in ("csv", "jsonl") else None
    return _FORMATS.get(Path(name).suffix)


def _event_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = []
        for f in sorted(p.rglob("*"), key=lambda f: f.relative_to(p).as_posix()):
            rel = f.relative_to(p).parts
            # Hidden files and Spark/Hive markers (_SUCCESS, _metadata) are not data.
            if any(part.startswith((".", "_")) for part in rel) or not f.is_file():
                continue
            if _format_of(f) is None:
                raise SchemaError(f"{f}: unknown event file type (expected .parquet, .pq, .csv, "
                                  f".jsonl, .ndjson or .json)", source=str(f))
            files.append(f)
        if not files:
            raise SchemaError(f"{p}: directory holds no event files", source=str(p))
        return files
    if not p.exists():
        raise SchemaError(f"{p}: no such file or directory", source=str(p))
    if _format_of(p) is None:
        raise SchemaError(f"{p}: unknown event file type (expected .parquet, .pq, .csv, "
                          f".jsonl, .ndjson or .json)", source=str(p))
    return [p]


def _rebatch(batches: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[pa.Table]:
    """Regroup reader batches (sized in bytes for CSV/JSON) into tables of batch_rows rows."""
    buf: list[pa.RecordBatch] = []
    size = 0
    for b in batches:
        if b.num_rows == 0:
            continue
        buf.append(b)
        size += b.num_rows
        while size >= batch_rows:
            t = pa.Table.from_batches(buf)
            yield t.slice(0, batch_rows)
            rest = t.slice(batch_rows)
            buf, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(buf)


def _check_header(source: str, names: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise SchemaError(
            f"{source}: missing required column{plural} {', '.join(repr(c) for c in missing)} "
            f"(columns found: {', '.join(names) if names else 'none'})",
            source=source, column=missing[0],
        )


def _raw_parquet(path: Path, source: str, batch_rows: int,
                 rejects: Rejects | None = None) -> Iterator[pa.Table]:
    # Parquet has no row-level syntax errors: a file that cannot be read is one
    # problem, whatever on_error says; bad values are normalise's to find.
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except (OSError, pa.ArrowException) as e:
        raise SchemaError(f"{source}: not a readable Parquet file: {e}", source=source) from e
    _check_header(source, names)
    cols = [c for c in names if c in INPUT_COLUMNS]
    try:
        yield from _rebatch(pf.iter_batches(batch_size=batch_rows, columns=cols), batch_rows)
    except (OSError, pa.ArrowException) as e:
        raise SchemaError(f"{source}: could not read Parquet data: {e}", source=source) from e


def _csv_options(include: list[str] | None, text_columns: tuple[str, ...] = INPUT_COLUMNS):
    import pyarrow.csv as pcsv

    # Every known column is read as text: arrow's inference would turn "007" into 7
    # and fail mid-stream when a later block disagrees; normalise parses the text.
    convert = pcsv.ConvertOptions(
        column_types={c: pa.string() for c in text_columns},
        include_columns=include or [],
        # Only an empty field is null: "NA" or "null" may well be a real account id.
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    # Prompts are free text and may hold quoted newlines. No invalid_row_handler: arrow
    # decodes the row text for it and fails (an unraisable error) on text not UTF-8;
    # a malformed row is found again by `_csv_locate` / `_csv_rows`, which number it.
    parse = pcsv.ParseOptions(newlines_in_values=True)
    return convert, parse


def _csv_walk(path: Path, source: str) -> Iterator:
    """Python's csv module over a CSV file: first the header (list of names; nothing for an
    empty file), then `(row, fields, problem)` per data row, numbered as arrow numbers them
    (blank lines are not rows). `problem` is the row's SchemaError (malformed row, text in
    an input column that is not UTF-8) or None. Used where arrow cannot number rows: quoted
    fields may span lines."""
    import csv

    # A prompt may be longer than the module's default limit of 128 KiB per field.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with pa.input_stream(str(path)) as f:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None:
            return
        yield header
        rows = 0
        for fields in reader:
            if not fields:  # blank line: arrow skips it too
                continue
            rows += 1
            yield rows, fields, _csv_row_problem(source, header, rows, fields)


def _csv_row_problem(source: str, header: list[str], row: int, fields: list[str]) -> SchemaError | None:
    if len(fields) != len(header):
        what = f"malformed CSV row: expected {len(header)} fields, got {len(fields)}"
        shown = "" if "prompt" in header else f": {_show(','.join(fields))}"
        return SchemaError(f"{source}: row {row}: {what}{shown}", source=source, row=row, reason=what)
    for name, v in zip(header, fields):
        if name in INPUT_COLUMNS and _NOT_UTF8.search(v):
            raw = v.encode("utf-8", "surrogateescape")
            return SchemaError(f"{source}: column '{name}', row {row}: expected UTF-8 text, got "
                               f"{_show(raw, column=name)}", source=source, column=name, row=row,
                               value=None if name in _PRIVATE_COLUMNS else raw, reason="expected UTF-8 text")
    return None


def _csv_locate(path: Path, source: str) -> SchemaError | None:
    """Error path only: the first bad CSV row, with its data-row number (arrow refused the
    file but cannot say which row)."""
    import csv

    try:
        walk = _csv_walk(path, source)
        if next(walk, None) is None:
            return None
        return next((problem for _, _, problem in walk if problem is not None), None)
    except (OSError, csv.Error, UnicodeError):
        return None


def _csv_error(path: Path, source: str, e: Exception) -> SchemaError:
    located = _csv_locate(path, source)
    if located is not None:
        return located
    # Arrow quotes the offending row after "got N": it may hold prompt text.
    detail = re.sub(r"(got \d+)\s*:.*", r"\1", str(e), flags=re.S)
    return SchemaError(f"{source}: could not read CSV: {detail}", source=source)


def _raw_csv(path: Path, source: str, batch_rows: int,
             rejects: Rejects | None = None) -> Iterator[pa.Table]:
    import pyarrow.csv as pcsv

    # First pass reads only the first block, to learn the header: include_columns
    # must name columns that exist, and extra columns are never parsed.
    convert, parse = _csv_options(None)
    try:
        names = pcsv.open_csv(path, convert_options=convert, parse_options=parse).schema.names
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return
        if rejects is None:
            raise _csv_error(path, source, e) from e
        yield from _csv_rows(path, source, batch_rows, 0, rejects)
        return
    except OSError as e:
        raise SchemaError(f"{source}: could not read CSV: {e}", source=source) from e
    _check_header(source, names)
    convert, parse = _csv_options([c for c in names if c in INPUT_COLUMNS])
    emitted = 0
    try:
        reader = pcsv.open_csv(path, convert_options=convert, parse_options=parse)
        for t in _rebatch(reader, batch_rows):
            yield t
            emitted += t.num_rows
        return
    except pa.ArrowInvalid as e:
        # A malformed row or text that is not UTF-8: skip mode reads on row by row.
        if rejects is None:
            raise _csv_error(path, source, e) from e
    except (OSError, pa.ArrowException) as e:
        raise _csv_error(path, source, e) from e
    yield from _csv_rows(path, source, batch_rows, emitted, rejects)


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8


def _csv_rows(path: Path, source: str, batch_rows: int, skip: int,
              rejects: Rejects | None) -> Iterator[pa.Table]:
    """CSV by Python's csv module from data row `skip + 1` on, one row at a time.

    Skip mode's reader once arrow has refused the file: it numbers rows exactly (in
    `_row`) and hands malformed rows and text that is not UTF-8 to `rejects`. Values
    follow arrow's reading: text, an empty field is null, blank lines are not rows.
    """
    import csv

    rows = 0
    try:
        walk = _csv_walk(path, source)
        header = next(walk, None)
        if header is None:
            return
        _check_header(source, header)
        for c in INPUT_COLUMNS:
            if header.count(c) > 1:
                raise SchemaError(f"{source}: column '{c}' appears {header.count(c)} times",
                                  source=source, column=c)
        keep = [(i, name) for i, name in enumerate(header) if name in INPUT_COLUMNS]
        cols: dict[str, list] = {name: [] for _, name in keep}
        numbers: list[int] = []

        def table() -> pa.Table:
            t = {name: pa.array(cols[name], pa.string()) for _, name in keep}
            t["_row"] = pa.array(numbers, pa.int64())
            return pa.table(t)

        for rows, fields, problem in walk:
            if rows <= skip:
                continue
            if problem is not None:
                _row_error(rejects, problem)
                continue
            for i, name in keep:
                cols[name].append(fields[i] or None)
            numbers.append(rows - 1)
            if len(numbers) == batch_rows:
                yield table()
                cols = {name: [] for _, name in keep}
                numbers = []
        if numbers:
            yield table()
    except csv.Error as e:
        raise SchemaError(f"{source}: row {rows + 1}: could not parse CSV: {e}", source=source,
                          row=rows + 1) from e
    except OSError as e:
        raise SchemaError(f"{source}: could not read CSV: {e}", source=source) from e


def _raw_jsonl(path: Path, source: str, batch_rows: int,
               rejects: Rejects | None = None) -> Iterator[pa.Table]:
    import pyarrow.json as pjson

    # Fast path: arrow's reader. It infers types from the first block and stops on a
    # later block that disagrees (a number where a string was, a new field); then the
    # rest of the file is read by the line parser below, which takes any JSON value.
    emitted = 0
    try:
        reader = pjson.open_json(path)
        _check_header(source, reader.schema.names)
        cols = [c for c in reader.schema.names if c in INPUT_COLUMNS]
        # Arrow turns date-like strings into timestamps: right for the time columns,
        # but an id such as "2024-01-01" would come back as other text.
        if any(pa.types.is_timestamp(reader.schema.field(c).type)
               for c in cols if c not in ("ts", "account_created_at")):
            raise pa.ArrowInvalid("date-like text in a text column")
        for t in _rebatch(reader, batch_rows):
            t = t.select(cols)
            yield t
            emitted += t.num_rows
        return
    except OSError as e:
        raise SchemaError(f"{source}: could not read JSON Lines: {e}", source=source) from e
    except pa.ArrowException as e:
        if emitted == 0 and "Empty JSON stream" in str(e):
            return
    yield from _jsonl_lines(path, source, batch_rows, skip=emitted, rejects=rejects)


def _json_text(v: object) -> str | None:
    # Text is what normalise parses best; numbers keep their JSON spelling.
    if v is None:
        return None
    if isinstance(v, str):
        return v
    return json.dumps(v)


def _jsonl_lines(path: Path, source: str, batch_rows: int, skip: int,
                 columns: tuple[str, ...] = INPUT_COLUMNS,
                 rejects: Rejects | None = None,
                 always: tuple[str, ...] = REQUIRED_COLUMNS) -> Iterator[pa.Table]:
    """JSON Lines parsed line by line: slower than arrow, but takes any JSON value in any
    row and numbers rows exactly (in `_row`). Values become text, which normalise parses.
    A line that is not a JSON object, or not UTF-8, is a row-level error (`_row_error`).
    Columns in `always` are there in every batch: a row without such a key has a null
    in it (so it is that row's error, wherever the batch boundaries fall)."""
    cols: dict[str, list] = {c: [] for c in columns}
    numbers: list[int] = []
    # Keys seen so far in the file: an optional key is a column from its first row on,
    # null in rows without it (no header to go by); `always` keys are columns throughout.
    present: set[str] = set()

    def table() -> pa.Table:
        keep = [c for c in columns if c in present or c in always] or list(columns)
        t = {c: pa.array(cols[c], pa.string()) for c in keep}
        t["_row"] = pa.array(numbers, pa.int64())
        return pa.table(t)

    def bad_line(what: str, shown: str) -> None:
        # The line may hold prompt text: it is shown (in fail mode's message) only when not.
        got = "" if '"prompt"' in shown else f", got {_show(shown)}"
        _row_error(rejects, SchemaError(f"{source}: row {rows} (line {lineno}): {what}{got}",
                                        source=source, row=rows, reason=what))

    rows = 0  # data rows seen; blank lines are not rows, as for arrow
    lineno = 0
    try:
        f = pa.input_stream(str(path))  # decompresses by extension, like arrow's readers
        # utf-8-sig: a byte-order mark is not part of the first line (arrow skips it too).
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape")
        for lineno, line in enumerate(text, start=1):
            if not line.strip():
                continue
            rows += 1
            if rows <= skip:
                continue
            if _NOT_UTF8.search(line):
                bad_line("not UTF-8 text", "")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                bad_line(f"invalid JSON: {e.msg}", line.strip())
                continue
            except (ValueError, RecursionError) as e:  # e.g. a 5000-digit number, deep nesting
                bad_line(f"invalid JSON: {type(e).__name__}", line.strip())
                continue
            if not isinstance(obj, dict):
                bad_line("expected a JSON object per line", line.strip())
                continue
            for c in columns:
                if c in obj:
                    present.add(c)
                    cols[c].append(_json_text(obj[c]))
                else:
                    cols[c].append(None)
            numbers.append(rows - 1)
            if len(numbers) == batch_rows:
                yield table()
                cols = {c: [] for c in columns}
                numbers = []
    except OSError as e:
        raise SchemaError(f"{source}: could not read JSON Lines: {e}", source=source) from e
    if numbers:
        yield table()


# ---------------------------------------------------------------------------
# completions logged beside an event log (serving/event_log.py)

# `serve --event-log DIR` logs an event when it is scored (completion unknown: 0 tokens,
# null status) and, apart, each applied `Complete` under DIR/_completions/ (the leading
# '_' keeps the event loaders from reading them as events). Reading DIR fills the events'
# completion_tokens/status from there, so what trains on or scores the log sees the
# completed events the online scorer saw.
COMPLETIONS_DIR = "_completions"
COMPLETION_SCHEMA = pa.schema([
    pa.field("account_id", pa.string(), nullable=False),
    pa.field("session_id", pa.string()),     # the session name the scorer resolved
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("completion_tokens", pa.int64(), nullable=False),
    pa.field("status", pa.int32()),
    pa.field("logged_at", pa.float64(), nullable=False),
])


def _completion_key(account: pa.Array, session: pa.Array, event: pa.Array) -> pa.Array:
    # One string per (account_id, session_id, event_id): "<len>:<account><len>:<session><event>",
    # so no id content can make two different triples one key. A null session is "".
    parts = []
    for a in (account, session):
        a = pc.fill_null(a, "")
        parts += [pc.cast(pc.utf8_length(a), pa.string()), pa.scalar(":"), a]
    return pc.binary_join_element_wise(*parts, pc.fill_null(event, ""), "")


def _key_hash(keys: pa.Array) -> np.ndarray:
    import pandas as pd

    # categorize=False: the keys are mostly distinct, factorizing first costs ~10x more.
    return pd.util.hash_array(keys.to_numpy(zero_copy_only=False), categorize=False)


def completion_dirs(path: str | os.PathLike) -> list[Path]:
    """The `_completions` directories of an event directory (any depth, none under a
    hidden or '_' directory): one per event log written into the tree."""
    p = Path(path)
    if not p.is_dir():
        return []
    return [d for d in sorted(p.rglob(COMPLETIONS_DIR)) if d.is_dir()
            and not any(part.startswith((".", "_")) for part in d.relative_to(p).parts[:-1])]


class Completions:
    """The last logged completion of each (account_id, session_id, event_id), keyed by a
    64-bit hash of the key (8 bytes a row, whatever the ids' lengths); every match is
    checked against the full key, so a hash collision never fills the wrong event."""

    def __init__(self, table: pa.Table):
        import pandas as pd

        # Rows in logging order (files in path order, then logged_at, stable): the last wins.
        table = table.take(pa.array(np.argsort(table["logged_at"].to_numpy(), kind="stable")))
        keys = plain_array(_completion_key(table["account_id"], table["session_id"], table["event_id"]))
        h = _key_hash(keys)
        keep = ~pd.Series(h).duplicated(keep="last").to_numpy()
        self.keys = keys.filter(pa.array(keep))
        self.tokens = plain_array(table["completion_tokens"]).filter(pa.array(keep))
        self.status = plain_array(table["status"]).filter(pa.array(keep))
        self.index = pd.Index(h[keep])
        dropped = np.flatnonzero(~keep)
        if len(dropped):   # a repeat must be the same key, not another key of the same hash
            same = pc.equal(self.keys.take(pa.array(self.index.get_indexer(h[dropped]))), keys.take(pa.array(dropped)))
            if not pc.all(same).as_py():
                raise SchemaError("completions: two different (account_id, session_id, event_id) keys share a "
                                  "64-bit hash; cannot join them")

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Completions | None":
        """Every completion part under `path`'s `_completions` directories (None: there are
        none). A part that cannot be read or lacks a column is an error naming it."""
        import pyarrow.parquet as pq

        tables = []
        for d in completion_dirs(path):
            for f in sorted(d.glob("*.parquet")):
                if f.name.startswith((".", "_")) or not f.is_file():
                    continue
                try:
                    t = pq.read_table(f)
                except (OSError, pa.ArrowException) as e:
                    raise SchemaError(f"{f}: not a readable Parquet file: {e}", source=str(f)) from e
                missing = [c for c in COMPLETION_SCHEMA.names if c not in t.column_names]
                if missing:
                    raise SchemaError(f"{f}: completion part lacks column {missing[0]!r} "
                                      f"(expected {', '.join(COMPLETION_SCHEMA.names)})", source=str(f),
                                      column=missing[0])
                try:
                    t = t.select(COMPLETION_SCHEMA.names).cast(COMPLETION_SCHEMA)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                    raise SchemaError(f"{f}: completion part has columns of the wrong type: {e}",
                                      source=str(f)) from e
                tables.append(t)
        if not tables:
            return None
        return cls(pa.concat_tables(tables))

    def fill(self, t: pa.Table) -> pa.Table:
        """Canonical events -> the same rows, in order, with completion_tokens and status
        taken from the completion of the same (account_id, session_id, event_id), if any."""
        if not len(self) or not t.num_rows:
            return t
        keys = plain_array(_completion_key(t["account_id"], t["session_id"], t["event_id"]))
        pos = self.index.get_indexer(_key_hash(keys))
        hit = pos >= 0
        if not hit.any():
            return t
        at = pa.array(np.where(hit, pos, 0))
        hit[hit] = pc.equal(self.keys.take(at).filter(pa.array(hit)), keys.filter(pa.array(hit))).to_numpy(
            zero_copy_only=False)
        mask = pa.array(hit)
        i_tok, i_st = t.schema.get_field_index("completion_tokens"), t.schema.get_field_index("status")
        t = t.set_column(i_tok, t.schema.field(i_tok),
                         pc.if_else(mask, self.tokens.take(at), plain_array(t["completion_tokens"])))
        return t.set_column(i_st, t.schema.field(i_st),
                            pc.if_else(mask, self.status.take(at), plain_array(t["status"])))


_READERS = {"parquet": _raw_parquet, "csv": _raw_csv, "jsonl": _raw_jsonl}


def iter_event_batches(path: str | os.PathLike, batch_rows: int = 262_144,
                       hmac_key: bytes | None = None, on_error: str = "fail",
                       rejects: Rejects | None = None) -> Iterator[pa.Table]:
    """Stream canonical tables of at most `batch_rows` rows from a file or directory.

    Format by extension: .parquet/.pq, .csv, .jsonl/.ndjson/.json (JSON Lines);
    CSV and JSON Lines may be compressed (.gz, .bz2, .zst, .lz4). A directory is read
    recursively in sorted path order, skipping names starting with '.' or '_'; `_row`
    restarts at 0 in each file. An empty file gives no batches. A directory written by
    `serve --event-log` has its completions in `_completions/` (`Completions`): each
    event's completion_tokens/status come from there when logged (the last one wins).

    on_error="fail" raises SchemaError at the first bad row. on_error="skip" leaves
    bad rows out and hands them to `rejects` (one that only counts when None; the
    count is then logged); whole-file problems raise in both modes.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    own = None
    if on_error == "fail":
        rejects = None
    elif rejects is None:
        rejects = own = Rejects()
    files = _event_files(path)
    completions = Completions.read(path)
    for f in files:
        source = str(f)
        offset = 0
        for raw in _READERS[_format_of(f)](f, source, batch_rows, rejects):
            t = normalise(raw, source=source, row_offset=offset, hmac_key=hmac_key, rejects=rejects)
            offset += raw.num_rows
            if completions is not None:
                t = completions.fill(t)
            if t.num_rows or rejects is None:
                yield t
    if own is not None and own.count:
        log.warning("%s: %s", path, own.summary())


def load_events(path: str | os.PathLike, hmac_key: bytes | None = None, on_error: str = "fail",
                rejects: Rejects | None = None) -> pa.Table:
    """The whole of `path` as one canonical table (empty input -> empty table)."""
    batches = list(iter_event_batches(path, hmac_key=hmac_key, on_error=on_error, rejects=rejects))
    if not batches:
        return CANONICAL_SCHEMA.empty_table()
    return pa.concat_tables(batches)


def load_events_or_skip(path: str | os.PathLike, on_error: str = "fail",
                        rejects_path: str | os.PathLike | None = None,
                        hmac_key: bytes | None = None) -> tuple[pa.Table, Rejects | None]:
    """`load_events` for commands that read a whole file (train, evaluate): with
    on_error="skip" the bad rows go to `rejects_path` (published only if loading
    finished) and the returned Rejects carries their count; with "fail" it is None."""
    if on_error == "fail":
        return load_events(path, hmac_key=hmac_key), None
    rejects = Rejects(rejects_path)
    try:
        table = load_events(path, hmac_key=hmac_key, on_error=on_error, rejects=rejects)
    except BaseException:
        rejects.abort()
        raise
    rejects.close()
    return table, rejects


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
