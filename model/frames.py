"""Prompt text -> keyed frame signature (version 3), re-exported by `model.templates`.

Pure, stateless functions of one text: the gateway, the online scorer and batch scoring
must compute the same signature, so nothing here depends on what was seen before (no
arrival-order mining), and nothing is cached or stored; only the signature leaves.

A *template* is fixed text with slots. The slot is often most of the text (an article
under a one-line question) and the fixed part may come first, last or both, so the
signature is taken over the two ends and the line structure, never over the bulk, and it
works on units rather than words so that text without spaces (Chinese, Japanese, Thai)
is handled the same way as English:

  units     words of spaced scripts, single characters of unspaced ones (CJK, kana, Thai…),
            punctuation marks; numbers, URLs, e-mails and short quoted spans are masked
            (they are slot content by construction); case and Unicode width folded (NFKC).
  segments  the units cut at strong delimiters: a line break, a sentence end (. ? ! 。？！ । ۔ ؟),
            a colon that ends a label ("Question:", "问题："). A sentence end glued to the
            next word ("…about STEM.{question}", "…选择题。{question}") counts as a line
            break: prose puts a space there, a template meeting its slot does not.
  bands     HEAD  the first segments, as many as it takes to hold MIN_WEIGHT units
                  and reach a hard end (capped at HEAD_UNITS; past the cap, the first
                  sentence of MIN_WEIGHT units): the instruction that opens a prompt;
            TAIL  the same from the end: the question or cue after pasted text;
            SKEL  the sequence of line labels ("passage:|question:|answer:") when a
                  prompt has at least two distinct ones and its opening is no HEAD of its
                  own (a labelled first line, or none within the cap): the form of a
                  templated prompt whose every line carries slot content;
            NAMES HEAD again with capitalised words inside the sentence (after a lower-case
                  word of the same script) removed, only when that removed something: a name or title inside the instruction is a
                  slot ("What key details about {name} can be extracted from…").
  rule      two prompts share a frame when any band present in both is equal
            (`same_frame`). The features count repetition per band with the same rule.

A signature is 20 bytes, written as 40 lowercase hex characters:
  byte 0      version (SIGNATURE_VERSION)
  bytes 1-2   key id: 16 bits derived from the key (0 = unkeyed), so a signature made
              with another key is refused instead of silently matching nothing
  byte 3      flags: bit 0 legacy (a caller's own template hash, see `legacy_signature`)
  bytes 4-19  four 32-bit band values, big-endian (HEAD, TAIL, SKEL, NAMES); 0 = absent
Band values are keyed BLAKE2b MACs: nobody without the key can test a guessed prompt
against a signature. docs/templates.md has the reasons, the measured rates and the limits.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Iterable

__all__ = ["SIGNATURE_VERSION", "N_BANDS", "BAND_NAMES", "frame_signature", "system_signature",
           "same_frame", "signatures_share_frame", "parse_signature", "signature_bands", "key_id",
           "legacy_signature", "to_signature", "signature_key", "sign_prompts", "SignatureError"]

# Bump whenever anything below changes what a text signs to: signatures of different
# versions never match, and the feature spec records the version.
SIGNATURE_VERSION = 3      # 3: glued sentence ends, first-sentence heads, SKEL after labelled openings only
N_BANDS = 4
BAND_NAMES = ("head", "tail", "skel", "names")
SIGNATURE_HEX = 40
FLAG_LEGACY = 1

# The frame lives at the ends: only this many characters of each end are read, so a
# 10 MB paste costs what a 12k-character one does.
_HEAD_CHARS, _TAIL_CHARS = 6000, 4000
MIN_WEIGHT = 3.0        # units a HEAD/TAIL needs: "Summarise the article:" yes, "Question:" no
HEAD_UNITS = 40         # cap of a HEAD/TAIL, in units
MAX_LABELS = 12
_QUOTE_MAX = 200        # a quoted span up to this long is a slot ("Translate 'x' into French")

# Scripts written without spaces between words: each character is a unit.
_UNSPACED = (r"\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf"
             r"\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff")
_UNIT_RE = re.compile(rf"[{_UNSPACED}]|[^\W\d_{_UNSPACED}]+|\d+|[^\w\s]")
_URL_RE = re.compile(r"https?://\S+|www\.\S+|[\w.+-]+@[\w-]+\.[\w.]+")
_QUOTE_RE = re.compile(r"\"[^\"\n]{1,%d}\"|“[^”\n]{1,%d}”|«[^»\n]{1,%d}»|「[^」\n]{1,%d}」|`[^`\n]{1,%d}`"
                       % ((_QUOTE_MAX,) * 5))
_FENCE_RE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_NUM_RE = re.compile(r"\d+(?:[.,:]\d+)*")
# A line label: up to 4 words (or 8 unspaced characters) at a line start, then a colon.
_LABEL_RE = re.compile(r"^[ \t#*>\-]*([^\n:：]{1,40})[:：]", re.M)
# Up to four words with no digits (the vowel signs of Indic scripts are not \w, so any
# non-space), or up to eight characters of an unspaced script.
_LABEL_OK = re.compile(rf"(?:[^\s\d]++ ?){{1,4}}|[{_UNSPACED}]{{1,8}}")
_SENT_END = frozenset(".?!。？！।۔؟")
_COLONS = frozenset(":：")
# A capitalised word after a lower-case word of the same script (Latin, Cyrillic, Greek):
# a Latin subject name inside Cyrillic text ("…пра Arts & Humanities.") is fixed words of a
# per-subject header, not a name in a slot.
_CAP_RE = re.compile(r"(?:(?<=[a-zß-ÿ] )[A-ZÀ-Þ][\w'’-]*(?: [A-ZÀ-Þ][\w'’-]*)*"
                     r"|(?<=[а-яё] )[А-ЯЁ][\w'’-]*(?: [А-ЯЁ][\w'’-]*)*"
                     r"|(?<=[α-ω] )[Α-Ω][\w'’-]*(?: [Α-Ω][\w'’-]*)*)")
# Starts with the mark itself, so the scan skips to candidates (a leading lookbehind is
# tried at every character: 3x slower).
_GLUE_RE = re.compile(rf"[.!?।۔؟](?<=[^\s\d.!?।۔؟][.!?।۔؟])(?=[^\W\d_{_UNSPACED}])|[。！](?=[{_UNSPACED}])")


class SignatureError(ValueError):
    """A signature that cannot be read, or one made with another key."""


def _key_bytes(key) -> bytes:
    if key is None:
        return b""
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"a signature key is bytes or str, not {type(key).__name__}")
    key = bytes(key)
    return key if len(key) <= 64 else hashlib.sha256(key).digest()   # BLAKE2b keys are <= 64 bytes


def key_id(key) -> int:
    """16-bit id of a key, carried in every signature it makes; 0 for no key."""
    kb = _key_bytes(key)
    if not kb:
        return 0
    kid = int.from_bytes(hashlib.blake2b(b"distillguard key id", key=kb, digest_size=2).digest(), "big")
    return kid or 1


def _band(tag: bytes, canon: str, kb: bytes) -> int:
    v = int.from_bytes(hashlib.blake2b(canon.encode("utf-8", "surrogatepass"), key=kb, digest_size=4,
                                       person=tag).digest(), "big")
    return v or 1


def _normalise(s: str) -> str:
    # A sentence end glued to the next word ("…about STEM.{question}") is where a template
    # meets its slot: prose puts a space there. It ends a line, so the head stops at it.
    s = _GLUE_RE.sub("\\g<0>\n", s)
    if "```" in s:
        s = _FENCE_RE.sub(" ⟦c⟧ ", s)
    s = unicodedata.normalize("NFKC", s)
    if "http" in s or "www." in s or "@" in s:
        s = _URL_RE.sub(" ⟦u⟧ ", s)
    s = _QUOTE_RE.sub(" ⟦q⟧ ", s)
    return _NUM_RE.sub("0", s)


# A segment: (units, punct, line_end). punct is the delimiter that closed it: "." (also
# "!", "。", "！"), "?" ("？"), ":" ("："), or "" at a line end without one.
_PUNCT = {".": ".", "!": ".", "。": ".", "！": ".", "।": ".", "۔": ".", "?": "?", "？": "?", "؟": "?",
          ":": ":", "：": ":"}


def _iter_units(line: str):
    """Units of a long line, lazily (the head may need only a few of them)."""
    for m in _UNIT_RE.finditer(line):
        yield m.group().lower()


def _line_segments(line: str):
    """Segments of one line, in order; the last one ends the line."""
    cur: list[str] = []
    last = None
    for u in _UNIT_RE.findall(line.lower()) if len(line) <= _REV_LINE_CHARS else _iter_units(line):
        cur.append(u)
        p = _PUNCT.get(u)
        if p is not None:
            if last is not None:
                yield last
            last, cur = (cur, p, False), []
    if cur:
        if last is not None:
            yield last
        yield (cur, "", True)
    elif last is not None:
        yield (last[0], last[1], True)


def _segments(s: str):
    """Units of `s` (lower-cased) cut into segments, from the start, produced lazily: the
    head reads only what it needs, so the cost does not grow with the text."""
    for line in s.split("\n"):
        yield from _line_segments(line)


_REV_LINE_CHARS = 800    # a longer line is read from its last this-many characters only


def _segments_rev(s: str):
    """Segments of `s` from the end, lazily; a long line only from its end."""
    for line in reversed(s.split("\n")):
        cut = len(line) > _REV_LINE_CHARS
        segs = list(_line_segments(line[-_REV_LINE_CHARS:] if cut else line))
        if cut and segs:
            segs[0] = (segs[0][0][1:], segs[0][1], segs[0][2])   # the first unit may be cut in half
        yield from reversed(segs)
        if cut:
            return


def _weight(units: list[str]) -> float:
    w = 0.0
    for u in units:
        if u[0].isalnum() or u[0] == "⟦":
            w += 0.5 if (len(u) == 1 and not u.isascii()) else 1.0
    return w


def _hard(seg) -> bool:
    """A segment end that bounds a frame: a line end, a question mark or a label colon
    (a sentence end inside running prose does not: the prose may be pasted content)."""
    return seg[2] or seg[1] in ("?", ":")


def _head(segs) -> tuple[str | None, list[str], float]:
    """The opening segments up to MIN_WEIGHT units, carried on through sentence ends in
    running prose to a hard end: (frame, the units read, their weight). When no hard end
    comes within HEAD_UNITS the frame is the first sentence of MIN_WEIGHT units (a header
    sentence run into its slot, "以下是…选择题。{question}…"), else None."""
    units: list[str] = []
    w = 0.0
    first = None
    for seg in segs:
        units += seg[0]
        w += _weight(seg[0])
        if len(units) > HEAD_UNITS:
            return first, units[:HEAD_UNITS], w
        if first is None and w >= MIN_WEIGHT and seg[1] == ".":
            first = " ".join(units)
        if w >= MIN_WEIGHT and _hard(seg):
            return " ".join(units), units, w
    return (" ".join(units) if w > 0 else None), units, w   # the whole (short) text


def _tail(segs) -> str | None:
    """The closing segments (given from the end) up to MIN_WEIGHT units. A tail that ends
    in a question, a cue without final punctuation or a label stands as it is; one ending a
    sentence of running prose must reach back to a hard boundary within HEAD_UNITS (else it
    is the end of pasted text, not a frame)."""
    it = iter(segs)
    seg = next(it, None)
    if seg is None:
        return None
    units: list[str] = []
    w = 0.0
    cue = seg[1] in ("?", ":", "")
    while seg is not None:
        units[:0] = seg[0]
        w += _weight(seg[0])
        if len(units) > HEAD_UNITS:
            return None
        prev = next(it, None)
        if w >= MIN_WEIGHT and (cue or prev is None or _hard(prev)):
            return " ".join(units)
        seg = prev
    return " ".join(units) if w > 0 else None


def _label_of(m) -> str | None:
    lab = " ".join(m.group(1).lower().split())
    return lab if len(lab) <= 40 and _LABEL_OK.fullmatch(lab) else None


def _leads_with_label(s: str) -> bool:
    m = _LABEL_RE.match(s.lstrip())
    return m is not None and _label_of(m) is not None


def _labels(s: str) -> str | None:
    seen: list[str] = []
    for m in _LABEL_RE.finditer(s):
        lab = _label_of(m)
        if lab is None:
            continue
        if (not seen or seen[-1] != lab):
            seen.append(lab)
            if len(seen) >= MAX_LABELS:
                break
    return "|".join(seen) if len(set(seen)) >= 2 else None


def _bands(text: str, kb: bytes) -> tuple[int, int, int, int]:
    if len(text) > _HEAD_CHARS + _TAIL_CHARS:
        head_s, tail_s = text[:_HEAD_CHARS], text[-_TAIL_CHARS:]
    else:
        head_s = tail_s = text
    head_n = _normalise(head_s)
    tail_n = head_n if tail_s is head_s else _normalise(tail_s)
    head, seen, w = _head(_segments(head_n))
    if w == 0.0:
        # empty, whitespace or punctuation only: one defined frame of its own
        return _band(b"empty", " ".join(seen[:8]), kb), 0, 0, 0
    tail = _tail(_segments_rev(tail_n))
    # SKEL only where the opening is no frame of its own: no HEAD (a long first line) or a
    # labelled first line ("Passage: {text}"). After free text that made a HEAD (an
    # instruction) the labels ("Question:|Answer:") are ones many other templates share,
    # and the skeleton would merge them.
    skel = (_labels(head_n if tail_n is head_n else head_n + "\n" + tail_n)
            if head is None or _leads_with_label(head_n) else None)
    names = 0
    first = head_n.lstrip()[:400]
    masked, k = _CAP_RE.subn("⟦n⟧", first)
    if k:
        nh = _head(_segments(masked))[0]
        if nh is not None and nh != head:
            names = _band(b"names", nh, kb)
    if head is None and tail is None:
        # running prose with no frame at either end: its identity is its opening
        head = " ".join(seen)
    return (_band(b"head", head, kb) if head else 0, _band(b"tail", tail, kb) if tail else 0,
            _band(b"skel", skel, kb) if skel else 0, names)


def _coerce_text(text) -> str:
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", "replace")   # invalid UTF-8 -> U+FFFD, never an error
    if not isinstance(text, str):
        raise TypeError(f"a prompt is str or bytes, not {type(text).__name__}")
    return text


def _encode(kid: int, flags: int, bands) -> str:
    return f"{SIGNATURE_VERSION:02x}{kid:04x}{flags:02x}" + "".join(f"{b:08x}" for b in bands)


def frame_signature(text, key=None) -> str:
    """40-hex-char keyed signature of the prompt's frame (module docstring)."""
    kb = _key_bytes(key)
    return _encode(key_id(key), 0, _bands(_coerce_text(text), kb))


