"""Calibration and action thresholds: validation probabilities -> temperature, ECE, thresholds.

The bundle's ONNX graph already ends in a softmax, so calibration works on probabilities.
Temperature scaling loses nothing by that: log p = logits - logsumexp(logits), and the
row constant cancels in the next softmax, so softmax(logits / T) == normalise(p ** (1/T)).
Exact zeros (float32 underflow) are clipped to `EPS` first; nothing else changes.
Applying a temperature is the bundle runtime's (`serving.bundle.apply_temperature`, numpy
only, re-exported here); fitting it is this module's.

Thresholds follow the design doc's evaluation terms: an action's threshold on
p(distillation_harvesting) is set on validation *human sessions* so that the share of them
the policy would flag (`p >= threshold`, as in `serving.policy.actions`) stays at or below
a target false-positive rate. Quoting a rate r needs >= 10 / r human sessions (0.1% needs
10,000); below that the threshold is still computed but marked unreliable.

numpy/scipy only (matplotlib is imported inside `plot_reliability`): no torch. The
scorer never imports it: scipy stays out of the serving process.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from ..model.schema import LABELS   # the order of the ONNX `probs` output
from ..serving.bundle import EPS, apply_temperature

# Human-FPR target per action, and the floor below which the action never fires however
# low the validation humans score (a clean validation set must not yield a hair trigger).
# Ordered by escalation: each action's threshold is at least the previous one's.
DEFAULT_TARGETS = {"throttle": 0.01, "challenge": 0.005, "degrade": 0.002, "block": 0.001}
DEFAULT_FLOORS = {"throttle": 0.5, "challenge": 0.6, "degrade": 0.7, "block": 0.8}
ESCALATION_ORDER = ("throttle", "challenge", "degrade", "block")


# --------------------------------------------------------------------------- temperature

def _check_probs_labels(probs, y) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if p.ndim != 2:
        raise ValueError(f"probs must be (n, classes), got shape {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must be ({p.shape[0]},), got shape {y.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or inf")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be integer class indices in [0, {p.shape[1]})")
    return p, y.astype(np.int64)


def _log_probs(probs) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))


def negative_log_likelihood(probs, y) -> float:
    """Mean -log p[y] (p clipped at EPS so one confident miss costs ~27.6, not inf)."""
    p, y = _check_probs_labels(probs, y)
    if not len(y):
        return float("nan")
    return float(-_log_probs(p)[np.arange(len(y)), y].mean())


def fit_temperature(probs_val, y_val, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature T minimising validation NLL of normalise(p ** (1/T)); 1.0 on empty input.

    The search runs over beta = 1/T: the scaled logits are linear in beta, so the NLL is
    convex in beta and bounded Brent finds the global minimum (in T it is not convex).
    """
    p, y = _check_probs_labels(probs_val, y_val)
    if not len(y):
        return 1.0
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    z = _log_probs(p)
    rows = np.arange(len(y))

    def nll(beta: float) -> float:
        return float(-log_softmax(z * beta, axis=1)[rows, y].mean())

    res = minimize_scalar(nll, bounds=(1.0 / hi, 1.0 / lo), method="bounded",
                          options={"xatol": 1e-6})
    return float(1.0 / res.x)


# --------------------------------------------------------------------------- ECE

