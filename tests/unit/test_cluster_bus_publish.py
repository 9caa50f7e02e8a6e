"""The cluster bus's publisher (collab/bus/cluster.py): a failed publish is tried again
before the message is dropped, and order is kept."""

from __future__ import annotations

from typing import Any

import trio

from collab.bus.cluster import PUBLISH_RETRIES, ClusterBus


class FlakyLink:
    """Fails the first ``failures`` publishes (a dead pooled connection after a Redis restart)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, channel: str, message: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("connection closed by server")
        self.published.append((channel, message))


async def publish_all(link: FlakyLink, messages: list[bytes]) -> ClusterBus:
    bus = ClusterBus(link, "node-a")  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus._publish_loop)
        for message in messages:
            assert bus._enqueue("chan", message)
        with trio.fail_after(10):
            while bus.published + bus.dropped < len(messages):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return bus


async def test_a_publish_that_fails_once_is_retried_in_order() -> None:
    link = FlakyLink(failures=1)
    bus = await publish_all(link, [b"first", b"second"])
    assert [m for _, m in link.published] == [b"first", b"second"]
    assert bus.dropped == 0


async def test_redis_down_drops_without_retrying_each_message() -> None:
    link = FlakyLink(failures=PUBLISH_RETRIES + 1 + 2)  # the first message exhausts its retries, the next fails once
    bus = await publish_all(link, [b"a", b"b", b"c", b"d"])
    got: Any = [m for _, m in link.published]
    assert bus.dropped == 3 and got == [b"d"], (bus.dropped, got)
