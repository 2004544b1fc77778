"""`distillguard evaluate`: metrics of a bundle on labelled events, and its modes.

    evaluate --model M --events E --labels L --report R     one bundle on labelled events
    evaluate compare --model NEW --baseline CUR --events E --labels L --report R
    evaluate holdout [--families F ...] [--out DIR]         leave-one-family-out, simulated
    evaluate robustness [--model M] [--out DIR]             attacker-knob sweeps, simulated
    evaluate cross [--model M] [--out DIR]                  shipped model on generator B; recipe trained on B
    evaluate shift [--model M] (--events E --labels L | --simulate N) [--out DIR]
                                                            one field shifted in human traffic

Old spellings (`--baseline`, `--holdout-families`, `--robustness` on plain `evaluate`) are
rewritten to these with a note on stderr (`legacy_argv`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..serving import DEFAULT_BUNDLE
from .common import add_on_error_args, deprecated, rejects_misused

MODES = ("compare", "holdout", "robustness", "cross", "shift")


def _add_labelled_args(p: argparse.ArgumentParser, *, sub: bool = False) -> None:
    """Options of an evaluation on labelled events, on `evaluate` and again on `compare`.
    sub=True: no defaults of its own, the verb's stand (see common.add_on_error_args), so
    `evaluate --model M compare ...` and `evaluate compare --model M ...` mean the same."""
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)   # noqa: E731
    p.add_argument("--model", default=d(str(DEFAULT_BUNDLE)), help="model bundle (default: the packaged one)")
    p.add_argument("--events", default=d(None), help="labelled events file")
    p.add_argument("--labels", default=d(None), help="labels file")
    p.add_argument("--report", default=d(None), help="report directory (report.md, metrics.json, PNGs)")
    add_on_error_args(p, "REPORT/rejects.jsonl", sub=sub)
    p.add_argument("--n-boot", type=int, default=d(200), help="bootstrap resamples over accounts (default 200)")
    p.add_argument("--seed", type=int, default=d(0), help="random seed (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", default=d(False))


def _report_mode_args(p: argparse.ArgumentParser, out: str, model: bool = True) -> None:
    """--model / --out / -q of a report mode; --model and -q fall back to the verb's own."""
    if model:
        p.add_argument("--model", default=argparse.SUPPRESS, help="model bundle (default: the packaged one)")
    p.add_argument("--out", default=out, help=f"output directory (default {out})")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score labelled events and write a metrics report (modes: compare, "
                                        "holdout, robustness, cross, shift)",
                       description="Without a mode: score --model on --events/--labels and write --report. "
                                   "Modes: `evaluate MODE --help`.")
    _add_labelled_args(p)
    p.set_defaults(fn=run)
    modes = p.add_subparsers(dest="mode", metavar="MODE")

    c = modes.add_parser("compare", help="champion vs challenger: --model against --baseline (docs/registry.md)",
                         description="Paired bootstrap over accounts of --model (the challenger) against "
                                     "--baseline on the same --events/--labels; verdict PROMOTE or REJECT -> "
                                     "REPORT/comparison.json and comparison.md.")
    _add_labelled_args(c, sub=True)
    c.add_argument("--baseline", required=True, metavar="CURRENT",
                   help="the champion: a bundle, or a registry (its current version)")
    c.add_argument("--tolerance", type=float, default=0.01,
                   help="largest allowed drop of any class's recall (absolute; default 0.01)")
    c.add_argument("--fpr-tolerance", type=float, default=None,
                   help="largest allowed rise of the human FPR (default: --tolerance)")
    c.set_defaults(fn=run_compare)

    h = modes.add_parser("holdout", help="leave-one-family-out evaluation on simulated traffic",
                         description="Trains without each FAMILY (none named: every benign-automation and "
                                     "harvesting family) on its own simulated data and tests on it, with the "
                                     "rules and GBT baselines on the same data; --model/--events/--labels are "
                                     "not read.")
    h.add_argument("--families", nargs="*", metavar="FAMILY", default=None, help="families to hold out")
    h.add_argument("--out", default="reports/holdout",
                   help="output directory (holdout.md/json, PNGs, models, data; default reports/holdout)")
    h.add_argument("--include-human", action="store_true", help="with no --families: hold out the human families too")
    h.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="simulation and training seed (default 0)")
    h.add_argument("--epochs", type=int, default=8)
    h.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    h.set_defaults(fn=run_holdout)

    r = modes.add_parser("robustness", help="sweep attacker knobs of the simulator one at a time, score with --model")
    _report_mode_args(r, "reports/robustness")
    r.set_defaults(fn=run_robustness)

    x = modes.add_parser("cross", help="cross-generator evaluation: --model on generator B, the recipe trained on B",
                         description="Scores --model (trained on the project's simulator, generator A) on traffic "
                                     "of the independent generator B, and trains the same recipe on B to score it "
                                     "on A (a check of the method): the 2x2 matrix and per-family tables -> "
                                     "OUT/cross_generator.md/json/png (docs/generator_b.md).")
    _report_mode_args(x, "reports/cross_generator")
    x.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="simulation seed (default 0)")
    x.add_argument("--test-accounts-b", type=int, default=20_000, help="accounts of the B test set (default 20000)")
    x.add_argument("--test-accounts-a", type=int, default=16_500, help="accounts of the A test set (default 16500)")
    x.add_argument("--train-events", type=int, default=600_000,
                   help="B events the check model trains on (default 600000, as `make model` on A)")
    x.add_argument("--epochs", type=int, default=10, help="epochs of the check model (default 10, as `make model`)")
    x.add_argument("--n-boot", type=int, default=argparse.SUPPRESS, help="bootstrap resamples (default 200)")
    x.set_defaults(fn=run_cross)

    s = modes.add_parser("shift", help="field-shift audit: shift one field at a time in human traffic, score with --model",
                         description="Shifts ONE input field at a time in the human traffic of --events/--labels "
                                     "(or of --simulate N simulated accounts) and reports how the human flag rate "
                                     "and distillation recall move -> OUT/shift_audit.json, .md, .png. A shift "
                                     "violates when it raises the human flag rate above 2x base and 1% absolute.")
    _report_mode_args(s, "reports/shift_audit")
    s.add_argument("--events", default=argparse.SUPPRESS, help="labelled events file (base set)")
    s.add_argument("--labels", default=argparse.SUPPRESS, help="labels file, one row per account")
    s.add_argument("--simulate", type=int, default=None, metavar="N",
                   help="instead of --events/--labels: a base set of N simulated accounts (3 days)")
    s.add_argument("--days", type=float, default=3.0, help="days simulated with --simulate (default 3)")
    s.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="simulation and shift seed (default 0)")
    s.add_argument("--n-boot", type=int, default=argparse.SUPPRESS, help="bootstrap resamples over accounts (default 200)")
    s.add_argument("--shifts", nargs="+", metavar="SHIFT", default=None, help="only these shifts (default: all)")
    s.add_argument("--fail-on-violation", action="store_true",
                   help="exit 1 when a shift violates the rule (default: exit 0 with the report)")
    s.set_defaults(fn=run_shift)


