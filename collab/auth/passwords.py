"""Password hashing (argon2id) and the password policy.

:class:`PasswordHasher` owns the argon2 parameters and one
:class:`trio.CapacityLimiter`. Every hash or verification runs in a worker
thread behind that limiter, so a burst of logins never blocks the event loop
and never uses more than ``max_concurrent`` threads at once (argon2 costs tens
of milliseconds and ~19 MiB per call with :data:`ARGON2_OWASP`). Callers queue
on the limiter; rate-limit logins before they get here.

Cancellation: a caller still waiting for the limiter leaves at once. Once its
thread has started, the cancellation takes effect when the thread finishes
(trio's default, ``abandon_on_cancel=False``), so no argon2 call ever runs
outside the limiter's bound.

:func:`check_password_policy` is pure: it validates a new password and raises
:class:`~collab.errors.ValidationFailed` with a stable ``kind``; its messages
never contain the password.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cache
from importlib import resources

import argon2
import trio
from argon2.exceptions import InvalidHashError, VerificationError

from collab.errors import ValidationFailed

__all__ = [
    "ARGON2_OWASP",
    "ARGON2_TEST",
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "Argon2Params",
    "PasswordHasher",
    "check_password_policy",
    "common_passwords",
]

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """argon2id cost parameters; the lengths are in bytes."""

    time_cost: int
    memory_kib: int
    parallelism: int
    hash_len: int = 32
    salt_len: int = 16


#: OWASP's recommended argon2id setting (m=19 MiB, t=2, p=1): ~23 ms here.
ARGON2_OWASP = Argon2Params(time_cost=2, memory_kib=19456, parallelism=1)

#: The values of ``argon2.profiles.CHEAPEST``: for tests only, offers no protection.
ARGON2_TEST = Argon2Params(time_cost=1, memory_kib=8, parallelism=1, hash_len=4, salt_len=8)


class PasswordHasher:
    """Hashes and verifies passwords with argon2id off the event loop.

    Owns the argon2 parameters, the limiter that bounds concurrent hashing to
    ``max_concurrent`` threads, and a lazily made dummy hash used by
    :meth:`verify_dummy`. Guarantees: :meth:`hash` returns a ``$argon2id$``
    string; :meth:`verify` returns a bool and never raises for a wrong
    password or a malformed hash. A limiter belongs to one ``trio.run``: make
    one hasher per run.
    """

    def __init__(self, params: Argon2Params, *, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._params = params
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=params.hash_len,
            salt_len=params.salt_len,
            type=argon2.Type.ID,
        )
        self._limiter = trio.CapacityLimiter(max_concurrent)
        self._dummy_hash: str | None = None
        self._dummy_lock = trio.Lock()

    @property
    def params(self) -> Argon2Params:
        return self._params

    async def hash(self, password: str) -> str:
        """Return a new salted argon2id hash of ``password``."""
        return await trio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify(self, password_hash: str, password: str) -> bool:
        """True if ``password`` matches ``password_hash``.

        False on a mismatch and on a hash that cannot be parsed or is not a
        valid argon2 hash; those never raise.
        """
        return await trio.to_thread.run_sync(
            self._verify_sync, password_hash, password, limiter=self._limiter
        )

    def needs_rehash(self, password_hash: str) -> bool:
        """True if the hash was not made with this hasher's parameters.

        An unparseable hash also needs replacing, so it gives True.
        """
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    async def verify_dummy(self, password: str) -> None:
        """Spend what a wrong-password verification costs, and learn nothing.

        Call it when the account does not exist, so that "unknown email" and
        "wrong password" take the same time. The dummy hash (same parameters,
        random secret) is made once, in a worker thread, on first use; warm it
        up at startup by calling this once if the first login must not pay for it.
        """
        dummy = await self._get_dummy_hash()
        await trio.to_thread.run_sync(self._verify_sync, dummy, password, limiter=self._limiter)

    async def _get_dummy_hash(self) -> str:
        async with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash(secrets.token_urlsafe(32))
            return self._dummy_hash

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError, ValueError):
            # ValueError also covers text that cannot be encoded (lone surrogates).
            return False


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common leaked passwords (lowercase), loaded once."""
    text = resources.files(__package__).joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )


def check_password_policy(
    password: str, *, email: str | None = None, username: str | None = None, field: str = "password"
) -> None:
    """Raise ``ValidationFailed`` on ``field`` (the request's field name) if ``password`` is weak.

    Kinds: ``too_short`` (< 8 characters), ``too_long`` (> 1024), ``too_common``
    (in the shipped list, case-insensitively), ``too_similar`` (equal to the
    email, its local part or the username, case-insensitively). Checks run in
    that order and the first failure is reported. Messages never echo the
    password; they do not even use the word, since "password" is itself a
    (rejected) password.
    """
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValidationFailed.single(
            field, f"Must be at least {MIN_PASSWORD_CHARS} characters long.", "too_short"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValidationFailed.single(
            field, f"Must be at most {MAX_PASSWORD_CHARS} characters long.", "too_long"
        )
    if password.lower() in common_passwords():
        raise ValidationFailed.single(
            field, "Too common: it appears in lists of leaked credentials.", "too_common"
        )
    folded = password.casefold()
    similar: set[str] = set()
    if email:
        similar.add(email.casefold())
        similar.add(email.rpartition("@")[0].casefold() if "@" in email else email.casefold())
    if username:
        similar.add(username.casefold())
    similar.discard("")
    if folded in similar:
        raise ValidationFailed.single(
            field, "Must differ from your email and username.", "too_similar"
        )
