"""Garbled paragraphs: text that was decoded with the wrong codec somewhere on its way to the file
(mojibake), runs of replacement or private-use characters, and soups of rare characters. They are
left out whole: a model that trains on them learns to write them.

What gives mojibake away is density. Bytes of Chinese read with the wrong double-byte codec, or one
byte out of step, come out as characters a Chinese text hardly has (kana, Greek, Cyrillic, box
drawing, full-width letters, pinyin, replacement marks, "?" where a pair did not decode) mixed with
rare ideographs, several in a few characters, and with almost none of the characters every Chinese
sentence has. A file that lost a character here and there (one "?" or "□" or a stray kana where a
rare character was) keeps its paragraphs: around such a mark the text reads well.
"""

from __future__ import annotations

import functools
import re
from typing import Optional

import numpy as np

from lstmgen.text.changes import Changes
from lstmgen.text.encodings import _COMMON_RE

WINDOW = 16  # characters judged together


# Characters that Chinese prose almost never has and mojibake is full of: "?" and the replacement
# mark, private use, kana (full and half width), bopomofo, Greek and Cyrillic, Latin letters with
# accents, C1 controls, tone-mark letters, enclosed and Roman numerals, mathematical signs, box drawing
# (not the ─ some editions use as a dash), parenthesised ideographs, vertical forms, and characters
# beyond the Basic Multilingual Plane (an emoji or a rare ideograph; dense, mojibake). And full-width
# letters and digits standing alone (Ｋ, ２): a run of them (ｗｗｗ．ｓｉｔｅ．ｃｏｍ) is a word or an
# address, which the watermark rule removes; a paragraph that has one must not go whole.
ODD = ("?\ufffd\ue000-\uf8ff\u3040-\u30ff\uff61-\uff9f\u3100-\u312f\u0370-\u04ff\u00a1-\u024f\u0080-\u009f"
       "\u02c7-\u02d9\u2460-\u24ff\u2160-\u217f\u2200-\u22ff\u2502-\u257f\u3220-\u3247\ufe30-\ufe4f"
       "\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\U00010000-\U0010ffff")

_FULL_WIDTH_RUN = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uff0e\uff0f\uff1a]{2,}")

_ODD_RE = re.compile(f"[{ODD}]")

_IDEOGRAPH = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

_REPLACEMENT_RUN = re.compile("[\ufffd\ue000-\uf8ff]{3,}")

# Thresholds, set on the four classic novels (docs/cleaning.md): their mojibake has 4 to 11 odd
# characters in a window and 0 to 9% very common characters among its ideographs; the densest lost
# characters of real prose (a list of names each missing a character, a poem line missing two) have 3,
# or a third of their ideographs very common.
MIN_ODD = 4
MAX_COMMON_SHARE = 0.15
MIN_IDEOGRAPHS = 4
ALL_ODD = 10  # Latin-1 or half-width kana mojibake: nearly every character odd, no ideographs to judge


def _common_characters() -> frozenset:
    """The level-1 characters of GB2312 (3,755, simplified) and Big5 (5,401, traditional): the
    characters in everyday use, read from the codecs themselves."""
    found = set()
    for codec, leads, trails, last in (("gb2312", range(0xB0, 0xD8), range(0xA1, 0xFF), (0xD7, 0xF9)),
                                       ("cp950", range(0xA4, 0xC7), [*range(0x40, 0x7F), *range(0xA1, 0xFF)],
                                        (0xC6, 0x7E))):
        for lead in leads:
            for trail in trails:
                if (lead, trail) > last:
                    break
                try:
                    found.add(bytes((lead, trail)).decode(codec))
                except UnicodeDecodeError:
                    continue
    return frozenset(found)


def _rare_class(common: frozenset) -> str:
    """A regex class of the ideographs outside ``common``, as ranges."""
    codes = [c for lo, hi in ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)) for c in range(lo, hi + 1)
             if chr(c) not in common]
    ranges, start = [], codes[0]
    for previous, code in zip(codes, codes[1:] + [-1]):
        if code != previous + 1:
            ranges.append(chr(start) if start == previous else f"{chr(start)}-{chr(previous)}")
            start = code
    return "".join(ranges)


# Rare-character soup: rare ideographs and odd characters, at least this many in a window, with
# at most one other character between each two; the classics' densest prose (horse names, herbs) has 9.
SOUP = 12


@functools.lru_cache(maxsize=None)
def _patterns() -> tuple[re.Pattern, re.Pattern]:
    """(a soup, one rare or odd character) as regexes: compiled once, when first needed."""
    rare = _rare_class(_common_characters())
    soup = re.compile(f"(?:[{rare}{ODD}][^\\n]?){{{SOUP - 1}}}[{rare}{ODD}]")
    return soup, re.compile(f"[{rare}{ODD}]")


def garbled_window(paragraph: str) -> str:
    """The first window of ``paragraph`` that reads as garbled, or "" when it reads well."""
    span = _garbled_span(paragraph)
    return paragraph[span[0]:span[1]] if span else ""


