"""Overload: a real `distillguard serve` process with a small concurrent-RPC cap, driven at
twice its measured capacity. It must shed (RESOURCE_EXHAUSTED, counted by the server),
keep accepted calls fast (p99 < 1 s: a bound that catches pathologies; targets live in
the benchmark), keep its memory bounded, and recover when the load drops; the gateway
client fails open on the shed calls and counts them.

Design doc, "Tests vs benchmarks": generous bounds here, figures in `distillguard bench`.
"""
from __future__ import annotations

import math
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from distillguard.benchmarks.bench_grpc import proc_rss_mb
from distillguard.serving.client import ClientConfig, ScorerClient
from distillguard.serving.harness import start_serve
from distillguard.serving.stubs import pb, pb_grpc

pytestmark = pytest.mark.slow   # drives a real server at 2x capacity

CAP, WORKERS = 8, 4
ACCOUNTS = 64           # a fixed set of sessions: state stays the same size, so RSS measures the server
OK, SHED = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED


class Load:
    """Non-blocking calls on one channel; every completion recorded as (latency s, code)."""

    def __init__(self, stub):
        self.stub = stub
        self.lock = threading.Lock()
        self.results: list[tuple[float, grpc.StatusCode]] = []
        self.in_flight = 0
        self.seq = 0
        self.t_base = time.time() - 600

    def request(self) -> pb.ScoreRequest:
        self.seq += 1
        i = self.seq
        return pb.ScoreRequest(account_id=f"ovl-{i % ACCOUNTS}", event_id=f"e{i}", ts=self.t_base + i * 1e-3,
                               prompt_tokens=100 + i % 50, max_tokens=512, template_hash=f"{i % 7:016x}")

    def fire(self, on_done=None) -> None:
        t0 = time.perf_counter()
        with self.lock:
            self.in_flight += 1
        fut = self.stub.Score.future(self.request(), timeout=10)

        def done(f):
            code = f.code()
            with self.lock:
                self.results.append((time.perf_counter() - t0, code))
                self.in_flight -= 1
            if on_done is not None:
                on_done()
        fut.add_done_callback(done)

    def take(self) -> list[tuple[float, grpc.StatusCode]]:
        with self.lock:
            out, self.results = self.results, []
        return out

    def wait_idle(self, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < end:
            time.sleep(0.01)
        assert self.in_flight == 0, f"{self.in_flight} calls never completed"


def closed_loop(load: Load, concurrency: int, seconds: float) -> list:
    """`concurrency` calls always in flight (each completion sends the next) for `seconds`."""
    stop = time.monotonic() + seconds

    def again():
        if time.monotonic() < stop:
            load.fire(again)
    load.take()
    for _ in range(concurrency):
        load.fire(again)
    time.sleep(seconds)
    load.wait_idle()
    return load.take()


def open_loop(load: Load, rate: float, seconds: float, rss_pid: int, tick: float = 0.002):
    """Arrivals at a fixed rate, not waiting for answers -> (calls sent, achieved rate, RSS samples).
    A sender that falls behind skips arrivals older than 50 ms rather than bursting."""
    load.take()
    rss, t0 = [], time.monotonic()
    sched = fired = 0
    next_rss = t0
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * rate)
        sched = max(sched, due - int(rate * 0.05) - 1)
        for _ in range(due - sched):
            load.fire()
        fired += max(due - sched, 0)
        sched = max(sched, due)
        if now >= next_rss:
            rss.append((now - t0, proc_rss_mb(rss_pid)["rss_mb"]))
            next_rss += 0.1
        time.sleep(tick)
    return fired, fired / (time.monotonic() - t0), rss


def _p99(lat: list[float]) -> float:
    return float(np.percentile(lat, 99)) if lat else math.nan


