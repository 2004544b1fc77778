"""Frame signatures (distillguard.model.frames, by the `same_frame` rule) and the reasoning
flag (distillguard.model.templates) on the simulator's prompts and a hand-written set.

Rates are measured on two independent prompt sources:
* prompt_bank (the simulator's generators), fixed seeds;
* a hand-written set below: real-world-looking templates and fillers written without
  looking at prompt_bank, so the test is not circular.

`python tests/test_templates.py` prints the measured rates and speed.
"""
from __future__ import annotations

import itertools
import re
import time
from collections import Counter

import numpy as np
import pytest

from distillguard.model.frames import SIGNATURE_VERSION, frame_signature, key_id, parse_signature, same_frame, sign_prompts
from distillguard.model.frames import signatures_share_frame as share
from distillguard.model.templates import elicits_reasoning, reasoning_flags
from distillguard.training import prompt_bank as pb

# ---------------------------------------------------------------------------------------
# Hand-written fillers
# ---------------------------------------------------------------------------------------
PASSAGES = [
    "The city of Rotterdam has begun testing floating solar panels on two of its harbour basins. "
    "Officials hope the pilot, which covers roughly four thousand square metres, will show whether the panels can "
    "survive storms and the constant movement of ships. If the results are good, the port authority says it could "
    "expand the project tenfold by the end of the decade. Environmental groups have welcomed the idea but want "
    "more data on how shading affects fish and algae underneath.",
    "After three years of declining membership, the Riverside Chess Club has reinvented itself as a board-game cafe. "
    "Volunteers now run beginner nights every Thursday, and the club's Instagram account, started by a 15-year-old "
    "member, has grown to several thousand followers. Treasurer Anne Müller says the club is finally breaking even, "
    "although rent increases remain a worry. The club plans to host its first open tournament next spring.",
    "Researchers analysed sleep data from more than 20,000 smartwatch users and found that people who went to bed at "
    "consistent times reported better mood the following day, even when their total sleep was similar. The effect "
    "was strongest among shift workers. The authors caution that the study is observational and that smartwatch "
    "sleep tracking is imprecise. A controlled trial is planned for next year.",
    "Our quarterly results show revenue of 14.2 million euros, up 9% on the same period last year, driven mainly by "
    "subscription sales in Germany and the Nordics. Operating costs rose faster than expected because of higher cloud "
    "hosting fees and two senior hires in sales. We expect margins to recover in the second half as the new pricing "
    "takes effect. The board will propose no dividend this year and will instead invest in the mobile app.",
    "Dear residents, water will be shut off on Elm Street and Pine Avenue between 9am and 3pm next Tuesday while crews "
    "replace a section of the main pipe. Please store enough drinking water in advance. Traffic on Elm Street will be "
    "reduced to one lane, and the bus stop outside the pharmacy will move temporarily to the corner of Pine Avenue. "
    "We apologise for the inconvenience and thank you for your patience.",
]
SHORT_TEXTS = [
    "Where is the nearest train station?",
    "Our office will be closed on Monday for the public holiday.",
    "I would like to book a table for four people at eight o'clock tonight.",
    "The package arrived damaged, and two of the glasses were broken.",
    "Thank you so much for the lovely flowers, they brightened up the whole week!",
]
REVIEWS = [
    "Arrived on time, works exactly as described. The battery lasts all day. Five stars.",
    "Terrible. The zipper broke the second time I used it and the seller ignored my emails.",
    "It's okay for the price, but the fabric feels cheaper than in the pictures.",
    "Honestly the best headphones I've owned - comfortable, great sound, and the case is tiny.",
]
TWEETS = [
    "cannot believe my flight got cancelled AGAIN, third time this month #travel",
    "just finished my first 10k run!!! legs are jelly but so happy",
    "new update broke dark mode, thanks a lot",
    "the sunset over the bay tonight was unreal",
]
CONCEPTS = ["the Krebs cycle", "Bayes' theorem", "supply and demand", "recursion in programming", "the separation of powers", "photosynthesis"]
TOPICS = ["black holes", "the history of the bicycle", "climate adaptation in coastal cities", "how vaccines are tested", "medieval trade routes"]
QUESTIONS = [
    "Who painted the ceiling of the Sistine Chapel?",
    "What is the boiling point of water at sea level in Fahrenheit?",
    "Which planet has the most moons?",
    "In which year did the Titanic sink?",
]
MATH = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether?",
    "A rectangle is 7 cm wide and three times as long. What is its perimeter?",
    "Tom has $120. He spends a quarter on books and a third of the rest on lunch. How much money is left?",
    "If 5 machines make 5 widgets in 5 minutes, how long do 100 machines take to make 100 widgets?",
]
CODE = [
    "def average(xs):\n    return sum(xs) / len(xs)",
    "function getUser(id) {\n  return fetch('/users/' + id).then(r => r.json());\n}",
    "for i in range(len(items)):\n    if items[i] == target:\n        return i\nreturn -1",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 5;",
]
SPECS = ["checks whether a string is a palindrome", "merges two sorted lists", "returns the n-th Fibonacci number iteratively", "parses an ISO-8601 date string"]
EMAILS = [
    "hi john, i wanted to follow up on are meeting yesterday. can you send me the slides when you get a chance. thanks sara",
    "Dear team, please note that the deadline for expense reports have been moved to Friday. Let me know if their are any question.",
    "Hey, just checking if you recieved my invoice from last month, it still shows as unpaid on our side. Best, Mark",
]
DIALOGUES = [
    "Customer: Hi, my order hasn't arrived.\nAgent: Sorry to hear that! Can I have your order number?\nCustomer: It's 55821.\nAgent: Thanks, it was delayed at the depot and will arrive tomorrow.",
    "Customer: I was charged twice.\nAgent: I can see two charges, one is a pre-authorisation that will drop off in 3 days.\nCustomer: OK, thanks for explaining.",
]
NAMES = ["Priya Raman", "Jonas Becker", "Maria Gonzalez", "Kwame Boateng"]
CITIES = ["Lisbon", "Kyoto", "Montreal", "Cape Town"]

