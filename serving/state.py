"""Live session state for the online scorer: raw fields of recent events + running aggregates.

Each live session owns one slot of a preallocated slab:
  ring   the raw fields of its last R events (oldest first), not features, so a model
         reload with another feature spec can recompute every row;
  agg    `model.features.State` as of the ring's oldest event (running aggregates of all
         earlier events, folded in as they leave the ring).
Feature rows of the ring + a new request are `features.compute(agg, ring + new)`: the
same function and the same numbers as batch scoring.

  decision  the policy's decision state (accumulated evidence, runs, last explanation) of
         the served bundle and of the shadow (`serving.policy.DECISION_DTYPE`).
Bytes per live session are fixed whatever its length (about 2 KB with R = 31; see
`bytes_per_session`). Slabs are allocated lazily by the OS (np.zeros), so capacity costs
nothing until sessions arrive.

Eviction, O(1) per request: sessions live in two LRU lists, unflagged and flagged; at
capacity the least recently used unflagged session goes first, so a flood of fresh ids
cannot push out a harvester's history (flagged sessions go only when no unflagged one is
left). Sessions idle for longer than the session gap in *event time* (relative to the
newest event seen) expire. Every departure is counted in `evictions` by reason
(capacity | idle | ended), exported as the `distillguard_evictions` gauge;
tests/test_state_flood.py floods 1M fresh ids into 50k slots. `serving.snapshot` writes
and restores the live sessions across a restart (`sessions_in_order`, `adopt_many`).

Not thread-safe by itself: the scorer mutates it from one batcher thread only.

`SessionStore` below is the interface the scorer uses; `MemoryStore` implements it in
process, `serving.redis_store.RedisStore` shares it between processes and machines
(`serving.stores.open_store` picks one from a `--state` URL). The scorer works in *rounds*: `prepare`
the round's sessions, read and change them through the slab methods, then `commit`; a
store shared with other processes may answer that some sessions changed meanwhile, and
the scorer redoes their requests on the fresh state (memory: never).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Iterable, Protocol, runtime_checkable

import numpy as np

from ..model import features
from ..model.features import RawEvents, State
from ..model.sessions import DEFAULT_GAP_S, is_new_session
from . import policy

DECIDERS = 2      # decision states per session: the served bundle's and the shadow's

# Ring columns: RawEvents fields plus the bookkeeping the scorer needs per held event.
_RING_DTYPES = {
    "ts": np.float64, "prompt_tokens": np.int32, "completion_tokens": np.int32,
    "max_tokens": np.int32, "status": np.int16, "template_key": np.int64,
    "elicits_reasoning": np.int8, "browser_client": np.int8,
    "event_key": np.uint64,     # 64-bit hash of event_id (idempotency, Complete matching)
    "completed": np.bool_,
}
# What a held event means, not how features read it: the ring's columns and types and the
# signature encoding of template_key. Persistent state (Redis keys, snapshots) is keyed by
# this, so a bundle with another feature spec keeps the rings and rebuilds the aggregates.
RAW_FORMAT = hashlib.sha256(repr((sorted((k, np.dtype(v).str) for k, v in _RING_DTYPES.items()),
                                  features.SIGNATURE_VERSION, features.BAND_BITS)).encode()).hexdigest()[:12]


def _reset_aggregates(agg: State, slot) -> None:
    """Slot(s) of `agg` as a session with no events before its ring (`features.empty_state`)."""
    empty = features.empty_state(1)
    for name in features.STATE_FIELDS:
        getattr(agg, name)[slot] = getattr(empty, name)[0]


def event_key(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


SessionKey = tuple  # (account_id, caller session_id or "")


@dataclass(slots=True)
class SessionMeta:
    slot: int
    name: str          # session id as reported (caller's, or "account:k")
    generation: int    # k of implicit sessions


@runtime_checkable
class SessionStore(Protocol):
    """What the scorer needs of a session store (one writer thread at a time).

    Sessions are addressed by key; while a round runs, each prepared session occupies a
    slot of a local slab (`ring`, `length`, `agg`, `created_at`, `last_ts`) that the
    feature code reads directly."""

    ring_size: int
    gap_s: float
    agg: State

    def __len__(self) -> int: ...                       # live sessions (for the gauge)
    @property
    def evictions(self) -> dict[str, int]: ...          # departures by reason (capacity|idle|ended)

    # a round
    def prepare(self, keys: Iterable[SessionKey]) -> None: ...
    def commit(self) -> set: ...                        # keys whose change lost a race: redo them
    def rollback(self) -> None: ...                     # the round failed: forget its changes

    # slab access inside a round
    def open(self, key: SessionKey, ts: float) -> tuple["SessionMeta", bool]: ...
    def get(self, key: SessionKey) -> "SessionMeta | None": ...
    def find_event(self, slot: int, key: int) -> int: ...
    def ring_events(self, slots: np.ndarray, new: list[dict] | None = None
                    ) -> tuple[RawEvents, np.ndarray, np.ndarray]: ...
    def append(self, slots: np.ndarray, evs: list[dict], keys: list[int]) -> None: ...
    def complete_event(self, slot: int, pos: int, completion_tokens: int, status: int) -> bool: ...
    def is_flagged(self, key: SessionKey) -> bool: ...
    def set_flagged(self, key: SessionKey, flagged: bool) -> None: ...
    def events_seen(self, slot: int) -> int: ...
    def end(self, key: SessionKey) -> bool: ...
    def close(self) -> None: ...


class MemoryStore:
    """In-process bounded session store (slab + two LRU lists)."""

    def __init__(self, max_sessions: int = 1_000_000, ring: int = 31, gap_s: float = DEFAULT_GAP_S):
        self.capacity, self.ring_size, self.gap_s = int(max_sessions), int(ring), float(gap_s)
        n, r = self.capacity, self.ring_size
        self.ring = {name: np.zeros((n, r), dtype=dt) for name, dt in _RING_DTYPES.items()}
        self.length = np.zeros(n, dtype=np.int16)
        # An account property: one value per session (the latest request's) instead of one
        # per held event saves 8 bytes x ring. Rows differ from batch scoring only if a
        # session's requests disagree on it.
        self.created_at = np.full(n, np.nan, dtype=np.float64)
        self.agg = features.empty_state(n)
        self.last_ts = np.zeros(n, dtype=np.float64)
        # The policy's decision state per session: [:, 0] the served bundle's, [:, 1] the
        # shadow's. Not feature state: a reload (any spec) keeps it, a new session resets it.
        # np.zeros, like the other slabs (lazily allocated); a slot is reset before first use.
        self.decision = np.zeros((n, DECIDERS), dtype=policy.DECISION_DTYPE)
        self._free = list(range(n - 1, -1, -1))
        self._normal: OrderedDict[SessionKey, SessionMeta] = OrderedDict()
        self._flagged: OrderedDict[SessionKey, SessionMeta] = OrderedDict()
        self.watermark = 0.0
        self._evictions = {"capacity": 0, "idle": 0, "ended": 0}
        # Sessions restored from state written under another feature spec: ring and flag
        # kept, aggregates rebuilt from the ring; lossy when the session was longer than it.
        self.rebuilt = {"lossless": 0, "lossy": 0}

    @property
    def evictions(self) -> dict[str, int]:
        return self._evictions

    # ------------------------------------------------------------------ accounting
    def __len__(self) -> int:
        return len(self._normal) + len(self._flagged)

    def bytes_per_session(self) -> int:
        ring = sum(np.dtype(dt).itemsize for dt in _RING_DTYPES.values()) * self.ring_size
        agg = sum(getattr(self.agg, f.name).itemsize * (getattr(self.agg, f.name).size // self.capacity)
                  for f in fields(State))
        return ring + agg + 2 + 8 + 8 + DECIDERS * policy.DECISION_DTYPE.itemsize

    # ------------------------------------------------------------------ lookup
    def get(self, key: SessionKey) -> SessionMeta | None:
        return self._normal.get(key) or self._flagged.get(key)

    def _touch(self, key, meta):
        lru = self._flagged if key in self._flagged else self._normal
        lru.move_to_end(key)

    def open(self, key: SessionKey, ts: float) -> tuple[SessionMeta, bool]:
        """The session a request at event time ts belongs to -> (meta, is_new).

        Applies the offline rule: a gap longer than gap_s since the session's last event
        starts a new session (implicit sessions get the next k)."""
        self.watermark = max(self.watermark, ts)
        meta = self.get(key)
        is_new = True
        if meta is None:
            self._expire_idle()
            if not self._free:
                self._evict_one()
            meta = SessionMeta(slot=self._free.pop(), name=key[1] or f"{key[0]}:0", generation=0)
            self._reset(meta.slot)
            self._normal[key] = meta
        elif is_new_session(self.last_ts[meta.slot], ts, self.gap_s):
            self._reset(meta.slot)
            meta.generation += 1
            meta.name = key[1] or f"{key[0]}:{meta.generation}"
            self._unflag(key, meta)
        else:
            is_new = False
        self._touch(key, meta)
        # Arrival counts as activity now, so the idle scan below never takes this session.
        self.last_ts[meta.slot] = max(self.last_ts[meta.slot], ts) if not is_new else ts
        if not is_new:
            self._expire_idle(keep=key)
        return meta, is_new

    def _reset(self, slot: int) -> None:
        self.length[slot] = 0
        for name, _ in features.STATE_SCALARS:
            getattr(self.agg, name)[slot] = 0
        self.agg.last_max[slot] = -1
        self.agg.last_status[slot] = -1
        self.agg.tcount[slot] = 0
        self.created_at[slot] = np.nan
        self.decision[slot] = policy.empty_decisions(DECIDERS)

    def is_flagged(self, key: SessionKey) -> bool:
        return key in self._flagged

    def set_flagged(self, key: SessionKey, flagged: bool) -> None:
        meta = self.get(key)
        if meta is None:
            return
        if flagged and key in self._normal:
            del self._normal[key]
            self._flagged[key] = meta
        elif not flagged:
            self._unflag(key, meta)

    def _unflag(self, key, meta):
        if key in self._flagged:
            del self._flagged[key]
            self._normal[key] = meta

    def end(self, key: SessionKey) -> bool:
        meta = self._normal.pop(key, None) or self._flagged.pop(key, None)
        if meta is None:
            return False
        self._free.append(meta.slot)
        self._evictions["ended"] += 1
        return True

    def _evict_one(self) -> None:
        lru = self._normal if self._normal else self._flagged
        _, meta = lru.popitem(last=False)
        self._free.append(meta.slot)
        self._evictions["capacity"] += 1

    def _expire_idle(self, budget: int = 4, keep: SessionKey | None = None) -> None:
        # A few oldest entries per request: amortised O(1), and the LRU heads are the
        # least recently touched, so the first one still in date ends the scan.
        for lru in (self._normal, self._flagged):
            for _ in range(budget):
                if not lru:
                    break
                key, meta = next(iter(lru.items()))
                # `keep` is the session being served right now: never expire it under itself.
                if key == keep or self.watermark - self.last_ts[meta.slot] <= self.gap_s:
                    break
                del lru[key]
                self._free.append(meta.slot)
                self._evictions["idle"] += 1

    # ------------------------------------------------------------------ snapshot support
    def sessions_in_order(self):
        """(key, meta, flagged) of every live session in eviction order: unflagged least
        recently used first, then flagged least recently used first (serving.snapshot)."""
        for key, meta in self._normal.items():
            yield key, meta, False
        for key, meta in self._flagged.items():
            yield key, meta, True

    def adopt_many(self, keys: list, generations: list, flagged: list) -> np.ndarray:
        """Free, reset slots for restored sessions, given least recently used first; each
        becomes the most recently used of its list. The caller fills rings and aggregates.
        Raises (changing nothing) if a key is live or repeated, or the store lacks room:
        restore never evicts."""
        if len(keys) > len(self._free):
            raise ValueError(f"{len(keys)} sessions do not fit in {len(self._free)} free slots")
        if len(set(keys)) != len(keys) or any(self.get(k) is not None for k in keys):
            raise ValueError("restored session keys repeat or are already live")
        slots = np.empty(len(keys), dtype=np.int64)
        for i, (key, gen, flag) in enumerate(zip(keys, generations, flagged)):
            meta = SessionMeta(slot=self._free.pop(), name=key[1] or f"{key[0]}:{gen}", generation=int(gen))
            (self._flagged if flag else self._normal)[key] = meta
            slots[i] = meta.slot
        self.length[slots] = 0
        for name, _ in features.STATE_SCALARS:
            getattr(self.agg, name)[slots] = 0
        self.agg.last_max[slots] = -1
        self.agg.last_status[slots] = -1
        self.agg.tcount[slots] = 0
        self.created_at[slots] = np.nan
        self.decision[slots] = policy.empty_decisions(DECIDERS)
        return slots

    # ------------------------------------------------------------------ ring access
    def ring_events(self, slots: np.ndarray, new: list[dict] | None = None
                    ) -> tuple[RawEvents, np.ndarray, np.ndarray]:
        """Held events of several sessions laid end to end, each session followed by its
        request from `new` when given -> (raw, seg, events per session)."""
        lengths = self.length[slots].astype(np.int64)
        total = lengths + (1 if new is not None else 0)
        starts = np.cumsum(total) - total
        rows = np.repeat(slots, lengths)
        cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        at = np.repeat(starts, lengths) + cols
        n = int(total.sum())
        raw = {}
        for name in _RING_RAW:
            arr = np.empty(n, dtype=_RAW_DTYPES[name])
            arr[at] = self.ring[name][rows, cols]
            if new is not None:
                arr[starts + lengths] = [e[name] for e in new]
            raw[name] = arr
        created = self.created_at[np.repeat(slots, total)]
        if new is not None:
            created[starts + lengths] = [e["account_created_at"] for e in new]
        return RawEvents(**raw, account_created_at=created), np.repeat(np.arange(len(slots)), total), total

    def append(self, slots: np.ndarray, evs: list[dict], keys: list[int]) -> None:
        """Add just-scored requests to their sessions' rings (slots distinct); a full ring
        first folds its oldest event into the session's aggregates."""
        slots = np.asarray(slots, dtype=np.int64)
        full = slots[self.length[slots] == self.ring_size]
        if len(full):
            oldest = RawEvents(**{name: self.ring[name][full, 0].astype(_RAW_DTYPES[name]) for name in _RING_RAW},
                               account_created_at=self.created_at[full])
            features.fold_into(self.agg, full, oldest)
            for arr in self.ring.values():
                arr[full, :-1] = arr[full, 1:]
            self.length[full] -= 1
        pos = self.length[slots].astype(np.int64)
        for name in _RING_RAW:
            self.ring[name][slots, pos] = [e[name] for e in evs]
        self.created_at[slots] = [e["account_created_at"] for e in evs]
        self.ring["event_key"][slots, pos] = np.array(keys, dtype=np.uint64)
        self.ring["completed"][slots, pos] = False
        self.length[slots] = pos + 1
        ts = np.array([e["ts"] for e in evs])
        self.last_ts[slots] = np.where(pos > 0, np.maximum(self.last_ts[slots], ts), ts)

    def complete_event(self, slot: int, pos: int, completion_tokens: int, status: int) -> bool:
        """Fill in held event `pos`'s completion (once); False if it was already completed."""
        if self.ring["completed"][slot, pos]:
            return False
        self.ring["completion_tokens"][slot, pos] = completion_tokens
        self.ring["status"][slot, pos] = status if status > 0 else -1
        self.ring["completed"][slot, pos] = True
        return True

    # ------------------------------------------------------------------ rounds (SessionStore)
    # The slab is the state itself: nothing to fetch, publish or lose.
    def prepare(self, keys) -> None:
        pass

    def commit(self) -> set:
        return set()

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def find_event(self, slot: int, key: int) -> int:
        n = int(self.length[slot])
        hit = np.flatnonzero(self.ring["event_key"][slot, :n] == key)
        return int(hit[-1]) if len(hit) else -1

    def events_seen(self, slot: int) -> int:
        return int(self.agg.n[slot]) + int(self.length[slot])


_RING_RAW = tuple(f.name for f in fields(RawEvents) if f.name != "account_created_at")
_RAW_DTYPES = {f.name: (np.float64 if f.name in ("ts", "account_created_at") else
                        np.int8 if f.name in ("elicits_reasoning", "browser_client") else np.int64)
               for f in fields(RawEvents)}
