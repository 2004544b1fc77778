"""`distillguard` console script: simulate, train, evaluate, score, bench."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from ..serving import DEFAULT_BUNDLE


def _add_simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--accounts", type=int, default=None, help="number of accounts (default: from --events)")
    p.add_argument("--events", type=int, default=None, help="approximate number of events to generate")
    p.add_argument("--days", type=float, default=7.0, help="simulated days of traffic")
    p.add_argument("--families", nargs="+", metavar="FAMILY",
                   help="only these traffic families (docs/simulator.md lists them)")
    p.add_argument("--exclude-families", nargs="+", metavar="FAMILY",
                   help="every family but these (e.g. train a model that has never seen one)")
    p.add_argument("--start", default=None, help="UTC start of the simulated traffic (ISO-8601)")


def _sim_config(a):
    from ..training.simulate import FAMILIES, SimConfig, accounts_for_events

    accounts = a.accounts or (accounts_for_events(a.events, a.days) if a.events else SimConfig.accounts)
    families = None
    if a.families or a.exclude_families:
        named = set(a.families or ()) | set(a.exclude_families or ())
        unknown = sorted(named - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown families {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
        families = tuple(f for f in (a.families or FAMILIES) if f not in set(a.exclude_families or ()))
        if not families:
            raise ValueError("--families/--exclude-families leave no family to simulate")
    return SimConfig(seed=a.seed, accounts=accounts, days=a.days, families=families,
                     include_prompts=getattr(a, "with_prompts", False),
                     **({"start": a.start} if a.start else {}))


def cmd_simulate(a) -> int:
    from ..training.simulate import simulate, write

    cfg = _sim_config(a)
    t0 = time.perf_counter()
    events, labels = simulate(cfg)
    ev_path, lab_path = write(events, labels, a.out, fmt=a.format)
    counts = labels["label"].value_counts().to_dict()
    print(f"wrote {len(events):,} events of {len(labels):,} accounts to {ev_path} and labels to {lab_path} "
          f"in {time.perf_counter() - t0:.1f}s; accounts per class: {counts}")
    return 0


def _train_config(a):
    from ..model.network import NetworkConfig
    from ..training.train import DEFAULT_PLE_BINS, TrainConfig

    net = NetworkConfig(window=a.window, d_model=a.d_model, n_layer=a.layers, n_head=a.heads,
                        ple_bins=DEFAULT_PLE_BINS if a.ple_bins is None else a.ple_bins)
    return TrainConfig(seed=a.seed, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                       session_gap_s=a.session_gap_hours * 3600.0, network=net,
                       checkpoint_dir=a.checkpoint_dir, devices=a.devices, strategy=a.strategy,
                       accelerator=a.accelerator)


def cmd_train(a) -> int:
    from ..training.train import local_rank, train

    extra = {}
    events, labels = a.events, a.labels
    # --devices N --strategy ddp: Lightning re-runs this command line in N-1 more processes
    # (LOCAL_RANK > 0); they simulate the same data privately, print nothing, write nothing.
    launcher = local_rank() == 0
    if a.simulate:
        from ..training.simulate import SimConfig, accounts_for_events, simulate, write

        sim = SimConfig(seed=a.seed, accounts=accounts_for_events(a.simulate, a.sim_days), days=a.sim_days)
        ev, lab = simulate(sim)
        tmp = tempfile.TemporaryDirectory(prefix="distillguard-sim-")
        data_dir = Path(a.sim_out) if a.sim_out and launcher else Path(tmp.name)
        events, labels = write(ev, lab, data_dir)
        extra = {"simulated": {"seed": sim.seed, "accounts": sim.accounts, "days": sim.days}}
        if launcher:
            print(f"simulated {len(ev):,} events of {len(lab):,} accounts" + (f" into {data_dir}" if a.sim_out else ""))
    if not events or not labels:
        print("train: give --events and --labels, or --simulate N", file=sys.stderr)
        return 2
    if _rejects_misused(a):
        return 2
    mix = None
    if a.mix_simulated:
        if a.simulate:
            print("train: --mix-simulated adds simulated traffic to --events/--labels; "
                  "it does not combine with --simulate", file=sys.stderr)
            return 2
        from ..training.labels import MixConfig

        mix = MixConfig(events=a.mix_simulated, classes=a.mix_classes, min_class_sessions=a.min_class_sessions,
                        days=a.sim_days, seed=a.seed)
    rejects_path = a.rejects or Path(a.out).with_name(Path(a.out).name + ".rejects.jsonl")
    res = train(events, labels, a.out, _train_config(a), progress=not a.quiet, extra_fingerprint=extra,
                on_error=a.on_error, rejects_path=rejects_path, on_label_conflict=a.on_label_conflict, mix=mix)
    if res is None:             # a DDP process other than rank 0: rank 0 writes the bundle
        return 0
    if res["rejects"] is not None:
        print(f"{res['rejects'].summary()}; rejects -> {rejects_path}")
    fp = res["fingerprint"]
    by_source = fp["sessions_per_class_by_source"]
    conflicts_path, unmatched_path = res["label_reports"]
    print(f"labelled sessions: {json.dumps(by_source['labels'])} from labels"
          + (f", {json.dumps(by_source['simulated'])} simulated" if "simulated_mix" in fp else ""))
    n_conf, n_unm = fp["labels"]["conflicting_sessions"], fp["labels"]["unmatched_rows"]
    print(f"label conflicts: {n_conf} session(s) left out" + (f" -> {conflicts_path}" if n_conf else "")
          + f"; unmatched label rows: {n_unm}" + (f" -> {unmatched_path}" if n_unm else ""))
    m = res["metrics"]
    print(f"bundle written to {res['bundle']} (trained in {m['train_seconds']}s)")
    if "test" in m:
        t = m["test"]
        print(f"test split: macro-F1 {t['macro_f1']:.3f}, sessions {t['set_sizes']['sessions']}")
    print("thresholds: " + json.dumps(res["thresholds"]))
    return 0


def cmd_score(a) -> int:
    from ..serving.batch import score_file

    if _rejects_misused(a):
        return 2
    if a.engine != "ray" and (a.address or a.spill_dir or a.actors):
        print("distillguard score: error: --address, --actors and --spill-dir need --engine ray", file=sys.stderr)
        return 2
    from ..serving.batch_ray import RayEngineError

    try:
        stats = score_file(a.model, a.input, a.output, per_event=a.per_event, progress=not a.quiet,
                           hmac_key=a.hmac_key.encode() if a.hmac_key else None, threads=a.threads,
                           on_error=a.on_error, rejects_path=a.rejects, engine=a.engine, address=a.address,
                           actors=a.actors or 0, spill_dir=a.spill_dir)
    except RayEngineError as e:
        print(f"distillguard score: error: {e}", file=sys.stderr)
        return 2
    engine = f" on Ray (startup {stats.startup_s:.1f}s)" if a.engine == "ray" else ""
    print(f"scored {stats.events:,} events in {stats.sessions:,} sessions in {stats.seconds:.2f}s{engine} "
          f"({stats.events_per_s:,.0f} events/s) -> {a.output}", file=sys.stderr)
    if a.on_error == "skip":
        print(f"{stats.skipped_summary}; rejects -> {stats.rejects_path}", file=sys.stderr)
    if not a.quiet and not a.per_event:
        _print_summary(Path(a.output))
    return 0


def _print_summary(path: Path) -> None:
    import pandas as pd

    df = pd.read_parquet(path) if path.suffix == ".parquet" else (
        pd.read_csv(path) if path.suffix == ".csv" else pd.read_json(path, lines=True))
    if df.empty:
        print("no sessions")
        return
    print("sessions by predicted class:")
    print(df["label"].value_counts().to_string())
    print("actions:")
    print(df["action"].value_counts().to_string())


def cmd_evaluate(a) -> int:
    if a.holdout_families is not None:
        from ..training.holdout import run_holdout

        # Leave-one-family-out trains its own models on its own simulated data: --model,
        # --events and --labels describe a different evaluation and are not read.
        rep = run_holdout(a.holdout_out, families=a.holdout_families or None, seed=a.holdout_seed,
                          epochs=a.holdout_epochs, include_human=a.holdout_include_human,
                          progress=not a.quiet)
        print(f"held-out-family report written to {Path(a.holdout_out) / 'holdout.md'} "
              f"({rep['timings']['total_s']} s)")
        return 0
    if a.robustness:
        from ..training.robustness import run_robustness

        run_robustness(a.model, a.robustness_out, progress=not a.quiet)
        print(f"robustness report written to {Path(a.robustness_out) / 'robustness.md'}")
        return 0
    missing = [f"--{n}" for n in ("events", "labels", "report") if not getattr(a, n)]
    if missing:
        print(f"evaluate: {', '.join(missing)} required (or use --holdout-families / --robustness)",
              file=sys.stderr)
        return 2
    from ..training.evaluate_bundle import run_evaluation

    if _rejects_misused(a):
        return 2
    if a.baseline:
        from ..training.compare import CompareConfig, compare_bundles

        res = compare_bundles(a.model, a.baseline, a.events, a.labels, a.report,
                              CompareConfig(tolerance=a.tolerance, fpr_tolerance=a.fpr_tolerance,
                                            n_boot=a.n_boot, seed=a.seed),
                              on_error=a.on_error, rejects_path=a.rejects)
        _print_verdict(res)
        print(f"comparison written to {Path(a.report) / 'comparison.json'} and comparison.md")
        return 0
    report = run_evaluation(a.model, a.events, a.labels, a.report, progress=not a.quiet,
                            on_error=a.on_error, rejects_path=a.rejects, n_boot=a.n_boot, seed=a.seed)
    print(f"report written to {report}")
    return 0


def _print_verdict(res: dict) -> None:
    print(f"verdict: {res['verdict']} (challenger {res['challenger']['version']} vs champion "
          f"{res['champion']['version']}, tolerance {res['tolerance']:g}, human-FPR tolerance {res['fpr_tolerance']:g})")
    for title, items in (("failing", res["failing"]), ("improved", res["improved"])):
        for line in items:
            print(f"  {title}: {line}")
    for w in res["warnings"]:
        print(f"  warning: {w}", file=sys.stderr)


def cmd_promote(a) -> int:
    """Exit 0 promoted (or already current), 1 refused by the gate or a stale comparison."""
    from ..serving.registry import Registry
    from ..training.compare import PromotionRefused, StaleComparison, promote

    reg = Registry(a.registry)
    if a.shadow:
        if a.comparison or a.events or a.labels or a.force:
            print("distillguard promote: error: --shadow takes no gate options (--comparison, --events/--labels, "
                  "--force): a shadow model only scores beside the served one", file=sys.stderr)
            return 2
        name = reg.add(a.bundle)
        if reg.current() == name:
            print(f"distillguard promote: error: {name} is the current version; a shadow must be another model",
                  file=sys.stderr)
            return 1
        entry = reg.set_shadow(name, note=a.note)
        print(f"shadow -> {name} ({entry['bundle_version']}); was {entry['from'] or 'unset'}")
        return 0
    if bool(a.events) != bool(a.labels):
        print("distillguard promote: error: --events and --labels go together", file=sys.stderr)
        return 2
    if a.comparison and a.events:
        print("distillguard promote: error: give --comparison or --events/--labels, not both", file=sys.stderr)
        return 2
    try:
        res = promote(reg, a.bundle, comparison=a.comparison, events=a.events, labels=a.labels,
                      tolerance=a.tolerance, fpr_tolerance=a.fpr_tolerance, n_boot=a.n_boot,
                      force=a.force, note=a.note, on_error=a.on_error)
    except (PromotionRefused, StaleComparison) as e:
        print(f"distillguard promote: refused: {e}", file=sys.stderr)
        return 1
    if res["action"] == "unchanged":
        print(f"{res['version']} already holds this bundle and is current: nothing to do")
        return 0
    e = res["entry"]
    comp = res["comparison"]
    print(f"current -> {res['version']} ({e['bundle_version']}); was {e['from'] or 'unset'}"
          + (f"; comparison {comp['verdict']}" if comp else "")
          + ("; FORCED past the gate (recorded)" if e["forced"] else ""))
    if comp and comp.get("path"):
        print(f"comparison: {comp['path']} (and comparison.md beside it)")
    return 0


def cmd_rollback(a) -> int:
    from ..serving.registry import Registry, RegistryError

    reg = Registry(a.registry)
    try:
        e = reg.rollback(note=a.note)
    except RegistryError as err:
        print(f"distillguard rollback: {err}", file=sys.stderr)
        return 1
    print(f"current -> {e['to']} ({e['bundle_version']}); was {e['from']}")
    return 0


def cmd_registry(a) -> int:
    from ..serving.registry import Registry, version_table

    reg = Registry.init(a.registry) if a.init else Registry(a.registry)
    if a.init:
        print(f"registry ready at {reg.root}")
    if a.clear_shadow:
        e = reg.clear_shadow(note=a.note)
        print(f"shadow cleared (was {e['from'] or 'unset'})")
    rows, history = version_table(reg), reg.history()[-a.history:] if a.history else []
    if a.json:
        print(json.dumps({"registry": str(reg.root), "current": reg.current(), "shadow": reg.shadow(),
                          "versions": rows, "history": history, "rollback_to": (reg.rollback_stack() or [None])[-1]},
                         indent=2))
        return 0
    print(f"registry {reg.root}: current {reg.current() or 'unset'}, shadow {reg.shadow() or 'unset'}, "
          f"rollback to {(reg.rollback_stack() or ['nothing'])[-1]}")
    for r in rows:
        mark = "current" if r["current"] else ("shadow" if r["shadow"] else "")
        print(f"  {r['name']}  {r['model_version']:<28} trained {r['created_at'] or '?':<20} "
              f"sha256 {r['sha256'][:12]}  {mark}")
    if history:
        print("history (oldest first):")
        for e in history:
            comp = e.get("comparison") or {}
            print(f"  {e['time']}  {e['action']:<8} {e.get('pointer', 'current'):<7} {e['from'] or '-'} -> "
                  f"{e['to'] or '-'}  by {e['user']}" + (f"  verdict {comp['verdict']}" if comp else "")
                  + ("  FORCED" if e.get("forced") else "") + (f"  ({e['note']})" if e.get("note") else ""))
    return 0


def _serve_transport(a):
    """The serve command's TransportConfig; plaintext only with --insecure, whatever the host."""
    from ..serving.security import TransportConfig, TransportError, is_loopback_address

    if not (a.tls_cert or a.tls_key or a.tls_client_ca) and not a.insecure:
        where = "a non-loopback address, reachable from other machines" if not is_loopback_address(
            f"{a.host}:{a.port}") else "loopback"
        raise TransportError(f"refusing to serve on {a.host}:{a.port} ({where}) without TLS: give --tls-cert and "
                             "--tls-key (plus --tls-client-ca for mutual TLS), or --insecure to serve "
                             "unencrypted, unauthenticated gRPC on purpose")
    path = lambda v: Path(v) if v else None     # noqa: E731
    return TransportConfig(cert_file=path(a.tls_cert), key_file=path(a.tls_key),
                           client_ca_file=path(a.tls_client_ca), token_file=path(a.token_file),
                           insecure=a.insecure)


