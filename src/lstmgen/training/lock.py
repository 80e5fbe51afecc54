"""One writer per run directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from lstmgen.errors import LstmgenError
from lstmgen.files import PathLike


class RunLock:
    """One writer per run directory: an OS file lock (``filelock``: flock on Unix, LockFileEx on
    Windows), released by the operating system if the process dies.

    The lock belongs to the open file, not to the .lock file's existence: a killed process may leave
    .lock behind, but never a held lock. The holder's pid is written beside it (.lock.pid), for the
    message that turns a second writer away.
    """

    def __init__(self, run_dir: PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self.pid_path = Path(run_dir) / ".lock.pid"
        self._lock: Optional[Any] = None
        self._created: Optional[Path] = None  # the outermost folder __enter__ made, if it made any

    def __enter__(self) -> "RunLock":
        import filelock

        missing = [folder for folder in (self.path.parent, *self.path.parent.parents) if not folder.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._created = missing[-1] if missing else None
        lock = filelock.FileLock(str(self.path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            try:
                holder = self.pid_path.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                holder = ""
            raise LstmgenError(f"{self.path.parent}: another lstmgen process"
                               f"{f' (pid {holder})' if holder.isdigit() else ''} is training in this run "
                               f"directory; wait for it to finish or stop it first") from None
        self._lock = lock
        self.pid_path.write_text(str(os.getpid()), encoding="ascii")
        return self

    def __exit__(self, *exc: Any) -> None:
        """Release the lock. After an error (``exc``), folders this lock made for a run that wrote
        nothing are removed again: a mistyped corpus path leaves no empty runs/DATE folder behind."""
        if self._lock is None:
            return
        self._lock.release()
        self._lock = None
        run_dir = self.path.parent
        if exc and exc[0] is not None and self._created is not None:
            try:
                if {p.name for p in run_dir.iterdir()} <= {self.path.name, self.pid_path.name}:
                    self.pid_path.unlink()
                    self.path.unlink(missing_ok=True)  # Windows' filelock removes it on release
                    for folder in (run_dir, *run_dir.parents):
                        folder.rmdir()  # fails, and stops, at a folder something else has written into
                        if folder == self._created:
                            break
            except OSError:
                pass
