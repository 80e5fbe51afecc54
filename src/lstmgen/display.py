"""Aligned text tables for the terminal (``lstmgen compare``, ``lstmgen cache``)."""

from __future__ import annotations

import unicodedata
from typing import Sequence


def align(rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """One line per row, its cells padded to their column's width and two spaces apart; the columns
    in ``right`` (indexes) aligned right, the others left. Widths count what a terminal shows: two
    columns for each wide (CJK) character, so a Chinese run or corpus name keeps its table straight."""
    widths = [max(width(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(" " * (w - width(cell)) + cell if i in right else cell + " " * (w - width(cell))
                      for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]


def width(text: str) -> int:
    """Columns a terminal gives the text: two for each wide (CJK) character."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
