"""Attachments: upload and download throughput of a 20 MiB file, and the server's RSS while it streams.

One ``collab serve`` process (embedded PostgreSQL in a fresh data dir, or
``--database-url``) pinned to one core, this driver on the other. A user, a
project and a task are made over REST; then, with a fresh random file of
``--size-mib`` (20) for every upload (so every upload really writes):

1. **Sequential**: ``--repetitions`` (5; 2 with ``--quick``) uploads
   (``POST /api/v1/tasks/{id}/attachments``, multipart, streamed from a file
   by httpx), each followed by a download of it (``GET .../{aid}``, read as a
   stream and checked against its sha256). One warm-up upload and download
   first, not counted.
2. **Concurrent**: ``--concurrency`` (4) clients upload at once, then
   download at once.

Throughput is the file's size over the client-side wall time of the request
(headers to last byte). While each transfer runs, a thread samples the
server process's RSS with psutil every :data:`SAMPLE_S`; the table shows the
RSS just before, the peak during, and the growth. The verdict: the growth
must stay below half the file's size per transfer in flight (the server
streams: a bounded buffer per upload, a 256 KiB read per download chunk).
For scale, the driver also times writing the same bytes with ``fsync`` to
the server's data dir (the disk's floor for an upload).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx

from loadtest import report
from loadtest.common import ServerRunOptions, server_run_options, add_common_arguments, picker, prepare_run
from loadtest.machine import describe_software, load_average
from loadtest.progress import PROGRESS, say
from loadtest.serverproc import ServerFailed, ServerProcess, collab_env
from loadtest.stats import median

try:
    import psutil
except ImportError:  # a dev dependency: without it there is no RSS to report
    psutil = None

SCENARIO = "attachments"
TITLE = "Attachments"
MIB = 1024 * 1024
SAMPLE_S = 0.005
REQUEST_TIMEOUT_S = 300.0
PASSWORD = "loadtest " + "horse battery staple"
#: RSS growth allowed per transfer in flight, as a fraction of the file's size.
VERDICT_FRACTION = 0.5


@dataclass(frozen=True)
class Options(ServerRunOptions):
    size_mib: int
    repetitions: int
    concurrency: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="2 sequential repetitions instead of 5; leaves docs/ alone")
    parser.add_argument("--size-mib", type=int, default=20, help="file size in MiB (default 20)")
    parser.add_argument("--repetitions", type=int, help="sequential uploads and downloads (default 5; 2 with --quick)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients in the concurrent phase (default 4)")
    add_common_arguments(parser)


def options_from_args(args: argparse.Namespace) -> Options:
    pick = picker(args)
    opts = Options(
        size_mib=args.size_mib, repetitions=pick(args.repetitions, 5, 2), concurrency=args.concurrency,
        **server_run_options(args),
    )
    for name, value, lo, hi in (("--size-mib", opts.size_mib, 1, 1024), ("--repetitions", opts.repetitions, 1, 50),
                                ("--concurrency", opts.concurrency, 1, 16)):
        if not lo <= value <= hi:
            raise SystemExit(f"loadtest: {name} must be between {lo} and {hi}")
    return opts


# --- measuring one transfer ------------------------------------------------------------------

class RssSampler:
    """Samples a process's RSS in a thread between :meth:`start` and :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid) if psutil is not None else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.before = self.peak = self.after = 0

    def rss(self) -> int:
        return self._process.memory_info().rss if self._process is not None else 0

    def start(self) -> None:
        self.before = self.peak = self.rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.after = self.rss()
        self.peak = max(self.peak, self.after)

    def record(self) -> dict[str, float]:
        return {"rss_before_mib": round(self.before / MIB, 1), "rss_peak_mib": round(self.peak / MIB, 1),
                "rss_after_mib": round(self.after / MIB, 1), "rss_growth_mib": round((self.peak - self.before) / MIB, 1)}


def make_file(directory: Path, size: int) -> tuple[Path, str]:
    """A file of random bytes (incompressible, unique) and its sha256."""
    path = directory / f"upload-{os.urandom(4).hex()}.bin"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return path, digest.hexdigest()


