"""The simulator's prompt bank (training.prompt_bank) against the frame signature (issue 14).

template_id is the ground truth: prompts rendered from one template must share a frame
under `model.frames.same_frame`, for every shape the bank writes (English frames, the
question after the pasted text, dialogue pastes, a name in the instruction, frames in
other languages); different templates mostly must not, and free-form human prompts
(including the multilingual ones and the reworded "summarise this" asks) rarely may.

`python tests/test_prompt_bank.py [seed]` prints the measured rates per kind and shape.
"""
from __future__ import annotations

import itertools
import sys
from collections import defaultdict

import numpy as np
import pytest

from distillguard.model.frames import frame_signature, signatures_share_frame, system_signature
from distillguard.training import prompt_bank as pb

# The one frame the signature does not hold yet: "Dialogue:" and "Summary:" are too light
# to be a head or a tail, and the speaker names of the paste read as line labels, so no
# band is stable (the failing shape issue 14 names). Kept in the bank because real prompts
# look like this; the xfail below flips when model/frames.py handles it.
KNOWN_GAPS = {"Dialogue:\n{dialogue}\n\nSummary:"}


def _sig_groups(seed: int, n_templates: int = 700, renders: int = 8):
    """{template: [signature per render]} for every non-base template of every kind, plus
    one render of every template (base included) for the cross-template rate."""
    rng = np.random.default_rng(seed)
    groups, firsts = {}, []
    for kind in pb.KINDS:
        for t in pb.template_pool(kind, n_templates, rng):
            if t.shape != "base":
                groups[t] = [frame_signature(t.render(rng)) for _ in range(renders)]
            firsts.append((t, frame_signature(t.render(rng))))
    return groups, firsts


def _within(groups, skip=KNOWN_GAPS) -> dict[tuple[str, str], float]:
    agree = defaultdict(list)
    for t, sigs in groups.items():
        if t.frame in skip:
            continue
        agree[(t.kind, t.shape)] += [signatures_share_frame(a, b) for a, b in itertools.combinations(sigs, 2)]
    return {k: float(np.mean(v)) for k, v in agree.items()}


def _cross(firsts, shapes_only: bool) -> float:
    """Share of pairs of different templates (of one kind: the hard case) sharing a frame."""
    by_kind = defaultdict(list)
    for t, s in firsts:
        if not shapes_only or t.shape != "base":
            by_kind[t.kind].append(s)
    hits = total = 0
    for sigs in by_kind.values():
        for a, b in itertools.combinations(sigs, 2):
            hits += signatures_share_frame(a, b)
            total += 1
    return hits / max(total, 1)


def _pair_rate(texts) -> float:
    sigs = [frame_signature(x) for x in texts]
    pairs = list(itertools.combinations(sigs, 2))
    return sum(signatures_share_frame(a, b) for a, b in pairs) / len(pairs)


@pytest.fixture(scope="module")
def measured():
    return _sig_groups(0)


def test_every_new_shape_is_drawn(measured):
    groups, _ = measured
    seen = {(t.kind, t.shape) for t in groups}
    for kind, shape in [("classification", "after"), ("classification", "dialogue"), ("classification", "pick"),
                        ("summarise", "after"), ("summarise", "dialogue"), ("translate", "dialogue"),
                        ("self_instruct", "name"), ("structured_extraction", "name")]:
        assert (kind, shape) in seen, (kind, shape)
    for kind in ("summarise", "translate", "classification", "self_instruct", "eval_item", "reasoning_trace"):
        langs = {s for k, s in seen if k == kind and s.startswith("ml:")}
        assert {"ml:zh", "ml:ja"} <= langs and len(langs) >= 6, (kind, langs)


def test_one_template_shares_a_frame_for_every_shape(measured):
    rates = _within(measured[0])
    low = {k: round(v, 3) for k, v in rates.items() if v < 0.95}
    assert not low, low
    assert np.mean(list(rates.values())) >= 0.98, rates