def cmd_serve(a) -> int:
    if a.workers > 1:
        # Fork first, before gRPC/onnxruntime exist in this process (serving/workers.py).
        from ..serving.workers import run_workers

        if a.snapshot:
            raise ValueError("--snapshot works with one process; several workers share state through "
                             "--state redis://HOST:PORT/DB")
        if not a.state or a.state == "memory":
            logging.getLogger("distillguard.workers").warning(
                "--workers %d with the in-process store: each worker holds its own sessions, so a session's "
                "requests must always reach the same worker (route by session id to the workers' own ports) "
                "or use --state redis://HOST:PORT/DB", a.workers)

        def child(i: int, port: int) -> int:
            mp = a.metrics_port if not a.metrics_port else a.metrics_port + i
            own = a.worker_port_base + i if a.worker_port_base else 0
            return _serve_one(a, port, metrics_port=mp, worker=i, own_port=own)

        return run_workers(a.workers, a.host, a.port, child)
    return _serve_one(a, a.port, metrics_port=a.metrics_port)


def _serve_one(a, port: int, metrics_port, worker: int | None = None, own_port: int | None = None) -> int:
    from ..serving.server import serve

    transport = _serve_transport(a)
    return serve(a.model, port, host=a.host, metrics_port=metrics_port, shadow=a.shadow,
                 max_sessions=a.max_sessions, workers=a.threads, grace=a.grace, transport=transport,
                 reflection_enabled=not a.no_reflection, admin_enabled=not a.no_admin, limits=_serve_limits(a),
                 snapshot_path=a.snapshot, state=a.state, worker=worker, own_port=own_port,
                 event_log=_serve_event_log(a), labels_store=a.labels_store, shadow_model=a.shadow_model,
                 registry_poll_s=a.registry_poll_s)


