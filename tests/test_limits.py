"""Input limits over a real socket: every breach is INVALID_ARGUMENT naming the field, is
counted, and leaves session state as it was; oversize messages get RESOURCE_EXHAUSTED from
gRPC; a far-future timestamp cannot expire other sessions. Plus a property-based fuzz of
the request messages (hypothesis): any field values give OK or INVALID_ARGUMENT naming a
field, never a crash or a hang, and the server stays healthy."""
from __future__ import annotations

import math
import re
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillguard.cli import main
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.serving.limits import MIN_TS_2015, RequestLimits, metric_field
from distillguard.serving.server import ServeConfig, create_server
from distillguard.serving.stubs import pb, pb_grpc

NOW = time.time()
T = NOW - 3600.0            # a valid event time: an hour ago by the wall clock
# Small limits where the default would make the test slow (prompt, message, batch).
LIMITS = RequestLimits(max_prompt_bytes=4096, max_message_bytes=64 * 1024, max_batch=8)


class Server:
    def __init__(self, limits: RequestLimits = LIMITS, max_sessions: int = 1000):
        self.srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(max_sessions=max_sessions,
                                                                                    limits=limits))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.ScorerStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    @property
    def store(self):
        return self.srv.scorer.store

    def metric(self, name: str, **labels) -> float:
        return self.srv.metrics.registry.get_sample_value(name, labels) or 0.0

    def rejected(self, method: str, field: str) -> float:
        return self.metric("distillguard_rejected_requests_total", method=method, field=field)

    def state(self) -> tuple:
        """What a refused request must not change."""
        s = self.store
        return (len(s), s.watermark, dict(s.evictions), int(s.length.sum()), int(s.ring["completed"].sum()))

    def close(self):
        self.channel.close()
        self.srv.stop(0)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


def _score(account="acct", event="e1", ts=T, **kw) -> pb.ScoreRequest:
    base = dict(account_id=account, event_id=event, ts=ts, prompt_tokens=100, max_tokens=512,
                template_hash="00000000000000aa")
    base.update(kw)
    return pb.ScoreRequest(**base)


def _refused(fn, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, timeout=10)
    return e.value


# ----------------------------------------------------------------------------- each limit

LONG_ID = "i" * 257
EMOJI_ID = "\U0001F600" * 65                 # 65 characters, 260 UTF-8 bytes: counted in bytes
LONG_STR = "s" * 1025

SCORE_BREACHES = [
    ("account_id", dict(account=LONG_ID)),
    ("account_id", dict(account=EMOJI_ID)),
    ("session_id", dict(session_id=LONG_ID)),
    ("event_id", dict(event=LONG_ID)),
    ("model", dict(model=LONG_STR)),
    ("client_fingerprint", dict(client_fingerprint=LONG_STR)),
    ("ip_prefix", dict(ip_prefix=LONG_STR)),
    ("template_hash", dict(template_hash=LONG_STR)),
    ("prompt", dict(prompt="p" * 4097)),
    ("prompt_tokens", dict(prompt_tokens=10_000_001)),
    ("prompt_tokens", dict(prompt_tokens=2**62)),
    ("max_tokens", dict(max_tokens=10_000_001)),
    ("ts", dict(ts=NOW + 2 * 3600)),                  # more than an hour ahead of the server clock
    ("ts", dict(ts=NOW + 365 * 86400)),
    ("ts", dict(ts=MIN_TS_2015 - 1)),                 # before 2015
    ("ts", dict(ts=1.7e12)),                          # milliseconds by mistake
    ("ts", dict(ts=math.inf)),
    ("ts", dict(ts=math.nan)),
    ("account_created_at", dict(account_created_at=NOW + 30 * 86400)),
]


