"""Gateway-side client of the Scorer service: deadlines, retries, circuit breaker, fail-open.

The gateway calls `score` when a request arrives and `complete` when it finishes. A scorer
that is down, slow or overloaded must never break or stall the gateway, so every call
returns within its deadline and never raises: when no verdict comes back the client
returns a *fail-open* verdict (`Verdict.fail_open=True`, action `ClientConfig.fail_open_action`,
`error` saying why) and counts it.

Failure handling, per call:

* one deadline (`deadline_s`) bounds the whole call, retries included: it is the most
  latency the scorer can add to a gateway request;
* `UNAVAILABLE` (connection refused or reset, server restarting) is retried `retries`
  times while the deadline allows; Score is idempotent by `event_id` on the server and a
  repeated Complete is not applied twice, so a retry never double-counts;
* UNAVAILABLE, DEADLINE_EXCEEDED and every other error status except INVALID_ARGUMENT count
  as breaker failures: `breaker_failures` in a row open the circuit, and while it is open
  calls fail open at once, without touching the network; after `breaker_reset_s` one trial
  call goes through (half-open): an answer closes the circuit, a failure re-opens it;
* RESOURCE_EXHAUSTED means the scorer shed the call (over its concurrent-RPC cap): not
  retried (that would add load), fails open with reason `overloaded` and counts as a breaker
  failure, so a scorer shedding steadily is left alone for `breaker_reset_s`;
* INVALID_ARGUMENT means the *gateway* sent a bad request (a bug to fix, not an outage): it
  does not count against the scorer's health (the scorer did answer), the verdict fails open
  with `error` naming the problem, and `requests_total{outcome="error"}` counts it. Requests
  the client cannot even build (wrong types) are handled the same way.

Raw prompts never leave the gateway: given `prompt` (the last user turn) and `system_prompt`,
the client computes their frame signatures (model.frames, keyed with `hmac_key`, the
signature key it shares with the scorer) and the reasoning-elicitation flag itself and sends
only those. A caller's own `template_hash` is still sent as is (a legacy one-band frame).

Metrics (prometheus_client, on the registry given, else the global one):
`distillguard_client_requests_total{outcome=ok|fail_open|error}` (fail_open: unreachable,
late, shed (overloaded) or open circuit; error: an error status or a request that could not be built; every
non-ok call still returns a fail-open verdict),
`distillguard_client_fail_open_total{reason=deadline|unavailable|overloaded|circuit_open|invalid|other}`
and `distillguard_client_latency_seconds{method}` (time added to the gateway, fail-opens included).

`ScorerClient` is the thread-safe sync client (one channel shared by all threads);
`AsyncScorerClient` is the same API for asyncio (grpc.aio). Both run the same policy code
(`_CallPolicy.plan`); only the lines that wait for the RPC differ.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable, Mapping, NamedTuple

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from ..model import frames, templates
from .stubs import pb, pb_grpc

__all__ = ["ClientConfig", "Verdict", "SessionState", "CircuitBreaker", "ScorerClient",
           "AsyncScorerClient", "build_score_request", "build_complete_request", "ACTIONS",
           "FeedbackReceipt", "FeedbackRejected"]

log = logging.getLogger(__name__)

ACTIONS = ("ALLOW", "THROTTLE", "CHALLENGE", "DEGRADE", "BLOCK")
FAIL_OPEN_REASONS = ("deadline", "unavailable", "overloaded", "circuit_open", "invalid", "other")
OUTCOMES = ("ok", "fail_open", "error")
# Below this much deadline left, a retry could not finish anyway.
_MIN_RETRY_BUDGET_S = 0.001


@dataclass
class ClientConfig:
    target: str                              # "host:port" of the scorer
    deadline_s: float = 0.050                # whole call, retries included
    retries: int = 1                         # extra attempts, only after UNAVAILABLE
    breaker_failures: int = 5                # consecutive failures that open the circuit
    breaker_reset_s: float = 5.0             # open -> half-open (one trial call) after this
    fail_open_action: str = "ALLOW"          # the action when no verdict came back
    hmac_key: bytes | None = None            # the signature key of the frame signatures computed here
    channel_credentials: grpc.ChannelCredentials | None = None   # None: plaintext channel
    channel_options: tuple = ()              # extra grpc channel args, appended last (they win)
    # Bearer token sent as `authorization: Bearer <token>` on every call (security.read_token
    # reads one from a file); TLS comes from channel_credentials (security.channel_credentials).
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("ClientConfig.target is empty")
        if self.fail_open_action not in ACTIONS:
            raise ValueError(f"fail_open_action must be one of {', '.join(ACTIONS)}, not {self.fail_open_action!r}")
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}")
        if self.retries < 0 or self.breaker_failures < 1 or self.breaker_reset_s < 0:
            raise ValueError("need retries >= 0, breaker_failures >= 1, breaker_reset_s >= 0")
        if isinstance(self.hmac_key, str):
            self.hmac_key = self.hmac_key.encode("utf-8")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise ValueError("token must be non-empty and contain no whitespace")

    def call_metadata(self) -> tuple | None:
        """Metadata sent with every call: the bearer token, if any."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else None

    def grpc_options(self) -> list[tuple[str, Any]]:
        # gRPC's default reconnect backoff grows to 120 s: a scorer that came back would stay
        # unreachable long after the breaker's half-open trial. Cap it near the reset period.
        # (Not grpc.min_reconnect_backoff_ms: despite its name it is the connect timeout, and a
        # small one would make a slow TLS handshake fail forever.)
        cap_ms = int(max(100.0, min(self.breaker_reset_s * 1000.0, 1000.0)))
        return [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", cap_ms),
                *self.channel_options]


