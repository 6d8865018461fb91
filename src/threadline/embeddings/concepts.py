"""The test embedder: deterministic concept hashing, for the test suite and the retrieval bench only.

It is not a language model. Each word is lower-cased and lightly stemmed; a word of a built-in synonym group
counts as that group's concept, any other word (stop words aside) as itself; each feature has a fixed
pseudo-random direction (seeded by its hash), the text's vector is their sum weighted by 1 + log(count),
L2-normalised. So "automobile" and "car" are close (one concept)
and a paraphrase made of listed synonyms shares no word with its target yet finds it: an honest test of the
vector path (indexer, pgvector, fusion) without a model download. Its quality says nothing about a real
model's; THREADLINE_EMBEDDINGS=test is refused in production.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
from collections import Counter

_WORD = re.compile(r"[^\W_]+")

# Synonym groups: every word of a group is one concept. Small and general on purpose; the bench's paraphrases
# draw on it (bench/retrieval_set.py), which is why its SEMANTIC figures measure the fusion, not a model.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("car", "automobile", "vehicle", "sedan", "motorcar"),
    ("buy", "purchase", "acquire", "procure"),
    ("sell", "vend", "flog"),
    ("cheap", "inexpensive", "affordable", "budget", "lowcost"),
    ("expensive", "costly", "pricey", "dear"),
    ("fast", "quick", "rapid", "speedy", "swift"),
    ("slow", "sluggish", "laggy", "unhurried"),
    ("error", "failure", "fault", "bug", "defect", "glitch"),
    ("fix", "repair", "mend", "resolve", "patch"),
    ("begin", "start", "commence", "initiate", "launch"),
    ("end", "finish", "stop", "terminate", "conclude", "halt"),
    ("big", "large", "huge", "enormous", "massive", "giant"),
    ("small", "little", "tiny", "minor", "compact", "miniature"),
    ("help", "assist", "aid", "support"),
    ("doctor", "physician", "medic", "clinician"),
    ("medicine", "medication", "drug", "remedy", "prescription"),
    ("sick", "ill", "unwell", "ailing"),
    ("pain", "ache", "soreness", "hurt"),
    ("house", "home", "dwelling", "residence", "apartment", "flat"),
    ("money", "cash", "funds", "currency"),
    ("salary", "wage", "pay", "income", "earnings"),
    ("job", "work", "employment", "occupation", "career", "position"),
    ("boss", "manager", "supervisor", "employer"),
    ("child", "kid", "youngster", "toddler"),
    ("dog", "puppy", "hound", "canine"),
    ("cat", "kitten", "feline", "kitty"),
    ("food", "meal", "cuisine", "dish", "nourishment"),
    ("cook", "bake", "roast", "prepare"),
    ("recipe", "instructions", "method"),
    ("travel", "trip", "journey", "voyage", "vacation", "holiday"),
    ("plane", "airplane", "aircraft", "flight", "airliner"),
    ("train", "railway", "rail"),
    ("city", "town", "metropolis", "municipality"),
    ("weather", "forecast", "climate"),
    ("rain", "shower", "drizzle", "downpour"),
    ("cold", "chilly", "freezing", "frosty"),
    ("hot", "warm", "scorching", "heat"),
    ("phone", "telephone", "smartphone", "mobile", "cellphone"),
    ("computer", "laptop", "pc", "desktop", "notebook"),
    ("screen", "display", "monitor"),
    ("battery", "charge", "power"),
    ("password", "passphrase", "credential", "passcode"),
    ("login", "signin", "logon", "authenticate"),
    ("account", "profile", "membership"),
    ("delete", "remove", "erase", "wipe", "discard"),
    ("create", "make", "build", "generate", "produce"),
    ("change", "modify", "alter", "edit", "adjust", "update"),
    ("question", "query", "inquiry", "enquiry"),
    ("answer", "reply", "response", "solution"),
    ("book", "novel", "volume", "publication"),
    ("read", "peruse", "study"),
    ("write", "compose", "author", "draft"),
    ("letter", "email", "message", "note", "mail"),
    ("meeting", "appointment", "session", "conference"),
    ("schedule", "calendar", "agenda", "timetable", "plan"),
    ("learn", "study", "master", "grasp"),
    ("teacher", "tutor", "instructor", "educator", "professor"),
    ("school", "academy", "college", "university"),
    ("exam", "test", "quiz", "assessment"),
    ("happy", "glad", "joyful", "cheerful", "delighted"),
    ("sad", "unhappy", "sorrowful", "gloomy", "depressed"),
    ("angry", "furious", "annoyed", "irritated", "mad"),
    ("afraid", "scared", "frightened", "fearful", "anxious", "worried"),
    ("tired", "exhausted", "weary", "sleepy", "fatigued"),
    ("sleep", "slumber", "rest", "nap", "doze"),
    ("exercise", "workout", "training", "fitness"),
    ("run", "jog", "sprint"),
    ("garden", "yard", "backyard", "lawn"),
    ("plant", "flower", "shrub", "seedling"),
    ("water", "irrigate", "hydrate"),
    ("bike", "bicycle", "cycle"),
    ("road", "street", "highway", "route", "motorway"),
    ("price", "cost", "fee", "charge", "rate"),
    ("discount", "sale", "deal", "bargain", "reduction"),
    ("store", "shop", "retailer", "outlet", "boutique"),
    ("clothes", "clothing", "apparel", "garments", "outfit"),
    ("shoe", "sneaker", "boot", "footwear"),
    ("music", "song", "tune", "melody"),
    ("movie", "film", "picture", "cinema"),
    ("game", "match", "contest"),
    ("team", "squad", "crew", "group"),
    ("friend", "buddy", "pal", "companion"),
    ("wedding", "marriage", "nuptials"),
    ("gift", "present", "donation"),
    ("party", "celebration", "festivity", "gathering"),
    ("database", "datastore", "db"),
    ("server", "host", "backend"),
    ("website", "site", "webpage", "homepage"),
    ("code", "program", "software", "script", "source"),
    ("slowdown", "latency", "delay", "lag"),
    ("crash", "freeze", "hang"),
    ("install", "setup", "deploy"),
    ("secure", "safe", "protected"),
    ("attack", "breach", "intrusion", "hack"),
    ("invoice", "bill", "receipt", "statement"),
    ("tax", "levy", "duty", "tariff"),
    ("loan", "mortgage", "credit", "borrowing"),
    ("bank", "lender"),
    ("insurance", "coverage", "policy"),
    ("lawyer", "attorney", "solicitor", "counsel"),
    ("contract", "agreement", "deal"),
    ("car_repair", "mechanic", "garage"),
    ("vegetable", "veggie", "greens", "produce"),
    ("fruit", "berry", "apple", "banana"),
    ("coffee", "espresso", "latte", "cappuccino"),
    ("tea", "chai", "infusion"),
    ("beer", "ale", "lager"),
    ("wine", "vino", "champagne"),
    ("ocean", "sea", "marine"),
    ("beach", "shore", "coast", "seaside"),
    ("mountain", "peak", "summit", "hill"),
    ("forest", "woods", "woodland", "jungle"),
    ("river", "stream", "creek", "brook"),
    ("hotel", "inn", "lodging", "motel", "accommodation"),
    ("ticket", "pass", "voucher", "booking", "reservation"),
    ("luggage", "baggage", "suitcase", "bag"),
    ("passport", "visa"),
    ("photo", "photograph", "image", "picture", "snapshot"),
    ("camera", "webcam"),
    ("paint", "painting", "artwork", "canvas"),
    ("noise", "sound", "racket", "din"),
    ("quiet", "silent", "calm", "peaceful"),
    ("clean", "tidy", "wash", "scrub"),
    ("dirty", "filthy", "messy", "grimy"),
    ("broken", "damaged", "busted", "faulty", "cracked"),
    ("new", "fresh", "novel", "recent"),
    ("old", "ancient", "aged", "elderly", "vintage"),
    ("rich", "wealthy", "affluent", "prosperous"),
    ("poor", "impoverished", "broke", "needy"),
    ("smart", "clever", "intelligent", "bright"),
    ("easy", "simple", "straightforward", "effortless"),
    ("hard", "difficult", "tough", "challenging"),
    ("important", "crucial", "vital", "essential", "key"),
    ("idea", "concept", "notion", "thought"),
    ("problem", "issue", "trouble", "difficulty"),
    ("goal", "objective", "aim", "target"),
    ("increase", "raise", "boost", "grow", "rise"),
    ("decrease", "reduce", "lower", "cut", "shrink"),
    ("weight", "heaviness", "mass"),
    ("diet", "nutrition", "eating"),
    ("heart", "cardiac", "cardiovascular"),
    ("tooth", "teeth", "dental", "dentist"),
    ("eye", "vision", "sight", "optical"),
    ("skin", "dermal", "complexion"),
    ("hair", "haircut", "hairstyle"),
    ("baby", "infant", "newborn"),
    ("parent", "mother", "father", "mom", "dad"),
    ("neighbor", "neighbour"),
    ("rent", "lease", "tenancy"),
    ("furniture", "sofa", "couch", "chair", "table"),
    ("kitchen", "cookhouse", "galley"),
    ("fridge", "refrigerator", "freezer"),
    ("stove", "oven", "cooker"),
    ("wifi", "wireless", "internet", "network", "connectivity"),
    ("printer", "printing"),
    ("upgrade", "improve", "enhance"),
    ("backup", "copy", "snapshot", "archive"),
    ("translate", "translation", "interpret"),
    ("language", "tongue", "dialect"),
    ("history", "past", "heritage"),
    ("war", "conflict", "battle", "combat"),
    ("election", "vote", "ballot", "poll"),
    ("government", "state", "administration", "authorities"),
    ("law", "legislation", "statute", "regulation", "rule"),
    ("sport", "athletics", "sports"),
    ("football", "soccer"),
    ("injury", "wound", "trauma"),
    ("hospital", "clinic", "infirmary"),
)

STOP_WORDS = frozenset(
    """a an the and or but if then else of to in on at by for with about from into over under is are was were be
    been being am do does did done have has had having i me my we our you your he she it its they them their this
    that these those what which who whom how why when where can could should would will shall may might must not
    no nor so too very just also any all some each every more most other such only own same than up down out off
    again further once here there both few s t don now get got as""".split()
)


def stem(word: str) -> str:
    """A light suffix stripper (plurals, -ing, -ed): enough to match "cars" to "car"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _concepts() -> dict[str, str]:
    found: dict[str, str] = {}
    for group in SYNONYMS:
        for word in group:
            found.setdefault(stem(word), group[0])  # a word in two groups keeps its first
    return found


CONCEPTS = _concepts()


def features(text: str) -> Counter[str]:
    counted: Counter[str] = Counter()
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS:
            continue
        stemmed = stem(word)
        concept = CONCEPTS.get(stemmed)
        counted["c:" + concept if concept is not None else "w:" + stemmed] += 1
    return counted


@functools.lru_cache(maxsize=65_536)
def _direction(feature: str, dimensions: int) -> tuple[float, ...]:
    """A pseudo-random unit vector per feature (random indexing): two features are nearly orthogonal (cosine about
    ±1/sqrt(dimensions)) but never exactly, as with a real model's dense vectors, which HNSW's graph needs to be
    navigable (exact orthogonality everywhere leaves it plateaus of equal distances)."""
    rng = random.Random(hashlib.blake2b(feature.encode(), digest_size=8).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values))
    return tuple(v / norm for v in values)


def concept_vector(text: str, dimensions: int) -> list[float] | None:
    """The text's vector, or None when it has no word to embed (only stop words, punctuation)."""
    counted = features(text)
    if not counted:
        return None
    vector = [0.0] * dimensions
    for feature, count in counted.items():
        weight = 1.0 + math.log(count)
        for i, v in enumerate(_direction(feature, dimensions)):
            vector[i] += weight * v
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]
