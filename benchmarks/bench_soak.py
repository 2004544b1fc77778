"""Soak run: a real `distillguard serve` on loopback under hours-compressed gateway traffic.

`distillguard bench soak --seconds 120` starts the scorer as a subprocess and
drives it for that long with a grpc.aio client (one channel, open loop: requests are
sent on a schedule whatever the server answers, as a gateway's traffic does), then
stops it with SIGTERM. What it reports (`soak.json` + a table):

* served (OK), shed (RESOURCE_EXHAUSTED: the server's concurrency cap refusing work it
  cannot take in time) and failed (any other status: DEADLINE_EXCEEDED, UNAVAILABLE,
  INTERNAL, ...) RPCs, per phase and in total; the target is 0 failed accepted calls;
* crashes: the server process must stay up for the whole run and exit 0 on SIGTERM;
* server RSS sampled every second from /proc/PID/status: start, median, max, and the
  slope (MB/min, least squares) and growth over the second half, which should be flat
  once the session store has filled its capacity.

Traffic: events of `training.simulate` (humans, benign automation, harvesters), Score on
arrival then Complete, replayed in event-time order. Every pass over the simulated file
renames its accounts and moves event time forward by the file's span, so each pass opens
new sessions; on top of that a share of requests come from one-request fresh ids (the
25,000-accounts flood pattern). With a small `--max-sessions` the store fills early in
the run and then evicts continuously, so the second half measures steady state.

Rates: a short closed-loop calibration measures the server's capacity C (Score+Complete
pairs per second at 64 in flight); the soak then cycles through phases at 0.5 C, 0.9 C,
2 C and 4 C. Above capacity the server's concurrency cap sheds; a Python client may not
reach 4 C on a 2-core machine, so the offered rate of each phase is reported as measured.
The client keeps at most `max_inflight` calls in flight and counts what it could not
send as `not_sent` (the client's backlog, never seen by the server).
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..model.files import publish_text
from ..serving.harness import serve_argv
from .bench_grpc import ServerProc, percentiles, proc_cpu_seconds, proc_rss_mb

# (multiple of calibrated capacity, share of one cycle)
PHASES = ((0.5, 0.35), (0.9, 0.30), (2.0, 0.20), (4.0, 0.15))
_SHED = "RESOURCE_EXHAUSTED"


@dataclass
class _Traffic:
    """Request fields of one simulated pass, as plain lists; passes derive new ids from it."""
    acct: list
    eid: list
    ts: np.ndarray
    fields: list          # per event: dict of the other ScoreRequest fields
    completion: list      # per event: (completion_tokens, status)
    created: np.ndarray
    span: float

    @classmethod
    def simulate(cls, seed: int, accounts: int, days: float) -> "_Traffic":
        from ..training.simulate import SimConfig, simulate

        # Event time well before now: the server refuses ts later than its clock + 1 h.
        start = datetime.fromtimestamp(time.time() - 40 * 86400.0, tz=timezone.utc).strftime("%Y-%m-%dT00:00:00Z")
        ev, _ = simulate(SimConfig(seed=seed, accounts=accounts, days=days, start=start))
        mt = ev["max_tokens"].fillna(0).astype("int64").to_numpy()
        fields = [{"prompt_tokens": int(p), "max_tokens": int(m), "model": mo, "client_fingerprint": fp,
                   "ip_prefix": ip, "frame_signature": th, "elicits_reasoning": bool(er)}
                  for p, m, mo, fp, ip, th, er in zip(ev["prompt_tokens"].tolist(), mt.tolist(), ev["model"].tolist(),
                                                      ev["client_fingerprint"].tolist(), ev["ip_prefix"].tolist(),
                                                      ev["frame_signature"].tolist(), ev["elicits_reasoning"].tolist())]
        return cls(acct=ev["account_id"].tolist(), eid=ev["event_id"].tolist(), ts=ev["ts"].to_numpy(),
                   fields=fields, completion=list(zip(ev["completion_tokens"].tolist(), ev["status"].tolist())),
                   created=ev["account_created_at"].to_numpy(), span=days * 86400.0)

    def request(self, n: int, flood_share: float, rng: np.random.Generator):
        """The n-th request of the endless stream -> (ScoreRequest kwargs, Complete kwargs)."""
        k, i = divmod(n, len(self.eid))
        shift = (k % 15) * self.span                  # stays below now: 15 passes x days < 40 days
        ts = float(self.ts[i] + shift)
        if rng.random() < flood_share:                # a one-request fresh account
            acct = f"flood-{n}"
            score = dict(account_id=acct, event_id="e0", ts=ts, prompt_tokens=int(rng.integers(20, 400)),
                         max_tokens=0, client_fingerprint="python-httpx/0.27", account_created_at=ts - 600.0)
            return score, dict(account_id=acct, event_id="e0", completion_tokens=int(rng.integers(10, 900)),
                               status=200)
        acct, eid = f"{self.acct[i]}~{k}", f"{self.eid[i]}~{k}"
        created = float(self.created[i] + shift)
        # Null creation time in the simulated events (NaN here) is 0 = unknown on the wire.
        score = dict(account_id=acct, event_id=eid, ts=ts, account_created_at=created if created > 0 else 0.0,
                     **self.fields[i])
        ct, st = self.completion[i]
        return score, dict(account_id=acct, event_id=eid, completion_tokens=int(ct), status=int(st))


class _Tally:
    def __init__(self):
        self.codes: dict[str, int] = {}
        self.score_ms: list[float] = []

    def add(self, method: str, code: str):
        key = f"{method}/{code}"
        self.codes[key] = self.codes.get(key, 0) + 1

    def summary(self, seconds: float) -> dict:
        served = sum(n for k, n in self.codes.items() if k.endswith("/OK"))
        shed = sum(n for k, n in self.codes.items() if k.endswith("/" + _SHED))
        failed = sum(self.codes.values()) - served - shed
        lat = percentiles(np.asarray(self.score_ms) * 1e3)
        return {"served": served, "shed": shed, "failed": failed, "codes": dict(sorted(self.codes.items())),
                "served_per_s": served / seconds if seconds else 0.0, "shed_per_s": shed / seconds if seconds else 0.0,
                "score_p50_ms": lat["p50_ms"], "score_p99_ms": lat["p99_ms"], "score_max_ms": lat["max_ms"]}


async def _drive(port: int, traffic: _Traffic, *, seconds: float, capacity: float | None, pid: int,
                 max_inflight: int, deadline_s: float, flood_share: float, seed: int,
                 calibrate_s: float, cycle_s: float) -> dict:
    import grpc

    from ..serving.stubs import pb, pb_grpc

    rng = np.random.default_rng(seed)
    counter = [0]
    inflight = [0]
    loop = asyncio.get_running_loop()
    samples: list[dict] = []
    dead = [False]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        await asyncio.wait_for(ch.channel_ready(), 30)
        stub = pb_grpc.ScorerStub(ch)

        async def one(tally: _Tally):
            score, complete = traffic.request(counter[0], flood_share, rng)
            counter[0] += 1
            inflight[0] += 1
            try:
                t = time.perf_counter()
                try:
                    await stub.Score(pb.ScoreRequest(**score), timeout=deadline_s)
                    tally.score_ms.append((time.perf_counter() - t) * 1e3)
                    tally.add("Score", "OK")
                except grpc.aio.AioRpcError as e:
                    tally.add("Score", e.code().name)
                    return
                try:
                    await stub.Complete(pb.CompleteRequest(**complete), timeout=deadline_s)
                    tally.add("Complete", "OK")
                except grpc.aio.AioRpcError as e:
                    tally.add("Complete", e.code().name)
            finally:
                inflight[0] -= 1

        # -- calibration: closed loop at 64 in flight, after a 1 s warm-up that is not counted
        cal = _Tally()
        if capacity is None:
            async def closed_loop(tally: _Tally, s: float) -> float:
                stop_at = loop.time() + s

                async def worker():
                    while loop.time() < stop_at:
                        await one(tally)

                t0 = loop.time()
                await asyncio.gather(*(worker() for _ in range(64)))
                return loop.time() - t0

            await closed_loop(_Tally(), 1.0)
            took = await closed_loop(cal, calibrate_s)
            capacity = max(cal.codes.get("Score/OK", 0) / took, 1.0)

        # -- soak: open loop through the phases, RSS sampled every second
        phases = []
        t_start = loop.time()
        end = t_start + seconds
        total = _Tally()

        async def sampler():
            while loop.time() < end + 0.5:
                try:
                    rss = proc_rss_mb(pid)["rss_mb"]
                    cpu = proc_cpu_seconds(pid)
                except (OSError, ValueError, IndexError):
                    dead[0] = True
                    return
                samples.append({"t": round(loop.time() - t_start, 2), "rss_mb": rss, "cpu_s": round(cpu, 2),
                                "served": sum(n for k, n in total.codes.items() if k.endswith("/OK")),
                                "shed": sum(n for k, n in total.codes.items() if k.endswith("/" + _SHED)),
                                "inflight": inflight[0]})
                await asyncio.sleep(1.0)

        sampler_task = asyncio.create_task(sampler())
        tasks: set = set()
        cycle = min(cycle_s, seconds)
        bounds = np.cumsum([share for _, share in PHASES]) * cycle
        t = t_start
        while t < end:
            pos = (t - t_start) % cycle
            j = int(np.searchsorted(bounds, pos, side="right"))
            mult = PHASES[min(j, len(PHASES) - 1)][0]
            phase_end = min(end, t + (bounds[min(j, len(bounds) - 1)] - pos))
            tally, rate = _Tally(), mult * capacity
            not_sent, sent, due, last = 0, 0, 0.0, loop.time()
            while (now := loop.time()) < phase_end:
                due += rate * (now - last)
                last = now
                while due >= 1.0:
                    due -= 1.0
                    if inflight[0] >= max_inflight:
                        not_sent += 1
                        continue
                    sent += 1
                    task = asyncio.create_task(one(tally))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.sleep(0.002)
            dur = loop.time() - t
            phases.append({"x_capacity": mult, "target_per_s": rate, "seconds": round(dur, 2),
                           "offered_per_s": sent / dur if dur else 0.0, "not_sent": not_sent, "tally": tally})
            t = loop.time()
        if tasks:
            await asyncio.wait(tasks, timeout=deadline_s + 5)
        await sampler_task
        for p in phases:
            tally = p.pop("tally")
            for k, n in tally.codes.items():
                total.codes[k] = total.codes.get(k, 0) + n
            total.score_ms += tally.score_ms
            p.update(tally.summary(p["seconds"]))
    return {"capacity_per_s": capacity, "calibration": cal.summary(calibrate_s) if cal.codes else None,
            "phases": phases, "total": {**total.summary(seconds), "not_sent": sum(p["not_sent"] for p in phases),
                                        "requests_started": counter[0]},
            "samples": samples, "server_died_during_run": dead[0]}


def _memory(samples: list[dict], seconds: float, cycle_s: float) -> dict:
    """RSS figures. RSS swings with the phases (queued calls above capacity), so the trend
    is taken over whole cycles: the "second half" starts at the cycle boundary at or
    before half-time, its slope is a least-squares fit over those whole cycles, and its
    growth compares the median RSS of its last cycle with that of its first."""
    pts = [(s["t"], s["rss_mb"]) for s in samples if s.get("rss_mb")]
    out = {"rss_start_mb": None, "rss_median_mb": None, "rss_max_mb": None, "rss_end_mb": None,
           "second_half_from_s": None, "second_half_slope_mb_per_min": None, "second_half_growth_pct": None,
           "rss_by_cycle": []}
    if not pts:
        return out
    t, rss = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    out.update(rss_start_mb=float(rss[0]), rss_median_mb=float(np.median(rss)), rss_max_mb=float(rss.max()),
               rss_end_mb=float(rss[-1]))
    cycle = min(cycle_s, seconds)
    n_cycles = int(seconds // cycle + 1e-9)
    for c in range(int(np.ceil(seconds / cycle))):
        sel = (t >= c * cycle) & (t < (c + 1) * cycle)
        if sel.any():
            out["rss_by_cycle"].append({"cycle": c, "min": float(rss[sel].min()), "median": float(np.median(rss[sel])),
                                        "max": float(rss[sel].max())})
    if n_cycles >= 2:
        start = np.floor(seconds / 2 / cycle) * cycle
        last_full = n_cycles * cycle
    else:
        start, last_full = seconds / 2, seconds + 1.0
    sel = (t >= start) & (t <= last_full)
    if sel.sum() >= 2 and np.ptp(t[sel]) > 0:
        out["second_half_from_s"] = float(start)
        out["second_half_slope_mb_per_min"] = float(np.polyfit(t[sel], rss[sel], 1)[0] * 60.0)
        if n_cycles >= 2:
            cyc = [b for b in out["rss_by_cycle"] if start <= b["cycle"] * cycle < last_full]
            first, last = cyc[0]["median"], cyc[-1]["median"]
        else:
            first, last = float(rss[sel][0]), float(rss[sel][-1])
        out["second_half_growth_pct"] = (last - first) / first * 100.0
    return out


def run_soak(model, seconds: float = 120.0, workdir: str | Path = "bench", *, max_sessions: int = 2_000,
             workers: int = 16, max_concurrent_rpcs: int | None = None, max_inflight: int = 512,
             deadline_s: float = 2.0, flood_share: float = 0.2, seed: int = 3, accounts: int = 400,
             days: float = 2.0, calibrate_s: float | None = None, cycle_s: float = 30.0,
             show: bool = True) -> dict:
    """Run the soak; writes WORKDIR/soak.json (and soak_server.log) and returns the result."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_sim = time.perf_counter()
    traffic = _Traffic.simulate(seed, accounts, days)
    t_sim = time.perf_counter() - t_sim
    cpu0, load0 = time.process_time(), os.getloadavg()[0]
    argv = serve_argv("--insecure", "--port", 0, "--metrics-port", 0, "--model", model,
                      "--max-sessions", max_sessions, "--threads", workers)
    if max_concurrent_rpcs is not None:
        argv += ["--max-concurrent-rpcs", str(max_concurrent_rpcs)]
    srv = ServerProc(argv, name="scorer", log_path=workdir / "soak_server.log").start()
    port = srv.port
    exit_code, drive = None, None
    try:
        cal_s = calibrate_s if calibrate_s is not None else min(5.0, max(2.0, 0.05 * seconds))
        drive = asyncio.run(_drive(port, traffic, seconds=seconds, capacity=None, pid=srv.pid,
                                   max_inflight=max_inflight, deadline_s=deadline_s, flood_share=flood_share,
                                   seed=seed, calibrate_s=cal_s, cycle_s=cycle_s))
        alive = srv.returncode is None
        server_metrics = srv.metrics() if alive else {}
    finally:
        exit_code = srv.stop(timeout=60)      # SIGTERM, SIGKILL after 60 s; the exit code either way
    m = server_metrics

    def metric(prefix):
        return {k: v for k, v in m.items() if k.startswith(prefix)}

    res = {
        "seconds": seconds, "model": str(model), "max_sessions": max_sessions, "workers": workers,
        "max_concurrent_rpcs": max_concurrent_rpcs if max_concurrent_rpcs is not None else "server default",
        "flood_share": flood_share, "deadline_s": deadline_s, "max_inflight": max_inflight, "cycle_s": cycle_s,
        "simulated_events_per_pass": len(traffic.eid), "simulate_s": round(t_sim, 2),
        **{k: v for k, v in drive.items() if k != "samples"},
        "server": {"alive_at_end": alive, "died_during_run": drive["server_died_during_run"],
                   "exit_code": exit_code, "crashes": int((not alive) or exit_code != 0),
                   "requests_total": metric("distillguard_requests_total"),
                   "evictions": metric("distillguard_evictions"),
                   "failed_server_side": sum(v for k, v in m.items() if k.startswith("distillguard_requests_total{")
                                             and not any(f'code="{c}"' in k for c in ("OK", _SHED))),
                   "live_sessions": m.get("distillguard_live_sessions"),
                   **_memory(drive["samples"], seconds, cycle_s)},
        "client_cpu_s": round(time.process_time() - cpu0, 1),
        "samples": drive["samples"], "loadavg_1m": {"start": load0, "end": os.getloadavg()[0]},
    }
    res.pop("server_died_during_run", None)
    publish_text(workdir / "soak.json", json.dumps(res, indent=2, default=float))
    if show:
        print_soak(res)
        print(f"written to {workdir / 'soak.json'} (server log {workdir / 'soak_server.log'})")
    return res


