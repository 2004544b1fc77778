"""From a sessionized event table to model windows: shared by training, batch and replay.

A window is up to W consecutive feature rows of one session, right-padded to the batch's
longest. score(t) is read at the window's last valid row (see model.network).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import features
from .sessions import session_bounds


@dataclass
class SessionRows:
    """Feature rows of sessions laid end to end; session s is rows[starts[s]:starts[s+1]]."""
    rows: np.ndarray      # (n_events, n_features) float32
    starts: np.ndarray    # (n_sessions + 1,) int64

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)


def featurize(table) -> SessionRows:
    """Canonical table already sorted by `assign_sessions` -> per-event feature rows."""
    starts = np.asarray(session_bounds(table), dtype=np.int64)
    lengths = np.diff(starts)
    seg = np.repeat(np.arange(len(lengths)), lengths)
    raw = features.raw_from_table(table)
    rows = features.compute(features.empty_state(len(lengths)), seg, raw)
    return SessionRows(rows=rows, starts=starts)


def gather(rows: np.ndarray, begin: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Windows rows[begin_i : begin_i + length_i], right-padded with zeros -> (B, max_len, F)."""
    T = int(length.max()) if len(length) else 0
    offs = np.arange(T)
    idx = begin[:, None] + offs[None, :]
    valid = offs[None, :] < length[:, None]
    out = rows[np.where(valid, idx, 0)]
    out[~valid] = 0.0
    return out


def last_windows(sr: SessionRows, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(begin, length) of the window ending at each session's last event."""
    length = np.minimum(sr.lengths, window)
    return sr.starts[1:] - length, length


def per_event_windows(sr: SessionRows, window: int):
    """Windows that give score(t) for every event.

    Returns (begin, length, win_of, pos, event): windows are (begin, length); scored
    event k is `event[k]`, read at row `pos[k]` of window `win_of[k]`. A session's first window covers its first min(n, W)
    events and scores all of them at once (causal attention); each later event t gets its
    own window [t-W+1, t].
    """
    lengths = sr.lengths
    head_len = np.minimum(lengths, window)
    head_begin = sr.starts[:-1]
    # every event of the head windows
    n_head = int(head_len.sum())
    head_win = np.repeat(np.arange(len(lengths)), head_len)
    head_pos = np.arange(n_head) - np.repeat(np.cumsum(head_len) - head_len, head_len)
    head_event = head_begin[head_win] + head_pos
    # tail events t >= W of each session
    tail_len = lengths - head_len
    tail_event = np.repeat(head_begin + window, tail_len) + (
        np.arange(int(tail_len.sum())) - np.repeat(np.cumsum(tail_len) - tail_len, tail_len))
    begin = np.concatenate([head_begin, tail_event - window + 1])
    length = np.concatenate([head_len, np.full(len(tail_event), window)])
    win_of = np.concatenate([head_win, len(lengths) + np.arange(len(tail_event))])
    pos = np.concatenate([head_pos, np.full(len(tail_event), window - 1)])
    event = np.concatenate([head_event, tail_event])
    return begin, length, win_of, pos, event
