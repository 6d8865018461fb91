"""API keys (random, stored as SHA-256) and HS256 JWTs."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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


def hash_subject(subject: str) -> str:
    """What the tombstone of an erased JWT subject keeps (never the subject itself)."""
    return hashlib.sha256(subject.encode()).hexdigest()


def _tenant_of(raw: object) -> uuid.UUID:
    tenant_raw = str(raw)
    parsed = parse_id(tenant_raw)
    try:
        return parsed[1] if parsed and parsed[0] is Kind.TENANT else uuid.UUID(tenant_raw)
    except ValueError as exc:
        raise unauthenticated("Invalid token: bad tenant claim") from exc


def tenant_secrets(pairs: Iterable[tuple[str, str]]) -> dict[uuid.UUID, str]:
    """THREADLINE_JWT_TENANT_SECRETS keyed by tenant (public `ten_` ids and raw UUIDs both accepted)."""
    secrets_by_tenant: dict[uuid.UUID, str] = {}
    for key, secret in pairs:
        try:
            secrets_by_tenant[_tenant_of(key)] = secret
        except ThreadlineError as exc:
            raise ValueError(f"THREADLINE_JWT_TENANT_SECRETS: {key!r} is not a tenant id") from exc
    return secrets_by_tenant


def decode_jwt(
    token: str,
    secret: str | None,
    issuer: str | None,
    audience: str | None,
    per_tenant: Mapping[uuid.UUID, str] | None = None,
) -> JwtClaims:
    """Verifies an HS256 token. The key is the tenant's own secret when it has one (`per_tenant`; then the
    global `secret` is not accepted for that tenant), else the global one. The tenant claim is read unverified
    only to pick the key; the signature then covers it."""
    import jwt  # here, not at the top: every command of the CLI imports this module (~25 ms)

    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise unauthenticated(f"Invalid token: {exc}") from exc
    if "tenant" not in unverified:
        raise unauthenticated('Invalid token: Token is missing the "tenant" claim')
    tenant_id = _tenant_of(unverified["tenant"])
    key = (per_tenant or {}).get(tenant_id) or secret
    if not key:
        raise unauthenticated("JWT authentication is not configured on this server")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            issuer=issuer,
            audience=audience,
            options={"require": ["sub", "tenant", "exp"], "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthenticated("Token expired") from exc
    except jwt.PyJWTError as exc:
        raise unauthenticated(f"Invalid token: {exc}") from exc
    try:
        role = Role(str(claims.get("role", "MEMBER")).upper())
    except ValueError as exc:
        raise unauthenticated("Invalid token: bad role claim") from exc
    subject = str(claims["sub"])
    if not subject or len(subject) > 255 or "\x00" in subject:
        raise unauthenticated("Invalid token: bad sub claim")
    email = claims.get("email")
    return JwtClaims(subject, tenant_id, role, str(email) if email else None)


def token_expiry(authorization: str | None) -> float | None:
    """The `exp` of a JWT bearer token (already verified by authentication); None for API keys."""
    token = (authorization or "").strip().partition(" ")[2].strip()
    if token.count(".") != 2:
        return None
    import jwt

    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if isinstance(exp, int | float) else None