# Old flag -> (mode, new flag or None to drop it).
_LEGACY = {"--holdout-families": ("holdout", "--families"), "--holdout-out": ("holdout", "--out"),
           "--holdout-include-human": ("holdout", "--include-human"), "--holdout-seed": ("holdout", "--seed"),
           "--holdout-epochs": ("holdout", "--epochs"), "--robustness": ("robustness", None),
           "--robustness-out": ("robustness", "--out"), "--baseline": ("compare", "--baseline")}
_MODE_FLAG = {"holdout": "--holdout-families", "robustness": "--robustness", "compare": "--baseline"}


def legacy_argv(args: list[str]) -> list[str]:
    """`evaluate`'s arguments in the old spelling (a mode chosen by a flag) rewritten to
    `MODE ...`, with a deprecation note; anything else unchanged. The old forms read all
    their options after `evaluate`, so they all land on the mode's parser."""
    if any(t in MODES for t in args):     # the new spelling (`evaluate [OPTIONS] MODE ...`)
        return args
    modes = [m for m, f in _MODE_FLAG.items() if f in (t.split("=", 1)[0] for t in args)]
    if not modes:
        return args
    if len(modes) > 1:
        print(f"distillguard evaluate: error: {' and '.join(_MODE_FLAG[m] for m in modes)} are separate modes "
              f"now: `distillguard evaluate {modes[0]} ...`, `distillguard evaluate {modes[1]} ...`", file=sys.stderr)
        raise SystemExit(2)     # as argparse exits on a usage error
    mode, out = modes[0], [modes[0]]
    for t in args:
        flag, eq, value = t.partition("=")
        if flag in _LEGACY and _LEGACY[flag][0] == mode:
            if _LEGACY[flag][1] is not None:
                out.append(_LEGACY[flag][1] + eq + value)
        else:
            out.append(t)
    deprecated(f"evaluate {_MODE_FLAG[mode]}", "distillguard evaluate " + " ".join(out))
    return out


