"""gRPC server: a thin servicer translating proto <-> scorer domain objects.

`create_server(address, model, config) -> (server, port)` builds and starts it (port 0 picks
a free one); `ServeConfig` holds everything else a server is told. Health (`grpc.health.v1`)
says NOT_SERVING while loading and while draining; reflection makes it usable with grpcurl.

Transport and auth (`security.TransportConfig`): TLS / mutual TLS from PEM files and bearer
tokens checked by `security.TokenAuthInterceptor` (health stays open for probes). With
`transport=None` (library and tests) the server listens in plaintext and only on loopback;
the CLI always passes a TransportConfig, so plaintext there needs `--insecure`.
`reflection=False` leaves reflection out; `admin=False` makes the admin RPC `Reload`
answer PERMISSION_DENIED (SIGHUP still reloads: that needs access to the host).
`ReportFeedback` (a wrong verdict -> the labels store, `serving.feedback`) is not an admin
RPC: the gateway and support tools call it with the same credentials as Score.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..model.frames import key_id
from ..model.schema import LABELS
from .bundle import BundleError
from .event_log import EventLog, EventLogConfig
from .feedback import FeedbackError, append_feedback
from .limits import RequestLimits, ShedCounter, metric_field
from .metrics import ScorerMetrics
from .registry import Registry, RegistryWatcher, is_registry
from .scorer import CompleteInput, InvalidRequest, Scorer, ScoreInput, Verdict
from .security import TokenAuthInterceptor, TransportConfig, check_bind, server_credentials
from .snapshot import restore_scorer, save_scorer
from .stubs import pb, pb_grpc
from .subprocs import write_port_file

log = logging.getLogger("distillguard.server")
SERVICE = "distillguard.v1.Scorer"
_ACTIONS = {name: pb.Action.Value(name) for name in ("ALLOW", "THROTTLE", "CHALLENGE", "DEGRADE", "BLOCK")}


def _score_input(m) -> ScoreInput:
    return ScoreInput(
        account_id=m.account_id, event_id=m.event_id, ts=m.ts, prompt_tokens=m.prompt_tokens,
        session_id=m.session_id, max_tokens=m.max_tokens, model=m.model,
        client_fingerprint=m.client_fingerprint, ip_prefix=m.ip_prefix,
        account_created_at=m.account_created_at, template_hash=m.template_hash, prompt=m.prompt,
        elicits_reasoning=m.elicits_reasoning if m.HasField("elicits_reasoning") else None,
        frame_signature=m.frame_signature, system_prompt=m.system_prompt, system_signature=m.system_signature)


def _response(v: Verdict) -> "pb.ScoreResponse":
    return pb.ScoreResponse(
        p_human=v.probs[0], p_benign_automation=v.probs[1], p_distillation_harvesting=v.probs[2],
        label=v.label, action=_ACTIONS[v.action], shadow=v.shadow,
        reasons=[pb.Reason(code=c, evidence=e) for c, e in v.reasons],
        events_in_session=v.events_in_session, model_version=v.model_version,
        session_id=v.session_id, duplicate=v.duplicate, session_score=v.session_score)


class RpcRefusal(Exception):
    """Raised inside a handler to answer `status` with `details`, counted under that code."""

    def __init__(self, status: grpc.StatusCode, details: str):
        super().__init__(details)
        self.status, self.details = status, details


def _remaining(context, cap: float = 30.0) -> float:
    """Time left of the caller's deadline (a call without one reports ~infinity)."""
    t = context.time_remaining()
    return cap if t is None else min(max(t, 0.0), cap)


