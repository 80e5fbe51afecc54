"""Character width: full-width Latin letters and digits become half-width, and ASCII punctuation inside
Chinese text becomes the full-width form Chinese uses, so that ``,`` and ``，`` are one token.

Chinese punctuation (，。：“”（）) stays full-width: it is how Chinese is written. Only marks next to
a Chinese character change; English text, numbers (3.14) and web addresses are left as they are.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from lstmgen.text.changes import Changes
from lstmgen.text.garbled import FULL_WIDTH, class_ranges

_ALNUM = "[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]"

# A run of full-width letters and digits, with the full-width . / : - _ between them that addresses
# and numbers have (ｗｗｗ．ｓｉｔｅ．ｃｏｍ, ３．１４): the run becomes ASCII as a whole.
_FULL_WIDTH_ALNUM = re.compile(f"{_ALNUM}(?:[\uff0e\uff0f\uff1a\uff0d\uff3f]?{_ALNUM})*")

_HALF = {code: code - 0xFEE0 for block in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
         for code in range(block[0], block[1] + 1)}
_HALF.update({ord(mark): ord(mark) - 0xFEE0 for mark in "\uff0e\uff0f\uff1a\uff0d\uff3f"})


def half_width(text: str, changes: Changes, kinds: Optional[np.ndarray] = None) -> str:
    """Full-width Latin letters and digits (Ａ, ｗｗｗ, ２０２４) become ASCII; every run is one change.
    ``kinds``: ``garbled.character_kinds(text)``, when the caller has it (then a text without any is
    passed over without a scan of its own)."""
    if kinds is None:
        match = _FULL_WIDTH_ALNUM.search(text)
        starts = [] if match is None else [match.start()]  # where to look: from the first one on
        scan = True
    else:  # every run begins at one of these characters: look there only
        starts, scan = np.flatnonzero(kinds == FULL_WIDTH).tolist(), False
    if not starts:  # the common case: no copy
        return text
    pieces, last = [], 0
    for at in starts:
        match = (_FULL_WIDTH_ALNUM.search if scan else _FULL_WIDTH_ALNUM.match)(text, max(at, last))
        while match is not None:
            new = match.group().translate(_HALF)
            changes.add(text, match.start(), match.end(), new)
            pieces += [text[last:match.start()], new]
            last = match.end()
            match = _FULL_WIDTH_ALNUM.search(text, last) if scan else None
    return "".join(pieces) + text[last:]


# A Chinese character or a Chinese punctuation mark: what makes an ASCII mark beside it Chinese punctuation.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3001-\u3003\u3008-\u3011\uff01-\uff0f\uff1a-\uff1f\u2018-\u201d\u2026"

_FULL_PUNCTUATION = {",": "，", ".": "。", ";": "；", ":": "：", "!": "！", "(": "（", ")": "）", "[": "［", "]": "］"}

# Runs of dots are an ellipsis. "?" is left alone: in real files an ASCII "?" inside Chinese marks a
# character the file lost far more often than a question. (One character class first, and the dots of
# a run after it: an alternation here made the regex scan the text several times slower.)
_MARK = re.compile(r"[,.;:!()\[\]](?:(?<=\.)\.+)?")

# Quotes of both kinds, straight and curly: a paragraph is split at them and read in one pass, in order.
_QUOTE_SPLIT = re.compile("([\"'\u201c\u201d\u2018\u2019])")
_CURLY = {"\u201c": ('"', 1), "\u201d": ('"', -1), "\u2018": ("'", 1), "\u2019": ("'", -1)}
_OPENING = {'"': "\u201c", "'": "\u2018"}
_CLOSING = {'"': "\u201d", "'": "\u2019"}

_HAN_CHAR = re.compile(f"[{_HAN}]")


# the same characters as a set, for a quote's neighbours (a set lookup is faster than a regex call)
_HAN_SET = frozenset(chr(code) for low, high in class_ranges(_HAN) for code in range(low, high + 1))


def chinese_punctuation(text: str, changes: Changes) -> str:
    """ASCII commas, periods, semicolons, colons, exclamation marks, brackets and quotes beside Chinese
    characters become their full-width forms; ``"`` becomes “ or ” (and ``'`` ‘ or ’) by whether a
    quote is open at that point of the paragraph."""

    def full(match: re.Match) -> str:
        mark, start, end = match.group(), match.start(), match.end()
        # after a Chinese character, or before one and not after a letter or digit: a.b, 3.14 and
        # www.site.com stay
        before, after = text[start - 1:start], text[end:end + 1]
        if not (_HAN_CHAR.match(before) or (_HAN_CHAR.match(after) and not (before.isascii() and before.isalnum()))):
            return mark
        new = "……" if mark[0] == "." and len(mark) > 1 else _FULL_PUNCTUATION[mark]
        changes.add(text, match.start(), match.end(), new)
        return new

    text = _MARK.sub(full, text)
    if '"' in text or "'" in text:
        text = "\n".join(_quotes(line, changes) if ('"' in line or "'" in line) and _HAN_CHAR.search(line) else line
                         for line in text.split("\n"))
    return text


def _quotes(line: str, changes: Changes) -> str:
    """Straight quotes of one paragraph that touch a Chinese character, as opening or closing quotes:
    opening where no quote of the kind is open at that point (the curly quotes before it count)."""
    pieces = _QUOTE_SPLIT.split(line)  # text, quote, text, quote, ..., text
    open_ = {'"': 0, "'": 0}  # quotes of each kind open at this point of the paragraph
    at = 0  # where pieces[i] begins in the line
    changed = False
    for i in range(1, len(pieces), 2):
        at += len(pieces[i - 1])
        mark = pieces[i]
        if mark in _CURLY:
            kind, step = _CURLY[mark]
            open_[kind] += step
        elif line[at - 1:at] in _HAN_SET or line[at + 1:at + 2] in _HAN_SET:  # else English
            is_open = open_[mark] > 0
            new = _CLOSING[mark] if is_open else _OPENING[mark]
            open_[mark] += -1 if is_open else 1
            changes.add(line, at, at + 1, new)
            pieces[i], changed = new, True
        at += 1
    return "".join(pieces) if changed else line