def run(a) -> int:
    missing = [f"--{n}" for n in ("events", "labels", "report") if not getattr(a, n)]
    if missing:
        print(f"evaluate: {', '.join(missing)} required (or a mode: evaluate holdout|robustness|compare)",
              file=sys.stderr)
        return 2
    from ..training.evaluate_bundle import run_evaluation

    if rejects_misused(a):
        return 2
    report = run_evaluation(a.model, a.events, a.labels, a.report, progress=not a.quiet,
                            on_error=a.on_error, rejects_path=a.rejects, n_boot=a.n_boot, seed=a.seed)
    print(f"report written to {report}")
    return 0


def run_compare(a) -> int:
    missing = [f"--{n}" for n in ("events", "labels", "report") if not getattr(a, n)]
    if missing:
        print(f"evaluate compare: {', '.join(missing)} required", file=sys.stderr)
        return 2
    if rejects_misused(a):
        return 2
    from ..training.compare import CompareConfig, compare_bundles

    res = compare_bundles(a.model, a.baseline, a.events, a.labels, a.report,
                          CompareConfig(tolerance=a.tolerance, fpr_tolerance=a.fpr_tolerance,
                                        n_boot=a.n_boot, seed=a.seed),
                          on_error=a.on_error, rejects_path=a.rejects)
    print_verdict(res)
    print(f"comparison written to {Path(a.report) / 'comparison.json'} and comparison.md")
    return 0


def print_verdict(res: dict) -> None:
    print(f"verdict: {res['verdict']} (challenger {res['challenger']['version']} vs champion "
          f"{res['champion']['version']}, tolerance {res['tolerance']:g}, human-FPR tolerance {res['fpr_tolerance']:g})")
    for title, items in (("failing", res["failing"]), ("improved", res["improved"])):
        for line in items:
            print(f"  {title}: {line}")
    for w in res["warnings"]:
        print(f"  warning: {w}", file=sys.stderr)


def run_holdout(a) -> int:
    from ..training.holdout import run_holdout as holdout

    rep = holdout(a.out, families=a.families or None, seed=a.seed, epochs=a.epochs,
                  include_human=a.include_human, progress=not a.quiet)
    print(f"held-out-family report written to {Path(a.out) / 'holdout.md'} ({rep['timings']['total_s']} s)")
    return 0


def run_robustness(a) -> int:
    from ..training.robustness import run_robustness as robustness

    robustness(a.model, a.out, progress=not a.quiet)
    print(f"robustness report written to {Path(a.out) / 'robustness.md'}")
    return 0


def run_shift(a) -> int:
    from ..training import shift_audit as sa

    if (a.simulate is not None) == bool(a.events or a.labels):
        print("evaluate shift: give --events and --labels, or --simulate N (not both)", file=sys.stderr)
        return 2
    if a.simulate is None and not (a.events and a.labels):
        print("evaluate shift: --events and --labels go together", file=sys.stderr)
        return 2
    try:
        shifts = sa.shifts_named(a.shifts) if a.shifts else sa.SHIFTS
    except ValueError as e:
        print(f"evaluate shift: {e}", file=sys.stderr)
        return 2
    if a.simulate is not None:
        from ..training.simulate import SimConfig, simulate

        events, labels = simulate(SimConfig(seed=a.seed, accounts=a.simulate, days=a.days))
    else:
        from ..model.labels_io import read_labels
        from ..model.readers import load_events
        from ..serving.event_log import join_completions

        events = sa.frame_of_table(load_events(a.events, join=join_completions))
        labels = read_labels(a.labels).to_pandas()
    rep = sa.run_shift_audit(a.model, events, labels, out_dir=a.out, shifts=shifts, seed=a.seed,
                             n_boot=a.n_boot, progress=not a.quiet)
    print(f"shift audit written to {Path(a.out) / 'shift_audit.md'} ({rep['seconds']} s)")
    lines = sa.describe_violations(rep)
    for line in lines:
        print(f"  violation: {line}")
    if lines and a.fail_on_violation:
        return 1
    return 0


def run_cross(a) -> int:
    from ..training.cross_generator import run_cross_generator

    rep = run_cross_generator(a.out, a.model, seed=a.seed, test_accounts_b=a.test_accounts_b,
                              test_accounts_a=a.test_accounts_a, train_events=a.train_events, epochs=a.epochs,
                              n_boot=a.n_boot, progress=not a.quiet)
    print(f"cross-generator report written to {Path(a.out) / 'cross_generator.md'} ({rep['timings']['total_s']} s)")
    return 0
