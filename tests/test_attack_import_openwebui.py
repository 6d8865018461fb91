"""Open WebUI chats whose text holds `<details>` blocks a hostile file shapes to make reading them slow: each
block's attributes are read in one pass, whatever the block's opening tag holds."""

from __future__ import annotations

from typing import Any

from tests.harness import Actor

REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported failed warnings conversations { id } } }"""
MESSAGES = """query($c: ID!) { conversation(id: $c) { messages(first: 10) { edges { node { role content
  parts { __typename ... on ReasoningPart { text } ... on TextPart { text } } } } } } }"""


def chat(chat_id: str, content: str) -> dict[str, Any]:
    message = {"id": "m1", "parentId": None, "childrenIds": [], "role": "assistant", "content": content}
    return {
        "id": chat_id,
        "title": chat_id,
        "chat": {"history": {"messages": {"m1": message}, "currentId": "m1"}},
    }


def test_a_details_tag_holding_a_megabyte_name_without_a_value_is_read_at_once(admin: Actor) -> None:
    name = "a" * 1_000_000
    data = [
        chat("owu-long-name", f"<details {name}>kept</details>"),
        chat("owu-typed", f'<details {name} type="reasoning">\n> thought\n</details>\nanswer'),
    ]
    # Before the fix the attribute pattern was tried again from each letter of the name: 40,000 letters took 10 s,
    # this request hours of the server's CPU (holding the GIL), so it never returned.
    r = admin.client.ok(REPORT, {"i": {"format": "OPENWEBUI", "data": data}})["conversationImportReport"]
    assert (r["imported"], r["failed"], r["warnings"]) == (2, 0, [])
    plain, typed = (
        admin.client.ok(MESSAGES, {"c": c["id"]})["conversation"]["messages"]["edges"][0]["node"]
        for c in r["conversations"]
    )
    assert plain["content"] == f"<details {name}>kept</details>"
    assert typed["parts"] == [
        {"__typename": "ReasoningPart", "text": "thought"},
        {"__typename": "TextPart", "text": "answer"},
    ]


def test_a_tool_result_nested_past_the_json_decoders_recursion_is_kept_as_its_text(admin: Actor) -> None:
    nested = "[" * 100_000  # in an attribute: text to the API, whatever it nests
    content = (
        f'<details type="tool_calls" done="true" id="c1" name="probe" arguments="{{}}" result="{nested}">'
        + ("</details>\nafter")
    )
    r = admin.client.ok(REPORT, {"i": {"format": "OPENWEBUI", "data": [chat("owu-nested", content)]}})
    # Before the fix: "could not be read: RecursionError: maximum recursion depth exceeded ...", the chat refused.
    assert (r["conversationImportReport"]["imported"], r["conversationImportReport"]["failed"]) == (1, 0)
    (conversation,) = r["conversationImportReport"]["conversations"]
    node = admin.client.ok(MESSAGES, {"c": conversation["id"]})["conversation"]["messages"]["edges"][0][
        "node"
    ]
    assert [p["__typename"] for p in node["parts"]] == ["ToolCallPart", "ToolResultPart", "TextPart"]
