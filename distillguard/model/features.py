"""Per-event causal features: the only feature code, used by training, batch and online scoring.

The model's row for event t must hold only what the gateway knows when it calls `Score`
for t: t's request-side fields, plus the full fields (completions included) of the events
before t. Everything here is therefore written as

    features(t) = f(request fields of t, S_t)        S_t = fold of events 0..t-1 of the session

where S is a small, fixed-size set of running aggregates (`State`). The previous event's
completion enters through S ("last_*" fields), so no row ever sees its own completion.

The same vectorised function serves both worlds:
  offline: `compute(empty_state(S), all events of S sessions)`, one call per chunk;
  online:  `compute(state_at_ring_start, ring events + the new request)`, the session state
           keeping raw fields of its last W events and S as of the ring's oldest event.
Because S_t is an exclusive scan of `fold`, both give the same S_t and the same rows.

Any change to what a feature means must bump `FEATURE_VERSION` (the bundle stores the spec
hash and loading refuses a mismatch); tests/test_features.py pins golden values.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields

import numpy as np

from .templates import TEMPLATE_HASH_VERSION

FEATURE_VERSION = 1
N_TEMPLATE_BUCKETS = 64      # template-count sketch per session: 64 counters, O(1) bytes
BURST_S = 1.0                # a gap shorter than this counts as a burst
GEN_TOKENS_PER_S = 60.0      # generation speed used to estimate whether the previous request was still running
GEN_OVERHEAD_S = 0.5
SATURATION = 0.95            # completion >= 95% of max_tokens counts as saturated
_BROWSER = re.compile(r"mozilla|safari|chrome|firefox|edg/", re.IGNORECASE)

FEATURE_NAMES = (
    # event t's request
    "is_first", "log_gap", "burst", "log_prompt", "log_max_tokens", "max_tokens_missing",
    "hour_sin", "hour_cos", "log_account_age_days", "account_age_missing",
    "elicits_reasoning", "template_missing", "log_template_prior_count", "template_new",
    "browser_client", "fingerprint_missing",
    # the previous event's completion (known once it completed)
    "log_prev_completion", "prev_saturation", "prev_saturation_known", "prev_error", "overlaps_prev",
    # running aggregates over events 0..t-1
    "log_n_prev", "mean_log_gap", "std_log_gap", "frac_burst", "mean_log_prompt",
    "mean_log_completion", "frac_saturated", "frac_reasoning", "frac_template_repeat",
    "template_distinct_ratio", "hours_covered", "log_duration_h", "log_rate_per_h",
    "frac_error", "frac_overlap",
)
N_FEATURES = len(FEATURE_NAMES)


def feature_spec() -> dict:
    """What a bundle records about the features it was trained on."""
    return {
        "version": FEATURE_VERSION,
        "names": list(FEATURE_NAMES),
        "n_template_buckets": N_TEMPLATE_BUCKETS,
        "burst_s": BURST_S,
        "gen_tokens_per_s": GEN_TOKENS_PER_S,
        "gen_overhead_s": GEN_OVERHEAD_S,
        "saturation": SATURATION,
        # template_key comes from template hashes: new hashing rules mean new keys
        "template_hash_version": TEMPLATE_HASH_VERSION,
    }


def feature_spec_hash(spec: dict | None = None) -> str:
    blob = json.dumps(spec or feature_spec(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------------------- raw fields

@dataclass
class RawEvents:
    """Struct of arrays, one entry per event; the raw fields the features read.

    Missing values: max_tokens/status -1, template_key -1, account_created_at NaN.
    `completion_tokens` of an event is read only as the *previous* event of a later one.
    """
    ts: np.ndarray                  # float64 epoch s
    prompt_tokens: np.ndarray       # int64
    completion_tokens: np.ndarray   # int64
    max_tokens: np.ndarray          # int64
    status: np.ndarray              # int64
    template_key: np.ndarray        # int64, 60-bit prefix of the template hash
    elicits_reasoning: np.ndarray   # int8 0/1
    browser_client: np.ndarray      # int8: 1 browser, 0 other, -1 missing
    account_created_at: np.ndarray  # float64 epoch s

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx) -> "RawEvents":
        return RawEvents(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list["RawEvents"]) -> "RawEvents":
        return RawEvents(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                            for f in fields(RawEvents)})


def template_key(template_hash: str | None) -> int:
    """60-bit integer from the hash's first 15 hex digits; -1 when missing."""
    if not template_hash:
        return -1
    try:
        return int(template_hash[:15], 16)
    except ValueError:  # a caller's own hash format: fold it through sha256
        return int(hashlib.sha256(template_hash.encode()).hexdigest()[:15], 16)


