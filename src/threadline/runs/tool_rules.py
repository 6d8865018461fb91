"""What a run may offer its model as tools (OpenAI function tools) and how it may choose among them."""

from __future__ import annotations

import json
import re
from typing import Any

from threadline.errors import bad_input
from threadline.settings import Settings

MAX_TOOLS = 128
MAX_TOOLS_BYTES = 256 * 1024
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CHOICES = ("none", "auto", "required")


def validate_tools(tools: Any, tool_choice: Any, settings: Settings) -> None:
    """OpenAI function tools: `{"type": "function", "function": {"name", "description"?, "parameters"?}}`,
    at most 128, within 256 KiB of JSON nested at most the configured depth; `toolChoice` one of none, auto,
    required, or `{"type": "function", "function": {"name"}}` naming one of them."""
    if tools is None:
        if tool_choice is not None:
            raise bad_input("toolChoice needs tools", argument="toolChoice")
        return
    if not isinstance(tools, list) or not tools:
        raise bad_input("tools must be a non-empty list of function tools", argument="tools")
    if len(tools) > MAX_TOOLS:
        raise bad_input(f"at most {MAX_TOOLS} tools", argument="tools", limit=MAX_TOOLS)
    text = json.dumps(tools)
    if len(text.encode()) > MAX_TOOLS_BYTES:
        raise bad_input(
            f"tools are limited to {MAX_TOOLS_BYTES} bytes of JSON", argument="tools", limit=MAX_TOOLS_BYTES
        )
    if _depth(tools) > settings.message_part_max_depth:
        raise bad_input(
            f"tools nest deeper than {settings.message_part_max_depth} levels",
            argument="tools",
            limit=settings.message_part_max_depth,
        )
    names: list[str] = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise bad_input(
                f'tools[{index}] must be {{"type": "function", "function": {{...}}}}', argument="tools"
            )
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise bad_input(f"tools[{index}].function.name must match {_NAME.pattern}", argument="tools")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise bad_input(
                f"tools[{index}].function.parameters must be a JSON Schema object", argument="tools"
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise bad_input("tool names must be unique", argument="tools")
    if tool_choice is None or tool_choice in _CHOICES:
        return
    forced = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    if (
        not isinstance(forced, dict)
        or tool_choice.get("type") != "function"
        or forced.get("name") not in names
    ):
        raise bad_input(
            'toolChoice must be "none", "auto", "required" or {"type": "function", "function": {"name"}} naming '
            "one of the tools",
            argument="toolChoice",
        )


def _depth(value: Any) -> int:
    """How deep lists and objects nest (iterative: a hostile document must not exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest
