"""`distillguard shadow-report`: the shadow model's verdicts against the served model's in an event log."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
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
    p.set_defaults(fn=run)


def run(a) -> int:
    from ..serving.shadow_report import shadow_report

    res = shadow_report(a.event_log, a.out, max_rows=a.max_rows)   # ShadowReportError is a ValueError: exit 2
    ev, se = res["events"], res["sessions"]
    print(f"{res['events_compared']:,} events ({res['events_excluded']:,} without a shadow verdict), "
          f"{se['n']:,} sessions; flagged agreement {ev['flagged_agreement']:.2%} of events, "
          f"{se['flagged_agreement']:.2%} of sessions; flips: {len(res['flips']['shadow_flags'])} sessions the "
          f"shadow flags, {len(res['flips']['shadow_clears'])} it clears; report in {Path(a.out) / 'report.md'}")
    return 0
