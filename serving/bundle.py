"""The bundle runtime: a model bundle (a directory holding model.onnx and metadata.json)
loaded into onnxruntime, and every way scores leave it.

One module for all consumers: batch scoring (`serving.batch`), the online scorer
(`serving.scorer`), evaluation (`training.evaluate_bundle`, `holdout`, `robustness`) and
comparison (`training.compare`) all read probabilities through the functions here:

  load_bundle            directory -> Bundle; a feature spec other than the code's is a
                         clear error (it would feed the network columns it never saw)
  Bundle.predict         (B, T, F) windows -> calibrated probabilities (B, T, C)
  session_probs          each session's score at its last event (last window)
  last_window_probs      the same for sessions laid back to back by `ends` (online rounds)
  per_event_probs        score(t) at every event of every session
  Bundle.decide          probabilities + feature rows -> labels, actions, reasons (`policy`)
  apply_temperature      the calibration the bundle's temperature applies (numpy only)

numpy and onnxruntime only: no torch, no scipy (the scorer process imports neither);
fitting a temperature is training's (`training.calibration`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..model import features, windows
from . import policy as policy_mod

# Probabilities are floored here before the log: float32 softmax underflows to exact 0.
EPS = 1e-12
# Windows per onnxruntime call in batch scoring and evaluation.
ORT_BATCH = 512
# Padded rows per ORT call in per-event scoring (chunks of up to 256 + 30 rows).
PER_EVENT_ROWS = 8192


class BundleError(RuntimeError):
    pass


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Serving uses one thread, no spinning: on 2 cores a spinning pool starves gRPC threads
    # (design doc). Batch scoring passes 0: one thread per core, still without spinning.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class Bundle:
    path: Path
    metadata: dict
    session: object

    @property
    def window(self) -> int:
        return int(self.metadata["model_config"]["window"])

    @property
    def receptive_field(self) -> int | None:
        """Rows a sliding-attention bundle's output depends on; None for whole-window attention
        (absolute positions: an output depends on where its window starts)."""
        cfg = self.metadata["model_config"]
        span = int(cfg.get("attention_span", 0) or 0)
        return int(cfg["n_layer"]) * (span - 1) + 1 if span else None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.metadata["labels"])

    @property
    def thresholds(self) -> dict:
        return self.metadata["thresholds"]

    @cached_property
    def policy(self) -> policy_mod.PolicyConfig:
        return policy_mod.PolicyConfig.from_metadata(self.metadata)

    @property
    def gap_s(self) -> float:
        return float(self.metadata.get("session_gap_s", 86400.0))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unknown"))

    @property
    def temperature(self) -> float:
        return float(self.metadata.get("calibration", {}).get("temperature", 1.0))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(B, T, F) float32, right-padded -> calibrated probabilities (B, T, n_classes).

        The one place scores leave the model: batch and online both read them here, so
        the bundle's temperature applies to both alike."""
        p = self.session.run(["probs"], {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]
        T = self.temperature
        return p if T == 1.0 else apply_temperature(p, T).astype(np.float32)

    @cached_property
    def occlusion_baseline(self) -> np.ndarray | None:
        """(F,) the value each input is set to when its group is occluded (validation human
        medians, fixed at training); None for bundles from before explanations."""
        b = self.metadata.get("occlusion_baseline")
        return None if b is None else np.asarray(b, dtype=np.float32)

    def decide_events(self, probs: np.ndarray, rows: np.ndarray, seg: np.ndarray, state: np.ndarray,
                      windows_of=None, describe_at=None):
        """`policy.decide_events` under this bundle's policy. windows_of(idx) -> (x, length):
        the windows ending at events idx (their last W rows), which explanations occlude;
        None, or a bundle without an occlusion baseline: rule checks on the row."""
        explain = None
        if windows_of is not None and self.occlusion_baseline is not None:
            explain = lambda idx: policy_mod.top_groups(explain_windows(self, *windows_of(idx)))  # noqa: E731
        return policy_mod.decide_events(probs, rows, self.labels, self.policy, seg, state, explain, describe_at)


def load_bundle(path: str | Path, threads: int = 1) -> Bundle:
    path = Path(path)
    meta_path, onnx_path = path / "metadata.json", path / "model.onnx"
    if not path.is_dir():
        raise BundleError(f"model bundle {path}: not a directory (expected model.onnx + metadata.json)")
    for p in (meta_path, onnx_path):
        if not p.is_file():
            raise BundleError(f"model bundle {path}: missing {p.name}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"model bundle {path}: metadata.json is not valid JSON ({e})") from e
    for key in ("feature_spec_hash", "feature_spec", "labels", "thresholds", "model_config"):
        if key not in meta:
            raise BundleError(f"model bundle {path}: metadata.json lacks '{key}'")
    want = features.feature_spec_hash()
    if meta["feature_spec_hash"] != want:
        raise BundleError(
            f"model bundle {path}: trained with feature spec {meta['feature_spec_hash']} "
            f"(version {meta['feature_spec'].get('version')}), but this code computes "
            f"{want} (version {features.FEATURE_VERSION}); retrain the bundle with this version "
            f"(`distillguard train`) or use the distillguard release it was built with")
    try:
        session = ort_session(onnx_path, threads)
    except Exception as e:  # onnxruntime raises its own types for corrupt graphs
        raise BundleError(f"model bundle {path}: model.onnx cannot be loaded ({e})") from e
    return Bundle(path=path, metadata=meta, session=session)


# --------------------------------------------------------------------------- calibration

def _log_softmax(z: np.ndarray) -> np.ndarray:
    # As scipy.special.log_softmax computes it (same numbers), without importing scipy.
    # z is finite here (log of probabilities clipped to [EPS, 1]), so the max is too.
    tmp = z - z.max(axis=-1, keepdims=True)
    return tmp - np.log(np.exp(tmp).sum(axis=-1, keepdims=True))


def apply_temperature(probs, T: float) -> np.ndarray:
    """normalise(p ** (1/T)) along the last axis: softmax(logits / T) recovered from probs.

    The bundle's ONNX graph ends in a softmax, so calibration works on probabilities:
    log p = logits - logsumexp(logits), and the row constant cancels in the next softmax.
    Works on any (..., classes) array (session rows or the per-event (batch, time, classes)
    output). Computed in float64 as a log-softmax, so rows with zeros or huge 1/T give
    neither NaN nor inf; returned in the input's float dtype (float32 stays float32).
    """
    if not (np.isfinite(T) and T > 0):
        raise ValueError(f"temperature must be a positive finite number, got {T}")
    arr = np.asarray(probs)
    z = np.log(np.clip(np.asarray(arr, dtype=np.float64), EPS, 1.0))
    out = np.exp(_log_softmax(z / float(T)))
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
    return out.astype(dtype, copy=False)


# --------------------------------------------------------------------------- scores

def predict_windows(bundle: Bundle, rows: np.ndarray, begin: np.ndarray, length: np.ndarray,
                    batch: int = ORT_BATCH, max_rows: int | None = None):
    """Yield (sel, probs) blocks: probs (len(sel), T, C) for windows `sel`, all windows once.

    Windows are visited in order of length (less padding per ORT call), `batch` at a time,
    fewer when `max_rows` (padded rows per call) would be exceeded: long chunks in batches
    of 512 made intermediates of hundreds of MB and ran slower.
    """
    order = np.argsort(length, kind="stable")
    i = 0
    while i < len(order):
        n = batch
        if max_rows is not None:
            n = max(1, min(batch, max_rows // max(int(length[order[min(i + batch, len(order)) - 1]]), 1)))
        sel = order[i:i + n]
        i += n
        yield sel, bundle.predict(windows.gather(rows, begin[sel], length[sel]))


def session_probs(bundle: Bundle, sr: windows.SessionRows) -> tuple[np.ndarray, np.ndarray]:
    """Score at each session's last event: probs (n_sessions, C) and that event's feature row."""
    begin, length = windows.last_windows(sr, bundle.window)
    probs = np.empty((len(begin), len(bundle.labels)), dtype=np.float32)
    for sel, p in predict_windows(bundle, sr.rows, begin, length):
        probs[sel] = p[np.arange(len(sel)), length[sel] - 1]
    return probs, sr.rows[sr.starts[1:] - 1]


def last_window_probs(bundle: Bundle, rows: np.ndarray, ends: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Feature rows of several sessions back to back (session i ends at row ends[i]-1,
    lengths[i] rows) -> (n_sessions, n_classes): the bundle's probabilities at each
    session's last row, over the window of its last `bundle.window` rows, in one ORT call
    (an online round is small; `session_probs` batches a whole file)."""
    win_len = np.minimum(lengths, bundle.window)
    x = windows.gather(rows, ends - win_len, win_len)
    return bundle.predict(x)[np.arange(len(lengths)), win_len - 1]


def explain_windows(bundle: Bundle, x: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Windows (n, T, F) ending at explained events (row length-1) -> (n, n_groups): how much
    setting each reason group's inputs to the occlusion baseline, in every row of the
    window, lowers the event's log-odds of distillation (positive: the group pushed it up)."""
    G = len(policy_mod.GROUPS)
    base = bundle.occlusion_baseline
    xs = np.repeat(np.asarray(x, dtype=np.float32), G + 1, axis=0)           # (n (G+1), T, F)
    for g, cols in enumerate(policy_mod.GROUP_COLUMNS):
        xs[g + 1::G + 1][:, :, cols] = base[cols]
    at = np.repeat(np.asarray(length) - 1, G + 1)
    d = bundle.labels.index("distillation_harvesting")
    p = np.empty(len(xs), dtype=np.float64)
    for i in range(0, len(xs), ORT_BATCH):
        p[i:i + ORT_BATCH] = bundle.predict(xs[i:i + ORT_BATCH])[np.arange(len(xs[i:i + ORT_BATCH])), at[i:i + ORT_BATCH], d]
    z = policy_mod.log_odds(p, 30.0).reshape(-1, G + 1)
    return z[:, :1] - z[:, 1:]


@dataclass
class EventVerdicts:
    """`score_events`' output, one entry per event (rows of `sr`)."""
    probs: np.ndarray          # (n, C) calibrated
    labels: list
    actions: list
    reasons: list              # [(code, evidence), ...] ([] where not described)
    session_score: np.ndarray  # (n,) float64


def score_events(bundle: Bundle, sr: windows.SessionRows, describe_at: np.ndarray | None = None) -> EventVerdicts:
    """Every event's probabilities and verdict, sessions seen from their first event: the
    one offline path (batch scoring, evaluation, training's thresholds read it)."""
    probs = per_event_probs(bundle, sr)
    n = len(sr.lengths)
    seg = np.repeat(np.arange(n), sr.lengths)
    s0 = sr.starts[:-1][seg]

    def windows_of(idx):
        begin = np.maximum(s0[idx], idx - bundle.window + 1)
        length = idx - begin + 1
        return windows.gather(sr.rows, begin, length), length

    names, acts, reasons, score = bundle.decide_events(probs, sr.rows, seg, policy_mod.empty_decisions(n),
                                                       windows_of, describe_at)
    return EventVerdicts(probs, names, acts, reasons, score)


@dataclass
class SessionVerdicts:
    """Per session (sessions of `sr`, from their first event): the verdict at its last
    event, as `score` writes it, and what the served policy did over the whole session."""
    probs: np.ndarray           # (n, C) at the last event
    rows: np.ndarray            # (n, F) the last event's feature row
    labels: list
    actions: list               # at the last event
    reasons: list
    session_score: np.ndarray   # (n,) at the last event
    peak_score: np.ndarray      # (n,) highest session_score at any event
    worst_action: np.ndarray    # (n,) rank (policy.Action order) of the harshest action at any event
    first_strong: np.ndarray    # (n,) events until the first DEGRADE or BLOCK (inf: never)
    events: EventVerdicts


def session_verdicts(bundle: Bundle, sr: windows.SessionRows) -> SessionVerdicts:
    last = sr.starts[1:] - 1
    at_last = np.zeros(len(sr.rows), dtype=bool)
    at_last[last] = True
    v = score_events(bundle, sr, describe_at=at_last)
    rank = np.array([policy_mod._RANK[a] for a in v.actions], dtype=np.int64) if v.actions else np.zeros(0, np.int64)
    starts = sr.starts[:-1]
    n = len(starts)
    peak = np.maximum.reduceat(v.session_score, starts) if n else np.zeros(0)
    worst = np.maximum.reduceat(rank, starts) if n else np.zeros(0, np.int64)
    strong = rank >= policy_mod.DEGRADE
    seg = np.repeat(np.arange(n), sr.lengths)
    first = np.full(n, np.inf)
    hit = np.flatnonzero(strong)
    if len(hit):
        # the first strong event of each session: reversed assignment keeps the smallest index
        first[seg[hit[::-1]]] = (hit[::-1] - starts[seg[hit[::-1]]] + 1).astype(np.float64)
    labels = np.asarray(v.labels, dtype=object)
    acts = np.asarray(v.actions, dtype=object)
    return SessionVerdicts(probs=v.probs[last], rows=sr.rows[last], labels=labels[last].tolist(),
                           actions=acts[last].tolist(), reasons=[v.reasons[i] for i in last],
                           session_score=v.session_score[last], peak_score=peak, worst_action=worst,
                           first_strong=first, events=v)


def per_event_probs(bundle: Bundle, sr: windows.SessionRows) -> np.ndarray:
    """score(t) at every event: (n_events, C), row k for event sr.rows[k].

    Each window of `windows.per_event_windows` (chunks of a session for a sliding-attention
    bundle, one window per late event otherwise) is predicted once and each of its scored
    rows lands on its event."""
    begin, length, first = windows.per_event_windows(sr, bundle.window, bundle.receptive_field)
    probs = np.empty((len(sr.rows), len(bundle.labels)), dtype=np.float32)
    for sel, p in predict_windows(bundle, sr.rows, begin, length, max_rows=PER_EVENT_ROWS):
        t = np.arange(p.shape[1])
        scored = (t[None, :] >= first[sel, None]) & (t[None, :] < length[sel, None])   # (n, T)
        probs[(begin[sel, None] + t[None, :])[scored]] = p[scored]
    return probs
