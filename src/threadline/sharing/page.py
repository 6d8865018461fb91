"""`GET /share/{token}`: a shared conversation as a small server-rendered page, or as JSON for
`Accept: application/json`.

The page loads nothing: no script, no image, no font, one inline style allowed by its hash in a strict
Content-Security-Policy. The token is in the URL, so the page sends no referrer and is neither cached nor
indexed. Anything that does not open (unknown, revoked, expired) is the same 404.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import re
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from threadline.db.database import database_unavailable
from threadline.errors import UNAVAILABLE_RETRY_AFTER_SECONDS, ErrorCode, ThreadlineError
from threadline.ids import Kind, encode_id
from threadline.ratelimits import addresses
from threadline.sharing import service

STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:0 auto;padding:1rem;color:#1a1a1a;"
    "background:#fff}header p,footer{color:#555;font-size:.875rem}article{border-left:3px solid #ccc;"
    "margin:1rem 0;padding:.25rem .75rem}article.assistant{border-color:#2b6cb0}article.user{border-color:#2f855a}"
    "h2{font-size:.875rem;margin:0;text-transform:uppercase;letter-spacing:.05em;color:#444}"
    ".content{white-space:pre-wrap;overflow-wrap:anywhere}.deleted{font-style:italic;color:#777}"
    "@media (prefers-color-scheme:dark){body{background:#111;color:#eee}h2,header p,footer{color:#aaa}}"
    # Replies are indented by depth (the page may not use style attributes: the policy allows this sheet only).
    + "".join(f'article[data-depth="{d}"]{{margin-left:{d}rem}}' for d in range(1, 13))
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Vary": "Accept",
}
_TOKEN_IN_PATH = re.compile(r"^/share/[^/?#]+")


class RedactShareTokens(logging.Filter):
    """A link's token is its credential: uvicorn's access log shows `/share/…` without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _TOKEN_IN_PATH.sub("/share/…", args[2]), *args[3:])
        return True


logging.getLogger("uvicorn.access").addFilter(RedactShareTokens())
# The page's bound besides THREADLINE_SHARE_PAGE_MAX_MESSAGES: characters of message text it holds.
PAGE_MAX_BYTES = 4 * 1024 * 1024
READ_BATCH = 100
ROLE_NAMES = {"USER": "User", "ASSISTANT": "Assistant", "SYSTEM": "System", "TOOL": "Tool"}


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=HEADERS)


def _message_html(row: Any) -> str:
    role = ROLE_NAMES.get(row["role"], row["role"].title())
    deleted = row["deleted_at"] is not None
    text = (
        '<p class="content deleted">This message was deleted.</p>'
        if deleted
        else (f'<div class="content">{html.escape(row["content"])}</div>')
    )
    model = f" ({html.escape(row['model'])})" if row["model"] and not deleted else ""
    indent = min(row["depth"], 12)
    when = row["created_at"].isoformat(timespec="seconds")
    return (
        f'<article class="{row["role"].lower()}" aria-label="{role} message" data-depth="{indent}">'
        f'<h2>{role}{model} <time datetime="{when}">{when}</time></h2>{text}</article>'
    )


def _json_message(row: Any) -> dict[str, Any]:
    deleted = row["deleted_at"] is not None
    return {
        "id": encode_id(Kind.MESSAGE, row["id"]),
        "parentId": encode_id(Kind.MESSAGE, row["parent_id"]) if row["parent_id"] else None,
        "depth": row["depth"],
        "role": row["role"],
        "content": "" if deleted else row["content"],
        "isDeleted": deleted,
        "model": row["model"],
        "createdAt": _iso(row["created_at"]),
        "editedAt": _iso(row["edited_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _refusal(request: Request, exc: ThreadlineError) -> Response:
    status = {ErrorCode.NOT_FOUND: 404, ErrorCode.RATE_LIMITED: 429}.get(exc.code, 400)
    headers = dict(HEADERS)
    retry_after = exc.extensions.get("retryAfter")
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if wants_json(request):
        refusal = {
            "errors": [{"message": exc.message, "extensions": {"code": exc.code.value, **exc.extensions}}]
        }
        return JSONResponse(refusal, status_code=status, headers=headers)
    text = (
        "This link does not exist, has expired or was revoked."
        if exc.code is ErrorCode.NOT_FOUND
        else "Too many reads of this page; try again in a minute."
    )
    response = _page("Not shared", f"<main><h1>Not shared</h1><p>{text}</p></main>", status)
    response.headers.update(headers)
    return response


async def _page_rows(db: Any, shared: service.Shared, limit: int) -> tuple[list[Any], bool]:
    """Up to `limit` messages and PAGE_MAX_BYTES of their text, read a page at a time (a message may be 1 MiB:
    500 of them must not be read, or sent, at once); True when more were left out."""
    rows: list[Any] = []
    size = 0
    after = 0
    while True:
        want = min(READ_BATCH, limit - len(rows))
        batch = await service.messages_page(db, shared, after, want + 1)
        for row in batch[:want]:
            size += len(row["content"])
            if size > PAGE_MAX_BYTES and rows:
                return rows, True
            rows.append(row)
        if len(batch) <= want:  # the share holds no more
            return rows, False
        if len(rows) >= limit:  # the extra row says more exist
            return rows, True
        after = rows[-1]["seq"]


async def share_page(request: Request) -> Response:
    services = request.app.state.services
    settings = services.settings
    token = request.path_params["token"]
    address = addresses.counted(request)  # an IPv6 client by its /64, as every per-address window counts
    try:
        shared = await service.open_link(services.db, settings, token, address, count=True)
        limit = settings.share_page_max_messages
        rows, truncated = await _page_rows(services.db, shared, limit)
    except ThreadlineError as exc:
        return _refusal(request, exc)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        unavailable = {
            "errors": [
                {
                    "message": "The database is unavailable; retry later",
                    "extensions": {
                        "code": ErrorCode.UNAVAILABLE.value,
                        "retryAfter": UNAVAILABLE_RETRY_AFTER_SECONDS,
                    },
                }
            ]
        }
        return JSONResponse(unavailable, 503, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})
    link = shared.link
    if wants_json(request):
        return JSONResponse(
            {
                "title": shared.title,
                "live": link["live"],
                "sharedAt": _iso(link["created_at"]),
                "expiresAt": _iso(link["expires_at"]),
                "messages": [_json_message(r) for r in rows],
                "truncated": truncated,
            },
            headers=HEADERS,
        )
    shared_at = link["created_at"].isoformat(timespec="seconds")
    kind = "Live view" if link["live"] else f'Snapshot from <time datetime="{shared_at}">{shared_at}</time>'
    more = (
        f"<footer><p>Showing the first {len(rows)} messages; the rest is in the API "
        "(<code>sharedConversation</code>).</p></footer>"
        if truncated
        else ""
    )
    body = (
        f"<header><h1>{html.escape(shared.title or 'Shared conversation')}</h1><p>Shared conversation · {kind}"
        f" · {len(rows)} messages</p></header><main>{''.join(_message_html(r) for r in rows)}</main>{more}"
    )
    return _page(shared.title or "Shared conversation", body)
