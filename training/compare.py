"""Champion vs challenger on a fixed holdout: paired metrics, confidence intervals, verdict.

`distillguard evaluate compare --model NEW --baseline CURRENT --events E --labels L --report DIR`
scores the same labelled holdout with both bundles and writes DIR/comparison.json and
DIR/comparison.md; `distillguard promote` reads that verdict (or computes it) before it
moves a registry's `current` pointer.

What is compared, for each bundle under its own decision rule (what serving would do):
- per class, recall and precision of the argmax label;
- human FPR: the share of human sessions whose served action is not ALLOW (policy.decide
  with the bundle's own thresholds and policy): what a false positive costs in production;
- the share of benign-automation and of harvesting sessions acted on, and the share of
  acted-on sessions that are harvesting;
- macro-F1, distillation recall at 1% human FPR (threshold from the holdout's humans);
- per family (labels' `family` column), the share acted on.

Confidence intervals are a *paired* bootstrap over accounts: every resample draws one
multiset of accounts and weights both bundles' sessions by it, so the interval of each
difference (challenger - champion) reflects the models' disagreement, not the holdout's
sampling noise twice over.

Sessions: each bundle cuts sessions with its own `session_gap_s`, since that is what it
sees in serving; with equal gaps (the usual case) both score the very same sessions.
With different gaps the session sets differ, but accounts - the bootstrap unit - are the
same, so the comparison stays paired at the account level; the report says so.

Verdict: PROMOTE unless the challenger is worse beyond the tolerance on a criterion -
human FPR (challenger - champion > fpr_tolerance) or any class's recall (champion -
challenger > tolerance), judged on the point estimates. A holdout without human sessions
cannot show the FPR and gives REJECT; a class absent from it is not checked.

A *fixed* holdout means: frozen (the same files for every comparison) and
account-disjoint from every candidate's training data. The only overlap detectable
cheaply is the whole holdout being a bundle's training data (same file hash as its
metadata's `training_data.sha256`); it is reported as a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..model.files import publish_atomically
from ..model.labels_io import read_labels
from ..model.readers import load_events_or_skip
from ..model.schema import LABELS, SchemaError
from ..serving.event_log import join_completions
from ..serving.registry import Registry, bundle_hashes, is_registry
from . import evaluate
from .evaluate import _ci, _num

FORMAT = "distillguard.comparison/1"
_FPR = 0.01      # the fixed-FPR operating point compared


@dataclass
class CompareConfig:
    tolerance: float = 0.01           # largest recall drop (absolute, 0.01 = 1 point) per class
    fpr_tolerance: float | None = None  # largest human-FPR rise; None: same as tolerance
    n_boot: int = 200
    seed: int = 0

    def __post_init__(self):
        for name in ("tolerance", "fpr_tolerance"):
            v = getattr(self, name)
            # 1.0 lets any shortfall through (a rate cannot fall by more): the gate off
            if v is not None and not (0.0 <= v <= 1.0):
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")
        if self.n_boot < 0:
            raise ValueError(f"--n-boot must be >= 0, got {self.n_boot}")

    @property
    def fpr_tol(self) -> float:
        return self.tolerance if self.fpr_tolerance is None else self.fpr_tolerance


# --------------------------------------------------------------------------- scoring


@dataclass
class _Scored:
    """One bundle's view of the holdout: its sessions, labels, scores and served actions."""
    y: np.ndarray         # (n,) class index
    pred: np.ndarray      # (n,) argmax class
    probs: np.ndarray     # (n, 3)
    flagged: np.ndarray   # (n,) bool: served action != ALLOW
    accounts: np.ndarray  # (n,) str
    families: np.ndarray  # (n,) str, '' unknown
    score: np.ndarray | None = None   # (n,) session_score (what recall ranks by)


