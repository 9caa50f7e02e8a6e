"""A progress bar on stderr: which scenario and step run now, how far the step is, time since the start.

One process-wide :data:`PROGRESS`. Scenarios announce themselves with
:meth:`Progress.scenario` (``all`` adds "k/N"), and wrap each timed step
(a wrk run, a WebSocket run, a soak) in :meth:`Progress.step` with its
planned duration, or without one for set-up work of unknown length.

On a terminal a thread redraws one line (``\\r``) twice a second and erases
it when the step ends; :func:`say` (what the scenarios print on stdout)
erases it first, so results and the bar never share a line. When stderr is
not a terminal (a log file, CI), it writes one plain line per step instead.
Set ``LOADTEST_PROGRESS=0`` to turn it off. No dependency; the thread is a
daemon, and the only lock it shares is held for one write.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

BAR_WIDTH = 24
REDRAW_S = 0.5


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """The progress line (see the module docstring)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = os.environ.get("LOADTEST_PROGRESS", "1") != "0"
        self.began = time.monotonic()
        self.prefix = ""
        self.position: tuple[int, int] | None = None  # (k, N) while `all` runs its k-th scenario of N
        self.label = ""
        self.step_began = 0.0
        self.planned_s: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._width = 0

    @property
    def tty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def scenario(self, name: str) -> None:
        """Name the scenario that runs now ("ws"; "all 3/5 ws" while ``all`` has set :attr:`position`)."""
        self.prefix = f"all {self.position[0]}/{self.position[1]} {name}" if self.position else name

    @contextmanager
    def step(self, label: str, planned_s: float | None = None) -> Iterator[None]:
        """A step of the current scenario; ``planned_s`` draws a bar (None: elapsed time only)."""
        outer = (self.label, self.step_began, self.planned_s)
        self.label, self.step_began, self.planned_s = label, time.monotonic(), planned_s
        if self.enabled and not self.tty:
            plan = f" ({planned_s:g} s)" if planned_s else ""
            self._write(f"[{_clock(time.monotonic() - self.began)}] {self.prefix}: {label}{plan}\n")
        self._start()
        try:
            yield
        finally:
            self.label, self.step_began, self.planned_s = outer
            if not self.label:
                self._halt()

    def line(self) -> str:
        now = time.monotonic()
        text = f"[{self.prefix}] {self.label}"
        if self.planned_s:
            done = min(1.0, (now - self.step_began) / self.planned_s)
            filled = int(done * BAR_WIDTH)
            text += f" |{'#' * filled}{'-' * (BAR_WIDTH - filled)}| {now - self.step_began:4.0f}/{self.planned_s:g} s"
        else:
            text += f" ({now - self.step_began:.0f} s)"
        return text + f"  total {_clock(now - self.began)}"

    # --- the redraw thread (terminals only) ---------------------------------------------------

    def _start(self) -> None:
        if not (self.enabled and self.tty) or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="loadtest-progress", daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=2)
        self._thread = None
        self.erase()

    def erase(self) -> None:
        """Remove the bar from the terminal (it comes back at the next redraw)."""
        with self._lock:
            if self._width:
                self._write("\r" + " " * self._width + "\r")
                self._width = 0

    def _run(self) -> None:
        while not self._stop.wait(REDRAW_S):
            text = self.line()
            with self._lock:
                self._write("\r" + text.ljust(self._width))
                self._width = len(text)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False


PROGRESS = Progress()


def say(text: str = "") -> None:
    """Print a line of results on stdout (erasing the progress bar first when both share a terminal)."""
    PROGRESS.erase()
    print(text, flush=True)
