"""`echo`: no network. Streams a deterministic reply word by word and reports token usage.

The reply is `echo: ` followed by the content of the run's message (the last prompt message). Each
word (with its trailing whitespace) is one delta and counts as one completion token; prompt tokens
are the approximate count of the prompt (see `threadline.runs.context`). The delay between words is
`THREADLINE_ECHO_DELAY_SECONDS`.

Tool mode (deterministic, for tests and demos): when the run has tools and `tool_choice` is not "none", a
prompt ending with a user message gets no text but one call of the first tool (or the one `tool_choice`
names), with id `call_echo_<number of prompt messages>` and arguments `{"input": <that message>}`; a prompt
ending with tool results gets `echo: ` and the results' outputs joined by a space, and finishes (unless
`tool_choice` is "required" or names a tool, which calls again).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from threadline.runs.context import prompt_tokens
from threadline.runs.providers.base import CompletionRequest, Finish, ToolCall

MODEL = "echo"
_WORDS = re.compile(r"\s*\S+\s*")


def echo_reply(prompt_last: str) -> str:
    return f"echo: {prompt_last}"


def echo_words(text: str) -> list[str]:
    """The deltas of a reply: words with their trailing whitespace (leading whitespace stays with the first)."""
    return _WORDS.findall(text)


class EchoProvider:
    name = "echo"

    def __init__(self, delay_seconds: float) -> None:
        self.delay = delay_seconds

    def models(self) -> frozenset[str]:
        return frozenset({MODEL})

    def default_model(self) -> str:
        return MODEL

    async def stream(self, request: CompletionRequest) -> AsyncIterator[str | Finish]:
        last = request.messages[-1].content if request.messages else ""
        call = tool_call(request)
        if call is not None:
            await asyncio.sleep(self.delay)
            yield Finish("tool_calls", prompt_tokens(request.messages), 1, (call,))
            return
        results = _trailing_results(request)
        if results:
            last = " ".join(results)
        words = echo_words(echo_reply(last))
        for word in words:
            await asyncio.sleep(self.delay)  # sleep(0) still lets the flusher run
            yield word
        yield Finish("stop", prompt_tokens(request.messages), len(words))

    async def close(self) -> None:
        return None


def tool_call(request: CompletionRequest) -> ToolCall | None:
    """The call echo's tool mode makes for this prompt, if any."""
    if not request.tools or request.tool_choice == "none" or not request.messages:
        return None
    forced = _forced_name(request.tool_choice)
    if _trailing_results(request) and forced is None and request.tool_choice != "required":
        return None
    name = forced or _tool_name(request.tools[0])
    last = request.messages[-1].content
    return ToolCall(f"call_echo_{len(request.messages)}", name, json.dumps({"input": last}))


def _trailing_results(request: CompletionRequest) -> list[str]:
    results: list[str] = []
    for message in reversed(request.messages):
        if message.tool_call_id is None:
            break
        results.insert(0, message.content)
    return results


def _forced_name(choice: Any) -> str | None:
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        return name if isinstance(name, str) else None
    return None


def _tool_name(tool: dict[str, Any]) -> str:
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else "tool"
