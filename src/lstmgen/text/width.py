"""Character width: full-width Latin letters and digits become half-width, and ASCII punctuation inside
Chinese text becomes the full-width form Chinese uses, so that ``,`` and ``，`` are one token.

Chinese punctuation (，。：“”（）) stays full-width: it is how Chinese is written. Only marks next to
a Chinese character change; English text, numbers (3.14) and web addresses are left as they are.
"""

from __future__ import annotations

import re
from lstmgen.text.changes import Changes

_ALNUM = "[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]"

# A run of full-width letters and digits, with the full-width . / : - _ between them that addresses
# and numbers have (ｗｗｗ．ｓｉｔｅ．ｃｏｍ, ３．１４): the run becomes ASCII as a whole.
_FULL_WIDTH_ALNUM = re.compile(f"{_ALNUM}(?:[\uff0e\uff0f\uff1a\uff0d\uff3f]?{_ALNUM})*")

_HALF = {code: code - 0xFEE0 for block in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
         for code in range(block[0], block[1] + 1)}
_HALF.update({ord(mark): ord(mark) - 0xFEE0 for mark in "\uff0e\uff0f\uff1a\uff0d\uff3f"})


def half_width(text: str, changes: Changes) -> str:
    """Full-width Latin letters and digits (Ａ, ｗｗｗ, ２０２４) become ASCII; every run is one change."""
    if _FULL_WIDTH_ALNUM.search(text) is None:  # the common case: one scan, no copy
        return text

    def narrow(match: re.Match) -> str:
        changes.add(text, match.start(), match.end(), match.group().translate(_HALF))
        return match.group().translate(_HALF)

    return _FULL_WIDTH_ALNUM.sub(narrow, text)


# A Chinese character or a Chinese punctuation mark: what makes an ASCII mark beside it Chinese punctuation.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3001-\u3003\u3008-\u3011\uff01-\uff0f\uff1a-\uff1f\u2018-\u201d\u2026"

_FULL_PUNCTUATION = {",": "，", ".": "。", ";": "；", ":": "：", "!": "！", "(": "（", ")": "）", "[": "［", "]": "］"}

# Runs of dots are an ellipsis. "?" is left alone: in real files an ASCII "?" inside Chinese marks a
# character the file lost far more often than a question.
_MARK = re.compile(r"\.{2,}|[,.;:!()\[\]]")

_ASCII_MARKS = re.compile(r"[,.;:!()\[\]\"']")

_STRAIGHT_QUOTE = re.compile("[\"']")

_HAN_CHAR = re.compile(f"[{_HAN}]")


def chinese_punctuation(text: str, changes: Changes) -> str:
    """ASCII commas, periods, semicolons, colons, exclamation marks, brackets and quotes beside Chinese
    characters become their full-width forms; ``"`` becomes “ or ” (and ``'`` ‘ or ’) by whether a
    quote is open at that point of the paragraph."""
    if _ASCII_MARKS.search(text) is None:
        return text

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
    opening where no quote of the kind is open at that point (curly quotes before it count)."""
    out = []
    last = 0
    straight = {'"': 0, "'": 0}  # straight quotes of each kind made opening minus those made closing
    for match in _STRAIGHT_QUOTE.finditer(line):
        mark, at = match.group(), match.start()
        before, after = line[at - 1:at], line[at + 1:at + 2]
        if not (_HAN_CHAR.match(before) or _HAN_CHAR.match(after)):
            continue  # an English quote or apostrophe
        opening, closing = "“”" if mark == '"' else "‘’"
        is_open = line.count(opening, 0, at) - line.count(closing, 0, at) + straight[mark] > 0
        new = closing if is_open else opening
        straight[mark] += -1 if is_open else 1
        changes.add(line, at, at + 1, new)
        out.append(line[last:at] + new)
        last = at + 1
    return "".join(out) + line[last:] if out else line
