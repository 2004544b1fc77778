"""A no-op server of the Scorer contract: the baseline the real scorer is measured against.

Every RPC returns a constant answer without touching a model or any session state, so
the difference between it and the scorer under the same load is the scorer's own work.
It is built like the real server (a sync `grpc.server` on a thread pool, same options)
so that transport and thread-pool costs cancel out of the comparison.

    python -m distillguard.benchmarks.noop_server --port 50061
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..serving.stubs import pb, pb_grpc
from ..serving.subprocs import write_port_file

log = logging.getLogger(__name__)

# Built once: the no-op handler should cost no more than the servicer call itself.
_SCORE = pb.ScoreResponse(
    p_human=0.9, p_benign_automation=0.07, p_distillation_harvesting=0.03, label="human",
    action=pb.ALLOW, events_in_session=1, model_version="noop", session_id="noop:0")


class NoopScorer(pb_grpc.ScorerServicer):
    def Score(self, request, context):
        return _SCORE

    def Complete(self, request, context):
        return pb.CompleteResponse(applied=True)

    def ScoreBatch(self, request, context):
        return pb.ScoreBatchResponse(responses=[_SCORE] * len(request.requests))

    def GetSession(self, request, context):
        return pb.SessionInfo(found=False)

    def EndSession(self, request, context):
        return pb.EndSessionResponse(ended=False)

    def Reload(self, request, context):
        return pb.ReloadResponse(model_version="noop")


def create_server(address: str = "127.0.0.1:0", max_workers: int = 16) -> tuple[grpc.Server, int]:
    """A bound, not yet started server; returns (server, port). Pool size and options match
    `server.create_server`."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="noop"),
                         options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ScorerServicer_to_server(NoopScorer(), server)
    # The real server's health service too (SERVING from the start): the harness waits on it,
    # and both servers then register the same services.
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot bind {address}")
    return server, port


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distillguard.benchmarks.noop_server",
                                 description="no-op Scorer server (benchmark baseline)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=50061, help="0 picks a free port (printed)")
    ap.add_argument("--workers", type=int, default=16, help="handler threads (the scorer's `serve --threads` default)")
    ap.add_argument("--port-file", metavar="PATH", help='once serving, write {"pid", "host", "port"} as JSON to PATH '
                    "(as `distillguard serve --port-file` does)")
    a = ap.parse_args(argv)
    server, port = create_server(f"{a.host}:{a.port}", a.workers)
    server.start()
    # The harness reads this line to learn the port when it asked for port 0.
    print(f"noop scorer listening on {a.host}:{port}", flush=True)
    if a.port_file:
        write_port_file(a.port_file, {"pid": os.getpid(), "host": a.host, "port": port, "metrics_port": None,
                                      "workers": None})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
