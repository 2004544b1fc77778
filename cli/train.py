"""`distillguard train`: a model bundle from events + labels (or freshly simulated traffic)."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from .common import add_on_error_args, rejects_misused


def add_parser(sub) -> None:
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
    p.add_argument("--attention-span", type=int, default=None, metavar="S",
                   help="sliding attention: each layer attends to the last S events (default: the "
                        "largest S whose receptive field, layers x (S-1) + 1, fits the window; "
                        "0 = whole-window attention with absolute positions)")
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
    add_on_error_args(p, "OUT.rejects.jsonl, beside the bundle directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=run)


def train_config(a):
    from ..model.network import NetworkConfig, widest_span
    from ..training.train import DEFAULT_PLE_BINS, TrainConfig

    span = widest_span(a.window, a.layers) if a.attention_span is None else a.attention_span
    try:
        net = NetworkConfig(window=a.window, d_model=a.d_model, n_layer=a.layers, n_head=a.heads,
                            ple_bins=DEFAULT_PLE_BINS if a.ple_bins is None else a.ple_bins,
                            attention_span=span)
    except ValueError as e:
        raise SystemExit(f"distillguard train: {e}") from None
    return TrainConfig(seed=a.seed, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                       session_gap_s=a.session_gap_hours * 3600.0, network=net,
                       checkpoint_dir=a.checkpoint_dir, devices=a.devices, strategy=a.strategy,
                       accelerator=a.accelerator)


def run(a) -> int:
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
    if rejects_misused(a):
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
    res = train(events, labels, a.out, train_config(a), progress=not a.quiet, extra_fingerprint=extra,
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
