"""Field-shift audit (issue 13, deliverable 3): `evaluate shift`.

Has the model learned behaviour, or marginals of our simulator? Each `Shift` moves ONE input
field (or derived feature family) to plausible real values in HUMAN traffic alone — humans who
set max_tokens, on SDKs and code models, behind CGNAT, on accounts made today, with long
pastes — and the audit measures how human flagging and distillation recall move. Benign and
harvesting traffic are untouched, so every change in the figures is the humans' shift.

For the base set and each shift, over human sessions (95% intervals resample accounts):
  1. flag rate: share whose final action under the bundle's own policy (`Bundle.decide`:
     thresholds, benign cap, young-account rule; what batch scoring writes) is not ALLOW;
  2. share with distillation as top class;
  3. share above the thresholds fixed on the BASE set's human sessions at 1% / 0.1% FPR;
  4. distillation recall at a threshold re-fixed at 1% FPR on the shifted humans (a shift that
     inflates human scores costs recall at a fixed FPR).
The rule (`violations`): a single-field shift fails when it raises the human flag rate above
2x the base rate and above 1% absolute.

Sessions are scored per account (features are per session, no population signal enters
them), so the non-human sessions are scored once on the base set and reused for every shift;
each shift rescores only the human events.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..model.files import publish_text
from ..model.schema import LABELS

HUMAN, DISTILL = LABELS.index("human"), LABELS.index("distillation_harvesting")
HOUR, DAY = 3600.0, 86400.0
FPR_KEYS = ("1%", "0.1%")


@dataclass(frozen=True)
class Shift:
    """One field moved in human rows. `apply(events, human, rng)` -> a new frame: `human` is a
    bool array over the rows of `events` (canonical columns, epoch-second times; see
    `canonical_frame`); only human rows change, and only `columns` (the field and what it
    implies), or human rows are dropped (`drops_rows`). Never mutates its input."""
    name: str
    field: str                      # the input field / feature family it moves
    describe: str                   # which real humans this is
    apply: Callable[[pd.DataFrame, np.ndarray, np.random.Generator], pd.DataFrame]
    columns: tuple[str, ...] = ()   # event columns it may change in human rows
    drops_rows: bool = False        # keeps a subset of human rows instead of changing values


# ---------------------------------------------------------------------------- shift helpers

def _per_account(events: pd.DataFrame, human: np.ndarray, draw: Callable[[int], np.ndarray]) -> np.ndarray:
    """One drawn value per human account, broadcast to that account's human rows."""
    uniq, inv = np.unique(events["account_id"].to_numpy()[human], return_inverse=True)
    return np.asarray(draw(len(uniq)))[inv]


def _first_ts(events: pd.DataFrame, human: np.ndarray) -> np.ndarray:
    """Each human row's account's first event time."""
    ts = events["ts"].to_numpy(dtype=np.float64)[human]
    first = pd.Series(ts).groupby(events["account_id"].to_numpy()[human]).transform("min")
    return first.to_numpy()


def _set(events: pd.DataFrame, human: np.ndarray, col: str, values) -> pd.DataFrame:
    out = events.copy()
    if col not in out.columns:
        raise ValueError(f"shift needs column '{col}' (canonical_frame adds every optional column)")
    out.loc[human, col] = values
    return out


def _cap_completion(out: pd.DataFrame, human: np.ndarray) -> None:
    """Completions of human rows cut to their max_tokens where set (the server's cap)."""
    mt = out["max_tokens"].to_numpy(dtype=np.float64, na_value=np.nan)
    ct = out["completion_tokens"].to_numpy(dtype=np.int64)
    capped = np.where(np.isnan(mt), ct, np.minimum(ct, np.nan_to_num(mt, nan=0).astype(np.int64)))
    out.loc[human, "completion_tokens"] = capped[human]


def _max_tokens(values: tuple[int, ...]):
    def apply(events, human, rng):
        mt = _per_account(events, human, lambda n: rng.choice(values, n))
        out = _set(events, human, "max_tokens", mt)
        _cap_completion(out, human)
        return out
    return apply


def _constant(col: str, value):
    def apply(events, human, rng):
        return _set(events, human, col, value)
    return apply


