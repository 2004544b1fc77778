"""Shadow report: the shadow model's verdicts on live traffic against the served model's.

`distillguard shadow-report --event-log DIR --out REPORTDIR` reads the event log of a
server run with `--shadow-model` (serving/event_log.py: every scored event with both
verdicts) and writes `REPORTDIR/report.md` and `REPORTDIR/shadow.json`:

- agreement per event and per session (a session's verdict is the one at its latest
  logged event, by event time): on the predicted label, and on *flagged* (action !=
  ALLOW, i.e. would the gateway do anything);
- the champion-vs-shadow action confusion table (rows: served model, columns: shadow);
- the sessions that flipped: served model ALLOW while the shadow flags ("shadow_flags",
  what promoting the shadow would start acting on) and the reverse ("shadow_clears"),
  with account, session, events, both p(distillation_harvesting), both actions and both
  reason codes; and the flips counted by reason code (the flagging side's codes: what
  the newly flagged or cleared sessions were doing).

Reason codes come from the event's features, which both models share, so they say what
kind of session flipped; the probabilities say which model moved. Only events scored
while both models were loaded count (rows with a shadow verdict); the others are counted
as excluded. Model pairs (served version, shadow version) are listed with their counts:
a report spanning a reload covers each pair's events.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..model.files import publish_text
from ..model.schema import LABELS
from .event_log import SHADOW_COLUMNS
from .policy import Action

ACTIONS = tuple(a.value for a in Action)
_ALLOW = Action.ALLOW.value
_KEY = ["account_id", "session_id"]
_REQUIRED = ("account_id", "session_id", "ts", "label", "action", "model_version", "p_distillation_harvesting")
_OPTIONAL = ("event_id", "events_in_session", "logged_at", "reasons")
FLIP_KINDS = {
    "shadow_flags": "served model ALLOW, shadow flags (action != ALLOW)",
    "shadow_clears": "served model flags, shadow ALLOW",
}
_FLIP_COLUMNS = ["account_id", "session_id", "events_in_session", "logged_events", "model_version",
                 "shadow_model_version", "p_distillation_harvesting", "shadow_p_distillation_harvesting",
                 "action", "shadow_action", "reasons", "shadow_reasons"]


class ShadowReportError(ValueError):
    """The event log cannot give a shadow report (no parts, no shadow verdicts, bad part)."""


def log_parts(directory: Path) -> list[Path]:
    """The event parts of a log directory, as the event loaders see them (hidden and '_'
    names skipped: temp files and `_completions/`)."""
    return [f for f in sorted(directory.rglob("part-*.parquet"))
            if f.is_file() and not any(p.startswith((".", "_")) for p in f.relative_to(directory).parts)]


def read_log(directory: str | Path) -> tuple[pd.DataFrame, int]:
    """The verdict columns of every part (parts written without a shadow, or before the
    shadow columns existed, give nulls there) -> (frame, number of parts)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ShadowReportError(f"{directory}: not a directory (expected a `serve --event-log` directory)")
    parts = log_parts(directory)
    if not parts:
        raise ShadowReportError(f"{directory}: no event-log parts (part-*.parquet); is this the directory given "
                                f"to `serve --event-log`, and has the server scored anything and stopped or "
                                f"rotated a part?")
    tables = []
    for f in parts:
        try:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
        except (OSError, pa.ArrowException) as e:
            raise ShadowReportError(f"{f}: not a readable Parquet file: {e}") from e
        missing = [c for c in _REQUIRED if c not in names]
        if missing:
            raise ShadowReportError(f"{f}: lacks column {missing[0]!r}: not an event-log part")
        tables.append(pf.read(columns=[c for c in (*_REQUIRED, *_OPTIONAL, *SHADOW_COLUMNS) if c in names]))
    if not any(c in t.column_names for t in tables for c in SHADOW_COLUMNS):
        raise ShadowReportError(f"{directory}: the event log has no shadow columns ({len(parts)} parts): it was "
                                f"written before shadow scoring existed; serve with --shadow-model to compare "
                                f"two models")
    table = pa.concat_tables(tables, promote_options="default")
    df = table.to_pandas()
    for c in (*_OPTIONAL, *SHADOW_COLUMNS):
        if c not in df:
            df[c] = None
    return df, len(parts)