def test_overload_sheds_stays_fast_bounded_and_recovers(tmp_path):
    srv = start_serve("--insecure", "--port", "0", "--metrics-port", "0", "--threads", WORKERS,
                      "--max-concurrent-rpcs", CAP, timeout=60, log_path=tmp_path / "serve.log")
    port = srv.port
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    registry = CollectorRegistry()
    client = ScorerClient(ClientConfig(f"127.0.0.1:{port}", deadline_s=1.0, retries=1, breaker_failures=3,
                                       breaker_reset_s=0.3), registry=registry)
    try:
        load = Load(pb_grpc.ScorerStub(channel))
        # Warm up: every session exists, so state does not grow during the measurement.
        for r in closed_loop(load, CAP // 2, 1.0):
            assert r[1] == OK
        for i in range(ACCOUNTS):
            load.stub.Score(pb.ScoreRequest(account_id=f"ovl-{i}", event_id=f"w{i}", ts=load.t_base,
                                            prompt_tokens=1), timeout=5)

        # 1. Capacity: closed loop at the cap (nothing shed, or almost nothing).
        t = time.monotonic()
        res = closed_loop(load, CAP, 2.0)
        capacity = sum(1 for _, c in res if c == OK) / (time.monotonic() - t)
        assert capacity > 50, f"capacity {capacity:.0f}/s: the server is barely answering"

        # 2. Twice the capacity, open loop, with the gateway client calling alongside.
        verdicts, stop_client = [], threading.Event()

        def gateway():
            i = 0
            while not stop_client.is_set():
                verdicts.append(client.score(f"gw-{i % 8}", f"g{i}", load.t_base + i, 100, template_hash="ab"))
                i += 1
                stop_client.wait(0.005)      # a gateway's own request stream, ~200/s
        m0 = srv.metrics()
        rss_before = proc_rss_mb(srv.pid)["rss_mb"]
        gw = threading.Thread(target=gateway)
        gw.start()
        sent, offered, rss = open_loop(load, 2 * capacity, 4.0, srv.pid)
        stop_client.set()
        gw.join(10)
        load.wait_idle()
        res = load.take()
        m1 = srv.metrics()

        codes = [c for _, c in res]
        accepted = [lat for lat, c in res if c == OK]
        n_shed = codes.count(SHED)
        others = {c for c in codes if c not in (OK, SHED)}
        p99 = _p99(accepted)
        half = [v for t_, v in rss if t_ >= 2.0]
        rss_peak = max(v for _, v in rss)
        report = (f"capacity {capacity:.0f}/s, offered {offered:.0f}/s ({sent} calls), accepted {len(accepted)} "
                  f"({len(accepted) / 4.0:.0f}/s), shed {n_shed} ({n_shed / max(len(res), 1):.0%}), accepted p50 "
                  f"{float(np.median(accepted or [math.nan])) * 1e3:.1f} ms p99 {p99 * 1e3:.1f} ms, "
                  f"RSS {rss_before:.0f} -> peak {rss_peak:.0f} MB (second half {half[0]:.0f} -> {half[-1]:.0f}), "
                  f"gateway client: {len(verdicts)} calls, "
                  f"{sum(v.fail_open for v in verdicts)} failed open")
        print(report)
        assert len(res) == sent
        assert offered > 1.5 * capacity, report
        assert n_shed > 0, report
        assert not others, f"unexpected codes {others}: {report}"
        assert p99 < 1.0, report
        # Memory bounded: a queue of refused or waiting calls would grow here.
        assert rss_peak - rss_before < 64, report
        assert half[-1] <= half[0] * 1.05, report

        # The server counts what it shed (distillguard_requests_total{code="RESOURCE_EXHAUSTED"}),
        # exactly the calls the clients saw refused.
        shed = dict(name="distillguard_requests_total", code="RESOURCE_EXHAUSTED", method="Score")
        client_shed = registry.get_sample_value("distillguard_client_fail_open_total", {"reason": "overloaded"})
        assert m1.value(**shed) - m0.value(**shed) == n_shed + client_shed, report

        # The gateway client failed open on shed calls: the default action, no score, counted.
        failed = [v for v in verdicts if v.fail_open]
        assert client_shed > 0 and failed, report
        assert {v.fail_open_reason for v in failed} <= {"overloaded", "circuit_open"}
        assert all(v.action == "ALLOW" and math.isnan(v.p_distillation_harvesting) for v in failed)
        assert sum(v.fail_open_reason == "overloaded" for v in failed) == client_shed
        assert registry.get_sample_value("distillguard_client_requests_total", {"outcome": "fail_open"}) == len(failed)

        # 3. Load drops: everything is answered again, the breaker closes, health says SERVING.
        time.sleep(0.5)
        res = closed_loop(load, CAP // 2, 1.0)
        assert res and all(c == OK for _, c in res), {c for _, c in res}
        assert _p99([lat for lat, _ in res]) < 1.0
        v = client.score("gw-after", "a1", load.t_base, 100, template_hash="ab")
        assert not v.fail_open and v.label, v
        h = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert h.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        client.close()
        channel.close()
        srv.stop()
    log = (tmp_path / "serve.log").read_text()
    assert srv.returncode == 0, log[-2000:]
    assert "Traceback" not in log and "Exception" not in log, log[-4000:]
