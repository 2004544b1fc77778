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
Both run the same compiled loop (`_kernel`), so both give the same S_t and the same rows.

Any change to what a feature means must bump `FEATURE_VERSION` (the bundle stores the spec
hash and loading refuses a mismatch); tests/test_features.py pins golden values.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numba
import numpy as np
from numba import njit

from .frames import BAND_BITS, BAND_MASK, N_BANDS, SIGNATURE_VERSION, signature_key

FEATURE_VERSION = 2
# The per-session frame table: N_FRAME_SLOTS int64 entries, each one frame's 56-bit
# signature key (model.frames.signature_key: four 14-bit band fingerprints) and, in bits
# 56..62, how often the session sent it (saturating at FRAME_COUNT_MAX). 256 bytes per
# session whatever its length; a frame seen once is the first to give way to a new one.
N_FRAME_SLOTS = 32
FRAME_COUNT_SHIFT = 56
FRAME_COUNT_MAX = 127
FRAME_KEY_MASK = (1 << FRAME_COUNT_SHIFT) - 1
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
        "n_frame_slots": N_FRAME_SLOTS,
        "frame_count_max": FRAME_COUNT_MAX,
        "burst_s": BURST_S,
        "gen_tokens_per_s": GEN_TOKENS_PER_S,
        "gen_overhead_s": GEN_OVERHEAD_S,
        "saturation": SATURATION,
        # template_key comes from frame signatures: new signing rules mean new keys
        "signature_version": SIGNATURE_VERSION,
        "band_bits": BAND_BITS,
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
    template_key: np.ndarray        # int64, model.frames.signature_key of the frame signature
    elicits_reasoning: np.ndarray   # int8 0/1
    browser_client: np.ndarray      # int8: 1 browser, 0 other, -1 missing
    account_created_at: np.ndarray  # float64 epoch s

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx) -> "RawEvents":
        return RawEvents(**{name: getattr(self, name)[idx] for name in RAW_FIELDS})

    @staticmethod
    def concat(parts: list["RawEvents"]) -> "RawEvents":
        return RawEvents(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in RAW_FIELDS})


RAW_FIELDS = tuple(f.name for f in fields(RawEvents))


def template_key(signature: str | None) -> int:
    """The raw field of a frame signature (or an upstream template hash, read as a legacy
    one-band signature); -1 when missing."""
    return signature_key(signature or None)


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
    tkey = _map_distinct(table["frame_signature"], template_key, -1, np.int64)
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

