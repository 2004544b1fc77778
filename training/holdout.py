"""Held-out-family evaluation (issue 4, deliverables 1, 2 and 4): `evaluate holdout`.

For each held-out family F a transformer is trained on simulated traffic of every family
except F, the two baselines (`training.baselines`) are fitted on the same training
sessions, and all three are scored on ONE shared test set simulated with every family
(another seed). Figures for F come from F's sessions of that test set:

- recall of F's true class (argmax of the class probabilities);
- share of F's sessions flagged as distillation at the thresholds that give 1% and 0.1%
  human-session FPR on that test set's human sessions (each detector gets its own
  thresholds; design card: a figure at FPR f is reliable only with >= 10/f human sessions);
- events to detection at the 1% threshold (per-event transformer scores; never = inf,
  median over all sessions). Baselines have no per-event scores here (the rules'
  per-event statistics are folded into a per-session maximum inside
  `RulesBaseline.session_scores`, the GBT reads whole-session aggregates), so their
  events to detection are not reported.

The early-detection curve is distillation recall vs events seen (1..64) at the 1%
threshold: "held-out" pools each harvesting family's sessions scored by the model that
never saw that family; "full test set" is every distillation session of the test set,
averaged over the held-out models (each saw all but one family).

Training sets differ per F by seed as well as by the missing family; a share of the
difference between families is therefore seed noise, which the account-bootstrap
intervals on the family's own sessions only partly show.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..model.files import publish_text
from ..model.schema import LABELS
from .simulate import FAMILIES, FAMILY_LABEL, SimConfig, simulate, write

HUMAN, BENIGN, DISTILL = 0, 1, 2
DETECTORS = ("transformer", "rules", "gbt")
# The transformer on a hash-only copy of the test set (training.data.hash_only_copy).
HASH_ONLY = "transformer_hash_only"
FPR_KEYS = ("1%", "0.1%")
CURVE_MAX_EVENTS = 64
TABLE_COLUMNS = ("family", "true_class", "detector", "test_sessions", "test_accounts",
                 "recall_true_class", "recall_true_class_ci95",
                 "flagged_distillation_1%", "flagged_distillation_1%_ci95",
                 "flagged_distillation_0.1%", "flagged_distillation_0.1%_ci95",
                 "median_events_to_detection_1%", "detected_share_1%")


def default_families(include_human: bool = False) -> tuple[str, ...]:
    """Every harvesting and benign-automation family (and the human ones on request)."""
    return tuple(f for f in FAMILIES if include_human or FAMILY_LABEL[f] != "human")


def family_seed(seed: int, family: str) -> int:
    """Training seed of the model that leaves `family` out: fixed per family whatever the
    list of families asked for, so one family's row can be recomputed on its own."""
    return seed * 1000 + 1 + FAMILIES.index(family)


def test_seed(seed: int) -> int:
    return seed * 1000 + 999


# ---------------------------------------------------------------------------- helpers

