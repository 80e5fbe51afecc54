"""The token cache described for a reader: ``lstmgen cache``'s listing and what a prune or clear removed.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from lstmgen.display import align
from lstmgen.tokens.cache_admin import DAY, CacheListing, Removal, TokenFolder, tokenizer_of
from lstmgen.tokens.prepare import SPLITS


def human_size(num_bytes: int) -> str:
    """Bytes in B, KB, MB or GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} B"


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < DAY:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // DAY)
    return f"{days} day{'s' if days > 1 else ''} ago"


def _rows(folders: list[TokenFolder], now: float) -> list[list[str]]:
    return [[f.path.name, human_size(f.bytes), _ago(now - f.last_used) + ("" if f.use_recorded else "*"),
             tokenizer_of(f), *(f"{f.tokens[s]:,}" if s in f.tokens else "-" for s in SPLITS),
             str(f.source.get("corpus") or "?")] for f in folders]


UNRECORDED = "* no use recorded: made then, by an lstmgen that kept no last-used marker"


def describe_listing(listing: CacheListing, *, now: Optional[float] = None) -> list[str]:
    """The lines ``lstmgen cache`` prints: the cache's place, a line per token folder, the rest, a total."""
    now = time.time() if now is None else now
    where = "$LSTMGEN_CACHE" if os.environ.get("LSTMGEN_CACHE") else "set LSTMGEN_CACHE to move it"
    lines = [f"token cache: {listing.root} ({where})"]
    if not listing.exists:
        return lines + ["nothing there yet"]
    if listing.folders:
        header = ["folder", "size", "last used", "tokenizer", "train", "valid", "test", "corpus"]
        lines += align([header] + _rows(listing.folders, now), right={1, 4, 5, 6})
    else:
        lines.append("no token folders")
    for build in listing.builds:
        state = "abandoned (removed by --prune and --clear)" if build.abandoned(now) else "being built, left alone"
        lines.append(f"{build.path.name}: {human_size(build.bytes)}, last written {_ago(now - build.last_write)}, "
                     f"{state}")
    lines.append(f"read manifests: {len(listing.manifests)}, {human_size(listing.manifest_bytes)}")
    if listing.demo_bytes:
        lines.append(f"demo/: {human_size(listing.demo_bytes)} (the demo's poems; --clear keeps them)")
    if listing.other_bytes:
        lines.append(f"other: {human_size(listing.other_bytes)}")
    lines.append(f"total: {human_size(listing.total_bytes)}")
    if any(not f.use_recorded for f in listing.folders):
        lines.append(UNRECORDED)
    return lines


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def describe_removal(result: Removal, *, now: Optional[float] = None, unused_days: Optional[float] = None) -> list[str]:
    """The lines ``lstmgen cache --prune/--clear`` prints: each folder removed, the sums, what was kept."""
    now = time.time() if now is None else now
    lines = [f"removed {line}" for line in align(_rows(result.removed, now), right={1, 4, 5, 6})] \
        if result.removed else []
    if result.removed or result.abandoned or result.manifests or result.freed:
        parts = [_count(len(result.removed), "token folder")]
        if result.abandoned:
            parts.append(_count(len(result.abandoned), "abandoned build"))
        parts.append(_count(result.manifests, "read manifest"))
        lines.append(f"removed {', '.join(parts[:-1])} and {parts[-1]}: {human_size(result.freed)} freed")
    else:
        lines.append("nothing to remove")
    kept = []
    if result.kept:
        used = f" used in the last {unused_days:g} days" if unused_days is not None and not result.failed else ""
        kept.append(f"{_count(len(result.kept), 'token folder')}{used} "
                    f"({human_size(sum(f.bytes for f in result.kept))})")
    if result.building:
        kept.append(f"{_count(len(result.building), 'build')} in progress")
    if result.demo_bytes:
        kept.append(f"demo/ ({human_size(result.demo_bytes)})")
    if kept:
        lines.append(f"kept {'; '.join(kept)}")
    if any(not f.use_recorded for f in result.removed):
        lines.append(UNRECORDED)
    return lines
