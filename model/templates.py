"""Prompt text -> template hash and reasoning-elicitation flag.

Pure, stateless functions of one prompt: the gateway, the online scorer and batch scoring
must all compute the same hash, so nothing here depends on what was seen before (no
arrival-order mining). Nothing is cached or stored; only the 16-hex-char hash leaves.

How the hash works (docs/templates.md has the reasons and the measured rates):

1. Mask what is slot content by construction: fenced code, URLs, e-mails, quoted spans,
   numbers. Cap very long texts to their head and tail (the frame lives there).
2. Cut the text into lines and sentences and keep only the *instruction-like* parts:
   sentences that open with a task verb ("Write ...", "Please summarise ...", "Could you
   extract ..."), role lines, directive statements ("The answer must be JSON"), and the
   labels of "Label: value" lines (the value is a slot). A line ending in ":" announces a
   slot: the block under it is skipped. Only the instruction run at the start and the one
   at the end count; pasted bulk (articles, code, tickets) stops a run.
3. Reduce the kept parts to a *set* of canonical concepts from a closed vocabulary of
   instruction words (write/compose/draft -> write, summary/TL;DR/recap -> summarize,
   bullet, json, step, reasoning, French, ...). Topics, names and other content words are
   not in the vocabulary, and words after "about/of/for/that..." inside an instruction are
   its topic slot, so slot fillers cannot move the hash; synonyms, politeness and clause
   order do not move it either.                                           -> "f|..."
4. Too few concepts to call it a template, but the prompt visibly is an instruction
   around a slot (a pasted block, "Label: value", "...: <text>"): the instruction's own
   words, slot values removed, are the frame.                             -> "s|..."
5. Otherwise the prompt is free text and its whole normalised content is hashed, so
   unrelated natural prompts do not collide on a shared "explain" or "write". -> "c|..."
"""
from __future__ import annotations

import hashlib
import hmac
import re
from typing import Iterable

__all__ = ["TEMPLATE_HASH_VERSION", "template_hash", "elicits_reasoning", "template_bucket", "hash_prompts",
           "reasoning_flags", "canonical_frame"]

# Bump whenever canonicalisation changes: hashes from different versions do not match, so
# the feature spec (and any stored template_hash column) must record which one made them.
TEMPLATE_HASH_VERSION = 1

# Head/tail caps: the frame is at the start and/or end, so a 50k-character paste costs
# no more than a 6k one and nothing below is worse than linear.
_HEAD_CHARS, _TAIL_CHARS = 4000, 2000
# Segments looked at from each end (a run of code/options/values counts as one).
_HEAD_SEGS, _TAIL_SEGS = 6, 4
# A line this long with no instruction sentence in it is pasted payload.
_PAYLOAD_WORDS = 25

