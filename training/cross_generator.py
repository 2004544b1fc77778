"""Cross-generator evaluation (issue 13, deliverable 2): `distillguard evaluate cross`.

The shipped model is trained on the project's simulator (generator A,
`training.simulate`) only. Here it is scored on traffic of generator B
(`training.generator_b`), written independently by someone who never read A: other
mechanisms, other figures, other prompt text, signatures computed from the prompts. B
never trains the shipped model; it is the frozen yardstick.

As a check of the method, the same recipe (the default model's `TrainConfig`, seed and
epochs, trained on as many B events as `make model` simulates of A) is trained on B and
scored on a set of A. Together with the two in-distribution cells (the shipped model on
a fresh A set, the B-trained model on the B set) this is a 2 x 2 matrix: a model that
only reads its own generator's marginals drops off the diagonal.

Figures per test family (the family's sessions of the test set), as in the held-out
table (`training.holdout`): recall of the true class (argmax); share flagged as
distillation at the thresholds giving 1% and 0.1% human-session FPR on that test set's
human sessions, with 95% intervals resampling accounts and a 95% upper bound (the
bootstrap's upper end; when nothing is flagged, where a bootstrap collapses to [0, 0],
the exact binomial bound 1 - 0.05^(1/n) over the family's n sessions instead); share
acted on by the bundle's own policy (thresholds fixed on its validation data at training
time: what a gateway would do); median events to detection at the 1% threshold (never =
inf). The thresholds at 1% / 0.1% FPR are an evaluation convention (points on the ROC
curve), not tuned decisions: the policy columns are the decisions, and they were fixed
before this set existed.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..model.files import publish_text
from ..model.schema import LABELS
from .holdout import (FPR_KEYS, _etd_summary, _family_figures, _fmt, _json_default, _per_event_score,
                      _share_ci, _subset_rows, _thresholds)

HUMAN, DISTILL = LABELS.index("human"), LABELS.index("distillation_harvesting")
GENERATORS = ("a", "b")
# Same recipe as `make model` (Makefile MODEL_ARGS: --simulate 600000 --seed 0 --epochs 10, 7 days).
RECIPE_EVENTS, RECIPE_DAYS, RECIPE_EPOCHS, RECIPE_SEED = 600_000, 7.0, 10, 0
FAMILY_COLUMNS = ("family", "true_class", "sessions", "accounts", "recall_true_class", "recall_true_class_ci95",
                  "flagged_distillation_1%", "flagged_distillation_1%_ci95", "flagged_distillation_1%_upper95",
                  "flagged_distillation_0.1%", "flagged_distillation_0.1%_ci95",
                  "flagged_distillation_0.1%_upper95", "acted_on_by_policy", "top_class_distillation",
                  "median_events_to_detection_1%", "detected_share_1%")


def simulate_generator(gen: str, seed: int, accounts: int, days: float):
    """-> (events, labels) DataFrames of generator `gen` ("a" or "b")."""
    if gen == "a":
        from .simulate import SimConfig, simulate

        return simulate(SimConfig(seed=seed, accounts=accounts, days=days))
    if gen == "b":
        from .generator_b import BConfig, simulate_b

        return simulate_b(BConfig(seed=seed, accounts=accounts, days=days))
    raise ValueError(f"generator must be one of {GENERATORS}, not {gen!r}")


def accounts_for(gen: str, events: int, days: float) -> int:
    if gen == "a":
        from .simulate import accounts_for_events
        return accounts_for_events(events, days)
    from .generator_b import accounts_for_events_b
    return accounts_for_events_b(events, days)


def write_set(gen: str, events, labels, out_dir) -> tuple[Path, Path]:
    """Events (prompt text kept for B: its signatures are computed on read) + labels.csv."""
    from .simulate import write

    return write(events, labels, out_dir)


def load_prepared(events_path, labels_path, gap_s: float, hash_only: bool = False):
    """The labelled sessions of a written set; hash_only: of its hash-only copy
    (training.data.hash_only_copy: frames only as upstream hashes)."""
    from ..model.labels_io import read_labels
    from ..model.readers import load_events
    from ..serving.event_log import join_completions
    from .data import hash_only_copy, prepare

    events = load_events(events_path, join=join_completions)
    return prepare(hash_only_copy(events) if hash_only else events, read_labels(labels_path), gap_s)


def upper95(share: float | None, ci: list | None, n: int) -> float | None:
    """Upper end of the account bootstrap; for a share of exactly 0 (the bootstrap says
    [0, 0]) the one-sided exact binomial bound over n sessions."""
    if share is None or n == 0:
        return None
    if share == 0.0:
        return float(1.0 - 0.05 ** (1.0 / n))
    return None if ci is None else float(ci[1])


def _median_inf(x: np.ndarray) -> float | None:
    """Median with never = inf (the design doc's events-to-detection rule); None if empty."""
    if len(x) == 0:
        return None
    v = float(np.median(x))
    return v if np.isfinite(v) else None


def _served_figures(y, acc_inv, acted_any, blocked_any, strong_any, first_strong, n_boot, rng) -> dict:
    """What the served policy did over whole sessions: humans acted on / blocked at any
    request (with the upper 95% bound the targets are stated on), harvesting sessions that
    reached DEGRADE or BLOCK and after how many events."""
    human, dist = y == HUMAN, y == DISTILL
    out = {}
    for name, v in (("human_acted_on_at_any_event", acted_any), ("human_blocked_at_any_event", blocked_any)):
        share = float(v[human].mean()) if human.any() else None
        ci = _share_ci(v[human].astype(float), acc_inv[human], n_boot, rng)
        out[name] = share
        out[f"{name}_upper95"] = upper95(share, ci, int(human.sum()))
    out["distillation_degrade_or_block_at_any_event"] = float(strong_any[dist].mean()) if dist.any() else None
    out["distillation_median_events_to_degrade_or_block"] = _median_inf(first_strong[dist])
    return out


def score_set(bundle, p, *, n_boot: int, seed: int, per_family: bool = True, progress=None) -> dict:
    """Every figure of one (model, test set) cell; `p` is a training.data.Prepared."""
    from ..serving.bundle import apply_temperature, session_verdicts
    from .calibration import expected_calibration_error
    from .evaluate import compute_metrics, evidence_buckets
    from .evaluate_bundle import events_to_detection

    sv = session_verdicts(bundle, p.sr)
    probs, score = sv.probs, sv.session_score
    y, accounts, fam = p.y, p.accounts, p.families.astype(str)
    _, acc_inv = np.unique(accounts, return_inverse=True)
    m = compute_metrics(y, probs, accounts, n_boot=n_boot, seed=seed, scores=score)
    thr = _thresholds(y, probs, accounts, score)
    acted = np.asarray(sv.actions) != "ALLOW"
    # The served policy over the whole session: what a person meets at any request.
    acted_any = sv.worst_action > 0
    blocked_any = sv.worst_action == 4
    strong_any = np.isfinite(sv.first_strong)
    top_distill = probs.argmax(axis=1) == DISTILL
    rng = np.random.default_rng(seed)
    human = y == HUMAN
    summary = {
        "sessions": int(len(y)), "accounts": int(len(np.unique(accounts))), "events": int(len(p.sr.rows)),
        "sessions_per_class": {n: int((y == i).sum()) for i, n in enumerate(LABELS)},
        "macro_f1": m["macro_f1"], "macro_f1_ci95": m["macro_f1_ci95"],
        "recall_at_human_fpr": {k: {key: m["recall_at_human_fpr"][k][key] for key in
                                    ("threshold", "recall", "recall_ci95", "reliable", "human_sessions",
                                     "min_human_sessions", "achieved_human_fpr")} for k in FPR_KEYS},
        "human_acted_on_by_policy": float(acted[human].mean()) if human.any() else None,
        "human_acted_on_by_policy_ci95": _share_ci(acted[human].astype(float), acc_inv[human], n_boot, rng),
        "human_top_class_distillation": float(top_distill[human].mean()) if human.any() else None,
        "distillation_acted_on_by_policy": float(acted[y == DISTILL].mean()) if (y == DISTILL).any() else None,
        "by_evidence": evidence_buckets(y, p.sr.lengths, probs, sv.worst_action),
        **_served_figures(y, acc_inv, acted_any, blocked_any, strong_any, sv.first_strong, n_boot, rng),
        "ece_served": expected_calibration_error(probs, y)["ece"],
        # The network's own output: temperature scaling is invertible (serving.bundle).
        "ece_raw": expected_calibration_error(apply_temperature(probs, 1.0 / bundle.temperature), y)["ece"],
    }
    out = {"summary": summary, "families": {}}
    if not per_family:
        return out
    t1 = thr["1%"]["threshold"]
    for f in sorted(np.unique(fam)):
        mask = fam == f
        counts = np.bincount(y[mask], minlength=len(LABELS))
        n = int(mask.sum())
        fig = _family_figures(mask, y, probs, acc_inv, thr, n_boot, rng, score)
        for k in FPR_KEYS:
            fig[f"flagged_distillation_{k}_upper95"] = upper95(fig[f"flagged_distillation_{k}"],
                                                               fig[f"flagged_distillation_{k}_ci95"], n)
        etd = None
        if t1 is not None:
            sess = np.flatnonzero(mask)
            sub = _subset_rows(p.sr, sess)
            etd = _etd_summary(events_to_detection(_per_event_score(bundle, sub), sub.starts, t1))
        out["families"][str(f)] = {
            "true_class": LABELS[int(counts.argmax())], "sessions": n,
            "accounts": int(len(np.unique(accounts[mask]))),
            **fig,
            "acted_on_by_policy": float(acted[mask].mean()),
            "acted_on_at_any_event": float(acted_any[mask].mean()),
            "degrade_or_block_at_any_event": float(strong_any[mask].mean()),
            "median_events_to_degrade_or_block": _median_inf(sv.first_strong[mask]),
            "top_class_distillation": float(top_distill[mask].mean()),
            "events_to_detection_1%": etd,
        }
        if progress:
            progress(f"  {f}: recall {fig['recall_true_class']:.3f}, flagged@1% "
                     f"{_fmt(fig['flagged_distillation_1%'])}, policy {acted[mask].mean():.3f}")
    return out


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[cross] {msg}", flush=True)


def run_cross_generator(out_dir, model, *, seed: int = 0, test_accounts_b: int = 20_000,
                        test_accounts_a: int = 16_500, days: float = 3.0, train_events: int = RECIPE_EVENTS,
                        train_days: float = RECIPE_DAYS, epochs: int = RECIPE_EPOCHS, train_config=None,
                        n_boot: int = 200, progress: bool = True) -> dict:
    """The 2 x 2 matrix (trained on A or B x tested on A or B); writes cross_generator.json/.md/.png.

    model: the shipped bundle (trained on A). The B-trained model is trained here with
    `train_config` (default: the recipe of the shipped one, `TrainConfig()` with its seed
    and `epochs`) on ~`train_events` B events of `train_days` days.
    Test sets: B with `test_accounts_b` accounts and A with `test_accounts_a` (defaults give
    >= 10,000 human sessions each, the design card's floor for figures at 0.1% FPR)."""
    from ..serving.bundle import load_bundle
    from .train import TrainConfig, train

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda s: _say(True, s)) if progress else None
    timings: dict[str, float] = {}
    shipped = load_bundle(model, threads=0)
    gap = shipped.gap_s

    sets = {}
    for gen, accounts, s in (("b", test_accounts_b, seed * 1000 + 901), ("a", test_accounts_a, seed * 1000 + 902)):
        t0 = time.perf_counter()
        ev, lab = simulate_generator(gen, s, accounts, days)
        paths = write_set(gen, ev, lab, out / "data" / f"test_{gen}")
        del ev, lab
        sets[gen] = {"prepared": load_prepared(*paths, gap), "prepared_hash_only": load_prepared(*paths, gap, True),
                     "seed": s, "simulated_accounts": accounts, "days": days, "path": str(paths[0])}
        timings[f"test_{gen}_s"] = round(time.perf_counter() - t0, 1)
        p = sets[gen]["prepared"]
        _say(progress, f"test set {gen.upper()}: {len(p.y)} sessions "
                       f"({ {n: int((p.y == i).sum()) for i, n in enumerate(LABELS)} }), {len(p.sr.rows)} events, "
                       f"{timings[f'test_{gen}_s']} s")

    # The method check: the shipped recipe, trained on B.
    t0 = time.perf_counter()
    tseed = seed * 1000 + 903
    ev, lab = simulate_generator("b", tseed, accounts_for("b", train_events, train_days), train_days)
    tr_paths = write_set("b", ev, lab, out / "data" / "train_b")
    n_train = len(ev)
    del ev, lab
    cfg = train_config or TrainConfig(seed=RECIPE_SEED, epochs=epochs)
    cfg = replace(cfg, epochs=epochs, checkpoint_dir=str(out / "runs" / "trained_on_b"))
    info = train(*tr_paths, out / "models" / "trained_on_b", cfg, progress=False,
                 extra_fingerprint={"generator": "b", "cross_generator_check": True})
    trained_b = load_bundle(out / "models" / "trained_on_b", threads=0)
    timings["train_b_s"] = round(time.perf_counter() - t0, 1)
    _say(progress, f"trained the recipe on {n_train} B events in {timings['train_b_s']} s")

    cells = {}
    for trained_on, bundle in (("a", shipped), ("b", trained_b)):
        for tested_on in GENERATORS:
            t0 = time.perf_counter()
            cross = trained_on != tested_on
            _say(progress, f"trained on {trained_on.upper()}, tested on {tested_on.upper()}")
            cells[f"{trained_on}->{tested_on}"] = {
                "trained_on": trained_on, "tested_on": tested_on, "cross": cross, "hash_only": False,
                **score_set(bundle, sets[tested_on]["prepared"], n_boot=n_boot, seed=seed, per_family=cross,
                            progress=say)}
            if cross:   # the same cell on the test set's hash-only copy
                _say(progress, f"trained on {trained_on.upper()}, tested on {tested_on.upper()} (hash-only copy)")
                cells[f"{trained_on}->{tested_on} hash-only"] = {
                    "trained_on": trained_on, "tested_on": tested_on, "cross": True, "hash_only": True,
                    **score_set(bundle, sets[tested_on]["prepared_hash_only"], n_boot=n_boot, seed=seed,
                                progress=say)}
            timings[f"score_{trained_on}_{tested_on}_s"] = round(time.perf_counter() - t0, 1)

    report = {
        "what": "cross-generator evaluation: the shipped model (trained on generator A) scored on generator B; "
                "the same recipe trained on B scored on A as a check of the method",
        "config": {"seed": seed, "days": days, "epochs": epochs, "train_events": train_events,
                   "train_days": train_days, "n_boot": n_boot},
        "models": {"a": {"bundle": str(model), "version": shipped.version},
                   "b": {"bundle": str(out / "models" / "trained_on_b"), "version": trained_b.version,
                         "train_events": n_train, "seed": tseed, **info["fingerprint"]}},
        "test_sets": {g: {k: v for k, v in d.items() if not k.startswith("prepared")} for g, d in sets.items()},
        "cells": cells,
        "table": {k: family_table(c) for k, c in cells.items() if c["cross"]},
        "timings": timings,
    }
    timings["total_s"] = round(time.perf_counter() - t_start, 1)
    publish_text(out / "cross_generator.json",
                 json.dumps(report, indent=2, allow_nan=False, default=_json_default) + "\n")
    plot_cross(report, out / "cross_generator.png")
    publish_text(out / "cross_generator.md", markdown(report))
    _say(progress, f"written {out / 'cross_generator.md'} in {timings['total_s']} s")
    return report


