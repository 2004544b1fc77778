"""Faults: the model file deleted or corrupted while serving, the disk full while batch
scoring writes its output, and the scoring process killed mid-write.

What must hold: the server keeps scoring with the model it loaded and refuses a reload of
the broken bundle (FAILED_PRECONDITION); `distillguard score` fails with a message naming
the output and the cause, leaves no file under the output's name and an earlier output
untouched (outputs are written as `.<name>.tmp-<pid>` and renamed when complete).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from distillguard.serving import DEFAULT_BUNDLE
from distillguard.model.files import temp_path
from distillguard.serving.batch import score_file
from distillguard.serving.server import SERVICE, ServeConfig, create_server
from distillguard.serving.stubs import pb, pb_grpc

T0 = 1_780_000_000.0
CLI = [sys.executable, "-m", "distillguard.cli"]


# ------------------------------------------------------------------ model file faults


def _req(account: str, event: str, ts: float) -> "pb.ScoreRequest":
    return pb.ScoreRequest(account_id=account, event_id=event, ts=ts, prompt_tokens=300, max_tokens=2048,
                           template_hash="00000000000000aa")


def _break(bundle: Path, fault: str) -> None:
    onnx = bundle / "model.onnx"
    if fault == "model deleted":
        onnx.unlink()
    elif fault == "model overwritten with garbage":
        with open(onnx, "r+b") as f:   # in place: same inode, as a careless copy would do
            f.write(os.urandom(4096))
            f.truncate()
    elif fault == "model truncated":
        with open(onnx, "r+b") as f:
            f.truncate(onnx.stat().st_size // 2)
    elif fault == "metadata garbage":
        (bundle / "metadata.json").write_bytes(b"\x00{not json")
    elif fault == "bundle directory deleted":
        shutil.rmtree(bundle)
    else:
        raise AssertionError(fault)


def _probs(r) -> tuple:
    return (r.p_human, r.p_benign_automation, r.p_distillation_harvesting)


@pytest.mark.parametrize("fault", ["model deleted", "model overwritten with garbage", "model truncated",
                                   "metadata garbage", "bundle directory deleted"])
def test_broken_model_file_while_serving_keeps_the_loaded_model(tmp_path, fault):
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    srv, port = create_server("127.0.0.1:0", bundle, ServeConfig(max_sessions=1000))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.ScorerStub(channel)
    try:
        before = stub.Score(_req("acct-before", "e0", T0), timeout=10)
        _break(bundle, fault)

        # Scoring goes on with the model in memory: same version, same scores for the same input.
        after = stub.Score(_req("acct-after", "e0", T0), timeout=10)
        assert after.model_version == before.model_version
        assert np.allclose(_probs(after), _probs(before), atol=1e-6)
        for i in range(1, 20):
            assert stub.Score(_req("acct-after", f"e{i}", T0 + 60 * i), timeout=10).events_in_session == i + 1

        # Reload over RPC (no path: the bundle's own) is refused; the old model keeps serving.
        with pytest.raises(grpc.RpcError) as e:
            stub.Reload(pb.ReloadRequest(), timeout=30)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "old model keeps serving" in e.value.details() and str(bundle) in e.value.details()
        # SIGHUP's path: logged and counted, never raised.
        srv.reload()
        assert srv.metrics.registry.get_sample_value("distillguard_reloads_total", {"result": "refused"}) == 2
        again = stub.Score(_req("acct-again", "e0", T0), timeout=10)
        assert again.model_version == before.model_version
        assert np.allclose(_probs(again), _probs(before), atol=1e-6)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING

        # Once the bundle is whole again, a reload goes through.
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.copytree(DEFAULT_BUNDLE, bundle)
        assert stub.Reload(pb.ReloadRequest(), timeout=30).model_version == before.model_version
        assert stub.Score(_req("acct-final", "e0", T0), timeout=10).model_version == before.model_version
    finally:
        channel.close()
        srv.stop(0)


# ------------------------------------------------------------------ batch-scoring outputs


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    """300k synthetic events (1,500 accounts x 200): per-event output of some MB, a few
    seconds' work (one pass per session chunk scored 120k events in under the 2 s the
    test used to wait on a clean CI machine)."""
    n_acc, per = 1500, 200
    rng = np.random.default_rng(7)
    n = n_acc * per
    table = pa.table({
        "account_id": np.repeat([f"acct-{i}" for i in range(n_acc)], per),
        "ts": T0 + np.tile(np.arange(per) * 60.0, n_acc) + rng.random(n),
        "prompt_tokens": rng.integers(1, 2000, n),
        "completion_tokens": rng.integers(1, 2000, n),
        "template_hash": [f"{h:016x}" for h in rng.integers(0, 50, n)],
    })
    path = tmp_path_factory.mktemp("faults") / "events.parquet"
    pq.write_table(table, path)
    # Warm numba's on-disk cache here, without a file-size limit (see _limited below).
    score_file(DEFAULT_BUNDLE, path, path.parent / "warm.parquet", progress=False, threads=1)
    return path


@pytest.fixture(scope="module")
def small_events(events) -> Path:
    """The first 6k events: per-event output of ~190 KB (Parquet) to 2.4 MB (JSON Lines)."""
    path = events.parent / "small.parquet"
    pq.write_table(pq.read_table(events).slice(0, 6000), path)
    return path


def _score_cmd(events: Path, out: Path) -> list[str]:
    return CLI + ["score", "--model", str(DEFAULT_BUNDLE), "--input", str(events), "--output", str(out),
                  "--per-event", "--threads", "1", "-q"]


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".tmp-" in p.name)


PREVIOUS = b"session_id,account_id\nprevious,run\n"


def _limited(max_bytes: int, cmd: list) -> list:
    """cmd run under RLIMIT_FSIZE = max_bytes: any file it writes past that fails with
    EFBIG (CPython ignores SIGXFSZ, so the write returns an error instead of killing the
    process). Set in a small process that exec()s cmd, not in a preexec_fn: that would
    force a fork() that runs gRPC's atfork handlers (serving.subprocs.die_with_parent)."""
    code = ("import os, resource, sys; n = int(sys.argv[1]); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execvp(sys.argv[2], sys.argv[2:])")
    return [sys.executable, "-S", "-c", code, str(max_bytes), *[str(c) for c in cmd]]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_file_size_limit_while_writing_fails_cleanly_and_keeps_the_old_output(tmp_path, small_events, fmt):
    """RLIMIT_FSIZE: disk full as seen by one process (EFBIG), no root needed."""
    out = tmp_path / f"scores.{fmt}"
    out.write_bytes(PREVIOUS)
    r = subprocess.run(_limited(64 * 1024, _score_cmd(small_events, out)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"cannot write {out}: File too large" in r.stderr
    assert out.read_bytes() == PREVIOUS                      # not truncated, not replaced
    assert _leftovers(tmp_path) == []                        # the temporary file was removed


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs: a real 'No space left on device'. Needs root (CAP_SYS_ADMIN)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_disk_full_while_writing_fails_cleanly_and_keeps_the_old_output(small_tmpfs, small_events):
    out = small_tmpfs / "scores.jsonl"
    out.write_bytes(PREVIOUS)
    r = subprocess.run(_score_cmd(small_events, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"cannot write {out}: No space left on device" in r.stderr
    assert out.read_bytes() == PREVIOUS
    assert _leftovers(small_tmpfs) == []
    # The space came back: a small output now fits and replaces the old one whole.
    small = small_tmpfs / "small.parquet"
    pq.write_table(pq.read_table(small_events).slice(0, 400), small)
    r = subprocess.run(CLI + ["score", "--model", str(DEFAULT_BUNDLE), "--input", str(small), "--output",
                              str(out), "--threads", "1", "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() != PREVIOUS and out.read_text().count("\n") == 2   # two sessions


def test_output_of_a_failed_run_never_appears(tmp_path, small_events):
    """A bad row in the last row: no output, old one kept, no temporary left."""
    t = pq.read_table(small_events)
    bad = t.set_column(2, "prompt_tokens", pa.array(np.r_[t["prompt_tokens"].to_numpy()[:-1], -1]))
    src = tmp_path / "bad.parquet"
    pq.write_table(bad, src)
    out = tmp_path / "scores.parquet"
    out.write_bytes(PREVIOUS)
    r = subprocess.run(_score_cmd(src, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and f"{src}: column 'prompt_tokens', row {t.num_rows}" in r.stderr
    assert out.read_bytes() == PREVIOUS and _leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("when", ["while writing", "while scoring"])
def test_killed_mid_run_leaves_the_old_output_and_no_partial_file(tmp_path, events, when):
    out = tmp_path / "scores.jsonl"
    out.write_bytes(PREVIOUS)
    proc = subprocess.Popen(_score_cmd(events, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tmp = out.with_name(f".{out.name}.tmp-{proc.pid}")   # the name the child writes to
    assert tmp.name == temp_path(out).name.replace(f"-{os.getpid()}", f"-{proc.pid}")
    start = time.monotonic()
    seen_tmp = False
    try:
        while time.monotonic() - start < 120 and proc.poll() is None:
            # A reader never sees anything but the old file under the final name.
            assert out.read_bytes() == PREVIOUS
            if when == "while scoring":
                if time.monotonic() - start > 1.0:   # loading or scoring, before any write
                    break
            elif tmp.exists() and tmp.stat().st_size > 0:
                seen_tmp = True
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()!r}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert out.read_bytes() == PREVIOUS
    # SIGKILL leaves no chance to clean up: a stale temporary may remain, under its own
    # recognisable name only (documented in serving/batch.py).
    assert set(_leftovers(tmp_path)) <= {tmp.name}
    if when == "while scoring":
        return
    assert seen_tmp and tmp.exists()
    # A later run is not disturbed by the stale file and replaces the output whole.
    r = subprocess.run(_score_cmd(events, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == pq.ParquetFile(events).metadata.num_rows
