"""The model's desk: one request writes at a time, the others wait in line, in the order they came,
and one whose client leaves gives up its place (or stops writing) at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:

    from lstmgen.evaluation.adapt import AdaptConfig
    from lstmgen.generation.cpu_step import StepWeights
    from lstmgen.generation.generate import GenerateConfig
    from lstmgen.model.run_dir import TrainedRun as Run


logger = logging.getLogger(__name__)


MAX_WAITING = 16  # requests queued for the model; past this, 503 "busy" rather than an ever longer queue


WAIT_POLL_SECONDS = 0.05  # how often a request waiting for the model looks whether its client has left


class ClientGone(Exception):
    """Raised to stop writing (or waiting to write) for a client that has left."""


class ServerBusy(Exception):
    """Too many requests already wait for the model (answered with 503)."""


class TurnLock:
    """A lock that goes to its waiters in the order they came, and that a waiter can leave before its turn.

    ``threading.Lock`` lets a thread that has just arrived take the lock ahead of threads that have waited
    longer; a waiter that wakes now and then to look at its client would lose its place each time. Here
    ``release`` hands the lock straight to the first in line, so it is never free for a newcomer to take.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._line: deque[threading.Event] = deque()
        self._held = False

    def acquire(self, cancelled: Optional[threading.Event] = None) -> bool:
        """Wait for the lock; False, out of the line and without the lock, if ``cancelled`` is set first."""
        with self._guard:
            if not self._held:
                self._held = True
                return True
            turn = threading.Event()
            self._line.append(turn)
        while not turn.wait(None if cancelled is None else WAIT_POLL_SECONDS):
            if cancelled is not None and cancelled.is_set():
                with self._guard:
                    if not turn.is_set():  # else the lock was handed over just now: it is this thread's
                        self._line.remove(turn)
                        return False
        return True

    def release(self) -> None:
        with self._guard:
            if not self._held:
                raise RuntimeError("release of a lock that is not held")
            if self._line:
                self._line.popleft().set()  # still held, now by the first in line
            else:
                self._held = False

    def locked(self) -> bool:
        return self._held


class ModelDesk:
    """The shared model, written with by one request at a time, in the order they came; counts who is
    writing and waiting.

    A request counts as waiting from the moment it is admitted, not from when a thread gets to it: what
    waits for a thread must count too, or the 503 past ``MAX_WAITING`` would never come. It stops
    counting when it writes, or when its client leaves while it waits (``cancelled``): a queue full of
    clients that gave up would otherwise answer 503 to everyone until the model had got through it.
    """

    def __init__(self, run: "Run", step_weights: Optional["StepWeights"] = None) -> None:
        self.run = run
        self.step_weights = step_weights  # on a CPU: the matrices every request reads, prepared once
        self._lock = TurnLock()
        self._count_lock = threading.Lock()
        self.generating = 0
        self.waiting = 0

    def write(self, prompts: list[str], config: "GenerateConfig", *,
              on_text: Optional[Callable[[int, str], None]] = None,
              cancelled: Optional[threading.Event] = None, context: Optional[str] = None,
              adapt: Optional["AdaptConfig"] = None) -> tuple[list[str], float]:
        """Generate under the lock; returns the texts and the seconds spent writing (not waiting).

        ``context`` and ``adapt`` go to ``generate`` as they are: a text read before the prompts (in
        the run's script), and how the model adapts to it (None: it only carries its state on). The
        reading happens under the lock too, and is part of the seconds returned.

        Once ``cancelled`` is set, it stops: waiting for the lock, or writing at the next token, by
        raising ``ClientGone``.
        """
        from lstmgen.generation.generate import generate

        def written(row: int, piece: str) -> None:
            if cancelled is not None and cancelled.is_set():
                raise ClientGone()
            if on_text is not None:
                on_text(row, piece)

        if not self._lock.acquire(cancelled):  # admitted before: waiting since then
            self._count(waiting=-1)
            raise ClientGone()
        try:
            self._count(waiting=-1, generating=1)
            try:
                if cancelled is not None and cancelled.is_set():
                    raise ClientGone()
                start = time.perf_counter()
                texts = generate(self.run.model, self.run.tokenizer, self.run.vocab, prompts, config,
                                 on_text=written, weights=self.step_weights, context=context, adapt=adapt)
                return texts, time.perf_counter() - start
            finally:
                self._count(generating=-1)
        finally:
            self._lock.release()

    def admit(self) -> None:
        """Take a request into the queue, or refuse it (``ServerBusy``) when the queue is full. Every
        admitted request must then ``write``: that is what takes it out of the queue again."""
        with self._count_lock:
            if self.waiting >= MAX_WAITING:
                raise ServerBusy(f"busy: {self.waiting} requests are waiting for the model; try again shortly")
            self.waiting += 1

    def _count(self, *, waiting: int = 0, generating: int = 0) -> None:
        with self._count_lock:
            self.waiting += waiting
            self.generating += generating
