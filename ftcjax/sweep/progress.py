"""Progress reporting of a running sweep (plain Python, no dependencies); nothing else.

On a terminal: one self-rewriting line that fits the terminal's width (a bar, chunks, instances/s,
ETA), says "compiling" while a batch group's first chunk runs (a new group means new kernels), and
keeps its elapsed time ticking between chunks. Otherwise (cluster logs, pipes): a plain timestamped
line at most every ``interval`` seconds, and always for the last chunk.
"""
from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Chunk progress for :func:`ftcjax.sweep.runner.run_sweep`.

    Args:
      stream: where to write (default stderr, so stdout stays clean for data).
      tty: force bar (True) or log lines (False); default ``stream.isatty()``.
      interval: seconds between log lines when not on a terminal.
      label: prefix of every line (e.g. the writer name under several processes).
    """

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, interval: float = 30.0,
                 label: str = ""):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.label = f"[{label}] " if label else ""
        self.total_chunks = self.total_instances = 0
        self.done_chunks = self.done_instances = 0
        self.new_instances = 0
        self.t0 = self.last_log = time.perf_counter()
        self.phase = ""            # what the current chunk is doing ("compiling ..." on a new group)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.tick = 1.0            # seconds between redraws of the elapsed time on a terminal

    def start(self, total_chunks: int, total_instances: int, done_chunks: int, done_instances: int) -> None:
        self.total_chunks, self.total_instances = total_chunks, total_instances
        self.done_chunks, self.done_instances = done_chunks, done_instances
        self.t0 = self.last_log = time.perf_counter()
        resumed = f", resuming with {done_chunks} done" if done_chunks else ""
        self._line(f"{total_chunks} chunks, {total_instances} instances{resumed}", final=True)
        if self.tty and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="ftcjax-progress", daemon=True)
            self._ticker.start()

    def begin_chunk(self, *, compiling: bool, group: str = "") -> None:
        """A chunk starts; ``compiling``: its batch group is new in this process (kernels compile)."""
        with self._lock:
            self.phase = f"compiling kernels for {group}" if compiling and group else (
                "compiling kernels" if compiling else "")
        if self.tty:
            self._redraw()
        elif compiling:
            self._line(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.phase} (the first chunk of a group "
                       "compiles; later ones reuse the kernels)")

    def update(self, n_instances: int, seconds: float) -> None:
        with self._lock:
            self.done_chunks += 1
            self.done_instances += n_instances
            self.new_instances += n_instances
            self.phase = ""
        now = time.perf_counter()
        last = self.done_chunks >= self.total_chunks
        if self.tty or last or now - self.last_log >= self.interval:
            self.last_log = now
            self._line(self._status(now), final=last and self.tty)

    def _tick(self) -> None:
        while not self._stop.wait(self.tick):
            self._redraw()

    def _redraw(self) -> None:
        self._line(self._status(time.perf_counter()))

    def _status(self, now: float) -> str:
        elapsed = now - self.t0
        rate = self.new_instances / elapsed if elapsed > 0 else float("nan")
        left = self.total_instances - self.done_instances
        eta = left / rate if rate and rate > 0 else float("nan")
        frac = self.done_chunks / self.total_chunks if self.total_chunks else 1.0
        if self.tty:
            rate_txt = f"{rate:.2f} inst/s" if self.new_instances else "-- inst/s"
            tail = (f" {self.done_chunks}/{self.total_chunks} chunks  {rate_txt}  elapsed "
                    f"{format_duration(elapsed)}  ETA {format_duration(eta)}" + (f"  {self.phase}" if self.phase else ""))
            cols = self.columns() - 1 - len(self.label)  # never wrap: a wrapped line cannot be rewritten
            width = max(0, min(24, cols - len(tail) - 2))
            fill = int(round(frac * width))
            bar = f"[{'#' * fill}{'-' * (width - fill)}]" if width >= 5 else ""
            return (bar + tail)[:max(cols, 10)]
        return (f"{time.strftime('%Y-%m-%d %H:%M:%S')} chunks {self.done_chunks}/{self.total_chunks} "
                f"({100 * frac:.0f}%), instances {self.done_instances}/{self.total_instances}, "
                f"{rate:.2f} inst/s, elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}")

    def columns(self) -> int:
        """Width of the terminal (80 when unknown)."""
        return shutil.get_terminal_size((80, 24)).columns

    def _line(self, text: str, *, final: bool = False) -> None:
        with self._lock:
            if self.tty:
                text = text[:max(10, self.columns() - 1 - len(self.label))]  # a wrapped line cannot be rewritten
                self.stream.write(f"\r\033[K{self.label}{text}" + ("\n" if final else ""))
            else:
                self.stream.write(f"{self.label}{text}\n")
            self.stream.flush()

    def finish(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self.tty and self.done_chunks < self.total_chunks:
            self.stream.write("\n")
        elapsed = time.perf_counter() - self.t0
        self._line(f"done: {self.new_instances} instances computed in {format_duration(elapsed)}",
                   final=True)
