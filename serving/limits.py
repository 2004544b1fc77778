"""Input limits and load shedding of the scorer server.

Every request field the scorer reads has a bound, so no request, however built, can make
the server do unbounded work, hold unbounded memory or move its state somewhere it should
not go. A breach is `InvalidRequest(field, ...)` -> `INVALID_ARGUMENT` naming the field
(`requests[i].field` inside ScoreBatch), counted in `distillguard_rejected_requests{method,
field}`, and is raised before the request reaches the scorer, so it never touches state.

What each limit protects (defaults in `RequestLimits`):

* ids (`account_id`, `session_id`, `event_id`) <= 256 UTF-8 bytes: they are dictionary keys
  of live sessions and appear in logs.
* `model`, `client_fingerprint`, `ip_prefix`, `template_hash`, `frame_signature`,
  `system_signature` <= 1024 bytes; raw `prompt` (and `system_prompt`)
  <= 1 MiB (it is hashed on arrival and dropped; the hash reads the frame, not the bulk).
* `prompt_tokens`, `max_tokens`, `completion_tokens` <= 10M: far above any model's context,
  and below the int32 columns of the session ring (no silent wrap-around).
* `status` in 0..999 (HTTP-like; 0 = unknown), `latency_s` finite and >= 0.
* `ts` in [`min_ts`, now + `max_ts_ahead_s`] by the server's wall clock (default 2015-01-01 ..
  now + 1 h), optionally also >= now - `max_ts_age_s` (off by default: replaying or
  backfilling history is legitimate). The upper bound matters: session expiry follows the
  newest event time seen (the store's watermark), so one request stamped a year ahead
  would otherwise expire every live session. `account_created_at` <= now + `max_ts_ahead_s`.
* ReportFeedback: `account_id`, `session_id`, `incident_id`, `reported_by` <= 256 bytes,
  `reason` <= 1024 bytes (it is written to the labels store).
* ScoreBatch: at most `max_batch` (1024) requests.
* whole message <= `max_message_bytes` (4 MiB, gRPC's own default made explicit): enforced
  by gRPC (`grpc.max_receive_message_length`), which answers `RESOURCE_EXHAUSTED` before any
  handler runs (so it is not counted in `distillguard_rejected_requests`).
* concurrent RPCs <= `max_concurrent_rpcs` (256): gRPC's `maximum_concurrent_rpcs` answers
  `RESOURCE_EXHAUSTED` ("Concurrent RPC limit exceeded!") beyond it, on its polling thread,
  without a handler thread. RPCs in flight include those queued for a worker thread, so an
  accepted call waits for at most ~cap / throughput. Health checks count too: under
  overload a probe may be shed. `ShedCounter` counts the shed calls as
  `distillguard_requests_total{code="RESOURCE_EXHAUSTED"}`.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import grpc

from .scorer import CompleteInput, InvalidRequest, ScoreInput

__all__ = ["RequestLimits", "ShedCounter", "metric_field", "MIN_TS_2015"]

MIN_TS_2015 = 1_420_070_400.0          # 2015-01-01T00:00:00Z
_MiB = 1024 * 1024


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on what one request may carry; `None` switches an optional bound off."""

    max_message_bytes: int = 4 * _MiB          # gRPC receive limit (RESOURCE_EXHAUSTED from gRPC)
    max_concurrent_rpcs: int | None = 256      # RPCs in flight (queued + running); None: no cap
    max_batch: int = 1024                      # requests in one ScoreBatch
    max_id_bytes: int = 256                    # account_id, session_id, event_id
    max_string_bytes: int = 1024               # model, client_fingerprint, ip_prefix, template_hash
    max_prompt_bytes: int = 1 * _MiB           # raw prompt (hashed, then dropped)
    max_token_count: int = 10_000_000          # prompt_tokens, max_tokens, completion_tokens
    max_status: int = 999                      # HTTP-like status; 0 = unknown
    min_ts: float = MIN_TS_2015                # ts earlier than this is refused
    max_ts_ahead_s: float = 3600.0             # ts (and account_created_at) later than now + this
    max_ts_age_s: float | None = None          # ts earlier than now - this (None: only min_ts)
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        positive = ("max_message_bytes", "max_batch", "max_id_bytes", "max_string_bytes", "max_prompt_bytes",
                    "max_token_count", "max_status")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"RequestLimits.{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_concurrent_rpcs is not None and self.max_concurrent_rpcs < 1:
            raise ValueError(f"RequestLimits.max_concurrent_rpcs must be >= 1 or None, got {self.max_concurrent_rpcs}")
        if not (math.isfinite(self.min_ts) and self.min_ts >= 0):
            raise ValueError(f"RequestLimits.min_ts must be finite epoch seconds >= 0, got {self.min_ts!r}")
        if not self.max_ts_ahead_s >= 0:
            raise ValueError(f"RequestLimits.max_ts_ahead_s must be >= 0, got {self.max_ts_ahead_s!r}")
        if self.max_ts_age_s is not None and not self.max_ts_age_s > 0:
            raise ValueError(f"RequestLimits.max_ts_age_s must be > 0 or None, got {self.max_ts_age_s!r}")

    # ------------------------------------------------------------------ gRPC settings
    def grpc_options(self) -> list[tuple[str, int]]:
        return [("grpc.max_receive_message_length", int(self.max_message_bytes))]

    # ------------------------------------------------------------------ checks
    def check_score(self, r: ScoreInput, now: float | None = None) -> None:
        """Raise InvalidRequest naming the first field of a Score request out of bounds."""
        for name in ("account_id", "session_id", "event_id"):
            _check_len(name, getattr(r, name), self.max_id_bytes)
        for name in ("model", "client_fingerprint", "ip_prefix", "template_hash", "frame_signature",
                     "system_signature"):
            _check_len(name, getattr(r, name), self.max_string_bytes)
        _check_len("prompt", r.prompt, self.max_prompt_bytes)
        _check_len("system_prompt", r.system_prompt, self.max_prompt_bytes)
        for name in ("prompt_tokens", "max_tokens"):
            self._check_tokens(name, getattr(r, name))
        now = self.clock() if now is None else now
        hi = now + self.max_ts_ahead_s
        lo = self.min_ts if self.max_ts_age_s is None else max(self.min_ts, now - self.max_ts_age_s)
        if not lo <= r.ts <= hi:          # NaN fails too
            raise InvalidRequest("ts", f"must be UTC epoch seconds in [{lo:.0f}, {hi:.0f}] (server clock "
                                       f"{now:.0f}, at most {self.max_ts_ahead_s:g} s ahead), got {r.ts!r}")
        if not r.account_created_at <= hi:
            raise InvalidRequest("account_created_at", f"must be <= {hi:.0f} (server clock + "
                                                       f"{self.max_ts_ahead_s:g} s), got {r.account_created_at!r}")

    def check_complete(self, r: CompleteInput) -> None:
        for name in ("account_id", "session_id", "event_id"):
            _check_len(name, getattr(r, name), self.max_id_bytes)
        self._check_tokens("completion_tokens", r.completion_tokens)
        if not 0 <= r.status <= self.max_status:
            raise InvalidRequest("status", f"must be an HTTP-like status in 0..{self.max_status} (0 = unknown), "
                                           f"got {r.status}")
        if not (math.isfinite(r.latency_s) and r.latency_s >= 0):
            raise InvalidRequest("latency_s", f"must be finite seconds >= 0, got {r.latency_s!r}")

    def check_session_ref(self, account_id: str, session_id: str) -> None:
        _check_len("account_id", account_id, self.max_id_bytes)
        _check_len("session_id", session_id, self.max_id_bytes)

    def check_feedback(self, r) -> None:
        """ReportFeedback: ids (and reported_by) <= the id bound, the reason <= the string bound."""
        for name in ("account_id", "session_id", "incident_id", "reported_by"):
            _check_len(name, getattr(r, name), self.max_id_bytes)
        _check_len("reason", r.reason, self.max_string_bytes)

    def check_batch_size(self, n: int) -> None:
        if n > self.max_batch:
            raise InvalidRequest("requests", f"at most {self.max_batch} requests per ScoreBatch, got {n}")

    def _check_tokens(self, name: str, v: int) -> None:
        if v > self.max_token_count:
            raise InvalidRequest(name, f"must be <= {self.max_token_count}, got {v}")


