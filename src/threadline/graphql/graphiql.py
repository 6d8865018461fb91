"""GraphiQL served from the package (development mode): the page and the assets it loads, no CDN.

strawberry's page loads seven files from unpkg, so a machine without internet (air-gapped and most corporate
networks) shows "Loading..." forever. Ours loads the same files from static/graphiql/ (see its README for
where they come from), and asks for the API key once, in a field of its own (threadline.graphql.graphiql.html).
"""

from __future__ import annotations

import functools
import hashlib
import html
import os
from pathlib import Path

from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
PAGE_TEMPLATE = Path(__file__).parent / "graphiql.html"
STATIC_PATH = "/graphql/static/graphiql"  # where app.py mounts STATIC_DIR (development mode only)

# Template placeholder -> file under STATIC_DIR.
ASSETS = {
    "react": "react-18.2.0/react.production.min.js",
    "react_dom": "react-dom-18.2.0/react-dom.production.min.js",
    "graphiql_js": "graphiql-3.8.3/graphiql.min.js",
    "graphiql_css": "graphiql-3.8.3/graphiql.min.css",
    "explorer_js": "plugin-explorer-1.0.2/index.umd.js",
    "explorer_css": "plugin-explorer-1.0.2/style.css",
}

# The page may load and connect to this server only: what a CDN URL would need is refused by the browser too.
# Inline script and styles: the page's own script, and the styles GraphiQL's components set.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)

# Asset URLs carry a hash of the file (`?v=`), so a browser may keep them for a year: an upgraded file has a
# new URL.
IMMUTABLE = "public, max-age=31536000, immutable"


@functools.cache
def _asset_versions() -> dict[str, str]:
    return {rel: hashlib.sha256((STATIC_DIR / rel).read_bytes()).hexdigest()[:16] for rel in ASSETS.values()}


@functools.cache
def _template() -> str:
    return PAGE_TEMPLATE.read_text(encoding="utf-8")


def page(graphql_path: str) -> str:
    """The GraphiQL page for the endpoint at `graphql_path` (the request's path, so a proxy prefix holds)."""
    base = graphql_path.rstrip("/") + STATIC_PATH.removeprefix("/graphql")
    text = _template()
    versions = _asset_versions()
    for name, rel in ASSETS.items():
        text = text.replace("{{" + name + "}}", html.escape(f"{base}/{rel}?v={versions[rel]}"))
    return text


def page_response(graphql_path: str) -> HTMLResponse:
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"}
    return HTMLResponse(page(graphql_path), headers=headers)


class _CachedStaticFiles(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = IMMUTABLE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def static_files() -> StaticFiles:
    """The ASGI app serving STATIC_DIR (mounted at STATIC_PATH)."""
    return _CachedStaticFiles(directory=STATIC_DIR)
