"""Human families: people in *visits* (app sessions). Within a visit a person holds
conversations of several turns; each next message waits for the previous answer to be
generated, READ (words / reading speed, some users skim), thought about, and TYPED (its
length / typing speed, pasting when long). Figures: common.py and docs/generator_b.md.
"""
from __future__ import annotations

import numpy as np

from . import common as C
from . import text as T


def _created_at(rng, t0, first_ts):
    """Account creation: 4% unknown; 2% the same day as first use (new sign-ups); the
    rest lognormal, median 200 days before the window (assumption)."""
    u = rng.random()
    if u < 0.04:
        return np.nan
    if u < 0.06:
        return float(first_ts - rng.uniform(60, 3600))
    return float(t0 - C.DAY * min(rng.lognormal(np.log(200), 1.2), 3000))


class _User:
    """Per-person constants of the visit model."""

    def __init__(self, rng, lang, P):
        self.lang = lang
        self.read_wpm = float(np.clip(C.READ_WPM * rng.lognormal(0, 0.25), 150, C.READ_WPM_MAX))
        self.skim_p = float(rng.uniform(0.1, 0.6))
        self.type_wpm = float(np.clip(P["type_wpm"] * rng.lognormal(0, 0.3), 12, 120))
        self.think_med = P["think_med"] * float(rng.lognormal(0, 0.4))
        self.max_tokens = -1
        if rng.random() < P.get("p_max_tokens", 0.0):
            self.max_tokens = int(T.pick(rng, P.get("max_tokens_values", (2048, 4096))))
        mp = np.asarray(P["models"], float)
        self.models = np.cumsum(mp / mp.sum()).tolist()

    def reading(self, rng, ct):
        words = ct * C.WORDS_PER_TOKEN
        if rng.random() < self.skim_p:
            return rng.uniform(C.SKIM_FRACTION_MIN, 1.0) * words / (self.read_wpm * rng.uniform(1.5, C.SKIM_SPEEDUP_MAX) / 60)
        return words / (self.read_wpm / 60)

    def typing(self, rng, msg, tokens):
        if self.lang in T.CJK and not msg.isascii():
            chars = len(msg)
            return rng.uniform(2, 10) if chars > 200 else chars / (C.IME_CHARS_PER_MIN / 60)
        words = tokens * C.WORDS_PER_TOKEN
        return rng.uniform(2, 10) if words > 120 else words / (self.type_wpm / 60)



def run_visits(rng, ctx, acc, visits, user, P, ip_for_visit, fp, first_override=None):
    """Emit one account's requests for visits starting at `visits` (sorted epoch s).

    P: sys_tokens, history (bool: the client resends the conversation), conv_p and
    turn_p (geometric parameters: conversations per visit, turns per conversation),
    comp (median, sigma, cap) of answer tokens, p_leave (leaves after any turn),
    msg(rng, lang, k, prev) -> text (k = turn index in the conversation)."""
    ts, pt, ct, mt, mdl, st, prompts, ips = [], [], [], [], [], [], [], []
    t_free = -np.inf
    cmed, csig, ccap = P["comp"]
    cmed, think_mu = np.log(cmed), np.log(user.think_med)
    for v, t_visit in enumerate(visits):
        t = max(float(t_visit), t_free + 120.0)
        if t >= ctx.t1:
            break
        ip = ip_for_visit(rng, v)
        n_conv = int(rng.geometric(P["conv_p"]))
        prev_ct, prev_lat, prev_msg, first, left = 0, 0.0, None, True, False
        for c in range(n_conv):
            hist = P["sys_tokens"]
            n_turns = min(int(rng.geometric(P["turn_p"])), 40)
            k = 0
            while k < n_turns:
                if first and first_override is not None and v in first_override:
                    msg = first_override[v]
                else:
                    msg = P["msg"](rng, user.lang, k, prev_msg)
                tok = T.ntok(msg)
                if not first:
                    wait = prev_lat + user.reading(rng, prev_ct)
                    wait += min(max(rng.lognormal(think_mu, 1.0), 1.0), 900.0)
                    t += wait + user.typing(rng, msg, tok)
                else:
                    t += user.typing(rng, msg, tok) * (0.0 if first_override and v in first_override else 1.0)
                first = False
                if t >= ctx.t1:
                    left = True
                    break
                m = C.choose(rng, user.models)
                status = int(C.HUMAN_STATUS[0][C.choose(rng, C.HUMAN_STATUS_CUM)])
                out_tok = int(min(rng.lognormal(cmed, csig), ccap))
                if user.max_tokens > 0:
                    out_tok = min(out_tok, user.max_tokens)
                out_tok = max(out_tok, 1) if status == 200 else 0
                lat = C.latency1(rng, out_tok, m) if status == 200 else float(rng.uniform(0.2, 3.0))
                ts.append(t); pt.append(hist + tok); ct.append(out_tok); mt.append(user.max_tokens)
                mdl.append(m); st.append(status); prompts.append(msg); ips.append(ip)
                if P["history"]:
                    hist += tok + out_tok
                prev_ct, prev_lat, prev_msg = out_tok, lat, msg
                if status != 200:
                    # the person resends the same message after a short pause (nothing to read)
                    t += lat + float(rng.uniform(3, 20))
                    if t >= ctx.t1:
                        left = True
                        break
                    out_tok = max(1, int(min(rng.lognormal(cmed, csig), ccap)))
                    if user.max_tokens > 0:
                        out_tok = min(out_tok, user.max_tokens)
                    ts.append(t); pt.append(hist + tok); ct.append(out_tok); mt.append(user.max_tokens)
                    mdl.append(m); st.append(200); prompts.append(msg); ips.append(ip)
                    lat = C.latency1(rng, out_tok, m)
                    prev_ct, prev_lat = out_tok, lat
                    if P["history"]:
                        hist += out_tok
                k += 1
                if rng.random() < P["p_leave"]:
                    left = True
                    break
            if left:
                break
        t_free = t + prev_lat
    ctx.out.add(acc, ts, pt, ct, mt, mdl, st, fp, ips, prompts)
    return ts[0] if ts else None


