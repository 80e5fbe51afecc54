"""What the token cache holds, and removing what is no longer used (``lstmgen cache``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from lstmgen.errors import LstmgenError
from lstmgen.tokens.prepare import SPLITS
from lstmgen.tokens.store import MANIFESTS_DIR, SOURCE_FILE, TOKENS_DIR, USED_MARKER, default_cache_dir

ABANDONED_AFTER = 86400.0  # seconds: a build writes its files as it goes; one silent for a day was killed


DAY = 86400.0


FOLDER = re.compile(r"[0-9a-f]{32}")  # cache_key's names


BUILD = re.compile(r"[0-9a-f]{32}\..+")  # tempfile.mkdtemp(prefix=key + ".")


IDS_BUILD = re.compile(r"ids-[0-9a-f]{16}\..+")  # encode_cached's temporary ids folders


TRASH_PREFIX = ".removing-"


@dataclass
class TokenFolder:
    """One cached segmentation."""

    path: Path
    bytes: int  # on disk (allocated blocks), its ids-* folders included
    last_used: float  # seconds since the epoch
    use_recorded: bool  # False: no last-used marker, so last_used is when it was made
    tokens: dict[str, int]  # split -> tokens of the segmentation
    source: dict = field(default_factory=dict)  # its source.json; {} for a folder made before it existed


@dataclass
class Build:
    """A segmentation being built, or left half-built by a killed run (tokens/<key>.<random>)."""

    path: Path
    bytes: int
    last_write: float  # the newest modification time in it

    def abandoned(self, now: float) -> bool:
        return now - self.last_write > ABANDONED_AFTER


@dataclass
class CacheListing:
    """What ``scan`` found."""

    root: Path
    exists: bool
    folders: list[TokenFolder]  # most recently used first
    builds: list[Build]
    trash: list[Path]  # tokens/.removing-*: what an interrupted removal left
    manifests: list[Path]  # read/*.json
    manifest_bytes: int
    demo_bytes: int
    other_bytes: int  # anything else (trash, unknown files); links count as themselves
    folder_bytes: int = 0  # the cache folder's own entries: tokens/ and read/ themselves

    @property
    def total_bytes(self) -> int:
        """All of it, as ``du -s`` counts."""
        return (sum(f.bytes for f in self.folders) + sum(b.bytes for b in self.builds) + self.manifest_bytes
                + self.demo_bytes + self.other_bytes + self.folder_bytes)


@dataclass
class Removal:
    """What ``prune`` or ``clear`` removed, kept and could not remove."""

    removed: list[TokenFolder] = field(default_factory=list)
    kept: list[TokenFolder] = field(default_factory=list)
    abandoned: list[Build] = field(default_factory=list)  # killed builds removed
    building: list[Build] = field(default_factory=list)  # builds in progress, left alone
    manifests: int = 0  # read manifests removed
    freed: int = 0  # bytes
    failed: list[str] = field(default_factory=list)  # "path: reason"
    demo_bytes: int = 0  # demo/, which is never removed


def _is_real_dir(path: Path) -> bool:
    """A folder, and not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _block_bytes(st: os.stat_result) -> int:
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def disk_usage(path: Path) -> tuple[int, float]:
    """Bytes on disk under ``path`` (links not followed, a hard-linked file once) and the newest
    modification time in it. Entries that vanish meanwhile (a concurrent removal) are skipped."""
    try:
        top = os.lstat(path)
    except OSError:
        return 0, 0.0
    total, newest, seen = _block_bytes(top), top.st_mtime, set()
    if not stat.S_ISDIR(top.st_mode):
        return total, newest
    for root, dirs, files in os.walk(path):  # does not descend into links to folders
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += _block_bytes(st)
            newest = max(newest, st.st_mtime)
    return total, newest


def _last_use(path: Path) -> tuple[float, bool]:
    """When a token folder was last used, and whether that was recorded (else: when it was made)."""
    try:
        return os.stat(path / USED_MARKER).st_mtime, True
    except OSError:
        pass
    try:
        return os.stat(path / "types.json").st_mtime, False
    except OSError:  # damaged: no types.json
        return os.lstat(path).st_mtime, False


