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

The instructions, when given, come first as a system message. Roles map USER and TOOL to `user`,
ASSISTANT to `assistant`, SYSTEM to `system`.

Token counts are an approximation that needs no tokenizer: a message costs 4 tokens of framing plus
one token per 4 bytes of UTF-8 content (rounded up), and a prompt costs 3 more tokens to prime the
reply. English text averages about 4 bytes per token with OpenAI's tokenizers, so this is close for
prose and errs high for code and non-Latin scripts (which is the safe side for a budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from threadline.settings import Settings

MESSAGE_OVERHEAD_TOKENS = 4
PROMPT_OVERHEAD_TOKENS = 3
DEFAULT_MAX_HISTORY = 20

_ROLES = {"USER": "user", "TOOL": "user", "ASSISTANT": "assistant", "SYSTEM": "system"}


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class ContextTooLarge(Exception):
    pass


def approximate_tokens(text: str) -> int:
    """One token per 4 bytes of UTF-8, rounded up."""
    return (len(text.encode("utf-8", errors="surrogatepass")) + 3) // 4


def message_tokens(message: ChatMessage) -> int:
    return MESSAGE_OVERHEAD_TOKENS + approximate_tokens(message.content)


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
    history = [
        ChatMessage(_ROLES[row["role"]], row["content"])
        for row in path
        if row["deleted_at"] is None and row["content"]
    ]
    history = history[-max_history:]
    system = [ChatMessage("system", instructions)] if instructions else []
    total = prompt_tokens(system + history)
    while len(history) > 1 and total > budget:
        total -= message_tokens(history.pop(0))
    if total > budget:
        raise ContextTooLarge(
            f"The prompt needs about {total} tokens; the model's budget is {budget} "
            "(its context window minus the tokens reserved for the reply)"
        )
    return system + history