def _visit_times(rng, ctx, tz, P):
    rate = min(rng.lognormal(np.log(P["rate_med"]), P["rate_sigma"]), P.get("rate_cap", 12.0))
    n = max(1, int(rng.poisson(rate * ctx.days)))        # accounts are sampled among those active in the window
    return C.diurnal_times(rng, n, ctx.t0, ctx.t1, tz, P.get("curve", C.HUMAN_HOURS), P.get("weekend", 0.85))


def _chat_msg(p_paste=0.07):
    def msg(rng, lang, k, prev):
        if k == 0 and rng.random() < p_paste:
            doc = T.body(rng, lang, int(min(rng.lognormal(np.log(700), 0.8), 3000)))
            return T.fill(rng, lang, T.pick(rng, T.PASTE_ASKS[lang]), doc=doc)
        frames = T.HUMAN_FIRST[lang] if k == 0 else T.HUMAN_FOLLOW[lang]
        return T.fill(rng, lang, T.pick(rng, frames), body=T.body(rng, lang, int(min(rng.lognormal(np.log(30), 0.9), 600))))
    return msg


def _home_ip(rng):
    home = C.ipv4_prefix(rng, C.HOME_OCTETS) if rng.random() < 0.85 else C.ipv6_prefix(rng)
    carriers = ctx_carriers(rng)
    def ip(r, v):
        return home if r.random() < 0.8 else carriers[int(r.integers(len(carriers)))]
    return ip


_CARRIERS: list[str] = []


def ctx_carriers(rng):
    """Mobile-carrier CGNAT prefixes: a small pool shared by many users (assumption: 60)."""
    if not _CARRIERS:
        r = np.random.default_rng(4_242)
        _CARRIERS.extend(C.ipv4_prefix(r, C.CARRIER_OCTETS) for _ in range(60))
    return _CARRIERS


CHAT = dict(rate_med=0.6, rate_sigma=0.9, conv_p=0.55, turn_p=0.4, comp=(333, 0.75, 4096), p_leave=0.06,
            sys_tokens=0, history=True, type_wpm=C.TYPE_WPM_DESKTOP, think_med=8.0, p_max_tokens=0.10,
            max_tokens_values=(1024, 2048, 4096), models=(0.6, 0.25, 0.0, 0.1, 0.05, 0.0))
MOBILE = dict(rate_med=0.5, rate_sigma=1.3, conv_p=0.85, turn_p=0.75, comp=(170, 0.7, 2048), p_leave=0.15,
              sys_tokens=0, history=True, type_wpm=C.TYPE_WPM_MOBILE, think_med=5.0,
              models=(0.5, 0.5, 0.0, 0.0, 0.0, 0.0))