def _per_account_choice(col: str, values: tuple):
    def apply(events, human, rng):
        return _set(events, human, col, _per_account(events, human, lambda n: np.asarray(values, object)[
            rng.integers(0, len(values), n)]))
    return apply


def _status_429(share: float):
    def apply(events, human, rng):
        out = events.copy()
        hit = human.copy()
        hit[human] = rng.random(int(human.sum())) < share
        out.loc[hit, "status"] = 429
        out.loc[hit, "completion_tokens"] = 0
        return out
    return apply


def _created_before_first(lo_s: float, hi_s: float):
    def apply(events, human, rng):
        before = _per_account(events, human, lambda n: rng.uniform(lo_s, hi_s, n))
        return _set(events, human, "account_created_at", _first_ts(events, human) - before)
    return apply


def _scale(col: str, factor: int, cap_at_max_tokens: bool = False):
    def apply(events, human, rng):
        out = _set(events, human, col, events[col].to_numpy(dtype=np.int64)[human] * factor)
        if cap_at_max_tokens:
            _cap_completion(out, human)
        return out
    return apply


def _time_shift(hours: float):
    def apply(events, human, rng):
        # Every event and the creation time of a human account move by the same constant:
        # gaps, sessions and account age at each event stay as they were; only the hour of
        # day changes. Events may land up to `hours` past the data's window end.
        out = _set(events, human, "ts", events["ts"].to_numpy(dtype=np.float64)[human] + hours * HOUR)
        out.loc[human, "account_created_at"] = events["account_created_at"].to_numpy(
            dtype=np.float64, na_value=np.nan)[human] + hours * HOUR
        return out
    return apply


def _first_events(k: int):
    def apply(events, human, rng):
        acc, ts = events["account_id"].to_numpy(), events["ts"].to_numpy(dtype=np.float64)
        order = np.lexsort((np.arange(len(events)), ts, acc))     # by account, then time, then row
        rank = np.empty(len(events), dtype=np.int64)
        rank[order] = pd.Series(acc[order]).groupby(acc[order]).cumcount().to_numpy()
        return events[~human | (rank < k)].copy()
    return apply


# A "summarise this" request as the gateway would sign it; many real users share this frame.
POPULAR_FRAME_TEXT = ("Summarise the following article in three bullet points.\n\n"
                      "The city council voted on Tuesday to extend the night bus network to the "
                      "northern suburbs, citing rising demand from shift workers.")


def _popular_frame(share: float):
    def apply(events, human, rng):
        from ..model.frames import frame_signature

        out = events.copy()
        hit = human.copy()
        hit[human] = rng.random(int(human.sum())) < share
        out.loc[hit, "frame_signature"] = frame_signature(POPULAR_FRAME_TEXT)
        out.loc[hit, "elicits_reasoning"] = False   # the frame asks for a summary, not steps
        return out
    return apply


CGNAT = ("100.64.0.0/24", "100.64.17.0/24", "100.72.3.0/24", "100.101.240.0/24")
SDK_FINGERPRINTS = ("openai-python/1.51.0", "anthropic-sdk-python/0.39.0", "python-httpx/0.27.2",
                    "openai-node/4.67.0", "langchain-openai/0.2.1 python-httpx/0.27.2")

