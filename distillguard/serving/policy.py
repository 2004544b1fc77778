"""Verdict policy: probabilities -> action, feature rows -> reason codes with evidence.

One function for batch and online. Actions escalate with p(distillation_harvesting)
against thresholds stored in the bundle (fixed at training time from validation human
false-positive rates; the detection-quality work calibrates them further).
"""
from __future__ import annotations

import enum

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
    checks = (
        ("TEMPLATE_REPETITION", enough & (repeat >= 0.5), lambda i: f"repeat_share={repeat[i]:.2f}"),
        ("OUTPUT_SATURATION", enough & (sat >= 0.5), lambda i: f"saturated_share={sat[i]:.2f}"),
        ("MACHINE_TIMING", enough & ((gap_sd < 0.35) | (burst >= 0.5)),
         lambda i: f"log_gap_sd={gap_sd[i]:.2f},burst_share={burst[i]:.2f}"),
        ("CONCURRENCY", enough & (overlap >= 0.3), lambda i: f"overlap_share={overlap[i]:.2f}"),
        ("YOUNG_ACCOUNT", age_known & (age_days < 7.0), lambda i: f"account_age_days={age_days[i]:.1f}"),
        ("REASONING_ELICITATION", (enough & (reason >= 0.3)) | (~enough & now_reasoning),
         lambda i: f"reasoning_share={reason[i]:.2f}"),
        ("ROUND_THE_CLOCK", enough & (hours >= 20), lambda i: f"hours_active={int(round(hours[i]))}"),
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


def decide(probs: np.ndarray, rows: np.ndarray, labels, thresholds: dict):
    """probs (N, C) and the scored events' feature rows (N, F) -> (labels, actions, reasons),
    reasons being [(code, evidence), ...] per row."""
    names = np.asarray(labels, dtype=object)[probs.argmax(axis=1)].tolist()
    acts = actions(probs[:, list(labels).index("distillation_harvesting")], thresholds)
    return names, acts, reason_evidence(rows)


def format_reasons(reasons: list[tuple[str, str]]) -> str:
    """'CODE:evidence;CODE:evidence' (empty when none applies): the output column's form."""
    return ";".join(f"{c}:{e}" for c, e in reasons)
