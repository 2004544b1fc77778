"""Online scorer: requests -> verdicts, with per-session state. Knows nothing of gRPC.

Callers (gRPC handler threads) enqueue their work and then try to become the one writer:
the caller that takes the lock drains the queue, handling whatever is queued as one
batch (one feature computation and one onnxruntime call for all Score requests in it),
while the others wait on their futures. Idle, a request is handled on its own thread with
no hand-off; under load, requests batch up behind the writer. One writer at a time keeps
each session's Score/Complete order and lets the store go without locks of its own.

The store (`state.SessionStore`) is worked in rounds: `prepare` the round's sessions,
compute on the local slab, `commit`. A store shared between processes (Redis) may report
sessions that another process changed meanwhile; their requests are redone on the fresh
state, so every answer comes from the state every process agrees on.

A shadow bundle (`set_shadow`, `serve --shadow-model`) scores the same feature rows with
its own window and policy in the same batch; its verdict rides on `Verdict.shadow_verdict`
to the event log and the metrics, never into the answer, and its failures only count.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model import features, frames, templates, windows
from ..model.schema import LABELS
from . import policy
from .bundle import Bundle, load_bundle
from .state import SessionStore, event_key
from .stores import open_store

log = logging.getLogger(__name__)


_MAX_REDOS = 8   # rounds a request may be redone because another process won a race


class InvalidRequest(ValueError):
    """A request field is out of contract; `field` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class ScoreInput:
    account_id: str
    event_id: str
    ts: float
    prompt_tokens: int
    session_id: str = ""
    max_tokens: int = 0
    model: str = ""
    client_fingerprint: str = ""
    ip_prefix: str = ""
    account_created_at: float = 0.0
    template_hash: str = ""            # legacy: an upstream hash, read as a one-band signature
    prompt: str = ""
    elicits_reasoning: bool | None = None
    frame_signature: str = ""          # model.frames signature of the last user turn
    system_prompt: str = ""
    system_signature: str = ""

    def validate(self, signature_key_id: int = 0) -> None:
        """`signature_key_id`: the key id the scorer signs with; a signature made with
        another key is refused, never compared with ours."""
        for name in ("frame_signature", "system_signature"):
            sig = getattr(self, name)
            if sig:
                try:
                    frames.parse_signature(sig, expect_key_id=signature_key_id)
                except frames.SignatureError as e:
                    raise InvalidRequest(name, str(e)) from None
        if not self.account_id:
            raise InvalidRequest("account_id", "required, non-empty")
        if not self.event_id:
            raise InvalidRequest("event_id", "required, non-empty")
        if not np.isfinite(self.ts) or self.ts <= 0:
            raise InvalidRequest("ts", f"must be UTC epoch seconds > 0, got {self.ts!r}")
        if self.prompt_tokens < 0:
            raise InvalidRequest("prompt_tokens", f"must be >= 0, got {self.prompt_tokens}")
        if self.max_tokens < 0:
            raise InvalidRequest("max_tokens", f"must be >= 0, got {self.max_tokens}")
        if not np.isfinite(self.account_created_at) or self.account_created_at < 0:
            raise InvalidRequest("account_created_at", f"must be epoch seconds >= 0, got {self.account_created_at!r}")


@dataclass
class CompleteInput:
    account_id: str
    event_id: str
    completion_tokens: int
    status: int = 0
    session_id: str = ""
    latency_s: float = 0.0

    def validate(self) -> None:
        if not self.account_id:
            raise InvalidRequest("account_id", "required, non-empty")
        if not self.event_id:
            raise InvalidRequest("event_id", "required, non-empty")
        if self.completion_tokens < 0:
            raise InvalidRequest("completion_tokens", f"must be >= 0, got {self.completion_tokens}")


@dataclass
class ShadowVerdict:
    """The shadow model's verdict on a scored event: logged and counted, never answered."""
    probs: tuple[float, float, float]   # in schema.LABELS order, whatever the shadow bundle's order
    label: str
    action: str
    reasons: list[tuple[str, str]]
    model_version: str


