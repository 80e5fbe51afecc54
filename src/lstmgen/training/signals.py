"""Ctrl-C and SIGTERM during training: finish the step, save, stop."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Optional


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a resumable state was saved."""

    def __init__(self, signum: int, run_dir: Path) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.run_dir = run_dir


class SignalCatcher:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so a save is never torn.

    A second signal raises KeyboardInterrupt at once: the last save is whole either way.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalCatcher":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._catch)
        return self

    def _catch(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
