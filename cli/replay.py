"""`distillguard replay`: send an events file to a running scorer (Score + Complete per event)."""
from __future__ import annotations

import sys

from .serve import add_signature_key_args, signature_key
from .common import add_client_tls_args



def add_parser(sub) -> None:
    p = sub.add_parser("replay", help="send an events file to a running scorer (Score + Complete per event)")
    p.add_argument("--target", required=True, help="scorer address HOST:PORT")
    p.add_argument("--events", required=True, help="events file or directory (parquet/csv/jsonl)")
    p.add_argument("--speed", type=float, default=0.0,
                   help="0: as fast as possible; X: X times faster than the recorded timestamps")
    p.add_argument("--concurrency", type=int, default=4,
                   help="worker threads; an account's events always go to the same worker, in order")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N events (by ts)")
    p.add_argument("--deadline-ms", type=float, default=1000.0, help="per-call deadline (fail-open after it)")
    p.add_argument("--hmac-key", metavar="KEY",
                   help="frame-signature key inline (prefer --signature-key-file): signs a raw `prompt` column "
                        "as the gateway does; given signatures must carry its key id")
    add_signature_key_args(p)
    add_client_tls_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no live view, summary only")
    p.set_defaults(fn=run)


def run(a) -> int:
    from ..serving.replay import ReplayError, print_summary, replay

    try:
        summary = replay(a.target, a.events, speed=a.speed, concurrency=a.concurrency, limit=a.limit,
                         deadline_s=a.deadline_ms / 1000.0, hmac_key=signature_key(a),
                         show=not a.quiet, tls=a.tls, tls_ca=a.tls_ca, tls_cert=a.tls_cert, tls_key=a.tls_key,
                         token_file=a.token_file)
    except ReplayError as e:
        print(f"distillguard replay: error: {e}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0
