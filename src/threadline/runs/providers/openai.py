"""`openai`: any OpenAI-compatible `POST {base}/chat/completions` endpoint, streamed as server-sent events.

The request is `{"model", "messages", "stream": true, "stream_options": {"include_usage": true}}`, with
`tools` and `tool_choice` when the run has tools; streamed `delta.tool_calls` pieces are assembled by their
`index` (id and name from the first piece, arguments concatenated) and reported in the `Finish`.
Failures become ProviderError codes: PROVIDER_ERROR (a non-2xx answer or an `error` object in the
stream), PROVIDER_UNAVAILABLE (cannot connect, or the connection broke), PROVIDER_BAD_STREAM
(anything that is not a well-formed completion stream, including one that ends before it finished).
A hang is bounded by the run timeout, not here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from threadline.runs.providers.base import CompletionRequest, Finish, ProviderError, ToolCall

_SSE_FIELDS = ("data:", "event:", "id:", "retry:", ":")


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        models: tuple[str, ...],
        default_model: str,
        connect_timeout: float,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self._models = frozenset(models) | {default_model}
        self._default = default_model
        # No read timeout: a slow stream is legitimate, and the run timeout bounds a hang.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=connect_timeout))

    def models(self) -> frozenset[str]:
        return self._models

    def default_model(self) -> str:
        return self._default

    async def close(self) -> None:
        await self.client.aclose()

    def body(self, request: CompletionRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [m.as_dict() for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        return body

    async def stream(self, request: CompletionRequest) -> AsyncIterator[str | Finish]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            async with self.client.stream(
                "POST", self.url, json=self.body(request), headers=headers
            ) as response:
                if response.status_code // 100 != 2:
                    detail = (await response.aread())[:300].decode("utf-8", errors="replace")
                    raise ProviderError(
                        "PROVIDER_ERROR", f"The provider answered HTTP {response.status_code}: {detail}"
                    )
                async for item in _completion_events(response.aiter_lines()):
                    yield item
        except httpx.TransportError as exc:
            raise ProviderError(
                "PROVIDER_UNAVAILABLE", f"Cannot reach the provider: {type(exc).__name__}"
            ) from exc


async def _completion_events(lines: AsyncIterator[str]) -> AsyncIterator[str | Finish]:
    reason: str | None = None
    usage: dict[str, Any] | None = None
    calls = _ToolCalls()
    async for line in lines:
        if not line or line.startswith(":"):
            continue
        if not line.startswith(_SSE_FIELDS):
            raise ProviderError("PROVIDER_BAD_STREAM", f"Not a server-sent event line: {line[:80]!r}")
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield _finish(reason or "stop", usage, calls)
            return
        chunk = _json(data)
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise ProviderError("PROVIDER_ERROR", f"The provider reported an error: {message}")
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise ProviderError("PROVIDER_BAD_STREAM", "`choices` is not a list")
        for choice in choices[:1]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is not None and not isinstance(content, str):
                raise ProviderError("PROVIDER_BAD_STREAM", "`delta.content` is not a string")
            if content:
                yield content
            if isinstance(delta, dict) and delta.get("tool_calls") is not None:
                calls.add(delta["tool_calls"])
            if choice.get("finish_reason"):
                reason = str(choice["finish_reason"])
    if reason is None:
        raise ProviderError("PROVIDER_BAD_STREAM", "The stream ended before the completion finished")
    yield _finish(reason, usage, calls)


class _ToolCalls:
    """Tool calls assembled from streamed pieces: `{index, id?, type?, function: {name?, arguments?}}`."""

    def __init__(self) -> None:
        self.by_index: dict[int, dict[str, str]] = {}

    def add(self, pieces: Any) -> None:
        if not isinstance(pieces, list):
            raise ProviderError("PROVIDER_BAD_STREAM", "`delta.tool_calls` is not a list")
        for piece in pieces:
            index = piece.get("index") if isinstance(piece, dict) else None
            if not isinstance(index, int) or isinstance(index, bool):
                raise ProviderError("PROVIDER_BAD_STREAM", "a tool call piece has no integer `index`")
            call = self.by_index.setdefault(index, {"id": "", "name": "", "arguments": ""})
            function = piece.get("function") if isinstance(piece.get("function"), dict) else {}
            for key, value in (("id", piece.get("id")), ("name", function.get("name"))):
                if isinstance(value, str) and value:
                    call[key] = value
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call["arguments"] += arguments

    def done(self) -> tuple[ToolCall, ...]:
        calls = []
        for index in sorted(self.by_index):
            call = self.by_index[index]
            if not call["id"] or not call["name"]:
                raise ProviderError("PROVIDER_BAD_STREAM", f"tool call {index} has no id or no name")
            calls.append(ToolCall(call["id"], call["name"], call["arguments"] or "{}"))
        return tuple(calls)


def _json(data: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            # The standard library also reads a lone surrogate ("\ud800": orjson refuses it): the run stores it as
            # U+FFFD (runs.execution) rather than failing on one broken character.
            value = json.loads(data)
        except (ValueError, RecursionError):
            raise ProviderError(
                "PROVIDER_BAD_STREAM", f"Malformed JSON in the stream: {data[:80]!r}"
            ) from exc
    if not isinstance(value, dict):
        raise ProviderError("PROVIDER_BAD_STREAM", "A stream event is not a JSON object")
    return value


def _finish(reason: str, usage: dict[str, Any] | None, calls: _ToolCalls) -> Finish:
    def count(key: str) -> int | None:
        value = usage.get(key) if usage else None
        return value if isinstance(value, int) and value >= 0 else None

    return Finish(reason, count("prompt_tokens"), count("completion_tokens"), calls.done())
