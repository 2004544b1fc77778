"""Benign automation families: an agent tool-call loop (ReAct), a batch job draining a
queue with N worker threads under a client-side token bucket, an evaluation harness
run, and a product backend (RAG) forwarding its own users' questions under one key.
"""
from __future__ import annotations

import heapq

import numpy as np

from . import common as C
from . import text as T


def _created(rng, ctx):
    """Service accounts: 5% unknown, else lognormal median 150 days old (assumption)."""
    return np.nan if rng.random() < 0.05 else float(ctx.t0 - C.DAY * min(rng.lognormal(np.log(150), 1.0), 2500))


def _cap(text: str, n: int = 1500) -> str:
    return text if len(text) <= n else text[:n]


def agent_loop(rng, ctx, accs):
    """ReAct-style loop (Yao et al. 2022; tool-calling APIs): per episode, step k sends the
    whole transcript so far, so prompt_tokens = system (tool schemas) + task + the sum of
    earlier tool calls and tool results, never shrinking. Steps ~ geometric, mean 6 (cap
    30; assumption); a tool call is 12-300 tokens of JSON, the last step a 100-800 token
    answer; tool latency lognormal median 1.5 s (sigma 1.2, 0.05-180 s; assumption).
    The prompt text is the last user-role message: the task at step 0, then the tool
    result (which starts "Observation" / "Tool result")."""
    for acc in accs:
        sys_tok = int(rng.integers(800, 3000))
        m = int(rng.choice([C.M_PRO, C.M_FLASH, C.M_CODE], p=[0.4, 0.35, 0.25]))
        mt = int(rng.choice([1024, 2048, 4096, -1], p=[0.35, 0.35, 0.2, 0.1]))
        fp = C.sdk_ua(rng) + (" agentkit/0.9" if rng.random() < 0.5 else "")
        ip = C.ipv4_prefix(rng, C.CLOUD_OCTETS)
        office = rng.random() < 0.5
        rate = min(rng.lognormal(np.log(8), 0.8), 60)
        starts = C.diurnal_times(rng, max(1, int(rng.poisson(rate * ctx.days))), ctx.t0, ctx.t1, float(rng.choice([-5, 0, 1, 8])),
                                 C.WORK_HOURS if office else C.FLAT_HOURS, 0.3 if office else 1.0)
        ts, pt, ct, mts, st, prompts = [], [], [], [], [], []
        t_free = -np.inf
        for s0 in starts:
            t = max(float(s0), t_free + 1.0)
            steps = min(int(rng.geometric(1 / 6)), 30)
            calls = np.clip(rng.lognormal(np.log(45), 0.5, steps), 12, 300).astype(int)
            calls[-1] = int(np.clip(rng.lognormal(np.log(250), 0.6), 100, 800))
            if mt > 0:
                calls = np.minimum(calls, mt)
            obs = np.clip(rng.lognormal(np.log(300), 1.0, steps), 10, 8000).astype(int)
            tool_lat = np.clip(rng.lognormal(np.log(1.5), 1.2, steps), 0.05, 180)
            task = T.fill(rng, "en", T.pick(rng, T.AGENT_TASKS))
            ctx_tok = sys_tok + T.ntok(task)
            k = 0
            while k < steps and t < ctx.t1:
                text = task if k == 0 else _cap(T.fill(rng, "en", T.pick(rng, T.AGENT_OBS), tool=T.pick(rng, T.AGENT_TOOLS),
                                                       body=T.body(rng, "en", int(min(obs[k - 1], 300)))))
                status = int(C.BOT_STATUS[0][C.choose(rng, C.BOT_STATUS_CUM)]) if rng.u() < 0.3 else 200
                out = int(calls[k]) if status == 200 else 0
                ts.append(t); pt.append(ctx_tok); ct.append(out); mts.append(mt); st.append(status); prompts.append(text)
                if status != 200:               # client backs off 1-8 s and resends the same transcript
                    t += float(rng.uniform(1, 8))
                    continue
                t += C.latency1(rng, out, m) + float(tool_lat[k]) + float(rng.uniform(0.02, 0.3))
                ctx_tok += out + int(obs[k])
                k += 1
            t_free = t
        ctx.out.add(acc, ts, pt, ct, mts, m, st, fp, ip, prompts)
        ctx.created[acc] = _created(rng, ctx)