class ScorerServicer(pb_grpc.ScorerServicer):
    labels_store: Path | None = None    # where ReportFeedback files labels (None: refused)
    # serve --model REG: a Reload without a path re-resolves the registry's `current`.
    registry_watcher: "RegistryWatcher | None" = None

    def __init__(self, scorer: Scorer | None, metrics: ScorerMetrics, admin_enabled: bool = True,
                 limits: RequestLimits | None = None):
        self.scorer, self.m, self.admin_enabled = scorer, metrics, admin_enabled
        self.limits = limits or RequestLimits()
        # Drain bookkeeping (ScorerServer.stop): handlers running now, when the last began.
        self.draining = False
        self._active, self._last_start = 0, 0.0
        self._gate = threading.Condition()

    def drain(self, timeout: float, quiet: float = 0.1) -> bool:
        """Refuse calls that reach a handler from now on (UNAVAILABLE: the client retries
        another replica or fails open) and wait until the running ones have finished and
        no handler has started for `quiet` s, so gRPC has matched every call it had
        received; True if that happened within `timeout`. Only then may the gRPC server
        stop: it answers calls it received but never handed to a handler with CANCELLED
        (grpc/grpc#41785), which the gateway client would count as errors."""
        deadline = time.monotonic() + timeout
        with self._gate:
            self.draining = True
            while True:
                now = time.monotonic()
                idle_for = now - self._last_start
                if self._active == 0 and idle_for >= quiet:
                    return True
                if now >= deadline:
                    return False
                self._gate.wait(min(deadline - now, max(quiet - idle_for, 0.005)))

    def _call(self, method: str, context, fn):
        t0 = time.perf_counter()
        code = "OK"
        with self._gate:
            self._active += 1
            self._last_start = time.monotonic()
        try:
            if self.draining:
                code = "UNAVAILABLE"
                context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down: retry another replica")
            if self.scorer is None:
                code = "UNAVAILABLE"
                context.abort(grpc.StatusCode.UNAVAILABLE, "model still loading")
            return fn()
        except InvalidRequest as e:
            code = "INVALID_ARGUMENT"
            self.m.rejected.labels(method=method, field=metric_field(e.field)).inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except RpcRefusal as e:
            code = e.status.name
            context.abort(e.status, e.details)
        except futures.TimeoutError:
            code = "DEADLINE_EXCEEDED"
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{method}: deadline passed before the scorer answered")
        except Exception:
            if code == "OK":    # context.abort raises too, after setting the code it sent
                code = "INTERNAL"
            raise
        finally:
            self.m.requests.labels(method=method, code=code).inc()
            self.m.latency.labels(method=method).observe(time.perf_counter() - t0)
            with self._gate:
                self._active -= 1
                self._gate.notify_all()

    def _count(self, verdicts):
        for v in verdicts:
            self.m.verdicts.labels(label=v.label).inc()
            self.m.actions.labels(action=v.action).inc()
            if v.duplicate:
                self.m.duplicates.inc()
            sv = v.shadow_verdict
            if sv is not None:
                agree = (sv.action == "ALLOW") == (v.action == "ALLOW")
                self.m.shadow_verdicts.labels(agree="true" if agree else "false").inc()
        self.m.observe_store(self.scorer.store)

    def Score(self, request, context):
        def run():
            req = _score_input(request)
            req.validate(self.scorer.signature_key_id)
            self.limits.check_score(req)
            v = self.scorer.score(req, timeout=_remaining(context))
            self._count([v])
            return _response(v)
        return self._call("Score", context, run)

    def ScoreBatch(self, request, context):
        def run():
            self.limits.check_batch_size(len(request.requests))
            reqs = [_score_input(r) for r in request.requests]
            now = self.limits.clock()
            for i, r in enumerate(reqs):
                try:
                    r.validate(self.scorer.signature_key_id)
                    self.limits.check_score(r, now)
                except InvalidRequest as e:
                    raise InvalidRequest(f"requests[{i}].{e.field}", str(e).split(": ", 1)[1]) from None
            vs = self.scorer.score_many(reqs, timeout=_remaining(context)) if reqs else []
            self._count(vs)
            return pb.ScoreBatchResponse(responses=[_response(v) for v in vs])
        return self._call("ScoreBatch", context, run)

    def Complete(self, request, context):
        def run():
            req = CompleteInput(account_id=request.account_id, event_id=request.event_id,
                                completion_tokens=request.completion_tokens, status=request.status,
                                session_id=request.session_id, latency_s=request.latency_s)
            req.validate()
            self.limits.check_complete(req)
            return pb.CompleteResponse(applied=self.scorer.complete(req, timeout=_remaining(context)))
        return self._call("Complete", context, run)

    def GetSession(self, request, context):
        def run():
            if not request.account_id:
                raise InvalidRequest("account_id", "required, non-empty")
            self.limits.check_session_ref(request.account_id, request.session_id)
            snap = self.scorer.get_session(request.account_id, request.session_id, timeout=_remaining(context))
            if snap is None:
                return pb.SessionInfo(found=False)
            from ..model.features import FEATURE_NAMES
            return pb.SessionInfo(
                found=True, session_id=snap.session_id, events_in_session=snap.events_in_session,
                latest=_response(snap.latest) if snap.latest else None,
                recent_events=[pb.EventSummary(event_id=f"{e['event_key']:016x}", ts=e["ts"],
                                               prompt_tokens=e["prompt_tokens"],
                                               completion_tokens=e["completion_tokens"],
                                               completed=e["completed"], features=e["features"])
                               for e in snap.events],
                feature_names=list(FEATURE_NAMES))
        return self._call("GetSession", context, run)

    def EndSession(self, request, context):
        def run():
            if not request.account_id:
                raise InvalidRequest("account_id", "required, non-empty")
            self.limits.check_session_ref(request.account_id, request.session_id)
            ended = self.scorer.end_session(request.account_id, request.session_id, timeout=_remaining(context))
            self.m.observe_store(self.scorer.store)
            return pb.EndSessionResponse(ended=ended)
        return self._call("EndSession", context, run)

    def Reload(self, request, context):
        if not self.admin_enabled:
            # PERMISSION_DENIED, not UNIMPLEMENTED: the method exists, this server's policy refuses it.
            self.m.requests.labels(method="Reload", code="PERMISSION_DENIED").inc()
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          "admin RPCs are disabled on this server (--no-admin); reload with SIGHUP on the host")

        def run():
            try:
                if not request.path and self.registry_watcher is not None:
                    b = self.registry_watcher.reload_current()
                else:
                    b = reload_model(self.scorer, self.m, request.path or None)
            except (BundleError, ValueError, OSError) as e:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"reload refused, old model keeps serving: {e}")
            return pb.ReloadResponse(model_version=b.version, feature_spec_hash=b.metadata["feature_spec_hash"])
        return self._call("Reload", context, run)

    def ReportFeedback(self, request, context):
        def run():
            if not request.account_id:
                raise InvalidRequest("account_id", "required, non-empty")
            self.limits.check_feedback(request)
            if request.correct_label not in LABELS:
                raise InvalidRequest("correct_label", f"expected one of {', '.join(LABELS)}")
            if not request.reason.strip():
                raise InvalidRequest("reason", "required, non-empty: say why the verdict was wrong")
            if self.labels_store is None:
                raise RpcRefusal(grpc.StatusCode.FAILED_PRECONDITION,
                                 "this scorer has no labels store: start it with --labels-store DIR, or file "
                                 "the report offline with `distillguard feedback --labels-store DIR`")
            # A read through the scorer's writer queue; the file is written here, in this
            # handler thread, so a slow disk never holds up scoring.
            snap = self.scorer.get_session(request.account_id, request.session_id, timeout=_remaining(context))
            if snap is None and not request.session_id:
                raise RpcRefusal(grpc.StatusCode.NOT_FOUND,
                                 "the account has no live implicit session on this scorer: give session_id "
                                 "(ScoreResponse.session_id) to label a session it no longer holds")
            session_id = snap.session_id if snap is not None else request.session_id
            version = snap.latest.model_version if snap is not None and snap.latest is not None else None
            try:
                row = append_feedback(self.labels_store, account_id=request.account_id, session_id=session_id,
                                      label=request.correct_label, reason=request.reason,
                                      reported_by=request.reported_by, incident_id=request.incident_id or None,
                                      model_version=version)
            except FeedbackError as e:
                raise InvalidRequest(e.field, e.message) from None
            except OSError as e:
                log.error(json.dumps({"event": "feedback_write_failed", "error": str(e)}))
                raise RpcRefusal(grpc.StatusCode.INTERNAL, f"labels store not written: {e.strerror or e}") from None
            self.m.feedback.labels(label=row["label"]).inc()
            log.info(json.dumps({"event": "feedback", "session_id": row["session_id"],
                                 "incident_id": row["incident_id"], "label": row["label"]}))
            return pb.FeedbackResponse(session_id=row["session_id"], incident_id=row["incident_id"],
                                       model_version=row["model_version"] or "", labelled_at=row["labelled_at"])
        return self._call("ReportFeedback", context, run)


