"""Progress reporting and the summary tables of a sweep (plain Python, no dependencies).

On a terminal: one self-rewriting bar line (chunks, instances/s, ETA). Otherwise (cluster logs, pipes):
a plain timestamped line at most every ``interval`` seconds, and always for the last chunk.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Iterable, TextIO

__all__ = ["Progress", "summary_rows", "format_table", "format_duration"]


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

    def start(self, total_chunks: int, total_instances: int, done_chunks: int, done_instances: int) -> None:
        self.total_chunks, self.total_instances = total_chunks, total_instances
        self.done_chunks, self.done_instances = done_chunks, done_instances
        self.t0 = self.last_log = time.perf_counter()
        resumed = f", resuming with {done_chunks} done" if done_chunks else ""
        self._line(f"{total_chunks} chunks, {total_instances} instances{resumed}", final=True)

    def update(self, n_instances: int, seconds: float) -> None:
        self.done_chunks += 1
        self.done_instances += n_instances
        self.new_instances += n_instances
        now = time.perf_counter()
        last = self.done_chunks >= self.total_chunks
        if self.tty or last or now - self.last_log >= self.interval:
            self.last_log = now
            self._line(self._status(now), final=last and self.tty)

    def _status(self, now: float) -> str:
        elapsed = now - self.t0
        rate = self.new_instances / elapsed if elapsed > 0 else float("nan")
        left = self.total_instances - self.done_instances
        eta = left / rate if rate and rate > 0 else float("nan")
        frac = self.done_chunks / self.total_chunks if self.total_chunks else 1.0
        if self.tty:
            width = 24
            fill = int(round(frac * width))
            bar = "#" * fill + "-" * (width - fill)
            return (f"[{bar}] {self.done_chunks}/{self.total_chunks} chunks  {rate:.2f} inst/s  "
                    f"elapsed {format_duration(elapsed)}  ETA {format_duration(eta)}")
        return (f"{time.strftime('%Y-%m-%d %H:%M:%S')} chunks {self.done_chunks}/{self.total_chunks} "
                f"({100 * frac:.0f}%), instances {self.done_instances}/{self.total_instances}, "
                f"{rate:.2f} inst/s, elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}")

    def _line(self, text: str, *, final: bool = False) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K{self.label}{text}" + ("\n" if final else ""))
        else:
            self.stream.write(f"{self.label}{text}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.done_chunks < self.total_chunks:
            self.stream.write("\n")
        elapsed = time.perf_counter() - self.t0
        self._line(f"done: {self.new_instances} instances computed in {format_duration(elapsed)}",
                   final=True)


def _median(recs: list[dict[str, Any]]):
    """The one definition of a cell's median width (ftcjax.analysis.stats.median_width)."""
    from ftcjax.analysis.stats import median_width

    return median_width([r.get("min_width") for r in recs], censored=[bool(r.get("censored")) for r in recs],
                        trivial=[bool(r.get("trivial")) for r in recs])


def summary_rows(records: Iterable[dict[str, Any]], varying: list[str]) -> list[dict[str, Any]]:
    """One row per cell (over the ``varying`` axes): counts and min-width statistics.

    Censored instances are counted, never averaged in (their width is only a lower bound).
    """
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        key = tuple(r["cell"].get(a) for a in varying)
        cells.setdefault(key, []).append(r)
    rows = []
    for key in sorted(cells, key=lambda k: tuple((str(type(v)), v) for v in k)):
        recs = cells[key]
        widths = [r["min_width"] for r in recs if not r.get("censored") and r.get("min_width") is not None]
        row = dict(zip(varying, key))
        row.update(
            n=len(recs),
            censored=sum(1 for r in recs if r.get("censored")),
            trivial=sum(1 for r in recs if r.get("trivial")),
            median=_median(recs),
            min=min(widths) if widths else None,
            max=max(widths) if widths else None,
        )
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain fixed-width text table."""
    if not rows:
        return "(no results yet)"
    columns = columns or list(rows[0])

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
