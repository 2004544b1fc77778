"""False-positive feedback: ReportFeedback over a real socket, `distillguard feedback` both
ways, and the JSON Lines it appends to the labels store (serving/feedback.py)."""
import datetime as dt
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from distillguard.cli import main
from distillguard.model.labels_io import read_labels
from distillguard.serving.client import FeedbackRejected, ScorerClient
from distillguard.serving.security import TransportConfig
from distillguard.serving.server import ServeConfig, create_server
from distillguard.serving.stubs import pb, pb_grpc
from distillguard.serving.feedback import FEEDBACK_COLUMNS, FeedbackError, append_feedback

T0 = 1_780_000_000.0
PROMPT_MARKER = "zqxPROMPTSECRET"     # in every raw prompt sent; must never reach the store


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    """Admin RPCs off (as `serve --no-admin`): ReportFeedback must still work."""
    store = tmp_path_factory.mktemp("labels") / "store"      # not created yet: the first report makes it
    srv, port = create_server("127.0.0.1:0", tiny_bundle, ServeConfig(admin=False, labels_store=store))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield srv, pb_grpc.ScorerStub(channel), store, port
    channel.close()
    srv.stop(0)


def _score(stub, account, n, *, t0=T0, session_id="", tag="e"):
    r = None
    for i in range(n):
        r = stub.Score(pb.ScoreRequest(account_id=account, session_id=session_id, event_id=f"{tag}{i}",
                                       ts=t0 + 60.0 * i, prompt_tokens=100 + i, max_tokens=512,
                                       prompt=f"{PROMPT_MARKER} question {i}: explain the sky"), timeout=10)
    return r


def _rows(store: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(store.glob("feedback-*.jsonl")) for line in f.read_text().splitlines()]


def _store_bytes(store: Path) -> dict:
    return {f.name: f.read_bytes() for f in store.glob("*")} if store.exists() else {}


def _fb(**kw):
    base = dict(account_id="acct", correct_label="human", reason="support ticket 1: nightly export")
    base.update(kw)
    return pb.FeedbackRequest(**base)


def _value(srv, name, **labels):
    return srv.metrics.registry.get_sample_value(name, labels) or 0.0


