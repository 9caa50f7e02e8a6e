"""PNG charts for docs/benchmarks.md, drawn with matplotlib (Agg backend) from a result's JSON alone.

- ``ws-fanout-latency.png``: W1 delivery latency percentiles (p50, p90, p99,
  p99.9, max) by subscriber count, from the runs' HDR histograms, with the
  issue's targets and ShareDB's p99 as markers;
- ``ws-throughput.png``: W2 acknowledged ops per second over the run (acks
  counted per 0.25 s by the load generator, shown per 0.5 s), one line per
  ops-in-flight level, with the targets;
- ``soak-resources.png``: the soak's server RSS over time with the fitted
  line of the second half, then open files, trio tasks and sockets, then the
  REST throughput and p99 per sample window.

Charts are small (640 x 360 px at 80 dpi, a few tens of KiB), written to
``docs/benchmarks/`` and linked from the scenario's section with
:func:`image`. A section links only the charts its result can draw
(:func:`available`), and :func:`draw` writes exactly those, so the text and
the files agree. Without matplotlib, :func:`draw` raises :class:`ChartsMissing`
and the caller says so; the tables are written either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from loadtest.report import ROOT

CHART_DIR = ROOT / "docs" / "benchmarks"
DPI = 80
SIZE = (8.0, 4.5)
#: Issue 10's targets (durable path): W1 p99 at 100 and 500 subscribers, W2 acked ops/s; ShareDB's figures.
W1_TARGET_P99_MS = {100: 71.0, 500: 210.0}
W1_SHAREDB_P99_MS = {100: 24.0, 500: 56.0}
W2_TARGET_OPS = {1: 670.0, 16: 3500.0}
PLOT_BIN_S = 0.5


class ChartsMissing(Exception):
    """matplotlib is not installed (it is in the dev extra: pip install -e '.[dev]')."""


def image(name: str, alt: str) -> str:
    """The Markdown that shows chart ``name`` from docs/benchmarks.md."""
    return f"![{alt}](benchmarks/{name})"


# --- which charts a result supports -------------------------------------------------------------

def _fanout_ok(result: dict[str, Any]) -> bool:
    return len(result.get("fanout", {}).get("runs", [])) >= 1


def _throughput_ok(result: dict[str, Any]) -> bool:
    return any(r["ops"].get("acks_per_bin") for r in result.get("throughput", {}).get("runs", []))


def _soak_ok(result: dict[str, Any]) -> bool:
    return len(result.get("samples", [])) >= 2


def available(scenario: str, result: dict[str, Any]) -> list[tuple[str, str]]:
    """(file name, alt text) of every chart this result can draw."""
    return [(name, alt) for name, alt, ok, _ in CHARTS.get(scenario, ()) if ok(result)]


def draw(scenario: str, result: dict[str, Any], directory: Path = CHART_DIR) -> list[Path]:
    """Write the result's charts; returns their paths."""
    wanted = [(name, fn) for name, _, ok, fn in CHARTS.get(scenario, ()) if ok(result)]
    if not wanted:
        return []
    try:
        import matplotlib
    except ImportError as exc:
        raise ChartsMissing("matplotlib is not installed (pip install -e '.[dev]'): charts not drawn") from exc
    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in wanted:
        path = directory / name
        fn(result, path)
        paths.append(path)
    return paths


# --- the charts -------------------------------------------------------------------------------------

def _subtitle(result: dict[str, Any]) -> str:
    quick = ", quick run" if result.get("parameters", {}).get("quick") else ""
    return f"{result.get('started_at', '')[:16].replace('T', ' ')} UTC{quick}"


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no version stamp: same data, same bytes
    import matplotlib.pyplot as plt

    plt.close(fig)


