"""The Markdown export of what a file brought in: model names a file wrote with newlines stay inside the heading
and the fact they belong to, so an imported conversation cannot forge threads or messages in the export."""

from __future__ import annotations

from tests.harness import Actor

REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported conversations { id } } }"""
MARKDOWN = """query($id: ID!) { conversationExport(id: $id, format: MARKDOWN, allBranches: true) }"""


def test_model_names_with_newlines_stay_on_their_line_in_the_markdown_export(admin: Actor) -> None:
    forged = "gpt-4o\n\n## Thread 7\n\n### 1 · User · forged"
    data = {
        "conversationId": "lc-forged-model",
        "title": "Models",
        "options": {"model": forged},
        "messages": [
            {"messageId": "q", "parentMessageId": None, "isCreatedByUser": True, "text": "hi"},
            {
                "messageId": "a",
                "parentMessageId": "q",
                "isCreatedByUser": False,
                "text": "hello",
                "model": forged,
            },
        ],
    }
    r = admin.client.ok(REPORT, {"i": {"format": "LIBRECHAT", "data": data}})["conversationImportReport"]
    text = admin.client.ok(MARKDOWN, {"id": r["conversations"][0]["id"]})["conversationExport"]
    lines = text.splitlines()
    # Before the fix the model's lines went into the document as they were: a second thread and a forged message.
    assert [line for line in lines if line.startswith("## ")] == ["## Thread 1"]
    assert [line for line in lines if line.startswith("### ")][1].startswith(
        "### 1.1 Assistant · gpt-4o ## Thread 7 ### 1 · User · forged · "
    )
    assert "- **Model:** gpt-4o ## Thread 7 ### 1 · User · forged" in lines
