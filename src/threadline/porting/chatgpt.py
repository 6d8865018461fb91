"""The ChatGPT data export: `conversations.json` (or `conversations-000.json`, ...), one conversation each.

A conversation's `mapping` is a tree of nodes `{id, message | null, parent, children}`; several children
are branches (edits, regenerations) and all of them are kept. Nodes without a message, hidden nodes
and empty ones are skipped and their children re-attached to the nearest kept ancestor. A parent that
is missing makes its child a thread root; a parent cycle is cut where it closes; both are reported.
Non-text content becomes content parts (parts.model): images as image parts (their pointer kept as an
attachment too), code sent to a tool as a tool call, execution output and browsing results as tool results,
and a thinking model's `thoughts` / `reasoning_recap` nodes as reasoning parts of the answer below them
(not messages of their own). Audio and other kinds stay attachments with a placeholder in the text.
Citation markers (`【3:0†source】`, and the 2025 `content_references`) become Markdown links to the URLs in the
message's metadata. A tool message keeps its tool's name and a message to a tool its recipient (message
metadata `tool_name`, `recipient`; a text message to a tool is a tool call too). A message without a model
takes its own `metadata.default_model_slug`, else the conversation's (answers only: no model wrote the others).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Container
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from threadline.parts import model as parts
from threadline.porting.chatgpt_nodes import MAX_DIGESTED_NODES, LazyNodes, is_raw, same
from threadline.porting.model import (
    ImportedConversation,
    ImportedMessage,
    ImportFormat,
    Rejected,
    array,
    empty_skipped,
    from_unix,
    obj,
    settle_parents,
    text,
)

ROLES = {"user": "USER", "assistant": "ASSISTANT", "system": "SYSTEM", "tool": "TOOL"}
UNTITLED = "Untitled conversation"


def parse(obj: Any, digests: dict[str, str] | None = None) -> ImportedConversation:
    """`digests`: the node digests to keep, when the caller has them (of the whole conversation when `obj` holds a
    part of it: `reduced`); else those of `obj`'s nodes."""
    if not isinstance(obj, dict):
        raise Rejected(f"a ChatGPT conversation must be a JSON object, not {type(obj).__name__}")
    external_id = text(obj.get("conversation_id")) or text(obj.get("id"))
    if not external_id:
        keys = ", ".join(sorted(obj)[:8])
        raise Rejected(f"not a ChatGPT conversation: it has no id or conversation_id (keys: {keys})")
    conversation = ImportedConversation(
        source=ImportFormat.CHATGPT,
        external_id=external_id,
        title=(text(obj.get("title")) or "").strip() or UNTITLED,
        messages=[],
        ai_provider="openai",
        model=text(obj.get("default_model_slug")),
        created_at=from_unix(obj.get("create_time")),
        updated_at=from_unix(obj.get("update_time")),
        status="ARCHIVED" if obj.get("is_archived") is True else "ACTIVE",
    )
    mapping = obj.get("mapping")
    if mapping is None:
        conversation.warnings.append("the conversation has no mapping: imported without messages")
        return conversation
    if not isinstance(mapping, dict):
        raise Rejected("`mapping` must be an object of nodes")
    conversation.node_digests = digests if digests is not None else node_digests(mapping) or None
    if isinstance(mapping, LazyNodes):
        mapping = mapping.whole()  # every node is read: decoded at once
    _read_tree(mapping, conversation, text(obj.get("current_node")))
    _fold_reasoning(conversation)
    if conversation.model is None:
        # No default_model_slug: the model of the latest answer that names one.
        conversation.model = next((m.model for m in reversed(conversation.messages) if m.model), None)
    if not conversation.messages:
        conversation.warnings.append("the conversation has no visible messages")
    return conversation


