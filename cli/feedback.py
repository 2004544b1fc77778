"""`distillguard feedback`: report a wrong verdict to the labels store, through a scorer or offline."""
from __future__ import annotations

import argparse
import json
import sys

from .common import add_client_tls_args

# append_feedback names fields as the RPC does; the command's flags for them.
_FEEDBACK_FLAGS = {"account_id": "--account", "session_id": "--session", "correct_label": "--label",
                   "reason": "--reason", "reported_by": "--reported-by", "incident_id": "--incident-id",
                   "model_version": "--model-version"}


def _label(value: str) -> str:
    # Checked when given, not as argparse choices: LABELS lives with the schema, whose import
    # (numpy, pyarrow) every `--help` would otherwise pay.
    from ..model.schema import LABELS

    if value not in LABELS:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(LABELS)})")
    return value


def add_parser(sub) -> None:
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
    p.add_argument("--label", required=True, type=_label, metavar="LABEL",
                   help="the correct label: human, benign_automation or distillation_harvesting")
    p.add_argument("--reason", required=True, help="why the verdict was wrong (stored as the label's note)")
    p.add_argument("--reported-by", default="", metavar="NAME", help="who reports it")
    p.add_argument("--incident-id", default=None, metavar="ID", help="incident id (default: fb-<12 hex>)")
    p.add_argument("--model-version", default=None,
                   help="--labels-store only: version of the model whose verdict was wrong")
    p.add_argument("--deadline-s", type=float, default=10.0, help="--target: seconds to wait for the scorer")
    add_client_tls_args(p)
    p.set_defaults(fn=run)


def run(a) -> int:
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
