"""Memory of live sessions: RSS growth for N sessions in the in-process store.

Runs in a fresh process so the figure is this store's alone. Each session gets a few
events (ring partly full, aggregates touched) the way the scorer writes them.
"""
from __future__ import annotations

import json
import subprocess
import sys

_CODE = """
import json, resource, sys, time
import numpy as np
from distillguard.serving.state import MemoryStore, event_key

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

n, events, ring = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
base = rss_mb()
store = MemoryStore(max_sessions=n, ring=ring)
ev = {"ts": 0.0, "prompt_tokens": 10, "completion_tokens": 0, "max_tokens": 100, "status": -1,
      "template_key": 5, "elicits_reasoning": 0, "browser_client": 0, "account_created_at": float("nan")}
t = time.perf_counter()
B = 4096
for start in range(0, n, B):
    keys = [(f"acct-{i}", "") for i in range(start, min(n, start + B))]
    for e in range(events):
        slots = []
        for k in keys:
            meta, _ = store.open(k, 1.78e9 + e)
            slots.append(meta.slot)
        store.append(np.array(slots), [dict(ev, ts=1.78e9 + e)] * len(slots),
                     [event_key(f"{k[0]}-{e}") for k in keys])
dt = time.perf_counter() - t
# Touch every ring slot as a full session would (pages are committed lazily).
for arr in store.ring.values():
    arr[:] = 1
full = rss_mb()
print(json.dumps({"sessions": len(store), "seconds": dt, "rss_base_mb": base, "rss_full_mb": full,
                  "bytes_per_session_measured": (full - base) * 1024 * 1024 / n,
                  "bytes_per_session_slab": store.bytes_per_session()}))
"""


def run_state_bench(sessions: int = 1_000_000, events: int = 3, ring: int = 31) -> dict:
    out = subprocess.run([sys.executable, "-c", _CODE, str(sessions), str(events), str(ring)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"session state: {res['sessions']:,} live sessions -> RSS {res['rss_full_mb']:.0f} MB "
          f"(+{res['rss_full_mb'] - res['rss_base_mb']:.0f} MB, {res['bytes_per_session_measured']:.0f} B/session "
          f"measured, {res['bytes_per_session_slab']} B slab); filled in {res['seconds']:.1f}s")
    return res
