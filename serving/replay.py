"""Replay an events file against a running scorer, the way a gateway would call it.

Every event becomes `Score` (request side) then `Complete` (completion_tokens, status), in
timestamp order: as fast as possible (`speed=0`) or at `speed` times the recorded pace.
N worker threads share one client; an account's events always go to the same worker
(hash of account_id), so each session's Score/Complete order is the file's order while
different accounts proceed in parallel. The server sessionizes, exactly as in production.

A live view shows progress and the most suspicious flagged sessions; the summary gives
requests/s, verdicts by label and action, and fail-opens.

    distillguard replay --target 127.0.0.1:50051 --events data/sim/events.parquet --concurrency 8
"""
from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from ..model.readers import load_events
from .client import ClientConfig, ScorerClient, Verdict
from .event_log import join_completions

__all__ = ["replay", "print_summary", "ReplayError"]

log = logging.getLogger(__name__)

_CHUNK = 8192          # rows turned into Python dicts at a time (bounded memory on big files)
_QUEUE = 2048          # events buffered per worker: back-pressure when the scorer is slower
_TOP = 10
_STOP = None


class ReplayError(RuntimeError):
    pass


@dataclass
class _Stats:
    """Shared by the workers (under `lock`) and read by the live view."""
    total: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: int = 0
    labels: Counter = field(default_factory=Counter)
    actions: Counter = field(default_factory=Counter)
    fail_open: Counter = field(default_factory=Counter)
    duplicates: int = 0
    completes_applied: int = 0
    completes_not_applied: int = 0
    worker_errors: int = 0
    sessions: set = field(default_factory=set)
    # Sessions whose latest verdict is not ALLOW: key -> row for the table. Only flagged ones
    # are kept, so a replay of millions of benign sessions stays small.
    flagged: dict = field(default_factory=dict)

    def add(self, ev: dict, v: Verdict, applied: bool) -> None:
        with self.lock:
            self.done += 1
            if applied:
                self.completes_applied += 1
            else:
                self.completes_not_applied += 1
            if v.fail_open:
                self.fail_open[v.fail_open_reason] += 1
                return
            self.labels[v.label] += 1
            self.actions[v.action] += 1
            self.duplicates += v.duplicate
            key = (ev["account_id"], v.session_id)
            self.sessions.add(key)
            if v.action != "ALLOW":
                self.flagged[key] = (ev["account_id"], v.session_id, v.events_in_session,
                                     v.p_distillation_harvesting, v.action, v.reasons)
            else:
                self.flagged.pop(key, None)

    def top(self, n: int = _TOP) -> list[tuple]:
        with self.lock:
            rows = list(self.flagged.values())
        return heapq.nlargest(n, rows, key=lambda r: r[3])


def _worker(client: ScorerClient, q: "queue.Queue", stats: _Stats, stop: threading.Event) -> None:
    while True:
        ev = q.get()
        if ev is _STOP:
            return
        if stop.is_set():
            continue          # interrupted: drain without sending
        try:
            v = client.score(ev["account_id"], ev["event_id"], ev["ts"], ev["prompt_tokens"],
                             session_id=ev["session_id"] or "", template_hash=ev["template_hash"],
                             frame_signature=ev["frame_signature"], system_signature=ev["system_signature"],
                             elicits_reasoning=ev["elicits_reasoning"], max_tokens=ev["max_tokens"] or 0,
                             model=ev["model"] or "", client_fingerprint=ev["client_fingerprint"] or "",
                             ip_prefix=ev["ip_prefix"] or "", account_created_at=ev["account_created_at"] or 0.0)
            applied = client.complete(ev["account_id"], ev["event_id"], ev["completion_tokens"],
                                      status=ev["status"] or 0, session_id=ev["session_id"] or "")
            stats.add(ev, v, applied)
        except Exception:                 # noqa: BLE001 - one bad row must not stall the dispatcher
            log.exception("replay worker failed on event %s", ev.get("event_id"))
            with stats.lock:
                stats.worker_errors += 1
                stats.done += 1


class _View:
    """Renderable re-drawn by rich.live on its own refresh thread."""

    def __init__(self, stats: _Stats):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.stats = stats
        self.progress = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>8.0f} ev/s"), TimeElapsedColumn(),
                                 TimeRemainingColumn())
        self.task = self.progress.add_task("replay", total=stats.total, rate=0.0)
        self.t0 = time.perf_counter()

    def __rich__(self):
        from rich.console import Group

        done = self.stats.done
        self.progress.update(self.task, completed=done, rate=done / max(time.perf_counter() - self.t0, 1e-9))
        return Group(self.progress, _top_table(self.stats.top(), self.stats))