WRITER = dict(rate_med=0.45, rate_sigma=0.7, conv_p=0.8, turn_p=0.45, comp=(900, 0.6, 6000), p_leave=0.05,
              sys_tokens=0, history=True, type_wpm=C.TYPE_WPM_DESKTOP, think_med=25.0, p_max_tokens=0.05,
              max_tokens_values=(4096, 8192), models=(0.75, 0.1, 0.0, 0.1, 0.05, 0.0))
DEV = dict(rate_med=1.3, rate_sigma=0.6, conv_p=0.7, turn_p=0.17, comp=(260, 0.8, 4096), p_leave=0.03,
           sys_tokens=0, history=False, type_wpm=C.TYPE_WPM_DESKTOP, think_med=20.0, p_max_tokens=0.85,
           max_tokens_values=(256, 512, 1000, 1024, 2048, 4096), models=(0.3, 0.3, 0.4, 0.0, 0.0, 0.0),
           curve=C.WORK_HOURS, weekend=0.3)
COHORT = dict(CHAT, rate_med=0.25, rate_sigma=0.6, p_max_tokens=0.0, models=(0.7, 0.3, 0, 0, 0, 0))


def _writer_msg(rng, lang, k, prev):
    if k == 0:
        doc = T.body(rng, lang, int(min(rng.lognormal(np.log(1500), 0.6), 3000)))
        return T.fill(rng, lang, T.pick(rng, T.WRITER_ASKS[lang]), doc=doc, kind=T.pick(rng, T.DOC_KINDS),
                      kind2=T.pick(rng, T.DOC_KINDS))
    return T.fill(rng, "en" if lang not in ("en",) else lang, T.pick(rng, T.WRITER_FOLLOW)) if lang == "en" \
        else T.fill(rng, lang, T.pick(rng, T.HUMAN_FOLLOW[lang]))


def _dev_msg(rng, lang, k, prev):
    """A notebook cell: half the runs re-run the previous prompt slightly edited."""
    if prev is not None and rng.random() < 0.5:
        words = prev.split(" ")
        if len(words) > 4 and rng.random() < 0.6:
            i = int(rng.integers(1, len(words)))
            words[i] = T.pick(rng, T.lexicon("en")["w"])
            return " ".join(words)
        return prev + T.pick(rng, T.DEV_EDITS)
    return T.fill(rng, "en", T.pick(rng, T.DEV_FRAMES), body=T.body(rng, lang, int(rng.integers(20, 120))))


def human_chat(rng, ctx, accs):
    tzs, langs = C.pick_tz_lang(rng, len(accs))
    for acc, tz, lang in zip(accs, tzs, langs):
        user = _User(rng, lang, CHAT)
        P = dict(CHAT, msg=_chat_msg())
        first = run_visits(rng, ctx, acc, _visit_times(rng, ctx, tz, CHAT), user, P, _home_ip(rng), C.browser_ua(rng))
        ctx.created[acc] = _created_at(rng, ctx.t0, first if first is not None else ctx.t0)


def human_mobile(rng, ctx, accs):
    """Quick mobile askers: many one-message visits (p_leave high, ~1.3 turns)."""
    tzs, langs = C.pick_tz_lang(rng, len(accs))
    carriers = ctx_carriers(rng)
    for acc, tz, lang in zip(accs, tzs, langs):
        user = _User(rng, lang, MOBILE)
        P = dict(MOBILE, msg=_chat_msg(p_paste=0.01))
        home = C.ipv4_prefix(rng, C.HOME_OCTETS)
        mine = [carriers[int(rng.integers(len(carriers)))] for _ in range(2)]

        def ip(r, v, home=home, mine=mine):
            return home if r.random() < 0.3 else mine[int(r.integers(2))]
        first = run_visits(rng, ctx, acc, _visit_times(rng, ctx, tz, MOBILE), user, P, ip, C.mobile_ua(rng))
        ctx.created[acc] = _created_at(rng, ctx.t0, first if first is not None else ctx.t0)


