"""Watermarks inside paragraphs: what a download site inserted into the story's own lines, at their
end, start or middle, as opposed to the whole advert lines ``cleaning`` drops.

Two rules. A span that holds a web address (``www.``, ``http://``, or a bare domain such as
``biquge.info``) is removed with what wraps it: a run of dashes before it, the bracket pair around it
(〖〗 【】 《》 () （） [] 「」 <>) and the site's name inside the brackets. And a string of 6 or more
characters that many paragraphs end (or begin) with, set off from the sentence before it (after
a sentence's end, a space or a dash) and looking like a site's note, not a sentence: in brackets,
after dashes, or holding Latin letters, digits or a site's words (网, 站, 首发, txt, ...). Chapter-end
formulas such as 且听下回分解。 recur as often but are none of these, and stay.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import chain
from operator import itemgetter
from typing import Callable, Optional

from lstmgen.text.changes import Changes

_TLDS = "com|net|org|cn|cc|la|info|me|tw|hk|io|tv|co|xyz|top|vip|biz|us|in|so|ws|name|mobi|club|site|online"

# A domain: letters, digits and hyphens in dotted parts, ending in a top-level domain that is not
# followed by a letter or digit (a Chinese character may follow: biquge.com笔趣阁).
_DOMAIN = (rf"(?:https?://)?(?:[A-Za-z0-9-]+\.)+(?:{_TLDS})(?![A-Za-z0-9])(?:/[\w./?=&%#-]*)?"
           rf"|(?:https?://|www\.)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?:/[\w./?=&%#-]*)?")

_DOMAIN_RE = re.compile(_DOMAIN, re.IGNORECASE)

_BRACKETS = {"〖": "〗", "【": "】", "《": "》", "(": ")", "（": "）", "[": "]", "「": "」", "<": ">", "〔": "〕",
             "［": "］", "〈": "〉"}

_DASH_RUN = re.compile(r"[-—─－=~～_*·…\s]{2,}$")

_SENTENCE_END = "。！？!?”」』"

_SPACES = " \t\u3000\xa0"  # not "\r": a file's line end is the line rule's to handle

NAME_CHARS = 24  # at most this many characters of a site's name beside its address, inside its brackets


def _site_span(paragraph: str, start: int, end: int) -> tuple[int, int]:
    """The whole watermark around the address ``paragraph[start:end]``: its brackets and the name
    inside them, and a run of dashes or spaces before it."""
    for at in range(start - 1, max(-1, start - NAME_CHARS - 1), -1):
        char = paragraph[at]
        if char in _SENTENCE_END or char in _BRACKETS.values():
            break
        if char in _BRACKETS:
            close = paragraph.find(_BRACKETS[char], end, end + NAME_CHARS + 1)
            if close >= 0:
                start, end = at, close + 1
            break
    dashes = _DASH_RUN.search(paragraph, 0, start)
    if dashes:
        start = dashes.start()
    while start > 0 and paragraph[start - 1] in _SPACES:
        start -= 1
    while end < len(paragraph) and paragraph[end] in _SPACES:
        end += 1
    return start, end


_STORY_MARKS = re.compile("[。！？，；：”」』…]")


def remove_site_spans(text: str, changes: Changes, advert_line: Optional[Callable[[str], bool]] = None) -> str:
    """``text`` without the spans that hold a web address (each is one change); a paragraph that is
    nothing else goes whole. A line that ``advert_line`` says is an advert line, and that has no
    sentence of the story beside its address (本书来自www.site.com), is left whole to that rule."""
    if "." not in text:  # every address has a dot: text without one costs a single fast scan
        return text
    lines = text.split("\n")
    for index, line in enumerate(lines):
        # Chinese text only: English prose names sites (Amazon.com, TV.com) as part of what it says
        if "." not in line or not _HAN.search(line):
            continue
        spans = []
        for match in _DOMAIN_RE.finditer(line):
            if spans and match.start() < spans[-1][1]:
                continue  # inside the brackets of the last one
            spans.append(_site_span(line, match.start(), match.end()))
        if not spans:
            continue
        if advert_line is not None and advert_line(line):
            rest = "".join(line[end:start] for (_, end), (start, _) in zip([(0, 0)] + spans, spans + [(len(line), 0)]))
            if not _STORY_MARKS.search(rest):
                continue
        kept, last = [], 0
        for start, end in spans:
            start = max(start, last)
            changes.add(line, start, end)
            kept.append(line[last:start])
            last = end
        kept.append(line[last:])
        lines[index] = "".join(kept).strip()
    return "\n".join(line for line in lines if line)


MIN_MARK = 6  # characters: shorter strings (他笑道：) begin and end paragraphs of any novel

MAX_MARK = 60

MIN_PARAGRAPHS = 5  # a string at this many paragraph ends (or starts) of one file ...

MIN_FILES = 3  # ... or of this many files is a candidate

_SITE_WORDS = re.compile(r"[A-Za-z0-9]|网|站|书屋|书友|文库|小说|首发|手打|整理|下载|收藏|更新|论坛|阅读|txt|电子书|\.[a-z]",
                         re.IGNORECASE)

_HAN = re.compile("[\u3400-\u9fff]")


def _looks_like_a_site_note(mark: str, cut: str, side: str) -> bool:
    """Whether ``mark``, found at the ``side`` of paragraphs where ``cut`` (the character next to it
    inside the paragraph, "" when it is the whole paragraph) leaves off, is a site's note rather than
    a sentence of the story."""
    inner = mark[0] if side == "end" else mark[-1]  # its character that faces the story
    set_off = any(char == "" or char.isspace() or char in _SENTENCE_END or char in "-—─－=~～_*"
                  or char in _BRACKETS or char in _BRACKETS.values() for char in (cut, inner))
    wrapped = _BRACKETS.get(mark[0]) == mark[-1] or mark[0] in "-—─－=~～_*"
    return set_off and (wrapped or (_SITE_WORDS.search(mark) is not None and _HAN.search(mark) is not None))


def _may_grow_into_a_note(key: str, side: str) -> bool:
    """Whether the innermost ``MIN_MARK`` characters of a mark could belong to a site's note: what keeps
    the recurring sentences of the story (且听下回分解。) from being looked at further."""
    edge = key[-1] in _BRACKETS.values() if side == "end" else key[0] in _BRACKETS or key[0] in "-—─－=~～_*"
    return edge or _SITE_WORDS.search(key) is not None


def find_recurring_marks(texts: list[str]) -> dict[str, set[str]]:
    """The strings that recur at the ends (``"end"``) and starts (``"start"``) of paragraphs of these
    files and look like a site's notes: each the longest such string its paragraphs share."""
    found: dict[str, set[str]] = {"end": set(), "start": set()}
    lines = [text.split("\n") for text in texts]
    for side in found:
        edge_of = itemgetter(slice(-MIN_MARK, None) if side == "end" else slice(0, MIN_MARK))
        per_file = [Counter(map(edge_of, file_lines)) for file_lines in lines]
        in_files = Counter(chain.from_iterable(per_file))  # counting keys of Counters: files per key
        candidates = {key for keys in per_file for key, count in keys.items() if count >= MIN_PARAGRAPHS}
        candidates.update(key for key, count in in_files.items() if count >= MIN_FILES)
        wanted = {key for key in candidates if len(key) == MIN_MARK and _may_grow_into_a_note(key, side)}
        if not wanted:
            continue
        edges: dict[str, list[str]] = {key: [] for key in wanted}
        wide = itemgetter(slice(-MAX_MARK, None) if side == "end" else slice(0, MAX_MARK))
        for line in chain.from_iterable(lines):
            if edge_of(line) in wanted and len(line) > MIN_MARK and _HAN.search(line):
                edges[edge_of(line)].append(wide(line))
        for key, shared in edges.items():
            mark = _longest_shared(key, shared, side) if shared else ""
            if mark:
                found[side].add(mark)
    return found


