"""gRPC serving benchmark: the real scorer against a no-op server of the same proto.

Both servers run as subprocesses on loopback and are driven in the same run, alternating
which goes first at every step, so machine noise (2 cores, shared with other work) hits
both. The server's CPU time comes from /proc/PID/stat (utime + stime over all its
threads), so "qps per busy core" = requests / server CPU seconds holds whatever the load
generator costs.

Two load generators, reported separately:

1. h2load (native, nghttp2): `h2load -c 1 -m C -d req.bin` per concurrency C, one
   HTTP/2 connection with C concurrent streams, like a gateway's single channel (4x8 and
   16x8 connections x streams were within noise of 1x32 against the no-op server here;
   `connections=` changes it).
   h2load cannot vary the request body: `-d` posts one file for every request, and
   `-i`/`--timing-script-file` vary only the URI, which gRPC routes on exactly (a query
   string gives UNIMPLEMENTED). Several h2load processes with distinct files do not help
   either: each still repeats its own event_id, and the scorer answers a repeated
   (session, event_id) as an idempotent retry. So the h2load numbers measure the scorer's
   *retry path* under native load: transport, decoding, validation, session lookup and
   whatever the retry costs (when this was written, the scorer recomputed the held
   event's score: one feature pass and one batch-1 model call, outside the micro-batching). The harness
   scores the body once before measuring, so every measured request is that retry, and
   checks that the answer says `duplicate=true`. New-event scoring under load is the
   second mode's job.
2. Python-driven (grpc.aio, one channel, C concurrent sessions): every request is a new
   event of one of many sessions, Score on arrival then Complete, as a gateway sends them.
   This is the state-dependent path (ring append, aggregates, micro-batched model calls).
   The Python client competes with the server for the 2 cores, so its qps and latencies
   are lower bounds on what the server can do; its CPU-per-request figures stay fair.
3. New events, one stream ("new_events" in the JSON, `new_events=True`): a stream of
   distinct sessions is generated once from a seed and written to a file, and every run on
   either server sends that file's events (ids prefixed per run, since the scorer keeps
   state and would answer a replayed id as a retry) at one stated concurrency, Score then
   Complete per event, from a grpc.aio process with requests serialized before the clock
   starts. Medians of alternating runs; server CPU per event (Score + Complete = one event)
   beside h2load's identical-body row at the nearest concurrency. The scorer's /metrics
   must account for every event as newly scored and every session as new (`checks`). The
   client is Python because h2load cannot send distinct bodies (see 1.).

"p99 at half the scorer's peak" runs h2load open-loop with `--rps` at half the best
scorer qps, against both servers at that same rate. h2load's rate timer fires every
max(10 ms, 1/rps) per client and sends the backlog as a burst, so the rate is spread over
ceil(rate/100) clients started 1 ms apart; one client at 2,000 req/s measured its own
20-request bursts (p50 4 ms on the no-op server instead of 0.7 ms).

gRPC errors are invisible to h2load (it counts HTTP 200 as success; gRPC puts the status
in trailers). Three checks make them visible: h2load runs with `-v`, which prints the
headers of trailers-only responses, and every gRPC error sent without a message is
trailers-only, so each `grpc-status: N` line it prints is an error; the scorer's
/metrics counter `distillguard_requests_total{code!="OK"}` is diffed around each run;
and h2load's own failed/errored/timeout counts are kept.

"Model compute per request" is measured in-process: `Bundle.predict` on windows of
length 32 at batch 1 and batch 32 (amortised per request), and `features.compute` on a
32-event block, which is what one Score recomputes.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model.files import publish_text
from ..serving.harness import MetricSamples, ServeProcess, serve_argv

GRPC_PATH = "/distillguard.v1.Scorer/Score"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- framing

def frame(message: bytes) -> bytes:
    """gRPC length-prefixed message: flag byte 0 (uncompressed), 4-byte big-endian length."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def unframe(data: bytes) -> bytes:
    """Inverse of `frame` for one message; raises ValueError on a malformed frame."""
    if len(data) < 5:
        raise ValueError(f"gRPC frame too short: {len(data)} bytes")
    flag, n = data[0], struct.unpack(">I", data[1:5])[0]
    if flag != 0:
        raise ValueError(f"gRPC frame compressed flag {flag}, expected 0")
    if len(data) != 5 + n:
        raise ValueError(f"gRPC frame length {n} but {len(data) - 5} payload bytes")
    return data[5:]


def bench_request(tag: str = "h2load", ts: float = 1_750_000_000.0):
    """One realistic Score request (request-side fields of a scripted client)."""
    from ..serving.stubs import pb

    return pb.ScoreRequest(
        account_id=f"bench-{tag}", session_id=f"bench-{tag}-s0", event_id=f"{tag}-e0", ts=ts,
        prompt_tokens=812, max_tokens=1024, model="frontier-large",
        client_fingerprint="python-httpx/0.27", ip_prefix="203.0.113.0/24",
        account_created_at=ts - 3 * 86400.0, template_hash="9f2c4e1a7b3d5c60", elicits_reasoning=True)


def write_request_file(path: Path, request) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(frame(request.SerializeToString()))
    return path


# ---------------------------------------------------------------------------- processes