def _subset_rows(sr, sessions: np.ndarray, max_len: int | None = None):
    """SessionRows of `sessions` only, each cut to its first `max_len` events. The model is
    causal, so a prefix scores exactly as those events did inside the whole session."""
    from ..model.windows import SessionRows

    lengths = sr.lengths[sessions]
    if max_len is not None:
        lengths = np.minimum(lengths, max_len)
    total = int(lengths.sum())
    offs = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = sr.rows[np.repeat(sr.starts[:-1][sessions], lengths) + offs]
    return SessionRows(rows=rows, starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def _per_event_score(bundle, sr) -> np.ndarray:
    """session_score at every event (sessions from their first event): what the served
    action derives from, so what detection is counted on."""
    from ..serving.bundle import score_events

    if len(sr.rows) == 0:
        return np.zeros(0, dtype=np.float64)
    return score_events(bundle, sr, describe_at=np.zeros(len(sr.rows), dtype=bool)).session_score


def _share_ci(values: np.ndarray, acc_inv: np.ndarray, n_boot: int, rng) -> list[float] | None:
    """95% interval of mean(values) resampling accounts (the sessions of one account share a
    script, so sessions are not independent draws)."""
    if n_boot <= 0 or len(values) == 0:
        return None
    uniq, inv = np.unique(acc_inv, return_inverse=True)
    s = np.bincount(inv, weights=values.astype(np.float64), minlength=len(uniq))
    n = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    draw = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    shares = s[draw].sum(axis=1) / n[draw].sum(axis=1)
    return [float(np.quantile(shares, 0.025)), float(np.quantile(shares, 0.975))]


def _thresholds(y, probs, accounts, scores=None) -> dict:
    """Thresholds at 1% / 0.1% human-session FPR on this set (evaluate.compute_metrics's
    rule) on `scores` (default p(distillation_harvesting))."""
    from .evaluate import compute_metrics

    m = compute_metrics(y, probs, accounts, n_boot=0, scores=scores)
    out = {}
    for k in FPR_KEYS:
        e = m["recall_at_human_fpr"][k]
        out[k] = {key: e[key] for key in ("threshold", "achieved_human_fpr", "recall", "reliable",
                                         "human_sessions", "min_human_sessions")}
    out["macro_f1"] = m["macro_f1"]
    return out


def _family_figures(fam_mask, y, probs, acc_inv, thr: dict, n_boot: int, rng, scores=None) -> dict:
    pred = probs.argmax(axis=1)
    score = probs[:, DISTILL] if scores is None else scores
    yf, acc = y[fam_mask], acc_inv[fam_mask]
    correct = (pred[fam_mask] == yf).astype(np.float64)
    out = {"recall_true_class": float(correct.mean()),
           "recall_true_class_ci95": _share_ci(correct, acc, n_boot, rng)}
    for k in FPR_KEYS:
        t = thr[k]["threshold"]
        if t is None:
            out[f"flagged_distillation_{k}"] = out[f"flagged_distillation_{k}_ci95"] = None
            continue
        flagged = (score[fam_mask] > t).astype(np.float64)
        out[f"flagged_distillation_{k}"] = float(flagged.mean())
        out[f"flagged_distillation_{k}_ci95"] = _share_ci(flagged, acc, n_boot, rng)
    return out


def _etd_summary(etd: np.ndarray) -> dict:
    from .evaluate import _events_to_detection_summary

    return _events_to_detection_summary(np.asarray(etd, dtype=np.float64))


def _recall_curve(etd: np.ndarray, max_events: int = CURVE_MAX_EVENTS) -> list[float] | None:
    """recall[k-1] = share of sessions flagged at or before their k-th event. A session shorter
    than k events that was never flagged counts as missed: it ended undetected."""
    if len(etd) == 0:
        return None
    k = np.arange(1, max_events + 1)
    return [float(v) for v in (etd[None, :] <= k[:, None]).mean(axis=1)]


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[holdout] {msg}", flush=True)


# ---------------------------------------------------------------------------- main

def run_holdout(out_dir, families=None, seed: int = 0, train_accounts: int = 5000,
                test_accounts: int = 16500, days: float = 3.0, epochs: int = 8,
                include_human: bool = False, train_config=None, n_boot: int = 200,
                progress: bool = True) -> dict:
    """Leave-one-family-out evaluation; writes holdout.json, holdout.md and PNGs into out_dir.

    families: held-out families (default `default_families(include_human)`).
    train_accounts / test_accounts / days: size of each simulated training set and of the
    one shared test set (accounts, not events: one simulation each, no calibration runs).
    The defaults give ~10,800 human test sessions, enough for figures at 0.1% human FPR
    (design card: >= 10,000), and run in ~7 min on 2 cores for the 10 default families.
    train_config: base `TrainConfig` (network, batch size, ...); seed, epochs and
    checkpoint_dir are set here per family.
    """
    from ..model.labels_io import read_labels
    from ..model.readers import load_events
    from ..serving.bundle import load_bundle, session_verdicts
    from ..serving.event_log import join_completions
    from .baselines import GBTBaseline, RulesBaseline, baseline_data
    from .data import hash_only_copy, prepare, split_of
    from .evaluate_bundle import events_to_detection
    from .train import TrainConfig, train

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fams = tuple(families) if families else default_families(include_human)
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    base_cfg = train_config or TrainConfig()
    timings: dict[str, float] = {}

    # One test set for every held-out model, so their thresholds rest on the same humans.
    t0 = time.perf_counter()
    ev, lab = simulate(SimConfig(seed=test_seed(seed), accounts=test_accounts, days=days))
    te_path, tl_path = write(ev, lab, out / "data" / "test")
    del ev, lab
    test_events = load_events(te_path, join=join_completions)
    test = baseline_data(test_events, read_labels(tl_path), base_cfg.session_gap_s)
    # The same sessions as a file carrying only upstream hashes would give them.
    test_hash = prepare(hash_only_copy(test_events), read_labels(tl_path), base_cfg.session_gap_s)
    del test_events
    if not (np.array_equal(test_hash.y, test.y) and np.array_equal(test_hash.accounts, test.accounts)):
        raise RuntimeError("the hash-only copy of the test set has other sessions than the test set")
    y, accounts, fam_of = test.y, test.accounts, test.families
    _, acc_inv = np.unique(accounts, return_inverse=True)
    sizes = {"events": int(len(test.prepared.sr.rows)), "sessions": int(len(y)),
             "accounts": int(len(np.unique(accounts))),
             "sessions_per_class": {n: int((y == i).sum()) for i, n in enumerate(LABELS)},
             "sessions_per_family": {str(f): int((fam_of == f).sum()) for f in np.unique(fam_of)},
             "seed": test_seed(seed), "simulated_accounts": test_accounts, "days": days}
    timings["test_set_s"] = round(time.perf_counter() - t0, 1)
    _say(progress, f"test set: {sizes['sessions']} sessions ({sizes['sessions_per_class']}), "
                   f"{sizes['events']} events, {timings['test_set_s']} s")
    for f in fams:
        if not (fam_of == f).any():
            raise ValueError(f"family {f} has no session in the test set: raise test_accounts")

    # Rules learn nothing, so their scores and thresholds are the same for every F.
    rules_probs = RulesBaseline().fit().predict_proba(test)
    rules_thr = _thresholds(y, rules_probs, accounts)
    dist_sessions = np.flatnonzero(y == DISTILL)
    dist_prefix = _subset_rows(test.prepared.sr, dist_sessions, CURVE_MAX_EVENTS)

    rng = np.random.default_rng(seed)
    results: dict[str, dict] = {}
    full_curves, heldout_etd64 = [], []
    for i, f in enumerate(fams):
        t_f = time.perf_counter()
        fseed = family_seed(seed, f)
        keep = tuple(x for x in FAMILIES if x != f)
        ev, lab = simulate(SimConfig(seed=fseed, accounts=train_accounts, days=days, families=keep))
        if (lab["family"] == f).any():
            raise RuntimeError(f"simulator produced held-out family {f} in its training data")
        tr_ev, tr_lab = write(ev, lab, out / "data" / f"train_{f}")
        del ev, lab
        model_dir = out / "models" / f
        cfg = replace(base_cfg, seed=fseed, epochs=epochs, checkpoint_dir=str(out / "runs" / f))
        info = train(tr_ev, tr_lab, model_dir, cfg, progress=False,
                     extra_fingerprint={"held_out_family": f})
        t_train = time.perf_counter() - t_f

        # GBT on the transformer's own training sessions (same account split, same seed).
        tr = baseline_data(load_events(tr_ev, join=join_completions), read_labels(tr_lab), cfg.session_gap_s)
        gbt = GBTBaseline(seed=fseed).fit(tr, split_of(tr.accounts, fseed, cfg.split_fractions) == 0)
        gbt_probs = gbt.predict_proba(test)

        bundle = load_bundle(model_dir)
        # The transformer ranks sessions by session_score (the served accumulated evidence).
        tf = session_verdicts(bundle, test.prepared.sr)
        tf_probs = tf.probs
        probs = {"transformer": tf_probs, "rules": rules_probs, "gbt": gbt_probs}
        scores = {"transformer": tf.session_score, "rules": None, "gbt": None}
        thr = {"transformer": _thresholds(y, tf_probs, accounts, tf.session_score), "rules": rules_thr,
               "gbt": _thresholds(y, gbt_probs, accounts)}
        tfh = session_verdicts(bundle, test_hash.sr)
        tfh_probs = tfh.probs
        thr[HASH_ONLY] = _thresholds(y, tfh_probs, accounts, tfh.session_score)

        m = fam_of == f
        fsess = np.flatnonzero(m)
        det = {d: _family_figures(m, y, probs[d], acc_inv, thr[d], n_boot, rng, scores[d]) for d in DETECTORS}
        det[HASH_ONLY] = _family_figures(m, y, tfh_probs, acc_inv, thr[HASH_ONLY], n_boot, rng, tfh.session_score)
        for d in ("rules", "gbt", HASH_ONLY):
            det[d]["events_to_detection"] = None   # no per-event baseline scores (module docstring)
        pe = _per_event_score(bundle, _subset_rows(test.prepared.sr, fsess))
        starts = np.concatenate([[0], np.cumsum(test.prepared.sr.lengths[fsess])])
        det["transformer"]["events_to_detection"] = {
            k: (_etd_summary(events_to_detection(pe, starts, thr["transformer"][k]["threshold"]))
                if thr["transformer"][k]["threshold"] is not None else None) for k in FPR_KEYS}

        t1 = thr["transformer"]["1%"]["threshold"]
        if t1 is not None and len(dist_sessions):
            etd64 = events_to_detection(_per_event_score(bundle, dist_prefix), dist_prefix.starts, t1)
            full_curves.append(_recall_curve(etd64))
            if FAMILY_LABEL[f] == "distillation_harvesting":
                heldout_etd64.append(etd64[fam_of[dist_sessions] == f])

        results[f] = {
            "true_class": FAMILY_LABEL[f],
            "test_sessions": int(m.sum()), "test_accounts": int(len(np.unique(accounts[m]))),
            "train": {"seed": fseed, "simulated_accounts": train_accounts, "days": days,
                      "families": list(keep), **info["fingerprint"],
                      "bundle": str(model_dir), "in_distribution_test_macro_f1":
                          (info["metrics"].get("test") or {}).get("macro_f1")},
            "thresholds": thr,
            "detectors": det,
            "seconds": round(time.perf_counter() - t_f, 1), "train_seconds": round(t_train, 1),
        }
        tf = det["transformer"]
        etd = tf["events_to_detection"]["1%"] if tf["events_to_detection"]["1%"] else {}
        _say(progress, f"{i + 1}/{len(fams)} {f}: transformer recall {tf['recall_true_class']:.3f} "
                       f"flagged@1% {_fmt(tf['flagged_distillation_1%'])} | rules "
                       f"{_fmt(det['rules']['flagged_distillation_1%'])} | gbt recall "
                       f"{det['gbt']['recall_true_class']:.3f} flagged@1% {_fmt(det['gbt']['flagged_distillation_1%'])}"
                       f" | median ETD {etd.get('median_all')} | {results[f]['seconds']} s")

    curves = {"events": list(range(1, CURVE_MAX_EVENTS + 1)), "threshold": "1% human FPR (per model)"}
    if heldout_etd64:
        pooled = np.concatenate(heldout_etd64)
        curves["held_out"] = {"recall": _recall_curve(pooled), "sessions": int(len(pooled)),
                              "families": [f for f in fams if FAMILY_LABEL[f] == "distillation_harvesting"]}
    if full_curves:
        arr = np.array(full_curves)
        curves["full_test_set"] = {"recall_mean": arr.mean(axis=0).tolist(), "recall_min": arr.min(axis=0).tolist(),
                                   "recall_max": arr.max(axis=0).tolist(), "sessions": int(len(dist_sessions)),
                                   "models": len(full_curves)}

    report = {
        "what": "leave-one-family-out evaluation: train without family F, test on a set with every family",
        "config": {"families": list(fams), "seed": seed, "train_accounts": train_accounts,
                   "test_accounts": test_accounts, "days": days, "epochs": epochs,
                   "network": _asdict(base_cfg.network), "n_boot": n_boot},
        "test_set": sizes,
        "reliability": _reliability(sizes["sessions_per_class"]["human"]),
        "families": results,
        "table": _table(results),
        "early_detection": curves,
        "notes": ["events to detection: transformer only (per-event scores); the baselines give "
                  "one score per session here",
                  "rules cannot predict benign_automation: their recall of a benign family is 0 by construction",
                  "transformer_hash_only: the same model on a copy of the test set whose frames are only "
                  "upstream hashes (each the exact signature value, read as a legacy one-band signature)",
                  "thresholds are fixed per detector and per model on the test set's human sessions"],
    }
    timings["total_s"] = round(time.perf_counter() - t_start, 1)
    report["timings"] = timings
    _write(out, report)
    _say(progress, f"written {out / 'holdout.md'} in {timings['total_s']} s")
    return report


def _asdict(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def _reliability(n_human: int) -> dict:
    from .evaluate import min_human_sessions

    return {k: {"human_sessions": n_human, "needed": min_human_sessions(f), "reliable": n_human >= min_human_sessions(f)}
            for k, f in zip(FPR_KEYS, (0.01, 0.001))}


def _table(results: dict) -> list[dict]:
    rows = []
    for f, r in results.items():
        for d in (*DETECTORS, HASH_ONLY):
            x = r["detectors"][d]
            etd = (x.get("events_to_detection") or {}).get("1%") or {}
            row = {"family": f, "true_class": r["true_class"], "detector": d,
                   "test_sessions": r["test_sessions"], "test_accounts": r["test_accounts"],
                   **{k: x[k] for k in TABLE_COLUMNS if k in x},
                   "median_events_to_detection_1%": etd.get("median_all"),
                   "detected_share_1%": etd.get("detected_share")}
            rows.append({k: row.get(k) for k in TABLE_COLUMNS})
    return rows


# ---------------------------------------------------------------------------- output

def _fmt(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _fmt_ci(x, ci) -> str:
    return _fmt(x) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def side_by_side(rep: dict) -> list[str]:
    """One row per held-out family, cells transformer / rules / GBT (also the README's table)."""
    lines = ["| family | class | recall of true class | flagged @1% FPR | flagged @0.1% FPR | "
             "median events to detection @1% (transformer) | transformer on hash-only copy: recall / flagged @1% |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for f, r in rep["families"].items():
        d = r["detectors"]
        trio = {k: " / ".join(_fmt(d[x][k], 2) for x in DETECTORS)
                for k in ("recall_true_class", "flagged_distillation_1%", "flagged_distillation_0.1%")}
        etd = ((d["transformer"].get("events_to_detection") or {}).get("1%") or {}).get("median_all")
        etd_s = "–" if etd is None else (etd if isinstance(etd, str) else f"{etd:g}")
        h = d.get(HASH_ONLY)
        h_s = "–" if h is None else f"{_fmt(h['recall_true_class'], 2)} / {_fmt(h['flagged_distillation_1%'], 2)}"
        lines.append(f"| {f} | {r['true_class']} | {trio['recall_true_class']} | {trio['flagged_distillation_1%']} | "
                     f"{trio['flagged_distillation_0.1%']} | {etd_s} | {h_s} |")
    return lines


def _markdown(rep: dict) -> str:
    s = rep["test_set"]
    rel = rep["reliability"]
    cfg = rep["config"]
    lines = [
        "# Held-out-family evaluation",
        "",
        f"Each row: a model trained WITHOUT the family, scored on that family's sessions of one shared "
        f"test set simulated with every family (seed {s['seed']}, {s['simulated_accounts']} simulated accounts, "
        f"days {s['days']:g}: {s['sessions']} sessions = {s['sessions_per_class']['human']} human / "
        f"{s['sessions_per_class']['benign_automation']} benign automation / "
        f"{s['sessions_per_class']['distillation_harvesting']} distillation; {s['accounts']} accounts; "
        f"{s['events']} events). Training sets: {cfg['train_accounts']} simulated accounts, days {cfg['days']:g}, "
        f"epochs {cfg['epochs']}, one seed per family.",
        "",
        "Flagged = share of the family's sessions scored above the threshold giving that human-session "
        "FPR on the test set (per detector and model). Reliability (design card: >= 10/FPR human sessions): "
        + ", ".join(f"{k}: {'reliable' if v['reliable'] else 'NOT reliable'} ({v['human_sessions']} of {v['needed']})"
                    for k, v in rel.items()) + ". 95% intervals resample the family's accounts (thresholds fixed).",
        "Events to detection (transformer only): median over all the family's sessions at the 1% threshold, "
        "never-detected = ∞ ('never'); detected share beside it.",
        "",
        "| family | class | sessions | detector | recall of true class | flagged @1% FPR | flagged @0.1% FPR | median events to detection @1% (detected) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rep["table"]:
        etd = r["median_events_to_detection_1%"]
        etd_s = "n/a" if r["detector"] != "transformer" else (
            f"{etd if isinstance(etd, str) else f'{etd:g}'} ({_fmt(r['detected_share_1%'], 2)})" if etd is not None else "–")
        lines.append(
            f"| {r['family']} | {r['true_class']} | {r['test_sessions']} ({r['test_accounts']} acc) | {r['detector']} | "
            f"{_fmt_ci(r['recall_true_class'], r['recall_true_class_ci95'])} | "
            f"{_fmt_ci(r['flagged_distillation_1%'], r['flagged_distillation_1%_ci95'])} | "
            f"{_fmt_ci(r['flagged_distillation_0.1%'], r['flagged_distillation_0.1%_ci95'])} | {etd_s} |")
    lines += ["", "Side by side (transformer / rules / GBT):", "", *side_by_side(rep)]
    ed = rep["early_detection"]
    lines += ["", "## Early detection (transformer, 1% human-FPR threshold)", ""]
    for key, name in (("held_out", "held-out (each harvesting family by the model that never saw it)"),
                      ("full_test_set", "full test set, mean over held-out models")):
        c = ed.get(key)
        if not c:
            continue
        rec = c.get("recall") or c.get("recall_mean")
        pts = ", ".join(f"{k}: {rec[k - 1]:.3f}" for k in (1, 5, 10, 20, 32, 64) if k <= len(rec))
        lines.append(f"- {name}, {c['sessions']} sessions — recall after k events: {pts}")
    lines += ["", "![held-out families](holdout_families.png)", "", "![early detection](early_detection.png)", "",
              "Notes: " + "; ".join(rep["notes"]) + ".", "",
              f"Runtime: {rep['timings']['total_s']} s.", ""]
    return "\n".join(lines)


def _plot_families(rep: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fams = list(rep["families"])
    fig = Figure(figsize=(max(7.0, 1.1 * len(fams) + 2), 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(fams))
    w = 0.27
    for ax, key, title in ((axes[0], "recall_true_class", "recall of the family's true class (held out)"),
                           (axes[1], "flagged_distillation_1%", "share flagged as distillation @1% human FPR")):
        for j, d in enumerate(DETECTORS):
            v = [rep["families"][f]["detectors"][d][key] for f in fams]
            ax.bar(x + (j - 1) * w, [np.nan if a is None else a for a in v], w, label=d)
        ax.set_ylim(0, 1.22)   # headroom above 1.0 keeps the legend off the bars
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncols=3, fontsize=8, loc="upper center")
    axes[1].set_xticks(x, fams, rotation=35, ha="right", fontsize=8)
    fig.savefig(path, dpi=110)


def _plot_early(rep: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ed = rep["early_detection"]
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    k = np.array(ed["events"])
    if ed.get("full_test_set"):
        c = ed["full_test_set"]
        ax.plot(k, c["recall_mean"], label=f"full test set ({c['sessions']} sessions, mean of {c['models']} models)")
        ax.fill_between(k, c["recall_min"], c["recall_max"], alpha=0.2)
    if ed.get("held_out"):
        c = ed["held_out"]
        ax.plot(k, c["recall"], label=f"held-out harvesting families ({c['sessions']} sessions)")
    ax.axvline(10, color="grey", ls=":", lw=1)
    ax.set_xlabel("events seen")
    ax.set_ylabel("distillation recall @1% human FPR")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(1, k[-1])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)


def _write(out: Path, rep: dict) -> None:
    publish_text(out / "holdout.json", json.dumps(rep, indent=2, allow_nan=False, default=_json_default) + "\n")
    _plot_families(rep, out / "holdout_families.png")
    _plot_early(rep, out / "early_detection.png")
    publish_text(out / "holdout.md", _markdown(rep))


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")
