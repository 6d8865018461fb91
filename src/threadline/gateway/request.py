"""Reading a chat-completions request: the body bounded before it is parsed, then checked field by field.

The body is refused past THREADLINE_REQUEST_MAX_BYTES while it arrives (413), JSON nested too deep or holding
lone surrogates is refused before anything walks it (graphql.request_json), and each message is checked for
the shape OpenAI documents. Everything else in the body (temperature, tools, tool_choice, response_format, ...)
is passed to the model as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from threadline.errors import ThreadlineError, bad_input
from threadline.graphql import request_json

SESSION_HEADER = "x-threadline-session"
SESSION_MAX_CHARS = 255
MODEL_MAX_CHARS = 128
CHOICES_MAX = 128  # `n`: OpenAI's own bound
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Fields of the body that are the gateway's, not the model's.
OWN_FIELDS = frozenset({"session_id"})


@dataclass(frozen=True)
class ChatRequest:
    body: dict[str, Any]  # as sent, without the gateway's own fields
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    session_id: str | None
    choices: int = 1  # `n`: completions the model is asked for (each drawn from the `runs` budget)


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def too_large(limit: int) -> ThreadlineError:
    return bad_input(
        f"The request body is larger than {limit} bytes (the limit)", openaiCode="request_too_large"
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, stopped as soon as it passes `limit` bytes (whatever Content-Length says)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(part)
    return b"".join(parts)


def parse(raw: bytes, session_header: str | None) -> ChatRequest:
    try:
        value = request_json.decode(raw)
    except request_json.JsonTooDeep:
        raise bad_input(f"The JSON is nested deeper than {request_json.JSON_MAX_DEPTH} levels") from None
    except ValueError:
        raise bad_input(
            "We could not parse the JSON body of your request. The body must be a JSON object "
            "(Content-Type: application/json)."
        ) from None
    if not isinstance(value, dict):
        raise bad_input("The request body must be a JSON object")
    if request_json.may_hold_lone_surrogate(raw) and request_json.holds_lone_surrogate(value):
        raise bad_input(request_json.LONE_SURROGATE_MESSAGE)
    model = value.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > MODEL_MAX_CHARS:
        raise bad_input(f"`model` must be a string of 1 to {MODEL_MAX_CHARS} characters", param="model")
    messages = value.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_input("`messages` must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        _check_message(index, message)
    stream = value.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_input("`stream` must be a boolean", param="stream")
    options = value.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_input("`stream_options` must be an object", param="stream_options")
    if value.get("tools") is not None and not isinstance(value["tools"], list):
        raise bad_input("`tools` must be an array", param="tools")
    choices = value.get("n")
    if choices is None:
        choices = 1
    if not isinstance(choices, int) or isinstance(choices, bool) or not 1 <= choices <= CHOICES_MAX:
        raise bad_input(f"`n` must be an integer from 1 to {CHOICES_MAX}", param="n")
    session = _session(value.get("session_id"), session_header)
    return ChatRequest(
        body={k: v for k, v in value.items() if k not in OWN_FIELDS},
        model=model,
        messages=messages,
        stream=stream,
        include_usage=bool(options and options.get("include_usage")),
        session_id=session,
        choices=choices,
    )


def _check_message(index: int, message: object) -> None:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad_input(f"{param} must be an object", param=param)
    role = message.get("role")
    if role not in ROLES:
        raise bad_input(
            f"{param}.role must be one of {', '.join(sorted(ROLES))}; got {str(role)[:40]!r}",
            param=f"{param}.role",
        )
    content = message.get("content")
    if content is None and not (
        role == "assistant" and (message.get("tool_calls") or message.get("function_call"))
    ):
        raise bad_input(f"{param}.content is required", param=f"{param}.content")
    if content is not None and not isinstance(content, str | list):
        raise bad_input(f"{param}.content must be a string or an array of parts", param=f"{param}.content")
    if isinstance(content, list) and not all(isinstance(part, dict) for part in content):
        raise bad_input(f"{param}.content parts must be objects", param=f"{param}.content")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise bad_input(f"{param}.tool_call_id is required for a tool message", param=f"{param}.tool_call_id")


def _session(body_value: object, header: str | None) -> str | None:
    value = body_value if body_value is not None else header
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > SESSION_MAX_CHARS:
        raise bad_input(
            f"`session_id` must be a string of 1 to {SESSION_MAX_CHARS} characters", param="session_id"
        )
    return value.strip()


def text_of(content: object) -> str:
    """The plain-text projection of a message's content: a string, or the text parts of an array (other
    parts, images and files, are named in brackets so a stored message is never silently empty)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    pieces: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text") and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        elif isinstance(kind, str):
            pieces.append(f"[{kind}]")
    return "\n".join(pieces)