def _read_tree(mapping: dict[str, Any], conversation: ImportedConversation, current_node: str | None) -> None:
    warnings = conversation.warnings
    nodes: dict[str, dict[str, Any]] = {}
    for node_id, node in mapping.items():
        if isinstance(node, dict):
            nodes[node_id] = node
        else:
            warnings.append(f"node {node_id}: not an object, skipped")
    claimed = [(node_id, _parent_of(node)) for node_id, node in nodes.items()]
    parents = settle_parents(claimed, nodes, "node", warnings)

    children: dict[str | None, list[str]] = {}
    for node_id, node in nodes.items():
        listed = node.get("children")
        if isinstance(listed, list):
            # The parent's own list gives the branch order; keep only children that agree on the parent.
            children[node_id] = [c for c in listed if isinstance(c, str) and parents.get(c) == node_id]
    # A child kept in a list is in its own parent's only (the others' disagree on the parent): one set tells, where
    # a look through the parent's list made a node of 60,000 children cost 30 s of one request's CPU.
    in_lists = {c for kids in children.values() for c in kids}
    for node_id, parent in parents.items():
        if parent is None or node_id not in in_lists:
            children.setdefault(parent, []).append(node_id)

    # Depth-first, so each parent precedes its children and siblings keep their order.
    stack: list[tuple[str, str | None]] = [(r, None) for r in reversed(children.get(None, []))]
    seen: set[str] = set()
    empty: list[str] = []
    unlinked = 0
    while stack:
        node_id, kept_parent = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        message = _message(node_id, nodes[node_id], kept_parent, conversation, empty)
        if message is not None:
            message.content, left = link_citations(
                message.content, obj(nodes[node_id]["message"].get("metadata"))
            )
            unlinked += left
        if message is not None:
            conversation.messages.append(message)
            kept_parent = message.key
        if node_id == current_node:
            # The branch the user was on; a skipped (hidden, empty) node stands for its nearest kept ancestor.
            conversation.current_key = kept_parent
        for child in reversed(children.get(node_id, [])):
            stack.append((child, kept_parent))
    if empty:
        warnings.append(empty_skipped(empty))
    if unlinked:
        warnings.append(
            f"{unlinked} citation marker(s) have no source URL in the export and were left in the text"
        )


def _parent_of(node: dict[str, Any]) -> str | None:
    parent = node.get("parent")
    return parent if isinstance(parent, str) else None


def _message(
    node_id: str,
    node: dict[str, Any],
    parent_key: str | None,
    conversation: ImportedConversation,
    empty: list[str],
) -> ImportedMessage | None:
    raw = node.get("message")
    if not isinstance(raw, dict):
        return None
    metadata = obj(raw.get("metadata"))
    if metadata.get("is_visually_hidden_from_conversation") is True:
        return None
    author = obj(raw.get("author"))
    source_role = text(author.get("role")) or "user"
    role = ROLES.get(source_role)
    if role is None:
        conversation.warnings.append(f"node {node_id}: unknown author role {source_role!r}, imported as tool")
        role = "TOOL"
    content, attachments = render(raw.get("content"))
    found = _with_files(_parts_of(raw, node_id, parent_key, content), content, metadata)
    if not content.strip() and not attachments and not found:
        if role != "SYSTEM":  # the blank system prompt at the top of every conversation goes unsaid
            empty.append(node_id)
        return None
    model = text(metadata.get("model_slug"))
    if model is None and role == "ASSISTANT":
        model = text(metadata.get("default_model_slug")) or conversation.model
    kept: dict[str, str] = {}
    if role == "TOOL" and text(author.get("name")):
        kept["tool_name"] = str(author["name"])[:512]
    recipient = text(raw.get("recipient"))
    if recipient not in (None, "all"):
        kept["recipient"] = str(recipient)[:512]
    return ImportedMessage(
        key=node_id,
        parent_key=parent_key,
        role=role,
        content=parts.text_projection(found) if found and _projected(found) else content,
        created_at=from_unix(raw.get("create_time")),
        model=model,
        attachments=attachments,
        parts=found,
        reasoning=found is not None and all(p["type"] == "reasoning" for p in found),
        metadata=kept or None,
    )


def _with_files(
    found: list[parts.Part] | None, content: str, metadata: dict[str, Any]
) -> list[parts.Part] | None:
    """Files uploaded with a message (`metadata.attachments`: name, mime_type) as file parts after its content."""
    files = [
        parts.file_part(name=str(a["name"]), mime_type=text(a.get("mime_type")))
        for a in array(metadata.get("attachments"))
        if isinstance(a, dict) and text(a.get("name"))
    ]
    if not files:
        return found
    return [*(found if found is not None else [parts.text_part(content)] if content else []), *files]


def _projected(found: list[parts.Part]) -> bool:
    """Whether `content` is the parts' text (no placeholder left): not for code, whose fenced text is kept."""
    return not any(p["type"] == "tool_call" for p in found)


