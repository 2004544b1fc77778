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


def pick_families(a, known: tuple, what: str) -> tuple | None:
    """--families / --exclude-families against a generator's `known` names (None: all)."""
    if not (a.families or a.exclude_families):
        return None
    unknown = sorted((set(a.families or ()) | set(a.exclude_families or ())) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
    families = tuple(f for f in (a.families or known) if f not in set(a.exclude_families or ()))
    if not families:
        raise ValueError("--families/--exclude-families leave no family to simulate")
    return families


def sim_config(a):
    from ..training.simulate import FAMILIES, SimConfig, accounts_for_events

    accounts = a.accounts or (accounts_for_events(a.events, a.days) if a.events else SimConfig.accounts)
    families = pick_families(a, FAMILIES, "families")
    return SimConfig(seed=a.seed, accounts=accounts, days=a.days, families=families,
                     include_prompts=getattr(a, "with_prompts", False),
                     **({"start": a.start} if a.start else {}))


def b_config(a):
    """The generator-B config of the same options (--with-prompts is implied)."""
    from ..training.generator_b import FAMILIES_B, BConfig, accounts_for_events_b

    accounts = a.accounts or (accounts_for_events_b(a.events, a.days) if a.events else BConfig.accounts)
    families = pick_families(a, FAMILIES_B, "generator-b families")
    return BConfig(seed=a.seed, accounts=accounts, days=a.days, families=families,
                   **({"start": a.start} if a.start else {}))


def run(a) -> int:
    if getattr(a, "generator", "a") == "b":
        from ..training.generator_b import simulate_b as simulate, write_b as write

        cfg, name = b_config(a), "generator b: "
    else:
        from ..training.simulate import simulate, write

        cfg, name = sim_config(a), ""
    t0 = time.perf_counter()
    events, labels = simulate(cfg)
    ev_path, lab_path = write(events, labels, a.out, fmt=a.format)
    counts = labels["label"].value_counts().to_dict()
    print(f"{name}wrote {len(events):,} events of {len(labels):,} accounts to {ev_path} and labels to {lab_path} "
          f"in {time.perf_counter() - t0:.1f}s; accounts per class: {counts}")
    return 0
