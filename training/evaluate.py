"""Detection-quality metrics and the evaluation report (markdown + PNG).

Evaluation terms follow the design card: human FPR counts human *sessions* flagged as
distillation; a recall figure at FPR f is only quoted as reliable with >= 10/f human
sessions (10,000 at 0.1%); confidence intervals resample *accounts*, because the sessions
of one account share an operator and a script and are far from independent; on a
held-out family the figures that matter are that family's recall of its true class and
its share flagged as distillation.

Only numpy, scikit-learn and matplotlib (Agg canvas, no pyplot) are used, so the module
can run wherever scores already exist, without torch or onnxruntime.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ..model.files import publish_text
from ..model.schema import LABELS

HUMAN, BENIGN, DISTILL = 0, 1, 2
TARGET_FPRS = (0.01, 0.001)
# design: a recall quoted at human FPR f needs at least 10/f human sessions
RELIABILITY_FACTOR = 10
# Bootstrap works on a [resamples, sessions] weight matrix; this caps one chunk's size
# (float64 elements) so memory stays ~40 MB whatever the test-set size.
_BOOT_CHUNK_ELEMENTS = 5_000_000
# ROC plots start here so the 0.1% and 1% operating points are visible on a log axis.
_ROC_MIN_FPR = 1e-4


def fpr_key(fpr: float) -> str:
    """Key used in `metrics["recall_at_human_fpr"]`, e.g. 0.001 -> "0.1%"."""
    return f"{fpr * 100:g}%"


def min_human_sessions(fpr: float) -> int:
    return int(round(RELIABILITY_FACTOR / fpr))


# --------------------------------------------------------------------------- inputs


def _labels_to_int(y: Any) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype.kind in "USO":
        index = {name: i for i, name in enumerate(LABELS)}
        try:
            return np.array([index[str(v)] for v in arr.ravel()], dtype=np.int64).reshape(arr.shape)
        except KeyError as exc:
            raise ValueError(f"unknown label {exc.args[0]!r}; expected one of {LABELS}") from None
    if arr.dtype.kind == "b" or (arr.dtype.kind not in "iuf"):
        raise ValueError(f"y_true must hold class indices 0..2 or label names, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if arr.dtype.kind == "f" and not np.array_equal(out, arr):
        raise ValueError("y_true holds non-integer values")
    if out.size and (out.min() < 0 or out.max() >= len(LABELS)):
        raise ValueError(f"y_true values must lie in 0..{len(LABELS) - 1}")
    return out


def _check_inputs(y_true: Any, probs: Any, accounts: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(LABELS):
        raise ValueError(f"probs must have shape [n, {len(LABELS)}], got {probs.shape}")
    n = probs.shape[0]
    if n == 0:
        raise ValueError("no sessions to evaluate")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contain NaN or infinite values")
    y = _labels_to_int(y_true)
    if y.shape != (n,):
        raise ValueError(f"y_true must have shape ({n},), got {y.shape}")
    acc = np.asarray(accounts).astype(str)
    if acc.shape != (n,):
        raise ValueError(f"accounts must have shape ({n},), got {acc.shape}")
    return y, probs, acc


# --------------------------------------------------------------------------- metric kernels
# Each kernel takes a leading batch axis so the point estimate (one row of unit weights)
# and every bootstrap resample (rows of account-draw counts) share one code path.


def _rates_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cm [..., 3, 3] (rows true, cols predicted) -> precision, recall, f1 [..., 3], accuracy [...]."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(-1)
    predicted = cm.sum(-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / predicted
        recall = tp / support
        # 2tp/(2tp+fp+fn) is the harmonic mean of P and R where both exist, and 0 rather
        # than undefined for a class that occurs but is never predicted.
        f1 = 2 * tp / (support + predicted)
        accuracy = tp.sum(-1) / cm.sum((-2, -1))
    return precision, recall, f1, accuracy


def _weighted_higher_quantile(sorted_vals: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """Row b: np.quantile(np.repeat(sorted_vals, w[b]), q, method="higher"); NaN if w[b] sums to 0.

    "higher" (not linear interpolation) guarantees that the share of values strictly
    above the threshold is <= 1 - q, so the achieved human FPR never exceeds the target
    even on small sets.
    """
    if sorted_vals.size == 0:
        return np.full(w.shape[0], np.nan)
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    # the epsilon keeps float error in (N-1)*q (e.g. 0.99*100 = 98.99999...) from bumping ceil
    pos = np.ceil((total - 1) * q - 1e-9)
    idx = np.minimum((cum <= pos[:, None]).sum(axis=1), sorted_vals.size - 1)
    thr = sorted_vals[idx].astype(np.float64)
    thr[total <= 0] = np.nan
    return thr


def _flagged_share(scores: np.ndarray, w: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Weighted share of `scores` strictly above each row's threshold; NaN if undefined."""
    denom = w.sum(axis=1)
    hit = ((scores[None, :] > thr[:, None]) * w).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = hit / denom
    share[np.isnan(thr)] = np.nan
    return share


