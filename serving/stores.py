"""`--state` URL -> session store: the in-process `state.MemoryStore` or the shared
`redis_store.RedisStore`.

Apart from `state` so that the store interface does not import its Redis
implementation (which builds on `MemoryStore`): state <- redis_store <- stores, no cycle.
redis-py is imported only when a Redis URL is given.
"""
from __future__ import annotations

from .state import MemoryStore, SessionStore


def open_store(url: str | None, *, max_sessions: int, ring: int, gap_s: float, spec_hash: str) -> SessionStore:
    """`--state` URL -> store: None/"memory" in process, redis://HOST:PORT/DB[?options] shared."""
    if not url or url == "memory":
        return MemoryStore(max_sessions=max_sessions, ring=ring, gap_s=gap_s)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_store import RedisStore

        return RedisStore.from_url(url, ring=ring, gap_s=gap_s, spec_hash=spec_hash)
    raise ValueError(f"--state: unknown session store {url!r} (memory or redis://HOST:PORT/DB)")
