"""Text -> tokens and back: characters, jieba words, hybrid (frequent words + characters), whitespace.

Text arriving here is normalised (LF only, one paragraph per line), and ``"\\n"`` is a token of its own in
every tokenizer, so a model learns where paragraphs end. For char, word and hybrid,
``detokenize(tokenize(text)) == text``; for whitespace it holds up to runs of spaces.

Words come from jieba's segmentation, through ``lstmgen.text.segmenter`` (rjieba when installed).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

from lstmgen.errors import LstmgenError
from lstmgen.text.segmenter import Segmenter, default_backend, load_user_words

if TYPE_CHECKING:
    from lstmgen.config import TokenizerConfig

__all__ = [
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "HybridTokenizer",
    "WhitespaceTokenizer",
    "tokenizer_from_dict",
    "build_tokenizer",
    "load_user_words",
]

logger = logging.getLogger(__name__)

NEWLINE = "\n"
FORMAT_VERSION = 1


class Tokenizer:
    """Base class: splits normalised text into string tokens and joins them back.

    Attributes:
        kind: "char", "word", "hybrid" or "whitespace"; the key in ``tokenizer.json``.
        joiner: what goes between tokens when detokenizing ("" for Chinese kinds, " " for whitespace).
    """

    kind: str = ""
    joiner: str = ""

    def tokenize(self, text: str) -> list[str]:
        """Split one normalised text into tokens; every ``"\\n"`` in it becomes a ``"\\n"`` token."""
        raise NotImplementedError

    def tokenize_many(self, texts: list[str], *, workers: int = 0) -> list[list[str]]:
        """Tokenize several texts; the same result as ``[tokenize(t) for t in texts]``.

        Args:
            texts: normalised texts (documents or splits).
            workers: processes to use where that pays (jieba); 0 means one per CPU core.
        """
        return [self.tokenize(text) for text in texts]

    def fit(self, texts: list[str], *, workers: int = 0) -> None:
        """Learn from the training split; only the hybrid tokenizer learns anything."""

    def detokenize(self, tokens: list[str]) -> str:
        """Join tokens back into text."""
        return self.joiner.join(tokens)

    def required_tokens(self) -> list[str]:
        """Tokens the vocabulary must hold even if training never produced them alone.

        Pass them to ``Vocab.build(..., required=...)``. Only the hybrid tokenizer has any: every
        character seen in training, since a character that only occurred inside a kept word (狐 in 令狐冲)
        would otherwise be unknown when a prompt spells out a new name with it.
        """
        return []

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description; ``tokenizer_from_dict`` rebuilds an identical tokenizer."""
        return {"kind": self.kind, "format": FORMAT_VERSION}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CharTokenizer(Tokenizer):
    """Every character is a token, spaces and newlines included."""

    kind = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(text)


class WhitespaceTokenizer(Tokenizer):
    """For text that is already tokenised, like WikiText-2: words are what lies between spaces.

    Every newline of the text is a ``"\\n"`` token (lines are joined by them; a text ending in a newline
    ends in one), so ``"a b\\nc\\n"`` -> ``["a", "b", "\\n", "c", "\\n"]``. Detokenizing puts one space
    between words and none around newlines: runs of spaces (and spaces at a line's ends) are not restored.
    """

    kind = "whitespace"
    joiner = " "

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for number, line in enumerate(text.split(NEWLINE)):
            if number:
                tokens.append(NEWLINE)
            tokens.extend(line.split())
        return tokens

    def detokenize(self, tokens: list[str]) -> str:
        lines: list[list[str]] = [[]]
        for token in tokens:
            if token == NEWLINE:
                lines.append([])
            else:
                lines[-1].append(token)
        return NEWLINE.join(" ".join(words) for words in lines)