def test_implicit_session_is_resolved_and_filed(server):
    srv, stub, store, _ = server
    v = _score(stub, "fb-implicit", 4)
    assert v.session_id == "fb-implicit:0" and v.model_version
    before = _value(srv, "distillguard_feedback_total", label="human")
    r = stub.ReportFeedback(_fb(account_id="fb-implicit", reason="ticket 7: their CI harness",
                                reported_by="support@example"), timeout=10)
    assert r.session_id == "fb-implicit:0" and r.model_version == v.model_version
    assert re.fullmatch(r"fb-[0-9a-f]{12}", r.incident_id)
    when = dt.datetime.strptime(r.labelled_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 60
    day_file = store / f"feedback-{when:%Y%m%d}.jsonl"
    [row] = [x for x in _rows(store) if x["incident_id"] == r.incident_id]
    assert row in [json.loads(line) for line in day_file.read_text().splitlines()]
    assert tuple(row) == FEEDBACK_COLUMNS
    assert row == {"session_id": "fb-implicit:0", "account_id": "fb-implicit", "label": "human",
                   "incident_id": r.incident_id, "labelled_at": r.labelled_at,
                   "note": "ticket 7: their CI harness", "source": "feedback",
                   "reported_by": "support@example", "model_version": v.model_version}
    assert _value(srv, "distillguard_feedback_total", label="human") == before + 1
    # After a 24 h idle gap the account's current implicit session is the next one.
    v2 = _score(stub, "fb-implicit", 1, t0=T0 + 4 * 60 + 86_401, tag="late")
    assert v2.session_id == "fb-implicit:1"
    r2 = stub.ReportFeedback(_fb(account_id="fb-implicit"), timeout=10)
    assert r2.session_id == "fb-implicit:1" and r2.incident_id != r.incident_id


def test_explicit_session_known_or_not(server):
    _, stub, store, _ = server
    v = _score(stub, "fb-explicit", 3, session_id="chat-9")
    r = stub.ReportFeedback(_fb(account_id="fb-explicit", session_id="chat-9", correct_label="benign_automation",
                                incident_id="INC-42"), timeout=10)
    assert (r.session_id, r.incident_id, r.model_version) == ("chat-9", "INC-42", v.model_version)
    # A session the scorer no longer holds (evicted, expired, another replica) can still be
    # labelled by its name; the model version is then unknown.
    r = stub.ReportFeedback(_fb(account_id="fb-explicit", session_id="long-gone"), timeout=10)
    assert r.session_id == "long-gone" and r.model_version == ""
    [row] = [x for x in _rows(store) if x["session_id"] == "long-gone"]
    assert row["model_version"] is None and row["reported_by"] is None and row["account_id"] == "fb-explicit"
    [row] = [x for x in _rows(store) if x["incident_id"] == "INC-42"]
    assert row["label"] == "benign_automation" and row["session_id"] == "chat-9"


@pytest.mark.parametrize("field,kw", [
    ("account_id", dict(account_id="")),
    ("account_id", dict(account_id="a" * 257)),
    ("session_id", dict(session_id="s" * 257)),
    ("correct_label", dict(correct_label="bot")),
    ("correct_label", dict(correct_label="")),
    ("reason", dict(reason="")),
    ("reason", dict(reason="   ")),
    ("reason", dict(reason="é" * 513)),          # 1026 UTF-8 bytes > 1 KiB
    ("reported_by", dict(reported_by="r" * 257)),
    ("incident_id", dict(incident_id="i" * 257)),
])
def test_bad_fields_are_refused_by_name_and_nothing_is_written(server, field, kw):
    srv, stub, store, _ = server
    _score(stub, "acct", 1, tag=f"bad-{field}-")     # a live session, so only the field is wrong
    before = _store_bytes(store)
    rejected = _value(srv, "distillguard_rejected_requests_total", method="ReportFeedback", field=field)
    with pytest.raises(grpc.RpcError) as e:
        stub.ReportFeedback(_fb(**kw), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith(f"{field}: "), e.value.details()
    assert _store_bytes(store) == before
    assert _value(srv, "distillguard_rejected_requests_total", method="ReportFeedback", field=field) == rejected + 1


def test_unknown_implicit_session_is_not_found(server):
    srv, stub, store, _ = server
    before = _store_bytes(store)
    with pytest.raises(grpc.RpcError) as e:
        stub.ReportFeedback(_fb(account_id="never-seen"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "session_id" in e.value.details()
    assert _store_bytes(store) == before
    assert _value(srv, "distillguard_requests_total", method="ReportFeedback", code="NOT_FOUND") >= 1


def test_it_is_not_an_admin_rpc(server):
    _, stub, _, _ = server
    # The fixture's server refuses admin RPCs, yet the reports above were filed.
    with pytest.raises(grpc.RpcError) as e:
        stub.Reload(pb.ReloadRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_without_a_labels_store_it_is_a_failed_precondition(tiny_bundle):
    srv, port = create_server("127.0.0.1:0", tiny_bundle)
    try:
        with ScorerClient(f"127.0.0.1:{port}") as c:
            c.score("acct-x", "e0", T0, 10)
            with pytest.raises(FeedbackRejected) as e:
                c.report_feedback("acct-x", label="human", reason="wrong")
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and "--labels-store" in e.value.details
        assert _value(srv, "distillguard_requests_total", method="ReportFeedback", code="FAILED_PRECONDITION") == 1
    finally:
        srv.stop(0)


def test_concurrent_reports_from_8_threads_are_whole_lines(server):
    _, stub, store, _ = server
    for t in range(8):
        _score(stub, f"conc-{t}", 2)
    errors = []
    # Long reasons: bigger lines make a torn or interleaved write likelier to show.
    reason = "x" * 900

    def worker(t):
        try:
            for i in range(20):
                stub.ReportFeedback(_fb(account_id=f"conc-{t}", reason=f"{t}-{i}-{reason}",
                                        incident_id=f"conc-{t}-{i}"), timeout=30)
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    rows = _rows(store)             # every line of the store parses as one JSON object
    mine = [r for r in rows if r["incident_id"].startswith("conc-")]
    assert sorted(r["incident_id"] for r in mine) == sorted(f"conc-{t}-{i}" for t in range(8) for i in range(20))
    for r in mine:
        t, i, rest = r["note"].split("-", 2)
        assert r["incident_id"] == f"conc-{t}-{i}" and rest == reason and r["session_id"] == f"conc-{t}:0"


_PROC = """
import sys
from distillguard.serving.feedback import append_feedback
w = int(sys.argv[2])
for i in range(150):
    append_feedback(sys.argv[1], account_id=f"p{w}", session_id=f"p{w}:0", label="human",
                    reason=f"{w}-{i}-" + "y" * 1000, incident_id=f"p{w}-{i}", labelled_at=1_780_000_000)
"""


def test_concurrent_processes_append_whole_lines(tmp_path):
    """Several server workers share one store: separate processes appending at once."""
    procs = [subprocess.Popen([sys.executable, "-c", _PROC, str(tmp_path), str(w)]) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    [f] = list(tmp_path.iterdir())
    assert f.name == "feedback-20260528.jsonl"          # the UTC day of labelled_at
    rows = [json.loads(line) for line in f.read_text().splitlines()]
    assert sorted(r["incident_id"] for r in rows) == sorted(f"p{w}-{i}" for w in range(4) for i in range(150))
    assert all(r["note"] == f"{r['incident_id'][1:]}-" + "y" * 1000 for r in rows)


def test_a_line_cut_short_by_a_full_disk_is_removed(tmp_path):
    """RLIMIT_FSIZE just past the first line: the second write is partial, the fragment is
    cut off again, the call fails, and the file still holds whole lines only."""
    first = append_feedback(tmp_path, account_id="a", session_id="a:0", label="human", reason="first",
                            labelled_at=1_780_000_000)
    [f] = list(tmp_path.iterdir())
    size = f.stat().st_size
    code = f"""
import resource, signal, sys
from distillguard.serving.feedback import append_feedback
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 40}, {size + 40}))
try:
    append_feedback({str(tmp_path)!r}, account_id="a", session_id="a:0", label="human", reason="z" * 500,
                    labelled_at=1_780_000_000)
except OSError as e:
    print("refused:", e)
    sys.exit(3)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "short write" in r.stdout, (r.stdout, r.stderr)
    assert f.stat().st_size == size
    assert [json.loads(line) for line in f.read_text().splitlines()] == [first]


def test_append_feedback_checks_its_arguments(tmp_path):
    ok = dict(account_id="a", session_id="a:0", label="human", reason="r")
    for kw, field in [(dict(session_id=""), "session_id"), (dict(label="Human"), "correct_label"),
                      (dict(reason="\ud800"), "reason"), (dict(labelled_at=dt.datetime(2026, 1, 1)), "labelled_at"),
                      (dict(model_version="m" * 300), "model_version")]:
        with pytest.raises(FeedbackError) as e:
            append_feedback(tmp_path / "s", **{**ok, **kw})
        assert e.value.field == field
    assert not (tmp_path / "s").exists()
    row = append_feedback(tmp_path / "s", **ok, labelled_at=dt.datetime(2026, 3, 1, 23, 30,
                                                                         tzinfo=dt.timezone(dt.timedelta(hours=-2))))
    assert row["labelled_at"] == "2026-03-02T01:30:00.000Z"
    assert (tmp_path / "s" / "feedback-20260302.jsonl").exists()


def test_cli_through_a_real_server(server, capsys):
    _, stub, store, port = server
    v = _score(stub, "fb-cli", 2)
    rc = main(["feedback", "--target", f"127.0.0.1:{port}", "--account", "fb-cli", "--label", "human",
               "--reason", "CLI report", "--reported-by", "oncall"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["session_id"] == "fb-cli:0" and out["model_version"] == v.model_version
    [row] = [x for x in _rows(store) if x["incident_id"] == out["incident_id"]]
    assert (row["note"], row["reported_by"], row["session_id"]) == ("CLI report", "oncall", "fb-cli:0")
    # A refusal is an error exit naming the problem.
    rc = main(["feedback", "--target", f"127.0.0.1:{port}", "--account", "nobody-here", "--label", "human",
               "--reason", "x"])
    assert rc == 1 and "NOT_FOUND" in capsys.readouterr().err


def test_cli_needs_the_token_of_a_token_server(tiny_bundle, tmp_path, capsys):
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token\n")
    tokens.chmod(0o600)
    store = tmp_path / "store"
    srv, port = create_server("127.0.0.1:0", tiny_bundle, ServeConfig(
        labels_store=store, transport=TransportConfig(token_file=tokens, insecure=True)))
    try:
        args = ["feedback", "--target", f"127.0.0.1:{port}", "--account", "tok", "--session", "s-1",
                "--label", "human", "--reason", "with a token"]
        assert main(args) == 1 and "UNAUTHENTICATED" in capsys.readouterr().err
        assert not store.exists()
        assert main([*args, "--token-file", str(tokens)]) == 0
        assert json.loads(capsys.readouterr().out)["session_id"] == "s-1"
        assert [r["note"] for r in _rows(store)] == ["with a token"]
    finally:
        srv.stop(0)


def test_cli_offline_into_a_store(tmp_path, capsys):
    store = tmp_path / "labels"
    base = ["feedback", "--labels-store", str(store), "--account", "acct-9", "--label", "benign_automation",
            "--reason", "their eval harness"]
    assert main(base) == 2 and "--session" in capsys.readouterr().err        # offline cannot resolve it
    assert not store.exists()
    assert main([*base, "--session", "acct-9:3", "--model-version", "v-old", "--incident-id", "INC-7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert _rows(store) == [printed]
    assert printed["model_version"] == "v-old" and printed["incident_id"] == "INC-7"
    assert main([*base, "--session", "s" * 300]) == 2
    assert "--session: longer than 256" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["feedback", "--labels-store", str(store), "--account", "a", "--session", "s", "--label", "bot",
              "--reason", "r"])
    assert len(_rows(store)) == 1


def test_no_prompt_text_reaches_the_store(server):
    _, stub, store, _ = server
    _score(stub, "fb-privacy", 3)
    stub.ReportFeedback(_fb(account_id="fb-privacy", reason="zqxREASONMARKER ticket"), timeout=10)
    data = b"".join(_store_bytes(store).values())
    assert b"zqxREASONMARKER" in data          # positive control: the search reads what was filed
    assert PROMPT_MARKER.encode() not in data and b"explain the sky" not in data


def test_the_labels_reader_reads_the_store(tmp_path):
    store = tmp_path / "labels"
    append_feedback(store, account_id="acct-1", session_id="acct-1:0", label="human", reason="r1")
    append_feedback(store, account_id="acct-2", session_id="chat-5", label="benign_automation", reason="r2")
    t = read_labels(store).to_pylist()
    got = sorted((r["session_id"], r["account_id"], r["label"]) for r in t)
    assert got == [("acct-1:0", "acct-1", "human"), ("chat-5", "acct-2", "benign_automation")]
    # ... and training's resolution labels exactly those sessions (a row names one session
    # of one account: not the account's other sessions, not another account's "chat-5").
    from distillguard.training.labels import resolve

    res = resolve(np.array(["acct-1:0", "acct-1:1", "chat-5", "chat-5"]), np.array(["acct-1", "acct-1", "acct-2", "x"]),
                  np.zeros(4), np.ones(4), read_labels(store))
    assert res.y.tolist() == [0, -1, 1, -1] and res.unmatched.num_rows == 0


def test_serve_labels_store_flag_and_the_feedback_command_as_processes(tiny_bundle, tmp_path):
    from distillguard.serving.harness import start_serve

    store = tmp_path / "labels"
    p = start_serve("--insecure", "--port", "0", "--no-admin", "--model", tiny_bundle, "--labels-store", store)
    try:
        r = subprocess.run([sys.executable, "-m", "distillguard.cli", "feedback", "--target", p.target,
                            "--account", "proc-acct", "--session", "proc-s", "--label", "benign_automation",
                            "--reason", "as a process"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        filed = json.loads(r.stdout)
        assert [(x["incident_id"], x["note"]) for x in _rows(store)] == [(filed["incident_id"], "as a process")]
        p.stop(timeout=30)
        out = p.logs()
        assert p.returncode == 0, out
        assert '"event": "feedback"' in out and "as a process" not in out
    finally:
        p.stop()
