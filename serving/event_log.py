"""Event log: every scored event, and every applied completion, as Parquet parts in a
directory (`serve --event-log DIR`).

What an event row holds: the request-side event columns of the design doc's contract
(`account_id`, `ts`, `prompt_tokens`, `session_id` as the scorer resolved it,
`frame_signature` and `system_signature` (model.frames, as the scorer signed or received
them — never the raw prompt —), an upstream `template_hash` as sent, `elicits_reasoning`,
`max_tokens`, `model`,
`client_fingerprint`, `ip_prefix`, `account_created_at`, `event_id`), the champion's
verdict (`p_human`, `p_benign_automation`, `p_distillation_harvesting`, `label`,
`action`, `reasons` — the reason codes, ';'-joined, '' when none —, `model_version`,
`events_in_session`), the shadow model's verdict on the same event when one is loaded
(`serve --shadow-model`: `shadow_model_version`, `shadow_p_*`, `shadow_label`,
`shadow_action`, `shadow_reasons`; all null without a shadow or when the shadow failed
on that event) and `logged_at` (wall clock, epoch s). A row is written when the event is
*scored* (Score/ScoreBatch), before its completion is known: `completion_tokens` is 0
and `status` null there. Retries (`duplicate` verdicts) are not logged again: one row
per counted event.

Completions: each `Complete` the scorer applied (the first for its event; later ones
and completions of unknown events change nothing online, so they are not logged) is a
row of `COMPLETION_SCHEMA` (`account_id`, `session_id` as resolved, `event_id`,
`completion_tokens`, `status`, `logged_at`) in `DIR/_completions/` (the leading '_' keeps
the loaders from reading those parts as events). Reading DIR with the event loaders and
`join=join_completions` (`model.readers.load_events(DIR, join=join_completions)`, as
`score`, `train`, `evaluate` and `replay` do) fills the events' completion_tokens/status
from there (`Completions`: the last logged completion of an event wins), so what trains
on or scores the log sees the completed events the online scorer saw.

The directory is one the event loaders read: parts are `part-<worker>-<seq>-<utc>.parquet`
(the same under `_completions/`); a part is first written as the hidden
`.part-<worker>-<seq>.parquet.tmp` (skipped by the loaders) and published by
`model.files.publish_atomically` (fsync, rename, directory fsync), so a crash never
leaves a partial part under a readable name. `<worker>` is the
`serve --workers` index (0 alone) and the pid, so processes never share a name.

Hot path: the scorer's writer thread appends one tuple per verdict or completion to a
deque (no lock); a background thread cuts a part every `max_rows` rows or `max_seconds`
after the part's first row, and `close()` (after the server's drain) writes the tails.
A SIGKILL loses only the rows not yet in a part: per stream, at most `max_rows` plus
what arrived during one part write.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..model.files import fsync_dir, publish_atomically
from ..model.schema import CANONICAL_SCHEMA, SchemaError, plain_array

log = logging.getLogger("distillguard.event_log")

# The shadow model's verdict columns (null without a shadow), in row order.
SHADOW_COLUMNS = ("shadow_model_version", "shadow_p_human", "shadow_p_benign_automation",
                  "shadow_p_distillation_harvesting", "shadow_label", "shadow_action", "shadow_reasons")

# `serve --event-log DIR` logs an event when it is scored (completion unknown: 0 tokens,
# null status) and, apart, each applied `Complete` under DIR/_completions/ (the leading
# '_' keeps the event loaders from reading them as events).
COMPLETIONS_DIR = "_completions"
COMPLETION_SCHEMA = pa.schema([
    pa.field("account_id", pa.string(), nullable=False),
    pa.field("session_id", pa.string()),     # the session name the scorer resolved
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("completion_tokens", pa.int64(), nullable=False),
    pa.field("status", pa.int32()),
    pa.field("logged_at", pa.float64(), nullable=False),
])

# The canonical event columns (minus the loader's internal `_row`), so the directory reads
# back as events, then the champion's verdict, then the shadow's.
LOG_SCHEMA = pa.schema([f for f in CANONICAL_SCHEMA if f.name != "_row"] + [
    pa.field("p_human", pa.float64()),
    pa.field("p_benign_automation", pa.float64()),
    pa.field("p_distillation_harvesting", pa.float64()),
    pa.field("label", pa.string()),
    pa.field("action", pa.string()),
    pa.field("reasons", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("events_in_session", pa.int64()),
    pa.field("shadow_model_version", pa.string()),
    pa.field("shadow_p_human", pa.float64()),
    pa.field("shadow_p_benign_automation", pa.float64()),
    pa.field("shadow_p_distillation_harvesting", pa.float64()),
    pa.field("shadow_label", pa.string()),
    pa.field("shadow_action", pa.string()),
    pa.field("shadow_reasons", pa.string()),
    pa.field("logged_at", pa.float64()),
])
LOG_COLUMNS = tuple(LOG_SCHEMA.names)
COMPLETION_COLUMNS = tuple(COMPLETION_SCHEMA.names)
_NO_SHADOW = (None,) * len(SHADOW_COLUMNS)


@dataclass(frozen=True)
class EventLogConfig:
    directory: Path
    max_rows: int = 100_000        # rows per part (rotation by size)
    max_seconds: float = 60.0      # a part is cut at most this long after its first row
    worker: int | None = None      # serve --workers index (None: a single process)
    compression: str = "zstd"

    def __post_init__(self):
        object.__setattr__(self, "directory", Path(self.directory))
        if self.max_rows < 1:
            raise ValueError(f"event log max_rows must be >= 1, got {self.max_rows}")
        if not self.max_seconds > 0:
            raise ValueError(f"event log max_seconds must be > 0, got {self.max_seconds}")


def _codes(reasons) -> str:
    return ";".join(code for code, _ in reasons)


def _row(req, v, now: float) -> tuple:
    """One log row from a ScoreInput and its Verdict (signatures only, never the prompt):
    scoring (serving.scorer.raw_fields) has put the frame it read on the request."""
    th = req.template_hash
    s = v.shadow_verdict
    shadow = _NO_SHADOW if s is None else (s.model_version, s.probs[0], s.probs[1], s.probs[2], s.label,
                                           s.action, _codes(s.reasons))
    return (req.account_id, float(req.ts), int(req.prompt_tokens), 0, v.session_id or None,
            req.frame_signature or None, th or None, req.system_signature or None, req.elicits_reasoning, req.max_tokens if req.max_tokens > 0 else None, req.model or None, None,
            req.client_fingerprint or None, req.ip_prefix or None,
            req.account_created_at if req.account_created_at > 0 else None, req.event_id or None,
            v.probs[0], v.probs[1], v.probs[2], v.label, v.action, _codes(v.reasons), v.model_version,
            int(v.events_in_session), *shadow, now)


class _Stream:
    """One kind of row (events or completions): its buffer, directory, schema and counts."""

    def __init__(self, directory: Path, schema: pa.Schema):
        self.directory, self.schema = directory, schema
        self.buf: collections.deque = collections.deque()   # (monotonic time appended, row tuple)
        self.seq = 0
        self.rows_written = self.parts_written = self.rows_dropped = 0


class EventLog:
    """Buffered, rotating Parquet writer; `append`/`append_completion` are called by one
    thread at a time (the scorer's writer)."""

    def __init__(self, config: EventLogConfig):
        self.config = config
        config.directory.mkdir(parents=True, exist_ok=True)
        # exist_ok: `serve --workers` processes share the directory.
        (config.directory / COMPLETIONS_DIR).mkdir(exist_ok=True)
        fsync_dir(config.directory)   # the subdirectory's entry survives a crash too
        self.tag = f"{config.worker if config.worker is not None else 0}.{os.getpid()}"
        self._events = _Stream(config.directory, LOG_SCHEMA)
        self._completions = _Stream(config.directory / COMPLETIONS_DIR, COMPLETION_SCHEMA)
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()

    # Counts of the event rows (the names `serve` reports) and of the completion rows.
    rows_written = property(lambda self: self._events.rows_written)
    parts_written = property(lambda self: self._events.parts_written)
    rows_dropped = property(lambda self: self._events.rows_dropped)
    completions_written = property(lambda self: self._completions.rows_written)
    completion_parts_written = property(lambda self: self._completions.parts_written)
    completions_dropped = property(lambda self: self._completions.rows_dropped)

    # ------------------------------------------------------------------ hot path
    def append(self, reqs, verdicts) -> None:
        now = time.time()
        t = time.monotonic()
        buf = self._events.buf
        for r, v in zip(reqs, verdicts):
            if v is None or v.duplicate:
                continue
            buf.append((t, _row(r, v, now)))
        if len(buf) >= self.config.max_rows:
            self._wake.set()

    def append_completion(self, account_id: str, session_id: str, event_id: str, completion_tokens: int,
                          status: int) -> None:
        """An applied Complete; `session_id` is the session name the scorer resolved."""
        buf = self._completions.buf
        buf.append((time.monotonic(), (account_id, session_id or None, event_id, int(completion_tokens),
                                       int(status) if status > 0 else None, time.time())))
        if len(buf) >= self.config.max_rows:
            self._wake.set()

    # ------------------------------------------------------------------ background
    def _run(self) -> None:
        cfg = self.config
        tick = min(cfg.max_seconds / 4, 0.5)
        while True:
            self._wake.wait(tick)
            self._wake.clear()
            stopping = self._stopping
            for stream in (self._events, self._completions):
                buf = stream.buf
                while len(buf) >= cfg.max_rows or (
                        buf and (stopping or time.monotonic() - buf[0][0] >= cfg.max_seconds)):
                    rows = [buf.popleft()[1] for _ in range(min(len(buf), cfg.max_rows))]
                    self._write_part(stream, rows)
            if stopping:
                return

    def _write_part(self, stream: _Stream, rows: list[tuple]) -> None:
        d = stream.directory
        seq = stream.seq
        stream.seq += 1
        tmp = d / f".part-{self.tag}-{seq:06d}.parquet.tmp"
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        final = d / f"part-{self.tag}-{seq:06d}-{stamp}.parquet"
        try:
            cols = list(zip(*rows))
            table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, stream.schema)],
                                         schema=stream.schema)
            publish_atomically(final, lambda p: pq.write_table(table, str(p), compression=self.config.compression),
                               tmp=tmp)
        except Exception:
            # Never take serving down with the log: count the rows lost and go on (the
            # temporary file is gone; a part whose directory sync failed stays readable).
            stream.rows_dropped += len(rows)
            log.exception("event log: writing %s failed, %d rows dropped", final, len(rows))
            return
        stream.rows_written += len(rows)
        stream.parts_written += 1

    def flush(self, timeout: float = 30.0) -> None:
        """Close: write every buffered row, stop the thread (appends after this are lost)."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("event log: flush did not finish within %.0f s", timeout)

    close = flush


# ---------------------------------------------------------------------------
# reading the completions back: the loaders' join

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


def join_completions(path: str | os.PathLike) -> Callable[[pa.Table], pa.Table] | None:
    """The event loaders' `join` (model.readers.Join) for a directory an event log wrote:
    `Completions.fill` of every completion logged under it, or None when there are none."""
    completions = Completions.read(path)
    return None if completions is None else completions.fill