def _f(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)


def print_soak(res: dict) -> None:
    s, tot = res["server"], res["total"]
    print(f"\nsoak: {res['seconds']:.0f} s on loopback, max_sessions {res['max_sessions']:,}, "
          f"concurrency cap {res['max_concurrent_rpcs']}, capacity {res['capacity_per_s']:,.0f} Score+Complete/s "
          f"(closed loop, 64 in flight), {res['flood_share']:.0%} fresh-id flood")
    print("rates: target/offered in Score requests/s (each OK Score is followed by a Complete); served/shed "
          "in RPCs/s; failed = RPCs with any other status; latency = Score, client side")
    hdr = f"{'phase':>5} {'x cap':>5} {'target/s':>9} {'offered/s':>9} {'served/s':>9} {'shed/s':>8} " \
          f"{'failed':>6} {'not sent':>8} {'p50 ms':>7} {'p99 ms':>7}"
    print(hdr)
    for i, p in enumerate(res["phases"]):
        print(f"{i:>5} {p['x_capacity']:>5.1f} {p['target_per_s']:>9,.0f} {p['offered_per_s']:>9,.0f} "
              f"{p['served_per_s']:>9,.0f} {p['shed_per_s']:>8,.0f} {p['failed']:>6} {p['not_sent']:>8} "
              f"{_f(p['score_p50_ms'], '{:.2f}'):>7} {_f(p['score_p99_ms'], '{:.2f}'):>7}")
    failed_codes = {k: n for k, n in tot["codes"].items() if not k.endswith(("/OK", "/" + _SHED))}
    print(f"total RPCs: served {tot['served']:,}, shed {tot['shed']:,}, failed {tot['failed']:,}"
          f"{' ' + json.dumps(failed_codes) if failed_codes else ''}, not sent (client backlog) {tot['not_sent']:,}")
    ev = {k.split('"')[1]: v for k, v in s["evictions"].items() if '"' in k}
    print(f"server: crashes {s['crashes']}, exit code {s['exit_code']}, failed by its own count "
          f"{_f(s['failed_server_side'])}, live sessions {_f(s['live_sessions'])}, "
          f"evictions {json.dumps({k: int(v) for k, v in ev.items()})}")
    print(f"server RSS MB: start {_f(s['rss_start_mb'], '{:.1f}')}, median {_f(s['rss_median_mb'], '{:.1f}')}, "
          f"max {_f(s['rss_max_mb'], '{:.1f}')}, end {_f(s.get('rss_end_mb'), '{:.1f}')}; second half "
          f"(from {_f(s['second_half_from_s'])} s, whole cycles) slope "
          f"{_f(s['second_half_slope_mb_per_min'], '{:+.2f}')} MB/min, growth "
          f"{_f(s['second_half_growth_pct'], '{:+.2f}')}%")
    if s["rss_by_cycle"]:
        print("RSS MB by cycle (min/median/max): " + ", ".join(
            f"{b['min']:.0f}/{b['median']:.0f}/{b['max']:.0f}" for b in s["rss_by_cycle"]))
    print(f"client: {res['client_cpu_s']} CPU s for the load generator (shares the machine with the server); "
          f"1-min load average {res['loadavg_1m']['start']:.1f} at start, {res['loadavg_1m']['end']:.1f} at end "
          f"on {os.cpu_count()} CPUs")
