"""What every provider offers the worker: a stream of text deltas ending with a `Finish` (which carries the
tool calls the model made, assembled from the stream)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from threadline.runs.context import ChatMessage


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: list[ChatMessage]
    # OpenAI function tools (`RunCreateInput.tools`) and `tool_choice`, passed through; None: no tools.
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for: `arguments` is the JSON text it wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Finish:
    """The end of a stream. `reason` is OpenAI's finish_reason (stop, length, content_filter, ...);
    token counts are None when the provider did not report them."""

    reason: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()


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