class WordTokenizer(Tokenizer):
    """jieba words (accurate mode, HMM for unknown words); spaces and newlines are tokens too.

    Args:
        user_dict: a jieba user dictionary file; its words are read now and kept in ``to_dict``, so a
            saved tokenizer needs the file no more.
        user_words: already-read entries (``[[word, count or None, tag or None], ...]``), from a saved
            tokenizer; used instead of ``user_dict``.
        backend: "rjieba", "jieba", or None for rjieba when it is installed.
    """

    kind = "word"

    def __init__(
        self,
        user_dict: Optional[str] = None,
        *,
        user_words: Optional[list[list[Any]]] = None,
        backend: Optional[str] = None,
    ) -> None:
        if user_words is None:
            user_words = load_user_words(user_dict) if user_dict else []
        self.user_dict = user_dict
        self.user_words = [list(entry) for entry in user_words]
        backend = backend or default_backend()
        if backend not in ("rjieba", "jieba"):
            raise LstmgenError(f"unknown segmenter {backend!r}: use rjieba or jieba")
        self._segmenter = Segmenter(self.user_words, backend)
        # Lines segmented by fit(), reused by the tokenize_many() of the same split that usually follows.
        self._fit_words: dict[str, list[str]] = {}

    @property
    def backend(self) -> str:
        """The segmenter in use: "rjieba" or "jieba"."""
        return self._segmenter.backend

    def words_to_tokens(self, words: list[str]) -> list[str]:
        """Hook for subclasses: tokens for the words of one line."""
        return words

    def _segment(self, texts: list[str], workers: int) -> tuple[list[list[str]], dict[str, list[str]]]:
        """Each text's lines, and every distinct line's jieba words."""
        lines_of = [text.split(NEWLINE) for text in texts]
        known = self._fit_words
        todo = [line for lines in lines_of for line in lines if line and line not in known]
        words_of = self._segmenter.cut_lines(todo, workers) if todo else {}
        words_of.update((line, known[line]) for lines in lines_of for line in lines if line in known)
        return lines_of, words_of

    def tokenize(self, text: str) -> list[str]:
        return self._tokenize_texts([text], workers=1)[0]

    def tokenize_many(self, texts: list[str], *, workers: int = 0) -> list[list[str]]:
        result = self._tokenize_texts(texts, workers)
        self._fit_words = {}  # the split fit() saw has been tokenized: free its words
        return result

    def _tokenize_texts(self, texts: list[str], workers: int) -> list[list[str]]:
        lines_of, words_of = self._segment(texts, workers)
        tokens_of_line: dict[str, list[str]] = {line: self.words_to_tokens(words) for line, words in words_of.items()}
        result = []
        for lines in lines_of:
            tokens: list[str] = []
            for number, line in enumerate(lines):
                if number:
                    tokens.append(NEWLINE)
                if line:
                    tokens.extend(tokens_of_line[line])
            result.append(tokens)
        return result

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        # The segmenter is recorded so a loaded run can say when it segments with a different one.
        data.update(user_dict=self.user_dict, user_words=self.user_words, segmenter=self.backend)
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(user_words={len(self.user_words)}, backend={self.backend!r})"


