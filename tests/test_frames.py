"""Frame signature v2 (distillguard.model.frames, re-exported by model.templates).

Small pinned cases of the behaviour the issue asks for: the fixed part at the start, at
the end or in line labels; CJK text without spaces; slot content most of the text; keys
carried as key ids; bad prompts defined and bounded. The benchmark figures live in the
benchmark, not here.
"""
from __future__ import annotations

import time

import pytest

from distillguard.model import templates as T

ARTICLE_A = "The harbour pilot covers four thousand square metres of floating panels. " * 30
ARTICLE_B = "After three years of falling membership the chess club became a cafe. " * 25


def test_fixed_head_over_long_slot():
    a = "Summarize the following article in three bullet points:\n" + ARTICLE_A
    b = "Summarize the following article in three bullet points:\n" + ARTICLE_B
    assert T.same_frame(a, b)
    assert not T.same_frame(a, "Translate the following article into German:\n" + ARTICLE_B)


def test_question_after_pasted_text():
    q = " Did the reviewer enjoy the movie?"
    assert T.same_frame("I loved it, the acting was great." + q, "Terrible plot and worse dialogue." + q)
    assert T.same_frame(ARTICLE_A + "\nMy rating for this place is", ARTICLE_B + "\nMy rating for this place is")


def test_label_skeleton():
    a = "Passage: the cat sat on the mat all day long.\nQuestion: where did the cat sit?\nAnswer:"
    b = "Passage: rain fell over the hills through the night.\nQuestion: when did it rain?\nAnswer:"
    assert T.same_frame(a, b)
    assert not T.same_frame(a, "Premise: it rained.\nHypothesis: the ground is wet.\nLabel:")


def test_cjk_without_spaces():
    a = "请总结以下文章：\n今天天气很好，我们去公园散步，看到了很多人在跑步。"
    b = "请总结以下文章：\n北京是中国的首都，有很多名胜古迹和博物馆。"
    assert T.same_frame(a, b)
    assert not T.same_frame(a, "请把以下文章翻译成英文：\n北京是中国的首都，有很多名胜古迹和博物馆。")


def test_name_inside_instruction_is_a_slot():
    a = "What key details about Barack Obama can be extracted from the following bio?\n\nBio: born in 1961 in Honolulu."
    b = "What key details about Ada Lovelace can be extracted from the following bio?\n\nBio: a mathematician."
    assert T.same_frame(a, b)



# Per-subject exam headers run into their question without a space or a line break, the
# shape of lm-eval's `include` tasks in every language.
# (In Latin text a capitalised subject after a lower-case word reads as a name, a slot:
# test_name_inside_instruction_is_a_slot; so the English pair is lower-case.)
GLUED = {"en": ("The following are questions about chemistry.", "The following are questions about world history."),
         "ru": ("Ніжэй прыведзены пытанні пра Arts & Humanities.", "Ніжэй прыведзены пытанні пра STEM."),
         "hi": ("निम्नलिखित STEM के बारे में बहुविकल्पीय प्रश्न हैं।", "निम्नलिखित Social Science के बारे में बहुविकल्पीय प्रश्न हैं।"),
         "zh": ("以下是关于 STEM 的多项选择题（附答案）。", "以下是关于 Social Science 的多项选择题（附答案）。")}
QUESTIONS = {"en": ("what is the boiling point of water at sea level", "which gas do plants take in"),
             "ru": ("колькі вады ў акіяне", "хто напісаў гэты раман"),
             "hi": ("पानी का क्वथनांक क्या है", "पौधे कौन सी गैस लेते हैं"),
             "zh": ("水在海平面的沸点是多少", "植物吸收哪种气体进行光合作用")}


@pytest.mark.parametrize("lang", sorted(GLUED))
def test_header_glued_to_its_question(lang):
    header, other = GLUED[lang]
    q1, q2 = QUESTIONS[lang]
    form = "{h}{q}\nA. {a}\nB. {b}\nAnswer:"
    a = form.format(h=header, q=q1, a="one", b="two")
    b = form.format(h=header, q=q2 + " " + ARTICLE_B, a="three", b="four")
    assert T.same_frame(a, b)
    # another subject is another template: the subject word is fixed text, not a slot
    assert not T.same_frame(a, form.format(h=other, q=q2, a="three", b="four"))


def test_shared_labels_after_an_instruction_do_not_merge_templates():
    a = "The following are multiple choice questions about biology.\nQuestion: what do cells use?\nAnswer:"
    b = "The following are multiple choice questions about astronomy.\nQuestion: how far is the moon?\nAnswer:"
    assert not T.same_frame(a, b)
    assert T.same_frame(a, a.replace("what do cells use?", "which organelle makes energy?"))


def test_a_sentence_end_in_prose_is_not_glued():
    # "e.g." and decimals stay inside the sentence; only a mark glued to a word breaks it
    a = "Rewrite this e.g. shorter, for a 2.5 minute talk: the committee met on Monday."
    assert T.same_frame(a, "Rewrite this e.g. shorter, for a 7.25 minute talk: the river flooded twice.")

def test_unrelated_natural_prompts_do_not_share():
    prompts = ["write a python program that checks primes", "write a python program that reverses a list",
               "what's a good gift for my dad who likes fishing", "is it safe to eat eggs past the date",
               "help me plan a three day trip to Rome on a budget"]
    sigs = [T.frame_signature(p) for p in prompts]
    assert not any(T.signatures_share_frame(a, b) for i, a in enumerate(sigs) for b in sigs[i + 1:])


def test_keyed_signatures_carry_key_id():
    s1 = T.frame_signature("Summarize:\nabc def ghi", key=b"k1")
    s2 = T.frame_signature("Summarize:\nabc def ghi", key=b"k2")
    assert len(s1) == 40 and s1 != s2
    assert T.parse_signature(s1)[1] == T.key_id(b"k1") != 0
    assert T.parse_signature(T.frame_signature("x y z"))[1] == 0
    with pytest.raises(T.SignatureError, match="key id"):
        T.parse_signature(s1, expect_key_id=T.key_id(b"k2"))
    with pytest.raises(T.SignatureError, match="40 hex"):
        T.parse_signature("zz" * 20)


def test_legacy_hash_is_a_degenerate_signature():
    a, b = T.to_signature("9f2c4e1a7b3d5c60"), T.to_signature("9f2c4e1a7b3d5c60")
    assert T.signatures_share_frame(a, b) and not T.signatures_share_frame(a, T.to_signature("0000000000000001"))
    assert T.parse_signature(a, expect_key_id=1234)[2] & 1   # legacy: no key id to check
    v2 = T.frame_signature("Summarize:\nabc")
    assert T.to_signature(v2) == v2
    assert T.signature_key(None) == -1 and T.signature_key(v2) > 0


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00\x01\x02" * 1000, b"\xff\xfe\xfa invalid utf-8",
                                  "\udc80 lone surrogate", "x" * 10_000_000, "是" * 200_000, ("a:" * 5000 + "\n") * 50])
def test_bad_prompts_get_a_defined_signature_in_bounded_time(text):
    t0 = time.perf_counter()
    s = T.frame_signature(text)
    assert time.perf_counter() - t0 < 0.5   # generous: catches quadratic behaviour, not a speed target
    assert T.parse_signature(s)[0] == T.SIGNATURE_VERSION
    assert T.frame_signature(text) == s


def test_empty_prompts_share_one_frame():
    assert T.same_frame("", "   ")


def test_not_a_prompt_is_a_clear_error():
    with pytest.raises(TypeError, match="str or bytes"):
        T.frame_signature(42)