# ---------------------------------------------------------------------------------------
# Closed instruction vocabulary: concept <- surface words. Inflections (s/es/ed/ing) are
# added automatically. Deliberately absent: topic words, audience/role words (expert,
# student, reader: they vary as slot fillers), and very common verbs (make, get, find).
# ---------------------------------------------------------------------------------------
_CONCEPTS = """
write: write wrote written compose draft author pen produce rewrite rephrase paraphrase reword
explain: explain explanation describe description clarify elaborate overview account
summarize: summarize summarise summary summaries condense recap synopsis tldr digest boil
translate: translate translation translator render
classify: classify classification categorize categorise category categories label tag intent
extract: extract extraction retrieve parse
identify: identify determine detect decide
list: list enumerate
compare: compare comparison contrast
convert: convert transform
generate: generate create design brainstorm
answer: answer respond response reply output return
question: question query
solve: solve solution
problem: problem exercise task
reasoning: reasoning reason rationale thought thinking think justify justification derivation
step: step stepwise
show: show display present
final: final last
detailed: detailed thorough comprehensive extensive depth indepth
brief: brief short shorter concise succinct
simple: simple plain easy simply
format: format formatting formatted
json: json
yaml: yaml
csv: csv
markdown: markdown
table: table
bullet: bullet bulleted point
sentence: sentence
paragraph: paragraph
word: word
heading: heading header section
example: example illustration instance
tone: tone voice register
formal: formal academic professional
informal: informal casual conversational friendly
include: include add incorporate
use: use employ using
avoid: avoid
only: only solely just
nothing: nothing
provide: provide give supply offer put
text: text passage
article: article piece news story
document: document
email: email
message: message
review: review evaluate assess critique
ticket: ticket
comment: comment
headline: headline title
utterance: utterance
code: code function snippet script program
test: test unit
patch: diff patch unified
file: file
repository: repository repo codebase
tool: tool call
agent: agent
issue: issue bug
fix: fix debug repair
plan: plan
command: command
correct: correct right
option: option choice alternative
letter: letter
multichoice: multichoice
exam: exam quiz
essay: essay
poem: poem
blog: blog post
speech: speech
dialogue: dialogue conversation
faq: faq
guide: guide walkthrough tutorial
tips: tips suggestion advice
sentiment: sentiment
positive: positive
negative: negative
neutral: neutral
spam: spam phishing
toxic: toxic toxicity
rate: rate rating scale
field: field keys schema object
null: null
cite: cite citation source reference
check: check verify double proofread
careful: careful carefully meticulous
full: full complete entire whole
each: each every
exactly: exactly strictly precisely
keep: keep maintain preserve
instruction: instruction guideline rule
limit: limit maximum max under
minimum: minimum least
native: native fluent natural idiomatic
boxed: boxed
engaging: engaging
persuasive: persuasive
english: english
french: french
spanish: spanish
german: german
italian: italian
portuguese: portuguese
japanese: japanese
chinese: chinese mandarin
korean: korean
dutch: dutch
polish: polish
turkish: turkish
arabic: arabic
hindi: hindi
swedish: swedish
russian: russian
vietnamese: vietnamese
indonesian: indonesian
greek: greek
python: python
javascript: javascript
typescript: typescript
java: java
rust: rust
sql: sql
"""

# Multi-word synonyms; matched on tokens, so "step-by-step" and "TL;DR" are covered.
_PHRASES = {
    "step by step": "stepwise", "one step at a time": "stepwise", "chain of thought": "reasoning",
    "chain of thoughts": "reasoning", "thought process": "reasoning", "train of thought": "reasoning",
    "tl dr": "summarize", "sum up": "summarize", "boil down": "summarize", "boil this down": "summarize",
    "multiple choice": "multichoice", "pull out": "extract", "make use of": "use", "give back": "answer",
    "come up with": "generate", "put together": "generate", "in depth": "detailed", "in detail": "detailed",
    "nothing else": "only", "no preamble": "only", "no explanation": "only", "no explanations": "only",
    "no other text": "only", "at most": "limit", "no more than": "limit", "up to": "limit", "at least": "minimum",
    "piece of advice": "tips", "pieces of advice": "tips", "double check": "check",
    "walk through": "explain", "walk me through": "explain", "go through": "explain", "work through": "solve", "work out": "solve",
}


def _inflect(w: str) -> set[str]:
    forms = {w, w + "s", w + "es", w + "ed", w + "d", w + "ing"}
    if w.endswith("e"):
        forms |= {w[:-1] + "ing", w[:-1] + "ion"}
    if w.endswith("y"):
        forms |= {w[:-1] + "ies", w[:-1] + "ied"}
    return forms


def _bset(words: str) -> frozenset[bytes]:
    return frozenset(w.encode() for w in words.split())


# Tokens are bytes: one C-level bytes.translate per text beats str-level tokenising by ~3x.
_VOCAB: dict[bytes, str] = {}
_BASE: set[bytes] = set()  # uninflected forms: an imperative opens with one ("Include", not "including")
for _line in _CONCEPTS.strip().splitlines():
    _concept, _words = _line.split(":")
    for _w in _words.split():
        _BASE.add(_w.encode())
        for _f in _inflect(_w):
            _VOCAB.setdefault(_f.encode(), _concept)
# A multi-word phrase becomes one marker token that maps to its concept.
_MULTI: dict[bytes, list[tuple[tuple[bytes, ...], bytes]]] = {}
for _p, _c in sorted(_PHRASES.items(), key=lambda kv: -len(kv[0])):
    _seq = tuple(_p.encode().split())
    _MULTI.setdefault(_seq[0], []).append((_seq, b"zz" + _c.encode()))
    _VOCAB[b"zz" + _c.encode()] = _c
    _BASE.add(b"zz" + _c.encode())
