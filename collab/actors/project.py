"""ProjectActor: the one task that owns a project's state and writes it.

Every change to a project, from REST or WebSocket, is a :class:`Command` in
this actor's bounded inbox. Its supervisor (registry.py) hands it up to
``max_batch`` queued commands at a time; :meth:`ProjectActor.process` applies
them in order to a :class:`Draft` with the pure rules of
:mod:`collab.domain.rules`, writes the batch's events and rows atomically
with the seq fence (group commit: a batch of task events through the shared
:class:`~collab.actors.committer.Committer`, anything else in ONE
transaction of its own), and only then folds the draft into its state,
replies to each caller and hands the events to ``publish``.

Guarantees:
- Replies are sent only after commit: an ``Accepted`` reply means durable.
- A failed commit drops the draft and reloads the state from PostgreSQL. A
  retryable failure (fence lost, outage, deadline) fails exactly that batch's
  callers with that error. Data PostgreSQL refuses (a constraint the rules
  did not foresee) is isolated: the batch's commands are committed one by
  one and only the offending one fails, with a non-retryable error. A resent
  op id older than the in-memory window (:class:`DuplicateOpId`) is looked
  up and the batch run again, the resend answered as a duplicate.
- The commit is shielded with a deadline, so cancellation (shutdown) never
  leaves a batch half-acknowledged.
- Replies go through each caller's own one-slot channel with ``send_nowait``;
  a caller that gave up is ignored. Nothing here ever awaits a caller.
- Readers get the committed state only (:meth:`read`): the draft is private.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Sequence

import trio

from collab.domain.model import Draft, ProjectState
from collab.actors.committer import Committer, DirectCommitter
from collab.actors.op_ids import OpIds
from collab.actors.ownership import OwnedElsewhere, Ownership
from collab.domain.ops import CommentEdit, Event, MemberAdd, Op, TaskCreate
from collab.domain.notifications import Notification, notifications_for
from collab.domain.results import result_view
from collab.domain.rules import apply
from collab.domain.users import Principal
from collab.errors import CollabError, IdempotencyKeyReused, Unavailable
from collab.storage import changelog
from collab.storage import projects as store
from collab.storage.database import Database
from collab.storage.task_commits import TaskBatch, fits_one_statement

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A REST ``Idempotency-Key`` travelling with its command."""

    key: str
    request_hash: str
    success_status: int


@dataclass(frozen=True, slots=True)
class Accepted:
    seq: int                  # the project's seq after this command (unchanged for a no-op)
    events: tuple[Event, ...]
    result: Any               # JSON view of the affected record, or None
    replayed: bool = False    # an idempotent retry answered from the first result


@dataclass(frozen=True, slots=True)
class Rejected:
    error: CollabError


Reply = Accepted | Rejected


@dataclass(eq=False)
class Command:
    op: Op
    caller: Principal
    reply: trio.MemorySendChannel[Reply]
    client_op_id: str | None = None
    idempotency: Idempotency | None = None
    forwarded: bool = False  # came from another node: never forward it again


@dataclass
class ActorStats:
    """Figures kept for metrics: inbox depth is read live from the channel."""

    batches: int = 0
    commands: int = 0
    events: int = 0
    last_batch_size: int = 0
    commit_seconds_total: float = 0.0
    last_commit_seconds: float = 0.0
    failed_commits: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.commands / self.batches if self.batches else 0.0


#: Receives each committed batch's events (with who caused them), in seq order.
Publish = Callable[[uuid.UUID, Sequence[store.EventRecord]], None]


#: Receives the notifications a committed batch created (to push them to sockets).
Notify = Callable[[Sequence[Notification]], None]


class ProjectNotFound(Exception):
    """The project does not exist (or was deleted); the actor stops."""