def batch_queue(rng, ctx, accs):
    """A job drains a queue of Q documents with W worker threads under a client-side token
    bucket (rate R/min, burst W; GCRA form): request i goes out at max(its worker free,
    bucket allows) and the worker is free again after the response. One fixed
    instruction per job + a varying document. Runs: a daily cron at a fixed local hour
    (each day with p 0.7) or one-off. Q ~ lognormal median 60 (10-3000), W in 1-16,
    R in 20-300/min (assumptions)."""
    for acc in accs:
        instr, where = T.BATCH_INSTR[int(rng.integers(len(T.BATCH_INSTR)))]
        lang = "ja" if not instr.isascii() else ("de" if rng.random() < 0.15 else "en")
        m = int(rng.choice([C.M_FLASH, C.M_FLASH25, C.M_PRO], p=[0.6, 0.25, 0.15]))
        mt = int(rng.choice([256, 512, 1024, -1], p=[0.4, 0.35, 0.15, 0.1]))
        fp, ip = C.sdk_ua(rng), C.ipv4_prefix(rng, C.CLOUD_OCTETS)
        W = int(rng.choice([1, 2, 4, 8, 16]))
        R = float(rng.choice([20, 60, 120, 300])) / 60.0
        doc_med = float(rng.uniform(80, 400))
        if rng.random() < 0.7:
            hour = rng.uniform(0, 24)
            runs = [np.floor(ctx.t0 / C.DAY) * C.DAY + d * C.DAY + hour * 3600 for d in range(int(np.ceil(ctx.days)) + 1)]
            runs = [r for r in runs if ctx.t0 <= r < ctx.t1 and rng.random() < 0.7]
        else:
            runs = []
        if not runs:
            runs = [float(rng.uniform(ctx.t0, ctx.t1 - 600))]
        ts, pt, ct, mts, st, prompts = [], [], [], [], [], []
        t_free = -np.inf
        for r0 in runs:
            r0 = max(r0, t_free + 60)
            q = int(np.clip(rng.lognormal(np.log(60), 0.9), 10, 3000))
            free = [(r0, w) for w in range(W)]
            tat = r0
            docs_tok = np.clip(rng.lognormal(np.log(doc_med), 0.7, q), 30, 2800).astype(int)
            outs = np.maximum(1, rng.lognormal(np.log(60), 0.8, q)).astype(int)
            if mt > 0:
                outs = np.minimum(outs, mt)
            stat = C.statuses(rng, q, C.BOT_STATUS)
            lat = C.latency(rng, outs, np.full(q, m))
            end = r0
            for i in range(q):
                tw, w = heapq.heappop(free)
                s = max(tw, tat - W / R)              # GCRA: at most W requests ahead of the rate
                tat = max(tat, s) + 1.0 / R
                if s >= ctx.t1:
                    break
                doc = T.body(rng, lang, int(docs_tok[i]))
                text = f"{instr}\n\n{doc}" if where == "first" else f"{doc}\n\n{instr}"
                ok = stat[i] == 200
                ts.append(s); pt.append(T.ntok(text)); ct.append(int(outs[i]) if ok else 0); mts.append(mt)
                st.append(int(stat[i])); prompts.append(text)
                done = s + (float(lat[i]) if ok else 0.3)
                end = max(end, done)
                heapq.heappush(free, (done, w))
            t_free = end
        ctx.out.add(acc, ts, pt, ct, mts, m, st, fp, ip, prompts)
        ctx.created[acc] = _created(rng, ctx)


def _bench_items(seed: int, bench: int, n: int) -> list[tuple[str, str]]:
    """A benchmark's items: fixed by (seed, benchmark id), so every run (and every account
    running that benchmark) sends the same items."""
    r = C.Rng([seed, 31, bench])
    out = []
    for _ in range(n):
        q = T.body(r, "en", int(r.integers(15, 70))).rstrip(".") + "?"
        opts = [T.pick(r, T.lexicon("en")["w"]) for _ in range(4)]
        out.append((f"Question: {q}\nA. {opts[0]}\nB. {opts[1]}\nC. {opts[2]}\nD. {opts[3]}\nAnswer:", "ABCD"[int(r.integers(4))]))
    return out


