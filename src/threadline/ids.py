"""Opaque public ids: a kind prefix and the row's UUID (`cnv_9f0c...`). `node(id)` dispatches on the prefix."""

from __future__ import annotations

import uuid
from enum import StrEnum

from threadline.errors import bad_input


class Kind(StrEnum):
    TENANT = "ten"
    USER = "usr"
    API_KEY = "key"
    CONVERSATION = "cnv"
    PARTICIPANT = "par"
    INVITE = "inv"
    MESSAGE = "msg"
    THREAD = "thr"
    RUN = "run"
    RUN_STEP = "stp"
    RATE_LIMIT_PROFILE = "rlp"
    SHARE_LINK = "shl"
    FILE = "fil"
    FOLDER = "fld"
    BOOKMARK = "bmk"
    CONVERSATION_LINK = "lnk"


_LABELS = {
    Kind.TENANT: "Tenant",
    Kind.USER: "User",
    Kind.API_KEY: "ApiKey",
    Kind.CONVERSATION: "Conversation",
    Kind.PARTICIPANT: "Participant",
    Kind.INVITE: "Invite",
    Kind.MESSAGE: "Message",
    Kind.THREAD: "Thread",
    Kind.RUN: "Run",
    Kind.RUN_STEP: "RunStep",
    Kind.RATE_LIMIT_PROFILE: "RateLimitProfile",
    Kind.SHARE_LINK: "ShareLink",
    Kind.FILE: "File",
    Kind.FOLDER: "Folder",
    Kind.BOOKMARK: "Bookmark",
    Kind.CONVERSATION_LINK: "ConversationLink",
}


_PREFIXES = {kind: f"{kind.value}_" for kind in Kind}  # a tree read encodes ~5 ids per message


def encode_id(kind: Kind, value: uuid.UUID) -> str:
    return _PREFIXES[kind] + value.hex


def id_prefix(kind: Kind) -> str:
    """What every public id of `kind` starts with: `id_prefix(kind) + value.hex == encode_id(kind, value)`, for
    the constructors that build ids for every row of a page or a tree without a call per id."""
    return _PREFIXES[kind]


def parse_id(value: str) -> tuple[Kind, uuid.UUID] | None:
    """The kind and UUID of a public id, or None when it is not one of ours."""
    if not isinstance(value, str) or len(value) != 36 or value[3] != "_":
        return None
    try:
        kind = Kind(value[:3])
        return kind, uuid.UUID(hex=value[4:])
    except ValueError:
        return None


def decode_id(value: str, kind: Kind) -> uuid.UUID:
    """The UUID behind a public id of the expected kind; BAD_USER_INPUT otherwise."""
    parsed = parse_id(value)
    if parsed is None or parsed[0] is not kind:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise bad_input(f"Malformed id {shown!r}: expected a {_LABELS[kind]} id", argument="id")
    return parsed[1]


def id_or_uuid(value: str, kind: Kind) -> uuid.UUID:
    """A command-line argument naming an object: its public id (`usr_...`) or its bare UUID."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return decode_id(value, kind)
