"""Masking: each detection replaced by a placeholder naming its kind (`[EMAIL]`), nothing of it kept."""

from __future__ import annotations

from typing import Any

from threadline.privacy.detectors import Detection, PiiKind, detect

PLACEHOLDERS = {kind: f"[{kind.value}]" for kind in PiiKind}


def mask(text: str) -> tuple[str, list[Detection]]:
    """`text` with every detection replaced, and the placeholders' spans in the masked text."""
    return splice(text, detect(text))


def splice(text: str, found: list[Detection]) -> tuple[str, list[Detection]]:
    """`text` with the detections `found` (in order, apart) replaced by their placeholders."""
    if not found:
        return text, []
    out: list[str] = []
    spans: list[Detection] = []
    at = 0
    length = 0
    for d in found:
        out.append(text[at : d.start])
        length += d.start - at
        placeholder = PLACEHOLDERS[d.kind]
        out.append(placeholder)
        spans.append(Detection(d.kind, length, length + len(placeholder)))
        length += len(placeholder)
        at = d.end
    out.append(text[at:])
    return "".join(out), spans


def mask_text(text: str) -> str:
    return mask(text)[0]


def to_json(detections: list[Detection]) -> list[dict[str, Any]]:
    """As stored in `message.pii`: [{"kind", "start", "end"}] (character offsets)."""
    return [{"kind": d.kind.value, "start": d.start, "end": d.end} for d in detections]


def from_json(stored: Any) -> list[Detection]:
    if not isinstance(stored, list):
        return []
    return [Detection(PiiKind(d["kind"]), int(d["start"]), int(d["end"])) for d in stored]


def mask_json(value: Any) -> Any:
    """Every string inside a JSON value (an event payload, a part list) masked; keys kept."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list):
        return [mask_json(v) for v in value]
    if isinstance(value, dict):
        return {k: mask_json(v) for k, v in value.items()}
    return value
