"""`distillguard serve` as a process: serves, reloads on SIGHUP, drains and exits 0 on SIGTERM."""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc

from distillguard.serving.stubs import pb, pb_grpc


def _start(*args):
    p = subprocess.Popen([sys.executable, "-m", "distillguard.cli", "serve", "--insecure", "--port", "0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = p.stdout.readline()
        lines.append(line)
        m = re.search(r"serving \S+ on 127\.0\.0\.1:(\d+)", line)
        if m:
            return p, int(m.group(1)), lines
    p.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


def _metrics_port(lines):
    for line in lines:
        m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
        if m:
            return int(m.group(1))
    raise AssertionError("no metrics line in:\n" + "".join(lines))


def test_serve_reload_on_sighup_and_drain_on_sigterm():
    p, port, lines = _start("--metrics-port", "0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            r = stub.Score(pb.ScoreRequest(account_id="a", event_id="1", ts=1.78e9, prompt_tokens=5), timeout=10)
            assert r.model_version
        mport = _metrics_port(lines)
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