def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads, from /proc (no psutil)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # comm may hold spaces or parentheses: fields are counted after the last ')'.
    rest = stat[stat.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


def proc_rss_mb(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mb": out.get("VmRSS"), "peak_rss_mb": out.get("VmHWM")}


class ServerProc(ServeProcess):
    """A benchmark's server: the harness's ServeProcess (port file, health SERVING, SIGTERM
    stop, /metrics summed over `serve --workers` workers) plus its CPU time."""

    def cpu(self) -> float:
        """CPU seconds of the process and its workers (a supervisor's own are ~0)."""
        total = 0.0
        for pid in [self.pid, *(w["pid"] for w in self.workers)]:
            try:
                total += proc_cpu_seconds(pid)
            except OSError:
                pass
        return total

    @property
    def own_ports(self) -> list[int]:
        """Each worker's own port (the shared one for a single process)."""
        return [w["port"] for w in self.workers] or [self.port]


def grpc_errors_from_metrics(before: MetricSamples, after: MetricSamples) -> dict[str, float]:
    """Per 'method/code' growth of distillguard_requests_total for codes other than OK."""
    out = {}
    for labels, v in after.samples("distillguard_requests_total"):
        d = v - before.value("distillguard_requests_total", **labels)
        if d > 0 and labels.get("code", "OK") != "OK":
            out[f"{labels.get('method', '?')}/{labels['code']}"] = d
    return out


def metric_delta(before: MetricSamples, after: MetricSamples, name: str) -> float:
    return after.value(name) - before.value(name)


# ---------------------------------------------------------------------------- h2load

def h2load_version() -> str | None:
    exe = shutil.which("h2load")
    if not exe:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


_REQ_LINE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout")
_GRPC_STATUS = re.compile(r"^\[stream_id=\d+\] grpc-status: (\d+)", re.MULTILINE)


def percentiles(us: np.ndarray) -> dict:
    if len(us) == 0:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return {"p50_ms": p50 / 1e3, "p90_ms": p90 / 1e3, "p99_ms": p99 / 1e3,
            "max_ms": float(us.max()) / 1e3, "mean_ms": float(us.mean()) / 1e3}


def run_h2load(port: int, body: Path, requests: int, concurrency: int, connections: int = 1,
               rps: float | None = None, workdir: Path | None = None, path: str = GRPC_PATH) -> dict:
    """One h2load run; returns counts, latencies (µs, from --log-file) and client CPU."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="h2load-"))
    conns = max(1, min(connections, concurrency))
    if rps:
        # h2load's rate timer ticks every max(10 ms, 1/rps) per client, so one client at
        # 2,000 req/s sends bursts of 20 every 10 ms and measures its own queueing. At most
        # 100 req/s per client (one request per tick), clients connected 1 ms apart (-r 1
        # --rate-period 1ms) so their ticks are spread over the 10 ms.
        conns = max(conns, math.ceil(rps / 100.0))
    streams = -(-concurrency // conns)
    log_file, out_file = workdir / "h2load-requests.tsv", workdir / "h2load-stdout.txt"
    log_file.unlink(missing_ok=True)   # h2load appends to an existing --log-file
    argv = ["h2load", "-n", str(requests), "-c", str(conns), "-m", str(streams), "-t", "1",
            "-v", "--log-file", str(log_file), "-d", str(body),
            "-H", "content-type: application/grpc", "-H", "te: trailers"]
    if rps:
        argv += ["--rps", f"{rps / conns:.3f}", "-r", "1", "--rate-period", "1ms"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    load = os.getloadavg()[0]
    with open(out_file, "w") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        # wait4, not wait: its rusage is h2load's own CPU time, the load generator's cost.
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    text = out_file.read_text(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"h2load exited {p.returncode}: {' '.join(argv)}\n{text[-2000:]}")
    m = _REQ_LINE.search(text)
    if not m:
        raise RuntimeError(f"cannot parse h2load output:\n{text[-2000:]}")
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    grpc_codes: dict[str, int] = {}
    for code in _GRPC_STATUS.findall(text):
        grpc_codes[code] = grpc_codes.get(code, 0) + 1
    grpc_err = sum(n for c, n in grpc_codes.items() if c != "0")
    log = np.loadtxt(log_file, dtype=np.int64, ndmin=2) if log_file.stat().st_size else np.zeros((0, 3), np.int64)
    start_us, http_status, elapsed_us = log[:, 0], log[:, 1], log[:, 2]
    good = http_status == 200
    wall = ((start_us + elapsed_us).max() - start_us.min()) / 1e6 if len(log) else float("nan")
    return {
        "requests": total, "done": done, "http_ok": ok, "failed": failed, "errored": errored,
        "timeout": timeout, "grpc_errors": grpc_err, "grpc_status_codes": grpc_codes,
        "wall_s": wall, "qps": len(log) / wall if len(log) else 0.0,
        "latency_us": elapsed_us[good], "connections": conns, "streams": streams,
        "client_cpu_s": ru.ru_utime + ru.ru_stime, "rps_target": rps, "loadavg_1m": load,
    }


# ---------------------------------------------------------------------------- Python load generator

_TEMPLATES = [f"{i:016x}" for i in range(0x3a7c, 0x3a7c + 40)]


def _session_events(rng: np.random.Generator, n: int, t0: float, scripted: bool) -> list[dict]:
    """Raw fields of one session: a scripted harvester (regular gaps, few templates, saturated
    outputs) or a human (bursty gaps, many templates).

    All sessions of a run must stay within one session gap (24 h) of event time: the scorer
    expires sessions idle for a gap relative to the newest event it has seen, so a load
    whose sessions drift days apart would measure expiry, not scoring. Hence ~25 min
    between scripted requests (real campaigns: ~55 min) and 48 events at most ~21 h."""
    gaps = rng.normal(1500, 60, n).clip(60) if scripted else rng.exponential(90.0, n) + 2.0
    ts = t0 + np.cumsum(gaps)
    out = []
    for i in range(n):
        mt = 1024 if scripted else int(rng.choice([0, 512, 2048]))
        out.append({
            "ts": float(ts[i]), "prompt_tokens": int(rng.integers(200, 1500)), "max_tokens": mt,
            "template_hash": _TEMPLATES[int(rng.integers(0, 3 if scripted else 40))],
            "elicits_reasoning": bool(scripted and rng.random() < 0.8),
            "client_fingerprint": "python-httpx/0.27" if scripted else "Mozilla/5.0 Chrome/126",
            "completion_tokens": (mt if scripted else int(rng.integers(20, 900))),
            "status": 200 if rng.random() > 0.02 else 429,
        })
    return out


async def _pyload(port: int, concurrency: int, events: int, events_per_session: int, seed: int,
                  tag: str, ports: list | None = None, route: str = "hash") -> dict:
    """ports: several servers (a worker's own ports); route "hash" sends each session to one
    of them (session-affine, as a consistent-hash balancer), "alternate" sends a session's
    successive events to successive ports (Score to one, its Complete to the next), the
    worst case for a shared store's local copies."""
    import grpc

    from ..serving.stubs import pb, pb_grpc

    if events_per_session > 48:
        raise ValueError("events_per_session > 48 would spread a session over more than a day "
                         "of event time (see _session_events)")
    rng = np.random.default_rng(seed)
    n_sessions = max(concurrency, -(-events // events_per_session))
    sessions = []
    for s in range(n_sessions):
        t0 = 1_750_000_000.0 + float(rng.uniform(0, 3600))
        sessions.append((s, f"py-{tag}-a{s}", f"py-{tag}-s{s}", t0 - 30 * 86400.0,
                         _session_events(rng, events_per_session, t0, scripted=bool(s % 2))))
    q: asyncio.Queue = asyncio.Queue()
    for s in sessions:
        q.put_nowait(s)
    score_us, complete_us = [], []
    codes: dict[str, int] = {}
    dup = not_applied = 0
    budget = [events]

    targets = list(ports) if ports else [port]
    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in targets]
    try:
        stubs = [pb_grpc.ScorerStub(c) for c in chans]
        for c in chans:
            await asyncio.wait_for(c.channel_ready(), 30)

        async def worker():
            nonlocal dup, not_applied
            while budget[0] > 0 and not q.empty():
                si, acct, sid, created, evs = q.get_nowait()
                for k, e in enumerate(evs):
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                    n_t = len(stubs)
                    stub = stubs[si % n_t] if route == "hash" else stubs[(si + k) % n_t]
                    cstub = stubs[si % n_t] if route == "hash" else stubs[(si + k + 1) % n_t]
                    eid = f"{sid}-e{k}"
                    req = pb.ScoreRequest(
                        account_id=acct, session_id=sid, event_id=eid, ts=e["ts"],
                        prompt_tokens=e["prompt_tokens"], max_tokens=e["max_tokens"],
                        model="frontier-large", client_fingerprint=e["client_fingerprint"],
                        ip_prefix="198.51.100.0/24", account_created_at=created,
                        template_hash=e["template_hash"], elicits_reasoning=e["elicits_reasoning"])
                    t = time.perf_counter_ns()
                    try:
                        r = await stub.Score(req, timeout=30)
                        score_us.append((time.perf_counter_ns() - t) / 1e3)
                        dup += r.duplicate
                        codes["Score/OK"] = codes.get("Score/OK", 0) + 1
                    except grpc.aio.AioRpcError as err:
                        key = f"Score/{err.code().name}"
                        codes[key] = codes.get(key, 0) + 1
                        continue
                    creq = pb.CompleteRequest(account_id=acct, session_id=sid, event_id=eid,
                                              completion_tokens=e["completion_tokens"],
                                              status=e["status"], latency_s=1.5)
                    t = time.perf_counter_ns()
                    try:
                        cr = await cstub.Complete(creq, timeout=30)
                        complete_us.append((time.perf_counter_ns() - t) / 1e3)
                        not_applied += not cr.applied
                        codes["Complete/OK"] = codes.get("Complete/OK", 0) + 1
                    except grpc.aio.AioRpcError as err:
                        key = f"Complete/{err.code().name}"
                        codes[key] = codes.get(key, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    finally:
        for c in chans:
            await c.close()
    s = np.asarray(score_us)
    c = np.asarray(complete_us)
    return {"scores": len(s), "completes": len(c), "wall_s": wall,
            "score_qps": len(s) / wall, "rpc_qps": (len(s) + len(c)) / wall,
            "score": percentiles(s), "complete": percentiles(c), "codes": codes,
            "errors": sum(n for k, n in codes.items() if not k.endswith("/OK")),
            "duplicates": dup, "complete_not_applied": not_applied}


def _pyload_main() -> None:
    """Entry point of the load-generator subprocess: args as JSON in argv[1], JSON out."""
    import resource

    a = json.loads(sys.argv[1])
    res = asyncio.run(_pyload(**a))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res["client_cpu_s"] = ru.ru_utime + ru.ru_stime
    print(json.dumps(res))


def run_pyload(port: int, concurrency: int, events: int, events_per_session: int = 48,
               seed: int = 0, tag: str = "x", ports: list | None = None, route: str = "hash") -> dict:
    args = json.dumps({"port": port, "concurrency": concurrency, "events": events,
                       "events_per_session": events_per_session, "seed": seed, "tag": tag,
                       "ports": ports, "route": route})
    code = "from distillguard.benchmarks.bench_grpc import _pyload_main; _pyload_main()"
    out = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"Python load generator failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- new-event stream
#
# The stream is generated once per benchmark from a seed and written to a file; every run,
# on either server, reads that file, so both servers get the same events in the same
# per-session order. Each run namespaces the ids (account, session, event) with its own
# prefix: the scorer keeps state across runs, and a stream replayed under the same ids
# would be answered as idempotent retries, which is what h2load already measures.

SCORE_PATH = GRPC_PATH
COMPLETE_PATH = "/distillguard.v1.Scorer/Complete"


def event_stream(events: int, events_per_session: int = 16, seed: int = 0) -> dict:
    """`events` raw events in ceil(events / events_per_session) sessions, alternately a
    scripted harvester and a human (see `_session_events`); the last session may be shorter.
    Ids are not part of the stream: a run derives them from its prefix and the indices."""
    if events < 1:
        raise ValueError(f"events must be >= 1, got {events}")
    if not 1 <= events_per_session <= 48:
        raise ValueError(f"events_per_session must be in 1..48 (48 keeps a session within a day of "
                         f"event time, see _session_events), got {events_per_session}")
    rng = np.random.default_rng(seed)
    sessions, left = [], events
    while left > 0:
        n = min(events_per_session, left)
        t0 = 1_750_000_000.0 + float(rng.uniform(0, 3600))
        sessions.append({"account_created_at": t0 - 30 * 86400.0,
                         "events": _session_events(rng, n, t0, scripted=bool(len(sessions) % 2))})
        left -= n
    return {"seed": seed, "events": events, "events_per_session": events_per_session,
            "sessions": sessions}


def write_event_stream(path: Path, stream: dict) -> str:
    """Write the stream as JSON; returns the sha256 of the bytes written, which every run's
    load generator reports back for the bytes it read."""
    import hashlib

    data = json.dumps(stream, sort_keys=True).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


async def _send_stream(port: int, stream_path: str, run: str, concurrency: int,
                       timeout_s: float = 30.0) -> dict:
    """Send every event of the stream file: `concurrency` sessions in flight, each sending its
    events in order, Score then (after its answer) Complete, so at most `concurrency` RPCs
    are outstanding. Requests are serialized before the clock starts and answers parsed
    after it stops, so the timed part of the client is the gRPC calls alone."""
    import hashlib

    import grpc

    from ..serving.stubs import pb

    data = Path(stream_path).read_bytes()
    stream = json.loads(data)
    # sessions[i] = [(Score bytes, Complete bytes), ...] in the session's event order.
    sessions = []
    for i, s in enumerate(stream["sessions"]):
        acct, sid = f"{run}-a{i}", f"{run}-s{i}"
        evs = []
        for k, e in enumerate(s["events"]):
            eid = f"{sid}-e{k}"
            evs.append((
                pb.ScoreRequest(
                    account_id=acct, session_id=sid, event_id=eid, ts=e["ts"],
                    prompt_tokens=e["prompt_tokens"], max_tokens=e["max_tokens"], model="frontier-large",
                    client_fingerprint=e["client_fingerprint"], ip_prefix="198.51.100.0/24",
                    account_created_at=s["account_created_at"], template_hash=e["template_hash"],
                    elicits_reasoning=e["elicits_reasoning"]).SerializeToString(),
                pb.CompleteRequest(
                    account_id=acct, session_id=sid, event_id=eid, completion_tokens=e["completion_tokens"],
                    status=e["status"], latency_s=1.5).SerializeToString()))
        sessions.append(evs)
    score_us, complete_us, score_rsp, complete_rsp = [], [], [], []
    codes: dict[str, int] = {}

    def count(key: str) -> None:
        codes[key] = codes.get(key, 0) + 1

    # No serializers: the stubs pass bytes through (requests pre-serialized, answers raw).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        score, complete = ch.unary_unary(SCORE_PATH), ch.unary_unary(COMPLETE_PATH)
        await asyncio.wait_for(ch.channel_ready(), 30)
        todo = iter(range(len(sessions)))    # shared by the workers of one event loop

        async def worker():
            for i in todo:
                for sb, cb in sessions[i]:
                    t = time.perf_counter_ns()
                    try:
                        score_rsp.append(await score(sb, timeout=timeout_s))
                        score_us.append((time.perf_counter_ns() - t) / 1e3)
                        count("Score/OK")
                    except grpc.aio.AioRpcError as err:
                        count(f"Score/{err.code().name}")
                        continue
                    t = time.perf_counter_ns()
                    try:
                        complete_rsp.append(await complete(cb, timeout=timeout_s))
                        complete_us.append((time.perf_counter_ns() - t) / 1e3)
                        count("Complete/OK")
                    except grpc.aio.AioRpcError as err:
                        count(f"Complete/{err.code().name}")

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, client_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    scores = [pb.ScoreResponse.FromString(b) for b in score_rsp]
    n_events = sum(len(s) for s in sessions)
    return {"stream_sha256": hashlib.sha256(data).hexdigest(), "stream_events": n_events,
            "stream_sessions": len(sessions), "concurrency": concurrency, "run": run,
            "scores": len(score_us), "completes": len(complete_us), "wall_s": wall,
            "events_per_s": len(score_us) / wall, "client_cpu_s": client_cpu,
            "score": percentiles(np.asarray(score_us)), "complete": percentiles(np.asarray(complete_us)),
            "codes": codes, "errors": sum(n for k, n in codes.items() if not k.endswith("/OK")),
            "duplicates": sum(r.duplicate for r in scores),
            "distinct_sessions": len({r.session_id for r in scores}),
            "complete_not_applied": sum(not pb.CompleteResponse.FromString(b).applied for b in complete_rsp)}


def _send_stream_main() -> None:
    """Entry point of the load-generator subprocess: args as JSON in argv[1], JSON out."""
    print(json.dumps(asyncio.run(_send_stream(**json.loads(sys.argv[1])))))


def run_event_stream(port: int, stream_path: Path, run: str, concurrency: int,
                     timeout_s: float = 30.0, limit_s: float = 600.0) -> dict:
    """`_send_stream` in its own process (its GIL and event loop off the harness's), at most
    `limit_s` seconds."""
    args = json.dumps({"port": port, "stream_path": str(stream_path), "run": run,
                       "concurrency": concurrency, "timeout_s": timeout_s})
    code = "from distillguard.benchmarks.bench_grpc import _send_stream_main; _send_stream_main()"
    try:
        out = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                             timeout=limit_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"new-event load generator still running after {limit_s:.0f}s "
                           f"(port {port}, run {run})") from None
    if out.returncode != 0:
        raise RuntimeError(f"new-event load generator failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- model compute

def _median_us(fn, n: int) -> float:
    fn()  # first call allocates ORT buffers
    ts = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t)
    return statistics.median(ts) / 1e3


def model_compute(model, window: int = 32, iters: int = 400) -> dict:
    """In-process cost of the model and the feature code, the scorer's per-request floor."""
    from ..model import features
    from ..serving.bundle import load_bundle

    b = load_bundle(model, threads=1)
    T = min(window, b.window)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, T, features.N_FEATURES)).astype(np.float32)
    x32 = rng.standard_normal((32, T, features.N_FEATURES)).astype(np.float32)
    n = 32
    evs = _session_events(rng, n, 1_750_000_000.0, scripted=True)
    raw = features.RawEvents(
        ts=np.array([e["ts"] for e in evs]), prompt_tokens=np.array([e["prompt_tokens"] for e in evs]),
        completion_tokens=np.array([e["completion_tokens"] for e in evs]),
        max_tokens=np.array([e["max_tokens"] for e in evs]), status=np.array([e["status"] for e in evs]),
        template_key=np.array([features.template_key(e["template_hash"]) for e in evs], dtype=np.int64),
        elicits_reasoning=np.array([e["elicits_reasoning"] for e in evs], dtype=np.int8),
        browser_client=np.zeros(n, dtype=np.int8), account_created_at=np.full(n, 1_740_000_000.0))
    seg = np.zeros(n, dtype=np.int64)
    st = features.empty_state(1)
    b1 = _median_us(lambda: b.predict(x1), iters)
    b32 = _median_us(lambda: b.predict(x32), max(50, iters // 8))
    feat = _median_us(lambda: features.compute(st, seg, raw), iters)
    return {"window": T, "model_window": b.window, "ort_b1_us": b1, "ort_b32_us": b32,
            "ort_b32_per_request_us": b32 / 32, "features_32_rows_us": feat,
            "model_version": b.version}


# ---------------------------------------------------------------------------- the benchmark

@dataclass
class _Acc:
    """Pooled measurements of one server at one setting over the alternating repeats."""
    lat: list = field(default_factory=list)
    n: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    client_cpu: float = 0.0
    qps_runs: list = field(default_factory=list)
    loadavg: list = field(default_factory=list)
    errors: dict = field(default_factory=lambda: {"grpc_status": 0, "h2_failed": 0, "h2_errored": 0,
                                                  "h2_timeout": 0, "metrics": {}})

    def add(self, r: dict, cpu: float, metrics_err: dict):
        self.lat.append(r["latency_us"])
        self.n += r["done"]
        self.wall += r["wall_s"]
        self.cpu += cpu
        self.client_cpu += r["client_cpu_s"]
        self.qps_runs.append(r["qps"])
        self.loadavg.append(r["loadavg_1m"])
        e = self.errors
        e["grpc_status"] += r["grpc_errors"]
        e["h2_failed"] += r["failed"]
        e["h2_errored"] += r["errored"]
        e["h2_timeout"] += r["timeout"]
        for k, v in metrics_err.items():
            e["metrics"][k] = e["metrics"].get(k, 0) + v

    def summary(self) -> dict:
        lat = np.concatenate(self.lat) if self.lat else np.zeros(0)
        cpu_req = self.cpu / self.n if self.n else float("nan")
        return {"requests": self.n, "qps": self.n / self.wall if self.wall else 0.0,
                "qps_runs": self.qps_runs, "loadavg_1m": self.loadavg, "server_cpu_s": self.cpu,
                "server_cpu_us_per_req": cpu_req * 1e6,
                "qps_per_busy_core": 1.0 / cpu_req if cpu_req > 0 else None,
                "server_busy_cores": self.cpu / self.wall if self.wall else None,
                "client_cpu_us_per_req": self.client_cpu / self.n * 1e6 if self.n else None,
                **percentiles(lat),
                "errors": self.errors,
                "error_total": (self.errors["grpc_status"] + self.errors["h2_failed"]
                                + self.errors["h2_errored"] + self.errors["h2_timeout"]
                                + int(sum(self.errors["metrics"].values())))}


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def _ratios(s: dict, n: dict) -> dict:
    return {"qps": _ratio(s["qps"], n["qps"]), "p50": _ratio(s["p50_ms"], n["p50_ms"]),
            "p99": _ratio(s["p99_ms"], n["p99_ms"]),
            "cpu_per_req": _ratio(s["server_cpu_us_per_req"], n["server_cpu_us_per_req"])}


def _probe(port: int, body: Path) -> dict:
    """Send the h2load body once through a real client: gRPC status and answer."""
    import grpc

    from ..serving.stubs import pb

    req = pb.ScoreRequest.FromString(unframe(body.read_bytes()))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(GRPC_PATH, request_serializer=pb.ScoreRequest.SerializeToString,
                              response_deserializer=pb.ScoreResponse.FromString)
        try:
            r = call(req, timeout=10)
            return {"code": "OK", "duplicate": r.duplicate, "label": r.label,
                    "events_in_session": r.events_in_session, "response_bytes": r.ByteSize()}
        except grpc.RpcError as e:
            return {"code": e.code().name, "details": e.details()}


def start_servers(model, workdir: Path, workers: int | None = None,
                  serve_args: tuple = ()) -> tuple[ServerProc, ServerProc]:
    scorer_argv = serve_argv("--model", model, "--insecure", "--port", 0, "--metrics-port", 0, *serve_args)
    noop_argv = [sys.executable, "-m", "distillguard.benchmarks.noop_server", "--port", "0"]
    if workers:
        # Same handler pool on both sides, else the comparison measures pool sizes.
        scorer_argv += ["--threads", str(workers)]
        noop_argv += ["--workers", str(workers)]
    scorer = ServerProc(scorer_argv, name="scorer", log_path=workdir / "grpc-scorer.log")
    noop = ServerProc(noop_argv, name="noop", log_path=workdir / "grpc-noop.log")
    noop.start()
    try:
        scorer.start()
    except Exception:
        noop.stop()
        raise
    return scorer, noop


def _measure(srv: ServerProc, body: Path, n: int, c: int, connections: int, workdir: Path,
             rps: float | None = None, warmup: int = 0) -> tuple[dict, float, dict]:
    if warmup:
        run_h2load(srv.port, body, warmup, c, connections, workdir=workdir)
    m0, c0 = srv.metrics(), srv.cpu()
    r = run_h2load(srv.port, body, n, c, connections, rps=rps, workdir=workdir)
    cpu, m1 = srv.cpu() - c0, srv.metrics()
    return r, cpu, grpc_errors_from_metrics(m0, m1)


def run_grpc_bench(model, concurrency=(1, 8, 32, 128), requests: int = 20000, repeats: int = 2,
                   connections: int = 1, py_concurrency=(1, 8, 32), py_events: int = 3000,
                   half_peak: bool = True, python_driven: bool = True, workdir: Path = Path("bench"),
                   out: Path | None = None, workers: int | None = None, serve_args: tuple = (),
                   quiet: bool = False, new_events: bool = True, events: int = 3000,
                   events_per_session: int = 16, events_concurrency: int = 32, events_repeats: int = 3,
                   events_seed: int = 0) -> dict:
    """Scorer vs no-op under h2load (and the Python generator); prints a table, writes JSON.

    new_events: also send one stream of `events` new events (`events_per_session` per
    session, generated from `events_seed`) to both servers, `events_concurrency` sessions in
    flight, `events_repeats` alternating runs each -> the JSON's "new_events"."""
    from rich.console import Console

    con = Console(quiet=quiet)
    if not con.is_terminal:
        con = Console(quiet=quiet, width=140)   # logs and `make bench | tee`: no truncated columns
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(out) if out else workdir / "grpc_bench.json"
    res: dict = {"machine": {"cpus": os.cpu_count(), "h2load": h2load_version(),
                             "python": sys.version.split()[0]},
                 "config": {"model": str(model), "concurrency": list(concurrency), "requests": requests,
                            "repeats": repeats, "connections": connections,
                            "py_concurrency": list(py_concurrency), "py_events": py_events,
                            "new_events": new_events, "events": events, "events_per_session": events_per_session,
                            "events_concurrency": events_concurrency, "events_repeats": events_repeats,
                            "events_seed": events_seed}}

    con.print("[bold]model compute per request[/] (in-process, 1 ORT thread)")
    res["model_compute"] = model_compute(model)

    scorer, noop = start_servers(model, workdir, workers, serve_args)
    servers = {"scorer": scorer, "noop": noop}
    try:
        res["servers"] = {k: {"pid": s.pid, "argv": s.argv[1:]} for k, s in servers.items()}
        if res["machine"]["h2load"] is None:
            res["h2load"] = {"skipped": "h2load not installed (apt-get install nghttp2-client)"}
            con.print("[bold red]h2load not found: native-load runs skipped[/] "
                      "(apt-get install nghttp2-client)")
        else:
            res["h2load"] = _h2load_part(con, servers, model, concurrency, requests, repeats,
                                         connections, half_peak, workdir)
        if new_events:
            res["new_events"] = _new_events_part(con, servers, workdir, events, events_per_session,
                                                 events_concurrency, events_repeats, events_seed,
                                                 res.get("h2load"))
        if python_driven:
            res["python_driven"] = _python_part(con, servers, py_concurrency, py_events, repeats)
        for k, s in servers.items():
            res["servers"][k].update(proc_rss_mb(s.pid))
        m = scorer.metrics()
        res["scorer_metrics_end"] = {k: v for k, v in m.items() if k.startswith(
            ("distillguard_requests_total", "distillguard_duplicate_events_total",
             "distillguard_batch_size_sum", "distillguard_batch_size_count"))}
    finally:
        scorer.stop()
        noop.stop()

    publish_text(out, json.dumps(res, indent=2, default=_json_default))
    print_tables(res, con)
    con.print(f"written {out}")
    return res


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    raise TypeError(type(o))


def _h2load_part(con, servers, model, concurrency, requests, repeats, connections, half_peak,
                 workdir: Path) -> dict:
    body = write_request_file(workdir / "grpc-request.bin", bench_request(f"h2load-{os.getpid()}"))
    # Scored once up front: every measured scorer request is then the same retry.
    probes = {k: _probe(s.port, body) for k, s in servers.items()}
    probes["scorer_again"] = _probe(servers["scorer"].port, body)
    part = {"request_file": str(body), "request_bytes": body.stat().st_size, "probe": probes,
            "rows": []}
    if probes["scorer"].get("code") != "OK" or not probes["scorer_again"].get("duplicate"):
        con.print(f"[bold red]the h2load body is not answered as an OK retry by the scorer[/] "
                  f"({probes}): the h2load rows do not measure what their title says")
    warm = min(2000, max(100, requests // 10))
    order = list(servers)
    for c in concurrency:
        acc = {k: _Acc() for k in servers}
        for rep in range(repeats):
            # Alternate who goes first so drift and neighbours' load hit both alike.
            for k in (order if (rep + len(part["rows"])) % 2 == 0 else order[::-1]):
                r, cpu, merr = _measure(servers[k], body, requests, c, connections, workdir, warmup=warm)
                acc[k].add(r, cpu, merr)
        row = {"concurrency": c, "connections": r["connections"], "streams": r["streams"],
               **{k: a.summary() for k, a in acc.items()}}
        row["ratio"] = _ratios(row["scorer"], row["noop"])
        part["rows"].append(row)
        s, n = row["scorer"], row["noop"]
        con.print(f"  h2load c={c:<4} scorer {s['qps']:8.0f} qps p99 {s['p99_ms']:.2f} ms | "
                  f"noop {n['qps']:8.0f} qps p99 {n['p99_ms']:.2f} ms | errors {s['error_total']}/{n['error_total']}")
    if half_peak and part["rows"]:
        peak = max(r["scorer"]["qps"] for r in part["rows"])
        rate = 0.5 * peak
        n_req = int(min(max(2000, rate * 8), requests))
        c = max(concurrency)
        hp = {"scorer_peak_qps": peak, "rate": rate, "requests": n_req, "concurrency_cap": c}
        for k in order:
            r, cpu, merr = _measure(servers[k], body, n_req, c, connections, workdir, rps=rate, warmup=warm)
            a = _Acc()
            a.add(r, cpu, merr)
            hp[k] = a.summary()
        hp["ratio"] = _ratios(hp["scorer"], hp["noop"])
        part["half_peak"] = hp
        con.print(f"  h2load at {rate:.0f} req/s (half the scorer's peak): scorer p99 "
                  f"{hp['scorer']['p99_ms']:.2f} ms, noop p99 {hp['noop']['p99_ms']:.2f} ms")
    return part


def _python_part(con, servers, py_concurrency, py_events, repeats) -> dict:
    rows = []
    order = list(servers)
    for i, c in enumerate(py_concurrency):
        row = {"concurrency": c}
        pooled = {k: [] for k in servers}
        for rep in range(repeats):
            for k in (order if (rep + i) % 2 == 0 else order[::-1]):
                srv = servers[k]
                m0, c0, load = srv.metrics(), srv.cpu(), os.getloadavg()[0]
                r = run_pyload(srv.port, c, py_events, seed=rep, tag=f"{k}-c{c}-r{rep}-{os.getpid()}")
                r["server_cpu_s"] = srv.cpu() - c0
                r["loadavg_1m"] = load
                r["metrics_errors"] = grpc_errors_from_metrics(m0, srv.metrics())
                pooled[k].append(r)
        for k, runs in pooled.items():
            scores = sum(r["scores"] for r in runs)
            rpcs = scores + sum(r["completes"] for r in runs)
            wall = sum(r["wall_s"] for r in runs)
            cpu = sum(r["server_cpu_s"] for r in runs)
            med = sorted(runs, key=lambda r: r["score_qps"])[len(runs) // 2]
            row[k] = {"score_qps": scores / wall, "rpc_qps": rpcs / wall,
                      "server_cpu_us_per_event": cpu / scores * 1e6 if scores else None,
                      "events_per_busy_core": scores / cpu if cpu else None,
                      "score_p50_ms": med["score"]["p50_ms"], "score_p99_ms": med["score"]["p99_ms"],
                      "complete_p50_ms": med["complete"]["p50_ms"], "complete_p99_ms": med["complete"]["p99_ms"],
                      "client_cpu_us_per_event": sum(r["client_cpu_s"] for r in runs) / scores * 1e6,
                      "errors": sum(r["errors"] for r in runs) + int(sum(
                          sum(r["metrics_errors"].values()) for r in runs)),
                      "codes": _merge([r["codes"] for r in runs]),
                      "duplicates": sum(r["duplicates"] for r in runs),
                      "complete_not_applied": sum(r["complete_not_applied"] for r in runs),
                      "loadavg_1m": [r["loadavg_1m"] for r in runs]}
        s, n = row["scorer"], row["noop"]
        row["ratio"] = {"score_qps": _ratio(s["score_qps"], n["score_qps"]),
                        "score_p50": _ratio(s["score_p50_ms"], n["score_p50_ms"]),
                        "score_p99": _ratio(s["score_p99_ms"], n["score_p99_ms"]),
                        "cpu_per_event": _ratio(s["server_cpu_us_per_event"], n["server_cpu_us_per_event"])}
        rows.append(row)
        con.print(f"  python-driven c={c:<4} scorer {s['score_qps']:7.0f} events/s p99 {s['score_p99_ms']:.2f} ms | "
                  f"noop {n['score_qps']:7.0f} events/s p99 {n['score_p99_ms']:.2f} ms")
    return {"note": "Python grpc.aio client on the same 2 cores: Score then Complete per event, "
                    "distinct sessions and event ids; p50/p99 are of the median-qps repeat",
            "rows": rows}


def _delta(before: MetricSamples, after: MetricSamples, name: str, **labels) -> float:
    """Growth of the samples of `name` whose labels include `labels` (a gauge's change, for
    a gauge)."""
    return after.value(name, **labels) - before.value(name, **labels)


def _server_counted(m0: dict, m1: dict) -> dict:
    """What the scorer's /metrics say a run did: each new event is one verdict that is not a
    duplicate, each new session one more live session (nothing is evicted or expired at
    these sizes: --max-sessions 1M, every session within one day of event time)."""
    dups = _delta(m0, m1, "distillguard_duplicate_events_total")
    return {"score_ok": _delta(m0, m1, "distillguard_requests_total", method="Score", code="OK"),
            "complete_ok": _delta(m0, m1, "distillguard_requests_total", method="Complete", code="OK"),
            "scored_new_events": _delta(m0, m1, "distillguard_verdicts_total") - dups, "duplicates": dups,
            "new_live_sessions": _delta(m0, m1, "distillguard_live_sessions")}


def _new_events_part(con, servers, workdir: Path, events: int, events_per_session: int, concurrency: int,
                     repeats: int, seed: int, h2load_part: dict | None) -> dict:
    stream = event_stream(events, events_per_session, seed)
    path = workdir / "grpc-events.json"
    sha = write_event_stream(path, stream)
    n_ev, n_sess = stream["events"], len(stream["sessions"])
    pid, order = os.getpid(), list(servers)
    for k, srv in servers.items():
        # Warm-up under its own ids: ORT buffers, the batcher's threads, HTTP/2 windows.
        run_event_stream(srv.port, path, f"warm-{k}-{pid}", concurrency)
    runs: dict[str, list] = {k: [] for k in servers}
    for rep in range(repeats):
        # Alternate who goes first so drift and neighbours' load hit both alike.
        for k in (order if rep % 2 == 0 else order[::-1]):
            srv = servers[k]
            load = os.getloadavg()[0]
            m0, c0 = srv.metrics(), srv.cpu()
            r = run_event_stream(srv.port, path, f"ev-{k}-r{rep}-{pid}", concurrency)
            cpu, m1 = srv.cpu() - c0, srv.metrics()
            if r["stream_sha256"] != sha:
                raise RuntimeError(f"load generator read another stream than {path} holds")
            r.update(server_cpu_s=cpu, loadavg_1m=load, metrics_errors=grpc_errors_from_metrics(m0, m1),
                     server_cpu_us_per_event=cpu / r["scores"] * 1e6 if r["scores"] else None,
                     client_cpu_us_per_event=r["client_cpu_s"] / r["scores"] * 1e6 if r["scores"] else None)
            if srv.metrics_port:
                r["server_counted"] = _server_counted(m0, m1)
            runs[k].append(r)

    def med(rs, f):
        xs = [f(r) for r in rs if f(r) is not None]
        return statistics.median(xs) if xs else None

    part = {"note": f"new events: {n_ev} events in {n_sess} sessions (seed {seed}), the same stream file to "
                    f"both servers, ids prefixed per run; {concurrency} sessions in flight, each Score then "
                    f"Complete per event, from a Python grpc.aio process (pre-serialized requests); medians "
                    f"of {repeats} alternating runs; server CPU per event = /proc utime+stime over the run "
                    f"/ events (Score + Complete = one event)",
            "stream": {"path": str(path), "sha256": sha, "events": n_ev, "sessions": n_sess,
                       "events_per_session": events_per_session, "seed": seed},
            "concurrency": concurrency, "repeats": repeats, "generator": "python grpc.aio subprocess"}
    for k, rs in runs.items():
        cpu_ev = med(rs, lambda r: r["server_cpu_us_per_event"])
        part[k] = {
            "events_per_s": med(rs, lambda r: r["events_per_s"]),
            "score_p50_ms": med(rs, lambda r: r["score"]["p50_ms"]),
            "score_p99_ms": med(rs, lambda r: r["score"]["p99_ms"]),
            "complete_p50_ms": med(rs, lambda r: r["complete"]["p50_ms"]),
            "complete_p99_ms": med(rs, lambda r: r["complete"]["p99_ms"]),
            "server_cpu_us_per_event": cpu_ev,
            "events_per_busy_core": 1e6 / cpu_ev if cpu_ev else None,
            "client_cpu_us_per_event": med(rs, lambda r: r["client_cpu_us_per_event"]),
            "errors": sum(r["errors"] + int(sum(r["metrics_errors"].values())) for r in rs),
            "duplicates": sum(r["duplicates"] for r in rs),
            "complete_not_applied": sum(r["complete_not_applied"] for r in rs),
            "runs": [{x: r[x] for x in ("run", "events_per_s", "wall_s", "scores", "completes", "server_cpu_s",
                                         "server_cpu_us_per_event", "client_cpu_s", "distinct_sessions",
                                         "score", "complete", "codes", "loadavg_1m", "metrics_errors")}
                     | ({"server_counted": r["server_counted"]} if "server_counted" in r else {})
                     for r in rs]}
    s, n = part["scorer"], part["noop"]
    part["ratio"] = {"events_per_s": _ratio(s["events_per_s"], n["events_per_s"]),
                     "score_p50": _ratio(s["score_p50_ms"], n["score_p50_ms"]),
                     "score_p99": _ratio(s["score_p99_ms"], n["score_p99_ms"]),
                     "cpu_per_event": _ratio(s["server_cpu_us_per_event"], n["server_cpu_us_per_event"])}
    counted = [r.get("server_counted", {}) for r in runs["scorer"]]
    part["checks"] = {
        "scorer_scored_every_event": all(c.get("scored_new_events") == n_ev for c in counted),
        "scorer_new_sessions_match": all(c.get("new_live_sessions") == n_sess for c in counted),
        "distinct_sessions_in_answers_match": all(r["distinct_sessions"] == n_sess for r in runs["scorer"]),
        "no_errors": s["errors"] == n["errors"] == 0 and s["duplicates"] == 0 and s["complete_not_applied"] == 0}
    if not all(part["checks"].values()):
        con.print(f"[bold red]new-event run: a check failed[/] {part['checks']} (scorer /metrics per run: {counted})")
    beside = _h2load_row_near(h2load_part, concurrency)
    if beside:
        part["h2load_identical_body"] = beside
    con.print(f"  new events c={concurrency:<4} scorer {s['events_per_s']:7.0f} events/s, "
              f"{s['server_cpu_us_per_event']:5.0f} µs CPU/event, Score p99 {s['score_p99_ms']:.2f} ms | "
              f"noop {n['events_per_s']:7.0f} events/s, {n['server_cpu_us_per_event']:5.0f} µs CPU/event | "
              f"CPU ratio {part['ratio']['cpu_per_event']:.2f}x")
    return part


def _h2load_row_near(h2load_part: dict | None, concurrency: int) -> dict | None:
    """The h2load identical-body row at the concurrency nearest `concurrency`, for the table."""
    rows = (h2load_part or {}).get("rows") or []
    if not rows:
        return None
    r = min(rows, key=lambda r: abs(r["concurrency"] - concurrency))
    keep = ("qps", "server_cpu_us_per_req", "qps_per_busy_core", "p50_ms", "p99_ms", "error_total")
    return {"concurrency": r["concurrency"], **{k: {x: r[k][x] for x in keep} for k in ("scorer", "noop")},
            "ratio": r["ratio"]}

def print_new_events(ne: dict, con) -> None:
    """New events (Score + Complete per event) beside h2load's identical body (one Score per
    request, the scorer's retry path), scorer and no-op, and their ratio."""
    from rich.table import Table

    st, h = ne["stream"], ne.get("h2load_identical_body")
    t = Table(title=f"NEW EVENTS ({st['events']:,} events in {st['sessions']:,} sessions, the same stream to both, "
                    f"{ne['concurrency']} sessions in flight, Score then Complete = 1 event, Python grpc.aio client, "
                    f"medians of {ne['repeats']} alternating runs) beside h2load's IDENTICAL BODY (1 Score per "
                    f"request = scorer's retry path" + (f", C={h['concurrency']})" if h else ", not run)"))
    t.add_column("run")
    t.add_column("server")
    for col in ("events|req /s", "server CPU µs /event|req", "per busy core", "Score p50 ms", "Score p99 ms",
                "client CPU µs/event", "errors"):
        t.add_column(col, justify="right")
    for k in ("scorer", "noop"):
        s = ne[k]
        t.add_row("new events", k, _f(s["events_per_s"]), _f(s["server_cpu_us_per_event"]),
                  _f(s["events_per_busy_core"]), _f(s["score_p50_ms"], "{:.3f}"), _f(s["score_p99_ms"], "{:.3f}"),
                  _f(s["client_cpu_us_per_event"]), str(s["errors"]), style=None if k == "scorer" else "dim")
    q = ne["ratio"]
    t.add_row("", "scorer/noop", _f(q["events_per_s"], "{:.2f}x"), _f(q["cpu_per_event"], "{:.2f}x"), "",
              _f(q["score_p50"], "{:.2f}x"), _f(q["score_p99"], "{:.2f}x"), "", "", style="bold", end_section=True)
    if h:
        for k in ("scorer", "noop"):
            s = h[k]
            t.add_row("h2load 1 body", k, _f(s["qps"]), _f(s["server_cpu_us_per_req"]), _f(s["qps_per_busy_core"]),
                      _f(s["p50_ms"], "{:.3f}"), _f(s["p99_ms"], "{:.3f}"), "", str(s["error_total"]),
                      style=None if k == "scorer" else "dim")
        q = h["ratio"]
        t.add_row("", "scorer/noop", _f(q["qps"], "{:.2f}x"), _f(q["cpu_per_req"], "{:.2f}x"), "",
                  _f(q["p50"], "{:.2f}x"), _f(q["p99"], "{:.2f}x"), "", "", style="bold")
    con.print(t)
    bad = [k for k, v in ne.get("checks", {}).items() if not v]
    if bad:
        con.print(f"[bold red]new-event checks failed: {', '.join(bad)}[/]")


def _merge(dicts: list[dict]) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _f(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)


def print_tables(res: dict, con=None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = con or Console()
    loads = [x for r in (res.get("h2load") or {}).get("rows", []) for k in ("scorer", "noop")
             for x in r[k]["loadavg_1m"]]
    if loads:
        con.print(f"1-min load average at the start of the h2load runs: {min(loads):.1f} .. {max(loads):.1f} "
                  f"on {res['machine']['cpus']} cores (the benchmark itself adds ~1.5; more means other work competed)")
    mc = res.get("model_compute")
    if mc:
        t = Table(title="model compute per request (in-process, 1 ORT thread, window "
                        f"{mc['window']})")
        for col in ("ORT batch 1", "ORT batch 32 / 32", "features.compute 32 rows"):
            t.add_column(col, justify="right")
        t.add_row(f"{mc['ort_b1_us']:.0f} µs", f"{mc['ort_b32_per_request_us']:.1f} µs",
                  f"{mc['features_32_rows_us']:.0f} µs")
        con.print(t)
    h = res.get("h2load") or {}
    if h.get("rows"):
        t = Table(title="h2load (native client), one connection, C streams, identical body: "
                        "scorer = retry path; errors = grpc-status + h2 failures + /metrics")
        for col in ("C", "server", "qps", "CPU µs/req", "qps/busy core", "p50 ms", "p99 ms", "errors"):
            t.add_column(col, justify="right")
        for r in h["rows"]:
            for k in ("scorer", "noop"):
                s = r[k]
                t.add_row(str(r["concurrency"]), k, _f(s["qps"]), _f(s["server_cpu_us_per_req"]),
                          _f(s["qps_per_busy_core"]), _f(s["p50_ms"], "{:.3f}"), _f(s["p99_ms"], "{:.3f}"),
                          str(s["error_total"]), style=None if k == "scorer" else "dim")
            q = r["ratio"]
            t.add_row("", "scorer/noop", _f(q["qps"], "{:.2f}x"), _f(q["cpu_per_req"], "{:.2f}x"), "",
                      _f(q["p50"], "{:.2f}x"), _f(q["p99"], "{:.2f}x"), "", style="bold", end_section=True)
        con.print(t)
        hp = h.get("half_peak")
        if hp:
            t = Table(title=f"p99 at half the scorer's peak: {hp['rate']:,.0f} req/s "
                            f"(peak {hp['scorer_peak_qps']:,.0f}), h2load --rps")
            for col in ("server", "achieved qps", "p50 ms", "p99 ms", "errors"):
                t.add_column(col, justify="right")
            for k in ("scorer", "noop"):
                s = hp[k]
                t.add_row(k, _f(s["qps"]), _f(s["p50_ms"], "{:.3f}"), _f(s["p99_ms"], "{:.3f}"),
                          str(s["error_total"]))
            t.add_row("scorer/noop", "", _f(hp["ratio"]["p50"], "{:.2f}x"), _f(hp["ratio"]["p99"], "{:.2f}x"),
                      "", style="bold")
            con.print(t)
    elif h.get("skipped"):
        con.print(f"[red]h2load part skipped: {h['skipped']}[/]")
    ne = res.get("new_events")
    if ne:
        print_new_events(ne, con)
    p = res.get("python_driven")
    if p and p.get("rows"):
        t = Table(title="PYTHON-DRIVEN (grpc.aio client shares the 2 cores): new events, "
                        "Score then Complete, distinct sessions")
        for col in ("C", "server", "events/s", "server CPU µs/event", "events/busy core",
                    "Score p50 ms", "Score p99 ms", "Complete p99 ms", "errors"):
            t.add_column(col, justify="right")
        for r in p["rows"]:
            for k in ("scorer", "noop"):
                s = r[k]
                t.add_row(str(r["concurrency"]), k, _f(s["score_qps"]), _f(s["server_cpu_us_per_event"]),
                          _f(s["events_per_busy_core"]), _f(s["score_p50_ms"], "{:.3f}"),
                          _f(s["score_p99_ms"], "{:.3f}"), _f(s["complete_p99_ms"], "{:.3f}"),
                          str(s["errors"]), style=None if k == "scorer" else "dim")
            q = r["ratio"]
            t.add_row("", "scorer/noop", _f(q["score_qps"], "{:.2f}x"), _f(q["cpu_per_event"], "{:.2f}x"), "",
                      _f(q["score_p50"], "{:.2f}x"), _f(q["score_p99"], "{:.2f}x"), "", "",
                      style="bold", end_section=True)
        con.print(t)


# ---------------------------------------------------------------------------- scaling: processes x stores
#
# `serve --workers N` x `--state memory|redis://`, same bundle, same load, one after the
# other (docs/scaling.md). CPU is summed over the supervisor and every worker (and kept
# apart for redis-server), so "qps per busy core" compares configurations whatever the
# load generator costs. The Redis share of latency comes from the workers' own counters:
# seconds waited on Redis round trips / seconds spent in RPC handlers.

def _store_share(m0: dict, m1: dict) -> dict:
    """Redis round trips as the workers saw them, over a measured interval."""
    handler_s = metric_delta(m0, m1, "distillguard_request_seconds_sum")
    rpcs = metric_delta(m0, m1, "distillguard_request_seconds_count")
    store_s = metric_delta(m0, m1, "distillguard_store_seconds")
    calls = {k: m1.get(f'distillguard_store_calls{{kind="{k}"}}', 0.0) - m0.get(f'distillguard_store_calls{{kind="{k}"}}', 0.0)
             for k in ("fetch", "commit")}
    return {"store_s": store_s, "handler_s": handler_s, "rpcs": rpcs,
            "share_of_handler_time": store_s / handler_s if handler_s else None,
            "store_us_per_rpc": store_s / rpcs * 1e6 if rpcs else None,
            "round_trips_per_rpc": (calls["fetch"] + calls["commit"]) / rpcs if rpcs else None,
            "fetches": calls["fetch"], "commits": calls["commit"],
            "conflicts": metric_delta(m0, m1, "distillguard_store_conflicts")}


def run_scaling_bench(model, configs=(("memory", 1), ("memory", 2), ("redis", 1), ("redis", 2)),
                      requests: int = 20000, connections: int = 8, concurrency: int = 32, repeats: int = 2,
                      py_events: int = 3000, py_concurrency: int = 32, workdir: Path = Path("bench"),
                      out: Path | None = None, quiet: bool = False) -> dict:
    """1 vs 2 worker processes on the in-process store and on Redis -> WORKDIR/scaling_bench.json.

    Every configuration runs at once (idle servers cost nothing) and the measurements
    rotate over them, repeat after repeat, so drifting background load hits all alike."""
    from rich.console import Console

    from ..serving.redis_server import RedisServer

    con = Console(quiet=quiet)
    if not con.is_terminal:
        con = Console(quiet=quiet, width=160)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(out) if out else workdir / "scaling_bench.json"
    res: dict = {"machine": {"cpus": os.cpu_count(), "h2load": h2load_version(), "python": sys.version.split()[0]},
                 "config": {"model": str(model), "requests": requests, "connections": connections,
                            "concurrency": concurrency, "repeats": repeats, "py_events": py_events,
                            "py_concurrency": py_concurrency},
                 "rows": []}
    redis_srv = RedisServer().start()
    res["redis"] = {"version": subprocess.run(["redis-server", "--version"], capture_output=True,
                                              text=True).stdout.strip()}
    groups: dict[str, ServerProc] = {}
    rows: dict[str, dict] = {}
    try:
        for k, (store, n) in enumerate(configs):
            name = f"{store}x{n}"
            state = f"redis://127.0.0.1:{redis_srv.port}/{k}" if store == "redis" else "memory"
            groups[name] = _start_group(model, name, n, state, workdir)
            rows[name] = {"name": name, "store": store, "workers": n, "state": state,
                          "argv": groups[name].argv[1:], "load_1m": []}
        names = list(groups)
        if h2load_version():
            bodies = {}
            for name, srv in groups.items():
                bodies[name] = write_request_file(workdir / f"scaling-{name}.bin",
                                                  bench_request(f"scaling-{name}-{os.getpid()}"))
                rows[name]["probe"] = _probe(srv.port, bodies[name])
                run_h2load(srv.port, bodies[name], min(2000, requests), concurrency, connections,
                           workdir=workdir)   # warm up: every worker and connection
            accs = {name: (_Acc(), [0.0], []) for name in names}
            for rep in range(repeats):
                for name in (names if rep % 2 == 0 else names[::-1]):
                    rows[name]["load_1m"].append(os.getloadavg()[0])
                    r, cpu, rcpu, m0, m1 = _measure_group(groups[name], redis_srv, bodies[name], requests,
                                                          concurrency, connections, workdir)
                    acc, rc, shares = accs[name]
                    acc.add(r, cpu, grpc_errors_from_metrics(m0, m1))
                    rc[0] += rcpu
                    shares.append(_store_share(m0, m1))
            for name in names:
                acc, rc, shares = accs[name]
                h = acc.summary()
                h["redis_cpu_s"] = rc[0]
                h["qps_per_busy_core_incl_redis"] = h["requests"] / (h["server_cpu_s"] + rc[0]) \
                    if h["server_cpu_s"] + rc[0] > 0 else None
                h["store"] = _merge_shares(shares)
                rows[name]["h2load"] = h
            for name in names:
                rate = 0.5 * rows[name]["h2load"]["qps"]
                rows[name]["load_1m"].append(os.getloadavg()[0])
                r, cpu, rcpu, m0, m1 = _measure_group(groups[name], redis_srv, bodies[name],
                                                      int(min(max(2000, rate * 8), requests)), concurrency,
                                                      connections, workdir, rps=rate)
                a = _Acc()
                a.add(r, cpu, grpc_errors_from_metrics(m0, m1))
                rows[name]["half_peak"] = {"rate": rate, **a.summary(), "store": _store_share(m0, m1)}
                h = rows[name]["h2load"]
                con.print(f"  {name:<9} h2load {h['qps']:7.0f} qps, {h['server_cpu_us_per_req']:5.0f} µs CPU/req, "
                          f"p99 {h['p99_ms']:.2f} ms; at {rate:.0f} req/s p99 {rows[name]['half_peak']['p99_ms']:.2f} ms; "
                          f"errors {h['error_total']}")
        for name in names:
            srv, row = groups[name], rows[name]
            # "sequential": one call in flight, so handler time is service time, not queueing:
            # the Redis share of it is the share of latency the round trips cost.
            routes = ["sequential", "hash"] + (["alternate"] if row["store"] == "redis" and row["workers"] > 1 else [])
            row["python_driven"] = {}
            for route in routes:
                row["load_1m"].append(os.getloadavg()[0])
                m0, c0, r0 = srv.metrics(), srv.cpu(), proc_cpu_seconds(redis_srv.pid)
                seq = route == "sequential"
                py = run_pyload(srv.port, 1 if seq else py_concurrency, min(600, py_events) if seq else py_events,
                                seed=1, tag=f"{name}-{route}-{os.getpid()}", ports=srv.own_ports,
                                route="hash" if seq else route)
                cpu, rcpu, m1 = srv.cpu() - c0, proc_cpu_seconds(redis_srv.pid) - r0, srv.metrics()
                row["python_driven"][route] = {
                    "score_qps": py["score_qps"], "score_p50_ms": py["score"]["p50_ms"],
                    "score_p99_ms": py["score"]["p99_ms"], "complete_p99_ms": py["complete"]["p99_ms"],
                    "server_cpu_us_per_event": cpu / py["scores"] * 1e6 if py["scores"] else None,
                    "events_per_busy_core": py["scores"] / cpu if cpu else None,
                    "events_per_busy_core_incl_redis": py["scores"] / (cpu + rcpu) if cpu + rcpu else None,
                    "redis_cpu_us_per_event": rcpu / py["scores"] * 1e6 if py["scores"] else None,
                    "rpcs": py["scores"] + py["completes"],
                    "errors": py["errors"] + int(sum(grpc_errors_from_metrics(m0, m1).values())),
                    "duplicates": py["duplicates"], "complete_not_applied": py["complete_not_applied"],
                    "store": _store_share(m0, m1)}
                p = row["python_driven"][route]
                con.print(f"  {name:<9} python ({route}) {p['score_qps']:6.0f} events/s, "
                          f"{p['server_cpu_us_per_event']:5.0f} µs server CPU/event, "
                          f"Score p99 {p['score_p99_ms']:.2f} ms, errors {p['errors']}")
    finally:
        for srv in groups.values():
            srv.stop()
        redis_srv.stop()
    res["rows"] = [rows[n] for n in rows]
    res["targets"] = _scaling_targets(res["rows"])
    publish_text(out, json.dumps(res, indent=2, default=_json_default))
    print_scaling(res, con)
    con.print(f"written {out}")
    return res


def _start_group(model, name: str, n: int, state: str, workdir: Path) -> ServerProc:
    argv = serve_argv("--model", model, "--insecure", "--port", 0, "--metrics-port", 0, "--workers", n,
                      "--state", state)
    return ServerProc(argv, name=name, log_path=workdir / f"scaling-{name}.log").start()


def _measure_group(srv: ServerProc, redis_srv, body: Path, n_req: int, concurrency: int, connections: int,
                   workdir: Path, rps: float | None = None):
    m0, c0, r0 = srv.metrics(), srv.cpu(), proc_cpu_seconds(redis_srv.pid)
    r = run_h2load(srv.port, body, n_req, concurrency, connections, rps=rps, workdir=workdir)
    cpu, rcpu, m1 = srv.cpu() - c0, proc_cpu_seconds(redis_srv.pid) - r0, srv.metrics()
    return r, cpu, rcpu, m0, m1


def _merge_shares(shares: list[dict]) -> dict:
    keys = ("store_s", "handler_s", "rpcs", "fetches", "commits", "conflicts")
    tot = {k: sum(s[k] for s in shares) for k in keys}
    rpcs = tot["rpcs"]
    return {**tot, "share_of_handler_time": tot["store_s"] / tot["handler_s"] if tot["handler_s"] else None,
            "store_us_per_rpc": tot["store_s"] / rpcs * 1e6 if rpcs else None,
            "round_trips_per_rpc": (tot["fetches"] + tot["commits"]) / rpcs if rpcs else None}


def _scaling_targets(rows: list[dict]) -> dict:
    by = {r["name"]: r for r in rows}
    t: dict = {}
    base, red2 = by.get("memoryx1"), by.get("redisx2")
    if base and red2 and "h2load" in base and "h2load" in red2:
        t["h2load_qps_per_core_redisx2_over_memoryx1"] = _ratio(red2["h2load"]["qps_per_busy_core"],
                                                                 base["h2load"]["qps_per_busy_core"])
        t["h2load_qps_per_core_incl_redis_redisx2_over_memoryx1"] = _ratio(
            red2["h2load"]["qps_per_busy_core_incl_redis"], base["h2load"]["qps_per_busy_core"])
        t["redisx2_p99_ms_at_half_peak"] = red2["half_peak"]["p99_ms"]
    if base and red2:
        for route in ("hash", "alternate"):
            if route in red2.get("python_driven", {}):
                t[f"python_{route}_events_per_core_redisx2_over_memoryx1"] = _ratio(
                    red2["python_driven"][route]["events_per_busy_core"],
                    base["python_driven"]["hash"]["events_per_busy_core"])
    for name in ("redisx1", "redisx2"):
        seq = (by.get(name) or {}).get("python_driven", {}).get("sequential")
        if seq:
            t[f"{name}_sequential_redis_share_of_latency"] = seq["store"]["share_of_handler_time"]
            t[f"{name}_sequential_redis_us_per_rpc"] = seq["store"]["store_us_per_rpc"]
    if base and "sequential" in base.get("python_driven", {}) and red2 and "sequential" in red2.get("python_driven", {}):
        t["sequential_score_p50_ms_memoryx1_vs_redisx2"] = [base["python_driven"]["sequential"]["score_p50_ms"],
                                                             red2["python_driven"]["sequential"]["score_p50_ms"]]
    t["target"] = "qps per busy core redis x2 >= 0.85 x memory x1; p99 <= 3 ms at half of peak"
    return t


def print_scaling(res: dict, con=None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = con or Console()
    t = Table(title="scorer processes x session store (h2load: 8 connections, 32 streams, identical body = "
                    "retry path; python: new events, Score + Complete)")
    for col in ("config", "h2load qps", "CPU µs/req", "qps/busy core", "+redis CPU", "p99 ms",
                "p99 ms @½ peak", "Redis share", "Redis µs/req", "RTT/req", "py events/s", "CPU µs/event",
                "events/busy core",
                "py Redis share", "errors"):
        t.add_column(col, justify="right")
    for r in res["rows"]:
        for route, p in (r.get("python_driven") or {"-": {}}).items():
            h, hp = r.get("h2load") or {}, r.get("half_peak") or {}
            st = (h.get("store") or {})
            if route == "sequential":     # its own row: one call in flight; Redis share from it
                h, hp, st = {}, {}, p.get("store") or {}
            t.add_row(f"{r['name']}" + (f" ({route})" if route != "hash" else ""),
                      _f(h.get("qps")), _f(h.get("server_cpu_us_per_req")), _f(h.get("qps_per_busy_core")),
                      _f(h.get("qps_per_busy_core_incl_redis")), _f(h.get("p99_ms"), "{:.2f}"),
                      _f(hp.get("p99_ms"), "{:.2f}"),
                      _f(st.get("share_of_handler_time"), "{:.0%}") if r["store"] == "redis" else "-",
                      _f(st.get("store_us_per_rpc")) if r["store"] == "redis" else "-",
                      _f(st.get("round_trips_per_rpc"), "{:.2f}") if r["store"] == "redis" else "-",
                      _f(p.get("score_qps")), _f(p.get("server_cpu_us_per_event")),
                      _f(p.get("events_per_busy_core")),
                      _f((p.get("store") or {}).get("share_of_handler_time"), "{:.0%}") if r["store"] == "redis" else "-",
                      str(h.get("error_total", 0) + p.get("errors", 0)))
    con.print(t)
    tg = res.get("targets") or {}
    for k, v in tg.items():
        con.print(f"  {k}: {v if isinstance(v, (str, list)) else _f(v, '{:.2f}')}")
