"""`distillguard serve` as a process: serves, reloads on SIGHUP, drains and exits 0 on SIGTERM."""
import os
import signal
import time
import urllib.request

import grpc
from conftest import metrics_port, start_serve

from distillguard.serving.stubs import pb, pb_grpc


def _start(*args):
    return start_serve("serve", "--insecure", "--port", "0", *args)


def test_serve_reload_on_sighup_and_drain_on_sigterm():
    p, port, lines = _start("--metrics-port", "0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            r = stub.Score(pb.ScoreRequest(account_id="a", event_id="1", ts=1.78e9, prompt_tokens=5), timeout=10)
            assert r.model_version
        mport = metrics_port(lines)
        os.kill(p.pid, signal.SIGHUP)
        text = ""
        for _ in range(100):
            text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
            if 'distillguard_reloads_total{result="ok"} 1.0' in text:
                break
            time.sleep(0.1)
        assert 'distillguard_reloads_total{result="ok"} 1.0' in text
        assert 'distillguard_requests_total{code="OK",method="Score"} 1.0' in text
        assert "distillguard_request_seconds_bucket" in text and "distillguard_live_sessions 1.0" in text
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    assert '"event": "draining"' in out and '"event": "stopped"' in out
