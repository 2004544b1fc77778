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


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """[0..counts[0]), [0..counts[1]), ... laid end to end."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def per_event_windows(sr: SessionRows, window: int, receptive: int | None = None, chunk: int = 256):
    """Windows that give score(t) for every event: (begin, length, first), window k covering
    rows begin[k] .. begin[k]+length[k]-1 and scoring the events at its rows first[k].. (the
    rows before `first` are context only). Every event is scored by exactly one window.

    receptive None (whole-window attention, absolute positions): a session's first window
    covers its first min(n, W) events and scores them all at once; each later event t gets
    its own window [t-W+1, t] (first = W-1).
    receptive R (sliding attention): a session is cut into chunks of `chunk` scored events,
    each carrying the R-1 rows before it (fewer at the session's start): one pass per chunk,
    ~(chunk + R - 1) / chunk rows computed per event instead of W.
    """
    lengths = sr.lengths
    s0 = sr.starts[:-1]
    if receptive is None:
        head_len = np.minimum(lengths, window)
        tail_len = lengths - head_len
        tail_event = np.repeat(s0 + window, tail_len) + _ragged_arange(tail_len)
        begin = np.concatenate([s0, tail_event - window + 1])
        length = np.concatenate([head_len, np.full(len(tail_event), window)])
        first = np.concatenate([np.zeros(len(s0), np.int64), np.full(len(tail_event), window - 1)])
        keep = length > 0
        return begin[keep], length[keep], first[keep]
    n_chunks = -(-lengths // chunk)                         # ceil; 0 for an empty session
    owner = np.repeat(np.arange(len(lengths)), n_chunks)
    out_begin = s0[owner] + _ragged_arange(n_chunks) * chunk
    out_end = np.minimum(out_begin + chunk, sr.starts[1:][owner])
    begin = np.maximum(out_begin - (receptive - 1), s0[owner])
    return begin, out_end - begin, out_begin - begin