def _serve_event_log(a):
    """EventLogConfig from --event-log* (None: no event log)."""
    if not a.event_log:
        return None
    from ..serving.event_log import EventLogConfig

    return EventLogConfig(a.event_log, max_rows=a.event_log_max_rows, max_seconds=a.event_log_max_seconds)


def _serve_limits(a):
    """RequestLimits from `serve`'s limit flags; a flag not given keeps the dataclass default."""
    from ..serving.limits import RequestLimits

    given = {"max_concurrent_rpcs": a.max_concurrent_rpcs, "max_message_bytes": a.max_message_bytes,
             "max_batch": a.max_batch, "max_ts_ahead_s": a.max_ts_ahead_s, "max_ts_age_s": a.max_ts_age_s}
    kw = {k: v for k, v in given.items() if v is not None}
    if kw.get("max_concurrent_rpcs") == 0:
        kw["max_concurrent_rpcs"] = None
    return RequestLimits(**kw)


def cmd_shadow_report(a) -> int:
    from ..serving.shadow_report import shadow_report

    res = shadow_report(a.event_log, a.out, max_rows=a.max_rows)   # ShadowReportError is a ValueError: exit 2
    ev, se = res["events"], res["sessions"]
    print(f"{res['events_compared']:,} events ({res['events_excluded']:,} without a shadow verdict), "
          f"{se['n']:,} sessions; flagged agreement {ev['flagged_agreement']:.2%} of events, "
          f"{se['flagged_agreement']:.2%} of sessions; flips: {len(res['flips']['shadow_flags'])} sessions the "
          f"shadow flags, {len(res['flips']['shadow_clears'])} it clears; report in {Path(a.out) / 'report.md'}")
    return 0