def _parts_of(
    raw: dict[str, Any], node_id: str, parent_key: str | None, content: str
) -> list[parts.Part] | None:
    """The content parts of a message whose content is more than text; None for plain text."""
    body = obj(raw.get("content"))
    kind = text(body.get("content_type")) or "text"
    recipient = text(raw.get("recipient"))
    if kind == "multimodal_text":
        found: list[parts.Part] = []
        for part in array(body.get("parts")):
            if isinstance(part, str) and part:
                found.append(parts.text_part(part))
            elif isinstance(part, dict) and part.get("content_type") == "image_asset_pointer":
                pointer = text(part.get("asset_pointer"))
                if pointer:
                    found.append(parts.image_part(url=pointer))
            elif isinstance(part, dict) and part.get("content_type") == "audio_transcription":
                if text(part.get("text")):
                    found.append(parts.text_part(str(part["text"])))
        return None if parts.is_plain_text(found) else found
    if kind == "code" and recipient not in (None, "all"):
        arguments = {"code": text(body.get("text")) or ""}
        language = text(body.get("language"))
        if language and language != "unknown":
            arguments["language"] = language
        return [parts.tool_call_part(id=node_id, name=recipient or "python", arguments=json.dumps(arguments))]
    if kind == "text" and recipient not in (None, "all") and content.strip():
        # A message to a tool (a DALL-E prompt, a browser command): the call, its text as the arguments.
        return [parts.tool_call_part(id=node_id, name=str(recipient), arguments=_arguments(content))]
    if kind in ("execution_output", "tether_browsing_display", "tether_quote") and content:
        return [parts.tool_result_part(tool_call_id=parent_key or "", content=content)]
    if kind in ("thoughts", "reasoning_recap") and content.strip():
        return [parts.reasoning_part(content)]
    return None


# Reasoning parts an answer takes from the reasoning nodes above it, at most (THREADLINE_MESSAGE_MAX_PARTS, 64 by
# default, keeps fewer): a chain of N reasoning nodes otherwise gave N answers N parts each (8,000: 300 MB).
MAX_FOLDED_PARTS = 256


def _fold_reasoning(conversation: ImportedConversation) -> None:
    """A thinking model's reasoning nodes become reasoning parts of the answers below them: each child
    that is an answer (or more reasoning) takes them first and the reasoning node goes. A reasoning node
    with no such child (a branch cut short) stays, as an assistant message holding only reasoning."""
    messages = conversation.messages
    children: dict[str, list[ImportedMessage]] = {}
    for m in messages:
        if m.parent_key is not None:
            children.setdefault(m.parent_key, []).append(m)
    gone: set[str] = set()
    cut: set[str] = set()  # answers some of whose reasoning was not kept
    # Each message is folded before its children (depth-first), so a folded node's parent was looked at already:
    # nothing needs its place among its parent's replies (finding it there, by a dataclass's ==, made a node of
    # 8,000 reasoning replies cost 20 s).
    for m in messages:
        if not m.reasoning:
            continue
        kids = children.get(m.key, [])
        if not kids or any(k.role != "ASSISTANT" for k in kids):
            continue
        above = m.parts or []
        if len(above) > MAX_FOLDED_PARTS:
            cut.update(k.key for k in kids)
            above = above[-MAX_FOLDED_PARTS:]  # the reasoning nearest the answer
        for kid in kids:
            own = (
                kid.parts if kid.parts is not None else [parts.text_part(kid.content)] if kid.content else []
            )
            kid.parts = [*above, *own]
            kid.parent_key = m.parent_key
            if kid.created_at is None:
                kid.created_at = m.created_at
        m.parts = None  # gone: its kids hold its reasoning (a chain of them held it once per node)
        gone.add(m.key)
    if cut - gone:
        conversation.warnings.append(
            f"{len(cut - gone)} answer(s) had more than {MAX_FOLDED_PARTS} reasoning parts above them: the earliest were not kept"
        )
    if gone:
        conversation.messages = [m for m in messages if m.key not in gone]
        if conversation.current_key in gone:
            conversation.current_key = None