def _macro(f1: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes present in the full y_true.

    A resample can miss one of them entirely (F1 0/0); it then averages the classes it has.
    """
    sel = f1[..., present]
    ok = ~np.isnan(sel)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, sel, 0.0).sum(-1) / ok.sum(-1)


# --------------------------------------------------------------------------- bootstrap


def _account_draw_weights(draws: np.ndarray, n_acc: int) -> np.ndarray:
    """draws [B, k] account indices -> counts [B, n_acc]: how often each account was drawn."""
    b = draws.shape[0]
    flat = (draws + np.arange(b)[:, None] * n_acc).ravel()
    return np.bincount(flat, minlength=b * n_acc).reshape(b, n_acc).astype(np.float64)


def _metrics_from_weights(
    w: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    scores: np.ndarray,
    present: np.ndarray,
    fprs: tuple[float, ...],
) -> dict[str, np.ndarray]:
    """Metrics for each row of session weights w [B, n].

    Resampling accounts with replacement and concatenating their sessions gives the same
    metrics as weighting every session by how many times its account was drawn, so one
    weight matrix replaces B materialised resamples.
    """
    onehot = np.zeros((y.size, 9))
    onehot[np.arange(y.size), y * 3 + pred] = 1.0
    cm = (w @ onehot).reshape(-1, 3, 3)
    precision, recall, f1, accuracy = _rates_from_confusion(cm)
    out = {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
        "macro_f1": _macro(f1, present),
    }
    h_idx = np.flatnonzero(y == HUMAN)
    h_idx = h_idx[np.argsort(scores[h_idx], kind="stable")]
    d_idx = np.flatnonzero(y == DISTILL)
    wh, wd = w[:, h_idx], w[:, d_idx]
    for fpr in fprs:
        thr = _weighted_higher_quantile(scores[h_idx], wh, 1.0 - fpr)
        out[f"thr@{fpr}"] = thr
        out[f"fpr@{fpr}"] = _flagged_share(scores[h_idx], wh, thr)
        out[f"recall@{fpr}"] = _flagged_share(scores[d_idx], wd, thr)
    return out


def _bootstrap(
    y: np.ndarray,
    pred: np.ndarray,
    scores: np.ndarray,
    acc_inv: np.ndarray,
    n_acc: int,
    present: np.ndarray,
    fprs: tuple[float, ...],
    n_boot: int,
    seed: int,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // max(y.size, n_acc))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        counts = _account_draw_weights(rng.integers(0, n_acc, size=(b, n_acc)), n_acc)
        parts.append(_metrics_from_weights(counts[:, acc_inv], y, pred, scores, present, fprs))
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def _ci(samples: np.ndarray | None) -> list[float] | None:
    if samples is None:
        return None
    valid = samples[~np.isnan(samples)]
    if valid.size == 0:
        return None
    lo, hi = np.percentile(valid, [2.5, 97.5])
    return [float(lo), float(hi)]


# --------------------------------------------------------------------------- helpers


def _num(x: Any) -> float | None:
    """Python float, or None for NaN/inf so the dict stays strict JSON."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _auc_pair(target: np.ndarray, score: np.ndarray) -> tuple[float | None, float | None]:
    if target.all() or not target.any():
        return None, None  # one-vs-rest AUC needs both positives and negatives
    return float(roc_auc_score(target, score)), float(average_precision_score(target, score))


def _events_to_detection_summary(v: np.ndarray) -> dict[str, Any]:
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"sessions": 0, "detected": 0, "detected_share": None, "median_all": None,
                "median_detected": None, "p90_detected": None, "mean_detected": None}
    det = v[np.isfinite(v)]
    med_all = float(np.median(v))  # never-detected sessions are +inf, so they push it up, not out
    return {
        "sessions": int(v.size),
        "detected": int(det.size),
        "detected_share": float(det.size / v.size),
        "median_all": "never" if math.isinf(med_all) else med_all,
        "median_detected": float(np.median(det)) if det.size else None,
        "p90_detected": float(np.percentile(det, 90)) if det.size else None,
        "mean_detected": float(det.mean()) if det.size else None,
    }


