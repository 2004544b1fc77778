"""`distillguard simulate`: labelled synthetic traffic (events + labels)."""
from __future__ import annotations

import argparse
import time


def add_simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--accounts", type=int, default=None, help="number of accounts (default: from --events)")
    p.add_argument("--events", type=int, default=None, help="approximate number of events to generate")
    p.add_argument("--days", type=float, default=7.0, help="simulated days of traffic")
    p.add_argument("--families", nargs="+", metavar="FAMILY",
                   help="only these traffic families (docs/simulator.md lists them)")
    p.add_argument("--exclude-families", nargs="+", metavar="FAMILY",
                   help="every family but these (e.g. train a model that has never seen one)")
    p.add_argument("--start", default=None, help="UTC start of the simulated traffic (ISO-8601)")


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="generate labelled synthetic traffic (events + labels)")
    add_simulate_args(p)
    p.add_argument("--out", required=True, help="output directory (events.<fmt>, labels.csv)")
    p.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet")
    p.add_argument("--with-prompts", action="store_true",
                   help="also write raw synthetic prompt text (small demo files only; implied by --generator b)")
    p.add_argument("--generator", choices=("a", "b"), default="a",
                   help="a: the project's simulator (trains the model); b: the independent, frozen "
                        "yardstick for cross-generator evaluation (docs/generator_b.md; --families take "
                        "its b_* names; always writes prompt text, since signatures are computed from it)")
    p.set_defaults(fn=run)


def sim_config(a):
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


def b_config(a):
    """The generator-B config of the same options (--with-prompts is implied)."""
    from ..training.generator_b import FAMILIES_B, BConfig, accounts_for_events_b

    accounts = a.accounts or (accounts_for_events_b(a.events, a.days) if a.events else BConfig.accounts)
    families = None
    if a.families or a.exclude_families:
        named = set(a.families or ()) | set(a.exclude_families or ())
        unknown = sorted(named - set(FAMILIES_B))
        if unknown:
            raise ValueError(f"unknown generator-b families {', '.join(unknown)}; known: {', '.join(FAMILIES_B)}")
        families = tuple(f for f in (a.families or FAMILIES_B) if f not in set(a.exclude_families or ()))
        if not families:
            raise ValueError("--families/--exclude-families leave no family to simulate")
    return BConfig(seed=a.seed, accounts=accounts, days=a.days, families=families,
                   **({"start": a.start} if a.start else {}))


def run_b(a) -> int:
    from ..training.generator_b import simulate_b, write_b

    cfg = b_config(a)
    t0 = time.perf_counter()
    events, labels = simulate_b(cfg)
    ev_path, lab_path = write_b(events, labels, a.out, fmt=a.format)
    counts = labels["label"].value_counts().to_dict()
    print(f"generator b: wrote {len(events):,} events of {len(labels):,} accounts to {ev_path} and labels to "
          f"{lab_path} in {time.perf_counter() - t0:.1f}s; accounts per class: {counts}")
    return 0


def run(a) -> int:
    if getattr(a, "generator", "a") == "b":
        return run_b(a)
    from ..training.simulate import simulate, write

    cfg = sim_config(a)
    t0 = time.perf_counter()
    events, labels = simulate(cfg)
    ev_path, lab_path = write(events, labels, a.out, fmt=a.format)
    counts = labels["label"].value_counts().to_dict()
    print(f"wrote {len(events):,} events of {len(labels):,} accounts to {ev_path} and labels to {lab_path} "
          f"in {time.perf_counter() - t0:.1f}s; accounts per class: {counts}")
    return 0