@pytest.mark.parametrize("seed", [1, 2])
def test_one_template_shares_a_frame_other_seeds(seed):
    rates = _within(_sig_groups(seed, n_templates=400, renders=6)[0])
    assert min(rates.values()) >= 0.9, rates


@pytest.mark.xfail(strict=True, reason="frames.py: 'Dialogue:/Summary:' around speaker-name lines has no stable band")
def test_dialogue_label_frame_known_gap():
    t = pb.PromptTemplate("gap", "summarise", next(iter(KNOWN_GAPS)), shape="dialogue")
    rng = np.random.default_rng(0)
    sigs = [frame_signature(t.render(rng)) for _ in range(8)]
    assert np.mean([signatures_share_frame(a, b) for a, b in itertools.combinations(sigs, 2)]) >= 0.95


def test_different_templates_mostly_do_not_share(measured):
    _, firsts = measured
    # the new shapes are distinct frames; English base frames of one kind share
    # components (a role line, a label), which is why the all-template share is higher
    # (measured 0.021 at seed 0, mostly translate-chat frames that differ only in the
    # target language, whose capitalised name the NAMES band masks as a slot)
    assert _cross(firsts, shapes_only=True) <= 0.04
    assert _cross(firsts, shapes_only=False) <= 0.15


def test_new_shapes_stay_a_minority():
    rng = np.random.default_rng(0)
    for kind in pb.KINDS:
        pool = pb.template_pool(kind, 500, rng)
        base = np.mean([t.shape == "base" for t in pool])
        assert base >= 0.7, (kind, base)


def test_cjk_frames_written_without_spaces():
    rng = np.random.default_rng(0)
    pool = [t for k in pb.KINDS for t in pb.template_pool(k, 700, rng) if t.shape in ("ml:zh", "ml:ja")]
    assert pool
    for t in pool:
        fixed = "".join(p for p in t._parts if isinstance(p, str))
        assert " " not in fixed, t.frame
        text = t.render(rng)
        prose = [ln for ln in text.split("\n") if not ln[:3] in ("A. ", "B. ", "C. ", "D. ")]   # option marks keep a space
        assert all(" " not in ln for ln in prose) and any("\u3040" <= ch <= "\u9fff" for ch in text), text[:80]


def test_free_form_human_prompts_rarely_share_frames():
    rng = np.random.default_rng(0)
    d = pb._Draw(rng)
    ml = [pb._ml_chat(d) for _ in range(600)]
    rework = [pb._human_rework(d) for _ in range(400)]
    assert len({x[:3] for x in ml}) > 50          # many languages and openings, not one
    assert _pair_rate(ml) <= 0.01, _pair_rate(ml)
    assert _pair_rate(rework) <= 0.01, _pair_rate(rework)
    chat = [pb.natural_prompt(rng, "chat") for _ in range(800)]
    assert 0.03 <= np.mean([not x.isascii() for x in chat]) <= 0.2   # a minority in other scripts
    assert _pair_rate(chat) <= 0.01


def test_dialogue_paste_has_speaker_lines():
    d = pb._Draw(np.random.default_rng(0))
    for _ in range(50):
        lines = pb._dialogue(d).split("\n")
        names = {ln.split(":", 1)[0] for ln in lines}
        assert len(lines) >= 3 and 2 <= len(names) <= 3 and names <= set(pb.FIRST)


def test_prompt_bank_deterministic_distinct_per_seed():
    def draw(seed):
        rng = np.random.default_rng(seed)
        out = []
        for kind in pb.KINDS:
            pool = pb.template_pool(kind, 300, rng)
            assert len({t.frame for t in pool}) == 300 and all(t.kind == kind for t in pool)
            out += [(t.template_id, t.shape) for t in pool]
            out += [t.render(rng) for t in pool if t.shape != "base"][:20]
            p = pb.paraphrase(pool[0], rng)
            assert p.kind == kind and p.family == pool[0].template_id and p.frame != pool[0].frame
            out.append(p.frame)
        out += [pb.natural_prompt(rng, s) for s in pb.NATURAL_STYLES for _ in range(30)]
        return out
    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    with pytest.raises(ValueError):
        pb.template_pool("nope", 1, np.random.default_rng(0))
    with pytest.raises(ValueError):
        pb.natural_prompt(np.random.default_rng(0), "nope")


