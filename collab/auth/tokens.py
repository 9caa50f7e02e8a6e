"""Access and refresh tokens: HS256 JWTs made and checked by :class:`TokenCodec`.

A token carries ``iss``, ``aud``, ``sub`` (user id), ``sid`` (session id),
``jti``, ``typ`` (``"access"`` or ``"refresh"``), ``iat``, ``exp`` and, for
refresh tokens only, ``gen`` (the refresh generation, used upstream to detect
reuse). The codec only proves that a token is ours, intact, of the expected
type and not expired; revocation (session ended, refresh jti already used) is
checked by the caller against storage.

Every rejection raises ``Unauthenticated("Invalid or expired token")``: the
same message whatever failed, with no chained cause, so a client learns nothing
about which check it tripped. Pure and synchronous: no I/O, time comes from the
injected clock.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from collab.errors import Unauthenticated

__all__ = ["MAX_TOKEN_CHARS", "TokenClaims", "TokenCodec", "TokenType"]

TokenType = Literal["access", "refresh"]

MAX_TOKEN_CHARS = 4096
VERIFIED_CACHE_ENTRIES = 4096  # access tokens remembered as verified (per process)
MIN_SECRET_BYTES = 32
_ALGORITHM = "HS256"
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti", "sid", "typ"]
_INVALID = "Invalid or expired token"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified content of a token. ``generation`` is 0 for access tokens."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    jti: str
    token_type: TokenType
    issued_at: int
    expires_at: int
    generation: int


class TokenCodec:
    """Issues and verifies this server's JWTs.

    Owns the HMAC secret (at least 32 bytes), the issuer, the audience, both
    lifetimes and the clock. Guarantees: only HS256 tokens signed with the
    secret, for this issuer and audience, of the expected ``typ``, with every
    required claim well formed and ``iat <= now < exp`` by the injected clock
    (no leeway) decode; anything else raises :class:`Unauthenticated` with one
    generic message.
    """

    def __init__(
        self,
        *,
        secret: bytes,
        issuer: str,
        audience: str,
        access_ttl_s: int,
        refresh_ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes")
        if access_ttl_s <= 0 or refresh_ttl_s <= 0:
            raise ValueError("token lifetimes must be positive")
        if not issuer or not audience:
            raise ValueError("issuer and audience must not be empty")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._access_ttl_s = access_ttl_s
        self._refresh_ttl_s = refresh_ttl_s
        self._clock = clock
        # Access tokens verified before: the same token arrives with every request of a
        # client, and its HMAC and claims checks cost more than the rest of the
        # authentication. Keyed by the whole token (a changed byte misses); the time
        # window is checked again on every hit.
        self._verified: dict[str, TokenClaims] = {}

    @staticmethod
    def new_jti() -> str:
        """A fresh random token id (192 bits, URL-safe)."""
        return secrets.token_urlsafe(24)

    def issue_access(self, user_id: uuid.UUID, session_id: uuid.UUID) -> tuple[str, TokenClaims]:
        """Sign a new access token with a fresh jti; return it and its claims."""
        return self._issue(user_id, session_id, self.new_jti(), "access", self._access_ttl_s, 0)

    def issue_refresh(
        self, user_id: uuid.UUID, session_id: uuid.UUID, jti: str, generation: int
    ) -> tuple[str, TokenClaims]:
        """Sign a refresh token with the caller's jti and generation (>= 0)."""
        if not jti:
            raise ValueError("jti must not be empty")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError("generation must be a non-negative int")
        return self._issue(user_id, session_id, jti, "refresh", self._refresh_ttl_s, generation)

    def decode(self, token: str, expected_type: TokenType) -> TokenClaims:
        """Verify ``token`` and return its claims, or raise ``Unauthenticated``."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(_INVALID)
        known = self._verified.get(token) if expected_type == "access" else None
        if known is not None:
            if known.issued_at <= self._clock() < known.expires_at:
                return known
            del self._verified[token]
            raise Unauthenticated(_INVALID)
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=0,
                options={
                    "require": _REQUIRED,
                    "strict_aud": True,
                    # PyJWT reads the wall clock; time checks are ours, on self._clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, RecursionError):
            # Attacker-controlled input: any failure in the library is "invalid".
            raise Unauthenticated(_INVALID) from None
        claims = self._claims_from(payload, expected_type)
        if claims is None:
            raise Unauthenticated(_INVALID)
        if expected_type == "access":
            if len(self._verified) >= VERIFIED_CACHE_ENTRIES:
                self._verified.clear()  # bounded; refilled by the next requests
            self._verified[token] = claims
        return claims

    def _issue(
        self,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        jti: str,
        token_type: TokenType,
        ttl_s: int,
        generation: int,
    ) -> tuple[str, TokenClaims]:
        issued_at = int(self._clock())
        claims = TokenClaims(
            user_id=user_id,
            session_id=session_id,
            jti=jti,
            token_type=token_type,
            issued_at=issued_at,
            expires_at=issued_at + ttl_s,
            generation=generation,
        )
        payload: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "sid": str(session_id),
            "jti": jti,
            "typ": token_type,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
        }
        if token_type == "refresh":  # noqa: S105 - a token type, not a secret
            payload["gen"] = generation
        return jwt.encode(payload, self._secret, algorithm=_ALGORITHM), claims

    def _claims_from(self, payload: Mapping[str, Any], expected_type: TokenType) -> TokenClaims | None:
        """Check the claims PyJWT does not; None means reject."""
        if payload.get("typ") != expected_type:
            return None
        user_id = _parse_uuid(payload.get("sub"))
        session_id = _parse_uuid(payload.get("sid"))
        jti = payload.get("jti")
        issued_at = _as_int(payload.get("iat"))
        expires_at = _as_int(payload.get("exp"))
        if user_id is None or session_id is None or not isinstance(jti, str) or not jti:
            return None
        if issued_at is None or expires_at is None:
            return None
        now = self._clock()
        if not issued_at <= now < expires_at:
            return None
        if expected_type == "refresh":
            generation = _as_int(payload.get("gen"))
            if generation is None or generation < 0:
                return None
        else:
            if "gen" in payload:
                return None
            generation = 0
        return TokenClaims(
            user_id=user_id,
            session_id=session_id,
            jti=jti,
            token_type=expected_type,
            issued_at=issued_at,
            expires_at=expires_at,
            generation=generation,
        )


def _as_int(value: object) -> int | None:
    """An integer claim (a JSON ``true`` is not one); None otherwise."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_uuid(value: object) -> uuid.UUID | None:
    """Only the canonical hyphenated lowercase form we issue is accepted."""
    if not isinstance(value, str) or len(value) != 36:
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed if str(parsed) == value else None
