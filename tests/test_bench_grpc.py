"""Smoke tests of the gRPC benchmark harness: no-op server, request framing, h2load parsing."""
import json
import shutil
import sys

import grpc
import numpy as np
import pytest

from distillguard.benchmarks import bench_grpc as bg
from distillguard.serving.harness import parse_metrics
from distillguard.serving.stubs import pb, pb_grpc


@pytest.fixture(scope="module")
def noop(tmp_path_factory):
    """The no-op server as the benchmark runs it: a subprocess on its own port."""
    log = tmp_path_factory.mktemp("noop") / "noop.log"
    srv = bg.ServerProc([sys.executable, "-m", "distillguard.benchmarks.noop_server", "--port", "0"], name="noop",
                        log_path=log, timeout=30).start()
    yield srv
    srv.stop()


def test_noop_server_answers_score_over_a_socket(noop):
    with grpc.insecure_channel(f"127.0.0.1:{noop.port}") as ch:
        stub = pb_grpc.ScorerStub(ch)
        r = stub.Score(bg.bench_request("t"), timeout=5)
        assert r.label == "human" and r.action == pb.ALLOW and r.model_version == "noop"
        assert abs(r.p_human + r.p_benign_automation + r.p_distillation_harvesting - 1.0) < 1e-9
        assert stub.Complete(pb.CompleteRequest(account_id="a", event_id="e"), timeout=5).applied
        assert len(stub.ScoreBatch(pb.ScoreBatchRequest(requests=[bg.bench_request("t")] * 3),
                                   timeout=5).responses) == 3
    assert bg.proc_cpu_seconds(noop.pid) > 0.0


def test_request_file_is_one_valid_grpc_frame(tmp_path):
    req = bg.bench_request("frame")
    path = bg.write_request_file(tmp_path / "req.bin", req)
    data = path.read_bytes()
    assert data[0] == 0                                   # not compressed
    assert int.from_bytes(data[1:5], "big") == len(data) - 5
    assert pb.ScoreRequest.FromString(bg.unframe(data)) == req
    with pytest.raises(ValueError):
        bg.unframe(data[:-1])                             # length prefix must match the payload


def test_prometheus_error_diff_counts_only_non_ok_codes():
    before = parse_metrics('distillguard_requests_total{code="OK",method="Score"} 5.0\n')
    after = parse_metrics(
        '# HELP x\ndistillguard_requests_total{code="OK",method="Score"} 9.0\n'
        'distillguard_requests_total{code="INVALID_ARGUMENT",method="Score"} 2.0\n')
    assert bg.grpc_errors_from_metrics(before, after) == {"Score/INVALID_ARGUMENT": 2.0}


@pytest.mark.skipif(shutil.which("h2load") is None,
                    reason="h2load not installed (Debian nghttp2-client; `make bench` installs it): "
                           "only the h2load run is skipped")
def test_tiny_h2load_run_parses_into_numbers(noop, tmp_path):
    body = bg.write_request_file(tmp_path / "req.bin", bg.bench_request("h2"))
    c0 = noop.cpu()
    r = bg.run_h2load(noop.port, body, 200, 8, workdir=tmp_path)
    assert r["done"] == 200 and r["http_ok"] == 200
    assert r["grpc_errors"] == 0 and r["failed"] == r["errored"] == r["timeout"] == 0
    assert len(r["latency_us"]) == 200
    p = bg.percentiles(r["latency_us"])
    assert 0 < p["p50_ms"] <= p["p99_ms"] < 1000
    assert r["qps"] > 0 and np.isfinite(r["qps"])
    assert noop.cpu() >= c0


@pytest.mark.skipif(shutil.which("h2load") is None,
                    reason="h2load not installed (Debian nghttp2-client): only the h2load run is skipped")
def test_h2load_grpc_errors_are_counted(noop, tmp_path):
    """h2load says 200 OK for a gRPC error; the harness must not."""
    body = bg.write_request_file(tmp_path / "req.bin", bg.bench_request("err"))
    r = bg.run_h2load(noop.port, body, 20, 2, workdir=tmp_path, path="/distillguard.v1.Scorer/NoSuchMethod")
    assert r["http_ok"] == 20                  # what h2load alone would report
    assert r["grpc_errors"] == 20 and r["grpc_status_codes"] == {"12": 20}


def test_event_stream_is_deterministic_and_checks_its_sizes():
    a, b = bg.event_stream(50, 8, seed=3), bg.event_stream(50, 8, seed=3)
    assert a == b and a != bg.event_stream(50, 8, seed=4)
    assert [len(s["events"]) for s in a["sessions"]] == [8] * 6 + [2]
    for bad in ((0, 8), (10, 0), (10, 49)):
        with pytest.raises(ValueError):
            bg.event_stream(*bad)


@pytest.mark.slow
def test_new_event_run_counts_every_event_on_the_real_scorer(tmp_path):
    """A small `bench grpc` run: the new-event section is there, both servers burnt CPU on
    it, and the scorer's own /metrics account for every event of the stream as newly scored
    and every session as new, run after run (ids are prefixed per run)."""
    from distillguard.serving import DEFAULT_BUNDLE

    events, per_session, repeats = 240, 12, 2
    res = bg.run_grpc_bench(DEFAULT_BUNDLE, concurrency=(8,), requests=300, repeats=1, half_peak=False,
                            python_driven=False, workdir=tmp_path, quiet=True, events=events,
                            events_per_session=per_session, events_concurrency=8, events_repeats=repeats,
                            events_seed=5)
    ne = res["new_events"]
    n_sessions = events // per_session
    assert ne["stream"]["events"] == events and ne["stream"]["sessions"] == n_sessions
    assert all(ne["checks"].values()), ne["checks"]
    for k in ("scorer", "noop"):
        s = ne[k]
        assert len(s["runs"]) == repeats
        assert all(r["server_cpu_s"] > 0 and r["scores"] == r["completes"] == events for r in s["runs"])
        assert s["server_cpu_us_per_event"] > 0 and s["events_per_s"] > 0
        assert 0 < s["score_p50_ms"] <= s["score_p99_ms"]
        assert s["errors"] == 0 and s["complete_not_applied"] == 0
    for r in ne["scorer"]["runs"]:
        c = r["server_counted"]
        assert c["scored_new_events"] == c["score_ok"] == c["complete_ok"] == events
        assert c["duplicates"] == 0
        assert c["new_live_sessions"] == n_sessions and r["distinct_sessions"] == n_sessions
    assert ne["ratio"]["cpu_per_event"] > 0
    if shutil.which("h2load"):
        assert ne["h2load_identical_body"]["concurrency"] == 8
    written = json.loads((tmp_path / "grpc_bench.json").read_text())
    assert written["new_events"]["scorer"]["server_cpu_us_per_event"] == pytest.approx(
        ne["scorer"]["server_cpu_us_per_event"])