def upload(api: httpx.Client, token: str, task_id: str, path: Path) -> tuple[float, dict[str, Any]]:
    with path.open("rb") as f:
        began = time.perf_counter()
        response = api.post(f"/api/v1/tasks/{task_id}/attachments", headers=_bearer(token),
                            files={"file": (path.name, f, "application/octet-stream")})
        elapsed = time.perf_counter() - began
    if response.status_code != 201:
        raise ServerFailed(f"upload: {response.status_code} {response.text[:300]}")
    return elapsed, response.json()


def download(api: httpx.Client, token: str, task_id: str, attachment: dict[str, Any]) -> float:
    digest = hashlib.sha256()
    size = 0
    began = time.perf_counter()
    with api.stream("GET", f"/api/v1/tasks/{task_id}/attachments/{attachment['id']}", headers=_bearer(token)) as r:
        if r.status_code != 200:
            raise ServerFailed(f"download: {r.status_code} {r.read()[:300]!r}")
        for chunk in r.iter_raw(1 * MIB):
            digest.update(chunk)
            size += len(chunk)
    elapsed = time.perf_counter() - began
    if size != attachment["file_size"] or digest.hexdigest() != attachment["content_hash"]:
        raise ServerFailed(f"download: got {size} bytes with another hash than the upload's")
    return elapsed


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the run --------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    PROGRESS.scenario(SCENARIO)
    if psutil is None:
        print("loadtest: psutil is needed to sample the server's RSS (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    prepared = prepare_run(needs_wrk=False)
    if prepared is None:
        return 2
    place, machine = prepared
    result: dict[str, Any] = {
        "scenario": SCENARIO, "format": 1, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "software": describe_software(), "placement": place.description,
        "parameters": opts.public(),
    }
    warnings: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="collab-loadtest-attachments-"))
    say(f"Collab loadtest: attachments: {opts.size_mib} MiB files, {opts.repetitions} sequential, "
        f"{opts.concurrency} concurrent; {place.description}")
    try:
        _measure(opts, workdir, place, result, warnings)
    except ServerFailed as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        print(f"loadtest: data and server log kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["machine"]["loadavg_at_end"] = load_average()
    result["warnings"] = warnings
    if opts.keep_data:
        say(f"data and server log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    path = report.write_json(result, SCENARIO)
    body = render(result, report.relative(path))
    say()
    say(body)
    say()
    for warning in warnings:
        say(f"WARNING: {warning}")
    say(f"results: {report.relative(path)}")
    if opts.update_docs:
        for note in report.publish(SCENARIO, result, body, TITLE):
            say(note)
    else:
        say("docs   : not touched (--quick without --docs, or --no-docs)")
    return 0 if result["verdict"]["ok"] else 1


def _measure(opts: Options, workdir: Path, place: Any, result: dict[str, Any], warnings: list[str]) -> None:
    size = opts.size_mib * MIB
    data_dir = workdir / "data"
    data_dir.mkdir()
    files_dir = workdir / "files"
    files_dir.mkdir()
    settings = {"data_dir": str(data_dir), "password_hashing": "argon2id-fast-insecure",
                "max_upload_bytes": str(max(size, 25 * MIB))}
    if opts.database_url:
        settings["database_url"] = opts.database_url
    if opts.server_log_level:
        settings["log_level"] = opts.server_log_level
    result["disk_floor"] = _disk_floor(data_dir, size)
    say(f"   disk floor: write + fsync of {opts.size_mib} MiB in the data dir: "
        f"{result['disk_floor']['mib_per_s']:.0f} MiB/s")
    server = ServerProcess(collab_env(settings), log_path=workdir / "server.log", cpus=place.server,
                           data_dir=None if opts.database_url else data_dir)
    with server:
        with PROGRESS.step("server start"):
            result["server_ready_s"] = round(server.wait_healthy(opts.startup_timeout_s), 2)
        assert server.proc is not None
        sampler = RssSampler(server.proc.pid)
        with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as api:
            token, task_id = _world(api)
            result["rss_idle_mib"] = round(sampler.rss() / MIB, 1)
            with PROGRESS.step("warm-up"):
                path, _ = make_file(files_dir, size)
                _, attachment = upload(api, token, task_id, path)
                download(api, token, task_id, attachment)
                path.unlink()
            result["rss_warm_mib"] = round(sampler.rss() / MIB, 1)
            with PROGRESS.step("sequential", None):
                result["sequential"] = _sequential(opts, api, token, task_id, files_dir, sampler, size)
        with PROGRESS.step("concurrent", None):
            result["concurrent"] = _concurrent(opts, server.base_url, token, task_id, files_dir, sampler, size)
        result["rss_end_mib"] = round(sampler.rss() / MIB, 1)
        server.stop()
    if server.exit_code != 0:
        warnings.append(f"the server exited with {server.exit_code}")
    worst = max([r["rss_growth_mib"] for r in result["sequential"]["upload"] + result["sequential"]["download"]]
                + [result["concurrent"]["upload"]["rss_growth_mib"], result["concurrent"]["download"]["rss_growth_mib"]])
    limit_mib = VERDICT_FRACTION * opts.size_mib
    worst_concurrent = max(result["concurrent"]["upload"]["rss_growth_mib"],
                           result["concurrent"]["download"]["rss_growth_mib"])
    ok = all(r["rss_growth_mib"] < limit_mib for r in result["sequential"]["upload"] + result["sequential"]["download"]) \
        and worst_concurrent < limit_mib * opts.concurrency
    result["verdict"] = {"ok": ok, "worst_growth_mib": worst, "limit_per_transfer_mib": limit_mib}


def _disk_floor(directory: Path, size: int) -> dict[str, float]:
    data = os.urandom(size)
    path = directory / "disk-floor.bin"
    began = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:1 * MIB]):]
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - began
    path.unlink()
    return {"seconds": round(elapsed, 4), "mib_per_s": round(size / MIB / elapsed, 1)}