# Any word that can start a frame concept: a line without one has no instruction in it.
_ANY = frozenset(_VOCAB) | frozenset(_MULTI)
# Abbreviations that are frame words only as a "Label:" ("Q:", "A:", "EN:", "FR:").
_LABEL_VOCAB = _VOCAB | {k.encode(): v for k, v in dict(
    q="question", a="answer", en="english", fr="french", es="spanish", de="german", it="italian", pt="portuguese",
    ja="japanese", zh="chinese", ko="korean", nl="dutch", pl="polish", tr="turkish", ar="arabic", hi="hindi",
    sv="swedish", ru="russian", vi="vietnamese").items()}
# A sentence opening with one of these is an instruction on its own ("Summarize ...").
_CORE_VERBS = frozenset(
    "write explain summarize translate classify extract identify list compare generate answer solve reasoning provide convert plan "
    "review fix".split()
)
# These open everyday imperatives too ("Keep this medicine...", "Use the side door"), so
# the sentence also needs a second frame concept ("Use simple language", "Keep it under N words").
_SOFT_VERBS = frozenset("include use avoid check rate cite keep format show".split())
# Politeness / framing skipped before the verb ("Could you please ...", "I need you to ...").
_LEAD_WORDS = _bset("please kindly now then also and so ok okay hi hello hey just first firstly finally lastly next carefully")
_LEAD_SEQS = tuple(tuple(s.encode().split()) for s in (
    "let s", "let us", "could you", "can you", "would you", "will you", "i d like you to", "i would like you to",
    "i need you to", "i want you to", "your job is to", "your task is to"))
_LEAD_FIRST = frozenset(s[0] for s in _LEAD_SEQS)
# Statement-form instructions carry a directive cue ("The answer must be JSON").
_CUE_WORDS = _bset("should must shall needs required expected")
# A line can only hold an instruction if it has one of these (see _sentence's rules); the
# other lines -- most of any pasted text -- skip sentence analysis.
_TRIGGERS = frozenset(
    [w for w in _VOCAB if _VOCAB[w] in _CORE_VERBS or (w in _BASE and _VOCAB[w] in _SOFT_VERBS)]
    + [first for first, seqs in _MULTI.items() if any(_VOCAB[tok] in _CORE_VERBS | _SOFT_VERBS for _, tok in seqs)]
    + list(_CUE_WORDS))
# A directive statement is about the output's form ("The answer should be one word").
_FORMAT = frozenset("answer format json yaml csv markdown table bullet sentence paragraph word heading tone limit minimum only letter field".split())
_ROLE_OPENERS = ([b"you", b"are"], [b"act", b"as"])
# Once the instruction has started, these introduce its topic/audience slot; words after
# them in the same sentence are slot content ("Write a blog post about <the ethical
# questions raised by X>", "... explanation of <topic> for <non-native English speakers>").
_RESUME_WORDS = _bset("and then")
_TOPIC_WORDS = _bset("about regarding concerning on of for debating that which who whose where whether why how when if named called titled like")