SHIFTS: tuple[Shift, ...] = (
    Shift("max_tokens_set", "max_tokens", "humans whose client sets max_tokens (per account 1024/2048/4096; "
          "completions cut to it)", _max_tokens((1024, 2048, 4096)), ("max_tokens", "completion_tokens")),
    Shift("max_tokens_high", "max_tokens", "humans whose client sets a high max_tokens (16384/32768)",
          _max_tokens((16384, 32768)), ("max_tokens", "completion_tokens")),
    Shift("model_code", "model", "humans on a code model", _constant("model", "frontier-code"), ("model",)),
    Shift("model_unseen", "model", "humans on a model name never seen in training",
          _constant("model", "acme-chat-9b-preview"), ("model",)),
    Shift("fingerprint_sdk", "client_fingerprint", "humans calling through an SDK / HTTP library "
          "(per account: openai-python, anthropic-sdk, httpx, ...)",
          _per_account_choice("client_fingerprint", SDK_FINGERPRINTS), ("client_fingerprint",)),
    Shift("fingerprint_missing", "client_fingerprint", "humans behind a gateway that sends no fingerprint",
          _constant("client_fingerprint", None), ("client_fingerprint",)),
    Shift("status_429", "status", "humans rate-limited: 5% of requests answered 429 (no completion)",
          _status_429(0.05), ("status", "completion_tokens")),
    Shift("age_unknown", "account_created_at", "humans on accounts whose creation time the gateway does not know",
          _constant("account_created_at", np.nan), ("account_created_at",)),
    Shift("age_under_day", "account_created_at", "humans on accounts made under a day before their first request",
          _created_before_first(60.0, DAY), ("account_created_at",)),
    Shift("age_under_week", "account_created_at", "humans on accounts made 1-7 days before their first request",
          _created_before_first(DAY, 7 * DAY), ("account_created_at",)),
    Shift("ip_cgnat", "ip_prefix", "humans behind carrier-grade NAT: a few shared 100.64.0.0/10 prefixes",
          _per_account_choice("ip_prefix", CGNAT), ("ip_prefix",)),
    Shift("prompt_x4", "prompt_tokens", "humans pasting long documents (prompt tokens x4)",
          _scale("prompt_tokens", 4), ("prompt_tokens",)),
    Shift("output_long", "completion_tokens", "humans asking for long outputs (completion tokens x4, within "
          "max_tokens where set)", _scale("completion_tokens", 4, cap_at_max_tokens=True), ("completion_tokens",)),
    Shift("night_shift", "ts (time of day)", "night users: each human account's events +12 h (gaps and account "
          "age kept; events may pass the window end)", _time_shift(12.0), ("ts", "account_created_at")),
    Shift("single_request", "session length", "one-request visitors: each human account's first event only",
          _first_events(1), drops_rows=True),
    Shift("first_3_events", "session length", "short visits: each human account's first 3 events only",
          _first_events(3), drops_rows=True),
    Shift("popular_frame", "frame_signature", "humans reusing a popular 'summarise this' frame on 30% of requests",
          _popular_frame(0.3), ("frame_signature", "elicits_reasoning")),
)
SHIFT_NAMES = tuple(s.name for s in SHIFTS)


def shifts_named(names) -> tuple[Shift, ...]:
    by = {s.name: s for s in SHIFTS}
    unknown = [n for n in names if n not in by]
    if unknown:
        raise ValueError(f"unknown shifts {unknown}; known: {', '.join(by)}")
    return tuple(by[n] for n in names)


# ---------------------------------------------------------------------------- data

def canonical_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Events in the event-column contract -> the canonical columns as a pandas frame (epoch
    seconds, nullable ints, every optional column present, prompt text hashed and dropped),
    the form the shifts edit. Bad input is `normalise`'s clear error."""
    import pyarrow as pa

    from ..model.schema import normalise

    return frame_of_table(normalise(pa.Table.from_pandas(events, preserve_index=False), source="events"))


def frame_of_table(table) -> pd.DataFrame:
    """A canonical pyarrow table (`model.readers.load_events`, `normalise`) -> the pandas
    frame the shifts edit: nullable ints and booleans stay ints and booleans (not NaN floats)."""
    import pyarrow as pa

    if "_row" in table.column_names:
        table = table.drop_columns(["_row"])
    mapper = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=mapper.get)


def _prepare(frame: pd.DataFrame, labels_tbl, gap_s: float):
    import pyarrow as pa

    from ..model.schema import normalise
    from .data import prepare

    table = normalise(pa.Table.from_pandas(frame, preserve_index=False), source="shifted events")
    return prepare(table, labels_tbl, gap_s)


def _score(bundle, frame: pd.DataFrame, labels_tbl):
    """-> (y, accounts, probs (n, C), actions, session_score, peak session_score) per
    labelled session; the action is the harshest the served policy gave at any request
    (what the person met), session_score the last event's (what recall ranks by)."""
    from ..serving.bundle import session_verdicts
    from ..serving.policy import Action

    p = _prepare(frame, labels_tbl, bundle.gap_s)
    if len(p.y) == 0:
        e = np.zeros(0)
        return p.y, p.accounts, np.zeros((0, len(bundle.labels)), np.float32), np.zeros(0, object), e, e
    sv = session_verdicts(bundle, p.sr)
    acts = np.array([a.value for a in Action], dtype=object)[sv.worst_action]
    return p.y, p.accounts, sv.probs, acts, sv.session_score, sv.peak_score


