"""`distillguard bench templates`: frame signatures on real prompt templates, per language.

Templates come from the task configs `lm-eval` ships (`pip install --no-deps
lm-eval==0.4.13`: only its YAML files are read, the package is never imported). Left out:
the Chinese exam suites `cmmlu` and `ceval` and anything `promptsource` (held out by the
project for its own checks). A template is a `doc_to_text` string (with the task's
`description` in front when it has one: per-subject headers are fixed words); templates
whose fixed text (slots removed, spacing collapsed) is the same are one template.

Slots are filled with word sequences from Faker's per-locale word lists (no package ships
real passages for every language); half the prompts get long slots (>= 80% of the
characters). Unrelated prompts are Faker sentences per language: word salad, not real
human prompts, so the collision figure is a lower bound on what real chat text gives.

Task families (top-level task folders) are split by a hash of their name into `tune` and
`report`: tune the signature on one, report the other.

Designs measured on the same prompts: `frame_signature_vN` (model.frames, what the model
reads) and, as the alternative, MinHash sketches of head and tail (`minhash_head_tail`,
datasketch); `summary.json` holds both, `table.md` shows them side by side.

Figures per language: same-template agreement (pairs of prompts from one template sharing
a frame; target >= 95%), components per template under the rule, cross-template merges
(pairs from different templates; target <= 1%), unrelated collisions (target <= 0.5%),
prompts/s for median-length prompts and p99 time for 50k-character ones (<= 1 ms).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import json
import random
import re
import statistics
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..model import templates as T
from ..model.files import publish_text

EXCLUDED_FAMILIES = frozenset({"cmmlu", "ceval"})
_SLOT_RE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
# Faker locale per language; languages without one fall back to their script's locale.
LOCALES = {"en": "en_US", "de": "de_DE", "fr": "fr_FR", "es": "es_ES", "it": "it_IT", "ru": "ru_RU",
           "ar": "ar_AA", "zh": "zh_CN", "ja": "ja_JP", "el": "el_GR", "he": "he_IL", "fa": "fa_IR",
           "th": "th_TH", "uk": "uk_UA", "vi": "vi_VN", "pl": "pl_PL", "ko": "ko_KR", "pt": "pt_PT",
           "ca": "es_ES", "eu": "es_ES", "gl": "es_ES"}
_UNSPACED_LANGS = frozenset({"zh", "ja", "th"})
_CODES = frozenset(LOCALES) | {"tr", "hi", "bn", "id", "sw", "nl", "sv", "fi", "da", "no", "cs", "hu", "ro",
                               "bg", "hr", "sk", "sl", "sr", "et", "lv", "lt", "ta", "te", "ur", "my", "am"}
_FOLDER_LANG = {"french_bench": "fr", "spanish_bench": "es", "catalan_bench": "ca", "basque_bench": "eu",
                "galician_bench": "gl", "portuguese_bench": "pt", "kmmlu": "ko", "haerae": "ko", "kobest": "ko",
                "japanese_leaderboard": "ja", "tmmluplus": "zh", "aclue": "zh", "arabicmmlu": "ar",
                "turkishmmlu": "tr", "greekmmlu": "el", "evalita_llm": "it", "noreval": "no"}
TARGETS = {"agreement": 0.95, "cross_merge": 0.01, "unrelated": 0.005, "prompts_per_s": 20_000, "p99_50k_ms": 1.0}


def tasks_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bench templates reads lm-eval's task configs: pip install --no-deps lm-eval==0.4.13")
    return Path(list(spec.submodule_search_locations)[0]) / "tasks"


def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # `!function utils.x` (Python hooks) read as an opaque marker: such a field is no template.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: {"!function": suffix})
    return Loader


def _read(path: Path, loader, depth: int = 0) -> dict:
    import yaml

    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return {}
    if not isinstance(cfg, dict):
        return {}
    inc = cfg.get("include")
    if isinstance(inc, str) and depth < 5:
        base = _read(path.parent / inc, loader, depth + 1)
        cfg = {**base, **cfg}
    return cfg


@dataclass
class Template:
    family: str
    task: str
    lang: str
    text: str                                   # the template, slots as {{...}}
    fixed: str = field(default="")              # slots removed, spacing collapsed

    def __post_init__(self):
        self.fixed = " ".join(_SLOT_RE.sub(" ", self.text).split())


def _script_lang(text: str) -> str:
    if re.search(r"[\u3040-\u30ff]", text):
        return "ja"
    if re.search(r"[\u4e00-\u9fff]", text):
        return "zh"
    if re.search(r"[\uac00-\ud7af]", text):
        return "ko"
    if re.search(r"[\u0600-\u06ff]", text):
        return "ar"
    if re.search(r"[\u0400-\u04ff]", text):
        return "ru"
    return "en"


def _lang(family: str, stem: str, fixed: str) -> str:
    script = _script_lang(fixed)
    if script != "en":
        return script
    for part in reversed(re.split(r"[_\-.]", stem)):
        if part in _CODES:
            return part
    return _FOLDER_LANG.get(family, "en")


def collection(root: Path, which: str = "all") -> list[Template]:
    """Deduplicated templates of the task configs under `root` (one lm-eval tasks folder)."""
    loader = _loader()
    seen: dict[str, Template] = {}
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        family = rel.parts[0] if len(rel.parts) > 1 else path.stem
        if family in EXCLUDED_FAMILIES or "promptsource" in str(rel).lower():
            continue
        if which != "all" and split_of(family) != which:
            continue
        cfg = _read(path, loader)
        text = cfg.get("doc_to_text")
        if not isinstance(text, str) or "{{" not in text or "{%" in text:
            continue   # a Python hook, a bare column name (all slot) or Jinja control flow
        desc = cfg.get("description")
        if isinstance(desc, str) and "{%" not in desc:
            text = desc + text
        t = Template(family, str(rel.with_suffix("")), "", text)
        if len(t.fixed) < 2 or t.fixed in seen:
            continue
        t.lang = _lang(family, path.stem, t.fixed)
        seen[t.fixed] = t
    return list(seen.values())


def split_of(family: str) -> str:
    return "tune" if hashlib.sha256(family.encode()).digest()[0] % 2 == 0 else "report"


class Filler:
    """Slot content per language: Faker word sequences, seeded."""

    def __init__(self, seed: int):
        from faker import Faker

        self._fakers: dict[str, object] = {}
        self._Faker = Faker
        self.rng = random.Random(seed)
        self.seed = seed

    def faker(self, lang: str):
        f = self._fakers.get(lang)
        if f is None:
            f = self._fakers[lang] = self._Faker(LOCALES.get(lang, "en_US"))
            f.seed_instance(self.seed + len(self._fakers))
        return f

    def words(self, lang: str, n: int) -> str:
        ws = self.faker(lang).words(n)
        return ("" if lang in _UNSPACED_LANGS else " ").join(ws)

    def slot(self, lang: str, long: bool) -> str:
        n = self.rng.randint(150, 900) if long else self.rng.randint(1, 12)
        return self.words(lang, n)

    def sentence(self, lang: str) -> str:
        return self.words(lang, self.rng.randint(6, 30))


def render(t: Template, filler: Filler, long: bool) -> str:
    slots = _SLOT_RE.findall(t.text)
    big = filler.rng.randrange(len(slots)) if long else -1
    parts = iter([filler.slot(t.lang, i == big) for i in range(len(slots))])
    return _SLOT_RE.sub(lambda m: next(parts), t.text)


@dataclasses.dataclass(frozen=True)
class Design:
    """A way to decide "same frame": `sign` one text (with a key), `share` two results."""
    name: str
    sign: Callable
    share: Callable


V2 = Design(f"frame_signature_v{T.SIGNATURE_VERSION}", lambda text, key: T.frame_signature(text, key), T.signatures_share_frame)

# The alternative the issue names: locality-sensitive sketches of head and tail. MinHash
# (datasketch, 64 permutations) over character 4-gram shingles of the first and the last
# 80 normalised characters (character shingles need no word boundaries, so CJK works);
# two prompts share a frame when either end's estimated Jaccard similarity is >= 0.5.
# The window was chosen on the tune half: 60 characters gave 87% agreement but 29% merges,
# 120 gave 60% / 4.8%, 200 gave 5% / 0.1% (a fixed window holds slot text either way).
_MH_CHARS, _MH_GRAM, _MH_PERM, _MH_THRESHOLD = 80, 4, 64, 0.5


def _minhash_sign(text: str, key) -> tuple:
    from datasketch import MinHash

    t = unicodedata.normalize("NFKC", text if isinstance(text, str) else "").lower()
    seed = int.from_bytes(hashlib.blake2b(key or b"", digest_size=4).digest(), "big")
    out = []
    for part in (t[:_MH_CHARS], t[-_MH_CHARS:]):
        m = MinHash(num_perm=_MH_PERM, seed=seed)
        m.update_batch([part[i:i + _MH_GRAM].encode("utf-8", "surrogatepass")
                        for i in range(max(len(part) - _MH_GRAM + 1, 1))])
        out.append(m)
    return tuple(out)


def _minhash_share(a: tuple, b: tuple) -> bool:
    return a[0].jaccard(b[0]) >= _MH_THRESHOLD or a[1].jaccard(b[1]) >= _MH_THRESHOLD


MINHASH = Design("minhash_head_tail", _minhash_sign, _minhash_share)
DESIGNS = {d.name: d for d in (V2, MINHASH)}


def _components(sigs: list, share=T.signatures_share_frame) -> int:
    parent = list(range(len(sigs)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(len(sigs)), 2):
        if share(sigs[i], sigs[j]):
            parent[find(i)] = find(j)
    return len({find(i) for i in range(len(sigs))})


def measure(templates: list[Template], seed: int = 1, per_template: int = 6, cross_pairs: int = 4000,
            unrelated: int = 150, key: bytes | None = None, design: Design = V2) -> dict:
    """Per language: agreement, components, cross-template merges, unrelated collisions,
    speed; every design sees the same prompts (the filler's draws do not depend on it)."""
    filler = Filler(seed)
    sign, share = design.sign, design.share
    rng = random.Random(seed)
    by_lang: dict[str, list[Template]] = {}
    for t in templates:
        by_lang.setdefault(t.lang, []).append(t)
    out: dict[str, dict] = {}
    worst: list[tuple[float, str, str]] = []
    all_lengths: list[str] = []
    long_share = []
    for lang, ts in sorted(by_lang.items()):
        sigs_of: list[list[str]] = []
        agree = pairs = multi = 0
        comps = []
        for t in ts:
            prompts = []
            for k in range(per_template):
                long = k % 2 == 0
                p = render(t, filler, long)
                prompts.append(p)
                if long:
                    long_share.append(1.0 - len(t.fixed) / max(len(p), 1) >= 0.8)
            all_lengths += prompts
            sigs = [sign(p, key) for p in prompts]
            sigs_of.append(sigs)
            a = sum(share(x, y) for x, y in itertools.combinations(sigs, 2))
            n = len(sigs) * (len(sigs) - 1) // 2
            agree, pairs = agree + a, pairs + n
            c = _components(sigs, share)
            comps.append(c)
            multi += c > 1
            if a < n:
                worst.append((a / n, lang, t.task))
        cross = ctot = 0
        if len(ts) > 1:
            for _ in range(cross_pairs):
                i, j = rng.sample(range(len(ts)), 2)
                ctot += 1
                cross += share(rng.choice(sigs_of[i]), rng.choice(sigs_of[j]))
        nat = [sign(filler.sentence(lang), key) for _ in range(unrelated)]
        col = sum(share(x, y) for x, y in itertools.combinations(nat, 2))
        npairs = len(nat) * (len(nat) - 1) // 2
        out[lang] = {"templates": len(ts), "prompts": len(ts) * per_template,
                     "agreement": agree / pairs if pairs else None, "agreement_pairs": pairs,
                     "mean_components": statistics.fmean(comps), "share_split": multi / len(ts),
                     "cross_merge": cross / ctot if ctot else None, "cross_pairs": ctot,
                     "unrelated": col / npairs, "unrelated_pairs": npairs}
    speed = _speed(all_lengths, filler, key, sign)
    worst.sort()
    return {"languages": out, "speed": speed, "share_long_slots_ge_80pct": statistics.fmean(long_share),
            "worst_templates": [{"agreement": a, "lang": l, "task": t} for a, l, t in worst[:40]]}


def _speed(prompts: list[str], filler: Filler, key, sign=V2.sign) -> dict:
    lengths = sorted(len(p) for p in prompts)
    median = lengths[len(lengths) // 2]
    mid = [p for p in prompts if abs(len(p) - median) <= median * 0.5][:2000] or prompts[:2000]
    t0 = time.perf_counter()
    for p in mid:
        sign(p, key)
    per_s = len(mid) / (time.perf_counter() - t0)
    big = []
    for lang in ("en", "zh", "ar"):
        for _ in range(10):
            head = filler.sentence(lang) + ":\n"
            body = filler.words(lang, 12000)[:50_000 - len(head)]
            big.append(head + body)
    times = []
    for p in big * 5:
        t0 = time.perf_counter()
        sign(p, key)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"median_chars": median, "prompts_per_s": per_s, "timed_prompts": len(mid),
            "p50_50k_ms": times[len(times) // 2], "p99_50k_ms": times[int(len(times) * 0.99) - 1],
            "n_50k": len(times)}


def _fmt(v, pct=True):
    return "-" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.2f}")


def table_md(res: dict) -> str:
    alt = {k: v for k, v in (res.get("alternatives") or {}).items()}
    extra = "".join(f" {k}: agreement / merges / collisions |" for k in alt)
    lines = ["| language | templates | same-template agreement | templates split | cross-template merges | "
             "unrelated collisions |" + extra, "|---|---:|---:|---:|---:|---:|" + "---:|" * len(alt)]
    for lang, r in res["languages"].items():
        cells = "".join(f" {_fmt(a['languages'][lang]['agreement'])} / {_fmt(a['languages'][lang]['cross_merge'])}"
                        f" / {_fmt(a['languages'][lang]['unrelated'])} |" for a in alt.values())
        lines.append(f"| {lang} | {r['templates']} | {_fmt(r['agreement'])} | {_fmt(r['share_split'])} | "
                     f"{_fmt(r['cross_merge'])} | {_fmt(r['unrelated'])} |" + cells)
    for name, a in alt.items():
        sa = a["speed"]
        lines += ["", f"{name}: {sa['prompts_per_s']:,.0f} prompts/s, 50k-character p99 {sa['p99_50k_ms']:.2f} ms."]
    s = res["speed"]
    lines.append("")
    lines.append(f"Speed: {s['prompts_per_s']:,.0f} prompts/s at a median of {s['median_chars']} characters; "
                 f"50k-character prompts p50 {s['p50_50k_ms']:.2f} ms, p99 {s['p99_50k_ms']:.2f} ms "
                 f"(targets: >= 95% agreement, <= 1% merges, <= 0.5% collisions, >= 20k prompts/s, <= 1 ms).")
    return "\n".join(lines) + "\n"


def run(which: str = "report", out: str = "reports/templates_bench", seed: int = 1, limit: int | None = None,
        root: Path | None = None) -> dict:
    from rich.console import Console

    console = Console()
    templates = collection(root or tasks_dir(), which)
    if limit:
        rng = random.Random(seed)
        templates = rng.sample(templates, min(limit, len(templates)))
    console.print(f"{len(templates)} templates in collection '{which}' "
                  f"({len({t.family for t in templates})} task families, {len({t.lang for t in templates})} languages)")
    res = measure(templates, seed=seed)
    # The alternative on the same prompts (same seed, so the same fills).
    res["alternatives"] = {MINHASH.name: measure(templates, seed=seed, design=MINHASH)}
    res.update(collection=which, seed=seed, n_templates=len(templates), signature_version=T.SIGNATURE_VERSION,
               sources={"templates": "lm-eval 0.4.13 task configs (cmmlu, ceval, promptsource left out)",
                        "slots": "Faker 40.54.0 per-locale word lists", "unrelated": "Faker sentences (word salad)"},
               targets=TARGETS)
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    publish_text(d / "summary.json", json.dumps(res, indent=2, ensure_ascii=False))
    publish_text(d / "table.md", table_md(res))
    console.print(table_md(res))
    return res
