"""Session assignment: the caller's session_id, else an account's stream cut by idle gaps.

Contract (docs/architecture.md, "Session assignment"):
- a row with a caller `session_id` keeps it;
- the other rows of an account form the account's implicit stream; it is cut where
  the event-time gap to the previous implicit event of the account exceeds `gap_s`
  (strictly greater: a gap of exactly `gap_s` continues the session), giving
  `"{account_id}:{k}"` with k = 0, 1, ... in time order within the account;
- the result is sorted by (account_id, session_id, ts, _row), so each session is
  contiguous and ordered, equal timestamps kept in file order.

Rows that carry a caller session_id do not take part in the gap computation: online,
such a request goes to its own session's state and never touches the account's
implicit session, so offline must ignore it too to give the same scores.

`is_new_session` is the one place the cut rule is written down; the vectorised cut
below uses the same expression on the same float64 values, so the online scorer
and batch scoring agree bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from .schema import plain_array

DEFAULT_GAP_S = 86_400.0


def is_new_session(prev_ts: float | None, ts: float, gap_s: float = DEFAULT_GAP_S) -> bool:
    """Does an event at `ts` start a new implicit session after one at `prev_ts`?

    Event time only (never wall clock). An event older than the previous one
    (out-of-order arrival) has a negative gap and stays in the session.
    """
    return prev_ts is None or _gap_exceeds(ts - prev_ts, gap_s)


def _gap_exceeds(gap, gap_s: float):
    # Shared by the scalar and the numpy path so both cut on exactly the same values.
    return gap > gap_s


def _check_gap(gap_s: float) -> float:
    gap_s = float(gap_s)
    if math.isnan(gap_s) or gap_s < 0:
        raise ValueError(f"gap_s must be >= 0 seconds, got {gap_s}")
    return gap_s


def _changes(a: pa.Array) -> np.ndarray:
    """bool[n]: True where a[i] != a[i-1] (and at i=0)."""
    n = len(a)
    out = np.ones(n, dtype=bool)
    if n > 1:
        out[1:] = pc.fill_null(pc.not_equal(a.slice(1), a.slice(0, n - 1)), True).to_numpy(
            zero_copy_only=False)
    return out


def _ranks(a: pa.Array) -> np.ndarray:
    """int64[n] whose order is the byte order of the strings in `a` (no nulls).

    Hash-encoding then sorting only the distinct values is several times faster
    than arrow's multi-key sort over the strings themselves.
    """
    enc = pc.dictionary_encode(a)
    order = pc.sort_indices(enc.dictionary).to_numpy()
    rank_of_code = np.empty(len(order), dtype=np.int64)
    rank_of_code[order] = np.arange(len(order), dtype=np.int64)
    return rank_of_code[enc.indices.to_numpy(zero_copy_only=False)]


def assign_sessions(table: pa.Table, gap_s: float = DEFAULT_GAP_S) -> pa.Table:
    """Fill `session_id` and sort; see the module docstring for the rule.

    Expects a canonical table (model.schema.normalise); a table without `_row` or
    `session_id` gets them (file order, all null). Ties in (account_id,
    session_id, ts, _row), possible only across files of a directory, keep input
    order: every sort used is stable.
    """
    gap_s = _check_gap(gap_s)
    names = table.column_names
    n = table.num_rows
    if "_row" not in names:
        table = table.append_column("_row", pa.array(np.arange(n, dtype=np.int64)))
    if "session_id" not in names:
        table = table.append_column("session_id", pa.nulls(n, pa.string()))

    acct = plain_array(table.column("account_id"))
    if acct.null_count:
        raise ValueError("assign_sessions needs account_id on every row: normalise the table first")
    sid = plain_array(table.column("session_id"))
    if not pa.types.is_string(sid.type):
        sid = pc.cast(sid, pa.string())
    ts = pc.cast(plain_array(table.column("ts")), pa.float64()).to_numpy(zero_copy_only=False)
    row = pc.cast(plain_array(table.column("_row")), pa.int64()).to_numpy()
    acct_rank = _ranks(acct)

    # (account, ts, _row) order as successive stable sorts, least significant key
    # first; ~3x faster than np.lexsort here. When _row already ascends (one file,
    # or files concatenated in order) input order is _row order and it needs no sort.
    if n < 2 or bool(np.all(row[1:] >= row[:-1])):
        by_ts = np.argsort(ts, kind="stable")
    else:
        by_ts = np.lexsort((row, ts))
    by_time = by_ts[np.argsort(acct_rank[by_ts], kind="stable")]

    no_sid = pc.fill_null(pc.equal(sid, ""), True).to_numpy(zero_copy_only=False)
    if no_sid.any():
        imp = by_time[no_sid[by_time]]  # implicit rows, in (account, ts, _row) order
        a = acct_rank[imp]
        t = ts[imp]
        first_of_acct = np.ones(imp.size, dtype=bool)
        first_of_acct[1:] = a[1:] != a[:-1]
        cut = first_of_acct.copy()
        cut[1:] |= _gap_exceeds(t[1:] - t[:-1], gap_s)
        seg = np.cumsum(cut) - 1
        k = np.zeros(n, dtype=np.int64)
        k[imp] = seg - seg[first_of_acct][np.cumsum(first_of_acct) - 1]
        generated = pc.binary_join_element_wise(acct, pc.cast(pa.array(k), pa.string()), ":")
        sid = generated if no_sid.all() else pc.if_else(pa.array(no_sid), generated, sid)

    # Final order (account, session_id, ts, _row): a stable sort of the time order by
    # one integer key. Account comes first so that two accounts reusing one caller
    # session_id are not interleaved.
    sid_rank = _ranks(sid)
    key = acct_rank * (int(sid_rank.max(initial=0)) + 1) + sid_rank
    order = by_time[np.argsort(key[by_time], kind="stable")]
    i = table.schema.get_field_index("session_id")
    out = table.set_column(i, table.schema.field(i), sid)
    return out.take(order)


def session_bounds(table: pa.Table) -> np.ndarray:
    """Start offsets of each session in a table from `assign_sessions`, plus len(table).

    Session s is rows [b[s], b[s+1]). A session is keyed by (account_id,
    session_id): two accounts reusing one caller session_id stay apart.
    """
    n = table.num_rows
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    sid = plain_array(table.column("session_id"))
    if sid.null_count:
        raise ValueError("session_bounds needs session_id on every row: call assign_sessions first")
    change = _changes(plain_array(table.column("account_id"))) | _changes(sid)
    return np.append(np.flatnonzero(change), n).astype(np.int64)
