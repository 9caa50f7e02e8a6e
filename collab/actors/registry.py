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
from typing import AsyncIterator, Callable, Sequence

import trio

from collab.actors.project import (
    Accepted, Command, Idempotency, Notify, ProjectActor, ProjectNotFound, Publish, Rejected, Reply,
)
from collab.domain.ops import Op
from collab.domain.users import Principal
from collab.errors import Busy, CollabError, NotFound, Unavailable
from collab.storage import projects as store
from collab.storage.database import Database

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


def _no_publish(project_id: uuid.UUID, records: Sequence[store.EventRecord]) -> None:
    return None


class ActorRegistry:
    def __init__(
        self, db: Database, nursery: trio.Nursery, options: RegistryOptions, publish: Publish | None = None,
        keep_alive: Callable[[uuid.UUID], bool] | None = None, notify: Notify | None = None,
    ) -> None:
        self._db = db
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

    # --- public API ---

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
        for record in records:
            if record.event.kind == "task.created" and record.event.task_id is not None:
                self._index_task(record.event.task_id, project_id)
        self._publish_downstream(project_id, records)

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
            project_id, self._db, commit_timeout_s=self._options.commit_timeout_s, publish=self._publish, notify=self._notify,
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
                    await slot.actor.load()
                    slot.ready.set()
                    await self._serve(slot)
                    return
                except ProjectNotFound:
                    slot.missing = True
                    slot.ready.set()
                    self._forget(slot)
                    self._fail_queued(slot, NotFound("No such project"))
                    return
                except Exception as exc:  # noqa: BLE001 - supervision: log, restart or give up
                    now = time.monotonic()
                    slot.crashes = [t for t in slot.crashes if now - t < self._options.restart_window_s] + [now]
                    log.error("project actor %s crashed (%d in window)", slot.project_id, len(slot.crashes), exc_info=exc)
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

    async def _serve(self, slot: _Slot) -> None:
        options = self._options
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
                        await _process(slot.actor, batch)
                    slot.inbox_recv.close()  # no await since the last empty drain: nothing is lost
                finally:
                    if self._draining.get(slot.project_id) is done:
                        del self._draining[slot.project_id]
                    done.set()
                log.debug("project actor %s passivated", slot.project_id)
                return
            batch = [first] + _drain(slot.inbox_recv, options.max_batch - 1)
            await _process(slot.actor, batch)

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


async def _process(actor: ProjectActor, batch: list[Command]) -> None:
    """Run a batch; if the actor crashes, answer the batch's callers before propagating."""
    try:
        await actor.process(batch)
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
) -> AsyncIterator[ActorRegistry]:
    async with trio.open_nursery() as nursery:
        registry = ActorRegistry(db, nursery, options, publish, keep_alive, notify)
        try:
            yield registry
        finally:
            registry.close()
            nursery.cancel_scope.cancel()