def test_paraphrase_keeps_the_shape():
    rng = np.random.default_rng(0)
    for t in [t for t in pb.template_pool("classification", 300, rng) if t.shape != "base"][:20]:
        p = pb.paraphrase(t, rng)
        assert p.shape == t.shape and p.family == t.family
    # frames in another language are reworded in that language, never with English words
    english = [w.strip() for w in pb._POLITE_PRE + pb._POLITE_POST]
    ml = [t for k in pb.KINDS for t in pb.template_pool(k, 300, rng) if t.shape.startswith("ml:")]
    assert len(ml) > 30
    for t in ml:
        p = pb.paraphrase(t, rng)
        assert p.frame != t.frame and p.shape == t.shape
        assert not any(w in p.frame for w in english), p.frame
        assert p.render(rng)          # slots intact


def test_system_prompts():
    assert pb.system_prompt_for(("acct", 1), "web") == pb.system_prompt_for(("acct", 2), "web")
    apps = [pb.system_prompt_for(("acct", i), "app") for i in range(300)]
    assert apps == [pb.system_prompt_for(("acct", i), "app") for i in range(300)]
    assert len(set(apps)) == len(pb._APP_SYSTEM)           # every app prompt in use
    camp = [pb.system_prompt_for(("campaign", i), "campaign") for i in range(400)]
    used = [c for c in camp if c is not None]
    assert 0.35 <= len(used) / len(camp) <= 0.65              # about half send a fixed system prompt
    assert len(set(used)) >= 0.8 * len(used)                  # and campaigns rarely share one
    sigs = [system_signature(c) for c in set(used)]
    share = np.mean([signatures_share_frame(a, b) for a, b in itertools.combinations(sigs, 2)])
    assert share <= 0.01, share
    with pytest.raises(ValueError):
        pb.system_prompt_for(1, "nope")


if __name__ == "__main__":
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    groups, firsts = _sig_groups(seed)
    for k, v in sorted(_within(groups).items()):
        n = sum(1 for t in groups if (t.kind, t.shape) == k)
        print(f"within  {k[0]:22s} {k[1]:9s} templates={n:4d} agree={v:.3f}")
    print(f"within  known gaps {sorted(KNOWN_GAPS)}: "
          f"{np.mean(list(_within({t: s for t, s in groups.items() if t.frame in KNOWN_GAPS}, skip=set()).values()) or [float('nan')]):.3f}")
    allw = _within(groups)
    print(f"within  mean over shape families: {np.mean(list(allw.values())):.3f}")
    print(f"cross   same-kind pairs of different templates, new shapes only: {_cross(firsts, True):.4f}")
    print(f"cross   same-kind pairs of different templates, all templates:   {_cross(firsts, False):.4f}")
    rng = np.random.default_rng(seed)
    for kind in pb.KINDS:   # every template of the kind, base frames included (60 templates x 6 renders)
        sigs = [[frame_signature(t.render(rng)) for _ in range(6)] for t in pb.template_pool(kind, 60, rng)]
        w = np.mean([signatures_share_frame(a, b) for g in sigs for a, b in itertools.combinations(g, 2)])
        x = np.mean([signatures_share_frame(a[0], b[1]) for a, b in itertools.combinations(sigs, 2)])
        print(f"kind    {kind:22s} within={w:.3f} cross={x:.4f}")
    d = pb._Draw(rng)
    print(f"human   multilingual chat pairs sharing a frame: {_pair_rate([pb._ml_chat(d) for _ in range(600)]):.4f}")
    print(f"human   reworded asks pairs sharing a frame:     {_pair_rate([pb._human_rework(d) for _ in range(400)]):.4f}")
    for s in pb.NATURAL_STYLES:
        print(f"human   natural_prompt({s!r}) pairs sharing a frame: {_pair_rate([pb.natural_prompt(rng, s) for _ in range(400)]):.4f}")