def browser_flag(fingerprint: str | None) -> int:
    if fingerprint is None or fingerprint == "":
        return -1
    return 1 if _BROWSER.search(fingerprint) else 0


def _map_distinct(column, fn, null_value, dtype) -> np.ndarray:
    import pyarrow.compute as pc

    enc = column.combine_chunks().dictionary_encode()
    values = np.array([fn(v) for v in enc.dictionary.to_pylist()] + [null_value], dtype=dtype)
    idx = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return values[idx]   # index -1 picks null_value


def raw_from_table(table) -> RawEvents:
    """Canonical pyarrow table (model.schema) -> RawEvents, vectorised."""
    import pyarrow.compute as pc

    def ints(name, fill):
        return np.asarray(pc.fill_null(table[name], fill).to_numpy(zero_copy_only=False), dtype=np.int64)

    # Hashes and fingerprints repeat heavily within a file: convert each distinct value once.
    tkey = _map_distinct(table["template_hash"], template_key, -1, np.int64)
    browser = _map_distinct(table["client_fingerprint"], browser_flag, -1, np.int8)

    return RawEvents(
        ts=np.asarray(table["ts"].to_numpy(), dtype=np.float64),
        prompt_tokens=ints("prompt_tokens", 0),
        completion_tokens=ints("completion_tokens", 0),
        max_tokens=ints("max_tokens", -1),
        status=ints("status", -1),
        template_key=tkey,
        elicits_reasoning=np.asarray(pc.fill_null(table["elicits_reasoning"], False).to_numpy(
            zero_copy_only=False), dtype=np.int8),
        browser_client=browser,
        account_created_at=np.asarray(pc.fill_null(table["account_created_at"], np.nan).to_numpy(
            zero_copy_only=False), dtype=np.float64),
    )


# ---------------------------------------------------------------------------- state

_SCALARS = (
    # name, dtype
    ("n", np.int64), ("first_ts", np.float64), ("last_ts", np.float64),
    ("last_completion", np.int64), ("last_max", np.int64), ("last_status", np.int64),
    ("sum_lgap", np.float64), ("sum_lgap2", np.float64), ("n_gaps", np.int64),
    ("n_burst", np.int64), ("n_overlap", np.int64),
    ("sum_lprompt", np.float64), ("sum_lcompl", np.float64),
    ("n_sat", np.int64), ("n_withmax", np.int64), ("n_reason", np.int64),
    ("n_tknown", np.int64), ("n_trepeat", np.int64), ("n_tdistinct", np.int64),
    ("n_err", np.int64), ("hour_mask", np.int64),
)


