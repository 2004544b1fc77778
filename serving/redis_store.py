"""Session state in Redis, shared by several scorer processes (and machines).

`serve --state redis://HOST:PORT/DB[?ttl=S&flagged_ttl=S&cache=N&prefix=P]`.

What is stored. One Redis string per session, key `dg:{raw_format}:{account}:{session}`
(`:` and `%` in the account id percent-escaped, so keys never collide; the session id is
last and is kept as is). Keys are namespaced by the ring's raw-field format
(`state.RAW_FORMAT`), not by the feature spec: a deploy with another feature spec reads
the same sessions. The value is exactly what `MemoryStore` keeps in a slab slot:

    16 hex chars   version token (random, new at every write)
    prefix         format (3), generation, flagged, ring size, length, events in the
                   session, created_at, last_ts, the writer's feature-spec hash
    decisions      the policy's decision state of the served bundle and of the shadow
                   (`policy.DECISION_DTYPE` x 2: accumulated evidence and its runs), kept
                   across feature specs like the ring (format 2 values have none: reset)
    aggregates     the `features.State` scalars and the frame table (spec-dependent)
    ring           `length` records of the raw ring columns (oldest first)

little-endian numpy records, ~0.5 KB + 41 bytes per held event (<= ~1.8 KB with a 31-event
ring): bounded whatever the session's length, because the ring folds its oldest event into
the aggregates exactly as in memory. A value written under another feature spec keeps its
ring, flag and generation; its aggregates are not read but rebuilt from the ring (as of the
ring's oldest event: empty), lossy where the session was longer than its ring, counted in
`rebuilt` (`distillguard_state_rebuilt_sessions`). Feature rows are computed locally by the same
`features.compute`, so they are the memory store's rows, bit for bit.

How a request uses it. Each process keeps a bounded local copy of recently used sessions
(a `MemoryStore` slab, `cache` sessions, LRU) with the version token it last saw. The
scorer works in rounds (one micro-batch): `prepare` fetches the sessions the round misses
locally with one MGET; the round computes features, scores and appends locally; `commit`
sends every touched session to one Lua script call (EVALSHA) that, per key, compares the
version token with the stored one and, if equal, writes the new value with its TTL (or
only refreshes the TTL when nothing changed). A session whose token no longer matches
(another process wrote it, or it expired) is answered with its current value instead: it
replaces the local copy and the scorer redoes that request, so no score is ever given
from stale state and no write ever overwrites another process's (optimistic concurrency,
no locks, no ordering assumption). Round trips per micro-batch: one (EVALSHA) when every
session of it was last written by this process, two (MGET + EVALSHA) otherwise, three when
a race is lost. Routing a session's requests to one process (consistent hashing) keeps it
at one; spreading them at random over N processes costs the MGET for ~(N-1)/N of them.

Expiry and eviction. Idle expiry is the key's TTL (wall clock), refreshed at every
request: `ttl` (default: the bundle's session gap, 24 h) for unflagged sessions, and
`flagged_ttl` (default 7 x that) for flagged ones. Run Redis with `maxmemory` and
`maxmemory-policy volatile-ttl`: under memory pressure Redis evicts the keys nearest
their expiry first, i.e. unflagged sessions before flagged ones (a flood of fresh ids
cannot push a harvester's history out, as with the memory store's flagged LRU list).
Session splitting by an idle gap still uses event time (`sessions.is_new_session`).

Redis Cluster: the script touches several keys per call, so it needs them in one hash
slot; this store targets one Redis (or a primary with replicas). For a cluster, wrap the
account in a hash tag and commit per slot (not implemented).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse

import numpy as np

from ..model import features
from ..model.features import RawEvents
from . import policy
from .state import _RAW_DTYPES, _RING_DTYPES, _RING_RAW, DECIDERS, RAW_FORMAT, MemoryStore, SessionKey, \
    SessionMeta, _reset_aggregates

log = logging.getLogger("distillguard.redis_store")

FORMAT = 3
FORMATS_READ = (2, 3)     # 2: before the decision state
TOKEN_LEN = 16
PREFIX = np.dtype([("format", "u1"), ("generation", "<i8"), ("flagged", "u1"), ("ring", "<i2"),
                   ("length", "<i2"), ("n_events", "<i8"), ("session_created_at", "<f8"),
                   ("session_last_ts", "<f8"), ("spec", "S16")])
AGGREGATES = np.dtype([(name, np.dtype(dt).newbyteorder("<")) for name, dt in features.STATE_SCALARS]
                      + [("tcount", "<i8", (features.N_FRAME_SLOTS,))])
DECISIONS = np.dtype([("decision", policy.DECISION_DTYPE, (DECIDERS,))])
HEADER = np.dtype(PREFIX.descr + DECISIONS.descr + AGGREGATES.descr)
HEADER_V2 = np.dtype(PREFIX.descr + AGGREGATES.descr)
RECORD = np.dtype([(name, np.dtype(dt).newbyteorder("<")) for name, dt in _RING_DTYPES.items()])

# Per key, ARGV holds 4 values: expected token ("" = absent), op, ttl in ms, new value.
#   op "w": write the new value (token first) with the TTL
#   op "r": change nothing, refresh the TTL
# Reply per key: 1 when the token matched (and the op was applied), else the current value
# ("" when the key is absent), which the caller takes as its new local copy.
COMMIT_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 4
  local cur = redis.call('GET', key)
  local tok = ''
  if cur then tok = string.sub(cur, 1, 16) end
  if tok ~= ARGV[b + 1] then
    out[i] = cur or ''
  else
    if ARGV[b + 2] == 'w' then
      redis.call('SET', key, ARGV[b + 4], 'PX', ARGV[b + 3])
    elseif cur then
      redis.call('PEXPIRE', key, ARGV[b + 3])
    end
    out[i] = 1
  end
end
return out
"""

