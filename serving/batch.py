"""Offline batch scoring: events file -> one row per session (or per event with per_event).

Streaming: input batches are normalised as they are read and, for inputs larger than one
partition, spilled to Arrow IPC files partitioned by a hash of account_id (sessions never
cross accounts), so only one partition's events are in memory at a time.

Two engines, one code path: `partitions.partition_events` (the shared
partition-by-account-hash step) and `partitions.score_sessions` (one partition's events ->
its output table) are called by the local engine here and by the Ray engine (`batch_ray`,
one onnxruntime session per Ray actor) alike; the file skeleton (`score_file`: rejects, progress, atomic output) is also
shared, so both engines write the same rows.

Files written:
- the output is written under a temporary name in the output's directory,
  `.<name>.tmp-<pid>` (`model.files.temp_path`), then published over the final name
  (`model.files.publish`: fsync, rename, directory fsync): a reader sees the old
  file or the complete new one, never a partial one. Any failure (a bad row in fail mode,
  disk full, Ctrl-C) removes the temporary file and leaves an earlier output as it was.
  A process killed with SIGKILL (or a machine crash) cannot clean up: a stale
  `.<name>.tmp-<pid>` may remain beside the output, never under the final name.
- spill partitions (inputs above `partition_rows`; always with engine="ray") go to a
  `distillguard-*` directory under $TMPDIR, or under `spill_dir` with the Ray engine
  (normalised events: ids, counts, times, template hashes; no prompt text), removed when
  scoring ends (not after SIGKILL).
- with on_error="skip", the rejects file (see `schema.Rejects`), by default
  `<output>.rejects.jsonl`, written and renamed the same way as the output.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from ..model import readers
from ..model.files import publish, temp_path
from ..model.schema import Rejects, SchemaError
from .bundle import Bundle, load_bundle
from .event_log import join_completions
from .partitions import (EVENT_COLUMNS, SESSION_COLUMNS, partition_events, read_partition,
                         score_sessions)

ENGINES = ("local", "ray")


@dataclass
class ScoreStats:
    events: int = 0
    sessions: int = 0
    seconds: float = 0.0
    engine: str = "local"
    startup_s: float = 0.0           # Ray: starting or joining the cluster (part of `seconds`)
    skipped: int = 0                 # rows left out under on_error="skip"
    skipped_summary: str = ""
    rejects_path: Path | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


class _Writer:
    """Writes output tables to .parquet, .csv or .jsonl, batch by batch, under a
    temporary name; `close()` renames the complete file into place."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = path.suffix.lower().lstrip(".")
        if self.kind not in ("parquet", "csv", "jsonl"):
            raise ValueError(f"output {path}: unsupported extension (use .parquet, .csv or .jsonl)")
        if path.is_dir():
            raise ValueError(f"output {path}: is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(path)
        self._w = None
        self._f = None

    def _error(self, e: OSError) -> OSError:
        # Arrow's messages name no file; say which output failed and that it was not touched.
        reason = os.strerror(e.errno) if e.errno else str(e)
        return OSError(e.errno, f"cannot write {self.path}: {reason} "
                                f"({self.path} was left as it was; nothing written under that name)")

    def write(self, t: pa.Table):
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        try:
            if self.kind == "parquet":
                self._w = self._w or pq.ParquetWriter(str(self.tmp), t.schema)
                self._w.write_table(t)
            elif self.kind == "csv":
                self._w = self._w or pacsv.CSVWriter(str(self.tmp), t.schema)
                self._w.write_table(t)
            else:
                self._f = self._f or open(self.tmp, "w", encoding="utf-8")
                t.to_pandas().to_json(self._f, orient="records", lines=True)
        except OSError as e:
            raise self._error(e) from e

    def abort(self):
        """Drop the temporary file; an earlier file at the final path is left as it was."""
        for h in (self._w, self._f):
            if h is not None:
                try:
                    h.close()
                except Exception:  # e.g. the disk is still full: the file goes anyway
                    pass
        self._w = self._f = None
        self.tmp.unlink(missing_ok=True)

    def close(self, schema_if_empty: pa.Schema):
        """Finish the file and publish it over the final path (files.publish)."""
        if self._w is None and self._f is None:
            self.write(schema_if_empty.empty_table())
        try:
            if self._w is not None:
                self._w.close()
            if self._f is not None:
                self._f.close()
            self._w = self._f = None
            # best_effort_dir: not every filesystem can sync a directory; the output is
            # complete and in place by then.
            publish(self.tmp, self.path, best_effort_dir=True)
        except OSError as e:
            raise self._error(e) from e


def _estimate_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    total = 0
    for f in files:
        try:
            if f.suffix.lower() in (".parquet", ".pq"):
                total += pq.ParquetFile(f).metadata.num_rows
                continue
        except (OSError, pa.ArrowException):
            pass   # unreadable: the loader reports it, naming the file
        total += f.stat().st_size // 80   # ~80 bytes per text row: only sizes the partitions
    return total


def default_rejects_path(output_path: str | Path) -> Path:
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + ".rejects.jsonl")


