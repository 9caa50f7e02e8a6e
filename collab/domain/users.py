"""Users and who they are to the server: pure records, no I/O.

:class:`User` is a user as stored; :class:`Principal` is the authenticated
caller of a request (a user acting through one login session). Global roles
come from the seed: admin (everything), manager (projects and tasks),
developer (tasks read/write, projects read), viewer (read only).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GLOBAL_ROLES = ("admin", "manager", "developer", "viewer")


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    email: str
    username: str
    first_name: str | None
    last_name: str | None
    avatar_url: str | None
    is_active: bool
    email_verified: bool
    roles: tuple[str, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def display_name(self) -> str:
        full = " ".join(p for p in (self.first_name, self.last_name) if p)
        return full or self.username

    def public_view(self) -> dict[str, Any]:
        """What any signed-in user may see of another user: no email, no roles."""
        return {
            "id": str(self.id),
            "username": self.username,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "display_name": self.display_name,
            "avatar_url": self.avatar_url,
        }

    def private_view(self) -> dict[str, Any]:
        """What the user themself (or an admin) sees."""
        return {
            **self.public_view(),
            "email": self.email,
            "roles": list(self.roles),
            "is_active": self.is_active,
            "email_verified": self.email_verified,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a user acting through one session."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    username: str
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def may_view_private(self, user_id: uuid.UUID) -> bool:
        return self.is_admin or user_id == self.user_id