def _top_table(rows: list[tuple], stats: _Stats | None = None):
    from rich.table import Table

    title = "top flagged sessions"
    if stats is not None:
        title += f" ({len(stats.flagged)} flagged, {sum(stats.fail_open.values())} fail-open)"
    t = Table(title=title, title_justify="left")
    for col in ("account", "session", "events", "p_distill", "action"):
        t.add_column(col, justify="right" if col in ("events", "p_distill") else "left", no_wrap=True)
    t.add_column("top reasons", overflow="fold")
    for account, session, n, p, action, reasons in rows:
        # Implicit sessions are "account:k": the account is already in the first column.
        short = session[len(account):] if session.startswith(account + ":") else session
        t.add_row(account, short, str(n), f"{p:.3f}", action, " ".join(c for c, _ in reasons[:3]))
    return t


def _ordered_rows(table, limit: int | None):
    """Yield the events as dicts in timestamp order (file order among equal timestamps)."""
    ts = table.column("ts").to_numpy()
    order = np.argsort(ts, kind="stable")
    if limit is not None:
        order = order[:max(limit, 0)]
    cols = ("account_id", "session_id", "event_id", "ts", "prompt_tokens", "completion_tokens", "template_hash",
            "frame_signature", "system_signature",
            "elicits_reasoning", "max_tokens", "model", "status", "client_fingerprint", "ip_prefix",
            "account_created_at")
    sub = table.select(list(cols))
    for a in range(0, len(order), _CHUNK):
        idx = order[a:a + _CHUNK]
        for pos, ev in zip(idx.tolist(), sub.take(idx).to_pylist()):
            if not ev["event_id"]:
                # Deterministic, so replaying the same file twice hits the server's idempotency.
                ev["event_id"] = f"{pos}"
            yield ev


def client_config(target: str, deadline_s: float, hmac_key: bytes | None, tls: bool, tls_ca, tls_cert, tls_key,
                  token_file) -> ClientConfig:
    """The command-line client options (`replay`, `feedback`) -> ClientConfig: TLS when any
    TLS option is given, the token file's first token as bearer."""
    from .security import channel_credentials, read_token

    creds = None
    if tls or tls_ca or tls_cert or tls_key:
        creds = channel_credentials(tls_ca, tls_cert, tls_key)
    token = read_token(token_file) if token_file else None
    return ClientConfig(target, deadline_s=deadline_s, hmac_key=hmac_key, channel_credentials=creds, token=token)


def _check_access(client: ScorerClient, target: str, timeout_s: float) -> None:
    """One read-only call first, so that refused credentials stop the replay with the reason
    instead of turning every event into a fail-open (the client itself never raises)."""
    import grpc

    from .stubs import pb, pb_grpc

    try:
        pb_grpc.ScorerStub(client._channel).GetSession(pb.SessionRef(account_id="replay-access-check"),
                                                      timeout=timeout_s, metadata=client.config.call_metadata())
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise ReplayError(f"scorer at {target} refused the call: {e.code().name}: {e.details()} "
                              "(--token-file, --tls-cert/--tls-key)") from None