def _world(api: httpx.Client) -> tuple[str, str]:
    tag = os.urandom(4).hex()
    email = f"lt-files-{tag}@example.com"
    r = api.post("/api/v1/auth/register", json={"email": email, "username": f"lt_files_{tag}", "password": PASSWORD})
    if r.status_code != 201:
        raise ServerFailed(f"register: {r.status_code} {r.text[:300]}")
    r = api.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    if r.status_code != 200:
        raise ServerFailed(f"login: {r.status_code} {r.text[:300]}")
    token = r.json()["access_token"]
    r = api.post("/api/v1/projects", headers=_bearer(token), json={"name": f"Files {tag}"})
    if r.status_code != 201:
        raise ServerFailed(f"project: {r.status_code} {r.text[:300]}")
    r = api.post("/api/v1/tasks", headers=_bearer(token), json={"project_id": r.json()["id"], "title": "Big files"})
    if r.status_code != 201:
        raise ServerFailed(f"task: {r.status_code} {r.text[:300]}")
    return token, r.json()["id"]


def _timed(sampler: RssSampler, action: Callable[[], float], size: int) -> dict[str, float]:
    sampler.start()
    try:
        elapsed = action()
    finally:
        sampler.stop()
    return {"seconds": round(elapsed, 4), "mib_per_s": round(size / MIB / elapsed, 1), **sampler.record()}


def _sequential(opts: Options, api: httpx.Client, token: str, task_id: str, files_dir: Path, sampler: RssSampler,
                size: int) -> dict[str, Any]:
    uploads, downloads = [], []
    for rep in range(1, opts.repetitions + 1):
        path, _ = make_file(files_dir, size)
        holder: dict[str, Any] = {}

        def up() -> float:
            elapsed, holder["attachment"] = upload(api, token, task_id, path)
            return elapsed

        uploads.append(_timed(sampler, up, size))
        downloads.append(_timed(sampler, lambda: download(api, token, task_id, holder["attachment"]), size))
        path.unlink()
        say(f"   #{rep}: upload {uploads[-1]['mib_per_s']:7.1f} MiB/s (RSS +{uploads[-1]['rss_growth_mib']:.1f} MiB), "
            f"download {downloads[-1]['mib_per_s']:7.1f} MiB/s (RSS +{downloads[-1]['rss_growth_mib']:.1f} MiB)")
    return {"upload": uploads, "download": downloads}


