"""False-positive feedback: a wrong verdict reported by the gateway or support, appended to
the labels store so the next training run learns from it.

A report is one JSON line in `STORE/feedback-YYYYMMDD.jsonl` (UTC day of `labelled_at`),
with exactly the incident-label columns the labels reader takes (design: incident labels):

    {"session_id": "acct_1:0", "account_id": "acct_1", "label": "human",
     "incident_id": "fb-1a2b3c4d5e6f", "labelled_at": "2026-11-28T12:34:56.789Z",
     "note": "support ticket 4411: customer's nightly export", "source": "feedback",
     "reported_by": "support@example", "model_version": "20261127-..."}

`session_id` is the session name the scorer resolved (ScoreResponse.session_id, the event
log's `session_id`): the row labels that session of that account, never the whole account.
`model_version` is the model whose verdict was wrong, null when unknown.

Writers: the scorer's `ReportFeedback` RPC (in each server process; several workers may
share one store) and `distillguard feedback --labels-store DIR` offline. Each report is one
`os.write` of the whole line on an O_APPEND descriptor, then fsync: appends from any
number of processes land whole, one after another, never interleaved, and a report that
was answered is on disk. No prompt text is ever part of a report: the row holds the ids,
the label, the reporter's reason and the model version, nothing taken from requests.

Storage the server writes, so it ranks with serving; training reads the store through
`training.labels`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from pathlib import Path

from ..model.schema import LABELS
from ..model.files import fsync_dir

__all__ = ["FeedbackError", "append_feedback", "feedback_path", "FEEDBACK_COLUMNS", "MAX_ID_BYTES",
           "MAX_REASON_BYTES"]

# The row's keys, in order: the incident-label columns (training/labels.py reads them).
FEEDBACK_COLUMNS = ("session_id", "account_id", "label", "incident_id", "labelled_at", "note", "source",
                    "reported_by", "model_version")
# Same bounds as the scorer's RequestLimits defaults (ids 256 B, strings 1 KiB): a report the
# server accepted always fits here too.
MAX_ID_BYTES = 256
MAX_REASON_BYTES = 1024


class FeedbackError(ValueError):
    """A report field is out of contract; `field` names it (the RPC's field name)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def _text(field_name: str, value, limit: int, *, required: bool) -> str | None:
    """Checked text: str, valid UTF-8, at most `limit` bytes; '' (or None) -> None unless required."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise FeedbackError(field_name, f"expected text, got {type(value).__name__}")
    if not value.strip():
        if required:
            raise FeedbackError(field_name, "required, non-empty")
        return None
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:      # lone surrogates (e.g. undecodable command-line bytes)
        raise FeedbackError(field_name, "not valid UTF-8 text") from None
    if n > limit:
        # The value is not echoed: it may be huge, and reasons can be sensitive.
        raise FeedbackError(field_name, f"longer than {limit} UTF-8 bytes (got {n})")
    return value


def _utc(labelled_at) -> dt.datetime:
    if labelled_at is None:
        return dt.datetime.now(dt.timezone.utc)
    if isinstance(labelled_at, dt.datetime):
        if labelled_at.tzinfo is None:
            raise FeedbackError("labelled_at", "a naive datetime is ambiguous: give a timezone-aware one (UTC)")
        return labelled_at.astimezone(dt.timezone.utc)
    if isinstance(labelled_at, (int, float)) and not isinstance(labelled_at, bool):
        try:
            return dt.datetime.fromtimestamp(float(labelled_at), dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise FeedbackError("labelled_at", f"not a usable epoch time: {labelled_at!r}") from None
    raise FeedbackError("labelled_at", f"expected a timezone-aware datetime or epoch seconds, "
                                       f"got {type(labelled_at).__name__}")


def _iso(t: dt.datetime) -> str:
    # Milliseconds and a literal Z: what the label and event loaders parse as zoned ISO-8601.
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def feedback_path(store_dir: str | os.PathLike, when: dt.datetime) -> Path:
    """The day file a report labelled at `when` (UTC) goes to."""
    return Path(store_dir) / f"feedback-{when.astimezone(dt.timezone.utc):%Y%m%d}.jsonl"


def new_incident_id() -> str:
    return "fb-" + secrets.token_hex(6)


def append_feedback(store_dir: str | os.PathLike, *, account_id: str, session_id: str, label: str, reason: str,
                    reported_by: str = "", incident_id: str | None = None, model_version: str | None = None,
                    labelled_at: dt.datetime | float | None = None) -> dict:
    """Append one report to STORE/feedback-YYYYMMDD.jsonl (the directory is created) and
    return the row written. Raises FeedbackError naming the bad field before anything is
    written, OSError when the store cannot be written (a line cut short by a full disk is
    cut off again, so the file keeps whole lines).

    Field names in errors are the RPC's (FeedbackRequest): account_id, session_id,
    correct_label, reason, reported_by, incident_id; plus model_version, labelled_at.

    session_id: the session as the scorer named it (required: an account's implicit
    session only has a name the scorer gives it, so the RPC resolves an empty one first).
    label: the correct class, one of LABELS. reason: why the verdict was wrong (stored as
    `note`). incident_id: None/'' -> a fresh "fb-<12 hex>". labelled_at: None -> now."""
    account_id = _text("account_id", account_id, MAX_ID_BYTES, required=True)
    session_id = _text("session_id", session_id, MAX_ID_BYTES, required=True)
    if label not in LABELS:
        shown = repr(label)[:80] if isinstance(label, str) else type(label).__name__
        raise FeedbackError("correct_label", f"expected one of {', '.join(LABELS)}, got {shown}")
    note = _text("reason", reason, MAX_REASON_BYTES, required=True)
    reported_by = _text("reported_by", reported_by, MAX_ID_BYTES, required=False)
    incident_id = _text("incident_id", incident_id, MAX_ID_BYTES, required=False) or new_incident_id()
    model_version = _text("model_version", model_version, MAX_ID_BYTES, required=False)
    when = _utc(labelled_at)
    row = {"session_id": session_id, "account_id": account_id, "label": label, "incident_id": incident_id,
           "labelled_at": _iso(when), "note": note, "source": "feedback", "reported_by": reported_by,
           "model_version": model_version}
    line = (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")

    store = Path(store_dir)
    store.mkdir(parents=True, exist_ok=True)
    path = feedback_path(store, when)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        # One write of the whole line: with O_APPEND the kernel places it at the end as a
        # unit, so concurrent writers (threads, server workers) never interleave lines.
        n = os.write(fd, line)
        if n != len(line):
            # Short write: the disk (or RLIMIT_FSIZE) filled mid-line. Cut our fragment off
            # when nothing was appended after it, so the file stays whole lines; then fail.
            end = os.lseek(fd, 0, os.SEEK_CUR)
            if os.fstat(fd).st_size == end:
                os.ftruncate(fd, end - n)
            raise OSError(f"{path}: short write ({n} of {len(line)} bytes; disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(store, best_effort=True)   # the new day file's directory entry is durable too
    return row


