"""Shared machinery of generator B: the event accumulator, model latency, human reading /
typing times, diurnal time sampling, account ids and network identity.

Every figure below names its source or says "assumption". Nothing here is shared with
the project's other simulator (training/simulate.py): this package was written without
reading it, from public figures (docs/generator_b.md).
"""
from __future__ import annotations

import bisect

import numpy as np

DAY = 86_400.0

# Model names of generator B's fictional provider, and their decode speeds (tokens/s).
# Assumption: public API decode speeds of large / small / code / reasoning models span
# roughly 40-170 tokens/s (provider dashboards); each request gets x U(0.8, 1.2).
MODELS = ("lyra-3-pro", "lyra-3-flash", "lyra-3-code", "lyra-3-think", "lyra-2.5-pro", "lyra-2.5-flash")
MODEL_SPEED = np.array([60.0, 140.0, 85.0, 45.0, 55.0, 120.0])
# The fastest any request decodes: the lower bound the tests use for generation latency.
MAX_TOKENS_PER_S = float(MODEL_SPEED.max() * 1.2)
M_PRO, M_FLASH, M_CODE, M_THINK, M_PRO25, M_FLASH25 = range(len(MODELS))

# Reading. Brysbaert (2019), "How many words do we read per minute?": silent reading of
# English non-fiction ~238 wpm. Per user x lognormal(0.25), clipped to [150, 400] wpm;
# skimming users read a fraction U(0.3, 1) of the answer at 1.5-3x their speed (assumption).
READ_WPM = 238.0
READ_WPM_MAX = 400.0
SKIM_SPEEDUP_MAX = 3.0
SKIM_FRACTION_MIN = 0.3
# Assumption (provider rule of thumb): one token ~ 0.75 English words.
WORDS_PER_TOKEN = 0.75


def reading_lower_bound_s(completion_tokens):
    """The least time any generator-B human spends on an answer of this many tokens."""
    words = np.asarray(completion_tokens, dtype=float) * WORDS_PER_TOKEN
    return SKIM_FRACTION_MIN * words / (READ_WPM_MAX * SKIM_SPEEDUP_MAX / 60.0)


def generation_lower_bound_s(completion_tokens):
    return np.asarray(completion_tokens, dtype=float) / MAX_TOKENS_PER_S


# Typing. Dhakal et al. (2018), 136M keystrokes: mean 51.6 wpm on physical keyboards
# (sd ~20). Palin et al. (2019), mobile typing: mean 36.2 wpm. CJK via IME: ~60
# characters/min (assumption). Messages over ~120 words are pasted (2-10 s, assumption).
TYPE_WPM_DESKTOP = 51.6
TYPE_WPM_MOBILE = 36.2
IME_CHARS_PER_MIN = 60.0

# Human statuses (assumption): a few server errors / overloads, rare rate limits and
# request errors. Harvesters push limits: more 429s.
HUMAN_STATUS = (np.array([200, 500, 529, 429, 400]), np.array([0.982, 0.005, 0.006, 0.004, 0.003]))
BOT_STATUS = (np.array([200, 429, 529, 500, 400]), np.array([0.955, 0.03, 0.008, 0.004, 0.003]))

# Assumed time-of-day curve of human chat use (local hour 0..23, relative): a night
# trough 2-6 h, a plateau 10-17 h, a second evening peak ~21 h. Shape of published
# hourly usage plots of consumer chat products; the numbers are an assumption.
HUMAN_HOURS = np.array([0.30, 0.18, 0.10, 0.07, 0.06, 0.08, 0.16, 0.32, 0.55, 0.80, 0.95, 1.00,
                        0.95, 0.95, 1.00, 1.00, 0.95, 0.85, 0.80, 0.85, 0.92, 0.90, 0.70, 0.48])
# Office hours (developers, eval runs, company tools): 9-18 h weekdays (assumption).
WORK_HOURS = np.array([0.02, 0.01, 0.01, 0.01, 0.01, 0.02, 0.05, 0.20, 0.60, 0.95, 1.0, 1.0,
                       0.75, 0.95, 1.0, 1.0, 0.95, 0.75, 0.45, 0.30, 0.25, 0.22, 0.12, 0.05])
FLAT_HOURS = np.ones(24)

# Time zones of the simulated users (UTC offset hours, weight) and the languages they
# write in (assumption: an English-majority provider with sizeable Spanish, German,
# Chinese and Japanese speaking users).
TZ_LANG = [(-8, "en", 0.12), (-6, "en", 0.08), (-5, "en", 0.16), (-5, "es", 0.04), (-3, "es", 0.05),
           (0, "en", 0.10), (1, "de", 0.09), (1, "es", 0.05), (1, "en", 0.06), (5.5, "en", 0.07),
           (8, "zh", 0.08), (8, "en", 0.03), (9, "ja", 0.05), (10, "en", 0.02)]


