"""Latency histograms: HDR histograms (the ``hdrhistogram`` package) in microseconds.

Every latency the Python load generators measure (WebSocket deliveries, acks
and send lag, the concurrent-users steps, the soak's REST requests) ends up
in a :class:`Latencies`: an HDR histogram from 1 us to 1 hour with 3
significant digits, so a percentile is within 0.1% of the exact value
whatever the number of samples, the memory is fixed (~100 KiB), and
histograms from several processes add up exactly. A histogram travels in the
JSON results as HDR's compressed base64 encoding (:meth:`Latencies.encode`),
so percentiles and charts can be recomputed from a result file.

Recording is not free in pure Python (~3-5 us per value here), which would
perturb a load generator that handles 100,000 deliveries per second: hot
loops append floats to an ``array`` and hand the whole array to
:meth:`Latencies.record_many_ms` after the run (one histogram update per
distinct microsecond value).

wrk keeps its own full-resolution histogram (one counter per microsecond) and
reports exact percentiles through its Lua ``done`` hook (:mod:`loadtest.wrk`);
its figures are used as they are.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # 1 hour
SIGNIFICANT_DIGITS = 3
#: The percentiles every summary reports.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class Latencies:
    """An HDR histogram of latencies, recorded and reported in milliseconds (see the module docstring)."""

    def __init__(self, histogram: HdrHistogram | None = None) -> None:
        self.histogram = histogram or HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    @staticmethod
    def _us(ms: float) -> int:
        return min(HIGHEST_US, max(LOWEST_US, round(ms * 1000)))

    def record_ms(self, ms: float) -> None:
        self.histogram.record_value(self._us(ms))

    def record_many_ms(self, values: Iterable[float]) -> "Latencies":
        for us, count in Counter(self._us(v) for v in values).items():
            self.histogram.record_value(us, count)
        return self

    @property
    def count(self) -> int:
        return self.histogram.get_total_count()

    def percentile_ms(self, p: float) -> float | None:
        if not self.count:
            return None
        return round(self.histogram.get_value_at_percentile(p) / 1000, 2)

    def summary(self) -> dict[str, Any]:
        """n, p50, p90, p99, p999, max and mean in milliseconds (None when empty)."""
        n = self.count
        if not n:
            return {"n": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None, "mean": None}
        h = self.histogram
        out: dict[str, Any] = {"n": n}
        for p in PERCENTILES:
            out[_key(p)] = round(h.get_value_at_percentile(p) / 1000, 2)
        out["max"] = round(h.get_max_value() / 1000, 2)
        out["mean"] = round(h.get_mean_value() / 1000, 2)
        return out

    def add(self, other: "Latencies") -> "Latencies":
        if other.count:
            self.histogram.add(other.histogram)
        return self

    def encode(self) -> str:
        """HDR's compressed base64 form (V2 encoding), for the JSON result."""
        return self.histogram.encode().decode("ascii")

    @classmethod
    def decode(cls, text: str | None) -> "Latencies":
        if not text:
            return cls()
        return cls(HdrHistogram.decode(text.encode("ascii")))

    def as_dict(self) -> dict[str, Any]:
        """The summary plus the encoded histogram (what a result file keeps)."""
        return {**self.summary(), "hdr": self.encode() if self.count else None}


def _key(p: float) -> str:
    return "p" + (f"{p:g}".replace(".", ""))


def merged(encoded: Iterable[str | None]) -> Latencies:
    """One histogram from several encoded ones (e.g. one per load-generator process)."""
    total = Latencies()
    for text in encoded:
        total.add(Latencies.decode(text))
    return total


def summary_ms(values: Iterable[float]) -> dict[str, Any]:
    """The :meth:`Latencies.summary` of a batch of millisecond values."""
    return Latencies().record_many_ms(values).summary()