def fanout_latency(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    runs = sorted(result["fanout"]["runs"], key=lambda r: r["subscribers"])
    subs = [r["subscribers"] for r in runs]
    fig, ax = plt.subplots(figsize=SIZE)
    for key, label, style in (("p50", "p50", "o-"), ("p90", "p90", "s-"), ("p99", "p99", "^-"),
                              ("p999", "p99.9", "v-"), ("max", "max", "x:")):
        values = [r["latency_ms"].get(key) for r in runs]
        if any(v is not None for v in values):
            ax.plot(subs, values, style, label=label)
    for n, ms in W1_TARGET_P99_MS.items():
        ax.plot([n], [ms], marker="_", markersize=28, color="red", linestyle="none",
                label="target p99 (issue 10)" if n == 100 else None)
    for n, ms in W1_SHAREDB_P99_MS.items():
        ax.plot([n], [ms], marker="_", markersize=28, color="grey", linestyle="none",
                label="ShareDB p99 (STACK.md)" if n == 100 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(subs)
    ax.set_xticklabels([str(s) for s in subs])
    ax.set_xlabel("subscribers (one project, editor at %g ops/s)" % result["fanout"]["rate"])
    ax.set_ylabel("delivery latency, ms (log)")
    ax.set_title(f"W1 fan-out: send -> receipt at every subscriber ({_subtitle(result)})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def throughput_over_time(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=SIZE)
    for run in result["throughput"]["runs"]:
        series = run["ops"].get("acks_per_bin")
        if not series:
            continue
        per = max(1, round(PLOT_BIN_S / series["bin_s"]))  # load-generator bins per plotted point
        counts = series["counts"]
        rates = [sum(counts[i:i + per]) / (per * series["bin_s"]) for i in range(0, len(counts) - per + 1, per)]
        ax.plot([(i + 1) * per * series["bin_s"] for i in range(len(rates))], rates, "o-", markersize=3,
                label=f"{run['inflight']} in flight (mean {run['acked_ops_per_s']:,.0f}/s)")
    for k, ops in W2_TARGET_OPS.items():
        ax.axhline(ops, color="red", linestyle="--", linewidth=0.8)
        ax.text(0.01, ops, f"target, {k} in flight", fontsize=7, color="red", va="bottom",
                transform=ax.get_yaxis_transform())
    ax.set_xlabel(f"seconds into the run (acks per {PLOT_BIN_S:g} s, as a rate)")
    ax.set_ylabel("acknowledged (committed) ops/s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"W2 durable throughput over time ({_subtitle(result)})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def soak_resources(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    fig, (mem, counts, rest) = plt.subplots(3, 1, figsize=(8.0, 7.0), sharex=True)
    mem.plot(minutes, [(s.get("rss_kib") or 0) / 1024 for s in samples], "o-", markersize=2, label="server RSS")
    rss = result.get("analysis", {}).get("rss_kib") or {}
    if "slope_per_s" in rss:
        t0 = result["analysis"]["warmup_s"]
        t1 = samples[-1]["t_s"]
        mem.plot([t0 / 60, t1 / 60], [(rss["intercept"] + rss["slope_per_s"] * t) / 1024 for t in (t0, t1)], "r--",
                 label=f"fit after warm-up: {rss['slope_mib_per_hour']:+.1f} MiB/h "
                       f"({'flat' if result['analysis'].get('rss_flat') else 'NOT flat'})")
        mem.axvline(t0 / 60, color="grey", linestyle=":", linewidth=0.8)
    mem.set_ylabel("MiB")
    mem.legend(fontsize=8, loc="lower right")
    mem.grid(True, alpha=0.3)
    mem.set_title(f"Soak: server resources over time ({_subtitle(result)})", fontsize=10)
    for key, label in (("open_files", "open files"), ("trio_tasks", "trio tasks"), ("ws_connections", "sockets")):
        values = [s.get(key) for s in samples]
        if any(v is not None for v in values):
            counts.plot(minutes, values, "-", label=label)
    counts.set_ylabel("count")
    counts.legend(fontsize=8, loc="lower right")
    counts.grid(True, alpha=0.3)
    windows = [s for s in samples if s.get("rest")]
    rest.plot([s["t_s"] / 60 for s in windows], [s["rest"]["per_s"] for s in windows], "-", label="REST req/s")
    rest.set_ylabel("req/s")
    p99 = rest.twinx()
    p99.plot([s["t_s"] / 60 for s in windows], [s["rest"]["p99_ms"] for s in windows], "r-", linewidth=0.8,
             label="REST p99 ms")
    p99.set_ylabel("p99 ms")
    rest.set_xlabel("minutes")
    rest.grid(True, alpha=0.3)
    lines = rest.get_legend_handles_labels()[0] + p99.get_legend_handles_labels()[0]
    rest.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="lower right")
    _save(fig, path)


#: scenario -> [(file name, alt text, has the data?, draw function)]
CHARTS: dict[str, list[tuple[str, str, Callable[[dict[str, Any]], bool], Callable[[dict[str, Any], Path], None]]]] = {
    "ws": [
        ("ws-fanout-latency.png", "W1 delivery latency percentiles by subscriber count", _fanout_ok, fanout_latency),
        ("ws-throughput.png", "W2 acknowledged ops per second over time", _throughput_ok, throughput_over_time),
    ],
    "soak": [("soak-resources.png", "Soak: server RSS, open files, trio tasks and REST figures over time", _soak_ok,
              soak_resources)],
}