def _score(bundle, prepared) -> _Scored:
    from ..serving.bundle import session_verdicts

    if tuple(bundle.labels) != LABELS:
        raise ValueError(f"model bundle {bundle.path}: labels {bundle.labels} differ from {LABELS}")
    sv = session_verdicts(bundle, prepared.sr)
    return _Scored(y=prepared.y, pred=sv.probs.argmax(axis=1), probs=sv.probs.astype(np.float64),
                   flagged=sv.worst_action > 0, accounts=prepared.accounts,
                   families=prepared.families, score=sv.session_score)


def resolve_bundle(path: str | os.PathLike) -> tuple[Path, str | None]:
    """A bundle directory, or a registry (its `current` version): (bundle path, registry version)."""
    path = Path(path)
    if is_registry(path):
        reg = Registry(path)
        return reg.current_path(), reg.current()
    return path, None


# --------------------------------------------------------------------------- metrics


def _share(w: np.ndarray, mask: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Weighted share of `hit` among the sessions in `mask`, per row of w [B, n]; NaN if none."""
    den = w[:, mask].sum(axis=1)
    num = (w[:, mask] * hit[mask]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


def _stats(w: np.ndarray, s: _Scored, family_names: list[str]) -> dict[str, np.ndarray]:
    """Every compared figure for session weights w [B, n] -> name -> [B]."""
    present = np.bincount(s.y, minlength=3) > 0
    score = s.probs[:, evaluate.DISTILL] if s.score is None else s.score
    m = evaluate._metrics_from_weights(w, s.y, s.pred, score, present, (_FPR,))
    out: dict[str, np.ndarray] = {"human_fpr": _share(w, s.y == evaluate.HUMAN, s.flagged)}
    for k, name in enumerate(LABELS):
        out[f"recall.{name}"] = m["recall"][:, k]
    for k, name in enumerate(LABELS):
        out[f"precision.{name}"] = m["precision"][:, k]
    out["macro_f1"] = m["macro_f1"]
    out["recall_at_1pct_human_fpr"] = m[f"recall@{_FPR}"]
    out["acted_on.benign_automation"] = _share(w, s.y == evaluate.BENIGN, s.flagged)
    out["acted_on.distillation_harvesting"] = _share(w, s.y == evaluate.DISTILL, s.flagged)
    out["acted_on_precision"] = _share(w, s.flagged, s.y == evaluate.DISTILL)
    for f in family_names:
        out[f"family_acted_on.{f}"] = _share(w, s.families == f, s.flagged)
    return out


METRIC_DOC = {
    "human_fpr": ("lower", "share of human sessions whose served action is not ALLOW"),
    "recall": ("higher", "share of the class's sessions whose argmax label is that class"),
    "precision": ("higher", "share of sessions labelled the class (argmax) that are of it"),
    "macro_f1": ("higher", "mean F1 of the argmax label over the classes present"),
    "recall_at_1pct_human_fpr": ("higher", "distillation sessions above the holdout humans' 99th-percentile "
                                           "p_distillation_harvesting"),
    "acted_on": ("", "share of the class's sessions whose served action is not ALLOW"),
    "acted_on_precision": ("higher", "share of acted-on sessions that are distillation_harvesting"),
    "family_acted_on": ("", "share of the family's sessions whose served action is not ALLOW"),
}


def _direction(name: str) -> str:
    if name == "acted_on.distillation_harvesting":
        return "higher"
    if name == "acted_on.benign_automation":
        return "lower"
    return METRIC_DOC[name.split(".", 1)[0]][0]


def paired_metrics(champ: _Scored, chall: _Scored, n_boot: int, seed: int) -> dict[str, dict]:
    """name -> {champion, challenger, difference (challenger - champion), each with ci95}."""
    fams = sorted((set(champ.families.tolist()) | set(chall.families.tolist())) - {""})
    acc_names = np.unique(np.concatenate([champ.accounts, chall.accounts]))
    inv_a = np.searchsorted(acc_names, champ.accounts)
    inv_b = np.searchsorted(acc_names, chall.accounts)
    pa = {k: v[0] for k, v in _stats(np.ones((1, len(champ.y))), champ, fams).items()}
    pb = {k: v[0] for k, v in _stats(np.ones((1, len(chall.y))), chall, fams).items()}
    boot_a: dict[str, list] = {k: [] for k in pa}
    boot_b: dict[str, list] = {k: [] for k in pa}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        n_acc = acc_names.size
        chunk = max(1, evaluate._BOOT_CHUNK_ELEMENTS // max(len(champ.y), len(chall.y), n_acc))
        for start in range(0, n_boot, chunk):
            b = min(chunk, n_boot - start)
            # One draw of accounts per resample, applied to both bundles: the pairing.
            counts = evaluate._account_draw_weights(rng.integers(0, n_acc, size=(b, n_acc)), n_acc)
            for k, v in _stats(counts[:, inv_a], champ, fams).items():
                boot_a[k].append(v)
            for k, v in _stats(counts[:, inv_b], chall, fams).items():
                boot_b[k].append(v)
    out = {}
    for k in pa:
        ba = np.concatenate(boot_a[k]) if boot_a[k] else None
        bb = np.concatenate(boot_b[k]) if boot_b[k] else None
        out[k] = {
            "better": _direction(k),
            "champion": _num(pa[k]), "champion_ci95": _ci(ba),
            "challenger": _num(pb[k]), "challenger_ci95": _ci(bb),
            "difference": _num(pb[k] - pa[k]),
            "difference_ci95": _ci(bb - ba) if ba is not None else None,
        }
    return out


# --------------------------------------------------------------------------- verdict


def judge(metrics: dict, tolerance: float, fpr_tolerance: float | None = None) -> dict:
    """Criteria, verdict, failing and improved lists from `paired_metrics` output.

    Each criterion's `worse_by` is how much worse the challenger is (positive: worse):
    human FPR rise, or a class's recall drop. Beyond its limit it fails; better by more
    than the limit it counts as improved; in between it is within tolerance. Used by
    `compare` and again by `promote --tolerance` on a stored comparison."""
    fpr_tol = tolerance if fpr_tolerance is None else fpr_tolerance
    criteria = []
    specs = [("human_fpr", "human_fpr", +1, fpr_tol)] + [
        (f"recall.{c}", f"recall.{c}", -1, tolerance) for c in LABELS]
    for name, key, sign, limit in specs:
        m = metrics[key]
        c = {"name": name, "champion": m["champion"], "challenger": m["challenger"],
             "difference": m["difference"], "difference_ci95": m["difference_ci95"], "limit": limit}
        if m["champion"] is None or m["challenger"] is None:
            # No human sessions: the gate's main question cannot be answered -> fail.
            # A class absent from the holdout: nothing to compare, not checked.
            c["status"] = "unmeasurable" if name == "human_fpr" else "not_checked"
            c["worse_by"] = None
        else:
            worse = sign * (m["challenger"] - m["champion"])
            c["worse_by"] = worse
            # 1e-12: scores of two copies of one model may differ in the last bits
            c["status"] = "worse" if worse > limit + 1e-12 else ("improved" if worse < -limit - 1e-12 else "within")
        criteria.append(c)
    failing = [c for c in criteria if c["status"] in ("worse", "unmeasurable")]
    return {"verdict": "REJECT" if failing else "PROMOTE", "tolerance": tolerance, "fpr_tolerance": fpr_tol,
            "criteria": criteria, "failing": [describe(c) for c in failing],
            "improved": [describe(c) for c in criteria if c["status"] == "improved"],
            "not_checked": [c["name"] for c in criteria if c["status"] == "not_checked"]}


def describe(c: dict) -> str:
    """One criterion in words, with its numbers."""
    if c["status"] == "unmeasurable":
        return f"{c['name']}: cannot be measured on this holdout (no human sessions)"
    if c["status"] == "not_checked":
        return f"{c['name']}: class absent from the holdout, not checked"
    ci = c["difference_ci95"]
    ci_txt = f", 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
    how = {"worse": f"worse by {c['worse_by']:.4f} > tolerance {c['limit']:.4f}",
           "improved": f"better by {-c['worse_by']:.4f}",
           "within": f"within tolerance {c['limit']:.4f}"}[c["status"]]
    return (f"{c['name']}: champion {c['champion']:.4f}, challenger {c['challenger']:.4f} "
            f"(difference {c['difference']:+.4f}{ci_txt}); {how}")


# --------------------------------------------------------------------------- fingerprints


def holdout_fingerprint(events: str | os.PathLike, labels: str | os.PathLike) -> dict:
    """sha256 over the holdout's files, computed as `train` computes its data fingerprint
    (`training_data.sha256` in a bundle's metadata), so the two can be matched."""
    from .train import file_sha256, input_files

    files = input_files(events) + input_files(labels)
    return {"events": str(events), "labels": str(labels), "sha256": file_sha256(files), "files": len(files)}


def _trained_on(meta: dict, holdout_sha256: str) -> bool:
    """True when the holdout is exactly this bundle's training data."""
    return (meta.get("training_data") or {}).get("sha256") == holdout_sha256


# --------------------------------------------------------------------------- the run


def compare_bundles(model, baseline, events_path, labels_path, report_dir, cfg: CompareConfig | None = None,
                    on_error: str = "fail", rejects_path=None) -> dict:
    """Score the holdout with both bundles, write DIR/comparison.json and .md; return the json."""
    from ..serving.bundle import load_bundle
    from .data import prepare

    cfg = cfg or CompareConfig()
    report_dir = Path(report_dir)
    chall_path, chall_reg = resolve_bundle(model)
    champ_path, champ_reg = resolve_bundle(baseline)
    chall, champ = load_bundle(chall_path), load_bundle(champ_path)
    events, rejects = load_events_or_skip(events_path, on_error, rejects_path or report_dir / "rejects.jsonl",
                                          join=join_completions)
    labels = read_labels(labels_path)
    warnings: list[str] = []
    prepared = {}
    for b in (champ, chall):
        if b.gap_s not in prepared:
            p = prepare(events, labels, b.gap_s)
            if len(p.y) == 0:
                raise SchemaError(f"{labels_path}: no label matches any session of {events_path} "
                                         f"(session gap {b.gap_s:g} s)")
            prepared[b.gap_s] = p
    if champ.gap_s != chall.gap_s:
        warnings.append(f"the bundles cut sessions differently (champion gap {champ.gap_s:g} s, challenger "
                        f"{chall.gap_s:g} s): each is scored on its own sessions, as in serving; the bootstrap "
                        "stays paired over accounts, but session counts differ")
    sa, sb = _score(champ, prepared[champ.gap_s]), _score(chall, prepared[chall.gap_s])
    metrics = paired_metrics(sa, sb, cfg.n_boot, cfg.seed)
    verdict = judge(metrics, cfg.tolerance, cfg.fpr_tol)
    holdout = holdout_fingerprint(events_path, labels_path)
    for who, b in (("challenger", chall), ("champion", champ)):
        if _trained_on(b.metadata, holdout["sha256"]):
            warnings.append(f"the holdout is the {who}'s training data (same file hash as its metadata's "
                            "training_data): its figures are optimistic; compare on a frozen holdout whose "
                            "accounts no candidate was trained on")
    n_human = int((sa.y == evaluate.HUMAN).sum())
    if 0 < n_human < 1000:
        warnings.append(f"only {n_human} human sessions: a human-FPR step is {1 / n_human:.4f}, coarse next to a "
                        f"tolerance of {cfg.fpr_tol:g}")

    def bundle_entry(b, path, reg_version):
        return {"bundle": str(path), "version": b.version, "registry_version": reg_version,
                "sha256": bundle_hashes(path), "session_gap_s": b.gap_s,
                "created_at": b.metadata.get("created_at"),
                "training_data_sha256": (b.metadata.get("training_data") or {}).get("sha256")}

    def sizes(s: _Scored) -> dict:
        return {"sessions": int(len(s.y)), "accounts": int(np.unique(s.accounts).size),
                "sessions_per_class": {n: int((s.y == k).sum()) for k, n in enumerate(LABELS)},
                "accounts_per_class": {n: int(np.unique(s.accounts[s.y == k]).size) for k, n in enumerate(LABELS)}}

    result: dict[str, Any] = {
        "format": FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "champion": bundle_entry(champ, champ_path, champ_reg),
        "challenger": bundle_entry(chall, chall_path, chall_reg),
        "holdout": {**holdout,
                    "accounts": int(np.unique(np.concatenate([sa.accounts, sb.accounts])).size),
                    "skipped_rows": rejects.count if rejects is not None else 0},
        "set_sizes": {"champion": sizes(sa), "challenger": sizes(sb)},
        "config": asdict(cfg),
        "bootstrap": {"unit": "account", "paired": True, "n_boot": cfg.n_boot, "seed": cfg.seed},
        "metrics": metrics,
        **verdict,
        "warnings": warnings,
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    # best_effort_dir: reports never failed on a filesystem that cannot sync directories.
    publish_atomically(report_dir / "comparison.json", lambda tmp: tmp.write_text(text), best_effort_dir=True)
    publish_atomically(report_dir / "comparison.md", lambda tmp: tmp.write_text(markdown(result)),
                       best_effort_dir=True)
    return result


def load_comparison(path: str | os.PathLike) -> dict:
    """A comparison.json (or the directory holding one), checked for its format."""
    path = Path(path)
    if path.is_dir():
        path = path / "comparison.json"
    try:
        comp = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such comparison; write one with `distillguard evaluate compare --model NEW "
                         f"--baseline CURRENT --events E --labels L --report DIR`") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(comp, dict) or comp.get("format") != FORMAT:
        fmt = comp.get("format") if isinstance(comp, dict) else None
        raise ValueError(f"{path}: not a distillguard comparison (format {fmt!r}, expected {FORMAT!r})")
    missing = [k for k in ("champion", "challenger", "metrics", "verdict", "failing", "improved", "tolerance",
                           "fpr_tolerance", "holdout") if k not in comp]
    missing += [f"{who}.sha256" for who in ("champion", "challenger")
                if not isinstance(comp.get(who), dict) or not isinstance(comp[who].get("sha256"), dict)]
    if missing:
        raise ValueError(f"{path}: comparison lacks {', '.join(missing)}")
    return comp


class StaleComparison(ValueError):
    """A comparison of another challenger or another champion than the ones at hand."""


def check_comparison(comp: dict, challenger: str | os.PathLike, champion: str | os.PathLike | None,
                     source: str = "comparison") -> None:
    """Refuse a comparison that is not of exactly this challenger against this champion
    (content hashes of model.onnx and metadata.json), naming what differs."""
    problems = []
    for who, path in (("challenger", challenger), ("champion", champion)):
        if path is None:
            continue
        have = bundle_hashes(path)
        was = comp[who]["sha256"]
        for f in ("model.onnx", "metadata.json"):
            if was.get(f) != have[f]:
                problems.append(f"its {who} {f} has sha256 {str(was.get(f))[:12]}, but {path}/{f} has {have[f][:12]}")
    if problems:
        raise StaleComparison(f"{source} is stale: it compared {comp['challenger']['version']} against "
                              f"{comp['champion']['version']}, not this pair ({'; '.join(problems)}); "
                              "rerun `distillguard evaluate compare --model NEW --baseline REG ...`")


def summary(comp: dict, path: str | None = None) -> dict:
    """What the registry history keeps of a comparison."""
    out = {"verdict": comp["verdict"], "failing": comp["failing"], "improved": comp["improved"],
           "tolerance": comp["tolerance"], "fpr_tolerance": comp.get("fpr_tolerance"),
           "holdout_sha256": comp["holdout"]["sha256"]}
    if path is not None:
        out["path"] = str(path)
        out["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------- report


def _fmt(v, ci=None, signed=False) -> str:
    if v is None:
        return "—"
    f = "{:+.4f}" if signed else "{:.4f}"
    s = f.format(v)
    if ci:
        s += f" [{f.format(ci[0])}, {f.format(ci[1])}]"
    return s


def markdown(c: dict) -> str:
    ch, cl = c["champion"], c["challenger"]
    sz = c["set_sizes"]
    lines = [
        f"# Champion vs challenger: **{c['verdict']}**", "",
        f"- champion: `{ch['version']}` ({ch['bundle']}{', registry ' + ch['registry_version'] if ch['registry_version'] else ''})",
        f"- challenger: `{cl['version']}` ({cl['bundle']})",
        f"- holdout: {c['holdout']['events']} + {c['holdout']['labels']} (sha256 {c['holdout']['sha256'][:16]}…, "
        f"{c['holdout']['accounts']} accounts)",
        f"- tolerance: recall drop ≤ {c['tolerance']:g} per class, human-FPR rise ≤ {c['fpr_tolerance']:g} "
        "(absolute, on point estimates)",
        f"- brackets: 95% paired bootstrap over accounts ({c['bootstrap']['n_boot']} resamples, seed "
        f"{c['bootstrap']['seed']}); the difference is challenger − champion", "",
    ]
    if c["failing"]:
        lines += ["## Failing criteria", ""] + [f"- {f}" for f in c["failing"]] + [""]
    if c["improved"]:
        lines += ["## Improved criteria", ""] + [f"- {f}" for f in c["improved"]] + [""]
    lines += ["## Criteria", "", "| criterion | champion | challenger | difference [95% CI] | limit | status |",
              "| --- | ---: | ---: | --- | ---: | --- |"]
    for k in c["criteria"]:
        lines.append(f"| {k['name']} | {_fmt(k['champion'])} | {_fmt(k['challenger'])} | "
                     f"{_fmt(k['difference'], k['difference_ci95'], True)} | {k['limit']:g} | {k['status']} |")
    lines += ["", "## All figures", "",
              "| figure | better | champion [95% CI] | challenger [95% CI] | difference [95% CI] |",
              "| --- | --- | --- | --- | --- |"]
    for name, m in c["metrics"].items():
        lines.append(f"| {name} | {m['better'] or '—'} | {_fmt(m['champion'], m['champion_ci95'])} | "
                     f"{_fmt(m['challenger'], m['challenger_ci95'])} | "
                     f"{_fmt(m['difference'], m['difference_ci95'], True)} |")
    lines += ["", "Definitions: " + "; ".join(f"*{k}*: {d}" for k, (_, d) in METRIC_DOC.items()) + ".", "",
              "## Set sizes", "", "| class | champion sessions (accounts) | challenger sessions (accounts) |",
              "| --- | ---: | ---: |"]
    for n in LABELS:
        lines.append(f"| {n} | {sz['champion']['sessions_per_class'][n]} ({sz['champion']['accounts_per_class'][n]}) | "
                     f"{sz['challenger']['sessions_per_class'][n]} ({sz['challenger']['accounts_per_class'][n]}) |")
    lines.append(f"| **total** | {sz['champion']['sessions']} ({sz['champion']['accounts']}) | "
                 f"{sz['challenger']['sessions']} ({sz['challenger']['accounts']}) |")
    if c["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in c["warnings"]]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- promotion


class PromotionRefused(Exception):
    """The gate said no (or could not say yes); `failing` lists the reasons."""

    def __init__(self, message: str, failing: list[str] | None = None):
        super().__init__(message)
        self.failing = failing or []


def promote(registry, bundle, *, comparison=None, events=None, labels=None, tolerance: float | None = None,
            fpr_tolerance: float | None = None, n_boot: int = 200, force: bool = False, note: str | None = None,
            on_error: str = "fail") -> dict:
    """Make `bundle` the registry's current version, behind the champion-vs-challenger gate.

    - an empty registry (no current yet): no gate;
    - `comparison` (a comparison.json or its directory): it must compare exactly this
      bundle with the registry's current version (content hashes), else StaleComparison;
    - `events` + `labels` instead: the comparison is computed now, against the current
      version, into REG/comparisons/<time>-<sha8>/;
    - the verdict must be PROMOTE - re-judged from the stored point differences when
      `tolerance` or `fpr_tolerance` is given (the other one defaulting to the
      comparison's) - else PromotionRefused naming the failing criteria, unless `force`
      (recorded as action "force", forced=true).

    The identity check, the add and the pointer swap run under the registry lock, so a
    promotion that raced another one is refused as stale rather than applied on top.
    Returns {"action": "promote"|"force"|"unchanged", "version", "entry", "comparison"}."""
    from ..serving.registry import Registry

    reg = registry if isinstance(registry, Registry) else Registry(registry)
    bundle = Path(bundle)
    rejudge = tolerance is not None or fpr_tolerance is not None
    want = bundle_hashes(bundle)["bundle"]
    cur = reg.current()
    if cur is not None and bundle_hashes(reg.path_of(cur))["bundle"] == want:
        return {"action": "unchanged", "version": cur, "entry": None, "comparison": None}

    comp, comp_path = None, None
    if cur is not None:
        if comparison is not None:
            comp_path = Path(comparison)
            comp_path = comp_path / "comparison.json" if comp_path.is_dir() else comp_path
            comp = load_comparison(comp_path)
        elif events is not None and labels is not None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            out = reg.root / "comparisons" / f"{stamp}-{want[:8]}"
            cfg = CompareConfig(tolerance=0.01 if tolerance is None else tolerance, fpr_tolerance=fpr_tolerance,
                                n_boot=n_boot)
            comp = compare_bundles(bundle, reg.path_of(cur), events, labels, out, cfg, on_error=on_error)
            comp_path = out / "comparison.json"
            rejudge = False
        elif not force:
            raise PromotionRefused(
                f"{reg.root} already serves {cur}: promoting needs a comparison against it - give --comparison "
                f"DIR/comparison.json (from `distillguard evaluate compare --model {bundle} "
                f"--baseline {reg.root} ...`) or "
                "--events E --labels L, or --force to skip the gate (recorded in history.jsonl)")

    with reg.lock():
        now = reg.current()
        gate = None
        if now is not None and comp is not None:
            check_comparison(comp, bundle, reg.path_of(now), source=str(comp_path))
            if rejudge:
                tol = comp["tolerance"] if tolerance is None else tolerance
                fpr = fpr_tolerance if fpr_tolerance is not None else (
                    tolerance if tolerance is not None else comp["fpr_tolerance"])
                CompareConfig(tolerance=tol, fpr_tolerance=fpr)     # range checks
                gate = judge(comp["metrics"], tol, fpr)
            else:
                gate = comp
        elif now is not None and comp is None and cur is None:
            # The registry was empty when we looked and someone promoted meanwhile.
            raise StaleComparison(f"{reg.root} got a current version ({now}) while this promotion was "
                                  "being prepared; compare against it and try again")
        passed = now is None or (gate is not None and gate["verdict"] == "PROMOTE")
        if not passed and not force:
            failing = gate["failing"] if gate is not None else []
            raise PromotionRefused(
                f"challenger {bundle} refused against current {now} (tolerance {gate['tolerance']:g}, human-FPR "
                f"tolerance {gate['fpr_tolerance']:g}):\n  " + "\n  ".join(failing)
                + (f"\nthe comparison: {comp_path.with_suffix('.md')}" if comp_path else "")
                + "\nrerun with --force to promote anyway (recorded in history.jsonl)", failing)
        summ = None
        if comp is not None:
            summ = summary(comp, comp_path)
            if rejudge:
                summ.update(verdict=gate["verdict"], failing=gate["failing"], improved=gate["improved"],
                            tolerance=gate["tolerance"], fpr_tolerance=gate["fpr_tolerance"])
        name = reg.add(bundle)
        action = "promote" if passed else "force"
        entry = reg.set_current(name, action=action, comparison=summ, forced=not passed,
                                note=note or ("first version" if now is None else None))
    return {"action": action, "version": name, "entry": entry, "comparison": summ}