def _garbled_span(paragraph: str) -> Optional[tuple[int, int]]:
    """Where ``garbled_window``'s window is in ``paragraph``, or None."""
    run = _REPLACEMENT_RUN.search(paragraph)
    if run:
        return run.span()
    # runs of full-width letters (a word, an address) are not odd: blanked, the positions kept
    paragraph = _FULL_WIDTH_RUN.sub(lambda run: " " * len(run.group()), paragraph)
    marks = [m.start() for m in _ODD_RE.finditer(paragraph)]
    last = 0
    for first in range(len(marks)):
        last = max(last, first)
        while last + 1 < len(marks) and marks[last + 1] - marks[first] < WINDOW:
            last += 1
        odd = last - first + 1
        if odd < MIN_ODD:
            continue
        pad = max(0, WINDOW - (marks[last] + 1 - marks[first])) // 2
        start, end = max(0, marks[first] - pad), marks[last] + 1 + pad
        window = paragraph[start:end]
        ideographs = len(_IDEOGRAPH.findall(window))
        if odd >= ALL_ODD or (ideographs >= MIN_IDEOGRAPHS and
                              len(_COMMON_RE.findall(window)) <= MAX_COMMON_SHARE * ideographs):
            return start, min(end, len(paragraph))
    soups, rare_or_odd = _patterns()
    for soup in soups.finditer(paragraph):
        for start in range(soup.start(), soup.end()):
            window = paragraph[start:start + WINDOW]
            if len(rare_or_odd.findall(window)) >= SOUP:
                return start, min(start + WINDOW, len(paragraph))
    return None


# Each character's kind, for the scans of a whole file (``character_kinds``).
OTHER, RARE, ODD_KIND, FULL_WIDTH, NEWLINE = range(5)


def class_ranges(regex_class: str) -> list[tuple[int, int]]:
    """The code-point ranges of a regex class written as single characters and ranges (a-b)."""
    return [(ord(low or single), ord(high or single)) for low, high, single in re.findall("(.)-(.)|(.)", regex_class)]


@functools.lru_cache(maxsize=None)
def _kind_table() -> np.ndarray:
    """Every code point's kind: RARE (an ideograph outside ``_common_characters``), ODD_KIND (``ODD``),
    FULL_WIDTH (a full-width letter or digit: odd too), NEWLINE, or OTHER."""
    table = np.zeros(0x110000, dtype=np.uint8)
    for low, high in ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)):
        table[low:high + 1] = RARE
    table[[ord(c) for c in _common_characters()]] = OTHER
    for low, high in class_ranges(ODD):
        table[low:high + 1] = ODD_KIND
    for low, high in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)):
        table[low:high + 1] = FULL_WIDTH
    table[ord("\n")] = NEWLINE
    return table


def character_kinds(text: str) -> np.ndarray:
    """(len(text),) the kind of each character of ``text``: one pass that the scans for garbled
    paragraphs and full-width letters share (a regex scan of each took several times as long)."""
    return _kind_table()[np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)]


def _suspect_paragraphs(kinds: np.ndarray) -> list[int]:
    """Where the paragraphs that may be garbled begin: those with two odd characters within a window,
    or a run of rare or odd ones that could be a soup. Every paragraph ``_garbled_span`` finds garbled
    is among them (its odd windows, soups and replacement runs all have one of these)."""
    newlines = np.flatnonzero(kinds == NEWLINE)
    odd = np.flatnonzero((kinds >= ODD_KIND) & (kinds <= FULL_WIDTH))
    marked = np.flatnonzero((kinds >= RARE) & (kinds <= FULL_WIDTH))
    span = SOUP - 2  # the soup's characters after its first, each at most one character after the last
    pairs = [(odd[:-1], odd[1:], WINDOW - 1), (marked[:-span], marked[span:], 2 * span)]
    found = []
    for first, last, within in pairs:
        near = last - first <= within
        first, last = first[near], last[near]
        # in one paragraph: no newline between them
        found.append(first[np.searchsorted(newlines, first) == np.searchsorted(newlines, last)])
    paragraphs = np.unique(np.searchsorted(newlines, np.concatenate(found)))  # newlines before each
    return [0 if index == 0 else int(newlines[index - 1]) + 1 for index in paragraphs.tolist()]


def drop_garbled(text: str, changes: Changes, kinds: Optional[np.ndarray] = None) -> str:
    """``text`` without its garbled paragraphs (each is one change, shown by its garbled window).
    ``kinds``: ``character_kinds(text)``, when the caller has it."""
    starts = _suspect_paragraphs(character_kinds(text) if kinds is None else kinds)
    if not starts:
        return text
    cuts = []
    for start in starts:
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        span = _garbled_span(text[start:end])
        if span:
            changes.add(text, start + span[0], start + span[1])
            cuts.append((start, end))
    if not cuts:
        return text
    kept, last = [], 0
    for start, end in cuts:
        kept.append(text[last:start])
        last = end + 1
    kept.append(text[last:])
    return "".join(kept).rstrip("\n")
