"""Builds the labelled retrieval set of bench/semantic.py: bench/retrieval_set.jsonl (committed).

    .venv/bin/python bench/retrieval_set.py          # rewrites bench/retrieval_set.jsonl (deterministic)

3,000 messages in 1,000 conversations (three messages each, on one topic) and 300 queries, each labelled with the
conversation and message it must find:

- 150 PARAPHRASE queries: every concept of the target message said with other words of its synonym group; a query
  shares no content word (no word outside the stop list, compared after the same light stemming) with its target,
  which the script checks.
- 150 EXACT queries: two of the target's own words, specific synonyms that few messages use, while dozens of
  messages of the same topic carry the same two concepts in other words.

Topics are drawn from the synonym groups of the test embedder (threadline.embeddings.concepts): each of 18 topics
owns 5 groups; a message takes 3 of its topic's concepts and one concept from a shared pool, each as a random
member of its group. So by meaning a PARAPHRASE query is unique and an EXACT query is one of many, by words the
other way round. With the test embedder the figures measure the fusion of the two lists, not a language model:
a real model would be scored on its own paraphrases (README, "Embeddings").
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from threadline.embeddings.concepts import STOP_WORDS, SYNONYMS, stem  # noqa: E402

OUT = Path(__file__).with_name("retrieval_set.jsonl")
SEED = 19
TOPICS = 18
GROUPS_PER_TOPIC = 5
CONVERSATIONS = 1_000
MESSAGES_PER_CONVERSATION = 3
QUERIES_PER_KIND = 150
JOINERS = ("and", "with", "for", "about", "the", "of", "on")


def usable_groups() -> list[tuple[str, ...]]:
    """Groups of at least four words, each word's stem in no other group and distinct within the group."""
    owners: Counter[str] = Counter(stem(w) for g in SYNONYMS for w in set(g))
    groups = []
    for group in SYNONYMS:
        words = tuple(dict.fromkeys(w for w in group if "_" not in w and w not in STOP_WORDS))
        stems = [stem(w) for w in words]
        if len(words) >= 4 and len(set(stems)) == len(stems) and all(owners[s] == 1 for s in stems):
            groups.append(words)
    return groups


def content_stems(text: str) -> set[str]:
    return {stem(w) for w in text.lower().replace(",", " ").split() if w not in STOP_WORDS}


def build() -> dict[str, list[dict[str, object]]]:
    rng = random.Random(SEED)
    groups = usable_groups()
    rng.shuffle(groups)
    topics = [groups[i * GROUPS_PER_TOPIC : (i + 1) * GROUPS_PER_TOPIC] for i in range(TOPICS)]
    pool = groups[TOPICS * GROUPS_PER_TOPIC :]
    assert len(pool) >= 10, f"only {len(pool)} groups left for the shared pool"
    messages: list[dict[str, object]] = []
    for c in range(CONVERSATIONS):
        topic = topics[c % TOPICS]
        for m in range(MESSAGES_PER_CONVERSATION):
            concepts = rng.sample(topic, 3) + [rng.choice(pool)]
            words = [rng.choice(g) for g in concepts]
            text = " ".join(f"{w} {rng.choice(JOINERS)}" for w in words[:-1]) + f" {words[-1]}"
            messages.append(
                {
                    "id": f"m{c}-{m}",
                    "conversation": f"c{c}",
                    "text": text.capitalize(),
                    "concepts": [g[0] for g in concepts],
                    "words": words,
                }
            )
    by_concepts = Counter(tuple(sorted(m["concepts"])) for m in messages)  # type: ignore[arg-type]
    word_use = Counter(w for m in messages for w in m["words"])  # type: ignore[attr-defined]
    group_of = {g[0]: g for g in groups}
    queries: list[dict[str, object]] = []
    order = list(range(len(messages)))
    rng.shuffle(order)
    for i in order:
        if len([q for q in queries if q["kind"] == "PARAPHRASE"]) >= QUERIES_PER_KIND:
            break
        target = messages[i]
        if by_concepts[tuple(sorted(target["concepts"]))] > 1:  # type: ignore[arg-type]
            continue  # the same four concepts elsewhere: a paraphrase could not single it out
        used = content_stems(str(target["text"]))
        words = []
        for concept in target["concepts"]:  # type: ignore[attr-defined]
            others = [w for w in group_of[concept] if stem(w) not in used]
            words.append(rng.choice(others))
        query = " ".join(words)
        assert not content_stems(query) & used, (query, target["text"])
        queries.append(
            {
                "kind": "PARAPHRASE",
                "query": query,
                "conversation": target["conversation"],
                "message": target["id"],
            }
        )
    rng.shuffle(order)
    for i in order:
        if len([q for q in queries if q["kind"] == "EXACT"]) >= QUERIES_PER_KIND:
            break
        target = messages[i]
        topical = target["words"][:3]  # type: ignore[index]
        pair = sorted(topical, key=lambda w: (word_use[w], w))[:2]
        holders = [m for m in messages if all(w in m["words"] for w in pair)]  # type: ignore[operator]
        if len(holders) != 1:
            continue  # keywords that do not single it out either
        queries.append(
            {
                "kind": "EXACT",
                "query": " ".join(pair),
                "conversation": target["conversation"],
                "message": target["id"],
            }
        )
    assert len(queries) == 2 * QUERIES_PER_KIND, len(queries)
    return {"messages": messages, "queries": queries}


def main() -> None:
    data = build()
    with OUT.open("w") as out:
        for message in data["messages"]:
            out.write(
                json.dumps({"type": "message", **{k: message[k] for k in ("id", "conversation", "text")}})
                + "\n"
            )
        for query in data["queries"]:
            out.write(json.dumps({"type": "query", **query}) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}: {len(data['messages'])} messages, {len(data['queries'])} queries")


if __name__ == "__main__":
    main()
