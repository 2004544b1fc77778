"""Snapshot of the live session state: written on shutdown, restored on start.

A rolling restart would otherwise blind the scorer: every session, a flagged harvester's
included, would start again from zero events. `serve --snapshot PATH` writes the store
when it stops (after in-flight calls have finished) and reads it back when it starts.

The file is a plain NumPy .npz archive (`np.load(..., allow_pickle=False)` reads it; no
pickled objects, so a tampered file cannot run code). It holds, for every live session in
eviction order (unflagged least recently used first, then flagged):
  account_id / session_id   UTF-8 blobs + offsets (what the gateway sent, as in memory)
  generation, flagged        implicit-session number k, flagged-list membership
  length, created_at, last_ts, agg__*   the slot's scalars and running aggregates
                             (agg__tcount sparse: session index, bucket, count)
  decision                   the policy's decision state, (n, 2) records as bytes
  ring__*                    the held raw events, only the `length` valid ones, flattened
  meta                       JSON: format, feature-spec hash, model version, ring size,
                             session gap, capacity, event-time watermark, written_at
Raw prompts are not in it because they are not in the store (only template keys are).

A snapshot written under another feature spec (a deploy with a new model) keeps every
session's ring, flag and generation; its aggregates would mean something else, so they are
not read but rebuilt from the ring (empty as of the ring's oldest event: lossy where the
session was longer than its ring, counted in the store's `rebuilt`). Restore is refused,
with a warning and an empty store, only when the ring's raw-field format
(`state.RAW_FORMAT`) differs: its held events would be misread. An
unreadable or inconsistent file is logged and ignored: a snapshot never stops a server
from starting. If the snapshot holds more sessions than the store's capacity, the ones
eviction would take first are dropped; if its ring is longer than the store's, the
oldest surplus events are folded into the aggregates (what `append` does), so the score
of the next event is the one an unrestarted scorer gives.

Writes are atomic: a temporary file (mode 0600) in the same directory, published by
`model.files.publish_atomically` (fsync, rename, directory fsync).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ..model import features
from ..model.features import STATE_FIELDS, RawEvents
from . import policy
from .state import _RAW_DTYPES, _RING_DTYPES, _RING_RAW, DECIDERS, RAW_FORMAT, MemoryStore, _reset_aggregates
from ..model.files import publish_atomically

log = logging.getLogger("distillguard.snapshot")
FORMAT = "distillguard-session-snapshot/2"


class SnapshotError(RuntimeError):
    """The snapshot is unreadable or inconsistent."""


class SnapshotMismatch(SnapshotError):
    """The snapshot is sound but was written for another feature spec."""


# ---------------------------------------------------------------------------- helpers

def _pack(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    enc = [s.encode("utf-8") for s in strings]
    off = np.zeros(len(enc) + 1, dtype=np.int64)
    if enc:
        np.cumsum([len(b) for b in enc], out=off[1:])
    return np.frombuffer(b"".join(enc), dtype=np.uint8).copy(), off


def _unpack(blob: np.ndarray, off: np.ndarray, n: int) -> list[str]:
    if off.shape != (n + 1,) or off[0] != 0 or off[-1] != blob.size or np.any(np.diff(off) < 0):
        raise SnapshotError("string offsets are inconsistent")
    raw = blob.tobytes()
    o = off.tolist()
    return [raw[o[i]:o[i + 1]].decode("utf-8") for i in range(n)]


def _ring_index(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (session index, position) of every held event, session by session."""
    idx = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return idx, pos


# ---------------------------------------------------------------------------- save / load

def save(store: MemoryStore, path: str | Path, *, feature_spec_hash: str, model_version: str = "") -> dict:
    """Write the store's live sessions to `path` atomically; returns sessions, bytes, seconds.
    The caller makes sure nothing mutates the store meanwhile."""
    t0 = time.perf_counter()
    path = Path(path)
    entries = list(store.sessions_in_order())
    n = len(entries)
    slots = np.fromiter((m.slot for _, m, _ in entries), dtype=np.int64, count=n)
    lengths = store.length[slots].astype(np.int64)
    idx, pos = _ring_index(lengths)
    rows = slots[idx]
    acct_blob, acct_off = _pack([k[0] for k, _, _ in entries])
    sid_blob, sid_off = _pack([k[1] for k, _, _ in entries])
    arrays = {
        "acct_blob": acct_blob, "acct_off": acct_off, "sid_blob": sid_blob, "sid_off": sid_off,
        "generation": np.fromiter((m.generation for _, m, _ in entries), dtype=np.int64, count=n),
        "flagged": np.fromiter((f for _, _, f in entries), dtype=np.bool_, count=n),
        "length": lengths.astype(np.int16), "created_at": store.created_at[slots], "last_ts": store.last_ts[slots],
        # (n, DECIDERS) structured records as raw bytes: npz stores them without pickling
        "decision": np.ascontiguousarray(store.decision[slots]).view(np.uint8).reshape(n, -1),
    }
    for name in STATE_FIELDS:
        if name == "tcount":
            tc = store.agg.tcount[slots]
            si, bi = np.nonzero(tc)
            arrays["agg__tcount_session"] = si.astype(np.int64)
            arrays["agg__tcount_bucket"] = bi.astype(np.int32)
            arrays["agg__tcount_count"] = tc[si, bi]
        else:
            arrays[f"agg__{name}"] = getattr(store.agg, name)[slots]
    for name in _RING_DTYPES:
        arrays[f"ring__{name}"] = store.ring[name][rows, pos]
    meta = {"format": FORMAT, "raw_format": RAW_FORMAT, "feature_spec_hash": feature_spec_hash,
            "model_version": model_version,
            "sessions": n, "flagged": int(arrays["flagged"].sum()), "events_held": int(lengths.sum()),
            "ring_size": store.ring_size, "gap_s": store.gap_s, "capacity": store.capacity,
            "frame_slots": int(store.agg.tcount.shape[1]), "watermark": float(store.watermark),
            "written_at": time.time()}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8).copy()

    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        # 0600: the file holds account and session ids (see docs/security.md).
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            np.savez(f, **arrays)

    publish_atomically(path, write, best_effort_dir=True)
    return {"sessions": n, "flagged": meta["flagged"], "events_held": meta["events_held"],
            "bytes": path.stat().st_size, "seconds": time.perf_counter() - t0}