def cmd_replay(a) -> int:
    from ..serving.replay import ReplayError, print_summary, replay

    try:
        summary = replay(a.target, a.events, speed=a.speed, concurrency=a.concurrency, limit=a.limit,
                         deadline_s=a.deadline_ms / 1000.0, hmac_key=a.hmac_key.encode() if a.hmac_key else None,
                         show=not a.quiet, tls=a.tls, tls_ca=a.tls_ca, tls_cert=a.tls_cert, tls_key=a.tls_key,
                         token_file=a.token_file)
    except ReplayError as e:
        print(f"distillguard replay: error: {e}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0


def cmd_feedback(a) -> int:
    """Report a wrong verdict: through a scorer's ReportFeedback (--target) or straight into
    a labels store (--labels-store), both by serving.feedback.append_feedback."""
    if a.labels_store:
        from ..serving.feedback import FeedbackError, append_feedback

        if not a.session:
            # Only the scorer knows the name of an account's implicit session.
            print("distillguard feedback: error: --labels-store needs --session (the session id the scorer "
                  "gave, ScoreResponse.session_id); use --target to let a running scorer resolve it",
                  file=sys.stderr)
            return 2
        try:
            row = append_feedback(a.labels_store, account_id=a.account, session_id=a.session, label=a.label,
                                  reason=a.reason, reported_by=a.reported_by or "", incident_id=a.incident_id,
                                  model_version=a.model_version)
        except FeedbackError as e:
            print(f"distillguard feedback: error: {_FEEDBACK_FLAGS.get(e.field, e.field)}: {e.message}",
                  file=sys.stderr)
            return 2
        print(json.dumps(row, ensure_ascii=False))
        return 0
    if a.model_version:
        print("distillguard feedback: error: --model-version is for --labels-store; the scorer fills it in",
              file=sys.stderr)
        return 2
    from ..serving.client import FeedbackRejected, ScorerClient
    from ..serving.replay import client_config

    config = client_config(a.target, a.deadline_s, None, a.tls, a.tls_ca, a.tls_cert, a.tls_key, a.token_file)
    with ScorerClient(config) as client:
        try:
            r = client.report_feedback(a.account, session_id=a.session or "", label=a.label, reason=a.reason,
                                       reported_by=a.reported_by or "", incident_id=a.incident_id or "",
                                       deadline_s=a.deadline_s)
        except FeedbackRejected as e:
            print(f"distillguard feedback: error: scorer at {a.target}: {e}", file=sys.stderr)
            return 1
    print(json.dumps({"session_id": r.session_id, "account_id": a.account, "label": a.label,
                      "incident_id": r.incident_id, "labelled_at": r.labelled_at,
                      "model_version": r.model_version or None}))
    return 0


# append_feedback names fields as the RPC does; the command's flags for them.
_FEEDBACK_FLAGS = {"account_id": "--account", "session_id": "--session", "correct_label": "--label",
                   "reason": "--reason", "reported_by": "--reported-by", "incident_id": "--incident-id",
                   "model_version": "--model-version"}


def cmd_bench(a) -> int:
    # No benchmark named: run batch and gRPC (the soak runs only when asked for).
    both = not (a.grpc or a.batch or a.soak or a.scaling or a.shadow)
    if a.batch or both:
        from ..benchmarks.bench_batch import run_batch_bench

        run_batch_bench(a.model, events=a.events, workdir=Path(a.workdir), seed=a.seed,
                        per_event=not a.no_per_event, ray=a.ray)
    if a.grpc or both:
        from ..benchmarks.bench_grpc import run_grpc_bench

        conc = tuple(int(c) for c in a.concurrency.split(",") if c.strip())
        run_grpc_bench(a.model, concurrency=conc, requests=a.requests, repeats=a.repeats,
                       connections=a.connections, py_events=a.py_events,
                       python_driven=not a.no_python, workdir=Path(a.workdir))
        from ..benchmarks.bench_state import run_state_bench

        run_state_bench(sessions=a.state_sessions)
    if a.scaling:
        from ..benchmarks.bench_grpc import run_scaling_bench

        run_scaling_bench(a.model, requests=a.requests, repeats=a.repeats, py_events=a.py_events,
                          workdir=Path(a.workdir))
    if a.shadow:
        from ..benchmarks.bench_shadow import run_shadow_bench

        run_shadow_bench(a.model, events=a.py_events, repeats=max(a.repeats, 3), seed=a.seed, workdir=Path(a.workdir))
    if a.soak:
        from ..benchmarks.bench_soak import run_soak

        res = run_soak(a.model, seconds=a.soak_seconds, workdir=Path(a.workdir), max_sessions=a.soak_max_sessions)
        if res["server"]["crashes"]:
            print("soak: the server crashed or did not exit 0", file=sys.stderr)
            return 1
    return 0


def _add_on_error_args(p, default_rejects: str) -> None:
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="bad input row: fail (stop, naming file, row and column) or skip it, count it and "
                        "write it to the rejects file; unreadable files and missing columns always fail")
    p.add_argument("--rejects", metavar="PATH",
                   help="with --on-error skip: where skipped rows are listed (file, row, column, error; "
                        f"never prompt text), JSON Lines; default {default_rejects}")