def system_signature(text, key=None) -> str:
    """Signature of a system prompt: the same bands, so a fixed app system prompt signs
    to one value; kept in its own column, never mixed with the user-turn frames."""
    return frame_signature(text, key)


def parse_signature(sig: str, expect_key_id: int | None = None) -> tuple[int, int, int, tuple[int, ...]]:
    """(version, key id, flags, bands) of a signature; SignatureError names what is wrong."""
    if not isinstance(sig, str) or len(sig) != SIGNATURE_HEX:
        raise SignatureError(f"a frame signature is {SIGNATURE_HEX} hex characters, got {sig!r:.60}")
    try:
        raw = bytes.fromhex(sig)
    except ValueError:
        raise SignatureError(f"a frame signature is {SIGNATURE_HEX} hex characters, got {sig!r:.60}") from None
    version, kid, flags = raw[0], int.from_bytes(raw[1:3], "big"), raw[3]
    if version != SIGNATURE_VERSION:
        raise SignatureError(f"frame signature version {version}, this code reads version {SIGNATURE_VERSION}")
    if expect_key_id is not None and not flags & FLAG_LEGACY and kid != expect_key_id:
        raise SignatureError(f"frame signature made with key id {kid:04x}, expected key id {expect_key_id:04x} "
                             "(the gateway and the scorer must share one signature key)")
    bands = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(N_BANDS))
    return version, kid, flags, bands


