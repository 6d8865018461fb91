"""An S3-compatible object store for file bytes (THREADLINE_FILE_STORAGE=s3): path-style URLs
(`{endpoint}/{bucket}/{key}`, which MinIO, Ceph, Garage, R2 and AWS all accept) signed with AWS Signature
Version 4, over the httpx the project already has. Objects are named `{prefix}{tenant}/{sha256}`: immutable
and deduplicated like the blobs that name them."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from threadline.settings import Settings

if TYPE_CHECKING:
    import httpx

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
READ_BYTES = 1024 * 1024


class S3Error(RuntimeError):
    """The object store refused or failed a request."""


class S3Missing(S3Error):
    """The object store has no such object (404)."""


def object_key(settings: Settings, tenant_id: uuid.UUID, sha256: bytes) -> str:
    return f"{settings.file_s3_prefix}{tenant_id.hex}/{sha256.hex()}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    payload_sha256: str,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime,
) -> dict[str, str]:
    """The headers to send (given ones, host, x-amz-date, x-amz-content-sha256, Authorization) for a request
    signed with Signature Version 4 for service s3."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = payload_sha256
    names = sorted(signed)
    query = "&".join(
        sorted(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)
        )
    )
    canonical = "\n".join(
        [
            method,
            quote(unquote(parts.path) or "/", safe="/-_.~"),
            query,
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {n: signed[n] for n in names if n != "host"}
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


class ObjectStore:
    """The configured bucket."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.file_s3_endpoint and settings.file_s3_bucket):
            raise S3Error(
                "THREADLINE_FILE_STORAGE=s3 needs THREADLINE_FILE_S3_ENDPOINT and THREADLINE_FILE_S3_BUCKET"
            )
        self.settings = settings
        self.base = f"{settings.file_s3_endpoint.rstrip('/')}/{settings.file_s3_bucket}/"

    def _headers(
        self, method: str, url: str, payload_sha256: str, extra: Mapping[str, str] = {}
    ) -> dict[str, str]:
        settings = self.settings
        return sign(
            method,
            url,
            extra,
            payload_sha256,
            access_key=settings.file_s3_access_key or "",
            secret_key=settings.file_s3_secret_key or "",
            region=settings.file_s3_region,
            now=datetime.now(UTC),
        )

    def url(self, key: str) -> str:
        return self.base + key

    @staticmethod
    def _client() -> httpx.AsyncClient:
        """An HTTP client for one request. httpx is imported here, not at the top: every command of the CLI imports
        this module through the file stores (~30-60 ms), and only an S3 store's calls need it."""
        import httpx

        return httpx.AsyncClient(timeout=60)

    async def put(self, key: str, data: bytes, sha256_hex: str) -> None:
        url = self.url(key)
        headers = self._headers("PUT", url, sha256_hex, {"content-type": "application/octet-stream"})
        async with self._client() as client:
            response = await client.put(url, content=data, headers=headers)
        if response.status_code >= 300:
            raise S3Error(f"PUT {key}: {response.status_code} {response.text[:200]}")

    async def get(self, key: str) -> AsyncIterator[bytes]:
        url = self.url(key)
        headers = self._headers("GET", url, EMPTY_SHA256)
        async with (
            self._client() as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code == 404:
                raise S3Missing(f"GET {key}: 404")
            if response.status_code >= 300:
                raise S3Error(f"GET {key}: {response.status_code}")
            async for block in response.aiter_bytes(READ_BYTES):
                yield block

    async def delete(self, key: str) -> None:
        url = self.url(key)
        headers = self._headers("DELETE", url, EMPTY_SHA256)
        async with self._client() as client:
            response = await client.delete(url, headers=headers)
        if response.status_code >= 300 and response.status_code != 404:
            raise S3Error(f"DELETE {key}: {response.status_code}")