@pytest.mark.parametrize("field,kw", SCORE_BREACHES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(SCORE_BREACHES)])
def test_score_breach_is_invalid_argument_counted_and_touches_no_state(server, field, kw):
    acct = f"acct-breach-{field}"
    kw = {"account": acct, **kw}
    before, counted = server.state(), server.rejected("Score", field)
    e = _refused(server.stub.Score, _score(**kw))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details().startswith(f"{field}:"), e.details()
    assert len(e.details()) < 300                       # the offending value is not echoed back
    assert server.rejected("Score", field) == counted + 1
    assert server.state() == before
    if len(kw["account"].encode()) <= 256:
        assert not server.stub.GetSession(pb.SessionRef(account_id=kw["account"]), timeout=5).found


def test_values_at_the_limits_are_accepted(server):
    r = server.stub.Score(_score("i" * 256, "e" * 256, session_id="s" * 256, model="m" * 1024,
                                 client_fingerprint="f" * 1024, ip_prefix="p" * 1024, template_hash="",
                                 prompt="q" * 4096, prompt_tokens=10_000_000, max_tokens=10_000_000,
                                 ts=NOW + 3000, account_created_at=NOW + 3000), timeout=10)
    assert r.events_in_session == 1
    r = server.stub.Score(_score("\u00e9" * 128, "e1", ts=MIN_TS_2015), timeout=10)    # 256 bytes exactly
    assert r.events_in_session == 1
    assert server.stub.EndSession(pb.SessionRef(account_id="\u00e9" * 128), timeout=5).ended


COMPLETE_BREACHES = [
    ("account_id", dict(account_id=LONG_ID)),
    ("session_id", dict(session_id=LONG_ID)),
    ("event_id", dict(event_id=LONG_ID)),
    ("completion_tokens", dict(completion_tokens=10_000_001)),
    ("status", dict(status=1000)),
    ("status", dict(status=70_000)),                  # would overflow the int16 status column
    ("status", dict(status=-1)),
    ("latency_s", dict(latency_s=math.nan)),
    ("latency_s", dict(latency_s=-1.0)),
]


@pytest.mark.parametrize("field,kw", COMPLETE_BREACHES,
                         ids=[f"{f}-{i}" for i, (f, _) in enumerate(COMPLETE_BREACHES)])
def test_complete_breach_is_refused_and_the_event_stays_open(server, field, kw):
    acct = "acct-complete"
    server.stub.Score(_score(acct, "c1"), timeout=10)
    before, counted = server.state(), server.rejected("Complete", field)
    req = dict(account_id=acct, event_id="c1", completion_tokens=10, status=200, latency_s=0.5)
    req.update(kw)
    e = _refused(server.stub.Complete, pb.CompleteRequest(**req))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details().startswith(f"{field}:"), e.details()
    assert server.rejected("Complete", field) == counted + 1
    assert server.state() == before
    ev = server.stub.GetSession(pb.SessionRef(account_id=acct), timeout=5).recent_events[0]
    assert not ev.completed and ev.completion_tokens == 0


@pytest.mark.parametrize("method", ["GetSession", "EndSession"])
@pytest.mark.parametrize("field", ["account_id", "session_id"])
def test_session_ref_ids_are_bounded(server, method, field):
    server.stub.Score(_score("acct-ref", "r1"), timeout=10)
    ref = {"account_id": "acct-ref", field: LONG_ID}
    before = server.state()
    e = _refused(getattr(server.stub, method), pb.SessionRef(**ref))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details().startswith(f"{field}:")
    assert server.rejected(method, field) >= 1
    assert server.state() == before


def test_score_batch_over_the_cap_is_refused_whole(server):
    before, counted = server.state(), server.rejected("ScoreBatch", "requests")
    e = _refused(server.stub.ScoreBatch,
                 pb.ScoreBatchRequest(requests=[_score("acct-batch-cap", f"b{i}", T + i) for i in range(9)]))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details().startswith("requests:")
    assert "at most 8" in e.details()
    assert server.rejected("ScoreBatch", "requests") == counted + 1
    assert server.state() == before
    ok = server.stub.ScoreBatch(pb.ScoreBatchRequest(requests=[_score("acct-batch-cap", f"b{i}", T + i)
                                                               for i in range(8)]), timeout=10)
    assert [r.events_in_session for r in ok.responses] == list(range(1, 9))


