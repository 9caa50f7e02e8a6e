"""ActorRegistry: starts, supervises, passivates and stops project actors.

- **Start on first use.** :meth:`ActorRegistry.ask` and :meth:`read` start the
  project's actor if none runs; it loads the project from PostgreSQL while
  commands queue in its inbox.
- **Bounded inbox.** ``inbox_size`` commands; a caller waits up to its
  deadline for room, then gets a retryable ``busy`` error.
- **Supervision.** An unexpected exception in an actor is logged, and the
  actor restarts from PostgreSQL with the same inbox, so queued commands are
  not lost; after ``max_restarts`` crashes within ``restart_window_s`` the
  project's queued callers get a retryable ``unavailable`` error and the slot
  is dropped (the next command starts afresh).
- **Passivation.** An actor idle for ``idle_timeout_s`` with nobody watching
  (``keep_alive``: the project has WebSocket subscribers) leaves the registry
  first (new callers start a new actor), then finishes what is already
  queued and closes its inbox with no await in between, so no command is
  dropped; a caller whose send meets the closed inbox retries on the new one.
- **Shutdown.** Leaving :func:`open_registry` cancels the actors: each finishes
  the batch it is committing (shielded, with a deadline) and fails every
  queued command with a retryable error. No caller waits on a dead actor.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Sequence

import trio

from collab.actors import following
from collab.actors.committer import Committer, CommitterStats
from collab.actors.ownership import OwnedElsewhere, Ownership
from collab.actors.project import (
    Accepted, Command, Idempotency, Notify, ProjectActor, ProjectNotFound, Publish, Rejected, Reply,
)
from collab.domain.ops import Op
from collab.domain.users import Principal
from collab.errors import Busy, CollabError, NotFound, Unavailable
from collab.storage import projects as store
from collab.storage.database import Database

if TYPE_CHECKING:
    from collab.bus.cluster import ClusterBus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryOptions:
    inbox_size: int = 256
    max_batch: int = 64
    ask_timeout_s: float = 10.0
    commit_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    max_restarts: int = 3
    restart_window_s: float = 60.0
    task_index_entries: int = 100_000


@dataclass(eq=False)
class _Slot:
    project_id: uuid.UUID
    inbox_send: trio.MemorySendChannel[Command]
    inbox_recv: trio.MemoryReceiveChannel[Command]
    actor: ProjectActor
    ready: trio.Event = field(default_factory=trio.Event)
    missing: bool = False
    crashes: list[float] = field(default_factory=list)
    follower: bool = False         # mirrors a project another node owns (commands are forwarded)
    owner: str | None = None       # that node, while following
    carry: list[Command] = field(default_factory=list)  # forwarded to an owner that died: run them here
    catching_up: trio.Lock = field(default_factory=trio.Lock)
    gap_seen: bool = False  # a gap was seen (possibly during a catch-up): catch up (again)


def _no_publish(project_id: uuid.UUID, records: Sequence[store.EventRecord]) -> None:
    return None


class ActorRegistry:
    def __init__(
        self, db: Database, nursery: trio.Nursery, options: RegistryOptions, publish: Publish | None = None,
        keep_alive: Callable[[uuid.UUID], bool] | None = None, notify: Notify | None = None,
        ownership: Ownership | None = None, bus: "ClusterBus | None" = None, committer: Committer | None = None,
    ) -> None:
        self._db = db
        self._committer = committer
        self.ownership = ownership or Ownership(db)
        self.bus = bus
        self._notify = notify
        self._keep_alive = keep_alive or (lambda project_id: False)
        self._nursery = nursery
        self._options = options
        self._publish_downstream = publish or _no_publish
        self._slots: dict[uuid.UUID, _Slot] = {}
        self._task_index: OrderedDict[uuid.UUID, uuid.UUID] = OrderedDict()
        # Passivating actors still committing their last commands: a new actor
        # for the same project loads only after they finish.
        self._draining: dict[uuid.UUID, trio.Event] = {}
        self._closing = False
        # Told after every batch: (commands, commit seconds or None, failed commits); for metrics.
        self.on_batch: Callable[[int, float | None, int], None] | None = None

    # --- public API ---

    @property
    def options(self) -> RegistryOptions:
        return self._options

    @property
    def active(self) -> int:
        return len(self._slots)

    def actors(self) -> list[ProjectActor]:
        return [slot.actor for slot in self._slots.values()]

    def figures(self) -> dict[str, float | int]:
        """Totals over the running actors, for metrics."""
        stats = [slot.actor.stats for slot in self._slots.values()]
        batches = sum(s.batches for s in stats)
        commands = sum(s.commands for s in stats)
        return {
            "active": len(self._slots),
            "inbox_depth": sum(slot.inbox_send.statistics().current_buffer_used for slot in self._slots.values()),
            "batches": batches,
            "commands": commands,
            "mean_batch_size": round(commands / batches, 3) if batches else 0.0,
            "failed_commits": sum(s.failed_commits for s in stats),
            "commit_seconds_total": round(sum(s.commit_seconds_total for s in stats), 6),
            **self._committer_figures(),
        }

    def _committer_figures(self) -> dict[str, float | int]:
        shared = getattr(self._committer, "stats", None)
        if not isinstance(shared, CommitterStats):
            return {}
        return {
            "shared_commit_statements": shared.statements,
            "shared_commit_batches": shared.batches,
            "mean_batches_per_statement": round(shared.mean_batches_per_statement, 3),
        }

    def inbox_depth(self, project_id: uuid.UUID) -> int:
        slot = self._slots.get(project_id)
        return slot.inbox_send.statistics().current_buffer_used if slot else 0

    async def ask(
        self, project_id: uuid.UUID, op: Op, caller: Principal, *, client_op_id: str | None = None,
        idempotency: Idempotency | None = None, timeout_s: float | None = None,
    ) -> Accepted:
        """Send a command and wait for its committed outcome; raise its error if rejected."""
        reply_send, reply_recv = trio.open_memory_channel[Reply](1)
        command = Command(op, caller, reply_send, client_op_id, idempotency)
        with trio.move_on_after(timeout_s or self._options.ask_timeout_s) as deadline:
            await self.submit(project_id, command)
            reply = await reply_recv.receive()
        if deadline.cancelled_caught:
            raise Busy("The project did not answer in time; retry (with the same Idempotency-Key, if any)")
        if isinstance(reply, Rejected):
            raise reply.error
        return reply

    async def read(self, project_id: uuid.UUID) -> ProjectActor:
        """The project's actor once loaded: read its committed ``state`` right away, without awaiting."""
        slot = self._slot(project_id)
        with trio.move_on_after(self._options.ask_timeout_s) as deadline:
            await slot.ready.wait()
        if deadline.cancelled_caught:
            raise Busy("The project is loading; retry")
        if slot.missing:
            raise NotFound("No such project")
        return slot.actor

    async def project_of_task(self, task_id: uuid.UUID) -> uuid.UUID:
        """The project a task belongs to (tasks never change project); NotFound if none."""
        project_id = self._task_index.get(task_id)
        if project_id is None:
            project_id = await self._db.run(store.project_of_task, task_id, transaction=False)
            if project_id is None:
                raise NotFound("No such task")
            self._index_task(task_id, project_id)
        return project_id

    # --- internals ---

    def _index_task(self, task_id: uuid.UUID, project_id: uuid.UUID) -> None:
        self._task_index[task_id] = project_id
        self._task_index.move_to_end(task_id)
        while len(self._task_index) > self._options.task_index_entries:
            self._task_index.popitem(last=False)

    def _publish(self, project_id: uuid.UUID, records: Sequence[store.EventRecord]) -> None:
        """An owner's committed batch: to this node's subscribers, then to the other nodes."""
        self._deliver(project_id, records)
        if self.bus is not None:
            self.bus.publish_events(project_id, records)

    def _deliver(self, project_id: uuid.UUID, records: Sequence[store.EventRecord]) -> None:
        for record in records:
            if record.event.kind == "task.created" and record.event.task_id is not None:
                self._index_task(record.event.task_id, project_id)
        self._publish_downstream(project_id, records)

    # --- following projects owned by other nodes ---

    def follows(self, project_id: uuid.UUID) -> bool:
        slot = self._slots.get(project_id)
        return slot is not None and slot.follower

    def apply_remote(self, project_id: uuid.UUID, records: list[store.EventRecord]) -> None:
        """Events another node committed, for the follower here (if any)."""
        slot = self._slots.get(project_id)
        if slot is None or not slot.follower or not slot.ready.is_set():
            return
        applied, gap = following.fold_records(slot.actor, records)
        if applied:
            self._deliver(project_id, applied)
        if gap:
            slot.gap_seen = True
            if not slot.catching_up.locked():
                self._nursery.start_soon(self._catch_up, slot)

    def catch_up_followers(self) -> None:
        """After the bus was cut off: every follower reads what it missed from the change log."""
        for slot in list(self._slots.values()):
            if slot.follower and slot.ready.is_set():
                self._nursery.start_soon(self._catch_up, slot)

    async def _catch_up(self, slot: _Slot) -> None:
        """Read what the follower missed from the change log; again while gaps keep being seen meanwhile."""
        if slot.catching_up.locked():
            return
        async with slot.catching_up:
            slot.gap_seen = True
            while slot.gap_seen and slot.follower:
                slot.gap_seen = False
                try:
                    missed = await following.catch_up(self._db, slot.actor)
                except CollabError as exc:
                    log.warning("follower of %s could not catch up: %s", slot.project_id, exc)
                    return
                self._deliver(slot.project_id, missed)

    async def handle_forwarded(self, project_id: uuid.UUID, commands: list[dict[str, Any]],
                               timeout_s: float) -> list[dict[str, Any]]:
        """Commands another node forwarded here (it thinks this node owns the project)."""
        return await following.run_forwarded(self, project_id, commands, timeout_s)

    async def submit(self, project_id: uuid.UUID, command: Command) -> None:
        """Queue a command in the project's inbox (waiting while it is full); the
        reply arrives on ``command.reply``. Commands submitted one after another
        are applied in that order."""
        for _ in range(3):
            slot = self._slot(project_id)
            try:
                await slot.inbox_send.send(command)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue  # that actor passivated or stopped between lookup and send
        raise Unavailable("The project could not be reached; retry")

    def _slot(self, project_id: uuid.UUID) -> _Slot:
        if self._closing:
            raise Unavailable("The server is shutting down; retry")
        slot = self._slots.get(project_id)
        if slot is None:
            send, recv = trio.open_memory_channel[Command](self._options.inbox_size)
            slot = _Slot(project_id, send, recv, self._new_actor(project_id))
            self._slots[project_id] = slot
            self._nursery.start_soon(self._supervise, slot, name=f"project-actor-{project_id}")
        return slot

    def _new_actor(self, project_id: uuid.UUID) -> ProjectActor:
        return ProjectActor(
            project_id, self._db, commit_timeout_s=self._options.commit_timeout_s, publish=self._publish,
            notify=self._notify, ownership=self.ownership, committer=self._committer,
        )

    def _forget(self, slot: _Slot) -> None:
        if self._slots.get(slot.project_id) is slot:
            del self._slots[slot.project_id]

    async def _supervise(self, slot: _Slot) -> None:
        try:
            while True:
                try:
                    previous = self._draining.get(slot.project_id)
                    if previous is not None:
                        await previous.wait()
                    try:
                        await slot.actor.load()
                    except OwnedElsewhere as elsewhere:
                        if self.bus is None:
                            raise
                        if not await self._follow(slot, elsewhere.owner):
                            return  # the follower passivated
                        continue  # the owner is gone: try to own the project here
                    slot.ready.set()
                    await self._serve(slot)
                    return
                except OwnedElsewhere:
                    # Lost the project to another node while owning it: follow it from now on.
                    await trio.sleep(0.05)
                    continue
                except ProjectNotFound:
                    slot.missing = True
                    slot.ready.set()
                    self._forget(slot)
                    self._fail_queued(slot, NotFound("No such project"))
                    return
                except Exception as exc:  # noqa: BLE001 - supervision: log, restart or give up
                    now = time.monotonic()
                    slot.crashes = [t for t in slot.crashes if now - t < self._options.restart_window_s] + [now]
                    log.error(
                        "project actor %s crashed (%d in window)", slot.project_id, len(slot.crashes), exc_info=exc,
                    )
                    if len(slot.crashes) > self._options.max_restarts:
                        self._forget(slot)
                        self._fail_queued(slot, Unavailable("The project is unavailable; retry later"))
                        slot.ready.set()
                        slot.missing = True
                        return
                    slot.actor = self._new_actor(slot.project_id)
        finally:
            # Cancelled (shutdown) or finished: nobody may wait on this inbox any more.
            self._forget(slot)
            self._fail_queued(slot, Unavailable("The server is shutting down; retry"))

    async def _follow(self, slot: _Slot, owner: str | None) -> bool:
        """Mirror the project and forward its commands to ``owner``; True when
        the owner is gone (the caller then tries to own it), False when passivated."""
        slot.follower, slot.owner = True, owner
        try:
            await slot.actor.load_as_follower()
            slot.ready.set()
            options = self._options
            while True:
                with trio.move_on_after(options.idle_timeout_s) as idle:
                    first = await slot.inbox_recv.receive()
                if idle.cancelled_caught:
                    if self._keep_alive(slot.project_id):
                        continue
                    self._forget(slot)
                    while batch := _drain(slot.inbox_recv, options.max_batch):
                        if await following.forward(self, slot, batch):
                            slot.carry = batch
                            return True
                    slot.inbox_recv.close()
                    return False
                batch = [first] + _drain(slot.inbox_recv, options.max_batch - 1)
                if await following.forward(self, slot, batch):
                    slot.carry = batch
                    return True
        finally:
            slot.follower, slot.owner = False, None

    async def _serve(self, slot: _Slot) -> None:
        options = self._options
        if slot.carry:
            carried, slot.carry = slot.carry, []
            await _process(slot.actor, carried, self.on_batch)
        while True:
            with trio.move_on_after(options.idle_timeout_s) as idle:
                first = await slot.inbox_recv.receive()
            if idle.cancelled_caught:
                if self._keep_alive(slot.project_id):
                    continue  # subscribers are watching: stay loaded
                self._forget(slot)  # new callers start a new actor from here on
                done = self._draining[slot.project_id] = trio.Event()
                try:
                    while batch := _drain(slot.inbox_recv, options.max_batch):
                        await _process(slot.actor, batch, self.on_batch)
                    slot.inbox_recv.close()  # no await since the last empty drain: nothing is lost
                    with trio.move_on_after(5) as releasing:
                        releasing.shield = True
                        try:
                            await slot.actor.release()
                        except CollabError as exc:
                            log.warning("could not release project %s: %s", slot.project_id, exc)
                finally:
                    if self._draining.get(slot.project_id) is done:
                        del self._draining[slot.project_id]
                    done.set()
                log.debug("project actor %s passivated", slot.project_id)
                return
            batch = [first] + _drain(slot.inbox_recv, options.max_batch - 1)
            await _process(slot.actor, batch, self.on_batch)

    @staticmethod
    def _fail_queued(slot: _Slot, error: CollabError) -> None:
        for command in _drain(slot.inbox_recv, None):
            try:
                command.reply.send_nowait(Rejected(error))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        slot.inbox_recv.close()

    def close(self) -> None:
        self._closing = True


