"""Prompt text of generator B: hand-written frames and phrase grammars (written for this
package), with slot content drawn from the word lists and locale data that Faker ships
(lorem words, person names, cities, jobs of en_US, es_ES, de_DE, zh_CN, ja_JP).

Only Faker's *data* is read; every draw uses the caller's numpy Generator, so the text
depends on the seed and the pinned Faker version alone (pyproject.toml pins it).
"""
from __future__ import annotations

import importlib
from itertools import accumulate
from functools import lru_cache

import numpy as np

LANGS = ("en", "es", "de", "zh", "ja")
_LOCALE = {"en": "en_US", "es": "es_ES", "de": "de_DE", "zh": "zh_CN", "ja": "ja_JP"}
CJK = ("zh", "ja")
MAX_DOC_CHARS = 12_000
_LANG_NAME = {"en": ("Spanish", "German", "French", "Japanese", "Italian"),
              "es": ("inglés", "alemán", "francés"), "de": ("Englische", "Spanische", "Französische"),
              "zh": ("英文", "日文", "法文"), "ja": ("英語", "中国語", "韓国語")}


def _data(provider: str, locale: str, *attrs: str) -> tuple:
    try:
        p = importlib.import_module(f"faker.providers.{provider}.{locale}").Provider
    except ModuleNotFoundError:
        return ()
    for a in attrs:
        v = getattr(p, a, None)
        if v:
            return tuple(v)
    return ()


@lru_cache(maxsize=None)
def lexicon(lang: str) -> dict[str, tuple]:
    loc = _LOCALE[lang]
    d = {"w": _data("lorem", loc, "word_list"),
         "name": _data("person", loc, "first_names"),
         "place": _data("address", loc, "cities", "states") or _data("address", "en_US", "states"),
         "job": _data("job", loc, "jobs")}
    if len(d["job"]) < 40:                 # de_DE / ja_JP job lists are short
        d["job"] = d["job"] + _data("lorem", loc, "word_list")[:200]
    return d


def pick(rng, seq):
    """A uniform element of seq; rng is a common.Rng (buffered uniforms: text is the hot loop)."""
    return seq[int(rng.u() * len(seq))]


def ints(rng, lo: int, hi: int, n: int) -> list[int]:
    return rng.ints(lo, hi, n)


class Slots:
    """A lazy mapping for str.format_map: only the slots a frame names get drawn."""

    def __init__(self, rng, lang: str, **fixed):
        self.rng, self.lang, self.lex, self.fixed = rng, lang, lexicon(lang), fixed

    def __getitem__(self, key: str):
        if key in self.fixed:
            return self.fixed[key]
        r = self.rng
        if key in ("a", "b", "c", "d"):
            return pick(r, self.lex["w"])
        if key in ("name", "place", "job"):
            return pick(r, self.lex[key])
        if key in ("n1", "n2", "n3"):
            return 2 + int(r.u() * 4998) if key == "n1" else 2 + int(r.u() * 88)
        if key == "p":
            return 2 + int(r.u() * 38)
        if key == "ident":
            en = lexicon("en")["w"]
            return f"{pick(r, en)}_{pick(r, en)}"
        if key == "langname":
            return pick(r, _LANG_NAME[self.lang])
        if key == "body":
            return body(r, self.lang, 15 + int(r.u() * 65))
        raise KeyError(key)


def fill(rng, lang: str, frame: str, **fixed) -> str:
    return frame.format_map(Slots(rng, lang, **fixed))


_STREAM_WORDS = 1 << 19


