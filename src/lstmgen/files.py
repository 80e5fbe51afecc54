"""Files that a kill never tears: atomic writes (JSON, JSON lines, anything), and a library's error on one line.

Every file is written to a temporary name in a private folder, flushed, fsynced and renamed, so a
kill during a save leaves the previous version whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any, Callable, Union

from lstmgen.errors import LstmgenError

TMP_SUFFIX = ".tmp"


# atomic_write's private folders, ".NAME.<12 hex digits>.tmp" (older versions wrote files so named)
OUR_TMP = re.compile(r"\..+\.[0-9a-f]{12}" + re.escape(TMP_SUFFIX))


PathLike = Union[str, Path]


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``: readers see old or new, never half.

    ``tmp_path`` has the final name, inside a private folder ``.NAME.<hex>.tmp`` beside ``path``, so
    whatever temporary files the writer makes of its own (safetensors writes through a ``.tmpXXXXXX``
    beside its target) stay in that folder too. A kill at any moment leaves ``path`` as it was, plus at
    worst that folder, which ``remove_stale_temporaries`` deletes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    tmp = folder / path.name
    try:
        # Created first with the mode open() gives (0666 less the umask), and given that mode again if the
        # writer replaced it: safetensors renames a 0600 temporary file of its own into place, which left
        # the weights unreadable to the group and others while the run's other files were not.
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        mode = stat.S_IMODE(tmp.stat().st_mode)
        write(tmp)
        if stat.S_IMODE(tmp.stat().st_mode) != mode:
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def keep_as(src: PathLike, dst: PathLike) -> None:
    """Make ``dst`` the file ``src`` is now, atomically: a hard link where the filesystem has them (free,
    as lstmgen replaces its files and never writes into them), else a copy."""
    def write(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    atomic_write(dst, write)


def write_json(path: PathLike, data: Any) -> None:
    """Write JSON atomically (UTF-8, Chinese kept readable)."""
    atomic_write(path, lambda p: p.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8"))


def append_jsonl(path: PathLike, record: dict) -> None:
    """Add one line to a JSON-lines file by rewriting it atomically (metrics files are small).

    A plain append torn by a kill would leave half a line that the next append glues a record to.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):  # a torn last line from an older writer: drop it
        text = text[: text.rfind("\n") + 1]
    line = json.dumps(record, ensure_ascii=False) + "\n"
    atomic_write(path, lambda p: p.write_text(text + line, encoding="utf-8"))


def write_jsonl(path: PathLike, records: list[dict]) -> None:
    """Replace a JSON-lines file atomically."""
    atomic_write(path, lambda p: p.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"))


def describe_error(err: BaseException, limit: int = 200) -> str:
    """A library's error message on one short line, for the end of a user-facing one."""
    text = " ".join(str(err).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    if isinstance(err, LstmgenError):  # already written for users
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