def read_meta(path: str | Path) -> dict:
    with np.load(Path(path), allow_pickle=False) as z:
        return json.loads(z["meta"].tobytes().decode("utf-8"))


def load(path: str | Path, store: MemoryStore, *, feature_spec_hash: str) -> dict:
    """Restore the sessions of `path` into an empty `store`; returns restored, dropped,
    folded, seconds. Raises SnapshotMismatch / SnapshotError, leaving the store untouched."""
    t0 = time.perf_counter()
    if len(store):
        raise SnapshotError("restore needs an empty store")
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except Exception as e:  # OSError, ValueError (pickled data), zipfile.BadZipFile, EOFError...
        raise SnapshotError(f"cannot read {path}: {type(e).__name__}: {e}") from e
    try:
        meta = json.loads(a["meta"].tobytes().decode("utf-8"))
    except (KeyError, ValueError) as e:
        raise SnapshotError(f"{path}: no readable meta ({e})") from e
    if meta.get("format") != FORMAT:
        raise SnapshotError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("raw_format") != RAW_FORMAT:
        raise SnapshotMismatch(f"{path}: ring raw-field format {meta.get('raw_format')}, "
                               f"this code's is {RAW_FORMAT}")
    # Another feature spec: keep rings, flags and generations, rebuild the aggregates.
    same_spec = (meta.get("feature_spec_hash") == feature_spec_hash
                 and int(meta.get("frame_slots", -1)) == store.agg.tcount.shape[1])
    agg_fields = tuple(f for f in STATE_FIELDS if f != "tcount") if same_spec else ("n",)

    try:
        n = int(meta["sessions"])
        accts = _unpack(a["acct_blob"], a["acct_off"], n)
        sids = _unpack(a["sid_blob"], a["sid_off"], n)
        length = a["length"].astype(np.int64)
        per_session = {"generation": a["generation"], "flagged": a["flagged"], "length": length,
                       "created_at": a["created_at"], "last_ts": a["last_ts"],
                       **{f"agg__{f}": a[f"agg__{f}"] for f in agg_fields}}
        for k, v in per_session.items():
            if v.shape != (n,):
                raise SnapshotError(f"{path}: {k} has shape {v.shape}, expected ({n},)")
        if np.any(length < 0) or np.any(length > int(meta["ring_size"])):
            raise SnapshotError(f"{path}: ring lengths outside 0..{meta['ring_size']}")
        total = int(length.sum())
        ring = {}
        for name, dt in _RING_DTYPES.items():
            v = a[f"ring__{name}"]
            if v.shape != (total,):
                raise SnapshotError(f"{path}: ring__{name} has {v.shape}, expected ({total},)")
            ring[name] = v.astype(dt, copy=False)
        tc_s, tc_b, tc_c = (a["agg__tcount_session"].astype(np.int64), a["agg__tcount_bucket"].astype(np.int64),
                            a["agg__tcount_count"])
        if not same_spec:
            tc_s = tc_b = tc_c = np.zeros(0, dtype=np.int64)
        if not (tc_s.shape == tc_b.shape == tc_c.shape) or (
                len(tc_s) and (tc_s.min() < 0 or tc_s.max() >= n or tc_b.min() < 0
                               or tc_b.max() >= store.agg.tcount.shape[1])):
            raise SnapshotError(f"{path}: template counts out of range")
        watermark = float(meta["watermark"])
        # The policy's decision state (snapshots from before it have none: reset).
        decision = None
        if "decision" in a:
            raw = a["decision"]
            width = DECIDERS * policy.DECISION_DTYPE.itemsize
            if raw.dtype != np.uint8 or raw.shape != (n, width):
                raise SnapshotError(f"{path}: decision has {raw.dtype} {raw.shape}, expected uint8 ({n}, {width})")
            decision = np.ascontiguousarray(raw).view(policy.DECISION_DTYPE).reshape(n, DECIDERS)
    except KeyError as e:
        raise SnapshotError(f"{path}: missing array {e}") from e
    keys = list(zip(accts, sids))
    if len(set(keys)) != n:
        raise SnapshotError(f"{path}: duplicate session keys")
    if any(not acct for acct in accts):
        raise SnapshotError(f"{path}: empty account_id")

    # More sessions than this store holds: drop those eviction would take first.
    drop = max(0, n - store.capacity)
    keep = np.arange(drop, n)
    flagged = per_session["flagged"]
    try:
        slots = store.adopt_many(keys[drop:], per_session["generation"][drop:].tolist(), flagged[drop:].tolist())
    except ValueError as e:
        raise SnapshotError(f"{path}: {e}") from e
    store.created_at[slots] = per_session["created_at"][keep]
    store.last_ts[slots] = per_session["last_ts"][keep]
    if decision is not None:
        store.decision[slots] = decision[keep]
    if same_spec:
        for f in STATE_FIELDS:
            if f != "tcount":
                getattr(store.agg, f)[slots] = per_session[f"agg__{f}"][keep]
    else:
        _reset_aggregates(store.agg, slots)
        lossy = int((per_session["agg__n"][keep] > 0).sum())
        store.rebuilt["lossy"] += lossy
        store.rebuilt["lossless"] += len(slots) - lossy
    store.agg.tcount[slots] = 0
    sel = tc_s >= drop
    slot_of = np.full(n, -1, dtype=np.int64)
    slot_of[keep] = slots
    store.agg.tcount[slot_of[tc_s[sel]], tc_b[sel]] = tc_c[sel]

    # Held events: fold any surplus over this store's ring into the aggregates, oldest first.
    idx, pos = _ring_index(length)
    kept_ev = idx >= drop
    surplus = np.maximum(length - store.ring_size, 0)
    fold = kept_ev & (pos < surplus[idx])
    folded = int(fold.sum())
    if folded:
        ev = RawEvents(**{f: ring[f][fold].astype(_RAW_DTYPES[f]) for f in _RING_RAW},
                       account_created_at=per_session["created_at"][idx[fold]])
        features.fold_into(store.agg, slot_of[idx[fold]], ev)
    put = kept_ev & ~fold
    for name in _RING_DTYPES:
        store.ring[name][slot_of[idx[put]], pos[put] - surplus[idx[put]]] = ring[name][put]
    store.length[slots] = (length - surplus)[keep]
    store.watermark = max(store.watermark, watermark)
    return {"restored": len(slots), "dropped": drop, "flagged": int(flagged[keep].sum()),
            "rebuilt": 0 if same_spec else len(slots),
            "events_folded": folded, "model_version": meta.get("model_version"),
            "written_at": meta.get("written_at"), "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------- the server's calls

def restore_scorer(scorer, path: str | Path) -> dict | None:
    """At start: restore `path` into the scorer's (empty) store if it exists and matches.
    Never raises: a missing, mismatched or corrupt snapshot leaves an empty store."""
    path = Path(path)
    if not path.exists():
        log.info(json.dumps({"event": "snapshot_absent", "path": str(path)}))
        return None
    spec = scorer.bundle.metadata["feature_spec_hash"]
    try:
        stats = load(path, scorer.store, feature_spec_hash=spec)
    except Exception as e:
        mismatch = isinstance(e, SnapshotMismatch)
        st = scorer.store
        if len(st):   # a failure half-way through: start clean rather than half-restored
            scorer.store = MemoryStore(max_sessions=st.capacity, ring=st.ring_size, gap_s=st.gap_s)
        (log.warning if mismatch else log.error)(json.dumps({
            "event": "snapshot_refused" if mismatch else "snapshot_unreadable", "path": str(path),
            "error": str(e)[:500], "action": "starting with an empty session store"}))
        return None
    log.info(json.dumps({"event": "snapshot_restored", "path": str(path),
                         **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()}}))
    return stats


def save_scorer(scorer, path: str | Path, lock_timeout: float = 10.0) -> dict | None:
    """At shutdown, after the server stopped taking calls: write the store. Holds the
    scorer's writer lock so no straggling batch mutates it half-way. Never raises."""
    writer = getattr(scorer, "_writer", None)
    if writer is not None and not writer.acquire(timeout=lock_timeout):
        log.error(json.dumps({"event": "snapshot_skipped", "path": str(path),
                              "error": f"scorer busy for {lock_timeout}s"}))
        return None
    try:
        stats = save(scorer.store, path, feature_spec_hash=scorer.bundle.metadata["feature_spec_hash"],
                     model_version=scorer.bundle.version)
    except Exception as e:
        log.error(json.dumps({"event": "snapshot_failed", "path": str(path), "error": str(e)[:500]}))
        return None
    finally:
        if writer is not None:
            writer.release()
    log.info(json.dumps({"event": "snapshot_written", "path": str(path),
                         **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()}}))
    return stats