@lru_cache(maxsize=None)
def _stream(lang: str) -> tuple[str, ...]:
    """A fixed stream of 2^19 lorem words per language, cut into sentences of 6-22 words
    (the last word of each carries the stop): a constant of the pinned Faker data, drawn
    once with its own fixed seed. A text is a window of it at a random offset, so
    rendering costs one draw and a join, and two texts share words only by choosing
    nearby offsets (1 in ~500k per pair)."""
    words = lexicon(lang)["w"]
    r = np.random.default_rng(20_260_511)         # a plain Generator: this stream is data, drawn once
    idx = r.integers(len(words), size=_STREAM_WORDS)
    out = [words[i] for i in idx.tolist()]
    stop = "。" if lang in CJK else "."
    ends = np.cumsum(r.integers(6, 23, size=_STREAM_WORDS // 6))
    for e in ends[ends < _STREAM_WORDS - 1].tolist():
        out[e - 1] += stop
        if lang not in CJK:
            out[e] = out[e][:1].upper() + out[e][1:]
    return tuple(out)


def body(rng, lang: str, tokens: int, max_chars: int = MAX_DOC_CHARS) -> str:
    """Natural-language-like text of about `tokens` tokens in the language (lorem words
    in sentences; CJK without spaces), capped at max_chars characters."""
    cjk = lang in CJK
    # tokens per lorem word: ~1.35 for the Latin lists, ~2 for the 2-3 character CJK words (assumption)
    n = min(max(1, int(tokens / (2.0 if cjk else 1.35))), 4000)
    words = _stream(lang)
    off = int(rng.u() * (len(words) - n))
    if cjk:
        text = "".join(words[off:off + n])
        return (text if text.endswith("。") else text + "。")[:max_chars]
    text = " ".join(words[off:off + n])
    text = text[:1].upper() + text[1:]
    return (text if text.endswith(".") else text + ".")[:max_chars]


def ntok(text: str) -> int:
    """Token estimate of a text: ~4 ASCII characters per token, ~1 token per CJK
    character (assumption; provider rules of thumb)."""
    if text.isascii():
        return len(text) // 4 + 1
    extra = len(text.encode("utf-8")) - len(text)        # 2 per CJK char, 1 per accented Latin
    wide = extra // 2
    return (len(text) - wide) // 4 + wide + 1


# --- human chat ------------------------------------------------------------------------
HUMAN_FIRST = {
    "en": ("can you explain {a} and {b} to me like I'm new to this",
           "what's the difference between {a} and {b}?",
           "help me write an email to {name} about the {a} {b}",
           "I'm trying to {a} my {b} but it keeps {c}. any ideas?",
           "give me a few ideas for a weekend in {place}, we like {a} and {b}",
           "is it true that {a} causes {b}? my friend swears by it",
           "summarize this for me: {body}",
           "translate into {langname}: {body}",
           "how long does it take to {a} a {b}",
           "my coworker ({job}) said \"{body}\" - is that right?",
           "write a short poem about {a} and {b} for {name}'s birthday",
           "what should I pack for {place} in march",
           "{body}",
           "{body} what do you think?",
           "Hi! I have a question about {a}. {body}",
           "pros and cons of {a} vs {b}?",
           "I need a name for my {a} shop, something with {b}",
           "explain {a} in one paragraph",
           "how do i stop my {a} from {b}",
           "Rewrite this so it sounds more polite: {body}"),
    "es": ("¿Puedes explicarme qué es {a} y cómo se relaciona con {b}?",
           "Escribe un mensaje corto para {name} sobre {a}.",
           "¿Cuál es la diferencia entre {a} y {b}?",
           "Necesito ideas para un fin de semana en {place}.",
           "Resume este texto, por favor: {body}",
           "{body}",
           "Hola, tengo una duda sobre {a}: {body}",
           "¿Cómo puedo {a} sin {b}?",
           "Traduce al {langname}: {body}"),
    "de": ("Kannst du mir erklären, was {a} mit {b} zu tun hat?",
           "Schreib eine kurze E-Mail an {name} wegen {a}.",
           "Was ist der Unterschied zwischen {a} und {b}?",
           "Ich suche Tipps für ein Wochenende in {place}.",
           "Fasse das bitte kurz zusammen: {body}",
           "{body}",
           "Hallo! Eine Frage zu {a}: {body}",
           "Wie lange dauert es, {a} zu {b}?",
           "Übersetze ins {langname}: {body}"),
    "zh": ("请问{a}和{b}有什么区别？",
           "帮我写一封给{name}的邮件，关于{a}的事情。",
           "{place}有什么好玩的地方推荐吗？我们喜欢{a}。",
           "怎么才能{a}{b}？",
           "{body}",
           "帮我总结一下这段话：{body}",
           "你好，我想问一下{a}的问题。{body}",
           "把这段翻译成{langname}：{body}"),
    "ja": ("{a}と{b}の違いを教えてください。",
           "{name}さんに{a}についてのメールを書いてください。",
           "{place}でおすすめの場所はありますか？{a}が好きです。",
           "{body}",
           "次の文章を要約してください：{body}",
           "{a}について簡単に説明してもらえますか。",
           "{langname}に翻訳してください：{body}"),
}
HUMAN_FOLLOW = {
    "en": ("ok but what about {a}?", "thanks! can you make it shorter", "why?", "can you give an example",
           "hmm that doesn't sound right, {body}", "more formal please", "and if I {a} instead?",
           "great. now do the same for {b}", "wait, what do you mean by {a}", "{body}", "perfect thanks",
           "can you put that in a table"),
    "es": ("¿y qué pasa con {a}?", "gracias, ¿puedes hacerlo más corto?", "¿por qué?", "dame un ejemplo",
           "{body}", "más formal, por favor"),
    "de": ("und was ist mit {a}?", "danke! geht das kürzer?", "warum?", "hast du ein Beispiel?", "{body}",
           "bitte etwas förmlicher"),
    "zh": ("那{a}呢？", "谢谢，可以再短一点吗", "为什么？", "能举个例子吗", "{body}", "请更正式一点"),
    "ja": ("{a}はどうですか？", "ありがとう、もう少し短くできますか", "なぜですか？", "例を挙げてください", "{body}"),
}
PASTE_ASKS = {"en": ("what does this mean?\n\n{doc}", "{doc}\n\nexplain the above", "fix the grammar:\n{doc}"),
              "es": ("¿qué significa esto?\n\n{doc}",), "de": ("Was bedeutet das?\n\n{doc}",),
              "zh": ("这段是什么意思？\n\n{doc}",), "ja": ("これはどういう意味ですか？\n\n{doc}",)}

WRITER_ASKS = {
    "en": ("Please proofread the following {kind} and keep my tone:\n\n{doc}",
           "Rewrite this {kind} for a general audience, same length:\n\n{doc}",
           "Summarize the key points of this {kind} as bullet points.\n\n{doc}",
           "Translate this {kind} into {langname}, keep the formatting:\n\n{doc}",
           "{doc}\n\nCan you turn the above into a {kind2}?",
           "Here is my draft {kind}. What would you cut?\n\n{doc}",
           "Continue this {kind} in the same style for another few pages:\n\n{doc}"),
    "de": ("Bitte korrigiere diesen Text und behalte den Stil bei:\n\n{doc}",
           "Fasse diesen {kind} in Stichpunkten zusammen:\n\n{doc}"),
    "es": ("Corrige este texto y mantén mi estilo:\n\n{doc}", "Resume este documento en viñetas:\n\n{doc}"),
    "zh": ("请帮我润色下面这篇文章，保持原来的语气：\n\n{doc}", "请把下面的内容总结成要点：\n\n{doc}"),
    "ja": ("次の文章を校正してください。トーンはそのままで：\n\n{doc}",),
}
WRITER_FOLLOW = ("make the second paragraph more formal", "shorter please, half the length",
                 "now write a title for it", "keep the ending as it was in my version",
                 "can you explain why you changed {a}", "good. do the same for this part: {body}")
DOC_KINDS = ("essay", "cover letter", "report", "chapter", "blog post", "grant proposal", "newsletter",
             "short story", "press release", "meeting notes")

# --- developer in a notebook / SDK script ------------------------------------------------
DEV_FRAMES = (
    "Write a Python function `{ident}` that takes a list of {a} records and returns them grouped by {b}.",
    "Why does this raise KeyError: '{a}'?\n```python\ndf = pd.read_csv('{b}.csv')\nout = df.groupby('{c}')['{a}'].sum()\n```",
    "Convert this SQL to pandas: SELECT {a}, COUNT(*) FROM {b} WHERE {c} > {n2} GROUP BY {a}",
    "Extract the fields {a}, {b} and {c} from this JSON and return CSV:\n{{\"{a}\": \"{name}\", \"{b}\": {n1}, \"{c}\": \"{place}\"}}",
    "Explain the time complexity of `{ident}` when the input has {n1} items.",
    "Classify the sentiment of: \"{body}\" Answer with positive, negative or neutral.",
    "Generate 5 unit tests for a function `{ident}(x, y)` that {a}s two {b} values.",
    "Rewrite in TypeScript:\n```python\ndef {ident}(items):\n    return [i for i in items if i.{a} > {n2}]\n```",
    "Summarize in two sentences: {body}",
    "Return a JSON object with keys title and tags for this text: {body}",
)
DEV_EDITS = (" Use type hints.", " Keep it short.", " Answer in JSON only.", " Think about edge cases.",
             " No explanation, just code.", " Use numpy.", "")

# --- benign automation -----------------------------------------------------------------
AGENT_TASKS = (
    "Task: the CI job `{ident}` fails on branch {a}-{b}. Find the cause and propose a patch.",
    "Task: book a table for {n2} people in {place} on Friday evening, near {a}.",
    "Task: collect the latest figures on {a} and {b} from the internal wiki and draft a summary for {name}.",
    "Task: triage ticket #{n1}: customer {name} reports that {a} stops working after {b}.",
    "Task: update the dependency {a} to the newest version and make the test suite pass.",
    "Task: find all invoices from {place} over {n1} EUR last quarter and list their ids.",
)
AGENT_TOOLS = ("search", "read_file", "run_tests", "sql_query", "http_get", "calendar", "grep", "python")
AGENT_OBS = ('Observation [{tool}]: {{"status": "ok", "items": ["{a}", "{b}", "{c}"], "note": "{body}"}}',
             'Observation [{tool}]: exit code {p}\n{body}',
             'Observation [{tool}]: {{"rows": {n2}, "first": {{"{a}": "{name}", "{b}": {n1}}}}}',
             'Tool result ({tool}): {body}')

BATCH_INSTR = (
    ("Extract the invoice number, date, seller and total amount from the document below. Reply with JSON only.", "first"),
    ("Classify the support message below into one of: billing, bug, feature_request, account, other. Reply with the label.", "first"),
    ("Translate the following product description into German. Keep HTML tags unchanged.", "first"),
    ("Write a one-sentence neutral summary of the article below for a news digest.", "first"),
    ("Does the review below mention shipping problems? Answer yes or no, then quote the sentence.", "last"),
    ("Redact all personal names, phone numbers and addresses from the text below and return the redacted text.", "first"),
    ("List up to five keywords for the document below, comma separated.", "last"),
    ("文書から会社名、日付、金額を抽出し、JSONで返してください。", "first"),
)

EVAL_FORMATS = (
    "The following are multiple choice questions (with answers) about {subject}.\n\n",
    "Answer the question with the letter of the correct option.\n\n",
    "Read the passage and answer the question.\n\n",
)
EVAL_SUBJECTS = ("high school biology", "world history", "formal logic", "econometrics", "nutrition",
                 "computer security", "moral scenarios", "college physics", "jurisprudence", "virology")

RAG_SYSTEM = ("Answer the customer's question using only the passages below. If the answer is not in the passages, say you don't know.",
              "You are the help assistant of {company}. Use the retrieved documents to answer. Cite passage numbers.",
              "Antworte nur auf Grundlage der folgenden Auszüge aus der Wissensdatenbank.",
              "以下の資料だけを使って、お客様の質問に丁寧に答えてください。")
RAG_QUESTIONS = {"en": ("how do I {a} my {b}?", "is {a} included in the {b} plan", "why was I charged for {a}",
                        "can I change the {a} after ordering", "where do I find {a} settings", "{body}"),
                 "de": ("wie kann ich {a} ändern?", "ist {a} im Tarif {b} enthalten?", "{body}"),
                 "ja": ("{a}の設定はどこですか？", "{b}プランに{a}は含まれますか？", "{body}")}


# --- harvesting ------------------------------------------------------------------------
COT_TEMPLATES = (
    "Solve the following problem step by step. Show every intermediate calculation and explain your reasoning before giving the final answer.\n\nProblem: {problem}",
    "{problem}\n\nThink through this carefully, step by step, and justify each step. Put the final answer on its own line.",
    "You are an expert competition mathematician. Give a complete, rigorous solution with all reasoning steps.\n\n{problem}",
    "Let's think step by step. {problem} Explain your full chain of reasoning in detail.",
    "Problem: {problem}\nWrite out a detailed solution, checking each step, then state the answer as 'Final answer: ...'.",
    "Write a detailed solution for the task below. First explain your approach step by step, then give the complete code, then analyse its time and space complexity.\n\nTask: {code}",
    "{code}\n\nReason step by step about edge cases before writing the code, and include tests.",
    "Implement the following and walk me through your reasoning line by line:\n{code}",
)
MATH_PROBLEMS = (
    "A {a} factory in {place} produces {n1} units a day and raises its output by {p}% every week. How many units does it produce per day after {n2} weeks?",
    "The sum of three consecutive odd numbers is {n1}. What is the largest of them?",
    "A train leaves {place} at {n2} km/h; another leaves {n3} minutes later at {p}0 km/h. When does the second catch up?",
    "Find all real x such that x^2 - {n2}x + {n3} = 0 and x > {p}.",
    "A bag holds {n2} red and {n3} blue {a}s. Two are drawn without replacement. What is the probability both are blue?",
    "Prove that for every integer n > {p}, n^3 - n is divisible by 6.",
    "{name} invests {n1} dollars at {p}% compounded monthly. How long until the money doubles?",
)
CODE_TASKS = (
    "Write a function `{ident}` that returns the longest substring without repeating characters.",
    "Implement an LRU cache with capacity {n2} supporting get and put in O(1).",
    "Given a list of {a} intervals, merge all overlapping intervals. Function name: `{ident}`.",
    "Write a SQL query that finds, for each {a}, the {b} with the highest total in the last {n2} days.",
    "Implement Dijkstra's algorithm on a graph of {n1} nodes given as an adjacency list.",
    "Parse a CSV of {a} and {b} columns and compute a rolling {n2}-row median without pandas.",
)
SI_OPENERS = ("", "", "", "I'm a {job} and ", "As someone new to {a}, ", "Quick question: ", "For a presentation, ",
              "My teacher asked us to ", "Hey, ", "For my blog, ", "I'm curious: ")
SI_VERBS = ("explain", "describe", "compare", "write a short essay on", "give me a list of facts about",
            "outline", "argue for and against", "create a lesson plan about", "draft a blog post on",
            "tell me the history of", "write a story involving", "design a workout around",
            "brainstorm names for", "write a product description for")
SI_OBJECTS = ("{a} and {b}", "how {a} affects {b}", "{a} in {place}", "the role of {a} in {b}",
              "{a}", "why people {a} the {b}", "a {a} made of {b}", "{name}'s {a}")
SI_CONSTRAINTS = ("", "", " in under {p}0 words", " with three concrete examples", " for a {job}",
                  " using simple language", " and list common misconceptions", " as a numbered list",
                  " from the point of view of {name}", " in a humorous tone", ", then suggest further reading")
SI_EVOLVE = (" Then add a counterargument.", " Make it more detailed than usual.",
             " Also explain it to a ten-year-old.", " Include a short quiz at the end.")
DIALOGUE_OPEN = ("Let's role-play: you are a {job} and I am a customer asking about {a}. Start by greeting me.",
                 "I want to learn about {a}. Ask me questions one at a time to find out what I already know.",
                 "Pretend you are {name}, a tour guide in {place}. I just arrived.",
                 "Can you help me plan a {a} project? Start with the first step.")
DIALOGUE_NEXT = ("Interesting. Can you go deeper into {a}?", "Give an example involving {b}.",
                 "What would a critic say about that?", "Summarize our discussion so far.",
                 "OK, next step.", "Why is that? Explain in more detail.", "What about {a} and {c}?",
                 "Continue.", "How would this work in {place}?")
DETAIL_SUFFIX = ("", " Please answer in detail.", " Be thorough.", " Explain step by step.",
                 " Give a long, complete answer.")
ZH_TEMPLATES = (
    "请一步一步地详细解答下面的问题，并写出完整的推理过程：{problem}",
    "作为{job}领域的专家，请全面、深入地介绍{a}与{b}的关系，分点论述，不少于一千字。",
    "请详细解释{a}的原理，并举出三个具体的例子。",
    "下面是一道数学题：{problem}请给出详细的解题步骤和最终答案。",
    "请写一篇关于{a}在{place}发展的分析报告，要求结构清晰、论证充分。",
    "请将以下内容翻译成英文，并解释其中的关键概念：{body}",
    "请扮演一名资深{job}，详细回答：如何看待{a}对{b}的影响？请给出推理过程。",
)
ZH_PROBLEMS = ("某{place}工厂每天生产{n1}件{a}，每周增长{p}%，{n2}周后每天生产多少件？",
               "三个连续奇数的和是{n1}，最大的数是多少？",
               "一个袋子里有{n2}个红球和{n3}个蓝球，不放回地取两个，两个都是蓝球的概率是多少？",
               "{name}存入{n1}元，年利率{p}%，按月复利，多少年后本金翻倍？")