# (template, {slot: fillers}); each template is rendered with different filler choices.
HANDWRITTEN: list[tuple[str, dict[str, list[str]]]] = [
    ("Explain {concept} in detail, as you would to a first-year undergraduate. Include the key definitions, a worked example, and common pitfalls.", {"concept": CONCEPTS}),
    ("You are a world-class chef. Create an original recipe that uses {ing} as the main ingredient. List the ingredients with quantities, then give numbered steps.", {"ing": ["chickpeas", "salmon", "butternut squash", "tofu", "lamb shoulder"]}),
    ("Rewrite the following paragraph so that it is clearer and more concise, without changing its meaning:\n\n{passage}", {"passage": PASSAGES}),
    ("Q: {math}\nA: Let's think step by step.", {"math": MATH}),
    ("Read the passage and answer the question.\n\nPassage: {passage}\n\nQuestion: {q}\nAnswer:", {"passage": PASSAGES, "q": ["What is the main point?", "Who is quoted?", "What happens next?"]}),
    ("Translate the following sentence into German: {short}", {"short": SHORT_TEXTS}),
    ("Summarize the following customer review in one sentence:\n{review}", {"review": REVIEWS}),
    ("Classify the following tweet as positive, negative or neutral.\nTweet: {tweet}\nSentiment:", {"tweet": TWEETS}),
    ('Extract all person names, organizations and locations from the text below and return them as a JSON object with keys "persons", "organizations", "locations".\n\nText: {passage}', {"passage": PASSAGES}),
    ("Write a Python function that {spec}. Include type hints and a docstring, and add three unit tests using pytest.", {"spec": SPECS}),
    ("You are an expert software engineer. Review the following code for bugs, security issues and style problems. Respond with a numbered list of issues and a corrected version.\n\n```\n{code}\n```", {"code": CODE}),
    ("Generate 10 diverse questions that a curious student might ask about {topic}. Return them as a JSON list of strings.", {"topic": TOPICS}),
    ('Given the product title "{title}", write a compelling product description of about 150 words, followed by five bullet points of key features.', {"title": ["Ultralight Trekking Pole Set", "Cast Iron Dutch Oven 5qt", "Kids' Smartwatch with GPS", "Bamboo Cutting Board"]}),
    ("Solve the following math problem. Show your reasoning step by step and put the final answer in \\boxed{{}}.\n\nProblem: {math}", {"math": MATH}),
    ("Which of the following is the best answer? {q}\n(A) {a}\n(B) {b}\n(C) {c}\n(D) {d}\nAnswer with a single letter.", {"q": QUESTIONS, "a": ["Raphael", "212", "Saturn", "1912"], "b": ["Michelangelo", "100", "Jupiter", "1915"], "c": ["Donatello", "180", "Mars", "1905"], "d": ["Leonardo", "451", "Neptune", "1921"]}),
    ('Is the following statement true or false? "{claim}" Explain your reasoning in detail before giving the final answer.', {"claim": ["Bats are blind.", "The Great Wall is visible from space.", "Water conducts electricity.", "Goldfish have a three-second memory."]}),
    ("Convert the following request into a SQL query for a table named {table}.\nRequest: {req}\nSQL:", {"table": ["orders", "employees", "payments"], "req": ["total sales per month in 2023", "the five newest hires", "customers with more than three refunds"]}),
    ("Paraphrase the following sentence in five different ways:\n{short}", {"short": SHORT_TEXTS}),
    ("Proofread this email and fix any grammar or spelling mistakes. Keep the tone professional.\n\n{email}", {"email": EMAILS}),
    ("Act as a travel agent. Plan a {n}-day itinerary for {city} for a traveler interested in {interest}. Include daily activities, restaurants and estimated costs.", {"n": ["3", "5", "7"], "city": CITIES, "interest": ["street food", "architecture", "hiking", "live music"]}),
    ("Please answer the following question truthfully and concisely. If you don't know, say 'I don't know'.\nQuestion: {q}", {"q": QUESTIONS}),
    ("Write a cover letter for a {job} position at {company}. The applicant has {years} years of experience in {field}. Keep it under 300 words.", {"job": ["data analyst", "line cook", "UX designer"], "company": ["Spotify", "a local hospital", "Deloitte"], "years": ["2", "6", "11"], "field": ["retail", "logistics", "public health"]}),
    ("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instr}\n\n### Response:", {"instr": ["Name three primary colors.", "Give two synonyms for happy.", "Describe the water cycle in one paragraph.", "List four countries in South America."]}),
    ("Summarize the following conversation between a customer and an agent in 2-3 sentences:\n\n{dialogue}", {"dialogue": DIALOGUES}),
    ("Identify the main argument of the following text and evaluate its strengths and weaknesses.\n\n{passage}", {"passage": PASSAGES}),
    ("Generate a headline for the following news article. Respond with the headline only.\n\n{passage}", {"passage": PASSAGES}),
    ("Answer the following trivia question. Respond with just the answer, no explanation.\n{q}", {"q": QUESTIONS}),
    ("For the following product review, decide whether the sentiment is positive or negative. Output 1 for positive and 0 for negative.\n\nReview: {review}", {"review": REVIEWS}),
    ("Create a multiple-choice quiz question about {topic} with four options and indicate the correct answer.", {"topic": TOPICS}),
    ("Translate to French:\n{short}", {"short": SHORT_TEXTS}),
    ("Summarize this article in 3 bullet points:\n{passage}", {"passage": PASSAGES}),
    ("Write a short, friendly reply to this customer email. Do not promise a refund.\n\nEmail:\n{email}", {"email": EMAILS}),
    ("Draft a LinkedIn post announcing that {name} has joined our team as Head of {dept}. Keep it upbeat and under 80 words, and end with a welcome message.", {"name": NAMES, "dept": ["Sales", "Engineering", "Design", "People"]}),
    ("Context:\n{passage}\n\nUsing only the context above, answer the question below. If the answer is not in the context, reply \"unknown\".\nQuestion: {q}", {"passage": PASSAGES, "q": ["When will it happen?", "Who is responsible?", "How much does it cost?"]}),
    ("I will give you a piece of code. Explain what it does line by line, then suggest one improvement.\n\n{code}", {"code": CODE}),
]

# Held out: written after the hash was tuned on the set above, and never tuned on. It is
# reported (measure_rates) and held to a looser bound than the tuned sets.
HELD_OUT: list[tuple[str, dict[str, list[str]]]] = [
    ('Pretend you are a customer service agent for {company}. A customer writes: "{short}" Respond politely and offer a solution.', {"company": ["an airline", "a bank", "a gym"], "short": SHORT_TEXTS}),
    ("Here is a job description:\n{passage}\n\nWrite five interview questions to assess a candidate for this role.", {"passage": PASSAGES}),
    ("Grade the following student answer on a scale of 1 to 10 and justify the score.\nQuestion: {q}\nStudent answer: {ans}", {"q": QUESTIONS, "ans": ["Leonardo", "212 degrees", "I think Jupiter", "1912"]}),
    ("Continue the story: {opening}", {"opening": ["The lighthouse had been dark for ten years.", "Nobody in the village trusted the new baker.", "The letter arrived fifty years late."]}),
    ("Give me a JSON object describing a fictional person named {name}, with fields age, occupation, hobbies and city.", {"name": NAMES}),
    ("Create a 5-question multiple choice quiz on {topic}. Mark the correct answers with an asterisk.", {"topic": TOPICS}),
    ("Correct the grammar in the following sentence and explain each correction:\n{email}", {"email": EMAILS}),
    ("As a nutritionist, design a one-day meal plan for someone who {cond}. Include calories for each meal.", {"cond": ["has type 2 diabetes", "is training for a marathon", "is vegan and allergic to nuts"]}),
    ("Write SQL to answer: {req}\nSchema: {schema}", {"req": ["total sales per month", "top 5 customers by spend", "employees hired in 2021"], "schema": ["orders(id, customer_id, total, created_at)", "employees(id, name, hired_at, dept)"]}),
    ("Respond to the following user message as a friendly chatbot named Max. Keep replies under 50 words.\nUser: {short}\nMax:", {"short": SHORT_TEXTS}),
    ("Turn these notes into a professional email to {name}:\n\n{notes}", {"name": NAMES, "notes": ["- budget approved\n- launch moved to May\n- need 2 more testers", "- office closed Friday\n- payroll delayed one day", "- client liked demo\n- wants pricing by Tuesday"]}),
    ("Find the error in this proof and explain why it is wrong:\n\n{proof}", {"proof": ["Let a = b. Then a^2 = ab, so a^2 - b^2 = ab - b^2, hence (a+b)(a-b) = b(a-b), so a + b = b and 2 = 1.", "All horses are the same colour: by induction on the size of any group of horses...", "1 = sqrt(1) = sqrt(-1 * -1) = sqrt(-1) * sqrt(-1) = -1."]}),
    ("Write the opening paragraph of a mystery novel set in {city} in {year}.", {"city": CITIES, "year": ["1923", "1968", "2041"]}),
    ("Label each sentence in the text below as FACT or OPINION. Output one label per line.\n\n{passage}", {"passage": PASSAGES}),
    ("What is the main idea of this passage? Answer in one sentence.\n\n{passage}", {"passage": PASSAGES}),
    ("Compare {a} and {b} in a table with rows for price, performance and ease of use.", {"a": ["the iPhone 15", "a Kindle", "Notion"], "b": ["the Pixel 8", "a Kobo", "Obsidian"]}),
    ("Generate a regular expression that matches {pattern}. Explain how it works.", {"pattern": ["UK postcodes", "ISO dates", "hex colour codes", "email addresses"]}),
    ("Read the following and determine whether the author supports or opposes the proposal. Answer SUPPORT or OPPOSE.\n\n{passage}", {"passage": PASSAGES}),
    ("Simplify this text for a 10-year-old reader:\n\n{passage}", {"passage": PASSAGES}),
    ("You are a Socratic tutor. Do not give the answer directly. Ask the student one guiding question about this problem: {math}", {"math": MATH}),
]