# The running aggregates of one session: (name, dtype) of each scalar field of `State`
# besides tcount; the online stores (serving.state, serving.redis_store) lay them out.
STATE_SCALARS = (
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
    """Running aggregates of S sessions: each field has shape [S] (tcount: [S, N_FRAME_SLOTS]
    int64, the frame table: key | count << FRAME_COUNT_SHIFT, 0 = empty slot).

    21 x 8 bytes + 32 x 8 bytes per session, whatever the session's length.
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
        return State(**{name: getattr(self, name)[idx] for name in STATE_FIELDS})


STATE_FIELDS = tuple(f.name for f in fields(State))


def empty_state(n_sessions: int) -> State:
    s = {name: np.zeros(n_sessions, dtype=dt) for name, dt in STATE_SCALARS}
    s["last_max"][:] = -1
    s["last_status"][:] = -1
    return State(**s, tcount=np.zeros((n_sessions, N_FRAME_SLOTS), dtype=np.int64))


# ---------------------------------------------------------------------------- the kernel
#
# One sequential pass: for each event, write its row from its session's state, then fold
# the event into that state. Compiled with numba (cached in the user cache directory, see
# `_numba_cache_dir`) because the same loop
# serves 1M-event batch files and single requests: vectorised numpy needed ~100 array
# operations per call, which cost ~250 us for one 32-event window online.

_RAW_KERNEL_DTYPES = (("ts", np.float64), ("prompt_tokens", np.int64), ("completion_tokens", np.int64),
                      ("max_tokens", np.int64), ("status", np.int64), ("template_key", np.int64),
                      ("elicits_reasoning", np.int64), ("browser_client", np.int64),
                      ("account_created_at", np.float64))


def _numba_cache_dir() -> str | None:
    """Where numba keeps the compiled kernel: an explicit NUMBA_CACHE_DIR (numba's config
    already holds it), else the user cache directory ($XDG_CACHE_HOME or ~/.cache, per the
    XDG base-directory spec), never the package's own __pycache__ (a source tree or
    site-packages). None when it cannot be created or written: the kernel then compiles
    on every start (a few seconds) instead of failing, and numba is not left to fall back
    to the in-tree cache."""
    d = numba.config.CACHE_DIR
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or ""
        if not os.path.isabs(base):   # the spec says a relative value is to be ignored
            try:
                base = str(Path.home() / ".cache")
            except RuntimeError:      # no HOME and no passwd entry
                return None
        d = os.path.join(base, "distillguard", "numba")
    try:
        os.makedirs(d, exist_ok=True)
        tempfile.TemporaryFile(dir=d).close()
    except OSError:
        return None
    return d


def _njit_cached(fn):
    """`njit(nogil=True)` with its disk cache in `_numba_cache_dir()`, or no cache when that
    is unusable. numba fixes a function's cache location when it is decorated, from
    numba.config, so the setting is made for this decoration only and restored: other numba
    code in the process keeps its own cache location."""
    d = _numba_cache_dir()
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = d or saved
    try:
        return njit(cache=d is not None, nogil=True)(fn)
    finally:
        numba.config.CACHE_DIR = saved


njit_cached = _njit_cached   # for other folders' numba kernels (serving.policy)


@_njit_cached
def _kernel(seg, ts, pt, ct, mx, stt, tk, er, br, ca,
            n, first_ts, last_ts, last_c, last_m, last_s, s_lgap, s_lgap2, n_gaps, n_burst, n_ovl,
            s_lp, s_lc, n_sat, n_wm, n_rs, n_tk, n_tr, n_td, n_err, hmask, tcount, out, write_rows):
    two_pi = 2.0 * np.pi
    for i in range(seg.shape[0]):
        s = seg[i]
        has_prev = n[s] > 0
        gap = max(ts[i] - last_ts[s], 0.0) if has_prev else 0.0
        lgap = math.log1p(gap)
        burst = has_prev and gap < BURST_S
        overlap = has_prev and gap < GEN_OVERHEAD_S + last_c[s] / GEN_TOKENS_PER_S
        # The frame table lookup, by model.frames' rule: an earlier frame matches when some
        # band present in both is equal; t_prior = the count of the best-matching frame.
        k = tk[i]
        tknown = k > 0
        t_prior = 0
        slot = -1
        if tknown:
            for j in range(N_FRAME_SLOTS):
                e = tcount[s, j]
                if e == 0:
                    continue
                for b in range(N_BANDS):
                    fb = (k >> (BAND_BITS * b)) & BAND_MASK
                    if fb != 0 and fb == ((e >> (BAND_BITS * b)) & BAND_MASK):
                        c = e >> FRAME_COUNT_SHIFT
                        if c > t_prior:
                            t_prior = c
                            slot = j
                        break
        hour = int((ts[i] % 86400.0) // 3600.0)
        if write_rows:
            nn = float(n[s])
            r = out[i]
            r[0] = 0.0 if has_prev else 1.0
            r[1] = lgap / 12.0
            r[2] = 1.0 if burst else 0.0
            r[3] = math.log1p(float(pt[i])) / 10.0
            r[4] = math.log1p(float(mx[i])) / 10.0 if mx[i] > 0 else 0.0
            r[5] = 0.0 if mx[i] > 0 else 1.0
            phase = two_pi * (ts[i] % 86400.0) / 86400.0
            r[6] = math.sin(phase)
            r[7] = math.cos(phase)
            age_days = (ts[i] - ca[i]) / 86400.0
            age_known = math.isfinite(age_days)
            r[8] = math.log1p(max(age_days, 0.0)) / 6.0 if age_known else 0.0
            r[9] = 0.0 if age_known else 1.0
            r[10] = float(er[i])
            r[11] = 0.0 if tknown else 1.0
            r[12] = math.log1p(float(t_prior)) / 5.0
            r[13] = 1.0 if (tknown and t_prior == 0) else 0.0
            r[14] = 1.0 if br[i] == 1 else 0.0
            r[15] = 1.0 if br[i] < 0 else 0.0
            r[16] = math.log1p(float(last_c[s])) / 10.0 if has_prev else 0.0
            sat_known = has_prev and last_m[s] > 0
            r[17] = min(max(last_c[s] / max(last_m[s], 1), 0.0), 1.5) if sat_known else 0.0
            r[18] = 1.0 if sat_known else 0.0
            r[19] = 1.0 if (has_prev and last_s[s] >= 400) else 0.0
            r[20] = 1.0 if overlap else 0.0
            r[21] = math.log1p(nn) / 7.0
            ng = n_gaps[s]
            mean_lgap = s_lgap[s] / ng if ng > 0 else 0.0
            var_lgap = max((s_lgap2[s] / ng if ng > 0 else 0.0) - mean_lgap * mean_lgap, 0.0)
            r[22] = mean_lgap / 12.0
            r[23] = math.sqrt(var_lgap) / 5.0
            r[24] = n_burst[s] / ng if ng > 0 else 0.0
            r[25] = (s_lp[s] / nn if nn > 0 else 0.0) / 10.0
            r[26] = (s_lc[s] / nn if nn > 0 else 0.0) / 10.0
            r[27] = n_sat[s] / n_wm[s] if n_wm[s] > 0 else 0.0
            r[28] = n_rs[s] / nn if nn > 0 else 0.0
            r[29] = n_tr[s] / n_tk[s] if n_tk[s] > 0 else 0.0
            r[30] = n_td[s] / n_tk[s] if n_tk[s] > 0 else 0.0
            hours = 0
            m = hmask[s]
            while m:
                m &= m - 1
                hours += 1
            r[31] = hours / 24.0
            duration_h = (last_ts[s] - first_ts[s]) / 3600.0 if has_prev else 0.0
            r[32] = math.log1p(duration_h) / 5.0
            r[33] = math.log1p(nn / max(duration_h, 1e-3)) / 5.0 if duration_h > 0 else 0.0
            r[34] = n_err[s] / nn if nn > 0 else 0.0
            r[35] = n_ovl[s] / ng if ng > 0 else 0.0
        # fold event i into its session
        if has_prev:
            s_lgap[s] += lgap
            s_lgap2[s] += lgap * lgap
            n_gaps[s] += 1
        else:
            first_ts[s] = ts[i]
        n_burst[s] += burst
        n_ovl[s] += overlap
        s_lp[s] += math.log1p(float(pt[i]))
        s_lc[s] += math.log1p(float(ct[i]))
        if mx[i] > 0:
            n_wm[s] += 1
            n_sat[s] += ct[i] >= SATURATION * mx[i]
        n_rs[s] += er[i]
        if tknown:
            n_tk[s] += 1
            if slot >= 0:
                n_tr[s] += 1
                e = tcount[s, slot]
                ek = e & FRAME_KEY_MASK
                for b in range(N_BANDS):    # the frame learns the bands it lacked
                    m = BAND_MASK << (BAND_BITS * b)
                    if (ek & m) == 0:
                        ek |= k & m
                tcount[s, slot] = ek | (min(t_prior + 1, FRAME_COUNT_MAX) << FRAME_COUNT_SHIFT)
            else:
                # A new frame takes an empty slot, else the least-sent one; scanning from
                # a point that moves with each new frame makes ties go oldest-first-ish.
                start = n_td[s] % N_FRAME_SLOTS
                slot, cmin = start, FRAME_COUNT_MAX + 1
                for jj in range(N_FRAME_SLOTS):
                    j = (start + jj) % N_FRAME_SLOTS
                    c = tcount[s, j] >> FRAME_COUNT_SHIFT
                    if c < cmin:
                        cmin, slot = c, j
                        if c == 0:
                            break
                tcount[s, slot] = k | (np.int64(1) << FRAME_COUNT_SHIFT)
                n_td[s] += 1
        n_err[s] += stt[i] >= 400
        hmask[s] |= np.int64(1) << hour
        last_ts[s] = ts[i]
        last_c[s] = ct[i]
        last_m[s] = mx[i]
        last_s[s] = stt[i]
        n[s] += 1


def _run(state: State, seg: np.ndarray, ev: RawEvents, write_rows: bool) -> np.ndarray:
    """The kernel over a block; updates `state` in place; returns rows (or an empty array)."""
    rows = np.zeros((len(seg) if write_rows else 0, N_FEATURES), dtype=np.float32)
    if len(seg):
        raw = [np.ascontiguousarray(getattr(ev, name), dtype=dt) for name, dt in _RAW_KERNEL_DTYPES]
        _kernel(np.ascontiguousarray(seg, dtype=np.int64), *raw,
                *(getattr(state, name) for name, _ in STATE_SCALARS), state.tcount, rows, write_rows)
    return rows


def _copy(state: State) -> State:
    return State(**{name: getattr(state, name).copy() for name in STATE_FIELDS})


def compute(state0: State, seg: np.ndarray, ev: RawEvents) -> np.ndarray:
    """Feature rows [n_events, N_FEATURES] float32 for a block of events.

    `seg[i]` is the index into `state0` of event i's session; each session's events are in
    arrival order; `state0` is each session's state before the block (not modified).
    """
    return _run(_copy(state0), seg, ev, True)


def fold(state0: State, seg: np.ndarray, ev: RawEvents) -> State:
    """State of each session of `state0` after also folding in the block's events."""
    state = _copy(state0)
    _run(state, seg, ev, False)
    return state


def fold_into(state: State, seg: np.ndarray, ev: RawEvents) -> None:
    """`fold` in place: the online store folds events into its own slab (seg = slots)."""
    _run(state, seg, ev, False)
