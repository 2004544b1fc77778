"""Event log (`serve --event-log DIR`): every scored event lands in rotating Parquet parts
that the event loaders read back; a clean stop loses nothing, a SIGKILL only the tail that
was not yet in a part, and no half-written part is ever readable under a part name.
Applied completions go to `_completions/` parts under the same rules, and the loaders
fill the events' completion_tokens/status from them."""
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.model.frames import frame_signature, legacy_signature
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.model.readers import iter_event_batches, load_events
from distillguard.model.schema import SchemaError
from distillguard.serving.event_log import (COMPLETION_COLUMNS, COMPLETION_SCHEMA, COMPLETIONS_DIR, LOG_COLUMNS,
                                            EventLogConfig, join_completions)
from distillguard.serving.harness import ServeProcess, start_serve
from distillguard.serving.server import ServeConfig, create_server
from distillguard.serving.stubs import pb, pb_grpc

T0 = time.time() - 86400.0


def _req(i: int, prompt: str = "") -> "pb.ScoreRequest":
    return pb.ScoreRequest(account_id=f"acct-{i % 4}", session_id=f"s-{i % 4}" if i % 2 else "",
                           event_id=f"e-{i}", ts=T0 + 30.0 * i, prompt_tokens=100 + i, max_tokens=512,
                           model="m-1", client_fingerprint="python-httpx/0.27", prompt=prompt,
                           template_hash="" if prompt else f"{i % 3:016x}")


def _parts(d: Path) -> list[Path]:
    return sorted(d.glob("part-*.parquet"))


def _read(d: Path) -> pa.Table:
    parts = _parts(d)
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None


def _completion_parts(d: Path) -> list[Path]:
    return sorted((d / COMPLETIONS_DIR).glob("part-*.parquet"))


def test_in_process_log_counts_columns_and_reads_back(tmp_path):
    d = tmp_path / "log"
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(event_log=EventLogConfig(d, max_rows=10_000)))
    n = 37
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            for i in range(n - 5):
                stub.Score(_req(i, prompt=f"Summarise this article: secret text {i}" if i == 3 else ""), timeout=10)
            stub.Score(_req(0), timeout=10)                       # a retry: not a new event
            stub.ScoreBatch(pb.ScoreBatchRequest(requests=[_req(i) for i in range(n - 5, n)]), timeout=10)
            stub.Complete(pb.CompleteRequest(account_id="acct-1", session_id="s-1", event_id="e-1",
                                             completion_tokens=300, status=200), timeout=10)
    finally:
        srv.stop(2.0)
    t = _read(d)
    assert t is not None and t.num_rows == n
    assert tuple(t.column_names) == LOG_COLUMNS
    assert "prompt" not in t.column_names
    assert sorted(t.column("event_id").to_pylist()) == sorted(f"e-{i}" for i in range(n))
    rows = {r["event_id"]: r for r in t.to_pylist()}
    # signed, text dropped; old clients' upstream hashes kept beside their legacy signature
    assert rows["e-3"]["frame_signature"] == frame_signature("Summarise this article: secret text 3")
    assert rows["e-3"]["template_hash"] is None and "secret" not in str(rows["e-3"])
    assert rows["e-4"]["template_hash"] == f"{4 % 3:016x}"
    assert rows["e-4"]["frame_signature"] == legacy_signature(f"{4 % 3:016x}")
    assert rows["e-1"]["session_id"] == "s-1" and rows["e-1"]["completion_tokens"] == 0
    assert rows["e-1"]["reasons"] is not None and rows["e-1"]["shadow_model_version"] is None   # no shadow here
    # The one Complete is logged apart, under the resolved session, and joined on reading.
    comp = pa.concat_tables([pq.read_table(p) for p in _completion_parts(d)]).to_pylist()
    assert tuple(pq.read_schema(_completion_parts(d)[0]).names) == COMPLETION_COLUMNS
    assert [(c["account_id"], c["session_id"], c["event_id"], c["completion_tokens"], c["status"]) for c in comp] \
        == [("acct-1", "s-1", "e-1", 300, 200)]
    loaded = {r["event_id"]: r for r in load_events(d, join=join_completions).to_pylist()}
    assert (loaded["e-1"]["completion_tokens"], loaded["e-1"]["status"]) == (300, 200)
    assert all(r["completion_tokens"] == 0 and r["status"] is None for k, r in loaded.items() if k != "e-1")
    for r in rows.values():
        assert abs(r["p_human"] + r["p_benign_automation"] + r["p_distillation_harvesting"] - 1) < 1e-4
        assert r["action"] in ("ALLOW", "THROTTLE", "CHALLENGE", "DEGRADE", "BLOCK") and r["model_version"]
    assert not list(d.glob(".*"))                                 # no temp file left after a clean stop
    # The directory is an events input: the loaders read it, and `score` scores it.
    assert load_events(d, join=join_completions).num_rows == n
    out = tmp_path / "scored.parquet"
    r = subprocess.run([sys.executable, "-m", "distillguard.cli", "score", "--input", str(d), "--output", str(out),
                        "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    scored = pq.read_table(out)
    assert scored.num_rows == len({(r["account_id"], r["session_id"]) for r in rows.values()})
    assert sum(scored.column("n_events").to_pylist()) == n


def test_rotation_by_rows_and_seconds(tmp_path):
    d = tmp_path / "rows"
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(event_log=EventLogConfig(d, max_rows=20)))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            stub.ScoreBatch(pb.ScoreBatchRequest(requests=[_req(i) for i in range(70)]), timeout=10)
            deadline = time.time() + 10
            while len(_parts(d)) < 3 and time.time() < deadline:   # rows cut parts while serving
                time.sleep(0.05)
            assert len(_parts(d)) == 3
    finally:
        srv.stop(2.0)
    parts = _parts(d)
    assert [pq.read_metadata(p).num_rows for p in parts] == [20, 20, 20, 10]
    assert all(re.fullmatch(r"part-0\.\d+-\d{6}-\d{8}T\d{6}Z\.parquet", p.name) for p in parts)

    d = tmp_path / "secs"
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(
        event_log=EventLogConfig(d, max_rows=10_000, max_seconds=0.3)))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            for i in range(5):
                stub.Score(_req(i), timeout=10)
            deadline = time.time() + 10
            while not _parts(d) and time.time() < deadline:       # time cuts a part before stop
                time.sleep(0.05)
            assert len(_parts(d)) == 1 and pq.read_metadata(_parts(d)[0]).num_rows == 5
    finally:
        srv.stop(2.0)


