"""`distillguard serve`: the real-time gRPC scorer. Flags -> one `serving.server.ServeConfig`."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..serving import DEFAULT_BUNDLE


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="real-time gRPC scorer (Score on request, Complete on completion)")
    p.add_argument("--model", default=str(DEFAULT_BUNDLE),
                   help="model bundle directory, or a model registry (docs/registry.md): serves its current "
                        "version (and its shadow one as --shadow-model), switching when `promote`/`rollback` "
                        "move the pointers")
    p.add_argument("--registry-poll-s", type=float, default=2.0, metavar="S",
                   help="with a registry as --model: seconds between checks of its current/shadow pointers")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0: any free port)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics HTTP port (off if unset)")
    p.add_argument("--port-file", metavar="PATH", default=None,
                   help='once the ports are bound and health says SERVING, write {"pid", "host", "port", '
                        '"metrics_port" (or null), "workers"} as JSON to PATH (temp + rename); with --workers, '
                        'pid is the supervisor\'s and "workers" lists each {"index", "pid", "port" (its own), '
                        '"metrics_port"}, else null. For scripts and tests that start serve with --port 0')
    p.add_argument("--shadow", action="store_true", help="report actions without enforcing (shadow=true)")
    p.add_argument("--max-sessions", type=int, default=1_000_000, help="live sessions held before LRU eviction")
    p.add_argument("--threads", type=int, default=16, help="gRPC handler threads per process")
    p.add_argument("--workers", type=int, default=1,
                   help="scorer processes sharing --port (SO_REUSEPORT), each also on its own port; share "
                        "sessions with --state redis://... (docs/scaling.md)")
    p.add_argument("--worker-port-base", type=int, default=0, metavar="PORT",
                   help="with --workers: worker i's own port is PORT+i (default: any free port, printed)")
    p.add_argument("--state", metavar="URL", default=None,
                   help="session store: memory (default, in process) or redis://HOST:PORT/DB"
                        "[?ttl=S&flagged_ttl=S&cache=N], shared by workers and machines (docs/scaling.md)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds to finish in-flight calls on SIGTERM")
    add_signature_key_args(p)
    p.add_argument("--snapshot", metavar="PATH", default=None,
                   help="session-state snapshot (.npz): restored at start if present and of the bundle's "
                        "feature spec, written atomically on SIGTERM/SIGINT after the drain")
    p.add_argument("--event-log", metavar="DIR", default=None,
                   help="append every scored event (request fields, template hash only, scores, action, model "
                        "version) to Parquet parts in DIR, readable by score/train --events DIR; flushed on stop")
    p.add_argument("--event-log-max-rows", type=int, default=100_000, metavar="N",
                   help="rows per event-log part (default 100000)")
    p.add_argument("--event-log-max-seconds", type=float, default=60.0, metavar="S",
                   help="cut an event-log part at most S seconds after its first row (default 60)")
    p.add_argument("--shadow-model", metavar="BUNDLE", default=None,
                   help="a second bundle that scores every request too: its verdicts go to the event log and "
                        "the metrics, the served --model alone answers (compare with `shadow-report`)")
    p.add_argument("--labels-store", metavar="DIR", default=None,
                   help="accept ReportFeedback: append wrong-verdict reports to DIR/feedback-YYYYMMDD.jsonl "
                        "as incident labels for the next training run (workers may share DIR)")
    g = p.add_argument_group("input limits and load shedding (defaults: serving/limits.py RequestLimits)")
    g.add_argument("--max-concurrent-rpcs", type=int, metavar="N",
                   help="RPCs in flight (running + queued) before RESOURCE_EXHAUSTED (default 256; 0: no cap)")
    g.add_argument("--max-message-bytes", type=int, metavar="B",
                   help="largest request message accepted (default 4 MiB; larger: RESOURCE_EXHAUSTED)")
    g.add_argument("--max-batch", type=int, metavar="N", help="most requests in one ScoreBatch (default 1024)")
    g.add_argument("--max-ts-ahead-s", type=float, metavar="S",
                   help="refuse ts more than S seconds ahead of the server clock (default 3600)")
    g.add_argument("--max-ts-age-s", type=float, metavar="S",
                   help="refuse ts more than S seconds behind the server clock (default: off; ts >= 2015 always)")
    g = p.add_argument_group("transport and auth (one of --tls-cert/--tls-key or --insecure is required)")
    g.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain) file: serve TLS")
    g.add_argument("--tls-key", metavar="PEM", help="server private key file (unencrypted PEM)")
    g.add_argument("--tls-client-ca", metavar="PEM",
                   help="CA file for client certificates: mutual TLS, clients without a certificate signed "
                        "by it are refused at the handshake")
    g.add_argument("--token-file", metavar="FILE",
                   help="bearer tokens, one per line ('#' comments): every call but health checks needs "
                        "'authorization: Bearer <token>'")
    g.add_argument("--insecure", action="store_true",
                   help="serve plaintext gRPC (no TLS) on purpose; logged as a warning")
    g.add_argument("--no-reflection", action="store_true", help="do not register the gRPC reflection service")
    g.add_argument("--no-admin", action="store_true", help="refuse the admin RPC Reload (PERMISSION_DENIED); "
                                                            "SIGHUP still reloads")
    p.set_defaults(fn=run)


def run(a) -> int:
    if a.port_file and not Path(a.port_file).absolute().parent.is_dir():
        raise ValueError(f"--port-file {a.port_file}: no directory {Path(a.port_file).absolute().parent}")
    if a.workers > 1:
        # Fork first, before gRPC/onnxruntime exist in this process (serving/workers.py): the
        # ServeConfig (whose parts import gRPC) is built in each worker.
        from ..serving.workers import run_workers

        if a.snapshot:
            raise ValueError("--snapshot works with one process; several workers share state through "
                             "--state redis://HOST:PORT/DB")
        if not a.state or a.state == "memory":
            logging.getLogger("distillguard.workers").warning(
                "--workers %d with the in-process store: each worker holds its own sessions, so a session's "
                "requests must always reach the same worker (route by session id to the workers' own ports) "
                "or use --state redis://HOST:PORT/DB", a.workers)

        def child(i: int, port: int) -> int:
            from ..serving.server import serve
            from ..serving.subprocs import worker_port_file

            own = a.worker_port_base + i if a.worker_port_base else 0
            return serve(a.model, dataclasses.replace(
                serve_config(a), port=port, worker=i, own_port=own,
                port_file=worker_port_file(a.port_file, i) if a.port_file else None,
                metrics_port=a.metrics_port + i if a.metrics_port else a.metrics_port))

        return run_workers(a.workers, a.host, a.port, child, port_file=a.port_file)
    from ..serving.server import serve

    return serve(a.model, serve_config(a))


def serve_config(a):
    """The ServeConfig of `serve`'s flags (one process; workers replace port/worker/own_port)."""
    from ..serving.server import ServeConfig

    return ServeConfig(shadow=a.shadow, max_sessions=a.max_sessions, state=a.state, snapshot_path=a.snapshot,
                       shadow_model=a.shadow_model, registry_poll_s=a.registry_poll_s,
                       event_log=event_log_config(a), labels_store=a.labels_store, threads=a.threads,
                       limits=limits_config(a), transport=transport_config(a), reflection=not a.no_reflection,
                       admin=not a.no_admin, host=a.host, port=a.port, metrics_port=a.metrics_port, grace=a.grace,
                       port_file=a.port_file, signature_key=signature_key(a))