def _token_folder(path: Path) -> TokenFolder:
    size, _ = disk_usage(path)
    last_used, recorded = _last_use(path)
    tokens = {}
    for split in SPLITS:
        try:
            tokens[split] = os.stat(path / f"{split}.bin").st_size // 4  # int32 ids
        except OSError:
            pass
    try:
        source = json.loads((path / SOURCE_FILE).read_text(encoding="utf-8"))
        source = source if isinstance(source, dict) else {}
    except (OSError, ValueError):
        source = {}
    return TokenFolder(path=path, bytes=size, last_used=last_used, use_recorded=recorded, tokens=tokens,
                       source=source)


def cache_root(cache_dir: Optional[Path] = None) -> Path:
    """The cache folder (``$LSTMGEN_CACHE`` or the platform's cache folder unless given: ``data.default_cache_dir``).

    Raises:
        LstmgenError: it is something other than a folder.
    """
    root = Path(cache_dir or default_cache_dir())
    if root.exists() and not root.is_dir():
        raise LstmgenError(f"the token cache {root} is not a folder; point LSTMGEN_CACHE at a folder")
    return root


def scan(cache_dir: Optional[Path] = None) -> CacheListing:
    """What the cache holds (an absent cache holds nothing).

    Raises:
        LstmgenError: the cache is not a folder, or cannot be read.
    """
    root = cache_root(cache_dir)
    try:
        return _scan(root)
    except OSError as err:
        raise LstmgenError(f"cannot read the token cache {root}: {err.strerror or err}") from None


def _scan(root: Path) -> CacheListing:
    listing = CacheListing(root=root, exists=root.is_dir(), folders=[], builds=[], trash=[], manifests=[],
                           manifest_bytes=0, demo_bytes=0, other_bytes=0)
    tokens, manifests = root / TOKENS_DIR, root / MANIFESTS_DIR
    for folder in (root, tokens, manifests):
        try:
            listing.folder_bytes += _block_bytes(os.lstat(folder)) if _is_real_dir(folder) else 0
        except OSError:
            pass
    for entry in sorted(os.scandir(tokens), key=lambda e: e.name) if _is_real_dir(tokens) else ():
        path = Path(entry.path)
        if FOLDER.fullmatch(entry.name) and _is_real_dir(path):
            listing.folders.append(_token_folder(path))
        elif BUILD.fullmatch(entry.name) and _is_real_dir(path):
            listing.builds.append(Build(path, *disk_usage(path)))
        else:
            if entry.name.startswith(TRASH_PREFIX) and _is_real_dir(path):
                listing.trash.append(path)
            listing.other_bytes += disk_usage(path)[0]
    listing.folders.sort(key=lambda f: -f.last_used)
    for entry in sorted(os.scandir(manifests), key=lambda e: e.name) if _is_real_dir(manifests) else ():
        size = disk_usage(Path(entry.path))[0]
        if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
            listing.manifests.append(Path(entry.path))
            listing.manifest_bytes += size
        else:
            listing.other_bytes += size
    listing.demo_bytes = disk_usage(root / "demo")[0] if _is_real_dir(root / "demo") else 0
    return listing


def _remove_folder(path: Path) -> None:
    """Rename ``path`` out of the way, then delete it: a run loading it sees it whole or not at all."""
    trash = path.parent / f"{TRASH_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
    os.rename(path, trash)  # on a real folder, checked by the caller; rmtree never follows links inside
    _delete_trash(trash)


def _delete_trash(trash: Path) -> None:
    try:
        shutil.rmtree(trash)
    except FileNotFoundError:  # another prune is deleting it too
        pass


