"""`POST /files` (a multipart upload, field `file`) and `GET /files/{id}` (the download).

An upload is refused with 413 as soon as it is known to be too big: from its Content-Length before a byte of
the body is read, else while streaming it. The bytes are hashed and sniffed as they arrive and kept in a
spooled temporary file (memory up to 1 MiB, then disk) until stored. Downloads are always attachments
(`Content-Disposition: attachment`, `nosniff`, a sandboxing CSP): a file never renders as a page of this origin.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from threadline.auth.principal import Principal
from threadline.auth.service import authenticate
from threadline.db.database import database_unavailable
from threadline.errors import (
    UNAVAILABLE_RETRY_AFTER_SECONDS,
    ErrorCode,
    ThreadlineError,
    bad_input,
    not_found,
)
from threadline.files import service
from threadline.files.sniff import SNIFF_BYTES, sniff
from threadline.ids import Kind, encode_id, parse_id
from threadline.ratelimits.service import RateLimited
from threadline.ratelimits.service import spend as spend_budget

FIELD = "file"
# Room for the multipart framing (boundaries, part headers, other small fields) around the file itself.
FRAMING_BYTES = 64 * 1024
SPOOL_MEMORY_BYTES = 1024 * 1024
STATUS = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.CONTENT_UNAVAILABLE: 410,
}


def error(exc: ThreadlineError, status: int | None = None) -> JSONResponse:
    body = {"errors": [{"message": exc.message, "extensions": {"code": exc.code.value, **exc.extensions}}]}
    response = JSONResponse(body, status_code=status or STATUS.get(exc.code, 400))
    if exc.code is ErrorCode.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = "Bearer"
    retry_after = exc.extensions.get("retryAfter")
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def too_large(limit: int) -> JSONResponse:
    return error(
        service.TooLarge(
            f"The file is larger than {limit} bytes (THREADLINE_FILE_MAX_BYTES)", "fileBytes", limit
        ),
        413,
    )


async def _caller(request: Request) -> Principal:
    services = request.app.state.services
    return await authenticate(services.db, services.settings, request.headers.get("authorization"))


class _Reader:
    """Collects the `file` part of a multipart body: name, size, checksum, first bytes and the bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spool: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)
        self.hasher = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.filename: str | None = None
        self.found = False
        self.too_large = False
        self._in_file = False
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._add("_header_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._add("_header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _part_begin(self) -> None:
        self._disposition = b""
        self._in_file = False

    def _header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if options.get(b"name") == FIELD.encode() and not self.found:
            self.found = True
            self._in_file = True
            raw = options.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file or self.too_large:
            return
        block = data[start:end]
        self.size += len(block)
        if self.size > self.limit:
            self.too_large = True
            return
        if len(self.head) < SNIFF_BYTES:
            self.head += block[: SNIFF_BYTES - len(self.head)]
        self.hasher.update(block)
        self.spool.write(block)

    def _part_end(self) -> None:
        self._in_file = False


async def upload(request: Request) -> Response:
    services = request.app.state.services
    settings = services.settings
    limit = settings.file_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FRAMING_BYTES:
        return too_large(limit)  # before reading a byte of the body
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    spool: Any = None
    try:
        principal = await _caller(request)
        if settings.rate_limit_enabled:
            await spend_budget(services.db, settings, principal, {"requests": 1, "mutations": 1})
        if media_type != b"multipart/form-data" or not boundary:
            return error(bad_input("Send the file as multipart/form-data, in a field named `file`"), 415)
        reader = _Reader(limit)
        spool = reader.spool
        parser = MultipartParser(boundary, reader.callbacks())
        received = 0
        async for block in request.stream():
            received += len(block)
            if received > limit + FRAMING_BYTES:
                return too_large(limit)
            parser.write(block)
            if reader.too_large:
                return too_large(limit)
        parser.finalize()
        if not reader.found:
            return error(bad_input("The multipart body has no field named `file`", argument="file"))
        stored = service.Upload(
            filename=service.clean_filename(reader.filename),
            size=reader.size,
            sha256=reader.hasher.digest(),
            content_type=sniff(reader.head),
            spool=reader.spool,
        )
        row, deduplicated = await service.store(services.db, settings, principal, stored)
    except service.TooLarge as exc:
        return error(exc, 413)
    except (RateLimited, ThreadlineError) as exc:
        return error(exc)
    except Exception as exc:
        if database_unavailable(exc):
            return _unavailable()
        if type(exc).__module__.startswith("python_multipart"):
            return error(bad_input(f"Malformed multipart body: {exc}"))
        raise
    finally:
        if spool is not None:
            spool.close()  # in memory or a temporary file on disk: gone either way
    return JSONResponse(describe(row, deduplicated), status_code=201)


def describe(row: Any, deduplicated: bool | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": encode_id(Kind.FILE, row["id"]),
        "filename": row["filename"],
        "contentType": row["content_type"],
        "size": row["size"],
        "sha256": bytes(row["sha256"]).hex(),
        "url": f"/files/{encode_id(Kind.FILE, row['id'])}",
    }
    if deduplicated is not None:
        body["deduplicated"] = deduplicated
    return body


def _unavailable() -> JSONResponse:
    exc = ThreadlineError(
        ErrorCode.UNAVAILABLE,
        "The database is unavailable; retry later",
        retryAfter=UNAVAILABLE_RETRY_AFTER_SECONDS,
    )
    return error(exc, 503)


def disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact name in RFC 5987 form."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def download(request: Request) -> Response:
    services = request.app.state.services
    parsed = parse_id(request.path_params["file_id"])
    try:
        principal = await _caller(request)
        if services.settings.rate_limit_enabled:
            await spend_budget(services.db, services.settings, principal, {"requests": 1})
        if parsed is None or parsed[0] is not Kind.FILE:
            raise not_found("File")
        row = await service.readable(services.db, principal, parsed[1])
    except ThreadlineError as exc:
        return error(exc)
    except Exception as exc:
        if database_unavailable(exc):
            return _unavailable()
        raise
    digest = bytes(row["sha256"]).hex()
    headers = {
        "Content-Disposition": disposition(row["filename"]),
        "Content-Length": str(row["size"]),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-cache",
        "ETag": f'"{digest}"',
    }
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers={k: v for k, v in headers.items() if k != "Content-Length"})
    blocks = service.read_bytes(services.db, services.settings, row)
    try:  # the first block read before answering: bytes whose key was shredded are a 410, not a cut stream
        first = await anext(blocks, b"")
    except ThreadlineError as exc:
        return error(exc)

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for block in blocks:
            yield block

    return StreamingResponse(body(), media_type=row["content_type"], headers=headers)
