"""Baselines the transformer is measured against (issue 4, deliverable 2).

Two detectors, scored on exactly the sessions the transformer is scored on:

- `RulesBaseline`: "rules as deployed today", CrowdSec-style leaky buckets keyed by
  account over event time, plus a template-repetition threshold. Fixed limits, nothing
  learnt. It can only say "distillation" or "not": it has no notion of benign
  automation, so everything it does not flag is called `human`, and benign automation
  that trips a limit (eval harnesses, batch jobs, cron) is called distillation.
- `GBTBaseline`: scikit-learn `HistGradientBoostingClassifier` on one row per session:
  the feature row of the session's last event (it already carries the running
  aggregates, `model.features.FEATURE_NAMES`) plus whole-session aggregates computed
  here from the canonical table (`SESSION_FEATURE_NAMES`).

Same sessions: `baseline_data` runs `training.data.prepare` (the transformer's own
labelled sessions, in its order) and `session_table` (the canonical rows of every
session, labelled or not) and aligns the two, so `split_of(data.accounts, seed)` and a
transformer's `session_probs(bundle, prepared.sr)` line up row for row with the
baselines' outputs.

Same information: both baselines score a session at its last event the way the
transformer does (design card, "When the score is taken"): the rules see each request
as it arrives (they never read completions), and the GBT's completion/status
aggregates leave out the last event's completion, which is not known when it is
scored. The GBT reads only the raw fields the transformer reads (no ip_prefix, no
model name), so a difference between them is a difference of models, not of inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..model import features
from ..model.schema import LABELS, plain_array
from ..model.sessions import DEFAULT_GAP_S, assign_sessions, session_bounds

DISTILL = LABELS.index("distillation_harvesting")
HUMAN = LABELS.index("human")
DAY_S = 86_400.0


# ---------------------------------------------------------------------------- sessions

@dataclass
class SessionTable:
    """Every session of an event table: canonical rows laid end to end, session by session."""
    table: pa.Table          # canonical events after `assign_sessions` (sorted, contiguous sessions)
    starts: np.ndarray       # (n_sessions + 1,) session s is table rows [starts[s], starts[s+1])
    session_ids: np.ndarray  # (n_sessions,) str
    accounts: np.ndarray     # (n_sessions,) str

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    @property
    def n_sessions(self) -> int:
        return len(self.starts) - 1

    def seg(self) -> np.ndarray:
        """(n_events,) session index of each row."""
        return np.repeat(np.arange(self.n_sessions), self.lengths)


def session_table(events: pa.Table, gap_s: float = DEFAULT_GAP_S) -> SessionTable:
    """Canonical events (model.schema) -> sessions cut by the pipeline's own rule."""
    table = assign_sessions(events, gap_s=gap_s)
    starts = np.asarray(session_bounds(table), dtype=np.int64)
    first = pa.array(starts[:-1])
    sid = pc.take(plain_array(table["session_id"]), first).to_numpy(zero_copy_only=False).astype(str)
    acct = pc.take(plain_array(table["account_id"]), first).to_numpy(zero_copy_only=False).astype(str)
    return SessionTable(table=table, starts=starts, session_ids=sid, accounts=acct)


@dataclass
class BaselineData:
    """The transformer's labelled sessions (`training.data.prepare`) plus their canonical rows.

    Row i of every array here is session i of `prepared`; `index[i]` is that session in `st`.
    """
    st: SessionTable
    prepared: object          # training.data.Prepared (kept untyped: that module imports torch)
    index: np.ndarray         # (n_labelled,) int64 session index into st
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def y(self) -> np.ndarray:
        return self.prepared.y

    @property
    def accounts(self) -> np.ndarray:
        return self.prepared.accounts

    @property
    def families(self) -> np.ndarray:
        return self.prepared.families

    @property
    def session_ids(self) -> np.ndarray:
        return self.prepared.session_ids

    def __len__(self) -> int:
        return len(self.index)


