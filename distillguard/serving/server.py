"""gRPC server: a thin servicer translating proto <-> scorer domain objects.

`create_server(address, model) -> (server, port)` builds and starts it (port 0 picks a
free one). Health (`grpc.health.v1`) says NOT_SERVING while loading and while draining;
reflection makes it usable with grpcurl.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .bundle import BundleError
from .metrics import ScorerMetrics
from .scorer import CompleteInput, InvalidRequest, Scorer, ScoreInput, Verdict
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


def _remaining(context, cap: float = 30.0) -> float:
    """Time left of the caller's deadline (a call without one reports ~infinity)."""
    t = context.time_remaining()
    return cap if t is None else min(max(t, 0.0), cap)


class ScorerServicer(pb_grpc.ScorerServicer):
    def __init__(self, scorer: Scorer | None, metrics: ScorerMetrics):
        self.scorer, self.m = scorer, metrics

    def _call(self, method: str, context, fn):
        t0 = time.perf_counter()
        code = "OK"
        try:
            if self.scorer is None:
                code = "UNAVAILABLE"
                context.abort(grpc.StatusCode.UNAVAILABLE, "model still loading")
            return fn()
        except InvalidRequest as e:
            code = "INVALID_ARGUMENT"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except futures.TimeoutError:
            code = "DEADLINE_EXCEEDED"
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{method}: deadline passed before the scorer answered")
        finally:
            self.m.requests.labels(method=method, code=code).inc()
            self.m.latency.labels(method=method).observe(time.perf_counter() - t0)

    def _count(self, verdicts):
        for v in verdicts:
            self.m.verdicts.labels(label=v.label).inc()
            self.m.actions.labels(action=v.action).inc()
            if v.duplicate:
                self.m.duplicates.inc()
        self.m.observe_store(self.scorer.store)

    def Score(self, request, context):
        def run():
            req = _score_input(request)
            req.validate()
            v = self.scorer.score(req, timeout=_remaining(context))
            self._count([v])
            return _response(v)
        return self._call("Score", context, run)

    def ScoreBatch(self, request, context):
        def run():
            reqs = [_score_input(r) for r in request.requests]
            for i, r in enumerate(reqs):
                try:
                    r.validate()
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
            return pb.CompleteResponse(applied=self.scorer.complete(req, timeout=_remaining(context)))
        return self._call("Complete", context, run)

    def GetSession(self, request, context):
        def run():
            if not request.account_id:
                raise InvalidRequest("account_id", "required, non-empty")
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
            ended = self.scorer.end_session(request.account_id, request.session_id, timeout=_remaining(context))
            self.m.observe_store(self.scorer.store)
            return pb.EndSessionResponse(ended=ended)
        return self._call("EndSession", context, run)

    def Reload(self, request, context):
        def run():
            try:
                b = reload_model(self.scorer, self.m, request.path or None)
            except (BundleError, ValueError, OSError) as e:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"reload refused, old model keeps serving: {e}")
            return pb.ReloadResponse(model_version=b.version, feature_spec_hash=b.metadata["feature_spec_hash"])
        return self._call("Reload", context, run)


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


class ScorerServer:
    """The running server with its scorer, health and metrics (what `serve` holds)."""

    def __init__(self, server: grpc.Server, port: int, scorer: Scorer, health_servicer, metrics: ScorerMetrics):
        self.server, self.port, self.scorer, self.health, self.metrics = server, port, scorer, health_servicer, metrics

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):
            self.health.set(name, status)

    def stop(self, grace: float = 5.0) -> None:
        """Drain: NOT_SERVING first so balancers move away, then finish in-flight calls."""
        self.set_serving(False)
        self.server.stop(grace).wait()
        self.scorer.close()

    def reload(self, path=None) -> None:
        """SIGHUP's path: a refused bundle is logged and the old model keeps serving."""
        try:
            reload_model(self.scorer, self.metrics, path)
        except (BundleError, ValueError, OSError):
            pass


def create_server(address: str, model: str | Path, *, shadow: bool = False, max_sessions: int = 1_000_000,
                  workers: int = 16, metrics: ScorerMetrics | None = None,
                  reflection_enabled: bool = True) -> tuple[ScorerServer, int]:
    """Build, bind and start the scorer server. Returns (ScorerServer, bound port)."""
    metrics = metrics or ScorerMetrics()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                         options=[("grpc.so_reuseport", 0)])
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)   # until the model is loaded
    servicer = ScorerServicer(None, metrics)
    pb_grpc.add_ScorerServicer_to_server(servicer, server)   # handlers must exist before start()
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    if reflection_enabled:
        reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME, health.SERVICE_NAME), server)
    server.start()
    try:
        scorer = Scorer(model, shadow=shadow, metrics=metrics, max_sessions=max_sessions)
    except Exception:
        server.stop(0)
        raise
    servicer.scorer = scorer
    metrics.model.info({"version": scorer.bundle.version, "path": str(scorer.bundle.path)})
    srv = ScorerServer(server, port, scorer, health_servicer, metrics)
    srv.set_serving(True)
    return srv, port


def serve(model, port: int, host: str = "127.0.0.1", metrics_port: int | None = None, shadow: bool = False,
          max_sessions: int = 1_000_000, workers: int = 16, grace: float = 5.0) -> int:
    """Run until SIGTERM/SIGINT (drain and exit 0); SIGHUP reloads the bundle from its path."""
    srv, bound = create_server(f"{host}:{port}", model, shadow=shadow, max_sessions=max_sessions, workers=workers)
    if metrics_port is not None:
        _, mport = srv.metrics.serve(metrics_port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, mport)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=srv.reload, daemon=True).start())
    log.info(json.dumps({"event": "serving", "port": bound, "model": srv.scorer.bundle.version}))
    print(f"distillguard serving {srv.scorer.bundle.version} on {host}:{bound}", flush=True)
    stop.wait()
    log.info(json.dumps({"event": "draining", "grace_s": grace}))
    srv.stop(grace)
    log.info(json.dumps({"event": "stopped"}))
    return 0
