"""Verdict policy: probabilities -> action, feature rows -> reason codes with evidence.

One function (`decide`) for batch and online. Actions escalate with the calibrated
p(distillation_harvesting) against thresholds stored in the bundle (fixed at training time
from validation human false-positive rates), then two rules of the bundle's
`PolicyConfig` apply: a session whose most likely class is benign automation is never
acted on beyond `benign_max_action` (default THROTTLE: never blocked), and a young account
gets a graduated release (at least THROTTLE once its score passes a lower bar during its
first days: the seed article's campaigns ran on freshly made accounts). `shadow` reports
actions without asking the gateway to enforce them.
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

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


@dataclass
class PolicyConfig:
    """What the bundle says the gateway should do with a score (metadata `policy`)."""
    thresholds: dict = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    shadow: bool = False                    # report actions, do not enforce them
    benign_max_action: str = Action.THROTTLE.value
    young_account_days: float = 3.0         # graduated release for accounts younger than this ...
    young_throttle_at: float = 0.25         # ... THROTTLE from this p_distill on (below the normal bar)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_metadata(meta: dict) -> "PolicyConfig":
        cfg = dict(meta.get("policy") or {})
        cfg.setdefault("thresholds", meta.get("thresholds", DEFAULT_THRESHOLDS))
        return PolicyConfig(**cfg)

_F = {name: i for i, name in enumerate(features.FEATURE_NAMES)}
MIN_EVENTS_FOR_RATES = 4   # shares over fewer earlier events are noise, not evidence


def _col(rows: np.ndarray, name: str) -> np.ndarray:
    return rows[:, _F[name]].astype(np.float64)


def reason_evidence(rows: np.ndarray) -> list[list[tuple[str, str]]]:
    """Per feature row (the row of the scored event): [(reason_code, evidence), ...]."""
    n_prev = np.expm1(_col(rows, "log_n_prev") * 7.0)
    enough = n_prev >= MIN_EVENTS_FOR_RATES
    repeat = _col(rows, "frac_template_repeat")
    sat = _col(rows, "frac_saturated")
    gap_sd = _col(rows, "std_log_gap") * 5.0
    burst = _col(rows, "frac_burst")
    overlap = _col(rows, "frac_overlap")
    reason = _col(rows, "frac_reasoning")
    age_known = _col(rows, "account_age_missing") < 0.5
    age_days = np.expm1(_col(rows, "log_account_age_days") * 6.0)
    hours = _col(rows, "hours_covered") * 24.0
    now_reasoning = _col(rows, "elicits_reasoning") > 0.5
    n = np.rint(n_prev).astype(np.int64)
    # Both shares are over the earlier requests whose frame is known (nearly all of them).
    distinct = np.rint(_col(rows, "template_distinct_ratio") * n)
    checks = (
        ("TEMPLATE_REPETITION", enough & (repeat >= 0.5),
         lambda i: f"{int(round(repeat[i] * n[i]))}/{n[i]} earlier requests reuse a frame "
                   f"({max(int(distinct[i]), 1)} distinct)"),
        ("OUTPUT_SATURATION", enough & (sat >= 0.5), lambda i: f"{sat[i]:.0%} of outputs at max_tokens"),
        ("MACHINE_TIMING", enough & ((gap_sd < 0.35) | (burst >= 0.5)),
         lambda i: f"gap log-sd {gap_sd[i]:.2f}, {burst[i]:.0%} of gaps under 1 s"),
        ("CONCURRENCY", enough & (overlap >= 0.3),
         lambda i: f"{overlap[i]:.0%} of requests sent before the previous answer could finish"),
        ("YOUNG_ACCOUNT", age_known & (age_days < 7.0), lambda i: f"account {age_days[i]:.1f} days old"),
        ("REASONING_ELICITATION", (enough & (reason >= 0.3)) | (~enough & now_reasoning),
         lambda i: f"{reason[i]:.0%} of requests ask for step-by-step reasoning" if enough[i]
         else "this request asks for step-by-step reasoning"),
        ("ROUND_THE_CLOCK", enough & (hours >= 20), lambda i: f"active in {int(round(hours[i]))}/24 hours of the day"),
    )
    out: list[list[tuple[str, str]]] = [[] for _ in range(len(rows))]
    for code, mask, evidence in checks:
        for i in np.flatnonzero(mask):
            out[i].append((code, evidence(i)))
    return out


def actions(p_distill: np.ndarray, thresholds: dict) -> list[str]:
    out = np.full(len(p_distill), Action.ALLOW.value, dtype=object)
    # Assign from the lowest threshold up so the highest reached wins.
    for key, action in reversed(ESCALATION):
        out[p_distill >= thresholds[key]] = action.value
    return out.tolist()


def decide(probs: np.ndarray, rows: np.ndarray, labels, policy: "PolicyConfig | dict"):
    """probs (N, C) and the scored events' feature rows (N, F) -> (labels, actions, reasons),
    reasons being [(code, evidence), ...] per row. `policy` may be a bare thresholds dict."""
    if not isinstance(policy, PolicyConfig):
        policy = PolicyConfig(thresholds=policy)
    names = np.asarray(labels, dtype=object)[probs.argmax(axis=1)].tolist()
    p_distill = probs[:, list(labels).index("distillation_harvesting")]
    acts = actions(p_distill, policy.thresholds)
    age_known = _col(rows, "account_age_missing") < 0.5
    age_days = np.expm1(_col(rows, "log_account_age_days") * 6.0)
    young = age_known & (age_days < policy.young_account_days) & (p_distill >= policy.young_throttle_at)
    cap = _RANK[policy.benign_max_action]
    for i in range(len(acts)):
        if young[i] and acts[i] == Action.ALLOW.value:
            acts[i] = Action.THROTTLE.value
        if names[i] == "benign_automation" and _RANK[acts[i]] > cap:
            acts[i] = policy.benign_max_action
    return names, acts, reason_evidence(rows)


def format_reasons(reasons: list[tuple[str, str]]) -> str:
    """'CODE:evidence;CODE:evidence' (empty when none applies): the output column's form."""
    return ";".join(f"{c}:{e}" for c, e in reasons)
