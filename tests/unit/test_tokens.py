"""Tests for collab.auth.tokens: issuing, verifying and rejecting JWTs."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.auth.tokens import TokenClaims, TokenCodec
from collab.errors import Unauthenticated

SECRET = b"s" * 64  # 64 bytes, so forging an HS512 token with it raises no key-length warning
ISSUER = "collab-test"
AUDIENCE = "collab-api"
NOW = 1_700_000_000.5
USER = uuid.UUID("6f1c1f0e-5a8d-4b8e-9a43-0c7d1c2b3a4f")
SESSION = uuid.UUID("0b7e6c55-2f0e-4d1a-8f6a-3e9d2c1b0a99")
INVALID = "Invalid or expired token"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_codec(clock: FakeClock | None = None, **overrides: Any) -> TokenCodec:
    kwargs: dict[str, Any] = {
        "secret": SECRET,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "access_ttl_s": 900,
        "refresh_ttl_s": 30 * 24 * 3600,
        "clock": clock or FakeClock(),
    }
    kwargs.update(overrides)
    return TokenCodec(**kwargs)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def good_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(USER),
        "sid": str(SESSION),
        "jti": "jti-1",
        "typ": "access",
        "iat": int(NOW),
        "exp": int(NOW) + 900,
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def sign(payload: dict[str, Any], key: bytes = SECRET, algorithm: str = "HS256") -> str:
    """Sign any JSON payload as a JWS (PyJWT's jwt.encode refuses some bad claims)."""
    return jwt.api_jws.encode(json.dumps(payload).encode(), key, algorithm=algorithm)


def assert_rejected(codec: TokenCodec, token: str, expected_type: str = "access") -> None:
    with pytest.raises(Unauthenticated) as info:
        codec.decode(token, expected_type)  # type: ignore[arg-type]
    assert type(info.value) is Unauthenticated
    assert info.value.detail == INVALID
    assert str(info.value) == INVALID
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True or info.value.__context__ is None


def test_access_round_trip() -> None:
    codec = make_codec()
    token, claims = codec.issue_access(USER, SESSION)
    assert claims == TokenClaims(
        user_id=USER,
        session_id=SESSION,
        jti=claims.jti,
        token_type="access",
        issued_at=int(NOW),
        expires_at=int(NOW) + 900,
        generation=0,
    )
    assert len(claims.jti) >= 32
    assert codec.decode(token, "access") == claims
    raw = jwt.decode(token, options={"verify_signature": False})
    assert raw["typ"] == "access" and "gen" not in raw
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_refresh_round_trip() -> None:
    codec = make_codec()
    jti = codec.new_jti()
    token, claims = codec.issue_refresh(USER, SESSION, jti, 3)
    assert claims.token_type == "refresh" and claims.jti == jti and claims.generation == 3
    assert claims.expires_at == int(NOW) + 30 * 24 * 3600
    assert codec.decode(token, "refresh") == claims
    raw = jwt.decode(token, options={"verify_signature": False})
    assert set(raw) == {"iss", "aud", "sub", "sid", "jti", "typ", "iat", "exp", "gen"}
    assert (raw["sub"], raw["sid"], raw["gen"]) == (str(USER), str(SESSION), 3)


def test_new_jti_is_random() -> None:
    assert len({TokenCodec.new_jti() for _ in range(50)}) == 50


def test_handmade_good_token_is_accepted() -> None:
    # Guards the forgery tests below: their base payload really is valid.
    claims = make_codec().decode(sign(good_payload()), "access")
    assert claims.user_id == USER and claims.jti == "jti-1"


def test_alg_none() -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(json.dumps(good_payload()).encode())
    assert_rejected(make_codec(), f"{header}.{body}.")
    assert_rejected(make_codec(), f"{header}.{body}")


def test_hs512_with_same_secret() -> None:
    assert_rejected(make_codec(), sign(good_payload(), algorithm="HS512"))


def test_wrong_secret() -> None:
    assert_rejected(make_codec(), sign(good_payload(), key=b"t" * 64))


def test_tampered_payload_keeps_original_signature() -> None:
    codec = make_codec()
    token, _ = codec.issue_access(USER, SESSION)
    header, body, signature = token.split(".")
    payload = json.loads(unb64(body))
    payload["sub"] = str(uuid.uuid4())
    assert_rejected(codec, f"{header}.{b64(json.dumps(payload).encode())}.{signature}")


def test_tampered_signature() -> None:
    codec = make_codec()
    token, _ = codec.issue_access(USER, SESSION)
    header, body, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert_rejected(codec, f"{header}.{body}.{flipped}")


def test_wrong_issuer() -> None:
    assert_rejected(make_codec(), sign(good_payload(iss="someone-else")))


def test_wrong_audience() -> None:
    assert_rejected(make_codec(), sign(good_payload(aud="other-api")))
    assert_rejected(make_codec(), sign(good_payload(aud=[AUDIENCE, "other-api"])))


def test_expired_by_injected_clock() -> None:
    clock = FakeClock()
    codec = make_codec(clock)
    token, claims = codec.issue_access(USER, SESSION)
    clock.now = claims.expires_at - 0.001
    assert codec.decode(token, "access") == claims
    clock.now = claims.expires_at
    assert_rejected(codec, token)
    clock.now = claims.expires_at + 3600
    assert_rejected(codec, token)


def test_issued_in_the_future_by_injected_clock() -> None:
    clock = FakeClock()
    codec = make_codec(clock)
    token, claims = codec.issue_access(USER, SESSION)
    clock.now = claims.issued_at - 1
    assert_rejected(codec, token)


@pytest.mark.parametrize("claim", ["sid", "sub", "jti", "iat", "exp", "iss", "aud", "typ"])
def test_missing_claim(claim: str) -> None:
    payload = good_payload()
    del payload[claim]
    assert_rejected(make_codec(), sign(payload))


def test_refresh_without_generation() -> None:
    payload = good_payload(typ="refresh")
    assert_rejected(make_codec(), sign(payload), "refresh")
    assert_rejected(make_codec(), sign({**payload, "gen": -1}), "refresh")
    assert_rejected(make_codec(), sign({**payload, "gen": True}), "refresh")


def test_typ_swapped() -> None:
    codec = make_codec()
    access, _ = codec.issue_access(USER, SESSION)
    refresh, _ = codec.issue_refresh(USER, SESSION, codec.new_jti(), 0)
    assert_rejected(codec, access, "refresh")
    assert_rejected(codec, refresh, "access")
    assert_rejected(codec, sign(good_payload(typ="id")))


@pytest.mark.parametrize(
    "bad",
    ["not-a-uuid", "", "6f1c1f0e5a8d4b8e9a430c7d1c2b3a4f", "6F1C1F0E-5A8D-4B8E-9A43-0C7D1C2B3A4F", 123],
)
def test_malformed_uuids(bad: Any) -> None:
    assert_rejected(make_codec(), sign(good_payload(sub=bad)))
    if not isinstance(bad, int):
        assert_rejected(make_codec(), sign(good_payload(sid=bad)))


def test_non_integer_times() -> None:
    assert_rejected(make_codec(), sign(good_payload(exp="never")))
    assert_rejected(make_codec(), sign(good_payload(iat=True)))


def test_oversized_token() -> None:
    codec = make_codec()
    token = sign(good_payload(pad="x" * 5000))
    assert len(token) > 4096
    assert_rejected(codec, token)
    assert_rejected(codec, "a" * 5000)


@pytest.mark.parametrize("token", ["", "a.b.c", "...", "Bearer x", "é.é.é", "\ud800.x.y"])
def test_garbage(token: str) -> None:
    assert_rejected(make_codec(), token)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        make_codec(secret=b"x" * 31)
    assert isinstance(make_codec(secret=b"x" * 32), TokenCodec)


def test_bad_refresh_arguments_are_refused() -> None:
    codec = make_codec()
    with pytest.raises(ValueError):
        codec.issue_refresh(USER, SESSION, "", 0)
    with pytest.raises(ValueError):
        codec.issue_refresh(USER, SESSION, codec.new_jti(), -1)


SEGMENT = r"[A-Za-z0-9_\-]{0,60}"


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200) | st.from_regex(rf"{SEGMENT}\.{SEGMENT}\.{SEGMENT}", fullmatch=True))
def test_decode_of_arbitrary_text_only_raises_unauthenticated(text: str) -> None:
    codec = make_codec()
    for expected in ("access", "refresh"):
        try:
            codec.decode(text, expected)  # type: ignore[arg-type]
        except Unauthenticated as exc:
            assert type(exc) is Unauthenticated and exc.detail == INVALID
        else:
            pytest.fail("arbitrary text was accepted as a token")


