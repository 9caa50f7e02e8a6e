"""Accounts, login sessions and tokens: the one place that decides who a caller is.

Owns the rules of API.md "Auth" and "Users": registration, login (unknown
email and wrong password answered identically, at similar cost), refresh
rotation with reuse detection, logout, session listing and revocation,
password change, profile edits and deactivation. Every path that ends a
session also drops it from the :class:`PrincipalCache` before returning, so
the next request with an old access token gets 401.

Password hashing runs in worker threads behind a limiter (see
:mod:`collab.auth.passwords`); everything else is one database unit of work
per call.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from collab.auth.passwords import PasswordHasher, check_password_policy
from collab.auth.principals import PrincipalCache
from collab.auth.tokens import TokenCodec
from collab.domain.users import Principal, User
from collab.errors import Forbidden, InvalidCredentials, NotFound, Unauthenticated, ValidationFailed
from collab.storage import activity
from collab.storage import sessions as session_store
from collab.storage import users as user_store
from collab.storage.database import Database
from collab.storage.sessions import RotateOutcome, SessionInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Where a request came from, recorded on the session it creates."""

    user_agent: str | None
    ip_address: str | None


def _jti_hash(jti: str) -> str:
    return hashlib.sha256(jti.encode("ascii")).hexdigest()


