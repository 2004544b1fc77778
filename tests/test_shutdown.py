"""Graceful shutdown and restart: SIGTERM drains (health NOT_SERVING, in-flight calls
finish, logs flushed, exit 0); the session-state snapshot survives a restart so the next
score is the one an unrestarted scorer gives."""
import json
import logging
import os
import signal
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from distillguard.serving import DEFAULT_BUNDLE
from distillguard.model import features
from distillguard.serving import snapshot
from distillguard.serving.harness import start_serve
from distillguard.serving.scorer import CompleteInput, Scorer, ScoreInput
from distillguard.serving.server import SERVICE
from distillguard.serving.state import MemoryStore, event_key
from distillguard.serving.stubs import pb, pb_grpc

T0 = time.time() - 3 * 86400.0      # inside the server's accepted ts range (<= now + 1 h)


# ---------------------------------------------------------------------------- traffic

def _session_events(acct: str, sid: str, n: int, scripted: bool, seed: int) -> list[dict]:
    """Score + Complete fields of one session, in order (a harvester or a human)."""
    rng = np.random.default_rng(seed)
    gaps = rng.normal(1500, 30, n).clip(60) if scripted else rng.exponential(120.0, n) + 2.0
    ts = T0 + np.cumsum(gaps)
    out = []
    for i in range(n):
        mt = 1024 if scripted else int(rng.choice([0, 512, 2048]))
        out.append(dict(account_id=acct, session_id=sid, event_id=f"{acct}-{sid}-{i}", ts=float(ts[i]),
                        prompt_tokens=int(rng.integers(100, 900)), max_tokens=mt,
                        template_hash=f"{int(rng.integers(0, 2 if scripted else 50)) + 0xabc0:016x}",
                        client_fingerprint="python-httpx/0.27" if scripted else "Mozilla/5.0 Chrome/126",
                        account_created_at=T0 - (2 if scripted else 400) * 86400.0,
                        completion_tokens=mt if scripted else int(rng.integers(10, 800)),
                        status=200 if i % 17 else 429))
    return out


def _sessions():
    # One long harvester (more events than the ring: aggregates carry the older ones), a
    # human, and an implicit (idle-gap) session without a session_id.
    return [_session_events("harv-1", "h1", 45, True, 1), _session_events("human-1", "u1", 12, False, 2),
            _session_events("implicit-1", "", 7, True, 3)]


_SCORE_FIELDS = ("account_id", "session_id", "event_id", "ts", "prompt_tokens", "max_tokens", "template_hash",
                 "client_fingerprint", "account_created_at")


def _score_in(e) -> ScoreInput:
    return ScoreInput(**{k: e[k] for k in _SCORE_FIELDS})


def _complete_in(e) -> CompleteInput:
    return CompleteInput(account_id=e["account_id"], session_id=e["session_id"], event_id=e["event_id"],
                         completion_tokens=e["completion_tokens"], status=e["status"])


def _feed(scorer: Scorer, events: list[dict]):
    out = []
    for e in events:
        out.append(scorer.score(_score_in(e), timeout=10))
        assert scorer.complete(_complete_in(e), timeout=10)
    return out


def _interleaved(sessions, upto=None):
    """All sessions' events in event-time order (optionally each session's first `upto`)."""
    evs = [e for s in sessions for e in (s if upto is None else s[:upto(s)])]
    return sorted(evs, key=lambda e: e["ts"])


# ---------------------------------------------------------------------------- in-process snapshot

@pytest.fixture(scope="module")
def bundle():
    from distillguard.serving.bundle import load_bundle

    return load_bundle(DEFAULT_BUNDLE)


def test_snapshot_round_trip_gives_the_unrestarted_scores(tmp_path, bundle):
    sessions = _sessions()
    before = _interleaved(sessions, upto=lambda s: len(s) - 1)
    last = [s[-1] for s in sessions]
    a, b = Scorer(bundle, max_sessions=100), Scorer(bundle, max_sessions=100)
    _feed(a, before)
    a.store.set_flagged(("harv-1", "h1"), True)
    spec = bundle.metadata["feature_spec_hash"]
    stats = snapshot.save(a.store, tmp_path / "s.npz", feature_spec_hash=spec, model_version=bundle.version)
    flagged = [k for k, _, f in a.store.sessions_in_order() if f]
    assert ("harv-1", "h1") in flagged
    assert stats["sessions"] == 3 and stats["flagged"] == len(flagged) and not list(tmp_path.glob(".s.npz.tmp*"))
    got = snapshot.load(tmp_path / "s.npz", b.store, feature_spec_hash=spec)
    assert got["restored"] == 3 and got["dropped"] == 0 and b.store.is_flagged(("harv-1", "h1"))
    assert b.store.watermark == a.store.watermark
    for s in sessions:
        ga, gb = a.get_session(s[0]["account_id"], s[0]["session_id"]), b.get_session(s[0]["account_id"],
                                                                                       s[0]["session_id"])
        assert gb.session_id == ga.session_id and gb.events_in_session == ga.events_in_session
        assert gb.latest.probs == ga.latest.probs and gb.events == ga.events
    for e in last:   # the next event continues each session exactly as without the restart
        va, vb = a.score(_score_in(e)), b.score(_score_in(e))
        assert vb.probs == va.probs and vb.events_in_session == va.events_in_session and vb.session_id == va.session_id
    # A retry of a pre-restart event is still recognised (event keys survive).
    dup = b.score(_score_in(before[-1]))
    assert dup.duplicate