class Rng(np.random.Generator):
    """numpy's Generator (PCG64) plus a buffered stream of uniforms for the text loop:
    single draws through numpy cost ~0.3-5 us each, a list lookup ~0.05 us. The buffer
    refills deterministically, so output still depends on the seed alone."""

    _CHUNK = 1 << 15

    def __init__(self, seed):
        super().__init__(np.random.PCG64(seed))
        self._buf: list[float] = []
        self._i = 0

    def u(self) -> float:
        if self._i >= len(self._buf):
            self._buf, self._i = self.random(self._CHUNK).tolist(), 0
        self._i += 1
        return self._buf[self._i - 1]

    def ints(self, lo: int, hi: int, n: int) -> list[int]:
        """n integers uniform in [lo, hi)."""
        if self._i + n > len(self._buf):
            self._buf, self._i = self._buf[self._i:] + self.random(max(self._CHUNK, n)).tolist(), 0
        span = hi - lo
        out = [lo + int(x * span) for x in self._buf[self._i:self._i + n]]
        self._i += n
        return out


class Out:
    """Column lists of the events generated so far (one entry per request).

    Numeric columns collect numpy arrays (concatenated once at the end); `max_tokens`
    uses -1 for "the client sent none"; strings are Python lists."""

    def __init__(self):
        self.acc, self.ts, self.pt, self.ct, self.mt, self.model, self.status = ([] for _ in range(7))
        self.fp: list[str] = []
        self.ip: list[str] = []
        self.prompt: list[str] = []

    def add(self, acc: int, ts, pt, ct, mt, model, status, fp, ip, prompts) -> None:
        n = len(prompts)
        if n == 0:
            return
        a = np.asarray(acc, np.int64)
        self.acc.append(np.full(n, a, np.int64) if a.ndim == 0 else a)
        for lst, v, dt in ((self.ts, ts, np.float64), (self.pt, pt, np.int64), (self.ct, ct, np.int64),
                           (self.mt, mt, np.int64), (self.model, model, np.int64),
                           (self.status, status, np.int64)):
            a = np.asarray(v, dtype=dt)
            lst.append(np.full(n, a, dt) if a.ndim == 0 else a)
        self.fp.extend([fp] * n if isinstance(fp, str) else fp)
        self.ip.extend([ip] * n if isinstance(ip, str) else ip)
        self.prompt.extend(prompts)


def latency(rng, completion_tokens, model_idx):
    """Seconds from request to the last token: time to first token, lognormal median
    0.6 s (sigma 0.5, clipped 0.15-8 s; assumption), plus decoding at the model's speed."""
    ct = np.asarray(completion_tokens, dtype=float)
    ttft = np.clip(rng.lognormal(np.log(0.6), 0.5, ct.shape), 0.15, 8.0)
    speed = MODEL_SPEED[np.asarray(model_idx)] * rng.uniform(0.8, 1.2, ct.shape)
    return ttft + ct / speed


def latency1(rng, completion_tokens: int, model_idx: int) -> float:
    """`latency` for one request (scalar draws, same distribution)."""
    ttft = min(max(rng.lognormal(-0.5108, 0.5), 0.15), 8.0)      # log(0.6) = -0.5108
    return ttft + completion_tokens / (MODEL_SPEED[model_idx] * rng.uniform(0.8, 1.2))


def statuses(rng, n, table):
    codes, p = table
    return codes[np.searchsorted(np.cumsum(p / p.sum()), rng.random(n), side="right").clip(0, len(codes) - 1)]


def choose(rng, cum: list) -> int:
    """One index drawn with cumulative probabilities `cum` (a list; cheaper than rng.choice)."""
    return min(bisect.bisect_right(cum, rng.u()), len(cum) - 1)


HUMAN_STATUS_CUM = np.cumsum(HUMAN_STATUS[1] / HUMAN_STATUS[1].sum()).tolist()
BOT_STATUS_CUM = np.cumsum(BOT_STATUS[1] / BOT_STATUS[1].sum()).tolist()