# Hand-written paraphrases: (original frame, reworded frame), same slots.
HANDWRITTEN_PARAPHRASES = [
    ("Write a detailed explanation of {topic} for beginners. Use at least two examples.",
     "Please compose a thorough explanation of {topic} for beginners, using at least two examples. Thanks!"),
    ("Summarize the following text in 3 bullet points:\n\n{passage}", "Could you sum up the text below in 3 bullet points?\n\n{passage}"),
    ("Translate the following into Spanish:\n{short}", "Please translate this into Spanish:\n{short}"),
    ("Solve the problem below. Think step by step and give the final answer on the last line.\n\nProblem: {math}",
     "Think step-by-step and put the final answer on the last line. Solve this problem:\n\nProblem: {math}"),
    ("Classify the sentiment of the review as positive or negative. Answer with one word.\nReview: {review}",
     "Categorize the sentiment of this review as positive or negative. Reply with a single word.\nReview: {review}"),
    ("Extract the names and dates from the text below. Return JSON only.\n\n{passage}", "Pull out the names and dates from the following text. Respond with JSON only.\n\n{passage}"),
    ("Generate {n} quiz questions about {topic}. Include the answers.", "Come up with {n} quiz questions on {topic}, and include the answers."),
    ("Rewrite this email to sound more professional:\n\n{email}", "Please rephrase this email so it sounds more professional:\n\n{email}"),
    ("Explain {concept} in simple terms with an example.", "Kindly explain {concept} in plain terms, with one example."),
    ("You are a helpful assistant. Answer the question concisely.\nQuestion: {q}", "Answer the question briefly, please.\nQuestion: {q}"),
    ("List {n} tips for {topic}. Keep each tip under 20 words.", "Give me {n} tips for {topic}. Keep every tip under 20 words."),
    ("Review the following code and fix any bugs. Return only the corrected code.\n\n{code}", "Check the code below and fix the bugs. Output just the corrected code.\n\n{code}"),
]

