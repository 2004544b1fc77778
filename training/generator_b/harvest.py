"""Harvesting families, as task queues with workers. A campaign owns a queue of tasks
(seed topics x instruction templates, or generated instructions); its accounts are
workers that pull the next task, send it, sleep, and pull again, at ~26 requests per
account per day (the seed article: 28.8M requests / 25,000 accounts / ~45 days = 25.6),
with per-account jitter. Accounts are created in bursts; requests leave through a
rotating proxy pool; clients are an SDK or a spoofed browser string; the campaign wants
long outputs (large max_tokens, "detailed / step by step" asks).

Campaign sizes are the article's scale shrunk to the simulated population: lognormal
around a per-family median (20-80 accounts; the article's 25,000 are one operator's
total over many campaigns, an assumption of how they were organised).
"""
from __future__ import annotations

import numpy as np

from . import common as C
from . import text as T


def _split(rng, accs, size_med):
    out, i = [], 0
    while i < len(accs):
        n = int(max(5, rng.lognormal(np.log(size_med), 0.6)))
        if len(accs) - (i + n) < 5:
            n = len(accs) - i
        out.append(accs[i:i + n])
        i += n
    return out


def _worker_times(rng, ctx, start, rate, hours, tz):
    """A worker's request times: after each task it sleeps interval x Gamma(4)/4 (a
    scripted sleep with jitter, more regular than Poisson). With `hours` it works only
    in those local hours, at a proportionally higher pace, so its daily count stays."""
    if hours is not None:
        rate = rate * 24.0 / (hours[1] - hours[0])
    mean = C.DAY / rate
    n = int((ctx.t1 - start) / mean * 1.3) + 8
    t = start + rng.uniform(0, mean) + np.cumsum(rng.gamma(4.0, 0.25, n) * mean)
    t = t[t < ctx.t1]
    if hours is not None:
        t = t[C.in_hours(t, tz, *hours)]
    return t


