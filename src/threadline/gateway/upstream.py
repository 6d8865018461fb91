"""The models behind the gateway and their streams, as OpenAI `chat.completion.chunk` objects.

A model name picks the run provider that serves it (`threadline.runs.providers.catalogue`): `echo`, or a model
of the OpenAI-compatible endpoint. The endpoint's chunks are passed on as they come (tool-call deltas, logprobs
and all), so a client sees what it would see calling the endpoint itself; `echo` streams its words as chunks.
The upstream is always asked for a stream with usage, whatever the client asked: the gateway stores deltas as
they arrive and records the reported usage.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from threadline.errors import ErrorCode, ThreadlineError
from threadline.gateway.errors import UpstreamRefused
from threadline.gateway.request import text_of
from threadline.parts import model as parts
from threadline.runs.context import ChatMessage
from threadline.runs.providers import NAMES, CompletionRequest, Finish, Provider, ProviderError, catalogue
from threadline.runs.providers.openai import OpenAIProvider
from threadline.settings import Settings

ERROR_BODY_MAX_BYTES = 64 * 1024
LINE_MAX_BYTES = 16 * 1024 * 1024
# Upstream refusals about the operator's account (its key, its organisation's or project's permissions), not about
# the request: never passed on (their text names the operator's organisation, project or key).
OPERATORS_STATUSES = frozenset(
    {401, 403}
)  # one event of a stream; beyond it the stream is not a chat completion


def provider_of(settings: Settings, model: str) -> str:
    """The provider serving `model`; 404 model_not_found like OpenAI for any other name."""
    for name in NAMES:
        known = catalogue(settings, name)
        if known is not None and model in known[0]:
            return name
    raise ThreadlineError(
        ErrorCode.NOT_FOUND,
        f"The model `{model[:128]}` does not exist or you do not have access to it.",
        openaiCode="model_not_found",
        param="model",
    )


def model_list(settings: Settings) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in NAMES:
        known = catalogue(settings, name)
        if known is not None:
            out.extend(
                {"id": model, "object": "model", "created": 0, "owned_by": name} for model in sorted(known[0])
            )
    return out


def upstream_body(body: dict[str, Any], model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    given = body.get("stream_options")
    options: dict[str, Any] = given if isinstance(given, dict) else {}
    return {
        **body,
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {**options, "include_usage": True},
    }


Batch = list[dict[str, Any]]


def chunks(provider: Provider, body: dict[str, Any]) -> AsyncGenerator[Batch, None]:
    """The completion's chunks, in batches: those that arrived together (one network read), so the gateway
    passes them on in one write; UpstreamRefused (before the first) when the model refused the request,
    ProviderError when the stream broke afterwards (after the chunks that came before the failure)."""
    if isinstance(provider, OpenAIProvider):
        return _endpoint_chunks(provider, body)
    return _provider_chunks(provider, body)


async def _endpoint_chunks(provider: OpenAIProvider, body: dict[str, Any]) -> AsyncGenerator[Batch, None]:
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    try:
        async with provider.client.stream(
            "POST", provider.url, content=orjson.dumps(body), headers=headers
        ) as response:
            if response.status_code // 100 != 2:
                raise await _refusal(response)
            events = _Events()
            async for data in response.aiter_bytes():
                batch, failure = events.feed(data)
                if batch:
                    yield batch
                if failure is not None:
                    raise failure
                if events.done:
                    return
            if not events.finished:
                raise ProviderError("PROVIDER_BAD_STREAM", "The stream ended before the completion finished")
    except httpx.TransportError as exc:
        raise ProviderError(
            "PROVIDER_UNAVAILABLE", f"Cannot reach the provider: {type(exc).__name__}"
        ) from exc


class _Events:
    """Server-sent events read from network reads of any size: the chunks of each read's complete lines."""

    def __init__(self) -> None:
        self.tail = b""
        self.finished = False  # a choice said its finish_reason
        self.done = False  # `data: [DONE]`

    def feed(self, data: bytes) -> tuple[Batch, ProviderError | None]:
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        if len(self.tail) > LINE_MAX_BYTES:
            return [], ProviderError("PROVIDER_BAD_STREAM", "A stream line is too long")
        batch: Batch = []
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line.startswith(b"data:"):
                continue  # comments, event names, blank separators
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                break
            try:
                chunk = _chunk(payload)
            except ProviderError as exc:
                return batch, exc
            if "error" in chunk:
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else str(error)
                return batch, ProviderError("PROVIDER_ERROR", f"The provider reported an error: {message}")
            self.finished = self.finished or any(
                isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ()
            )
            batch.append(chunk)
        return batch, None


