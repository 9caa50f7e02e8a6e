"""Tests for collab.auth.passwords: argon2id hashing and the password policy."""

from __future__ import annotations

import pytest
import trio

from collab.auth.passwords import (
    ARGON2_OWASP,
    ARGON2_TEST,
    Argon2Params,
    PasswordHasher,
    check_password_policy,
    common_passwords,
)
from collab.errors import ValidationFailed

STRONG = "Tv9#qLm2!pWz-river"


def make_hasher(params: Argon2Params = ARGON2_TEST) -> PasswordHasher:
    return PasswordHasher(params, max_concurrent=2)


def test_test_params_match_argon2_cheapest() -> None:
    from argon2.profiles import CHEAPEST

    assert (ARGON2_TEST.time_cost, ARGON2_TEST.memory_kib, ARGON2_TEST.parallelism) == (
        CHEAPEST.time_cost,
        CHEAPEST.memory_cost,
        CHEAPEST.parallelism,
    )
    assert (ARGON2_TEST.hash_len, ARGON2_TEST.salt_len) == (CHEAPEST.hash_len, CHEAPEST.salt_len)
    assert (ARGON2_OWASP.time_cost, ARGON2_OWASP.memory_kib, ARGON2_OWASP.parallelism) == (2, 19456, 1)


async def test_hash_verify_roundtrip() -> None:
    with trio.fail_after(10):
        hasher = make_hasher()
        hashed = await hasher.hash(STRONG)
        assert hashed.startswith("$argon2id$")
        assert STRONG not in hashed
        assert await hasher.verify(hashed, STRONG) is True


async def test_hashes_are_salted() -> None:
    with trio.fail_after(10):
        hasher = make_hasher()
        assert await hasher.hash(STRONG) != await hasher.hash(STRONG)


async def test_wrong_password_is_false() -> None:
    with trio.fail_after(10):
        hasher = make_hasher()
        hashed = await hasher.hash(STRONG)
        assert await hasher.verify(hashed, STRONG + "x") is False


@pytest.mark.parametrize(
    "garbage",
    ["", "not a hash", "$argon2id$", "$argon2id$v=19$m=8,t=1,p=1$!!!$???", "$2b$12$abcdefghijk", "é$argon2id"],
)
async def test_garbage_hash_is_false(garbage: str) -> None:
    with trio.fail_after(10):
        assert await make_hasher().verify(garbage, STRONG) is False


async def test_needs_rehash() -> None:
    with trio.fail_after(10):
        cheap = make_hasher()
        other = make_hasher(Argon2Params(time_cost=2, memory_kib=16, parallelism=1))
        hashed = await cheap.hash(STRONG)
        assert cheap.needs_rehash(hashed) is False
        assert other.needs_rehash(hashed) is True
        assert cheap.needs_rehash("garbage") is True


async def test_verify_dummy_uses_one_lazy_dummy_hash_with_same_params() -> None:
    with trio.fail_after(10):
        hasher = make_hasher()
        assert hasher._dummy_hash is None
        await hasher.verify_dummy(STRONG)
        dummy = hasher._dummy_hash
        assert dummy is not None and dummy.startswith("$argon2id$")
        assert hasher.needs_rehash(dummy) is False
        await hasher.verify_dummy("another password")
        assert hasher._dummy_hash == dummy


async def test_concurrent_calls_share_the_limiter() -> None:
    with trio.fail_after(10):
        hasher = PasswordHasher(ARGON2_TEST, max_concurrent=1)
        results: list[bool] = []

        async def one() -> None:
            hashed = await hasher.hash(STRONG)
            results.append(await hasher.verify(hashed, STRONG))

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
        assert results == [True] * 4


def test_max_concurrent_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PasswordHasher(ARGON2_TEST, max_concurrent=0)


def policy_kind(password: str, **kwargs: str) -> tuple[str, str]:
    with pytest.raises(ValidationFailed) as info:
        check_password_policy(password, **kwargs)
    (error,) = info.value.errors
    assert error.loc == ("password",)
    if password:  # "" is a substring of everything
        assert password.lower() not in error.message.lower()
        assert password.lower() not in str(info.value).lower()
    return error.kind, error.message


@pytest.mark.parametrize(
    ("password", "kwargs", "kind"),
    [
        ("Ab1!xyz", {}, "too_short"),
        ("", {}, "too_short"),
        ("Z" * 1025, {}, "too_long"),
        ("Password1", {}, "too_common"),
        ("12345678", {}, "too_common"),
        ("PassWord123", {}, "too_common"),
        ("QWERTYUIOP", {}, "too_common"),
        ("Alice.Smith@Example.com", {"email": "alice.smith@example.com"}, "too_similar"),
        ("ALICE.SMITH", {"email": "alice.smith@example.com"}, "too_similar"),
        ("Zebra-Crossing", {"username": "zebra-crossing"}, "too_similar"),
    ],
)
def test_policy_rejections(password: str, kwargs: dict[str, str], kind: str) -> None:
    got_kind, message = policy_kind(password, **kwargs)
    assert got_kind == kind
    assert message


def test_policy_accepts_a_strong_password() -> None:
    assert check_password_policy(STRONG, email="alice@example.com", username="alice") is None
    assert check_password_policy("x" * 1024) is None
    assert check_password_policy("q7-Lamp-Orbit") is None


def test_common_list_is_loaded_and_sane() -> None:
    words = common_passwords()
    assert isinstance(words, frozenset)
    assert len(words) >= 900
    assert all(len(w) >= 8 and w == w.lower() and not w.startswith("#") for w in words)
    assert {"password", "12345678", "qwertyuiop", "iloveyou1", "password1", "football"} <= words
    assert common_passwords() is words