class HybridTokenizer(WordTokenizer):
    """Frequent jieba words stay whole; every other word is spelled out as its characters.

    So no character seen in training is ever unknown, and a prompt with new names still works.
    ``fit`` on the training split decides which words are frequent.

    Args:
        min_count: a word seen at least this often in training stays whole.
        kept_words: the words to keep whole (from a saved tokenizer); None until ``fit``.
        characters: the training split's characters (from a saved tokenizer); see ``required_tokens``.
        user_dict, user_words, backend: as for ``WordTokenizer``.
    """

    kind = "hybrid"

    def __init__(
        self,
        min_count: int = 20,
        *,
        kept_words: Optional[list[str]] = None,
        characters: str = "",
        user_dict: Optional[str] = None,
        user_words: Optional[list[list[Any]]] = None,
        backend: Optional[str] = None,
    ) -> None:
        super().__init__(user_dict, user_words=user_words, backend=backend)
        if min_count < 1:
            raise LstmgenError("the hybrid tokenizer's min_count must be at least 1")
        self.min_count = min_count
        self.kept_words: Optional[frozenset[str]] = None if kept_words is None else frozenset(kept_words)
        self.characters: str = characters  # every character of the training split, sorted

    def fit(self, texts: list[str], *, workers: int = 0) -> None:
        """Count jieba words in the training texts; those seen ``min_count`` times or more stay whole."""
        lines_of, words_of = self._segment(texts, workers)
        line_counts: dict[str, int] = {}
        for lines in lines_of:
            for line in lines:
                if line:
                    line_counts[line] = line_counts.get(line, 0) + 1
        word_counts: dict[str, int] = {}
        for line, times in line_counts.items():
            for word in words_of[line]:
                word_counts[word] = word_counts.get(word, 0) + times
        self.fit_counts(word_counts)
        self._fit_words = words_of

    def fit_counts(self, word_counts: dict[str, int]) -> None:
        """Fit from jieba word counts of the training split (what ``fit`` counts itself)."""
        # a single character is the same token either way
        self.kept_words = frozenset(w for w, c in word_counts.items() if len(w) > 1 and c >= self.min_count)
        seen: set[str] = set()
        for word, count in word_counts.items():
            if count > 0:
                seen.update(word)
        self.characters = "".join(sorted(seen - {NEWLINE}))

    def required_tokens(self) -> list[str]:
        return [*self.characters, NEWLINE]  # the newline is a token of its own, never spelled

    def words_to_tokens(self, words: list[str]) -> list[str]:
        kept = self.kept_words
        assert kept is not None
        tokens: list[str] = []
        for word in words:
            if len(word) == 1 or word in kept:
                tokens.append(word)
            else:
                tokens.extend(word)
        return tokens

    def _tokenize_texts(self, texts: list[str], workers: int) -> list[list[str]]:
        if self.kept_words is None:
            raise LstmgenError("the hybrid tokenizer must be fitted on the training split before it tokenizes")
        return super()._tokenize_texts(texts, workers)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(
            min_count=self.min_count,
            kept_words=None if self.kept_words is None else sorted(self.kept_words),
            characters=self.characters,
        )
        return data


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from ``Tokenizer.to_dict()`` output (e.g. a run's ``tokenizer.json``)."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "char":
        return CharTokenizer()
    if kind == "whitespace":
        return WhitespaceTokenizer()
    if kind in ("word", "hybrid"):
        backend = default_backend()
        if data.get("segmenter") and data["segmenter"] != backend:
            logger.warning(
                "this tokenizer was built with %s but segments with %s here; the two agree on over 99.9%% "
                "of lines (install the same one for identical words)", data["segmenter"], backend,
            )
        options = {"user_dict": data.get("user_dict"), "user_words": data.get("user_words") or [], "backend": backend}
        if kind == "word":
            return WordTokenizer(**options)
        return HybridTokenizer(
            int(data.get("min_count", 20)),
            kept_words=data.get("kept_words"),
            characters=data.get("characters", ""),
            **options,
        )
    raise LstmgenError(f"tokenizer.json names an unknown tokenizer kind {kind!r}")


def build_tokenizer(config: "TokenizerConfig") -> Tokenizer:
    """A fresh tokenizer from the settings (the hybrid one still needs ``fit``)."""
    if config.tokenizer == "char":
        return CharTokenizer()
    if config.tokenizer == "whitespace":
        return WhitespaceTokenizer()
    if config.tokenizer == "word":
        return WordTokenizer(config.user_dict)
    if config.tokenizer == "hybrid":
        return HybridTokenizer(config.hybrid_min_count, user_dict=config.user_dict)
    raise LstmgenError(f"unknown tokenizer {config.tokenizer!r}")
