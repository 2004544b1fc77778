"""`distillguard replay` against the real scorer on a real socket, with a small simulated file."""
from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from distillguard.cli import main
from distillguard.model.schema import LABELS
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.serving.client import ACTIONS
from distillguard.serving.replay import ReplayError, replay
from distillguard.serving.server import create_server
from distillguard.serving.stubs import pb, pb_grpc
from distillguard.training.simulate import SimConfig, simulate, write


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    ev, lab = simulate(SimConfig(seed=3, accounts=20, days=1))
    ev_path, _ = write(ev, lab, tmp_path_factory.mktemp("replay"))
    return ev_path, ev, lab


@pytest.fixture
def server():
    """A fresh scorer per test: replays must not see each other's sessions."""
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE)
    yield f"127.0.0.1:{port}"
    srv.stop(0)


def _session(target: str, account: str):
    with grpc.insecure_channel(target) as ch:
        return pb_grpc.ScorerStub(ch).GetSession(pb.SessionRef(account_id=account), timeout=5)


def test_replay_counts_and_per_account_order(server, sim):
    path, ev, lab = sim
    s = replay(server, path, concurrency=3, show=False)
    n = len(ev)
    assert s["events"] == n and s["requests"] == 2 * n and s["fail_open"] == 0 and s["worker_errors"] == 0
    assert sum(s["labels"].values()) == n and set(s["labels"]) <= set(LABELS)
    assert sum(s["actions"].values()) == n and set(s["actions"]) <= set(ACTIONS)
    assert s["completes_applied"] == n and s["duplicates"] == 0
    # One day of traffic, no session ids: one idle-gap session per account.
    assert s["sessions"] == ev["account_id"].nunique()
    assert s["requests_per_s"] > 0 and not s["interrupted"]

    # Harvesters are what the shipped model is for: at least one is flagged, and the
    # top-flagged list is ordered by p(distillation).
    harvest = set(lab.loc[lab["label"] == "distillation_harvesting", "account_id"])
    flagged = {r["account_id"] for r in s["top"]}
    assert s["flagged_sessions"] == len(s["top"]) and flagged & harvest
    ps = [r["p_distillation_harvesting"] for r in s["top"]]
    assert ps == sorted(ps, reverse=True)

    # Each account went through one worker in file order: the server holds every event,
    # all completed, in time order.
    for account, group in ev.groupby("account_id"):
        info = _session(server, account)
        assert info.found and info.events_in_session == len(group)
        recent = list(info.recent_events)
        assert all(e.completed for e in recent)
        ts = [e.ts for e in recent]
        assert ts == sorted(ts) and ts[-1] == pytest.approx(group["ts"].max())


def test_replay_limit_speed_and_missing_event_ids(server, sim, tmp_path):
    path, ev, _ = sim
    # No event_id column: ids are the row numbers, deterministic across runs.
    csv = tmp_path / "events.csv"
    ev.drop(columns=["event_id"]).to_csv(csv, index=False)
    k = 12
    first = np.sort(ev["ts"].to_numpy())[:k]
    span = first[-1] - first[0]
    assert span > 0
    speed = span / 0.4                                   # the first k events over ~0.4 s
    t = time.perf_counter()
    s = replay(server, csv, limit=k, speed=speed, concurrency=2, show=False)
    elapsed = time.perf_counter() - t
    assert s["events"] == k and s["fail_open"] == 0
    assert 0.35 <= s["seconds"] and elapsed < 5.0
    # Same file again: same ids, and the scorer's idempotency recognises the latest events.
    again = replay(server, csv, limit=k, concurrency=2, show=False)
    assert again["events"] == k and again["duplicates"] > 0


def test_replay_cli_and_unreachable_target(server, sim, capsys):
    path, _, _ = sim
    assert main(["replay", "--target", server, "--events", str(path), "--limit", "40", "-q"]) == 0
    out = capsys.readouterr().out
    assert "replayed 40 events (80 requests)" in out and "requests/s" in out and "fail-open: 0" in out
    with pytest.raises(ReplayError, match="no scorer answering"):
        replay("127.0.0.1:1", path, show=False, connect_timeout_s=0.2)


def test_replay_live_view_renders(server, sim):
    from io import StringIO

    from rich.console import Console

    path, _, _ = sim
    buf = StringIO()
    s = replay(server, path, limit=60, show=True, console=Console(file=buf, width=120, force_terminal=False))
    text = buf.getvalue()
    assert s["events"] == 60 and "top flagged sessions" in text and "60/60" in text