def score_file(model: str | Path | Bundle, input_path: str | Path, output_path: str | Path,
               per_event: bool = False, partition_rows: int = 2_000_000, hmac_key: bytes | None = None,
               progress: bool = True, threads: int = 0, on_error: str = "fail",
               rejects_path: str | Path | None = None, engine: str = "local", address: str | None = None,
               actors: int = 0, spill_dir: str | None = None) -> ScoreStats:
    """Score an events file (or directory) and write the output table; returns counts and time.

    on_error="skip" leaves bad input rows out and writes them (row, column, error; never
    prompt text) to `rejects_path` (default `<output>.rejects.jsonl`).

    engine="ray" scores the account-hash partitions on a Ray actor pool (`batch_ray`):
    a local Ray instance, or the cluster at `address`; `actors` actors (0: one per CPU of
    the cluster), partitions written under `spill_dir` (shared storage on a multi-node
    cluster). Reading, rejects and the output file are this function's, as for "local"."""
    t0 = time.perf_counter()
    if on_error not in readers.ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(readers.ON_ERROR)}, got {on_error!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local" and (address or spill_dir):
        raise ValueError("address and spill_dir are options of engine='ray'")
    bundle = model if isinstance(model, Bundle) else load_bundle(model, threads=threads)
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise SchemaError(f"{input_path}: no such file or directory")
    writer = _Writer(output_path)
    stats = ScoreStats(engine=engine)
    rejects = bar = outputs = None
    try:
        if on_error == "skip":
            stats.rejects_path = Path(rejects_path) if rejects_path else default_rejects_path(output_path)
            rejects = Rejects(stats.rejects_path)
        load = dict(hmac_key=hmac_key, on_error=on_error, rejects=rejects)
        est = _estimate_rows(input_path)
        n_parts = max(1, math.ceil(est / partition_rows))
        # Two passes over the events (read/partition, then score): the bar counts both.
        bar = tqdm(total=2 * est, unit="ev", unit_scale=True, disable=not progress, file=sys.stderr,
                   desc="reading")
        if engine == "ray":
            from .batch_ray import ray_outputs

            outputs = ray_outputs(bundle, input_path, per_event, load, n_parts, bar, stats,
                                  address=address, actors=actors, spill_dir=spill_dir, progress=progress)
        else:
            outputs = _local_outputs(bundle, input_path, per_event, load, n_parts, bar)
        for n_events, out in outputs:
            bar.set_description("scoring")
            writer.write(out)
            stats.events += n_events
            stats.sessions += len(out) if not per_event else int(pc.count_distinct(out["session_id"]).as_py())
            bar.update(n_events)
        bar.total = 2 * stats.events
        bar.refresh()
        if rejects is not None:
            rejects.close()
            stats.skipped, stats.skipped_summary = rejects.count, rejects.summary()
        # Last: the rename that publishes the output.
        writer.close(pa.schema([(c, pa.string()) for c in (EVENT_COLUMNS if per_event else SESSION_COLUMNS)]))
    except BaseException:
        writer.abort()   # an incomplete output must not pass for a result
        if rejects is not None:
            rejects.abort()
        raise
    finally:
        if outputs is not None:
            outputs.close()   # removes spill partitions; stops a Ray instance started here
        if bar is not None:
            bar.close()
    stats.seconds = time.perf_counter() - t0
    return stats


def _local_outputs(bundle: Bundle, input_path: Path, per_event: bool, load_opts: dict, n_parts: int, bar):
    """The local engine: yield (events, output table) per partition, scored in this process."""
    if n_parts == 1:
        batches = []
        for b in readers.iter_event_batches(input_path, **load_opts, join=join_completions):
            batches.append(b)
            bar.update(len(b))
        if batches and sum(len(b) for b in batches):
            table = pa.concat_tables(batches)
            yield len(table), score_sessions(bundle, table, per_event=per_event)
        return
    with tempfile.TemporaryDirectory(prefix="distillguard-") as tmp:
        for path in partition_events(input_path, tmp, n_parts, load_opts, bar, fmt="arrow"):
            table = read_partition(path)
            yield len(table), score_sessions(bundle, table, per_event=per_event)
