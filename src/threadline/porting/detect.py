"""Which export format a file is, from its first conversation's keys: `--format` may be left out.

A file is one conversation (an object) or an array of them; the keys of that object, or of the array's first
element, name the format at the first key that belongs to only one of them (SIGNATURES). A file is read as a
stream and only until that key: a few bytes for every real export, and never more than DETECT_MAX_BYTES
(values are skipped, not kept), so a huge file is never loaded to be recognised. The same rule reads a
decoded value (the API's `data`), so both say the same of the same JSON.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable
from typing import IO, Any

from threadline.porting.model import ImportFormat

# Keys that only one format has on a conversation (or, for Threadline, on its documents), in no order.
SIGNATURES: dict[str, ImportFormat] = {
    # ChatGPT: conversations.json entries.
    "mapping": ImportFormat.CHATGPT,
    "current_node": ImportFormat.CHATGPT,
    "default_model_slug": ImportFormat.CHATGPT,
    "create_time": ImportFormat.CHATGPT,
    "update_time": ImportFormat.CHATGPT,
    "conversation_template_id": ImportFormat.CHATGPT,
    "moderation_results": ImportFormat.CHATGPT,
    # Claude: conversations.json entries.
    "uuid": ImportFormat.CLAUDE,
    "chat_messages": ImportFormat.CLAUDE,
    "account": ImportFormat.CLAUDE,
    # LibreChat: one conversation per export file.
    "conversationId": ImportFormat.LIBRECHAT,
    "messagesTree": ImportFormat.LIBRECHAT,
    "exportAt": ImportFormat.LIBRECHAT,
    "recursive": ImportFormat.LIBRECHAT,
    # Open WebUI: chat export entries.
    "chat": ImportFormat.OPENWEBUI,
    "user_id": ImportFormat.OPENWEBUI,
    "share_id": ImportFormat.OPENWEBUI,
    "folder_id": ImportFormat.OPENWEBUI,
    # Threadline: a conversation document, or a user export ({metadata, user, conversations}).
    "metadata": ImportFormat.THREADLINE,
    "artifacts": ImportFormat.THREADLINE,
    "runs": ImportFormat.THREADLINE,
    "conversations": ImportFormat.THREADLINE,
}
DETECT_MAX_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024
_KEY_MAX_CHARS = 64  # longer keys are no signature: not kept while scanning
_TOKEN = re.compile(r'["{}\[\],:]')
_FORMATS = ", ".join(f.value for f in ImportFormat)
# Byte order marks of the encodings JSON text may not be in (RFC 8259: UTF-8); UTF-32's first, as they begin alike.
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class UnknownFormat(ValueError):
    """The format could not be told: the message says why and what to do."""


def _unknown(why: str) -> UnknownFormat:
    return UnknownFormat(f"cannot tell the export format: {why}; name the format (one of {_FORMATS})")


def from_keys(keys: Iterable[Any]) -> ImportFormat | None:
    for key in keys:
        found = SIGNATURES.get(key) if isinstance(key, str) else None
        if found is not None:
            return found
    return None


def detect_value(value: Any) -> ImportFormat:
    """The format of decoded JSON: a conversation object, or an array whose first element is one."""
    first = value
    if isinstance(value, list):
        if not value:
            raise _unknown("the data holds no conversation")
        first = value[0]
    if not isinstance(first, dict):
        where = "the first element" if isinstance(value, list) else "the data"
        raise _unknown(f"{where} is a JSON {type(first).__name__}, not an object")
    found = from_keys(first)
    if found is None:
        raise _unknown(f"no key of the first conversation is known ({_listed(first)})")
    return found


def detect_stream(stream: IO[bytes], max_bytes: int = DETECT_MAX_BYTES) -> ImportFormat:
    """The format of a file, read from its start only until a signature key (at most `max_bytes`)."""
    return _Scanner(stream, max_bytes).detect()


def _listed(keys: Iterable[Any]) -> str:
    shown = [str(k)[:_KEY_MAX_CHARS] for k in list(keys)[:8]]
    return "keys: " + ", ".join(shown) if shown else "it has no keys"


def _unescaped(key: str) -> str:
    """A key as JSON means it (`"\\u0075uid"` is uuid, as the decoded value the API reads has it); a key cut
    short inside an escape stays as written (no key that long is a signature)."""
    if "\\" not in key:
        return key
    try:
        decoded = json.loads(f'"{key}"')
    except ValueError:
        return key
    return decoded if isinstance(decoded, str) else key


class _Scanner:
    """Just enough of a JSON tokenizer to see the keys of the first conversation object, skipping values."""

    def __init__(self, stream: IO[bytes], max_bytes: int) -> None:
        self._stream = stream
        self._max = max_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")("replace")
        self._buf = ""
        self._i = 0
        self._read = 0
        self._eof = False

    def _more(self) -> bool:
        if self._eof:
            return False
        if self._read >= self._max:
            raise _unknown(f"no known key in the first {self._max} bytes")
        data = self._stream.read(min(_CHUNK, self._max - self._read))
        if self._read == 0 and (data.startswith(_WIDE_BOMS) or b"\x00" in data[:4]):
            # Decoded as UTF-8 it was "not a JSON object or array", and the import "invalid UTF-8 at byte 0".
            raise _unknown(
                "the file is UTF-16 or UTF-32 text, and exports are read as UTF-8: save it as UTF-8"
            )
        self._read += len(data)
        if not data:
            self._eof = True
            self._buf = self._buf[self._i :] + self._utf8.decode(b"", final=True)
            self._i = 0
            return False
        # Only the unread part is kept: memory stays at a chunk (or one long key) whatever the file.
        self._buf = self._buf[self._i :] + self._utf8.decode(data)
        self._i = 0
        return True

    def _next_char(self) -> str:
        """The next character that is not white space ('' at the end of the file)."""
        while True:
            while self._i < len(self._buf) and self._buf[self._i] in " \t\r\n":
                self._i += 1
            if self._i < len(self._buf):
                return self._buf[self._i]
            if not self._more():
                return ""

    def _token(self) -> str:
        """Advance to the next structural character (or a string's opening quote) and return it."""
        while True:
            match = _TOKEN.search(self._buf, self._i)
            if match is not None:
                self._i = match.start()
                return match.group()
            self._i = len(self._buf)
            if not self._more():
                return ""

    def _string(self) -> str:
        """The string starting at the quote under the cursor (only its first characters for a long one).

        The cursor stays on the quote while more is read, so the buffer keeps the string; each character
        is looked at once (a closing quote is the first one after an even run of backslashes)."""
        start = self._i + 1
        at = start
        while True:
            quote = self._buf.find('"', at)
            if quote < 0:
                shift, scanned = self._i, len(self._buf)
                if not self._more():
                    raise _unknown("the file ends inside a string")
                start, at = start - shift, scanned - shift
                continue
            back = quote - 1
            while back >= start and self._buf[back] == "\\":
                back -= 1
            if (quote - 1 - back) % 2 == 0:
                value = self._buf[start : min(quote, start + _KEY_MAX_CHARS + 1)]
                self._i = quote + 1
                return value
            at = quote + 1

    def detect(self) -> ImportFormat:
        first = self._next_char()
        if first == "[":
            self._i += 1
            first = self._next_char()
            if first == "]":
                raise _unknown("the file holds an empty array: no conversation")
            if first != "{":
                raise _unknown("the array's first element is not an object")
        elif first != "{":
            raise _unknown("the file is not a JSON object or array" if first else "the file is empty")
        self._i += 1
        keys: list[str] = []
        depth = 0  # nesting inside the conversation object's values
        expect_key = True
        while True:
            token = self._token()
            if not token:
                raise _unknown(f"the file ends inside the first conversation ({_listed(keys)})")
            if token == '"':
                value = self._string()
                if depth == 0 and expect_key:
                    value = _unescaped(value)
                    found = SIGNATURES.get(value)
                    if found is not None:
                        return found
                    keys.append(value)
                    expect_key = False
                continue
            self._i += 1
            if token in "{[":
                depth += 1
            elif token in "}]":
                if depth == 0:
                    raise _unknown(f"no key of the first conversation is known ({_listed(keys)})")
                depth -= 1
            elif token == "," and depth == 0:
                expect_key = True