def reload_model(scorer: Scorer, metrics: ScorerMetrics, path=None):
    """Swap the scorer's bundle (admin RPC and SIGHUP alike), counting the outcome."""
    try:
        b = scorer.reload(path)
    except (BundleError, ValueError, OSError) as e:
        metrics.reloads.labels(result="refused").inc()
        log.error(json.dumps({"event": "reload_refused", "error": str(e)}))
        raise
    metrics.reloads.labels(result="ok").inc()
    metrics.model.info({"version": b.version, "path": str(b.path)})
    log.info(json.dumps({"event": "reloaded", "model": b.version, "path": str(b.path)}))
    return b


class HealthServicer(health.HealthServicer):
    """grpc_health's servicer, minus a deadlock: it sends Watch updates while holding its
    lock, each send waits for gRPC's event thread, and that thread runs the close callback
    of a Watch stream ending at that moment, which needs the same lock. Seen here on
    SIGTERM with one watcher disconnecting while another was being told NOT_SERVING: the
    server hung. This one sends with the lock released. Updates come from one thread at a
    time here (start, then stop), so they still reach each watcher in order."""

    def set(self, service, status):
        with self._lock:
            if self._gracefully_shutting_down:
                return
            self._server_status[service] = status
            callbacks = list(self._send_response_callbacks.get(service, ()))
        for send in callbacks:
            send(health_pb2.HealthCheckResponse(status=status))

    def Watch(self, request, context, send_response_callback=None):
        if send_response_callback is None:      # a server without non-blocking streams: as upstream
            return super().Watch(request, context, send_response_callback)
        service = request.service
        with self._lock:
            self._send_response_callbacks.setdefault(service, set()).add(send_response_callback)
            context.add_callback(self._on_close_callback(send_response_callback, service))
            status = self._server_status.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        send_response_callback(health_pb2.HealthCheckResponse(status=status))
        return None