def _ci_share(values: np.ndarray, accounts: np.ndarray, n_boot: int, rng) -> dict:
    from .holdout import _share_ci

    _, inv = np.unique(accounts, return_inverse=True)
    v = values.astype(np.float64)
    return {"value": float(v.mean()) if len(v) else None, "ci95": _share_ci(v, inv, n_boot, rng)}


def _human_figures(probs, acts, accounts, base_thr: dict, n_boot: int, rng, throttle_at: float,
                   score, peak) -> dict:
    flagged = acts != "ALLOW"
    out = {"human_sessions": int(len(acts)), "human_accounts": int(len(np.unique(accounts))),
           "flag_rate": _ci_share(flagged, accounts, n_boot, rng),
           # Flagged below the normal THROTTLE bar: only the young-account rule acted.
           "flagged_by_young_account_rule_only": int((flagged & (peak < throttle_at)).sum()),
           "top_class_distillation": _ci_share(probs.argmax(axis=1) == DISTILL, accounts, n_boot, rng),
           "actions": {a: int((acts == a).sum()) for a in ("ALLOW", "THROTTLE", "CHALLENGE", "DEGRADE", "BLOCK")}}
    for k in FPR_KEYS:
        t = base_thr[k]
        out[f"above_base_threshold_{k}"] = (None if t is None else
                                            _ci_share(score > t, accounts, n_boot, rng))
    return out


def _recall_refixed(y, probs, accounts, score) -> dict:
    from .evaluate import compute_metrics

    e = compute_metrics(y, probs, accounts, n_boot=0, scores=score)["recall_at_human_fpr"]["1%"]
    return {"threshold": e["threshold"], "recall": e["recall"], "achieved_human_fpr": e["achieved_human_fpr"]}


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return float(a / b)


# ---------------------------------------------------------------------------- main

