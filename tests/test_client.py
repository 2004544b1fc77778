"""Gateway client against the real scorer over real sockets: verdicts, client-side prompt
hashing, deadlines, dead scorer, circuit breaker, metrics; sync and asyncio flavours.

Every behaviour test runs for both clients: the async one is driven through a tiny sync
facade (its own event loop), so the two are held to exactly the same assertions."""
from __future__ import annotations

import asyncio
import math
import socket
import time
from concurrent import futures

import grpc
import pytest
from prometheus_client import CollectorRegistry

from distillguard.serving.harness import free_port
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.model import frames, templates
from distillguard.model.schema import LABELS
from distillguard.serving.client import (ACTIONS, AsyncScorerClient, CircuitBreaker, ClientConfig, ScorerClient,
                                         build_score_request)
from distillguard.serving.server import create_server
from distillguard.serving.stubs import pb

T0 = 1_780_000_000.0
ARTICLE = "The quarterly harbour survey found seventeen barnacle colonies near pier nine."
PROMPT = f"Summarize the following article in three bullet points. Think step by step.\n\n{ARTICLE}"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def server():
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE)
    yield f"127.0.0.1:{port}"
    srv.stop(0)


@pytest.fixture
def registry():
    return CollectorRegistry()


class _AsyncFacade:
    """Runs AsyncScorerClient coroutines to completion on a private loop."""

    def __init__(self, config: ClientConfig, registry):
        self.loop = asyncio.new_event_loop()
        self.client = AsyncScorerClient(config, registry=registry)
        self.breaker = self.client.breaker

    def __getattr__(self, name):
        fn = getattr(self.client, name)
        return lambda *a, **kw: self.loop.run_until_complete(fn(*a, **kw))

    def close(self):
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def make_client(request, registry):
    made = []

    def make(target: str, **cfg):
        c = ScorerClient(ClientConfig(target, **cfg), registry=registry) if request.param == "sync" \
            else _AsyncFacade(ClientConfig(target, **cfg), registry)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