async def _process(
    actor: ProjectActor, batch: list[Command], observe: Callable[[int, float | None, int], None] | None = None,
) -> None:
    """Run a batch; if the actor crashes, answer the batch's callers before propagating."""
    stats = actor.stats
    commit_total, failed = stats.commit_seconds_total, stats.failed_commits
    try:
        await actor.process(batch)
        if observe is not None:
            committed = stats.commit_seconds_total != commit_total
            observe(len(batch), stats.last_commit_seconds if committed else None, stats.failed_commits - failed)
    except Exception:
        failure = Rejected(Unavailable("The project hit an internal error; retry"))
        for command in batch:
            try:
                command.reply.send_nowait(failure)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # already answered, or the caller gave up
        raise


def _drain(recv: trio.MemoryReceiveChannel[Command], limit: int | None) -> list[Command]:
    batch: list[Command] = []
    while limit is None or len(batch) < limit:
        try:
            batch.append(recv.receive_nowait())
        except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
            break
    return batch


@asynccontextmanager
async def open_registry(
    db: Database, options: RegistryOptions, publish: Publish | None = None,
    keep_alive: Callable[[uuid.UUID], bool] | None = None, notify: Notify | None = None,
    ownership: Ownership | None = None, bus: "ClusterBus | None" = None, committer: Committer | None = None,
) -> AsyncIterator[ActorRegistry]:
    async with trio.open_nursery() as nursery:
        registry = ActorRegistry(db, nursery, options, publish, keep_alive, notify, ownership, bus, committer)
        try:
            yield registry
        finally:
            registry.close()
            nursery.cancel_scope.cancel()
