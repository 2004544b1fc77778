"""`distillguard evaluate`: score labelled events with a bundle and write the report."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model.labels_io import read_labels
from ..model.readers import load_events_or_skip
from ..model.schema import SchemaError
from . import evaluate
from .html_report import write_html
from .data import prepare


def events_to_detection(p_distill_per_event: np.ndarray, starts: np.ndarray, threshold: float) -> np.ndarray:
    """Per session: 1-based count of events until the first score above threshold; inf if never."""
    hit = p_distill_per_event > threshold
    out = np.full(len(starts) - 1, np.inf)
    first_hit = np.flatnonzero(hit)
    if len(first_hit):
        sess = np.searchsorted(starts, first_hit, side="right") - 1
        uniq, first = np.unique(sess, return_index=True)   # first hit of each session
        out[uniq] = first_hit[first] - starts[uniq] + 1
    return out


def run_evaluation(model, events_path, labels_path, report_dir, progress: bool = True,
                   n_boot: int = 200, seed: int = 0, on_error: str = "fail", rejects_path=None) -> Path:
    """Writes the report into report_dir; with on_error="skip" the bad event rows are left
    out and listed in `rejects_path` (default report_dir/rejects.jsonl)."""
    from ..serving.bundle import load_bundle, session_verdicts
    from ..serving.event_log import join_completions

    bundle = load_bundle(model)
    events, _ = load_events_or_skip(events_path, on_error, rejects_path or Path(report_dir) / "rejects.jsonl",
                                    join=join_completions)
    labels = read_labels(labels_path)
    p = prepare(events, labels, bundle.gap_s)
    if len(p.y) == 0:
        raise SchemaError(f"{labels_path}: no label matches any session of {events_path}")
    sv = session_verdicts(bundle, p.sr)
    probs, score = sv.probs, sv.session_score
    m = evaluate.compute_metrics(p.y, probs, p.accounts, n_boot=0, families=p.families, scores=score)
    thr = m["recall_at_human_fpr"]["1%"]["threshold"]
    etd = None if thr is None else events_to_detection(sv.events.session_score, p.sr.starts, thr)
    m = evaluate.compute_metrics(p.y, probs, p.accounts, n_boot=n_boot, seed=seed, families=p.families,
                                 events_to_detection=etd, scores=score)
    m["model"] = {"bundle": str(Path(model)), "version": bundle.version}
    m["by_evidence"] = evaluate.evidence_buckets(p.y, p.sr.lengths, probs, sv.worst_action)
    m["calibration"] = _calibration_section(bundle, p.y, probs, Path(report_dir))
    calibration_md = m["calibration"].pop("markdown")
    report = evaluate.write_report(m, p.y, probs, report_dir,
                                   title=f"distillguard evaluation of {Path(events_path).name}")
    with open(report, "a") as f:
        f.write(calibration_md)
        f.write(evaluate.evidence_buckets_markdown(m["by_evidence"]))
    write_html([report], Path(report_dir) / "report.html")
    return report


def _calibration_section(bundle, y, probs, report_dir: Path) -> dict:
    """ECE of the served (calibrated) scores and of the raw network output on this set."""
    from ..serving.bundle import apply_temperature
    from .calibration import expected_calibration_error, plot_reliability

    T = bundle.temperature
    raw = apply_temperature(probs, 1.0 / T)          # temperature scaling is invertible
    before = expected_calibration_error(raw, y)["ece"]
    after = expected_calibration_error(probs, y)["ece"]
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_reliability(raw, probs, y, report_dir / "calibration.png")
    md = (f"\n## Calibration\n\nTemperature {T:.3f} (fitted on the training run's validation split). "
          f"Expected calibration error (top label, 15 bins) on this set: raw network {before:.4f}, "
          f"served scores {after:.4f}.\n\n![Reliability](calibration.png)\n")
    return {"temperature": T, "ece_raw": before, "ece_served": after, "markdown": md}