def replay(target: str, events: str | Path, *, speed: float = 0.0, concurrency: int = 4, limit: int | None = None,
           deadline_s: float = 1.0, hmac_key: bytes | None = None, show: bool = True, console=None,
           connect_timeout_s: float = 5.0, tls: bool = False, tls_ca: str | Path | None = None,
           tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
           token_file: str | Path | None = None) -> dict:
    """Replay `events` against the scorer at `target`; returns the summary dict.

    deadline_s is per call and generous by default: a replay measures verdicts, and the
    gateway's 50 ms budget would turn a busy 2-core box's queueing into fail-opens.
    TLS when `tls` or any tls_* file is given (tls_ca verifies the server, None: system
    CAs; tls_cert + tls_key for mutual TLS); `token_file`'s first token is sent as bearer."""
    if speed < 0 or concurrency < 1:
        raise ValueError(f"need speed >= 0 and concurrency >= 1, got speed={speed}, concurrency={concurrency}")
    config = client_config(target, deadline_s, hmac_key, tls, tls_ca, tls_cert, tls_key, token_file)
    table = load_events(events, hmac_key=hmac_key, join=join_completions)
    n = table.num_rows if limit is None else min(table.num_rows, max(limit, 0))
    stats = _Stats(total=n)
    # A private registry: a replay's counters must not mix with a gateway's in the same process.
    client = ScorerClient(config, registry=CollectorRegistry())
    try:
        if not client.wait_ready(connect_timeout_s):
            raise ReplayError(f"no scorer answering at {target} after {connect_timeout_s:.0f}s")
        _check_access(client, target, connect_timeout_s)
        queues = [queue.Queue(maxsize=_QUEUE) for _ in range(concurrency)]
        stop = threading.Event()
        workers = [threading.Thread(target=_worker, args=(client, q, stats, stop), name=f"replay-{i}", daemon=True)
                   for i, q in enumerate(queues)]
        for w in workers:
            w.start()
        live = None
        if show:
            from rich.console import Console
            from rich.live import Live
            console = console or Console()
            live = Live(_View(stats), console=console, refresh_per_second=4, transient=False)
            live.start()
        t0 = time.perf_counter()
        interrupted = False
        try:
            ts0 = None
            for ev in _ordered_rows(table, limit):
                if speed > 0:
                    ts0 = ev["ts"] if ts0 is None else ts0
                    wait = t0 + (ev["ts"] - ts0) / speed - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                # crc32, not hash(): the same account lands on the same worker in every run.
                queues[zlib.crc32(ev["account_id"].encode()) % concurrency].put(ev)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
        finally:
            for q in queues:
                q.put(_STOP)
            for w in workers:
                w.join()
            seconds = time.perf_counter() - t0
            if live is not None:
                live.stop()
                if not console.is_terminal:
                    console.line()      # a non-terminal Live leaves its last frame unterminated
    finally:
        client.close()
    return _summary(target, stats, seconds, interrupted)


def _summary(target: str, stats: _Stats, seconds: float, interrupted: bool) -> dict:
    s = max(seconds, 1e-9)
    return {
        "target": target,
        "events": stats.done,
        "requests": 2 * stats.done,          # one Score and one Complete per event
        "seconds": round(seconds, 3),
        "events_per_s": stats.done / s,
        "requests_per_s": 2 * stats.done / s,
        "labels": dict(stats.labels),
        "actions": dict(stats.actions),
        "fail_open": sum(stats.fail_open.values()),
        "fail_open_reasons": dict(stats.fail_open),
        "duplicates": stats.duplicates,
        "completes_applied": stats.completes_applied,
        "completes_not_applied": stats.completes_not_applied,
        "worker_errors": stats.worker_errors,
        "sessions": len(stats.sessions),
        "flagged_sessions": len(stats.flagged),
        "top": [{"account_id": a, "session_id": sid, "events": k, "p_distillation_harvesting": p, "action": act,
                 "reasons": [f"{c}:{e}" for c, e in rs]} for a, sid, k, p, act, rs in stats.top()],
        "interrupted": interrupted,
    }


def print_summary(summary: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    head = (f"replayed {summary['events']:,} events ({summary['requests']:,} requests) to {summary['target']} "
            f"in {summary['seconds']:.2f}s: {summary['requests_per_s']:,.0f} requests/s, "
            f"{summary['events_per_s']:,.0f} events/s")
    console.print(head + (" [interrupted]" if summary["interrupted"] else ""))
    for name in ("labels", "actions"):
        t = Table(title=f"verdicts by {name[:-1]}", title_justify="left")
        t.add_column(name[:-1])
        t.add_column("verdicts", justify="right")
        for k, v in sorted(summary[name].items(), key=lambda kv: -kv[1]):
            t.add_row(k, f"{v:,}")
        console.print(t)
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(summary["fail_open_reasons"].items())) or "none"
    console.print(f"fail-open: {summary['fail_open']:,} ({reasons}); duplicates: {summary['duplicates']:,}; "
                  f"sessions: {summary['sessions']:,}, flagged at their last event: {summary['flagged_sessions']:,}")
    if summary["top"]:
        console.print(_top_table([(r["account_id"], r["session_id"], r["events"], r["p_distillation_harvesting"],
                                   r["action"], [tuple(x.split(":", 1)) for x in r["reasons"]])
                                  for r in summary["top"]]))