# ---------------------------------------------------------------------------------------
# Masks and line classifiers. Every regex is anchored or opens with a literal or a
# character class, so scans stay linear and cheap.
# ---------------------------------------------------------------------------------------
_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.S)
_URL_RE = re.compile(r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+\.[\w.]+")
_QUOTE_RE = re.compile(r"[\"“`][^\"“”`\n]{1,300}[\"”`]|'(?<=(?<![\w'])')[^'\n]{2,200}'(?![\w'])")
_NUM_RE = re.compile(r"\d+(?:[.,:/-]\d+)*")
_SENT_END_RE = re.compile(r"[.!?;]\s+")
_OPTION_RE = re.compile(r"\(?[a-e1-5]\s*[).:]\s+\S")
_LABEL_RE = re.compile(r"(?:#+\s*)?([a-z][a-z '/_-]{0,30}?)\s*(?::(?:\s+(.*))?|$)")
_CODE_RE = re.compile(
    r"[;{}]\s*$|^\s*[})\]]|=>|==|!=|:=|\+=|->|"
    r"^\s*(?:def|class|import|from|return|const|let|var|func|function|export|public|private|package|#include|select|print)\b.*[(:{=]|"
    r"^\s*[a-z_][\w.]*\s*=\s*\S|^\s*[a-z_][\w.]*\([^)]*\)\s*$"
)
_CODE_CHARS = re.compile(r"[(){}\[\];=<>]")
_BTAB = bytes(c if 97 <= c <= 122 else 32 for c in range(256))  # keep a-z, everything else -> space
_STAB = str.maketrans({c: " " for c in map(chr, range(128)) if not ("a" <= c <= "z" or "0" <= c <= "9")})


def _tokens(tb: bytes) -> list[bytes]:
    """Words of a translated slice, multi-word phrases merged into one marker token."""
    words = tb.split()
    if _MULTI.keys().isdisjoint(words):
        return words
    out, i, n = [], 0, len(words)
    while i < n:
        for seq, tok in _MULTI.get(words[i], ()):
            if tuple(words[i:i + len(seq)]) == seq:
                out.append(tok)
                i += len(seq)
                break
        else:
            out.append(words[i])
            i += 1
    return out


def _opens_with(words: list[bytes]) -> str | None:
    """Concept of the verb that opens the clause, politeness skipped."""
    if not words:
        return None
    w = words[0]
    if w not in _LEAD_WORDS and w not in _LEAD_FIRST:  # fast path: no politeness
        return _VOCAB.get(w) if w in _BASE else None
    i = 0
    while i < len(words) and words[i] in _LEAD_WORDS:
        i += 1
    if i < len(words) and words[i] in _LEAD_FIRST:
        for seq in _LEAD_SEQS:
            if tuple(words[i:i + len(seq)]) == seq:
                i += len(seq)
                if i < len(words) and words[i] == b"please":
                    i += 1
                break
    return _VOCAB.get(words[i]) if i < len(words) and words[i] in _BASE else None


def _sentence(t: str, tb: bytes, a: int, b: int, short_line: bool, relaxed: bool) -> list[str] | None:
    """Frame concepts of the instruction-like sentence t[a:b], None for content.
    `relaxed`: an earlier sentence of the line was an instruction, so a soft verb alone
    opens one too ("Plan a trip for X. Include daily costs.")."""
    raw = tb[a:b].split()
    hits = _ANY.intersection(raw)
    if not hits:
        return None  # the common case: no frame word at all
    if len(hits) == 1 and not relaxed and raw[:2] not in _ROLE_OPENERS:
        (w,) = hits  # one frame word: only a task verb (or a phrase) can make this an instruction
        if w not in _MULTI and _VOCAB[w] not in _CORE_VERBS:
            return None
    concepts: list[str] = []
    openers: list[str | None] = []
    head: list[bytes] = []
    cue = started = False
    while True:  # clause by clause (commas): the verb may open any clause
        k = t.find(",", a, b)
        words = _tokens(tb[a:b if k < 0 else k])
        if not head:
            head = words[:2]
        cue = cue or not _CUE_WORDS.isdisjoint(words)
        if _TOPIC_WORDS.isdisjoint(words):
            started = started or not _VOCAB.keys().isdisjoint(words)
        else:
            kept, skip = [], False
            for j, w in enumerate(words):
                if started and w in _TOPIC_WORDS and not skip and words[j + 1:j + 2] != [b"me"] and words[j + 1:j + 2] != [b"us"]:
                    skip = True  # the topic slot, up to the next "and"/"then" ("for me" is no slot)
                elif skip and w in _RESUME_WORDS:
                    skip = False
                if not skip:
                    kept.append(w)
                    started = started or w in _VOCAB
            words = kept
        concepts += [c for c in map(_VOCAB.get, words) if c]
        if len(openers) < 3:
            openers.append(_opens_with(words))
        if k < 0:
            break
        a = k + 1
    if not concepts:
        return None
    for c in openers:
        if c in _CORE_VERBS or (c in _SOFT_VERBS and (relaxed or len(concepts) >= 2)):
            return concepts
    # Role lines ("Act as a travel agent"), directive statements ("The answer must be
    # JSON") and sentences dense with frame words around a task concept -- only on short
    # lines: in pasted prose such sentences are more likely content.
    if short_line and (head in _ROLE_OPENERS or (len(concepts) >= 2 and (
            (cue and not _FORMAT.isdisjoint(concepts)) or (len(set(concepts)) >= 3 and not _CORE_VERBS.isdisjoint(concepts))))):
        return concepts
    return None


def _is_code(line: str) -> bool:
    if line[:1] == "\t" or line[:2] == "  ":
        return True
    return _CODE_CHARS.search(line) is not None and _CODE_RE.search(line) is not None


def _label(s: str, tb: bytes, a: int) -> tuple[bool, list[str], bytes] | None:
    """For a "Label: value" / "## Heading" line: (has a value, frame concepts of the
    label, label words)."""
    m = _LABEL_RE.match(s) if (":" in s or s[0] == "#") else None
    if not m or m.group(1).count(" ") > 2 or (m.group(2) is None and not s.endswith(":") and s[0] != "#"):
        return None
    words = tb[a + m.start(1):a + m.end(1)]
    return bool(m.group(2)), [c for c in map(_LABEL_VOCAB.get, words.split()) if c], words


def _segments(t: str, tb: bytes) -> list[tuple[str, list[str], bytes]]:
    """(type, frame concepts, frame words) per line; consecutive payload/option/value
    lines collapse into one segment. Types: text (has instruction sentences), label,
    option, payload (code, long prose), value (the block under a line that ends in ":"),
    data (other short content); "+" marks a line that carries an inline slot value
    ("Translate into French: <text>", "Question: <q>"). Frame words are the line's
    words minus any slot value, for the structural fallback in canonical_frame."""
    segs: list[tuple[str, list[str], bytes]] = []
    pending = in_value = title = False
    pos, n = 0, len(t)
    while pos <= n:
        end = t.find("\n", pos)
        end = n if end < 0 else end
        line, a = t[pos:end], pos
        pos = end + 1
        s = line.strip()
        if not s:
            in_value = False
            continue
        a += len(line) - len(line.lstrip())
        lab = _label(s, tb, a) if (":" in s or s[0] == "#") else None
        words = b""
        if pending or (in_value and not (lab and lab[1])):
            typ, toks = "value", []  # the slot announced by the previous line (a frame label ends it)
            pending, in_value = False, True
        elif s in ("zzcode", "zzcut") or _is_code(line):
            typ, toks = "payload", []
        elif _OPTION_RE.match(s):
            typ, toks = "option", ["zzopt"]
        elif lab:
            typ, toks, words = ("label" if lab[1] else "data") + ("+" if lab[0] else ""), lab[1], lab[2]
        else:
            b = a + len(s)
            colon = s.find(": ")
            if 0 <= colon and s.count(" ", max(s.rfind(". ", 0, colon), s.rfind("? ", 0, colon), 0), colon) < 15:
                b = a + colon  # "Translate into French: <text>": the text is a slot
            short = t.count(" ", a, b) + 1 < _PAYLOAD_WORDS
            words = tb[a:b]
            toks, start = [], a
            if not _TRIGGERS.isdisjoint(words.split()) or b"you are " in words or b"act as " in words:
                for m in _SENT_END_RE.finditer(t, a, b):
                    toks += _sentence(t, tb, start, m.start() + 1, short, bool(toks)) or ()
                    start = m.end()
                toks += _sentence(t, tb, start, b, short, bool(toks)) or ()
            if toks:
                typ = "text"
            elif s.count(" ") < 5 and s[-1] != ":":  # a completion cue ("The answer is", "Correct answer")
                toks = [c for c in map(_VOCAB.get, _tokens(words)) if c]
                typ = "label" if toks else "data"
            else:
                typ, words = ("data", words) if short else ("payload", b"")
            if b < a + len(s):
                typ += "+"
        if typ == "payload" and title and segs and segs[-1][0] in ("data", "data+", "label+"):
            segs.pop()  # an unpunctuated short line right above pasted prose is its title
        title = s[-1] not in ".?!:;"
        pending = s.endswith(":") or s[0] == "#"
        if segs and typ in ("payload", "option", "value") and segs[-1][0] == typ:
            continue
        segs.append((typ, toks, words))
    return segs


_STOP_TYPES = frozenset(("payload", "value"))
_PLAIN_TYPES = frozenset(("text", "data"))


def canonical_frame(text: str) -> str:
    """The canonical string that is hashed: "f|<sorted frame concepts>" for a template,
    "s|<instruction words>" for an instruction around a slot that the vocabulary does
    not cover, "c|<normalised content>" for free text."""
    if len(text) > _HEAD_CHARS + _TAIL_CHARS:
        text = text[:_HEAD_CHARS] + "\nzzcut\n" + text[-_TAIL_CHARS:]
    if "```" in text:
        text = _FENCE_RE.sub("\nzzcode\n", text)
    t = text.lower()
    if "http" in t or "www." in t or "@" in t:
        t = _URL_RE.sub(" zzurl ", t)
    t, quoted = _QUOTE_RE.subn(" zzq ", t)
    t = _NUM_RE.sub(" zzn ", t)
    tb = t.encode("latin-1", "replace").translate(_BTAB)  # 1:1 with t, so offsets carry over

    segs = _segments(t, tb)
    if len(segs) == 1 and not quoted and segs[0][0] in _PLAIN_TYPES:  # fast path: one plain message
        frame = set(segs[0][1])
        if len(frame) >= 2 and not _CORE_VERBS.isdisjoint(frame):
            return "f|" + " ".join(sorted(frame))
        return _content(t, tb)
    # The frame is the instruction run at the start plus the one at the end; a run stops
    # at pasted payload or an announced slot value, so bulk never reaches the frame.
    frame: set[str] = set()
    runs: list[list[int]] = [[], []]
    for run, order in zip(runs, (range(min(len(segs), _HEAD_SEGS)), range(len(segs) - 1, max(-1, len(segs) - 1 - _TAIL_SEGS), -1))):
        for i in order:
            if segs[i][0] in _STOP_TYPES:
                break
            frame.update(segs[i][1])
            run.append(i)
    types = {typ for typ, _, _ in segs}
    core = not _CORE_VERBS.isdisjoint(frame)
    # Slot values that the structure shows: announced blocks, pasted bulk, inline values.
    has_slot = not types.isdisjoint(_STOP_TYPES) or any(typ[-1] == "+" for typ in types)
    # Enough frame to call it a template. With a visible slot (labels, options, quotes,
    # pasted blocks): 2 concepts, or a bare task verb ("TL;DR:\n<article>"). A single
    # free-standing message needs a task verb plus one more concept ("Explain <x> in
    # simple terms"); modifiers alone ("... Keep it short.") are not a frame.
    if quoted or len(segs) > 1 or not types <= _PLAIN_TYPES:
        is_frame = len(frame) >= 2 or (core and has_slot and sum(
            segs[i][2].count(b" ") + 1 for r in runs for i in r if segs[i][1]) <= 8)
    else:
        is_frame = core and len(frame) >= 2
    if is_frame:
        return "f|" + " ".join(sorted(frame))
    if has_slot:
        # An instruction around a slot in words the vocabulary misses ("Simplify this text
        # for a 10-year-old:\n<article>"): its own words, without slot values, are the
        # frame. A run with no instruction in it, and the short lines between a run's
        # innermost instruction and the bulk, are more likely the ragged edge of the paste.
        cut = [r[:max(j for j, i in enumerate(r) if segs[i][0][:4] == "text") + 1] for r in runs
               if any(segs[i][0][:4] == "text" for i in r)]
        words = b" ".join(segs[i][2] for i in sorted({i for r in (cut or runs) for i in r})).split()
        if len(words) >= 3:
            return "s|" + b" ".join(words).decode("latin-1")
    return _content(t, tb)


def _content(t: str, tb: bytes) -> str:
    """Free text: its identity is its content (numbers, quotes, code masked; case,
    punctuation and spacing folded; non-Latin scripts kept)."""
    if t.isascii():  # tb already is this text with punctuation blanked
        return "c|" + b" ".join(tb.split()).decode()
    return "c|" + " ".join(t.translate(_STAB).split())


def template_hash(text: str, key: bytes | None = None) -> str:
    """16 lowercase hex chars identifying the prompt's frame (see the module docstring).
    With `key` (the gateway's secret; a str is UTF-8 encoded), HMAC-SHA256 of the
    canonical frame, so nobody without the key can test a guessed prompt against a hash."""
    canon = canonical_frame(text).encode("utf-8")
    if key is not None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        return hmac.new(key, canon, hashlib.sha256).hexdigest()[:16]
    return hashlib.sha256(canon).hexdigest()[:16]


def template_bucket(hash_hex: str, n_buckets: int) -> int:
    return int(hash_hex[:8], 16) % n_buckets


# ---------------------------------------------------------------------------------------
# Reasoning elicitation: asks for the model's step-by-step reasoning / chain of thought.
# Requests for a step-by-step *procedure* ("a step-by-step guide") or for someone else's
# rationale ("the reasoning behind the law") do not count.
# ---------------------------------------------------------------------------------------
_ADJ = r"(?:full|complete|entire|detailed|whole|step[\s-]by[\s-]step|internal|own|explicit|thorough|careful)"
_NOUN = r"(?:reasoning|thinking|thought process|thoughts|rationale|working|chain[\s-]of[\s-]thought)"
# (cheap substring guards, pattern): one big alternation costs ~100 us per prompt, guarded
# small patterns on lower-cased text cost a few.
_REASONING_CHECKS = tuple((guards, re.compile(p)) for guards, p in (
    (("step",), r"\b(?:think|reason|work|solve|go|walk|explain|answer|proceed|break (?:it|this) down)\w*\b[^.?!\n]{0,40}?\bstep[\s-]*by[\s-]*step"),
    (("step",), r"\bstep[\s-]*by[\s-]*step (?:reasoning|solution|derivation|thinking|thoughts?|proof|calculation)"),
    (("chain", "<think>"), r"\bchain[\s-]+of[\s-]+thoughts?\b|<think>"),
    (("reason", "think", "thought", "rationale", "working"),
     rf"\b(?:show|explain|describe|walk (?:me |us )?through|write (?:out|down)|lay out|give|provide|include|outline|present|share|"
     rf"detail|output|document|state|spell out|articulate|verbali[sz]e)\b (?:me |us )?(?:all (?:of )?)?"
     rf"(?:your (?:{_ADJ}[\s,]+)*|(?:the|a|an) (?:{_ADJ}[\s,]+)+|(?:{_ADJ}[\s,]+)+){_NOUN}\b"),
    (("show",), r"\bshow (?:me )?(?:all )?(?:of )?(?:your|the|all) (?:work|working|steps|calculations|intermediate)\b"),
    (("think", "reason"), r"\bthink (?:it |this |the problem )?(?:through|carefully|aloud|out loud|deeply)\b|\blet'?s think\b|\breason (?:through|carefully|step)"),
    (("reasoning", "derivation", "thought process"), rf"\b{_ADJ} (?:reasoning|derivation|thought process|chain of reasoning)\b|\breasoning (?:trace|steps)\b"),
    (("justify", "skip"), r"\bjustify (?:each|every|your|all) (?:step|answer|reasoning)|\b(?:don'?t|do not|without) skip(?:ping)? (?:any )?steps\b"),
    (("intermediate", "in detail"), r"\b(?:every|all|each|the) intermediate steps?\b|\bexplain (?:your|each) (?:answer|step)s? in detail\b"),
))


def elicits_reasoning(text: str) -> bool:
    if len(text) > _HEAD_CHARS + _TAIL_CHARS:
        text = text[:_HEAD_CHARS] + "\n" + text[-_TAIL_CHARS:]
    low = text.lower().replace("’", "'")
    return any(rx.search(low) is not None for guards, rx in _REASONING_CHECKS if any(g in low for g in guards))


# ---------------------------------------------------------------------------------------
# Column helpers (None / NaN pass through as None).
# ---------------------------------------------------------------------------------------
def hash_prompts(texts: Iterable[str | None], key: bytes | None = None) -> list[str | None]:
    return [template_hash(t, key) if isinstance(t, str) else None for t in texts]


def reasoning_flags(texts: Iterable[str | None]) -> list[bool | None]:
    return [elicits_reasoning(t) if isinstance(t, str) else None for t in texts]


# ---------------------------------------------------------------------------------------
# Frame signature v2 (model/frames.py): the language-agnostic keyed signature that is to
# replace the hash above in the features; same_frame is the rule it is compared by.
# ---------------------------------------------------------------------------------------
from .frames import (  # noqa: E402
    BAND_NAMES, N_BANDS, SIGNATURE_VERSION, SignatureError, frame_signature, key_id, legacy_signature,
    parse_signature, same_frame, sign_prompts, signature_bands, signature_key, signatures_share_frame,
    system_signature, to_signature,
)

__all__ += ["SIGNATURE_VERSION", "N_BANDS", "BAND_NAMES", "frame_signature", "system_signature", "same_frame",
            "signatures_share_frame", "parse_signature", "signature_bands", "key_id", "legacy_signature",
            "to_signature", "signature_key", "sign_prompts", "SignatureError"]