@pytest.fixture
def black_hole():
    """A port that accepts TCP connections (kernel backlog) but never speaks HTTP/2:
    a scorer that hangs, so calls can only end by their deadline."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


class _RecordingProxy(grpc.GenericRpcHandler):
    """Forwards raw request bytes to the real scorer and keeps a copy: what went over the wire."""

    def __init__(self, upstream: str):
        self.channel = grpc.insecure_channel(upstream)
        self.seen: list[tuple[str, bytes]] = []

    def service(self, details):
        method = details.method
        forward = self.channel.unary_unary(method)     # no (de)serializers: bytes in, bytes out

        def handle(raw: bytes, context):
            self.seen.append((method, raw))
            return forward(raw, timeout=5)
        return grpc.unary_unary_rpc_method_handler(handle)


def sample(registry, name, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# ----------------------------------------------------------------------------- verdicts

def test_score_complete_session_roundtrip(server, make_client, registry):
    c = make_client(server, deadline_s=2.0)
    acct = f"acct_rt_{id(c)}"
    for i in range(4):
        v = c.score(acct, f"e{i}", T0 + 60 * i, 120, prompt=PROMPT, max_tokens=512, model="m-large",
                    client_fingerprint="python-sdk/1.0", ip_prefix="203.0.113.0/24", account_created_at=T0 - 86400)
        assert not v.fail_open and v.error is None and v.fail_open_reason is None
        assert math.isclose(v.p_human + v.p_benign_automation + v.p_distillation_harvesting, 1.0, abs_tol=1e-4)
        assert v.label in LABELS and v.action in ACTIONS
        assert v.events_in_session == i + 1 and v.session_id == f"{acct}:0"
        assert v.model_version and v.shadow is False and v.duplicate is False
        assert all(isinstance(code, str) and isinstance(ev, str) for code, ev in v.reasons)
        assert v.enforced_action == v.action
        assert c.complete(acct, f"e{i}", 480, status=200, latency_s=1.5) is True

    again = c.score(acct, "e3", T0 + 180, 120, prompt=PROMPT)      # a gateway retry
    assert again.duplicate and again.events_in_session == 4

    batch = c.score_batch([{"account_id": acct, "event_id": "b0", "ts": T0 + 300, "prompt_tokens": 10, "prompt": PROMPT},
                           {"account_id": acct + "_2", "event_id": "b1", "ts": T0 + 300, "prompt_tokens": 10}])
    assert [v.events_in_session for v in batch] == [5, 1] and not any(v.fail_open for v in batch)

    s = c.get_session(acct)
    assert s.found and s.events_in_session == 5 and s.latest.label in LABELS
    assert [e["completed"] for e in s.recent_events] == [True] * 4 + [False]
    assert len(s.feature_names) == len(s.recent_events[0]["features"]) > 0
    assert c.end_session(acct) is True
    assert c.get_session(acct).found is False
    assert sample(registry, "distillguard_client_requests_total", outcome="ok") == 4 + 4 + 1 + 1 + 1 + 1 + 1
    assert sample(registry, "distillguard_client_latency_seconds_count", method="score") == 5
    assert sample(registry, "distillguard_client_requests_total", outcome="fail_open") == 0


def test_complete_in_background(server, make_client):
    c = make_client(server, deadline_s=2.0)
    acct = f"acct_bg_{id(c)}"
    c.score(acct, "e0", T0, 50)
    assert c.complete(acct, "e0", 321, wait=False) is True
    for _ in range(100):
        s = c.get_session(acct)
        if s.recent_events[0]["completed"]:
            break
        time.sleep(0.01)
    assert s.recent_events[0]["completed"] and s.recent_events[0]["completion_tokens"] == 321


# ----------------------------------------------------------------------------- prompts stay at the gateway

@pytest.fixture(scope="module")
def keyed_server():
    from distillguard.serving.server import ServeConfig

    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(signature_key=b"gateway-secret"))
    yield f"127.0.0.1:{port}"
    srv.stop(0)


def test_a_signature_made_with_another_key_is_refused_and_fails_open(keyed_server, make_client):
    good, bad = make_client(keyed_server, hmac_key=b"gateway-secret"), make_client(keyed_server, hmac_key=b"other")
    acct = f"acct_key_{id(good)}"
    assert not good.score(acct, "e0", T0, 40, prompt=PROMPT).fail_open
    v = bad.score(acct, "e1", T0 + 1, 40, prompt=PROMPT)
    assert v.fail_open and v.action == "ALLOW" and "key id" in v.error
    assert good.get_session(acct).events_in_session == 1     # the refused request changed nothing
    # An old client sending its own template_hash is still served.
    assert not bad.score(acct, "e2", T0 + 2, 40, template_hash="upstream-hash").fail_open


def test_raw_prompt_never_reaches_the_server(keyed_server, make_client):
    server = keyed_server
    proxy = _RecordingProxy(server)
    srv = grpc.server(futures.ThreadPoolExecutor(4))
    srv.add_generic_rpc_handlers((proxy,))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        key = b"gateway-secret"
        c = make_client(f"127.0.0.1:{port}", deadline_s=2.0, hmac_key=key)
        acct = f"acct_pr_{id(c)}"
        v = c.score(acct, "e0", T0, 40, prompt=PROMPT)
        c.score_batch([{"account_id": acct, "event_id": "e1", "ts": T0 + 5, "prompt_tokens": 40, "prompt": PROMPT}])
        assert not v.fail_open
    finally:
        srv.stop(0)
    assert len(proxy.seen) == 2
    for _, raw in proxy.seen:
        assert ARTICLE.encode() not in raw and b"Summarize" not in raw and b"barnacle" not in raw
    req = pb.ScoreRequest.FromString(proxy.seen[0][1])
    assert req.prompt == "" and req.HasField("elicits_reasoning") and req.elicits_reasoning is True
    assert req.frame_signature == frames.frame_signature(PROMPT, key) != frames.frame_signature(PROMPT)
    assert frames.parse_signature(req.frame_signature)[1] == frames.key_id(key) and req.template_hash == ""
    assert pb.ScoreBatchRequest.FromString(proxy.seen[1][1]).requests[0].frame_signature == req.frame_signature


def test_request_builder_drops_prompt_and_keeps_explicit_fields():
    r = build_score_request("a", "e", T0, 3, prompt=PROMPT, hmac_key=b"k", session_id=None, max_tokens=None,
                            system_prompt="You are Acme's helpful assistant.")
    assert r.prompt == "" and r.frame_signature == frames.frame_signature(PROMPT, b"k") and r.elicits_reasoning
    assert r.system_signature == frames.system_signature("You are Acme's helpful assistant.", b"k")
    assert not r.system_prompt
    r = build_score_request("a", "e", T0, 3, prompt=PROMPT, template_hash="upstream", elicits_reasoning=False)
    assert (r.template_hash, r.frame_signature, r.elicits_reasoning, r.prompt) == ("upstream", "", False, "")
    assert not build_score_request("a", "e", T0, 3).HasField("elicits_reasoning")


# ----------------------------------------------------------------------------- caller bugs

def test_invalid_request_fails_open_without_tripping_the_breaker(server, make_client, registry):
    c = make_client(server, deadline_s=2.0, breaker_failures=2, fail_open_action="THROTTLE")
    for i in range(5):
        v = c.score("", f"e{i}", T0, 10)                                  # server says INVALID_ARGUMENT
        assert v.fail_open and v.fail_open_reason == "invalid" and v.action == "THROTTLE"
        assert "INVALID_ARGUMENT" in v.error and "account_id" in v.error
        assert math.isnan(v.p_distillation_harvesting) and v.label == ""
    bad = c.score("acct_x", "e0", T0, "lots")                              # cannot even be built
    assert bad.fail_open and bad.fail_open_reason == "invalid" and "bad request" in bad.error
    assert c.complete("acct_x", "", 10) is False                           # INVALID_ARGUMENT on Complete
    assert c.breaker.state == CircuitBreaker.CLOSED
    assert not c.score(f"acct_ok_{id(c)}", "e0", T0, 10).fail_open
    assert sample(registry, "distillguard_client_fail_open_total", reason="invalid") == 7
    assert sample(registry, "distillguard_client_requests_total", outcome="error") == 7
    assert sample(registry, "distillguard_client_requests_total", outcome="ok") == 1


# ----------------------------------------------------------------------------- deadlines

def test_scorer_stopped_mid_traffic_fails_open(make_client, registry):
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE)
    c = make_client(f"127.0.0.1:{port}", deadline_s=0.5)
    try:
        assert not c.score("acct_s", "e0", T0, 10).fail_open
    finally:
        srv.stop(0)
    t = time.perf_counter()
    v = c.score("acct_s", "e1", T0 + 1, 10)
    assert v.fail_open and v.fail_open_reason == "unavailable" and v.action == "ALLOW", v.error
    assert time.perf_counter() - t < 0.45              # refused, not waited out
    assert c.complete("acct_s", "e1", 10) is False
    assert sample(registry, "distillguard_client_fail_open_total", reason="unavailable") == 2


def test_hung_scorer_fails_open_at_the_deadline(black_hole, make_client, registry):
    c = make_client(black_hole, deadline_s=0.05, breaker_failures=3, breaker_reset_s=60)
    times = []
    for i in range(3):
        t = time.perf_counter()
        v = c.score("acct_h", f"e{i}", T0, 10)
        times.append(time.perf_counter() - t)
        assert v.fail_open and v.fail_open_reason == "deadline", v.error
    assert max(times) < 0.5, times                   # the deadline bounds it, not a TCP timeout
    assert sample(registry, "distillguard_client_fail_open_total", reason="deadline") == 3
    assert c.breaker.state == CircuitBreaker.OPEN
    t = time.perf_counter()
    assert c.score("acct_h", "e9", T0, 10).fail_open_reason == "circuit_open"
    assert time.perf_counter() - t < 0.01


# ----------------------------------------------------------------------------- dead scorer, breaker

def test_dead_scorer_opens_the_circuit_and_recovers(make_client, registry):
    port = free_port()                                 # nothing listens here (yet)
    target = f"127.0.0.1:{port}"
    c = make_client(target, deadline_s=0.5, retries=1, breaker_failures=3, breaker_reset_s=0.3)
    for i in range(3):
        t = time.perf_counter()
        v = c.score("acct_d", f"e{i}", T0 + i, 10)
        assert v.fail_open and v.fail_open_reason == "unavailable", v.error
        assert time.perf_counter() - t < 0.45          # refused at once, not waited out
    assert c.breaker.state == CircuitBreaker.OPEN
    assert sample(registry, "distillguard_client_fail_open_total", reason="unavailable") == 3

    # Open: no network at all, so no waiting either.
    n = 300
    t = time.perf_counter()
    verdicts = [c.score("acct_d", f"o{i}", T0 + i, 10) for i in range(n)]
    elapsed = time.perf_counter() - t
    assert all(v.fail_open_reason == "circuit_open" and v.action == "ALLOW" for v in verdicts)
    assert elapsed / n < 0.001, f"{elapsed / n * 1e6:.0f} us per call while open"
    assert c.complete("acct_d", "o0", 10) is False
    assert sample(registry, "distillguard_client_fail_open_total", reason="circuit_open") == n + 1

    # Half-open with the scorer still dead: one trial, and it opens again at once.
    time.sleep(0.35)
    assert c.breaker.state == CircuitBreaker.HALF_OPEN
    assert c.score("acct_d", "t0", T0, 10).fail_open_reason == "unavailable"
    assert c.breaker.state == CircuitBreaker.OPEN

    # The scorer comes back on the same port: the next trial closes the circuit.
    srv, bound = create_server(target, DEFAULT_BUNDLE)
    try:
        assert bound == port
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            v = c.score("acct_d", "r0", T0 + 1000, 10)
            if not v.fail_open:
                break
            time.sleep(0.05)
        assert not v.fail_open and v.label in LABELS, v.error
        assert c.breaker.state == CircuitBreaker.CLOSED
        assert not c.score("acct_d", "r1", T0 + 1001, 10).fail_open
    finally:
        srv.stop(0)
    assert sample(registry, "distillguard_client_requests_total", outcome="ok") == 2
    assert sample(registry, "distillguard_client_requests_total", outcome="fail_open") >= n + 5


def test_breaker_unit_transitions():
    now = [0.0]
    b = CircuitBreaker(failures=2, reset_s=10.0, clock=lambda: now[0])
    assert b.acquire()
    b.failure()
    b.success()                       # not consecutive any more
    b.failure()
    assert b.state == b.CLOSED
    b.failure()
    assert b.state == b.OPEN and not b.acquire()
    now[0] = 10.0
    assert b.acquire() and not b.acquire()      # exactly one trial
    b.release()                                 # trial cancelled: another may go
    assert b.acquire()
    b.success()
    assert b.state == b.CLOSED and b.acquire()


def test_config_checks():
    with pytest.raises(ValueError):
        ClientConfig("h:1", fail_open_action="DENY")
    with pytest.raises(ValueError):
        ClientConfig("h:1", breaker_failures=0)
    assert ClientConfig("h:1", hmac_key="s").hmac_key == b"s"