def _flagged(actions: pd.Series) -> pd.Series:
    return actions != _ALLOW


def _confusion(a: pd.Series, b: pd.Series, order) -> dict:
    """{row value: {column value: count}} over `order` (plus any value outside it)."""
    extra = sorted((set(a) | set(b)) - set(order))
    keys = [*order, *extra]
    ct = pd.crosstab(a, b).reindex(index=keys, columns=keys, fill_value=0)
    return {r: {c: int(ct.at[r, c]) for c in keys} for r in keys}


def agreement(frame: pd.DataFrame) -> dict:
    """Agreement of the served and shadow verdicts over the rows of `frame`."""
    n = len(frame)
    fc, fs = _flagged(frame["action"]), _flagged(frame["shadow_action"])
    same_label = int((frame["label"] == frame["shadow_label"]).sum())
    same_flag = int((fc == fs).sum())
    return {
        "n": n,
        "label_agreement": same_label / n if n else None,
        "flagged_agreement": same_flag / n if n else None,
        "label_agree": same_label,
        "flagged_agree": same_flag,
        "flagged_by_both": int((fc & fs).sum()),
        "flagged_by_served_only": int((fc & ~fs).sum()),
        "flagged_by_shadow_only": int((~fc & fs).sum()),
        "flagged_by_neither": int((~fc & ~fs).sum()),
        "action_confusion": _confusion(frame["action"], frame["shadow_action"], ACTIONS),
        "label_confusion": _confusion(frame["label"], frame["shadow_label"], LABELS),
    }


