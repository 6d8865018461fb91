"""What a run sends to its model: the ancestor path of its message, cut to a count and a token budget.

Selection, in order:

1. the ancestor path of the run's message, root first and the message itself last (a reply's
   context is its own branch, never its siblings or the rest of the conversation); tombstones
   (deleted messages) are left out;
2. the last `maxHistoryMessages` of that path (the run's input, else the conversation's, else 20);
3. the oldest of those dropped until the prompt fits the model's budget: its context window
   (`THREADLINE_MODEL_CONTEXT_TOKENS`, else `THREADLINE_DEFAULT_CONTEXT_TOKENS`) minus
   `THREADLINE_RUN_OUTPUT_RESERVE_TOKENS` kept for the reply. The run's message itself is never
   dropped; if it does not fit with the instructions, the run fails with CONTEXT_TOO_LARGE.

The instructions, when given, come first as a system message. Roles map USER to `user`, ASSISTANT to
`assistant`, SYSTEM to `system`, and TOOL to `user` (plain text) or, for a message with tool-result parts,
to one `tool` message per result. An assistant message with tool-call parts carries them as `tool_calls`.
Reasoning parts are never sent (they are not in `content`). A `tool` message whose call was trimmed away
is dropped too, as providers refuse a result without its call.

Token counts are an approximation that needs no tokenizer: a message costs 4 tokens of framing plus
one token per 4 bytes of UTF-8 content (rounded up), and a prompt costs 3 more tokens to prime the
reply. English text averages about 4 bytes per token with OpenAI's tokenizers, so this is close for
prose and errs high for code and non-Latin scripts (which is the safe side for a budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from threadline.parts import model as parts
from threadline.settings import Settings

MESSAGE_OVERHEAD_TOKENS = 4
PROMPT_OVERHEAD_TOKENS = 3
DEFAULT_MAX_HISTORY = 20

_ROLES = {"USER": "user", "TOOL": "user", "ASSISTANT": "assistant", "SYSTEM": "system"}


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    tool_calls: tuple[parts.Part, ...] = ()  # tool-call parts of an assistant message
    tool_call_id: str | None = None  # the call a `tool` message answers

    def as_dict(self) -> dict[str, Any]:
        if self.tool_calls:
            return {
                "role": self.role,
                "content": self.content or None,
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for c in self.tool_calls
                ],
            }
        if self.tool_call_id is not None:
            return {"role": "tool", "tool_call_id": self.tool_call_id, "content": self.content}
        return {"role": self.role, "content": self.content}


class ContextTooLarge(Exception):
    pass


def approximate_tokens(text: str) -> int:
    """One token per 4 bytes of UTF-8, rounded up."""
    return (len(text.encode("utf-8", errors="surrogatepass")) + 3) // 4


def message_tokens(message: ChatMessage) -> int:
    calls = "".join(c["name"] + c["arguments"] for c in message.tool_calls)
    return MESSAGE_OVERHEAD_TOKENS + approximate_tokens(message.content + calls)


def prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    return PROMPT_OVERHEAD_TOKENS + sum(message_tokens(m) for m in messages)


def context_window(settings: Settings, model: str) -> int:
    return dict(settings.model_context_tokens).get(model, settings.default_context_tokens)


def prompt_budget(settings: Settings, model: str) -> int:
    return context_window(settings, model) - settings.run_output_reserve_tokens


def history_limit(run_limit: int | None, conversation_limit: int | None) -> int:
    for value in (run_limit, conversation_limit):
        if value is not None and value > 0:
            return value
    return DEFAULT_MAX_HISTORY


def build_prompt(
    path: Sequence[asyncpg.Record], instructions: str | None, max_history: int, budget: int
) -> list[ChatMessage]:
    """The messages to send: `path` is the ancestor rows root first, the run's message last."""
    history = _paired([m for row in path if row["deleted_at"] is None for m in _chat_messages(row)])
    history = history[-max_history:]
    system = [ChatMessage("system", instructions)] if instructions else []
    total = prompt_tokens(system + history)
    while len(history) > 1 and (total > budget or history[0].tool_call_id is not None):
        total -= message_tokens(history.pop(0))
    if total > budget:
        raise ContextTooLarge(
            f"The prompt needs about {total} tokens; the model's budget is {budget} "
            "(its context window minus the tokens reserved for the reply)"
        )
    return system + history


def suffix_suffices(rows: Sequence[asyncpg.Record], max_history: int, budget: int) -> bool:
    """Whether `rows`, the newest part of a run's ancestor path, give the prompt the whole path would: the
    messages before them could only be cut away (`max_history` messages are already there, or these alone are
    over the token budget), and the first of them is no tool result (whose call would be among those before).
    So a run reads its ancestors newest first, a batch at a time, never a deep branch whole."""
    messages = [m for row in rows if row["deleted_at"] is None for m in _chat_messages(row)]
    if not messages or messages[0].tool_call_id is not None:
        return False
    history = _paired(messages)
    return len(history) >= max_history or prompt_tokens(history) > budget


def _paired(history: list[ChatMessage]) -> list[ChatMessage]:
    """Providers take tool results only right after the call they answer, and a call only followed by a result
    for each of its ids (OpenAI refuses anything else): a call left unanswered (a run that expired waiting, an
    import) is sent as its text alone, and a result without its call (an import) as plain text."""
    out: list[ChatMessage] = []
    i = 0
    while i < len(history):
        message = history[i]
        if message.tool_calls:
            end = i + 1
            while end < len(history) and history[end].tool_call_id is not None:
                end += 1
            answered = sorted(m.tool_call_id or "" for m in history[i + 1 : end])
            if answered == sorted(c["id"] for c in message.tool_calls):
                out.extend(history[i:end])
                i = end
                continue
            if message.content:
                out.append(ChatMessage("assistant", message.content))
        elif message.tool_call_id is not None:
            out.append(ChatMessage("user", message.content))
        else:
            out.append(message)
        i += 1
    return out


def _chat_messages(row: asyncpg.Record) -> list[ChatMessage]:
    """What one stored message says to a model (none for an empty one)."""
    stored = row.get("parts")
    if row["role"] == "ASSISTANT" and parts.tool_calls(stored):
        return [ChatMessage("assistant", row["content"], tool_calls=tuple(parts.tool_calls(stored)))]
    results = [p for p in stored or [] if p["type"] == "tool_result"]
    if row["role"] == "TOOL" and results:
        return [ChatMessage("tool", r["content"], tool_call_id=r["tool_call_id"]) for r in results]
    return [ChatMessage(_ROLES[row["role"]], row["content"])] if row["content"] else []