@dataclass
class Verdict:
    probs: tuple[float, float, float]
    label: str
    action: str
    reasons: list[tuple[str, str]]
    events_in_session: int
    model_version: str
    session_id: str
    session_score: float = 0.0      # accumulated evidence in [0, 1]; the action derives from it
    shadow: bool = False
    duplicate: bool = False
    # With a shadow model loaded (Scorer.set_shadow): its verdict on the same event; None
    # without one, for retries, and when the shadow failed on this batch.
    shadow_verdict: ShadowVerdict | None = None


@dataclass
class SessionSnapshot:
    session_id: str
    events_in_session: int
    latest: Verdict | None
    events: list[dict] = field(default_factory=list)


def raw_fields(req: ScoreInput, key: bytes | None = None) -> dict:
    """The request-side raw fields kept in the ring (same meaning as RawEvents offline).
    The frame is, first to last: the request's frame_signature, its legacy template_hash,
    its prompt signed here with `key` (what model.schema does offline)."""
    sig = req.frame_signature or (frames.legacy_signature(req.template_hash) if req.template_hash else "")
    reasoning = req.elicits_reasoning
    if req.prompt:
        # Raw prompt text stops here: only its signature and flag go further.
        sig = sig or frames.frame_signature(req.prompt, key)
        reasoning = templates.elicits_reasoning(req.prompt) if reasoning is None else reasoning
        req.elicits_reasoning = bool(reasoning)
        req.prompt = ""
    if req.system_prompt:
        req.system_signature = req.system_signature or frames.system_signature(req.system_prompt, key)
        req.system_prompt = ""
    # Kept on the request (a redo or the event log reuses them, never the text).
    req.frame_signature = sig
    return {
        "ts": req.ts, "prompt_tokens": req.prompt_tokens, "completion_tokens": 0,
        "max_tokens": req.max_tokens if req.max_tokens > 0 else -1, "status": -1,
        "template_key": features.template_key(sig or None),
        "elicits_reasoning": int(bool(reasoning)),
        "browser_client": features.browser_flag(req.client_fingerprint or None),
        "account_created_at": req.account_created_at if req.account_created_at > 0 else np.nan,
    }