def campaign_family(rng, ctx, accs, fam, spec):
    """Run every campaign of one family. spec: size (median accounts per campaign), rate
    (requests/day), hours (None = around the clock, or local (lo, hi)), tz choices,
    render(rng, task_index, turn) -> text, comp (median, sigma) of answer tokens,
    mt ((values), (p)) of max_tokens (-1 = none), models (p per MODELS), fp
    ("sdk" | "spoof" | "varied"), proxies ("dc" | "residential"), sticky (mean
    requests per proxy), turns (None, or mean turns of a scripted dialogue)."""
    for j, group in enumerate(_split(rng, accs, spec["size"])):
        cid = f"{fam}-{ctx.seed}-{j:03d}"
        n_acc = len(group)
        tz = float(rng.choice(spec.get("tz", (0.0,))))
        # creation bursts: 1-3 bursts; 70% of campaigns before the window, 30% inside it
        n_b = int(rng.integers(1, 4))
        inside = rng.random() < 0.3
        centres = (ctx.t0 + rng.uniform(0, 0.4 * ctx.days * C.DAY, n_b)) if inside else \
            (ctx.t0 - rng.uniform(0.5, 20, n_b) * C.DAY)
        created = centres[rng.integers(0, n_b, n_acc)] + rng.exponential(900, n_acc)
        pool_octets = C.PROXY_OCTETS if spec["proxies"] == "dc" else C.HOME_OCTETS
        pool = [C.ipv4_prefix(rng, pool_octets) for _ in range(max(3, int(n_acc * rng.uniform(0.3, 2.0))))]
        if spec["fp"] == "sdk":
            fps = [C.sdk_ua(rng)]
        elif spec["fp"] == "spoof":
            fps = [C.browser_ua(rng) for _ in range(3)]
        else:
            fps = None
        mt_vals, mt_p = spec["mt"]
        mt_c = int(rng.choice(mt_vals, p=np.asarray(mt_p) / np.sum(mt_p)))
        # per worker: (times, turn index within its dialogue)
        per = []
        for a, c in zip(group, created):
            start = max(ctx.t0, float(c) + rng.uniform(600, 7200))
            rate = spec["rate"] * rng.lognormal(0, 0.25)
            if spec.get("turns") is None:
                t = _worker_times(rng, ctx, start, rate, spec.get("hours"), tz)
                turn = np.zeros(len(t), np.int64)
                outs = None
            else:
                d0 = _worker_times(rng, ctx, start, rate / spec["turns"], spec.get("hours"), tz)
                ts_l, tn_l, out_l = [], [], []
                for s in d0:
                    L = 2 + int(rng.geometric(1 / (spec["turns"] - 1)))
                    o = np.maximum(1, rng.lognormal(np.log(spec["comp"][0]), spec["comp"][1], L)).astype(np.int64)
                    # the script plays the user: the next turn leaves as soon as the answer is in
                    gaps = C.latency(rng, o, np.full(L, C.M_PRO)) + rng.uniform(0.2, 1.5, L)
                    ts_l.append(s + np.concatenate([[0.0], np.cumsum(gaps[:-1])]))
                    tn_l.append(np.arange(L))
                    out_l.append(o)
                t = np.concatenate(ts_l) if ts_l else np.empty(0)
                turn = np.concatenate(tn_l) if tn_l else np.empty(0, np.int64)
                outs = np.concatenate(out_l) if out_l else np.empty(0, np.int64)
                keep = t < ctx.t1
                t, turn, outs = t[keep], turn[keep], outs[keep]
            per.append((a, t, turn, outs))
        # the queue: tasks handed out in the order the workers ask (dialogue turns keep their task)
        all_t = np.concatenate([p[1] for p in per]) if per else np.empty(0)
        if len(all_t) == 0:
            for a, c in zip(group, created):
                ctx.created[a] = float(c)
                ctx.campaign[a] = cid
            continue
        owner = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(per)])
        turns = np.concatenate([p[2] for p in per])
        order = np.argsort(all_t, kind="stable")
        task_of = np.empty(len(all_t), np.int64)
        cur = np.full(len(per), -1)
        nxt = int(rng.integers(0, 1 << 20))          # where in the (shared, endless) queue this campaign starts
        for e in order:
            if turns[e] == 0 or cur[owner[e]] < 0:
                cur[owner[e]] = nxt
                nxt += 1
            task_of[e] = cur[owner[e]]
        for i, (a, t, turn, pre) in enumerate(per):
            idx = np.flatnonzero(owner == i)
            n = len(idx)
            if n == 0:
                ctx.created[a] = float(created[i]); ctx.campaign[a] = cid
                continue
            prompts = [spec["render"](rng, int(task_of[e]), int(turns[e])) for e in idx]
            tok = np.array([T.ntok(p) for p in prompts], np.int64)
            m = rng.choice(len(C.MODELS), size=n, p=np.asarray(spec["models"]) / np.sum(spec["models"]))
            if pre is not None:
                m[:] = C.M_PRO                        # the model whose latency paced the dialogue
            mt = np.full(n, mt_c if rng.random() < 0.9 else int(rng.choice(mt_vals)))
            cap = np.where(mt > 0, mt, 8192)
            out = np.minimum(rng.lognormal(np.log(spec["comp"][0]), spec["comp"][1], n), cap).astype(np.int64)
            if pre is not None:
                out = np.minimum(pre, cap)
            stat = C.statuses(rng, n, C.BOT_STATUS)
            out = np.where(stat == 200, np.maximum(out, 1), 0)
            sys_tok = int(rng.choice([0, 0, 30, 120]))
            pt = sys_tok + tok
            if spec.get("turns") is not None:
                # the dialogue's history travels with each turn
                hist = np.zeros(n, np.int64)
                for k in range(1, n):
                    if turn[k] > 0:
                        hist[k] = hist[k - 1] + tok[k - 1] + out[k - 1]
                pt = pt + hist
            change = rng.random(n) < 1.0 / spec["sticky"]
            change[0] = True
            pick = rng.integers(0, len(pool), int(change.sum()))
            ips = [pool[int(pick[c])] for c in np.cumsum(change) - 1]
            fp = fps[int(rng.integers(len(fps)))] if fps is not None else C.browser_ua(rng)
            ctx.out.add(a, t, pt, out, mt, m, stat, fp, ips, prompts)
            ctx.created[a] = np.nan if rng.random() < 0.05 else float(created[i])
            ctx.campaign[a] = cid


