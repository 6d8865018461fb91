"""The Threadline export copies fenced code blocks into `artifacts.code_files`: a message of many opening lines and
no closing one is read in one pass, however large, and the blocks found are those a fence means."""

from __future__ import annotations

from tests.api import create_conversation, start_thread
from tests.harness import Actor
from threadline.porting.threadline_format import fenced_blocks

EXPORT = "query($c: ID!) { conversationExport(id: $c) }"


def test_a_message_of_opening_fences_without_a_closing_one_exports_at_once(admin: Actor) -> None:
    conversation_id = create_conversation(admin)
    flood = "```a\n" * 200_000  # 1,000,000 bytes: within THREADLINE_MESSAGE_MAX_BYTES
    start_thread(admin, conversation_id, flood + "```py app.py\nprint(1)")
    # Before the fix a lazy regular expression looked for a closing line from each of the 200,000 opening lines:
    # about 40 minutes of the server's CPU (32,000 lines: 62 s), so this request timed out.
    document = admin.client.ok(EXPORT, {"c": conversation_id})["conversationExport"]
    assert document["artifacts"]["code_files"] == []
    start_thread(admin, conversation_id, flood + "```")
    document = admin.client.ok(EXPORT, {"c": conversation_id})["conversationExport"]
    (found,) = document["artifacts"]["code_files"]
    assert (found["filename"], found["language"], found["content"]) == ("snippet-1.txt", "a", flood[5:])


def test_fenced_blocks_are_found_as_a_fence_means_them() -> None:
    text = "intro\n  ```python app.py\nprint(1)\n```\nbetween\n```\n```\n````\nnot\n````\n```a`b\n\t```sh \nls\n  ```  "
    assert list(fenced_blocks(text)) == [
        ("python app.py", "print(1)\n"),
        ("", ""),
        ("sh ", "ls\n"),
    ]
    assert list(fenced_blocks("```py\nno closing line")) == []
    assert list(fenced_blocks("```")) == []
