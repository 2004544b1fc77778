"""Incident labels: label rows -> one label per session, conflicts and unmatched rows reported.

Label rows come from `labels_io.read_labels` (a file or a labels store directory; the format
is in docs/labels.md). Each row applies to sessions of the sessionised events:

- a *session row* (`session_id` given) labels the sessions with that session_id, only
  those of its `account_id` when that is given too (two accounts may share a caller id);
- an *account row* (no `session_id`) labels the account's sessions that overlap
  [window_start, window_end] (a session overlaps when its last event is not before the
  start and its first event is not after the end; a missing bound is open), all of them
  when the row has no window.

A session given two different labels, by any mix of rows, files and incidents, is a
*conflict*: it gets no label (left out of training and evaluation) and is listed in
`Resolution.conflicts`, or, with on_conflict="fail", the resolution raises SchemaError
naming the first few. The same label from several rows is not a conflict. A label row
that matches no session is listed in `Resolution.unmatched` with the reason, so a typo
in an id is counted, never silently lost.

`--mix-simulated` training adds simulated traffic for classes with few labelled sessions
(`MixConfig`, `simulate_mix`): its accounts are prefixed so they never collide with
logged ones, and its label rows carry source "simulated" and the simulator's family.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from ..model.files import publish_atomically
from ..model.schema import LABELS, SchemaError

CONFLICT_POLICIES = ("exclude", "fail")
SIMULATED = "simulated"     # the `source` of label rows made by simulate_mix

CONFLICTS_SCHEMA = pa.schema([
    pa.field("session_id", pa.string()),
    pa.field("account_id", pa.string()),
    pa.field("labels", pa.string()),        # the distinct labels, sorted, ';'-separated
    pa.field("incident_ids", pa.string()),  # distinct incident ids in row order, ';'-separated
    pa.field("label_rows", pa.string()),    # 'file:row' of every row that labels the session
])
UNMATCHED_SCHEMA = pa.schema([
    pa.field("file", pa.string()),
    pa.field("row", pa.int64()),             # 1-based data row of the file (of the table without _file)
    pa.field("session_id", pa.string()),
    pa.field("account_id", pa.string()),
    pa.field("label", pa.string()),
    pa.field("incident_id", pa.string()),
    pa.field("reason", pa.string()),
])
_SHOW_CONFLICTS = 5     # conflicts named in the on_conflict="fail" message


@dataclass
class Resolution:
    """The label of each session of a sessionised event table, and what did not resolve."""
    y: np.ndarray              # (n_sessions,) int64 index into LABELS; -1: unlabelled or conflicting
    families: np.ndarray       # (n_sessions,) str: first non-empty `family` of the session's rows, '' if none
    sources: np.ndarray        # (n_sessions,) str: first non-empty `source` of the session's rows, '' if none
    conflicting: np.ndarray    # (n_sessions,) bool: labelled differently by two rows (y is -1 there)
    conflicts: pa.Table        # CONFLICTS_SCHEMA, one row per conflicting session
    unmatched: pa.Table        # UNMATCHED_SCHEMA, one row per label row that matched no session
    n_rows: int                # label rows resolved


def _text(labels: pa.Table, name: str) -> pd.Series:
    """A text column as an object Series, null and '' as None (absent column: all None)."""
    if name not in labels.column_names:
        return pd.Series([None] * labels.num_rows, dtype=object)
    s = pd.Series(pc.cast(labels.column(name), pa.string()).to_pylist(), dtype=object)
    return s.where(s.notna() & (s != ""), None)


def _times(labels: pa.Table, name: str) -> np.ndarray:
    if name not in labels.column_names:
        return np.full(labels.num_rows, np.nan)
    col = labels.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
        raise TypeError(f"label column {name!r} holds {col.type}: read labels with labels_io.read_labels, "
                        "which parses times to epoch seconds")
    return pc.fill_null(pc.cast(col, pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def _label_frame(labels: pa.Table) -> pd.DataFrame:
    """Label rows as a frame: one row per label row, `rid` its position in `labels`."""
    n = labels.num_rows
    if "label" not in labels.column_names or not {"session_id", "account_id"} & set(labels.column_names):
        raise SchemaError("labels need a 'label' column and a 'session_id' or 'account_id' column "
                          f"(columns found: {', '.join(labels.column_names) or 'none'})")
    f = pd.DataFrame({c: _text(labels, c) for c in
                      ("session_id", "account_id", "label", "family", "incident_id", "source", "_file")})
    f["window_start"] = _times(labels, "window_start")
    f["window_end"] = _times(labels, "window_end")
    f["rid"] = np.arange(n, dtype=np.int64)
    f["row"] = (labels.column("_row").to_numpy(zero_copy_only=False).astype(np.int64)
                if "_row" in labels.column_names else f["rid"] + 1)
    bad = ~f["label"].isin(LABELS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SchemaError(f"labels row {int(f['row'][i])}: column 'label': expected one of {', '.join(LABELS)}, "
                          f"got {f['label'][i]!r}", column="label", row=int(f["row"][i]))
    no_key = f["session_id"].isna() & f["account_id"].isna()
    if no_key.any():
        i = int(np.flatnonzero(no_key)[0])
        raise SchemaError(f"labels row {int(f['row'][i])}: expected a non-empty session_id or account_id",
                          column="session_id", row=int(f["row"][i]))
    return f


def _where(f: pd.DataFrame) -> pd.Series:
    """'file:row' of each label row ('<labels>:row' for a table read without provenance)."""
    return f["_file"].fillna("<labels>") + ":" + f["row"].astype(str)


def _joined(values) -> str:
    """Distinct non-null values in first-seen order, ';'-separated."""
    return ";".join(dict.fromkeys(v for v in values if v is not None and v == v))


def resolve(session_ids: np.ndarray, account_ids: np.ndarray, first_ts: np.ndarray, last_ts: np.ndarray,
            labels: pa.Table, on_conflict: str = "exclude") -> Resolution:
    """Label each session (arrays aligned per session: id, account, first and last event
    time in epoch seconds) from the label rows; see the module docstring for the rules."""
    if on_conflict not in CONFLICT_POLICIES:
        raise ValueError(f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}, got {on_conflict!r}")
    n = len(session_ids)
    L = _label_frame(labels)
    S = pd.DataFrame({"sid": np.arange(n, dtype=np.int64), "session_id": np.asarray(session_ids, dtype=object),
                      "account_id": np.asarray(account_ids, dtype=object),
                      "first": np.asarray(first_ts, dtype=np.float64), "last": np.asarray(last_ts, dtype=np.float64)})
    # Null keys never join (pandas would match None to None): each row kind is filtered first.
    by_session = L.loc[L["session_id"].notna(), ["rid", "session_id", "account_id"]]
    m1 = by_session.merge(S[["sid", "session_id", "account_id"]], on="session_id", suffixes=("", "_s"))
    m1 = m1[m1["account_id"].isna() | (m1["account_id"] == m1["account_id_s"])]
    by_account = L.loc[L["session_id"].isna(), ["rid", "account_id", "window_start", "window_end"]]
    m2 = by_account.merge(S[["sid", "account_id", "first", "last"]], on="account_id")
    m2 = m2[(m2["window_start"].isna() | (m2["last"] >= m2["window_start"]))
            & (m2["window_end"].isna() | (m2["first"] <= m2["window_end"]))]
    M = (pd.concat([m1[["sid", "rid"]], m2[["sid", "rid"]]], ignore_index=True)
         .merge(L[["rid", "label", "family", "incident_id", "source", "_file", "row"]], on="rid")
         .sort_values(["sid", "rid"], kind="stable"))

    y = np.full(n, -1, dtype=np.int64)
    families = np.full(n, "", dtype=object)
    sources = np.full(n, "", dtype=object)
    conflicting = np.zeros(n, dtype=bool)
    if len(M):
        g = M.groupby("sid", sort=True)
        n_labels = g["label"].nunique()
        conflicting[n_labels.index[n_labels > 1].to_numpy()] = True
        first = g[["label", "family", "source"]].first()     # first non-null value of each column
        sid = first.index.to_numpy()
        ok = ~conflicting[sid]
        y[sid[ok]] = first["label"].map(LABELS.index).to_numpy()[ok]
        families[sid] = first["family"].fillna("").to_numpy()
        sources[sid] = first["source"].fillna("").to_numpy()
    conflicts = _conflicts_table(M[M["sid"].isin(np.flatnonzero(conflicting))], S)
    if on_conflict == "fail" and conflicts.num_rows:
        raise SchemaError(conflict_message(conflicts))
    unmatched = _unmatched_table(L[~L["rid"].isin(M["rid"])], S)
    return Resolution(y=y, families=families.astype(str), sources=sources.astype(str), conflicting=conflicting,
                      conflicts=conflicts, unmatched=unmatched, n_rows=len(L))


def _conflicts_table(M: pd.DataFrame, S: pd.DataFrame) -> pa.Table:
    if not len(M):
        return CONFLICTS_SCHEMA.empty_table()
    M = M.assign(where=_where(M))
    g = M.groupby("sid", sort=True)
    sid = np.asarray(list(g.groups.keys()), dtype=np.int64)
    return pa.table({
        "session_id": pa.array(S["session_id"].to_numpy()[sid].tolist(), pa.string()),
        "account_id": pa.array(S["account_id"].to_numpy()[sid].tolist(), pa.string()),
        "labels": pa.array(g["label"].agg(lambda v: ";".join(sorted(set(v)))).tolist(), pa.string()),
        "incident_ids": pa.array(g["incident_id"].agg(_joined).tolist(), pa.string()),
        "label_rows": pa.array(g["where"].agg(_joined).tolist(), pa.string()),
    }, schema=CONFLICTS_SCHEMA)


def _unmatched_table(U: pd.DataFrame, S: pd.DataFrame) -> pa.Table:
    if not len(U):
        return UNMATCHED_SCHEMA.empty_table()
    known_sessions = set(S["session_id"].tolist())
    known_accounts = set(S["account_id"].tolist())
    reason = np.where(
        U["session_id"].notna(),
        np.where(U["session_id"].isin(known_sessions), "that session_id belongs to another account",
                 "no session with this session_id"),
        np.where(U["account_id"].isin(known_accounts), "no session of this account overlaps the window",
                 "no events of this account"))
    return pa.table({
        "file": pa.array(U["_file"].tolist(), pa.string()),
        "row": pa.array(U["row"].to_numpy(), pa.int64()),
        "session_id": pa.array(U["session_id"].tolist(), pa.string()),
        "account_id": pa.array(U["account_id"].tolist(), pa.string()),
        "label": pa.array(U["label"].tolist(), pa.string()),
        "incident_id": pa.array(U["incident_id"].tolist(), pa.string()),
        "reason": pa.array(reason.tolist(), pa.string()),
    }, schema=UNMATCHED_SCHEMA)


def conflict_message(conflicts: pa.Table, show: int = _SHOW_CONFLICTS) -> str:
    """'N session(s) get conflicting labels: ...' naming the first `show` of them."""
    rows = conflicts.slice(0, show).to_pylist()
    named = "; ".join(f"session {r['session_id']!r} of account {r['account_id']!r} is labelled "
                      f"{' and '.join(r['labels'].split(';'))} (incidents: {r['incident_ids'].replace(';', ', ') or 'none given'}; "
                      f"label rows {r['label_rows'].replace(';', ', ')})" for r in rows)
    more = f"; and {conflicts.num_rows - show} more" if conflicts.num_rows > show else ""
    return f"{conflicts.num_rows} session(s) get conflicting labels: {named}{more}"


def write_table_csv(table: pa.Table, path) -> None:
    """CSV under a temporary name, then published (files.publish_atomically): a reader
    never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    publish_atomically(path, lambda tmp: pcsv.write_csv(table, tmp), best_effort_dir=True)