def _concurrent(opts: Options, base_url: str, token: str, task_id: str, files_dir: Path, sampler: RssSampler,
                size: int) -> dict[str, Any]:
    paths = [make_file(files_dir, size)[0] for _ in range(opts.concurrency)]
    clients = [httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) for _ in paths]
    attachments: list[dict[str, Any]] = []
    try:
        with ThreadPoolExecutor(len(paths)) as pool:
            def all_up() -> float:
                began = time.perf_counter()
                done = list(pool.map(lambda cp: upload(cp[0], token, task_id, cp[1]), zip(clients, paths)))
                attachments.extend(a for _, a in done)
                return time.perf_counter() - began

            up = _timed(sampler, all_up, size * len(paths))

            def all_down() -> float:
                began = time.perf_counter()
                list(pool.map(lambda ca: download(ca[0], token, task_id, ca[1]), zip(clients, attachments)))
                return time.perf_counter() - began

            down = _timed(sampler, all_down, size * len(paths))
    finally:
        for client in clients:
            client.close()
        for path in paths:
            path.unlink(missing_ok=True)
    say(f"   {len(paths)} at once: upload {up['mib_per_s']:7.1f} MiB/s total (RSS +{up['rss_growth_mib']:.1f} MiB), "
        f"download {down['mib_per_s']:7.1f} MiB/s total (RSS +{down['rss_growth_mib']:.1f} MiB)")
    return {"clients": len(paths), "upload": up, "download": down}


# --- the docs section -----------------------------------------------------------------------------

def render(result: dict[str, Any], json_path: str) -> str:
    m, s, p = result["machine"], result["software"], result["parameters"]
    pk = s["packages"]
    quick = " **Quick run (`--quick`): fewer repetitions.**" if p.get("quick") else ""
    busy = ", ".join(f"CPU {k} {v}%" for k, v in m.get("background_busy_pct", {}).items())
    size = p["size_mib"]
    lines = [
        f"Run {result['started_at']} ({json_path}).{quick}",
        "",
        f"- Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}; load average at start "
        f"{m['loadavg_at_start']}, cores busy in the second before: {busy}.",
        f"- Software: Python {s['python']}, collab {pk.get('collab')}, quart {pk.get('quart')}, quart-trio "
        f"{pk.get('quart-trio')}, hypercorn {pk.get('hypercorn')}, httpx {pk.get('httpx')} (client).",
        f"- Database: {p['database']}. Server log level: {p['server_log_level']}. CPU placement: {result['placement']}.",
        f"- Disk floor: writing {size} MiB with fsync in the data dir took {result['disk_floor']['seconds']:.3f} s "
        f"({result['disk_floor']['mib_per_s']:.0f} MiB/s).",
        f"- Server RSS: {result['rss_idle_mib']} MiB idle, {result['rss_warm_mib']} MiB after the warm-up transfer, "
        f"{result['rss_end_mib']} MiB at the end.",
        "",
    ]
    header = ["transfer", "runs", "MiB/s median (min-max)", "seconds median", "RSS before (MiB)", "RSS peak (MiB)",
              "RSS growth max (MiB)"]
    rows = []
    for kind in ("upload", "download"):
        runs = result["sequential"][kind]
        speeds = [r["mib_per_s"] for r in runs]
        rows.append([
            f"{kind} {size} MiB, one at a time", len(runs),
            f"**{median(speeds):.0f}** ({min(speeds):.0f}-{max(speeds):.0f})", f"{median([r['seconds'] for r in runs]):.3f}",
            f"{median([r['rss_before_mib'] for r in runs]):.1f}", f"{max(r['rss_peak_mib'] for r in runs):.1f}",
            f"**{max(r['rss_growth_mib'] for r in runs):.1f}**",
        ])
    conc = result["concurrent"]
    for kind in ("upload", "download"):
        r = conc[kind]
        rows.append([f"{kind} {conc['clients']} x {size} MiB at once (total)", 1, f"**{r['mib_per_s']:.0f}**",
                     f"{r['seconds']:.3f}", f"{r['rss_before_mib']:.1f}", f"{r['rss_peak_mib']:.1f}",
                     f"**{r['rss_growth_mib']:.1f}**"])
    lines.append(report.table(header, rows))
    verdict = result["verdict"]
    lines += ["", f"**Verdict: {'streams' if verdict['ok'] else 'DOES NOT STREAM'}** - the server's RSS grew by at "
                  f"most {verdict['worst_growth_mib']:.1f} MiB while moving {size} MiB files (limit: "
                  f"{verdict['limit_per_transfer_mib']:.0f} MiB per transfer in flight)."]
    if result.get("warnings"):
        lines += ["", "**Warnings during the run:**", ""] + [f"- {w}" for w in result["warnings"]]
    return "\n".join(lines)