# --- renderers: task index -> prompt text ------------------------------------------------
# Each campaign's queue is topics x templates: task k uses template k % n_templates and a
# topic drawn fresh (the seed topic list is far longer than any window's queue).

def _cot(rng, k, turn):
    tpl = T.COT_TEMPLATES[k % len(T.COT_TEMPLATES)]
    if "{code}" in tpl:
        return T.fill(rng, "en", tpl, code=T.fill(rng, "en", T.pick(rng, T.CODE_TASKS)))
    return T.fill(rng, "en", tpl, problem=T.fill(rng, "en", T.pick(rng, T.MATH_PROBLEMS)))


def _self_instruct(rng, k, turn):
    """Generated instructions (self-instruct / evol-instruct): opener + verb + object +
    constraints drawn independently, sometimes 'evolved' with an extra demand, so no two
    share a fixed frame."""
    s = (T.pick(rng, T.SI_OPENERS) + T.pick(rng, T.SI_VERBS) + " " + T.pick(rng, T.SI_OBJECTS)
         + T.pick(rng, T.SI_CONSTRAINTS) + ".")
    if rng.random() < 0.3:
        s += T.pick(rng, T.SI_EVOLVE)
    s = T.fill(rng, "en", s)
    return s[:1].upper() + s[1:]


def _dialogue(rng, k, turn):
    return T.fill(rng, "en", T.pick(rng, T.DIALOGUE_OPEN if turn == 0 else T.DIALOGUE_NEXT))


def _lowslow(rng, k, turn):
    """Human-looking questions (the human chat frames) with a 'detailed answer' ask."""
    return T.fill(rng, "en", T.pick(rng, T.HUMAN_FIRST["en"]), body=T.body(rng, "en", int(rng.integers(10, 50)))) \
        + T.pick(rng, T.DETAIL_SUFFIX)


def _zh(rng, k, turn):
    if k % 7 == 6:                                  # a share of English CoT tasks in the same queue
        return _cot(rng, k, turn)
    tpl = T.ZH_TEMPLATES[k % len(T.ZH_TEMPLATES)]
    return T.fill(rng, "zh", tpl, problem=T.fill(rng, "zh", T.pick(rng, T.ZH_PROBLEMS)),
                  body=T.body(rng, "zh", int(rng.integers(30, 120))))


SPECS = {
    "cot": dict(size=40, rate=26.0, render=_cot, comp=(1400, 0.5), mt=((8192, 4096, 16000, -1), (0.5, 0.3, 0.1, 0.1)),
                models=(0.4, 0, 0, 0.6, 0, 0), fp="sdk", proxies="dc", sticky=5.0),
    "self_instruct": dict(size=30, rate=26.0, render=_self_instruct, comp=(800, 0.5), mt=((4096, -1, 2048), (0.4, 0.4, 0.2)),
                          models=(0.8, 0.1, 0, 0, 0.1, 0), fp="spoof", proxies="residential", sticky=8.0),
    "dialogue": dict(size=30, rate=26.0, render=_dialogue, comp=(450, 0.5), mt=((-1, 4096), (0.5, 0.5)),
                     models=(0.9, 0.1, 0, 0, 0, 0), fp="sdk", proxies="dc", sticky=10.0, turns=5.0),
    "lowslow": dict(size=80, rate=16.0, render=_lowslow, comp=(700, 0.5), mt=((-1, 4096), (0.85, 0.15)),
                    models=(0.8, 0.2, 0, 0, 0, 0), fp="varied", proxies="residential", sticky=40.0,
                    hours=(8.0, 23.0), tz=(-5.0, 1.0, 8.0)),
    "zh": dict(size=50, rate=26.0, render=_zh, comp=(1200, 0.5), mt=((8192, 4096, -1), (0.5, 0.3, 0.2)),
               models=(0.6, 0, 0, 0.4, 0, 0), fp="sdk", proxies="dc", sticky=4.0),
}
