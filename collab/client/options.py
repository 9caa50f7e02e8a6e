"""Settings and counters of the realtime client, and the small trio helpers it uses.

Every wait of the client has a deadline from :class:`RealtimeOptions`
(units in the names). :class:`Waiter` is a one-shot result slot; :class:`Pacer`
keeps the client under the server's message rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Union
from urllib.parse import urlsplit, urlunsplit

import trio

SECONDS = 1.0
MIB = 1024 * 1024

#: A bearer token, or an async function returning a current one (called for every connection).
TokenSource = Union[str, Callable[[], Awaitable[str]]]


@dataclass(frozen=True)
class RealtimeOptions:
    connect_timeout_s: float = 10 * SECONDS       # TCP + WebSocket handshake
    auth_timeout_s: float = 10 * SECONDS          # from the auth frame to welcome
    first_connect_timeout_s: float = 30 * SECONDS  # open_realtime gives up (retrying) after this
    close_timeout_s: float = 2 * SECONDS           # for our close handshake
    request_timeout_s: float = 30 * SECONDS        # subscribe / unsubscribe answers
    op_timeout_s: float = 60 * SECONDS             # send_op overall, across reconnects
    op_resend_after_s: float = 15 * SECONDS        # no answer on this socket: resend (same id)
    op_retries: int = 5                            # retryable errors (busy, unavailable, ...) retried
    ping_interval_s: float = 20 * SECONDS          # application ping frames (server idle timeout: 75 s)
    pong_timeout_s: float = 20 * SECONDS           # nothing received for interval + this: socket is dead
    backoff_base_s: float = 0.25 * SECONDS
    backoff_cap_s: float = 30 * SECONDS
    stable_after_s: float = 10 * SECONDS           # a socket up this long resets the backoff
    max_reconnect_attempts: int | None = None      # None: keep trying (until closed)
    max_inflight_ops: int = 128                    # server: COLLAB_WS_MAX_INFLIGHT_OPS (256)
    message_burst: int = 100                       # server: COLLAB_WS_MESSAGE_BURST (200)
    updates_buffer: int = 1024                     # update feed; when full, new updates are dropped
    max_receive_bytes: int = 64 * MIB              # snapshots of large projects are large


@dataclass
class RealtimeStats:
    connections: int = 0          # sockets that reached welcome
    connect_failures: int = 0
    messages_received: int = 0
    frames_received: int = 0
    batched_messages: int = 0     # messages that were JSON arrays
    subscribes_sent: int = 0
    gaps: int = 0                 # events after a hole: resubscribed with since
    resyncs: int = 0              # resync frames received
    ops_sent: int = 0             # op frames written, resends included
    ops_resent: int = 0
    duplicate_acks: int = 0
    updates_dropped: int = 0      # the feed was full
    unsolicited_errors: int = 0   # error frames without an id (e.g. rate_limited)
    last_close_code: int | None = None
    last_close_reason: str | None = None


def ws_url(url: str) -> str:
    """``http(s)://host[:port]`` or ``ws(s)://host[:port][/ws]`` -> the ``/ws`` URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket or HTTP URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


async def resolve_token(source: TokenSource) -> str:
    return source if isinstance(source, str) else await source()


class Waiter:
    """A one-shot slot: :meth:`set` a value or :meth:`fail` with an error, once; :meth:`wait` for it."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def set(self, value: Any) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(eq=False)
class PendingOp:
    """An op sent (or to be sent) and not yet answered; kept for resending with the same id."""

    op_id: str
    project_id: str
    text: str
    waiter: Waiter
    sent_on: int | None = None  # connection generation it was last written on (None: send again)
    sends: int = 0              # how often it was written

    def rearm(self) -> None:
        """Forget the answer (a retryable error) and the send, so it is sent again."""
        self.waiter = Waiter()
        self.sent_on = None


class Pacer:
    """A token bucket (``rate_per_s``, ``burst``); :meth:`wait` sleeps until a message may go."""

    def __init__(self, rate_per_s: float = math.inf, burst: int = 100) -> None:
        self.rate = rate_per_s
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None

    def configure(self, rate_per_s: float, burst: int) -> None:
        self.rate, self.capacity = rate_per_s, float(burst)
        self.tokens = min(self.tokens, self.capacity)

    async def wait(self) -> None:
        if self.rate == math.inf:
            return
        while True:
            now = trio.current_time()
            if self.stamp is not None:
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await trio.sleep((1 - self.tokens) / self.rate)
