"""Event files -> canonical tables: format detection, the Parquet / CSV / JSON Lines
readers, and the loaders (`iter_event_batches`, `load_events`, `load_events_or_skip`).
Every batch read goes through `model.schema.normalise`, whose docstring says how values
are validated; this module is about files.

- Format by extension: .parquet/.pq, .csv, .jsonl/.ndjson/.json (JSON Lines); CSV and
  JSON Lines may be compressed (.gz, .bz2, .zst, .lz4).
- JSON Lines: arrow's reader first; where it refuses the file (types that change
  between blocks, a field first seen late, date-like ids) the rest is read by a
  line parser, so such files load, only more slowly.
- An empty file (no bytes, a header only, or a Parquet file with no rows) yields
  zero batches from `iter_event_batches`; `load_events` then returns an empty
  table with `CANONICAL_SCHEMA`. A header that lacks a required column is still an
  error. An empty directory is an error (a mistyped path, most likely).
- A directory may carry more than event files: the loaders take a `join`, a step built
  once per path and applied to every normalised batch. The event log's completions
  (`serve --event-log DIR` logs them apart, under `DIR/_completions/`) are joined so by
  `serving.event_log.join_completions`; this module knows nothing of them (model/ ranks
  below serving/).

On errors (`on_error`): "fail" (the default) stops at the first bad row. "skip" drops
each bad row, keeps every good one, and hands the dropped ones to a `schema.Rejects`.
Row-level problems are skipped: a value of the wrong type, a null or empty required
value, a negative count, an unparseable time, a malformed CSV row, a bad JSON line, text
that is not UTF-8. Whole-file problems still fail: an unreadable or truncated Parquet
file, a missing required column, a duplicated column, an unknown file type. Readers hand
their row-level errors to `_row_error`. Once arrow refuses a CSV file in skip mode (a
malformed row, text that is not UTF-8), the rest of it is read by Python's csv module
(slower; rows numbered exactly), as JSON Lines falls back to its line parser. Rejects are
listed in the order found, not sorted by row.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from .schema import (CANONICAL_SCHEMA, INPUT_COLUMNS, REQUIRED_COLUMNS, _PRIVATE_COLUMNS, Rejects,
                     SchemaError, _check_header, _show, normalise)

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

log = logging.getLogger("distillguard.readers")

# A per-path step over the normalised batches (see the module docstring): join(path)
# returns a function table -> table (same rows, same schema), or None: nothing to join.
Join = Callable[[str | os.PathLike], Callable[[pa.Table], pa.Table] | None]


def _row_error(rejects: Rejects | None, e: SchemaError) -> None:
    """A reader's row-level error: raised in fail mode, recorded in skip mode."""
    if rejects is None:
        raise e
    rejects.reject(e)


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


_READERS = {"parquet": _raw_parquet, "csv": _raw_csv, "jsonl": _raw_jsonl}


def iter_event_batches(path: str | os.PathLike, batch_rows: int = 262_144,
                       hmac_key: bytes | None = None, on_error: str = "fail",
                       rejects: Rejects | None = None, join: Join | None = None) -> Iterator[pa.Table]:
    """Stream canonical tables of at most `batch_rows` rows from a file or directory.

    Format by extension: .parquet/.pq, .csv, .jsonl/.ndjson/.json (JSON Lines);
    CSV and JSON Lines may be compressed (.gz, .bz2, .zst, .lz4). A directory is read
    recursively in sorted path order, skipping names starting with '.' or '_'; `_row`
    restarts at 0 in each file. An empty file gives no batches.

    `join(path)` (see `Join`), when given, is built once, after the files are listed and
    before the first is read, and applied to every normalised batch; e.g.
    `serving.event_log.join_completions` fills an event log's completion_tokens/status
    from its `_completions/` parts.

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
    fill = join(path) if join is not None else None
    for f in files:
        source = str(f)
        offset = 0
        for raw in _READERS[_format_of(f)](f, source, batch_rows, rejects):
            t = normalise(raw, source=source, row_offset=offset, hmac_key=hmac_key, rejects=rejects)
            offset += raw.num_rows
            if fill is not None:
                t = fill(t)
            if t.num_rows or rejects is None:
                yield t
    if own is not None and own.count:
        log.warning("%s: %s", path, own.summary())


def load_events(path: str | os.PathLike, hmac_key: bytes | None = None, on_error: str = "fail",
                rejects: Rejects | None = None, join: Join | None = None) -> pa.Table:
    """The whole of `path` as one canonical table (empty input -> empty table)."""
    batches = list(iter_event_batches(path, hmac_key=hmac_key, on_error=on_error, rejects=rejects, join=join))
    if not batches:
        return CANONICAL_SCHEMA.empty_table()
    return pa.concat_tables(batches)


def load_events_or_skip(path: str | os.PathLike, on_error: str = "fail",
                        rejects_path: str | os.PathLike | None = None,
                        hmac_key: bytes | None = None,
                        join: Join | None = None) -> tuple[pa.Table, Rejects | None]:
    """`load_events` for commands that read a whole file (train, evaluate): with
    on_error="skip" the bad rows go to `rejects_path` (published only if loading
    finished) and the returned Rejects carries their count; with "fail" it is None."""
    if on_error == "fail":
        return load_events(path, hmac_key=hmac_key, join=join), None
    rejects = Rejects(rejects_path)
    try:
        table = load_events(path, hmac_key=hmac_key, on_error=on_error, rejects=rejects, join=join)
    except BaseException:
        rejects.abort()
        raise
    rejects.close()
    return table, rejects
