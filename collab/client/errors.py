"""The errors the Collab client raises.

Every error the SDK raises is a :class:`CollabClientError`; foreign exceptions
(httpx, trio-websocket, OSError) are converted at the boundary with
``raise ... from exc``::

    CollabClientError
    ├── CollabAPIError        a REST call answered an error (problem+json): status, code, detail, retryable
    ├── TransportError        a REST call got no answer (connect, timeout, reset); retryable
    ├── Rejected              the server answered a WebSocket request with an ``error`` frame
    │   ├── OpRejected        ... an ``op`` (code, message, retryable); see OpTimeout
    │   │   └── OpTimeout     no ack within the op deadline: the op MAY have been applied;
    │   │                     resend it with the same op id to find out (exactly-once)
    │   └── SubscribeRejected ... a ``subscribe`` (forbidden, not_found, ...)
    └── RealtimeClosed        the realtime client is closed: by you, or the server said
                              "do not reconnect" (close code 4500-4999 or 1009)

``code`` is the server's stable error code (docs/api.md, docs/protocol.md);
client-side codes are ``timeout``, ``payload_too_large`` (checked before
sending) and ``transport``. ``retryable`` says whether the same request (same
op id, same Idempotency-Key) may succeed later.
"""

from __future__ import annotations

from typing import Any


class CollabClientError(Exception):
    """Base of every error raised by :mod:`collab.client`."""


class CollabAPIError(CollabClientError):
    """A REST error response, parsed from ``application/problem+json``."""

    def __init__(
        self, status: int, code: str, detail: str, retryable: bool, *,
        errors: list[dict[str, Any]] | None = None, request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.retryable = retryable
        self.errors = errors or []
        self.request_id = request_id


class TransportError(CollabClientError):
    """A REST request got no HTTP answer (refused, reset, timed out)."""

    code = "transport"
    retryable = True


class Rejected(CollabClientError):
    """An ``error`` frame answering one of our WebSocket requests."""

    def __init__(self, code: str, message: str, retryable: bool, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.errors = errors or []


class OpRejected(Rejected):
    """The server refused an op (or the client gave up on it, see :class:`OpTimeout`)."""


class OpTimeout(OpRejected):
    """No ack within the deadline. The op may still have been applied: resend with the same id."""

    def __init__(self, message: str = "No ack within the op deadline; resend with the same op id") -> None:
        super().__init__("timeout", message, True)


class SubscribeRejected(Rejected):
    """The server refused a subscription (``forbidden``, ``not_found``, ...)."""


class RealtimeClosed(CollabClientError):
    """The realtime client is closed and will not reconnect.

    ``code`` is the WebSocket close code that ended it (None when closed by
    the application or when the first connection could not be made).
    """

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(f"{reason} (close code {code})" if code is not None else reason)
        self.reason = reason
        self.code = code
