"""Reconnect delays: exponential backoff with full jitter, and the close-code rule.

Pure: no trio, no clock (the random source can be injected for tests).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

#: Close codes after which a client must not reconnect (protocol v1).
FATAL_CLOSE_RANGE = range(4500, 5000)
MESSAGE_TOO_BIG = 1009
RATE_LIMITED = 4003


def should_reconnect(code: int | None) -> bool:
    """4500-4999 and 1009 mean "do not reconnect"; anything else (4000-4499,
    1001, 1006 = dropped, 1011, no close frame at all) means reconnect and resume."""
    if code is None:
        return True
    return code not in FATAL_CLOSE_RANGE and code != MESSAGE_TOO_BIG


@dataclass
class Backoff:
    """``delay()`` is uniform in ``[floor, min(cap, base * 2**attempt)]`` ("full jitter").

    ``attempt`` grows by one per delay; :meth:`reset` starts over (call it when
    a connection has stayed up long enough to count as healthy). Jitter keeps
    thousands of clients that lost the same server from coming back at once.
    """

    base_s: float = 0.25
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def delay(self, floor_s: float = 0.0) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(min(floor_s, self.cap_s), max(ceiling, floor_s))

    def reset(self) -> None:
        self.attempt = 0


def floor_for(code: int | None) -> float:
    """A minimum wait for codes that ask for it (4003: we sent too fast)."""
    return 5.0 if code == RATE_LIMITED else 0.0
