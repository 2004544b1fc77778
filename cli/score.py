"""`distillguard score`: batch-score an events file, one row per session (or per event)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..serving import DEFAULT_BUNDLE
from .serve import add_signature_key_args, signature_key
from .common import add_on_error_args, rejects_misused



def add_parser(sub) -> None:
    p = sub.add_parser("score", help="batch-score an events file: one row per session")
    p.add_argument("--model", default=str(DEFAULT_BUNDLE), help="model bundle directory")
    p.add_argument("--input", required=True, help="events file or directory")
    p.add_argument("--output", required=True, help="output file (.parquet, .csv or .jsonl)")
    p.add_argument("--per-event", action="store_true", help="one row per event (score at every event)")
    p.add_argument("--hmac-key", metavar="KEY",
                   help="frame-signature key inline (prefer --signature-key-file): signs a raw `prompt` column "
                        "as the gateway does; given signatures must carry its key id")
    add_signature_key_args(p)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    add_on_error_args(p, "OUTPUT.rejects.jsonl")
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
    p.set_defaults(fn=run)


def run(a) -> int:
    from ..serving.batch import score_file

    if rejects_misused(a):
        return 2
    if a.engine != "ray" and (a.address or a.spill_dir or a.actors):
        print("distillguard score: error: --address, --actors and --spill-dir need --engine ray", file=sys.stderr)
        return 2
    from ..serving.batch_ray import RayEngineError

    try:
        stats = score_file(a.model, a.input, a.output, per_event=a.per_event, progress=not a.quiet,
                           hmac_key=signature_key(a), threads=a.threads,
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
