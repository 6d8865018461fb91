"""The streaming array reader: same values as json.loads whatever the chunk size, exact error positions."""

from __future__ import annotations

import hashlib
import io
import json
import random

import pytest

from threadline.porting.jsonstream import JsonArrayReader, JsonStreamError, decode


def read(data: bytes, chunk: int = 7, max_item_bytes: int = 1 << 20) -> list[tuple[object, str | None]]:
    reader = JsonArrayReader(io.BytesIO(data), max_item_bytes=max_item_bytes, chunk=chunk)
    return [(item.value, item.error) for item in reader]


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([None, True, False, 0, -12, 3.5, 10**20])
    if kind in (1, 2, 3):
        alphabet = 'ab "\\/\n\t{}[],:é€😀\u2028'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind in (4, 5):
        return {f"k{i}{rng.choice('é]')}": random_value(rng, depth + 1) for i in range(rng.randrange(4))}
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_elements_equal_json_loads_for_any_chunk_size(chunk: int) -> None:
    rng = random.Random(chunk)
    values = [random_value(rng) for _ in range(60)]
    for ensure_ascii in (True, False):
        data = json.dumps(values, ensure_ascii=ensure_ascii, indent=rng.choice([None, 2])).encode()
        assert read(data, chunk) == [(v, None) for v in values]


def test_a_malformed_element_is_reported_with_its_position_and_reading_goes_on() -> None:
    data = '[{"a": "é"},\n {"b": nope}, {"c": 3}]'.encode()
    assert read(data) == [
        ({"a": "é"}, None),
        (None, "malformed JSON: Expecting value at byte 21 (line 2, column 8)"),
        ({"c": 3}, None),
    ]
    assert data[21:25] == b"nope"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file: expected a JSON array at byte 0 (line 1, column 1)"),
        (b'[{"a": 1},\n {"a": "cut', "unexpected end of file inside a string at byte 22 (line 2, column 12)"),
        (b'[{"a": 1}', "unexpected end of file: the array is not closed at byte 9 (line 1, column 10)"),
        (
            b'[{"a": 1}\n{"b": 2}]',
            "expected ',' or ']' after an array element, found '{' at byte 10 (line 2, column 1)",
        ),
        (b"[1] x", "unexpected data after the end of the JSON value at byte 4 (line 1, column 5)"),
        (b'["\xff"]', "invalid UTF-8 at byte 2 (line 1, column 3)"),
        (b"nope", "expected '[' or '{', found 'n' at byte 0 (line 1, column 1)"),
    ],
)
def test_broken_streams_stop_with_the_position(data: bytes, message: str) -> None:
    with pytest.raises(JsonStreamError) as raised:
        read(data)
    assert str(raised.value) == message


def test_an_element_over_the_limit_is_skipped_and_the_next_one_read() -> None:
    data = b'[{"big": "' + b"x" * 5000 + b'"}, {"ok": 1}]'
    assert read(data, chunk=64, max_item_bytes=1000) == [
        (None, "element is 5011 bytes; the limit is 1000 bytes"),
        ({"ok": 1}, None),
    ]


def test_a_single_object_reads_as_one_element() -> None:
    assert read(b' {"conversation_id": "x"} ') == [({"conversation_id": "x"}, None)]


def test_elements_past_the_first_window_and_their_fingerprints() -> None:
    """Elements found by orjson's window (doubled past 64 KiB, read ahead at most 8 MiB) are the standard
    library's values, each with the SHA-256 of its own bytes; what orjson refuses goes the careful way."""
    big = {"text": "é" * 150_000, "nested": [{"a": [1, 2.5, None, True]}] * 50}
    elements = [
        json.dumps(big, ensure_ascii=False),
        '{"small": "\\u00e9\\n"}',
        '{"nan": NaN}',  # the standard library's extension, not JSON: orjson refuses it
        '{"lone": "\\ud800"}',
        "[1, [2, [3]]]",
    ]
    data = ("[" + ",\n  ".join(elements) + "  ]").encode()
    items = list(JsonArrayReader(io.BytesIO(data), max_item_bytes=1 << 22, chunk=4096))
    assert [i.value for i in items] == [json.loads(e) for e in elements]
    assert [i.error for i in items] == [None] * 5
    assert [i.fingerprint for i in items] == [hashlib.sha256(e.encode()).digest() for e in elements]
    assert [i.size for i in items] == [len(e.encode()) for e in elements]


@pytest.mark.parametrize("chunk", [3, 64, 4096, 1 << 20])
def test_deferred_elements_are_their_exact_texts_ascii_or_not_within_the_window_or_past_it(
    chunk: int,
) -> None:
    """A reader with `defer` yields each object or array element's own text (a re-import reads ChatGPT conversations
    from it: porting.chatgpt_nodes), decoded later to the standard library's value; scalars and what orjson refuses
    (NaN, a lone surrogate) are read as before."""
    rng = random.Random(chunk)
    elements = [json.dumps(random_value(rng), ensure_ascii=rng.random() < 0.5) for _ in range(40)]
    elements += [
        json.dumps({"big": "x" * 200_000, "list": list(range(5_000))}),  # past the first window (64 KiB)
        json.dumps({"big": "é" * 100_000}, ensure_ascii=False),
        '{"nan": NaN}',
        '{"lone": "\\ud800"}',
        '{"deep": ' + "[" * 500 + "]" * 500 + "}",
        "17",
        "[1 , [2, [3]] ]",
    ]
    data = ("[" + ",\n  ".join(elements) + " \n ]").encode()
    items = list(JsonArrayReader(io.BytesIO(data), max_item_bytes=1 << 22, chunk=chunk, defer=True))
    for item in items:
        decode(item)
    assert [i.value for i in items] == [json.loads(e) for e in elements]
    assert [i.error for i in items] == [None] * len(elements)
    assert [i.fingerprint for i in items] == [hashlib.sha256(e.encode()).digest() for e in elements]
    assert [i.size for i in items] == [len(e.encode()) for e in elements]
