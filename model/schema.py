"""The canonical event table: its columns, the label names, and `normalise`, which
validates any event table (a file's batch from `model.readers`, or an in-memory table
from the gateway) into `CANONICAL_SCHEMA` (docs/architecture.md, "Canonical event table").

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
- `frame_signature` (model.frames, 40 hex) is what the features read. Where it is null
  it is filled from an upstream `template_hash` (a legacy one-band signature), else from
  `prompt`; `system_prompt` fills `system_signature` the same way. `prompt` also fills
  `elicits_reasoning` where that is null. The texts are then dropped.
- A given signature must parse (40 hex, the current version) and carry the key id of the key the
  loader signs with (`hmac_key`; key id 0 without one): a mismatch is an error naming the
  column and row, never a silent mix of keys. Legacy signatures carry no key id.
- Prompt text never appears in an error message or a rejects file: a bad `prompt`
  value is reported by row and column only.

On errors: without a `Rejects` (on_error="fail", model.readers) `normalise` stops at the
first bad row as above. With one ("skip") it drops each bad row, keeps every good one,
and hands the dropped ones to the `Rejects` (counted, and written to a JSON Lines file
when it has a path). Both modes go through the same validation code: in skip mode
`_Ctx.fail` marks rows instead of raising.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .files import publish, temp_path

LABELS = ("human", "benign_automation", "distillation_harvesting")

REQUIRED_COLUMNS = ("account_id", "ts", "prompt_tokens", "completion_tokens")
# Optional *input* columns. `prompt` is read, hashed and dropped; it is not in the
# canonical table. `elicits_reasoning` travels with a gateway-computed hash.
OPTIONAL_COLUMNS = (
    "session_id",
    "frame_signature",
    "template_hash",
    "elicits_reasoning",
    "prompt",
    "system_signature",
    "system_prompt",
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
        pa.field("frame_signature", pa.string()),
        pa.field("template_hash", pa.string()),
        pa.field("system_signature", pa.string()),
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
_PRIVATE_COLUMNS = ("prompt", "system_prompt")


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
    (`files.temp_path`) and published by `close()` (`files.publish`), so a reader never
    sees a partial file; `abort()` removes it.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.by_column: Counter = Counter()
        self._f = None
        self._tmp = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = temp_path(self.path)
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
            self._f.close()
            self._f = None
            # best_effort_dir: the rejects file never synced its directory before publish
            # did; a filesystem that cannot must not fail the load that wrote it.
            publish(self._tmp, self.path, best_effort_dir=True)
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


def _check_signatures(ctx, column: str, sig: pa.Array, hmac_key: bytes | None) -> pa.Array:
    """A given signature column, each distinct value parsed once: a bad one fails its rows."""
    from distillguard.model.frames import SignatureError, key_id, parse_signature

    want = key_id(hmac_key)
    uniq = pc.unique(sig.drop_null())
    bad = []
    for v in uniq.to_pylist():
        try:
            parse_signature(v, expect_key_id=want)
        except SignatureError as e:
            bad.append((v, str(e)))
    for v, why in bad:
        ctx.fail(column, _np_bool(pc.fill_null(pc.equal(sig, v), False)),
                 f"{why}{'' if hmac_key else '; pass the signing key (--signature-key)'}", sig)
    return sig


def _sign(texts: pa.Array, given: pa.Array, legacy: pa.Array | None, hmac_key: bytes | None,
          system: bool) -> pa.Array:
    """Fill a null signature from the row's legacy hash, else from its text."""
    from distillguard.model.frames import legacy_signature, sign_prompts, system_signature

    n = len(given)
    out = given
    if legacy is not None:
        need = np.flatnonzero(~_np_bool(out.is_valid()) & _np_bool(legacy.is_valid()))
        if need.size:
            vals = legacy.take(need)
            uniq = pc.unique(vals)
            sigs = pa.array([legacy_signature(v) for v in uniq.to_pylist()], pa.string())
            out = _scatter(out, need, sigs.take(pc.index_in(vals, uniq)), n)
    if texts is not None:
        need = np.flatnonzero(~_np_bool(out.is_valid()) & _np_bool(texts.is_valid()))
        if need.size:
            # Equal texts sign equal: compute each distinct text once.
            vals = texts.take(need)
            uniq = pc.unique(vals)
            u = uniq.to_pylist()
            sigs = [system_signature(t, hmac_key) for t in u] if system else sign_prompts(u, key=hmac_key)
            out = _scatter(out, need, pa.array(sigs, pa.string()).take(pc.index_in(vals, uniq)), n)
    return out


def _reasoning(prompt: pa.Array, elicits: pa.Array) -> pa.Array:
    """Fill a null elicits_reasoning from the prompt text of that row."""
    need_flag = np.flatnonzero(_np_bool(prompt.is_valid()) & ~_np_bool(elicits.is_valid()))
    if need_flag.size == 0:
        return elicits
    from distillguard.model.templates import reasoning_flags

    texts = prompt.take(need_flag)
    uniq = pc.unique(texts)
    flags = pa.array(reasoning_flags(uniq.to_pylist()), pa.bool_())
    return _scatter(elicits, need_flag, flags.take(pc.index_in(texts, uniq)), len(prompt))


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

    for sig_col, text_col, legacy in (("frame_signature", "prompt", "template_hash"),
                                      ("system_signature", "system_prompt", None)):
        a = col(sig_col)
        given = (pa.nulls(n, pa.string()) if a is None else
                 _check_signatures(ctx, sig_col, _strings(ctx, sig_col, a, required=False), hmac_key))
        text = col(text_col)
        text = _to_utf8(ctx, text_col, text) if text is not None and text.null_count < n else None
        out[sig_col] = _sign(text, given, out[legacy] if legacy else None, hmac_key, system=sig_col != "frame_signature")
        if text_col == "prompt" and text is not None:
            out["elicits_reasoning"] = _reasoning(text, out["elicits_reasoning"])

    result = pa.Table.from_arrays([out[c] for c in CANONICAL_COLUMNS], schema=CANONICAL_SCHEMA)
    if bad is not None and bad.mask.any():
        file_rows = ctx.rows
        for i in np.flatnonzero(bad.mask).tolist():
            column, what, value = bad.first[i]
            rejects.add(source, int(file_rows[i]) + 1, column, what, value)
        result = result.filter(pa.array(~bad.mask))
    return result


def _check_header(source: str, names: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise SchemaError(
            f"{source}: missing required column{plural} {', '.join(repr(c) for c in missing)} "
            f"(columns found: {', '.join(names) if names else 'none'})",
            source=source, column=missing[0],
        )