class ScorerServer:
    """The running server with its scorer, health and metrics (what `serve` holds)."""

    snapshot_path: Path | None = None   # session-state snapshot written on stop (serving.snapshot)
    servicer: "ScorerServicer | None" = None
    extra_ports: list = []              # ports bound for `extra_addresses` (a worker's own port)
    event_log: "EventLog | None" = None  # scored-event log (serving.event_log), flushed on stop
    registry_watcher: "RegistryWatcher | None" = None   # serve --model REG: polls current/shadow

    def __init__(self, server: grpc.Server, port: int, scorer: Scorer, health_servicer, metrics: ScorerMetrics):
        self.server, self.port, self.scorer, self.health, self.metrics = server, port, scorer, health_servicer, metrics

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):
            self.health.set(name, status)

    def stop(self, grace: float = 5.0) -> None:
        """Drain: NOT_SERVING first so balancers move away; calls already in a handler
        finish (within `grace`) while new ones are refused with UNAVAILABLE; then the
        listener closes, the session snapshot (if any) is written."""
        if self.registry_watcher is not None:   # no model switch while draining
            self.registry_watcher.stop()
        self.set_serving(False)
        deadline = time.monotonic() + grace
        left = grace
        if self.servicer is not None:
            if self.servicer.drain(grace):
                # Drained: what is still open is health Watch streams (they never end by
                # themselves) and calls refused at once; do not wait the whole grace.
                left = min(max(deadline - time.monotonic(), 0.0), 0.5)
            else:
                left = max(deadline - time.monotonic(), 0.0)
                log.warning(json.dumps({"event": "drain_timeout", "grace_s": grace,
                                        "running": self.servicer._active}))
        self.server.stop(left).wait()
        if self.event_log is not None:       # no call is running now: every scored event is buffered
            self.event_log.close()
            log.info(json.dumps({"event": "event_log_flushed", "rows": self.event_log.rows_written,
                                 "parts": self.event_log.parts_written, "dropped": self.event_log.rows_dropped,
                                 "completions": self.event_log.completions_written,
                                 "completions_dropped": self.event_log.completions_dropped}))
        if self.snapshot_path is not None:   # no call is running now: the state is final
            save_scorer(self.scorer, self.snapshot_path)
        self.scorer.close()

    def reload(self, path=None) -> None:
        """SIGHUP's path: a refused bundle is logged and the old model keeps serving.
        Serving a registry, it re-resolves `current` rather than reusing the old path."""
        try:
            if path is None and self.registry_watcher is not None:
                self.registry_watcher.reload_current()
            else:
                reload_model(self.scorer, self.metrics, path)
        except (BundleError, ValueError, OSError):
            pass


