"""Fractional index keys: ordering tasks in a column without renumbering.

A position is a non-empty string over the base-62 alphabet ``0-9A-Za-z``
(which sorts the same bytewise, i.e. under PostgreSQL's ``COLLATE "C"``) that
never ends in ``0``. :func:`key_between` returns a key strictly between two
keys, so moving one task writes one row and never touches its neighbours.
Appending to (or prepending before) a column grows keys by one character per
~61 tasks; repeated insertion between the same two neighbours grows them by
about one character per 6 insertions. :data:`MAX_POSITION_CHARS` bounds them
(the schema allows 1024): a column holds some 30,000 appended tasks.
"""

from __future__ import annotations

DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BASE = len(DIGITS)
_INDEX = {c: i for i, c in enumerate(DIGITS)}
MAX_POSITION_CHARS = 512
FIRST_POSITION = "V"  # the middle of the alphabet: room on both sides


class PositionError(ValueError):
    """A key is malformed, or the bounds are out of order."""


def is_valid(key: str) -> bool:
    return 0 < len(key) <= MAX_POSITION_CHARS and key[-1] != "0" and all(c in _INDEX for c in key)


def key_between(lower: str | None, upper: str | None) -> str:
    """A key ``k`` with ``lower < k < upper``; ``None`` means unbounded."""
    if lower is not None and not is_valid(lower):
        raise PositionError(f"invalid position {lower!r}")
    if upper is not None and not is_valid(upper):
        raise PositionError(f"invalid position {upper!r}")
    if lower is not None and upper is not None and not lower < upper:
        raise PositionError(f"positions out of order: {lower!r} >= {upper!r}")
    if lower is None and upper is None:
        return FIRST_POSITION
    if upper is None:
        key = _after(lower)  # type: ignore[arg-type]
    elif lower is None:
        key = _before(upper)
    else:
        key = _midpoint(lower, upper)
    if len(key) > MAX_POSITION_CHARS:
        raise PositionError("positions at this spot are exhausted; rebalance the column")
    return key


def _after(key: str) -> str:
    """A short key just above ``key``: appending grows keys by one character
    per ~61 appends (not per ~6, as midpoints would)."""
    for i, c in enumerate(key):
        if c != DIGITS[-1]:
            return key[:i] + DIGITS[_INDEX[c] + 1]
    return key + DIGITS[1]


def _before(key: str) -> str:
    """A short key just below ``key`` (prepending, the mirror of :func:`_after`)."""
    first = _INDEX[key[0]]
    if first > 1:
        return DIGITS[first - 1]
    if first == 1:
        return DIGITS[0] + DIGITS[-1]
    return DIGITS[0] + _before(key[1:])


def _midpoint(lower: str, upper: str | None) -> str:
    """Between ``lower`` ("" = the very start) and ``upper`` (None = the end)."""
    if upper is not None:
        # Skip the common prefix (``lower`` padded with the zero digit).
        n = 0
        while n < len(upper) and (lower[n] if n < len(lower) else "0") == upper[n]:
            n += 1
        if n > 0:
            return upper[:n] + _midpoint(lower[n:], upper[n:])
    low = _INDEX[lower[0]] if lower else 0
    high = _INDEX[upper[0]] if upper is not None else BASE
    if high - low > 1:
        return DIGITS[(low + high + 1) // 2]
    # Adjacent first digits.
    if upper is not None and len(upper) > 1:
        return upper[0]
    return DIGITS[low] + _midpoint(lower[1:], None)


def keys_after(last: str | None, count: int) -> list[str]:
    """``count`` increasing keys after ``last`` (for appending several tasks)."""
    keys = []
    for _ in range(count):
        last = key_between(last, None)
        keys.append(last)
    return keys