def eval_run(rng, ctx, accs):
    """An evaluation harness (lm-evaluation-harness style): K benchmark items in one
    format behind a k-shot prefix (k in 0/3/5), small max_tokens (1-32, or 256 for
    worked answers), C concurrent workers each sending its next item as soon as the last
    returned, the same items re-run against 1-3 model names one after another. Runs:
    1-3 per account in office hours. K in 50-400 (assumption)."""
    for acc in accs:
        fp, ip = C.sdk_ua(rng), C.ipv4_prefix(rng, C.CLOUD_OCTETS if rng.random() < 0.7 else C.EDU_OCTETS)
        n_runs = max(1, int(rng.poisson(1.0)))
        starts = C.diurnal_times(rng, n_runs, ctx.t0, ctx.t1, float(rng.choice([-8, -5, 1, 8])), C.WORK_HOURS, 0.4)
        acc_cols = [[] for _ in range(7)]
        t_free = -np.inf
        for s0 in starts:
            t = max(float(s0), t_free + 300)
            bench = int(rng.integers(12))
            K = int(rng.choice([50, 100, 200, 400], p=[0.35, 0.35, 0.2, 0.1]))
            items = _bench_items(ctx.seed, bench, K + 5)
            shots = int(rng.choice([0, 3, 5]))
            fmt = T.EVAL_FORMATS[bench % len(T.EVAL_FORMATS)].format(subject=T.EVAL_SUBJECTS[bench % len(T.EVAL_SUBJECTS)])
            prefix = fmt + "".join(f"{q} {a}\n\n" for q, a in items[:shots])
            texts = [prefix + q for q, _ in items[shots:shots + K]]      # one string per item, shared by the model passes
            toks = [T.ntok(x) for x in texts]
            mt = int(rng.choice([1, 5, 16, 32, 256], p=[0.25, 0.25, 0.2, 0.15, 0.15]))
            models = rng.choice(len(C.MODELS), size=int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])), replace=False)
            Cc = int(rng.choice([4, 8, 16, 32]))
            for m in models:
                free = [(t, w) for w in range(Cc)]
                outs = (rng.integers(1, mt + 1, K) if mt <= 32 else np.minimum(rng.lognormal(np.log(120), 0.6, K), mt)).astype(int)
                stat = C.statuses(rng, K, C.BOT_STATUS)
                lat = C.latency(rng, outs, np.full(K, m))
                end = t
                for i in range(K):
                    tw, w = heapq.heappop(free)
                    s = tw + float(rng.uniform(0.005, 0.05))
                    if s >= ctx.t1:
                        break
                    text = texts[i]
                    ok = stat[i] == 200
                    for col, v in zip(acc_cols, (s, toks[i], int(outs[i]) if ok else 0, mt, int(m), int(stat[i]), text)):
                        col.append(v)
                    done = s + (float(lat[i]) if ok else 0.5)
                    end = max(end, done)
                    heapq.heappush(free, (done, w))
                t = end + float(rng.uniform(5, 120))
            t_free = t
        ts, pt, ct, mts, mdl, st, prompts = acc_cols
        ctx.out.add(acc, ts, pt, ct, mts, mdl, st, fp, ip, prompts)
        ctx.created[acc] = _created(rng, ctx)


def rag_backend(rng, ctx, accs):
    """A product backend under one key, forwarding its own users' questions: arrivals
    follow its users' diurnal curve (volume lognormal median 60/day, cap 1500;
    assumption); each request = fixed system prompt + 2-5 passages retrieved from the
    product's own corpus (150 chunks of 40-120 tokens) + the user's question; 25% are follow-ups carrying
    ~1-3 earlier turns."""
    for acc in accs:
        tz, lang = C.pick_tz_lang(rng, 1, ("en", "de", "ja"))
        tz, lang = tz[0], lang[0]
        sys_text = T.fill(rng, "en", T.RAG_SYSTEM[{"en": int(rng.integers(2)), "de": 2, "ja": 3}[lang]],
                          company=T.pick(rng, T.lexicon("en")["w"]).title() + " Inc")
        sys_tok = T.ntok(sys_text) + int(rng.integers(100, 900))
        corpus = [T.body(rng, lang, int(rng.integers(40, 120))) for _ in range(150)]
        m = int(rng.choice([C.M_FLASH, C.M_PRO, C.M_FLASH25], p=[0.6, 0.25, 0.15]))
        mt = int(rng.choice([512, 1024, -1], p=[0.5, 0.4, 0.1]))
        fp = C.sdk_ua(rng)
        ips = [C.ipv4_prefix(rng, C.CLOUD_OCTETS) for _ in range(int(rng.integers(1, 4)))]
        n = int(rng.poisson(min(rng.lognormal(np.log(60), 0.8), 1500) * ctx.days))
        times = C.diurnal_times(rng, max(n, 1), ctx.t0, ctx.t1, tz, C.HUMAN_HOURS, 0.8)
        n = len(times)
        k = rng.integers(2, 6, n)
        hist = np.where(rng.random(n) < 0.25, rng.integers(150, 1200, n), 0)
        outs = np.maximum(20, rng.lognormal(np.log(180), 0.6, n)).astype(int)
        if mt > 0:
            outs = np.minimum(outs, mt)
        stat = C.statuses(rng, n, C.BOT_STATUS)
        qs = T.RAG_QUESTIONS[lang]
        prompts, pt = [], np.empty(n, np.int64)
        for i in range(n):
            picks = T.ints(rng, 0, len(corpus), int(k[i]))
            q = T.fill(rng, lang, T.pick(rng, qs), body=T.body(rng, lang, int(rng.integers(8, 40))))
            text = "".join(f"[{j + 1}] {corpus[p]}\n" for j, p in enumerate(picks)) + f"\nQuestion: {q}"
            prompts.append(text)
            pt[i] = sys_tok + hist[i] + T.ntok(text)
        ipl = [ips[int(j)] for j in rng.integers(0, len(ips), n)]
        ctx.out.add(acc, times, pt, np.where(stat == 200, outs, 0), mt, m, stat, fp, ipl, prompts)
        ctx.created[acc] = _created(rng, ctx)
