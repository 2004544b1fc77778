"""Generator B: an independent, frozen traffic generator (issue 13), the yardstick for
cross-generator evaluation. It never trains the shipped model.

Written without reading the project's own simulator (training/simulate.py,
training/prompt_bank.py, docs/simulator.md), from public figures and stated
assumptions; docs/generator_b.md lists every family's mechanism, parameters and sources.
It imports nothing from that simulator and shares no constants with it.

    from distillguard.training.generator_b import BConfig, simulate_b
    events, labels = simulate_b(BConfig(seed=0, accounts=2000, days=3.0))

Frozen: tests/test_generator_b.py pins a digest of its output. A change to what it
writes is its own commit, with its reason, that updates the digest.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ...model.schema import LABELS
from . import benign, common, harvest, humans

HUMAN, BENIGN, HARVEST = LABELS

# name -> (label, weight within its class, generator). Order is part of the frozen output.
_FAMILIES = {
    "b_human_chat_visitor": (HUMAN, 0.36, humans.human_chat),
    "b_human_mobile_quick": (HUMAN, 0.30, humans.human_mobile),
    "b_human_writer_paste": (HUMAN, 0.10, humans.human_writer),
    "b_human_dev_notebook": (HUMAN, 0.12, humans.human_developer),
    "b_human_cohort_campus": (HUMAN, 0.12, humans.human_cohort),
    "b_benign_agent_loop": (BENIGN, 0.30, benign.agent_loop),
    "b_benign_batch_queue": (BENIGN, 0.25, benign.batch_queue),
    "b_benign_eval_harness": (BENIGN, 0.20, benign.eval_run),
    "b_benign_rag_backend": (BENIGN, 0.25, benign.rag_backend),
    "b_harvest_cot_queue": (HARVEST, 0.22, "cot"),
    "b_harvest_self_instruct": (HARVEST, 0.22, "self_instruct"),
    "b_harvest_scripted_dialogue": (HARVEST, 0.18, "dialogue"),
    "b_harvest_lowslow_hours": (HARVEST, 0.23, "lowslow"),
    "b_harvest_zh_campaign": (HARVEST, 0.15, "zh"),
}
FAMILIES_B = tuple(_FAMILIES)
FAMILY_LABEL_B = {f: v[0] for f, v in _FAMILIES.items()}

EVENT_COLUMNS = ("event_id", "account_id", "ts", "prompt_tokens", "completion_tokens", "max_tokens", "model",
                 "status", "client_fingerprint", "ip_prefix", "account_created_at", "prompt")
LABEL_COLUMNS = ("account_id", "label", "family", "campaign")

# Measured: mean events per account per simulated day at the default class mix
# (BConfig(seed=1, accounts=20000, days=3.0); docs/generator_b.md).
EVENTS_PER_ACCOUNT_DAY = 19.3


@dataclasses.dataclass(frozen=True)
class BConfig:
    seed: int = 0
    accounts: int = 2000
    days: float = 3.0
    start: str = "2026-05-11T00:00:00+00:00"       # a Monday (UTC)
    families: tuple[str, ...] | None = None          # None: all of FAMILIES_B
    class_mix: tuple[float, float, float] = (0.6, 0.15, 0.25)   # human, benign, harvesting accounts

    def __post_init__(self):
        if self.accounts < 1:
            raise ValueError(f"accounts must be >= 1, got {self.accounts}")
        if not (self.days > 0):
            raise ValueError(f"days must be > 0, got {self.days}")
        if self.families is not None:
            unknown = sorted(set(self.families) - set(FAMILIES_B))
            if unknown or not self.families:
                raise ValueError(f"unknown families {', '.join(unknown) or '(none given)'}; known: {', '.join(FAMILIES_B)}")
        if len(self.class_mix) != 3 or min(self.class_mix) < 0 or sum(self.class_mix) <= 0:
            raise ValueError(f"class_mix must be three fractions >= 0 with a positive sum, got {self.class_mix}")
        _epoch(self.start)


def _epoch(iso: str) -> float:
    try:
        d = _dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError(f"start must be an ISO-8601 time, got {iso!r}") from e
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.timestamp()


def _largest_remainder(total: int, weights) -> list[int]:
    w = np.asarray(weights, float)
    if total <= 0 or w.sum() <= 0:
        return [0] * len(w)
    raw = w / w.sum() * total
    n = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - n), kind="stable")[: total - n.sum()]:
        n[i] += 1
    return n.tolist()


def allocate(cfg: BConfig) -> dict[str, int]:
    """Accounts per family: the class mix over the classes present, then family weights."""
    fams = cfg.families or FAMILIES_B
    fams = [f for f in FAMILIES_B if f in fams]
    mix = [cfg.class_mix[LABELS.index(c)] if any(FAMILY_LABEL_B[f] == c for f in fams) else 0.0 for c in LABELS]
    if sum(mix) <= 0:
        mix = [1.0 if any(FAMILY_LABEL_B[f] == c for f in fams) else 0.0 for c in LABELS]
    per_class = dict(zip(LABELS, _largest_remainder(cfg.accounts, mix)))
    out: dict[str, int] = {}
    for c in LABELS:
        cf = [f for f in fams if FAMILY_LABEL_B[f] == c]
        for f, n in zip(cf, _largest_remainder(per_class[c], [_FAMILIES[f][1] for f in cf])):
            out[f] = n
    return out


class _Ctx:
    def __init__(self, cfg: BConfig):
        self.seed = cfg.seed
        self.t0 = _epoch(cfg.start)
        self.days = float(cfg.days)
        self.t1 = self.t0 + self.days * common.DAY
        self.out = common.Out()
        self.created: dict[int, float] = {}
        self.campaign: dict[int, str] = {}


def simulate_b(cfg: BConfig = BConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, labels) for `cfg`; same cfg, identical frames. Columns: EVENT_COLUMNS,
    LABEL_COLUMNS (docs/generator_b.md)."""
    ctx = _Ctx(cfg)
    alloc = allocate(cfg)
    ids = common.account_ids(np.random.default_rng([cfg.seed, 7_919]), sum(alloc.values()))
    fam_of: list[str] = []
    for fam, n in alloc.items():
        accs = list(range(len(fam_of), len(fam_of) + n))
        fam_of.extend([fam] * n)
        if n == 0:
            continue
        rng = common.Rng([cfg.seed, FAMILIES_B.index(fam), 1])
        gen = _FAMILIES[fam][2]
        if isinstance(gen, str):
            harvest.campaign_family(rng, ctx, accs, fam.removeprefix("b_harvest_"), harvest.SPECS[gen])
        else:
            gen(rng, ctx, accs)
    o = ctx.out
    if not o.ts:
        raise ValueError(f"{cfg} produced no events")
    acc = np.concatenate(o.acc)
    ts = np.round(np.concatenate(o.ts), 3)
    keep = (ts >= ctx.t0) & (ts < ctx.t1)
    # sort by time; ties by account, then by generation order
    order = np.lexsort((np.arange(len(ts)), acc, ts))
    order = order[keep[order]]
    acc = acc[order]
    created = np.array([ctx.created.get(a, np.nan) for a in range(len(fam_of))])
    mt = np.concatenate(o.mt)[order]
    ids_arr = np.array(ids, dtype=object)
    prompt = np.array(o.prompt, dtype=object)[order]
    o.prompt.clear()
    events = pd.DataFrame({
        "event_id": [f"b{cfg.seed}-{i:08d}" for i in range(len(order))],
        "account_id": ids_arr[acc],
        "ts": ts[order],
        "prompt_tokens": np.concatenate(o.pt)[order].astype(np.int64),
        "completion_tokens": np.concatenate(o.ct)[order].astype(np.int64),
        "max_tokens": pd.array(np.where(mt > 0, mt, 0), dtype="Int64"),
        "model": np.array(common.MODELS, dtype=object)[np.concatenate(o.model)[order]],
        "status": np.concatenate(o.status)[order].astype(np.int64),
        "client_fingerprint": np.array(o.fp, dtype=object)[order],
        "ip_prefix": np.array(o.ip, dtype=object)[order],
        "account_created_at": np.round(created[acc], 3),
        "prompt": prompt,
    })
    del prompt
    events.loc[mt <= 0, "max_tokens"] = pd.NA
    events.loc[events["status"] != 200, "completion_tokens"] = 0
    seen = np.unique(acc)
    labels = pd.DataFrame({
        "account_id": ids_arr[seen],
        "label": [FAMILY_LABEL_B[fam_of[a]] for a in seen],
        "family": [fam_of[a] for a in seen],
        "campaign": [ctx.campaign.get(int(a), "") for a in seen],
    }).sort_values("account_id", kind="stable").reset_index(drop=True)
    return events, labels


