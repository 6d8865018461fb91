"""A completion assembled from its chunks: the text and tool calls of each choice, the finish and the usage.

The streamed answer is passed on chunk by chunk; this keeps what the gateway needs from it, the text of the
first choice to store, and, for a non-streaming call, the `chat.completion` object OpenAI would have answered.
Tool calls arrive as deltas keyed by `index` (the id and name once, the arguments in pieces) and are joined.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Choice:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content) if self.content or not self.tool_calls else None,
            "refusal": "".join(self.refusal) or None,
        }
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return message


@dataclass
class Completion:
    id: str | None = None
    created: int | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    choices: dict[int, Choice] = field(default_factory=dict)
    usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk in; returns the text it adds to the first choice (what is stored)."""
        self.id = self.id or _str(chunk.get("id"))
        self.created = self.created or (chunk["created"] if isinstance(chunk.get("created"), int) else None)
        self.model = self.model or _str(chunk.get("model"))
        self.system_fingerprint = self.system_fingerprint or _str(chunk.get("system_fingerprint"))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        added = ""
        choices = chunk.get("choices")
        for item in choices if isinstance(choices, list) else ():
            if not isinstance(item, dict):
                continue
            index = item.get("index", 0) if isinstance(item.get("index", 0), int) else 0
            choice = self.choices.setdefault(index, Choice())
            raw_delta = item.get("delta")
            delta: dict[str, Any] = raw_delta if isinstance(raw_delta, dict) else {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                choice.content.append(text)
                if index == 0:
                    added += text
            if isinstance(delta.get("refusal"), str):
                choice.refusal.append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    _merge_call(choice, call)
            if item.get("finish_reason"):
                choice.finish_reason = str(item["finish_reason"])
        return added

    def first(self) -> Choice:
        return self.choices.get(0) or Choice()

    def response(self, fallback_model: str) -> dict[str, Any]:
        """The `chat.completion` object of a non-streaming call."""
        body: dict[str, Any] = {
            "id": self.id or "chatcmpl-threadline",
            "object": "chat.completion",
            "created": self.created or int(time.time()),
            "model": self.model or fallback_model,
            "choices": [
                {
                    "index": index,
                    "message": choice.message(),
                    "logprobs": None,
                    "finish_reason": choice.finish_reason or "stop",
                }
                for index, choice in sorted((self.choices or {0: Choice()}).items())
            ],
            "usage": self.usage,
        }
        if self.system_fingerprint:
            body["system_fingerprint"] = self.system_fingerprint
        return body


def _merge_call(choice: Choice, delta: dict[str, Any]) -> None:
    index = delta.get("index", len(choice.tool_calls))
    index = index if isinstance(index, int) else len(choice.tool_calls)
    call = choice.tool_calls.setdefault(
        index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if isinstance(delta.get("id"), str):
        call["id"] = delta["id"]
    if isinstance(delta.get("type"), str):
        call["type"] = delta["type"]
    function = delta.get("function")
    if isinstance(function, dict):
        if isinstance(function.get("name"), str):
            call["function"]["name"] += function["name"]
        if isinstance(function.get("arguments"), str):
            call["function"]["arguments"] += function["arguments"]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
