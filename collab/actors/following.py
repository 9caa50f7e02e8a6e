"""Following a project that another node owns: mirror its state, forward its commands.

A follower keeps the project's committed state (so reads, snapshots and
subscriptions are served locally) by folding the events the owner publishes
on the cluster bus (:func:`fold_records`). Events arrive in seq order; a gap
(a lost bus message) or a bus outage makes the follower read what it missed
from the change log and reload the state (:func:`catch_up`).

Commands are forwarded to the owner in batches, in the order they were
queued (:func:`forward`), with the caller's deadline; the owner runs them as
local commands (:func:`run_forwarded`). If the owner stops answering and is
no longer the live owner in PostgreSQL, the batch is handed back so that
this node can take the project over and run it. A forwarded command is
never forwarded again: a node that does not own the project says so and the
sender looks the owner up again.

Delivery of a forwarded ack waits (briefly) until the follower has applied
the acknowledged seq, so a client that reads or subscribes on this node right
after its write sees it.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import trio

from collab.actors.ownership import OwnedElsewhere
from collab.actors.project import Accepted, Command, ProjectActor, Rejected, Reply
from collab.domain.ops import Event
from collab.domain.replay import fold
from collab.errors import Busy, CollabError, Unavailable
from collab.storage import changelog
from collab.storage.database import Database
from collab.storage.projects import EventRecord

if TYPE_CHECKING:
    from collab.actors.registry import ActorRegistry, _Slot

log = logging.getLogger(__name__)

CATCH_UP_PAGE = 1000
ACK_CATCH_UP_WAIT_S = 1.0


class NotOwner(Unavailable):
    """This node does not own the project (any more): the sender looks the owner up again."""

    title = "This node does not own the project; retry"


# --- mirroring --------------------------------------------------------------------------

def fold_records(actor: ProjectActor, records: list[EventRecord]) -> tuple[list[EventRecord], bool]:
    """Fold the next events into the follower's state: (the ones applied, whether a gap was seen)."""
    state = actor.state
    if state is None:
        return [], False
    applied: list[EventRecord] = []
    for record in records:
        seq = record.event.seq
        if seq <= state.seq:
            continue  # already folded (a catch-up got there first)
        if seq != state.seq + 1:
            return applied, True
        fold(state, record.event, actor.names)
        applied.append(record)
    if applied:
        actor.seq_advanced()
    return applied, False


def _record_from_log(row: dict[str, Any]) -> EventRecord:
    """A change-log row as a record for subscribers (no ``after``: the state is reloaded instead)."""
    payload, kind = row["data"], row["kind"]
    subject = None
    if kind.startswith("member."):
        raw = (payload.get("member") or {}).get("user_id") or payload.get("user_id")
        subject = uuid.UUID(raw) if raw else None
    task_id = uuid.UUID(row["task_id"]) if row["task_id"] else None
    actor_id = uuid.UUID(row["actor_id"]) if row["actor_id"] else None
    return EventRecord(Event(row["seq"], kind, task_id, payload, None, subject), actor_id, row["client_op_id"])


async def catch_up(db: Database, actor: ProjectActor) -> list[EventRecord]:
    """Read the events after the follower's seq from the change log and reload
    the state; the events, for this node's subscribers."""
    assert actor.state is not None
    since = actor.state.seq
    missed: list[EventRecord] = []
    while True:
        rows = await db.run(changelog.events_since, actor.project_id, since, CATCH_UP_PAGE, transaction=False)
        missed += [_record_from_log(r) for r in rows]
        if len(rows) < CATCH_UP_PAGE:
            break
        since = rows[-1]["seq"]
    await actor.load_as_follower()
    actor.seq_advanced()
    return [r for r in missed if r.event.seq <= actor.state.seq]


# --- forwarding -------------------------------------------------------------------------

def _wire(command: Command) -> dict[str, Any]:
    return {"op": command.op, "caller": command.caller, "client_op_id": command.client_op_id,
            "idempotency": command.idempotency}


def _reply(command: Command, reply: Reply) -> None:
    try:
        command.reply.send_nowait(reply)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def forward(registry: "ActorRegistry", slot: "_Slot", batch: list[Command]) -> bool:
    """Run a batch on the project's owner and relay the replies; True when the
    owner is gone (the batch is unanswered: this node should take over)."""
    bus, ownership = registry.bus, registry.ownership
    assert bus is not None
    for command in [c for c in batch if c.forwarded]:
        _reply(command, Rejected(NotOwner()))
    batch = [c for c in batch if not c.forwarded]
    deadline = trio.current_time() + registry.options.ask_timeout_s
    while batch:
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            for command in batch:
                _reply(command, Rejected(Busy("The project's owner did not answer in time; retry")))
            return False
        if slot.owner is None or slot.owner == ownership.node_id:
            return True
        if not bus.subscribed:  # Redis is down: no way to reach the owner; fail fast, retryably
            for command in batch:
                _reply(command, Rejected(Unavailable("The project's node cannot be reached right now; retry")))
            return False
        wire = [_wire(c) for c in batch]
        replies = await bus.call(slot.owner, slot.project_id, wire, min(remaining, ownership.ttl_s))
        if replies is None:
            exists, owner = await ownership.owner_of(slot.project_id)
            if owner != slot.owner:
                log.info("project %s: owner %s is gone (now %s)", slot.project_id, slot.owner, owner)
                slot.owner = owner
                if owner is None:
                    return True
            continue  # the same owner is alive but slow: keep asking until the deadline
        retry: list[Command] = []
        highest = 0
        for command, reply in zip(batch, replies, strict=False):
            if "err" in reply and isinstance(reply["err"], NotOwner):
                retry.append(command)
            elif "err" in reply:
                _reply(command, Rejected(reply["err"]))
            else:
                ok = reply["ok"]
                highest = max(highest, ok["seq"])
                command_reply: Reply = Accepted(seq=ok["seq"], events=(), result=ok["result"],
                                                replayed=ok["replayed"])
                await slot.actor.wait_for_seq(highest, ACK_CATCH_UP_WAIT_S)
                _reply(command, command_reply)
        if retry:
            _, slot.owner = await ownership.owner_of(slot.project_id)
            await trio.sleep(0.02)
        batch = retry
    return False


async def run_forwarded(registry: "ActorRegistry", project_id: uuid.UUID, wire: list[dict[str, Any]],
                        timeout_s: float) -> list[dict[str, Any]]:
    """Run forwarded commands here, in order; one reply each (``ok``, ``err``)."""
    receivers: list[trio.MemoryReceiveChannel[Reply]] = []
    try:
        with trio.move_on_after(timeout_s):
            for item in wire:
                send, recv = trio.open_memory_channel[Reply](1)
                command = Command(item["op"], item["caller"], send, item.get("client_op_id"),
                                  item.get("idempotency"), forwarded=True)
                await registry.submit(project_id, command)
                receivers.append(recv)
    except CollabError as exc:  # shutting down, or the project could not be reached
        return [{"err": exc} for _ in wire]
    replies: list[dict[str, Any]] = []
    with trio.move_on_after(timeout_s):
        for recv in receivers:
            reply = await recv.receive()
            if isinstance(reply, Accepted):
                replies.append({"ok": {"seq": reply.seq, "result": reply.result, "replayed": reply.replayed}})
            else:
                replies.append({"err": reply.error})
    busy = Busy("The project did not answer in time; retry")
    return replies + [{"err": busy} for _ in range(len(wire) - len(replies))]


__all__ = ["NotOwner", "OwnedElsewhere", "fold_records", "catch_up", "forward", "run_forwarded"]