# --------------------------------------------------------------------------- simulated mix


@dataclass(frozen=True)
class MixConfig:
    """Simulated traffic added to logged events (`train --mix-simulated N`)."""
    events: int                       # approximate number of simulated events
    classes: str = "auto"             # "auto", "all" or comma-separated class names
    min_class_sessions: int = 200     # "auto": classes with fewer labelled sessions get simulated traffic
    days: float = 7.0                 # simulated days
    seed: int = 0
    account_prefix: str = "sim:"      # prepended to simulated account ids (made unique if taken)

    def __post_init__(self):
        if self.events < 1:
            raise ValueError(f"--mix-simulated must be >= 1 events, got {self.events}")
        if self.min_class_sessions < 0:
            raise ValueError(f"--min-class-sessions must be >= 0, got {self.min_class_sessions}")
        parse_mix_classes(self.classes)


def parse_mix_classes(spec: str) -> tuple[str, ...] | str:
    """'auto' / 'all' as given, else the named classes (ValueError naming an unknown one)."""
    spec = spec.strip()
    if spec in ("auto", "all"):
        return spec
    names = tuple(dict.fromkeys(c.strip() for c in spec.split(",") if c.strip()))
    unknown = [c for c in names if c not in LABELS]
    if unknown or not names:
        raise ValueError(f"--mix-classes {spec!r}: expected auto, all or a comma-separated list of "
                         f"{', '.join(LABELS)}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return names


def mix_classes(cfg: MixConfig, labelled_per_class: dict[str, int]) -> tuple[str, ...]:
    """The classes to simulate, in LABELS order."""
    spec = parse_mix_classes(cfg.classes)
    if spec == "all":
        return LABELS
    if spec == "auto":
        return tuple(c for c in LABELS if labelled_per_class.get(c, 0) < cfg.min_class_sessions)
    return tuple(c for c in LABELS if c in spec)


def _free_prefix(prefix: str, accounts: np.ndarray) -> str:
    """`prefix`, or 'sim-2:', 'sim-3:', ... when some logged account id starts with it."""
    accounts = np.asarray(accounts, dtype=str)
    stem, k, candidate = prefix.rstrip(":"), 2, prefix
    while len(accounts) and np.char.startswith(accounts, candidate).any():
        candidate, k = f"{stem}-{k}:", k + 1
    return candidate


def simulate_mix(cfg: MixConfig, classes: tuple[str, ...], logged_accounts: np.ndarray
                 ) -> tuple[pa.Table, pa.Table, dict]:
    """~cfg.events simulated events of the families of `classes` -> (canonical events,
    label rows in read_labels' shape with source "simulated", a fingerprint dict)."""
    from ..model.schema import normalise
    from .simulate import FAMILIES, FAMILY_LABEL, SimConfig, accounts_for_events, simulate

    families = tuple(f for f in FAMILIES if FAMILY_LABEL[f] in classes)
    if not families:
        raise ValueError("no simulated family for classes " + ", ".join(classes))
    prefix = _free_prefix(cfg.account_prefix, logged_accounts)
    accounts = accounts_for_events(cfg.events, cfg.days, families=families, seed=cfg.seed)
    ev, lab = simulate(SimConfig(seed=cfg.seed, accounts=accounts, days=cfg.days, families=families))
    events = normalise(pa.Table.from_pandas(ev, preserve_index=False), source="simulated traffic")
    sim_accounts = pc.binary_join_element_wise(prefix, events.column("account_id"), "")
    events = events.set_column(events.column_names.index("account_id"), "account_id", sim_accounts)
    n = len(lab)
    labels = pa.table({
        "account_id": pa.array([prefix + a for a in lab["account_id"].tolist()], pa.string()),
        "label": pa.array(lab["label"].tolist(), pa.string()),
        "family": pa.array(lab["family"].tolist(), pa.string()),
        "source": pa.array([SIMULATED] * n, pa.string()),
        "_file": pa.array(["<simulated>"] * n, pa.string()),
        "_row": pa.array(np.arange(1, n + 1, dtype=np.int64)),
    })
    info = {"events_requested": cfg.events, "events": int(events.num_rows), "accounts": int(n),
            "seed": cfg.seed, "days": cfg.days, "classes": list(classes), "families": list(families),
            "account_prefix": prefix, "class_choice": cfg.classes, "min_class_sessions": cfg.min_class_sessions}
    return events, labels, info
