"""Search arguments are bounded: an over-long filter is BAD_USER_INPUT naming its limit (before any SQL runs), and a
query's words past the 32nd are ignored however they are separated."""

from __future__ import annotations

from typing import Any

from tests.api import create_conversation, start_thread
from tests.harness import Actor

SEARCH = """query($i: ConversationSearchInput!) { search(input: $i) {
  totalCount edges { node { conversation { id aiProvider } } } } }"""
MATCHED = """query($i: ConversationSearchInput!) { search(input: $i) {
  edges { node { matchedBy conversation { id } } } } }"""


def found(actor: Actor, **input: Any) -> list[str]:
    return [e["node"]["conversation"]["id"] for e in actor.client.ok(SEARCH, {"i": input})["search"]["edges"]]


def test_ai_provider_filter_is_bounded_as_conversation_create_bounds_it(admin: Actor) -> None:
    provider = "p" * 64  # the longest a conversation may carry
    wanted = create_conversation(admin, "at the limit", aiProvider=provider)
    create_conversation(admin, "other", aiProvider="echo")

    assert found(admin, aiProvider=provider) == [wanted]
    assert found(admin, aiProvider=f"  {provider.upper()}  ") == [wanted]  # trimmed, case ignored
    assert found(admin, query="limit", aiProvider=provider) == [wanted]

    for too_long in ("p" * 65, "p" * 4_000_000):
        error = admin.client.error(SEARCH, {"i": {"aiProvider": too_long}})
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "aiProvider", "limit": 64}
        assert error["message"] == f"aiProvider is limited to 64 characters (got {len(too_long)})"
        assert admin.client.error(SEARCH, {"i": {"query": "limit", "aiProvider": too_long}})["extensions"][
            "code"
        ] == ("BAD_USER_INPUT")


def test_words_after_the_32nd_are_ignored_also_when_not_separated_by_spaces(admin: Actor) -> None:
    # Each run of letters and digits is a word of the query (a lexeme of its tsquery): 1,800 of them joined by
    # commas made one phrase that cost tens of milliseconds per matching message.
    words = [f"w{i}" for i in range(40)]
    conversation = create_conversation(admin, "Words")
    start_thread(admin, conversation, " ".join(words))

    def matched(query: str) -> list[tuple[str, str]]:
        edges = admin.client.ok(MATCHED, {"i": {"query": query}})["search"]["edges"]
        return [(e["node"]["conversation"]["id"], e["node"]["matchedBy"]) for e in edges]

    assert matched(",".join(words[:32])) == [(conversation, "TEXT")]
    for separator in (",", ";", "+", "²", "①", ", "):
        assert matched(separator.join([*words[:32], "zzzunknownzzz"])) == [(conversation, "TEXT")], separator
    assert matched(" ".join(words[:16]) + " " + ",".join([*words[16:32], "zzzunknownzzz"])) == [
        (conversation, "TEXT")
    ]
    # The 32nd word still counts: a phrase of 32 words, the last one unknown, matches nothing exactly.
    assert matched(",".join([*words[:31], "zzzunknownzzz"])) == []


def test_combining_marks_are_part_of_a_word_so_ordinary_queries_in_hindi_or_arabic_are_not_cut(
    admin: Actor,
) -> None:
    # Vowel signs, viramas and harakat are combining marks, inside a lexeme for the text search parser: counted as
    # separators they made 13 vocalised Arabic words 37 "words", cut inside the tenth, and 20 Hindi words 33.
    arabic = "كَتَبَ الطَّالِبُ دَرْسَهُ فِي الْمَكْتَبَةِ الْكَبِيرَةِ بَعْدَ الظُّهْرِ ثُمَّ رَجَعَ إِلَى بَيْتِهِ مَسْرُورًا"
    hindi = "हिन्दी भाषा में लिखी गई पुरानी कहानियाँ आज भी बच्चों को बहुत पसंद आती हैं क्योंकि उनमें सीख होती है"
    conversation = create_conversation(admin, "Marks")
    start_thread(admin, conversation, arabic)
    start_thread(admin, conversation, hindi)
    other = create_conversation(admin, "Marks, shorter")
    start_thread(admin, other, arabic.rsplit(" ", 3)[0])
    start_thread(admin, other, hindi.rsplit(" ", 3)[0])

    def matched(query: str) -> list[tuple[str, str]]:
        edges = admin.client.ok(MATCHED, {"i": {"query": query}})["search"]["edges"]
        return [(e["node"]["conversation"]["id"], e["node"]["matchedBy"]) for e in edges]

    assert matched(arabic) == [(conversation, "TEXT")]
    assert matched(hindi) == [(conversation, "TEXT")]
    assert matched(f'"{hindi}"') == [(conversation, "TEXT")]


def test_letters_joined_by_a_mark_the_parser_splits_at_are_still_bounded(admin: Actor) -> None:
    # U+302E (a Hangul tone mark) is a combining mark the parser splits a lexeme at: the runs of letters and digits
    # it joins are cut after the 128th, so it cannot make the 1,800-word phrase the word cut is there to refuse.
    words = [f"w{i}" for i in range(140)]
    conversation = create_conversation(admin, "Pieces")
    start_thread(admin, conversation, " ".join(words))

    def matched(query: str) -> list[tuple[str, str]]:
        edges = admin.client.ok(MATCHED, {"i": {"query": query}})["search"]["edges"]
        return [(e["node"]["conversation"]["id"], e["node"]["matchedBy"]) for e in edges]

    assert matched("\u302e".join([*words[:128], "zzzunknownzzz"])) == [(conversation, "TEXT")]
    assert matched("\u302e".join([*words[:127], "zzzunknownzzz"])) == []
