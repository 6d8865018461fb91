"""Reads the elements of a top-level JSON array one at a time, from a binary stream of any size.

Exports are often hundreds of megabytes: loading them whole would need several times that in memory.
The reader decodes the stream in chunks and parses one element at a time, so memory is bounded by
the largest element, and an element larger than `max_item_bytes` is skipped without being kept.

An object or array element is first found and decoded with orjson: a parse of a window of the buffer starting
at the element either is the element (and its value), or stops with "unexpected content after document" at the
element's end (yyjson checks the text without building a Python object: cheap), and the element's text is then
decoded alone; a window that ends inside the element is doubled (reading more) up to `max_item_bytes`. About 1.6x
faster than the standard library's decoder. orjson differs from `json.loads` in one way that passes through:
an integer beyond 64 bits reads as a float (every number an import uses is range-checked either way). Anything
else orjson refuses (NaN, a lone surrogate escape, nesting past 1,024 levels, malformed text) goes the careful
way below, so values and errors are those of the standard library.

The careful way: the standard library's C scanner straight from the buffer; when that fails (the element runs
past the buffer, or is malformed), a string-aware bracket scan finds where the element ends, reading more as
needed, and the element is parsed again on its own: a malformed element is then reported with its byte offset,
line and column, and reading goes on with the next one. A stream that ends early or breaks the array's own syntax
stops the reader with an error that says where. A top-level object (a single Threadline export) reads as a
one-element array.

Each element read carries a fingerprint: the SHA-256 of its text's UTF-8 bytes (the bytes imported), with which a
re-import recognises a conversation it imported before from the very same bytes (and skips it before its
nodes are digested, compared or planned).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

_STRUCTURE = re.compile(r'["\[\]{}]')
_SCALAR_END = re.compile(r'[,\]"]')
# A whole string body and its closing quote in one C-level match (possessive: never backtracks).
_STRING_BODY = re.compile(r'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)
_SPACE = " \t\r\n\ufeff"
CHUNK = 1 << 20
# The first window orjson is given for an element: past the largest element seen so far, at least this.
_FIRST_WINDOW = 1 << 16
_MAX_FIRST_WINDOW = 8 * CHUNK
_TRAILING = "unexpected content after document"
_CUT = "unexpected end of data"


def fingerprint(text: str) -> bytes:
    """The fingerprint of an element's JSON text: the SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


# A NUL or a lone surrogate in decoded text can only come from an escape (raw, neither is valid JSON in UTF-8); a
# surrogate pair (an emoji) matches too, and `model.storable` tells them apart.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")


def _read_whole(item: Item, text: str) -> Item:
    """`item` with what is known from its JSON text: its fingerprint, and whether it may hold unstorable text."""
    item.fingerprint = fingerprint(text)
    item.unstorable = _UNSTORABLE_ESCAPE.search(text) is not None
    return item


class JsonStreamError(ValueError):
    """The stream is not a JSON array of values: nothing after `offset` can be read."""

    def __init__(self, message: str, offset: int, line: int, column: int) -> None:
        super().__init__(f"{message} at byte {offset} (line {line}, column {column})")
        self.offset = offset
        self.line = line
        self.column = column


@dataclass
class Item:
    """One element of the array: its decoded value, or why it could not be decoded."""

    index: int
    offset: int | None  # byte offset of the element's first byte (None when not read from a file)
    line: int | None
    size: int
    value: Any = None
    error: str | None = None
    fingerprint: bytes | None = None  # of the element's text (`fingerprint`), when read from a file
    # The element's JSON text, not decoded yet (a reader with `defer`): `decode` decodes it in place.
    text: str | None = None
    # Its text has an escape of a NUL or a surrogate, which PostgreSQL cannot store (`model.storable` repairs them).
    unstorable: bool = False


def decode(item: Item) -> None:
    """Decode a deferred element (`Item.text`) in place: orjson, else the standard library's way (orjson refuses
    nesting past 1,024 levels), else `item.error` says why."""
    if item.text is None:
        return
    text, item.text = item.text, None
    try:
        item.value = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            item.value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            message = _why(exc)
            item.error = f"malformed JSON: {message} in the element at byte {item.offset} (line {item.line})"


def _why(exc: ValueError | RecursionError) -> str:
    """What the standard library's decoder said: a JSONDecodeError's message, "too deeply nested" for recursion,
    else the error's own words (an integer of more than 4,300 digits is a plain ValueError: it read as nesting)."""
    if isinstance(exc, RecursionError):
        return "too deeply nested"
    return str(getattr(exc, "msg", None) or exc).split(";")[0]  # not the interpreter's advice after it


_DEFERRED = object()  # `_fast`'s value for an element whose end is known and whose decoding is deferred