def test_score_batch_names_the_item_and_counts_the_bare_field(server):
    reqs = [_score("acct-batch-item", f"k{i}", T + i) for i in range(4)]
    reqs[2].ts = NOW + 86400
    before, counted = server.state(), server.rejected("ScoreBatch", "ts")
    e = _refused(server.stub.ScoreBatch, pb.ScoreBatchRequest(requests=reqs))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details().startswith("requests[2].ts:")
    assert server.rejected("ScoreBatch", "ts") == counted + 1            # label without the index
    assert server.state() == before
    assert not server.stub.GetSession(pb.SessionRef(account_id="acct-batch-item"), timeout=5).found


def test_oversize_message_is_resource_exhausted_from_grpc(server):
    """Beyond max_message_bytes gRPC refuses the message itself: RESOURCE_EXHAUSTED, before
    any handler runs (so it is not in distillguard_rejected_requests or requests_total)."""
    handled = server.metric("distillguard_request_seconds_count", method="Score")
    before = server.state()
    e = _refused(server.stub.Score, _score("acct-huge", prompt="x" * 100_000))
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in e.details()
    batch = pb.ScoreBatchRequest(requests=[_score("acct-huge", f"h{i}", prompt="y" * 4000) for i in range(8)] * 3)
    assert batch.ByteSize() > 64 * 1024
    assert _refused(server.stub.ScoreBatch, batch).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.metric("distillguard_request_seconds_count", method="Score") == handled
    assert server.state() == before
    assert server.stub.Score(_score("acct-huge", "ok"), timeout=10).events_in_session == 1    # still serving


# ----------------------------------------------------------------------------- the watermark

def _far_future_attack(limits: RequestLimits):
    """Session A is live; then a request stamped 30 days ahead arrives for account B.
    -> (was B refused, is A still live)."""
    s = Server(limits, max_sessions=100)
    try:
        for i in range(3):
            s.stub.Score(_score("victim", f"v{i}", T + i), timeout=10)
        try:
            s.stub.Score(_score("attacker", "x1", NOW + 30 * 86400), timeout=10)
            refused = False
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details().startswith("ts:")
            refused = True
        s.stub.Score(_score("bystander", "y1", T + 10), timeout=10)      # opening a session runs the idle scan
        info = s.stub.GetSession(pb.SessionRef(account_id="victim"), timeout=5)
        return refused, info.found and info.events_in_session == 3
    finally:
        s.close()


def test_far_future_ts_cannot_expire_other_sessions():
    refused, victim_alive = _far_future_attack(LIMITS)
    assert refused and victim_alive
    # The same request with the bound switched off shows what the limit prevents: the
    # event-time watermark jumps 30 days and the victim's session is expired as idle.
    refused, victim_alive = _far_future_attack(RequestLimits(max_ts_ahead_s=10 * 365 * 86400.0))
    assert not refused and not victim_alive


def test_ts_age_bound_is_optional_and_uses_the_clock():
    lim = RequestLimits(max_ts_age_s=7 * 86400.0, clock=lambda: 2_000_000_000.0)
    from distillguard.serving.scorer import InvalidRequest, ScoreInput

    ok = ScoreInput(account_id="a", event_id="e", ts=2_000_000_000.0 - 6 * 86400, prompt_tokens=1)
    lim.check_score(ok)
    old = ScoreInput(account_id="a", event_id="e", ts=2_000_000_000.0 - 8 * 86400, prompt_tokens=1)
    with pytest.raises(InvalidRequest) as e:
        lim.check_score(old)
    assert e.value.field == "ts"
    RequestLimits(clock=lambda: 2_000_000_000.0).check_score(old)          # off by default


