"""What both batch engines share (`batch` local, `batch_ray` on Ray): the partition step,
reading a partition back, and scoring one partition.

`partition_events` normalises the input batch by batch and writes each account-hash
partition to its own file (whole accounts, so whole sessions); `score_sessions` turns one
partition's events into its output rows through the bundle runtime (`serving.bundle`).
The engines call these and nothing engine-specific, so they write the same rows.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..model import readers, windows
from ..model.sessions import assign_sessions
from . import policy
from .bundle import Bundle, score_events
from .event_log import join_completions

SESSION_COLUMNS = ("session_id", "account_id", "n_events", "p_human", "p_benign_automation",
                   "p_distillation_harvesting", "label", "action", "reasons", "session_score")
EVENT_COLUMNS = ("session_id", "account_id", "event_index", "event_id", "ts", "p_human",
                 "p_benign_automation", "p_distillation_harvesting", "label", "action", "reasons",
                 "session_score")


def score_sessions(bundle: Bundle, table: pa.Table, per_event: bool = False) -> pa.Table:
    """Canonical events (any order) -> output table (session rows, or event rows).

    The per-partition function of both engines: one account-hash partition in, its rows
    out (whole accounts, so whole sessions). Either way every event is scored: a session's
    verdict accumulates evidence over its events (`serving.policy`)."""
    table = assign_sessions(table, gap_s=bundle.gap_s)
    sr = windows.featurize(table)
    last = sr.starts[1:] - 1
    at_last = None
    if not per_event:
        at_last = np.zeros(len(sr.rows), dtype=bool)
        at_last[last] = True
    v = score_events(bundle, sr, describe_at=at_last)
    reasons = [policy.format_reasons(r) for r in v.reasons] if per_event else \
        [policy.format_reasons(v.reasons[i]) for i in last]
    if per_event:
        sel = slice(None)
        event_index = np.arange(len(table)) - np.repeat(sr.starts[:-1], sr.lengths)
    else:
        sel = last
    p_cols = {f"p_{name}": pa.array(v.probs[sel, i].astype(np.float64)) for i, name in enumerate(bundle.labels)}
    common = {**p_cols, "label": pa.array(np.asarray(v.labels, dtype=object)[sel].tolist(), pa.string()),
              "action": pa.array(np.asarray(v.actions, dtype=object)[sel].tolist(), pa.string()),
              "reasons": pa.array(reasons, pa.string()), "session_score": pa.array(v.session_score[sel])}
    if per_event:
        cols = {"session_id": table["session_id"], "account_id": table["account_id"],
                "event_index": pa.array(event_index), "event_id": table["event_id"], "ts": table["ts"], **common}
        return pa.table({k: cols[k] for k in EVENT_COLUMNS})
    at = pa.array(last)
    cols = {"session_id": pc.take(table["session_id"], at), "account_id": pc.take(table["account_id"], at),
            "n_events": pa.array(sr.lengths), **common}
    return pa.table({k: cols[k] for k in SESSION_COLUMNS})


def _partition_of(accounts: pa.ChunkedArray | pa.Array, n: int) -> np.ndarray:
    enc = (accounts.combine_chunks() if isinstance(accounts, pa.ChunkedArray) else accounts).dictionary_encode()
    part = np.array([zlib.crc32(a.encode()) % n for a in enc.dictionary.to_pylist()], dtype=np.int64)
    return part[enc.indices.to_numpy()]


PARTITION_FORMATS = ("arrow", "parquet")


def partition_fs(path: str):
    """(pyarrow filesystem, path on it) of a local path or a URI (s3://, gs://, hdfs://...)."""
    import pyarrow.fs as pafs

    if "://" in str(path):
        return pafs.FileSystem.from_uri(str(path))
    return pafs.LocalFileSystem(), os.path.abspath(path)


def partition_path(out_dir: str, p: int, fmt: str) -> str:
    """Where `partition_events` writes partition p: under out_dir, in out_dir's form (path or URI)."""
    out_dir = str(out_dir)
    base = out_dir.rstrip("/") if "://" in out_dir else os.path.abspath(out_dir)
    return f"{base}/part-{p:05d}.{fmt}"


def partition_events(input_path: Path, out_dir: str, n_parts: int, load_opts: dict, bar=None,
                     fmt: str = "arrow") -> list[str]:
    """The shared partition step of both engines: normalise the input batch by batch and
    append each batch's rows to the file of their account-hash partition under `out_dir`.

    fmt "arrow": Arrow IPC streams (the local engine's spill, read back at once);
    "parquet": the Ray engine's input (compressed, readable by every node when `out_dir`
    is shared storage or a URI). Returns the paths of the non-empty partitions in
    partition order. A partition holds whole accounts, so whole sessions."""
    import pyarrow.parquet as pq

    if fmt not in PARTITION_FORMATS:
        raise ValueError(f"partition format must be one of {', '.join(PARTITION_FORMATS)}, got {fmt!r}")
    fs, _ = partition_fs(out_dir)
    name = lambda p: partition_path(out_dir, p, fmt)   # noqa: E731
    writers = {}

    def write_error(e: OSError) -> OSError:
        return OSError(getattr(e, "errno", None), f"cannot write spill partitions under {out_dir}: "
                                                  f"{getattr(e, 'strerror', None) or e} (set TMPDIR to a larger disk)")

    def close_all():
        for sink, w in writers.values():
            w.close()
            sink.close()

    try:
        for batch in readers.iter_event_batches(input_path, **load_opts, join=join_completions):
            part = _partition_of(batch["account_id"], n_parts)
            # One stable sort by partition, then slices: the rows of a partition keep input order.
            order = np.argsort(part, kind="stable")
            part = part[order]
            batch = batch.take(pa.array(order))
            ps, starts = np.unique(part, return_index=True)
            ends = np.append(starts[1:], len(part))
            try:
                for p, a, b in zip(ps.tolist(), starts.tolist(), ends.tolist()):
                    piece = batch.slice(a, b - a)
                    if p not in writers:
                        sink = fs.open_output_stream(partition_fs(name(p))[1])
                        # lz4: as fast to write and read as no compression here, half the bytes.
                        writers[p] = (sink, pa.ipc.new_stream(sink, piece.schema) if fmt == "arrow"
                                      else pq.ParquetWriter(sink, piece.schema, compression="lz4"))
                    writers[p][1].write_table(piece)
            except OSError as e:
                raise write_error(e) from e
            if bar is not None:
                bar.update(len(batch))
        try:
            close_all()
        except OSError as e:
            raise write_error(e) from e
    except BaseException:
        try:
            close_all()
        except Exception:   # the caller removes the directory anyway
            pass
        raise
    return [name(p) for p in sorted(writers)]


def read_partition(path: str) -> pa.Table:
    """One partition written by `partition_events` (a local path or a URI)."""
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        return pq.read_table(path)
    with pa.OSFile(path, "rb") as f:
        return pa.ipc.open_stream(f).read_all()