class JsonArrayReader:
    def __init__(
        self, stream: IO[bytes], *, max_item_bytes: int, chunk: int = CHUNK, defer: bool = False
    ) -> None:
        """`defer`: an object or array element found by orjson's window is yielded undecoded (`Item.text`, for
        `decode`): a re-import skips the ones it imported before from the same bytes without decoding them."""
        self._stream = stream
        self._defer = defer
        self._chunk = chunk
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self._json = json.JSONDecoder()
        self.max_item_bytes = max_item_bytes
        self._buf = ""
        self._base = 0  # byte offset of _buf[0]
        self._lines_before = 0  # newlines before _buf[0]
        self._column_before = 0  # characters between the last newline before _buf[0] and _buf[0]
        self._eof = False
        self._mark = (0, 0, 0, 0)  # last position asked for: (index, byte offset, newlines before, column)
        self._read_size = chunk
        self._start = 0  # buffer index where the current element starts (negative once dropped from)
        self._start_offset = 0  # its byte offset
        self._dropped = False  # whether part of it was forgotten for being too large
        self._window = _FIRST_WINDOW
        self.bytes_read = 0

    # -- buffer ---------------------------------------------------------------------------------

    def _more(self) -> bool:
        if self._eof:
            return False
        data = self._stream.read(self._read_size)
        try:
            text = self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            self._buf += data[: exc.start].decode("utf-8", "replace")  # to count lines and columns up to it
            raise JsonStreamError(
                "invalid UTF-8", self.bytes_read + exc.start, *self._where(len(self._buf))[1:]
            ) from exc
        self.bytes_read += len(data)
        if not data:
            self._eof = True
            return False
        self._buf += text
        return True

    def _drop(self, upto: int) -> None:
        """Forget buffer characters before index `upto`."""
        if upto <= 0:
            return
        self._position(upto)
        _, self._base, self._lines_before, self._column_before = self._mark
        self._buf = self._buf[upto:]
        self._mark = (0, self._base, self._lines_before, self._column_before)

    def _position(self, i: int) -> tuple[int, int, int]:
        """(byte offset, newlines before, characters since the line start) of buffer index `i`.

        Counted on from the last position asked for, so reading a file costs one pass over it.
        """
        at, offset, lines, column = self._mark
        if i < at:
            at, offset, lines, column = 0, self._base, self._lines_before, self._column_before
        segment = self._buf[at:i]
        newlines = segment.count("\n")
        column = len(segment) - segment.rfind("\n") - 1 if newlines else column + len(segment)
        offset += len(segment.encode("utf-8", "surrogatepass"))
        self._mark = (i, offset, lines + newlines, column)
        return offset, lines + newlines, column

    def _where(self, i: int) -> tuple[int, int, int]:
        """(byte offset, line, column) of buffer index `i`; line and column count from 1."""
        offset, lines, column = self._position(i)
        return offset, lines + 1, column + 1

    def _fail(self, message: str, i: int) -> JsonStreamError:
        return JsonStreamError(message, *self._where(i))

    def _skip_space(self, i: int) -> int:
        while True:
            n = len(self._buf)
            while i < n and self._buf[i] in _SPACE:
                i += 1
            if i < n:
                return i
            self._drop(i)
            i = 0
            if not self._more():
                return i

    # -- the careful path -----------------------------------------------------------------------

    def _need_more(self, i: int, what: str) -> int:
        """Read more while scanning at buffer index `i` (the end of the buffer); returns the new `i`.

        An element that has outgrown `max_item_bytes` is forgotten as it is scanned, so it never
        occupies more memory than that. Reads grow while one element goes on, so a huge element
        costs a few large reads rather than many buffer copies.
        """
        if (
            i - self._start > self.max_item_bytes // 4
            and self._position(i)[0] - self._start_offset > self.max_item_bytes
        ):
            self._dropped = True
            self._drop(i)
            self._start -= i
            i = 0
        self._read_size = min(self._read_size * 2, 64 * CHUNK)
        if not self._more():
            raise self._fail(f"unexpected end of file inside {what}", len(self._buf))
        return i

    def _scan_value(self, i: int) -> int:
        """Index just past the value starting at `i` (which is `self._start`)."""
        depth = 0
        if self._buf[i] not in "{[":
            # A scalar element: it runs to the next ',' or ']' at this level.
            while True:
                m = _SCALAR_END.search(self._buf, i)
                if m is None:
                    i = self._need_more(len(self._buf), "an array element")
                    continue
                if m.group() == '"':
                    i = self._scan_string(m.end())
                    continue
                return m.start()
        while True:
            m = _STRUCTURE.search(self._buf, i)
            if m is None:
                i = self._need_more(len(self._buf), "an array element")
                continue
            c = m.group()
            i = m.end()
            if c == '"':
                i = self._scan_string(i)
            elif c in "{[":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return i

    def _scan_string(self, i: int) -> int:
        """Index just past the closing quote of a string whose body starts at `i`."""
        whole = _STRING_BODY.match(self._buf, i)
        if whole is not None:
            return whole.end()
        # The string runs past the buffer (or is unterminated): find() chunk by chunk.
        while True:
            quote = self._buf.find('"', i)
            end = quote if quote >= 0 else len(self._buf)
            backslash = self._buf.find("\\", i, end)
            if backslash >= 0:
                # A backslash escapes the next character, which may not have arrived yet.
                i = backslash + 2
                while i > len(self._buf):
                    i = self._need_more(len(self._buf), "a string") + 1
                continue
            if quote >= 0:
                return quote + 1
            i = self._need_more(len(self._buf), "a string")

    # -- elements -------------------------------------------------------------------------------

    def _item(self, index: int, i: int) -> tuple[Item, int]:
        """The element starting at buffer index `i`, and the buffer index just past it."""
        offset, line, _ = self._where(i)
        self._read_size = self._chunk
        if self._buf[i] in "{[":
            fast = self._fast(i)
            if fast is not None:
                value, end = fast
                size = self._position(end)[0] - offset
                if size <= self.max_item_bytes:
                    text = self._buf[i:end]
                    found = _read_whole(Item(index=index, offset=offset, line=line, size=size), text)
                    if value is _DEFERRED:
                        found.text = text
                    else:
                        found.value = value
                    return found, end
            if len(self._buf) - i < self._chunk // 2:
                self._more()  # so that a typical element is whole before the fast attempt
            try:
                value, end = self._json.raw_decode(self._buf, i)
            except (ValueError, RecursionError):
                pass
            else:
                size = self._position(end)[0] - offset
                if size <= self.max_item_bytes:
                    found = Item(index=index, offset=offset, line=line, size=size, value=value)
                    return _read_whole(found, self._buf[i:end]), end
        self._start, self._start_offset, self._dropped = i, offset, False
        end = self._scan_value(i)
        size = self._position(end)[0] - offset
        if self._dropped or size > self.max_item_bytes:
            error = f"element is {size} bytes; the limit is {self.max_item_bytes} bytes"
            return Item(index=index, offset=offset, line=line, size=size, error=error), end
        item = Item(index=index, offset=offset, line=line, size=size)
        i = self._start
        try:
            item.value = json.loads(self._buf[i:end])
            _read_whole(item, self._buf[i:end])
        except (ValueError, RecursionError) as exc:
            where, line_at, column = self._where(i + getattr(exc, "pos", 0))
            message = _why(exc)
            item.error = f"malformed JSON: {message} at byte {where} (line {line_at}, column {column})"
        return item, end

    def _fast(self, i: int) -> tuple[Any, int] | None:
        """The value of the object or array starting at buffer index `i` and the index just past it, by orjson
        (see the module's docstring); None when orjson cannot say (the careful way decides then)."""
        window = self._window
        while True:
            while len(self._buf) - i < window and not self._eof:
                self._read_size = min(max(self._read_size, window), 64 * CHUNK)
                self._more()
            piece = self._buf[i : i + window]
            try:
                value = orjson.loads(piece)
            except orjson.JSONDecodeError as exc:
                if exc.msg == _TRAILING:
                    end = i + exc.pos
                    while self._buf[end - 1] in _SPACE:
                        end -= 1
                    if self._defer:
                        value = _DEFERRED
                        break
                    try:
                        value = orjson.loads(self._buf[i:end])
                    except orjson.JSONDecodeError:
                        return None
                    break
                # Cut short by the window: a larger one, while the element may still be within the limit (at most
                # `max_item_bytes` characters held for it, as the careful way holds at most that many bytes).
                if exc.msg == _CUT and len(piece) == window and window < self.max_item_bytes:
                    window = min(window * 2, self.max_item_bytes)
                    continue
                return None
            end = i + len(piece)
            while self._buf[end - 1] in _SPACE:
                end -= 1
            break
        # The next element likely fits in twice this one: one parse to find its end, one to read it (a window
        # past this one's size reads ahead at most _MAX_FIRST_WINDOW more).
        self._window = min(max(_FIRST_WINDOW, 2 * (end - i)), _MAX_FIRST_WINDOW)
        return value, end

    def __iter__(self) -> Iterator[Item]:
        i = self._skip_space(0)
        if i >= len(self._buf):
            raise self._fail("empty file: expected a JSON array", i)
        first = self._buf[i]
        if first == "{":
            item, end = self._item(0, i)
            yield item
            self._expect_end(end)
            return
        if first != "[":
            raise self._fail(f"expected '[' or '{{', found {first!r}", i)
        i = self._skip_space(i + 1)
        if self._buf[i : i + 1] == "]":
            self._expect_end(i + 1)
            return
        index = 0
        while True:
            if i >= len(self._buf):
                raise self._fail("unexpected end of file: the array is not closed", i)
            item, end = self._item(index, i)
            yield item
            index += 1
            if end > self._chunk:
                self._drop(end)
                end = 0
            i = self._skip_space(end)
            c = self._buf[i : i + 1]
            if c == "]":
                self._expect_end(i + 1)
                return
            if c != ",":
                if not c:
                    raise self._fail("unexpected end of file: the array is not closed", i)
                raise self._fail(f"expected ',' or ']' after an array element, found {c!r}", i)
            i = self._skip_space(i + 1)

    def _expect_end(self, i: int) -> None:
        i = self._skip_space(i)
        if i < len(self._buf):
            raise self._fail("unexpected data after the end of the JSON value", i)
