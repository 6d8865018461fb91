"""What every provider offers the worker: a stream of text deltas ending with a `Finish`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from threadline.runs.context import ChatMessage


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: list[ChatMessage]


@dataclass(frozen=True)
class Finish:
    """The end of a stream. `reason` is OpenAI's finish_reason (stop, length, content_filter, ...);
    token counts are None when the provider did not report them."""

    reason: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ProviderError(Exception):
    """A provider failed; `code` becomes the run's lastError.code and the error event's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Provider(Protocol):
    name: str

    def models(self) -> frozenset[str]: ...

    def default_model(self) -> str: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[str | Finish]:
        """Text deltas in order, then exactly one Finish; raises ProviderError on failure."""
        ...

    async def close(self) -> None: ...