def human_writer(rng, ctx, accs):
    """Writers paste long documents (up to 12k characters) and get long rewrites back."""
    tzs, langs = C.pick_tz_lang(rng, len(accs))
    for acc, tz, lang in zip(accs, tzs, langs):
        user = _User(rng, lang, WRITER)
        P = dict(WRITER, msg=_writer_msg)
        first = run_visits(rng, ctx, acc, _visit_times(rng, ctx, tz, WRITER), user, P, _home_ip(rng), C.browser_ua(rng))
        ctx.created[acc] = _created_at(rng, ctx.t0, first if first is not None else ctx.t0)


def human_developer(rng, ctx, accs):
    """A developer in a notebook / SDK script: sets max_tokens, stateless calls (no
    history), re-runs edited prompts; office hours, few on weekends; office prefix."""
    tzs, langs = C.pick_tz_lang(rng, len(accs))
    for acc, tz, lang in zip(accs, tzs, langs):
        user = _User(rng, lang, DEV)
        P = dict(DEV, msg=_dev_msg, sys_tokens=int(rng.choice([0, 0, 40, 150, 400])))
        office = C.ipv4_prefix(rng, C.CLOUD_OCTETS if rng.random() < 0.3 else C.HOME_OCTETS)
        home = C.ipv4_prefix(rng, C.HOME_OCTETS)

        def ip(r, v, office=office, home=home):
            return office if r.random() < 0.75 else home
        first = run_visits(rng, ctx, acc, _visit_times(rng, ctx, tz, DEV), user, P, ip, C.sdk_ua(rng))
        ctx.created[acc] = _created_at(rng, ctx.t0, first if first is not None else ctx.t0)


def human_cohort(rng, ctx, accs):
    """A class or a company onboarding together: 8-60 accounts created within a few hours
    on one day, behind one shared campus / CGNAT prefix, meeting in class slots (weekday
    mornings local time) where everyone pastes the same assignment text with their own
    question; personal visits besides."""
    i = 0
    while i < len(accs):
        size = int(min(len(accs) - i, max(8, rng.lognormal(np.log(25), 0.5))))
        group, i = accs[i:i + size], i + size
        tz, lang = C.pick_tz_lang(rng, 1)
        tz, lang = tz[0], lang[0]
        campus = C.ipv4_prefix(rng, C.EDU_OCTETS)
        fp_kind = ("chrome", "safari", "edge")[int(rng.integers(3))]
        onboard = ctx.t0 + rng.uniform(-0.5, 0.5) * C.DAY
        day0 = np.floor((ctx.t0 + tz * 3600) / C.DAY) * C.DAY - tz * 3600
        slots = [day0 + d * C.DAY + rng.uniform(9, 15) * 3600 for d in range(int(np.ceil(ctx.days)) + 1)]
        slots = [s for s in slots if ctx.t0 <= s < ctx.t1 and ((s + tz * 3600) // C.DAY + 3) % 7 < 5]
        assignments = [T.fill(rng, lang, T.pick(rng, T.HUMAN_FIRST[lang]), body=T.body(rng, lang, 60)) for _ in slots]
        for acc in group:
            user = _User(rng, lang, COHORT)
            P = dict(COHORT, msg=_chat_msg(p_paste=0.02))
            personal = list(_visit_times(rng, ctx, tz, COHORT)) if rng.random() < 0.6 else []
            cls = [(s + abs(rng.normal(0, 600)), a) for s, a in zip(slots, assignments) if rng.random() < 0.8]
            allv = sorted([(t, None) for t in personal] + cls)
            if not allv:
                allv = [(float(rng.uniform(ctx.t0, ctx.t1)), None)]
            times = [t for t, _ in allv]
            override = {v: a + ("" if rng.random() < 0.4 else "\n" + T.fill(rng, lang, T.pick(rng, T.HUMAN_FOLLOW[lang])))
                        for v, (_, a) in enumerate(allv) if a is not None}
            home = C.ipv4_prefix(rng, C.HOME_OCTETS)
            cls_set = set(override)

            def ip(r, v, home=home, cls_set=cls_set):
                return campus if v in cls_set or r.random() < 0.5 else home
            first = run_visits(rng, ctx, acc, times, user, P, ip, C.browser_ua(rng, fp_kind), first_override=override)
            made = float(onboard + rng.exponential(1800))
            if first is not None:
                made = min(made, first - float(rng.uniform(60, 900)))   # signed up just before first use
            ctx.created[acc] = np.nan if rng.random() < 0.03 else made