def render(content: Any) -> tuple[str, list[dict[str, Any]]]:
    """The text of a message's `content`, and its non-text parts as attachments."""
    if not isinstance(content, dict):
        return "", []
    kind = text(content.get("content_type")) or "text"
    if kind in ("text", "multimodal_text"):
        return _parts(content.get("parts"))
    if kind == "code":
        language = text(content.get("language")) or ""
        language = "" if language == "unknown" else language
        return f"```{language}\n{text(content.get('text')) or ''}\n```", []
    if kind == "execution_output":
        return text(content.get("text")) or "", []
    if kind == "tether_browsing_display":
        return "\n\n".join(p for p in (text(content.get("result")), text(content.get("summary"))) if p), []
    if kind == "tether_quote":
        quote = (text(content.get("title")), text(content.get("url")), text(content.get("text")))
        return "\n".join(p for p in quote if p), []
    if kind == "thoughts":
        thoughts = array(content.get("thoughts"))
        pieces: list[str] = []
        for t in thoughts:
            if isinstance(t, dict):
                pieces.extend(p for p in (text(t.get("summary")), text(t.get("content"))) if p)
        return "\n\n".join(pieces), []
    if kind == "reasoning_recap":
        return text(content.get("content")) or "", []
    if kind == "user_editable_context":
        context = (text(content.get("user_profile")), text(content.get("user_instructions")))
        return "\n\n".join(p for p in context if p), []
    if kind == "system_error":
        return f"{text(content.get('name')) or 'error'}: {text(content.get('text')) or ''}", []
    if isinstance(content.get("parts"), list):
        return _parts(content["parts"])
    if text(content.get("text")):
        return str(content["text"]), []
    return f"[{kind}]", [{"type": kind, "data": _compact(content)}]


def _parts(parts: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(parts, list):
        return "", []
    pieces: list[str] = []
    attachments: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, str):
            if part:
                pieces.append(part)
            continue
        if not isinstance(part, dict):
            continue
        kind = text(part.get("content_type")) or "unknown"
        if kind == "audio_transcription":
            pieces.append(text(part.get("text")) or "")
            continue
        attachment = _attachment(kind, part)
        attachments.append(attachment)
        pieces.append(f"[{attachment['type']}]")
    return "\n".join(pieces), attachments


def _attachment(kind: str, part: dict[str, Any]) -> dict[str, Any]:
    if kind == "image_asset_pointer":
        attachment: dict[str, Any] = {"type": "image", "pointer": text(part.get("asset_pointer"))}
        for source, target in (("size_bytes", "size_bytes"), ("width", "width"), ("height", "height")):
            if isinstance(part.get(source), int):
                attachment[target] = part[source]
        return attachment
    if kind in ("audio_asset_pointer", "real_time_user_audio_video_asset_pointer"):
        return {"type": "audio", "pointer": text(part.get("asset_pointer"))}
    return {"type": kind, "data": _compact(part)}


