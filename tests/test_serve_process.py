"""`distillguard serve` as a process: serves, reloads on SIGHUP, drains and exits 0 on SIGTERM."""
import json
import signal
import time

import grpc

from distillguard.serving.harness import scrape_metrics, start_serve
from distillguard.serving.stubs import pb, pb_grpc


def _signal_state(pid: int) -> list[str]:
    """The process's blocked/ignored/caught signal masks (why a signal went unheard)."""
    try:
        return [line.strip() for line in open(f"/proc/{pid}/status") if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
    except OSError:
        return []


def _start(*args):
    return start_serve("--insecure", "--port", "0", *args)


def test_serve_reload_on_sighup_and_drain_on_sigterm():
    p = _start("--metrics-port", "0")
    try:
        with grpc.insecure_channel(p.target) as ch:
            stub = pb_grpc.ScorerStub(ch)
            r = stub.Score(pb.ScoreRequest(account_id="a", event_id="1", ts=1.78e9, prompt_tokens=5), timeout=10)
            assert r.model_version
        p.send_signal(signal.SIGHUP)
        # A generous bound: a reload builds a new onnxruntime session, which takes seconds
        # when the shared 2-core machine is loaded (it missed 10 s in a full-suite run).
        m, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            m = scrape_metrics(p.metrics_port)
            if m.value("distillguard_reloads_total", result="ok") == 1.0:
                break
            time.sleep(0.1)
        assert m.value("distillguard_reloads_total", result="ok") == 1.0, (p.logs(), _signal_state(p.pid))
        assert m.value("distillguard_requests_total", code="OK", method="Score") == 1.0
        assert m.samples("distillguard_request_seconds_bucket") and m.value("distillguard_live_sessions") == 1.0
    finally:
        p.stop(timeout=30)
    out = p.logs()
    assert p.returncode == 0, out
    assert '"event": "draining"' in out and '"event": "stopped"' in out


def test_port_file_names_the_process_and_its_ports(tmp_path):
    p = _start("--metrics-port", "0")
    try:
        assert set(p.info) == {"pid", "host", "port", "metrics_port", "workers"}
        assert p.info["pid"] == p.pid and p.info["host"] == "127.0.0.1" and p.info["workers"] is None
        assert p.port > 0 and p.metrics_port > 0 and p.port != p.metrics_port
        with grpc.insecure_channel(p.target) as ch:     # the port it names is the one serving
            assert pb_grpc.ScorerStub(ch).Score(pb.ScoreRequest(account_id="a", event_id="1", ts=1.78e9,
                                                                prompt_tokens=5), timeout=10).model_version
        assert scrape_metrics(p.metrics_port).value("distillguard_requests_total", method="Score") == 1.0
        written = json.loads(p.port_file.read_text())
        assert written == p.info
    finally:
        p.stop(timeout=30)
    assert p.returncode == 0, p.logs()
    assert "distillguard serving" in p.logs()        # the human-readable line is still there


def test_port_file_in_a_missing_directory_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "distillguard.cli", "serve", "--insecure", "--port", "0",
                        "--port-file", str(tmp_path / "nope" / "ports.json")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--port-file" in r.stderr and "nope" in r.stderr, r.stderr
