"""Real OpenAI clients against the gateway: the official `openai` Python package (sync, async, streaming, its
error classes) and the `openai` npm package (examples/openai_node, skipped only without node and npm), against
the `echo` provider and a fake OpenAI-compatible upstream on 127.0.0.1, including a tool round trip kept in a
session."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.api import create_conversation, start_thread
from tests.gateway_fake import MODELS, FakeUpstream, fake_upstream
from tests.harness import Actor, Client, ServerThread, test_settings
from tests.test_clients import npm_install

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "openai_node"
NODES = """query($r: ID!) { threadTree(rootId: $r) { nodes { role content } } }"""
PARTS = """query($r: ID!) { threadTree(rootId: $r) { nodes { role parts { __typename
  ... on TextPart { text } ... on ToolCallPart { id name arguments } ... on ToolResultPart { toolCallId content }
  ... on ImagePart { url } } } } }"""
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    yield from fake_upstream()


@pytest.fixture(scope="module")
def gateway(dsn: str, fake: FakeUpstream) -> Iterator[ServerThread]:
    server = ServerThread(
        test_settings(
            dsn,
            migrate_on_start=False,
            openai_base_url=fake.base_url,
            openai_api_key="sk-upstream",
            openai_models=MODELS,
            openai_default_model="fake-ok",
            echo_delay_seconds=0.0,
            run_workers=0,
        )
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clear(fake: FakeUpstream) -> None:
    fake.requests.clear()


def sdk(server: ServerThread, actor: Actor) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=actor.api_key, max_retries=0)


def stored(server: ServerThread, actor: Actor, root_id: str) -> list[tuple[str, str]]:
    client = Client(server.url, actor.api_key)
    try:
        return [(n["role"], n["content"]) for n in client.ok(NODES, {"r": root_id})["threadTree"]["nodes"]]
    finally:
        client.close()


def test_the_python_client_lists_models_and_completes_with_a_session(
    gateway: ServerThread, admin: Actor
) -> None:
    client = sdk(gateway, admin)
    assert "echo" in [m.id for m in client.models.list()]
    cid = create_conversation(admin, sessionId="py-sync")
    root = start_thread(admin, cid, "hello")
    completion = client.chat.completions.create(
        model="fake-ok", messages=[{"role": "user", "content": "hi"}], extra_body={"session_id": "py-sync"}
    )
    assert completion.choices[0].message.content == "Hello there!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 14
    echo = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "again"}],
        extra_headers={"X-Threadline-Session": cid},
    )
    assert echo.choices[0].message.content == "echo: again"
    assert stored(gateway, admin, root) == [
        ("USER", "hello"),
        ("USER", "hi"),
        ("ASSISTANT", "Hello there!"),
        ("USER", "again"),
        ("ASSISTANT", "echo: again"),
    ]


def test_the_python_client_streams(gateway: ServerThread, admin: Actor) -> None:
    client = sdk(gateway, admin)
    pieces: list[str] = []
    usage = None
    with client.chat.completions.create(
        model="fake-ok",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
    assert "".join(pieces) == "Hello there!"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (11, 3)
    echoed = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "a b"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in echoed if c.choices) == "echo: a b"


def test_the_async_python_client_streams_and_completes(gateway: ServerThread, admin: Actor) -> None:
    cid = create_conversation(admin, sessionId="py-async")
    root = start_thread(admin, cid, "hello")

    async def work() -> tuple[str, str]:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway.url}/v1", api_key=admin.api_key, max_retries=0
        ) as client:
            whole = await client.chat.completions.create(
                model="echo",
                messages=[{"role": "user", "content": "one"}],
                extra_body={"session_id": "py-async"},
            )
            stream = await client.chat.completions.create(
                model="fake-ok",
                messages=[{"role": "user", "content": "two"}],
                stream=True,
                extra_body={"session_id": "py-async"},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return whole.choices[0].message.content or "", text

    assert asyncio.run(work()) == ("echo: one", "Hello there!")
    assert stored(gateway, admin, root)[1:] == [
        ("USER", "one"),
        ("ASSISTANT", "echo: one"),
        ("USER", "two"),
        ("ASSISTANT", "Hello there!"),
    ]


def test_the_python_client_raises_its_own_error_classes(gateway: ServerThread, admin: Actor) -> None:
    client = sdk(gateway, admin)
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert unknown_model.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as unknown_session:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], extra_body={"session_id": "nope"}
        )
    assert unknown_session.value.code == "session_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=[])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="tlk_wrong", max_retries=0).models.list()
    with pytest.raises(openai.APIError):  # a stream that breaks midway
        for _ in client.chat.completions.create(
            model="fake-broken", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_round_trip_passes_through_and_is_kept_in_the_session(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream, stream: bool
) -> None:
    client = sdk(gateway, admin)
    cid = create_conversation(admin, sessionId="tools")
    root = start_thread(admin, cid, "hello")
    question = {"role": "user", "content": "What is the weather in Paris?"}
    if stream:
        with client.chat.completions.stream(
            model="fake-tools",
            messages=[question],
            tools=[WEATHER_TOOL],
            extra_body={"session_id": "tools"},  # type: ignore[list-item]
        ) as events:
            first = events.get_final_completion()
    else:
        first = client.chat.completions.create(
            model="fake-tools",
            messages=[question],
            tools=[WEATHER_TOOL],
            extra_body={"session_id": "tools"},  # type: ignore[list-item]
        )
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls or []
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_1",
        "get_weather",
        {"city": "Paris"},
    )
    assert fake.requests[0]["tools"] == [WEATHER_TOOL]
    # The client runs the tool and sends what is new: the assistant's tool calls and the result.
    assistant: Any = first.choices[0].message.model_dump(exclude_none=True)
    result = {"role": "tool", "tool_call_id": call.id, "content": "22C"}
    second = client.chat.completions.create(
        model="fake-tools",
        messages=[assistant, result],
        tools=[WEATHER_TOOL],
        extra_body={"session_id": "tools"},  # type: ignore[list-item]
    )
    assert second.choices[0].message.content == "It is sunny in 22C"
    sent = fake.requests[1]["messages"]
    assert sent[:2] == [{"role": "user", "content": "hello"}, question]
    assert sent[2]["role"] == "assistant" and sent[2]["tool_calls"][0]["id"] == "call_1"
    assert sent[3] == result
    assert stored(gateway, admin, root) == [
        ("USER", "hello"),
        ("USER", "What is the weather in Paris?"),
        ("ASSISTANT", ""),
        ("TOOL", "22C"),
        ("ASSISTANT", "It is sunny in 22C"),
    ]


@pytest.mark.skipif(
    not (shutil.which("node") and shutil.which("npm")), reason="node and npm are not installed"
)
def parts(server: ServerThread, actor: Actor, root_id: str) -> list[tuple[str, list[dict[str, Any]]]]:
    client = Client(server.url, actor.api_key)
    try:
        return [(n["role"], n["parts"]) for n in client.ok(PARTS, {"r": root_id})["threadTree"]["nodes"]]
    finally:
        client.close()


def test_tool_calls_and_results_are_kept_as_parts_so_the_results_alone_continue_the_round(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream
) -> None:
    client = sdk(gateway, admin)
    cid = create_conversation(admin, sessionId="tool-parts")
    root = start_thread(admin, cid, "hello")
    question = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather here?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}},
        ],
    }
    first = client.chat.completions.create(
        model="fake-tools",
        messages=[question],
        tools=[WEATHER_TOOL],
        extra_body={"session_id": "tool-parts"},  # type: ignore[list-item]
    )
    [call] = first.choices[0].message.tool_calls or []
    # Only the result is sent: the stored tool call goes to the model from the branch.
    second = client.chat.completions.create(
        model="fake-tools",
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "18C"}],
        extra_body={"session_id": "tool-parts"},
    )
    assert second.choices[0].message.content == "It is sunny in 18C"
    assert fake.requests[1]["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "user", "content": "Weather here?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    assert parts(gateway, admin, root)[1:] == [
        (
            "USER",
            [
                {"__typename": "TextPart", "text": "Weather here?"},
                {"__typename": "ImagePart", "url": "https://example.com/sky.png"},
            ],
        ),
        (
            "ASSISTANT",
            [
                {
                    "__typename": "ToolCallPart",
                    "id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                }
            ],
        ),
        ("TOOL", [{"__typename": "ToolResultPart", "toolCallId": "call_1", "content": "18C"}]),
        ("ASSISTANT", [{"__typename": "TextPart", "text": "It is sunny in 18C"}]),
    ]


def test_the_echo_models_tool_mode_makes_a_round_trip_without_any_upstream(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream
) -> None:
    client = sdk(gateway, admin)
    cid = create_conversation(admin, sessionId="echo-tools")
    root = start_thread(admin, cid, "hello")
    first = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        extra_body={"session_id": "echo-tools"},
    )
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls or []
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_echo_2",
        "get_weather",
        {"input": "Paris"},
    )
    second = client.chat.completions.create(
        model="echo",
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "sunny"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        extra_body={"session_id": "echo-tools"},
    )
    assert second.choices[0].message.content == "echo: sunny"
    assert parts(gateway, admin, root)[2:] == [
        (
            "ASSISTANT",
            [
                {
                    "__typename": "ToolCallPart",
                    "id": "call_echo_2",
                    "name": "get_weather",
                    "arguments": '{"input": "Paris"}',
                }
            ],
        ),
        ("TOOL", [{"__typename": "ToolResultPart", "toolCallId": "call_echo_2", "content": "sunny"}]),
        ("ASSISTANT", [{"__typename": "TextPart", "text": "echo: sunny"}]),
    ]
    assert fake.requests == []


def test_the_npm_openai_client_runs_against_the_gateway(gateway: ServerThread, admin: Actor) -> None:
    npm_install(EXAMPLE)
    cid = create_conversation(admin, sessionId="node")
    root = start_thread(admin, cid, "hello")
    env = {
        **os.environ,
        "THREADLINE_GATEWAY_URL": f"{gateway.url}/v1",
        "THREADLINE_API_KEY": admin.api_key,
        "THREADLINE_SESSION": "node",
    }
    done = subprocess.run(
        ["node", "index.mjs"], cwd=EXAMPLE, env=env, timeout=120, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("ok")
    assert stored(gateway, admin, root) == [
        ("USER", "hello"),
        ("USER", "Say hi"),
        ("ASSISTANT", "echo: Say hi"),
        ("USER", "Stream it"),
        ("ASSISTANT", "echo: Stream it"),
    ]