@settings(max_examples=100, deadline=None)
@given(
    payload=st.dictionaries(
        st.sampled_from(["iss", "aud", "sub", "sid", "jti", "typ", "iat", "exp", "gen"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    )
)
def test_decode_of_arbitrary_signed_claims_only_raises_unauthenticated(payload: dict[str, Any]) -> None:
    # Even correctly signed tokens with odd claim values must fail cleanly.
    codec = make_codec()
    try:
        codec.decode(sign(payload), "access")
    except Unauthenticated as exc:
        assert exc.detail == INVALID


# --- the cache of verified access tokens ------------------------------------------------

def test_a_verified_access_token_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = make_codec()
    token, claims = codec.issue_access(USER, SESSION)
    assert codec.decode(token, "access") == claims
    calls: list[str] = []
    real = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append("decode") or real(*a, **k))
    assert codec.decode(token, "access") == claims
    assert calls == [], "the second request reused the first verification"


def test_a_cached_token_still_expires() -> None:
    clock = FakeClock()
    codec = make_codec(clock)
    token, _ = codec.issue_access(USER, SESSION)
    codec.decode(token, "access")
    clock.now += 900
    with pytest.raises(Unauthenticated, match=INVALID):
        codec.decode(token, "access")
    clock.now = NOW  # the entry is gone: a later check verifies from scratch
    assert codec.decode(token, "access").user_id == USER


def test_the_cache_is_per_token_and_per_type() -> None:
    codec = make_codec()
    token, _ = codec.issue_access(USER, SESSION)
    codec.decode(token, "access")
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthenticated, match=INVALID):
        codec.decode(tampered, "access")
    with pytest.raises(Unauthenticated, match=INVALID):
        codec.decode(token, "refresh")  # an access token is never a refresh token, cached or not


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import collab.auth.tokens as tokens_module

    monkeypatch.setattr(tokens_module, "VERIFIED_CACHE_ENTRIES", 3)
    codec = make_codec()
    for _ in range(10):
        token, claims = codec.issue_access(USER, SESSION)
        assert codec.decode(token, "access") == claims
    assert len(codec._verified) <= 3