@dataclass
class State:
    """Running aggregates of S sessions: each field has shape [S] (tcount: [S, buckets]).

    About 21 x 8 bytes + 64 x 4 bytes per session, whatever the session's length.
    """
    n: np.ndarray
    first_ts: np.ndarray
    last_ts: np.ndarray
    last_completion: np.ndarray
    last_max: np.ndarray
    last_status: np.ndarray
    sum_lgap: np.ndarray
    sum_lgap2: np.ndarray
    n_gaps: np.ndarray
    n_burst: np.ndarray
    n_overlap: np.ndarray
    sum_lprompt: np.ndarray
    sum_lcompl: np.ndarray
    n_sat: np.ndarray
    n_withmax: np.ndarray
    n_reason: np.ndarray
    n_tknown: np.ndarray
    n_trepeat: np.ndarray
    n_tdistinct: np.ndarray
    n_err: np.ndarray
    hour_mask: np.ndarray
    tcount: np.ndarray

    def take(self, idx) -> "State":
        return State(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def empty_state(n_sessions: int) -> State:
    s = {name: np.zeros(n_sessions, dtype=dt) for name, dt in _SCALARS}
    s["last_max"][:] = -1
    s["last_status"][:] = -1
    return State(**s, tcount=np.zeros((n_sessions, N_TEMPLATE_BUCKETS), dtype=np.int32))


# ---------------------------------------------------------------------------- scans

def _seg_starts(seg: np.ndarray) -> np.ndarray:
    """Per event, the index of the first event of its segment (seg sorted, contiguous)."""
    n = len(seg)
    first = np.ones(n, dtype=bool)
    first[1:] = seg[1:] != seg[:-1]
    return np.maximum.accumulate(np.where(first, np.arange(n), 0)), first


def _excl_cumsum(x: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Sum of x over earlier events of the same segment."""
    c = np.cumsum(x) - x
    return c - c[start]


def _prior_count(seg: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Per event, how many earlier events of its segment share its key."""
    n = len(seg)
    order = np.lexsort((np.arange(n), key, seg))
    ks, kk = seg[order], key[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (ks[1:] != ks[:-1]) | (kk[1:] != kk[:-1])
    grp_start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) - grp_start
    return out


@dataclass
class _Before:
    """S_t for every event of a block, plus per-event contributions for `fold`."""
    fields: dict
    contrib: dict
    hour: np.ndarray
    bucket: np.ndarray
    t_prior: np.ndarray


def _scan(state0: State, seg: np.ndarray, ev: RawEvents) -> _Before:
    start, first_in_block = _seg_starts(seg)
    n0 = state0.n[seg]
    has_prev = (~first_in_block) | (n0 > 0)

    prev_idx = np.maximum(np.arange(len(seg)) - 1, 0)
    inblock = ~first_in_block

    def prev(arr, s0):
        return np.where(inblock, arr[prev_idx], s0[seg])

    last_ts = prev(ev.ts, state0.last_ts)
    last_completion = prev(ev.completion_tokens, state0.last_completion)
    last_max = prev(ev.max_tokens, state0.last_max)
    last_status = prev(ev.status, state0.last_status)
    first_ts = np.where(n0 > 0, state0.first_ts[seg], ev.ts[start])

    gap = np.where(has_prev, np.maximum(ev.ts - last_ts, 0.0), 0.0)
    lgap = np.log1p(gap)
    est_running = GEN_OVERHEAD_S + last_completion / GEN_TOKENS_PER_S
    overlap = has_prev & (gap < est_running)
    burst = has_prev & (gap < BURST_S)
    withmax = ev.max_tokens > 0
    sat = withmax & (ev.completion_tokens >= SATURATION * ev.max_tokens)
    hour = ((ev.ts % 86400.0) // 3600.0).astype(np.int64)
    tknown = ev.template_key >= 0
    bucket = np.where(tknown, ev.template_key % N_TEMPLATE_BUCKETS, 0)

    # Template prior count: within-block count of the same (segment, bucket) plus the
    # state's sketch. Unknown templates get their own key so they never count as repeats.
    tkey = np.where(tknown, bucket, -1 - np.arange(len(seg)))
    t_prior = _prior_count(seg, tkey) + np.where(tknown, state0.tcount[seg, bucket], 0)
    trepeat = tknown & (t_prior > 0)
    tnew = tknown & (t_prior == 0)
    h_prior = _prior_count(seg, hour)
    hnew = (h_prior == 0) & (((state0.hour_mask[seg] >> hour) & 1) == 0)

    contrib = {
        "sum_lgap": np.where(has_prev, lgap, 0.0), "sum_lgap2": np.where(has_prev, lgap * lgap, 0.0),
        "n_gaps": has_prev.astype(np.int64), "n_burst": burst.astype(np.int64),
        "n_overlap": overlap.astype(np.int64),
        "sum_lprompt": np.log1p(ev.prompt_tokens.astype(np.float64)),
        "sum_lcompl": np.log1p(ev.completion_tokens.astype(np.float64)),
        "n_sat": sat.astype(np.int64), "n_withmax": withmax.astype(np.int64),
        "n_reason": ev.elicits_reasoning.astype(np.int64),
        "n_tknown": tknown.astype(np.int64), "n_trepeat": trepeat.astype(np.int64),
        "n_tdistinct": tnew.astype(np.int64), "n_err": (ev.status >= 400).astype(np.int64),
    }
    before = {name: getattr(state0, name)[seg] + _excl_cumsum(x, start) for name, x in contrib.items()}
    before.update(
        n=n0 + (np.arange(len(seg)) - start), first_ts=first_ts, last_ts=last_ts,
        last_completion=last_completion, last_max=last_max, last_status=last_status,
        hours_seen=_popcount(state0.hour_mask[seg]) + _excl_cumsum(hnew.astype(np.int64), start),
        has_prev=has_prev, gap=gap, lgap=lgap, burst=burst, overlap=overlap, tnew=tnew,
        t_prior=t_prior,
    )
    return _Before(fields=before, contrib=contrib, hour=hour, bucket=bucket, t_prior=t_prior)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x.astype(np.uint64)).astype(np.int64)


def _safe_div(a, b):
    return np.where(b > 0, a / np.maximum(b, 1), 0.0)


def compute(state0: State, seg: np.ndarray, ev: RawEvents) -> np.ndarray:
    """Feature rows [n_events, N_FEATURES] float32 for a block of events.

    `seg[i]` is the index into `state0` of event i's session; events of one session are
    contiguous and in arrival order; `state0` is each session's state before the block.
    """
    if len(seg) == 0:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    b = _scan(state0, seg, ev).fields
    n = b["n"].astype(np.float64)
    has_prev = b["has_prev"]
    mt = ev.max_tokens
    lmax = b["last_max"]
    phase = 2.0 * np.pi * (ev.ts % 86400.0) / 86400.0
    age_days = (ev.ts - ev.account_created_at) / 86400.0
    age_known = np.isfinite(age_days)
    prev_sat_known = has_prev & (lmax > 0)
    mean_lgap = _safe_div(b["sum_lgap"], b["n_gaps"])
    var_lgap = np.maximum(_safe_div(b["sum_lgap2"], b["n_gaps"]) - mean_lgap ** 2, 0.0)
    duration_h = np.where(has_prev, (b["last_ts"] - b["first_ts"]) / 3600.0, 0.0)

    cols = [
        (~has_prev),
        b["lgap"] / 12.0,
        b["burst"],
        np.log1p(ev.prompt_tokens) / 10.0,
        np.where(mt > 0, np.log1p(np.maximum(mt, 0)) / 10.0, 0.0),
        (mt <= 0),
        np.sin(phase), np.cos(phase),
        np.where(age_known, np.log1p(np.clip(age_days, 0.0, None)) / 6.0, 0.0),
        (~age_known),
        ev.elicits_reasoning,
        (ev.template_key < 0),
        np.log1p(b["t_prior"]) / 5.0,
        b["tnew"],
        (ev.browser_client == 1),
        (ev.browser_client < 0),
        np.where(has_prev, np.log1p(b["last_completion"]) / 10.0, 0.0),
        np.where(prev_sat_known, np.clip(b["last_completion"] / np.maximum(lmax, 1), 0.0, 1.5), 0.0),
        prev_sat_known,
        (has_prev & (b["last_status"] >= 400)),
        b["overlap"],
        np.log1p(n) / 7.0,
        mean_lgap / 12.0,
        np.sqrt(var_lgap) / 5.0,
        _safe_div(b["n_burst"], b["n_gaps"]),
        _safe_div(b["sum_lprompt"], n) / 10.0,
        _safe_div(b["sum_lcompl"], n) / 10.0,
        _safe_div(b["n_sat"], b["n_withmax"]),
        _safe_div(b["n_reason"], n),
        _safe_div(b["n_trepeat"], b["n_tknown"]),
        _safe_div(b["n_tdistinct"], np.minimum(b["n_tknown"], N_TEMPLATE_BUCKETS)),
        b["hours_seen"] / 24.0,
        np.log1p(duration_h) / 5.0,
        np.where(duration_h > 0, np.log1p(n / np.maximum(duration_h, 1e-3)) / 5.0, 0.0),
        _safe_div(b["n_err"], n),
        _safe_div(b["n_overlap"], b["n_gaps"]),
    ]
    out = np.empty((len(seg), N_FEATURES), dtype=np.float32)
    for i, c in enumerate(cols):
        out[:, i] = c   # casts bool/float64 straight into the float32 row-major block
    return out


def fold(state0: State, seg: np.ndarray, ev: RawEvents) -> State:
    """State of each session of `state0` after also folding in the block's events."""
    out = State(**{f.name: getattr(state0, f.name).copy() for f in fields(State)})
    if len(seg) == 0:
        return out
    sc = _scan(state0, seg, ev)
    for name, x in sc.contrib.items():
        np.add.at(getattr(out, name), seg, x)
    last = np.ones(len(seg), dtype=bool)
    last[:-1] = seg[1:] != seg[:-1]
    ls = seg[last]
    out.first_ts[ls] = sc.fields["first_ts"][last]
    out.last_ts[ls] = ev.ts[last]
    out.last_completion[ls] = ev.completion_tokens[last]
    out.last_max[ls] = ev.max_tokens[last]
    out.last_status[ls] = ev.status[last]
    np.add.at(out.n, seg, 1)
    np.bitwise_or.at(out.hour_mask, seg, np.left_shift(np.int64(1), sc.hour))
    known = ev.template_key >= 0
    np.add.at(out.tcount, (seg[known], sc.bucket[known]), 1)
    return out