def _bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins (k/n, (k+1)/n], with 0 itself in the first bin; a confidence of exactly 1.0 is
    # common in saturated float32 output and must land in the last bin, not past it.
    return np.clip(np.ceil(values * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def _reliability(pred: np.ndarray, hit: np.ndarray, n_bins: int) -> dict:
    """Binned mean prediction vs observed frequency; empty bins report None (-> NaN in
    np.asarray(..., dtype=float)), so the dict is JSON-ready and still plots."""
    idx = _bin_index(pred, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    sum_pred = np.bincount(idx, weights=pred, minlength=n_bins)
    sum_hit = np.bincount(idx, weights=hit.astype(np.float64), minlength=n_bins)
    full = counts > 0
    mean_pred = np.divide(sum_pred, counts, out=np.zeros(n_bins), where=full)
    freq = np.divide(sum_hit, counts, out=np.zeros(n_bins), where=full)
    n = int(counts.sum())
    gap = np.abs(freq - mean_pred)
    ece = float((counts * gap).sum() / n) if n else float("nan")
    mce = float(gap[full].max()) if n else float("nan")
    as_list = lambda a: [float(v) if f else None for v, f in zip(a, full)]  # noqa: E731
    return {"ece": ece, "mce": mce,
            "bin_edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
            "mean_predicted": as_list(mean_pred), "observed": as_list(freq),
            "counts": counts.tolist()}


def expected_calibration_error(probs, y, n_bins: int = 15, labels=LABELS) -> dict:
    """Top-label ECE (confidence of the argmax vs its accuracy) and one-vs-rest ECE per
    class (p_k vs the frequency of class k), each with its reliability-diagram data.

    Returns {"ece", "mce", "n", "n_bins", "top_label": {bin_edges, confidence, accuracy,
    counts, ece, mce}, "per_class": {label: {bin_edges, mean_predicted, observed, counts,
    ece, mce}}, "classwise_ece": mean of the per-class ECEs}. ECE weighs each bin's gap
    |accuracy - confidence| by its share of samples; MCE is the largest gap of a non-empty bin.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    p, y = _check_probs_labels(probs, y)
    names = list(labels) if labels is not None and len(labels) == p.shape[1] else \
        [str(k) for k in range(p.shape[1])]
    top = _reliability(p.max(axis=1), p.argmax(axis=1) == y, n_bins)
    top["confidence"] = top.pop("mean_predicted")
    top["accuracy"] = top.pop("observed")
    per_class = {names[k]: _reliability(p[:, k], y == k, n_bins) for k in range(p.shape[1])}
    classwise = float(np.mean([c["ece"] for c in per_class.values()])) if len(y) else float("nan")
    return {"ece": top["ece"], "mce": top["mce"], "n": int(len(y)), "n_bins": n_bins,
            "top_label": top, "per_class": per_class, "classwise_ece": classwise}


def calibration_summary(probs, y, T: float, n_bins: int = 15) -> dict:
    """Before/after figures for metadata.json and the report: T, NLL and ECE on (probs, y)."""
    after = apply_temperature(probs, T)
    before_ece = expected_calibration_error(probs, y, n_bins)
    after_ece = expected_calibration_error(after, y, n_bins)
    return {"temperature": float(T), "n": int(len(y)), "n_bins": n_bins,
            "nll_before": negative_log_likelihood(probs, y),
            "nll_after": negative_log_likelihood(after, y),
            "ece_before": before_ece["ece"], "ece_after": after_ece["ece"],
            "classwise_ece_before": before_ece["classwise_ece"],
            "classwise_ece_after": after_ece["classwise_ece"]}


def plot_reliability(probs_before, probs_after, y, path, n_bins: int = 15,
                     title: str = "Reliability (top label)") -> Path:
    """PNG reliability diagram: accuracy vs confidence per bin before and after calibration
    (`probs_after` may be None), with the diagonal and each curve's ECE, plus a panel with
    the confidence histogram (bins with few samples make noisy points: the counts say which).

    Uses an explicit Figure with the Agg canvas, not pyplot, so it is safe in servers,
    threads and tests and leaves no global figure state behind.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = [("before", probs_before, "tab:red")]
    if probs_after is not None:
        curves.append(("after", probs_after, "tab:blue"))
    fig = Figure(figsize=(9, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax, hist = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    width = 1.0 / n_bins
    for k, (name, probs, color) in enumerate(curves):
        top = expected_calibration_error(probs, y, n_bins)["top_label"]
        conf = np.asarray(top["confidence"], dtype=float)
        acc = np.asarray(top["accuracy"], dtype=float)
        full = np.asarray(top["counts"]) > 0
        ax.plot(conf[full], acc[full], marker="o", color=color,
                label=f"{name}: ECE={top['ece']:.4f}")
        centers = np.asarray(top["bin_edges"][:-1]) + width / 2
        offset = (k - (len(curves) - 1) / 2) * width / len(curves)
        hist.bar(centers + offset, top["counts"], width=width / len(curves), color=color,
                 alpha=0.7, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)",
           ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=8)
    hist.set(xlim=(0, 1), xlabel="confidence", ylabel="sessions", title="samples per bin")
    hist.set_yscale("log")
    hist.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# --------------------------------------------------------------------------- thresholds

def min_humans_for(target_fpr: float) -> int:
    """Human sessions needed to quote `target_fpr`: 10 / rate (0.1% -> 10,000), so that at
    least ~10 humans sit above the threshold and the rate is not one session's accident."""
    return int(math.ceil(10.0 / target_fpr - 1e-9))


def _grid_above(q: float, decimals: int | None) -> float:
    """Smallest value strictly above q that the policy's `p >= t` test keeps strict.

    On a 10**-decimals grid the stored JSON value is exactly the one evaluated here. The
    float32 check matters because numpy compares float32 scores with a Python float in
    float32: a threshold only 1e-10 above q can round onto q and flag that human again.
    """
    if decimals is None:
        t = float(np.nextafter(np.float32(q), np.float32(np.inf)))
        return t if t > q else float(np.nextafter(q, np.inf))
    step = 10.0 ** -decimals
    t = round(math.ceil(q / step) * step, decimals)
    while t <= q or np.float32(t) <= np.float32(q):
        t = round(t + step, decimals)
    return t


def threshold_at_fpr(p_distill_human, target_fpr: float, decimals: int | None = 6) -> dict:
    """Threshold on p(distillation_harvesting) with human FPR <= target_fpr on these sessions.

    `quantile` is the "higher" order statistic q: the smallest observed score with at most
    floor(target * n) human scores strictly above it, so share(p > q) <= target always
    (ties at q only lower it). The policy flags `p >= threshold`, so `threshold` is the next
    value strictly above q (on a 10**-decimals grid so it survives metadata.json); flagging
    with it gives `achieved_fpr` = share(p >= threshold) <= share(p > q) <= target.

    This uses the whole budget: np.quantile(p, 1 - target, method="higher") indexes with
    n - 1 and can leave one allowed false positive unused (n=1000, 1%: 9 above, not 10).

    Returns {target_fpr, threshold, quantile, achieved_fpr, n_human, n_above, min_n_human,
    reliable}. With no human sessions: threshold 0.0 (floors decide), achieved_fpr None.
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    p = np.asarray(p_distill_human).ravel()
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if not np.isfinite(p).all():
        raise ValueError("p_distill_human contains NaN or inf")
    n = int(p.size)
    min_n = min_humans_for(target_fpr)
    if n == 0:
        return {"target_fpr": target_fpr, "threshold": 0.0, "quantile": None,
                "achieved_fpr": None, "n_human": 0, "n_above": 0,
                "min_n_human": min_n, "reliable": False}
    k = int(math.floor(target_fpr * n))
    while k > 0 and k / n > target_fpr:   # guard against target * n rounding up
        k -= 1
    q = float(np.sort(p)[n - 1 - k])       # k < n because target_fpr < 1
    t = _grid_above(q, decimals)
    n_above = int((p >= t).sum())          # p's own dtype, as the policy compares
    return {"target_fpr": target_fpr, "threshold": t, "quantile": q,
            "achieved_fpr": n_above / n, "n_human": n, "n_above": n_above,
            "min_n_human": min_n, "reliable": n >= min_n}


def action_thresholds(p_distill_human, targets: dict | None = None, floors: dict | None = None,
                      decimals: int | None = 6, ceiling: float | None = None) -> dict:
    """Per-action thresholds on p(distillation_harvesting) from validation human sessions.

    Each action gets max(its FPR threshold, its floor, the previous action's threshold), in
    ESCALATION_ORDER, so thresholds never decrease and a harsher action never fires before
    a milder one. Floors and monotonicity only raise thresholds, so each achieved FPR stays
    <= its target. `ceiling` (None: off) caps thresholds so an action can still fire when
    validation humans saturate near 1; it can break the FPR target, which the details show.

    Returns {"thresholds": {action: value}, the dict serving.policy takes from the bundle,
    "details": {action: threshold_at_fpr(...) fields + floor, fpr_threshold, bound_by}},
    bound_by naming what set the final value: "fpr", "floor", "previous" or "ceiling".
    """
    targets = dict(DEFAULT_TARGETS if targets is None else targets)
    floors = dict(DEFAULT_FLOORS if floors is None else floors)
    order = [a for a in ESCALATION_ORDER if a in targets] + \
        [a for a in targets if a not in ESCALATION_ORDER]
    p = np.asarray(p_distill_human).ravel()
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    thresholds, details, prev = {}, {}, 0.0
    for action in order:
        d = threshold_at_fpr(p, targets[action], decimals)
        floor = float(floors.get(action, 0.0))
        candidates = {"fpr": d["threshold"], "floor": floor, "previous": prev}
        bound_by = max(candidates, key=lambda c: (candidates[c], c == "fpr"))
        value = candidates[bound_by]
        if ceiling is not None and value > ceiling:
            value, bound_by = float(ceiling), "ceiling"
        d["fpr_threshold"] = d["threshold"]
        d["threshold"] = value
        d["floor"] = floor
        d["bound_by"] = bound_by
        if d["n_human"]:
            d["n_above"] = int((p >= value).sum())
            d["achieved_fpr"] = d["n_above"] / d["n_human"]
        thresholds[action] = value
        details[action] = d
        prev = value
    return {"thresholds": thresholds, "details": details}
