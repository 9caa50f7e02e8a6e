"""Field types shared by REST bodies and WebSocket frames.

Dates and times arrive as ISO 8601 strings only (a bare number is refused,
not read as a Unix timestamp), are kept in UTC (a time without an offset is
taken as UTC), and stay within years 1900-9999 so PostgreSQL can store them
whatever the offset.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Annotated, Any

import pydantic

MIN_YEAR, MAX_YEAR = 1900, 9998


_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?\s*$")


def _require_text(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value
    if not isinstance(value, str) or _NUMBER.match(value):
        raise ValueError("must be an ISO 8601 string such as 2030-01-31 or 2030-01-31T12:00:00Z")
    return value


def _utc_in_range(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        value = value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"must be between the years {MIN_YEAR} and {MAX_YEAR}") from None
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must be between the years {MIN_YEAR} and {MAX_YEAR}")
    return value


def _day_in_range(value: date) -> date:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must be between the years {MIN_YEAR} and {MAX_YEAR}")
    return value


Instant = Annotated[datetime, pydantic.BeforeValidator(_require_text), pydantic.AfterValidator(_utc_in_range)]
Day = Annotated[date, pydantic.BeforeValidator(_require_text), pydantic.AfterValidator(_day_in_range)]
