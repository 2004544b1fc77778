"""`distillguard bench MODE`: the benchmarks, one mode each (results in WORKDIR/*.json).

Modes: batch (batch scoring vs read+sort, optionally the Ray engine), grpc (scorer vs a
no-op server under h2load and a Python client), state (bytes per live session), scaling
(1 vs 2 worker processes, in-process store and Redis), shadow (cost of a shadow model),
verdicts (cost of occlusion reasons vs rule checks), soak (a real server under load over time), templates (frame signatures on lm-eval's
real prompt templates, per language). The old spelling, `bench` with mode flags
(`--batch --ray --grpc`, `--soak`, ...), still runs through `legacy_args` with a note.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..serving import DEFAULT_BUNDLE
from .common import deprecated


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(DEFAULT_BUNDLE), help="model bundle (default: the packaged one)")
    p.add_argument("--workdir", default="bench", help="where inputs are cached and results written (default bench)")


def _seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=1, help="seed of the simulated traffic (default 1)")


def _batch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=1_000_000, help="simulated events to score (default 1M)")
    p.add_argument("--no-per-event", action="store_true", help="skip the --per-event run")
    p.add_argument("--ray", action="store_true",
                   help="also score the same file with --engine ray (a local Ray instance) and compare time "
                        "and output with the local engine")


def _load(p: argparse.ArgumentParser, *, h2load: bool = True) -> None:
    p.add_argument("--requests", type=int, default=20000, help="h2load requests per run")
    if h2load:
        p.add_argument("--concurrency", default="1,8,32,128", help="in-flight requests, comma-separated")
        p.add_argument("--connections", type=int, default=1, help="HTTP/2 connections the streams share")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per server and setting")
    p.add_argument("--py-events", type=int, default=3000, help="events per Python-driven run")
    if h2load:
        p.add_argument("--no-python", action="store_true", help="skip the Python-driven runs")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: bench batch|grpc|state|scaling|shadow|verdicts|soak|templates",
                       description="One benchmark per mode; results go to WORKDIR/<mode>_bench.json "
                                   "(soak: WORKDIR/soak.json). `distillguard bench MODE --help`.")
    modes = p.add_subparsers(dest="mode", required=True, metavar="MODE")

    m = modes.add_parser("batch", help="batch scoring of simulated events vs just reading and sorting them "
                                       "-> WORKDIR/batch_bench.json")
    _common(m), _seed(m), _batch(m)
    m.set_defaults(fn=run_batch)

    m = modes.add_parser("grpc", help="gRPC scorer vs a no-op server of the same proto, h2load (Debian's "
                                      "nghttp2-client) and a Python client -> WORKDIR/grpc_bench.json")
    _common(m), _load(m)
    m.set_defaults(fn=run_grpc)

    m = modes.add_parser("state", help="memory of the session state: RSS per live session")
    m.add_argument("--sessions", dest="state_sessions", type=int, default=1_000_000,
                   help="live sessions to fill (default 1M)")
    m.set_defaults(fn=run_state)

    m = modes.add_parser("scaling", help="scorer qps/p99/CPU with 1 vs 2 worker processes on the in-process "
                                         "store and on a throwaway redis-server -> WORKDIR/scaling_bench.json")
    _common(m), _load(m, h2load=False)
    m.set_defaults(fn=run_scaling)

    m = modes.add_parser("shadow", help="cost of a shadow model: the in-process scorer with and without a "
                                        "second bundle, one at a time and in batches of 32 "
                                        "-> WORKDIR/shadow_bench.json")
    _common(m), _seed(m)
    m.add_argument("--py-events", type=int, default=3000, help="simulated requests per run (default 3000)")
    m.add_argument("--repeats", type=int, default=3, help="alternating runs, at least 3 (default 3)")
    m.set_defaults(fn=run_shadow)

    m = modes.add_parser("verdicts", help="cost of faithful reasons: the in-process scorer with occlusion "
                                          "explanations vs rule checks, p50/p99 one at a time and in batches of "
                                          "32 -> WORKDIR/verdicts_bench.json")
    _common(m), _seed(m)
    m.add_argument("--py-events", type=int, default=3000, help="simulated requests per run (default 3000)")
    m.add_argument("--repeats", type=int, default=3, help="alternating runs (default 3)")
    m.set_defaults(fn=run_verdicts)

    m = modes.add_parser("soak", help="soak a real server on loopback (rates below and above capacity, "
                                      "session churn): served/shed/failed and RSS over time -> WORKDIR/soak.json")
    _common(m)
    m.add_argument("--seconds", dest="soak_seconds", type=float, default=120.0, help="duration of the load")
    m.add_argument("--max-sessions", dest="soak_max_sessions", type=int, default=2_000,
                   help="the server's --max-sessions (small, so eviction runs all along)")
    m.set_defaults(fn=run_soak)

    m = modes.add_parser("templates", help="frame signatures on real prompt templates (lm-eval's task configs), "
                                           "per language -> OUT/summary.json, OUT/table.md")
    m.add_argument("--collection", choices=("tune", "report", "all"), default="report",
                   help="half of the task families: tune the signature on one, report the other (default report)")
    m.add_argument("--out", default="reports/templates_bench", help="output folder (default reports/templates_bench)")
    m.add_argument("--limit", type=int, help="a random sample of this many templates (quick runs)")
    _seed(m)
    m.set_defaults(fn=run_templates)


def run_templates(a) -> int:
    from ..benchmarks.bench_templates import run

    run(a.collection, out=a.out, seed=a.seed, limit=a.limit)
    return 0


def run_batch(a) -> int:
    from ..benchmarks.bench_batch import run_batch_bench

    run_batch_bench(a.model, events=a.events, workdir=Path(a.workdir), seed=a.seed,
                    per_event=not a.no_per_event, ray=a.ray)
    return 0


def run_grpc(a) -> int:
    from ..benchmarks.bench_grpc import run_grpc_bench

    conc = tuple(int(c) for c in a.concurrency.split(",") if c.strip())
    run_grpc_bench(a.model, concurrency=conc, requests=a.requests, repeats=a.repeats,
                   connections=a.connections, py_events=a.py_events,
                   python_driven=not a.no_python, workdir=Path(a.workdir))
    return 0


def run_state(a) -> int:
    from ..benchmarks.bench_state import run_state_bench

    run_state_bench(sessions=a.state_sessions)
    return 0


def run_scaling(a) -> int:
    from ..benchmarks.bench_grpc import run_scaling_bench

    run_scaling_bench(a.model, requests=a.requests, repeats=a.repeats, py_events=a.py_events,
                      workdir=Path(a.workdir))
    return 0


def run_shadow(a) -> int:
    from ..benchmarks.bench_shadow import run_shadow_bench

    run_shadow_bench(a.model, events=a.py_events, repeats=max(a.repeats, 3), seed=a.seed, workdir=Path(a.workdir))
    return 0


def run_verdicts(a) -> int:
    from ..benchmarks.bench_verdicts import run_verdicts_bench

    run_verdicts_bench(a.model, events=a.py_events, repeats=max(a.repeats, 1), seed=a.seed, workdir=Path(a.workdir))
    return 0


def run_soak(a) -> int:
    from ..benchmarks.bench_soak import run_soak as soak

    res = soak(a.model, seconds=a.soak_seconds, workdir=Path(a.workdir), max_sessions=a.soak_max_sessions)
    if res["server"]["crashes"]:
        print("soak: the server crashed or did not exit 0", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ the old spelling
# `bench [--batch] [--grpc] [--scaling] [--shadow] [--soak] [options]`: several modes in one
# command, their options side by side (the same dests as the modes' parsers), no flag
# meaning batch + grpc. `--grpc` ran the session-state figure too.
_ORDER = (("batch", run_batch), ("grpc", run_grpc), ("state", run_state), ("scaling", run_scaling),
          ("shadow", run_shadow), ("soak", run_soak))


def _legacy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distillguard bench", description="deprecated spelling: use `bench MODE`")
    for mode in ("batch", "grpc", "scaling", "shadow", "soak"):
        p.add_argument(f"--{mode}", action="store_true")
    _common(p), _batch(p), _load(p)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--state-sessions", type=int, default=1_000_000)
    p.add_argument("--soak-seconds", type=float, default=120.0)
    p.add_argument("--soak-max-sessions", type=int, default=2_000)
    return p


def legacy_args(args: list[str]) -> argparse.Namespace | None:
    """`bench`'s arguments in the old spelling parsed (None: the new one, or `--help`)."""
    if args[:1] and (not args[0].startswith("-") or args[0] in ("-h", "--help")):
        return None
    a = _legacy_parser().parse_args(args)
    given = [m for m in ("batch", "grpc", "scaling", "shadow", "soak") if getattr(a, m)]
    chosen = [*given] or ["batch", "grpc"]
    if "grpc" in chosen:
        chosen.insert(chosen.index("grpc") + 1, "state")
    a.modes = chosen
    a.fn, a.cmd = run_legacy, "bench"
    deprecated("bench " + " ".join(f"--{m}" for m in given) if given else "bench" + " ".join(["", *args]),
               "; ".join(f"distillguard bench {m} ..." for m in chosen) + " (one mode per command)")
    return a


def run_legacy(a) -> int:
    for mode, fn in _ORDER:
        if mode in a.modes:
            code = fn(a)
            if code:
                return code
    return 0