# ------------------------------------------------------------------------------- results

@dataclass
class Verdict:
    p_human: float
    p_benign_automation: float
    p_distillation_harvesting: float
    label: str                        # "" when fail_open
    action: str                       # ALLOW | THROTTLE | CHALLENGE | DEGRADE | BLOCK
    reasons: list[tuple[str, str]]    # (code, evidence)
    events_in_session: int
    model_version: str
    shadow: bool                      # report the action, do not enforce it
    fail_open: bool = False           # True: no score came back, `action` is the configured default
    error: str | None = None          # why it failed open
    fail_open_reason: str | None = None   # deadline | unavailable | overloaded | circuit_open | invalid | other
    session_id: str = ""              # the session the scorer put the request in
    duplicate: bool = False           # the scorer had seen this event_id (a retry)

    @property
    def enforced_action(self) -> str:
        """The action to apply: ALLOW while the scorer runs in shadow mode."""
        return "ALLOW" if self.shadow else self.action


@dataclass
class SessionState:
    found: bool
    session_id: str
    events_in_session: int
    latest: Verdict | None
    recent_events: list[dict]
    feature_names: list[str]


@dataclass
class FeedbackReceipt:
    """What the scorer filed for a ReportFeedback call."""
    session_id: str                   # the session labelled (resolved when none was given)
    incident_id: str
    model_version: str                # "" when the scorer did not hold the session
    labelled_at: str                  # ISO-8601 UTC


