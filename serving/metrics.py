"""Prometheus metrics of the scorer, on their own registry (served on a separate HTTP port)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

# Latency buckets around the gateway's budget: 100 µs .. 1 s.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("distillguard_requests", "RPCs handled", ["method", "code"], registry=r)
        self.latency = Histogram("distillguard_request_seconds", "RPC latency in the server", ["method"],
                                 buckets=_BUCKETS, registry=r)
        self.verdicts = Counter("distillguard_verdicts", "Scores by predicted class", ["label"], registry=r)
        self.actions = Counter("distillguard_actions", "Scores by action", ["action"], registry=r)
        self.duplicates = Counter("distillguard_duplicate_events", "Retried events answered again", registry=r)
        self.live_sessions = Gauge("distillguard_live_sessions", "Sessions held in state", registry=r)
        self.evictions = Gauge("distillguard_evictions", "Sessions evicted since start, by reason",
                               ["reason"], registry=r)
        self.batch_size = Histogram("distillguard_batch_size", "Score requests per model call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.model = Info("distillguard_model", "Served model bundle", registry=r)
        self.reloads = Counter("distillguard_reloads", "Model reloads", ["result"], registry=r)
        self.state_rebuilt = Gauge("distillguard_state_rebuilt_sessions",
                                   "Sessions restored from state of another feature spec (ring and flag kept, "
                                   "aggregates rebuilt from the ring); lossy: longer than the ring",
                                   ["kind"], registry=r)
        # Shadow model (serve --shadow-model, Scorer.set_shadow): its verdicts beside the served
        # model's, agree = both flag (action != ALLOW) or neither does; batches it failed on.
        self.shadow_model = Info("distillguard_shadow_model", "Shadow model bundle (empty: none)", registry=r)
        self.shadow_verdicts = Counter("distillguard_shadow_verdicts", "Scored events with a shadow verdict, by "
                                       "whether it agrees with the served model on flagging (action != ALLOW)",
                                       ["agree"], registry=r)
        for agree in ("true", "false"):
            self.shadow_verdicts.labels(agree=agree)
        self.shadow_errors = Counter("distillguard_shadow_errors", "Score batches the shadow model failed on "
                                     "(the served model's verdicts stand)", registry=r)
        # INVALID_ARGUMENT by the field named (ScoreBatch's `requests[i].` dropped: bounded
        # cardinality); limits in serving/limits.py. Calls shed by the concurrency cap are
        # requests{code="RESOURCE_EXHAUSTED"} (limits.ShedCounter).
        self.rejected = Counter("distillguard_rejected_requests", "Requests refused with INVALID_ARGUMENT, "
                                "by method and field", ["method", "field"], registry=r)
        # Calls refused by the bearer-token check (reason: missing|invalid). TLS handshake
        # refusals (mTLS) happen below gRPC's Python layer and are not counted here.
        self.auth_failures = Counter("distillguard_auth_failures", "Calls refused for a missing or invalid "
                                     "bearer token", ["reason"], registry=r)
        for reason in ("missing", "invalid"):
            self.auth_failures.labels(reason=reason)
        # ReportFeedback calls filed in the labels store, by the correct label reported.
        self.feedback = Counter("distillguard_feedback", "Wrong verdicts reported (ReportFeedback) and filed in "
                                "the labels store, by correct label", ["label"], registry=r)
        # Shared session store (serving/redis_store.py) only: its calls as this process saw them.
        self.store_calls = Gauge("distillguard_store_calls", "Session-store round trips since start, by kind "
                                 "(fetch: MGET of sessions missing locally; commit: the version-checked write)",
                                 ["kind"], registry=r)
        self.store_seconds = Gauge("distillguard_store_seconds", "Seconds spent waiting on session-store "
                                   "round trips since start", registry=r)
        self.store_conflicts = Gauge("distillguard_store_conflicts", "Sessions another process had changed "
                                     "since this one last saw them (request redone on fresh state)", registry=r)

    def observe_store(self, store) -> None:
        self.live_sessions.set(len(store))
        for kind, n in getattr(store, "rebuilt", {}).items():
            self.state_rebuilt.labels(kind=kind).set(n)
        for reason, n in store.evictions.items():
            self.evictions.labels(reason=reason).set(n)
        st = getattr(store, "stats", None)
        if st is not None:
            self.store_calls.labels(kind="fetch").set(st["fetches"])
            self.store_calls.labels(kind="commit").set(st["commits"])
            self.store_seconds.set(st["redis_s"])
            self.store_conflicts.set(st["conflicts"])

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Start the /metrics HTTP endpoint; returns (server, port)."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return server, server.server_port
