"""How much held-out text the training split also has, word for word: a leak that flatters a score.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Optional

from lstmgen.config import DataConfig
from lstmgen.errors import LstmgenError
from lstmgen.text.splitting import split_corpus

logger = logging.getLogger(__name__)


MIN_MATCH_LINE = 20  # shorter lines (他笑道：) recur in any novel: finding one in training says nothing


OVERLAP_WARNING = 0.01  # of a held-out split's characters; the four classic novels: 0.34% of the test split


def _lines(text: str, chunk: int = 1 << 24) -> Iterator[str]:
    """The lines of ``text``, split a chunk at a time: matching adds no list of a whole file's lines."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + chunk)
        end = len(text) if end < 0 else end
        yield from text[start:end].split("\n")
        start = end + 1


def _found_in_training(held: dict[str, list[str]], train: list[str]) -> dict[str, tuple[int, int]]:
    """For each group of texts: the characters of its lines of at least ``MIN_MATCH_LINE`` characters,
    and the characters of those that are also a line of ``train``."""
    long_lines = {name: [line for text in texts for line in _lines(text) if len(line) >= MIN_MATCH_LINE]
                  for name, texts in held.items()}
    wanted = set().union(*long_lines.values())
    found = {line for text in train for line in _lines(text) if line in wanted}
    return {name: (sum(map(len, lines)), sum(len(line) for line in lines if line in found))
            for name, lines in long_lines.items()}


def share_in_training(texts: list[str], corpus: Optional[str], data: DataConfig) -> Optional[float]:
    """How much of ``texts`` the training split of ``corpus`` (split as ``data`` says) has word for word.

    Counts the characters of the lines of at least ``MIN_MATCH_LINE`` characters that are also a line
    of the training split: a chapter copied out of a novel the run trained on is found whatever the
    file is called. None when the corpus is not on this machine.
    """
    if not corpus or not Path(corpus).exists():
        return None
    try:
        train = split_corpus(corpus, data, quiet=True)[0]["train"]
    except LstmgenError:  # the corpus changed so much it no longer reads: nothing to compare with
        return None
    total, seen = _found_in_training({"texts": texts}, train)["texts"]
    return seen / total if total else 0.0


def held_out_in_training(texts: dict[str, list[str]]) -> dict[str, float]:
    """For valid and test: the share of their characters that is in lines (of at least
    ``MIN_MATCH_LINE`` characters) the training split also has, word for word.

    A lower bound on how much of the held-out text the model will have trained on. Two copies of one
    novel hold out the same end and leak little; a complete works beside its single novels leaks a lot
    (the end of a novel, held out, is in the middle of the works, trained on).
    """
    return shares_found_in({name: texts[name] for name in ("valid", "test")}, texts["train"])


def shares_found_in(held: dict[str, list[str]], train: list[str]) -> dict[str, float]:
    """For each group of ``held`` texts: the share of its characters in lines (of at least
    ``MIN_MATCH_LINE`` characters) that ``train`` also has, word for word."""
    found = _found_in_training(held, train)
    return {name: seen / max(1, sum(map(len, held[name]))) for name, (_, seen) in found.items()}


def report_overlap(overlap: dict[str, float]) -> None:
    """Log what ``held_out_in_training`` found: a warning when its scores cannot be trusted."""
    worst = max(overlap, key=lambda name: overlap[name], default=None)
    if worst is not None and overlap[worst] >= OVERLAP_WARNING:
        logger.warning("%.1f%% of the %s text is also in the training text, word for word (lines of %d or more "
                       "characters), so its scores overstate how well the model does on text it never saw. Is the "
                       "same text in two files (a complete works beside its single novels, say)?",
                       100 * overlap[worst], worst, MIN_MATCH_LINE)
    elif any(overlap.values()):
        logger.info("held-out text also in the training text, word for word: %s",
                    ", ".join(f"{name} {100 * share:.2f}%" for name, share in overlap.items()))