def test_limits_are_validated_and_cli_flags_reach_them(capsys):
    for bad in (dict(max_batch=0), dict(max_concurrent_rpcs=0), dict(max_ts_ahead_s=-1), dict(min_ts=math.nan),
                dict(max_ts_age_s=0)):
        with pytest.raises(ValueError):
            RequestLimits(**bad)
    assert metric_field("requests[17].ts") == "ts" and metric_field("ts") == "ts"
    assert RequestLimits().grpc_options() == [("grpc.max_receive_message_length", 4 * 1024 * 1024)]
    # A bad flag is a clean CLI error before anything binds.
    assert main(["serve", "--insecure", "--port", "0", "--max-batch", "0"]) == 2
    assert "max_batch" in capsys.readouterr().err
    from distillguard.cli import build_parser
    from distillguard.cli.serve import limits_config as _serve_limits

    a = build_parser().parse_args(["serve", "--insecure", "--max-concurrent-rpcs", "0", "--max-batch", "64",
                                   "--max-message-bytes", "1048576", "--max-ts-ahead-s", "60",
                                   "--max-ts-age-s", "86400"])
    lim = _serve_limits(a)
    assert (lim.max_concurrent_rpcs, lim.max_batch, lim.max_message_bytes, lim.max_ts_ahead_s, lim.max_ts_age_s) \
        == (None, 64, 1048576, 60.0, 86400.0)
    assert _serve_limits(build_parser().parse_args(["serve"])) == RequestLimits()


# ----------------------------------------------------------------------------- fuzzing

_FIELDS = ("account_id", "session_id", "event_id", "ts", "prompt_tokens", "max_tokens", "model",
           "client_fingerprint", "ip_prefix", "account_created_at", "template_hash", "prompt",
           "completion_tokens", "status", "latency_s", "requests")
_NAMED = re.compile(r"^(requests\[\d+\]\.)?(" + "|".join(_FIELDS) + r"):")

# Each field has values inside the limits and hostile ones (any int64, NaN/inf, huge or odd
# strings). A request is drawn valid, then 0-2 of its fields are replaced by hostile
# values: a third of the calls go all the way into the scorer with arbitrary valid values
# (a small account pool, so sessions grow, retry, gap and evict), the rest probe the checks.
_POOL = st.sampled_from(["fz-a", "fz-b", "fz-c"])
_TEXT_ID = st.text(min_size=1, max_size=24)
_HOSTILE_INT = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, -1),
                         st.sampled_from([10_000_001, 2**31, 2**63 - 1]))
_HOSTILE_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                           st.sampled_from([0.0, -1.0, MIN_TS_2015 - 1, NOW + 3700, 1.7e12, math.nan, math.inf]))
_HOSTILE_STR = st.one_of(st.just(""), st.text(min_size=250, max_size=300), st.text(min_size=1025, max_size=1100),
                         st.sampled_from(["\x00", "i" * 257, "\U0001F600" * 65]))

SCORE_VALID = dict(
    account_id=st.one_of(_POOL, _TEXT_ID), session_id=st.one_of(st.just(""), _TEXT_ID, st.just("s" * 256)),
    event_id=st.one_of(st.integers(0, 60).map(str), _TEXT_ID),
    ts=st.one_of(st.floats(NOW - 3 * 86400, NOW + 3000), st.floats(MIN_TS_2015, NOW + 3000),
                 st.sampled_from([MIN_TS_2015, NOW + 3600])),
    prompt_tokens=st.one_of(st.integers(0, 4000), st.integers(0, 10_000_000)),
    max_tokens=st.one_of(st.just(0), st.integers(0, 10_000_000)),
    model=st.one_of(st.text(max_size=30), st.just("m" * 1024)),
    client_fingerprint=st.one_of(st.text(max_size=60), st.sampled_from(["Mozilla/5.0", "python-requests/2.31"])),
    ip_prefix=st.text(max_size=20),
    account_created_at=st.one_of(st.just(0.0), st.floats(0, NOW)),
    template_hash=st.one_of(st.just(""), st.text(max_size=64)),
    prompt=st.one_of(st.just(""), st.text(max_size=300), st.just("q" * 4096)))