def signature_bands(sig: str) -> tuple[int, ...]:
    return parse_signature(sig)[3]


def legacy_signature(template_hash: str) -> str:
    """A caller's own template hash (any string: the v1 16-hex hash, a template id) as a
    degenerate signature: one exact band, flagged legacy, no key id to check."""
    v = int.from_bytes(hashlib.blake2b(template_hash.encode("utf-8", "surrogatepass"), digest_size=4,
                                       person=b"legacy").digest(), "big") or 1
    return _encode(0, FLAG_LEGACY, (v, 0, 0, 0))


def to_signature(value: str) -> str:
    """A stored frame value as a signature: a current-version signature as is, anything else (an upstream
    `template_hash`) through `legacy_signature`."""
    if len(value) == SIGNATURE_HEX and value[:2] == f"{SIGNATURE_VERSION:02x}":
        try:
            parse_signature(value)
            return value
        except SignatureError:
            pass
    return legacy_signature(value)


def signatures_share_frame(a: str, b: str) -> bool:
    """THE rule: some band present in both signatures is equal."""
    ba, bb = signature_bands(a), signature_bands(b)
    return any(x and x == y for x, y in zip(ba, bb))


def same_frame(a, b, key=None) -> bool:
    """Whether prompts `a` and `b` share a frame, by the rule the features use."""
    return signatures_share_frame(frame_signature(a, key), frame_signature(b, key))


# Features: each band folds to a 14-bit fingerprint (1..16383, 0 = absent), four packed
# into the low 56 bits of one non-negative int64 (-1 = no signature). The session ring keeps
# these 8 bytes per event; the per-session frame table (model.features) keeps the key and
# a 7-bit count in one int64 per frame.
BAND_BITS = 14
BAND_MASK = (1 << BAND_BITS) - 1


def signature_key(sig: str | None) -> int:
    """The features' key of a signature (a current-version signature or an upstream template hash)."""
    if not sig:
        return -1
    key = 0
    for i, b in enumerate(signature_bands(to_signature(sig))):
        if b:
            key |= (b % BAND_MASK + 1) << (BAND_BITS * i)
    return key


def sign_prompts(texts: Iterable, key=None) -> list[str | None]:
    """Column helper: None / NaN pass through as None."""
    return [frame_signature(t, key) if isinstance(t, (str, bytes)) else None for t in texts]
