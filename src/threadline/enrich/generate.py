"""Asking a provider for a title or a summary, bounded: the prompt is cut before it is sent, the answer is read
only up to a cap (the rest of the stream is dropped), and the whole call has a deadline."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from threadline.runs.context import ChatMessage
from threadline.runs.providers import CompletionRequest, Finish, Provider, ProviderError
from threadline.settings import Settings

TITLE_INSTRUCTIONS = (
    "Write a short title (at most eight words) for the conversation the user shows you. "
    "Reply with the title only: no quotes, no punctuation at the end."
)
SUMMARY_INSTRUCTIONS = (
    "Summarise the conversation the user shows you in at most five sentences: what was asked, what was "
    "answered, and what is still open. Reply with the summary only."
)


@dataclass(frozen=True)
class Generator:
    """Who writes: a provider and its model, or None for the offline extractive rules."""

    provider: Provider | None
    model: str

    @property
    def name(self) -> str:
        return self.provider.name if self.provider is not None else "extractive"


def configured(providers: dict[str, Provider], settings: Settings) -> dict[str, Provider]:
    """The providers a job may call: `echo` always, `openai` only where the deployment set it up (an API key, or
    a base URL of its own), so a server that never configured it makes titles offline rather than call the
    public endpoint without credentials."""
    openai_set_up = bool(settings.openai_api_key) or settings.openai_base_url != Settings.openai_base_url
    return {name: p for name, p in providers.items() if name != "openai" or openai_set_up}


def choose(providers: dict[str, Provider], name: str | None, model: str | None) -> Generator:
    """The conversation's provider (and model, if that provider offers it), or the extractive rules when the
    conversation has none or names one this process does not have."""
    provider = providers.get(name) if name else None
    if provider is None:
        return Generator(None, "")
    chosen = model if model and model in provider.models() else provider.default_model()
    return Generator(provider, chosen)


def transcript(turns: list[tuple[str, str]], max_chars: int) -> str:
    """`Role: text` paragraphs, the newest kept when they do not all fit in `max_chars`."""
    parts: list[str] = []
    total = 0
    for role, text in reversed(turns):
        block = f"{role.capitalize()}: {text.strip()}"
        if total + len(block) > max_chars:
            if not parts:
                parts.append(block[:max_chars])
            break
        parts.append(block)
        total += len(block) + 2
    return "\n\n".join(reversed(parts))


async def ask(generator: Generator, instructions: str, text: str, answer_cap: int, timeout: float) -> str:
    """The provider's answer, at most `answer_cap` characters of it. ProviderError on failure, TIMEOUT included."""
    assert generator.provider is not None
    request = CompletionRequest(
        model=generator.model,
        messages=[ChatMessage("system", instructions), ChatMessage("user", text)],
    )
    pieces: list[str] = []
    size = 0

    async def read() -> None:
        nonlocal size
        stream = generator.provider.stream(request)  # type: ignore[union-attr]
        try:
            async for item in stream:
                if isinstance(item, Finish):
                    break
                pieces.append(item[: answer_cap - size])
                size += len(pieces[-1])
                if size >= answer_cap:
                    break  # a huge answer: the rest is never read
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError as exc:
        raise ProviderError("TIMEOUT", f"The provider did not answer within {timeout:g} s") from exc
    return "".join(pieces)
