"""``collab serve --demo``: a demo workspace to try the board with, then the server.

Owns: seeding two users (alice and bob, one printed password), one project
with both as members and a couple of dozen tasks across the columns (tags,
priorities, due dates around today, assignees), and the banner that says
where to sign in.

Guarantees:
- Seeding goes through the same services the API uses: accounts through
  ``AuthService.register`` (password policy, argon2id), the project through
  ``storage.projects.create_project`` (as ``POST /projects`` does), members and
  tasks as ops through the project's actor (permissions, positions, events,
  notifications), never raw SQL.
- Idempotent: an existing user is reused (its password is left alone), the
  project has a fixed id and is created once, members are added only when
  missing, and tasks are created only into a project that never had any
  (a second run, or a run after people moved or deleted cards, adds nothing).
  A demo project someone deleted is made afresh by the next run.
- Refused in production (``COLLAB_ENV=production``): it makes accounts with a
  published password.

Seeding opens the services, writes, and closes them (actors flush) before
the server starts on the same settings.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import trio
import trio_asyncio

from collab.config import ConfigError, Settings
from collab.domain import ops
from collab.domain.model import ProjectRole
from collab.domain.users import Principal, User
from collab.domain.permissions import may_create_projects
from collab.errors import Forbidden, NotFound
from collab.http.context import AppServices
from collab.storage import projects as project_store
from collab.storage import users as user_store

log = logging.getLogger(__name__)

DEMO_PASSWORD = "collab-demo"  # noqa: S105 - the demo accounts' published password (collab serve --demo)
PROJECT_ID = uuid.UUID("6d656d6f-0000-4000-8000-000000000001")
PROJECT_NAME = "Website relaunch"
PROJECT_DESCRIPTION = "Ship the new marketing site and the self-serve sign-up by the end of the quarter."
BANNER_WAIT_S = 60.0
#: project.created and member.added (bob): the seq of a project set up but not seeded yet.
SETUP_EVENTS = 2
#: Global role of the demo users: one that may create projects, whatever COLLAB_REGISTRATION_ROLE says.
DEMO_ROLES = ("manager",)


@dataclass(frozen=True)
class DemoUser:
    email: str
    username: str
    first_name: str
    last_name: str


ALICE = DemoUser("alice@demo.local", "alice", "Alice", "Archer")
BOB = DemoUser("bob@demo.local", "bob", "Bob", "Baker")

# (title, status, priority, tags, due in days (None: no date), assignee, creator, description)
TASKS: tuple[tuple[str, str, str, tuple[str, ...], int | None, str | None, str, str | None], ...] = (
    ("Audit the current site's analytics", "done", "medium", ("research",), -12, "alice", "alice",
     "Which pages bring sign-ups today? Export the last 90 days."),
    ("Interview five customers about onboarding", "done", "high", ("research", "ux"), -8, "bob", "alice", None),
    ("Pick the new brand colours", "done", "low", ("design",), -5, "alice", "bob", None),
    ("Write the positioning statement", "in_review", "high", ("copy",), 1, "alice", "alice",
     "One paragraph; reviewed by @bob before it goes into the hero section."),
    ("Homepage hero illustration", "in_review", "medium", ("design",), 2, "bob", "alice", None),
    ("Pricing page copy", "in_progress", "high", ("copy", "pricing"), 3, "alice", "bob", None),
    ("Sign-up form with email verification", "in_progress", "urgent", ("frontend", "auth"), 2, "bob", "alice",
     "Double opt-in; the verification link expires after 24 h."),
    ("Set up preview deployments", "in_progress", "medium", ("infra",), 5, "bob", "bob", None),
    ("Responsive navigation", "in_progress", "medium", ("frontend",), 6, "alice", "alice", None),
    ("Migrate blog posts to the new CMS", "todo", "medium", ("content", "cms"), 10, "bob", "alice", None),
    ("Accessibility review (WCAG 2.2 AA)", "todo", "high", ("a11y", "qa"), 12, None, "alice",
     "Keyboard navigation, contrast, focus order, screen reader labels."),
    ("Cookie consent banner", "todo", "high", ("legal", "frontend"), 9, "alice", "bob", None),
    ("Performance budget: LCP under 2 s", "todo", "medium", ("frontend", "perf"), 14, None, "alice", None),
    ("Customer logos for the social proof strip", "todo", "low", ("design", "content"), 15, "bob", "alice", None),
    ("Redirect map for old URLs", "todo", "urgent", ("seo", "infra"), 4, "alice", "alice",
     "Every old URL answers 301 to its new home; no 404s from search results."),
    ("Open Graph images", "todo", "low", ("seo", "design"), None, None, "bob", None),
    ("Newsletter sign-up integration", "todo", "medium", ("frontend", "marketing"), 18, "bob", "bob", None),
    ("Status page link in the footer", "todo", "low", ("frontend",), None, None, "alice", None),
    ("Launch announcement post", "todo", "medium", ("copy", "marketing"), 21, "alice", "bob", None),
    ("Load test the sign-up flow", "todo", "high", ("qa", "perf"), 16, "bob", "alice", None),
    ("Legal review of the terms page", "in_review", "medium", ("legal",), -1, "alice", "bob",
     "Overdue: legal asked for two more days."),
    ("Old careers page", "cancelled", "low", ("content",), None, None, "alice",
     "Moved to the hiring platform instead."),
    ("Chatbot on every page", "cancelled", "low", ("marketing",), None, None, "bob", None),
    ("Set up uptime monitoring", "done", "medium", ("infra",), -3, "bob", "bob", None),
)


@dataclass
class DemoReport:
    users: dict[str, User] = field(default_factory=dict)
    created_users: list[str] = field(default_factory=list)
    project_created: bool = False
    tasks_created: int = 0


async def seed_demo(services: AppServices, *, today: datetime | None = None) -> DemoReport:
    """Create what is missing of the demo workspace; return what exists and what was made."""
    report = DemoReport()
    for person in (ALICE, BOB):
        report.users[person.username] = await _user(services, person, report)
    alice, bob = report.users["alice"], report.users["bob"]
    principals = {name: principal_for(user) for name, user in report.users.items()}

    try:
        actor = await services.registry.read(PROJECT_ID)
    except NotFound:
        actor = None
    if actor is None:
        if not may_create_projects(principals["alice"]):  # the check POST /projects makes
            raise Forbidden(f"{ALICE.email} exists but may not create projects; give it the manager role")
        await services.db.run(
            project_store.create_project, project_id=PROJECT_ID, owner_id=alice.id,
            fields={"name": PROJECT_NAME, "description": PROJECT_DESCRIPTION, "status": "active", "priority": "high"},
            now=datetime.now(timezone.utc),
        )
        report.project_created = True
        actor = await services.registry.read(PROJECT_ID)
    state = actor.state
    assert state is not None
    if state.deleted:  # deleted while this process runs: the next start makes it afresh
        return report
    if bob.id not in state.members:
        await services.registry.ask(
            PROJECT_ID, ops.MemberAdd(bob.id, ProjectRole.MEMBER, bob.username, bob.display_name), principals["alice"],
        )
    state = actor.state
    assert state is not None
    if state.tasks or state.seq > SETUP_EVENTS:
        return report  # seeded before, or people have used the project since: never add cards to it

    day = (today or datetime.now(timezone.utc)).replace(hour=12, minute=0, second=0, microsecond=0)
    for title, status, priority, tags, due_in, assignee, creator, description in TASKS:
        fields: dict[str, Any] = {"title": title, "status": status, "priority": priority, "tags": list(tags)}
        if due_in is not None:
            fields["due_date"] = day + timedelta(days=due_in)
        if assignee is not None:
            fields["assignee_id"] = report.users[assignee].id
        if description is not None:
            fields["description"] = description
        await services.registry.ask(PROJECT_ID, ops.TaskCreate(uuid.uuid4(), fields), principals[creator])
        report.tasks_created += 1
    return report


async def _user(services: AppServices, person: DemoUser, report: DemoReport) -> User:
    found = await services.db.run(user_store.credentials_by_email, person.email, transaction=False)
    if found is not None:
        return found[0]
    user = await services.auth.register(
        email=person.email, username=person.username, password=DEMO_PASSWORD,
        first_name=person.first_name, last_name=person.last_name, roles=DEMO_ROLES,
    )
    report.created_users.append(person.email)
    return user


def principal_for(user: User) -> Principal:
    # Seeding acts as the user without a login session of theirs (nothing is
    # tied to a session: no token is issued, no socket opened).
    return Principal(user.id, uuid.uuid4(), user.username, user.roles)


def banner(report: DemoReport, url: str | None) -> str:
    made = []
    if report.created_users:
        made.append(f"created {', '.join(report.created_users)}")
    if report.project_created:
        made.append(f"created the project {PROJECT_NAME!r}")
    if report.tasks_created:
        made.append(f"{report.tasks_created} tasks")
    what = "; ".join(made) if made else "already in place, nothing added"
    where = url or "the URL on the 'listening on' line below"
    return "\n".join((
        "",
        f"  Collab demo workspace: {what}.",
        f"  Open {where} and sign in as",
        f"      {ALICE.email}  /  {DEMO_PASSWORD}",
        f"      {BOB.email}    /  {DEMO_PASSWORD}   (use a second browser or a private window)",
        "  Move a card in one window and watch it move in the other.",
        "",
    ))


async def serve_demo(settings: Settings) -> None:
    """Seed (idempotently), then serve until SIGINT/SIGTERM; print the banner once the port accepts."""
    if settings.env == "production":
        raise ConfigError("--demo creates accounts with a published password; it is refused when COLLAB_ENV=production")
    from collab.server import open_services, serve_until_signalled

    async with trio_asyncio.open_loop():
        async with open_services(settings) as services:
            report = await seed_demo(services)
    log.info("demo workspace ready (project %s, %d tasks created)", PROJECT_ID, report.tasks_created)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_announce, settings, report)
        await serve_until_signalled(settings)
        nursery.cancel_scope.cancel()


async def _announce(settings: Settings, report: DemoReport) -> None:
    if not settings.port:
        print(banner(report, None), flush=True)
        return
    # Compares with the wildcard addresses (to connect to loopback instead); binds nothing.
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104  # nosec B104
    with trio.move_on_after(BANNER_WAIT_S):
        while True:
            try:
                stream = await trio.open_tcp_stream(host, settings.port)
            except OSError:
                await trio.sleep(0.2)
                continue
            await stream.aclose()
            break
    shown = f"[{host}]" if ":" in host else host
    print(banner(report, f"http://{shown}:{settings.port}/"), flush=True)