def _loggable(obj):
    """A config as JSON-able values: fields with repr=False (tokens, clocks) are left out,
    a URL's password is masked."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _loggable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.repr}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return [_loggable(v) for v in obj]
    return obj


def _mask_url(url: str | None) -> str | None:
    if not url or "@" not in url:
        return url
    u = urlsplit(url)
    return urlunsplit(u._replace(netloc="***@" + u.netloc.rsplit("@", 1)[1]))


@dataclass(frozen=True)
class ServeConfig:
    """How a scorer server runs, beside the model it serves: `create_server(address, model,
    config)` reads the scoring, storage and gRPC fields, `serve(model, config)` also the
    process ones. The CLI builds one from `serve`'s flags; `serve` logs it at start."""
    # -- scoring and session state
    shadow: bool = False                    # report actions without enforcing them (Verdict.shadow)
    max_sessions: int = 1_000_000           # live sessions before LRU eviction (flagged ones last)
    # Session store: None/"memory" in process, redis://HOST:PORT/DB shared by workers and
    # machines (`stores.open_store`).
    state: str | None = None
    # In-process store only (Redis keeps its state itself): restored before SERVING when
    # present and of the bundle's feature spec (else an empty store), written after the drain.
    snapshot_path: Path | None = None
    # A second bundle scoring every request beside the model (`Scorer.set_shadow`): its
    # verdicts go to the event log and the metrics, never to the caller.
    shadow_model: Path | None = None
    # The model is a registry (`serving.registry`): seconds between polls of its current and
    # shadow pointers, which switch models through the reload path without a restart.
    registry_poll_s: float = 2.0
    # -- what the server writes
    event_log: EventLogConfig | None = None  # every scored event -> rotating Parquet parts, flushed on stop
    labels_store: Path | None = None        # ReportFeedback's directory (None: FAILED_PRECONDITION)
    # -- gRPC
    threads: int = 16                       # handler threads of the gRPC thread pool
    limits: RequestLimits = field(default_factory=RequestLimits)   # input bounds, message size, RPC cap
    # None: plaintext and loopback addresses only (library and tests); anything else needs TLS
    # files or insecure=True (`security.check_bind`).
    transport: TransportConfig | None = None
    reflection: bool = True                 # register the gRPC reflection service (grpcurl)
    admin: bool = True                      # False: the admin RPC Reload answers PERMISSION_DENIED
    # -- the `serve` process
    host: str = "127.0.0.1"
    port: int = 50051                       # 0: any free port (printed in the start line)
    metrics_port: int | None = None         # Prometheus /metrics on host (None: off)
    grace: float = 5.0                      # seconds for in-flight calls on SIGTERM/SIGINT
    # Under `serve --workers N` (serving.workers): this process's index; the port is shared
    # (SO_REUSEPORT) and own_port (0: any free) is the worker's own.
    worker: int | None = None
    own_port: int | None = None
    # Once the ports are bound and health says SERVING: {"pid", "host", "port", "metrics_port",
    # "workers": null} as JSON here (serving.subprocs); a worker writes its own entry ({"index",
    # "pid", "port": its own, "metrics_port"}) there for the supervisor to gather.
    port_file: Path | None = None
    # The key the gateway signs frames with (model.frames): signs raw prompts that reach the
    # scorer, and a request signed with another key is refused (INVALID_ARGUMENT). A secret.
    signature_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("snapshot_path", "shadow_model", "labels_store", "port_file"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Path):
                object.__setattr__(self, name, Path(v))
        if self.snapshot_path is not None and self.state and self.state != "memory":
            raise ValueError("--snapshot is for the in-process session store; Redis keeps the state across restarts")

    def describe(self) -> dict:
        """JSON-able, without secrets: what `serve` logs at start."""
        d = _loggable(self)
        d["state"] = _mask_url(self.state)
        d["signature_key_id"] = f"{key_id(self.signature_key):04x}"   # the id only, never the key
        return d