def _start(d: Path, max_rows: int) -> tuple[ServeProcess, int]:
    p = start_serve("--insecure", "--port", "0", "--model", DEFAULT_BUNDLE, "--event-log", d,
                    "--event-log-max-rows", max_rows)
    return p, p.port


def _send(port: int, m: int) -> None:
    """Score then Complete each of m events (implicit sessions for even i: the completion
    names the session as the caller did, the log as the scorer resolved it)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.ScorerStub(ch)
        for i in range(m):
            r = _req(i)
            stub.Score(r, timeout=10)
            assert stub.Complete(pb.CompleteRequest(account_id=r.account_id, session_id=r.session_id,
                                                    event_id=r.event_id, completion_tokens=10 + i, status=200),
                                 timeout=10).applied


def _check_completions(d: Path, max_rows: int, m: int, killed: bool) -> None:
    """Completion parts: full parts only (SIGKILL) or all m (SIGTERM); every logged
    completion, and no other, fills its event when the directory is loaded."""
    parts = _completion_parts(d)
    counts = [pq.read_table(f).num_rows for f in parts]
    if killed:
        assert all(c == max_rows for c in counts), counts
        assert m - max_rows < sum(counts) <= m, (sum(counts), m)
    else:
        assert sum(counts) == m
    logged = {r["event_id"] for f in parts for r in pq.read_table(f, columns=["event_id"]).to_pylist()}
    events = load_events(d, join=join_completions).to_pylist()
    assert events
    for e in events:
        i = int(e["event_id"][2:])
        want = (10 + i, 200) if e["event_id"] in logged else (0, None)
        assert (e["completion_tokens"], e["status"]) == want, e
    for tmp in (d / COMPLETIONS_DIR).glob(".*"):
        assert tmp.name.endswith(".tmp")


@pytest.mark.slow
def test_subprocess_sigkill_loses_only_the_tail_and_sigterm_loses_nothing(tmp_path):
    max_rows, m = 50, 180
    d = tmp_path / "killed"
    p, port = _start(d, max_rows)
    try:
        _send(port, m)
        time.sleep(1.0)       # let the background writer cut the full parts (no flush on SIGKILL)
    finally:
        p.kill()
    parts = _parts(d)
    counts = [pq.read_table(f).num_rows for f in parts]          # every complete part is readable
    logged = sum(counts)
    assert all(c == max_rows for c in counts), counts
    assert m - max_rows < logged <= m, (logged, m)               # only the unflushed tail is missing
    if logged:
        assert load_events(d, join=join_completions).num_rows == logged           # temp files (if any) are skipped
    for tmp in d.glob(".*"):
        assert tmp.name.endswith(".tmp")
    _check_completions(d, max_rows, m, killed=True)

    d = tmp_path / "stopped"
    p, port = _start(d, max_rows)
    try:
        _send(port, m)
    finally:
        p.stop(timeout=60)
    out = p.logs()
    assert p.returncode == 0, out[-2000:]
    assert '"event_log_flushed"' in out
    t = _read(d)
    assert t.num_rows == m and sorted(t.column("event_id").to_pylist()) == sorted(f"e-{i}" for i in range(m))
    assert load_events(d, join=join_completions).num_rows == m
    assert '"completions": %d' % m in out
    _check_completions(d, max_rows, m, killed=False)


def _completion_part(path: Path, rows: list[tuple]) -> None:
    pq.write_table(pa.Table.from_pylist([dict(zip(COMPLETION_COLUMNS, r)) for r in rows],
                                        schema=COMPLETION_SCHEMA), path)


def test_completion_join_last_wins_keeps_order_and_exact_keys(tmp_path):
    d = tmp_path / "logs"
    (d / "w1" / "_completions").mkdir(parents=True)
    # Event order in the file is not key order; "ab"+"c" and "a"+"bc" concatenate alike.
    events = [("ab", "c", "x", 5.0), ("a", "bc", "x", 1.0), ("ab", "c", "y", 3.0), ("acct", None, "z", 2.0),
              ("acct", "s", "z", 4.0)]
    pq.write_table(pa.table({"account_id": [e[0] for e in events], "session_id": [e[1] for e in events],
                             "event_id": [e[2] for e in events], "ts": [1.7e9 + e[3] for e in events],
                             "prompt_tokens": [1] * 5, "completion_tokens": [0] * 5}), d / "w1" / "part-0.parquet")
    # Two parts: the one sorting first by name was logged later (its row wins); a
    # completion of an event that is not in the log changes nothing; temp names are skipped.
    _completion_part(d / "w1" / "_completions" / "part-a.parquet",
                     [("ab", "c", "x", 70, 200, 20.0), ("acct", None, "z", 9, None, 20.0)])
    _completion_part(d / "w1" / "_completions" / "part-b.parquet",
                     [("ab", "c", "x", 60, 500, 10.0), ("ab", "c", "y", 8, 429, 10.0),
                      ("ghost", "g", "x", 1, 200, 10.0)])
    _completion_part(d / "w1" / "_completions" / ".part-c.parquet.tmp", [("a", "bc", "x", 99, 200, 30.0)])
    t = load_events(d, join=join_completions)
    assert [(r["account_id"], r["event_id"], r["completion_tokens"], r["status"]) for r in t.to_pylist()] == [
        ("ab", "x", 70, 200), ("a", "x", 0, None), ("ab", "y", 8, 429), ("acct", "z", 9, None), ("acct", "z", 0, None)]
    # Streaming in small batches (what score and its partition step use) gives the same rows.
    assert pa.concat_tables(list(iter_event_batches(d, batch_rows=2, join=join_completions))).equals(t)
    # The completions reach the events only through the join (model/ knows nothing of the
    # event log): without it the rows are the logged ones, as scored.
    assert load_events(d)["completion_tokens"].to_pylist() == [0] * 5

    bad = d / "w1" / "_completions" / "part-d.parquet"
    _completion_part(bad, [("a", "bc", "x", 1, 200, 40.0)])
    pq.write_table(pq.read_table(bad).drop_columns(["status"]), bad)
    with pytest.raises(SchemaError, match=r"part-d\.parquet: completion part lacks column 'status'"):
        load_events(d, join=join_completions)
