"""`echo`: no network. Streams a deterministic reply word by word and reports token usage.

The reply is `echo: ` followed by the content of the run's message (the last prompt message). Each
word (with its trailing whitespace) is one delta and counts as one completion token; prompt tokens
are the approximate count of the prompt (see `threadline.runs.context`). The delay between words is
`THREADLINE_ECHO_DELAY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from threadline.runs.context import prompt_tokens
from threadline.runs.providers.base import CompletionRequest, Finish

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
        words = echo_words(echo_reply(last))
        for word in words:
            await asyncio.sleep(self.delay)  # sleep(0) still lets the flusher run
            yield word
        yield Finish("stop", prompt_tokens(request.messages), len(words))

    async def close(self) -> None:
        return None