def accounts_for_events_b(n_events: int, days: float) -> int:
    """Accounts needed for about n_events over `days` at the default class mix."""
    if n_events < 1 or days <= 0:
        raise ValueError(f"need n_events >= 1 and days > 0, got {n_events}, {days}")
    return max(1, int(round(n_events / (EVENTS_PER_ACCOUNT_DAY * days))))


def write_b(events: pd.DataFrame, labels: pd.DataFrame, out_dir, fmt: str = "parquet") -> tuple[Path, Path]:
    """events.<fmt> (parquet | csv | jsonl) + labels.csv under out_dir. Parquet drops the
    schema metadata, so the bytes depend on the data only."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev_path, lab_path = out / f"events.{fmt}", out / "labels.csv"
    if fmt == "parquet":
        import pyarrow.parquet as pq
        table = pa.Table.from_pandas(events, preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, ev_path)
    elif fmt == "csv":
        events.to_csv(ev_path, index=False, float_format="%.3f")
    elif fmt == "jsonl":
        events.to_json(ev_path, orient="records", lines=True, force_ascii=False, double_precision=15)
    else:
        raise ValueError(f"unknown format {fmt!r}; expected parquet, csv or jsonl")
    labels.to_csv(lab_path, index=False)
    return ev_path, lab_path


__all__ = ["BConfig", "simulate_b", "FAMILIES_B", "FAMILY_LABEL_B", "accounts_for_events_b", "write_b",
           "EVENT_COLUMNS", "LABEL_COLUMNS"]