def _check_len(name: str, s: str, limit: int) -> None:
    n = len(s)                  # characters: a lower bound of UTF-8 bytes, an upper one / 4
    if n * 4 <= limit:
        return
    if n <= limit:
        n = len(s.encode("utf-8", "surrogatepass"))
        if n <= limit:
            return
    # The value itself is never echoed: it may be huge or hostile (it would land in logs).
    raise InvalidRequest(name, f"longer than {limit} UTF-8 bytes (got at least {n})")


_BATCH_ITEM = re.compile(r"^requests\[\d+\]\.")


def metric_field(name: str) -> str:
    """The `field` label of a rejected request: ScoreBatch's index dropped (bounded cardinality)."""
    return _BATCH_ITEM.sub("", name)


class ShedCounter(grpc.ServerInterceptor):
    """Counts the calls gRPC sheds with RESOURCE_EXHAUSTED under `maximum_concurrent_rpcs`.

    gRPC rejects those calls on its polling thread with no hook of its own. It decides under
    its server lock, after looking up the handler (interceptors included) and comparing the
    server's count of admitted RPCs with the cap; this interceptor runs inside that same
    lock, reads the same two numbers and so sees exactly the calls that will be shed. It
    reads private state of grpc's server (`_state.active_rpc_count`, pinned grpcio
    version); if that is missing it counts nothing and never fails a call. Put it first in
    the interceptor list so its lookup covers the others'.
    """

    def __init__(self, on_shed: Callable[[str], None]):
        self._on_shed = on_shed
        self._state = None

    def attach(self, server: grpc.Server) -> None:
        state = getattr(server, "_state", None)
        if hasattr(state, "active_rpc_count") and hasattr(state, "maximum_concurrent_rpcs"):
            self._state = state

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        st = self._state
        if handler is not None and st is not None:
            try:
                cap = st.maximum_concurrent_rpcs
                if cap is not None and st.active_rpc_count >= cap:
                    self._on_shed(handler_call_details.method)
            except Exception:   # noqa: BLE001 - counting must never fail a call
                pass
        return handler