def latest_per_session(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (account_id, session_id): its latest event by event time (then by
    logging time), with `logged_events` = its events in `events`."""
    order = [c for c in ("ts", "logged_at") if events[c].notna().any()]
    ev = events.sort_values(order, kind="stable")
    last = ev.groupby(_KEY, sort=False, dropna=False).tail(1).set_index(_KEY)
    last["logged_events"] = ev.groupby(_KEY, sort=False, dropna=False).size()
    return last.reset_index()


def _codes(s) -> list[str]:
    if s is None or (isinstance(s, float) and math.isnan(s)) or s == "":
        return ["(none)"]
    return str(s).split(";")


def _clean(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "item"):      # numpy scalars
        return v.item()
    return v


def flips(sessions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The sessions whose flagging differs, by direction, largest p change first."""
    fc, fs = _flagged(sessions["action"]), _flagged(sessions["shadow_action"])
    out = {}
    for kind, mask in (("shadow_flags", ~fc & fs), ("shadow_clears", fc & ~fs)):
        f = sessions.loc[mask, _FLIP_COLUMNS].copy()
        delta = (f["shadow_p_distillation_harvesting"] - f["p_distillation_harvesting"]).abs()
        out[kind] = f.assign(_d=delta).sort_values(["_d", "account_id", "session_id"],
                                                   ascending=[False, True, True]).drop(columns="_d")
    return out


def flips_by_reason(flipped: dict[str, pd.DataFrame]) -> dict[str, dict[str, int]]:
    """Flipped sessions per reason code of the side that flags them (a session with
    several codes counts under each; '(none)': no code)."""
    out = {}
    for kind, f in flipped.items():
        col = "shadow_reasons" if kind == "shadow_flags" else "reasons"
        counts = pd.Series([c for s in f[col] for c in _codes(s)], dtype=object).value_counts()
        out[kind] = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
    return out


def compare(df: pd.DataFrame) -> dict:
    """The report's numbers (what shadow.json holds) from the log's rows."""
    both = df[df["shadow_action"].notna() & df["shadow_label"].notna()]
    if both.empty:
        raise ShadowReportError(f"none of the {len(df)} logged events has a shadow verdict: no shadow model was "
                                f"loaded while they were scored (serve --shadow-model)")
    sessions = latest_per_session(both)
    flipped = flips(sessions)
    pairs = (both.groupby(["model_version", "shadow_model_version"], dropna=False)
             .agg(events=("action", "size"), first_logged=("logged_at", "min"), last_logged=("logged_at", "max"))
             .reset_index())
    return {
        "events_logged": int(len(df)),
        "events_compared": int(len(both)),
        "events_excluded": int(len(df) - len(both)),
        "model_pairs": [{k: _clean(v) for k, v in r.items()} for r in pairs.to_dict("records")],
        "events": agreement(both),
        "sessions": agreement(sessions),
        "flips": {k: [{c: _clean(v) for c, v in r.items()} for r in f.to_dict("records")]
                  for k, f in flipped.items()},
        "flips_by_reason": flips_by_reason(flipped),
    }


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    return out


def _md_confusion(conf: dict) -> list[str]:
    keys = [k for k in conf if sum(conf[k].values()) or sum(conf[r][k] for r in conf)]
    return _md_table(["served \\ shadow", *keys], [[r, *(conf[r][c] for c in keys)] for r in keys])


def render_markdown(res: dict, source: Path, n_parts: int, max_rows: int) -> str:
    ev, se = res["events"], res["sessions"]
    lines = [f"# Shadow report: {source}", "",
             f"{n_parts} parts, {res['events_logged']:,} logged events; {res['events_compared']:,} scored by both "
             f"models (compared), {res['events_excluded']:,} without a shadow verdict (excluded).", "",
             "## Model pairs", ""]
    lines += _md_table(["served model", "shadow model", "events"],
                       [[p["model_version"], p["shadow_model_version"], p["events"]] for p in res["model_pairs"]])
    lines += ["", "## Agreement", "",
              "A session's verdict is the one at its latest logged event. Flagged: action != ALLOW.", ""]
    lines += _md_table(["", "n", "same label", "same flagged", "flagged by both", "served only", "shadow only",
                        "neither"],
                       [[name, a["n"], _pct(a["label_agreement"]), _pct(a["flagged_agreement"]),
                         a["flagged_by_both"], a["flagged_by_served_only"], a["flagged_by_shadow_only"],
                         a["flagged_by_neither"]] for name, a in (("events", ev), ("sessions", se))])
    for name, a in (("sessions", se), ("events", ev)):
        lines += ["", f"### Actions, {name} (rows: served model, columns: shadow)", ""]
        lines += _md_confusion(a["action_confusion"])
    lines += ["", "### Labels, sessions (rows: served model, columns: shadow)", ""]
    lines += _md_confusion(se["label_confusion"])
    lines += ["", "## Flipped sessions", ""]
    for kind, what in FLIP_KINDS.items():
        f = res["flips"][kind]
        by_reason = res["flips_by_reason"][kind]
        lines += [f"### {kind}: {what} — {len(f)} sessions", ""]
        if not f:
            lines += ["None.", ""]
            continue
        lines += ["By reason code (" + ("shadow's" if kind == "shadow_flags" else "served model's") + "): "
                  + ", ".join(f"{k} {v}" for k, v in by_reason.items()), ""]
        shown = f[:max_rows]
        lines += _md_table(["account", "session", "events", "p_distill served", "p_distill shadow", "served",
                            "shadow", "reasons (served)", "reasons (shadow)"],
                           [[r["account_id"], r["session_id"], r["events_in_session"],
                             f"{r['p_distillation_harvesting']:.4f}", f"{r['shadow_p_distillation_harvesting']:.4f}",
                             r["action"], r["shadow_action"], r["reasons"], r["shadow_reasons"]] for r in shown])
        if len(f) > len(shown):
            lines += ["", f"({len(f) - len(shown)} more in shadow.json)"]
        lines += [""]
    return "\n".join(lines) + "\n"


def shadow_report(event_log: str | Path, out: str | Path, max_rows: int = 50) -> dict:
    """Read the event log, compare, write OUT/report.md and OUT/shadow.json; returns the
    numbers (shadow.json's content)."""
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_rows}")
    source = Path(event_log)
    df, n_parts = read_log(source)
    res = compare(df)
    res = {"event_log": str(source), "parts": n_parts, **res}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    publish_text(out / "shadow.json", json.dumps(res, indent=2) + "\n")
    publish_text(out / "report.md", render_markdown(res, source, n_parts, max_rows))
    return res