def create_server(address: str, model: str | Path, config: ServeConfig | None = None, *,
                  metrics: ScorerMetrics | None = None, reuse_port: bool = False,
                  extra_addresses: tuple = ()) -> tuple[ScorerServer, int]:
    """Build, bind and start the scorer server. Returns (ScorerServer, bound port).

    config: everything but the address and the model (`ServeConfig`; None: its defaults;
    its process fields host/port/grace/... are `serve`'s). `model` may be a model registry
    (a directory with versions/): the server serves its `current` version and its `shadow`
    one as the shadow model, and a watcher thread polls both pointers every
    `config.registry_poll_s` s.
    metrics: the Prometheus collectors to count into (None: a fresh ScorerMetrics).
    reuse_port: bind with SO_REUSEPORT, so several processes share `address` (serve --workers).
    extra_addresses: more addresses to listen on (a worker's own port); their bound ports
    are in `ScorerServer.extra_ports`."""
    config = config or ServeConfig()
    shadow_model, transport, limits = config.shadow_model, config.transport, config.limits
    registry = None
    if is_registry(model):
        if shadow_model is not None:
            raise ValueError(f"--shadow-model with the registry {model}: the registry's shadow pointer chooses the "
                             f"shadow model (`distillguard promote --registry {model} --shadow --bundle B`)")
        if not config.registry_poll_s > 0:
            raise ValueError(f"--registry-poll-s must be > 0, got {config.registry_poll_s}")
        registry = Registry(model)
        model = registry.current_path()       # RegistryError (a ValueError) when nothing is promoted yet
        shadow_model = registry.shadow_path()
    metrics = metrics or ScorerMetrics()
    check_bind(address, transport)
    loaded = transport.load() if transport is not None else None    # every file read and checked up front
    interceptors = []
    if loaded is not None and loaded.token_digests:
        interceptors.append(TokenAuthInterceptor(
            loaded.token_digests, on_failure=lambda reason: metrics.auth_failures.labels(reason=reason).inc()))
    # First in the chain, so it sees every call gRPC sheds beyond maximum_concurrent_rpcs.
    shed = ShedCounter(lambda m: metrics.requests.labels(method=m.rsplit("/", 1)[-1], code="RESOURCE_EXHAUSTED").inc())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="grpc"),
                         interceptors=[shed, *interceptors],
                         options=[("grpc.so_reuseport", 1 if reuse_port else 0), *limits.grpc_options()],
                         maximum_concurrent_rpcs=limits.max_concurrent_rpcs)
    shed.attach(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)   # until the model is loaded
    servicer = ScorerServicer(None, metrics, admin_enabled=config.admin, limits=limits)
    servicer.labels_store = config.labels_store
    pb_grpc.add_ScorerServicer_to_server(servicer, server)   # handlers must exist before start()
    extra_ports = []
    for addr in (address, *extra_addresses):
        check_bind(addr, transport)
        try:
            if loaded is not None and loaded.config.tls:
                bound = server.add_secure_port(addr, server_credentials(loaded))
            else:
                bound = server.add_insecure_port(addr)
        except RuntimeError as e:
            raise OSError(f"cannot bind {addr}: {e}") from None
        if bound == 0:
            raise OSError(f"cannot bind {addr}")
        extra_ports.append(bound)
    port = extra_ports.pop(0)
    if loaded is None or not loaded.config.tls:
        log.warning("INSECURE: serving plaintext gRPC on %s: traffic is unencrypted%s", address,
                    " and bearer tokens travel in clear text" if loaded is not None and loaded.token_digests
                    else " and unauthenticated")
    log.info(json.dumps({"event": "transport", "address": address,
                         "mode": loaded.describe() if loaded is not None else "INSECURE plaintext (loopback default)",
                         "reflection": config.reflection, "admin": config.admin}))
    if config.reflection:
        reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME, health.SERVICE_NAME), server)
    server.start()
    try:
        scorer = Scorer(model, shadow=config.shadow, metrics=metrics, max_sessions=config.max_sessions,
                        state=config.state, shadow_model=shadow_model, signature_key=config.signature_key)
    except Exception:
        server.stop(0)
        raise
    if config.snapshot_path is not None:
        restore_scorer(scorer, config.snapshot_path)   # never raises: a bad snapshot means an empty store
        metrics.observe_store(scorer.store)
    if config.event_log is not None:
        scorer.event_log = EventLog(config.event_log)
    servicer.scorer = scorer
    metrics.model.info({"version": scorer.bundle.version, "path": str(scorer.bundle.path)})
    srv = ScorerServer(server, port, scorer, health_servicer, metrics)
    srv.snapshot_path = config.snapshot_path
    srv.servicer = servicer
    srv.extra_ports = extra_ports
    srv.event_log = scorer.event_log
    if registry is not None:
        watcher = RegistryWatcher(registry, on_current=lambda p: reload_model(scorer, metrics, p),
                                  on_shadow=scorer.set_shadow, poll_s=config.registry_poll_s,
                                  current=Path(model).name, shadow=shadow_model.name if shadow_model else None)
        servicer.registry_watcher = srv.registry_watcher = watcher
        log.info(json.dumps({"event": "registry", "registry": str(registry.root), "current": Path(model).name,
                             "shadow": watcher.applied["shadow"], "poll_s": config.registry_poll_s}))
    srv.set_serving(True)
    if srv.registry_watcher is not None:
        srv.registry_watcher.start()
    return srv, port