class ProjectActor:
    def __init__(
        self, project_id: uuid.UUID, db: Database, *, commit_timeout_s: float,
        publish: Publish, notify: Notify | None = None, recent_keys: int = 1024, op_id_window: int = 1_000,
        ownership: Ownership | None = None, committer: Committer | None = None,
    ) -> None:
        self._ownership = ownership or Ownership(db)
        self._committer = committer or DirectCommitter(db)
        self.epoch: int | None = None  # the ownership epoch that fences our commits; None: a follower
        self._notify = notify or (lambda notes: None)
        self.project_id = project_id
        self._db = db
        self._commit_timeout_s = commit_timeout_s
        self._publish = publish
        self.state: ProjectState | None = None
        self.names: dict[uuid.UUID, str] = {}
        self.stats = ActorStats()
        self.loaded = trio.Event()
        self._seq_changed = trio.Event()
        self._recent: OrderedDict[tuple[uuid.UUID, str], tuple[str, Accepted]] = OrderedDict()
        self._recent_limit = recent_keys
        self.op_ids = OpIds(op_id_window)

    # --- reading (synchronous, committed state only) ---

    def name_of(self, user_id: uuid.UUID) -> str | None:
        return self.names.get(user_id)

    def seq_advanced(self) -> None:
        """Wake :meth:`wait_for_seq` callers (a follower folded events)."""
        self._seq_changed.set()
        self._seq_changed = trio.Event()

    async def wait_for_seq(self, seq: int, timeout_s: float) -> bool:
        """Wait until the state reached ``seq`` (at most ``timeout_s``); whether it did."""
        with trio.move_on_after(timeout_s):
            while self.state is None or self.state.seq < seq:
                await self._seq_changed.wait()
            return True
        return False

    # --- lifecycle ---

    async def load(self) -> None:
        """Become the project's owner and (re)load its committed state from
        PostgreSQL; :class:`ProjectNotFound` if gone, :class:`OwnedElsewhere`
        if another live node owns it."""
        epoch = await self._ownership.acquire(self.project_id)
        if epoch is None:
            exists, owner = await self._ownership.owner_of(self.project_id)
            if not exists:
                raise ProjectNotFound(self.project_id)
            raise OwnedElsewhere(self.project_id, owner)
        self.epoch = epoch
        await self._load_state()
        await self.op_ids.load(self._db, self.project_id)
        self.loaded.set()

    async def load_as_follower(self) -> None:
        """Load the committed state to mirror it (no ownership: this actor never commits)."""
        self.epoch = None
        await self._load_state()
        self.loaded.set()

    async def _load_state(self) -> None:
        loaded = await self._db.run(store.load_state, self.project_id, transaction=False)
        if loaded is None:
            raise ProjectNotFound(self.project_id)
        self.state, self.names = loaded

    async def release(self) -> None:
        """Hand the project back (after the last batch of a passivating owner)."""
        if self.epoch is not None:
            await self._ownership.release(self.project_id, self.epoch)
            self.epoch = None

    async def process(self, batch: list[Command]) -> None:
        """Apply, commit and answer one batch (the whole write path)."""
        assert self.state is not None
        if self.epoch is None:  # a follower never commits (the registry forwards instead)
            for command in batch:
                _reply(command, Rejected(Unavailable("This node does not own the project; retry")))
            return
        now = datetime.now(timezone.utc)
        draft = Draft(self.state)
        accepted: list[tuple[Command, Accepted]] = []
        records: list[store.EventRecord] = []
        keys: list[store.IdempotencyRecord] = []
        notes: list[Notification] = []
        in_batch: dict[tuple[uuid.UUID, str], tuple[str, Accepted]] = {}
        repeats: list[Command] = []  # same key and request as an earlier command of this batch
        ops_in_batch: dict[tuple[uuid.UUID, str], Command] = {}
        refused: list[tuple[Command, CollabError]] = []  # rejected ops that may be resends of old ones
        for command in batch:
            if command.client_op_id:
                op_key = (command.caller.user_id, command.client_op_id)
                if op_key in ops_in_batch:
                    repeats.append(command)
                    continue
                applied = self.op_ids.get(op_key)
                if applied is not None:
                    _reply(command, self._already_applied(draft, command, applied))
                    continue
                ops_in_batch[op_key] = command
            replay = self._replay(command, in_batch)
            if replay == "repeat":
                repeats.append(command)
                continue
            if replay is not None:
                _reply(command, replay)
                continue
            checkpoint = draft.checkpoint()
            previous_comment = (
                draft.comments.get(command.op.comment_id) if isinstance(command.op, CommentEdit) else None
            )
            try:
                events = apply(draft, command.op, command.caller, now)
            except CollabError as error:
                if command.client_op_id and not self.op_ids.complete:
                    refused.append((command, error))
                else:
                    _reply(command, Rejected(error))
                continue
            before = {e.task_id: draft.task_at(checkpoint, e.task_id) for e in events if e.task_id is not None}
            notes.extend(notifications_for(
                draft, events, before, command.caller.user_id, command.caller.username, now, previous_comment,
            ))
            result = result_view(draft, command.op, self.names)
            outcome = Accepted(seq=draft.seq, events=tuple(events), result=result)
            accepted.append((command, outcome))
            if command.idempotency is not None:
                in_batch[(command.caller.user_id, command.idempotency.key)] = (
                    command.idempotency.request_hash, outcome,
                )
            # The op id goes on the command's last event (unique per project and user).
            records.extend(
                store.EventRecord(e, command.caller.user_id, command.client_op_id if i == len(events) - 1 else None)
                for i, e in enumerate(events)
            )
            if command.idempotency is not None:
                keys.append(store.IdempotencyRecord(
                    command.caller.user_id, command.idempotency.key, command.idempotency.request_hash,
                    command.idempotency.success_status, result, {},
                ))
        if refused:
            await self._answer_refused(draft, refused)
        self.stats.batches += 1
        self.stats.commands += len(batch)
        self.stats.last_batch_size = len(batch)
        if records or keys:
            started = time.perf_counter()
            try:
                with trio.move_on_after(self._commit_timeout_s) as deadline:
                    deadline.shield = True
                    if fits_one_statement(records, keys, notes):
                        await self._committer.commit(TaskBatch(self.project_id, self.state.seq, self.epoch, records))
                    else:
                        await self._db.run(
                            store.commit_batch, project_id=self.project_id, expected_seq=self.state.seq,
                            records=records, idempotency=keys, notifications=notes, epoch=self.epoch,
                        )
                if deadline.cancelled_caught:
                    raise Unavailable("The commit did not finish in time; retry")
            except CollabError as error:
                self.stats.failed_commits += 1
                log.warning(
                    "commit of %d events for project %s failed: %s", len(records), self.project_id, error.detail,
                )
                await self.load()
                if isinstance(error, store.DuplicateOpId) and await self.op_ids.fetch(
                    self._db, self.project_id,
                    [(c.caller.user_id, c.client_op_id) for c, _ in accepted if c.client_op_id],
                ):
                    # An op id older than the in-memory window was resent: now that the
                    # window knows it, run the batch's unanswered commands again.
                    await self.process([c for c, _ in accepted] + repeats)
                    return
                if isinstance(error, store.CommitRejected) and len(accepted) > 1:
                    # PostgreSQL refused some data the rules let through: commit the
                    # commands one by one so only the offending one fails.
                    for command, _ in accepted:
                        await self.process([command])
                    for command in repeats:
                        replay = self._replay(command, {})
                        _reply(command, replay if isinstance(replay, (Accepted, Rejected)) else Rejected(error))
                    return
                # Retryable (fence lost, outage, deadline) or, for a lone command,
                # a deterministic refusal that a retry would not fix.
                for command in [c for c, _ in accepted] + repeats:
                    _reply(command, Rejected(error))
                return
            elapsed = time.perf_counter() - started
            self.stats.last_commit_seconds = elapsed
            self.stats.commit_seconds_total += elapsed
            self.stats.events += len(records)
        draft.commit()
        for record in records:
            if record.client_op_id and record.actor_id:
                self.op_ids.add(changelog.AppliedOp(
                    record.actor_id, record.client_op_id, record.event.seq, record.event.task_id,
                ))
        for command, outcome in accepted:
            if command.client_op_id and not outcome.events:
                # A no-op leaves no event to carry its id: remember it here so a resend
                # stays a no-op (in memory only: a restart forgets it).
                task_id = getattr(command.op, "task_id", None)
                self.op_ids.add(changelog.AppliedOp(command.caller.user_id, command.client_op_id, outcome.seq, task_id))
        for command, outcome in accepted:
            if isinstance(command.op, MemberAdd):
                self.names[command.op.user_id] = command.op.username
            self._remember(command, outcome)
            _reply(command, outcome)
        for command in repeats:
            applied = self.op_ids.get((command.caller.user_id, command.client_op_id)) if command.client_op_id else None
            if applied is not None:
                _reply(command, self._already_applied(draft, command, applied))
                continue
            replay = self._replay(command, {})
            _reply(command, replay if isinstance(replay, (Accepted, Rejected)) else Rejected(Unavailable("Retry")))
        try:  # committed and answered: a delivery failure must not take the actor down
            if records:
                self._publish(self.project_id, records)
            if notes:
                self._notify(notes)
        except Exception:  # noqa: BLE001 - logged; subscribers resume from the change log
            log.exception("delivering the committed batch of project %s failed", self.project_id)

    async def _answer_refused(self, draft: Draft, refused: list[tuple[Command, CollabError]]) -> None:
        """Rules refused these ops; one may be the resend of an op applied before the
        in-memory window (a create whose task exists, an update of a deleted task):
        look the ids up first, so a resend is answered as applied, not as an error."""
        try:
            await self.op_ids.fetch(
                self._db, self.project_id, [(c.caller.user_id, c.client_op_id) for c, _ in refused if c.client_op_id],
            )
        except CollabError:
            pass  # cannot tell: the rules' answer stands
        for command, error in refused:
            applied = self.op_ids.get((command.caller.user_id, command.client_op_id or ""))
            _reply(command, self._already_applied(draft, command, applied) if applied else Rejected(error))

    def _already_applied(self, draft: Draft, command: Command, applied: changelog.AppliedOp) -> Accepted:
        """The ack for a resent op: its original seq, the target as it is now."""
        op = command.op
        if isinstance(op, TaskCreate) and applied.task_id is not None:
            op = TaskCreate(applied.task_id, op.fields)
        return Accepted(seq=applied.seq, events=(), result=result_view(draft, op, self.names), replayed=True)

    # --- idempotency within the actor's memory ---

    def _replay(
        self, command: Command, in_batch: dict[tuple[uuid.UUID, str], tuple[str, Accepted]]
    ) -> Reply | Literal["repeat"] | None:
        """The answer for a repeated Idempotency-Key: a replay, a rejection,
        ``"repeat"`` (same request earlier in this batch: answer after commit), or None."""
        if command.idempotency is None:
            return None
        key = (command.caller.user_id, command.idempotency.key)
        pending = in_batch.get(key)
        if pending is not None:
            if pending[0] != command.idempotency.request_hash:
                return Rejected(IdempotencyKeyReused())
            return "repeat"
        found = self._recent.get(key)
        if found is None:
            return None
        request_hash, outcome = found
        if request_hash != command.idempotency.request_hash:
            return Rejected(IdempotencyKeyReused())
        return Accepted(seq=outcome.seq, events=(), result=outcome.result, replayed=True)

    def _remember(self, command: Command, outcome: Accepted) -> None:
        if command.idempotency is None:
            return
        self._recent[(command.caller.user_id, command.idempotency.key)] = (command.idempotency.request_hash, outcome)
        while len(self._recent) > self._recent_limit:
            self._recent.popitem(last=False)


def _reply(command: Command, reply: Reply) -> None:
    try:
        command.reply.send_nowait(reply)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the caller gave up; nothing to do
