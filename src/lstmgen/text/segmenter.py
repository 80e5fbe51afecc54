"""jieba word segmentation: one line at a time, the dictionary loaded once, in worker processes for big inputs.

Segmentation follows jieba (accurate mode with HMM). When the optional package ``rjieba`` (the Rust port
of the same algorithm and dictionary) is installed it does the segmenting, many times faster than
jieba; lines where the two are known to disagree (extended CJK characters, ``a-b``/``1.2.3`` style runs)
are still cut by jieba (bench/segment.py measures both speed and agreement). Without rjieba, jieba itself runs, in one process per core for large inputs (forked
on Linux, so workers inherit the loaded dictionary; spawned elsewhere, so scripts need the usual
``if __name__ == "__main__":`` guard there). ``WordTokenizer`` and ``HybridTokenizer`` build on this.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Optional

from lstmgen.errors import LstmgenError

_LINE_JOIN = "\n"  # a worker's words of one line come back joined by this (no line holds one)

# A user-dictionary line is "word [count] [part-of-speech]", jieba's own format.
_USER_WORD_COUNT = re.compile(r"[0-9]+")
_USER_WORD_TAG = re.compile(r"[a-z]+")

# Lines where rjieba and jieba are known to differ: rjieba counts extended CJK ranges as Chinese (jieba
# does not), and glues ASCII runs joined by . - _ etc. ("v1.2.3") that jieba splits. Such lines go to jieba.
_RJIEBA_DIFFERS = re.compile(
    r"[A-Za-z0-9][+#&._%\-]+[A-Za-z0-9]|[\u3400-\u4DBF\u9FD6-\u9FFF\uF900-\uFAFF\U00020000-\U0003FFFF]"
)

# Below this many characters, starting worker processes costs more than it saves. rjieba never uses
# them: shipping its words back from a worker costs more than cutting them (bench/segment.py).
POOL_MIN_CHARS = {"jieba": 200_000, "rjieba": float("inf")}


def load_user_words(path: str) -> list[list[Any]]:
    """Read a jieba user dictionary: one ``word [count] [part-of-speech]`` per line, UTF-8.

    Returns:
        ``[[word, count or None, tag or None], ...]`` in file order, ready for JSON.

    Raises:
        LstmgenError: the file is missing or not UTF-8.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise LstmgenError(f"cannot read the user dictionary {path}: {error.strerror or error}")
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        raise LstmgenError(f"the user dictionary {path} must be UTF-8")
    entries: list[list[Any]] = []
    for line in text.splitlines():
        parts = line.strip().split(" ")
        count: Optional[int] = None
        tag: Optional[str] = None
        if len(parts) > 1 and _USER_WORD_TAG.fullmatch(parts[-1]):
            tag = parts.pop()
        if len(parts) > 1 and _USER_WORD_COUNT.fullmatch(parts[-1]):
            count = int(parts.pop())
        word = " ".join(parts)
        if word:
            entries.append([word, count, tag])
    return entries


class Segmenter:
    """jieba word segmentation of single lines, with its dictionary loaded once, on first use.

    ``backend`` is "rjieba" (fast, optional) or "jieba"; with rjieba, jieba itself is loaded only if a
    line that rjieba would cut differently turns up.
    """

    def __init__(self, user_words: list[list[Any]], backend: str) -> None:
        self.user_words = user_words
        self.backend = backend
        self._jieba: Any = None
        self._rjieba: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # A spawned worker loads its own dictionary rather than receiving a pickled one.
        return {"user_words": self.user_words, "backend": self.backend}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["user_words"], state["backend"])  # type: ignore[misc]

    def _load_jieba(self) -> Any:
        if self._jieba is None:
            import jieba

            # jieba announces "Building prefix dict..." on its own stderr handler: keep it quiet.
            logging.getLogger("jieba").setLevel(logging.WARNING)
            engine = jieba.Tokenizer()
            engine.initialize()
            for word, count, tag in self.user_words:
                engine.add_word(word, count, tag)
            self._jieba = engine
        return self._jieba

    def _load_rjieba(self) -> Any:
        if self._rjieba is None:
            import rjieba

            engine = rjieba.Jieba()
            for word, count, tag in self.user_words:
                engine.add_word(word, count, tag)
            self._rjieba = engine
        return self._rjieba

    def load(self) -> None:
        """Load the dictionary now (before forking workers, so they inherit it)."""
        if self.backend == "rjieba":
            self._load_rjieba()
        else:
            self._load_jieba()

    def cut(self, line: str) -> list[str]:
        """jieba's words of one line (no newline in it), spaces kept as tokens."""
        if self.backend == "rjieba" and not _RJIEBA_DIFFERS.search(line):
            return self._load_rjieba().cut(line, True)
        return self._load_jieba().lcut(line)

    def cut_lines(self, lines: list[str], workers: int) -> dict[str, list[str]]:
        """Segment each distinct line once, in worker processes when there is enough text.

        Returns:
            line -> its words, for every line given.
        """
        distinct = list(dict.fromkeys(lines))
        chars = sum(map(len, distinct))
        workers = workers or os.cpu_count() or 1
        if workers < 2 or len(distinct) < 2 * workers or chars < POOL_MIN_CHARS[self.backend]:
            return {line: self.cut(line) for line in distinct}
        self.load()
        # Several chunks per worker keep both busy to the end; each chunk is contiguous text.
        chunks = _balanced_chunks(distinct, 4 * workers)
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        result: dict[str, list[str]] = {}
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(self,)) as pool:
            for chunk, joined in zip(chunks, pool.map(_worker_cut, chunks)):
                for line, words in zip(chunk, joined):
                    result[line] = words.split(_LINE_JOIN)
        return result


def _balanced_chunks(lines: list[str], count: int) -> list[list[str]]:
    """Split lines, in order, into about ``count`` runs holding similar numbers of characters."""
    target = max(1, sum(map(len, lines)) // count)
    chunks: list[list[str]] = [[]]
    size = 0
    for line in lines:
        if size >= target:
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line)
    return chunks


# The one piece of process state here: each worker process's segmenter, so that it loads (or, when
# forked, inherits) its dictionary once rather than once per chunk.
_worker_segmenter: Optional[Segmenter] = None


def _worker_init(segmenter: Segmenter) -> None:
    global _worker_segmenter
    _worker_segmenter = segmenter


def _worker_cut(lines: list[str]) -> list[str]:
    # Words come back "\n"-joined: one string per line pickles far faster than millions of small ones.
    assert _worker_segmenter is not None
    return [_LINE_JOIN.join(_worker_segmenter.cut(line)) for line in lines]


def default_backend() -> str:
    try:
        import rjieba  # noqa: F401
    except ImportError:
        return "jieba"
    return "rjieba"