# --------------------------------------------------------------------------- public API


def compute_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    accounts: np.ndarray,
    *,
    n_boot: int = 200,
    seed: int = 0,
    families: np.ndarray | None = None,
    events_to_detection: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> dict:
    """Detection metrics for session scores; the result is strict-JSON serialisable.

    y_true: [n] class indices into LABELS (or label names); probs: [n, 3] class
    probabilities; accounts: [n] account id of each session (bootstrap unit).
    families: optional [n] generator/family names -> `per_family`.
    events_to_detection: optional [n] events until the first score above the 1%-FPR
    threshold (np.inf = never, NaN = not computed); summarised over the
    distillation_harvesting sessions, since for other classes a detection is a false alarm.

    scores: optional [n] the score recall and FPR rank sessions by (the served
    `session_score`, the accumulated evidence the action derives from); default
    p(distillation_harvesting). Macro-F1 and the confusion matrix use the argmax of probs.

    Undefined figures (a class absent from y_true, no human sessions, ...) are None.
    """
    y, probs, acc = _check_inputs(y_true, probs, accounts)
    n = y.size
    pred = probs.argmax(axis=1)
    score_name = "p_distillation_harvesting" if scores is None else "session_score"
    scores = probs[:, DISTILL] if scores is None else np.asarray(scores, dtype=np.float64)
    if scores.shape != (probs.shape[0],):
        raise ValueError(f"scores must have shape ({probs.shape[0]},), got {scores.shape}")
    acc_names, acc_inv = np.unique(acc, return_inverse=True)
    n_acc = acc_names.size
    support = np.bincount(y, minlength=3)
    present = support > 0
    fprs = TARGET_FPRS
    notes: list[str] = []
    etd = None
    if events_to_detection is not None:
        etd = np.asarray(events_to_detection, dtype=np.float64)
        if etd.shape != (n,):
            raise ValueError(f"events_to_detection must have shape ({n},), got {etd.shape}")

    point = _metrics_from_weights(np.ones((1, n)), y, pred, scores, present, fprs)
    point = {k: v[0] for k, v in point.items()}
    boot = _bootstrap(y, pred, scores, acc_inv, n_acc, present, fprs, n_boot, seed) if n_boot > 0 else {}

    def ci(key: str, k: int | None = None) -> list[float] | None:
        if key not in boot:
            return None
        return _ci(boot[key] if k is None else boot[key][:, k])

    cm = np.zeros((3, 3), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)

    per_class: dict[str, Any] = {}
    for k, name in enumerate(LABELS):
        roc_auc, pr_auc = _auc_pair(y == k, probs[:, k])
        has = bool(present[k])
        per_class[name] = {
            "support": int(support[k]),
            "predicted": int(cm[:, k].sum()),
            "precision": _num(point["precision"][k]),
            "precision_ci95": ci("precision", k),
            "recall": _num(point["recall"][k]) if has else None,
            "recall_ci95": ci("recall", k) if has else None,
            "f1": _num(point["f1"][k]) if has else None,
            "f1_ci95": ci("f1", k) if has else None,
            "roc_auc": roc_auc,
            "pr_auc": pr_auc,
        }
    absent = [LABELS[k] for k in range(3) if not present[k]]
    if absent:
        notes.append(
            f"class(es) absent from y_true: {', '.join(absent)}; their recall, F1 and AUCs are "
            "undefined and macro-F1 averages only the classes present"
        )

    accounts_per_class = {name: int(np.unique(acc_inv[y == k]).size) for k, name in enumerate(LABELS)}
    n_human, n_dist = int(support[HUMAN]), int(support[DISTILL])
    at_fpr: dict[str, Any] = {}
    for fpr in fprs:
        need = min_human_sessions(fpr)
        reliable = n_human >= need and n_dist > 0
        entry = {
            "target_fpr": fpr,
            "threshold": _num(point[f"thr@{fpr}"]),
            "achieved_human_fpr": _num(point[f"fpr@{fpr}"]),
            "flagged_human_sessions": int((scores[y == HUMAN] > point[f"thr@{fpr}"]).sum()) if n_human else None,
            "recall": _num(point[f"recall@{fpr}"]),
            "recall_ci95": ci(f"recall@{fpr}"),
            "human_sessions": n_human,
            "human_accounts": accounts_per_class["human"],
            "distillation_sessions": n_dist,
            "min_human_sessions": need,
            "reliable": bool(reliable),
            "note": None,
        }
        if n_human < need:
            entry["note"] = (
                f"only {n_human} human sessions; recall at {fpr_key(fpr)} human FPR needs >= {need} "
                f"(the threshold rests on the top ~{fpr * n_human:.1f} human scores) - not reliable"
            )
        elif n_dist == 0:
            entry["note"] = "no distillation_harvesting sessions: recall undefined"
        if entry["note"]:
            notes.append(entry["note"])
        at_fpr[fpr_key(fpr)] = entry

    metrics: dict[str, Any] = {
        "labels": list(LABELS),
        "prediction": "argmax",
        "ranking_score": score_name,
        "set_sizes": {
            "sessions": n,
            "accounts": int(n_acc),
            "sessions_per_class": {name: int(support[k]) for k, name in enumerate(LABELS)},
            "accounts_per_class": accounts_per_class,
        },
        "accuracy": _num(point["accuracy"]),
        "accuracy_ci95": ci("accuracy"),
        "macro_f1": _num(point["macro_f1"]),
        "macro_f1_ci95": ci("macro_f1"),
        "macro_f1_classes": [LABELS[k] for k in range(3) if present[k]],
        "per_class": per_class,
        "confusion_matrix": {"rows": "true", "cols": "predicted", "labels": list(LABELS), "counts": cm.tolist()},
        "recall_at_human_fpr": at_fpr,
        "bootstrap": {"unit": "account", "n_boot": int(n_boot), "seed": int(seed), "accounts": int(n_acc)},
        "per_family": None,
        "events_to_detection": None,
        "notes": notes,
    }
    if n_boot > 0 and n_acc < 30:
        notes.append(f"only {n_acc} accounts: bootstrap intervals over accounts are coarse")

    if families is not None:
        fam = np.asarray(families).astype(str)
        if fam.shape != (n,):
            raise ValueError(f"families must have shape ({n},), got {fam.shape}")
        thr1 = point[f"thr@{fprs[0]}"]
        per_family: dict[str, Any] = {}
        for f in np.unique(fam):
            m = fam == f
            ys, ps = y[m], pred[m]
            true_counts = np.bincount(ys, minlength=3)
            entry = {
                "sessions": int(m.sum()),
                "accounts": int(np.unique(acc_inv[m]).size),
                "true_class": LABELS[int(true_counts.argmax())],
                "true_class_counts": {name: int(true_counts[k]) for k, name in enumerate(LABELS)},
                "predicted_share": {name: float((ps == k).mean()) for k, name in enumerate(LABELS)},
                "flagged_distillation_share": None if np.isnan(thr1) else float((scores[m] > thr1).mean()),
                # each session against its own label, so a mixed family is still scored right
                "recall_true_class": float((ps == ys).mean()),
            }
            if etd is not None:
                entry["events_to_detection"] = _events_to_detection_summary(etd[m & (y == DISTILL)])
            per_family[str(f)] = entry
        metrics["per_family"] = per_family

    if etd is not None:
        summary = _events_to_detection_summary(etd[y == DISTILL])
        summary["over"] = "distillation_harvesting sessions"
        metrics["events_to_detection"] = summary

    return metrics