def _compact(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy (the source may hold anything), capped so one odd part cannot bloat a row."""
    try:
        raw = orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: nothing of it is kept
        return {"truncated": True, "reason": "nested too deeply"}
    if len(raw) <= 64 * 1024:
        return orjson.loads(raw)  # type: ignore[no-any-return]
    return {"truncated": True, "bytes": len(raw)}


def _arguments(content: str) -> str:
    """A tool call's arguments: the text itself when it is a JSON object, else the text under `text`."""
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    return content if isinstance(value, dict) else json.dumps({"text": content})


# `【3:0†source】` (browsing, file search) and 2025's private-use `\ue200cite\ue202turn0search0\ue201` markers.
_MARKER = re.compile("【[^【】\n]{1,80}】|\ue200[^\ue200\ue201\n]{1,200}\ue201")


def link_citations(content: str, metadata: dict[str, Any]) -> tuple[str, int]:
    """The text with its citation markers turned into Markdown links to their sources (`metadata.citations`
    by their character offsets, `metadata.content_references` by their matched text), and how many markers
    are left for want of a URL."""
    if "【" not in content and "\ue200" not in content:
        return content, 0
    spans: list[tuple[int, int, str]] = []
    taken: set[int] = set()
    for citation in array(metadata.get("citations")):
        if not isinstance(citation, dict):
            continue
        link = _link(obj(citation.get("metadata")))
        start, end = citation.get("start_ix"), citation.get("end_ix")
        if link is None or not isinstance(start, int) or not isinstance(end, int):
            continue
        match = _MARKER.fullmatch(content, start, end) if 0 <= start < end <= len(content) else None
        if match is None:
            # Offsets counted another way (UTF-16 units): the first marker not taken from a little before.
            match = next(
                (m for m in _MARKER.finditer(content, max(0, start - 16)) if m.start() not in taken), None
            )
        if match is not None and match.start() not in taken:
            taken.add(match.start())
            spans.append((match.start(), match.end(), link))
    for reference in array(metadata.get("content_references")):
        if not isinstance(reference, dict):
            continue
        matched = text(reference.get("matched_text")) or ""
        items = [i for i in array(reference.get("items")) if isinstance(i, dict)]
        link = _link(items[0]) if items else _link(reference)
        if not matched.strip() or link is None:
            continue
        at = content.find(matched)
        while at >= 0 and at in taken:
            at = content.find(matched, at + 1)
        if at >= 0:
            taken.add(at)
            spans.append((at, at + len(matched), link))
    out, last = [], 0
    for start, end, link in sorted(spans):
        if start < last:
            continue
        out.append(content[last:start])
        out.append(link)
        last = end
    out.append(content[last:])
    linked = "".join(out)
    return linked, len(_MARKER.findall(linked))


# Characters a URL keeps as they are in a Markdown link; parentheses, brackets and spaces are escaped.
_URL_SAFE = ":/?#@!$&'*+,;=%~"


def _link(source: dict[str, Any]) -> str | None:
    """` ([title](url))` for a cited source with an http(s) URL, as ChatGPT shows it; None without one."""
    url = text(source.get("url"))
    if not url or urlsplit(url).scheme not in ("http", "https"):
        return None
    title = text(source.get("title")) or text(source.get("name")) or urlsplit(url).netloc
    label = " ".join(title.replace("[", "(").replace("]", ")").split())
    return f" ([{label}]({quote(url, safe=_URL_SAFE)}))"


def external_id(obj: Any) -> str | None:
    """The conversation's id, read without parsing the rest (None: `parse` will say what is wrong)."""
    if not isinstance(obj, dict):
        return None
    return text(obj.get("conversation_id")) or text(obj.get("id"))


def node_digests(mapping: dict[str, Any]) -> dict[str, str]:
    """A digest of each node as it matters to an import: its parent and its message (not its children, which
    grow when replies are added below it). Of a mapping read from its text (chatgpt_nodes), the digests of its
    messages' bytes; else of each decoded message serialised again."""
    if isinstance(mapping, LazyNodes):
        return mapping.digests
    out: dict[str, str] = {}
    if len(mapping) > MAX_DIGESTED_NODES:
        return out  # not kept (`reduced` then reads it all): a bound on what import_source holds
    for node_id, node in mapping.items():
        # An id PostgreSQL's jsonb cannot hold (NUL) is left out: `reduced` then reads it all.
        if isinstance(node, dict) and "\x00" not in node_id:
            try:
                raw = orjson.dumps(node.get("message"), default=str)
            except orjson.JSONEncodeError:  # nested past orjson's depth: left out, as above
                continue
            digest = hashlib.blake2b(raw, digest_size=8)
            digest.update(str(node.get("parent")).encode())
            out[node_id] = digest.hexdigest()
    return out


@dataclass
class Reduction:
    """What a re-import must read of a conversation imported before (`reduced`)."""

    digests: dict[str, str]  # of every node, as now
    unchanged: bool = False  # no node is new and none changed: nothing to read
    conversation: dict[str, Any] | None = None  # only the new nodes and what places them; None: read it all


@dataclass
class Look:
    """A first look at a newer export of a conversation imported before (`look`), building nothing."""

    digests: dict[str, str]  # of every node, as now (`node_digests`)
    unchanged: bool  # no node is new and none changed: nothing to read
    only_new: (
        bool  # nodes were added and none the earlier import saw changed: `reduced` reads only the new ones
    )


def look(obj: dict[str, Any], seen: dict[str, str] | None) -> Look:
    """Whether a newer export of a conversation changed since the import that saw the nodes `seen`, and how: what
    `reduced` will decide, from the nodes' digests alone (one pass; `reduced` takes the digests then)."""
    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        return Look({}, unchanged=False, only_new=False)
    digests = compared = node_digests(mapping)
    if seen and isinstance(mapping, LazyNodes) and not is_raw(seen):
        # The earlier import kept digests of decoded messages (made before digests of the bytes were, or read
        # without its text): compared as those, once; the digests of the bytes are kept from now on.
        compared = node_digests(mapping.whole())
    if (
        seen is None
        or len(compared) != len(mapping)
        or not all(same(seen, k, d) for k, d in compared.items())
    ):
        return Look(digests, unchanged=False, only_new=False)
    grown = len(compared) > len(seen) or any(k not in seen for k in compared)
    return Look(digests, unchanged=not grown, only_new=grown)


def reduced(
    obj: dict[str, Any],
    seen: dict[str, str] | None,
    stored: Container[str],
    digests: dict[str, str] | None = None,
    *,
    only_new: bool = False,
) -> Reduction:
    """The part of a newer export of a conversation that a merge needs, from the digests of the nodes the last
    import saw (`seen`) and the source ids that have a message (`stored`): when no node it saw changed, only
    the new nodes, each with its ancestors up to the nearest stored message (and the current node, likewise).
    The rest would be read only to be found unchanged. Anything unexpected: read it all (`conversation` None).
    `digests` are the nodes' (`node_digests`) when the caller has them already; `only_new`: the caller found
    (`look`) that none of the nodes `seen` changed, so they are not compared again."""
    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        return Reduction({})
    if digests is None:
        digests = node_digests(mapping)
    if (
        seen is None
        or len(digests) != len(mapping)
        or (not only_new and not all(same(seen, k, d) for k, d in digests.items()))
    ):
        return Reduction(digests)
    new = [k for k in digests if k not in seen]
    if not new:
        return Reduction(digests, unchanged=True)
    current = text(obj.get("current_node"))
    included: set[str] = set()
    for start in [*new, *([current] if current in mapping else [])]:
        node_id: str | None = start
        while node_id is not None and node_id in mapping and node_id not in included:
            included.add(node_id)
            if node_id in stored and node_id != start:
                break
            parent = mapping[node_id].get("parent")
            node_id = parent if isinstance(parent, str) else None
    part = {}
    for node_id in included:
        node = mapping[node_id]
        parent = node.get("parent")
        part[node_id] = {
            **node,
            "parent": parent if parent in included else None,
            "children": [c for c in array(node.get("children")) if c in included],
        }
    return Reduction(digests, conversation={**obj, "mapping": part})


def without_parent(obj: dict[str, Any], node_id: str) -> bool:
    """Whether a node has no parent among the conversation's nodes: a walk up from below (`reduced`,
    `stored_keys_needed`) ends there, whether its message is stored or not."""
    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        return True
    node = mapping.get(node_id)
    parent = node.get("parent") if isinstance(node, dict) else None
    return not (isinstance(parent, str) and parent in mapping)


def stored_keys_needed(
    obj: dict[str, Any], seen: dict[str, str], known: dict[str, bool], reach: int = 1
) -> set[str]:
    """The nodes whose being stored (`known`: node -> stored, as learnt so far) `reduced` will ask about that are
    not known yet: a re-import reads those messages only, not the whole conversation. Walks as `reduced` does,
    from each new node (and the current node) up to the nearest stored message; called again with what was
    learnt until it returns nothing. A walk asks about `reach` nodes past its start not known yet before it stops:
    the caller doubles it each round, so a chain of n unstored nodes (empty messages: never stored) is climbed in
    log n rounds, where one level a round took n statements and n * n / 2 steps (2,000 nodes: 3 s; 50,000: half an
    hour in one transaction). A walk that reaches a node an earlier one passed stops there (the rest was that one's):
    a chain of n new nodes is walked once, not n times."""
    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        return set()
    current = text(obj.get("current_node"))
    need: set[str] = set()
    walked: set[str] = set()
    for start in [*(k for k in mapping if k not in seen), *([current] if current in mapping else [])]:
        node_id: str | None = start
        asked = 0
        while node_id is not None and node_id in mapping and node_id not in walked:
            walked.add(node_id)
            if node_id in seen:
                # Every node of the part read that the earlier import saw is looked up (it may be stored: the
                # current node is); past the start, where the walk stops depends on it.
                if node_id not in known:
                    need.add(node_id)
                    asked += node_id != start
                    if asked >= reach:
                        break
                elif known[node_id] and node_id != start:
                    break
            parent = mapping[node_id].get("parent")
            node_id = parent if isinstance(parent, str) else None
    return need
