"""Event log: every scored event, as Parquet parts in a directory (`serve --event-log DIR`).

What a row holds: the request-side event columns of the design doc's contract
(`account_id`, `ts`, `prompt_tokens`, `session_id` as the scorer resolved it,
`template_hash` — never the raw prompt —, `elicits_reasoning`, `max_tokens`, `model`,
`client_fingerprint`, `ip_prefix`, `account_created_at`, `event_id`), the verdict
(`p_human`, `p_benign_automation`, `p_distillation_harvesting`, `label`, `action`,
`model_version`, `events_in_session`) and `logged_at` (wall clock, epoch s).
A row is written when the event is *scored* (Score/ScoreBatch). Its completion is not
known then: `completion_tokens` is 0 (what the online scorer holds until `Complete`) and
`status` is null; completions are not logged. Retries (`duplicate` verdicts) are not
logged again: one row per counted event.

The directory is one the event loaders read (`distillguard score/train --events DIR`):
parts are `part-<worker>-<seq>-<utc>.parquet`; a part is first written as the hidden
`.part-<worker>-<seq>.parquet.tmp` (skipped by `schema.iter_event_batches`), fsynced and
renamed, so a crash never leaves a partial part under a readable name. `<worker>` is the
`serve --workers` index (0 alone) and the pid, so processes never share a name.

Hot path: the scorer's writer thread appends one tuple per verdict to a deque (no lock);
a background thread cuts a part every `max_rows` rows or `max_seconds` after the part's
first row, and `close()` (after the server's drain) writes the tail. A SIGKILL loses only
the rows not yet in a part: at most `max_rows` plus what arrived during one part write.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..model.schema import CANONICAL_SCHEMA

log = logging.getLogger("distillguard.event_log")

# The canonical event columns (minus the loader's internal `_row`), so the directory reads
# back as events, then the verdict.
LOG_SCHEMA = pa.schema([f for f in CANONICAL_SCHEMA if f.name != "_row"] + [
    pa.field("p_human", pa.float64()),
    pa.field("p_benign_automation", pa.float64()),
    pa.field("p_distillation_harvesting", pa.float64()),
    pa.field("label", pa.string()),
    pa.field("action", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("events_in_session", pa.int64()),
    pa.field("logged_at", pa.float64()),
])
LOG_COLUMNS = tuple(LOG_SCHEMA.names)


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


def _row(req, v, now: float) -> tuple:
    """One log row from a ScoreInput and its Verdict (template hash only, never the prompt)."""
    th = req.template_hash
    if not th and req.prompt:
        from ..model import templates
        th = templates.template_hash(req.prompt)
    return (req.account_id, float(req.ts), int(req.prompt_tokens), 0, v.session_id or None, th or None,
            req.elicits_reasoning, req.max_tokens if req.max_tokens > 0 else None, req.model or None, None,
            req.client_fingerprint or None, req.ip_prefix or None,
            req.account_created_at if req.account_created_at > 0 else None, req.event_id or None,
            v.probs[0], v.probs[1], v.probs[2], v.label, v.action, v.model_version,
            int(v.events_in_session), now)


class EventLog:
    """Buffered, rotating Parquet writer; `append` is called by one thread at a time."""

    def __init__(self, config: EventLogConfig):
        self.config = config
        config.directory.mkdir(parents=True, exist_ok=True)
        self.tag = f"{config.worker if config.worker is not None else 0}.{os.getpid()}"
        self._buf: collections.deque = collections.deque()
        self._seq = 0
        self.rows_written = 0
        self.parts_written = 0
        self.rows_dropped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="event-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ hot path
    def append(self, reqs, verdicts) -> None:
        now = time.time()
        buf = self._buf
        for r, v in zip(reqs, verdicts):
            if v is None or v.duplicate:
                continue
            buf.append((time.monotonic(), _row(r, v, now)))
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
            buf = self._buf
            while len(buf) >= cfg.max_rows or (buf and (stopping or time.monotonic() - buf[0][0] >= cfg.max_seconds)):
                rows = [buf.popleft()[1] for _ in range(min(len(buf), cfg.max_rows))]
                self._write_part(rows)
            if stopping:
                return

    def _write_part(self, rows: list[tuple]) -> None:
        d = self.config.directory
        seq = self._seq
        self._seq += 1
        tmp = d / f".part-{self.tag}-{seq:06d}.parquet.tmp"
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        final = d / f"part-{self.tag}-{seq:06d}-{stamp}.parquet"
        try:
            cols = list(zip(*rows))
            table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, LOG_SCHEMA)],
                                         schema=LOG_SCHEMA)
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression=self.config.compression)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except Exception:
            # Never take serving down with the log: count the rows lost and go on.
            self.rows_dropped += len(rows)
            log.exception("event log: writing %s failed, %d rows dropped", final.name, len(rows))
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return
        self.rows_written += len(rows)
        self.parts_written += 1

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