class AuthService:
    def __init__(
        self, db: Database, hasher: PasswordHasher, codec: TokenCodec, cache: PrincipalCache, *,
        registration_role: str, refresh_ttl_s: int,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._codec = codec
        self._cache = cache
        self._registration_role = registration_role
        self._refresh_ttl_s = refresh_ttl_s
        # Told when logins end, so open WebSockets opened with them close at once.
        self.on_logins_ended: Callable[[list[uuid.UUID]], None] = lambda ids: None
        self.on_user_deactivated: Callable[[uuid.UUID], None] = lambda user_id: None
        # Told of every revocation, for the other nodes (collab.bus.revocations); never blocks.
        self.announce: Callable[[str, uuid.UUID], None] = lambda kind, ident: None

    def _ended(self, *login_ids: uuid.UUID) -> None:
        for login_id in login_ids:
            self._cache.forget_session(login_id)
            self.announce("session", login_id)
        self.on_logins_ended(list(login_ids))

    def _user_changed(self, user_id: uuid.UUID, *, deactivated: bool = False) -> None:
        self._cache.forget_user(user_id)
        self.announce("user_deactivated" if deactivated else "user", user_id)

    # --- revocations from other nodes -------------------------------------

    def apply_remote_revocation(self, kind: str, ident: uuid.UUID) -> None:
        """Another node revoked something: drop it from the cache, close its sockets here."""
        if kind == "session":
            self._cache.forget_session(ident)
            self.on_logins_ended([ident])
        elif kind == "user":
            self._cache.forget_user(ident)
        elif kind == "user_deactivated":
            self._cache.forget_user(ident)
            self.on_user_deactivated(ident)

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cached_sessions(self) -> int:
        return len(self._cache)

    # --- accounts ---------------------------------------------------------

    async def register(
        self, *, email: str, username: str, password: str,
        first_name: str | None = None, last_name: str | None = None, roles: tuple[str, ...] | None = None,
    ) -> User:
        email = email.strip().lower()
        check_password_policy(password, email=email, username=username)
        password_hash = await self._hasher.hash(password)
        return await self._db.run(
            user_store.insert_user, email=email, username=username, password_hash=password_hash,
            first_name=first_name, last_name=last_name, roles=roles or (self._registration_role,),
        )

    async def get_user(self, user_id: uuid.UUID) -> User:
        return await self._db.run(user_store.get_user, user_id, transaction=False)

    async def update_profile(self, principal: Principal, changes: dict[str, Any]) -> User:
        return await self._db.run(user_store.update_profile, principal.user_id, changes)

    async def search_users(
        self, principal: Principal, *, query: str | None, limit: int, offset: int
    ) -> tuple[list[User], int]:
        return await self._db.run(
            user_store.search_users, query=query, match_email_prefix=principal.is_admin,
            include_inactive=principal.is_admin, limit=limit, offset=offset, transaction=False,
        )

    async def change_password(self, principal: Principal, current: str, new: str) -> int:
        """Change the caller's password; end every other session. Returns how many ended."""
        stored = await self._db.run(user_store.password_hash, principal.user_id, transaction=False)
        if not await self._hasher.verify(stored, current):
            raise ValidationFailed.single("current_password", "The current password is not correct", "mismatch")
        user = await self.get_user(principal.user_id)
        check_password_policy(new, email=user.email, username=user.username, field="new_password")
        new_hash = await self._hasher.hash(new)
        ended = await self._db.run(self._change_password_unit, principal, new_hash)
        self._user_changed(principal.user_id)
        self._ended(*ended)
        return len(ended)

    @staticmethod
    async def _change_password_unit(conn: Any, principal: Principal, new_hash: str) -> list[uuid.UUID]:
        await user_store.set_password_hash(conn, principal.user_id, new_hash, changed=True)
        return await session_store.revoke_all(conn, principal.user_id, "password_changed", keep=principal.session_id)

    async def set_active(self, user_id: uuid.UUID, active: bool, *, by: uuid.UUID | None = None) -> User:
        """Activate or deactivate a user; deactivation ends all their sessions. Audited."""
        user = await self._db.run(self._set_active_unit, user_id, active, by)
        self._user_changed(user_id, deactivated=not active)
        if not active:
            self.on_user_deactivated(user_id)
        return user

    @staticmethod
    async def _set_active_unit(conn: Any, user_id: uuid.UUID, active: bool, by: uuid.UUID | None) -> User:
        user = await user_store.set_active(conn, user_id, active)
        if not active:
            await session_store.revoke_all(conn, user_id, "deactivated")
        await activity.record(conn, user_id=by, action="user.reactivated" if active else "user.deactivated",
                              entity_type="user", entity_id=user_id)
        return user

    async def set_roles(self, user_id: uuid.UUID, roles: tuple[str, ...], *, by: uuid.UUID | None = None) -> User:
        """Replace a user's global roles. Audited."""
        user = await self._db.run(self._set_roles_unit, user_id, roles, by)
        self._user_changed(user_id)
        return user

    @staticmethod
    async def _set_roles_unit(conn: Any, user_id: uuid.UUID, roles: tuple[str, ...], by: uuid.UUID | None) -> User:
        user = await user_store.set_roles(conn, user_id, roles)
        await activity.record(conn, user_id=by, action="user.roles_changed", entity_type="user", entity_id=user_id,
                              details={"roles": list(roles)})
        return user

    # --- sessions and tokens ---------------------------------------------

    async def login(self, *, email: str, password: str, client: ClientInfo) -> tuple[IssuedTokens, User]:
        found = await self._db.run(user_store.credentials_by_email, email.strip().lower(), transaction=False)
        if found is None:
            await self._hasher.verify_dummy(password)
            raise InvalidCredentials()
        user, stored_hash = found
        if not await self._hasher.verify(stored_hash, password):
            raise InvalidCredentials()
        if not user.is_active:
            raise Forbidden("This account is deactivated")
        if self._hasher.needs_rehash(stored_hash):
            new_hash = await self._hasher.hash(password)
            await self._db.run(user_store.set_password_hash, user.id, new_hash, changed=False)
            log.info("rehashed the password of user %s with current parameters", user.id)
        tokens = await self._open_session(user.id, client)
        return tokens, user

    async def _open_session(self, user_id: uuid.UUID, client: ClientInfo) -> IssuedTokens:
        session_id = uuid.uuid4()
        jti = self._codec.new_jti()
        expires_at = datetime.now(timezone.utc) + timedelta(seconds=self._refresh_ttl_s)
        await self._db.run(
            session_store.create_session, session_id=session_id, user_id=user_id, token_hash=_jti_hash(jti),
            expires_at=expires_at, user_agent=client.user_agent, ip_address=client.ip_address,
        )
        return self._issue(user_id, session_id, jti, generation=0)

    def _issue(self, user_id: uuid.UUID, session_id: uuid.UUID, jti: str, *, generation: int) -> IssuedTokens:
        access, claims = self._codec.issue_access(user_id, session_id)
        refresh, _ = self._codec.issue_refresh(user_id, session_id, jti, generation)
        return IssuedTokens(
            access_token=access, refresh_token=refresh,
            expires_in=claims.expires_at - claims.issued_at, session_id=session_id,
        )

    async def refresh(self, refresh_token: str, *, client: ClientInfo) -> IssuedTokens:
        claims = self._codec.decode(refresh_token, "refresh")
        jti = self._codec.new_jti()
        outcome = await self._db.run(
            session_store.rotate_refresh, session_id=claims.session_id, user_id=claims.user_id,
            presented_hash=_jti_hash(claims.jti), presented_generation=claims.generation,
            new_hash=_jti_hash(jti), user_agent=client.user_agent, ip_address=client.ip_address,
        )
        if outcome is RotateOutcome.REUSED:
            self._ended(claims.session_id)
            log.warning("refresh token reuse detected; ended session %s of user %s", claims.session_id, claims.user_id)
            raise Unauthenticated("This refresh token was already used; the session has been ended")
        if outcome is RotateOutcome.INVALID:
            self._cache.forget_session(claims.session_id)
            raise Unauthenticated("Invalid or expired token")
        return self._issue(claims.user_id, claims.session_id, jti, generation=claims.generation + 1)

    async def authenticate(self, access_token: str) -> Principal:
        """The caller behind an access token; :class:`Unauthenticated` otherwise."""
        claims = self._codec.decode(access_token, "access")
        principal = self._cache.get(claims.session_id)
        if principal is not None and principal.user_id == claims.user_id:
            return principal
        principal = await self._db.run(
            session_store.principal_for_session, claims.session_id, claims.user_id, transaction=False
        )
        if principal is None:
            raise Unauthenticated("Invalid or expired token")
        self._cache.put(principal)
        return principal

    async def logout(self, principal: Principal) -> None:
        await self._db.run(session_store.revoke, principal.session_id, "logout")
        self._ended(principal.session_id)

    async def list_sessions(self, principal: Principal) -> list[SessionInfo]:
        return await self._db.run(session_store.list_live, principal.user_id, transaction=False)

    async def revoke_session(self, principal: Principal, session_id: uuid.UUID) -> None:
        """End one of the caller's own sessions (404 for anyone else's)."""
        ended = await self._db.run(session_store.revoke, session_id, "revoked", principal.user_id)
        if not ended:
            raise NotFound("No such session")
        self._ended(session_id)