def _longest_shared(key: str, edges: list[str], side: str) -> str:
    """The longest string, ``key`` grown outward char by char, that most of ``edges`` share, cut back
    to where it looks like a site's note ("" when no length does)."""
    mark = key
    while len(mark) < MAX_MARK:
        grown = Counter(e[-len(mark) - 1:] if side == "end" else e[:len(mark) + 1]
                        for e in edges if len(e) > len(mark))
        if not grown:
            break
        longer, count = grown.most_common(1)[0]
        if count * 2 < len(edges) or count < 2:
            break
        mark = longer
    # the story's own punctuation before (or after) the note is the story's: 他走了。（本章完）
    mark = mark.lstrip(_SENTENCE_END) if side == "end" else mark.rstrip(_SENTENCE_END)
    for size in range(len(mark), MIN_MARK - 1, -1):  # the longest length that is a note set off
        candidate = mark[-size:] if side == "end" else mark[:size]
        cuts = Counter((e[-size - 1:-size] if side == "end" else e[size:size + 1])
                       for e in edges if (e.endswith(candidate) if side == "end" else e.startswith(candidate)))
        cut = cuts.most_common(1)[0][0]
        if _looks_like_a_site_note(candidate, cut, side):
            return candidate
    return ""


def remove_recurring_marks(text: str, marks: dict[str, set[str]], changes: Changes) -> str:
    """``text`` with the ``marks`` cut from the paragraph ends and starts that carry them (each cut is
    one change); a paragraph that was nothing else goes whole."""
    if not marks["end"] and not marks["start"]:
        return text
    ends = tuple(sorted(marks["end"], key=len, reverse=True))
    starts = tuple(sorted(marks["start"], key=len, reverse=True))
    lines = text.split("\n")
    for index, line in enumerate(lines):
        new = line
        if ends and new.endswith(ends):
            mark = next(m for m in ends if new.endswith(m))
            changes.add(line, len(new) - len(mark), len(new))
            new = new[:-len(mark)].rstrip()
        if starts and new.startswith(starts):
            mark = next(m for m in starts if new.startswith(m))
            changes.add(line, 0, len(mark))
            new = new[len(mark):].lstrip()
        lines[index] = new
    return "\n".join(line for line in lines if line)