def _rejects_misused(a) -> bool:
    if a.rejects and a.on_error != "skip":
        print(f"distillguard {a.cmd}: error: --rejects needs --on-error skip", file=sys.stderr)
        return True
    return False


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="distillguard", description=(
        "Detect distillation harvesting of an LLM API from per-session request behaviour."))
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="generate labelled synthetic traffic (events + labels)")
    _add_simulate_args(p)
    p.add_argument("--out", required=True, help="output directory (events.<fmt>, labels.csv)")
    p.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet")
    p.add_argument("--with-prompts", action="store_true",
                   help="also write raw synthetic prompt text (small demo files only)")
    p.set_defaults(fn=cmd_simulate)

    p = sub.add_parser("train", help="train a model bundle on events + labels")
    p.add_argument("--events", nargs="+", metavar="PATH",
                   help="events files or directories (parquet/csv/jsonl; a serve --event-log directory), read together")
    p.add_argument("--labels", nargs="+", metavar="PATH",
                   help="labels files or labels store directories, read together (docs/labels.md): session_id "
                        "and/or account_id, label, incident_id, labelled_at, window_start/end, ...")
    p.add_argument("--on-label-conflict", choices=("exclude", "fail"), default="exclude",
                   help="a session labelled differently by two label rows: leave it out and list it in "
                        "OUT.label-conflicts.csv (exclude, default), or stop with an error (fail)")
    p.add_argument("--mix-simulated", type=int, metavar="N",
                   help="add ~N simulated events (of the --mix-classes families, seed --seed) to --events")
    p.add_argument("--mix-classes", default="auto", metavar="auto|all|CLASS[,CLASS]",
                   help="classes whose families --mix-simulated simulates; auto (default): those with "
                        "fewer than --min-class-sessions labelled sessions")
    p.add_argument("--min-class-sessions", type=int, default=200,
                   help="--mix-classes auto: a class with fewer labelled sessions gets simulated traffic")
    p.add_argument("--simulate", type=int, metavar="N", help="train on ~N freshly simulated events instead")
    p.add_argument("--sim-days", type=float, default=7.0,
                   help="days of simulated traffic with --simulate or --mix-simulated")
    p.add_argument("--sim-out", help="keep the simulated events + labels in this directory")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--window", type=int, default=32, help="events the model sees (W)")
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ple-bins", type=int, default=None,
                   help="quantile bins of the piecewise-linear input encoding (0: raw features; default 16)")
    p.add_argument("--session-gap-hours", type=float, default=24.0,
                   help="idle gap that ends a session when events carry no session_id")
    p.add_argument("--checkpoint-dir", default="runs/checkpoints")
    p.add_argument("--devices", type=int, default=1,
                   help="training processes (CPU) or GPUs; > 1 trains data-parallel, "
                        "--batch-size per process (default 1)")
    p.add_argument("--strategy", choices=("auto", "ddp", "ddp_spawn"), default="auto",
                   help="Lightning strategy: auto (ddp when --devices > 1), ddp (re-runs this command "
                        "line per process), ddp_spawn; on CPU the backend is gloo")
    p.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), default="cpu",
                   help="cpu (default), gpu (CUDA, nccl), auto (a GPU when torch sees one)")
    _add_on_error_args(p, "OUT.rejects.jsonl, beside the bundle directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("score", help="batch-score an events file: one row per session")
    p.add_argument("--model", default=str(DEFAULT_BUNDLE), help="model bundle directory")
    p.add_argument("--input", required=True, help="events file or directory")
    p.add_argument("--output", required=True, help="output file (.parquet, .csv or .jsonl)")
    p.add_argument("--per-event", action="store_true", help="one row per event (score at every event)")
    p.add_argument("--hmac-key", help="key for hashing a raw `prompt` column (same as the gateway's)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    _add_on_error_args(p, "OUTPUT.rejects.jsonl")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: account-hash partitions scored on a Ray actor pool "
                        "(same output), on a local Ray instance or the cluster at --address")
    p.add_argument("--address", metavar="ADDR",
                   help="ray: join this existing cluster (HOST:6379, ray://HOST:10001 or 'auto') instead of "
                        "starting a local instance")
    p.add_argument("--actors", type=int, metavar="N",
                   help="ray: scoring actors, one CPU and one onnxruntime session each (default: every CPU)")
    p.add_argument("--spill-dir", metavar="DIR",
                   help="ray: where the account-hash partitions are written (default $TMPDIR); on a "
                        "multi-node cluster, storage every node reads (NFS path or s3://... URI)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(fn=cmd_score)

    p = sub.add_parser("evaluate", help="score labelled events and write a metrics report")
    p.add_argument("--model", default=str(DEFAULT_BUNDLE))
    p.add_argument("--events", help="labelled events file (required unless --holdout-families)")
    p.add_argument("--labels", help="labels file (required unless --holdout-families)")
    p.add_argument("--report", help="report directory (report.md, metrics.json, PNGs)")
    _add_on_error_args(p, "REPORT/rejects.jsonl")
    p.add_argument("--holdout-families", nargs="*", metavar="FAMILY", default=None,
                   help="leave-one-family-out evaluation on simulated traffic: train without each "
                        "FAMILY (none named: every benign-automation and harvesting family), test on it, "
                        "with the rules and GBT baselines on the same data")
    p.add_argument("--holdout-out", default="reports/holdout",
                   help="output directory of --holdout-families (holdout.md/json, PNGs, models, data)")
    p.add_argument("--holdout-include-human", action="store_true",
                   help="with --holdout-families and no names: hold out the human families too")
    p.add_argument("--holdout-seed", type=int, default=0)
    p.add_argument("--holdout-epochs", type=int, default=8)
    p.add_argument("--robustness", action="store_true",
                   help="sweep attacker knobs of the simulator one at a time and score with --model")
    p.add_argument("--robustness-out", default="reports/robustness")
    g = p.add_argument_group("champion vs challenger (docs/registry.md)")
    g.add_argument("--baseline", metavar="CURRENT",
                   help="compare --model (the challenger) with this bundle, or a registry's current version, on "
                        "--events/--labels: paired bootstrap over accounts, verdict PROMOTE or REJECT -> "
                        "REPORT/comparison.json and comparison.md")
    g.add_argument("--tolerance", type=float, default=0.01,
                   help="with --baseline: largest allowed drop of any class's recall (absolute; default 0.01)")
    g.add_argument("--fpr-tolerance", type=float, default=None,
                   help="with --baseline: largest allowed rise of the human FPR (default: --tolerance)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples over accounts (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("promote", help="make a bundle a registry's current (or shadow) model, behind the "
                                       "champion-vs-challenger gate",
                       description="Adds the bundle to the registry (versions/vNNNN, reused when the same files "
                                   "are there) and points `current` at it, if a comparison of exactly this bundle "
                                   "against the current version says PROMOTE. Servers started with --model REG "
                                   "switch within --registry-poll-s. Exit 1 when refused. docs/registry.md")
    p.add_argument("--registry", required=True, metavar="REG", help="registry directory (registry --init makes one)")
    p.add_argument("--bundle", required=True, metavar="NEW", help="the challenger bundle directory")
    p.add_argument("--comparison", metavar="JSON",
                   help="comparison.json (or its directory) from `evaluate --model NEW --baseline REG`")
    p.add_argument("--events", help="holdout events: compute the comparison now (instead of --comparison)")
    p.add_argument("--labels", help="holdout labels, with --events")
    p.add_argument("--tolerance", type=float, default=None,
                   help="re-judge the comparison with this recall tolerance (default: the comparison's; 0.01)")
    p.add_argument("--fpr-tolerance", type=float, default=None,
                   help="re-judge with this human-FPR tolerance (default: the comparison's, else --tolerance)")
    p.add_argument("--n-boot", type=int, default=200, help="with --events: bootstrap resamples")
    p.add_argument("--force", action="store_true",
                   help="promote even when the verdict is REJECT or there is no comparison (recorded as forced)")
    p.add_argument("--shadow", action="store_true",
                   help="point `shadow` at the bundle instead (scored beside current, never enforced; no gate)")
    p.add_argument("--note", help="free text kept in history.jsonl")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="with --events: bad event rows stop the comparison (fail) or are skipped")
    p.set_defaults(fn=cmd_promote)

    p = sub.add_parser("rollback", help="point a registry's current back at the version it replaced",
                       description="Undoes the latest promotion not yet rolled back; repeat to walk further "
                                   "back. Exit 1 when there is nothing to roll back to.")
    p.add_argument("--registry", required=True, metavar="REG")
    p.add_argument("--note", help="free text kept in history.jsonl")
    p.set_defaults(fn=cmd_rollback)

    p = sub.add_parser("registry", help="list a model registry's versions, pointers and history (or create one)")
    p.add_argument("--registry", required=True, metavar="REG")
    p.add_argument("--init", action="store_true", help="create an empty registry at REG (fine if it exists)")
    p.add_argument("--clear-shadow", action="store_true", help="remove the shadow pointer (recorded)")
    p.add_argument("--note", help="with --clear-shadow: free text kept in history.jsonl")
    p.add_argument("--history", type=int, default=20, metavar="N", help="history entries shown (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_registry)

    p = sub.add_parser("serve", help="real-time gRPC scorer (Score on request, Complete on completion)")
    p.add_argument("--model", default=str(DEFAULT_BUNDLE),
                   help="model bundle directory, or a model registry (docs/registry.md): serves its current "
                        "version (and its shadow one as --shadow-model), switching when `promote`/`rollback` "
                        "move the pointers")
    p.add_argument("--registry-poll-s", type=float, default=2.0, metavar="S",
                   help="with a registry as --model: seconds between checks of its current/shadow pointers")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0: any free port)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics HTTP port (off if unset)")
    p.add_argument("--shadow", action="store_true", help="report actions without enforcing (shadow=true)")
    p.add_argument("--max-sessions", type=int, default=1_000_000, help="live sessions held before LRU eviction")
    p.add_argument("--threads", type=int, default=16, help="gRPC handler threads per process")
    p.add_argument("--workers", type=int, default=1,
                   help="scorer processes sharing --port (SO_REUSEPORT), each also on its own port; share "
                        "sessions with --state redis://... (docs/scaling.md)")
    p.add_argument("--worker-port-base", type=int, default=0, metavar="PORT",
                   help="with --workers: worker i's own port is PORT+i (default: any free port, printed)")
    p.add_argument("--state", metavar="URL", default=None,
                   help="session store: memory (default, in process) or redis://HOST:PORT/DB"
                        "[?ttl=S&flagged_ttl=S&cache=N], shared by workers and machines (docs/scaling.md)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds to finish in-flight calls on SIGTERM")
    p.add_argument("--snapshot", metavar="PATH", default=None,
                   help="session-state snapshot (.npz): restored at start if present and of the bundle's "
                        "feature spec, written atomically on SIGTERM/SIGINT after the drain")
    p.add_argument("--event-log", metavar="DIR", default=None,
                   help="append every scored event (request fields, template hash only, scores, action, model "
                        "version) to Parquet parts in DIR, readable by score/train --events DIR; flushed on stop")
    p.add_argument("--event-log-max-rows", type=int, default=100_000, metavar="N",
                   help="rows per event-log part (default 100000)")
    p.add_argument("--event-log-max-seconds", type=float, default=60.0, metavar="S",
                   help="cut an event-log part at most S seconds after its first row (default 60)")
    p.add_argument("--shadow-model", metavar="BUNDLE", default=None,
                   help="a second bundle that scores every request too: its verdicts go to the event log and "
                        "the metrics, the served --model alone answers (compare with `shadow-report`)")
    p.add_argument("--labels-store", metavar="DIR", default=None,
                   help="accept ReportFeedback: append wrong-verdict reports to DIR/feedback-YYYYMMDD.jsonl "
                        "as incident labels for the next training run (workers may share DIR)")
    g = p.add_argument_group("input limits and load shedding (defaults: serving/limits.py RequestLimits)")
    g.add_argument("--max-concurrent-rpcs", type=int, metavar="N",
                   help="RPCs in flight (running + queued) before RESOURCE_EXHAUSTED (default 256; 0: no cap)")
    g.add_argument("--max-message-bytes", type=int, metavar="B",
                   help="largest request message accepted (default 4 MiB; larger: RESOURCE_EXHAUSTED)")
    g.add_argument("--max-batch", type=int, metavar="N", help="most requests in one ScoreBatch (default 1024)")
    g.add_argument("--max-ts-ahead-s", type=float, metavar="S",
                   help="refuse ts more than S seconds ahead of the server clock (default 3600)")
    g.add_argument("--max-ts-age-s", type=float, metavar="S",
                   help="refuse ts more than S seconds behind the server clock (default: off; ts >= 2015 always)")
    g = p.add_argument_group("transport and auth (one of --tls-cert/--tls-key or --insecure is required)")
    g.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain) file: serve TLS")
    g.add_argument("--tls-key", metavar="PEM", help="server private key file (unencrypted PEM)")
    g.add_argument("--tls-client-ca", metavar="PEM",
                   help="CA file for client certificates: mutual TLS, clients without a certificate signed "
                        "by it are refused at the handshake")
    g.add_argument("--token-file", metavar="FILE",
                   help="bearer tokens, one per line ('#' comments): every call but health checks needs "
                        "'authorization: Bearer <token>'")
    g.add_argument("--insecure", action="store_true",
                   help="serve plaintext gRPC (no TLS) on purpose; logged as a warning")
    g.add_argument("--no-reflection", action="store_true", help="do not register the gRPC reflection service")
    g.add_argument("--no-admin", action="store_true", help="refuse the admin RPC Reload (PERMISSION_DENIED); "
                                                            "SIGHUP still reloads")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("shadow-report", help="compare the shadow model's verdicts with the served model's in an "
                                             "event log (serve --shadow-model --event-log DIR)",
                       description="Agreement per event and per session (its latest logged event) on label and on "
                                   "flagged (action != ALLOW), the action confusion table, and the sessions that "
                                   "flipped with both scores and reason codes. Writes OUT/report.md and "
                                   "OUT/shadow.json; only events scored while both models were loaded count.")
    p.add_argument("--event-log", required=True, metavar="DIR", help="the directory given to serve --event-log")
    p.add_argument("--out", required=True, metavar="REPORTDIR", help="where report.md and shadow.json go")
    p.add_argument("--max-rows", type=int, default=50, metavar="N",
                   help="flipped sessions listed per direction in report.md (all of them are in shadow.json)")
    p.set_defaults(fn=cmd_shadow_report)

    p = sub.add_parser("replay", help="send an events file to a running scorer (Score + Complete per event)")
    p.add_argument("--target", required=True, help="scorer address HOST:PORT")
    p.add_argument("--events", required=True, help="events file or directory (parquet/csv/jsonl)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="0: as fast as possible; X: X times faster than the recorded timestamps")
    p.add_argument("--concurrency", type=int, default=4,
                   help="worker threads; an account's events always go to the same worker, in order")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N events (by ts)")
    p.add_argument("--deadline-ms", type=float, default=1000.0, help="per-call deadline (fail-open after it)")
    p.add_argument("--hmac-key", help="key for hashing a raw `prompt` column (same as the gateway's)")
    p.add_argument("--tls", action="store_true", help="connect with TLS, verifying the server with the system's CAs")
    p.add_argument("--tls-ca", metavar="PEM", help="CA file verifying the server's certificate (implies --tls)")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate for mutual TLS (implies --tls)")
    p.add_argument("--tls-key", metavar="PEM", help="client private key for mutual TLS")
    p.add_argument("--token-file", metavar="FILE", help="file whose first token is sent as 'authorization: Bearer'")
    p.add_argument("-q", "--quiet", action="store_true", help="no live view, summary only")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("feedback", help="report a wrong verdict (session, correct label, reason) to the "
                                        "labels store, through a scorer or offline",
                       description="Through a running scorer (--target: its ReportFeedback RPC; an empty "
                                   "--session means the account's current implicit session) or straight into "
                                   "a labels store directory (--labels-store, needs --session). Prints the "
                                   "label filed as JSON. Never put prompt text in --reason.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", metavar="HOST:PORT", help="scorer to report to (serve --labels-store)")
    where.add_argument("--labels-store", metavar="DIR", help="append to this labels store directly (offline)")
    p.add_argument("--account", required=True, help="account (API key) whose session got the wrong verdict")
    p.add_argument("--session", default="", help="session id as the scorer named it (ScoreResponse.session_id); "
                                                 "with --target, empty: the account's current implicit session")
    from ..model.schema import LABELS

    p.add_argument("--label", required=True, choices=LABELS, help="the correct label")
    p.add_argument("--reason", required=True, help="why the verdict was wrong (stored as the label's note)")
    p.add_argument("--reported-by", default="", metavar="NAME", help="who reports it")
    p.add_argument("--incident-id", default=None, metavar="ID", help="incident id (default: fb-<12 hex>)")
    p.add_argument("--model-version", default=None,
                   help="--labels-store only: version of the model whose verdict was wrong")
    p.add_argument("--deadline-s", type=float, default=10.0, help="--target: seconds to wait for the scorer")
    p.add_argument("--tls", action="store_true", help="connect with TLS, verifying the server with the system's CAs")
    p.add_argument("--tls-ca", metavar="PEM", help="CA file verifying the server's certificate (implies --tls)")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate for mutual TLS (implies --tls)")
    p.add_argument("--tls-key", metavar="PEM", help="client private key for mutual TLS")
    p.add_argument("--token-file", metavar="FILE", help="file whose first token is sent as 'authorization: Bearer'")
    p.set_defaults(fn=cmd_feedback)

    p = sub.add_parser("bench", help="benchmarks: batch scoring vs read+sort, gRPC scorer vs a no-op server",
                       description="Without --batch, --grpc or --soak, runs batch and gRPC. Results go to "
                                   "WORKDIR/batch_bench.json, WORKDIR/grpc_bench.json and WORKDIR/soak.json.")
    p.add_argument("--model", default=str(DEFAULT_BUNDLE))
    p.add_argument("--batch", action="store_true", help="run the batch-scoring benchmark")
    p.add_argument("--grpc", action="store_true",
                   help="run the gRPC benchmark (h2load + a Python client; h2load is Debian's nghttp2-client)")
    p.add_argument("--events", type=int, default=1_000_000, help="batch: simulated events to score")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default="bench", help="where inputs are cached and results written")
    p.add_argument("--no-per-event", action="store_true", help="batch: skip the --per-event run")
    p.add_argument("--ray", action="store_true",
                   help="batch: also score the same file with --engine ray (a local Ray instance) and "
                        "compare time and output with the local engine")
    p.add_argument("--requests", type=int, default=20000, help="gRPC: h2load requests per run")
    p.add_argument("--concurrency", default="1,8,32,128", help="gRPC: in-flight requests, comma-separated")
    p.add_argument("--connections", type=int, default=1, help="gRPC: HTTP/2 connections the streams share")
    p.add_argument("--repeats", type=int, default=2, help="gRPC: alternating runs per server and concurrency")
    p.add_argument("--py-events", type=int, default=3000, help="gRPC: events per Python-driven run")
    p.add_argument("--no-python", action="store_true", help="gRPC: skip the Python-driven runs")
    p.add_argument("--state-sessions", type=int, default=1_000_000,
                   help="gRPC: live sessions for the session-state memory figure")
    p.add_argument("--scaling", action="store_true",
                   help="scorer qps/p99/CPU with 1 vs 2 worker processes on the in-process store and on a "
                        "throwaway redis-server; Redis share of latency -> WORKDIR/scaling_bench.json")
    p.add_argument("--shadow", action="store_true",
                   help="cost of a shadow model: the in-process scorer with and without a second bundle on "
                        "the same --py-events simulated requests, one at a time and in batches of 32 "
                        "-> WORKDIR/shadow_bench.json")
    p.add_argument("--soak", action="store_true",
                   help="soak a real server on loopback (rates below and above capacity, session churn): "
                        "served/shed/failed and RSS over time -> WORKDIR/soak.json")
    p.add_argument("--soak-seconds", type=float, default=120.0, help="soak: duration of the load")
    p.add_argument("--soak-max-sessions", type=int, default=2_000,
                   help="soak: the server's --max-sessions (small, so eviction runs all along)")
    p.set_defaults(fn=cmd_bench)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else (logging.INFO if a.cmd == "serve" else logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from ..model.schema import SchemaError
    from ..serving.bundle import BundleError

    try:
        return a.fn(a)
    except (SchemaError, BundleError, OSError, ValueError) as e:   # OSError: disk full, permissions...
        print(f"distillguard {a.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
