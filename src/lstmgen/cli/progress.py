"""The progress bar of a training run, on stderr.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional


class ProgressBar:
    """One line on stderr: step, loss, perplexity, tokens/s, time left (redrawn on a terminal).

    Used as a context manager: while it is open, a log record wipes the half-drawn line, takes a
    line of its own and has the bar drawn again below it; on leaving, the last bar is ended with a
    newline, whatever happened, so that an error is written below it.
    """

    live: Optional["ProgressBar"] = None  # the open bar, which log records clear before they are written

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = 0.0
        self.drawn = False  # a line is on the terminal without its newline
        self.line = ""  # the bar last drawn

    def __enter__(self) -> "ProgressBar":
        ProgressBar.live = self
        return self

    def __exit__(self, *exc: Any) -> None:
        ProgressBar.live = None
        self.close()

    def clear(self) -> bool:
        """Wipe the half-drawn line, so that what is written next starts at the line's beginning;
        whether there was one."""
        if not self.drawn:
            return False
        self.stream.write("\r\x1b[2K")
        self.stream.flush()
        self.drawn = False
        return True

    def draw(self) -> None:
        """Draw the last bar again (after a message took its place)."""
        self.stream.write("\r\x1b[2K" + self.line)
        self.stream.flush()
        self.drawn = True

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 10 and p.step < p.total_steps:
            return
        self.last = now
        import math

        left = _duration(p.seconds_left) if p.seconds_left is not None else "?"
        width = 20
        done = int(width * min(max(p.fraction, 0.0), 1.0))  # by steps, or by the clock under a time budget
        steps = f"step {p.step}" if p.time_budget else f"step {p.step}/{p.total_steps}"
        line = (f"[{'#' * done}{'.' * (width - done)}] {steps} epoch {p.epoch:.2f} "
                f"loss {p.loss:.3f} ppl {math.exp(min(p.loss, 50)):.1f} {p.tokens_per_s:,.0f} tok/s "
                f"{_duration(p.elapsed)} elapsed, {left} left")
        if self.tty:
            self.line = line
            self.draw()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the last bar's line, which stays on the terminal."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
