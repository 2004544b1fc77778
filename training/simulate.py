"""Deterministic traffic simulator: API events of human, benign-automation and harvesting accounts.

Every account belongs to one *behaviour family* (a generator below, documented in
docs/simulator.md with its parameters and where each figure comes from). Families of one
class differ; families of different classes overlap on purpose, the way real traffic
does: an eval harness repeats templates like a harvester, humans use popular
"summarise/translate this" frames and paste long documents that get long answers, some
harvesters mimic human timing or hide among natural-looking requests. A detector that
reads one field cannot separate the classes (tests/test_simulate.py checks that).

Generation runs in two phases so the numeric part never depends on the prompt library:
  1. numbers: per family, vectorised over all its accounts: session/run/stream start
     times, per-event tokens, chained timings (a request waits for the previous answer),
     fingerprints, ip prefixes. Each event carries a prompt *key* (source, slot): equal
     keys mean an identical prompt text (a regenerate, an eval item re-run).
  2. prompts: each distinct key is rendered once (training.prompt_bank) and hashed once
     per distinct text (model.templates); only the hash and the reasoning flag are kept
     unless `include_prompts` asks for the text too.
Both phases draw from their own numpy Generator seeded from `SimConfig.seed`, so the
same config gives byte-identical files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from ..model.schema import LABELS

DAY = 86400.0
HOUR = 3600.0

# Model tiers and the generation speed used for latency (tokens/s); assumptions.
MODELS = ("frontier-large", "frontier-medium", "frontier-small")
TOKENS_PER_S = np.array([45.0, 75.0, 130.0])
TTFT_S = np.array([0.9, 0.6, 0.35])          # time to first token per model
SERVER_MAX_TOKENS = 8192                      # cap applied when a client sends no max_tokens
# Gradual release for new accounts (assumed policy): output tokens per UTC day while an
# account is younger than NEW_ACCOUNT_DAYS; beyond it requests get 429.
NEW_ACCOUNT_DAILY_TOKENS = 300_000
NEW_ACCOUNT_DAYS = 30

# Natural prompt styles (prompt_bank.natural_prompt); source ids 0..3.
STYLES = ("chat", "coding", "document", "followup")
NAT_CHAT, NAT_CODING, NAT_DOCUMENT, NAT_FOLLOWUP = range(4)

# ----------------------------------------------------------------------------- clients
BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
)
BROWSER_WEIGHTS = (0.38, 0.2, 0.16, 0.1, 0.1, 0.06)
MOBILE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
)
SDKS = (
    "anthropic-sdk-python/0.34.0", "openai-python/1.40.0", "openai-node/4.52.0",
    "python-httpx/0.27.0", "langchain/0.2.11 python-httpx/0.27.0", "Go-http-client/2.0",
)
IDES = ("vscode-ext/1.92 node/20.14", "jetbrains-ai/2024.2", "cursor/0.40 electron/30")
SCRIPTS = (
    "python-requests/2.31.0", "python-httpx/0.27.0", "aiohttp/3.9.5 python/3.11",
    "curl/8.5.0", "node-fetch/3.3.2", "Go-http-client/2.0", "openai-python/1.40.0",
)
BENIGN_CLIENTS = SDKS + ("python-requests/2.31.0", "okhttp/4.12.0", "aiohttp/3.9.5 python/3.11")

# Residential first octets (illustrative, no meaning) and a handful of "hosting" /16
# blocks that benign cloud jobs, VPN users and datacenter proxies all draw from.
_RESIDENTIAL_A = (24, 47, 49, 58, 62, 68, 71, 73, 76, 81, 82, 86, 90, 98, 99, 101, 109,
                  112, 114, 118, 122, 174, 177, 182, 186, 187, 189, 190, 201)

# Time zones (UTC offset, hours) of human users and the share of each; an assumption
# shaped like a global consumer product (Americas, Europe, Asia).
TZ_OFFSETS = np.array([-8, -7, -6, -5, -4, -3, 0, 1, 2, 3, 5.5, 7, 8, 9, 10])
TZ_WEIGHTS = np.array([12, 4, 7, 14, 3, 4, 8, 12, 5, 3, 8, 3, 9, 5, 3], float)
TZ_WEIGHTS /= TZ_WEIGHTS.sum()


def _norm(x) -> np.ndarray:
    x = np.asarray(x, float)
    return x / x.sum()


# Local-hour activity profiles (24 weights each).
P_HUMAN, P_WORK, P_CODER, P_NIGHT, P_FLAT = range(5)
PROFILES = np.stack([
    _norm([0.8, 0.4, 0.25, 0.15, 0.12, 0.2, 0.5, 1.4, 3.0, 4.6, 5.4, 5.6,
           4.6, 5.0, 5.6, 5.6, 5.2, 4.6, 4.2, 4.8, 5.2, 4.8, 3.6, 1.9]),
    _norm([0.05] * 7 + [0.6, 2.5, 5, 6, 6, 4, 5.5, 6, 6, 5.5, 3, 1, 0.5, 0.3, 0.2, 0.1, 0.05]),
    _norm(0.7 * _norm([0.05] * 7 + [0.6, 2.5, 5, 6, 6, 4, 5.5, 6, 6, 5.5, 3, 1, 0.5, 0.3, 0.2, 0.1, 0.05])
          + 0.3 * _norm([0.8, 0.4, 0.25, 0.15, 0.12, 0.2, 0.5, 1.4, 3.0, 4.6, 5.4, 5.6,
                         4.6, 5.0, 5.6, 5.6, 5.2, 4.6, 4.2, 4.8, 5.2, 4.8, 3.6, 1.9])),
    _norm([1, 4, 5, 5, 4, 2, 0.5] + [0.02] * 16 + [0.5]),
    np.full(24, 1 / 24),
])
PROFILE_CDF = np.cumsum(PROFILES, axis=1)


# ============================================================================ parameters

@dataclass(frozen=True)
class HumanChatParams:
    """Web-app / SDK chat. Turn and token figures: LMSYS-Chat-1M (2.0 turns, 69.5 prompt and
    214.5 response tokens per turn); spreads, rates and timing constants are assumptions."""
    active_day_prob: float = 0.55          # mean share of days the user shows up
    conversations_per_day: float = 3.0     # on an active day (per-user log-normal mean)
    turns_mean: float = 2.0                # LMSYS-Chat-1M
    user_tokens_mean: float = 69.5         # LMSYS-Chat-1M, newest user message
    user_tokens_sigma: float = 1.0
    response_tokens_mean: float = 214.5    # LMSYS-Chat-1M
    response_tokens_sigma: float = 0.8
    read_s_per_token: float = 0.2          # ~4 words/s reading of the previous answer
    type_s_per_token: float = 0.6          # composing the next message
    system_tokens: float = 250.0           # web-app system prompt counted in prompt_tokens
    web_share: float = 0.75
    weekend_factor: float = 0.7
    new_account_share: float = 0.15


@dataclass(frozen=True)
class HumanCodingParams:
    """Coding-assistant bursts: pasted code, follow-ups with growing context, work hours."""
    active_day_prob: float = 0.6
    bursts_per_day: float = 2.0
    turns_mean: float = 6.0
    first_tokens_mean: float = 900.0       # pasted code
    followup_tokens_mean: float = 150.0    # error messages, short asks
    tokens_sigma: float = 1.0
    response_tokens_mean: float = 450.0
    response_tokens_sigma: float = 0.8
    rewrite_share: float = 0.06            # "rewrite the whole file": long answers
    rewrite_tokens_mean: float = 2500.0
    work_s_mean: float = 90.0              # edit/run/test between requests
    read_s_per_token: float = 0.1
    ide_share: float = 0.5
    weekend_factor: float = 0.3
    new_account_share: float = 0.1


@dataclass(frozen=True)
class HumanDocumentsParams:
    """Long pasted documents + a question; popular "summarise/translate this" frames."""
    active_day_prob: float = 0.35
    documents_per_day: float = 1.5
    turns_mean: float = 1.6
    document_tokens_mean: float = 3000.0
    document_tokens_sigma: float = 1.0
    popular_frame_share: float = 0.6       # share of documents asked through a popular frame
    translate_share: float = 0.3           # of those, translations (output ~ input length)
    summary_tokens_mean: float = 350.0
    followup_tokens_mean: float = 60.0
    followup_response_mean: float = 250.0
    read_s_per_token: float = 0.15
    web_share: float = 0.8
    weekend_factor: float = 0.6
    new_account_share: float = 0.15


@dataclass(frozen=True)
class HumanRegenerateParams:
    """Regenerate/follow-up heavy chat: the identical prompt resent after reading an answer."""
    active_day_prob: float = 0.5
    conversations_per_day: float = 2.5
    turns_mean: float = 3.5
    regenerate_prob: float = 0.45          # chance each answer is regenerated (again)
    regenerate_read_s: float = 15.0        # skim before hitting regenerate
    user_tokens_mean: float = 69.5
    user_tokens_sigma: float = 1.0
    response_tokens_mean: float = 214.5
    response_tokens_sigma: float = 0.8
    read_s_per_token: float = 0.2
    type_s_per_token: float = 0.6
    system_tokens: float = 250.0
    web_share: float = 0.85
    weekend_factor: float = 0.7
    new_account_share: float = 0.15


@dataclass(frozen=True)
class BenignBatchParams:
    """Batch pipeline: a few fixed templates, short structured outputs, steady worker rate."""
    templates_max: int = 3
    nightly_share: float = 0.4             # else business hours on weekdays
    runs_per_day: float = 1.0
    items_per_run: float = 120.0
    items_sigma: float = 1.0
    concurrency: tuple = (1, 2, 4, 8)
    record_tokens_mean: float = 600.0
    output_tokens_mean: float = 60.0
    output_tokens_sigma: float = 0.5
    max_tokens: tuple = (512, 1024, 2048)
    overhead_s: float = 0.15               # client work between items of one worker


@dataclass(frozen=True)
class BenignEvalParams:
    """Eval harness: public benchmark items through one template, short answers, concurrent bursts."""
    benchmarks: int = 12                   # global pool shared by all eval accounts
    benchmark_items: float = 600.0
    benchmarks_per_account: int = 3
    runs_per_day: float = 0.6
    subset_share: float = 0.5              # runs that take a random slice of the items
    concurrency: tuple = (4, 8, 16, 32)
    cot_share: float = 0.3                 # accounts running chain-of-thought evals
    answer_tokens_mean: float = 25.0
    cot_tokens_mean: float = 450.0
    item_tokens_mean: float = 350.0
    mc_max_tokens: tuple = (16, 64, 256)
    cot_max_tokens: tuple = (2048, 4096)
    weekend_factor: float = 0.5


@dataclass(frozen=True)
class BenignAgentParams:
    """Tool-using agent loops: context grows by output + tool result each step."""
    tasks_per_day: float = 15.0
    tasks_sigma: float = 0.8
    business_hours_share: float = 0.5      # else 24/7 (customer-facing)
    steps_mean: float = 8.0
    system_tokens_mean: float = 1500.0     # tool specs + instructions
    tool_result_tokens_mean: float = 400.0
    output_tokens_mean: float = 180.0
    output_tokens_sigma: float = 0.7
    tool_s_mean: float = 3.0
    max_tokens: tuple = (1024, 2048, 4096)
    context_cap: int = 120_000
    coding_template_share: float = 0.5     # first step through a coding-task template


@dataclass(frozen=True)
class BenignScheduledParams:
    """Cron-like jobs: fixed period, second-level scheduler jitter, 24/7."""
    jobs_max: int = 2
    periods_s: tuple = (60, 300, 900, 3600, 21600, 86400)
    period_weights: tuple = (0.01, 0.08, 0.2, 0.36, 0.2, 0.15)
    batch_tick_share: float = 0.1          # ticks that send several items back to back
    batch_items_mean: float = 4.0
    scheduler_delay_s: float = 0.8
    prompt_tokens_mean: float = 700.0
    output_tokens_mean: float = 150.0
    max_tokens: tuple = (512, 1024, 2048)


@dataclass(frozen=True)
class HarvestParams:
    """One harvesting campaign style. Rates, pool sizes and shares are assumptions except the
    low-and-slow rate (seed article: 28.8M interactions / 25,000 accounts / ~45 days ≈ 26 per
    account per day). Fields marked (mixed)/(mimic)/(agentic) apply to that family only."""
    kinds: tuple = (("self_instruct", 1.0),)
    campaign_size: float = 25.0            # mean accounts per campaign (log-normal)
    requests_per_day: float = 150.0        # per account, while active
    rate_sigma: float = 0.5                # spread of accounts within a campaign
    campaign_rate_sigma: float = 0.4       # spread between campaigns
    load_balanced_share: float = 0.5       # machine-regular jittered gaps, else Poisson
    jitter: tuple = (0.05, 0.45)           # load-balanced gap = mean * (1 ± jitter)
    concurrency: tuple = (1, 1, 2, 4)
    office_hours_share: float = 0.2        # campaigns running only in the operator's work hours
    pool_size: float = 200.0               # templates per campaign
    paraphrase_share: float = 0.35         # campaigns that paraphrase their templates
    paraphrase_variants: int = 8
    benchmark_share: float = 0.0           # campaigns sweeping the public eval benchmarks
    prompt_tokens_mean: float = 160.0
    prompt_tokens_sigma: float = 0.5
    output_tokens_mean: float = 2500.0
    output_tokens_sigma: float = 0.5
    truncate_prob: float = 0.3             # answers cut at max_tokens (asked for "long, detailed")
    max_tokens: tuple = (4096, 8192, 8192, 16384)
    short_output_share: float = 0.0        # campaigns distilling a narrow task (labels, JSON)
    short_output_tokens_mean: float = 250.0
    aged_account_share: float = 0.15       # bought/aged accounts instead of fresh batches
    naive_retry_share: float = 0.3         # campaigns that keep sending into a 429 quota
    browser_spoof_share: float = 0.25      # campaigns sending a browser User-Agent
    residential_proxy_share: float = 0.6
    proxy_pool: float = 40.0               # /24 prefixes per campaign
    sticky_ip_share: float = 0.4           # one prefix per account instead of rotating
    steps_mean: float = 10.0               # (agentic) steps per trajectory
    tool_result_tokens_mean: float = 600.0  # (agentic)
    cover_share: float = 0.4               # (mixed) share of natural-looking cover requests
    conversations_per_day: float = 9.0     # (mimic)
    turns_mean: float = 3.0                # (mimic)
    read_s_per_token: float = 0.08         # (mimic) fake reading time per previous answer token


FAMILY_PARAMS: dict[str, object] = {
    "human_chat": HumanChatParams(),
    "human_coding": HumanCodingParams(),
    "human_documents": HumanDocumentsParams(),
    "human_regenerate": HumanRegenerateParams(),
    "benign_batch_pipeline": BenignBatchParams(),
    "benign_eval_harness": BenignEvalParams(),
    "benign_agent_loop": BenignAgentParams(),
    "benign_scheduled_job": BenignScheduledParams(),
    "harvest_topic_sweep": HarvestParams(benchmark_share=0.2, short_output_share=0.15),
    "harvest_reasoning": HarvestParams(
        kinds=(("reasoning_trace", 1.0),), requests_per_day=70.0, pool_size=120.0,
        prompt_tokens_mean=220.0, output_tokens_mean=4000.0, output_tokens_sigma=0.6,
        truncate_prob=0.15, max_tokens=(8192, 16384, 32000), concurrency=(1, 2, 2, 4)),
    "harvest_agentic": HarvestParams(
        kinds=(("coding_trajectory", 1.0),), requests_per_day=12.0, pool_size=80.0,
        prompt_tokens_mean=1500.0, output_tokens_mean=900.0, output_tokens_sigma=0.7,
        truncate_prob=0.1, max_tokens=(4096, 8192, 16384), concurrency=(1, 2, 3)),
    "harvest_low_and_slow": HarvestParams(
        kinds=(("self_instruct", 0.6), ("reasoning_trace", 0.4)), campaign_size=60.0,
        requests_per_day=26.0, rate_sigma=0.15, campaign_rate_sigma=0.05, load_balanced_share=0.8, jitter=(0.2, 0.6),
        concurrency=(1,), office_hours_share=0.0, pool_size=300.0, output_tokens_mean=2000.0,
        max_tokens=(2048, 4096, 8192), short_output_share=0.1),
    "harvest_mixed": HarvestParams(
        kinds=(("self_instruct", 0.5), ("structured_extraction", 0.2), ("reasoning_trace", 0.3)),
        requests_per_day=45.0, concurrency=(1,), output_tokens_mean=1500.0, output_tokens_sigma=0.7,
        max_tokens=(2048, 4096, 8192), browser_spoof_share=0.5, short_output_share=0.25),
    "harvest_mimic": HarvestParams(
        kinds=(("self_instruct", 0.5), ("reasoning_trace", 0.5)), concurrency=(1,),
        output_tokens_mean=1800.0, output_tokens_sigma=0.6, max_tokens=(4096, 8192),
        browser_spoof_share=0.8, residential_proxy_share=0.9, sticky_ip_share=0.8,
        aged_account_share=0.3),
}

FAMILY_LABEL = {name: ("human" if name.startswith("human_") else
                       "benign_automation" if name.startswith("benign_") else
                       "distillation_harvesting") for name in FAMILY_PARAMS}

# Share of a class's accounts in each family (assumption).
FAMILY_WEIGHTS = {
    "human_chat": 0.5, "human_coding": 0.2, "human_documents": 0.15, "human_regenerate": 0.15,
    "benign_batch_pipeline": 0.3, "benign_eval_harness": 0.2, "benign_agent_loop": 0.25,
    "benign_scheduled_job": 0.25,
    "harvest_topic_sweep": 0.2, "harvest_reasoning": 0.15, "harvest_agentic": 0.15,
    "harvest_low_and_slow": 0.25, "harvest_mixed": 0.12, "harvest_mimic": 0.13,
}


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    accounts: int = 2000
    days: float = 7.0
    start: str = "2026-04-22T00:00:00Z"
    class_mix: tuple = (0.70, 0.12, 0.18)  # account shares: human, benign, harvest
    families: tuple | None = None          # restrict to these family names
    family_weights: Mapping[str, float] | None = None   # overrides FAMILY_WEIGHTS entries
    params: Mapping[str, Mapping[str, object]] | None = None  # per-family parameter overrides
    campaign_scale: float = 1.0            # multiplies every family's campaign_size
    include_prompts: bool = False          # add the raw `prompt` column (small examples only)
    render_prompts: bool = True            # False: skip phase 2 (frame_signature/elicits null)
    natural_pool: int = 20_000             # distinct natural prompts per style (render+hash cost)
    template_slots: int = 8                # distinct slot fillings per template (render+hash cost)
    hash_key: str | bytes | None = None    # signature key for model.frames.frame_signature
    # Accounts whose creation time the gateway does not know (partner keys, legacy
    # accounts): account_created_at null, same share in every family, so a model learns
    # what a missing age means instead of reading it as a brand-new account.
    age_unknown_share: float = 0.1


# ============================================================================ helpers

def _lognormal(rng: np.random.Generator, mean, sigma, size) -> np.ndarray:
    """Log-normal with the given *mean* (not median)."""
    mean = np.asarray(mean, float)
    sigma = np.asarray(sigma, float)
    return rng.lognormal(np.log(mean) - 0.5 * sigma ** 2, sigma, size)


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group sizes -> (group index, position within group) for each member, groups contiguous."""
    counts = np.asarray(counts, np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    pos = np.arange(int(counts.sum()), dtype=np.int64) - starts[owner]
    return owner, pos


def _seg_cumsum(x: np.ndarray, owner: np.ndarray, pos: np.ndarray, inclusive: bool) -> np.ndarray:
    """Cumulative sum of x restarting at each group (groups contiguous, as from _expand)."""
    cs = np.cumsum(x, dtype=np.float64)
    base = (cs - x)[pos == 0]              # exclusive sum at each non-empty group's start
    gid = np.cumsum(pos == 0) - 1          # rank among non-empty groups
    out = cs - base[gid]
    return out if inclusive else out - x


def _prev(x: np.ndarray, pos: np.ndarray, fill=0) -> np.ndarray:
    """Previous member's value within its group (fill for the first)."""
    out = np.empty_like(x)
    out[1:] = x[:-1]
    out[pos == 0] = fill
    return out


def _latency(comp: np.ndarray, model: np.ndarray) -> np.ndarray:
    return TTFT_S[model] + comp / TOKENS_PER_S[model]


def _cap(comp: np.ndarray, maxtok: np.ndarray) -> np.ndarray:
    limit = np.where(maxtok > 0, maxtok, SERVER_MAX_TOKENS)
    return np.clip(np.rint(comp), 1, limit).astype(np.int64)


def _pick(rng: np.random.Generator, options, n: int, p=None) -> np.ndarray:
    return np.asarray(options)[rng.choice(len(options), n, p=p)]


def _split_sizes(rng: np.random.Generator, n: int, mean: float) -> list[int]:
    """Split n accounts into campaigns of log-normal size (mean `mean`, at least 3)."""
    sizes, left = [], n
    while left > 0:
        s = max(3, int(round(_lognormal(rng, mean, 0.8, None))))
        s = min(s, left)
        if 0 < left - s < 3:               # no campaign of one or two accounts
            s = left
        sizes.append(s)
        left -= s
    return sizes


class _Interner:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.values: list[str] = []

    def __call__(self, values) -> np.ndarray:
        out = np.empty(len(values), np.int64)
        for i, v in enumerate(values):
            j = self.ids.get(v)
            if j is None:
                j = self.ids[v] = len(self.values)
                self.values.append(v)
            out[i] = j
        return out


class _Prompts:
    """Registry of prompt sources. A source is a natural style (ids 0..3) or one template
    (variant) of a registered pool; pools are materialised only in phase 2."""

    def __init__(self) -> None:
        self.pools: list[tuple[tuple, tuple, int, int]] = []   # (key, segments, variants, base)
        self.index: dict[tuple, tuple[int, int]] = {}
        self.next = len(STYLES)

    def pool(self, key: tuple, segments: tuple, n: int, variants: int = 1) -> tuple[int, int]:
        """Register `n` templates split over (kind, weight) segments; -> (base id, n)."""
        if key in self.index:
            return self.index[key]
        w = np.array([s[1] for s in segments], float)
        counts = np.floor(w / w.sum() * n).astype(int)
        counts[0] += n - counts.sum()
        segs = tuple((kind, int(c)) for (kind, _), c in zip(segments, counts) if c > 0)
        base = self.next
        self.pools.append((key, segs, variants, base))
        self.next += n * variants
        self.index[key] = (base, n)
        return base, n


class _Ctx:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng([cfg.seed, 0])
        self.t0 = _epoch(cfg.start)
        self.t1 = self.t0 + cfg.days * DAY
        self.ndays = int(math.ceil(cfg.days))
        self.weekday0 = datetime.fromtimestamp(self.t0, timezone.utc).weekday()
        self.fp = _Interner()
        self.ip = _Interner()
        self.prompts = _Prompts()
        # Hosting /16 blocks shared by benign cloud jobs, VPN users and datacenter proxies.
        self.dc_blocks = [(int(a), int(b)) for a, b in zip(
            self.rng.choice([3, 13, 18, 20, 34, 35, 44, 52, 54, 64, 104, 135, 138, 139, 143,
                             146, 157, 159, 161, 165, 167, 178, 185, 188, 193, 195, 206, 209], 24),
            self.rng.integers(0, 256, 24))]
        n = cfg.accounts
        self.created = np.full(n, np.nan)
        self.rpm = np.full(n, 60, np.int64)
        self.campaign = np.full(n, -1, np.int64)
        self.naive_retry = np.zeros(n, bool)
        self.campaign_ids: list[str] = []
        self.parts: list[dict[str, np.ndarray]] = []

    def residential(self, n: int) -> np.ndarray:
        a = self.rng.choice(_RESIDENTIAL_A, n)
        bc = self.rng.integers(0, 256, (n, 2))
        return self.ip([f"{x}.{y}.{z}.0/24" for x, (y, z) in zip(a.tolist(), bc.tolist())])

    def datacenter(self, n: int) -> np.ndarray:
        blk = self.rng.integers(0, len(self.dc_blocks), n)
        c = self.rng.integers(0, 256, n)
        return self.ip([f"{self.dc_blocks[k][0]}.{self.dc_blocks[k][1]}.{z}.0/24"
                        for k, z in zip(blk.tolist(), c.tolist())])

    def emit(self, acc, ts, ptok, ctok, maxtok, model, fp, ip, src, slot) -> None:
        m = len(ts)
        b = lambda x, dt: np.broadcast_to(np.asarray(x, dt), (m,)).copy()
        self.parts.append(dict(
            acc=b(acc, np.int64), ts=b(ts, np.float64),
            ptok=np.maximum(np.rint(b(ptok, np.float64)), 0).astype(np.int64),
            ctok=np.maximum(np.rint(b(ctok, np.float64)), 0).astype(np.int64),
            maxtok=b(maxtok, np.int64), model=b(model, np.int64), fp=b(fp, np.int64),
            ip=b(ip, np.int64), src=b(src, np.int64), slot=b(slot, np.int64)))

    def daily_starts(self, tz, rate, profile, weekend, active_prob=None):
        """Start times of sessions/runs: per (account, local day) a Poisson count with mean
        rate * weekday factor (* active-day draw), at local hours drawn from `profile`.
        -> (local account index, UTC epoch seconds)."""
        rng, n = self.rng, len(tz)
        days = np.arange(-1, self.ndays + 1)
        is_weekend = ((self.weekday0 + days) % 7) >= 5
        weekend = np.broadcast_to(np.asarray(weekend, float), (n,))
        lam = np.asarray(rate, float)[:, None] * np.where(is_weekend[None, :], weekend[:, None], 1.0)
        if active_prob is not None:
            lam = lam * (rng.random((n, len(days))) < np.asarray(active_prob)[:, None])
        counts = rng.poisson(lam).ravel()
        owner = np.repeat(np.arange(counts.size), counts)
        a, d = owner // len(days), days[owner % len(days)]
        prof = np.broadcast_to(np.asarray(profile), (n,))[a]
        hour = (PROFILE_CDF[prof] < rng.random(len(a))[:, None]).sum(axis=1)
        hour = np.minimum(hour, 23)
        t = self.t0 + d * DAY + (hour + rng.random(len(a))) * HOUR - np.asarray(tz)[a] * HOUR
        return a, t

    def natural_slots(self, n: int) -> np.ndarray:
        return self.rng.integers(0, self.cfg.natural_pool, n)

    def template_slots(self, n: int) -> np.ndarray:
        return self.rng.integers(0, self.cfg.template_slots, n)


def _epoch(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


# ============================================================================ humans

def _human_setup(ctx: _Ctx, accs: np.ndarray, web_share: float, new_share: float,
                 client_kind: str = "web") -> dict[str, np.ndarray]:
    """Per-user attributes shared by the human families."""
    rng, n = ctx.rng, len(accs)
    tz = rng.choice(TZ_OFFSETS, n, p=TZ_WEIGHTS)
    web = rng.random(n) < web_share
    browser = ctx.fp(list(BROWSERS))[rng.choice(len(BROWSERS), n, p=BROWSER_WEIGHTS)]
    other = ctx.fp(list(IDES))[rng.integers(0, len(IDES), n)] if client_kind == "ide" else \
        ctx.fp(list(SDKS))[rng.integers(0, len(SDKS), n)]
    fp1 = np.where(web, browser, other)
    # Second client: phone for web users, the same SDK for API users.
    fp2 = np.where(web, ctx.fp(list(MOBILE))[rng.integers(0, len(MOBILE), n)], fp1)
    ip_home = ctx.residential(n)
    vpn = rng.random(n) < 0.06
    ip_home = np.where(vpn, ctx.datacenter(n), ip_home)
    ip_alt = ctx.residential(n)
    model = rng.choice(3, n, p=[0.35, 0.5, 0.15])
    maxtok = np.where(web, -1, _pick(rng, [512, 1024, 2048, 4096, 8192, -1], n))
    # How long the answers a user asks for run: some want essays or whole files.
    verbosity = _lognormal(rng, 1.0, 0.5, n)
    new = rng.random(n) < new_share
    old_age = np.maximum(_lognormal(rng, 420.0, 0.9, n), 15.0) * DAY
    created = np.where(new, ctx.t0 + rng.uniform(-14 * DAY, max(ctx.cfg.days - 0.5, 0.1) * DAY, n),
                       ctx.t0 - old_age)
    ctx.created[accs] = created
    ctx.rpm[accs] = 50
    return dict(tz=tz, fp1=fp1, fp2=fp2, ip_home=ip_home, ip_alt=ip_alt, model=model,
                maxtok=maxtok, web=web, verbosity=verbosity)


def _human_event_fields(ctx: _Ctx, h: dict, a: np.ndarray, conv: np.ndarray):
    """Client, prefix and model per event; the device/network is chosen per conversation
    (a phone or the office for a whole chat), the model mostly the user's usual one."""
    rng, m = ctx.rng, len(a)
    nc = int(conv.max()) + 1 if m else 0
    phone, away = rng.random(nc) < 0.1, rng.random(nc) < 0.15
    fp = np.where(phone[conv], h["fp2"][a], h["fp1"][a])
    ip = np.where(away[conv], h["ip_alt"][a], h["ip_home"][a])
    model = np.where(rng.random(nc) < 0.9, -1, rng.integers(0, 3, nc))[conv]
    model = np.where(model < 0, h["model"][a], model)
    return fp, ip, model, h["maxtok"][a]


def _active_prob(rng, mean: float, n: int) -> np.ndarray:
    # Beta with the given mean and concentration 4: some users every day, some rarely.
    return rng.beta(4 * mean, 4 * (1 - mean), n)


def _chat_turns(ctx: _Ctx, h: dict, accs, conv_a, conv_t, turns, msg, resp_mean, resp_sigma,
                read_s, compose_s, system_tokens, src, slot):
    """Shared builder for conversational traffic: each turn waits for the previous answer,
    its reading time and the composing of the next message; prompt_tokens carry the
    conversation so far (the API resends history)."""
    rng = ctx.rng
    owner, pos = _expand(turns)
    a = conv_a[owner]
    fp, ip, model, maxtok = _human_event_fields(ctx, h, a, owner)
    comp = _cap(_lognormal(rng, resp_mean * h["verbosity"][a], resp_sigma, len(a)), maxtok)
    prev_comp = _prev(comp, pos)
    gap = (_latency(prev_comp, _prev(model, pos)) + read_s * prev_comp * _lognormal(rng, 1.0, 0.5, len(a))
           + compose_s)
    gap[pos == 0] = 0.0
    ts = conv_t[owner] + _seg_cumsum(gap, owner, pos, inclusive=True)
    ptok = system_tokens + _seg_cumsum((msg + comp).astype(float), owner, pos, inclusive=False) + msg
    ctx.emit(accs[a], ts, ptok, comp, maxtok, model, fp, ip, src, slot)


def gen_human_chat(ctx: _Ctx, accs: np.ndarray, p: HumanChatParams) -> None:
    rng, n = ctx.rng, len(accs)
    h = _human_setup(ctx, accs, p.web_share, p.new_account_share)
    conv_a, conv_t = ctx.daily_starts(h["tz"], _lognormal(rng, p.conversations_per_day, 0.6, n),
                                      P_HUMAN, p.weekend_factor, _active_prob(rng, p.active_day_prob, n))
    turns = rng.geometric(1.0 / p.turns_mean, len(conv_a))
    m = int(turns.sum())
    owner, pos = _expand(turns)
    msg = np.rint(_lognormal(rng, p.user_tokens_mean, p.user_tokens_sigma, m))
    compose = 3.0 + p.type_s_per_token * np.minimum(msg, 200) * _lognormal(rng, 1.0, 0.5, m)
    src = np.where(pos == 0, NAT_CHAT, NAT_FOLLOWUP)
    sys_tok = np.where(h["web"][conv_a[owner]], p.system_tokens, 0.0)
    _chat_turns(ctx, h, accs, conv_a, conv_t, turns, msg, p.response_tokens_mean,
                p.response_tokens_sigma, p.read_s_per_token, compose, sys_tok, src, ctx.natural_slots(m))


def gen_human_coding(ctx: _Ctx, accs: np.ndarray, p: HumanCodingParams) -> None:
    rng, n = ctx.rng, len(accs)
    h = _human_setup(ctx, accs, 1.0 - p.ide_share, p.new_account_share, client_kind="ide")
    # IDE users send max_tokens; some web users too.
    h["maxtok"] = np.where(h["web"], -1, _pick(rng, [4096, 8192, 8192], n))
    conv_a, conv_t = ctx.daily_starts(h["tz"], _lognormal(rng, p.bursts_per_day, 0.6, n),
                                      P_CODER, p.weekend_factor, _active_prob(rng, p.active_day_prob, n))
    turns = rng.geometric(1.0 / p.turns_mean, len(conv_a))
    m = int(turns.sum())
    owner, pos = _expand(turns)
    msg = np.rint(np.where(pos == 0, _lognormal(rng, p.first_tokens_mean, p.tokens_sigma, m),
                           _lognormal(rng, p.followup_tokens_mean, p.tokens_sigma, m)))
    msg = np.minimum(msg, 30_000)
    work = _lognormal(rng, p.work_s_mean, 1.0, m)
    src = np.where(pos == 0, NAT_CODING, np.where(rng.random(m) < 0.5, NAT_CODING, NAT_FOLLOWUP))
    resp = np.where(rng.random(m) < p.rewrite_share, p.rewrite_tokens_mean, p.response_tokens_mean)
    _chat_turns(ctx, h, accs, conv_a, conv_t, turns, msg, resp,
                p.response_tokens_sigma, p.read_s_per_token, work, 400.0, src, ctx.natural_slots(m))


def gen_human_documents(ctx: _Ctx, accs: np.ndarray, p: HumanDocumentsParams) -> None:
    rng, n = ctx.rng, len(accs)
    h = _human_setup(ctx, accs, p.web_share, p.new_account_share)
    conv_a, conv_t = ctx.daily_starts(h["tz"], _lognormal(rng, p.documents_per_day, 0.6, n),
                                      P_HUMAN, p.weekend_factor, _active_prob(rng, p.active_day_prob, n))
    nconv = len(conv_a)
    turns = rng.geometric(1.0 / p.turns_mean, nconv)
    m = int(turns.sum())
    owner, pos = _expand(turns)
    a = conv_a[owner]
    fp, ip, model, maxtok = _human_event_fields(ctx, h, a, owner)
    doc = np.minimum(_lognormal(rng, p.document_tokens_mean, p.document_tokens_sigma, nconv), 150_000)
    frame = rng.random(nconv) < p.popular_frame_share
    translate = frame & (rng.random(nconv) < p.translate_share)
    # Popular frames are one small global pool every human (and some pipelines) draws from.
    sum_base, sum_n = ctx.prompts.pool(("popular", "summarise"), (("summarise", 1.0),), 8)
    tr_base, tr_n = ctx.prompts.pool(("popular", "translate"), (("translate", 1.0),), 4)
    first_src = np.where(translate, tr_base + rng.integers(0, tr_n, nconv),
                         np.where(frame, sum_base + rng.integers(0, sum_n, nconv), NAT_DOCUMENT))
    first_slot = np.where(frame, ctx.template_slots(nconv), ctx.natural_slots(nconv))
    first = pos == 0
    src = np.where(first, first_src[owner], NAT_FOLLOWUP)
    slot = np.where(first, first_slot[owner], ctx.natural_slots(m))
    msg = np.where(first, doc[owner] + 30, np.rint(_lognormal(rng, p.followup_tokens_mean, 1.0, m)))
    # A translation is about as long as the document: long outputs, often at max_tokens.
    resp = np.where(first & translate[owner], doc[owner] * _lognormal(rng, 1.1, 0.2, m),
                    np.where(first, _lognormal(rng, p.summary_tokens_mean * h["verbosity"][a], 0.7, m),
                             _lognormal(rng, p.followup_response_mean * h["verbosity"][a], 0.8, m)))
    comp = _cap(resp, maxtok)
    prev_comp = _prev(comp, pos)
    gap = (_latency(prev_comp, _prev(model, pos)) + p.read_s_per_token * np.minimum(prev_comp, 1500)
           * _lognormal(rng, 1.0, 0.6, m) + 5.0 + 0.6 * np.minimum(msg, 100))
    gap[first] = 0.0
    ts = conv_t[owner] + _seg_cumsum(gap, owner, pos, inclusive=True)
    sys_tok = np.where(h["web"][a], 250.0, 0.0)
    ptok = sys_tok + _seg_cumsum((msg + comp).astype(float), owner, pos, inclusive=False) + msg
    ctx.emit(accs[a], ts, ptok, comp, maxtok, model, fp, ip, src, slot)


def gen_human_regenerate(ctx: _Ctx, accs: np.ndarray, p: HumanRegenerateParams) -> None:
    rng, n = ctx.rng, len(accs)
    h = _human_setup(ctx, accs, p.web_share, p.new_account_share)
    conv_a, conv_t = ctx.daily_starts(h["tz"], _lognormal(rng, p.conversations_per_day, 0.6, n),
                                      P_HUMAN, p.weekend_factor, _active_prob(rng, p.active_day_prob, n))
    turns = rng.geometric(1.0 / p.turns_mean, len(conv_a))
    # Each user message is sent 1 + r times; the copies share prompt text (same key).
    t_owner, t_pos = _expand(turns)
    mt = len(t_owner)
    copies = rng.geometric(1.0 - p.regenerate_prob, mt)
    msg_t = np.rint(_lognormal(rng, p.user_tokens_mean, p.user_tokens_sigma, mt))
    src_t = np.where(t_pos == 0, NAT_CHAT, NAT_FOLLOWUP)
    slot_t = ctx.natural_slots(mt)
    compose_t = 3.0 + p.type_s_per_token * np.minimum(msg_t, 200) * _lognormal(rng, 1.0, 0.5, mt)
    # Events per conversation = sum of copies of its turns; build per-event arrays.
    ev_turn = np.repeat(np.arange(mt), copies)
    copy_idx = np.arange(len(ev_turn)) - np.repeat(np.cumsum(copies) - copies, copies)
    per_conv = np.bincount(t_owner, weights=copies, minlength=len(conv_a)).astype(np.int64)
    owner, pos = _expand(per_conv)
    is_regen = copy_idx > 0
    # A regenerate follows a skim of the answer; a new turn follows reading + composing.
    compose = np.where(is_regen, _lognormal(rng, p.regenerate_read_s, 0.7, len(ev_turn)), compose_t[ev_turn])
    read_s = np.where(is_regen, 0.0, p.read_s_per_token)
    # Only the last copy of a turn enters the history.
    last_copy = np.r_[ev_turn[1:] != ev_turn[:-1], True]
    hist = np.where(last_copy, 1.0, 0.0)
    msg = msg_t[ev_turn]
    sys_tok = np.where(h["web"][conv_a[owner]], p.system_tokens, 0.0)
    a = conv_a[owner]
    fp, ip, model, maxtok = _human_event_fields(ctx, h, a, owner)
    m = len(a)
    comp = _cap(_lognormal(rng, p.response_tokens_mean * h["verbosity"][a], p.response_tokens_sigma, m), maxtok)
    prev_comp = _prev(comp, pos)
    gap = _latency(prev_comp, _prev(model, pos)) + read_s * prev_comp * _lognormal(rng, 1.0, 0.5, m) + compose
    gap[pos == 0] = 0.0
    ts = conv_t[owner] + _seg_cumsum(gap, owner, pos, inclusive=True)
    ptok = sys_tok + _seg_cumsum(hist * (msg + comp), owner, pos, inclusive=False) + msg
    ctx.emit(accs[a], ts, ptok, comp, maxtok, model, fp, ip, src_t[ev_turn], slot_t[ev_turn])


# ============================================================================ benign automation

def _benign_setup(ctx: _Ctx, accs: np.ndarray) -> dict[str, np.ndarray]:
    """Long-lived business accounts on cloud prefixes with SDK/HTTP-library clients."""
    rng, n = ctx.rng, len(accs)
    # A few new integrations are days old: account age alone must not decide.
    young = rng.random(n) < 0.06
    created = np.where(young, ctx.t0 - rng.uniform(2, 30, n) * DAY,
                       ctx.t0 - np.maximum(_lognormal(rng, 500.0, 0.7, n), 30.0) * DAY)
    ctx.created[accs] = created
    ctx.rpm[accs] = rng.choice([300, 600, 1000, 2000, 4000], n)
    fp = ctx.fp(list(BENIGN_CLIENTS))[rng.integers(0, len(BENIGN_CLIENTS), n)]
    # 1-3 egress prefixes, mostly cloud, some on-prem offices (residential-looking).
    ips = np.stack([ctx.datacenter(n), ctx.datacenter(n), ctx.residential(n)], axis=1)
    n_ip = rng.integers(1, 4, n)
    model = rng.choice(3, n, p=[0.2, 0.35, 0.45])
    tz = rng.choice(TZ_OFFSETS, n, p=TZ_WEIGHTS)
    return dict(fp=fp, ips=ips, n_ip=n_ip, model=model, tz=tz)


def _benign_ip(ctx: _Ctx, b: dict, a: np.ndarray) -> np.ndarray:
    k = (ctx.rng.random(len(a)) * b["n_ip"][a]).astype(np.int64)
    return b["ips"][a, k]


def _workers(ctx: _Ctx, run_items: np.ndarray, run_workers: np.ndarray):
    """Split each run's items round-robin over its workers.
    -> (run of worker, worker's items, run of item, worker of item, pos in worker, item index in run)"""
    c = np.minimum(run_workers, np.maximum(run_items, 1))
    w_run, w_pos = _expand(c)
    w_items = run_items[w_run] // c[w_run] + (w_pos < run_items[w_run] % c[w_run])
    i_w, i_pos = _expand(w_items)
    i_run = w_run[i_w]
    item = w_pos[i_w] + c[i_run] * i_pos
    return w_run, w_items, i_run, i_w, i_pos, item


def _run_items(ctx: _Ctx, accs, b, run_a, run_t, run_items, run_workers, overhead, item_fn):
    """Concurrent workers, each sending its items back to back (next after the answer)."""
    rng = ctx.rng
    w_run, w_items, i_run, i_w, i_pos, item = _workers(ctx, run_items, run_workers)
    a = run_a[i_run]
    m = len(a)
    model = b["model"][a]
    maxtok, comp, ptok, src, slot = item_fn(a, i_run, item, m)
    prev = _prev(comp, i_pos)
    gap = _latency(prev, model) + _lognormal(rng, overhead, 0.8, m)
    gap[i_pos == 0] = 0.0
    w_start = run_t[w_run] + rng.uniform(0, 0.5, len(w_run))
    ts = w_start[i_w] + _seg_cumsum(gap, i_w, i_pos, inclusive=True)
    ctx.emit(accs[a], ts, ptok, comp, maxtok, model, b["fp"][a], _benign_ip(ctx, b, a), src, slot)


def gen_benign_batch_pipeline(ctx: _Ctx, accs: np.ndarray, p: BenignBatchParams) -> None:
    rng, n = ctx.rng, len(accs)
    b = _benign_setup(ctx, accs)
    nightly = rng.random(n) < p.nightly_share
    n_tpl = rng.integers(1, p.templates_max + 1, n)
    kinds = ("structured_extraction", "classification", "summarise", "translate")
    kind = rng.choice(len(kinds), n, p=[0.4, 0.35, 0.15, 0.1])
    base = np.array([ctx.prompts.pool(("acct", int(ac)), ((kinds[k], 1.0),), int(t))[0]
                     for ac, k, t in zip(accs, kind, n_tpl)])
    maxtok_acc = _pick(rng, p.max_tokens, n)
    out_mean = _lognormal(rng, p.output_tokens_mean, 0.4, n)
    run_a, run_t = ctx.daily_starts(b["tz"], _lognormal(rng, p.runs_per_day, 0.5, n),
                                    np.where(nightly, P_NIGHT, P_WORK), np.where(nightly, 1.0, 0.1))
    nr = len(run_a)
    items = np.maximum(np.rint(_lognormal(rng, p.items_per_run, p.items_sigma, nr)), 1).astype(np.int64)
    items = np.minimum(items, 20_000)
    workers = _pick(rng, p.concurrency, nr)
    run_tpl = rng.integers(0, 1 << 30, nr) % n_tpl[run_a]   # one template per run

    def item_fn(a, i_run, item, m):
        maxtok = maxtok_acc[a]
        comp = _cap(_lognormal(rng, out_mean[a], p.output_tokens_sigma, m), maxtok)
        ptok = 150 + _lognormal(rng, p.record_tokens_mean, 0.8, m)
        return maxtok, comp, ptok, base[a] + run_tpl[i_run], ctx.template_slots(m)

    _run_items(ctx, accs, b, run_a, run_t, items, workers, p.overhead_s, item_fn)


def gen_benign_eval_harness(ctx: _Ctx, accs: np.ndarray, p: BenignEvalParams) -> None:
    rng, n = ctx.rng, len(accs)
    b = _benign_setup(ctx, accs)
    bench_base, nb = _benchmarks(ctx, p)
    bench_items = ctx.bench_items
    # Each account owns a few benchmarks (indices into the global pool).
    own = rng.random((n, nb)).argsort(axis=1)[:, : p.benchmarks_per_account]
    n_own = rng.integers(1, p.benchmarks_per_account + 1, n)
    cot = rng.random(n) < p.cot_share
    maxtok_acc = np.where(cot, _pick(rng, p.cot_max_tokens, n), _pick(rng, p.mc_max_tokens, n))
    # CI-triggered runs at any hour.
    run_a, run_t = ctx.daily_starts(b["tz"], _lognormal(rng, p.runs_per_day, 0.6, n), P_FLAT,
                                    p.weekend_factor)
    nr = len(run_a)
    bench = own[run_a, rng.integers(0, 1 << 30, nr) % n_own[run_a]]
    total = bench_items[bench]
    subset = rng.random(nr) < p.subset_share
    items = np.where(subset, np.maximum(1, (total * rng.uniform(0.05, 0.5, nr)).astype(np.int64)), total)
    first_item = np.where(subset, rng.integers(0, 1 << 30, nr) % np.maximum(total - items + 1, 1), 0)
    workers = _pick(rng, p.concurrency, nr)

    def item_fn(a, i_run, item, m):
        maxtok = maxtok_acc[a]
        mean = np.where(cot[a], p.cot_tokens_mean, p.answer_tokens_mean)
        comp = _cap(_lognormal(rng, mean, 0.8, m), maxtok)
        ptok = _lognormal(rng, p.item_tokens_mean, 0.6, m)
        # Item k of a benchmark is the same text in every run of every account.
        return maxtok, comp, ptok, bench_base + bench[i_run], first_item[i_run] + item

    _run_items(ctx, accs, b, run_a, run_t, items, workers, 0.02, item_fn)


def _benchmarks(ctx: _Ctx, p: BenignEvalParams | None = None) -> tuple[int, int]:
    """The public benchmark pool: shared by eval harnesses and benchmark-sweeping harvesters."""
    p = p or _params(ctx.cfg, "benign_eval_harness")
    base, nb = ctx.prompts.pool(("benchmarks",), (("eval_item", 1.0),), p.benchmarks)
    if not hasattr(ctx, "bench_items"):
        brng = np.random.default_rng([ctx.cfg.seed, 2])   # fixed sizes whatever the families
        ctx.bench_items = np.clip(np.rint(_lognormal(brng, p.benchmark_items, 0.8, nb)), 100, 5000).astype(np.int64)
    return base, nb


def gen_benign_agent_loop(ctx: _Ctx, accs: np.ndarray, p: BenignAgentParams) -> None:
    rng, n = ctx.rng, len(accs)
    b = _benign_setup(ctx, accs)
    business = rng.random(n) < p.business_hours_share
    coding = rng.random(n) < p.coding_template_share
    n_tpl = rng.integers(1, 4, n)
    base = np.array([ctx.prompts.pool(("acct", int(ac)), (("coding_trajectory" if c else "structured_extraction", 1.0),),
                                      int(k))[0] for ac, c, k in zip(accs, coding, n_tpl)])
    maxtok_acc = _pick(rng, p.max_tokens, n)
    sys_acc = _lognormal(rng, p.system_tokens_mean, 0.5, n)
    task_a, task_t = ctx.daily_starts(b["tz"], _lognormal(rng, p.tasks_per_day, p.tasks_sigma, n),
                                      np.where(business, P_WORK, P_FLAT), np.where(business, 0.2, 1.0))
    nt = len(task_a)
    steps = rng.geometric(1.0 / p.steps_mean, nt)
    owner, pos = _expand(steps)
    a = task_a[owner]
    m = len(a)
    model = b["model"][a]
    maxtok = maxtok_acc[a]
    comp = _cap(_lognormal(rng, p.output_tokens_mean, p.output_tokens_sigma, m), maxtok)
    tool = np.where(pos == 0, 200.0, _lognormal(rng, p.tool_result_tokens_mean, 1.0, m))
    ptok = np.minimum(sys_acc[a] + _seg_cumsum(tool + comp, owner, pos, inclusive=False) + tool, p.context_cap)
    prev = _prev(comp, pos)
    gap = _latency(prev, model) + _lognormal(rng, p.tool_s_mean, 1.0, m)
    gap[pos == 0] = 0.0
    ts = task_t[owner] + _seg_cumsum(gap, owner, pos, inclusive=True)
    task_tpl = rng.integers(0, 1 << 30, nt) % n_tpl[task_a]
    src = np.where(pos == 0, base[a] + task_tpl[owner], NAT_FOLLOWUP)
    slot = np.where(pos == 0, ctx.template_slots(m), ctx.natural_slots(m))
    ctx.emit(accs[a], ts, ptok, comp, maxtok, model, b["fp"][a], _benign_ip(ctx, b, a), src, slot)


def gen_benign_scheduled_job(ctx: _Ctx, accs: np.ndarray, p: BenignScheduledParams) -> None:
    rng, n = ctx.rng, len(accs)
    b = _benign_setup(ctx, accs)
    # Scheduled jobs are mostly plain HTTP clients.
    b["fp"] = np.where(rng.random(n) < 0.5, ctx.fp(["curl/8.5.0", "python-requests/2.31.0", "Go-http-client/2.0"])
                       [rng.integers(0, 3, n)], b["fp"])
    n_jobs = rng.integers(1, p.jobs_max + 1, n)
    j_acc, _ = _expand(n_jobs)
    nj = len(j_acc)
    period = _pick(rng, p.periods_s, nj, p=_norm(p.period_weights)).astype(float)
    phase = np.floor(rng.uniform(0, 1, nj) * period / 60.0) * 60.0   # cron fires on whole minutes
    kinds = ("summarise", "classification", "structured_extraction")
    j_kind = rng.integers(0, 3, nj)
    j_src = np.array([ctx.prompts.pool(("job", int(accs[a]), j), ((kinds[k], 1.0),), 1)[0]
                      for j, (a, k) in enumerate(zip(j_acc, j_kind))])
    j_maxtok = _pick(rng, p.max_tokens, nj)
    j_out = _lognormal(rng, p.output_tokens_mean, 0.4, nj)
    j_prompt = _lognormal(rng, p.prompt_tokens_mean, 0.6, nj)
    j_batch = rng.random(nj) < p.batch_tick_share
    first = np.ceil((ctx.t0 - ctx.t0 % 60 - phase) / period)
    last = np.floor((ctx.t1 - phase) / period)
    n_ticks = np.maximum(last - first + 1, 0).astype(np.int64)
    t_job, t_pos = _expand(n_ticks)
    tick_t = phase[t_job] + (first[t_job] + t_pos) * period[t_job] + np.abs(rng.normal(0, p.scheduler_delay_s, len(t_job)))
    k = np.where(j_batch[t_job], 1 + rng.poisson(p.batch_items_mean - 1, len(t_job)), 1)
    owner, pos = _expand(k)
    job = t_job[owner]
    a = j_acc[job]
    m = len(a)
    model = b["model"][a]
    maxtok = j_maxtok[job]
    comp = _cap(_lognormal(rng, j_out[job], 0.5, m), maxtok)
    ptok = j_prompt[job] * _lognormal(rng, 1.0, 0.3, m)
    gap = _latency(_prev(comp, pos), model) + 0.05
    gap[pos == 0] = 0.0
    ts = tick_t[owner] + _seg_cumsum(gap, owner, pos, inclusive=True)
    ctx.emit(accs[a], ts, ptok, comp, maxtok, model, b["fp"][a], _benign_ip(ctx, b, a), j_src[job],
             ctx.template_slots(m))


# ============================================================================ harvesting

@dataclass
class _Campaign:
    accs: np.ndarray          # global account indices
    start: float
    fps: np.ndarray           # fingerprint ids used by the campaign's tooling
    acc_fp: np.ndarray        # per account
    ips: np.ndarray           # proxy pool (ip ids)
    acc_ip: np.ndarray        # per account sticky prefix
    sticky: bool
    base: int                 # template pool
    bench: bool               # sweeps the public benchmark pool (item = slot)
    pool_n: int
    variants: int
    para_prob: float
    maxtok: int
    model: int
    load_balanced: bool
    jitter: float
    office_tz: float | None   # operator's time zone if it runs only in work hours
    tz: float                 # (mimic) time zone it pretends to live in
    acc_start: np.ndarray     # per account first activity
    acc_end: np.ndarray
    out_mean: float
    acc_out: np.ndarray       # per account output-length multiplier (sub-tasks differ)
    truncate_prob: float
    rate: np.ndarray          # per account requests per day
    workers: np.ndarray       # per account concurrent workers


def _campaigns(ctx: _Ctx, accs: np.ndarray, family: str, p: HarvestParams) -> list[_Campaign]:
    """Group a family's accounts into campaigns that share tooling, proxies and templates;
    accounts are created in batches days before use (or bought aged)."""
    rng = ctx.rng
    out, i = [], 0
    for size in _split_sizes(rng, len(accs), p.campaign_size * ctx.cfg.campaign_scale):
        ca = accs[i:i + size]
        i += size
        cid = len(ctx.campaign_ids)
        ctx.campaign_ids.append(f"camp-{cid:04d}")
        ctx.campaign[ca] = cid
        running = rng.random() < 0.6
        start = ctx.t0 - rng.uniform(0, 20) * DAY if running else ctx.t0 + rng.uniform(0, 0.6 * ctx.cfg.days) * DAY
        # Staggered onboarding of accounts, rotation when banned/burnt.
        acc_start = start + rng.uniform(0, 2 * DAY, size)
        acc_end = acc_start + rng.exponential(30 * DAY, size)
        if rng.random() < p.aged_account_share:
            created = ctx.t0 - rng.uniform(30, 700, size) * DAY
        else:
            n_batch = 1 + rng.poisson(1.0)
            batch_t = start - rng.uniform(0.5, 10, n_batch) * DAY
            created = batch_t[rng.integers(0, n_batch, size)] + rng.exponential(600.0, size)
        ctx.created[ca] = created
        acc_start = np.maximum(acc_start, created + rng.uniform(HOUR, 2 * DAY, size))
        ctx.rpm[ca] = np.where(ctx.t0 - created < 30 * DAY, 50, 200)
        ctx.naive_retry[ca] = rng.random() < p.naive_retry_share
        spoof = rng.random() < p.browser_spoof_share
        tools = ctx.fp(list(SCRIPTS))[rng.choice(len(SCRIPTS), rng.integers(1, 3), replace=False)]
        if spoof:
            tools = np.r_[ctx.fp([BROWSERS[rng.choice(len(BROWSERS), p=BROWSER_WEIGHTS)]]), tools[:1]]
        acc_fp = tools[rng.integers(0, len(tools), size)] if not spoof else \
            np.where(rng.random(size) < 0.85, tools[0], tools[-1])
        sticky = rng.random() < p.sticky_ip_share
        # Rotating proxies spread each account over the pool; sticky exits pin each account
        # to one prefix, several accounts behind each.
        pool = max(2, int(round(size / rng.uniform(2, 5)))) if sticky else \
            max(3, int(round(_lognormal(rng, p.proxy_pool, 0.8, None))))
        ips = ctx.residential(pool) if rng.random() < p.residential_proxy_share else ctx.datacenter(pool)
        para = rng.random() < p.paraphrase_share
        variants = p.paraphrase_variants if para else 1
        bench = rng.random() < p.benchmark_share
        if bench:
            base, pool_n = _benchmarks(ctx)
            variants = 1
        else:
            pool_n = max(5, int(round(_lognormal(rng, p.pool_size, 0.6, None))))
            base, _ = ctx.prompts.pool(("campaign", cid), p.kinds, pool_n, variants)
        maxtok = int(_pick(rng, p.max_tokens, 1)[0])
        short = rng.random() < p.short_output_share
        out_mean = p.output_tokens_mean
        if short:
            maxtok, out_mean = int(rng.choice([512, 1024])), p.short_output_tokens_mean
        if spoof and rng.random() < 0.7:
            maxtok = -1                     # looks like a web client: no max_tokens sent
        office = rng.random() < p.office_hours_share
        rate = _lognormal(rng, p.requests_per_day, p.rate_sigma, size) * _lognormal(rng, 1.0, p.campaign_rate_sigma, None)
        out.append(_Campaign(
            accs=ca, start=start, fps=tools, acc_fp=acc_fp, ips=ips,
            acc_ip=ips[rng.integers(0, len(ips), size)], sticky=sticky, base=base, bench=bench, pool_n=pool_n,
            variants=variants, para_prob=0.7 if para else 0.0, maxtok=maxtok,
            model=0 if rng.random() < 0.85 else 1, load_balanced=rng.random() < p.load_balanced_share,
            jitter=float(rng.uniform(*p.jitter)), office_tz=float(rng.choice([8.0, 3.0, 1.0, -5.0])) if office else None,
            tz=float(rng.choice(TZ_OFFSETS, p=TZ_WEIGHTS)), acc_start=acc_start, acc_end=acc_end,
            out_mean=float(out_mean * _lognormal(rng, 1.0, 0.5, None)), acc_out=_lognormal(rng, 1.0, 0.4, size),
            truncate_prob=float(p.truncate_prob * rng.uniform(0, 2) * (0.2 if short else 1.0)),
            rate=rate,
            workers=_pick(rng, p.concurrency, size)))
    return out


def _harvest_prompts(ctx: _Ctx, c: _Campaign, m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = ctx.rng
    if c.bench:
        bench = rng.integers(0, c.pool_n, m)
        return c.base + bench, rng.integers(0, 1 << 30, m) % ctx.bench_items[bench]
    tpl = rng.integers(0, c.pool_n, m)
    var = np.where(rng.random(m) < c.para_prob, rng.integers(1, max(c.variants, 2), m), 0)
    var = np.minimum(var, c.variants - 1)
    return c.base + tpl * c.variants + var, ctx.template_slots(m)


def _harvest_outputs(ctx: _Ctx, c: _Campaign, p: HarvestParams, la: np.ndarray) -> np.ndarray:
    rng, m = ctx.rng, len(la)
    maxtok = np.full(m, c.maxtok)
    comp = _cap(_lognormal(rng, c.out_mean * c.acc_out[la], p.output_tokens_sigma, m), maxtok)
    limit = c.maxtok if c.maxtok > 0 else SERVER_MAX_TOKENS
    return np.where(rng.random(m) < c.truncate_prob, limit, comp)


def _harvest_net(ctx: _Ctx, c: _Campaign, la: np.ndarray):
    """Fingerprint and proxy prefix per event (la: index within the campaign)."""
    m = len(la)
    ip = c.acc_ip[la] if c.sticky else c.ips[ctx.rng.integers(0, len(c.ips), m)]
    return c.acc_fp[la], ip


def _streams(ctx: _Ctx, c: _Campaign, p: HarvestParams, rate_per_day: np.ndarray, comp_fn):
    """Renewal streams, one per (account, worker): Poisson or load-balanced (jittered but
    machine-regular) gaps, never shorter than the previous answer's latency.
    -> (index within campaign, ts, comp) of kept events."""
    rng = ctx.rng
    workers = c.workers
    s_acc, _ = _expand(workers)
    duty = 1.0
    if c.office_tz is not None:
        duty = float((PROFILES[P_WORK] > 0.02).sum()) / 24.0 * 6.0 / 7.0
    mean_gap = DAY * workers[s_acc] / np.maximum(rate_per_day[s_acc], 1e-3) * duty
    start = np.maximum(c.acc_start[s_acc], ctx.t0 - mean_gap)
    end = np.minimum(c.acc_end[s_acc], ctx.t1)
    lam = np.maximum(end - start, 0) / mean_gap
    cap = np.where(end > start, np.ceil(lam * 1.25 + 4 * np.sqrt(lam) + 3), 0).astype(np.int64)
    owner, pos = _expand(cap)
    m = len(owner)
    la = s_acc[owner]
    comp = comp_fn(la)
    if c.load_balanced:
        g = mean_gap[owner] * (1 + c.jitter * rng.uniform(-1, 1, m))
    else:
        g = rng.exponential(1.0, m) * mean_gap[owner]
    g = np.maximum(g, _latency(_prev(comp, pos), np.full(m, c.model)) + 0.05)
    g[pos == 0] = rng.uniform(0, 1, int((pos == 0).sum())) * mean_gap[cap > 0]
    ts = start[owner] + _seg_cumsum(g, owner, pos, inclusive=True)
    keep = ts < end[owner]
    if c.office_tz is not None:
        hour = ((ts / HOUR + c.office_tz) % 24).astype(np.int64)
        dow = ((np.floor((ts + c.office_tz * HOUR - ctx.t0) / DAY).astype(np.int64) + ctx.weekday0) % 7)
        keep &= (PROFILES[P_WORK][hour] > 0.02) & (dow < 6)
    return la[keep], ts[keep], comp[keep]


def _harvest_stream_family(ctx: _Ctx, accs: np.ndarray, p: HarvestParams, family: str) -> None:
    rng = ctx.rng
    for c in _campaigns(ctx, accs, family, p):
        la, ts, comp = _streams(ctx, c, p, c.rate, lambda la: _harvest_outputs(ctx, c, p, la))
        m = len(la)
        src, slot = _harvest_prompts(ctx, c, m)
        ptok = _lognormal(rng, p.prompt_tokens_mean, p.prompt_tokens_sigma, m)
        fp, ip = _harvest_net(ctx, c, la)
        ctx.emit(c.accs[la], ts, ptok, comp, c.maxtok, c.model, fp, ip, src, slot)


def gen_harvest_topic_sweep(ctx: _Ctx, accs: np.ndarray, p: HarvestParams) -> None:
    _harvest_stream_family(ctx, accs, p, "harvest_topic_sweep")


def gen_harvest_reasoning(ctx: _Ctx, accs: np.ndarray, p: HarvestParams) -> None:
    _harvest_stream_family(ctx, accs, p, "harvest_reasoning")


def gen_harvest_low_and_slow(ctx: _Ctx, accs: np.ndarray, p: HarvestParams) -> None:
    _harvest_stream_family(ctx, accs, p, "harvest_low_and_slow")


def gen_harvest_agentic(ctx: _Ctx, accs: np.ndarray, p: HarvestParams) -> None:
    """Scripted agent trajectories: task starts as streams, then steps with growing context,
    synthetic tool results and sub-second tool time."""
    rng = ctx.rng
    for c in _campaigns(ctx, accs, "harvest_agentic", p):
        # Streams of trajectory starts (rate = trajectories per day); dummy completions.
        la_t, t_t, _ = _streams(ctx, c, p, c.rate, lambda la: np.zeros(len(la)))
        nt = len(la_t)
        steps = rng.geometric(1.0 / p.steps_mean, nt)
        owner, pos = _expand(steps)
        la = la_t[owner]
        m = len(la)
        comp = _harvest_outputs(ctx, c, p, la)
        tool = np.where(pos == 0, 0.0, _lognormal(rng, p.tool_result_tokens_mean, 0.8, m))
        first = _lognormal(rng, p.prompt_tokens_mean, p.prompt_tokens_sigma, nt)
        ptok = np.minimum(first[owner] + _seg_cumsum(tool + comp, owner, pos, inclusive=False) + tool, 150_000)
        gap = _latency(_prev(comp, pos), np.full(m, c.model)) + _lognormal(rng, 0.8, 0.8, m)
        gap[pos == 0] = 0.0
        ts = t_t[owner] + _seg_cumsum(gap, owner, pos, inclusive=True)
        src0, slot0 = _harvest_prompts(ctx, c, nt)
        src = np.where(pos == 0, src0[owner], NAT_CODING)
        slot = np.where(pos == 0, slot0[owner], ctx.natural_slots(m))
        fp, ip = _harvest_net(ctx, c, la)
        keep = ts < np.minimum(c.acc_end[la], ctx.t1)
        ctx.emit(c.accs[la][keep], ts[keep], ptok[keep], comp[keep], c.maxtok, c.model, fp[keep],
                 ip[keep], src[keep], slot[keep])


def gen_harvest_mixed(ctx: _Ctx, accs: np.ndarray, p: HarvestParams) -> None:
    """Harvest requests interleaved with natural-looking chat (LMSYS-like lengths, natural
    prompts) from the same account, fingerprint and proxy."""
    rng = ctx.rng
    chat = _params(ctx.cfg, "human_chat")
    for c in _campaigns(ctx, accs, "harvest_mixed", p):
        la, ts, comp = _streams(ctx, c, p, c.rate, lambda la: _harvest_outputs(ctx, c, p, la))
        m = len(la)
        cover_acc = np.clip(p.cover_share * rng.uniform(0.4, 1.6, len(c.accs)), 0.0, 0.9)
        cover = rng.random(m) < cover_acc[la]
        src, slot = _harvest_prompts(ctx, c, m)
        src = np.where(cover, np.where(rng.random(m) < 0.7, NAT_CHAT, NAT_FOLLOWUP), src)
        slot = np.where(cover, ctx.natural_slots(m), slot)
        ptok = np.where(cover, _lognormal(rng, chat.user_tokens_mean + chat.system_tokens, 0.6, m),
                        _lognormal(rng, p.prompt_tokens_mean, p.prompt_tokens_sigma, m))
        comp = np.where(cover, _cap(_lognormal(rng, chat.response_tokens_mean, chat.response_tokens_sigma, m),
                                    np.full(m, c.maxtok)), comp)
        fp, ip = _harvest_net(ctx, c, la)
        ctx.emit(c.accs[la], ts, ptok, comp, c.maxtok, c.model, fp, ip, src, slot)


def gen_harvest_mimic(ctx: _Ctx, accs: np.ndarray, p: HarvestParams) -> None:
    """Human-mimicking timing: diurnal conversations in a pretend time zone with sleep,
    think-time gaps that scale with the previous answer; the prompts are still campaign
    templates and the answers long."""
    rng = ctx.rng
    for c in _campaigns(ctx, accs, "harvest_mimic", p):
        size = len(c.accs)
        tz = np.full(size, c.tz)
        conv_la, conv_t = ctx.daily_starts(tz, c.rate / p.requests_per_day * p.conversations_per_day,
                                           P_HUMAN, 0.8, np.full(size, 0.9))
        ok = (conv_t >= c.acc_start[conv_la]) & (conv_t < c.acc_end[conv_la])
        conv_la, conv_t = conv_la[ok], conv_t[ok]
        turns = rng.geometric(1.0 / p.turns_mean, len(conv_la))
        owner, pos = _expand(turns)
        la = conv_la[owner]
        m = len(la)
        comp = _harvest_outputs(ctx, c, p, la)
        msg = _lognormal(rng, p.prompt_tokens_mean, p.prompt_tokens_sigma, m)
        prev = _prev(comp, pos)
        gap = (_latency(prev, np.full(m, c.model)) + p.read_s_per_token * prev * _lognormal(rng, 1.0, 0.4, m)
               + _lognormal(rng, 20.0, 0.6, m))
        gap[pos == 0] = 0.0
        ts = conv_t[owner] + _seg_cumsum(gap, owner, pos, inclusive=True)
        # Half the campaigns fake a growing conversation history.
        if rng.random() < 0.5:
            ptok = msg + _seg_cumsum(msg + comp, owner, pos, inclusive=False)
        else:
            ptok = msg
        src, slot = _harvest_prompts(ctx, c, m)
        fp, ip = _harvest_net(ctx, c, la)
        ctx.emit(c.accs[la], ts, ptok, comp, c.maxtok, c.model, fp, ip, src, slot)


GENERATORS: dict[str, Callable[[_Ctx, np.ndarray, object], None]] = {
    "human_chat": gen_human_chat,
    "human_coding": gen_human_coding,
    "human_documents": gen_human_documents,
    "human_regenerate": gen_human_regenerate,
    "benign_batch_pipeline": gen_benign_batch_pipeline,
    "benign_eval_harness": gen_benign_eval_harness,
    "benign_agent_loop": gen_benign_agent_loop,
    "benign_scheduled_job": gen_benign_scheduled_job,
    "harvest_topic_sweep": gen_harvest_topic_sweep,
    "harvest_reasoning": gen_harvest_reasoning,
    "harvest_agentic": gen_harvest_agentic,
    "harvest_low_and_slow": gen_harvest_low_and_slow,
    "harvest_mixed": gen_harvest_mixed,
    "harvest_mimic": gen_harvest_mimic,
}
FAMILIES = tuple(GENERATORS)


# ============================================================================ assembly

def _params(cfg: SimConfig, family: str):
    p = FAMILY_PARAMS[family]
    over = (cfg.params or {}).get(family)
    return replace(p, **over) if over else p


def _allocate(n: int, weights: np.ndarray, at_least_one: bool) -> np.ndarray:
    """Largest-remainder allocation of n into len(weights) parts (deterministic)."""
    k = len(weights)
    if n == 0 or k == 0:
        return np.zeros(k, np.int64)
    base = np.zeros(k, np.int64)
    if at_least_one and n >= k:
        base += 1
        n -= k
    w = np.asarray(weights, float) / np.sum(weights)
    raw = w * n
    out = np.floor(raw).astype(np.int64)
    rem = n - out.sum()
    out[np.argsort(-(raw - out), kind="stable")[:rem]] += 1
    return base + out


def _assign_families(cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Family index (into FAMILIES) per account, shuffled so ids carry no class order."""
    allowed = FAMILIES if cfg.families is None else tuple(cfg.families)
    unknown = set(allowed) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    weights = dict(FAMILY_WEIGHTS, **(cfg.family_weights or {}))
    per_class = [[f for f in FAMILIES if f in allowed and FAMILY_LABEL[f] == lab] for lab in LABELS]
    mix = np.array([m if fams else 0.0 for m, fams in zip(cfg.class_mix, per_class)], float)
    if mix.sum() <= 0:
        raise ValueError("class_mix gives no account to any allowed family")
    n_class = _allocate(cfg.accounts, mix, at_least_one=False)
    fam = []
    for fams, nc in zip(per_class, n_class):
        counts = _allocate(int(nc), np.array([weights[f] for f in fams]), at_least_one=True)
        for f, k in zip(fams, counts):
            fam += [FAMILIES.index(f)] * int(k)
    return rng.permutation(np.array(fam, np.int64))


def _account_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    ids = np.unique(rng.integers(0, 1 << 48, n + 16))
    while ids.size < n:
        ids = np.unique(np.r_[ids, rng.integers(0, 1 << 48, n)])
    ids = rng.permutation(ids)[:n]
    return np.array([f"acct_{v:012x}" for v in ids.tolist()], dtype=object)


def _status(ctx: _Ctx, acc: np.ndarray, ts: np.ndarray, comp: np.ndarray, order: np.ndarray) -> np.ndarray:
    """HTTP-like status. 429 when an account exceeds its requests-per-minute limit, or when
    a young account has used its daily output-token quota (gradual release for new
    accounts, as the seed article recommends; clients keep sending, as naive scripts do);
    rare 500/400 otherwise. `order` sorts by (account, ts)."""
    rng, m = ctx.rng, len(ts)
    a, t, c = acc[order], ts[order], comp[order].astype(np.float64)
    key = a * np.int64(int((ctx.t1 - ctx.t0 + 3 * DAY) * 1000) + 1) + np.rint((t - ctx.t0 + DAY) * 1000).astype(np.int64)
    in_minute = np.arange(m) - np.searchsorted(key, key - 60_000, side="right")
    st = np.full(m, 200, np.int64)
    st[in_minute >= ctx.rpm[a]] = 429
    # Tokens already served today (UTC) before each request; once over quota, all later
    # requests of that day fail, so the running sum of the original completions decides.
    day = np.floor((t - ctx.t0) / DAY).astype(np.int64)
    grp = np.r_[True, (a[1:] != a[:-1]) | (day[1:] != day[:-1])]
    cs = np.cumsum(c)
    used = cs - c - (cs - c)[grp][np.cumsum(grp) - 1]
    young = (t - ctx.created[a]) < NEW_ACCOUNT_DAYS * DAY
    over = young & (used >= NEW_ACCOUNT_DAILY_TOKENS)
    st[over] = 429
    # Quota-aware clients park the account for the rest of the day after the first 429;
    # naive scripts keep sending into the limit.
    first_over = over & np.r_[True, ~over[:-1] | grp[1:]]
    keep = ~over | first_over | ctx.naive_retry[a]
    u = rng.random(m)
    st[(st == 200) & (u < 0.002)] = 429          # capacity: "overloaded, retry later"
    st[(st == 200) & (u > 0.997)] = 500
    st[(st == 200) & (u > 0.994) & (u <= 0.997)] = 400
    out = np.empty(m, np.int64)
    out[order] = st
    keep_out = np.empty(m, bool)
    keep_out[order] = keep
    return out, keep_out


def simulate(cfg: SimConfig = SimConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """-> (events sorted by ts, labels one row per account that has events)."""
    if cfg.accounts <= 0 or cfg.days <= 0:
        raise ValueError("accounts and days must be positive")
    ctx = _Ctx(cfg)
    rng = ctx.rng
    fam = _assign_families(cfg, rng)
    acct_ids = _account_ids(rng, cfg.accounts)
    for i, name in enumerate(FAMILIES):
        accs = np.flatnonzero(fam == i)
        if accs.size:
            GENERATORS[name](ctx, accs, _params(cfg, name))
    ev = {k: np.concatenate([p[k] for p in ctx.parts]) if ctx.parts else np.zeros(0, np.int64)
          for k in ("acc", "ts", "ptok", "ctok", "maxtok", "model", "fp", "ip", "src", "slot")}
    ev["ts"] = np.round(ev["ts"], 3)
    # Window, and nothing before the account existed.
    keep = (ev["ts"] >= ctx.t0) & (ev["ts"] < ctx.t1) & (ev["ts"] >= ctx.created[ev["acc"]] + 60.0)
    ev = {k: v[keep] for k, v in ev.items()}
    seq = np.arange(len(ev["ts"]))       # generation order breaks ties deterministically
    by_acc = np.lexsort((seq, ev["ts"], ev["acc"]))
    status, served = _status(ctx, ev["acc"], ev["ts"], ev["ctok"], by_acc)
    ev = {k: v[served] for k, v in ev.items()}
    status, seq = status[served], seq[served]
    ev["ctok"] = np.where(status == 200, ev["ctok"], 0)
    order = np.lexsort((seq, ev["acc"], ev["ts"]))
    ev = {k: v[order] for k, v in ev.items()}
    status = status[order]
    n = len(order)

    hashes = flags = prompts = None
    if cfg.render_prompts and n:
        hashes, flags, prompts, text_tokens = _render(ctx, ev["src"], ev["slot"], cfg.include_prompts)
        # Token counts come from the family's distributions; never fewer than the visible text.
        ev["ptok"] = np.maximum(ev["ptok"], text_tokens)

    strs = lambda values, idx: pa.array(values, pa.string()).take(pa.array(idx))
    # Own stream: switching the share on or off leaves every other draw as it was.
    age_unknown = np.random.default_rng([cfg.seed, 0xA6E]).random(len(ctx.created)) < cfg.age_unknown_share
    maxtok = pa.array(ev["maxtok"], pa.int64(), mask=ev["maxtok"] < 0)   # replaced below
    cols = {
        "event_id": pa.array([f"evt_{i:09d}" for i in range(n)], pa.string()),
        "account_id": strs(acct_ids, ev["acc"]),
        "ts": pa.array(ev["ts"], pa.float64()),
        "prompt_tokens": pa.array(ev["ptok"], pa.int64()),
        "completion_tokens": pa.array(ev["ctok"], pa.int64()),
        "max_tokens": maxtok,
        "model": strs(MODELS, ev["model"]),
        "status": pa.array(status, pa.int64()),
        "client_fingerprint": strs(ctx.fp.values, ev["fp"]),
        "ip_prefix": strs(ctx.ip.values, ev["ip"]),
        "account_created_at": pa.array(np.round(ctx.created[ev["acc"]], 3), pa.float64(),
                                       mask=age_unknown[ev["acc"]]),
        "frame_signature": hashes if hashes is not None else pa.nulls(n, pa.string()),
        "system_signature": (_system_signatures(ctx, fam, ev["acc"], ev["fp"]) if cfg.render_prompts and n
                             else pa.nulls(n, pa.string())),
        "elicits_reasoning": flags if flags is not None else pa.nulls(n, pa.bool_()),
    }
    if prompts is not None:
        cols["prompt"] = prompts
    events = pa.table(cols).to_pandas()
    # Nullable integer: clients that send no max_tokens leave it null, not NaN in a float column.
    events["max_tokens"] = pd.arrays.IntegerArray(np.maximum(ev["maxtok"], 0), ev["maxtok"] < 0)

    present = np.unique(ev["acc"])
    labels = pd.DataFrame({
        "account_id": pd.array(acct_ids[present], dtype="str"),
        "label": pd.array([FAMILY_LABEL[FAMILIES[f]] for f in fam[present]], dtype="str"),
        "family": pd.array([FAMILIES[f] for f in fam[present]], dtype="str"),
        "campaign": pd.array([ctx.campaign_ids[c] if c >= 0 else "" for c in ctx.campaign[present]], dtype="str"),
    }).sort_values("account_id", kind="stable").reset_index(drop=True)
    return events, labels


def _system_signatures(ctx: _Ctx, fam: np.ndarray, acc: np.ndarray, fp: np.ndarray) -> pa.Array:
    """Per event, the signature of its account's fixed system prompt (prompt_bank.system_prompt_for):
    a campaign's own text (about half send none), an app's per account for benign automation,
    the provider's web app for humans on a browser; null where none is sent."""
    from distillguard.model.frames import system_signature
    from distillguard.training import prompt_bank as pb

    from ..model.features import browser_flag

    key = ctx.cfg.hash_key.encode() if isinstance(ctx.cfg.hash_key, str) else ctx.cfg.hash_key
    browser = np.array([browser_flag(v) == 1 for v in ctx.fp.values], dtype=bool)
    sig_of: dict[str, str] = {}
    out = np.empty(len(acc), dtype=object)
    pairs, inv = np.unique(np.stack([acc, browser[fp].astype(np.int64)]), axis=1, return_inverse=True)
    per_pair = []
    for a, web in pairs.T.tolist():
        label = FAMILY_LABEL[FAMILIES[fam[a]]]
        if label == "distillation_harvesting":
            c = int(ctx.campaign[a])
            text = pb.system_prompt_for(("campaign", c), "campaign") if c >= 0 else None
        elif label == "benign_automation":
            text = pb.system_prompt_for(("acct", int(a)), "app")
        else:
            text = pb.system_prompt_for("web", "web") if web else None
        if text is not None and text not in sig_of:
            sig_of[text] = system_signature(text, key)
        per_pair.append(sig_of[text] if text is not None else None)
    out[:] = [per_pair[i] for i in np.ravel(inv)]
    return pa.array(out.tolist(), pa.string())


def _render(ctx: _Ctx, src: np.ndarray, slot: np.ndarray, keep_text: bool):
    """Phase 2: render each distinct (source, slot) once, hash each distinct text once."""
    from distillguard.model import templates as tm
    from distillguard.training import prompt_bank as pb

    prng = np.random.default_rng([ctx.cfg.seed, 1])
    keys = (src.astype(np.int64) << 32) | slot.astype(np.int64)
    uniq, inv = np.unique(keys, return_inverse=True)
    used_src = set(np.unique(src).tolist())
    # Materialise pools in registration order (deterministic), skipping unused ones.
    bases = np.array([pl[3] for pl in ctx.prompts.pools], np.int64)
    pool_objs: list[list | None] = []
    for key, segs, variants, base in ctx.prompts.pools:
        n = sum(k for _, k in segs)
        if not any(s in used_src for s in range(base, base + n * variants)):
            pool_objs.append(None)
            continue
        tpls = []
        for kind, k in segs:
            tpls += list(pb.template_pool(kind, k, prng))
        pool_objs.append(tpls)
    para: dict[tuple[int, int, int], object] = {}
    key = ctx.cfg.hash_key.encode() if isinstance(ctx.cfg.hash_key, str) else ctx.cfg.hash_key
    hash_of: dict[str, str] = {}
    flag_of: dict[str, bool] = {}
    u_hash = np.empty(len(uniq), dtype=object)
    u_flag = np.empty(len(uniq), dtype=bool)
    u_text = np.empty(len(uniq), dtype=object) if keep_text else None
    u_len = np.empty(len(uniq), dtype=np.int64)
    for i, k in enumerate(uniq.tolist()):
        s = k >> 32
        if s < len(STYLES):
            text = pb.natural_prompt(prng, STYLES[s])
        else:
            pi = int(np.searchsorted(bases, s, side="right") - 1)
            _, segs, variants, base = ctx.prompts.pools[pi]
            t_idx, v = divmod(s - base, variants)
            tpl = pool_objs[pi][t_idx]
            if v:
                pk = (pi, t_idx, v)
                if pk not in para:
                    para[pk] = pb.paraphrase(tpl, prng)
                tpl = para[pk]
            text = tpl.render(prng)
        h = hash_of.get(text)
        if h is None:
            h = hash_of[text] = tm.frame_signature(text, key)
            flag_of[text] = bool(tm.elicits_reasoning(text))
        u_hash[i] = h
        u_flag[i] = flag_of[text]
        u_len[i] = len(text)
        if keep_text:
            u_text[i] = text
    take = pa.array(inv.astype(np.int64))
    hashes = pa.array(u_hash, pa.string()).take(take)
    flags = pa.array(u_flag, pa.bool_()).take(take)
    texts = pa.array(u_text, pa.string()).take(take) if keep_text else None
    return hashes, flags, texts, (u_len[inv] + 3) // 4      # ~4 characters per token


# ============================================================================ files

_EXT = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}


def write(events: pd.DataFrame, labels: pd.DataFrame, out_dir, fmt: str = "parquet",
          include_prompts: bool | None = None) -> tuple[Path, Path]:
    """Write events.<ext> and labels.csv into out_dir. include_prompts: None keeps a
    `prompt` column if the frame has one, False drops it, True requires it."""
    if fmt not in _EXT:
        raise ValueError(f"fmt must be one of {', '.join(_EXT)}, not {fmt!r}")
    if include_prompts and "prompt" not in events.columns:
        raise ValueError("events have no 'prompt' column: simulate with SimConfig(include_prompts=True)")
    if include_prompts is False and "prompt" in events.columns:
        events = events.drop(columns=["prompt"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev_path = out / f"events.{_EXT[fmt]}"
    lab_path = out / "labels.csv"
    if fmt == "parquet":
        import pyarrow.parquet as pq
        table = pa.Table.from_pandas(events, preserve_index=False)
        # Drop pandas metadata so the bytes depend on the data only.
        pq.write_table(table.replace_schema_metadata(None), ev_path)
    elif fmt == "csv":
        events.to_csv(ev_path, index=False)
    else:
        events.to_json(ev_path, orient="records", lines=True, double_precision=15)
    labels.to_csv(lab_path, index=False)
    return ev_path, lab_path


def accounts_for_events(target_events: int, days: float = 7.0, **cfg_kwargs) -> int:
    """Accounts needed for ~target_events events over `days` with this config (numbers
    only, no prompt rendering): a pilot run gives events per account, then up to four
    full-size numeric runs correct it, keeping the closest, because heavy-tailed families
    (minute-period cron jobs, big batch runs, large campaigns) make event counts noisy."""
    base = {**cfg_kwargs, "days": days, "render_prompts": False, "include_prompts": False}
    pilot = 2000
    n = max(1, int(round(target_events / max(len(simulate(SimConfig(**base, accounts=pilot))[0]) / pilot, 1e-9))))
    best, best_err = n, math.inf
    for _ in range(4):
        got = len(simulate(SimConfig(**base, accounts=n))[0])
        err = abs(got - target_events) / max(target_events, 1)
        if err < best_err:
            best, best_err = n, err
        if got == 0 or err <= 0.05:
            break
        n = max(1, int(round(n * target_events / got)))
    return best
