"""Request bodies that are streamed with backpressure, for the routes that take files.

Why this exists: Quart's receiver task appends every ASGI body message to
the request's buffer as fast as the client sends (iterating ``request.body``
only empties that buffer), and checks ``MAX_CONTENT_LENGTH`` against what is
buffered. A 25 MiB upload would sit in memory whenever the disk is slower
than the network, and the app-wide 1 MiB cap would refuse it outright.

What it guarantees, for the endpoints registered with
:func:`stream_bodies_of` (and for no other route):

- the body is a :class:`StreamedBody`: at most ``high_water_bytes`` wait in
  memory; beyond that the receiver stops taking ASGI messages, so hypercorn
  stops reading the socket and TCP pushes back on the client;
- the endpoint's own limit replaces ``MAX_CONTENT_LENGTH``: a declared
  ``Content-Length`` above it fails at once, and the bytes received are
  counted (chunked bodies included), so iteration raises werkzeug's
  ``RequestEntityTooLarge`` as soon as the total passes it;
- the app-wide hook that reads bodies up front skips these requests
  (:func:`is_streamed`); a response given before the handler consumed the
  body (401, 403, 415, a file over its own limit ...) first drains the rest,
  within the body's limit and ``drain_deadline_s``, so the keep-alive
  connection stays usable (STACK.md trap 9); a body over its limit, a 408,
  or one that cannot be drained in time is answered with ``Connection:
  close`` instead.

Backpressure and cancellation: the receiver waits (no deadline of its own)
until the handler takes a chunk; a client that stalls is cut by hypercorn's
read timeout, and a disconnect cancels the handler as for any request.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.typing import ASGIReceiveCallable
from quart import Quart, Response, request
from quart.wrappers import Request
from quart.wrappers.request import Body
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import EventWrapper, TrioBody
from werkzeug.exceptions import RequestEntityTooLarge

KIB = 1024
HIGH_WATER_BYTES = 256 * KIB
_EXTENSION = "collab.streamed_bodies"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class StreamedBody(TrioBody):
    """A request body with a bounded buffer and a limit on the bytes received in total."""

    def __init__(self, expected_content_length: int | None, max_bytes: int, high_water_bytes: int) -> None:
        super().__init__(expected_content_length, max_bytes)
        self.max_bytes = max_bytes
        self.high_water_bytes = high_water_bytes
        self.received_bytes = 0
        self.started = False   # the handler began to read
        self.finished = False  # read to the end
        self._room = EventWrapper()
        self._room.set()

    def append(self, data: bytes) -> None:
        if data == b"" or self._must_raise is not None:
            return
        self.received_bytes += len(data)
        if self.received_bytes > self.max_bytes:
            self._must_raise = RequestEntityTooLarge()
            self._data.clear()
            self.set_complete()
            self._room.set()
            return
        self._data.extend(data)
        self._has_data.set()
        if len(self._data) >= self.high_water_bytes:
            self._room.clear()

    async def wait_for_room(self) -> None:
        """Return once the buffer is below the high-water mark (called by the receiver only)."""
        await self._room.wait()

    async def __anext__(self) -> bytes:
        self.started = True
        try:
            chunk = await super().__anext__()
        except StopAsyncIteration:
            self.finished = True
            raise
        self._room.set()
        return chunk

    @property
    def too_large(self) -> bool:
        return isinstance(self._must_raise, RequestEntityTooLarge)


def is_streamed(req: Request) -> bool:
    return isinstance(req.body, StreamedBody)


async def next_chunk(body: Body, *, idle_timeout_s: float) -> bytes | None:
    """The body's next chunk, None at its end; ``trio.TooSlowError`` when nothing arrives for ``idle_timeout_s``.

    Raises werkzeug's ``RequestEntityTooLarge`` past the body's limit.
    """
    with trio.fail_after(idle_timeout_s):
        try:
            return await body.__anext__()
        except StopAsyncIteration:
            return None


async def drain(body: StreamedBody, *, deadline_s: float) -> bool:
    """Read and drop the rest of the body: True when it ended within its limit and deadline."""
    with trio.move_on_after(deadline_s):
        try:
            async for _ in body:
                pass
        except RequestEntityTooLarge:
            return False
        return True
    return False


class StreamingHTTPConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP connection, giving the registered endpoints a :class:`StreamedBody`."""

    def _create_request_from_scope(self, send: Any) -> Request:
        req = super()._create_request_from_scope(send)
        limit = _streamed_limit(self.app, req)
        if limit is not None:
            settings = self.app.extensions[_EXTENSION]
            req.body = StreamedBody(req.content_length, limit, settings["high_water_bytes"])
        return req

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: ASGIReceiveCallable,
    ) -> None:
        body = request.body
        if not isinstance(body, StreamedBody):
            await super().handle_messages(nursery, request, receive)
            return
        while True:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
                await body.wait_for_room()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()


def _streamed_limit(app: Quart, req: Request) -> int | None:
    registered: dict[str, Any] | None = app.extensions.get(_EXTENSION)
    if not registered or req.method not in _BODY_METHODS:
        return None
    try:
        rule, _ = app.create_url_adapter(req).match(return_rule=True)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no route (404/405/redirect): Quart answers it as usual
        return None
    limit: int | None = registered["endpoints"].get(rule.endpoint)
    return limit


def stream_bodies_of(
    app: QuartTrio, endpoints: dict[str, int], *, drain_deadline_s: float, high_water_bytes: int = HIGH_WATER_BYTES,
) -> None:
    """Stream the bodies of ``endpoints`` (endpoint name -> largest body in bytes) with backpressure."""
    app.asgi_http_class = StreamingHTTPConnection
    app.extensions[_EXTENSION] = {"endpoints": dict(endpoints), "high_water_bytes": high_water_bytes}

    @app.after_request
    async def _drain_unread_body(response: Response) -> Response:
        body = request.body
        if not isinstance(body, StreamedBody) or body.finished:
            return response
        if body.too_large or response.status_code == 408 or not await drain(body, deadline_s=drain_deadline_s):
            response.headers["Connection"] = "close"
        elif response.status_code == 413:
            # A file over its limit was refused mid-body; the rest (within the body's
            # limit) is read now, so this connection can serve the next request.
            response.headers.pop("Connection", None)
        return response
