"""Synthetic, realistic prompt text for the traffic simulator and the template-hash tests.

Two families of text:

* templates (`template_pool`, `PromptTemplate.render`, `paraphrase`): a fixed *frame*
  with slots that change on every request -- what scripted harvesting and batch
  pipelines send. Frames are assembled from small component lists, so each kind has at
  least ~700 distinct frames; slot fillers are assembled the same way, so two renders of
  one frame rarely share their content.
* natural prompts (`natural_prompt`): what people type into a chat box -- many forms,
  topics, lengths and registers, plus pasted code/documents and short follow-ups.

Everything is pure Python + numpy and deterministic given a `numpy.random.Generator`.
Scalar Generator calls cost about a microsecond each, so uniforms are pulled in blocks
(`_Draw`) and pools are built once at import time from compact lists.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .prompt_phrases import DIALOGUE_LINES, ML, ML_LANGS

__all__ = ["KINDS", "NATURAL_STYLES", "SHAPES", "PromptTemplate", "template_pool", "paraphrase", "natural_prompt",
           "system_prompt_for"]


class _Draw:
    """Uniform draws taken from the Generator 64 at a time (one numpy call instead of one
    per pick); deterministic for a given Generator state."""

    __slots__ = ("rng", "u", "i")

    def __init__(self, rng: np.random.Generator, n: int = 64):
        self.rng = rng
        self.u = rng.random(n).tolist()
        self.i = 0

    def r(self) -> float:
        if self.i >= len(self.u):
            self.u = self.rng.random(64).tolist()
            self.i = 0
        v = self.u[self.i]
        self.i += 1
        return v

    def pick(self, seq):
        return seq[int(self.r() * len(seq))]

    def int(self, lo: int, hi: int) -> int:  # inclusive
        return lo + int(self.r() * (hi - lo + 1))

    def chance(self, p: float) -> bool:
        return self.r() < p

    def sample(self, seq, k: int) -> list:
        """k distinct items (order random)."""
        idx = list(range(len(seq)))
        out = []
        for _ in range(min(k, len(seq))):
            j = int(self.r() * len(idx))
            out.append(seq[idx.pop(j)])
        return out


def _split(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split("|") if x.strip())


def _cross(*parts: tuple[str, ...]) -> tuple[str, ...]:
    """Cartesian product of phrase lists joined by spaces (compact source, big pool)."""
    out = [""]
    for p in parts:
        out = [f"{a} {b}".strip() for a in out for b in p]
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Word pools
# ---------------------------------------------------------------------------------------
FIRST = _split(
    "Maria|James|Aisha|Wei|Carlos|Priya|Tom|Fatima|Lukas|Yuki|Oluwaseun|Sofia|Daniel|Mei|Ahmed|"
    "Elena|Kwame|Hannah|Diego|Anika|Ravi|Chloe|Mateo|Ingrid|Jamal|Leila|Noah|Sara|Hiroshi|Amara|"
    "Ben|Valentina|Omar|Grace|Pavel|Nadia|Liam|Zanele|Marco|Emily|Arjun|Camille|Tariq|Olga|Sam|"
    "Rosa|Kenji|Abebe|Julia|Felix|Ines|Dmitri|Lucy|Hamza|Nora|Andre|Siobhan|Tuan|Laila|Erik"
)
LAST = _split(
    "Garcia|Smith|Chen|Okafor|Patel|Novak|Kim|Rossi|Nguyen|Müller|Haddad|Johansson|Silva|Brown|"
    "Tanaka|Mensah|Kowalski|Dubois|Ivanova|Singh|Lopez|Williams|Ahmed|Costa|Yilmaz|Murphy|Sato|"
    "Fischer|Mwangi|Andersen|Reyes|Taylor|Cohen|Park|Bianchi|Hughes|Adeyemi|Larsen|Moreau|Khan"
)
CITIES = _split(
    "Portland|Leeds|Lyon|Austin|Nairobi|Osaka|Porto|Tucson|Gdansk|Adelaide|Halifax|Pune|Cork|"
    "Bergen|Valencia|Denver|Medellin|Brno|Wellington|Raleigh|Malmo|Tampere|Bologna|Boise|Accra|"
    "Ghent|Sapporo|Cluj|Durban|Aarhus|Madison|Lille|Kraków|Quebec City|Bristol|Chattanooga"
)
COUNTRY_CAPITAL = (
    ("France", "Paris"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("Brazil", "Brasília"), ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"),
    ("Norway", "Oslo"), ("Turkey", "Ankara"), ("Vietnam", "Hanoi"), ("Morocco", "Rabat"),
    ("Chile", "Santiago"), ("Poland", "Warsaw"), ("Ghana", "Accra"), ("New Zealand", "Wellington"),
    ("Switzerland", "Bern"), ("Mongolia", "Ulaanbaatar"), ("Nigeria", "Abuja"), ("Pakistan", "Islamabad"),
    ("Argentina", "Buenos Aires"), ("Portugal", "Lisbon"), ("Kazakhstan", "Astana"), ("Thailand", "Bangkok"),
    ("Ethiopia", "Addis Ababa"), ("Colombia", "Bogotá"), ("Finland", "Helsinki"), ("Iran", "Tehran"),
)
ORG_A = _split(
    "Northwind|Brightwell|Bluefin|Harbor|Cedar|Summit|Quartz|Redline|Meridian|Oakridge|Lumen|"
    "Fairway|Ironbridge|Silverline|Kestrel|Tidewater|Granite|Juniper|Helios|Orchard|Vantage|Polar"
)
ORG_B = _split("Labs|Logistics|Health|Analytics|Foods|Energy|Systems|Partners|Bank|Robotics|Media|Insurance|Outdoor|Pharma|Retail")
ORGS = _cross(ORG_A, ORG_B)
PRODUCT_ADJ = _split("wireless|ergonomic|stainless steel|compact|smart|noise-cancelling|waterproof|foldable|refurbished|portable|bamboo|cordless")
PRODUCT_NOUN = _split(
    "earbuds|standing desk|water bottle|blender|backpack|air fryer|keyboard|rice cooker|desk lamp|"
    "robot vacuum|e-reader|camping stove|office chair|baby monitor|electric kettle|fitness tracker"
)
PRODUCTS = _cross(PRODUCT_ADJ, PRODUCT_NOUN)
MONTHS = _split("January|February|March|April|May|June|July|August|September|October|November|December")
WEEKDAYS = _split("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday")
LANGS = _split("French|Spanish|German|Italian|Portuguese|Japanese|Chinese|Korean|Dutch|Polish|Turkish|Arabic|Hindi|Swedish|Russian|Vietnamese|Indonesian|Greek")

# Topics = aspect x subject: ~200 subjects from many fields times 14 angles.
SUBJECTS = _split(
    # science & nature
    "photosynthesis|plate tectonics|black holes|the immune system|CRISPR gene editing|antibiotic resistance|"
    "ocean acidification|the water cycle|quantum entanglement|the theory of evolution|vaccines|the human microbiome|"
    "coral reefs|volcanoes|dark matter|the periodic table|circadian rhythms|migratory birds|soil erosion|nuclear fusion|"
    # tech
    "machine learning|blockchain|public-key cryptography|cloud computing|open-source software|5G networks|"
    "quantum computing|recommendation algorithms|solid-state batteries|self-driving cars|the history of the internet|"
    "password managers|compilers|relational databases|containerization|large language models|smart grids|GPS|"
    # economics & society
    "inflation|minimum wage laws|universal basic income|the gig economy|remote work|index funds|supply chains|"
    "compound interest|housing affordability|microfinance|carbon taxes|trade tariffs|central banks|cryptocurrency regulation|"
    "urbanization|public transit|the four-day work week|student debt|social media and democracy|misinformation|"
    # history & culture
    "the French Revolution|the Silk Road|the printing press|the Roman Republic|the Cold War|the Industrial Revolution|"
    "the Harlem Renaissance|the Meiji Restoration|ancient Egyptian medicine|the Black Death|the space race|jazz|"
    "Impressionism|the Renaissance|the abolition of slavery|the Ottoman Empire|the invention of writing|hip hop|"
    # health & life
    "intermittent fasting|sleep hygiene|strength training for older adults|mindfulness meditation|seasonal allergies|"
    "childhood vaccination schedules|burnout|plant-based diets|hydration|screen time for children|type 2 diabetes|"
    # practical
    "personal budgeting|negotiating a salary|composting|home insulation|learning a second language|public speaking|"
    "time management|first aid for burns|raising backyard chickens|sourdough baking|bicycle maintenance|job interviews|"
    # philosophy & arts
    "stoicism|utilitarianism|free will|the trolley problem|minimalism|film noir|the sonnet form|game theory|"
    "the placebo effect|cognitive biases|the Monty Hall problem|color theory|urban gardening|wildfire management"
)
ASPECTS = (
    "{s}", "{s}", "the history of {s}", "how {s} works", "common misconceptions about {s}",
    "the pros and cons of {s}", "recent developments in {s}", "the role of {s} in everyday life",
    "the ethical questions raised by {s}", "the economics of {s}", "why {s} matters", "the future of {s}",
    "key debates around {s}", "the basic principles of {s}",
)
TOPICS = tuple(a.format(s=s) for a in ASPECTS for s in SUBJECTS)
AUDIENCES = _split(
    "high school students|a five-year-old|busy executives|first-year university students|retirees|"
    "software engineers new to the field|nurses|small business owners|policy makers|curious teenagers|"
    "non-native English speakers|a general audience|journalists|parents of toddlers|graduate students|"
    "farmers|museum visitors|people with no technical background|a podcast audience|new employees|"
    "middle school teachers|investors|hobbyists|city council members|a book club"
)
POETS = _split("Emily Dickinson|Pablo Neruda|Walt Whitman|Mary Oliver|Matsuo Basho|Langston Hughes|Wisława Szymborska|Rumi")
ACTIVITIES = _split(
    "saving money on groceries|staying focused while working from home|training for a first marathon|"
    "keeping houseplants alive|sleeping better|running effective meetings|learning to code|traveling on a budget|"
    "reducing food waste|onboarding remote employees|preparing for a job interview|decluttering a small apartment|"
    "writing a grant proposal|teaching kids about money|managing a team across time zones"
)
CLAIMS = _split(
    "cities should ban cars from their centers|homework should be abolished in primary schools|"
    "remote work is better for productivity|nuclear power is essential for decarbonization|"
    "social media companies should verify users' ages|voting should be compulsory|"
    "public libraries matter more than ever|college education should be free|"
    "standardized testing should be eliminated|space exploration is worth the cost"
)
CHARACTERS = _split(
    "a retired lighthouse keeper|a nervous young wizard|a robot learning to cook|a detective who is afraid of the dark|"
    "two rival bakers|a lost museum guard|a teenage astronaut|a talking fox|a cartographer with no sense of direction|"
    "an elderly chess champion"
)
SITUATIONS = _split(
    "finds a map hidden in an old book|must cross a frozen lake|receives a letter from the future|"
    "wakes up in a city with no sound|has one day to save the town festival|discovers a door in the basement|"
    "is asked to babysit a dragon|loses the ability to lie"
)


def _name(d: _Draw) -> str:
    return f"{d.pick(FIRST)} {d.pick(LAST)}"


def _money(d: _Draw) -> str:
    return f"{d.int(12, 9800)}.{d.int(0, 99):02d}"


def _date(d: _Draw) -> str:
    return f"{d.pick(MONTHS)} {d.int(1, 28)}, {d.int(2019, 2025)}"


# ---------------------------------------------------------------------------------------
# Articles: genre sentence frames x a per-article cast, so long documents vary sentence by
# sentence but stay coherent (one organisation, one city, recurring people).
# ---------------------------------------------------------------------------------------
_ART = {
    "civic": (
        "The {city} city council voted {v1} to {v2} on {weekday} to approve a plan that would {policy}.",
        "Supporters say the measure will {benefit}, while critics argue it could {harm}.",
        "\"This is a step we should have taken years ago,\" said {p1}, who chairs the council's {committee} committee.",
        "The proposal has been debated for {n} months and drew more than {big} public comments.",
        "Officials estimate the program will cost about ${n} million over {n2} years.",
        "{p2}, who has lived in {city} for {n3} years, said the decision left her {feeling}.",
        "A similar policy in {city2} was reversed last year after a lawsuit from local businesses.",
        "A final hearing is scheduled for {month} {day}, and residents can submit comments online until then.",
        "According to a {year} survey, {pct} percent of residents said they were worried about {worry}.",
        "Several council members asked for a review of the budget before any money is spent.",
        "The mayor's office did not respond to a request for comment by {weekday} evening.",
        "Neighbourhood groups plan to hold an information session at the public library next week.",
        "Opponents have started collecting signatures in an attempt to put the question on the ballot.",
        "The plan would be phased in over {n2} years, starting with the districts closest to downtown.",
    ),
    "business": (
        "{org} reported quarterly revenue of ${n} million on {weekday}, up {pct} percent from a year earlier.",
        "The company attributed the growth to strong demand for its {product} and lower shipping costs.",
        "Shares of {org} rose {pct2} percent in early trading after the announcement.",
        "\"We are investing heavily in our supply chain and in our people,\" chief executive {p1} told analysts.",
        "The firm expects to hire about {big} workers in {city} over the next {n2} years.",
        "Analysts at {org2} cautioned that rising interest rates could slow consumer spending later this year.",
        "{org} also announced that it would close {n} underperforming stores by the end of {month}.",
        "Competition in the sector has intensified since {year}, when several start-ups entered the market.",
        "The company's operating margin narrowed slightly as it raised wages for warehouse staff.",
        "A spokesperson for {org} declined to comment on reports of a possible acquisition.",
        "Industry data show that online sales now account for {pct} percent of the market.",
        "The board approved a dividend of {n3} cents per share, payable in {month}.",
        "Executives said the new plant in {city} would be fully operational within {n2} months.",
        "Some investors have questioned whether the expansion is moving too quickly.",
    ),
    "science": (
        "Researchers at the University of {city} have found that {finding}.",
        "The study, published this week in a peer-reviewed journal, followed {big} participants for {n2} years.",
        "\"We were surprised by how consistent the effect was,\" said {p1}, the study's lead author.",
        "Participants who {behaviour} were {pct} percent less likely to develop the condition.",
        "The authors caution that the study shows an association and cannot prove cause and effect.",
        "Earlier work by a team in {city2} had suggested a similar pattern in a much smaller sample.",
        "The research was funded in part by a grant from a national science foundation.",
        "Independent experts said the results were promising but needed to be replicated.",
        "The team now plans a randomized trial involving about {n3}00 volunteers.",
        "Measurements were taken every {n} weeks using standard laboratory equipment.",
        "{p2}, a biologist who was not involved in the research, called the findings \"an important piece of the puzzle\".",
        "The data also hinted at differences between age groups, though the numbers were small.",
        "Funding for follow-up studies has not yet been secured.",
        "Scientists have debated the question since at least {year}.",
    ),
    "sports": (
        "{team} beat {team2} {s1}-{s2} on {weekday} night in front of a sold-out crowd in {city}.",
        "{p1} scored twice in the second half, including a late header that sealed the win.",
        "The victory moves {team} to {n} points, {n2} behind the league leaders.",
        "\"The boys showed real character after going a goal down,\" coach {p2} said afterwards.",
        "{team2} had the better of the opening half hour but failed to convert several chances.",
        "Attendance has risen by {pct} percent since the club moved to its new stadium in {year}.",
        "The team's captain left the field in the {n3}th minute with what appeared to be an ankle injury.",
        "Next up is an away trip to {city2} on {month} {day}.",
        "Supporters have criticised the club's ticket prices, which rose again this season.",
        "The goalkeeper made {n} saves, the most by any player in the league this month.",
        "Both sides are expected to be active in the transfer window in {month}.",
        "It was the team's first home win against a top-four side in {n2} seasons.",
    ),
    "tech": (
        "{org} on {weekday} released an update to its {app} app that adds {feature}.",
        "The update is available on both major mobile platforms and rolls out gradually over {n} days.",
        "Security researchers found that earlier versions stored some data without encryption.",
        "\"Privacy is at the heart of everything we build,\" product lead {p1} wrote in a blog post.",
        "The company says the app now has more than {big} thousand daily users.",
        "Reviewers praised the cleaner design but complained that battery use had increased.",
        "Developers can access the new features through a public API starting in {month}.",
        "The release follows a {n2}-hour outage last month that affected users in {city} and {city2}.",
        "Analysts expect rivals to announce similar features before the end of {year}.",
        "{p2}, an independent developer, said the change would make small apps easier to build.",
        "The software is free for personal use, with a paid tier for teams.",
        "Some users reported that the update failed to install on older devices.",
    ),
    "health": (
        "Health officials in {city} are urging residents to {advice} as {illness} cases rise.",
        "Local clinics reported {big} cases in the past {n} weeks, nearly double the usual number.",
        "\"Most people recover at home, but older adults should be careful,\" said Dr. {p1}.",
        "Symptoms typically include fever, fatigue and a persistent cough lasting {n2} to {n3} days.",
        "Pharmacies say demand for over-the-counter remedies has climbed since early {month}.",
        "The hospital in {city2} has postponed some routine procedures to free up beds.",
        "Officials stressed that the situation remains manageable and that schools will stay open.",
        "A free walk-in clinic will operate on {weekday}s at the community centre until the end of {month}.",
        "Experts say hand washing and staying home when sick remain the most effective measures.",
        "Data from the past {n2} years suggest the season peaks in late winter.",
        "{p2}, a nurse at a local clinic, said staff were working longer shifts than usual.",
    ),
    "review": (
        "I bought the {product} from {org} about {n} weeks ago and have used it almost every day.",
        "Setup took less than {n2} minutes, and the instructions were clear enough.",
        "The build quality feels solid, although the finish picks up fingerprints easily.",
        "Battery life is roughly {n3} hours, which is a bit below what the box promises.",
        "Customer support answered my question within a day, which I appreciated.",
        "At ${n}9 it is not cheap, but it compares well with similar products I have tried.",
        "My main complaint is the noise: it is louder than I expected in a small apartment.",
        "The companion app is confusing and asked for far too many permissions.",
        "After a month, one of the buttons started to stick, so durability is a question mark.",
        "Overall it does what it says, and I would probably buy it again.",
        "If you live in a place like {city} with hard water, expect to clean it more often.",
    ),
}
_ART_FILL = {
    "policy": _split(
        "expand protected bike lanes across downtown|convert an unused rail yard into affordable housing|"
        "raise parking fees near the university|fund free school lunches for all students|"
        "replace the city's diesel buses with electric ones|limit short-term rentals in residential areas|"
        "build a new branch library on the east side|ban gas leaf blowers by 2027"
    ),
    "benefit": _split("cut traffic deaths|ease the housing shortage|lower household costs|improve air quality|bring more visitors downtown"),
    "harm": _split("drive small businesses away|raise property taxes|worsen congestion on side streets|strain an already tight budget"),
    "committee": _split("transportation|housing|budget|public safety|parks and recreation|environment"),
    "feeling": _split("hopeful|frustrated|cautiously optimistic|confused|relieved|angry"),
    "worry": _split("rising rents|road safety|noise at night|the cost of living|crime in the parks"),
    "finding": _split(
        "regular afternoon walks may improve memory in older adults|a common soil bacterium can break down plastic|"
        "children who read aloud daily develop larger vocabularies|short bursts of exercise lower blood sugar after meals|"
        "urban trees can reduce summer temperatures by several degrees|honeybees can learn to recognise human faces"
    ),
    "behaviour": _split("exercised at least three times a week|slept more than seven hours|ate fish twice a week|spent time outdoors daily"),
    "app": _split("note-taking|banking|fitness|messaging|photo editing|language learning|calendar"),
    "feature": _split("offline mode|end-to-end encrypted backups|shared folders|a redesigned search bar|voice commands|a dark theme"),
    "advice": _split("get vaccinated|stay home when sick|wash their hands frequently|check on elderly neighbours"),
    "illness": _split("influenza|norovirus|RSV|measles|strep throat"),
    "team": _split(
        "Riverside United|the Harbor Hawks|Northgate Rovers|City Athletic|the Valley Stars|Eastfield Town|"
        "Westbrook FC|the Mountain Lions"
    ),
}


def _article(d: _Draw, words: int | None = None, genre: str | None = None) -> str:
    """A news story / review of roughly `words` words (100-1500 by default)."""
    if words is None:
        words = int(100 * 15 ** d.r())  # log-uniform 100..1500
    genre = genre or d.pick(tuple(_ART))
    frames = _ART[genre]
    cast = {k: d.pick(v) for k, v in _ART_FILL.items()}
    cast.update(
        city=d.pick(CITIES), city2=d.pick(CITIES), org=d.pick(ORGS), org2=d.pick(ORGS),
        p1=_name(d), p2=_name(d), product=d.pick(PRODUCTS), month=d.pick(MONTHS),
        weekday=d.pick(WEEKDAYS), year=str(d.int(2008, 2024)), team2=d.pick(_ART_FILL["team"]),
    )
    paras, para, n_words = [], [], 0
    target_para = d.int(3, 6)
    order = d.sample(frames, len(frames))  # each genre sentence at most once per article
    while n_words < words:
        cast.update(
            n=str(d.int(2, 60)), n2=str(d.int(2, 12)), n3=str(d.int(3, 40)), big=f"{d.int(2, 90) * 100:,}",
            pct=str(d.int(3, 68)), pct2=str(d.int(1, 9)), v1=str(d.int(5, 9)), v2=str(d.int(1, 4)),
            day=str(d.int(1, 28)), s1=str(d.int(1, 4)), s2=str(d.int(0, 1)),
        )
        if genre == "review" and not order:
            break  # reviews end when the reviewer runs out of things to say
        s = order.pop().format_map(cast) if order and (genre == "review" or d.chance(0.7)) else _prose(d, cast)
        s = s[0].upper() + s[1:]
        para.append(s)
        n_words += s.count(" ") + 1
        if len(para) >= target_para:
            paras.append(" ".join(para))
            para, target_para = [], d.int(2, 6)
    if para:
        paras.append(" ".join(para))
    if d.chance(0.4):
        paras.insert(0, _headline(d, genre, cast))
    return "\n\n".join(paras)


# General prose for long documents: subject x verb x clause x adjunct (~40k sentences), so a
# 1,500-word article does not repeat itself.
_PR_SUBJ = _split(
    "Local officials|Critics|Supporters|Analysts|Residents|Experts|Several economists|Community leaders|"
    "A recent report|Data from last year|Union representatives|Teachers|Business owners|Some researchers|{p1}|{p2}"
)
_PR_VERB = _split("say|have warned|noted|pointed out|have long argued|told reporters|suggested|wrote|believe|cautioned")
_PR_THAT = _split(
    "that the changes will take years to show results|that the numbers do not tell the whole story|"
    "that similar efforts have failed elsewhere|that costs have risen faster than expected|"
    "that the public has not been consulted enough|that the situation in {city} is unusual|"
    "that more funding will be needed|that the timeline is unrealistic|that early results are encouraging|"
    "that smaller towns could be affected differently|that the rules are too complicated|"
    "that {org} should share more information|that young people are most affected|"
    "that the benefits outweigh the risks|that the debate is far from over|that demand will keep growing|"
    "that the original estimates were too optimistic|that enforcement remains a challenge|"
    "that the trend started well before {year}|that transparency has improved"
)
_PR_ADJ = ("",) * 4 + _split(
    "in recent weeks|in interviews this month|at a public meeting on {weekday}|in a statement|"
    "during a briefing in {city}|in a letter to members|on social media|in a report released in {month}|"
)


def _prose(d: _Draw, cast: dict) -> str:
    adj = d.pick(_PR_ADJ)
    s = f"{d.pick(_PR_SUBJ)} {d.pick(_PR_VERB)} {d.pick(_PR_THAT)}" + (f" {adj}" if adj else "") + "."
    return s.format_map(cast)


_HEADLINES = {
    "civic": ("{city} council approves plan to {policy}", "Residents split over {city} proposal to {policy}"),
    "business": ("{org} profit jumps as demand for {product} grows", "{org} to hire {big} in {city}"),
    "science": ("Study finds {finding}", "New research suggests {finding}"),
    "sports": ("{team} edge {team2} in {city}", "Late goal lifts {team} past {team2}"),
    "tech": ("{org} adds {feature} to {app} app", "{app} app update brings {feature}"),
    "health": ("{illness} cases climb in {city}", "{city} officials urge residents to {advice}"),
    "review": ("Review: the {product} from {org}", "{product}: three months later"),
}


def _headline(d: _Draw, genre: str, cast: dict) -> str:
    h = d.pick(_HEADLINES[genre]).format_map(cast)
    return h[0].upper() + h[1:]


# Short everyday text (translation input, messages): sentence frames, 1-4 sentences.
_SHORT = (
    "The meeting has been moved to {weekday} at {hour} o'clock.", "Please bring your ID and a copy of the contract.",
    "Our store will be closed on public holidays.", "Thank you for your order; it will ship within {n} business days.",
    "The train to {city} is delayed by about {n} minutes.", "I'm sorry, but I can't make it to dinner tonight.",
    "Breakfast is served from seven to ten in the main dining room.", "Do not leave bags unattended.",
    "We are looking for a part-time assistant with good communication skills.",
    "The museum offers free entry on the first {weekday} of every month.",
    "Could you send me the updated invoice by the end of the week?", "My flight lands in {city} at {hour} in the evening.",
    "The package was left with your neighbour at number {n}.", "Keep this medicine out of reach of children.",
    "Happy birthday! I hope this year brings you lots of joy.", "The Wi-Fi password is on the back of the door.",
    "Tickets can be refunded up to {n} days before the event.", "Our team will contact you within {n} hours.",
    "This jacket is made from recycled materials and is fully waterproof.", "Turn left after the bakery and walk for {n} minutes.",
    "We loved our stay and hope to come back next {month}.", "The software update fixes several security issues.",
    "{first} will be out of the office until {month} {day}.", "Please do not park in front of the garage.",
    "The recipe serves {n2} people and takes about forty minutes.", "Children under {n2} travel for free.",
    "I left my umbrella in the taxi this morning.", "The concert starts at eight, but doors open an hour earlier.",
    "Your appointment with Dr. {last} is confirmed for {weekday}.", "Smoking is not allowed anywhere on the premises.",
)


def _short_text(d: _Draw, k: int | None = None) -> str:
    k = k or d.int(1, 4)
    ctx = dict(weekday=d.pick(WEEKDAYS), hour=str(d.int(1, 11)), n=str(d.int(2, 45)), n2=str(d.int(2, 12)),
               city=d.pick(CITIES), month=d.pick(MONTHS), day=str(d.int(1, 28)), first=d.pick(FIRST), last=d.pick(LAST))
    return " ".join(s.format_map(ctx) for s in d.sample(_SHORT, k))


# Reviews / tickets / messages / headlines / utterances for classification.
_REV_OPEN = _split(
    "I ordered this {product} for my {rel}|Bought the {product} last month|Third {product} I've owned from {org}|"
    "Got this {product} on sale|My {rel} recommended this {product}|Picked up the {product} before a trip to {city}"
)
_REV_POS = _split(
    "and honestly it exceeded my expectations|and it works perfectly|and I love how quiet it is|"
    "and it has made my mornings so much easier|and the quality is excellent for the price"
)
_REV_NEG = _split(
    "and it stopped working after {n} days|and it arrived with a cracked case|and it is much smaller than the photos suggest|"
    "and the battery barely lasts an hour|and customer service never replied to my emails"
)
_REV_MID = _split(
    "Delivery took {n} days.|The packaging was mostly cardboard, which is nice.|Setup was a bit fiddly.|"
    "The instructions were only in English.|It's heavier than I expected.|Colour is exactly as pictured.|"
    "I use it mostly on weekends.|Cleaning it takes a few minutes.|"
)
_REV_CLOSE = _split(
    "Would buy again!|Five stars.|Not worth the money.|Returning it.|It's fine, nothing special.|"
    "Highly recommend.|Disappointed, to be honest.|Does the job.|Meh.|Love it!"
)
RELATIONS = _split("mom|dad|sister|brother|partner|husband|wife|son|daughter|roommate|boss|coworker|best friend|neighbour|grandmother")


def _review(d: _Draw) -> str:
    ctx = dict(product=d.pick(PRODUCTS), rel=d.pick(RELATIONS), org=d.pick(ORGS), city=d.pick(CITIES), n=str(d.int(2, 30)))
    body = d.pick(_REV_POS if d.chance(0.5) else _REV_NEG)
    parts = [f"{d.pick(_REV_OPEN)} {body}."] + d.sample(_REV_MID, d.int(0, 3)) + [d.pick(_REV_CLOSE)]
    return " ".join(parts).format_map(ctx)


_TICKET = (
    "Hi, I was charged twice for my {plan} subscription this month (order {oid}). Can you refund one of the payments?",
    "I can't log in to my account since {weekday}. The reset email never arrives. My username is {user}.",
    "The export to CSV button does nothing in the dashboard. I'm using {browser} on a work laptop.",
    "Would it be possible to add a dark mode to the mobile app? My whole team has been asking for it.",
    "Our invoices for {month} show the wrong company address. Please update it to {n} {street} Street, {city}.",
    "After the latest update the app crashes every time I open the settings page.",
    "How do I transfer ownership of the workspace to a colleague? I'm leaving the company on {month} {day}.",
    "I want to cancel my plan but I can't find the option anywhere. This is really frustrating.",
    "The API returns error {code} for every request since this morning. Our integration is down.",
    "Can I get an extension on my trial? We need {n} more days to finish the evaluation.",
    "Two-factor codes are arriving several minutes late, so they expire before I can use them.",
    "Please delete all my personal data under your privacy policy. Account email: {user}@example.com.",
)


def _ticket(d: _Draw) -> str:
    ctx = dict(plan=d.pick(("Pro", "Team", "Basic", "Family", "Business")), oid=f"#{d.int(10000, 99999)}",
               weekday=d.pick(WEEKDAYS), user=f"{d.pick(FIRST).lower()}{d.int(1, 999)}", browser=d.pick(("Chrome", "Firefox", "Safari", "Edge")),
               month=d.pick(MONTHS), day=str(d.int(1, 28)), n=str(d.int(2, 400)), street=d.pick(("Oak", "Mill", "Station", "Harbour", "Elm")),
               city=d.pick(CITIES), code=d.pick(("500", "429", "403", "502", "401")))
    t = d.pick(_TICKET).format_map(ctx)
    if d.chance(0.3):
        t += d.pick((" Thanks.", " Thanks in advance!", f" - {d.pick(FIRST)}", " Urgent please.", " Regards"))
    return t


_MSG = (
    "Congratulations! You have won a ${n},000 gift card. Click the link below to claim your prize before midnight.",
    "Hey {first}, are we still on for lunch {weekday}? Let me know if {hour} works.",
    "URGENT: your account has been suspended. Verify your identity at secure-login-{n}.com immediately.",
    "Reminder: your dentist appointment is tomorrow at {hour}:30. Reply C to confirm.",
    "Earn ${n}00 a day working from home!!! No experience needed, limited spots.",
    "Can you pick up milk and bread on your way home? Thanks!",
    "Your package could not be delivered. Pay the ${n}.99 redelivery fee here to reschedule.",
    "Hi all, the slides from today's meeting are in the shared folder.",
    "Lowest prices on meds, no prescription required, fast shipping worldwide.",
    "Happy anniversary you two! Dinner is on us next time you're in {city}.",
)
_HEADLINE_SUBJ = _split(
    "Central bank holds rates steady|Star striker signs record contract|New smartphone leaks ahead of launch|"
    "Parliament passes budget after all-night session|Streaming service raises prices again|"
    "Chipmaker unveils faster AI processor|Film festival opens with surprise premiere|Local team wins championship|"
    "Oil prices slide on weak demand|Minister resigns amid expenses row|Pop star announces world tour|"
    "Startup raises funding for battery recycling"
)
_UTTER = (
    "I need to change my flight to {weekday}", "what's my account balance", "play some jazz in the kitchen",
    "book a table for {n2} at eight", "is it going to rain in {city} tomorrow", "cancel my {hour} o'clock alarm",
    "send {first} a message saying I'm running late", "how long will it take to drive to {city}",
    "turn the heating up a couple of degrees", "add eggs and spinach to my shopping list", "I lost my card, block it please",
    "remind me to call the dentist on {weekday}",
)


def _fill_small(d: _Draw, s: str) -> str:
    return s.format(n=d.int(2, 90), n2=d.int(2, 9), first=d.pick(FIRST), weekday=d.pick(WEEKDAYS), hour=d.int(1, 11), city=d.pick(CITIES))


# Documents for extraction pipelines: field-bearing records in several layouts.
def _invoice(d: _Draw) -> str:
    lines = [f"INVOICE #{d.int(1000, 99999)}", f"Date: {_date(d)}", f"Bill to: {_name(d)}, {d.pick(ORGS)}"]
    for _ in range(d.int(1, 4)):
        lines.append(f"{d.int(1, 12)} x {d.pick(PRODUCTS)} @ ${_money(d)}")
    lines.append(f"Total due: ${_money(d)}")
    if d.chance(0.5):
        lines.append(f"Payment terms: net {d.pick(('15', '30', '45', '60'))} days")
    return "\n".join(lines)


def _email_doc(d: _Draw) -> str:
    who, to = _name(d), d.pick(FIRST)
    body = _short_text(d, d.int(2, 4))
    extra = d.pick((
        f"The amount of ${_money(d)} was paid on {_date(d)}.", f"Our reference for this case is {d.int(100000, 999999)}.",
        f"I can be reached at {d.int(200, 999)}-555-{d.int(1000, 9999)}.", f"The contract starts on {_date(d)}.",
    ))
    return f"From: {who} <{who.split()[0].lower()}@{d.pick(ORG_A).lower()}.com>\nSubject: {d.pick(('Re: order', 'Question about billing', 'Follow-up', 'Schedule change', 'Contract renewal'))}\n\nHi {to},\n\n{body} {extra}\n\nBest,\n{who.split()[0]}"


def _receipt(d: _Draw) -> str:
    items = "\n".join(f"{d.pick(PRODUCT_NOUN).upper():<20} {_money(d)}" for _ in range(d.int(2, 6)))
    return f"{d.pick(ORGS).upper()}\n{d.int(1, 400)} {d.pick(('Main', 'High', 'Market', 'King'))} St, {d.pick(CITIES)}\n{_date(d)} {d.int(8, 21)}:{d.int(10, 59)}\n{items}\nTOTAL {_money(d)}\nCARD **** {d.int(1000, 9999)}"


def _job_post(d: _Draw) -> str:
    role = d.pick(("Data Analyst", "Warehouse Supervisor", "Junior Backend Developer", "Registered Nurse", "Marketing Coordinator", "Electrician"))
    return (f"{d.pick(ORGS)} is hiring a {role} in {d.pick(CITIES)}. Salary: ${d.int(38, 140)},000 - ${d.int(141, 190)},000 per year. "
            f"{d.pick(('Full-time', 'Part-time', 'Contract, 12 months'))}. {d.int(1, 8)}+ years of experience required. "
            f"Apply by {_date(d)} at careers.{d.pick(ORG_A).lower()}.com. {_short_text(d, 1)}")


def _listing(d: _Draw) -> str:
    return (f"{d.int(1, 5)}-bedroom {d.pick(('apartment', 'house', 'townhouse', 'condo'))} for rent in {d.pick(CITIES)}, "
            f"{d.int(45, 220)} m2, {d.pick(('newly renovated', 'close to the station', 'with a garden', 'top floor, lots of light'))}. "
            f"Rent ${d.int(700, 4200)}/month, deposit {d.int(1, 3)} months. Available from {_date(d)}. Contact {_name(d)}.")


def _note(d: _Draw) -> str:
    return (f"Meeting notes - {_date(d)}\nAttendees: {_name(d)}, {_name(d)}, {_name(d)}\n"
            f"- Budget for {d.pick(('Q1', 'Q2', 'Q3', 'Q4'))} approved at ${d.int(10, 900)}k\n"
            f"- {d.pick(FIRST)} to send the revised timeline by {d.pick(WEEKDAYS)}\n- Next meeting: {_date(d)}")


DOC_MAKERS: dict[str, Callable[[_Draw], str]] = {
    "invoice": _invoice, "email": _email_doc, "receipt": _receipt, "job posting": _job_post,
    "rental listing": _listing, "meeting notes": _note,
}

# ---------------------------------------------------------------------------------------
# Code: small functions assembled from identifier pools and body patterns.
# ---------------------------------------------------------------------------------------
_VERB = _split("parse|load|compute|validate|merge|filter|normalize|fetch|render|group|retry|cache|format|sum|count")
_NOUN = _split("config|orders|users|prices|events|records|invoice|tokens|scores|payload|rows|sessions|items|metrics")
_PY_BODY = (
    ("result = []", "for {x} in {arg}:", "    if {x}.get('{key}') is not None:", "        result.append({x}['{key}'])", "return result"),
    ("total = 0", "for {x} in {arg}:", "    total += {x}.{key} * {x}.quantity", "return round(total, 2)"),
    ("with open({arg}) as f:", "    data = json.load(f)", "if '{key}' not in data:", "    raise KeyError('{key}')", "return data['{key}']"),
    ("seen = {{}}", "for {x} in {arg}:", "    seen.setdefault({x}['{key}'], []).append({x})", "return seen"),
    ("for attempt in range({n}):", "    try:", "        return client.get({arg})", "    except TimeoutError:", "        time.sleep(2 ** attempt)", "raise RuntimeError('gave up')"),
    ("if not {arg}:", "    return None", "values = sorted({x}['{key}'] for {x} in {arg})", "mid = len(values) // 2", "return values[mid]"),
    ("df = pd.read_csv({arg})", "df = df[df['{key}'] > {n}]", "return df.groupby('{key2}').mean()"),
)
_JS_BODY = (
    ("const out = [];", "for (const {x} of {arg}) {{", "  if ({x}.{key} > {n}) out.push({x});", "}}", "return out;"),
    ("const res = await fetch(`/api/{key}/${{{arg}}}`);", "if (!res.ok) throw new Error('request failed');", "return res.json();"),
    ("return {arg}.reduce((acc, {x}) => acc + {x}.{key}, 0);",),
    ("let {x} = {arg}.trim();", "if ({x}.length === 0) return null;", "return {x}.split(',').map(Number);"),
)
_GO_BODY = (
    ("var out []{T}", "for _, {x} := range {arg} {{", "\tif {x}.{Key} > {n} {{", "\t\tout = append(out, {x})", "\t}}", "}}", "return out"),
    ("f, err := os.Open({arg})", "if err != nil {{", "\treturn nil, err", "}}", "defer f.Close()", "return parse{T}(f)"),
)


def _code(d: _Draw, lang: str | None = None) -> str:
    lang = lang or d.pick(("python", "python", "javascript", "go"))
    verb, noun = d.pick(_VERB), d.pick(_NOUN)
    ctx = dict(x=d.pick(("item", "row", "r", "e", "rec", "x")), arg=d.pick(_NOUN), key=d.pick(("id", "price", "name", "status", "created_at", "amount", "user_id")),
               key2=d.pick(("region", "category", "day")), n=d.int(1, 100), T=noun.capitalize().rstrip("s"), Key=d.pick(("Score", "Price", "Age")))
    blocks = []
    for _ in range(d.int(1, 3)):
        verb, noun = d.pick(_VERB), d.pick(_NOUN)
        if lang == "python":
            body = d.pick(_PY_BODY)
            head = f"def {verb}_{noun}({ctx['arg']}):"
            doc = [f'    """{verb.capitalize()} the {noun}."""'] if d.chance(0.4) else []
            blocks.append("\n".join([head] + doc + ["    " + ln.format_map(ctx) for ln in body]))
        elif lang == "javascript":
            body = d.pick(_JS_BODY)
            blocks.append("\n".join([f"export function {verb}{noun.capitalize()}({ctx['arg']}) {{"] + ["  " + ln.format_map(ctx) for ln in body] + ["}"]))
        else:
            body = d.pick(_GO_BODY)
            blocks.append("\n".join([f"func {verb.capitalize()}{noun.capitalize()}({ctx['arg']} []{ctx['T']}) ([]{ctx['T']}, error) {{"] + ["\t" + ln.format_map(ctx) for ln in body] + ["}"]))
    return "\n\n".join(blocks)


_TASK = (
    "Fix the bug where `{fn}` returns an empty list when the input contains duplicate {noun}.",
    "`{fn}` raises a KeyError on records without a `{key}` field; make it skip them instead.",
    "Add a `{opt}` option to `{fn}` and update the callers.",
    "Write unit tests for `{fn}` covering empty input and malformed {noun}.",
    "Refactor `{fn}` so that it no longer reads from disk inside the loop.",
    "The nightly job times out while processing {noun}; make `{fn}` stream the data instead of loading it all.",
    "Implement pagination for the `/{noun}` endpoint using `{fn}` (page size {n}).",
    "Replace the hand-written retry loop in `{fn}` with exponential backoff and jitter.",
    "Make `{fn}` thread-safe; two workers sometimes write the same {noun} twice.",
    "Rename `{fn}` to `{fn2}` everywhere and keep a deprecated alias.",
)


def _task(d: _Draw) -> str:
    v, n = d.pick(_VERB), d.pick(_NOUN)
    ctx = dict(fn=f"{v}_{n}", fn2=f"{d.pick(_VERB)}_{n}", noun=d.pick(_NOUN), key=d.pick(("id", "price", "status", "email")),
               opt=d.pick(("dry_run", "timeout", "strict", "max_items", "verbose")), n=d.int(10, 200))
    return d.pick(_TASK).format_map(ctx)


# ---------------------------------------------------------------------------------------
# Benchmark-style items and reasoning problems.
# ---------------------------------------------------------------------------------------
_FACTS = (
    ("Which gas do plants absorb during photosynthesis?", "Carbon dioxide", ("Oxygen", "Nitrogen", "Helium")),
    ("What is the powerhouse of the cell?", "Mitochondria", ("Ribosome", "Nucleus", "Golgi apparatus")),
    ("Which planet has the shortest year?", "Mercury", ("Venus", "Mars", "Neptune")),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen", ("Charlotte Brontë", "George Eliot", "Mary Shelley")),
    ("Which organ produces insulin?", "Pancreas", ("Liver", "Kidney", "Spleen")),
    ("In which year did the Berlin Wall fall?", "1989", ("1991", "1987", "1979")),
    ("What is the chemical symbol for sodium?", "Na", ("So", "Sd", "S")),
    ("Which data structure uses first-in, first-out ordering?", "Queue", ("Stack", "Heap", "Tree")),
    ("Which economist wrote 'The Wealth of Nations'?", "Adam Smith", ("John Maynard Keynes", "Karl Marx", "David Ricardo")),
    ("What is the time complexity of binary search?", "O(log n)", ("O(n)", "O(n log n)", "O(1)")),
    ("Which layer of the atmosphere contains the ozone layer?", "Stratosphere", ("Troposphere", "Mesosphere", "Thermosphere")),
    ("Which blood type is the universal donor?", "O negative", ("AB positive", "A positive", "B negative")),
    ("What is the largest organ of the human body?", "Skin", ("Liver", "Brain", "Lungs")),
    ("Which treaty ended the First World War?", "Treaty of Versailles", ("Treaty of Paris", "Treaty of Ghent", "Treaty of Utrecht")),
    ("What does GDP stand for?", "Gross domestic product", ("General debt payment", "Gross dividend percentage", "Global development plan")),
    ("Which logical fallacy attacks the person instead of the argument?", "Ad hominem", ("Straw man", "Red herring", "Slippery slope")),
)
_SYN = (("rapid", "quick"), ("honest", "truthful"), ("brief", "short"), ("ancient", "old"), ("happy", "cheerful"),
        ("enormous", "huge"), ("difficult", "hard"), ("silent", "quiet"), ("begin", "start"), ("purchase", "buy"))


def _mcq(d: _Draw) -> tuple[str, list[str]]:
    """(question, 4 options) with the correct option at a random position."""
    kind = d.int(0, 4)
    if kind == 0:
        c, cap = d.pick(COUNTRY_CAPITAL)
        wrong = [x[1] for x in d.sample(COUNTRY_CAPITAL, 4) if x[1] != cap][:3]
        q, right = f"What is the capital of {c}?", cap
    elif kind == 1:
        a, b = d.int(12, 99), d.int(11, 99)
        op = d.pick(("+", "-", "*"))
        right_v = a + b if op == "+" else a - b if op == "-" else a * b
        q, right = f"What is {a} {op} {b}?", str(right_v)
        wrong = [str(right_v + k) for k in d.sample((-10, -2, -1, 1, 2, 9, 10, 11), 3)]
    elif kind == 2:
        w, s = d.pick(_SYN)
        q, right = f"Which word is closest in meaning to '{w}'?", s
        wrong = [x[1] for x in d.sample(_SYN, 4) if x[1] != s][:3]
    elif kind == 3:
        v, t = d.int(20, 120), d.int(2, 9)
        q, right = f"A car travels at {v} km/h for {t} hours. How far does it go?", f"{v * t} km"
        wrong = [f"{v * t + k} km" for k in (-v, v, 2 * t)]
    else:
        q, right, wrong = d.pick(_FACTS)
        wrong = list(wrong)
    opts = list(wrong[:3])
    opts.insert(d.int(0, 3), right)
    return q, opts


_PROBLEMS = (
    "{a} has {x} apples. She gives {y} to {b} and then buys {z} more. How many apples does {a} have now?",
    "A shop sells pens at ${p} each. {a} buys {x} pens and pays with a ${big} note. How much change does {a} get?",
    "A train leaves {c1} at {h}:00 travelling at {v} km/h. Another leaves {c2}, {d} km away, at the same time at {w} km/h towards it. When do they meet?",
    "The sum of two numbers is {s} and their difference is {x}. What are the numbers?",
    "A rectangle has a perimeter of {per} cm and its length is {x} cm more than its width. What is its area?",
    "{a} reads {x} pages a day. The book has {big} pages. After {y} days, what fraction of the book is left?",
    "If a bag contains {x} red and {y} blue marbles and two are drawn without replacement, what is the probability both are red?",
    "A population of bacteria doubles every {h} hours. Starting from {x} cells, how many cells are there after {z} hours?",
    "Three friends, {a}, {b} and {e}, sit in a row. {a} is not at either end and {b} is left of {e}. Who sits where?",
    "A price rises by {x}% and then falls by {y}%. Is the final price higher or lower than the original, and by how much?",
    "Prove that the sum of any {x} consecutive integers is divisible by {x} when {x} is odd.",
    "A tank fills in {h} hours with pipe A and {z} hours with pipe B. How long with both pipes open?",
    "Is {n} a prime number? Justify your answer.",
    "{a} invests ${big} at {x}% annual interest compounded yearly. How much is it worth after {y} years?",
)


def _problem(d: _Draw) -> str:
    ctx = dict(a=d.pick(FIRST), b=d.pick(FIRST), e=d.pick(FIRST), x=d.int(3, 40), y=d.int(2, 15), z=d.int(2, 30), p=d.int(2, 9),
               big=d.int(50, 900), c1=d.pick(CITIES), c2=d.pick(CITIES), h=d.int(1, 9), v=d.int(40, 160), w=d.int(40, 160),
               d=d.int(100, 900), s=d.int(20, 200), per=d.int(20, 120), n=d.int(91, 9999))
    return d.pick(_PROBLEMS).format_map(ctx)


# ---------------------------------------------------------------------------------------
# Slots: "{name}" or "{name:arg}" in a frame. Each slot makes fresh content per render.
# ---------------------------------------------------------------------------------------
def _slot_options(d: _Draw, arg: str | None, ctx: dict) -> str:
    q, opts = ctx.get("mcq") or _mcq(d)
    style = arg or "A)"
    return "\n".join(style.replace("A", L) + " " + o for L, o in zip("ABCD", opts))


def _slot_question(d: _Draw, arg, ctx) -> str:
    ctx["mcq"] = _mcq(d)
    return ctx["mcq"][0]


_SLOTS: dict[str, Callable] = {
    "topic": lambda d, a, c: d.pick(TOPICS),
    "subject": lambda d, a, c: d.pick(SUBJECTS),
    "audience": lambda d, a, c: d.pick(AUDIENCES),
    "n": lambda d, a, c: str(d.int(3, 10)),
    "words": lambda d, a, c: str(d.pick((100, 150, 200, 250, 300, 400, 500, 800))),
    "name": lambda d, a, c: _name(d),
    "first": lambda d, a, c: d.pick(FIRST),
    "org": lambda d, a, c: d.pick(ORGS),
    "city": lambda d, a, c: d.pick(CITIES),
    "product": lambda d, a, c: d.pick(PRODUCTS),
    "poet": lambda d, a, c: d.pick(POETS),
    "activity": lambda d, a, c: d.pick(ACTIVITIES),
    "claim": lambda d, a, c: d.pick(CLAIMS),
    "character": lambda d, a, c: d.pick(CHARACTERS),
    "situation": lambda d, a, c: d.pick(SITUATIONS),
    "pair": lambda d, a, c: " and ".join(d.sample(SUBJECTS, 2)),
    "quote": lambda d, a, c: '"' + _short_text(d, 1) + '"',
    "text": lambda d, a, c: _short_text(d) if d.chance(0.7) else _article(d, d.int(60, 250)),
    "article": lambda d, a, c: _article(d),
    "doc": lambda d, a, c: DOC_MAKERS[a](d) if a in DOC_MAKERS else d.pick(tuple(DOC_MAKERS.values()))(d),
    "review": lambda d, a, c: _review(d),
    "ticket": lambda d, a, c: _ticket(d),
    "message": lambda d, a, c: _fill_small(d, d.pick(_MSG)),
    "headline": lambda d, a, c: d.pick(_HEADLINE_SUBJ) + d.pick(("", f" in {d.pick(CITIES)}", ", sources say", " after long delay")),
    "utterance": lambda d, a, c: _fill_small(d, d.pick(_UTTER)),
    "code": lambda d, a, c: _code(d, a),
    "task": lambda d, a, c: _task(d),
    "question": _slot_question,
    "options": _slot_options,
    "problem": lambda d, a, c: _problem(d),
}
# Slots for the shapes of real templated prompts (issue 14): dialogue pastes whose lines
# start with speaker names, and slot content in other languages (`{ml:zh}` an article of
# zh sentences, `{mlrev:ja}` a review, `{mltopic:ko}` a topic, `{mlq:ru}` an exam
# question with options). The language is the slot's argument, fixed by the frame.
def _dialogue(d: _Draw) -> str:
    names = d.sample(FIRST, d.int(2, 3))
    lines, who = [], d.int(0, len(names) - 1)
    for _ in range(d.int(3, 9)):
        lines.append(f"{names[who]}: {d.pick(DIALOGUE_LINES)}")
        who = (who + d.int(1, len(names) - 1)) % len(names)
    return "\n".join(lines)


def _ml_join(lang: str, sents) -> str:
    return ("" if lang in ("zh", "ja") else " ").join(sents)


def _ml_article(d: _Draw, lang: str, lo: int = 3, hi: int = 10) -> str:
    sent = ML[lang]["sent"]
    k = d.int(lo, hi)
    paras = [_ml_join(lang, d.sample(sent, min(k, len(sent))))]
    if k > 6 and d.chance(0.5):  # a second paragraph, as pasted articles have
        paras.append(_ml_join(lang, d.sample(sent, d.int(2, 4))))
    return "\n\n".join(paras)


def _ml_review(d: _Draw, lang: str) -> str:
    L = ML[lang]
    return _ml_join(lang, d.sample(L["pos"] if d.chance(0.5) else L["neg"], d.int(1, 3)))


def _ml_question(d: _Draw, lang: str) -> str:
    L = ML[lang]
    opts = d.sample(L["topics"], 4)
    return d.pick(L["sent"]) + "\n" + "\n".join(f"{c}. {o}" for c, o in zip("ABCD", opts))


_SLOTS.update({
    "dialogue": lambda d, a, c: _dialogue(d),
    "ml": lambda d, a, c: _ml_article(d, a or "zh"),
    "mlshort": lambda d, a, c: _ml_article(d, a or "zh", 1, 3),
    "mlrev": lambda d, a, c: _ml_review(d, a or "zh"),
    "mltopic": lambda d, a, c: d.pick(ML[a or "zh"]["topics"]),
    "mlq": lambda d, a, c: _ml_question(d, a or "zh"),
    "mlprob": lambda d, a, c: d.pick(ML[a or "zh"]["prob"]).format(a=d.int(3, 90), b=d.int(2, 9), c=d.int(2, 30)),
})

_SLOT_RE = re.compile(r"\{([a-z_]+)(?::([^{}\n]*))?\}")


def _parse(frame: str) -> tuple:
    """Frame -> alternating (literal, (slot, arg)) parts. Braces that are not a known slot
    (JSON schemas in a frame) stay literal."""
    parts, pos = [], 0
    for m in _SLOT_RE.finditer(frame):
        if m.group(1) not in _SLOTS:
            continue
        parts.append(frame[pos:m.start()])
        parts.append((m.group(1), m.group(2)))
        pos = m.end()
    parts.append(frame[pos:])
    return tuple(p for p in parts if p != "")


@dataclass(frozen=True)
class PromptTemplate:
    """A fixed frame with slots. `family` is the template a paraphrase came from (its own
    id otherwise), so the simulator can tell paraphrases of one campaign template apart
    from unrelated templates."""

    template_id: str
    kind: str
    frame: str
    family: str = ""
    shape: str = "base"     # "base", "after", "dialogue", "name", "pick" or "ml:<lang>" (issue 14 shapes)
    _parts: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_parts", _parse(self.frame))
        if not self.family:
            object.__setattr__(self, "family", self.template_id)

    def render(self, rng: np.random.Generator) -> str:
        d = _Draw(rng, 32)
        ctx: dict = {}
        out = []
        for p in self._parts:
            out.append(p if isinstance(p, str) else _SLOTS[p[0]](d, p[1], ctx))
        return "".join(out)

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(p[0] for p in self._parts if not isinstance(p, str))


# ---------------------------------------------------------------------------------------
# Frames per kind: each frame is one draw from component lists (thousands of combinations).
# ---------------------------------------------------------------------------------------
def _opt(d: _Draw, p: float, seq) -> str:
    return d.pick(seq) if d.chance(p) else ""


_ROLE = _split(
    "You are a helpful assistant.|You are an expert educator.|You are a knowledgeable and patient teacher.|"
    "You are a world-class writer.|You are a subject-matter expert.|Act as an experienced tutor.|"
    "You are a professional content writer."
)
_SI_TASK = (
    "Write a detailed explanation of {topic} for {audience}.",
    "Explain {topic} to {audience}.",
    "Write a blog post about {topic}.",
    "Create a lesson plan on {subject} for {audience}.",
    "Write a short story about {character} who {situation}.",
    "Generate {n} interview questions about {topic}.",
    "Write a persuasive essay arguing that {claim}.",
    "Compose a poem about {subject} in the style of {poet}.",
    "List {n} common misconceptions about {subject} and correct each one.",
    "Write a product description for a {product}.",
    "Give {n} practical tips for {activity}.",
    "Compare and contrast {pair}.",
    "Write a dialogue between two experts debating {topic}.",
    "Write an FAQ section about {topic} with {n} questions and answers.",
    "Create a quiz with {n} questions on {subject} for {audience}.",
    "Describe {topic} as if you were teaching {audience}.",
    "Write a news-style article about {topic}.",
    "Draft a speech about {topic} for {audience}.",
    "Write a step-by-step guide to {activity}.",
    "Summarize the key ideas of {subject} in plain language.",
)
_SI_CONSTRAINT = (
    " Use at least {n} concrete examples.", " Keep it under {words} words.", " Use simple language.",
    " Include a short summary at the end.", " Structure the answer with clear headings.", " Avoid jargon.",
    " Write in a friendly, conversational tone.", " Use markdown formatting.", " Include one surprising fact.",
    " End with a thought-provoking question.", " Make it engaging and easy to follow.", " Cite at least two sources.",
    " Aim for about {words} words.", " Do not use bullet points.", " Write in a formal academic tone.",
)
_SI_OUTPUT = (
    "", "", "\n\nRespond only with the text, without any preamble.", "\n\nFormat the response in Markdown.",
    "\n\nOutput format: a title line followed by the body.", "\n\nReturn the result as JSON with keys \"title\" and \"body\".",
)


def _frame_self_instruct(d: _Draw) -> str:
    role = _opt(d, 0.4, _ROLE)
    task = d.pick(_SI_TASK)
    cons = "".join(d.sample(_SI_CONSTRAINT, d.int(0, 3)))
    sep = d.pick((" ", "\n")) if role else ""
    return f"{role}{sep}{task}{cons}{d.pick(_SI_OUTPUT)}"


_RT_PRE = _split(
    "Solve the following problem.|You are a careful mathematician.|You are an expert problem solver.|"
    "Answer the question below.|Here is a problem for you.|You are a meticulous tutor grading your own work."
)
_RT_LABEL = ("Problem: ", "Question: ", "", "Q: ", "Task: ")
_RT_REASON = (
    "Think step by step and show all your work.",
    "Explain your reasoning in detail before giving the final answer.",
    "Provide your full chain of thought, then state the answer.",
    "Walk through your reasoning step by step, checking each step.",
    "Show your complete reasoning process and do not skip any steps.",
    "Reason through the problem carefully, writing out every intermediate step.",
    "Let's think step by step.",
    "Before answering, write out your entire thought process.",
    "Give a detailed step-by-step solution with justification for each step.",
)
_RT_FINAL = (
    "", "", " Put the final answer in \\boxed{}.", " End with a line of the form 'Final answer: <answer>'.",
    " Then give the final answer on its own line.", " Finally, double-check your answer.",
)


def _frame_reasoning(d: _Draw) -> str:
    pre = _opt(d, 0.6, _RT_PRE)
    label = d.pick(_RT_LABEL)
    reason = d.pick(_RT_REASON) + d.pick(_RT_FINAL)
    if d.chance(0.5):
        return (pre + "\n" if pre else "") + f"{label}{{problem}}\n\n{reason}"
    return (pre + " " if pre else "") + f"{reason}\n\n{label}{{problem}}"


_CA_ROLE = (
    "You are a coding agent working in a {lang} repository.",
    "You are an autonomous software engineering agent.",
    "You are a senior {lang} developer acting as a coding agent.",
    "You are an AI pair programmer with access to the repository below.",
)
_CA_TASK = ("Task: {task}", "Issue: {task}", "## Task\n{task}", "User request: {task}", "Ticket: {task}")
_CA_CTX = (
    "Repository context:\n{code:LANG}",
    "Relevant files:\n```LANG\n{code:LANG}\n```",
    "Here is the current code:\n\n{code:LANG}",
    "### Context\n```\n{code:LANG}\n```",
)
_CA_OUT = (
    "Respond with a unified diff only.",
    "First explain your plan step by step, then give the full updated file.",
    "Think through the change, then output a JSON tool call: {\"tool\": \"edit_file\", \"path\": ..., \"patch\": ...}.",
    "Available tools: read_file(path), write_file(path, content), run_tests(). Reply with exactly one tool call.",
    "Return the complete modified function and a short explanation of the fix.",
    "Output the patch and the commands needed to run the tests.",
)


def _frame_coding(d: _Draw) -> str:
    lang = d.pick(("python", "python", "javascript", "go"))
    lang_name = {"python": "Python", "javascript": "JavaScript", "go": "Go"}[lang]
    role = d.pick(_CA_ROLE).replace("{lang}", lang_name)
    ctx = d.pick(_CA_CTX).replace("LANG", lang)
    parts = [role, d.pick(_CA_TASK), ctx, d.pick(_CA_OUT)]
    if d.chance(0.3):
        parts[1], parts[2] = parts[2], parts[1]
    return "\n\n".join(parts)


_EV_HEAD = (
    "", "", "The following is a multiple choice question about {subject}.\n\n",
    "Answer the following multiple-choice question.\n\n", "You are taking an exam. Choose the single best answer.\n\n",
    "Read the question and choose the correct option.\n\n", "Here is a question from a practice test.\n\n",
    "The following are multiple choice questions (with answers) about {subject}.\n\n",
)
_EV_LABEL = ("Question: ", "Q: ", "", "Problem: ")
_EV_STYLE = ("A)", "(A)", "A.", "A:")
_EV_TAIL = (
    "Answer with the letter only.", "Respond with just the letter of the correct option.", "Answer:",
    "The answer is", "Output only A, B, C, or D.", "Think carefully, then give your final answer as a single letter.",
    "Answer with the letter and nothing else.", "Correct answer:", "Reply with the option letter (A, B, C or D).",
    "Select the best option and output its letter.",
)


def _frame_eval(d: _Draw) -> str:
    return f"{d.pick(_EV_HEAD)}{d.pick(_EV_LABEL)}{{question}}\n{{options:{d.pick(_EV_STYLE)}}}\n{d.pick(_EV_TAIL)}"


_EX_FIELDS = {
    "invoice": ("invoice number, date, customer name and total amount", "date, amount due and payment terms", "line items and total"),
    "email": ("sender name, subject, and any amounts or dates mentioned", "sender, requested action and deadline", "contact details"),
    "receipt": ("store name, date, total and last four card digits", "list of items with prices", "merchant, city and total"),
    "job posting": ("job title, company, location and salary range", "required years of experience and application deadline", "company and employment type"),
    "rental listing": ("number of bedrooms, monthly rent, deposit and availability date", "city, size and contact person", "rent and deposit"),
    "meeting notes": ("attendees, decisions and action items", "budget figures and next meeting date", "action items with owners"),
}
_EX_OUT = (
    "Return the result as JSON.", "Respond with JSON only, no explanation.", "Use null for any field that is missing.",
    "Output a single JSON object with snake_case keys.", "Return a JSON object and nothing else.", "Format the output as a YAML mapping.",
)
_EX_LABEL = ("Document:\n", "Text:\n", "Input:\n", "", "###\n")


def _frame_extraction(d: _Draw) -> str:
    doc = d.pick(tuple(_EX_FIELDS))
    fields = d.pick(_EX_FIELDS[doc])
    verb = d.pick((f"Extract the {fields} from the following {doc}.", f"From the {doc} below, extract the {fields}.",
                   f"Parse this {doc} and pull out the {fields}.", f"Identify the {fields} in the {doc} below."))
    out = " ".join(d.sample(_EX_OUT, d.int(1, 2)))
    body = f"{d.pick(_EX_LABEL)}{{doc:{doc}}}"
    if d.chance(0.25):
        return f"{body}\n\n{verb} {out}"
    return f"{verb} {out}\n\n{body}" + d.pick(("", "", "\n\nJSON:", "\n\nOutput:"))


_CL_TASKS = (
    ("Classify the sentiment of this product review as {labels}.", "Review", "{review}", ("positive, negative, or neutral", "positive or negative", "1 to 5 stars")),
    ("Label this support ticket with one of the following categories: {labels}.", "Ticket", "{ticket}", ("billing, technical issue, account access, feature request, other", "urgent, normal, low priority", "bug, question, complaint")),
    ("Decide whether the following message is {labels}.", "Message", "{message}", ("spam or not spam", "spam, promotional, or personal", "safe or phishing")),
    ("Categorize the following news headline into one of: {labels}.", "Headline", "{headline}", ("politics, sports, business, technology, entertainment", "world, local, economy, culture")),
    ("Identify the intent of the user's utterance. Possible intents: {labels}.", "Utterance", "{utterance}", ("travel, banking, music, reminders, smart home, weather, messaging", "command, question, statement")),
    ("Rate the toxicity of the comment below as {labels}.", "Comment", "{review}", ("toxic or non-toxic", "none, mild, or severe")),
)
_CL_OUT = (
    "Answer with the label only.", "Respond with a single word.", "Return JSON like {\"label\": \"...\", \"confidence\": 0.0}.",
    "Output only the category name.", "Give the label followed by a one-sentence justification.", "",
)


def _frame_classification(d: _Draw) -> str:
    instr, label, slot, label_sets = d.pick(_CL_TASKS)
    instr = instr.replace("{labels}", d.pick(label_sets))
    out = d.pick(_CL_OUT)
    trailer = d.pick(("", f"\n{label.split()[0]} label:", "\nLabel:", "\nAnswer:"))
    if d.chance(0.5):
        return f"{instr} {out}\n\n{label}: {slot}{trailer}".replace("  ", " ")
    return f"{instr} {out}\n\n{label}:\n{slot}{trailer}".replace("  ", " ")


_ISO = dict(zip(LANGS, "FR ES DE IT PT JA ZH KO NL PL TR AR HI SV RU VI ID EL".split()))
_TR_VERB = (
    "Translate the following into {L}", "Translate the following text from English to {L}", "Translate to {L}",
    "Please translate this into {L}", "Translate the text below into {L}", "Render this text in {L}",
    "Translate this email into natural, fluent {L}", "Translate this product description into {L}",
    "Translate the customer message below into {L}", "Give me the {L} translation of this",
)
_TR_MOD = ("", "", ", keeping an informal tone", ", keeping the original formatting", " for native speakers",
           ", using a formal register", ", keeping names and numbers unchanged")
_TR_OUT = ("", "", " Only output the translation.", " Do not add any explanations.", " If a phrase is idiomatic, translate its meaning.")


def _frame_translate(d: _Draw) -> str:
    L = d.pick(LANGS)
    r = d.r()
    if r < 0.08:  # bare parallel-corpus style
        return d.pick(("English: {text}\n" + L + ":", "EN: {text}\n" + _ISO[L] + ":"))
    instr = d.pick(_TR_VERB).replace("{L}", L) + d.pick(_TR_MOD)
    out = d.pick(_TR_OUT)
    if r < 0.25:
        return "{text}\n\n" + instr.replace("the following", "the above").replace("this", "the above", 1) + "." + out
    return instr + ("." if out else ":") + out + d.pick(("\n\n", "\n")) + "{text}"


_SU_BASE = (
    "Summarize this article", "Summarize the following text", "Give me a short summary of this", "Write a summary of the article below",
    "Condense the following", "Summarise this for me please", "Provide an executive summary of the document below",
    "Summarize the key points of this news story", "TL;DR", "Boil this down",
)
_SU_LEN = ("", "", " in {k} bullet points", " in one paragraph", " in {k} sentences", " in at most {w} words", " in one sentence")
_SU_EXTRA = ("", "", " for a busy reader", ", focusing on the numbers", " and list the people mentioned", " in plain English",
             ", then suggest a headline", " without adding opinions")


def _frame_summarise(d: _Draw) -> str:
    instr = d.pick(_SU_BASE) + d.pick(_SU_LEN) + d.pick(_SU_EXTRA)
    instr = instr.replace("{k}", d.pick(("2", "3", "4", "5", "three", "five"))).replace("{w}", d.pick(("50", "80", "100", "150")))
    if d.chance(0.25):
        return "{article}\n\n" + instr.replace("the following", "the above").replace(" below", " above") + "."
    return instr + ":\n\n{article}"


# ---------------------------------------------------------------------------------------
# Shapes of real templated prompts (issue 14), mixed into the kinds below at a minority
# share so the English frames above still make up most of every kind:
#   * the fixed part is a question or a stub AFTER the pasted text, with no task verb
#     ("{review} Did the reviewer enjoy the product?", "...My rating for this product is");
#   * dialogue pastes: lines that start with a speaker's name ("Anna: ...");
#   * a name inside the instruction ("Write a short biography of {name}."): a slot;
#   * frames in other languages (zh, ja without spaces; ko, ru, de, es, fr, ar).
# ---------------------------------------------------------------------------------------
SHAPES = ("base", "after", "dialogue", "name", "pick") + tuple("ml:" + lang for lang in ML_LANGS)
_SHAPE_SHARE = 0.12     # of a kind's frames: English question-after / dialogue / name shapes
_ML_SHARE = 0.10        # of a kind's frames: another language

_AFTER_Q = (
    ("{review}", ("Did the reviewer enjoy the product?", "Did the customer like it?", "My rating for this product is",
                  "Would the reviewer buy it again?", "Is this review positive or negative?",
                  "How many stars would the reviewer give?", "Overall, the reviewer felt",
                  "Question: is the reviewer satisfied? Answer:")),
    ("{ticket}", ("Which department should handle this?", "Is this customer angry?", "The urgency of this ticket is",
                  "Does this customer need a refund?")),
    ("{headline}", ("This headline is about", "Which section of the newspaper does this belong in?",
                    "The topic of this headline is")),
    ("{utterance}", ("What does the user want?", "The user's intent is", "Which app should handle this request?")),
    ("{message}", ("Is this spam?", "Should this message go to the spam folder?", "Is the sender trying to scam me?")),
)
_DLG_CLS = (
    "{dialogue}\n\nHow does the last speaker feel?", "{dialogue}\n\nWhat is the relationship between the speakers?",
    "Read the conversation and decide whether the speakers agree or disagree.\n\n{dialogue}",
    "Conversation:\n{dialogue}\n\nDid they make a plan? Answer yes or no.",
    "{dialogue}\nIs this conversation friendly or hostile?",
)
_PICK_CLS = (  # task verbs outside the usual instruction words
    "Pick one category for the ticket below: billing, bug, account, other.\n\n{ticket}",
    "Assign a topic to this headline (world, sports, business, science).\n{headline}",
    "Sort this message into inbox, promotions or spam.\n\n{message}",
    "Tag the review below with the aspect it talks about most: price, quality, delivery or support.\n\n{review}",
)
_DLG_SUM = (
    "Summarize the following conversation.\n\n{dialogue}", "Summarize this dialogue in one sentence:\n{dialogue}",
    "{dialogue}\n\nBriefly summarize that dialogue.", "{dialogue}\nWhat were they talking about?",
    "Dialogue:\n{dialogue}\n\nSummary:", "Write a short summary of the chat below.\n\n{dialogue}",
    "{dialogue}\n\nWrite a one-line summary of this chat for the team channel.",
)
_AFTER_SUM = (
    "{article}\n\nWhat is the main point of this article?", "{article}\n\nIn one sentence, this article is about",
    "{article}\n\nWhat happened, in two sentences?", "{article}\nWhat are the key takeaways?",
    "{article}\n\nWho is affected by this, and how?",
)
_NAME_SI = (
    "Write a short biography of {name}.", "Write a birthday message for {first} from the whole team.",
    "Write a cover letter for {name}, who is applying to {org}.", "Write a LinkedIn recommendation for {name}.",
    "Write a toast for {first}'s retirement party.", "Draft a welcome email to {name}, who joins {org} on Monday.",
)
_NAME_EX = (
    "What key details about {name} can be extracted from the following bio?\n\n{bio}",
    "From the profile below, list {first}'s jobs, places and dates.\n\n{bio}",
    "{bio}\n\nWhat do we learn about this person's career?",
)
_BIO = (
    "{n} was born in {city} in {year}.", "{f} studied {s} before moving to {city2}.", "After university {f} joined {org} as an analyst.",
    "In {year2} {f} founded a small company.", "{f} has written two books about {s}.", "{f} now lives in {city2} with two cats.",
    "{f} volunteers at a local food bank on weekends.", "{f} was promoted to head of operations in {year2}.",
)


def _bio(d: _Draw) -> str:
    first, last = d.pick(FIRST), d.pick(LAST)
    c = dict(n=f"{first} {last}", f=first, city=d.pick(CITIES), city2=d.pick(CITIES), org=d.pick(ORGS),
             year=str(d.int(1950, 2000)), year2=str(d.int(2001, 2024)), s=d.pick(SUBJECTS))
    return " ".join([_BIO[0]] + d.sample(_BIO[1:], d.int(2, 5))).format_map(c)


_SLOTS["bio"] = lambda d, a, c: _bio(d)


def _sep_for(fixed: str, seps: tuple[str, ...]) -> str:
    """The separator between a slot and a fixed question, fixed by the question: two frames
    that differ only in white space would be one template counted as two."""
    return seps[len(fixed) % len(seps)]


def _shape_frame(d: _Draw, kind: str) -> tuple[str, str] | None:
    """One English frame of the real-prompt shapes for `kind`, or None where none applies."""
    if kind == "classification":
        r = d.r()
        if r < 0.5:
            slot, qs = d.pick(_AFTER_Q)
            # reviews and messages end in a full stop, so the question may follow
            # on the same line; headlines and utterances do not, so it starts a new one
            q = d.pick(qs)
            seps = (" ", "\n", "\n\n") if slot in ("{review}", "{message}") else ("\n", "\n\n")
            return slot + _sep_for(q, seps) + q, "after"
        return (d.pick(_DLG_CLS), "dialogue") if r < 0.8 else (d.pick(_PICK_CLS), "pick")
    if kind == "summarise":
        return (d.pick(_DLG_SUM), "dialogue") if d.chance(0.6) else (d.pick(_AFTER_SUM), "after")
    if kind == "self_instruct":
        return d.pick(_NAME_SI) + "".join(d.sample(_SI_CONSTRAINT, d.int(0, 2))), "name"
    if kind == "structured_extraction":
        return d.pick(_NAME_EX) + d.pick(("", " " + d.pick(_EX_OUT))), "name"
    if kind == "translate":
        L = d.pick(LANGS)
        return d.pick((f"Translate this chat into {L}, keeping the speaker names:\n\n{{dialogue}}",
                       f"{{dialogue}}\n\nTranslate the conversation above into {L}.")), "dialogue"
    return None


def _ml_frame(d: _Draw, kind: str) -> tuple[str, str] | None:
    """One frame of `kind` written in another language, or None where none applies."""
    lang = d.pick(ML_LANGS)
    f = _ml_frame_in(d, kind, lang)
    return None if f is None else (f, "ml:" + lang)


def _ml_frame_in(d: _Draw, kind: str, lang: str) -> str | None:
    L = ML[lang]
    gap = "" if lang in ("zh", "ja") else " "
    if kind == "summarise":
        if d.chance(0.5):
            return d.pick(L["sum_head"]) + d.pick(("\n\n", "\n")) + "{ml:%s}" % lang
        return "{ml:%s}\n\n" % lang + d.pick(L["sum_tail"])
    if kind == "translate":
        if d.chance(0.5):
            return d.pick(L["tr_head"]) + d.pick(("\n\n", "\n")) + "{mlshort:%s}" % lang
        return "{mlshort:%s}\n\n" % lang + d.pick(L["tr_tail"])
    if kind == "classification":
        q = d.pick(L["cls_tail"])
        return "{mlrev:%s}" % lang + _sep_for(q, ("\n", "\n\n", gap)) + q
    if kind == "self_instruct":
        return d.pick(L["write"] + L["explain"]).replace("{t}", "{mltopic:%s}" % lang)
    if kind == "reasoning_trace":
        label = {"zh": "题目：", "ja": "問題：", "ko": "문제: "}.get(lang, "")
        r = d.pick(L["reason"])
        return (r + "\n\n" + label + "{mlprob:%s}" % lang) if d.chance(0.5) else (label + "{mlprob:%s}\n\n" % lang + r)
    if kind == "eval_item":
        # the subject is fixed text: per-subject exam headers are different templates
        return d.pick(L["mcq_head"]).replace("{s}", d.pick(L["subjects"])) + "\n\n{mlq:%s}\n" % lang + d.pick(L["answer"])
    return None


def _with_shapes(kind: str, make: Callable[[_Draw], str]) -> Callable[[_Draw], tuple[str, str]]:
    """A frame maker that draws the new shapes at their shares, else the English frames:
    (frame, shape), shape one of SHAPES ("ml:<lang>" for another language)."""
    def frame(d: _Draw) -> tuple[str, str]:
        r = d.r()
        if r < _ML_SHARE:
            f = _ml_frame(d, kind)
            if f is not None:
                return f
        elif r < _ML_SHARE + _SHAPE_SHARE:
            f = _shape_frame(d, kind)
            if f is not None:
                return f
        return make(d), "base"
    return frame


_FRAME_MAKERS: dict[str, Callable[[_Draw], tuple[str, str]]] = {k: _with_shapes(k, m) for k, m in {
    "self_instruct": _frame_self_instruct,
    "reasoning_trace": _frame_reasoning,
    "coding_trajectory": _frame_coding,
    "eval_item": _frame_eval,
    "structured_extraction": _frame_extraction,
    "classification": _frame_classification,
    "translate": _frame_translate,
    "summarise": _frame_summarise,
}.items()}
KINDS: tuple[str, ...] = tuple(_FRAME_MAKERS)


def _tid(kind: str, frame: str) -> str:
    return f"{kind}-{hashlib.blake2b(frame.encode(), digest_size=5).hexdigest()}"


def template_pool(kind: str, n: int, rng: np.random.Generator) -> list[PromptTemplate]:
    """n templates of `kind` with distinct frames (every kind supplies at least ~700)."""
    if kind not in _FRAME_MAKERS:
        raise ValueError(f"unknown template kind {kind!r}; expected one of {KINDS}")
    make, d = _FRAME_MAKERS[kind], _Draw(rng)
    seen: dict[str, PromptTemplate] = {}
    tries = 0
    while len(seen) < n:
        frame, shape = make(d)
        tries += 1
        if frame not in seen:
            seen[frame] = PromptTemplate(_tid(kind, frame), kind, frame, shape=shape)
        elif tries > 50 * n + 1000:
            raise ValueError(f"kind {kind!r} cannot supply {n} distinct templates (got {len(seen)})")
    return list(seen.values())


# ---------------------------------------------------------------------------------------
# Paraphrase: what a harvester does to dodge exact matching. Only literal frame text is
# touched; slots stay where they are.
# ---------------------------------------------------------------------------------------
_PARA_SYN = {
    "write": ("compose", "draft", "produce"), "explain": ("describe", "clarify"), "detailed": ("thorough", "in-depth", "comprehensive"),
    "explanation": ("overview", "description", "account"), "short": ("brief", "concise"), "brief": ("short", "concise"),
    "summarize": ("sum up", "condense", "recap"), "summary": ("recap", "synopsis", "overview"), "list": ("enumerate", "give"),
    "include": ("add", "incorporate"), "use": ("employ", "make use of"), "simple": ("plain", "easy"), "only": ("just", "solely"),
    "answer": ("response", "reply"), "question": ("query",), "problem": ("exercise", "task"), "final": ("last",),
    "show": ("display", "present"), "provide": ("give", "supply"), "give": ("provide", "offer"), "article": ("text", "piece", "story"),
    "following": ("below", "next"), "extract": ("pull out", "retrieve"), "classify": ("categorize",), "tips": ("suggestions", "pieces of advice"),
    "examples": ("illustrations", "instances"), "create": ("design", "put together", "make"), "generate": ("come up with", "produce"),
    "correct": ("right",), "reasoning": ("thinking", "thought process", "rationale"), "step by step": ("one step at a time", "step-by-step"),
    "respond": ("reply", "answer"), "return": ("output", "give back"), "translate": ("render", "convert"), "label": ("tag", "category"),
    "detailed step-by-step": ("thorough step-by-step",), "choose": ("pick", "select"), "common": ("frequent", "widespread"),
    "guide": ("walkthrough", "tutorial"), "describe": ("explain", "outline"), "tone": ("voice", "register"), "words": ("words",),
}
_PARA_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _PARA_SYN), key=len, reverse=True)) + r")\b", re.IGNORECASE)
_POLITE_PRE = ("Please ", "Could you please ", "I'd like you to ", "Kindly ", "I need you to ", "Hi! Please ")
_POLITE_POST = (" Thanks!", " Thank you.", " Thanks in advance.", " I appreciate your help.", " Thank you so much!")


def paraphrase(template: PromptTemplate, rng: np.random.Generator) -> PromptTemplate:
    """A lightly reworded variant of the same frame (synonyms, politeness, clause order)."""
    d = _Draw(rng)
    parts = list(template._parts)
    lit_idx = [i for i, p in enumerate(parts) if isinstance(p, str)]
    if template.shape.startswith("ml:") and lit_idx:
        return _paraphrase_ml(template, d, parts, lit_idx)

    def swap(m: re.Match) -> str:
        w = m.group(0)
        if not d.chance(0.5):
            return w
        r = d.pick(_PARA_SYN[w.lower()])
        return r[0].upper() + r[1:] if w[0].isupper() else r

    for _ in range(20):  # retry until the text actually changed
        new = list(parts)
        for i in lit_idx:
            new[i] = _PARA_RE.sub(swap, new[i])
        if d.chance(0.5) and lit_idx:  # reorder: swap two adjacent whole sentences
            i = d.pick(lit_idx)
            lines = new[i].split("\n")
            # a chunk's first/last line may continue a slot's line: leave those alone
            lo, hi = (0 if i == 0 else 1), (len(lines) if i == len(new) - 1 else len(lines) - 1)
            spots = []
            for li in range(lo, hi):
                sents = re.split(r"(?<=[.!?]) (?=[A-Z])", lines[li])
                spots += [(li, j) for j in range(len(sents) - 1)]
            if spots:
                li, j = d.pick(spots)
                sents = re.split(r"(?<=[.!?]) (?=[A-Z])", lines[li])
                sents[j], sents[j + 1] = sents[j + 1], sents[j]
                lines[li] = " ".join(sents)
                new[i] = "\n".join(lines)
        if d.chance(0.5) and lit_idx and isinstance(new[0], str) and new[0][:1].isupper():
            pre = d.pick(_POLITE_PRE)
            first = new[0]
            if not first.startswith(("You are", "I ", "Here", "The ", "English")):
                new[0] = pre + first[0].lower() + first[1:]
        if d.chance(0.5) and lit_idx:
            i = lit_idx[0]
            line, nl, rest = new[i].partition("\n")
            if line.rstrip().endswith((".", "?", "!")):
                new[i] = line.rstrip() + d.pick(_POLITE_POST) + nl + rest
        frame = "".join(p if isinstance(p, str) else "{" + p[0] + (":" + p[1] if p[1] is not None else "") + "}" for p in new)
        if frame != template.frame:
            break
    return PromptTemplate(_tid(template.kind, frame) + "p", template.kind, frame, family=template.family, shape=template.shape)


def _paraphrase_ml(template: PromptTemplate, d: _Draw, parts: list, lit_idx: list[int]) -> PromptTemplate:
    """Frames in another language get that language's politeness -- an opener at the very
    start or a closer at the very end -- never English words glued onto them."""
    L = ML[template.shape[3:]]
    cjk = template.shape in ("ml:zh", "ml:ja")
    opens = [x for x in L["chat_open"] if x and not x.rstrip().endswith((":", "："))]
    closes = [x for x in L["chat_close"] if x]
    new = list(parts)
    last = new[-1].rstrip() if isinstance(new[-1], str) else ""
    cue_end = bool(last) and last[-1] not in ".?!。？！"   # ends in "Answer:" or a stub: nothing goes after it
    if cue_end or d.chance(0.5):
        o = d.pick(opens)
        if isinstance(new[0], str) and new[0][:1].strip():
            first = new[0]
            new[0] = o + (first[0].lower() + first[1:] if o.endswith(", ") and not cjk else first)
        else:                              # the frame opens with a slot: the opener on its own line
            new.insert(0, o.strip() + "\n")
    elif last:
        new[-1] = last + ("" if cjk else " ") + d.pick(closes)
    else:                                  # the frame ends with a slot: the closer on its own line
        new.append("\n" + d.pick(closes))
    frame = "".join(p if isinstance(p, str) else "{" + p[0] + (":" + p[1] if p[1] is not None else "") + "}" for p in new)
    return PromptTemplate(_tid(template.kind, frame) + "p", template.kind, frame, family=template.family, shape=template.shape)


# ---------------------------------------------------------------------------------------
# Natural prompts: many everyday forms, each with its own pools, plus optional personal
# context, constraints and register changes (lower case, missing punctuation, typos).
# ---------------------------------------------------------------------------------------
_CONCEPTS = _split(
    "a Roth IRA|the difference between weather and climate|a mortgage pre-approval|inflation|a VPN|an API|"
    "the electoral college|a credit score|an index fund|cognitive behavioural therapy|a leap year|a black hole|"
    "the placebo effect|a recession|a sourdough starter|an NFT|gluten|a tariff|the gig economy|a hedge fund|"
    "net neutrality|a pH scale|osmosis|the Doppler effect|a haiku|impostor syndrome|a living will|a capital gains tax|"
    "blockchain|a chord progression|the Fibonacci sequence|carbon offsets|a sonnet|the Dunning-Kruger effect"
)
_PAIRS = tuple(tuple(p.split(" / ")) for p in _split(
    "a Roth IRA / a traditional IRA|weather / climate|a virus / a bacterium|TCP / UDP|baking soda / baking powder|"
    "an LLC / a sole proprietorship|affect / effect|a latte / a cappuccino|stocks / bonds|a crocodile / an alligator|"
    "empathy / sympathy|a psychologist / a psychiatrist|HIIT / steady cardio|a will / a trust|RAM / storage|"
    "a hurricane / a typhoon|jam / jelly|a credit card / a debit card|an APR / an interest rate|a lawyer / a solicitor"))
_HOWTO = _split(
    "unclog a bathroom sink without chemicals|get red wine out of a white carpet|fix a squeaky door hinge|"
    "change a flat bike tire|remove rust from cast iron|hang a heavy mirror on drywall|stop my cat scratching the sofa|"
    "back up my phone photos|reset a forgotten router password|cook rice that isn't mushy|iron a shirt properly|"
    "get rid of fruit flies|fall asleep faster|negotiate rent with my landlord|write a good cover letter|"
    "improve my posture at a desk|start running again after an injury|keep basil alive indoors|descale a kettle|"
    "make cold brew coffee at home|clean a laptop keyboard|teach my kid to ride a bike|meal prep for a week"
)
_ME = _split(
    "I'm a {age} year old nurse|I'm a college freshman|I'm a stay-at-home dad|I just moved to {city}|"
    "I work night shifts|I'm a software developer|I'm retired|I'm in my last year of high school|"
    "I run a small bakery|I'm a graduate student in biology|I'm new to cooking|I have two kids under {n}|"
    "I'm a teacher|I've been unemployed for {n} months|I'm training for a half marathon|I'm vegetarian|"
    "I'm an international student|I manage a team of {n}|I live alone in a small apartment|I started a new job last week"
)
_PROBLEM_ME = _split(
    "my sleep schedule is a mess|my landlord won't return my deposit|I keep procrastinating on my thesis|"
    "my coworker takes credit for my work|I spend way too much on takeout|my dog barks at every noise|"
    "I get anxious before presentations|my tomato plants have yellow leaves|my laptop is really slow|"
    "I can't decide between two job offers|my teenage son barely talks to me|I have a job interview on {weekday}|"
    "my budget never adds up at the end of the month|I'm always tired in the afternoon|my friend hasn't paid me back"
)
_ASK = _split(
    "What should I do?|Any advice?|How should I handle this?|What would you suggest?|Is this normal?|"
    "Where do I even start?|What are my options?|Can you help me think this through?|Am I overreacting?|What would you do?"
)
_MEDIA = _split("books|movies|podcasts|TV shows|video games|albums|board games|documentaries")
_TITLES = _split(
    "The Martian|Breaking Bad|Stardew Valley|Sapiens|The Office|Pride and Prejudice|Dune|Interstellar|"
    "Serial|Catan|Planet Earth|The Bear|Spirited Away|Project Hail Mary|Succession|Radiolab"
)
_MSG_TYPES = _split(
    "a text|an email|a birthday card message|a LinkedIn message|a thank-you note|a toast|a complaint letter|"
    "a resignation letter|an apology message|a short bio|a wedding speech|a reference letter"
)
_PURPOSES = _split(
    "asking for a day off|congratulating them on their promotion|apologizing for missing their party|"
    "declining an invitation politely|asking for a refund|thanking them for their help|introducing myself|"
    "asking to reschedule our meeting|saying goodbye before I move abroad|asking for feedback on my work"
)
_TONES = _split("more professional|friendlier|less passive-aggressive|shorter|more confident|funnier|more formal|less awkward")
_CREATIVE = _split("poem|short story|limerick|haiku|song chorus|rap verse|bedtime story|riddle|joke")
_WHIMSY = _split(
    "a cat who thinks it's a dog|Monday mornings|my grandmother's garden|a lonely satellite|coffee|"
    "the last day of summer|a robot who loves gardening|a dragon afraid of heights|my commute|rainy days in {city}|"
    "a penguin on vacation|an overdue library book|the first snow|my best friend's wedding"
)
_BIZ = _split("coffee shop|dog grooming business|bakery|podcast|YouTube channel|bookshop|cleaning company|food truck|plant shop|tutoring service")
_DEVICES = _split("laptop|iPhone|Android phone|printer|wifi router|smart TV|PS5|car's Bluetooth|Windows PC|MacBook|AirPods")
_SYMPTOMS = _split(
    "keeps disconnecting|won't turn on|is really slow|makes a clicking noise|gets super hot|won't charge|"
    "shows a black screen|keeps restarting|can't find the network"
)
_EVENTS_T = _split("the last update|I dropped it|a power cut|I spilled water on it|I installed a new app|I moved house|I reset it")
_SKILLS = _split(
    "piano|Spanish|Python|drawing|chess|public speaking|calculus|swimming|touch typing|photography|Japanese|statistics|guitar|sewing"
)
_OPINIONS = _split(
    "pineapple belongs on pizza|AI will replace most office jobs|remote work is here to stay|it's worth going to college|"
    "social media does more harm than good|you should rent instead of buy|electric cars are really better for the environment|"
    "kids should learn to code in primary school|tipping culture has gone too far|humans will live on Mars this century"
)
_INGREDIENTS = _split("chicken thighs|chickpeas|spinach|leftover rice|eggs|a can of tomatoes|tofu|potatoes|feta|zucchini|ground beef|lentils|mushrooms|frozen peas")
_FOOD_CONSTR = _split("is ready in 20 minutes|my kids will actually eat|is high in protein|doesn't need an oven|is cheap|is gluten free")
_HISTORY = _split(
    "the fall of the Roman Empire|World War I|the 2008 financial crisis|the Cuban missile crisis|the French Revolution|"
    "the collapse of the Soviet Union|the Great Depression|the partition of India|the Irish potato famine|the Chernobyl disaster"
)
_WHY = _split(
    "the sky is blue|we get goosebumps|cats purr|onions make you cry|planes leave white trails|ice floats|"
    "my ears pop on planes|bread goes stale|leaves change color in autumn|we dream|the ocean is salty|coffee makes me sleepy"
)
_BUY = _split("used car|mattress|laptop for college|espresso machine|road bike|winter coat|DSLR camera|stroller|gaming chair|tent")
_PETS = _split("dog|cat|rabbit|parrot|hamster|puppy|kitten|bearded dragon")
_PET_BEH = _split(
    "keeps licking its paws|won't eat its food|scratches the door at night|hides under the bed|sneezes a lot|"
    "pulls on the leash|chews everything|meows at 4am"
)
_PREFIX = _split("hey|hi|hello|quick question|ok so|hmm|yo|good morning|help|sorry if this is dumb but") + ("",) * 12
_SUFFIX = _split(
    "Thanks!|thank you so much|Keep it short please.|Please explain simply.|Be honest.|Thanks in advance.|"
    "I'm in the UK if that matters.|No need for a long answer.|Bullet points are fine.|Sources would be great.|"
    "lol|please help|I'm on a tight budget.|I've already tried googling it."
) + ("",) * 16


def _chat_core(d: _Draw) -> str:
    f = d.int(0, 27)
    c = dict(city=d.pick(CITIES), n=d.int(2, 12), age=d.int(19, 71), weekday=d.pick(WEEKDAYS))
    if f == 0:
        return d.pick(("What is {x}?", "Can you explain what {x} is?", "what exactly is {x} and how does it work?", "ELI5: {x}", "Explain {x} in simple terms.")).format(x=d.pick(_CONCEPTS))
    if f == 1:
        return d.pick(("How do I {x}?", "what's the best way to {x}", "Any tips on how to {x}?", "how can i {x} quickly?")).format(x=d.pick(_HOWTO))
    if f == 2:
        return f"{d.pick(_ME)} and {d.pick(_PROBLEM_ME)}. {d.pick(_ASK)}".format(**c)
    if f == 3:
        return d.pick(("Can you recommend {k} {m} similar to {t}?", "I loved {t}. What {m} should I try next?", "give me some {m} like {t} but less depressing")).format(k=d.int(3, 10), m=d.pick(_MEDIA), t=d.pick(_TITLES))
    if f == 4:
        return (f"I'm going to {d.pick(CITIES)} for {d.int(2, 10)} days in {d.pick(MONTHS)} with {d.pick(('my partner', 'two kids', 'my parents', 'a group of friends', 'my dog'))}. "
                + d.pick(("What should we see?", "Can you plan an itinerary?", "Where should we stay?", "What's worth skipping?", "What should I pack?")))
    if f == 5:
        ing = ", ".join(d.sample(_INGREDIENTS, d.int(2, 4)))
        return d.pick(("I have {i}. What can I make for dinner that {c}?", "recipe ideas with {i}?", "what can i cook with {i} that {c}")).format(i=ing, c=d.pick(_FOOD_CONSTR))
    if f == 6:
        return d.pick(("Can you help me write {m} to my {r} {p}?", "write {m} for my {r} {p}", "I need {m} to my {r}, {p}. Can you draft something?")).format(m=d.pick(_MSG_TYPES), r=d.pick(RELATIONS), p=d.pick(_PURPOSES))
    if f == 7:
        return d.pick(("Make this sound {t}: {q}", "can you rewrite this to be {t}? {q}", "Is this message too rude? {q}", "How can I say this {t}: {q}")).format(t=d.pick(_TONES), q='"' + _short_text(d, d.int(1, 2)) + '"')
    if f == 8:
        return d.pick(("Write a {c} about {w}.", "write me a {c} about {w}", "Can you write a funny {c} about {w} for my {r}?", "I need a {c} about {w}, something sweet")).format(c=d.pick(_CREATIVE), w=d.pick(_WHIMSY).format(city=d.pick(CITIES)), r=d.pick(RELATIONS))
    if f == 9:
        return d.pick(("Give me name ideas for a {b} in {city}.", "I'm opening a {b}, what should I call it?", "brainstorm {n} names for my {b}")).format(b=d.pick(_BIZ), city=d.pick(CITIES), n=d.int(5, 20))
    if f == 10:
        a, b, p = d.int(2, 99), d.int(2, 99), d.int(5, 95)
        return d.pick((f"what is {p}% of {a * 10}", f"Solve {a}x + {b} = {a * 3 + b} for x.", f"If I earn ${a},{b:02d}0 a year, how much is that per hour?",
                       f"How many minutes are in {a} days?", f"is {a * b + 1} a prime number", f"Convert {a} Fahrenheit to Celsius please"))
    if f == 11:
        return d.pick(("My {dev} {s} after {e}. How do I fix it?", "{dev} {s} since {e}, any ideas?", "why does my {dev} {s}?")).format(dev=d.pick(_DEVICES), s=d.pick(_SYMPTOMS), e=d.pick(_EVENTS_T))
    if f == 12:
        return d.pick(("What's the best way to learn {s} as an adult?", "How long does it take to get good at {s}?", "I want to learn {s} in {n} months. Make me a plan.", "is {s} hard to learn if you're over {a}?")).format(s=d.pick(_SKILLS), n=d.int(2, 12), a=d.int(30, 60))
    if f == 13:
        return d.pick(("Do you think {o}?", "Honest opinion: {o}?", "Is it true that {o}?", "Convince me that {o}.", "what are the arguments for and against the idea that {o}")).format(o=d.pick(_OPINIONS))
    if f == 14:
        return d.pick(("Explain {x} like I'm {n}.", "explain {x} to me like i'm {n} years old")).format(x=d.pick(_CONCEPTS), n=d.int(5, 12))
    if f == 15:
        return d.pick(("Tell me a joke about {w}.", "tell me something interesting about {w}", "Give me a fun fact about {x}.")).format(w=d.pick(_PETS + _BIZ), x=d.pick(SUBJECTS))
    if f == 16:
        w = d.pick(("ubiquitous", "serendipity", "schadenfreude", "petrichor", "laconic", "sonder", "hygge", "ennui", "quixotic", "saudade"))
        return d.pick((f"What does '{w}' mean?", f"how do you pronounce {w}", f"Use '{w}' in a sentence.", f"Is it 'affect' or 'effect' in: 'the weather will {w} our plans'?"))
    if f == 17:
        return d.pick(("What caused {h}?", "Why did {h} happen?", "Can you give me a quick overview of {h}?", "how did {h} change the world")).format(h=d.pick(_HISTORY))
    if f == 18:
        return d.pick(("Can you explain why {w}?", "why is it that {w}", "Why is it that {w}?", "what's the science behind why {w}?")).format(w=d.pick(_WHY))
    if f == 19:
        return d.pick(("What should I look for when buying a {b}?", "Is it worth spending more on a {b}?", "{b} recommendations under ${p}?")).format(b=d.pick(_BUY), p=d.int(2, 20) * 50)
    if f == 20:
        return d.pick(("My {p} {b}. Is that normal?", "my {p} {b} and I don't know why", "my {p} {b}, should I see a vet?")).format(p=d.pick(_PETS), b=d.pick(_PET_BEH))
    if f == 21:
        return d.pick(("Make me a {n}-day workout plan for {g}.", "Can you create a weekly meal plan for {g}?", "Build me a study schedule for {s} finals in {n} weeks.")).format(n=d.int(3, 7), g=d.pick(("a beginner", "building muscle", "losing weight", "a busy parent", "someone with bad knees")), s=d.pick(_SKILLS))
    if f == 22:
        return d.pick(("Can my landlord {a} without notice?", "Is it legal for my employer to {b}?", "What happens if I {c}?")).format(
            a=d.pick(("enter my apartment", "raise the rent", "keep my deposit")), b=d.pick(("read my work emails", "cut my hours", "refuse my vacation")), c=d.pick(("miss a credit card payment", "file my taxes late", "break my lease early")))
    if f == 23:
        return d.pick(("{x} vs {y} for {u}?", "Should I get the {x} or the {y}?", "which is better for {u}: {x} or {y}")).format(x=d.pick(PRODUCTS), y=d.pick(PRODUCTS), u=d.pick(("a small kitchen", "travel", "a student", "working from home", "a gift")))
    if f == 24:
        return d.pick(("Pretend you're a {r} and {t}.", "Let's play a game: you are a {r}. {t}", "roleplay as a {r} who {t}")).format(
            r=d.pick(("pirate", "medieval knight", "job interviewer", "grumpy barista", "tour guide in Rome", "Shakespearean actor")), t=d.pick(("give me advice about my love life", "interview me for a marketing job", "describe your day", "teach me about stars")))
    if f == 25:
        a, b = d.pick(_PAIRS)
        return d.pick(("What's the difference between {a} and {b}?", "{a} or {b}, which one should I choose?", "Is {a} the same thing as {b}?",
                       "{a} vs {b}?? I always mix them up")).format(a=a, b=b)
    if f == 26:
        return d.pick(("best {x}", "{x} near me", "{x}??", "cheap {x} ideas")).format(x=d.pick(_split("pizza dough recipe|laptop for students|hiking boots|things to do in " + d.pick(CITIES) + "|gift for a 10 year old|podcast about history|budget app|houseplants for low light")))
    return d.pick(("I've always wondered why {w}.", "is it true that {w}?", "my kid asked me why {w} and I had no idea lol")).format(w=d.pick(_WHY))


# Personal context: the backstory people add before (or after) the actual question.
_CTX = (
    "I've been {doing} for about {n} {unit} now.", "Last {weekday} {event}.", "The thing is, {complication}.",
    "I already tried {attempt}, but {result}.", "My {rel} thinks I'm overthinking it, but I'm not so sure.",
    "Money is a bit tight right now.", "I don't have a lot of free time on weekdays.", "I'd prefer something {pref}.",
    "For context, I live in {city} and {living}.", "It's for {purpose}.", "{me}.", "I'm not a native English speaker, sorry for mistakes.",
    "I've read a few articles online but they all say different things.", "This has been bugging me for {n} {unit}.",
    "Ideally I'd like to sort this out before {month}.", "I'm asking because {reason}.",
)
_CTX_FILL = {
    "doing": _split("trying to save money|working from home|learning to cook|running three times a week|dating someone new|looking for a job|renovating my kitchen|studying for exams"),
    "unit": ("weeks", "months", "years"),
    "event": _split("my car broke down on the highway|I had a big argument with my roommate|my manager asked me to lead a new project|I got a letter from the council|my kid came home upset from school|I finally quit my job"),
    "complication": _split("I only have about an hour a day|my partner is allergic to nuts|I can't afford anything expensive|I work weekends|my English is okay but not perfect|I've never done this before|the deadline is on {weekday}"),
    "attempt": _split("restarting it|asking on Reddit|the usual advice online|talking to my manager|a couple of apps|cutting back on caffeine|reading the manual"),
    "result": _split("nothing changed|it only made things worse|it worked for a day or two|I got ten different answers|I gave up after a week"),
    "pref": _split("low effort|that doesn't take all weekend|not too cheesy|kid friendly|under $50|that I can do at home|a bit unusual"),
    "living": _split("rent a one-bedroom flat|share a house with three people|commute about an hour each way|have a small balcony|don't own a car"),
    "purpose": _split("my sister's 30th birthday|a school project|a work presentation on {weekday}|my grandmother|our team newsletter|a job application"),
    "reason": _split("my friend and I have a bet going|I have an exam next week|my boss asked me|I saw a video about it|my kids keep asking me"),
}


def _context(d: _Draw, c: dict, frame: str) -> str:
    f = {k: d.pick(v) for k, v in _CTX_FILL.items()}
    f.update(c, rel=d.pick(RELATIONS), month=d.pick(MONTHS), me=d.pick(_ME).format(**c))
    return frame.format_map(f).format_map(c)


_PLAN_WHAT = _split(
    "a birthday party for my {n} year old|a week-long road trip from {city}|our wedding on a small budget|a vegetable garden on my balcony|"
    "moving to {city} next month|a surprise anniversary dinner|a study plan for my exams|a team offsite for {n} people|"
    "my first half marathon|a weekend in {city} with my parents|a garage sale|a baby shower for my sister"
)
_PLAN_DETAIL = _split(
    "budget is around ${n}00|there will be about {n} people|one person is vegetarian|we don't have a car|it has to be on a weekend|"
    "I have maybe {n} hours a week for this|the place has no kitchen|it needs to be kid friendly|I'd like to avoid long drives|"
    "we've already done the usual stuff|my partner hates crowds|it might rain|I'm not very organised|we need to be done by {n}pm"
)
_PLAN_ASK = _split(
    "Can you make me a plan?|What would you suggest?|Can you give me a checklist?|Where do I start?|"
    "Can you put together a rough schedule?|Any ideas?|What am I forgetting?"
)


def _planning(d: _Draw, c: dict) -> str:
    """A longer, structured request: what, a few constraints (often as a list), the ask."""
    what = d.pick(_PLAN_WHAT).format(**c)
    details = [x.format(**c) for x in d.sample(_PLAN_DETAIL, d.int(2, 5))]
    head = d.pick(("I'm planning {w}.", "I need help organising {w}.", "Help me plan {w}!", "so I'm in charge of {w}.")).format(w=what)
    if d.chance(0.6):
        body = d.pick(("\n", "\nSome details:\n", "\nConstraints:\n")) + "\n".join(d.pick(("- ", "* ", "")) + x for x in details)
        return f"{head}{body}\n{d.pick(_PLAN_ASK)}"
    return f"{head} {'. '.join(x[0].upper() + x[1:] for x in details)}. {d.pick(_PLAN_ASK)}"


def _chat(d: _Draw) -> str:
    if d.chance(0.08):
        return _ml_chat(d)
    core = _chat_core(d)
    c = dict(city=d.pick(CITIES), n=d.int(2, 12), age=d.int(19, 71), weekday=d.pick(WEEKDAYS))
    parts = []
    pre = d.pick(_PREFIX)
    if pre:
        parts.append(pre + d.pick((",", "!", " -", "", ".")))
    r = d.r()
    if r < 0.1:
        return _planning(d, c)
    if r < 0.17:  # a pasted message to rework: the long tail of chat prompts
        msg = _email_doc(d) if d.chance(0.5) else _short_text(d, d.int(3, 6))
        ask = d.pick(("Can you make this email sound {t}?", "rewrite this so it sounds {t}:", "How should I reply to this? I want to sound {t}.",
                      "my {r} sent me this, what do you think they mean?", "fix the grammar please and make it {t}")).format(t=d.pick(_TONES), r=d.pick(RELATIONS))
        return f"{ask}\n\n{msg}" if d.chance(0.6) else f"{msg}\n\n{ask}"
    if r < 0.22:  # a long personal story before the question
        return " ".join([_context(d, c, f) for f in d.sample(_CTX, d.int(5, 9))] + [_chat_core(d)])
    r = d.r()
    n_ctx = 0 if r < 0.4 else 1 if r < 0.7 else d.int(2, 3) if r < 0.9 else d.int(4, 5)  # long tail of long, personal prompts
    ctx = [_context(d, c, f) for f in d.sample(_CTX, n_ctx)]
    if d.chance(0.15):  # a second, unrelated ask in the same message
        core2 = _chat_core(d)
        core = f"{core} Also, {core2[0].lower()}{core2[1:]}"
    if ctx and d.chance(0.25):
        parts += [core] + ctx
    else:
        parts += ctx + [core]
    suf = d.pick(_SUFFIX)
    if suf:
        parts.append(suf)
    s = " ".join(parts)
    r = d.r()
    if r < 0.2:
        s = s.lower()
    elif r < 0.3:
        s = s.rstrip("?.!")
    if d.chance(0.05):  # a typo
        i = d.int(0, max(0, len(s) - 2))
        s = s[:i] + s[i + 1] + s[i] + s[i + 2:]
    return s


# Coding questions: opener x ask x detail, and where the code goes, so two people pasting
# code rarely type the same sentence around it.
_CODE_OPEN = ("", "", "hey, ", "Quick one: ", "I'm stuck. ", "Newbie here. ", "ok so ", "Sorry for the long paste. ")
_CODE_ASK = (
    "why does this throw {err}?", "can you review this function and suggest improvements?", "this is slow on big inputs, how can I speed it up?",
    "I'm getting {err} when I run this, what am I doing wrong?", "how do I write a unit test for this?", "can you convert this to {lang2}?",
    "what does this code do? I inherited it from a colleague.", "my script hangs after the first request, any idea why?",
    "is there a more idiomatic way to write this?", "how do I make this work with {thing}?", "where is the bug? it returns {wrong}.",
    "can you add error handling to this?", "why does my linter complain about this?", "how would you refactor this to be testable?",
)
_CODE_DETAIL = (
    "", "", "", "I'm using {lang} {ver}.", "It worked yesterday.", "This runs in a cron job every night.", "The input has about {n}k rows.",
    "I only see this in production, not locally.", "I tried adding print statements but got nowhere.", "Tests pass but the output is wrong.",
)
_CODE_THING = _split("async code|a generator|pandas dataframes|a list of dicts|Unicode input|a config file|multiple threads|our REST API")


def _coding(d: _Draw) -> str:
    lang = d.pick(("python", "python", "javascript", "go"))
    if d.chance(0.12):  # no code at all: a how-do-I question
        return d.pick(("How do I {t} in {l}?", "what's the cleanest way to {t} in {l}", "{l}: how to {t}?")).format(t=d.pick(_CODE_TASK), l=lang.capitalize())
    ctx = dict(lang=lang, lang2=d.pick(("TypeScript", "Rust", "Java", "Python", "Go")), ver=d.pick(("3.9", "3.11", "18", "1.21", "3.12")),
               err=d.pick(("`KeyError: 'id'`", "a TypeError", "`undefined is not a function`", "a nil pointer dereference", "IndexError: list index out of range", "a timeout")),
               thing=d.pick(_CODE_THING), wrong=d.pick(("None", "an empty list", "the wrong total", "duplicates")), n=d.int(2, 900))
    ask = (d.pick(_CODE_OPEN) + d.pick(_CODE_ASK)).format_map(ctx)
    ask = ask[0].upper() + ask[1:] if d.chance(0.6) else ask.lower()
    detail = d.pick(_CODE_DETAIL).format_map(ctx)
    code = _code(d, lang)
    if d.chance(0.6):
        code = f"```{lang if d.chance(0.6) else ''}\n{code}\n```"
    r = d.r()
    if r < 0.5:
        return f"{ask} {detail}\n\n{code}".replace(" \n", "\n")
    if r < 0.8:
        return f"{code}\n\n{ask} {detail}".rstrip()
    return f"{ask}\n\n{code}\n\n{detail or 'Thanks!'}"


_CODE_TASK = _split(
    "read a CSV file into a list of dicts|reverse a linked list|parse a date string with a timezone|remove duplicates from a list but keep order|"
    "make an HTTP request with a timeout|sort a dictionary by value|debounce a function|connect to Postgres|flatten a nested list|"
    "run two tasks concurrently|validate an email address|merge two sorted arrays|read environment variables safely"
)

# Questions people ask about a pasted document: opener x ask x reason.
_DOC_OPEN = ("", "", "", "hi, ", "ok, ", "Quick question: ", "Sorry, long one. ", "Be honest: ")
_DOC_ASK = (
    "what is the author really arguing here?", "is this biased in any way?", "what are the main points I should bring up in class tomorrow?",
    "do you think this is true? it sounds exaggerated to me.", "what would this mean for someone living in {city}?",
    "should my {rel} be worried about this?", "can you check this for grammar mistakes?", "how should I reply to this?",
    "which claims here would need a source?", "is this a good deal or am I missing something?", "can you explain the hard words? my English is not great.",
    "how would you make the opening punchier?", "what questions should I ask at the meeting about this?", "can you explain the numbers in this?",
    "could this affect my job?", "what's the catch?", "can you turn this into a short email to my team?", "who is this actually aimed at?",
    "what happens next, based on this?", "is anything important missing from this?",
)
_DOC_WHY = (
    "", "", "", "I wrote it for work.", "My {rel} sent it to me.", "I have to discuss it tomorrow.", "I work in {city}.",
    "I'm bad at math.", "It's for my landlord.", "We have a meeting about it on {weekday}.", "I only have five minutes.",
)


# Free-form prompts in other languages (issue 14): how people type a question in zh, ja,
# ko, ru, de, es, fr, ar; opener x ask x topic x closer, sometimes after a line of context.
def _ml_chat(d: _Draw) -> str:
    lang = d.pick(ML_LANGS)
    L = ML[lang]
    cjk = lang in ("zh", "ja")
    ask = d.pick(L["chat_open"]) + d.pick(L["chat_ask"]).format(t=d.pick(L["topics"]))
    if cjk and d.chance(0.7):
        ask += d.pick(("？", "?", "。"))
    parts = [ask]
    if d.chance(0.35):
        parts.insert(0, d.pick(L["sent"]))
    close = d.pick(L["chat_close"])
    if close:
        parts.append(close)
    return ("" if cjk else " ").join(parts)


# People rewording the popular tasks around a paste ("can u sum up this article for my
# boss?"): lead x verb x object x modifier x ending, before or after the pasted text, so
# two people rarely type the same sentence; some paste a group chat instead of an article.
_HP_LEAD = ("", "", "can you ", "could you ", "pls ", "please ", "help me ", "i need you to ", "hey can you ", "Can u ")
_HP_VERB = ("summarize", "sum up", "give me the gist of", "shorten", "explain", "simplify", "make sense of", "break down", "rewrite")
_HP_OBJ = ("this", "this article", "the text below", "what I pasted", "this for me", "the thing below", "this mess", "it")
_HP_MOD = ("", "", " in a few bullets", " for my boss", " real quick", " in plain words", " so a kid gets it",
           " in like 3 sentences", " before my meeting", " for a newsletter")
_HP_END = ("", "?", "??", " thanks", " pls", "!", " :)")
_HD_ASK = (
    "what are they arguing about?", "who is right here?", "how should I reply to {f}?", "is {f} mad at me?",
    "can you summarise this group chat, I missed it", "what did we decide in the end?", "does this sound rude from {f}?",
)


def _human_rework(d: _Draw) -> str:
    if d.chance(0.25):   # a pasted chat with the speakers' names on each line
        dlg = _dialogue(d)
        f = dlg.split(":", 1)[0]
        ask = d.pick(("", "", "my group chat: ", "ok so ", "context: my {r} and me. ")).format(r=d.pick(RELATIONS)) + d.pick(_HD_ASK).format(f=f)
        return f"{ask}\n\n{dlg}" if d.chance(0.5) else f"{dlg}\n\n{ask}"
    ask = d.pick(_HP_LEAD) + d.pick(_HP_VERB) + " " + d.pick(_HP_OBJ) + d.pick(_HP_MOD) + d.pick(_HP_END)
    if d.chance(0.4):
        ask = ask[0].upper() + ask[1:]
    doc = _article(d) if d.chance(0.7) else d.pick(tuple(DOC_MAKERS.values()))(d)
    return f"{ask}\n\n{doc}" if d.chance(0.5) else f"{doc}\n\n{ask}"


def _document(d: _Draw) -> str:
    if d.chance(0.2):
        return _human_rework(d)
    doc = _article(d) if d.chance(0.7) else d.pick(tuple(DOC_MAKERS.values()))(d)
    c = dict(city=d.pick(CITIES), rel=d.pick(RELATIONS), weekday=d.pick(WEEKDAYS))
    q = (d.pick(_DOC_OPEN) + d.pick(_DOC_ASK)).format_map(c)
    why = d.pick(_DOC_WHY).format_map(c)
    q = q[0].upper() + q[1:]
    # the reason often comes first ("I work in Leeds. could this affect my job?"): then the
    # opening sentence people type differs even when the question is a common one
    q = (f"{why} {q[0].lower() + q[1:] if d.chance(0.5) else q}" if why and d.chance(0.5) else f"{q} {why}").strip()
    intro = d.pick(("", "", "Here's an article I found:\n\n", "ok read this:\n\n", "From our local paper:\n\n", "My friend forwarded this:\n\n", "See below.\n\n"))
    if d.chance(0.5):
        return f"{q}\n\n{intro}{doc}"
    return f"{intro}{doc}\n\n{q}"


_FOLLOW = _split(
    "can you make it shorter?|why?|thanks!|more formal please|can you give an example?|explain the second point more|"
    "that didn't work|ok what else?|can you put that in a table?|and in simpler words?|are you sure?|"
    "try again but funnier|now make it rhyme|what do you mean by that?|continue|go on|perfect, thank you|"
    "can you add sources?|that's wrong, it should be the other way around|make it more concise|shorter|"
    "how long would that take?|is there a cheaper option?|what about for beginners?|can you translate that?"
)


def _followup(d: _Draw) -> str:
    r = d.r()
    if r < 0.5:
        return d.pick(_FOLLOW)
    if r < 0.7:
        return d.pick(("what about {x}?", "ok now do the same for {x}", "and for {x}?", "how does that compare to {x}?")).format(x=d.pick(SUBJECTS + _SKILLS + CITIES))
    if r < 0.85:
        return d.pick(("translate that to {l}", "now write it in {l}", "can you say that in {l}?")).format(l=d.pick(LANGS))
    return d.pick(("that didn't work, I get {e}", "still getting {e}", "it says {e} now")).format(e=d.pick(("a 404", "KeyError: 'id'", "permission denied", "an empty page", "a timeout after 30 seconds")))


NATURAL_STYLES: tuple[str, ...] = ("chat", "coding", "document", "followup")
_NATURAL = {"chat": _chat, "coding": _coding, "document": _document, "followup": _followup}


def natural_prompt(rng: np.random.Generator, style: str = "chat") -> str:
    """One prompt as a person would type it."""
    try:
        make = _NATURAL[style]
    except KeyError:
        raise ValueError(f"unknown style {style!r}; expected one of {NATURAL_STYLES}") from None
    return make(_Draw(rng, 32))


# ---------------------------------------------------------------------------------------
# System prompts (issue 14: the system prompt gets a signature of its own). A fixed app
# system prompt is what the population tier keys "popular app" on: every request of one
# app (or one campaign that uses one) carries the same text. Chosen by a hash of the
# owner key, not by the Generator, so calling this never moves the simulator's streams.
# ---------------------------------------------------------------------------------------
_WEB_SYSTEM = (
    "You are a helpful, harmless and honest assistant. Answer the user's questions clearly and concisely. "
    "If you do not know something, say so. Today's date is provided by the application.",
)
_APP_SYSTEM = (
    "You are SupportBot for an online electronics store. Answer customer questions about orders, returns and "
    "warranties politely. Never promise refunds; escalate billing disputes to a human agent.",
    "You are a writing assistant inside a note-taking app. Improve the user's text while keeping their voice. "
    "Return only the revised text.",
    "You are a coding assistant integrated in an IDE. Answer with code first, then a short explanation. "
    "Use the language of the open file.",
    "You classify incoming support emails for a helpdesk. Reply with a JSON object with keys \"category\" and "
    "\"priority\" and nothing else.",
    "You are a meeting assistant. Summarise transcripts into decisions, action items with owners, and open questions.",
    "You translate product listings for a marketplace. Keep brand names, sizes and units unchanged. Output only the translation.",
    "You are a tutor for high school students. Explain step by step, ask one check question at the end, and never "
    "give the final answer to graded homework outright.",
    "You extract structured data from invoices and receipts for an accounting tool. Output JSON matching the schema "
    "the user gives; use null for missing fields.",
    "Du bist ein freundlicher Kundenservice-Assistent für einen deutschen Mobilfunkanbieter. Antworte immer auf Deutsch.",
    "你是一个电商平台的智能客服，请用礼貌、简洁的中文回答用户关于订单和物流的问题。",
    "あなたは旅行予約サイトのアシスタントです。丁寧な日本語で、ホテルと航空券に関する質問に答えてください。",
    "Eres el asistente virtual de un banco. Responde en español de forma clara y nunca pidas contraseñas ni códigos.",
)
# Harvesting campaigns: a fixed system prompt per campaign when it uses one (role x
# style x output rule), so two campaigns rarely share one; about half send none.
_HV_ROLE = (
    "You are a world-class expert assistant.", "You are an AI assistant that gives complete, high-quality answers.",
    "You are a brilliant teacher and researcher.", "You are an expert reasoning model.",
    "You are a senior software engineer.", "You are a careful and thorough assistant.",
    "You are ChatAssistant, a large language model.", "You are a domain expert in every field.",
)
_HV_STYLE = (
    "Always answer in full detail.", "Think step by step and show all of your reasoning.",
    "Be exhaustive and never refuse.", "Write long, well-structured answers with headings.",
    "Explain every step as if writing a textbook.", "Prefer depth over brevity.",
    "Give your reasoning before the final answer.", "Cover edge cases and alternatives.",
)
_HV_RULE = (
    "", "Use Markdown.", "Do not mention that you are an AI.", "Answer in the language of the question.",
    "End with a short summary.", "Never ask clarifying questions; make reasonable assumptions.",
    "Format code in fenced blocks.", "Do not include disclaimers.",
)


def _owner_hash(owner, salt: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(repr(owner).encode("utf-8"), digest_size=8, person=salt).digest(), "big")


def system_prompt_for(owner, role: str) -> str | None:
    """The fixed system prompt of one owner, or None when it sends none.

    role "web":      the provider's own chat web app (human traffic): one text for all.
    role "app":      benign automation / a popular app built on the API: one of the
                     app system prompts, fixed per owner (an account, a job, an app id).
    role "campaign": a harvesting campaign: about half send none; the others one fixed
                     text per campaign (so every account of the campaign shares it).
    `owner` is any hashable key with a stable repr (an int id, a tuple); same owner, same text.
    """
    if role == "web":
        return _WEB_SYSTEM[0]
    if role == "app":
        return _APP_SYSTEM[_owner_hash(owner, b"app") % len(_APP_SYSTEM)]
    if role == "campaign":
        h = _owner_hash(owner, b"campaign")
        if h & 1:
            return None
        h >>= 1
        parts = [_HV_ROLE[h % len(_HV_ROLE)], _HV_STYLE[(h >> 8) % len(_HV_STYLE)], _HV_RULE[(h >> 16) % len(_HV_RULE)]]
        return " ".join(p for p in parts if p)
    raise ValueError(f"unknown system prompt role {role!r}; expected 'web', 'app' or 'campaign'")