# --------------------------------------------------------------------------- report


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    return f"{x:.{digits}f}"


def _fmt_ci(x: Any, ci: list[float] | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    if ci is None:
        return _fmt(x, digits)
    return f"{_fmt(x, digits)} [{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]"


def _pct(x: Any, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def _new_figure(size: tuple[float, float]) -> Figure:
    # A bare Figure on an Agg canvas leaves pyplot's global backend alone.
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_confusion(cm: np.ndarray, path: Path) -> None:
    fig = _new_figure((6.2, 5.2))
    ax = fig.add_subplot()
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of true class")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, f"{cm[i, j]}\n{100 * share[i, j]:.1f}%", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    short = ["human", "benign\nautomation", "distillation\nharvesting"]
    ax.set_xticks(range(3), short)
    ax.set_yticks(range(3), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (argmax)")
    fig.savefig(path, dpi=110)


def _plot_roc(y: np.ndarray, probs: np.ndarray, path: Path) -> None:
    fig = _new_figure((6.4, 5.0))
    ax = fig.add_subplot()
    for k, name in enumerate(LABELS):
        target = y == k
        if target.all() or not target.any():
            continue
        fpr, tpr, _ = roc_curve(target, probs[:, k])
        auc = roc_auc_score(target, probs[:, k])
        # FPR 0 has no place on a log axis; pin it to the left edge so the curve still starts there
        ax.plot(np.maximum(fpr, _ROC_MIN_FPR), tpr, label=f"{name} (AUC {auc:.3f})", drawstyle="steps-post")
    grid = np.logspace(np.log10(_ROC_MIN_FPR), 0, 100)
    ax.plot(grid, grid, color="grey", lw=0.8, ls=":", label="chance")
    for fpr in TARGET_FPRS:
        ax.axvline(fpr, color="black", lw=0.7, ls="--")
    ax.set_xscale("log")
    ax.set_xlim(_ROC_MIN_FPR, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (one-vs-rest, log scale)")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC per class (dashed: 0.1% and 1% FPR)")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)


def _plot_pr(y: np.ndarray, probs: np.ndarray, path: Path) -> None:
    fig = _new_figure((6.4, 5.0))
    ax = fig.add_subplot()
    for k, name in enumerate(LABELS):
        target = y == k
        if target.all() or not target.any():
            continue
        precision, recall, _ = precision_recall_curve(target, probs[:, k])
        ap = average_precision_score(target, probs[:, k])
        (line,) = ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})", drawstyle="steps-post")
        ax.axhline(target.mean(), color=line.get_color(), lw=0.7, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall per class (dotted: prevalence)")
    ax.legend(loc="lower left", fontsize=8)
    fig.savefig(path, dpi=110)


def _plot_score_hist(y: np.ndarray, probs: np.ndarray, metrics: dict, path: Path) -> None:
    fig = _new_figure((6.4, 4.9))
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 51)
    for k, name in enumerate(LABELS):
        s = probs[y == k, DISTILL]
        if s.size:
            # density, because human sessions usually outnumber the rest by orders of magnitude
            ax.hist(s, bins=bins, density=True, histtype="step", lw=1.5, label=f"{name} (n={s.size})")
    for key, entry in (metrics.get("recall_at_human_fpr") or {}).items():
        if entry.get("threshold") is not None:
            ax.axvline(entry["threshold"], color="black", lw=0.7, ls="--")
            ax.text(entry["threshold"], 0.98, f" {key} FPR", transform=ax.get_xaxis_transform(),
                    rotation=90, va="top", ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("p_distillation_harvesting")
    ax.set_ylabel("density (log)")
    ax.set_title("Distillation score by true class")
    # below the axes: inside, it would hide the threshold labels and the tails
    fig.legend(loc="outside lower center", ncols=3, fontsize=8)
    fig.savefig(path, dpi=110)


def _markdown(metrics: dict, title: str) -> str:
    sizes = metrics["set_sizes"]
    boot = metrics["bootstrap"]
    lines = [f"# {title}", ""]
    ci_txt = (
        f"95% percentile bootstrap over accounts ({boot['n_boot']} resamples of {boot['accounts']} "
        f"accounts, seed {boot['seed']})" if boot["n_boot"] > 0 else "no bootstrap (n_boot = 0)"
    )
    lines += [
        "Predicted label = argmax of the three class probabilities. Brackets are " + ci_txt + ".",
        "Human FPR counts human *sessions* whose p_distillation_harvesting exceeds the threshold.",
        "",
        "## Set sizes",
        "",
        "| class | sessions | accounts |",
        "| --- | ---: | ---: |",
    ]
    for name in LABELS:
        lines.append(f"| {name} | {sizes['sessions_per_class'][name]} | {sizes['accounts_per_class'][name]} |")
    lines += [f"| **total** | {sizes['sessions']} | {sizes['accounts']} |", ""]

    lines += ["## Headline", ""]
    lines.append(
        f"- **macro-F1**: {_fmt_ci(metrics['macro_f1'], metrics['macro_f1_ci95'])} "
        f"(over {', '.join(metrics['macro_f1_classes'])})"
    )
    lines.append(f"- accuracy: {_fmt_ci(metrics['accuracy'], metrics['accuracy_ci95'])}")
    for key, e in metrics["recall_at_human_fpr"].items():
        rel = "reliable" if e["reliable"] else "**not reliable**"
        lines.append(
            f"- distillation recall at {key} human FPR: {_fmt_ci(e['recall'], e['recall_ci95'])} "
            f"(threshold {_fmt(e['threshold'], 4)}, {e['human_sessions']} human sessions, {rel})"
        )
    lines.append("")

    lines += [
        "## Per-class metrics",
        "",
        "| class | support | predicted | precision | recall | F1 | ROC-AUC | PR-AUC |",
        "| --- | ---: | ---: | --- | --- | --- | ---: | ---: |",
    ]
    for name, c in metrics["per_class"].items():
        lines.append(
            f"| {name} | {c['support']} | {c['predicted']} | {_fmt_ci(c['precision'], c['precision_ci95'])} | "
            f"{_fmt_ci(c['recall'], c['recall_ci95'])} | {_fmt_ci(c['f1'], c['f1_ci95'])} | "
            f"{_fmt(c['roc_auc'])} | {_fmt(c['pr_auc'])} |"
        )
    lines.append("")

    cm = np.asarray(metrics["confusion_matrix"]["counts"])
    lines += [
        "## Confusion matrix",
        "",
        "Rows: true class; columns: predicted class; count (share of the row).",
        "",
        "| true \\ predicted | " + " | ".join(LABELS) + " |",
        "| --- | " + " | ".join(["---:"] * 3) + " |",
    ]
    for i, name in enumerate(LABELS):
        row_total = cm[i].sum()
        cells = [f"{cm[i, j]} ({_pct(cm[i, j] / row_total, 1) if row_total else '—'})" for j in range(3)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")

    lines += [
        "## Distillation recall at fixed human FPR",
        "",
        "Threshold = the (1 − FPR) quantile (method \"higher\") of human sessions' p_distillation_harvesting; "
        "a session is flagged when its score is strictly above it. A figure at FPR f is reliable only with "
        f">= {RELIABILITY_FACTOR}/f human sessions.",
        "",
        "| target human FPR | threshold | achieved human FPR | flagged human sessions | recall [95% CI] | "
        "human sessions (accounts) | distillation sessions | needed | reliable |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for key, e in metrics["recall_at_human_fpr"].items():
        lines.append(
            f"| {key} | {_fmt(e['threshold'], 4)} | {_pct(e['achieved_human_fpr'], 3)} | "
            f"{_fmt(e['flagged_human_sessions'], 0) if e['flagged_human_sessions'] is not None else '—'} | "
            f"{_fmt_ci(e['recall'], e['recall_ci95'])} | {e['human_sessions']} ({e['human_accounts']}) | "
            f"{e['distillation_sessions']} | {e['min_human_sessions']} | {'yes' if e['reliable'] else 'no'} |"
        )
    for key, e in metrics["recall_at_human_fpr"].items():
        if e["note"]:
            lines.append(f"\n> {key}: {e['note']}")
    lines.append("")

    fams = metrics.get("per_family")
    if fams:
        first = next(iter(metrics["recall_at_human_fpr"]))
        lines += [
            "## Per family",
            "",
            f"Recall of each session's true class, and share flagged as distillation at the {first} human-FPR "
            "threshold (for a human or benign family this is its false-alarm rate).",
            "",
            "| family | true class | sessions | accounts | recall of true class | flagged as distillation | "
            "pred. human | pred. benign | pred. distillation |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for f, e in fams.items():
            mixed = sum(1 for v in e["true_class_counts"].values() if v) > 1
            ps = e["predicted_share"]
            lines.append(
                f"| {f} | {e['true_class']}{' (mixed)' if mixed else ''} | {e['sessions']} | {e['accounts']} | "
                f"{_pct(e['recall_true_class'], 1)} | {_pct(e['flagged_distillation_share'], 1)} | "
                f"{_pct(ps['human'], 1)} | {_pct(ps['benign_automation'], 1)} | "
                f"{_pct(ps['distillation_harvesting'], 1)} |"
            )
        lines.append("")

    etd = metrics.get("events_to_detection")
    if etd:
        lines += [
            "## Events to detection",
            "",
            f"Over {etd['sessions']} distillation_harvesting sessions: events until the first score above the "
            "threshold fixed at the target FPR; never-detected sessions count as never (∞).",
            "",
            f"- detected: {etd['detected']} ({_pct(etd['detected_share'], 1)})",
            f"- median over all (never = ∞): {_fmt(etd['median_all'], 1)}",
            f"- median over detected: {_fmt(etd['median_detected'], 1)}; "
            f"p90 over detected: {_fmt(etd['p90_detected'], 1)}",
            "",
        ]

    if metrics.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in metrics["notes"]] + [""]

    lines += [
        "## Figures",
        "",
        "![Confusion matrix](confusion.png)",
        "",
        "![ROC per class, log FPR axis](roc.png)",
        "",
        "![Precision-recall per class](pr.png)",
        "",
        "![p_distillation_harvesting by true class](score_hist.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(
    metrics: dict,
    y_true: np.ndarray,
    probs: np.ndarray,
    out_dir: str | Path,
    title: str = "distillguard evaluation",
) -> Path:
    """Write metrics.json, report.md and the four PNGs into out_dir; return report.md's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y = _labels_to_int(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    # allow_nan=False: a NaN that slipped through must fail here, not produce invalid JSON
    publish_text(out / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    _plot_confusion(np.asarray(metrics["confusion_matrix"]["counts"]), out / "confusion.png")
    _plot_roc(y, probs, out / "roc.png")
    _plot_pr(y, probs, out / "pr.png")
    _plot_score_hist(y, probs, metrics, out / "score_hist.png")
    report = out / "report.md"
    publish_text(report, _markdown(metrics, title))
    return report


# --------------------------------------------------------------------------- confidence by evidence

EVIDENCE_BUCKETS = ((1, 1), (2, 3), (4, 8), (9, 32), (33, None))


def evidence_buckets(y, n_events, probs, worst_action, buckets=EVIDENCE_BUCKETS) -> list[dict]:
    """Per bucket of events seen (1, 2-3, 4-8, 9-32, 33+): sessions per class, calibration
    of the last event's probabilities (ECE), and what the served policy did at any request
    (worst_action: rank in Action order, 0 ALLOW .. 4 BLOCK): humans acted on and blocked,
    harvesting sessions degraded or blocked."""
    from .calibration import expected_calibration_error

    y = np.asarray(y)
    n_events = np.asarray(n_events)
    worst = np.asarray(worst_action)
    out = []
    for lo, hi in buckets:
        m = (n_events >= lo) & ((n_events <= hi) if hi is not None else True)
        h, d = m & (y == HUMAN), m & (y == DISTILL)
        out.append({
            "events": f"{lo}" if lo == hi else f"{lo}+" if hi is None else f"{lo}-{hi}",
            "sessions": int(m.sum()),
            "sessions_per_class": {name: int((m & (y == k)).sum()) for k, name in enumerate(LABELS)},
            "ece": expected_calibration_error(probs[m], y[m])["ece"] if m.sum() else None,
            "human_acted_on": float((worst[h] > 0).mean()) if h.any() else None,
            "human_blocked": float((worst[h] == 4).mean()) if h.any() else None,
            "distillation_degrade_or_block": float((worst[d] >= 3).mean()) if d.any() else None,
        })
    return out


def evidence_buckets_markdown(rows: list[dict]) -> str:
    f = lambda v: "—" if v is None else f"{v:.4f}"   # noqa: E731
    lines = ["\n## Confidence by evidence\n",
             "Sessions by events seen; the served policy's actions at any request of the session, "
             "ECE of the last event's probabilities.\n",
             "| events | sessions | human / benign / harvesting | ECE | humans acted on | humans blocked "
             "| harvesting degraded or blocked |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["sessions_per_class"]
        lines.append(f"| {r['events']} | {r['sessions']} | {c['human']} / {c['benign_automation']} / "
                     f"{c['distillation_harvesting']} | {f(r['ece'])} | {f(r['human_acted_on'])} | "
                     f"{f(r['human_blocked'])} | {f(r['distillation_degrade_or_block'])} |")
    return "\n".join(lines) + "\n"