def add_signature_key_args(p) -> None:
    p.add_argument("--signature-key-file", metavar="PATH", default=None,
                   help="file holding the frame-signature key the gateway signs prompts with (its first "
                        "whitespace-separated token; default: $DISTILLGUARD_SIGNATURE_KEY, else unkeyed). Raw "
                        "prompts are signed with it and signatures made with another key are refused")


def signature_key(a) -> bytes | None:
    """--signature-key-file, else $DISTILLGUARD_SIGNATURE_KEY, else None (unkeyed);
    `--hmac-key` (score, replay) is the older spelling of an inline key."""
    import os

    from ..serving.security import read_token

    if getattr(a, "signature_key_file", None):
        return read_token(a.signature_key_file, "--signature-key-file").encode()
    if getattr(a, "hmac_key", None):
        return a.hmac_key.encode()
    env = os.environ.get("DISTILLGUARD_SIGNATURE_KEY")
    return env.encode() if env else None


def transport_config(a):
    """The serve command's TransportConfig; plaintext only with --insecure, whatever the host."""
    from ..serving.security import TransportConfig, TransportError, is_loopback_address

    if not (a.tls_cert or a.tls_key or a.tls_client_ca) and not a.insecure:
        where = "a non-loopback address, reachable from other machines" if not is_loopback_address(
            f"{a.host}:{a.port}") else "loopback"
        raise TransportError(f"refusing to serve on {a.host}:{a.port} ({where}) without TLS: give --tls-cert and "
                             "--tls-key (plus --tls-client-ca for mutual TLS), or --insecure to serve "
                             "unencrypted, unauthenticated gRPC on purpose")
    path = lambda v: Path(v) if v else None     # noqa: E731
    return TransportConfig(cert_file=path(a.tls_cert), key_file=path(a.tls_key),
                           client_ca_file=path(a.tls_client_ca), token_file=path(a.token_file),
                           insecure=a.insecure)


def event_log_config(a):
    """EventLogConfig from --event-log* (None: no event log)."""
    if not a.event_log:
        return None
    from ..serving.event_log import EventLogConfig

    return EventLogConfig(a.event_log, max_rows=a.event_log_max_rows, max_seconds=a.event_log_max_seconds)


def limits_config(a):
    """RequestLimits from `serve`'s limit flags; a flag not given keeps the dataclass default."""
    from ..serving.limits import RequestLimits

    given = {"max_concurrent_rpcs": a.max_concurrent_rpcs, "max_message_bytes": a.max_message_bytes,
             "max_batch": a.max_batch, "max_ts_ahead_s": a.max_ts_ahead_s, "max_ts_age_s": a.max_ts_age_s}
    kw = {k: v for k, v in given.items() if v is not None}
    if kw.get("max_concurrent_rpcs") == 0:
        kw["max_concurrent_rpcs"] = None
    return RequestLimits(**kw)