async def _refusal(response: httpx.Response) -> UpstreamRefused:
    raw = b""
    async for part in response.aiter_bytes():
        raw += part
        if len(raw) > ERROR_BODY_MAX_BYTES:
            break
    error: dict[str, Any] | None = None
    try:
        value = orjson.loads(raw)
        if isinstance(value, dict) and isinstance(value.get("error"), dict):
            error = value["error"]
    except orjson.JSONDecodeError:
        pass
    if response.status_code == 429:
        # The operator's quota, shared by every tenant: OpenAI's text names the organisation and what all of them
        # used. Still a 429, which the SDKs retry.
        return UpstreamRefused(
            429,
            {
                "message": "The model's provider is rate limiting this server; retry later",
                "type": "rate_limit_error",
                "param": None,
                "code": "upstream_rate_limited",
            },
        )
    if (
        response.status_code // 100 == 4
        and response.status_code not in OPERATORS_STATUSES
        and error is not None
    ):
        return UpstreamRefused(response.status_code, error)
    # The endpoint's own credentials, permissions or failures are the operator's business, not the caller's.
    return UpstreamRefused(
        502,
        {
            "message": f"The model's provider answered HTTP {response.status_code}",
            "type": "server_error",
            "param": None,
            "code": "upstream_error",
        },
    )


def _chunk(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProviderError("PROVIDER_BAD_STREAM", f"Malformed JSON in the stream: {data[:80]!r}") from exc
    if not isinstance(value, dict):
        raise ProviderError("PROVIDER_BAD_STREAM", "A stream event is not a JSON object")
    return value


def _chat_message(message: dict[str, Any]) -> ChatMessage:
    """An OpenAI message as a run provider takes it (text, tool calls, the call a tool result answers)."""
    calls = tuple(
        parts.tool_call_part(
            id=str(c.get("id") or ""),
            name=str((c.get("function") or {}).get("name") or ""),
            arguments=str((c.get("function") or {}).get("arguments") or ""),
        )
        for c in message.get("tool_calls") or ()
        if isinstance(c, dict)
    )
    call_id = message.get("tool_call_id") if message.get("role") == "tool" else None
    return ChatMessage(
        str(message.get("role")),
        text_of(message.get("content")),
        tool_calls=calls,
        tool_call_id=call_id if isinstance(call_id, str) else None,
    )


async def _provider_chunks(provider: Provider, body: dict[str, Any]) -> AsyncGenerator[Batch, None]:
    """A run provider (`echo`, with its deterministic tool mode) as chunks: role first, a chunk per delta,
    its tool calls, the finish, then usage."""
    model = str(body["model"])
    request = CompletionRequest(
        model=model,
        messages=[_chat_message(m) for m in body["messages"]],
        tools=body.get("tools") if isinstance(body.get("tools"), list) else None,
        tool_choice=body.get("tool_choice"),
    )
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
    }
    head["model"] = model

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield [chunk({"role": "assistant", "content": ""})]
    async for item in provider.stream(request):
        if isinstance(item, Finish):
            ending = []
            if item.tool_calls:
                calls = [
                    {
                        "index": i,
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for i, c in enumerate(item.tool_calls)
                ]
                ending.append(chunk({"tool_calls": calls}))
            ending.append(chunk({}, item.reason or "stop"))
            prompt, completion = item.prompt_tokens or 0, item.completion_tokens or 0
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            yield [*ending, {**head, "choices": [], "usage": usage}]
            return
        yield [chunk({"content": item})]
