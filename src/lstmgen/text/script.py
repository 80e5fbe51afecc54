"""Simplified and traditional Chinese: which a text is written in, and conversion between them with
OpenCC, so that a collection mixing both does not teach the model two spellings of every word.
"""

from __future__ import annotations

import functools
import re
from typing import Optional

from lstmgen.config import SCRIPT_CHOICES
from lstmgen.errors import LstmgenError

SAMPLE = 30_000  # characters judged, from the start, middle and end: enough to tell, and cheap

MIN_TELLING = 10  # fewer characters that differ between the scripts say too little ("none")

MIXED_SHARE = 0.1  # a text with more than this share of the other script's characters is "mixed"


def _only_in(codec: str, other: str) -> str:
    """The ideographs ``codec`` encodes and ``other`` does not, as a regex class: 们 is in GB2312 and not in
    Big5, 們 the other way round. Read from the codecs themselves."""
    chars = []
    for code in range(0x4E00, 0xA000):
        char = chr(code)
        try:
            char.encode(codec)
        except UnicodeEncodeError:
            continue
        try:
            char.encode(other)
        except UnicodeEncodeError:
            chars.append(char)
    return "".join(chars)


@functools.lru_cache(maxsize=None)
def _telling() -> tuple[re.Pattern, re.Pattern]:
    """(simplified-only, traditional-only) character patterns, compiled once when first needed."""
    return re.compile(f"[{_only_in('gb2312', 'cp950')}]"), re.compile(f"[{_only_in('cp950', 'gb2312')}]")


def script_counts(text: str) -> tuple[int, int]:
    """How many characters of ``text``'s sample (its start, middle and end) only simplified and only
    traditional Chinese have."""
    if len(text) > SAMPLE:
        third = SAMPLE // 3
        middle = len(text) // 2
        text = text[:third] + text[middle - third // 2:middle + third // 2] + text[-third:]
    simplified, traditional = _telling()
    return len(simplified.findall(text)), len(traditional.findall(text))


def detect_script(text: str) -> str:
    """``simplified``, ``traditional``, ``mixed`` (more than ``MIXED_SHARE`` of each) or ``none`` (too
    few Chinese characters that differ between the two to tell: English, or a short note)."""
    return script_of_counts(*script_counts(text))


def script_of_counts(simplified: int, traditional: int) -> str:
    """``detect_script``'s verdict for these counts."""
    if simplified + traditional < MIN_TELLING:
        return "none"
    share = traditional / (simplified + traditional)
    if share <= MIXED_SHARE:
        return "simplified"
    if share >= 1 - MIXED_SHARE:
        return "traditional"
    return "mixed"


@functools.lru_cache(maxsize=None)
def _converter(to: str):
    try:
        import opencc
    except ImportError:
        raise LstmgenError("converting between simplified and traditional Chinese needs OpenCC: pip install opencc")
    return opencc.OpenCC("t2s" if to == "simplified" else "s2t")


def convert_script(text: str, to: Optional[str]) -> str:
    """``text`` in simplified or traditional characters (OpenCC's t2s or s2t, which converts whole words:
    头发 -> 頭髮, not 頭發); ``to`` None or "keep" returns it unchanged."""
    if not to or to == "keep" or not text:
        return text
    if to not in ("simplified", "traditional"):
        raise LstmgenError(f"--script must be one of {', '.join(SCRIPT_CHOICES)}, not {to!r}")
    return _converter(to).convert(text)


def corpus_script(documents: list[dict], converted_to: str = "keep") -> str:
    """The script a run's text is in: the one it was converted to, else the one its files (described
    as in config.json's ``documents``, each with its ``script`` and ``characters``) are written in,
    "mixed" when files of both make up more than ``MIXED_SHARE`` of it, "none" when none tell."""
    if converted_to in ("simplified", "traditional"):
        return converted_to
    by_script: dict[str, int] = {}
    for document in documents:
        by_script[document.get("script", "none")] = by_script.get(document.get("script", "none"), 0) + \
            document.get("characters", 0)
    if by_script.get("mixed"):
        return "mixed"
    return script_of_counts(by_script.get("simplified", 0), by_script.get("traditional", 0)) \
        if by_script.get("simplified", 0) + by_script.get("traditional", 0) else "none"


def run_script(converted_to: str, info: dict) -> Optional[str]:
    """The script a trained run writes in, which prompts are converted to (None: leave prompts as they
    are). ``converted_to`` is the run's ``--script``; ``info`` its config.json, whose ``script`` says
    what its text was (runs from before scripts were recorded have none)."""
    script = converted_to if converted_to in ("simplified", "traditional") else info.get("script")
    return script if script in ("simplified", "traditional") else None