class FeedbackRejected(RuntimeError):
    """ReportFeedback was not filed: `code` (grpc.StatusCode) and the server's `details`."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


def verdict_from_response(r: "pb.ScoreResponse") -> Verdict:
    return Verdict(
        p_human=r.p_human, p_benign_automation=r.p_benign_automation,
        p_distillation_harvesting=r.p_distillation_harvesting, label=r.label,
        action=pb.Action.Name(r.action), reasons=[(x.code, x.evidence) for x in r.reasons],
        events_in_session=r.events_in_session, model_version=r.model_version, shadow=r.shadow,
        session_id=r.session_id, duplicate=r.duplicate)


def fail_open_verdict(action: str, reason: str, error: str | None) -> Verdict:
    # NaN, not 0: "no score" must not read as "scored as not harvesting" downstream.
    nan = math.nan
    return Verdict(p_human=nan, p_benign_automation=nan, p_distillation_harvesting=nan, label="",
                   action=action, reasons=[], events_in_session=0, model_version="", shadow=False,
                   fail_open=True, error=error, fail_open_reason=reason)


def session_state_from_response(r: "pb.SessionInfo") -> SessionState:
    latest = verdict_from_response(r.latest) if r.found and r.HasField("latest") else None
    events = [{"event_id": e.event_id, "ts": e.ts, "prompt_tokens": e.prompt_tokens,
               "completion_tokens": e.completion_tokens, "completed": e.completed,
               "features": list(e.features)} for e in r.recent_events]
    return SessionState(found=r.found, session_id=r.session_id, events_in_session=r.events_in_session,
                        latest=latest, recent_events=events, feature_names=list(r.feature_names))


# ------------------------------------------------------------------------------- requests

def build_score_request(account_id: str, event_id: str, ts: float, prompt_tokens: int, *,
                        session_id: str | None = "", prompt: str | None = None,
                        template_hash: str | None = None, elicits_reasoning: bool | None = None,
                        max_tokens: int | None = 0, model: str | None = "",
                        client_fingerprint: str | None = "", ip_prefix: str | None = "",
                        account_created_at: float | None = 0.0,
                        frame_signature: str | None = None, system_prompt: str | None = None,
                        system_signature: str | None = None,
                        hmac_key: bytes | None = None) -> "pb.ScoreRequest":
    """The ScoreRequest for one arriving API request. None means "not given" for every
    optional field. `prompt` / `system_prompt` are reduced here to their frame signatures
    (keyed with `hmac_key`) and the reasoning flag and are not put in the message; an
    explicit `frame_signature` / `template_hash` / `system_signature` / `elicits_reasoning` wins."""
    if prompt is not None:
        if frame_signature is None and template_hash is None:
            frame_signature = frames.frame_signature(prompt, hmac_key)
        if elicits_reasoning is None:
            elicits_reasoning = templates.elicits_reasoning(prompt)
    if system_prompt is not None and system_signature is None:
        system_signature = frames.system_signature(system_prompt, hmac_key)
    req = pb.ScoreRequest(
        account_id=account_id, session_id=session_id or "", event_id=event_id, ts=float(ts),
        prompt_tokens=int(prompt_tokens), max_tokens=int(max_tokens or 0), model=model or "",
        client_fingerprint=client_fingerprint or "", ip_prefix=ip_prefix or "",
        # Unknown creation time (None, NaN from a null column) goes out as 0 = unknown.
        account_created_at=float(account_created_at) if account_created_at and math.isfinite(account_created_at)
        else 0.0, template_hash=template_hash or "", frame_signature=frame_signature or "",
        system_signature=system_signature or "")
    if elicits_reasoning is not None:
        req.elicits_reasoning = bool(elicits_reasoning)
    return req


def build_complete_request(account_id: str, event_id: str, completion_tokens: int, *, status: int | None = 200,
                           latency_s: float | None = 0.0, session_id: str | None = "") -> "pb.CompleteRequest":
    return pb.CompleteRequest(account_id=account_id, session_id=session_id or "", event_id=event_id,
                              completion_tokens=int(completion_tokens), status=int(status or 0),
                              latency_s=float(latency_s or 0.0))


# ------------------------------------------------------------------------------- breaker

class CircuitBreaker:
    """closed -> open after `failures` consecutive failures -> half-open after `reset_s`
    (one trial call at a time) -> closed on an answer, open again on a failure.

    Thread-safe; the async client uses it from its event loop (the lock is only held for
    a few attribute updates, never across an await)."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic):
        self.failures, self.reset_s, self._clock = failures, reset_s, clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_out = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.reset_s:
                return self.HALF_OPEN
            return self._state

    def acquire(self) -> bool:
        """May a call go out now? In half-open, True for exactly one caller until it settles."""
        with self._lock:
            if self._state == self.CLOSED:
                return True
            if self._state == self.OPEN:
                if self._clock() - self._opened_at < self.reset_s:
                    return False
                self._state = self.HALF_OPEN
                self._trial_out = False
                log.warning("scorer circuit half-open: sending a trial call")
            if self._trial_out:
                return False
            self._trial_out = True
            return True

    def success(self) -> None:
        # Any answer shows the scorer is up, whatever state the breaker is in.
        with self._lock:
            if self._state != self.CLOSED:
                log.warning("scorer circuit closed: the scorer answered again")
            self._state, self._consecutive, self._trial_out = self.CLOSED, 0, False

    def failure(self) -> None:
        with self._lock:
            if self._state == self.HALF_OPEN:
                self._open("half-open trial failed")
            elif self._state == self.CLOSED:
                self._consecutive += 1
                if self._consecutive >= self.failures:
                    self._open(f"{self._consecutive} consecutive failures")
            # Already open: a call that left before it opened; the open period stands.

    def release(self) -> None:
        """A call ended without telling anything about the scorer (cancelled by the caller)."""
        with self._lock:
            self._trial_out = False

    def _open(self, why: str) -> None:
        self._state, self._opened_at, self._trial_out = self.OPEN, self._clock(), False
        log.warning("scorer circuit open (%s): failing open for %.1fs", why, self.reset_s)


