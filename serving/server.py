"""gRPC server: a thin servicer translating proto <-> scorer domain objects.

`create_server(address, model) -> (server, port)` builds and starts it (port 0 picks a
free one). Health (`grpc.health.v1`) says NOT_SERVING while loading and while draining;
reflection makes it usable with grpcurl.

Transport and auth (`security.TransportConfig`): TLS / mutual TLS from PEM files and bearer
tokens checked by `security.TokenAuthInterceptor` (health stays open for probes). With
`transport=None` (library and tests) the server listens in plaintext and only on loopback;
the CLI always passes a TransportConfig, so plaintext there needs `--insecure`.
`reflection_enabled=False` leaves reflection out; `admin_enabled=False` makes the admin RPC
`Reload` answer PERMISSION_DENIED (SIGHUP still reloads: that needs access to the host).
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
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

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

log = logging.getLogger("distillguard.server")
SERVICE = "distillguard.v1.Scorer"
_ACTIONS = {name: pb.Action.Value(name) for name in ("ALLOW", "THROTTLE", "CHALLENGE", "DEGRADE", "BLOCK")}


def _score_input(m) -> ScoreInput:
    return ScoreInput(
        account_id=m.account_id, event_id=m.event_id, ts=m.ts, prompt_tokens=m.prompt_tokens,
        session_id=m.session_id, max_tokens=m.max_tokens, model=m.model,
        client_fingerprint=m.client_fingerprint, ip_prefix=m.ip_prefix,
        account_created_at=m.account_created_at, template_hash=m.template_hash, prompt=m.prompt,
        elicits_reasoning=m.elicits_reasoning if m.HasField("elicits_reasoning") else None)


def _response(v: Verdict) -> "pb.ScoreResponse":
    return pb.ScoreResponse(
        p_human=v.probs[0], p_benign_automation=v.probs[1], p_distillation_harvesting=v.probs[2],
        label=v.label, action=_ACTIONS[v.action], shadow=v.shadow,
        reasons=[pb.Reason(code=c, evidence=e) for c, e in v.reasons],
        events_in_session=v.events_in_session, model_version=v.model_version,
        session_id=v.session_id, duplicate=v.duplicate)


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
            req.validate()
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
                    r.validate()
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


def create_server(address: str, model: str | Path, *, shadow: bool = False, max_sessions: int = 1_000_000,
                  workers: int = 16, metrics: ScorerMetrics | None = None,
                  reflection_enabled: bool = True, transport: TransportConfig | None = None,
                  admin_enabled: bool = True, limits: RequestLimits | None = None,
                  snapshot_path: str | Path | None = None, state: str | None = None,
                  reuse_port: bool = False, extra_addresses: tuple = (),
                  event_log: EventLogConfig | None = None,
                  labels_store: str | Path | None = None,
                  shadow_model: str | Path | None = None,
                  registry_poll_s: float = 2.0) -> tuple[ScorerServer, int]:
    """Build, bind and start the scorer server. Returns (ScorerServer, bound port).

    transport=None: plaintext, loopback addresses only (library and tests); anything else
    needs a TransportConfig with TLS files or insecure=True (`security.check_bind`).
    limits: input bounds, message size and the concurrent-RPC cap (`limits.RequestLimits`;
    None: its defaults).
    snapshot_path: restore live session state from it before SERVING (if present and of
    the bundle's feature spec; otherwise start empty) and write it on `stop`.
    state: session store, None/"memory" in process or redis://HOST:PORT/DB shared
    (`stores.open_store`; no snapshot with Redis: it keeps the state itself).
    reuse_port: bind with SO_REUSEPORT, so several processes share `address` (serve --workers).
    extra_addresses: more addresses to listen on (a worker's own port); their bound ports
    are in `ScorerServer.extra_ports`.
    event_log: append every scored event to rotating Parquet parts (`serving.event_log`),
    flushed by `stop` after the drain.
    labels_store: directory where ReportFeedback appends wrong-verdict reports as incident
    labels (`serving.feedback`); None: ReportFeedback answers FAILED_PRECONDITION.
    shadow_model: a second bundle scoring every request beside `model` (`Scorer.set_shadow`):
    its verdicts go to the event log and the metrics, never to the caller.
    `model` may be a model registry (`serving.registry`, a directory with versions/): the
    server serves its `current` version and its `shadow` one as the shadow model, and a
    watcher thread polls both pointers every `registry_poll_s` s to switch models through
    the reload path (`reload_model`, `Scorer.set_shadow`) without a restart."""
    registry = None
    if is_registry(model):
        if shadow_model is not None:
            raise ValueError(f"--shadow-model with the registry {model}: the registry's shadow pointer chooses the "
                             f"shadow model (`distillguard promote --registry {model} --shadow --bundle B`)")
        if not registry_poll_s > 0:
            raise ValueError(f"--registry-poll-s must be > 0, got {registry_poll_s}")
        registry = Registry(model)
        model = registry.current_path()       # RegistryError (a ValueError) when nothing is promoted yet
        shadow_model = registry.shadow_path()
    if snapshot_path is not None and state and state != "memory":
        raise ValueError("--snapshot is for the in-process session store; Redis keeps the state across restarts")
    metrics = metrics or ScorerMetrics()
    limits = limits or RequestLimits()
    check_bind(address, transport)
    loaded = transport.load() if transport is not None else None    # every file read and checked up front
    interceptors = []
    if loaded is not None and loaded.token_digests:
        interceptors.append(TokenAuthInterceptor(
            loaded.token_digests, on_failure=lambda reason: metrics.auth_failures.labels(reason=reason).inc()))
    # First in the chain, so it sees every call gRPC sheds beyond maximum_concurrent_rpcs.
    shed = ShedCounter(lambda m: metrics.requests.labels(method=m.rsplit("/", 1)[-1], code="RESOURCE_EXHAUSTED").inc())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                         interceptors=[shed, *interceptors],
                         options=[("grpc.so_reuseport", 1 if reuse_port else 0), *limits.grpc_options()],
                         maximum_concurrent_rpcs=limits.max_concurrent_rpcs)
    shed.attach(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)   # until the model is loaded
    servicer = ScorerServicer(None, metrics, admin_enabled=admin_enabled, limits=limits)
    servicer.labels_store = Path(labels_store) if labels_store is not None else None
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
                         "reflection": reflection_enabled, "admin": admin_enabled}))
    if reflection_enabled:
        reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME, health.SERVICE_NAME), server)
    server.start()
    try:
        scorer = Scorer(model, shadow=shadow, metrics=metrics, max_sessions=max_sessions, state=state,
                        shadow_model=shadow_model)
    except Exception:
        server.stop(0)
        raise
    if snapshot_path is not None:
        restore_scorer(scorer, snapshot_path)   # never raises: a bad snapshot means an empty store
        metrics.observe_store(scorer.store)
    if event_log is not None:
        scorer.event_log = EventLog(event_log)
    servicer.scorer = scorer
    metrics.model.info({"version": scorer.bundle.version, "path": str(scorer.bundle.path)})
    srv = ScorerServer(server, port, scorer, health_servicer, metrics)
    srv.snapshot_path = Path(snapshot_path) if snapshot_path is not None else None
    srv.servicer = servicer
    srv.extra_ports = extra_ports
    srv.event_log = scorer.event_log
    if registry is not None:
        watcher = RegistryWatcher(registry, on_current=lambda p: reload_model(scorer, metrics, p),
                                  on_shadow=scorer.set_shadow, poll_s=registry_poll_s,
                                  current=Path(model).name, shadow=shadow_model.name if shadow_model else None)
        servicer.registry_watcher = srv.registry_watcher = watcher
        log.info(json.dumps({"event": "registry", "registry": str(registry.root), "current": Path(model).name,
                             "shadow": watcher.applied["shadow"], "poll_s": registry_poll_s}))
    srv.set_serving(True)
    if srv.registry_watcher is not None:
        srv.registry_watcher.start()
    return srv, port


def serve(model, port: int, host: str = "127.0.0.1", metrics_port: int | None = None, shadow: bool = False,
          max_sessions: int = 1_000_000, workers: int = 16, grace: float = 5.0,
          transport: TransportConfig | None = None, reflection_enabled: bool = True,
          admin_enabled: bool = True, limits: RequestLimits | None = None,
          snapshot_path: str | Path | None = None, state: str | None = None,
          worker: int | None = None, own_port: int | None = None,
          event_log: EventLogConfig | None = None, labels_store: str | Path | None = None,
          shadow_model: str | Path | None = None, registry_poll_s: float = 2.0) -> int:
    """Run until SIGTERM/SIGINT (drain and exit 0); SIGHUP reloads the bundle from its path.
    snapshot_path: session state restored at start and written after the drain.
    state: session store URL (`create_server`).
    worker: this process's index under `serve --workers N` (serving.workers): the port is
    shared with the other workers (SO_REUSEPORT) and `own_port` (0: any free) is its own.
    event_log: scored-event log config; its parts carry this worker's index and pid.
    labels_store: ReportFeedback's directory (`create_server`); workers may share one.
    model may be a registry (`create_server`): every process (worker) polls its pointers
    every `registry_poll_s` s, and SIGHUP re-resolves its `current`."""
    def fmt(p):
        return f"[{host}]:{p}" if ":" in host and not host.startswith("[") else f"{host}:{p}"

    address = fmt(port)
    extra = (fmt(own_port if own_port is not None else 0),) if worker is not None else ()
    srv, bound = create_server(address, model, shadow=shadow, max_sessions=max_sessions, workers=workers,
                               transport=transport, reflection_enabled=reflection_enabled,
                               admin_enabled=admin_enabled, limits=limits, snapshot_path=snapshot_path,
                               state=state, reuse_port=worker is not None, extra_addresses=extra,
                               event_log=(dataclasses.replace(event_log, worker=worker)
                                          if event_log is not None else None),
                               labels_store=labels_store, shadow_model=shadow_model,
                               registry_poll_s=registry_poll_s)
    if metrics_port is not None:
        _, mport = srv.metrics.serve(metrics_port, addr=host)
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
    stop.wait()
    log.info(json.dumps({"event": "draining", "grace_s": grace}))
    srv.stop(grace)
    log.info(json.dumps({"event": "stopped"}))
    return 0