def baseline_data(events: pa.Table, labels: pa.Table, gap_s: float = DEFAULT_GAP_S) -> BaselineData:
    """Labelled sessions exactly as the transformer's training/evaluation sees them."""
    from .data import prepare   # imports lightning/torch: only when labels are involved

    p = prepare(events, labels, gap_s)
    st = session_table(events, gap_s)
    # A session is keyed by (account, session_id): two accounts may share a caller id.
    key_all = np.char.add(np.char.add(st.accounts.astype(str), "\x00"), st.session_ids.astype(str))
    key_lab = np.char.add(np.char.add(p.accounts.astype(str), "\x00"), p.session_ids.astype(str))
    order = np.argsort(key_all, kind="stable")
    pos = np.searchsorted(key_all[order], key_lab)
    pos = np.minimum(pos, len(order) - 1) if len(order) else pos
    index = order[pos] if len(order) else np.zeros(0, dtype=np.int64)
    if len(key_lab) and not np.array_equal(key_all[index], key_lab):
        raise RuntimeError("labelled sessions of prepare() not found in session_table(): session rules differ")
    if not np.array_equal(st.lengths[index], p.sr.lengths):
        raise RuntimeError("prepare() and session_table() disagree on session lengths")
    return BaselineData(st=st, prepared=p, index=index.astype(np.int64))


def _select(n: int, sel) -> np.ndarray:
    """None -> all rows; bool mask or index array -> index array."""
    if sel is None:
        return np.arange(n)
    sel = np.asarray(sel)
    return np.flatnonzero(sel) if sel.dtype == bool else sel.astype(np.int64)


# ---------------------------------------------------------------------------- segment helpers

