"""GraphQL types of message content parts (parts.model): the `MessagePart` union and its input."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from threadline.parts import model


@strawberry.type(description="Plain text.")
class TextPart:
    text: str = strawberry.field(description="The text.")


@strawberry.type(description="An image, by URL or as a stored file.")
class ImagePart:
    url: str | None = strawberry.field(description="Where the image is; null for a stored file.")
    file_id: strawberry.ID | None = strawberry.field(
        description="The stored file holding the image (an opaque id of the file store); null for a URL."
    )
    mime_type: str | None = strawberry.field(description="Its media type, e.g. image/png, if known.")


@strawberry.type(description="A file attached to the message (a reference: the bytes are not inline).")
class FilePart:
    name: str = strawberry.field(description="The file's name.")
    file_id: strawberry.ID | None = strawberry.field(
        description="The stored file (an opaque id of the file store), if it was stored."
    )
    url: str | None = strawberry.field(description="Where the file is, if it is not stored.")
    mime_type: str | None = strawberry.field(description="Its media type, if known.")


@strawberry.type(description="A tool the model asked to call (an assistant message's part).")
class ToolCallPart:
    id: str = strawberry.field(
        description="The call's id, as the model or provider gave it; a TOOL result names it."
    )
    name: str = strawberry.field(description="The tool (function) called.")
    arguments: str = strawberry.field(description="The arguments as the JSON text the model wrote.")


@strawberry.type(description="The output of a tool call (a TOOL message's part).")
class ToolResultPart:
    tool_call_id: str = strawberry.field(description="The id of the call (`ToolCallPart.id`) it answers.")
    content: str = strawberry.field(description="The output, as text.")
    is_error: bool = strawberry.field(description="True when the tool failed and `content` says why.")


@strawberry.type(
    description="A model's reasoning (thinking) before its answer. Shown, but left out of `Message.content` "
    "and of the context runs send to a model."
)
class ReasoningPart:
    text: str = strawberry.field(description="The reasoning text.")


MessagePart = Annotated[
    TextPart | ImagePart | FilePart | ToolCallPart | ToolResultPart | ReasoningPart,
    strawberry.union(
        "MessagePart",
        description="One piece of a message's content: text, image, file, tool call or result, reasoning.",
    ),
]


def part_object(part: model.Part) -> Any:
    """The GraphQL object of one stored part."""
    kind = part["type"]
    if kind == "text":
        return TextPart(text=part["text"])
    if kind == "image":
        return ImagePart(
            url=part.get("url"), file_id=_id(part.get("file_id")), mime_type=part.get("mime_type")
        )
    if kind == "file":
        return FilePart(
            name=part["name"],
            file_id=_id(part.get("file_id")),
            url=part.get("url"),
            mime_type=part.get("mime_type"),
        )
    if kind == "tool_call":
        return ToolCallPart(id=part["id"], name=part["name"], arguments=part["arguments"])
    if kind == "tool_result":
        return ToolResultPart(
            tool_call_id=part["tool_call_id"], content=part["content"], is_error=bool(part.get("is_error"))
        )
    return ReasoningPart(text=part["text"])


def _id(value: str | None) -> strawberry.ID | None:
    return strawberry.ID(value) if value is not None else None


@strawberry.input(description="An image to attach: exactly one of `url` and `fileId`.")
class ImagePartInput:
    url: str | None = strawberry.field(
        default=None, description="Where the image is (at most 8192 characters)."
    )
    file_id: strawberry.ID | None = strawberry.field(default=None, description="A stored file's id.")
    mime_type: str | None = strawberry.field(default=None, description="Its media type, if known.")


@strawberry.input(description="A file reference to attach.")
class FilePartInput:
    name: str = strawberry.field(description="The file's name, non-empty.")
    file_id: strawberry.ID | None = strawberry.field(default=None, description="A stored file's id.")
    url: str | None = strawberry.field(default=None, description="Where the file is, if not stored.")
    mime_type: str | None = strawberry.field(default=None, description="Its media type, if known.")


@strawberry.input(description="A tool call made by a model.")
class ToolCallPartInput:
    id: str = strawberry.field(description="The call's id (at most 256 characters).")
    name: str = strawberry.field(description="The tool called.")
    arguments: str = strawberry.field(
        default="{}", description="The arguments as JSON text, nested at most the configured depth (32)."
    )


@strawberry.input(description="The output of a tool call.")
class ToolResultPartInput:
    tool_call_id: str = strawberry.field(description="The id of the call it answers.")
    content: str = strawberry.field(description="The output, as text.")
    is_error: bool = strawberry.field(default=False, description="True when the tool failed.")


@strawberry.input(
    one_of=True,
    description="One content part: set exactly one field. At most the configured number of parts (64) per "
    "message, their text within the message size limit.",
)
class MessagePartInput:
    text: str | None = strawberry.field(default=strawberry.UNSET, description="A text part.")
    image: ImagePartInput | None = strawberry.field(default=strawberry.UNSET, description="An image part.")
    file: FilePartInput | None = strawberry.field(
        default=strawberry.UNSET, description="A file reference part."
    )
    tool_call: ToolCallPartInput | None = strawberry.field(
        default=strawberry.UNSET, description="A tool call part (assistant messages)."
    )
    tool_result: ToolResultPartInput | None = strawberry.field(
        default=strawberry.UNSET, description="A tool result part (TOOL messages)."
    )
    reasoning: str | None = strawberry.field(
        default=strawberry.UNSET, description="A reasoning part: kept and shown, left out of run context."
    )


def part_of_input(value: MessagePartInput) -> model.Part:
    if isinstance(value.text, str):
        return model.text_part(value.text)
    if isinstance(value.reasoning, str):
        return model.reasoning_part(value.reasoning)
    if isinstance(value.image, ImagePartInput):
        i = value.image
        return model.image_part(url=i.url, file_id=i.file_id, mime_type=i.mime_type)
    if isinstance(value.file, FilePartInput):
        f = value.file
        return model.file_part(name=f.name, file_id=f.file_id, url=f.url, mime_type=f.mime_type)
    if isinstance(value.tool_call, ToolCallPartInput):
        c = value.tool_call
        return model.tool_call_part(id=c.id, name=c.name, arguments=c.arguments)
    assert isinstance(value.tool_result, ToolResultPartInput)
    r = value.tool_result
    return model.tool_result_part(tool_call_id=r.tool_call_id, content=r.content, is_error=r.is_error)
