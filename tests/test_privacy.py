"""Raw prompts never reach logs, metrics, state or outputs.

A real `distillguard serve` (debug logging, /metrics, session snapshot) gets Score requests
carrying raw `prompt` text with unique marker strings, plus the replay path, GetSession,
invalid requests and an over-long prompt; then batch scoring (`score`, `score
--per-event`) reads an events file with a `prompt` column. Every byte the runs leave
behind is searched for the markers: captured stdout/stderr, the metrics text, the
responses, the snapshot (each archive member), the output files (raw and decoded), and
any other file in the working directory.
"""
import io
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest
import grpc
import numpy as np
import pyarrow.parquet as pq

from distillguard.serving.harness import parse_metrics, start_serve
from distillguard.serving.stubs import pb, pb_grpc

PREFIX = "qxzprivmark"          # every marker starts with it; a leak of any part-masked form still shows it
T0 = time.time() - 86400.0


def _marker() -> str:
    # Letters only: the template canonicaliser masks digits, so a leaked frame keeps the letters.
    return PREFIX + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:16])


def _prompt(marker: str, i: int) -> str:
    frames = ["Summarise the following news article in three bullet points: {m} {m} the council met on Tuesday.",
              "Think step by step and show your reasoning. Question: what is {m} times seven?",
              "Translate into French: 'The {m} arrived late, as usual.'",
              "{m}"]
    return frames[i % len(frames)].format(m=marker)


def _decoded_views(path: Path) -> list[bytes]:
    """Raw bytes plus decoded content where compression could hide a string."""
    data = path.read_bytes()
    views = [data]
    if data[:4] == b"PK\x03\x04":                      # .npz and other zip archives: each member
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            views += [z.read(n) for n in z.namelist()]
    if data[:4] == b"PAR1":                            # Parquet: decoded values, every column
        views.append(json.dumps(pq.read_table(path).to_pylist(), default=str).encode())
    return views


def _leaks(blobs: dict[str, bytes], markers: list[str]) -> list[str]:
    pat = re.compile(re.escape(PREFIX).encode(), re.IGNORECASE)
    found = [name for name, b in blobs.items() if pat.search(b)]
    # Markers may also leak in another case or as UTF-16; PREFIX covers the first.
    for name, b in blobs.items():
        if any(m.encode("utf-16-le") in b for m in markers):
            found.append(name + " (utf-16)")
    return found


def _files(root: Path, skip: set[Path]) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p not in skip:
            for k, v in enumerate(_decoded_views(p)):
                out[f"{p.relative_to(root)}[{k}]"] = v
    return out


def _run(argv, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distillguard.cli", *argv], cwd=cwd, capture_output=True,
                          timeout=240)