def _account_codes(st: SessionTable) -> np.ndarray:
    """(n_events,) int account code; assign_sessions sorts by account first, so runs are accounts."""
    acct = plain_array(st.table["account_id"])
    n = len(acct)
    change = np.ones(n, dtype=bool)
    if n > 1:
        change[1:] = pc.not_equal(acct.slice(1), acct.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return np.cumsum(change) - 1


def _template_codes(table: pa.Table) -> np.ndarray:
    """(n_events,) int64 code of each frame signature, -1 where null. Exact signatures:
    the baselines count verbatim frame reuse, the model the same_frame rule."""
    enc = pc.dictionary_encode(plain_array(table["frame_signature"]))
    return np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _seg_cumsum(x: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of x restarting at every segment start."""
    c = np.cumsum(x, dtype=np.float64)
    before = np.concatenate([[0.0], c])[starts[:-1]]
    return c - np.repeat(before, lengths)


def _seg_max(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(starts) - 1)
    nonempty = starts[1:] > starts[:-1]
    if nonempty.any():
        out[nonempty] = np.maximum.reduceat(x, starts[:-1][nonempty])
    return out


def _seg_mean(x: np.ndarray, seg: np.ndarray, n_seg: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean of x over each segment's rows where mask; NaN for a segment with none."""
    if mask is not None:
        x, seg = x[mask], seg[mask]
    cnt = np.bincount(seg, minlength=n_seg).astype(np.float64)
    tot = np.bincount(seg, weights=x, minlength=n_seg)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def _seg_std(x: np.ndarray, seg: np.ndarray, n_seg: int, mask: np.ndarray | None = None) -> np.ndarray:
    m = _seg_mean(x, seg, n_seg, mask)
    m2 = _seg_mean(x * x, seg, n_seg, mask)
    return np.sqrt(np.maximum(m2 - m * m, 0.0))


def _seg_quantile(x: np.ndarray, seg: np.ndarray, n_seg: int, q: float,
                  mask: np.ndarray | None = None) -> np.ndarray:
    """Per-segment quantile (linear interpolation, like np.quantile); NaN for empty segments."""
    if mask is not None:
        x, seg = x[mask], seg[mask]
    order = np.lexsort((x, seg))
    xs = x[order]
    cnt = np.bincount(seg, minlength=n_seg)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    out = np.full(n_seg, np.nan)
    has = cnt > 0
    pos = q * (cnt[has] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, cnt[has] - 1)
    frac = pos - lo
    out[has] = xs[start[has] + lo] * (1 - frac) + xs[start[has] + hi] * frac
    return out


def _seg_distinct(codes: np.ndarray, seg: np.ndarray, n_seg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment over rows with code >= 0: (known rows, distinct codes, count of the most frequent)."""
    ok = codes >= 0
    k = int(codes.max(initial=-1)) + 1
    pair = seg[ok].astype(np.int64) * max(k, 1) + codes[ok]
    uniq, counts = np.unique(pair, return_counts=True)
    pseg = uniq // max(k, 1)
    known = np.bincount(seg[ok], minlength=n_seg)
    distinct = np.bincount(pseg, minlength=n_seg)
    top = np.zeros(n_seg, dtype=np.int64)
    np.maximum.at(top, pseg, counts)
    return known, distinct, top


# ---------------------------------------------------------------------------- rules

@dataclass(frozen=True)
class RulesConfig:
    """Limits of the deployed-today rules. None is learnt; all are assumptions of the kind
    an API operator sets, chosen so that ordinary use never meets them.

    - `rpm`, `burst`: a leaky bucket per account (CrowdSec scenarios are written as a
      `capacity` and a `leakspeed`): it drains `rpm` requests per minute and overflows
      above `burst` queued requests. 60/min with a minute's burst is in the range of
      published low-tier API limits (tens to hundreds of requests per minute) and above
      the simulator's own per-account 429 limit for humans (50 per 60 s).
    - `daily_quota`: requests per account per rolling 24 h, the order of the daily
      request caps of low API tiers (10^3-10^4). The seed article's harvesting accounts
      sent ~26 requests a day, one every ~55 min: under every rate limit by design.
    - `template_share`, `template_min`: flag a session once at least `template_min` of
      its requests carry a template hash and more than `template_share` of them repeat
      a hash already seen in the session (batch scripts rerunning one prompt frame).
    """
    rpm: float = 60.0
    burst: float = 60.0
    daily_quota: int = 1000
    template_share: float = 0.8
    template_min: int = 50


RULE_NAMES = ("rate_per_minute", "daily_quota", "template_repetition")


@dataclass
class RuleScores:
    """Per session: each rule's worst statistic/limit ratio over the session's events."""
    ratios: np.ndarray   # (n_sessions, 3) in RULE_NAMES order; > 1 means the rule fired
    score: np.ndarray    # (n_sessions,) R / (1 + R), R = max ratio; > 0.5 iff a rule fired
    fired: np.ndarray    # (n_sessions,) bool

    def fired_rules(self) -> np.ndarray:
        """(n_sessions, 3) bool: which rules fired."""
        return self.ratios > 1.0


class RulesBaseline:
    """CrowdSec-style leaky buckets per account + a per-session template-repetition threshold.

    Each rule's statistic is evaluated at every request, over the requests up to and
    including it (what a gateway knows when the request arrives; no completions are read):
      rate_per_minute  leaky-bucket level of the account (each request adds 1, the bucket
                       drains rpm/60 per second of event time) / burst
      daily_quota      account requests in the rolling 24 h (t - 86400, t] / daily_quota
      template_repetition
                       share of the session's requests so far (those with a template
                       hash) whose hash was already seen in the session / template_share;
                       0 until `template_min` such requests
    The buckets are per ACCOUNT, so other sessions of the account (caller session ids,
    a shorter gap) fill them too; the score of a session takes each rule's maximum over
    the session's own events, i.e. "fired at or before its last event".

    Score: R = max over rules of that maximum, score = R / (1 + R) in [0, 1). A rule fires
    when its ratio exceeds 1, so score > 0.5 exactly when a rule fired. Thresholding the
    score elsewhere is the same as scaling every limit by one factor (score > s <=> some
    statistic > limit * s / (1 - s)), which is how the rules get an operating point at a
    target human FPR for `compute_metrics`; the minimum count is not scaled.

    Class probabilities: [1 - score, 0, score]. Rules cannot tell benign automation from
    anything else, so p_benign_automation is always 0 and the predicted class (argmax)
    is distillation_harvesting when a rule fired, else human.
    """

    name = "rules"

    def __init__(self, config: RulesConfig | None = None):
        self.config = config or RulesConfig()

    def fit(self, data: BaselineData | None = None, sel=None) -> "RulesBaseline":
        """Nothing to learn: the limits are what is deployed, not tuned to the data."""
        return self

    def session_scores(self, st: SessionTable) -> RuleScores:
        """Rule statistics of every session of `st` (labelled or not)."""
        cfg = self.config
        n = st.table.num_rows
        if n == 0:
            z = np.zeros(0)
            return RuleScores(ratios=np.zeros((0, 3)), score=z, fired=z.astype(bool))
        ts = np.asarray(st.table["ts"].to_numpy(), dtype=np.float64)
        row = np.asarray(pc.fill_null(st.table["_row"], 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        acct = _account_codes(st)
        ratios = np.zeros((n, 3))

        # Account-level rules need each account's events in time order across its sessions.
        order = np.lexsort((row, ts, acct))
        a, t = acct[order], ts[order]
        a_start = np.flatnonzero(np.concatenate([[True], a[1:] != a[:-1]]))
        a_len = np.diff(np.append(a_start, n))
        local = np.arange(n) - np.repeat(a_start, a_len)
        t_rel = t - np.repeat(t[a_start], a_len)

        # Leaky bucket: level_i = max(level_{i-1} - r*dt, 0) + 1 is Lindley's recursion, solved
        # in closed form: level_i - 1 = S_i - min_{j<=i} S_j with S_i = i - r*(t_i - t_0).
        r = cfg.rpm / 60.0
        s = local - r * t_rel
        s_min = pd.Series(s).groupby(a).cummin().to_numpy()
        level = s - s_min + 1.0
        ratios[order, 0] = level / cfg.burst

        # Rolling 24 h count: accounts laid end to end on one axis, K apart, so one
        # searchsorted finds each window start without crossing into the previous account
        # (float64 keys: ~1e-6 s resolution up to ~1e10, i.e. 10^4 accounts x 10^6 s).
        k = float(t_rel.max()) + DAY_S + 1.0
        key = a * k + t_rel
        first_in = np.searchsorted(key, key - DAY_S, side="right")
        ratios[order, 1] = (np.arange(n) - first_in + 1) / cfg.daily_quota

        # Template repetition within each session, in session order (the table's order).
        seg = st.seg()
        code = _template_codes(st.table)
        known = code >= 0
        repeat = np.zeros(n, dtype=bool)
        if known.any():
            pair = seg[known].astype(np.int64) * (int(code.max()) + 1) + code[known]
            _, first = np.unique(pair, return_index=True)
            rep_known = np.ones(int(known.sum()), dtype=bool)
            rep_known[first] = False
            repeat[known] = rep_known
        n_known = _seg_cumsum(known.astype(np.float64), st.starts, st.lengths)
        n_rep = _seg_cumsum(repeat.astype(np.float64), st.starts, st.lengths)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(n_known > 0, n_rep / np.maximum(n_known, 1), 0.0)
        ratios[:, 2] = np.where(n_known >= cfg.template_min, share / cfg.template_share, 0.0)

        per_session = np.stack([_seg_max(ratios[:, j], st.starts) for j in range(3)], axis=1)
        big = per_session.max(axis=1)
        return RuleScores(ratios=per_session, score=big / (1.0 + big), fired=big > 1.0)

    def _scores(self, data: BaselineData) -> RuleScores:
        key = ("rules", self.config)
        if key not in data._cache:
            data._cache[key] = self.session_scores(data.st)
        return data._cache[key]

    def predict(self, data: BaselineData, sel=None) -> np.ndarray:
        """(n_selected,) class index: distillation_harvesting where a rule fired, else human."""
        fired = self._scores(data).fired[data.index[_select(len(data), sel)]]
        return np.where(fired, DISTILL, HUMAN)

    def predict_proba(self, data: BaselineData, sel=None) -> np.ndarray:
        """(n_selected, 3) class probabilities in LABELS order; argmax == `predict`."""
        idx = data.index[_select(len(data), sel)]
        score = self._scores(data).score[idx]
        out = np.zeros((len(idx), len(LABELS)))
        out[:, HUMAN] = 1.0 - score
        out[:, DISTILL] = score
        return out


# ---------------------------------------------------------------------------- GBT

SESSION_FEATURE_NAMES = (
    "log_n_events", "log_duration_h", "log_rate_per_h",
    "median_log_gap", "p10_log_gap", "gap_cv", "share_gap_lt_1s", "log_max_gap",
    "mean_log_prompt", "std_log_prompt", "max_log_prompt",
    "mean_log_completion", "std_log_completion", "max_log_completion",
    "mean_completion_over_max", "share_saturated", "share_max_tokens_missing", "max_tokens_distinct_share",
    "share_template_known", "template_distinct_share", "template_top_share",
    "share_reasoning", "share_night_utc", "hours_covered_utc", "share_error", "share_429",
    "log_account_age_days_first", "share_browser",
)
NIGHT_UTC_HOURS = (0, 6)   # [0 h, 6 h) UTC


def session_aggregates(st: SessionTable) -> np.ndarray:
    """(n_sessions, len(SESSION_FEATURE_NAMES)) float64 whole-session aggregates; NaN = undefined.

    Completion and status aggregates skip each session's last event: when the session is
    scored at its last event, that event's completion has not happened yet.
    """
    tb = st.table
    n_seg = st.n_sessions
    seg = st.seg()
    starts, lengths = st.starts, st.lengths
    n = tb.num_rows
    raw = features.raw_from_table(tb)
    ts = raw.ts
    last = np.zeros(n, dtype=bool)
    last[starts[1:][lengths > 0] - 1] = True
    prior = ~last

    cnt = lengths.astype(np.float64)
    first_ts = ts[starts[:-1]] if n_seg else np.zeros(0)
    dur_h = (ts[np.maximum(starts[1:] - 1, 0)] - first_ts) / 3600.0 if n_seg else np.zeros(0)

    gap = np.zeros(n)
    gap[1:] = ts[1:] - ts[:-1]
    has_gap = np.ones(n, dtype=bool)
    has_gap[starts[:-1][lengths > 0]] = False
    gap = np.maximum(gap, 0.0)
    lgap = np.log1p(gap)
    g_mean = _seg_mean(gap, seg, n_seg, has_gap)
    g_std = _seg_std(gap, seg, n_seg, has_gap)

    lp = np.log1p(raw.prompt_tokens.astype(np.float64))
    lc = np.log1p(raw.completion_tokens.astype(np.float64))
    mx = raw.max_tokens
    with_max = prior & (mx > 0)
    ratio = np.where(mx > 0, raw.completion_tokens / np.maximum(mx, 1), 0.0)
    sat = (raw.completion_tokens >= features.SATURATION * mx).astype(np.float64)

    mx_known, mx_distinct, _ = _seg_distinct(np.where(mx > 0, mx, -1), seg, n_seg)
    t_known, t_distinct, t_top = _seg_distinct(_template_codes(tb), seg, n_seg)
    hour = ((ts % DAY_S) // 3600.0).astype(np.int64)
    _, hours, _ = _seg_distinct(hour, seg, n_seg)
    age_days = (ts[starts[:-1]] - raw.account_created_at[starts[:-1]]) / DAY_S if n_seg else np.zeros(0)

    with np.errstate(invalid="ignore", divide="ignore"):
        cols = [
            np.log1p(cnt),
            np.log1p(np.maximum(dur_h, 0.0)),
            np.where(dur_h > 0, np.log1p(cnt / np.maximum(dur_h, 1e-3)), np.nan),
            _seg_quantile(lgap, seg, n_seg, 0.5, has_gap),
            _seg_quantile(lgap, seg, n_seg, 0.1, has_gap),
            np.where(g_mean > 0, g_std / g_mean, np.nan),
            _seg_mean((gap < features.BURST_S).astype(np.float64), seg, n_seg, has_gap),
            np.log1p(_seg_max(np.where(has_gap, gap, 0.0), starts)),
            _seg_mean(lp, seg, n_seg),
            _seg_std(lp, seg, n_seg),
            _seg_max(lp, starts),
            _seg_mean(lc, seg, n_seg, prior),
            _seg_std(lc, seg, n_seg, prior),
            np.where(cnt > 1, _seg_max(np.where(prior, lc, 0.0), starts), np.nan),
            _seg_mean(ratio, seg, n_seg, with_max),
            _seg_mean(sat, seg, n_seg, with_max),
            _seg_mean((mx <= 0).astype(np.float64), seg, n_seg),
            np.where(mx_known > 0, mx_distinct / np.maximum(mx_known, 1), np.nan),
            t_known / np.maximum(cnt, 1),
            np.where(t_known > 0, t_distinct / np.maximum(t_known, 1), np.nan),
            np.where(t_known > 0, t_top / np.maximum(t_known, 1), np.nan),
            _seg_mean(raw.elicits_reasoning.astype(np.float64), seg, n_seg),
            _seg_mean(((hour >= NIGHT_UTC_HOURS[0]) & (hour < NIGHT_UTC_HOURS[1])).astype(np.float64), seg, n_seg),
            hours / 24.0,
            _seg_mean((raw.status >= 400).astype(np.float64), seg, n_seg, prior),
            _seg_mean((raw.status == 429).astype(np.float64), seg, n_seg, prior),
            np.where(np.isfinite(age_days), np.log1p(np.maximum(age_days, 0.0)), np.nan),
            _seg_mean((raw.browser_client == 1).astype(np.float64), seg, n_seg, raw.browser_client >= 0),
        ]
    return np.stack(cols, axis=1) if n_seg else np.zeros((0, len(SESSION_FEATURE_NAMES)))


GBT_FEATURE_NAMES = tuple(f"last_{f}" for f in features.FEATURE_NAMES) + SESSION_FEATURE_NAMES


def gbt_features(data: BaselineData) -> np.ndarray:
    """(n_labelled, len(GBT_FEATURE_NAMES)): last event's feature row + session aggregates."""
    if "gbt_x" not in data._cache:
        sr = data.prepared.sr
        last_rows = sr.rows[sr.starts[1:] - 1].astype(np.float64)
        agg = session_aggregates(data.st)[data.index]
        data._cache["gbt_x"] = np.concatenate([last_rows, agg], axis=1)
    return data._cache["gbt_x"]


@dataclass(frozen=True)
class GBTConfig:
    max_iter: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 1.0


class GBTBaseline:
    """HistGradientBoosting on per-session aggregates, classes weighted to balance.

    No early stopping: sklearn's would hold out a random (not account-disjoint) slice of
    the training sessions, leaking accounts between fit and stop. With a fixed
    random_state the fit is deterministic.
    """

    name = "gbt"

    def __init__(self, seed: int = 0, config: GBTConfig | None = None):
        self.seed = seed
        self.config = config or GBTConfig()
        self.model = None

    def fit(self, data: BaselineData, sel=None) -> "GBTBaseline":
        from sklearn.ensemble import HistGradientBoostingClassifier

        idx = _select(len(data), sel)
        if len(idx) == 0:
            raise ValueError("no training sessions")
        c = self.config
        self.model = HistGradientBoostingClassifier(
            max_iter=c.max_iter, learning_rate=c.learning_rate, max_leaf_nodes=c.max_leaf_nodes,
            min_samples_leaf=c.min_samples_leaf, l2_regularization=c.l2_regularization,
            class_weight="balanced", early_stopping=False, random_state=self.seed)
        self.model.fit(gbt_features(data)[idx], data.y[idx])
        return self

    def predict_proba(self, data: BaselineData, sel=None) -> np.ndarray:
        """(n_selected, 3) in LABELS order; a class absent from training gets probability 0."""
        if self.model is None:
            raise RuntimeError("GBTBaseline.predict_proba before fit")
        idx = _select(len(data), sel)
        out = np.zeros((len(idx), len(LABELS)))
        if len(idx):
            if len(self.model.classes_) == 1:
                out[:, int(self.model.classes_[0])] = 1.0
            else:
                out[:, self.model.classes_.astype(np.int64)] = self.model.predict_proba(gbt_features(data)[idx])
        return out


# ---------------------------------------------------------------------------- evaluation

def evaluate_baselines(events: pa.Table | BaselineData, labels: pa.Table | None = None,
                       split: np.ndarray | None = None, seed: int = 0, gap_s: float = DEFAULT_GAP_S,
                       fractions=(0.7, 0.15)) -> dict[str, np.ndarray]:
    """Fit each baseline on the train split, return name -> probs (n_test, 3) on the test split.

    `events`: canonical table (with `labels`), or a `BaselineData` already built.
    `split`: 0/1/2 per labelled session in `training.data.prepare` order; default
    `split_of(accounts, seed, fractions)`, the transformer's own split. Test rows are
    the sessions with split == 2 in that order, so `data.y[split == 2]` etc. line up.
    """
    from .data import split_of

    data = events if isinstance(events, BaselineData) else baseline_data(events, labels, gap_s)
    if split is None:
        split = split_of(data.accounts, seed, fractions)
    split = np.asarray(split)
    if split.shape != (len(data),):
        raise ValueError(f"split must have shape ({len(data)},), got {split.shape}")
    train, test = split == 0, split == 2
    out = {}
    for model in (RulesBaseline().fit(data, train), GBTBaseline(seed=seed).fit(data, train)):
        out[model.name] = model.predict_proba(data, test)
    return out


def baseline_metrics(data: BaselineData, split: np.ndarray | None = None, seed: int = 0,
                     n_boot: int = 200, fractions=(0.7, 0.15)) -> dict[str, dict]:
    """name -> `evaluate.compute_metrics` of each baseline on the test split (families included)."""
    from .data import split_of
    from .evaluate import compute_metrics

    split = split_of(data.accounts, seed, fractions) if split is None else np.asarray(split)
    probs = evaluate_baselines(data, split=split, seed=seed)
    test = split == 2
    return {name: compute_metrics(data.y[test], p, data.accounts[test], n_boot=n_boot, seed=seed,
                                  families=data.families[test])
            for name, p in probs.items()}
