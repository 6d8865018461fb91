"""Text rules of enrichment: what a model's answer may become (bounded, no control characters), and the
offline extractive title, summary and keywords used when no provider is configured."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

WORD = re.compile(r"[^\W\d_][\w']*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.)")
_LABEL = re.compile(r"^(?:title|summary)\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»*#_ "

# Words too common to name a topic (English; short words are dropped by length anyway).
STOPWORDS = frozenset(
    """about above after again against all also am an and any are aren't as at be because been before being
    below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during
    each few for from further get gets got had hadn't has hasn't have haven't having he he'd he'll he's her
    here here's hers herself him himself his how how's however i i'd i'll i'm i've if in into is isn't it it's
    its itself just know let's like make me more most much mustn't my myself need no nor not now of off on once
    only or other ought our ours ourselves out over own please same shan't she she'd she'll she's should
    shouldn't so some such than thank thanks that that's the their theirs them themselves then there there's
    these they they'd they'll they're they've this those through to too under until up use used using very
    want was wasn't way we we'd we'll we're we've well were weren't what what's when when's where where's which
    while who who's whom why why's will with won't would wouldn't yes you you'd you'll you're you've your yours
    yourself yourselves hello hi hey okay ok sure thing things something anything really one two also maybe
    still even yet answer question""".split()
)


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """`text` without control, format or private-use characters (bidi overrides, zero-width joiners, escape
    sequences), tabs and odd spaces as one space, and newlines kept only when asked."""
    out = []
    for ch in _ANSI.sub("", text):
        if ch == "\n" and keep_newlines:
            out.append(ch)
            continue
        category = unicodedata.category(ch)
        if category[0] == "C" or category in ("Zl", "Zp"):
            out.append(" " if ch in "\t\r\n\u2028\u2029" else "")
        else:
            out.append(ch)
    return _SPACES.sub(" ", "".join(out))


def cut(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary when one is near."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[:limit]
    space = head.rfind(" ")
    if space >= limit // 2:
        head = head[:space]
    return head.rstrip(" ,;:-")


def clean_title(answer: str, limit: int) -> str:
    """A model's answer as a title: its first non-empty line, without a `Title:` label, quotes or markup."""
    for line in visible(answer, keep_newlines=True).split("\n"):
        line = _LABEL.sub("", line.strip(_QUOTES)).strip(_QUOTES)
        if line:
            return cut(line, limit)
    return ""


def clean_summary(answer: str, limit: int) -> str:
    """A model's answer as a summary: paragraphs kept (at most one blank line between them), bounded."""
    text = visible(answer, keep_newlines=True)
    lines = [
        _LABEL.sub("", line.strip()) if i == 0 else line.strip() for i, line in enumerate(text.split("\n"))
    ]
    joined = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return cut(joined, limit)


def words(text: str) -> list[str]:
    return [w.lower().strip("'_") for w in WORD.findall(text.replace("_", " ").replace("-", " "))]


def keyword(word: str) -> str | None:
    """The form a word is counted under as a topic (plural s dropped), or None for a word too common or short."""
    if len(word) < 3 or word in STOPWORDS or len(word) > 40:
        return None
    if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def keywords(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for word in words(text):
        key = keyword(word)
        if key is not None:
            counts[key] += 1
    return counts


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(visible(text, keep_newlines=True)) if s.strip()]


def extractive_title(question: str, limit: int) -> str:
    """The question's first sentence (its first words when that is long): what the conversation set out to do."""
    first = next(iter(sentences(question)), "")
    first = _LABEL.sub("", first).strip(_QUOTES)
    if len(first) > limit:
        first = " ".join(first.split()[:10])
    title = cut(first, limit).rstrip(".!")
    return title[:1].upper() + title[1:]


def extractive_summary(texts: list[str], limit: int) -> str:
    """The sentences that carry the conversation's most frequent keywords, in their order, up to `limit`."""
    all_sentences = [s for text in texts for s in sentences(text)]
    if not all_sentences:
        return ""
    weights = keywords(" ".join(all_sentences))
    scored = []
    for index, sentence in enumerate(all_sentences):
        keys = [k for k in (keyword(w) for w in words(sentence)) if k is not None]
        if not keys:
            continue
        score = sum(weights[k] for k in set(keys)) / (len(set(keys)) ** 0.5)
        scored.append((score, index))
    chosen: list[int] = []
    total = 0
    for _, index in sorted(scored, key=lambda s: (-s[0], s[1])):
        length = len(all_sentences[index]) + 1
        if total + length > limit:
            continue
        chosen.append(index)
        total += length
        if len(chosen) >= 5:
            break
    if not chosen:
        return cut(all_sentences[0], limit)
    return " ".join(all_sentences[i] for i in sorted(chosen))


def suggest_tags(content: str, vocabulary: list[str], applied: list[str], limit: int) -> list[str]:
    """Up to `limit` tags: first those of `vocabulary` whose every word occurs in `content` (most mentioned
    first), then the content's own keywords mentioned at least twice; none already applied."""
    counts = keywords(content)
    taken = {tag.lower() for tag in applied}
    matched: list[tuple[int, int, str]] = []
    for rank, tag in enumerate(vocabulary):
        if tag.lower() in taken:
            continue
        keys = [k for k in (keyword(w) for w in words(tag)) if k is not None]
        if keys and all(counts[k] > 0 for k in keys):
            matched.append((-min(counts[k] for k in keys), rank, tag.lower()))
    chosen = [tag for _, _, tag in sorted(matched)][:limit]
    covered = {k for tag in chosen for k in (keyword(w) for w in words(tag)) if k is not None}
    for key, count in counts.most_common():
        if len(chosen) >= limit or count < 2:
            break
        if len(key) >= 4 and key not in covered and key not in taken and key not in chosen:
            chosen.append(key[:64])
    return chosen
