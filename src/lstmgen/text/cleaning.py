"""A file's text as training sees it: line ends normalised, indentation and blank lines gone, one
paragraph per line, and the short lines a download site or a saved web page added (adverts, URLs,
navigation) dropped; and the rules of docs/cleaning.md, in this order: garbled paragraphs left out,
full-width letters and digits made half-width, watermarks with a web address removed, lines normalised
and advert lines dropped (each file on its own), site notes recurring at paragraph ends or starts removed (across the corpus), ASCII punctuation
inside Chinese made full-width, and the script converted.
"""

from __future__ import annotations

import re
from typing import Optional

from lstmgen.config import DEFAULT_ADVERT_PATTERN, DataConfig
from lstmgen.errors import LstmgenError
from lstmgen.text.changes import EXAMPLES, Changes
from lstmgen.text.garbled import character_kinds, drop_garbled
from lstmgen.text.script import convert_script, detect_script
from lstmgen.text.watermarks import find_recurring_marks, remove_recurring_marks, remove_site_spans
from lstmgen.text.width import chinese_punctuation, half_width

# What each rule counts, in the order the rules run (lstmgen inspect and a run's config.json use these names).
RULES = {"garbled": "garbled paragraphs left out", "half_width": "full-width letter and digit runs made half-width",
         "watermarks": "watermarks removed from paragraphs", "advert_lines": "advert lines dropped",
         "punctuation": "ASCII punctuation marks made full-width", "script": "paragraphs converted to the script"}

# The version of these rules: part of the token cache's key, so text read by older rules is read again.
CLEANING_RULES_VERSION = 2

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
                   max_advert_line: int = 80, changes: Optional[Changes] = None) -> tuple[str, int]:
    """One paragraph per line: unify line ends, trim lines, drop blank lines and advert lines.

    Full-width spaces (U+3000) and no-break spaces inside a line become plain spaces, one for one, so
    the same heading written with either kind of space reads the same; nothing else inside a line changes.

    Args:
        text: decoded text.
        advert_pattern: regex (case-insensitive); a line of at most ``max_advert_line`` characters that
            it matches is dropped. Empty: drop nothing.
        max_advert_line: longer lines are story text, kept whatever they contain.
        changes: where the dropped lines are recorded (``lstmgen inspect``'s examples), if given.

    Returns:
        ``(text, dropped)``: the lines joined by ``"\\n"`` with no trailing newline, and how many
        advert lines were dropped.
    """
    advert = _compile_advert(advert_pattern)
    # str.replace and str.split run in C: linear even for one 50 MB line.
    for old, new in (("\r\n", "\n"), ("\r", "\n"), ("\u3000", " "), ("\xa0", " ")):
        if old in text:  # each replace copies the whole text: only where it changes something
            text = text.replace(old, new)
    lines = [line.strip(_EDGE_CHARS) for line in text.split("\n")]
    del text  # a big file: let the whole text go before the joined copy is made
    kept = [line for line in lines if line]
    if advert is None:
        return "\n".join(kept), 0
    search = advert.search  # only short lines can be adverts: one pass finds them, the kept ones stay in order
    adverts = [line for line in kept if len(line) <= max_advert_line and search(line)]
    if adverts:
        for line in adverts[:EXAMPLES] if changes is not None else ():
            changes.add(line, 0, len(line))
        if changes is not None:
            changes.count += len(adverts) - min(len(adverts), EXAMPLES)
        advert_set = set(adverts)
        kept = [line for line in kept if line not in advert_set or len(line) > max_advert_line]
    return "\n".join(kept), len(adverts)


def clean_file(text: str, data: DataConfig) -> tuple[str, dict[str, Changes]]:
    """One decoded file through the rules that judge a file on its own: garbled paragraphs, full-width
    letters and digits, watermarks with a web address, then lines normalised and advert lines dropped
    (after the watermarks: a short paragraph that carried one keeps its story, not the advert rule's
    verdict on the whole line).

    Returns the text and each rule's changes (see ``RULES``).
    """
    changes = {rule: Changes() for rule in RULES}
    kinds = character_kinds(text) if data.drop_garbled or data.half_width else None  # one pass for both
    if data.drop_garbled:  # first: mojibake has full-width letters, but they are no letters to keep
        cleaned = drop_garbled(text, changes["garbled"], kinds)
        if cleaned is not text:  # paragraphs left out: the kinds of what is left
            text, kinds = cleaned, character_kinds(cleaned) if data.half_width else None
    if data.half_width:  # before the watermarks: a site's address may be written in full-width letters
        text = half_width(text, changes["half_width"], kinds)
    if data.inline_watermarks:
        advert = _compile_advert(data.advert_pattern)
        text = remove_site_spans(text, changes["watermarks"], None if advert is None else
                                 lambda line: len(line.strip(_EDGE_CHARS)) <= data.max_advert_line
                                 and advert.search(line.strip(_EDGE_CHARS)) is not None)
    text, _ = normalize_text(text, advert_pattern=data.advert_pattern, max_advert_line=data.max_advert_line,
                             changes=changes["advert_lines"])
    return text, changes


def clean_corpus(texts: list[str], changes: list[dict[str, Changes]], data: DataConfig) -> tuple[list[str], list[str]]:
    """The files of a corpus (from ``clean_file``) through the rules that need them all: site notes
    that recur at paragraph ends or starts (in one file or across files), punctuation, the script.

    Returns the texts and each file's script as written (``detect_script``), recording the changes
    in ``changes``.
    """
    if data.inline_watermarks:
        marks = find_recurring_marks(texts)
        texts = [remove_recurring_marks(text, marks, found["watermarks"]) for text, found in zip(texts, changes)]
    if data.chinese_punctuation:
        texts = [chinese_punctuation(text, found["punctuation"]) for text, found in zip(texts, changes)]
    scripts = [detect_script(text) for text in texts]
    if data.script != "keep":
        texts = [_convert(text, data.script, found["script"]) for text, found in zip(texts, changes)]
    return texts, scripts


def _convert(text: str, to: str, changes: Changes) -> str:
    """``text`` in the script ``to``, each paragraph that changed counted once."""
    converted = convert_script(text, to)
    if converted == text:
        return text
    old, new = text.split("\n"), converted.split("\n")
    for before, after in zip(old, new):
        if before != after:
            at = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
            changes.add(before, at, at + 1, after[at])
    return converted