@pytest.mark.slow
def test_raw_prompts_never_reach_logs_metrics_state_or_outputs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    markers = [_marker() for _ in range(28)]

    # An events file with raw prompts (the input: the only place the markers may be).
    events = work / "events.jsonl"
    rows = []
    for i in range(18):
        acct = f"acct-{i % 3}"
        rows.append({"account_id": acct, "session_id": f"s-{i % 3}" if i % 2 else None, "event_id": f"file-{i}",
                     "ts": T0 + 600.0 * i, "prompt_tokens": 50 + i, "completion_tokens": 200 + i,
                     "max_tokens": 1024, "prompt": _prompt(markers[i], i)})
    events.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _leaks({"input": events.read_bytes()}, markers) == ["input"]        # the search does find them

    argv = ["--insecure", "--port", "0", "--metrics-port", "0", "--snapshot", str(work / "state.npz"),
            "--event-log", str(work / "event_log"), "--event-log-max-rows", "5"]
    srv = start_serve(*argv, cli_args=("-v",), cwd=work, stdin=subprocess.DEVNULL)
    port, mport = srv.port, srv.metrics_port

    captured: dict[str, bytes] = {}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            responses = []
            for j, m in enumerate(markers[18:24]):
                req = pb.ScoreRequest(account_id="live-acct", session_id="live-s", event_id=f"live-{j}",
                                      ts=T0 + 60.0 * j, prompt_tokens=30, max_tokens=512, prompt=_prompt(m, j))
                responses.append(stub.Score(req, timeout=10).SerializeToString())
                responses.append(stub.Complete(pb.CompleteRequest(account_id="live-acct", session_id="live-s",
                                                                  event_id=f"live-{j}", completion_tokens=512,
                                                                  status=200), timeout=10).SerializeToString())
            # The same prompts through ScoreBatch, a retry, and requests refused for another field.
            batch = pb.ScoreBatchRequest(requests=[pb.ScoreRequest(
                account_id="batch-acct", event_id=f"b-{j}", ts=T0 + j, prompt_tokens=5, prompt=_prompt(m, j))
                for j, m in enumerate(markers[18:24])])
            responses.append(stub.ScoreBatch(batch, timeout=10).SerializeToString())
            responses.append(stub.Score(pb.ScoreRequest(account_id="live-acct", session_id="live-s",
                                                        event_id="live-0", ts=T0, prompt_tokens=30,
                                                        prompt=_prompt(markers[18], 0)), timeout=10)
                             .SerializeToString())
            errors = []
            for bad in (dict(ts=-1.0), dict(prompt_tokens=-5), dict(prompt="x" * (2 << 20) + markers[19]),
                        dict(account_id="")):
                fields = dict(account_id="bad-acct", event_id="bad", ts=T0, prompt_tokens=1,
                              prompt=_prompt(markers[20], 1))
                fields.update(bad)
                try:
                    stub.Score(pb.ScoreRequest(**fields), timeout=10)
                    errors.append("unexpectedly accepted")
                except grpc.RpcError as e:
                    errors.append(f"{e.code().name}: {e.details()}")
            assert all(e.startswith(("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")) for e in errors), errors
            info = stub.GetSession(pb.SessionRef(account_id="live-acct", session_id="live-s"), timeout=10)
            assert info.found and info.events_in_session == 6
            responses.append(info.SerializeToString())
            captured["responses"] = b"".join(responses)
            captured["errors"] = "\n".join(errors).encode()

        rep = _run(["replay", "--target", f"127.0.0.1:{port}", "--events", str(events), "-q"], work)
        assert rep.returncode == 0, rep.stderr.decode()[-2000:]
        captured["replay.stdout"], captured["replay.stderr"] = rep.stdout, rep.stderr
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read()
        assert parse_metrics(metrics.decode()).samples("distillguard_requests_total")
        captured["metrics"] = metrics
    finally:
        srv.stop(timeout=60)
    log = srv.logs()
    assert srv.returncode == 0, log
    assert '"snapshot_written"' in log and '"stopped"' in log, log
    captured["serve.log"] = log.encode()
    snap = work / "state.npz"
    assert snap.exists()
    with np.load(snap, allow_pickle=False) as z:
        assert int(json.loads(z["meta"].tobytes())["sessions"]) >= 4

    out = work / "out"
    for extra, name in (([], "sessions.parquet"), (["--per-event"], "events.parquet"), ([], "sessions.csv"),
                        (["--per-event"], "events.jsonl")):
        r = _run(["score", "--input", str(events), "--output", str(out / name), *extra], work)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        captured[f"score {name} stdout"], captured[f"score {name} stderr"] = r.stdout, r.stderr
    assert pq.read_table(out / "events.parquet").num_rows == len(rows)
    # Bad rows skipped into a rejects file: a bad value beside a prompt, a prompt of the
    # wrong type, a malformed line holding a prompt.
    bad = work / "bad.jsonl"
    good = dict(rows[0], prompt=_prompt(markers[24], 0))
    bad.write_text("\n".join([
        json.dumps(good),
        json.dumps(dict(rows[1], prompt_tokens=-3, prompt=_prompt(markers[25], 1))),
        json.dumps(dict(rows[2], prompt=[markers[26], 1])),
        '{"account_id": "acct-9", "ts": 1, "prompt": "' + markers[27] + '", "prompt_tokens": ',
    ]) + "\n")
    r = _run(["score", "--input", str(bad), "--output", str(out / "bad.parquet"), "--on-error", "skip"], work)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    captured["score bad stdout"], captured["score bad stderr"] = r.stdout, r.stderr
    rejects = out / "bad.parquet.rejects.jsonl"
    assert len(rejects.read_text().splitlines()) >= 2, rejects.read_text()

    blobs = {**captured, **_files(work, skip={events, bad})}
    assert any(k.startswith("state.npz") for k in blobs) and any(k.startswith("out/") for k in blobs)
    assert any(k.startswith("event_log/part-") for k in blobs)     # the event log is searched too
    assert _leaks(blobs, markers) == [], "raw prompt text leaked"
    # And the positive control for decoded views: a compressed Parquet holding a marker is caught.
    import pyarrow as pa

    pq.write_table(pa.table({"x": [markers[0] * 50]}), tmp_path / "control.parquet", compression="zstd")
    assert _leaks({f"c{k}": v for k, v in enumerate(_decoded_views(tmp_path / "control.parquet"))}, markers)