def family_table(cell: dict) -> list[dict]:
    rows = []
    for f, r in cell["families"].items():
        etd = r.get("events_to_detection_1%") or {}
        row = {"family": f, **r, "median_events_to_detection_1%": etd.get("median_all"),
               "detected_share_1%": etd.get("detected_share")}
        rows.append({k: row.get(k) for k in FAMILY_COLUMNS})
    return rows


# ---------------------------------------------------------------------------- output

def _ci(ci) -> str:
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _pct(x, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def matrix_markdown(rep: dict) -> list[str]:
    lines = ["| trained on → tested on | sessions (human) | macro-F1 | distill recall @1% FPR | distill recall @0.1% FPR "
             "| humans acted on by policy | humans with distillation top class | ECE |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, c in rep["cells"].items():
        s = c["summary"]
        r1, r01 = s["recall_at_human_fpr"]["1%"], s["recall_at_human_fpr"]["0.1%"]
        rel = "" if r01["reliable"] else " (not reliable)"
        name = (f"{c['trained_on'].upper()} → {c['tested_on'].upper()}" + (" (cross)" if c["cross"] else "")
                + (", hash-only copy" if c.get("hash_only") else ""))
        lines.append(f"| {name} | {s['sessions']} ({s['sessions_per_class']['human']}) | "
                     f"{_fmt(s['macro_f1'])}{_ci(s['macro_f1_ci95'])} | {_fmt(r1['recall'])}{_ci(r1['recall_ci95'])} | "
                     f"{_fmt(r01['recall'])}{_ci(r01['recall_ci95'])}{rel} | "
                     f"{_pct(s['human_acted_on_by_policy'], 2)} | {_pct(s['human_top_class_distillation'], 2)} | "
                     f"{_fmt(s['ece_served'], 4)} |")
    return lines


def served_markdown(rep: dict) -> list[str]:
    """The served policy over whole sessions, per cell: what people and harvesters met."""
    lines = ["| trained on → tested on | humans acted on at any request (≤ upper 95%) | humans blocked at any "
             "request (≤ upper 95%) | harvesting degraded or blocked | median events to DEGRADE/BLOCK |",
             "| --- | --- | --- | --- | --- |"]
    for key, c in rep["cells"].items():
        s = c["summary"]
        if "human_acted_on_at_any_event" not in s:
            continue
        name = (f"{c['trained_on'].upper()} → {c['tested_on'].upper()}" + (" (cross)" if c["cross"] else "")
                + (", hash-only copy" if c.get("hash_only") else ""))
        med = s["distillation_median_events_to_degrade_or_block"]
        lines.append(f"| {name} | {_pct(s['human_acted_on_at_any_event'], 2)} (≤ "
                     f"{_pct(s['human_acted_on_at_any_event_upper95'], 2)}) | "
                     f"{_pct(s['human_blocked_at_any_event'], 3)} (≤ {_pct(s['human_blocked_at_any_event_upper95'], 3)}) | "
                     f"{_pct(s['distillation_degrade_or_block_at_any_event'], 1)} | "
                     f"{'never (median)' if med is None else f'{med:g}'} |")
    return lines


def evidence_markdown(rep: dict, key: str = "a->b") -> list[str]:
    from .evaluate import evidence_buckets_markdown

    c = rep["cells"].get(key)
    if c is None or "by_evidence" not in c["summary"]:
        return []
    return evidence_buckets_markdown(c["summary"]["by_evidence"]).strip("\n").splitlines()


def family_markdown(rows: list[dict]) -> list[str]:
    lines = ["| family | class | sessions | recall of true class | flagged @1% FPR (≤ upper 95%) | "
             "flagged @0.1% FPR (≤ upper 95%) | acted on by policy | median events to detection @1% (detected) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        etd = r["median_events_to_detection_1%"]
        etd_s = "–" if etd is None else (f"{etd if isinstance(etd, str) else f'{etd:g}'} "
                                         f"({_fmt(r['detected_share_1%'], 2)})")
        flagged = {k: f"{_fmt(r[f'flagged_distillation_{k}'])} (≤ {_fmt(r[f'flagged_distillation_{k}_upper95'])})"
                   for k in FPR_KEYS}
        lines.append(f"| {r['family']} | {r['true_class']} | {r['sessions']} ({r['accounts']} acc) | "
                     f"{_fmt(r['recall_true_class'])}{_ci(r['recall_true_class_ci95'])} | {flagged['1%']} | "
                     f"{flagged['0.1%']} | {_fmt(r['acted_on_by_policy'])} | {etd_s} |")
    return lines


def markdown(rep: dict) -> str:
    ts = rep["test_sets"]
    mb = rep["models"]["b"]
    lines = [
        "# Cross-generator evaluation",
        "",
        "The shipped model is trained on generator A (the project's simulator) only. Generator B "
        "(`training/generator_b/`, docs/generator_b.md) was written independently, from other public "
        "figures and with other mechanisms and prompt text; it never trains the shipped model. "
        f"Test sets: B seed {ts['b']['seed']} ({ts['b']['simulated_accounts']} accounts, {ts['b']['days']:g} days), "
        f"A seed {ts['a']['seed']} ({ts['a']['simulated_accounts']} accounts, {ts['a']['days']:g} days). "
        f"The method check trains the shipped recipe (same TrainConfig, {rep['config']['epochs']} epochs) "
        f"on {mb['train_events']} events of B (seed {mb['seed']}).",
        "",
        "Recall at 1% / 0.1% human FPR: thresholds at those points of each test set's human sessions; "
        "'acted on by policy' is the share of sessions whose action is not ALLOW under the bundle's own "
        "thresholds (fixed at training time on its validation split). 95% intervals resample accounts.",
        "",
        *matrix_markdown(rep),
        "",
        "The served policy over whole sessions (actions at any request; harvesting sessions reaching "
        "DEGRADE or BLOCK, never counted as never in the median):",
        "",
        *served_markdown(rep),
        "",
        "Generator B's test set (A → B) by events seen:",
        "",
        *evidence_markdown(rep),
        "",
    ]
    for key, rows in rep["table"].items():
        c = rep["cells"][key]
        copy = " (hash-only copy)" if c.get("hash_only") else ""
        lines += [f"## Trained on {c['trained_on'].upper()}, tested on {c['tested_on'].upper()}{copy}: per family", "",
                  *family_markdown(rows), ""]
    lines += ["Upper 95%: the account bootstrap's upper end, or the exact binomial bound 1 - 0.05^(1/n) when "
              "no session of the family is flagged.", "",
              "Hash-only copy: the same test set as a file carrying only upstream hashes would give it "
              "(each event's frame is the exact value of its signature, read as a legacy one-band signature: "
              "repetition needs the whole signature to repeat).", "",
              "![cross-generator](cross_generator.png)", "",
              f"Runtime: {rep['timings']['total_s']} s.", ""]
    return "\n".join(lines)


def plot_cross(rep: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = list(rep["table"])
    fig = Figure(figsize=(12, 4.2 * len(keys)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(len(keys), 1))
    for ax, key in zip(axes, keys):
        rows = rep["table"][key]
        x = np.arange(len(rows))
        w = 0.27
        for j, (col, label) in enumerate((("recall_true_class", "recall of true class"),
                                          ("flagged_distillation_1%", "flagged as distillation @1% FPR"),
                                          ("acted_on_by_policy", "acted on by the bundle's policy"))):
            ax.bar(x + (j - 1) * w, [np.nan if r[col] is None else r[col] for r in rows], w, label=label)
        c = rep["cells"][key]
        ax.set_title(f"trained on {c['trained_on'].upper()}, tested on {c['tested_on'].upper()}")
        ax.set_xticks(x, [r["family"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncols=3, loc="upper center")
    fig.savefig(path, dpi=100)