def _store_with(events_per_session: int, ring: int, n_sessions: int = 6, flag=()):
    s = MemoryStore(max_sessions=50, ring=ring)
    for k in range(n_sessions):
        for i in range(events_per_session):
            ts = T0 + k + i * 600.0
            meta, _ = s.open((f"acct-{k}", ""), ts)
            ev = {"ts": ts, "prompt_tokens": 10 + i, "completion_tokens": 0, "max_tokens": 100 * (i % 3),
                  "status": -1, "template_key": 5 + i % 4, "elicits_reasoning": i % 2, "browser_client": 0,
                  "account_created_at": T0 - 86400.0}
            s.append(np.array([meta.slot]), [ev], [event_key(f"{k}-{i}")])
    for k in flag:
        s.set_flagged((f"acct-{k}", ""), True)
    return s


def test_restore_into_a_shorter_ring_folds_the_surplus_like_append_does(tmp_path):
    long_ring, short_ring = _store_with(40, ring=31), _store_with(40, ring=8)
    snapshot.save(long_ring, tmp_path / "s.npz", feature_spec_hash="x")
    restored = MemoryStore(max_sessions=50, ring=8)
    got = snapshot.load(tmp_path / "s.npz", restored, feature_spec_hash="x")
    assert got["events_folded"] == 6 * (31 - 8)
    for k in range(6):
        a, b = short_ring.get((f"acct-{k}", "")).slot, restored.get((f"acct-{k}", "")).slot
        assert restored.length[b] == short_ring.length[a] == 8
        for f in features.STATE_FIELDS:
            assert np.array_equal(getattr(restored.agg, f)[b], getattr(short_ring.agg, f)[a]), f
        for name, arr in short_ring.ring.items():
            assert np.array_equal(restored.ring[name][b, :8], arr[a, :8]), name


def test_restore_beyond_capacity_keeps_flagged_then_most_recent(tmp_path):
    s = _store_with(3, ring=4, n_sessions=10, flag=(0, 1, 2))
    snapshot.save(s, tmp_path / "s.npz", feature_spec_hash="x")
    small = MemoryStore(max_sessions=5, ring=4)
    got = snapshot.load(tmp_path / "s.npz", small, feature_spec_hash="x")
    assert got == {**got, "restored": 5, "dropped": 5, "flagged": 3}
    live = {k[0] for k, _, _ in small.sessions_in_order()}
    assert live == {"acct-0", "acct-1", "acct-2", "acct-8", "acct-9"}


def test_mismatched_or_corrupt_snapshot_starts_empty_and_logs(tmp_path, bundle, caplog):
    a = Scorer(bundle, max_sessions=100)
    _feed(a, _sessions()[0][:5])
    good = tmp_path / "good.npz"
    snapshot.save(a.store, good, feature_spec_hash="someone-elses-spec", model_version="old")
    caplog.set_level(logging.INFO, logger="distillguard.snapshot")
    # Another feature spec: rings and flags kept, aggregates rebuilt from the rings, counted.
    b = Scorer(bundle, max_sessions=100)
    got = snapshot.restore_scorer(b, good)
    assert got is not None and got["restored"] == got["rebuilt"] == len(a.store) > 0
    assert sum(b.store.rebuilt.values()) == len(a.store)
    for key, meta, _ in a.store.sessions_in_order():
        mb = b.store.get(key)
        n = int(a.store.length[meta.slot])
        assert int(b.store.length[mb.slot]) == n and int(b.store.agg.n[mb.slot]) == 0
        assert np.array_equal(b.store.ring["ts"][mb.slot, :n], a.store.ring["ts"][meta.slot, :n])
    # Another raw-field format (the held events would be misread): refused, empty store.
    with np.load(good) as z:
        arrs = {k: z[k] for k in z.files}
    meta = json.loads(arrs["meta"].tobytes())
    arrs["meta"] = np.frombuffer(json.dumps({**meta, "raw_format": "0" * 12}).encode(), dtype=np.uint8)
    np.savez(tmp_path / "other_format.npz", **arrs)
    b = Scorer(bundle, max_sessions=100)
    assert snapshot.restore_scorer(b, tmp_path / "other_format.npz") is None and len(b.store) == 0
    assert "snapshot_refused" in caplog.text

    data = good.read_bytes()
    bad = {"truncated.npz": data[: len(data) // 2], "garbage.npz": os.urandom(4096), "empty.npz": b""}
    for name, blob in bad.items():
        (tmp_path / name).write_bytes(blob)
    # A well-formed archive carrying a pickled object array: np.load refuses to unpickle it.
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"format": snapshot.FORMAT}], dtype=object))
    # Sound zip, valid meta, but inconsistent arrays.
    snapshot.save(a.store, tmp_path / "incons.npz", feature_spec_hash=bundle.metadata["feature_spec_hash"])
    with np.load(tmp_path / "incons.npz") as z:
        arrs = {k: z[k] for k in z.files}
    arrs["ring__ts"] = arrs["ring__ts"][:-1]
    np.savez(tmp_path / "incons.npz", **arrs)
    for name in [*bad, "pickled.npz", "incons.npz", "absent.npz"]:
        caplog.clear()
        c = Scorer(bundle, max_sessions=100)
        assert snapshot.restore_scorer(c, tmp_path / name) is None, name
        assert len(c.store) == 0
        assert ("snapshot_unreadable" if name != "absent.npz" else "snapshot_absent") in caplog.text, name