# Unrelated, everyday prompts written by hand.
HANDWRITTEN_NATURAL = [
    "what's a good gift for my dad who likes fishing and hates gadgets",
    "Can you explain why my sourdough never rises properly? I feed the starter every day.",
    "How do I tell my roommate to stop eating my food without making it weird?",
    "is it safe to eat eggs past the best before date",
    "Write a poem about my cat Luna who sleeps on my keyboard",
    "What's the difference between a Roth IRA and a 401k?",
    "my python script says ModuleNotFoundError: No module named 'requests' but I installed it??",
    "Help me plan a 3 day trip to Rome on a student budget",
    "why do cats knock things off tables",
    "I have an interview for a barista job tomorrow, what questions will they ask?",
    "Give me a 20 minute bodyweight workout I can do in a hotel room",
    "Explain quantum computing like I'm 10",
    "how many calories are in a banana",
    "Can you recommend some fantasy books like The Name of the Wind?",
    "my boss keeps scheduling meetings at 7am, how do I push back politely?",
    "What should I name my new golden retriever puppy? She's super goofy",
    "Is it worth learning Rust in 2024 or should I stick with Go?",
    "translate 'where is the bathroom' into japanese",
    "summarize the plot of Hamlet in 3 sentences",
    "what are the symptoms of burnout and how is it different from depression",
    "I keep waking up at 3am every night. Any tips?",
    "Write a funny toast for my brother's wedding. He met his wife at a bowling alley.",
    "how do i get rid of fruit flies in my kitchen",
    "Why is the sky blue but sunsets are orange?",
    "What's a healthy breakfast that isn't oatmeal?",
    "Can you check my cover letter? I'm applying for a nursing position.\n\nDear Hiring Manager, I am writing to apply for the registered nurse position at St. Mary's. I have four years of experience in emergency care and I am passionate about patient safety.",
    "should i buy a used car with 150k miles for $4000",
    "Explain the offside rule in football",
    "what happened at the battle of hastings",
    "how do I center a div",
    "ok so my landlord wants to raise rent by 20%, is that legal in california?",
    "Give me 5 dinner ideas with chicken and rice",
    "What are some good conversation starters for a first date?",
    "I feel stuck in my career as an accountant. What other jobs could I do with my skills?",
    "Describe the taste of durian to someone who has never tried it",
    "how long should I boil an egg for a runny yolk",
    "What does 'per my last email' actually mean?",
    "Can you make a packing list for a week of camping in the rain?",
    "Who would win in a fight, a gorilla or a grizzly bear?",
    "Tell me a bedtime story about a dragon who is afraid of the dark",
]

REASONING_POS = [
    "Solve this and think step by step: 3x + 5 = 20",
    "Let's think step by step.",
    "Please show your work.",
    "Explain your reasoning in detail before answering.",
    "Provide your full chain of thought, then the answer.",
    "Walk me through your reasoning step by step.",
    "Show all your steps and justify each step.",
    "Give a detailed step-by-step solution.",
    "Write out your complete reasoning process before the final answer.",
    "Think carefully, then answer with a single letter.",
    "Reason through the problem carefully and don't skip any steps.",
    "Output your entire thought process.",
    "Use chain-of-thought prompting to answer: is 91 prime?",
    "Explain your answer in detail, including every intermediate step.",
]
REASONING_NEG = [
    "Explain photosynthesis to a 10 year old.",
    "What was the reasoning behind the new zoning law?",
    "Write a step-by-step guide to changing a tire.",
    "I think my cat is sick.",
    "Think of a name for my bakery.",
    "Translate the following into French: good morning",
    "Summarize this article in 3 bullet points.",
    "Give me a recipe for banana bread.",
    "What is 17 times 23?",
    "Show me pictures of red pandas.",
    "Classify this review as positive or negative.",
    "How do I think more clearly under pressure?",
]


# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------
_SLOT = re.compile(r"\{([a-z_]+)\}")


def _render_hand(frame: str, fillers: dict[str, list[str]], rng: np.random.Generator, extra: dict | None = None) -> str:
    pools = dict(fillers, **(extra or {}))
    # "{{}}" in a frame is a literal pair of braces (\boxed{}); format handles it.
    return frame.format(**{k: pools[k][int(rng.integers(len(pools[k])))] for k in dict.fromkeys(_SLOT.findall(frame))})


_HAND_EXTRA = {"topic": TOPICS, "passage": PASSAGES, "short": SHORT_TEXTS, "math": MATH, "review": REVIEWS,
               "n": ["3", "5", "8"], "email": EMAILS, "concept": CONCEPTS, "q": QUESTIONS, "code": CODE}


def _pair_rate(groups: list[list[str]]) -> float:
    """Share of within-group pairs whose hashes are equal."""
    same = total = 0
    for g in groups:
        hs = [frame_signature(x) for x in g]
        for a, b in itertools.combinations(hs, 2):
            same += share(a, b)
            total += 1
    return same / total


def _collision_rate(texts: list[str]) -> float:
    sigs = [frame_signature(x) for x in texts]
    pairs = sum(share(a, b) for a, b in itertools.combinations(sigs, 2))
    return pairs / (len(texts) * (len(texts) - 1) / 2)


def natural_mix(rng: np.random.Generator, n: int = 1000) -> list[str]:
    styles = rng.choice(pb.NATURAL_STYLES, size=n, p=[0.6, 0.15, 0.15, 0.1])
    return [pb.natural_prompt(rng, s) for s in styles]


def measure_rates(seed: int = 0, n_templates: int = 50, renders: int = 4) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    groups_all = []
    for kind in pb.KINDS:
        # every shape, English base frames and the issue-14 ones (tests/test_prompt_bank.py
        # has the rates per shape)
        groups = [[t.render(rng) for _ in range(renders)] for t in pb.template_pool(kind, n_templates, rng)]
        out[f"same_template[{kind}]"] = _pair_rate(groups)
        groups_all += groups
    out["same_template[prompt_bank]"] = _pair_rate(groups_all)
    out["same_template[handwritten]"] = _pair_rate(
        [[_render_hand(f, fl, rng) for _ in range(renders)] for f, fl in HANDWRITTEN])
    out["same_template[held_out]"] = _pair_rate(
        [[_render_hand(f, fl, rng) for _ in range(renders)] for f, fl in HELD_OUT])
    out["unrelated[natural_prompt x1000]"] = _collision_rate(natural_mix(rng))
    out["unrelated[handwritten natural]"] = _collision_rate(HANDWRITTEN_NATURAL)
    para = []
    for kind in pb.KINDS:
        for t in pb.template_pool(kind, n_templates, rng):
            para.append(same_frame(t.render(rng), pb.paraphrase(t, rng).render(rng)))
    out["paraphrase[prompt_bank]"] = float(np.mean(para))
    out["paraphrase[handwritten]"] = float(np.mean([
        same_frame(_render_hand(a, _HAND_EXTRA, rng), _render_hand(b, _HAND_EXTRA, rng))
        for a, b in HANDWRITTEN_PARAPHRASES for _ in range(3)]))
    # Distinct templates of one kind sharing a hash: not a target, reported for context.
    cross = []
    for kind in pb.KINDS:
        hs = [frame_signature(t.render(rng)) for t in pb.template_pool(kind, n_templates, rng)]
        cross += [share(a, b) for a, b in itertools.combinations(hs, 2)]
    out["cross_template_same_kind"] = float(np.mean(cross))
    return out