# ------------------------------------------------------------------------------- metrics

class _Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("distillguard_client_requests", "Scorer calls by outcome "
                                "(fail_open: scorer unreachable, late, overloaded or circuit open; "
                                "error: request refused)",
                                ["outcome"], registry=registry)
        self.fail_open = Counter("distillguard_client_fail_open", "Calls answered with the default verdict, by reason",
                                 ["reason"], registry=registry)
        self.latency = Histogram("distillguard_client_latency_seconds", "Time a scorer call added to the gateway",
                                 ["method"], registry=registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
        # Zero series from the start, so rate() and alerts see them before the first failure.
        for o in OUTCOMES:
            self.requests.labels(outcome=o)
        for r in FAIL_OPEN_REASONS:
            self.fail_open.labels(reason=r)

    def record(self, method: str, reason: str | None, seconds: float) -> None:
        if reason is None:
            outcome = "ok"
        else:
            outcome = "error" if reason in ("invalid", "other") else "fail_open"
            self.fail_open.labels(reason=reason).inc()
        self.requests.labels(outcome=outcome).inc()
        self.latency.labels(method=method).observe(seconds)


# One metric set per registry: several clients (sync and async, or one per target) in a
# process must not register the same names twice.
_METRICS: "weakref.WeakKeyDictionary[CollectorRegistry, _Metrics]" = weakref.WeakKeyDictionary()
_METRICS_LOCK = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    with _METRICS_LOCK:
        m = _METRICS.get(registry)
        if m is None:
            m = _METRICS[registry] = _Metrics(registry)
        return m


# ------------------------------------------------------------------------------- policy

class _Outcome(NamedTuple):
    reply: Any                 # the response message, or None
    reason: str | None         # fail-open reason when there is no reply
    error: str | None


def _classify(exc: BaseException) -> tuple[str, bool]:
    """-> (fail-open reason, counts as a breaker failure)."""
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "deadline", True
        if code == grpc.StatusCode.UNAVAILABLE:
            return "unavailable", True
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:    # shed by the scorer's concurrency cap
            return "overloaded", True
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return "invalid", False
        return "other", True
    # Not an RPC status: a local failure (closed channel, serialisation), not the scorer's.
    return "other", False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


class _CallPolicy:
    """Deadline, retry, breaker and metrics for one call, as a generator so the sync and
    async clients share it: it yields the timeout for each attempt, is sent back
    (reply, None) or (None, exception), and returns an _Outcome."""

    def __init__(self, config: ClientConfig, registry: CollectorRegistry | None):
        self.config = config
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_s)
        self.metrics = _metrics_for(REGISTRY if registry is None else registry)

    def plan(self, method: str, deadline_s: float | None = None) -> Generator[float, tuple, _Outcome]:
        t0 = time.perf_counter()
        if not self.breaker.acquire():
            self.metrics.record(method, "circuit_open", time.perf_counter() - t0)
            return _Outcome(None, "circuit_open", "circuit open: scorer failing, not called")
        end = t0 + (deadline_s or self.config.deadline_s)
        attempt, settled = 0, False
        try:
            timeout = end - t0
            while True:
                reply, exc = yield timeout
                if exc is None:
                    self.breaker.success()
                    settled = True
                    self.metrics.record(method, None, time.perf_counter() - t0)
                    return _Outcome(reply, None, None)
                reason, is_failure = _classify(exc)
                timeout = end - time.perf_counter()
                if reason == "unavailable" and attempt < self.config.retries and timeout > _MIN_RETRY_BUDGET_S:
                    attempt += 1
                    continue
                if is_failure:
                    self.breaker.failure()
                elif reason == "invalid":
                    self.breaker.success()      # the scorer is up: it answered
                else:
                    self.breaker.release()
                settled = True
                self.metrics.record(method, reason, time.perf_counter() - t0)
                log.debug("scorer %s failed open (%s): %s", method, reason, _describe(exc))
                return _Outcome(None, reason, _describe(exc))
        finally:
            if not settled:           # the caller went away mid-call (task cancelled)
                self.breaker.release()

    def rejected(self, method: str, exc: BaseException) -> _Outcome:
        """A request the client could not build: the caller's bug, the scorer never saw it."""
        self.metrics.record(method, "invalid", 0.0)
        return _Outcome(None, "invalid", f"bad request: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------- clients

class _ClientBase:
    """Request building and reply conversion shared by the sync and async clients."""

    def __init__(self, config: ClientConfig | str, registry: CollectorRegistry | None = None):
        self.config = config if isinstance(config, ClientConfig) else ClientConfig(target=config)
        self._policy = _CallPolicy(self.config, registry)

    @property
    def breaker(self) -> CircuitBreaker:
        return self._policy.breaker

    def _score_request(self, fields: Mapping[str, Any]):
        try:
            return build_score_request(**fields, hmac_key=self.config.hmac_key), None
        except Exception as e:         # noqa: BLE001 - a bad field must not reach the gateway as an exception
            return None, e

    def _batch_request(self, items: Iterable[Mapping[str, Any]]):
        reqs = []
        for i, item in enumerate(items):
            req, err = self._score_request(item)
            if err is not None:
                return None, type(err)(f"requests[{i}]: {err}")
            reqs.append(req)
        return pb.ScoreBatchRequest(requests=reqs), None

    def _complete_request(self, account_id, event_id, completion_tokens, status, latency_s, session_id):
        try:
            return build_complete_request(account_id, event_id, completion_tokens, status=status,
                                          latency_s=latency_s, session_id=session_id), None
        except Exception as e:         # noqa: BLE001
            return None, e

    def _verdict(self, out: _Outcome) -> Verdict:
        if out.reply is None:
            return fail_open_verdict(self.config.fail_open_action, out.reason, out.error)
        return verdict_from_response(out.reply)

    def _verdicts(self, out: _Outcome, n: int) -> list[Verdict]:
        if out.reply is None:
            return [fail_open_verdict(self.config.fail_open_action, out.reason, out.error) for _ in range(n)]
        return [verdict_from_response(r) for r in out.reply.responses]

    @staticmethod
    def _score_fields(account_id, event_id, ts, prompt_tokens, **kw) -> dict:
        return dict(account_id=account_id, event_id=event_id, ts=ts, prompt_tokens=prompt_tokens, **kw)


def _try(fn: Callable[[], Any]) -> tuple:
    try:
        return fn(), None
    except Exception as e:             # noqa: BLE001 - every failure becomes a fail-open outcome
        return None, e


class ScorerClient(_ClientBase):
    """Sync client; thread-safe, one channel reused by every call. Never raises from a call
    on the request path (`report_feedback`, off that path, raises when nothing was filed).

    >>> with ScorerClient(ClientConfig("127.0.0.1:50051")) as c:
    ...     v = c.score("acct_1", "req-1", time.time(), 120, prompt="Summarise: ...")
    """

    def __init__(self, config: ClientConfig | str, registry: CollectorRegistry | None = None):
        super().__init__(config, registry)
        cfg = self.config
        if cfg.channel_credentials is not None:
            self._channel = grpc.secure_channel(cfg.target, cfg.channel_credentials, options=cfg.grpc_options())
        else:
            self._channel = grpc.insecure_channel(cfg.target, options=cfg.grpc_options())
        self._stub = pb_grpc.ScorerStub(self._channel)
        self._metadata = cfg.call_metadata()

    def _call(self, rpc, request, method: str, deadline_s: float | None = None) -> _Outcome:
        plan = self._policy.plan(method, deadline_s)
        try:
            timeout = next(plan)
            while True:
                timeout = plan.send(_try(lambda: rpc(request, timeout=timeout, metadata=self._metadata)))
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()

    def _call_background(self, rpc, request, method: str) -> None:
        """Like _call, without waiting: each attempt's completion callback sends the next."""
        plan = self._policy.plan(method)

        def step(sent) -> None:
            try:
                timeout = next(plan) if sent is None else plan.send(sent)
            except StopIteration:
                return
            fut, err = _try(lambda: rpc.future(request, timeout=timeout, metadata=self._metadata))
            if err is not None:
                step((None, err))
            else:
                fut.add_done_callback(lambda f: step(_try(f.result)))
        step(None)

    def wait_ready(self, timeout_s: float = 5.0) -> bool:
        """Connect now (e.g. at gateway start) so the first request does not pay for it."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
            return True
        except grpc.FutureTimeoutError:
            return False

    def score(self, account_id: str, event_id: str, ts: float, prompt_tokens: int, *, session_id: str = "",
              prompt: str | None = None, template_hash: str | None = None, elicits_reasoning: bool | None = None,
              max_tokens: int = 0, model: str = "", client_fingerprint: str = "", ip_prefix: str = "",
              account_created_at: float = 0.0, frame_signature: str | None = None,
              system_prompt: str | None = None, system_signature: str | None = None) -> Verdict:
        """Score an arriving request. `prompt` and `system_prompt` are signed here and never sent."""
        req, err = self._score_request(self._score_fields(
            account_id, event_id, ts, prompt_tokens, session_id=session_id, prompt=prompt,
            template_hash=template_hash, elicits_reasoning=elicits_reasoning, max_tokens=max_tokens,
            model=model, client_fingerprint=client_fingerprint, ip_prefix=ip_prefix,
            account_created_at=account_created_at, frame_signature=frame_signature,
            system_prompt=system_prompt, system_signature=system_signature))
        out = self._policy.rejected("score", err) if err is not None else self._call(self._stub.Score, req, "score")
        return self._verdict(out)

    def score_batch(self, requests: list[Mapping[str, Any]], deadline_s: float | None = None) -> list[Verdict]:
        """Score several requests (dicts of `score`'s arguments) in one call, in order. One
        bad request fails the whole batch open (the server would refuse it whole too)."""
        requests = list(requests)
        req, err = self._batch_request(requests)
        out = (self._policy.rejected("score_batch", err) if err is not None
               else self._call(self._stub.ScoreBatch, req, "score_batch", deadline_s))
        return self._verdicts(out, len(requests))

    def complete(self, account_id: str, event_id: str, completion_tokens: int, status: int = 200,
                 latency_s: float = 0.0, session_id: str = "", *, wait: bool = True) -> bool:
        """Report a finished request. Never raises. wait=True: True when the scorer applied it.
        wait=False: send in the background and return True at once (False if not sent)."""
        req, err = self._complete_request(account_id, event_id, completion_tokens, status, latency_s, session_id)
        if err is not None:
            self._policy.rejected("complete", err)
            return False
        if not wait:
            self._call_background(self._stub.Complete, req, "complete")
            return True
        out = self._call(self._stub.Complete, req, "complete")
        return bool(out.reply is not None and out.reply.applied)

    def get_session(self, account_id: str, session_id: str = "", deadline_s: float | None = None) -> SessionState | None:
        """The scorer's view of a session; None when the scorer did not answer."""
        out = self._call(self._stub.GetSession, pb.SessionRef(account_id=account_id, session_id=session_id or ""),
                         "get_session", deadline_s)
        return None if out.reply is None else session_state_from_response(out.reply)

    def end_session(self, account_id: str, session_id: str = "", deadline_s: float | None = None) -> bool:
        out = self._call(self._stub.EndSession, pb.SessionRef(account_id=account_id, session_id=session_id or ""),
                         "end_session", deadline_s)
        return bool(out.reply is not None and out.reply.ended)

    def report_feedback(self, account_id: str, *, label: str, reason: str, session_id: str = "",
                        reported_by: str = "", incident_id: str = "", deadline_s: float = 10.0) -> FeedbackReceipt:
        """Report a wrong verdict: `label` is the correct class, `reason` why (never prompt
        text). session_id "" = the account's current implicit session as the scorer names it.

        Not on the gateway's request path, so not fail-open: a report that was not filed
        raises FeedbackRejected (INVALID_ARGUMENT naming the field, FAILED_PRECONDITION with
        no labels store, NOT_FOUND, UNAVAILABLE, ...); a retry could file it twice, so none
        is made. It bypasses the circuit breaker: a refused report says nothing about the
        scorer's health for Score."""
        req = pb.FeedbackRequest(account_id=account_id, session_id=session_id or "", correct_label=label,
                                 reason=reason, reported_by=reported_by or "", incident_id=incident_id or "")
        try:
            r = self._stub.ReportFeedback(req, timeout=deadline_s, metadata=self._metadata)
        except grpc.RpcError as e:
            raise FeedbackRejected(e.code(), e.details() or "") from None
        return FeedbackReceipt(session_id=r.session_id, incident_id=r.incident_id,
                               model_version=r.model_version, labelled_at=r.labelled_at)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ScorerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncScorerClient(_ClientBase):
    """asyncio flavour of ScorerClient (grpc.aio), same policy and results; use it from
    one event loop. The channel is opened on first use, inside the running loop."""

    def __init__(self, config: ClientConfig | str, registry: CollectorRegistry | None = None):
        super().__init__(config, registry)
        self._channel: grpc.aio.Channel | None = None
        self._stub_obj = None
        self._background: set[asyncio.Task] = set()

    @property
    def _stub(self):
        if self._stub_obj is None:      # grpc.aio binds a channel to the loop it is created in
            cfg = self.config
            if cfg.channel_credentials is not None:
                self._channel = grpc.aio.secure_channel(cfg.target, cfg.channel_credentials, options=cfg.grpc_options())
            else:
                self._channel = grpc.aio.insecure_channel(cfg.target, options=cfg.grpc_options())
            self._stub_obj = pb_grpc.ScorerStub(self._channel)
        return self._stub_obj

    async def _call(self, rpc, request, method: str, deadline_s: float | None = None) -> _Outcome:
        plan = self._policy.plan(method, deadline_s)
        try:
            timeout = next(plan)
            while True:
                try:
                    sent = (await rpc(request, timeout=timeout, metadata=self.config.call_metadata()), None)
                except Exception as e:     # noqa: BLE001 - CancelledError is not an Exception and propagates
                    sent = (None, e)
                timeout = plan.send(sent)
        except StopIteration as stop:
            return stop.value
        finally:
            plan.close()

    async def wait_ready(self, timeout_s: float = 5.0) -> bool:
        self._stub      # noqa: B018 - opens the channel
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def score(self, account_id: str, event_id: str, ts: float, prompt_tokens: int, *, session_id: str = "",
                    prompt: str | None = None, template_hash: str | None = None,
                    elicits_reasoning: bool | None = None, max_tokens: int = 0, model: str = "",
                    client_fingerprint: str = "", ip_prefix: str = "", account_created_at: float = 0.0,
                    frame_signature: str | None = None, system_prompt: str | None = None,
                    system_signature: str | None = None) -> Verdict:
        req, err = self._score_request(self._score_fields(
            account_id, event_id, ts, prompt_tokens, session_id=session_id, prompt=prompt,
            template_hash=template_hash, elicits_reasoning=elicits_reasoning, max_tokens=max_tokens,
            model=model, client_fingerprint=client_fingerprint, ip_prefix=ip_prefix,
            account_created_at=account_created_at, frame_signature=frame_signature,
            system_prompt=system_prompt, system_signature=system_signature))
        out = (self._policy.rejected("score", err) if err is not None
               else await self._call(self._stub.Score, req, "score"))
        return self._verdict(out)

    async def score_batch(self, requests: list[Mapping[str, Any]], deadline_s: float | None = None) -> list[Verdict]:
        requests = list(requests)
        req, err = self._batch_request(requests)
        out = (self._policy.rejected("score_batch", err) if err is not None
               else await self._call(self._stub.ScoreBatch, req, "score_batch", deadline_s))
        return self._verdicts(out, len(requests))

    async def complete(self, account_id: str, event_id: str, completion_tokens: int, status: int = 200,
                       latency_s: float = 0.0, session_id: str = "", *, wait: bool = True) -> bool:
        req, err = self._complete_request(account_id, event_id, completion_tokens, status, latency_s, session_id)
        if err is not None:
            self._policy.rejected("complete", err)
            return False
        if not wait:
            # Held in a set: the loop keeps only weak references to tasks.
            task = asyncio.ensure_future(self._call(self._stub.Complete, req, "complete"))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return True
        out = await self._call(self._stub.Complete, req, "complete")
        return bool(out.reply is not None and out.reply.applied)

    async def get_session(self, account_id: str, session_id: str = "",
                          deadline_s: float | None = None) -> SessionState | None:
        out = await self._call(self._stub.GetSession, pb.SessionRef(account_id=account_id, session_id=session_id or ""),
                               "get_session", deadline_s)
        return None if out.reply is None else session_state_from_response(out.reply)

    async def end_session(self, account_id: str, session_id: str = "", deadline_s: float | None = None) -> bool:
        out = await self._call(self._stub.EndSession, pb.SessionRef(account_id=account_id, session_id=session_id or ""),
                               "end_session", deadline_s)
        return bool(out.reply is not None and out.reply.ended)

    async def close(self) -> None:
        if self._background:
            # Background completes are bounded by their deadline: let them finish.
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub_obj = None, None

    async def __aenter__(self) -> "AsyncScorerClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