def test_create_server_starts_with_a_corrupt_snapshot(tmp_path):
    from distillguard.serving.server import ServeConfig, create_server

    snap = tmp_path / "state.npz"
    snap.write_bytes(b"PK\x03\x04 not really a zip")
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(max_sessions=1000, threads=4,
                                                                             snapshot_path=snap))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
            e = _sessions()[1][0]
            assert pb_grpc.ScorerStub(ch).Score(pb.ScoreRequest(**{k: e[k] for k in _SCORE_FIELDS}),
                                                timeout=10).events_in_session == 1
    finally:
        srv.stop(1)
    assert snapshot.read_meta(snap)["sessions"] == 1      # and the stop replaced it with a good one


# ---------------------------------------------------------------------------- the real process

def _serve(*args):
    return start_serve("--insecure", "--port", "0", *args, timeout=60)


def _req(e) -> "pb.ScoreRequest":
    return pb.ScoreRequest(**{k: e[k] for k in _SCORE_FIELDS})


def test_sigterm_drains_in_flight_calls_then_exits_0(tmp_path):
    srv = _serve("--grace", "10", "--snapshot", str(tmp_path / "state.npz"))
    results = []                     # (t_start, t_end, code)
    statuses = []                    # (t, health status) from a Watch stream
    stop_load = threading.Event()
    try:
        ch = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        # A balancer's Watch stream left open: it must not hold the exit for the whole grace.
        idle_watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert next(idle_watch).status == health_pb2.HealthCheckResponse.SERVING

        def watcher():
            try:
                for r in watch:
                    statuses.append((time.time(), r.status))
                    if r.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        watch.cancel()   # an open Watch would hold the drain for the whole grace
                        return
            except grpc.RpcError:
                pass

        def load(w):
            stub = pb_grpc.ScorerStub(ch)
            i = 0
            while not stop_load.is_set():
                e = _session_events(f"load-{w}", "s", 1, True, w)[0]
                e["event_id"] = f"{w}-{i}"
                e["ts"] = T0 + i
                i += 1
                t = time.time()
                try:
                    stub.Score(_req(e), timeout=15)
                    code = "OK"
                except grpc.RpcError as err:
                    code = err.code().name
                results.append((t, time.time(), code))
                if code == "UNAVAILABLE":
                    return

        threads = [threading.Thread(target=watcher, daemon=True)] + [
            threading.Thread(target=load, args=(w,), daemon=True) for w in range(24)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        ok_before = sum(c == "OK" for _, _, c in results)
        t_sig = time.time()
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait(timeout=60)
        exit_s = time.time() - t_sig
        stop_load.set()
        for t in threads:
            t.join(20)
        ch.close()
    finally:
        stop_load.set()
        srv.kill()
    out = srv.logs()
    assert rc == 0, out
    assert exit_s < 8, f"exit took {exit_s:.1f}s with --grace 10: an open Watch held the drain"
    assert ok_before > 20, f"too little load before SIGTERM ({ok_before} calls)\n{out}"
    codes = {c for _, _, c in results}
    assert codes <= {"OK", "UNAVAILABLE"}, f"a call failed otherwise during the drain: {codes}"
    in_flight = [r for r in results if r[0] < t_sig < r[1]]
    assert any(c == "OK" for _, _, c in in_flight), "no call was in flight across the SIGTERM"
    # Health: SERVING, then NOT_SERVING after the signal (before the server stopped answering).
    assert [s for _, s in statuses][:1] == [health_pb2.HealthCheckResponse.SERVING]
    assert any(s == health_pb2.HealthCheckResponse.NOT_SERVING and t >= t_sig for t, s in statuses), statuses
    # Logs flushed in order, the last line says stopped; the snapshot was written before it.
    err = [line for line in out.splitlines() if line.strip()]
    order = [i for i, line in enumerate(err) for ev in ('"draining"', '"snapshot_written"', '"stopped"')
             if ev in line]
    assert len(order) == 3 and order == sorted(order), out
    assert '"event": "stopped"' in err[-1], out
    assert snapshot.read_meta(tmp_path / "state.npz")["sessions"] == 24


def test_snapshot_restart_continues_sessions_like_an_unrestarted_scorer(tmp_path, bundle):
    snap = tmp_path / "state.npz"
    sessions = _sessions()
    before = _interleaved(sessions, upto=lambda s: len(s) - 1)
    ref = Scorer(bundle, max_sessions=10_000)
    ref_verdicts = _feed(ref, before)

    srv = _serve("--snapshot", str(snap), "--max-sessions", "10000")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            for e, rv in zip(before, ref_verdicts):
                r = stub.Score(_req(e), timeout=10)
                assert abs(r.p_distillation_harvesting - rv.probs[2]) < 1e-6
                assert stub.Complete(pb.CompleteRequest(**{k: v for k, v in _complete_in(e).__dict__.items()}),
                                     timeout=10).applied
            pre = {s[0]["account_id"]: stub.GetSession(pb.SessionRef(account_id=s[0]["account_id"],
                                                                     session_id=s[0]["session_id"]), timeout=10)
                   for s in sessions}
    finally:
        rc = srv.stop()
    assert rc == 0, srv.logs()
    written = json.loads(next(line for line in srv.logs().splitlines() if '"snapshot_written"' in line)
                         .split("distillguard.snapshot ", 1)[1])
    assert written["sessions"] == 3 and snap.exists()

    srv = _serve("--snapshot", str(snap), "--max-sessions", "10000")
    try:
        assert '"snapshot_restored"' in srv.logs(), srv.logs()
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            for s in sessions:
                ref_s = ref.get_session(s[0]["account_id"], s[0]["session_id"])
                got = stub.GetSession(pb.SessionRef(account_id=s[0]["account_id"], session_id=s[0]["session_id"]),
                                      timeout=10)
                assert got.found and got == pre[s[0]["account_id"]]
                assert got.events_in_session == ref_s.events_in_session == len(s) - 1
                assert abs(got.latest.p_distillation_harvesting - ref_s.latest.probs[2]) < 1e-6
            for s in sessions:        # the next request continues the session
                e = s[-1]
                rv = ref.score(_score_in(e))
                r = stub.Score(_req(e), timeout=10)
                assert r.session_id == rv.session_id and r.events_in_session == rv.events_in_session == len(s)
                assert np.allclose([r.p_human, r.p_benign_automation, r.p_distillation_harvesting], rv.probs,
                                   atol=1e-6)
                assert not r.duplicate
    finally:
        rc = srv.stop()
    assert rc == 0, srv.logs()


def test_stop_does_not_deadlock_on_watchers_leaving_while_told_not_serving():
    """grpc_health's own servicer sends Watch updates under its lock; a stream closing
    meanwhile needs that lock on gRPC's event thread, which the send waits for (a hang
    seen on SIGTERM). Many watchers on both service names, each hanging up as soon as it
    hears NOT_SERVING, must not stop the server from stopping."""
    from distillguard.serving.server import ServeConfig, create_server

    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(max_sessions=100, threads=4))
    chans = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(4)]
    streams = [health_pb2_grpc.HealthStub(chans[i % 4]).Watch(health_pb2.HealthCheckRequest(
        service="" if i % 2 else SERVICE)) for i in range(24)]
    for s in streams:
        assert next(s).status == health_pb2.HealthCheckResponse.SERVING

    def hang_up(s):
        try:
            for r in s:
                if r.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    s.cancel()
                    return
        except grpc.RpcError:
            pass

    watchers = [threading.Thread(target=hang_up, args=(s,), daemon=True) for s in streams]
    for t in watchers:
        t.start()
    stopper = threading.Thread(target=srv.stop, args=(10,), daemon=True)
    t0 = time.time()
    stopper.start()
    stopper.join(15)
    assert not stopper.is_alive(), "ScorerServer.stop hung (health Watch deadlock)"
    assert time.time() - t0 < 5
    for c in chans:
        c.close()
