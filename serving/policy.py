"""Verdict policy: per-event probabilities -> accumulated evidence -> gated action + reasons.

One function (`decide_events`) for batch and online, over events in session order with a
per-session decision state (`DecisionState`) carried between calls: batch scoring passes a
whole file's events and fresh states, the online scorer one request per session and the
state it keeps beside the session's ring. The steps, per event t of a session:

1. **Evidence** (`PolicyConfig.evidence`, "cusum"): z_t = the calibrated log-odds of
   distillation, clipped to +-evidence_clip; E_t = clip(E_{t-1} + d_t, 0, evidence_cap)
   with d_t = z_t - evidence_drift when positive, else evidence_decay times it. A request
   scored below the drift pulls the evidence down slowly (a harvester who looks clean for
   a while stays flagged); one above adds at most clip - drift (one spiky request cannot
   reach a block by itself). session_score_t = E_t / evidence_cap in [0, 1]. Bundles from
   before the accumulator ("none") use session_score_t = p_distill_t.
2. **Action** from session_score against the bundle's thresholds (fixed at training time on
   validation humans' highest session_score). DEGRADE and BLOCK also need `min_events`
   events in the session (or session_score >= short_block_at), the score at or above the
   DEGRADE threshold for `consecutive` events in a row, and at least one behavioural
   reason; otherwise they stop at CHALLENGE. The young-account graduated release (THROTTLE
   from p_distill >= young_throttle_at under young_account_days; off when None) and the
   benign cap (most likely class benign automation -> at most benign_max_action) follow.
3. **Reasons** (`GROUPS`): an explanation names the groups of model inputs whose occlusion
   lowers the event's log-odds most (`serving.bundle.explain_windows`); it is computed when
   the action changes level (soft THROTTLE/CHALLENGE, enforcing DEGRADE/BLOCK) or after
   `explain_every` acted-on events without one, and carried in between, so a flood of flagged traffic costs one explanation per session per N
   events. Every non-ALLOW verdict carries at least one reason; ALLOW carries none.
   Bundles without an occlusion baseline fall back to rule checks on each event's own
   feature row (`rule_groups`; cheap, so not scheduled).
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..model import features


class Action(str, enum.Enum):
    ALLOW = "ALLOW"
    THROTTLE = "THROTTLE"
    CHALLENGE = "CHALLENGE"
    DEGRADE = "DEGRADE"
    BLOCK = "BLOCK"


# Escalation order: the highest threshold reached wins.
ESCALATION = (("block", Action.BLOCK), ("degrade", Action.DEGRADE),
              ("challenge", Action.CHALLENGE), ("throttle", Action.THROTTLE))

DEFAULT_THRESHOLDS = {"throttle": 0.5, "challenge": 0.75, "degrade": 0.9, "block": 0.97}
_RANK = {a.value: i for i, a in enumerate(Action)}
_ACTIONS = np.array([a.value for a in Action], dtype=object)
ALLOW, THROTTLE, CHALLENGE, DEGRADE, BLOCK = range(5)
EVIDENCE_KINDS = ("cusum", "none")


@dataclass
class PolicyConfig:
    """What the bundle says the gateway should do with a session (metadata `policy`)."""
    thresholds: dict = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    shadow: bool = False                    # report actions, do not enforce them
    benign_max_action: str = Action.THROTTLE.value
    young_account_days: float = 3.0         # graduated release for accounts younger than this ...
    # ... THROTTLE from this p_distill on; None (default): off. The field-shift audit showed
    # people on day-old accounts flagged at several times the base rate with the rule on
    # (docs/verdicts.md); the model still reads account age, as context.
    young_throttle_at: float | None = None
    # Sequential evidence (module docstring, step 1)
    evidence: str = "cusum"
    evidence_drift: float = 2.0
    evidence_clip: float = 8.0
    evidence_decay: float = 0.1
    evidence_cap: float = 32.0
    # Gates on DEGRADE/BLOCK (step 2)
    min_events: int = 3
    consecutive: int = 2
    short_block_at: float = 1.0             # session_score a session under min_events needs to go past CHALLENGE
    explain_every: int = 32                 # acted-on events between explanations of one session

    def __post_init__(self):
        if self.evidence not in EVIDENCE_KINDS:
            raise ValueError(f"policy evidence must be one of {', '.join(EVIDENCE_KINDS)}, got {self.evidence!r}")
        if not (self.evidence_cap > 0 and self.evidence_clip > 0 and 0 <= self.evidence_decay <= 1):
            raise ValueError("policy: evidence_cap and evidence_clip must be > 0, evidence_decay in [0, 1]")
        for key in ("throttle", "challenge", "degrade", "block"):
            if key not in self.thresholds:
                raise ValueError(f"policy thresholds lack {key!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_metadata(meta: dict) -> "PolicyConfig":
        cfg = dict(meta.get("policy") or {})
        cfg.setdefault("thresholds", meta.get("thresholds", DEFAULT_THRESHOLDS))
        # Bundles written before the accumulator set their thresholds on p_distill itself.
        cfg.setdefault("evidence", "none")
        known = {f.name for f in fields(PolicyConfig)}
        return PolicyConfig(**{k: v for k, v in cfg.items() if k in known})


# --------------------------------------------------------------------------- reasons

_F = {name: i for i, name in enumerate(features.FEATURE_NAMES)}
MIN_EVENTS_FOR_RATES = 4   # shares over fewer earlier events are noise, not evidence

# Groups of model inputs a reason can name: (code, feature names, behavioural?). Context
# groups (who the caller is, not what the session does) never justify DEGRADE/BLOCK alone.
GROUPS = (
    ("TEMPLATE_REPETITION", ("template_missing", "log_template_prior_count", "template_new",
                             "frac_template_repeat", "template_distinct_ratio"), True),
    ("OUTPUT_SATURATION", ("log_max_tokens", "max_tokens_missing", "log_prev_completion", "prev_saturation",
                           "prev_saturation_known", "frac_saturated", "mean_log_completion"), True),
    ("MACHINE_TIMING", ("log_gap", "burst", "mean_log_gap", "std_log_gap", "frac_burst"), True),
    ("CONCURRENCY", ("overlaps_prev", "frac_overlap"), True),
    ("REASONING_ELICITATION", ("elicits_reasoning", "frac_reasoning"), True),
    ("ROUND_THE_CLOCK", ("hour_sin", "hour_cos", "hours_covered"), True),
    ("REQUEST_VOLUME", ("is_first", "log_n_prev", "log_duration_h", "log_rate_per_h"), True),
    ("PROMPT_LENGTHS", ("log_prompt", "mean_log_prompt"), True),
    ("ERRORS", ("prev_error", "frac_error"), True),
    ("YOUNG_ACCOUNT", ("log_account_age_days", "account_age_missing"), False),
    ("CLIENT", ("browser_client", "fingerprint_missing"), False),
)
GROUP_CODES = tuple(g[0] for g in GROUPS)
BEHAVIOURAL = np.array([g[2] for g in GROUPS])
GROUP_COLUMNS = tuple(np.array([_F[n] for n in g[1]]) for g in GROUPS)
N_REASONS = 3        # groups kept per explanation (state: 3 bytes)
assert sorted(i for c in GROUP_COLUMNS for i in c) == list(range(features.N_FEATURES)), \
    "every feature belongs to exactly one reason group"


def _col(rows: np.ndarray, name: str) -> np.ndarray:
    return rows[:, _F[name]].astype(np.float64)


def _row_values(row: np.ndarray) -> dict:
    """Readable quantities of one feature row (decoding `model.features`' scalings)."""
    g = lambda name: float(row[_F[name]])    # noqa: E731
    n = int(round(float(np.expm1(g("log_n_prev") * 7.0))))
    return {
        "n": n, "repeat": g("frac_template_repeat"), "distinct": int(round(g("template_distinct_ratio") * n)),
        "sat": g("frac_saturated"), "gap_sd": g("std_log_gap") * 5.0, "burst": g("frac_burst"),
        "overlap": g("frac_overlap"), "reason": g("frac_reasoning"), "now_reasoning": g("elicits_reasoning") > 0.5,
        "age_known": g("account_age_missing") < 0.5, "age": float(np.expm1(g("log_account_age_days") * 6.0)),
        "hours": int(round(g("hours_covered") * 24.0)), "rate": float(np.expm1(g("log_rate_per_h") * 5.0)),
        "error": g("frac_error"), "browser": g("browser_client") > 0.5, "fp_missing": g("fingerprint_missing") > 0.5,
        "mean_gap": float(np.expm1(g("mean_log_gap") * 10.0)), "prompt": float(np.expm1(g("mean_log_prompt") * 10.0)),
    }


def _evidence_text(code: str, v: dict) -> str:
    n = v["n"]
    if code == "TEMPLATE_REPETITION":
        return (f"{int(round(v['repeat'] * n))}/{n} earlier requests reuse a frame "
                f"({max(v['distinct'], 1)} distinct)")
    if code == "OUTPUT_SATURATION":
        return f"{v['sat']:.0%} of outputs at max_tokens"
    if code == "MACHINE_TIMING":
        return f"gap log-sd {v['gap_sd']:.2f}, {v['burst']:.0%} of gaps under 1 s"
    if code == "CONCURRENCY":
        return f"{v['overlap']:.0%} of requests sent before the previous answer could finish"
    if code == "REASONING_ELICITATION":
        return (f"{v['reason']:.0%} of requests ask for step-by-step reasoning" if n >= MIN_EVENTS_FOR_RATES
                else "this request asks for step-by-step reasoning" if v["now_reasoning"]
                else f"{v['reason']:.0%} of {n} earlier requests ask for step-by-step reasoning")
    if code == "ROUND_THE_CLOCK":
        return f"active in {v['hours']}/24 hours of the day"
    if code == "REQUEST_VOLUME":
        return f"{n} earlier requests in this session"
    if code == "PROMPT_LENGTHS":
        return f"mean prompt {v['prompt']:.0f} tokens"
    if code == "ERRORS":
        return f"{v['error']:.0%} of earlier requests failed"
    if code == "YOUNG_ACCOUNT":
        return f"account {v['age']:.1f} days old" if v["age_known"] else "account age unknown"
    if code == "CLIENT":
        return ("browser client" if v["browser"] else "no client fingerprint" if v["fp_missing"]
                else "programmatic client (SDK or script)")
    raise KeyError(code)


def describe(groups: np.ndarray, rows: np.ndarray) -> list[list[tuple[str, str]]]:
    """groups (n, N_REASONS) int8 group indices (-1 = none), strongest first, and the scored
    events' feature rows -> [(code, evidence), ...] per event, evidence read off the row."""
    out: list[list[tuple[str, str]]] = []
    for g, row in zip(groups, rows):
        gs = [int(i) for i in g if i >= 0]
        if not gs:
            out.append([])
            continue
        v = _row_values(row)
        out.append([(GROUP_CODES[i], _evidence_text(GROUP_CODES[i], v)) for i in gs])
    return out


def rule_groups(rows: np.ndarray) -> np.ndarray:
    """Rule checks on the feature row -> (n, N_REASONS) groups (strongest rule first): the
    reasons of bundles without an occlusion baseline, and `reason_evidence`."""
    n_prev = np.expm1(_col(rows, "log_n_prev") * 7.0)
    enough = n_prev >= MIN_EVENTS_FOR_RATES
    age_days = np.expm1(_col(rows, "log_account_age_days") * 6.0)
    checks = (
        ("TEMPLATE_REPETITION", enough & (_col(rows, "frac_template_repeat") >= 0.5)),
        ("OUTPUT_SATURATION", enough & (_col(rows, "frac_saturated") >= 0.5)),
        ("MACHINE_TIMING", enough & ((_col(rows, "std_log_gap") * 5.0 < 0.35) | (_col(rows, "frac_burst") >= 0.5))),
        ("CONCURRENCY", enough & (_col(rows, "frac_overlap") >= 0.3)),
        ("YOUNG_ACCOUNT", (_col(rows, "account_age_missing") < 0.5) & (age_days < 7.0)),
        ("REASONING_ELICITATION", (enough & (_col(rows, "frac_reasoning") >= 0.3))
         | (~enough & (_col(rows, "elicits_reasoning") > 0.5))),
        ("ROUND_THE_CLOCK", enough & (_col(rows, "hours_covered") * 24.0 >= 20)),
    )
    out = np.full((len(rows), N_REASONS), -1, dtype=np.int8)
    filled = np.zeros(len(rows), dtype=np.int64)
    for code, mask in checks:
        sel = np.flatnonzero(mask & (filled < N_REASONS))
        out[sel, filled[sel]] = GROUP_CODES.index(code)
        filled[sel] += 1
    return out


def reason_evidence(rows: np.ndarray) -> list[list[tuple[str, str]]]:
    """Per feature row: the rule checks that hold, [(reason_code, evidence), ...]."""
    return describe(rule_groups(rows), rows)


def top_groups(drops: np.ndarray, min_drop: float = 0.5) -> np.ndarray:
    """drops (n, n_groups): how much occluding each group lowered an event's log-odds ->
    (n, N_REASONS) group indices, largest drop first: the drops of at least `min_drop`, and
    the largest one whenever it lowers the score at all. An event no single group moved
    (its evidence spread over many) names none, and gets the MODEL_SCORE reason."""
    order = np.argsort(-drops, axis=1, kind="stable")[:, :N_REASONS]
    top = np.take_along_axis(drops, order, axis=1)
    keep = top >= min_drop
    keep[:, 0] = top[:, 0] > 0
    return np.where(keep, order, -1).astype(np.int8)


def actions(score: np.ndarray, thresholds: dict) -> list[str]:
    """Escalation alone (no gates): the highest threshold `score` reaches, per entry."""
    return _ACTIONS[_escalate(np.asarray(score), thresholds)].tolist()


def _escalate(score: np.ndarray, thresholds: dict) -> np.ndarray:
    a = np.zeros(len(score), dtype=np.int64)
    # From the lowest threshold up, so the highest reached wins.
    for key, action in reversed(ESCALATION):
        a[score >= thresholds[key]] = _RANK[action.value]
    return a


def format_reasons(reasons: list[tuple[str, str]]) -> str:
    """'CODE:evidence;CODE:evidence' (empty when none applies): the output column's form."""
    return ";".join(f"{c}:{e}" for c, e in reasons)


# --------------------------------------------------------------------------- decision state

# Per session and bundle, beside the ring (serving.state): accumulated evidence, events in a
# row at or above the DEGRADE threshold, the level of the last explanation, acted-on
# events since the last explanation, that explanation's groups, events decided, the last
# action given and its session_score (what a retry is answered with). 30 bytes.
DECISION_DTYPE = np.dtype([("evidence", "<f8"), ("run", "<i2"), ("last", "i1"), ("since", "<i2"),
                           ("groups", "i1", (N_REASONS,)), ("n", "<i4"), ("action", "i1"), ("score", "<f8")])


def empty_decisions(n: int) -> np.ndarray:
    d = np.zeros(n, dtype=DECISION_DTYPE)
    d["groups"] = -1
    return d


def log_odds(p: np.ndarray, clip: float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    return np.clip(np.log(p) - np.log1p(-p), -clip, clip)


def _scan(z, seg, evidence, run, n, drift, decay, cap, gate):
    """Sequential part of step 1-2, events in session order; state arrays updated in place.
    Returns per event (session_score, run, events so far)."""
    m = len(z)
    score = np.empty(m)
    runs = np.empty(m, dtype=np.int64)
    count = np.empty(m, dtype=np.int64)
    for i in range(m):
        s = seg[i]
        if cap > 0.0:
            d = z[i] - drift
            e = evidence[s] + (d if d > 0.0 else decay * d)
            e = min(max(e, 0.0), cap)
            evidence[s] = e
            sc = e / cap
        else:                          # evidence "none": the event's own probability
            sc = z[i]
            evidence[s] = sc
        run[s] = run[s] + 1 if sc >= gate else 0
        n[s] += 1
        score[i] = sc
        runs[i] = run[s]
        count[i] = n[s]
    return score, runs, count


def _schedule(a0, seg, last, since, every):
    """Which events get an explanation (step 3): acted on, at another level than the
    session's last explanation (soft: THROTTLE/CHALLENGE; enforcing: DEGRADE/BLOCK; so an
    escalation through four actions costs two explanations, and a session flickering
    between ALLOW and THROTTLE none after its first), or `every` acted-on events after it.
    `last` holds each session's last explained level (0 none, 1 soft, 2 enforcing); state
    arrays change in place. Returns (explain mask, index of the event whose explanation
    each event carries; -1 = the one already in the session's state)."""
    m = len(a0)
    explain = np.zeros(m, dtype=np.bool_)
    carry = np.full(m, -1, dtype=np.int64)
    last_at = np.full(len(last), -1, dtype=np.int64)
    for i in range(m):
        s = seg[i]
        level = 0 if a0[i] == 0 else (2 if a0[i] >= 3 else 1)
        if level > 0 and (level != last[s] or since[s] + 1 >= every):
            explain[i] = True
            since[s] = 0
            last[s] = level
            last_at[s] = i
        elif level > 0:
            since[s] += 1
        carry[i] = last_at[s]
    return explain, carry


_scan_jit = features.njit_cached(_scan)
_schedule_jit = features.njit_cached(_schedule)


def current_verdict(state: np.ndarray, rows: np.ndarray) -> tuple[list, list, np.ndarray]:
    """The verdict the sessions' states last gave (a retry's answer): (actions, reasons,
    session_score), reasons read off `rows` (each session's latest feature row)."""
    a = state["action"].astype(np.int64)
    reasons = [[] for _ in range(len(a))]
    sel = np.flatnonzero(a > ALLOW)
    for i, r in zip(sel, _acted_reasons(state["groups"][sel], rows[sel], state["score"][sel])):
        reasons[i] = r
    return _ACTIONS[a].tolist(), reasons, state["score"].copy()


def session_scores(p_distill: np.ndarray, seg: np.ndarray, policy: "PolicyConfig", n_sessions: int) -> np.ndarray:
    """session_score at every event (step 1 only; thresholds play no part), sessions seen
    from their first event: what training fixes the thresholds on."""
    if policy.evidence == "cusum":
        z, cap = log_odds(p_distill, policy.evidence_clip), float(policy.evidence_cap)
    else:
        z, cap = np.asarray(p_distill, dtype=np.float64), 0.0
    st = empty_decisions(n_sessions)
    score, _, _ = _scan_jit(z, np.asarray(seg, dtype=np.int64), st["evidence"].copy(), st["run"].astype(np.int64),
                            st["n"].astype(np.int64), float(policy.evidence_drift), float(policy.evidence_decay),
                            cap, np.inf)
    return score


def decide_events(probs: np.ndarray, rows: np.ndarray, labels, policy: "PolicyConfig", seg: np.ndarray,
                  state: np.ndarray, explain=None, describe_at: np.ndarray | None = None):
    """Events in session order -> (labels, actions, reasons, session_score) per event.

    probs (m, C) calibrated, rows (m, F) the events' feature rows, seg (m,) each event's
    index into `state` (DECISION_DTYPE, one entry per session, updated in place: pass
    `empty_decisions(n)` for sessions seen from their start). `explain(idx)` -> (len(idx),
    N_REASONS) groups for the events idx (occlusion, `serving.bundle.explain_events`);
    None: rule checks on the row. `describe_at` (bool mask): the events whose reasons are
    written out (default all; session-level output needs only each session's last)."""
    labels = list(labels)
    p_d = probs[:, labels.index("distillation_harvesting")]
    seg = np.asarray(seg, dtype=np.int64)
    th = policy.thresholds
    if policy.evidence == "cusum":
        z, cap = log_odds(p_d, policy.evidence_clip), float(policy.evidence_cap)
    else:
        z, cap = np.asarray(p_d, dtype=np.float64), 0.0
    ev, run, n = state["evidence"].copy(), state["run"].astype(np.int64), state["n"].astype(np.int64)
    score, runs, count = _scan_jit(z, seg, ev, run, n, float(policy.evidence_drift),
                                   float(policy.evidence_decay), cap, float(th["degrade"]))
    state["evidence"], state["run"], state["n"] = ev, np.minimum(run, 32767), n
    names = np.asarray(labels, dtype=object)[probs.argmax(axis=1)]
    # step 2: escalation, then the gates that do not need reasons
    a = _escalate(score, th)
    strong = a >= DEGRADE
    enough = (count >= policy.min_events) | (score >= policy.short_block_at)
    a[strong & ~(enough & (runs >= policy.consecutive))] = CHALLENGE
    if policy.young_throttle_at is not None:
        age_known = _col(rows, "account_age_missing") < 0.5
        age_days = np.expm1(_col(rows, "log_account_age_days") * 6.0)
        young = age_known & (age_days < policy.young_account_days) & (p_d >= policy.young_throttle_at)
        a[young & (a == ALLOW)] = THROTTLE
    cap_rank = _RANK[policy.benign_max_action]
    a[(names == "benign_automation") & (a > cap_rank)] = cap_rank
    # step 3: explanations, then the behavioural-reason gate
    last, since = state["last"].astype(np.int64), state["since"].astype(np.int64)
    todo, carry = _schedule_jit(a, seg, last, since, max(int(policy.explain_every), 1))
    state["last"], state["since"] = last, np.minimum(since, 32767)
    groups = state["groups"][seg].copy()
    if explain is None:
        # Rule checks cost nothing: read off every event's own row, no schedule.
        groups = rule_groups(rows)
    else:
        idx = np.flatnonzero(todo)
        if len(idx):
            fresh = np.full((len(score), N_REASONS), -1, dtype=np.int8)
            fresh[idx] = explain(idx)
            has = carry >= 0
            groups[has] = fresh[carry[has]]
    # the state keeps each session's latest explanation
    if len(seg):
        last_of = np.zeros(len(state), dtype=np.int64) - 1
        last_of[seg] = np.arange(len(seg))
        upd = last_of >= 0
        state["groups"][upd] = groups[last_of[upd]]
    behavioural = (groups >= 0) & BEHAVIOURAL[np.maximum(groups, 0)]
    a[(a >= DEGRADE) & ~behavioural.any(axis=1)] = CHALLENGE
    acted = a > ALLOW
    if len(seg):
        state["action"][upd] = a[last_of[upd]]
        state["score"][upd] = score[last_of[upd]]
    reasons: list[list[tuple[str, str]]] = [[] for _ in range(len(score))]
    sel = np.flatnonzero(acted if describe_at is None else acted & describe_at)
    for i, r in zip(sel, _acted_reasons(groups[sel], rows[sel], score[sel])):
        reasons[i] = r
    return names.tolist(), _ACTIONS[a].tolist(), reasons, score


def _acted_reasons(groups, rows, score) -> list:
    """Reasons of acted-on events; one whose explanation named nothing (rule checks that
    found nothing) names the model's accumulated evidence, so no action stands bare."""
    return [r or [("MODEL_SCORE", f"session evidence {sc:.2f} of 1")]
            for r, sc in zip(describe(groups, rows), score)]
