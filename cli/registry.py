"""`distillguard promote`, `rollback`, `registry`: a model registry's pointers (docs/registry.md)."""
from __future__ import annotations

import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("promote", help="make a bundle a registry's current (or shadow) model, behind the "
                                       "champion-vs-challenger gate",
                       description="Adds the bundle to the registry (versions/vNNNN, reused when the same files "
                                   "are there) and points `current` at it, if a comparison of exactly this bundle "
                                   "against the current version says PROMOTE. Servers started with --model REG "
                                   "switch within --registry-poll-s. Exit 1 when refused. docs/registry.md")
    p.add_argument("--registry", required=True, metavar="REG", help="registry directory (registry --init makes one)")
    p.add_argument("--bundle", required=True, metavar="NEW", help="the challenger bundle directory")
    p.add_argument("--comparison", metavar="JSON",
                   help="comparison.json (or its directory) from `evaluate compare --model NEW --baseline REG`")
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
    p.set_defaults(fn=run_promote)

    p = sub.add_parser("rollback", help="point a registry's current back at the version it replaced",
                       description="Undoes the latest promotion not yet rolled back; repeat to walk further "
                                   "back. Exit 1 when there is nothing to roll back to.")
    p.add_argument("--registry", required=True, metavar="REG")
    p.add_argument("--note", help="free text kept in history.jsonl")
    p.set_defaults(fn=run_rollback)

    p = sub.add_parser("registry", help="list a model registry's versions, pointers and history (or create one)")
    p.add_argument("--registry", required=True, metavar="REG")
    p.add_argument("--init", action="store_true", help="create an empty registry at REG (fine if it exists)")
    p.add_argument("--clear-shadow", action="store_true", help="remove the shadow pointer (recorded)")
    p.add_argument("--note", help="with --clear-shadow: free text kept in history.jsonl")
    p.add_argument("--history", type=int, default=20, metavar="N", help="history entries shown (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=run_registry)


def run_promote(a) -> int:
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


def run_rollback(a) -> int:
    from ..serving.registry import Registry, RegistryError

    reg = Registry(a.registry)
    try:
        e = reg.rollback(note=a.note)
    except RegistryError as err:
        print(f"distillguard rollback: {err}", file=sys.stderr)
        return 1
    print(f"current -> {e['to']} ({e['bundle_version']}); was {e['from']}")
    return 0


def run_registry(a) -> int:
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