def run_shift_audit(bundle_path, events: pd.DataFrame, labels: pd.DataFrame, out_dir=None,
                    shifts=SHIFTS, seed: int = 0, n_boot: int = 200, progress: bool = True) -> dict:
    """Score the base set and each shift of its human traffic with the bundle; -> the report
    (see module docstring), also written to out_dir (shift_audit.json/.md/.png) when given.
    labels: one row per account (`account_id`, `label`[, `family`]): shifts move whole
    human accounts, so labels by session would not say which rows are human."""
    import pyarrow as pa

    from ..serving.bundle import load_bundle

    t_start = time.perf_counter()
    for c in ("account_id", "label"):
        if c not in labels.columns:
            raise ValueError(f"labels need columns account_id and label (one row per account); missing '{c}'")
    bad = sorted(set(labels["label"].astype(str)) - set(LABELS))
    if bad:
        raise ValueError(f"labels: unknown label values {bad[:5]}; expected one of {', '.join(LABELS)}")
    bundle = load_bundle(bundle_path, threads=0)
    base = canonical_frame(events)
    lab = labels[[c for c in ("account_id", "label", "family") if c in labels.columns]].copy()
    lab["account_id"] = lab["account_id"].astype(str)
    human_accounts = set(lab.loc[lab["label"] == "human", "account_id"])
    human = base["account_id"].isin(human_accounts).to_numpy()
    if not human.any():
        raise ValueError("no event belongs to a human account: the audit shifts human traffic")
    lab_all = pa.Table.from_pandas(lab, preserve_index=False)
    lab_human = pa.Table.from_pandas(lab[lab["label"] == "human"], preserve_index=False)

    t0 = time.perf_counter()
    y, acc, probs, acts, score, peak = _score(bundle, base, lab_all)
    h = y == HUMAN
    if not (y == DISTILL).any():
        raise ValueError("the base set has no distillation session: recall cannot be measured")
    from .evaluate import compute_metrics

    m = compute_metrics(y, probs, acc, n_boot=0, scores=score)["recall_at_human_fpr"]
    base_thr = {k: m[k]["threshold"] for k in FPR_KEYS}
    rng = np.random.default_rng([seed, 0])
    throttle_at = float(bundle.policy.thresholds["throttle"])
    base_fig = _human_figures(probs[h], acts[h], acc[h], base_thr, n_boot, rng, throttle_at, score[h], peak[h])
    base_fig["distill_recall_1%_refixed"] = _recall_refixed(y, probs, acc, score)
    base_fig["seconds"] = round(time.perf_counter() - t0, 2)
    other = (y[~h], acc[~h], probs[~h], score[~h])
    sizes = {"events": int(len(base)), "human_events": int(human.sum()), "sessions": int(len(y)),
             "sessions_per_class": {n: int((y == i).sum()) for i, n in enumerate(LABELS)},
             "accounts": int(len(np.unique(acc)))}
    if progress:
        print(f"[shift] base: {sizes['sessions_per_class']} sessions; human flag rate "
              f"{base_fig['flag_rate']['value']:.4f}; {base_fig['seconds']} s", flush=True)

    results = {}
    for s in shifts:
        t0 = time.perf_counter()
        # Seeded by name: a shift's figures do not depend on which other shifts run.
        srng = zlib.crc32(s.name.encode())
        shifted = s.apply(base, human, np.random.default_rng([seed, 1, srng]))
        hum = shifted[shifted["account_id"].isin(human_accounts).to_numpy()]
        yh, acch, probsh, actsh, scoreh, peakh = _score(bundle, hum, lab_human)
        fig = _human_figures(probsh, actsh, acch, base_thr, n_boot, np.random.default_rng([seed, 2, srng]),
                             throttle_at, scoreh, peakh)
        fig["distill_recall_1%_refixed"] = _recall_refixed(
            np.concatenate([yh, other[0]]), np.concatenate([probsh, other[2]]), np.concatenate([acch, other[1]]),
            np.concatenate([scoreh, other[3]]))
        fig["flag_rate_x_base"] = _ratio(fig["flag_rate"]["value"], base_fig["flag_rate"]["value"])
        a1, b1 = fig["above_base_threshold_1%"], base_fig["above_base_threshold_1%"]
        fig["above_1%_x_base"] = _ratio(a1 and a1["value"], b1 and b1["value"])
        fig.update(field=s.field, describe=s.describe, human_events=int(len(hum)),
                   seconds=round(time.perf_counter() - t0, 2))
        results[s.name] = fig
        if progress:
            print(f"[shift] {s.name}: flag rate {fig['flag_rate']['value']:.4f} "
                  f"({_fmt_x(fig['flag_rate_x_base'])} base), recall@1% re-fixed "
                  f"{_fmt(fig['distill_recall_1%_refixed']['recall'])}; {fig['seconds']} s", flush=True)

    report = {
        "what": "field-shift audit: one field shifted in human traffic alone, scored by the bundle",
        "bundle": {"path": str(bundle_path), "version": bundle.version},
        "base_set": sizes, "seed": seed, "n_boot": n_boot,
        "base_thresholds": base_thr,
        "rule": {"factor": 2.0, "floor": 0.01,
                 "text": "a shift fails when the human flag rate exceeds 2x the base rate and 1% absolute"},
        "base": base_fig, "shifts": results,
    }
    report["violations"] = violations(report)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    if out_dir is not None:
        write_report(report, out_dir)
    return report


def violations(report: dict, factor: float = 2.0, floor: float = 0.01) -> list[str]:
    """Names of the shifts whose human flag rate exceeds `factor` x the base rate and `floor`
    absolute (issue 13: fails above 2x and above 1%)."""
    base = report["base"]["flag_rate"]["value"]
    return [name for name, r in report["shifts"].items()
            if r["flag_rate"]["value"] is not None
            and r["flag_rate"]["value"] > factor * base and r["flag_rate"]["value"] > floor]


def describe_violations(report: dict, factor: float = 2.0, floor: float = 0.01) -> list[str]:
    base = report["base"]["flag_rate"]["value"]
    return [f"{n}: human flag rate {base:.4f} -> {report['shifts'][n]['flag_rate']['value']:.4f} "
            f"({_fmt_x(report['shifts'][n]['flag_rate_x_base'])})" for n in violations(report, factor, floor)]


# ---------------------------------------------------------------------------- output