def _remove(listing: CacheListing, doomed: Callable[[float], bool], *, now: float) -> Removal:
    """Remove the token folders whose last use ``doomed`` condemns, abandoned builds, and manifests
    that no kept folder serves."""
    result = Removal(demo_bytes=listing.demo_bytes)
    for folder in listing.folders:
        try:
            # the marker read again: a run may have taken the folder since the scan
            if not doomed(_last_use(folder.path)[0]):
                result.kept.append(folder)
                continue
            _remove_folder(folder.path)
        except FileNotFoundError:  # removed meanwhile (another prune)
            continue
        except OSError as err:
            result.failed.append(f"{folder.path}: {err.strerror or err}")
            result.kept.append(folder)
            continue
        result.removed.append(folder)
        result.freed += folder.bytes
    for build in listing.builds:
        if not build.abandoned(now):
            result.building.append(build)
            continue
        try:
            _remove_folder(build.path)
        except FileNotFoundError:  # published or removed meanwhile
            continue
        except OSError as err:
            result.failed.append(f"{build.path}: {err.strerror or err}")
            continue
        result.abandoned.append(build)
        result.freed += build.bytes
    for trash in listing.trash:  # never read by anything
        size = disk_usage(trash)[0]
        try:
            _delete_trash(trash)
            result.freed += size
        except OSError as err:
            result.failed.append(f"{trash}: {err.strerror or err}")
    for folder in result.kept:  # vocabulary ids a killed run left half-written
        for entry in os.scandir(folder.path) if _is_real_dir(folder.path) else ():
            path = Path(entry.path)
            if IDS_BUILD.fullmatch(entry.name) and _is_real_dir(path):
                size, last_write = disk_usage(path)
                if now - last_write > ABANDONED_AFTER:
                    try:
                        _remove_folder(path)
                        result.freed += size
                    except OSError as err:
                        result.failed.append(f"{path}: {err.strerror or err}")
    for manifest in _useless_manifests(listing, result.kept, now=now):
        try:
            size = disk_usage(manifest)[0]
            manifest.unlink()
        except FileNotFoundError:
            continue
        except OSError as err:
            result.failed.append(f"{manifest}: {err.strerror or err}")
            continue
        result.manifests += 1
        result.freed += size
    return result


def _useless_manifests(listing: CacheListing, kept: list[TokenFolder], *, now: float) -> list[Path]:
    """The read manifests no kept token folder can serve: all of them when none is kept.

    A manifest leads a start to the token folders of its fingerprint; with none left it only costs a
    cache miss. Whether one is left is known only when every kept folder records its fingerprint (a
    folder made before source.json existed does not): otherwise every manifest is kept. One written
    after the scan began (by a run that just read its files) is kept too.
    """
    if any("fingerprint" not in f.source for f in kept):
        return []
    fingerprints = {f.source.get("fingerprint") for f in kept}
    useless = []
    for manifest in listing.manifests:
        try:
            if os.lstat(manifest).st_mtime >= now:
                continue
            if kept and json.loads(manifest.read_text(encoding="utf-8")).get("fingerprint") in fingerprints:
                continue
        except OSError:
            continue
        except (ValueError, AttributeError):  # damaged: read_manifest ignores it already
            pass
        useless.append(manifest)
    return useless


def prune(cache_dir: Optional[Path] = None, *, unused_days: float, now: Optional[float] = None) -> Removal:
    """Remove the token folders not used in the last ``unused_days`` days, builds abandoned for a day
    (``ABANDONED_AFTER``), and the read manifests that pointed only at removed folders (see
    ``_useless_manifests``). demo/ is kept.

    Raises:
        LstmgenError: ``unused_days`` is negative or not a number.
    """
    if not unused_days >= 0 or unused_days == float("inf"):  # NaN fails >= too
        raise LstmgenError(f"--prune {unused_days:g}: give a number of days, 0 or more")
    now = time.time() if now is None else now
    listing = scan(cache_dir)
    return _remove(listing, lambda last_used: now - last_used > unused_days * DAY, now=now)


def clear(cache_dir: Optional[Path] = None, *, now: Optional[float] = None) -> Removal:
    """Remove every token folder and read manifest, and builds abandoned for a day. Builds in progress
    and demo/ (the demo's fetched poems: fetching them again takes npm and the network) are kept, and
    so are the manifests of folders that could not be removed."""
    now = time.time() if now is None else now
    listing = scan(cache_dir)
    return _remove(listing, lambda last_used: True, now=now)


def tokenizer_of(folder: TokenFolder) -> str:
    """The segmenter a folder serves, e.g. ``word/hybrid (rjieba, 12 user words)``; ? when not recorded."""
    settings = folder.source.get("settings")
    if not isinstance(settings, dict):
        return "?"
    kind = str(settings.get("segmenter", "?"))
    if kind != "word":
        return kind
    details = [str(settings.get("backend", "?"))] + \
        ([f"{settings['user_words']} user words"] if settings.get("user_words") else [])
    return f"word/hybrid ({', '.join(details)})"  # hybrid runs share word's segmentation
