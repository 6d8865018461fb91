"""Reads the elements of a top-level JSON array one at a time, from a binary stream of any size.

Exports are often hundreds of megabytes: loading them whole would need several times that in memory.
The reader scans the stream in chunks, cuts out each element's bytes (string-aware bracket matching)
and decodes only that element with orjson, so memory is bounded by the largest element and an element
that is larger than `max_item_bytes` is skipped without being kept. A malformed element is reported
with its exact byte offset, line and column, and the reader goes on with the next one; a stream that
ends early or breaks the array's own syntax stops the reader with an error that says where.

A top-level object (a single Threadline export) is read as a one-element array.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

_STRUCTURE = re.compile(rb'["\[\]{}]')
_SCALAR_END = re.compile(rb'[,\]"]')
# A whole string body and its closing quote in one C-level match (possessive: never backtracks).
_STRING_BODY = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)
_SPACE = b" \t\r\n"
CHUNK = 1 << 20


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
    offset: int  # byte offset of the element's first byte
    line: int
    size: int
    value: Any = None
    error: str | None = None


class JsonArrayReader:
    def __init__(self, stream: IO[bytes], *, max_item_bytes: int, chunk: int = CHUNK) -> None:
        self._stream = stream
        self._chunk = chunk
        self.max_item_bytes = max_item_bytes
        self._buf = bytearray()
        self._base = 0  # file offset of _buf[0]
        self._lines_before = 0  # newlines before _buf[0]
        self._line_start = 0  # file offset where the line containing _buf[0] starts
        self._eof = False
        self._start = 0  # buffer index where the current element starts (negative once dropped from)
        self._dropped = False
        self.bytes_read = 0

    # -- buffer ---------------------------------------------------------------------------------

    def _more(self) -> bool:
        if self._eof:
            return False
        data = self._stream.read(self._chunk)
        if not data:
            self._eof = True
            return False
        self.bytes_read += len(data)
        self._buf += data
        return True

    def _drop(self, upto: int) -> None:
        """Forget buffer bytes before `upto` (a buffer index)."""
        if upto <= 0:
            return
        self._lines_before += self._buf.count(b"\n", 0, upto)
        last = self._buf.rfind(b"\n", 0, upto)
        if last >= 0:
            self._line_start = self._base + last + 1
        self._base += upto
        del self._buf[:upto]

    def _where(self, i: int) -> tuple[int, int, int]:
        """(offset, line, column) of buffer index `i`, 1-based line and column."""
        line = self._lines_before + self._buf.count(b"\n", 0, i) + 1
        last = self._buf.rfind(b"\n", 0, i)
        line_start = self._base + last + 1 if last >= 0 else self._line_start
        return self._base + i, line, self._base + i - line_start + 1

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

    # -- elements -------------------------------------------------------------------------------

    def _need_more(self, i: int, what: str) -> int:
        """Read more bytes while scanning at buffer index `i` (the end of the buffer); returns the new `i`.

        An element that has outgrown `max_item_bytes` is forgotten as it is scanned, so it never
        occupies more memory than that.
        """
        if i - self._start > self.max_item_bytes:
            self._dropped = True
            self._drop(i)
            self._start -= i
            i = 0
        if not self._more():
            raise self._fail(f"unexpected end of file inside {what}", len(self._buf))
        return i

    def _scan_value(self, i: int) -> int:
        """Index just past the value starting at `i` (which is `self._start`)."""
        depth = 0
        if self._buf[i : i + 1] not in (b"{", b"["):
            # A scalar element: it runs to the next ',' or ']' at this level.
            while True:
                m = _SCALAR_END.search(self._buf, i)
                if m is None:
                    i = self._need_more(len(self._buf), "an array element")
                    continue
                if m.group() == b'"':
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
            if c == b'"':
                i = self._scan_string(i)
            elif c in (b"{", b"["):
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
        # The string runs past the buffer (or is unterminated): memchr-speed search, chunk by chunk.
        while True:
            quote = self._buf.find(b'"', i)
            end = quote if quote >= 0 else len(self._buf)
            backslash = self._buf.find(b"\\", i, end)
            if backslash >= 0:
                # A backslash escapes the next byte, which may not have arrived yet.
                i = backslash + 2
                while i > len(self._buf):
                    i = self._need_more(len(self._buf), "a string") + 1
                continue
            if quote >= 0:
                return quote + 1
            i = self._need_more(len(self._buf), "a string")

    def _item(self, index: int, i: int) -> tuple[Item, int]:
        """The element starting at buffer index `i`, and the buffer index just past it."""
        offset, line, _ = self._where(i)
        self._start = i
        self._dropped = False
        end = self._scan_value(i)
        size = self._base + end - offset
        if self._dropped:
            error = f"element is {size} bytes; the limit is {self.max_item_bytes} bytes"
            return Item(index=index, offset=offset, line=line, size=size, error=error), end
        return self._decode(index, i, end), end

    def _decode(self, index: int, start: int, end: int) -> Item:
        offset, line, _ = self._where(start)
        raw = bytes(self._buf[start:end])
        item = Item(index=index, offset=offset, line=line, size=end - start)
        try:
            item.value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            at = start + len(raw.decode("utf-8", "replace")[: exc.pos].encode("utf-8", "replace"))
            where, line_at, column = self._where(min(at, len(self._buf)))
            item.error = f"malformed JSON: {exc.msg} at byte {where} (line {line_at}, column {column})"
        return item

    def __iter__(self) -> Iterator[Item]:
        i = self._skip_space(0)
        if i >= len(self._buf):
            raise self._fail("empty file: expected a JSON array", i)
        if self._buf.startswith(b"\xef\xbb\xbf", i):
            i = self._skip_space(i + 3)
        first = self._buf[i : i + 1]
        if first == b"{":
            item, end = self._item(0, i)
            yield item
            self._expect_end(end)
            return
        if first != b"[":
            raise self._fail(f"expected '[' or '{{', found {first.decode('latin-1')!r}", i)
        i = self._skip_space(i + 1)
        if self._buf[i : i + 1] == b"]":
            self._expect_end(i + 1)
            return
        index = 0
        while True:
            if i >= len(self._buf):
                raise self._fail("unexpected end of file: the array is not closed", i)
            item, end = self._item(index, i)
            yield item
            index += 1
            self._drop(end)
            i = self._skip_space(0)
            c = self._buf[i : i + 1]
            if c == b"]":
                self._expect_end(i + 1)
                return
            if c != b",":
                if not c:
                    raise self._fail("unexpected end of file: the array is not closed", i)
                raise self._fail(f"expected ',' or ']' after an array element, found {c.decode('latin-1')!r}", i)
            i = self._skip_space(i + 1)

    def _expect_end(self, i: int) -> None:
        i = self._skip_space(i)
        if i < len(self._buf):
            raise self._fail("unexpected data after the end of the JSON value", i)