def _fmt(x, d: int = 3) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def _fmt_x(x) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _fmt_ci(e, d: int = 3) -> str:
    if e is None or e["value"] is None:
        return "–"
    ci = e["ci95"]
    return f"{e['value']:.{d}f}" + (f" [{ci[0]:.{d}f}, {ci[1]:.{d}f}]" if ci else "")


def markdown(report: dict) -> str:
    s, b = report["base_set"], report["base"]
    thr = report["base_thresholds"]
    viol = set(report["violations"])
    lines = [
        "# Field-shift audit", "",
        f"Bundle `{report['bundle']['version']}`. Base set: {s['sessions']} sessions "
        f"({s['sessions_per_class']['human']} human / {s['sessions_per_class']['benign_automation']} benign "
        f"automation / {s['sessions_per_class']['distillation_harvesting']} distillation), {s['accounts']} "
        f"accounts, {s['events']} events. Each row shifts ONE field in human traffic alone; benign and "
        "harvesting traffic are untouched.", "",
        "Flag rate = share of human sessions the bundle's policy (session_score thresholds, gates, benign cap, "
        "young-account rule when on) acts on at any request. @1% / @0.1% thr = share of human sessions whose "
        "last session_score is above the "
        f"thresholds fixed on the BASE humans at that FPR ({_fmt(thr['1%'], 4)} / {_fmt(thr['0.1%'], 4)}). "
        "Recall re-fixed = distillation recall at the threshold giving 1% FPR on the SHIFTED humans. "
        "Last column: flagged sessions whose highest session_score is under the THROTTLE bar, i.e. flagged "
        "by the policy's young-account rule alone. "
        f"95% intervals resample accounts ({report['n_boot']} draws). Violation: flag rate > "
        f"{report['rule']['factor']:g}x base and > {report['rule']['floor']:.0%} absolute.", "",
        "| shift | field | human sessions | flag rate [CI] | x base | top-class distill | @1% thr | @0.1% thr "
        "| distill recall @1% re-fixed | violation | flagged by young-account rule only |",
        "| --- | --- | ---: | --- | ---: | --- | --- | --- | ---: | --- | ---: |",
    ]

    def row(name, fld, r, x, v):
        return (f"| {name} | {fld} | {r['human_sessions']} | {_fmt_ci(r['flag_rate'])} | {x} | "
                f"{_fmt_ci(r['top_class_distillation'])} | {_fmt_ci(r['above_base_threshold_1%'])} | "
                f"{_fmt_ci(r['above_base_threshold_0.1%'])} | {_fmt(r['distill_recall_1%_refixed']['recall'])} | {v} | "
                f"{r['flagged_by_young_account_rule_only']} |")

    lines.append(row("**base**", "–", b, "1.00x", ""))
    for name, r in report["shifts"].items():
        lines.append(row(name, f"`{r['field']}`", r, _fmt_x(r["flag_rate_x_base"]), "**yes**" if name in viol else ""))
    lines += ["", "What each shift is:", ""]
    lines += [f"- `{n}`: {r['describe']}" for n, r in report["shifts"].items()]
    lines += ["", f"Violations: {', '.join(report['violations']) or 'none'}.", "",
              "![human flag rate x base per shift](shift_audit.png)", "",
              f"Runtime: {report['seconds']} s.", ""]
    return "\n".join(lines)


def plot(report: dict, path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(report["shifts"])[::-1]
    x = [report["shifts"][n]["flag_rate_x_base"] for n in names]
    x = [np.nan if v is None else v for v in x]
    viol = set(report["violations"])
    fig = Figure(figsize=(7.0, 0.32 * len(names) + 1.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.barh(names, x, color=["tab:red" if n in viol else "tab:blue" for n in names])
    ax.axvline(1.0, color="grey", lw=1)
    ax.axvline(report["rule"]["factor"], color="tab:red", ls="--", lw=1, label=f"{report['rule']['factor']:g}x base")
    ax.set_xlabel(f"human flag rate / base ({report['base']['flag_rate']['value']:.4f})")
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)


def write_report(report: dict, out_dir) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    publish_text(out / "shift_audit.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    plot(report, out / "shift_audit.png")
    publish_text(out / "shift_audit.md", markdown(report))
    return out / "shift_audit.md"
