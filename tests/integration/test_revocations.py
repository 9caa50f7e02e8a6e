"""The revocation bus on a real (private) Redis: delivery between nodes, outages, bad messages."""

from __future__ import annotations

import uuid

import orjson
import trio
import trio_asyncio

from collab.bus.redis_link import open_redis
from collab.bus.revocations import CHANNEL, RevocationBus
from tests.redis_server import private_redis

DEADLINE_S = 10


class Node:
    """What a node's AuthService would do with remote revocations: record them."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, uuid.UUID]] = []
        self.clears = 0

    def apply(self, kind: str, ident: uuid.UUID) -> None:
        self.applied.append((kind, ident))

    def clear_all(self) -> None:
        self.clears += 1


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(DEADLINE_S):
        while not predicate():
            await trio.sleep(0.02)


async def test_revocations_reach_other_nodes_and_survive_an_outage() -> None:
    async with private_redis() as redis, trio_asyncio.open_loop():
        async with open_redis(redis.url) as link_a, open_redis(redis.url) as link_b, trio.open_nursery() as nursery:
            a, b = Node(), Node()
            bus_a = RevocationBus(link_a, a.apply, a.clear_all, max_backoff_s=0.5, poll_s=0.2)
            bus_b = RevocationBus(link_b, b.apply, b.clear_all, max_backoff_s=0.5, poll_s=0.2)
            await nursery.start(bus_a.run)
            await nursery.start(bus_b.run)

            session, user = uuid.uuid4(), uuid.uuid4()
            bus_a.announce("session", session)
            bus_a.announce("user_deactivated", user)
            await _until(lambda: len(b.applied) == 2, "b applies a's revocations")
            assert b.applied == [("session", session), ("user_deactivated", user)]
            assert a.applied == []  # a node ignores its own messages

            # Garbage on the channel is ignored, not fatal.
            for junk in (
                b"not json", b'{"kind": "session"}', orjson.dumps({"node": "x", "kind": "nuke", "id": str(user)}),
            ):
                await link_a.publish(CHANNEL, junk)
            bus_a.announce("user", user)
            await _until(lambda: len(b.applied) == 3, "b keeps listening")
            assert b.applied[-1] == ("user", user)

            await redis.stop()
            bus_a.announce("session", uuid.uuid4())  # dropped, never raises, never blocks
            await _until(lambda: not bus_b.subscribed, "b notices the outage")
            await redis.start()
            # Back: b resubscribes and clears its cache (it may have missed revocations meanwhile).
            await _until(lambda: bus_b.subscribed and b.clears == 1, "b resubscribes and clears its cache")
            later = uuid.uuid4()
            with trio.fail_after(DEADLINE_S):
                while ("session", later) not in b.applied:
                    bus_a.announce("session", later)  # a's own subscription may still be reconnecting
                    await trio.sleep(0.2)
            assert bus_a.dropped >= 1  # the one announced during the outage
            nursery.cancel_scope.cancel()