SCORE_HOSTILE = dict(
    account_id=_HOSTILE_STR, session_id=_HOSTILE_STR, event_id=_HOSTILE_STR, ts=_HOSTILE_FLOAT,
    prompt_tokens=_HOSTILE_INT, max_tokens=_HOSTILE_INT, model=_HOSTILE_STR, client_fingerprint=_HOSTILE_STR,
    ip_prefix=_HOSTILE_STR, account_created_at=_HOSTILE_FLOAT, template_hash=_HOSTILE_STR,
    prompt=st.one_of(st.text(min_size=4097, max_size=4200), st.just("\U0001F600" * 1100)))
COMPLETE_VALID = dict(
    account_id=st.one_of(_POOL, _TEXT_ID), session_id=st.one_of(st.just(""), _TEXT_ID),
    event_id=st.one_of(st.integers(0, 60).map(str), _TEXT_ID), completion_tokens=st.integers(0, 10_000_000),
    status=st.one_of(st.sampled_from([0, 200, 429, 500]), st.integers(0, 999)),
    latency_s=st.floats(0, 600))
COMPLETE_HOSTILE = dict(
    account_id=_HOSTILE_STR, session_id=_HOSTILE_STR, event_id=_HOSTILE_STR, completion_tokens=_HOSTILE_INT,
    status=st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, 1000, 32768, 70_000])),
    latency_s=_HOSTILE_FLOAT)


def _message(draw, cls, valid: dict, hostile: dict, broken: int):
    fields = {k: draw(v) for k, v in valid.items()}
    for k in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=broken, unique=True)):
        fields[k] = draw(hostile[k])
    return cls(**fields)


@st.composite
def score_requests(draw, broken: int = 2):
    r = _message(draw, pb.ScoreRequest, SCORE_VALID, SCORE_HOSTILE, broken)
    if draw(st.booleans()):
        r.elicits_reasoning = draw(st.booleans())
    return r


@st.composite
def score_batches(draw):
    # Mostly valid items (one bad item fails the batch), sometimes more than max_batch.
    items = st.one_of(score_requests(broken=0), score_requests(broken=0), score_requests(broken=0),
                      score_requests(broken=1))
    return pb.ScoreBatchRequest(requests=draw(st.lists(items, max_size=10)))


@st.composite
def complete_requests(draw):
    return _message(draw, pb.CompleteRequest, COMPLETE_VALID, COMPLETE_HOSTILE, 2)


session_refs = st.builds(pb.SessionRef, account_id=st.one_of(_POOL, _TEXT_ID, _HOSTILE_STR),
                         session_id=st.one_of(st.just(""), _TEXT_ID, _HOSTILE_STR))

calls = st.one_of(
    st.tuples(st.just("Score"), score_requests()),
    st.tuples(st.just("Complete"), complete_requests()),
    st.tuples(st.just("ScoreBatch"), score_batches()),
    st.tuples(st.sampled_from(["GetSession", "EndSession"]), session_refs),
)


@pytest.fixture(scope="module")
def fuzz_server():
    s = Server(max_sessions=200)         # a small store: the fuzz also drives eviction
    yield s
    s.close()


@settings(max_examples=800, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@pytest.mark.slow
@given(call=calls)
def test_fuzzed_requests_get_ok_or_invalid_argument_naming_a_field(fuzz_server, call):
    method, req = call
    try:
        getattr(fuzz_server.stub, method)(req, timeout=10)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, e.code(), e.details(), req)
        assert _NAMED.match(e.details()), (method, e.details())


def test_server_is_healthy_after_the_fuzz(fuzz_server):
    s = fuzz_server
    assert s.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING
    assert s.stub.Score(_score("after-fuzz", "z1"), timeout=10).events_in_session >= 1
    assert len(s.store) <= 200
    # The store's event-time watermark never got ahead of the clock by more than the bound.
    assert s.store.watermark <= time.time() + 3600
