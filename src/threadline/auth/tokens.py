"""API keys (random, stored as SHA-256) and HS256 JWTs."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import jwt

from threadline.auth.principal import Role
from threadline.errors import ErrorCode, ThreadlineError
from threadline.ids import Kind, parse_id

API_KEY_PREFIX = "tlk_"


def new_api_key() -> tuple[str, str, str]:
    """(plaintext, sha256 hex, display prefix). Only the hash is stored; the plaintext is shown once."""
    plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, hash_api_key(plaintext), plaintext[:12]


def hash_api_key(plaintext: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(plaintext.encode()).hexdigest()


def unauthenticated(message: str = "Missing or invalid credentials") -> ThreadlineError:
    return ThreadlineError(ErrorCode.UNAUTHENTICATED, message)


@dataclass(frozen=True)
class JwtClaims:
    subject: str
    tenant_id: uuid.UUID
    role: Role
    email: str | None


def decode_jwt(token: str, secret: str | None, issuer: str | None, audience: str | None) -> JwtClaims:
    if not secret:
        raise unauthenticated("JWT authentication is not configured on this server")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=issuer,
            audience=audience,
            options={"require": ["sub", "tenant", "exp"], "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthenticated("Token expired") from exc
    except jwt.PyJWTError as exc:
        raise unauthenticated(f"Invalid token: {exc}") from exc
    tenant_raw = str(claims["tenant"])
    parsed = parse_id(tenant_raw)
    try:
        tenant_id = parsed[1] if parsed and parsed[0] is Kind.TENANT else uuid.UUID(tenant_raw)
    except ValueError as exc:
        raise unauthenticated("Invalid token: bad tenant claim") from exc
    try:
        role = Role(str(claims.get("role", "MEMBER")).upper())
    except ValueError as exc:
        raise unauthenticated("Invalid token: bad role claim") from exc
    subject = str(claims["sub"])
    if not subject or len(subject) > 255 or "\x00" in subject:
        raise unauthenticated("Invalid token: bad sub claim")
    email = claims.get("email")
    return JwtClaims(subject, tenant_id, role, str(email) if email else None)