def diurnal_times(rng, n, t0, t1, tz_hours, curve, weekend=1.0):
    """n times in [t0, t1) drawn from an hourly intensity: `curve` at the local hour,
    times `weekend` on local Saturdays and Sundays (epoch day 0 was a Thursday)."""
    if n <= 0 or t1 <= t0:
        return np.empty(0)
    edges = np.arange(np.floor(t0 / 3600.0) * 3600.0, t1, 3600.0)
    local = edges + tz_hours * 3600.0
    hour = ((local // 3600.0) % 24).astype(int)
    wday = ((local // DAY) + 3) % 7          # 0 = Monday
    w = curve[hour] * np.where(wday >= 5, weekend, 1.0)
    cw = np.cumsum(w)
    k = np.searchsorted(cw, rng.random(n) * cw[-1], side="right")
    t = edges[np.minimum(k, len(edges) - 1)] + rng.random(n) * 3600.0
    return np.sort(np.clip(t, t0, np.nextafter(t1, t0)))


def in_hours(t, tz_hours, lo, hi):
    """Whether epoch times fall in local hours [lo, hi)."""
    h = ((np.asarray(t) + tz_hours * 3600.0) / 3600.0) % 24
    return (h >= lo) & (h < hi)


def pick_tz_lang(rng, n, langs=None):
    rows = [r for r in TZ_LANG if langs is None or r[1] in langs]
    p = np.array([r[2] for r in rows])
    k = rng.choice(len(rows), size=n, p=p / p.sum())
    return [rows[i][0] for i in k], [rows[i][1] for i in k]


# --- network identity -------------------------------------------------------------------
# Prefixes are /24 (IPv4) or /48 (IPv6) strings. Blocks are drawn per kind so that home
# broadband, mobile-carrier CGNAT, campus, cloud and proxy ranges do not collide by chance.

def ipv4_prefix(rng, first_octets) -> str:
    a = int(first_octets[rng.integers(len(first_octets))])
    return f"{a}.{rng.integers(0, 256)}.{rng.integers(0, 256)}.0/24"


def ipv6_prefix(rng) -> str:
    return f"2a0{rng.integers(1, 10)}:{rng.integers(0, 65536):x}:{rng.integers(0, 65536):x}::/48"


HOME_OCTETS = np.array([24, 68, 73, 76, 81, 86, 90, 98, 109, 112, 122, 175, 182, 189, 201])
CLOUD_OCTETS = np.array([3, 13, 18, 34, 35, 52, 54, 104, 137, 146, 159, 165])
PROXY_OCTETS = np.array([5, 23, 37, 45, 62, 77, 91, 141, 176, 185, 193, 194, 212])
CARRIER_OCTETS = np.array([100, 106, 117, 172, 174, 208])
EDU_OCTETS = np.array([128, 129, 130, 131, 132, 134, 138, 140, 141, 143, 144, 147, 149, 150, 155])


# --- client fingerprints (User-Agent-like) ----------------------------------------------

def browser_ua(rng, kind: str | None = None) -> str:
    kind = kind or ("chrome", "chrome", "chrome", "safari", "firefox", "edge")[rng.integers(6)]
    v = int(rng.integers(124, 132))
    osr = ("Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7", "X11; Linux x86_64",
           "X11; CrOS x86_64 15917.71.0")[rng.integers(4)]
    if kind == "safari":
        return (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                f"Version/17.{rng.integers(0, 7)} Safari/605.1.15")
    if kind == "firefox":
        return f"Mozilla/5.0 ({osr}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
    tail = f" Edg/{v}.0.0.0" if kind == "edge" else ""
    return f"Mozilla/5.0 ({osr}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36{tail}"


def mobile_ua(rng) -> str:
    if rng.random() < 0.55:
        return f"LyraChat/4.{rng.integers(8, 15)}.{rng.integers(0, 6)} (iPhone; iOS 18.{rng.integers(0, 5)}; Scale/3.00)"
    dev = ("Pixel 8", "SM-S921B", "SM-A546B", "2211133G", "CPH2581", "Pixel 7a")[rng.integers(6)]
    return f"LyraChat/4.{rng.integers(8, 15)}.{rng.integers(0, 6)} (Android 1{rng.integers(3, 6)}; {dev})"


def sdk_ua(rng) -> str:
    k = rng.integers(6)
    if k == 0:
        return f"lyra-python/1.{rng.integers(4, 10)}.{rng.integers(0, 4)} CPython/3.{rng.integers(9, 13)}.{rng.integers(0, 10)}"
    if k == 1:
        return f"lyra-node/0.{rng.integers(18, 25)}.{rng.integers(0, 5)} node/v{rng.integers(18, 23)}.{rng.integers(0, 12)}.0"
    if k == 2:
        return f"python-requests/2.{rng.integers(28, 33)}.{rng.integers(0, 4)}"
    if k == 3:
        return f"python-httpx/0.{rng.integers(24, 29)}.{rng.integers(0, 3)}"
    if k == 4:
        return "Go-http-client/2.0"
    return f"curl/8.{rng.integers(2, 11)}.{rng.integers(0, 2)}"


def account_ids(rng, n: int) -> list[str]:
    """n distinct opaque ids (nothing in them tells the family)."""
    ids: set[int] = set()
    out: list[int] = []
    while len(out) < n:
        for v in rng.integers(0, 2**48, size=n - len(out)).tolist():
            if v not in ids:
                ids.add(v)
                out.append(v)
    return [f"acct_{v:012x}" for v in out]