def measure_speed(seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    short = [pb.natural_prompt(rng, "chat") for _ in range(2000)]
    short += [t.render(rng) for k in ("self_instruct", "eval_item", "classification") for t in pb.template_pool(k, 100, rng) for _ in range(5)]
    long = [t.render(rng) for t in pb.template_pool("summarise", 100, rng) for _ in range(3)]
    res = {}
    for name, xs in (("short", short), ("long", long)):
        t0 = time.perf_counter()
        for x in xs:
            frame_signature(x)
        res[f"us_per_prompt[{name}]"] = 1e6 * (time.perf_counter() - t0) / len(xs)
        res[f"mean_chars[{name}]"] = float(np.mean([len(x) for x in xs]))
    return res


@pytest.fixture(scope="module")
def rates() -> dict[str, float]:
    return measure_rates(0)


# ---------------------------------------------------------------------------------------
# Rates
# ---------------------------------------------------------------------------------------
def test_same_template_pairs_share_a_hash(rates):
    assert rates["same_template[prompt_bank]"] >= 0.90, rates
    assert rates["same_template[held_out]"] >= 0.80, rates
    for kind in pb.KINDS:  # no kind may hide behind the average
        assert rates[f"same_template[{kind}]"] >= 0.80, (kind, rates)


@pytest.mark.xfail(strict=True, reason="measured 2026-12-03 with frame signature v3: 0.82 (one-paragraph "
                   "instructions with slots inside the first sentence and a fixed closing one); issue 14")
def test_handwritten_templates_share_a_frame(rates):
    assert rates["same_template[handwritten]"] >= 0.90, rates


@pytest.mark.xfail(strict=True, reason="measured 2026-12-03: a cue lighter than MIN_WEIGHT ('TL;DR:', 'Summarize "
                   "this:') over a pasted passage has no band of its own in frame signature v3; issue 14")
def test_light_cues_over_a_paste_share_a_frame():
    for frame in ("TL;DR:\n\n{passage}", "Summarize this:\n\n{passage}"):
        sigs = [frame_signature(frame.format(passage=p)) for p in PASSAGES]
        assert all(share(a, b) for a, b in itertools.combinations(sigs, 2)), frame


@pytest.mark.parametrize("seed", [1, 2])
def test_same_template_rate_other_seeds(seed):
    r = measure_rates(seed, n_templates=25, renders=3)
    assert r["same_template[prompt_bank]"] >= 0.90, r
    assert r["unrelated[natural_prompt x1000]"] <= 0.01, r


def test_unrelated_natural_prompts_rarely_collide(rates):
    assert rates["unrelated[natural_prompt x1000]"] <= 0.01, rates
    assert rates["unrelated[handwritten natural]"] <= 0.01, rates


def test_paraphrase_is_another_template_and_reported_not_pinned(rates):
    # A reworded frame has other fixed words: by the definition it is another template, so
    # only a share is reported (about 0.4 on prompt_bank); it must stay a share, not 0 or 1.
    assert 0.0 < rates["paraphrase[prompt_bank]"] < 1.0, rates


def test_popular_frames_share_a_frame():
    # Many unrelated people use these frames; they are one frame.
    for frame in ("Translate the following into French:\n{short}", "Summarize this article in 3 bullet points:\n{passage}",
                  "Summarize this article in 3 bullet points:\n\n{short}"):
        texts = [frame.format(short=s, passage=p) for s, p in zip(SHORT_TEXTS, PASSAGES)]
        sigs = [frame_signature(x) for x in texts]
        assert all(share(a, b) for a, b in itertools.combinations(sigs, 2)), frame
    # ...and the two frames differ from each other.
    assert not same_frame("Translate the following into French:\n" + PASSAGES[0],
                          "Summarize this article in 3 bullet points:\n" + PASSAGES[0])


# ---------------------------------------------------------------------------------------
# Contract
# ---------------------------------------------------------------------------------------
def test_signature_format_and_determinism():
    x = "Summarize this article in 3 bullet points:\n" + PASSAGES[1]
    h = frame_signature(x)
    version = f"{SIGNATURE_VERSION:02x}"
    assert re.fullmatch(version + r"[0-9a-f]{38}", h) and frame_signature(str(x)) == h
    for y in ["", " ", "?", "ok", "日本語のテキストを要約してください", "x" * 50_000, "\n\n\n", PASSAGES[2]]:
        assert re.fullmatch(version + r"[0-9a-f]{38}", frame_signature(y))


def test_keyed_signatures_keep_the_grouping_and_carry_the_key_id():
    x = "Translate the following into French:\n" + SHORT_TEXTS[0]
    plain, k1, k2 = frame_signature(x), frame_signature(x, b"secret-1"), frame_signature(x, b"secret-2")
    assert len({plain, k1, k2}) == 3 and not share(k1, k2)
    assert parse_signature(k1)[1] == key_id(b"secret-1") != parse_signature(k2)[1]
    assert share(frame_signature("Translate the following into French:\n" + SHORT_TEXTS[1], b"secret-1"), k1)


def test_column_helpers():
    texts = ["Let's think step by step.", None, "hello", float("nan")]
    hs = sign_prompts(texts, key=b"k")
    assert hs[1] is None and hs[3] is None and hs[0] == frame_signature(texts[0], b"k")
    assert reasoning_flags(texts) == [True, None, False, None]


def test_chinese_and_other_scripts_do_not_collapse():
    assert not same_frame("请解释一下光合作用的原理", "帮我写一封辞职信")


def test_frame_not_bulk():
    # The article is 95% of the text; only the question around it decides the frame.
    q1, q2 = "Summarize this article in 3 bullet points:\n\n", "Translate the following into Spanish:\n\n"
    assert same_frame(q1 + PASSAGES[0], q1 + PASSAGES[3])
    assert not same_frame(q1 + PASSAGES[0], q2 + PASSAGES[0])


# ---------------------------------------------------------------------------------------
# Reasoning flag
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", REASONING_POS)
def test_elicits_reasoning_positive(text):
    assert elicits_reasoning(text)
    assert elicits_reasoning(text.upper())


@pytest.mark.parametrize("text", REASONING_NEG)
def test_elicits_reasoning_negative(text):
    assert not elicits_reasoning(text)


def test_reasoning_kind_is_flagged():
    rng = np.random.default_rng(0)
    # English frames: elicits_reasoning reads English cues only, so the bank's reasoning
    # frames in other languages (shape "ml:*") are not flagged yet (a known gap)
    flagged = [elicits_reasoning(t.render(rng)) for t in pb.template_pool("reasoning_trace", 100, rng) if t.shape == "base"]
    assert np.mean(flagged) >= 0.95
    natural = [elicits_reasoning(pb.natural_prompt(rng, "chat")) for _ in range(1000)]
    assert np.mean(natural) <= 0.02


# ---------------------------------------------------------------------------------------
# prompt_bank itself (the simulator relies on this API)
# ---------------------------------------------------------------------------------------
def test_natural_prompts_are_varied():
    rng = np.random.default_rng(3)
    chat = [pb.natural_prompt(rng, "chat") for _ in range(1000)]
    assert len(set(chat)) >= 990
    openings = Counter(" ".join(x.lower().split()[:3]) for x in chat)
    assert openings.most_common(1)[0][1] < 60  # no single way of starting dominates
    words = [len(x.split()) for x in chat]
    assert 15 <= np.mean(words) <= 80 and max(words) >= 80  # a long tail, not one length
    docs = [pb.natural_prompt(rng, "document") for _ in range(50)]
    assert min(len(x.split()) for x in docs) >= 20 and np.mean([len(x.split()) for x in docs]) > 150


def test_render_speed():
    rng = np.random.default_rng(0)
    pools = [pb.template_pool(k, 50, rng) for k in ("self_instruct", "eval_item", "classification", "reasoning_trace")]
    t0 = time.perf_counter()
    n = sum(1 for pool in pools for t in pool for _ in range(20) if t.render(rng))
    assert (time.perf_counter() - t0) / n < 200e-6  # ~10-15 us measured; generous bound


# ---------------------------------------------------------------------------------------
# Speed (generous bounds: targets live in docs/templates.md)
# ---------------------------------------------------------------------------------------
def test_speed_and_linear_in_length():
    s = measure_speed(0)
    assert s["us_per_prompt[short]"] < 200, s
    # A 1 MB paste costs about what a 6 kB one does: only head and tail are read.
    big = "Summarize this article in 3 bullet points:\n\n" + (PASSAGES[0] + "\n\n") * 2500
    t0 = time.perf_counter()
    h = frame_signature(big)
    assert time.perf_counter() - t0 < 0.05
    assert share(h, frame_signature("Summarize this article in 3 bullet points:\n\n" + PASSAGES[1]))
