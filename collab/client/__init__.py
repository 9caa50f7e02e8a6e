"""collab.client: the Python SDK for Collab (REST + WebSocket protocol v1 with resume).

Used by the tests, the load generator and applications::

    async with CollabREST("http://127.0.0.1:8000") as rest:
        await rest.login("ada@example.com", "analytical engine 1843")
        async with open_realtime(rest.ws_url, rest.fresh_access_token) as rt:
            board = await rt.subscribe(project_id)          # a ProjectReplica, kept current
            ack = await rt.send_op(project_id, {"kind": "task.create", "fields": {"title": "Ship"}})
            async for update in rt:                          # events, presence, notifications ...
                ...

docs/protocol.md describes the protocol and the guarantees this client builds on.
"""

from collab.client.backoff import Backoff, should_reconnect
from collab.client.errors import (
    CollabAPIError, CollabClientError, OpRejected, OpTimeout, RealtimeClosed, Rejected, SubscribeRejected,
    TransportError,
)
from collab.client.options import RealtimeOptions, RealtimeStats, TokenSource, ws_url
from collab.client.realtime import RealtimeClient, open_realtime
from collab.client.replica import Applied, ProjectReplica
from collab.client.rest import CollabREST
from collab.client.updates import (
    Ack, ConnectionChanged, NotificationReceived, PresenceChanged, ProjectEvent, SnapshotLoaded, SubscriptionEnded,
    Update,
)

__all__ = [
    "Ack", "Applied", "Backoff", "CollabAPIError", "CollabClientError", "CollabREST", "ConnectionChanged",
    "NotificationReceived", "OpRejected", "OpTimeout", "PresenceChanged", "ProjectEvent", "ProjectReplica",
    "RealtimeClient", "RealtimeClosed", "RealtimeOptions", "RealtimeStats", "Rejected", "SnapshotLoaded",
    "SubscribeRejected", "SubscriptionEnded", "TokenSource", "TransportError", "Update", "open_realtime",
    "should_reconnect", "ws_url",
]
