"""A file's text as training sees it: line ends normalised, indentation and blank lines gone, one
paragraph per line, and the short lines a download site or a saved web page added (adverts, URLs,
navigation) dropped.
"""

from __future__ import annotations

import re
from typing import Optional

from lstmgen.config import DEFAULT_ADVERT_PATTERN
from lstmgen.errors import LstmgenError

# Whitespace trimmed from both ends of a line: str.isspace's set plus BOM and zero-width space, which
# editors leave at line starts when files are glued together; and Ctrl-Z, the end-of-file mark old DOS
# editors left after the last line.
_EDGE_CHARS = (" \t\n\r\v\f\x1a\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
               + "".join(map(chr, range(0x2000, 0x200C))))


def _compile_advert(pattern: str) -> Optional[re.Pattern]:
    if not pattern:  # an empty pattern would match every short line; it means "no filter"
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise LstmgenError(f"--advert-pattern {pattern!r} is not a valid regular expression: {error}")


def normalize_text(text: str, *, advert_pattern: str = DEFAULT_ADVERT_PATTERN,
                   max_advert_line: int = 80) -> tuple[str, int]:
    """One paragraph per line: unify line ends, trim lines, drop blank lines and advert lines.

    Full-width spaces (U+3000) and no-break spaces inside a line become plain spaces, one for one, so
    the same heading written with either kind of space reads the same; nothing else inside a line changes.

    Args:
        text: decoded text.
        advert_pattern: regex (case-insensitive); a line of at most ``max_advert_line`` characters that
            it matches is dropped. Empty: drop nothing.
        max_advert_line: longer lines are story text, kept whatever they contain.

    Returns:
        ``(text, dropped)``: the lines joined by ``"\\n"`` with no trailing newline, and how many
        advert lines were dropped.
    """
    advert = _compile_advert(advert_pattern)
    # str.replace and str.split run in C: linear even for one 50 MB line.
    for old, new in (("\r\n", "\n"), ("\r", "\n"), ("\u3000", " "), ("\xa0", " ")):
        if old in text:  # each replace copies the whole text: only where it changes something
            text = text.replace(old, new)
    kept: list[str] = []
    dropped = 0
    lines = text.split("\n")
    del text  # a big file: let the whole text go before the joined copy is made
    for line in lines:
        line = line.strip(_EDGE_CHARS)
        if not line:
            continue
        if advert is not None and len(line) <= max_advert_line and advert.search(line):
            dropped += 1
            continue
        kept.append(line)
    return "\n".join(kept), dropped