class Scorer:
    """Online scoring over a session store; thread-safe through its batcher thread."""

    def __init__(self, model: str | Path | Bundle, store: SessionStore | None = None, *,
                 shadow: bool = False, max_batch: int = 64, metrics=None, max_sessions: int = 1_000_000,
                 state: str | None = None, shadow_model: str | Path | Bundle | None = None,
                 signature_key: bytes | None = None):
        # signature_key: signs raw prompts that reach the scorer (the gateway client's key).
        self.signature_key = signature_key
        self.signature_key_id = frames.key_id(signature_key)
        self.bundle = model if isinstance(model, Bundle) else load_bundle(model, threads=1)
        # The ring holds W-1 earlier events: with the new request, one full window.
        # state: None/"memory" (in process) or redis://HOST:PORT/DB (stores.open_store).
        self.store = store if store is not None else open_store(
            state, max_sessions=max_sessions, ring=max(self.bundle.window - 1, 1), gap_s=self.bundle.gap_s,
            spec_hash=self.bundle.metadata["feature_spec_hash"])
        self.shadow = shadow
        self.max_batch = max_batch
        self.metrics = metrics
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = threading.Lock()
        # serving.event_log.EventLog (serve --event-log): the writer hands it each batch's
        # verdicts and each applied completion.
        self.event_log = None
        # A second bundle scoring every request beside the served one (set_shadow).
        self.shadow_bundle: Bundle | None = None
        self.shadow_errors = 0
        self._shadow_error_logged = -np.inf
        if shadow_model is not None:
            self.set_shadow(shadow_model)

    # ------------------------------------------------------------------ public API
    def score(self, req: ScoreInput, timeout: float | None = None) -> Verdict:
        return self._submit("score", [req], timeout)[0]

    def score_many(self, reqs: list[ScoreInput], timeout: float | None = None) -> list[Verdict]:
        return self._submit("score", reqs, timeout)

    def complete(self, req: CompleteInput, timeout: float | None = None) -> bool:
        return self._submit("complete", req, timeout)

    def get_session(self, account_id: str, session_id: str = "", timeout=None) -> SessionSnapshot | None:
        return self._submit("get", (account_id, session_id), timeout)

    def end_session(self, account_id: str, session_id: str = "", timeout=None) -> bool:
        return self._submit("end", (account_id, session_id), timeout)

    def reload(self, path: str | Path | None = None) -> Bundle:
        """Load and swap the bundle; raises (keeping the old one) if it is unusable."""
        new = load_bundle(path or self.bundle.path, threads=1)
        if new.window - 1 > self.store.ring_size:
            raise ValueError(f"bundle window {new.window} exceeds the session ring ({self.store.ring_size + 1}); "
                             f"restart the server to serve it")
        self.bundle = new   # one reference swap: the batcher picks it up at its next batch
        return new

    def set_shadow(self, path: str | Path | Bundle | None) -> Bundle | None:
        """Load a shadow bundle (None: remove the shadow). From the next batch on, every
        scored request is also scored by it on the same feature rows, with its own window
        and policy; its verdict goes to the event log and the metrics, never to the caller.
        Raises BundleError (unreadable bundle, another feature spec) or ValueError (a
        window the session ring cannot hold), keeping the old shadow."""
        if path is None:
            old, self.shadow_bundle = self.shadow_bundle, None
            if old is not None:
                log.info(json.dumps({"event": "shadow_removed", "shadow_model": old.version}))
            if self.metrics is not None:
                self.metrics.shadow_model.info({"version": "", "path": ""})
            return None
        new = path if isinstance(path, Bundle) else load_bundle(path, threads=1)
        if new.metadata["feature_spec_hash"] != self.bundle.metadata["feature_spec_hash"]:
            raise ValueError(f"shadow bundle {new.path}: feature spec {new.metadata['feature_spec_hash']} differs "
                             f"from the served model's {self.bundle.metadata['feature_spec_hash']}")
        if new.window - 1 > self.store.ring_size:
            raise ValueError(f"shadow bundle {new.path}: window {new.window} exceeds the session ring "
                             f"({self.store.ring_size + 1} events, from the served model's window)")
        if set(new.labels) != set(LABELS):
            raise ValueError(f"shadow bundle {new.path}: labels {list(new.labels)} are not {list(LABELS)}")
        self.shadow_bundle = new   # one reference swap, as reload
        log.info(json.dumps({"event": "shadow_loaded", "shadow_model": new.version, "path": str(new.path)}))
        if self.metrics is not None:
            self.metrics.shadow_model.info({"version": new.version, "path": str(new.path)})
        return new

    def close(self) -> None:
        """Nothing runs in the background; releases the store's connection, if any."""
        self.store.close()

    # ------------------------------------------------------------------ the writer
    def _submit(self, kind, payload, timeout):
        fut: Future = Future()
        self._q.put((kind, payload, fut))
        self._drain()
        return fut.result(timeout=timeout)

    def _drain(self) -> None:
        # Whoever holds the lock handles everything queued. Re-checking the queue after
        # releasing closes the gap where an item arrives while the lock is being let go.
        while self._writer.acquire(blocking=False):
            try:
                while True:
                    items = []
                    while len(items) < self.max_batch:
                        try:
                            items.append(self._q.get_nowait())
                        except queue.Empty:
                            break
                    if not items:
                        break
                    self._handle(items)
            finally:
                self._writer.release()
            if self._q.empty():
                return

    def _handle(self, items) -> None:
        bundle, shadow = self.bundle, self.shadow_bundle
        # Consecutive Score items are scored together; any other item is a barrier so
        # each session sees its calls in arrival order.
        run: list = []
        for item in items:
            if item[0] == "score":
                run.append(item)
                continue
            self._flush_scores(bundle, run, shadow)
            run = []
            kind, payload, fut = item
            try:
                fut.set_result({"complete": self._complete, "get": self._get, "end": self._end}[kind](bundle, payload))
            except Exception as e:  # never let one bad call kill the batcher
                fut.set_exception(e)
        self._flush_scores(bundle, run, shadow)

    def _flush_scores(self, bundle: Bundle, run, shadow: Bundle | None = None) -> None:
        if not run:
            return
        reqs = [(r, fut) for _, rs, fut in run for r in rs]
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(reqs))
        try:
            verdicts = self._score_requests(bundle, [r for r, _ in reqs], shadow)
        except Exception as e:
            log.exception("scoring failed")
            for _, _, fut in run:
                fut.set_exception(e)
            return
        if self.event_log is not None:
            try:
                self.event_log.append([r for r, _ in reqs], verdicts)
            except Exception:
                log.exception("event log append failed")
        i = 0
        for _, rs, fut in run:
            fut.set_result(verdicts[i:i + len(rs)])
            i += len(rs)

    # ------------------------------------------------------------------ scoring
    def _score_requests(self, bundle: Bundle, reqs: list[ScoreInput], shadow: Bundle | None = None) -> list[Verdict]:
        out: list[Verdict | None] = [None] * len(reqs)
        pending = list(range(len(reqs)))
        redos = 0
        while pending:
            # A session appears at most once per round: its second request must see the first.
            seen, this_round, later = set(), [], []
            for i in pending:
                key = (reqs[i].account_id, reqs[i].session_id)
                (later if key in seen else this_round).append(i)
                seen.add(key)
            redo = self._score_round(bundle, reqs, this_round, out, shadow)
            if redo:
                # Another process changed these sessions meanwhile: score them again on the
                # state the store sent back, ahead of their sessions' later requests.
                redos += 1
                if redos > _MAX_REDOS:
                    raise RuntimeError(f"session state kept changing under this scorer ({redos} rounds)")
            pending = sorted(redo + later)
        return out  # type: ignore[return-value]

    def _score_round(self, bundle: Bundle, reqs, idx: list[int], out, shadow: Bundle | None = None) -> list[int]:
        """Score one request of each of several sessions; returns the requests to redo."""
        st = self.store
        st.prepare([(reqs[i].account_id, reqs[i].session_id) for i in idx])
        try:
            self._score_prepared(bundle, reqs, idx, out, shadow)
        except BaseException:
            st.rollback()
            raise
        lost = st.commit()
        if not lost:
            return []
        redo = [i for i in idx if (reqs[i].account_id, reqs[i].session_id) in lost]
        for i in redo:
            out[i] = None
        return redo

    def _score_prepared(self, bundle: Bundle, reqs, idx: list[int], out, shadow: Bundle | None = None) -> None:
        st = self.store
        slots, evs, keys, metas = [], [], [], []
        for i in idx:
            r = reqs[i]
            key = (r.account_id, r.session_id)
            meta, _ = st.open(key, r.ts)
            ek = event_key(r.event_id)
            pos = st.find_event(meta.slot, ek)
            if pos >= 0:   # a retry: answer again, count nothing
                out[i] = self._verdict_at(bundle, meta, pos, duplicate=True)
                continue
            slots.append(meta.slot)
            evs.append(raw_fields(r, self.signature_key))
            keys.append((key, ek))
            metas.append(meta)
        if not slots:
            return
        slots_a = np.asarray(slots, dtype=np.int64)
        probs, rows, x, win_len = self._window_scores(bundle, slots_a, evs)
        labels, acts, reasons, score = self._decide(bundle, 0, slots_a, probs, rows, x, win_len)
        shadow_verdicts = None if shadow is None else self._shadow_verdicts(shadow, slots_a, x, win_len, rows)
        st.append(slots_a, evs, [ek for _, ek in keys])
        j = 0
        for i in idx:
            if out[i] is not None:
                continue
            (key, ek), meta = keys[j], metas[j]
            flagged = acts[j] != policy.Action.ALLOW.value
            if flagged and not st.is_flagged(key):
                # One structured line per escalation (not per request): ids and codes, never prompts.
                log.info(json.dumps({"event": "session_flagged", "account_id": key[0], "session_id": meta.name,
                                     "action": acts[j], "p_distillation_harvesting": round(float(probs[j, 2]), 4),
                                     "reasons": [c for c, _ in reasons[j]], "events": st.events_seen(meta.slot),
                                     "model_version": bundle.version}))
            st.set_flagged(key, flagged)
            out[i] = Verdict(probs=tuple(float(p) for p in probs[j]), label=labels[j], action=acts[j],
                             reasons=reasons[j], session_score=float(score[j]),
                             events_in_session=st.events_seen(meta.slot), model_version=bundle.version,
                             session_id=meta.name, shadow=self.shadow or bundle.policy.shadow,
                             shadow_verdict=shadow_verdicts[j] if shadow_verdicts is not None else None)
            j += 1

    def _window_scores(self, bundle: Bundle, slots: np.ndarray, new: list[dict] | None):
        """Rows of each session's held events (+ its new request) -> probabilities at the
        last row of each session's window of the last W rows, that row, and the windows
        (x (n, T, F) right-padded, lengths): explanations and the shadow reuse them."""
        st = self.store
        raw, seg, lengths = st.ring_events(slots, new)
        rows = features.compute(st.agg.take(slots), seg, raw)
        ends = np.cumsum(lengths)
        win_len = np.minimum(lengths, bundle.window)
        x = windows.gather(rows, ends - win_len, win_len)
        p = bundle.predict(x)[np.arange(len(lengths)), win_len - 1]
        return p, rows[ends - 1], x, win_len

    def _decide(self, bundle: Bundle, which: int, slots: np.ndarray, probs, rows, x, win_len):
        """One request per session: the policy's sequential decision on its state
        (`which`: 0 the served bundle's, 1 the shadow's), the state written back."""
        st = self.store
        state = st.decision[slots, which]
        names, acts, reasons, score = bundle.decide_events(
            probs, rows, np.arange(len(slots)), state, lambda idx: (x[idx], win_len[idx]))
        st.decision[slots, which] = state
        return names, acts, reasons, score

    def _shadow_verdicts(self, shadow: Bundle, slots, x, win_len, last) -> list[ShadowVerdict] | None:
        """The shadow's verdicts (its own window, policy and decision state); a failure is
        logged and counted, never passed on: the champion's answer does not depend on it."""
        try:
            if shadow.window < x.shape[1]:    # the shadow reads its own (shorter) window
                keep = np.minimum(win_len, shadow.window)
                x = windows.gather(x.reshape(-1, x.shape[2]), np.arange(len(x)) * x.shape[1] + win_len - keep, keep)
                win_len = keep
            p = shadow.predict(x)[np.arange(len(win_len)), win_len - 1]
            labels, acts, reasons, _ = self._decide(shadow, 1, slots, p, last, x, win_len)
            p = p[:, [shadow.labels.index(c) for c in LABELS]]
            return [ShadowVerdict(probs=tuple(float(v) for v in p[j]), label=labels[j], action=acts[j],
                                  reasons=reasons[j], model_version=shadow.version) for j in range(len(p))]
        except Exception:
            self.shadow_errors += 1
            if self.metrics is not None:
                self.metrics.shadow_errors.inc()
            now = time.monotonic()
            if now - self._shadow_error_logged >= 60.0:   # at most one traceback a minute
                self._shadow_error_logged = now
                log.exception("shadow model %s failed (%d failed batches so far); the served model's verdicts "
                              "stand", shadow.version, self.shadow_errors)
            return None

    def _verdict_at(self, bundle: Bundle, meta, pos: int, duplicate: bool = False) -> Verdict:
        """A retry's (or GetSession's) answer: the probabilities recomputed at held event
        `pos`, the action, reasons and session_score the session's decision state last gave
        (the accumulator does not move for a request it has already counted)."""
        st = self.store
        ring, seg, _ = st.ring_events(np.array([meta.slot]))
        rows = features.compute(st.agg.take([meta.slot]), seg, ring)
        lo = max(0, pos - bundle.window + 1)
        probs = bundle.predict(rows[None, lo:pos + 1])[:, -1]
        acts, reasons, score = policy.current_verdict(st.decision[[meta.slot], 0], rows[pos:pos + 1])
        label = bundle.labels[int(probs[0].argmax())]
        return Verdict(probs=tuple(float(p) for p in probs[0]), label=label, action=acts[0],
                       reasons=reasons[0], session_score=float(score[0]), events_in_session=st.events_seen(meta.slot),
                       model_version=bundle.version, session_id=meta.name,
                       shadow=self.shadow or bundle.policy.shadow,
                       duplicate=duplicate)

    # ------------------------------------------------------------------ other calls
    def _in_round(self, key, fn):
        """fn() over one prepared session, redone while the store reports a lost race."""
        st = self.store
        for _ in range(_MAX_REDOS + 1):
            st.prepare([key])
            try:
                result = fn()
            except BaseException:
                st.rollback()
                raise
            if not st.commit():
                return result
        raise RuntimeError(f"session state kept changing under this scorer ({_MAX_REDOS + 1} rounds)")

    def _complete(self, bundle, req: CompleteInput) -> bool:
        name = self._in_round((req.account_id, req.session_id), lambda: self._complete_prepared(req))
        if name is None:
            return False
        if self.event_log is not None:   # after the commit: only completions the state kept
            try:
                self.event_log.append_completion(req.account_id, name, req.event_id, req.completion_tokens,
                                                 req.status)
            except Exception:
                log.exception("event log append (completion) failed")
        return True

    def _complete_prepared(self, req: CompleteInput) -> str | None:
        """Apply a completion to its held event; the session's resolved name, None if not applied."""
        st = self.store
        meta = st.get((req.account_id, req.session_id))
        if meta is None:
            return None
        pos = st.find_event(meta.slot, event_key(req.event_id))
        if pos < 0:
            return None
        return meta.name if st.complete_event(meta.slot, pos, req.completion_tokens, req.status) else None

    def _get(self, bundle, key) -> SessionSnapshot | None:
        return self._in_round(key, lambda: self._get_prepared(bundle, key))

    def _get_prepared(self, bundle, key) -> SessionSnapshot | None:
        st = self.store
        meta = st.get(key)
        if meta is None:
            return None
        n = int(st.length[meta.slot])
        events = []
        if n:
            ring, seg, _ = st.ring_events(np.array([meta.slot]))
            rows = features.compute(st.agg.take([meta.slot]), seg, ring)
            for i in range(n):
                events.append({"event_key": int(st.ring["event_key"][meta.slot, i]),
                               "ts": float(ring.ts[i]), "prompt_tokens": int(ring.prompt_tokens[i]),
                               "completion_tokens": int(ring.completion_tokens[i]),
                               "completed": bool(st.ring["completed"][meta.slot, i]),
                               "features": rows[i].tolist()})
        return SessionSnapshot(session_id=meta.name, events_in_session=st.events_seen(meta.slot),
                               latest=self._verdict_at(bundle, meta, n - 1) if n else None, events=events)

    def _end(self, bundle, key) -> bool:
        return self.store.end(key)
