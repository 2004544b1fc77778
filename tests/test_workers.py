"""`serve --workers 2 --state redis://...`: two scorer processes behind one SO_REUSEPORT port,
each also on its own port, sharing session state in a real Redis."""
import os
import re

import grpc
import numpy as np
import pytest

from distillguard.cli import main
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.serving.scorer import CompleteInput, Scorer, ScoreInput
from distillguard.serving.harness import start_serve
from distillguard.serving.server import ServeConfig, create_server
from distillguard.serving.stubs import pb, pb_grpc

_WORKER = re.compile(r"worker (\d+) serving \S+ on 127\.0\.0\.1:(\d+) own port 127\.0\.0\.1:(\d+) pid (\d+)")
T0 = 1.78e9


def _start_workers(n, *args, timeout=90):
    """serve --workers n, ready (port file gathered, every port SERVING); returns the process
    and {index: (shared port, own port, pid)} from its port file, checked against the start
    lines the workers printed so far."""
    p = start_serve("--insecure", "--port", "0", "--workers", n, *args, timeout=timeout)
    workers = {w["index"]: (p.port, w["port"], w["pid"]) for w in p.workers}
    assert sorted(workers) == list(range(n)) and p.info["pid"] == p.pid, p.info
    printed = {int(m.group(1)): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
               for m in map(_WORKER.search, p.logs().splitlines()) if m}
    assert all(workers[i] == v for i, v in printed.items()), (printed, workers)
    return p, workers


def _events(n=40):
    rng = np.random.default_rng(5)
    t = T0
    out = []
    for e in range(n):
        t += rng.normal(900, 30)
        out.append(ScoreInput(account_id="w-acct", session_id="w-s", event_id=f"e{e}", ts=t,
                              prompt_tokens=int(rng.integers(200, 1400)), max_tokens=1024,
                              template_hash=f"{e % 2:016x}", client_fingerprint="python-httpx/0.27",
                              account_created_at=T0 - 86400, elicits_reasoning=True))
    return out


def _pb(r: ScoreInput):
    return pb.ScoreRequest(account_id=r.account_id, session_id=r.session_id, event_id=r.event_id, ts=r.ts,
                           prompt_tokens=r.prompt_tokens, max_tokens=r.max_tokens, template_hash=r.template_hash,
                           client_fingerprint=r.client_fingerprint, account_created_at=r.account_created_at,
                           elicits_reasoning=r.elicits_reasoning)


def test_two_workers_share_a_port_and_redis_state_and_stop_on_sigterm(redis_url):
    p, workers = _start_workers(2, "--state", redis_url)
    try:
        (shared0, own0, pid0), (shared1, own1, pid1) = workers[0], workers[1]
        assert shared0 == shared1 and len({shared0, own0, own1}) == 3 and pid0 != pid1
        # One process on the in-process store: the reference answers.
        ref = Scorer(DEFAULT_BUNDLE)
        want = []
        evs = _events()
        for i, e in enumerate(evs):
            want.append(ref.score(e).probs)
            ref.complete(CompleteInput(account_id=e.account_id, session_id=e.session_id, event_id=e.event_id,
                                       completion_tokens=1024 - i, status=200))
        chans = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in (own0, own1, shared0)]
        stubs = [pb_grpc.ScorerStub(c) for c in chans]
        got = []
        for i, e in enumerate(evs):                     # the session alternates between the workers
            a, b = stubs[i % 2], stubs[(i + 1) % 2]
            r = a.Score(_pb(e), timeout=10)
            got.append((r.p_human, r.p_benign_automation, r.p_distillation_harvesting))
            assert r.events_in_session == i + 1
            c = b.Complete(pb.CompleteRequest(account_id=e.account_id, session_id=e.session_id,
                                              event_id=e.event_id, completion_tokens=1024 - i, status=200),
                           timeout=10)
            assert c.applied
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=1e-6)
        assert max(w[2] for w in want) > 0.5            # a scored harvester, not a trivial sequence
        # A retry reaching the other worker is recognised as one.
        r = stubs[1].Score(_pb(evs[-2]), timeout=10)
        assert r.duplicate and r.events_in_session == len(evs)
        # The shared port answers too, on the same shared state.
        info = stubs[2].GetSession(pb.SessionRef(account_id="w-acct", session_id="w-s"), timeout=10)
        assert info.found and info.events_in_session == len(evs)
        for c in chans:
            c.close()
    finally:
        p.stop(timeout=60)
    out = p.logs()
    assert p.returncode == 0, out
    assert out.count('"event": "stopped"') == 2, out
    for pid in (pid0, pid1):
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()


def test_workers_refuse_a_snapshot_and_redis_refuses_one_too(tmp_path, capsys):
    assert main(["serve", "--insecure", "--port", "0", "--workers", "2", "--snapshot", str(tmp_path / "s.npz")]) == 2
    assert "--snapshot works with one process" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Redis keeps the state"):
        create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(state="redis://127.0.0.1:1/0",
                                                             snapshot_path=tmp_path / "s.npz"))
