"""Prompt text -> frame signature (re-exported from model/frames.py) and reasoning flag.

Pure, stateless functions of one prompt: the gateway, the online scorer and batch scoring
must compute the same values, so nothing here depends on what was seen before. Nothing is
cached or stored; only the signature and the flag leave.

The closed-vocabulary template hash of version 1 is gone: the features read frame
signatures (model/frames.py, docs/templates.md). An upstream `template_hash` column
still loads, as a one-band legacy signature (`legacy_signature`).
"""
from __future__ import annotations

import re
from typing import Iterable

from .frames import (
    BAND_NAMES, N_BANDS, SIGNATURE_VERSION, SignatureError, frame_signature, key_id, legacy_signature,
    parse_signature, same_frame, sign_prompts, signature_bands, signature_key, signatures_share_frame,
    system_signature, to_signature,
)

__all__ = ["SIGNATURE_VERSION", "N_BANDS", "BAND_NAMES", "frame_signature", "system_signature", "same_frame",
           "signatures_share_frame", "parse_signature", "signature_bands", "key_id", "legacy_signature",
           "to_signature", "signature_key", "sign_prompts", "SignatureError", "elicits_reasoning",
           "reasoning_flags"]

# The request to show reasoning sits near the start or the end: only the two ends of a
# long paste are searched, so a 10 MB prompt costs what a 6k-character one does.
_HEAD_CHARS, _TAIL_CHARS = 4000, 2000


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



def reasoning_flags(texts: Iterable[str | None]) -> list[bool | None]:
    return [elicits_reasoning(t) if isinstance(t, str) else None for t in texts]