def serve(model, config: ServeConfig | None = None) -> int:
    """Run until SIGTERM/SIGINT (drain within config.grace, exit 0); SIGHUP reloads the
    bundle from its path (a registry: re-resolves its `current`). Under `serve --workers`
    (config.worker set) the port is shared with the other workers and the event log's
    parts carry this worker's index and pid. config.port_file: see ServeConfig."""
    config = config or ServeConfig()
    host, worker = config.host, config.worker

    def fmt(p):
        return f"[{host}]:{p}" if ":" in host and not host.startswith("[") else f"{host}:{p}"

    address = fmt(config.port)
    extra = (fmt(config.own_port if config.own_port is not None else 0),) if worker is not None else ()
    if worker is not None and config.event_log is not None:
        config = dataclasses.replace(config, event_log=dataclasses.replace(config.event_log, worker=worker))
    log.info(json.dumps({"event": "config", "model": str(model), **config.describe()}))
    srv, bound = create_server(address, model, config, reuse_port=worker is not None, extra_addresses=extra)
    mport = None
    if config.metrics_port is not None:
        _, mport = srv.metrics.serve(config.metrics_port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, mport)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=srv.reload, daemon=True).start())
    if worker is None:
        log.info(json.dumps({"event": "serving", "port": bound, "model": srv.scorer.bundle.version}))
        print(f"distillguard serving {srv.scorer.bundle.version} on {host}:{bound}", flush=True)
    else:
        own = srv.extra_ports[0]
        log.info(json.dumps({"event": "serving", "port": bound, "own_port": own, "worker": worker,
                             "pid": os.getpid(), "model": srv.scorer.bundle.version}))
        print(f"distillguard worker {worker} serving {srv.scorer.bundle.version} on {host}:{bound} "
              f"own port {host}:{own} pid {os.getpid()}", flush=True)
    if config.port_file is not None:
        # create_server returned with health SERVING, so the file means "ready for traffic".
        write_port_file(config.port_file, {"pid": os.getpid(), "host": host, "port": bound, "metrics_port": mport,
                                    "workers": None} if worker is None else
                        {"index": worker, "pid": os.getpid(), "port": srv.extra_ports[0], "metrics_port": mport})
    # A timed wait, not stop.wait(): the kernel may deliver SIGHUP/SIGTERM to a gRPC or
    # onnxruntime thread, and Python runs the handler only when the main thread next runs
    # bytecode; an untimed wait leaves it blocked, the handler pending (a reload missed 60 s in CI).
    while not stop.wait(0.2):
        pass
    log.info(json.dumps({"event": "draining", "grace_s": config.grace}))
    srv.stop(config.grace)
    log.info(json.dumps({"event": "stopped"}))
    return 0