# Per key, ARGV[i] is the token of this process's local copy ("" = none). Reply per key:
# 1 when Redis holds that same version (or the key is absent and there is no copy), else
# the current value ("" when absent).
FETCH_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  local tok = ''
  if cur then tok = string.sub(cur, 1, 16) end
  if tok == ARGV[i] then out[i] = 1 else out[i] = cur or '' end
end
return out
"""

# validate=auto: check local copies before computing once more than STALE_ON of them turned
# out stale (EWMA over recent sessions), stop again below STALE_OFF. A stale copy costs a
# wasted feature + model pass and a round trip when found at commit; checking costs one
# round trip for every copy: checking pays from ~10% stale copies on.
STALE_ON, STALE_OFF, STALE_ALPHA = 0.15, 0.05, 0.02


def session_key(prefix: str, raw_format: str, key: SessionKey) -> bytes:
    account = key[0].replace("%", "%25").replace(":", "%3A")
    return f"{prefix}:{raw_format}:{account}:{key[1]}".encode("utf-8")


def _new_token() -> bytes:
    return os.urandom(TOKEN_LEN // 2).hex().encode()


def _pack(args: list[bytes]) -> bytes:
    """One RESP command (redis-py's generic packing costs ~4x more per call)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts += (b"$%d\r\n" % len(a), a, b"\r\n")
    return b"".join(parts)


class RedisStore(MemoryStore):
    """`SessionStore` over Redis; the inherited slab is this process's local copy."""

    def __init__(self, client, *, ring: int = 31, gap_s: float = 86400.0, spec_hash: str,
                 prefix: str = "dg", ttl_s: float | None = None, flagged_ttl_s: float | None = None,
                 cache: int = 100_000, url: str = "", validate: str = "auto"):
        # The local copy must hold at least a round's sessions: the scorer keeps sessions
        # of the running round at the most recently used end, so they are never the ones
        # dropped to make room.
        super().__init__(max_sessions=max(int(cache), 4096), ring=ring, gap_s=gap_s)
        self.r = client
        self.url = url
        self.spec_hash, self.prefix = spec_hash, prefix
        self.ttl_ms = int(1000 * (ttl_s if ttl_s is not None else gap_s))
        self.flagged_ttl_ms = int(1000 * (flagged_ttl_s if flagged_ttl_s is not None else 7 * gap_s))
        if self.ttl_ms <= 0 or self.flagged_ttl_ms <= 0:
            raise ValueError("redis store: ttl and flagged_ttl must be > 0 seconds")
        self._token = [b""] * self.capacity     # version token of each slot's session, b"" = absent
        self._round: dict[SessionKey, SessionMeta] = {}
        self._dirty: set[int] = set()
        sha = client.script_load(COMMIT_LUA)
        self._commit_sha = sha.encode() if isinstance(sha, str) else bytes(sha)
        sha = client.script_load(FETCH_LUA)
        self._fetch_sha = sha.encode() if isinstance(sha, str) else bytes(sha)
        if validate not in ("auto", "always", "never"):
            raise ValueError(f"redis store: validate must be auto, always or never, got {validate!r}")
        self.validate = validate
        self._stale = 0.0                 # EWMA: share of local copies found stale
        self._validating = validate == "always"
        self._hits: set = set()           # sessions of this round served from a local copy
        self._checked = False             # ... and checked against Redis in prepare
        # The hot path (MGET, EVALSHA) runs on the scorer's one writer thread at a time, over
        # a connection of its own with hand-packed commands; gauges use the client's pool.
        self._conn = None
        self.stats = {"commits": 0, "fetches": 0, "fetched": 0, "conflicts": 0, "writes": 0,
                      "stale_copies": 0, "redis_s": 0.0}
        self._ended = 0
        self._info = {"keys": 0, "expired": 0, "evicted": 0, "at": -1e9}
        self._info_lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_url(cls, url: str, *, ring: int, gap_s: float, spec_hash: str) -> "RedisStore":
        import redis

        parts = urllib.parse.urlsplit(url)
        q = dict(urllib.parse.parse_qsl(parts.query))
        known = {"ttl", "flagged_ttl", "cache", "prefix", "timeout", "validate"}
        opts = {k: q.pop(k) for k in list(q) if k in known}
        client_url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))
        timeout = float(opts.get("timeout", 2.0))
        client = redis.Redis.from_url(client_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                      health_check_interval=30)
        try:
            client.ping()
        except redis.RedisError as e:
            raise OSError(f"--state {url}: cannot reach Redis: {e}") from None
        store = cls(client, ring=ring, gap_s=gap_s, spec_hash=spec_hash, prefix=opts.get("prefix", "dg"),
                    ttl_s=float(opts["ttl"]) if "ttl" in opts else None,
                    flagged_ttl_s=float(opts["flagged_ttl"]) if "flagged_ttl" in opts else None,
                    cache=int(opts.get("cache", 100_000)), url=url, validate=opts.get("validate", "auto"))
        log.info(json.dumps({"event": "session_store", "kind": "redis", "url": client_url,
                             "namespace": f"{store.prefix}:{RAW_FORMAT}", "ttl_s": store.ttl_ms / 1000,
                             "flagged_ttl_s": store.flagged_ttl_ms / 1000, "local_cache": store.capacity}))
        return store

    def key_of(self, key: SessionKey) -> bytes:
        return session_key(self.prefix, RAW_FORMAT, key)

    def close(self) -> None:
        try:
            if self._conn is not None:
                self._conn.disconnect()
            self.r.close()
        except Exception:   # closing is best effort
            pass

    def _call(self, args: list[bytes]):
        """One command on the writer's connection -> its reply (redis errors raise)."""
        import redis

        if self._conn is None:
            self._conn = self.r.connection_pool.make_connection()
        t = time.perf_counter()
        try:
            self._conn.send_packed_command([_pack(args)], check_health=False)
            return self._conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._conn.disconnect()      # reconnects on the next call
            raise
        finally:
            self.stats["redis_s"] += time.perf_counter() - t

    def _evalsha(self, keys: list[bytes], args: list[bytes], fetch: bool = False):
        import redis

        sha, body = (self._fetch_sha, FETCH_LUA) if fetch else (self._commit_sha, COMMIT_LUA)
        head = [str(len(keys)).encode(), *keys, *args]
        try:
            return self._call([b"EVALSHA", sha, *head])
        except redis.exceptions.NoScriptError:     # Redis restarted or flushed its scripts
            return self._call([b"EVAL", body.encode(), *head])

    def _observe(self, stale: bool) -> None:
        if stale:
            self.stats["stale_copies"] += 1
        self._stale += STALE_ALPHA * (float(stale) - self._stale)
        if self.validate == "auto":
            if self._validating and self._stale < STALE_OFF:
                self._validating = False
            elif not self._validating and self._stale > STALE_ON:
                self._validating = True

    # ------------------------------------------------------------------ accounting
    def _refresh_info(self) -> None:
        now = time.monotonic()
        if now - self._info["at"] < 2.0 or not self._info_lock.acquire(blocking=False):
            return
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.dbsize()
            pipe.info("stats")
            n, stats = pipe.execute()
            self._info.update(keys=int(n), expired=int(stats.get("expired_keys", 0)),
                              evicted=int(stats.get("evicted_keys", 0)), at=now)
        except Exception:   # the gauge is not worth failing a request for
            self._info["at"] = now
        finally:
            self._info_lock.release()

    def __len__(self) -> int:
        """Keys in the Redis database (refreshed at most every 2 s)."""
        self._refresh_info()
        return self._info["keys"]

    @property
    def evictions(self) -> dict[str, int]:
        """Redis's own counters (whole server): keys evicted under maxmemory, keys expired
        by TTL; plus sessions ended by this process."""
        self._refresh_info()
        return {"capacity": self._info["evicted"], "idle": self._info["expired"], "ended": self._ended}

    def cached(self) -> int:
        """Sessions held in this process's local copy."""
        return len(self._normal) + len(self._flagged)

    # ------------------------------------------------------------------ encoding
    def _records(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Header (generation and flag left for the caller) and ring records of a slot."""
        n = int(self.length[slot])
        h = np.zeros(1, dtype=HEADER)
        h["format"] = FORMAT
        h["flagged"] = 0
        h["ring"], h["length"] = self.ring_size, n
        h["n_events"] = int(self.agg.n[slot]) + n
        h["spec"] = self.spec_hash.encode()
        h["session_created_at"], h["session_last_ts"] = self.created_at[slot], self.last_ts[slot]
        for name, _ in features.STATE_SCALARS:
            h[name] = getattr(self.agg, name)[slot]
        h["tcount"] = self.agg.tcount[slot]
        h["decision"] = self.decision[slot]
        rec = np.empty(n, dtype=RECORD)
        for name in _RING_DTYPES:
            rec[name] = self.ring[name][slot, :n]
        return h, rec

    def _value(self, key: SessionKey, meta: SessionMeta, token: bytes) -> bytes:
        h, rec = self._records(meta.slot)
        h["generation"] = meta.generation
        h["flagged"] = key in self._flagged
        return token + h.tobytes() + rec.tobytes()

    def _install(self, key: SessionKey, value: bytes | None) -> SessionMeta | None:
        """Make the local copy of `key` what Redis holds (`value`; empty: absent)."""
        self._drop(key)
        if not value:
            return None
        token = bytes(value[:TOKEN_LEN])
        h = np.frombuffer(value, dtype=PREFIX, count=1, offset=TOKEN_LEN)[0]
        fmt = int(h["format"])
        if fmt not in FORMATS_READ:
            raise ValueError(f"session {key}: stored format {fmt}, this code reads {', '.join(map(str, FORMATS_READ))}")
        n = int(h["length"])
        # The ring is the value's tail; what lies between prefix (+ decisions) and ring is the
        # writer's aggregates, read only when the writer had our feature spec.
        rec = np.frombuffer(value, dtype=RECORD, count=n, offset=len(value) - n * RECORD.itemsize)
        header = HEADER if fmt == 3 else HEADER_V2
        dec_len = DECISIONS.itemsize if fmt == 3 else 0
        same_spec = (bytes(h["spec"]).decode() == self.spec_hash
                     and len(value) == TOKEN_LEN + header.itemsize + n * RECORD.itemsize)
        agg = np.frombuffer(value, dtype=AGGREGATES, count=1, offset=TOKEN_LEN + PREFIX.itemsize + dec_len)[0] \
            if same_spec else None
        if not self._free:
            self._evict_one()
        gen = int(h["generation"])
        meta = SessionMeta(slot=self._free.pop(), name=key[1] or f"{key[0]}:{gen}", generation=gen)
        (self._flagged if h["flagged"] else self._normal)[key] = meta
        s = meta.slot
        if agg is not None:
            for name, _ in features.STATE_SCALARS:
                getattr(self.agg, name)[s] = agg[name]
            self.agg.tcount[s] = agg["tcount"]
        else:
            _reset_aggregates(self.agg, s)
            self.rebuilt["lossy" if int(h["n_events"]) > n else "lossless"] += 1
        self.created_at[s], self.last_ts[s] = h["session_created_at"], h["session_last_ts"]
        self.decision[s] = (np.frombuffer(value, dtype=DECISIONS, count=1, offset=TOKEN_LEN + PREFIX.itemsize)[0]
                            ["decision"] if fmt == 3 else policy.empty_decisions(DECIDERS))
        if n > self.ring_size:
            # Written by a process with a longer ring: fold the surplus, as `append` would.
            extra = n - self.ring_size
            old = rec[:extra]
            features.fold_into(self.agg, np.full(extra, s, dtype=np.int64), RawEvents(
                **{name: old[name].astype(_RAW_DTYPES[name]) for name in _RING_RAW},
                account_created_at=np.full(extra, h["session_created_at"])))
            rec, n = rec[extra:], self.ring_size
        for name in _RING_DTYPES:
            self.ring[name][s, :n] = rec[name]
        self.length[s] = n
        self._token[s] = token
        self.watermark = max(self.watermark, float(h["session_last_ts"]))
        return meta

    def _drop(self, key: SessionKey) -> None:
        """Forget the local copy (not an eviction of the session)."""
        meta = self._normal.pop(key, None) or self._flagged.pop(key, None)
        if meta is not None:
            self._free.append(meta.slot)
            self._token[meta.slot] = b""

    # ------------------------------------------------------------------ rounds
    def prepare(self, keys) -> None:
        miss, hits = [], []
        for key in dict.fromkeys(keys):
            meta = self.get(key)
            if meta is None:
                miss.append(key)
            else:
                self._touch(key, meta)
                self._round[key] = meta
                hits.append(key)
        self._hits = set(hits)
        self._checked = bool(hits) and self._validating
        if self._checked:
            # One round trip checks every local copy and fetches what is missing or stale.
            todo = hits + miss
            tokens = [self._token[self._round[k].slot] for k in hits] + [b""] * len(miss)
        elif miss:
            todo, tokens = miss, None
        else:
            return
        try:
            if tokens is None:
                values = self._call([b"MGET", *(self.key_of(k) for k in todo)])
            else:
                values = self._evalsha([self.key_of(k) for k in todo], tokens, fetch=True)
        except BaseException:
            self.rollback()
            raise
        self.stats["fetches"] += 1
        for key, value in zip(todo, values):
            hit = key in self._hits
            if hit:
                self._observe(value != 1)
            if value == 1 or (not value and not hit):
                continue
            self.stats["fetched"] += bool(value)
            meta = self._install(key, value)
            if meta is None:
                self._round.pop(key, None)
            else:
                self._round[key] = meta

    def open(self, key: SessionKey, ts: float) -> tuple[SessionMeta, bool]:
        held = self.get(key)
        meta, is_new = super().open(key, ts)
        if held is None:
            self._token[meta.slot] = b""     # prepare found nothing in Redis: create it
        if is_new:
            self._dirty.add(meta.slot)
        self._round[key] = meta
        return meta, is_new

    def append(self, slots, evs, keys) -> None:
        super().append(slots, evs, keys)
        self._dirty.update(int(s) for s in np.asarray(slots).ravel())

    def complete_event(self, slot, pos, completion_tokens, status) -> bool:
        applied = super().complete_event(slot, pos, completion_tokens, status)
        if applied:
            self._dirty.add(int(slot))
        return applied

    def set_flagged(self, key: SessionKey, flagged: bool) -> None:
        meta = self.get(key)
        if meta is not None and flagged != self.is_flagged(key):
            self._dirty.add(meta.slot)
        super().set_flagged(key, flagged)

    def commit(self) -> set:
        round_, dirty = self._round, self._dirty
        self._round, self._dirty = {}, set()
        lost: set = set()
        keys, args, sent = [], [], []
        for key, meta in round_.items():
            if meta is None:
                continue
            if self.get(key) is not meta:
                # Dropped from the local copy during the round (only with a tiny cache):
                # its slot may hold another session now. Redo it from Redis.
                lost.add(key)
                continue
            slot = meta.slot
            flagged = key in self._flagged
            ttl = self.flagged_ttl_ms if flagged else self.ttl_ms
            if slot in dirty:
                token = _new_token()
                args += [self._token[slot], b"w", b"%d" % ttl, self._value(key, meta, token)]
            else:
                token = None
                args += [self._token[slot], b"r", b"%d" % ttl, b""]
            keys.append(self.key_of(key))
            sent.append((key, meta, token))
        if keys:
            try:
                replies = self._evalsha(keys, args)
            except BaseException:
                # Unknown outcome: forget the local copies, Redis has the truth.
                for key, _, _ in sent:
                    self._drop(key)
                raise
            self.stats["commits"] += 1
            for (key, meta, token), rep in zip(sent, replies):
                if key in self._hits and not self._checked:
                    self._observe(rep != 1)
                if rep == 1:
                    if token is not None:
                        self._token[meta.slot] = token
                        self.stats["writes"] += 1
                else:
                    self.stats["conflicts"] += 1
                    self._install(key, rep)
                    lost.add(key)
        sent_keys = {k for k, _, _ in sent}
        for key in lost - sent_keys:
            self._drop(key)
        return lost

    def rollback(self) -> None:
        """The round failed midway: its local changes may be half done; forget them."""
        for key in self._round:
            self._drop(key)
        self._round, self._dirty = {}, set()

    def end(self, key: SessionKey) -> bool:
        self._drop(key)
        n = int(self.r.delete(self.key_of(key)))
        self._ended += n
        return n > 0

    # ------------------------------------------------------------------ not supported
    def sessions_in_order(self):
        raise NotImplementedError("the Redis store is not snapshotted: Redis keeps the state across restarts")

    def adopt_many(self, *a, **k):
        raise NotImplementedError("the Redis store is not restored from a snapshot")
