"""The vocabulary: token <-> id, built from the training split only, saved as JSON in the run directory.

Id 0 is always ``<unk>``; every token the vocabulary does not know encodes to it. The remaining ids are
ordered by descending training count (ties broken by the token itself), so the same training text always
gives the same ids, and the most frequent tokens get the smallest ids -- which is what the adaptive
softmax's cutoffs assume.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from lstmgen.errors import LstmgenError

__all__ = ["Vocab"]


class Vocab:
    """A fixed list of tokens; a token's id is its position in the list.

    Args:
        tokens: the tokens in id order; ``tokens[0]`` must be ``"<unk>"`` and no token may repeat.
        counts: training count per id (same length as ``tokens``), or None when unknown.
    """

    UNK = "<unk>"

    def __init__(self, tokens: list[str], counts: Optional[list[int]] = None) -> None:
        if not tokens or tokens[0] != self.UNK:
            raise LstmgenError(f"a vocabulary must start with {self.UNK!r}")
        self._tokens: list[str] = list(tokens)
        self._ids: dict[str, int] = {token: idx for idx, token in enumerate(self._tokens)}
        if len(self._ids) != len(self._tokens):
            raise LstmgenError("a vocabulary must not list a token twice")
        if counts is not None and len(counts) != len(self._tokens):
            raise LstmgenError(f"the vocabulary has {len(self._tokens)} tokens but {len(counts)} counts")
        self.counts: Optional[list[int]] = None if counts is None else [int(c) for c in counts]
        self.unk_id: int = 0

    @classmethod
    def build(
        cls,
        token_lists: Iterable[list[str]],
        *,
        min_freq: int = 1,
        max_size: int = 0,
        required: Iterable[str] = (),
    ) -> "Vocab":
        """Count tokens and keep the frequent ones.

        Args:
            token_lists: the tokenised documents of the training split (never valid/test: that leaks).
            min_freq: tokens seen fewer times than this become ``<unk>``.
            max_size: keep at most this many ids, ``<unk>`` included (0: no limit).
            required: tokens to keep however rare, even unseen (``Tokenizer.required_tokens()``: the
                hybrid tokenizer's characters). Under ``max_size`` they are kept before other tokens.

        Returns:
            A vocabulary with ``counts`` set; ``counts[0]`` is how many training tokens map to ``<unk>``
            (literal ``<unk>`` tokens in the data plus the tokens dropped here).
        """
        counter: Counter[str] = Counter()
        for tokens in token_lists:
            counter.update(tokens)
        return cls.from_counts(counter, min_freq=min_freq, max_size=max_size, required=required)

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int],
        *,
        min_freq: int = 1,
        max_size: int = 0,
        required: Iterable[str] = (),
    ) -> "Vocab":
        """Like ``build``, from training counts already made (token -> count)."""
        if min_freq < 1:
            raise LstmgenError("min_freq must be at least 1")
        if max_size < 0 or max_size == 1:
            raise LstmgenError("max_size must be 0 (no limit) or at least 2 (<unk> and one token)")
        counter = dict(counts)
        total = sum(counter.values())
        # WikiText writes its own <unk>: it is our id 0, not a second entry.
        counter.pop(cls.UNK, None)
        must = set(required) - {cls.UNK}

        def by_count(items: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
            return sorted(items, key=lambda kv: (-kv[1], kv[0]))

        if max_size and len(must) > max_size - 1:
            raise LstmgenError(f"a vocabulary of at most {max_size} tokens (--max-vocab) cannot hold the {len(must)} "
                               f"this tokenizer must keep besides <unk> (the hybrid tokenizer keeps every character "
                               f"seen in training, and the newline); allow at least {len(must) + 1}, or 0 for no limit")
        kept = by_count((token, counter.get(token, 0)) for token in must)
        others = by_count(item for item in counter.items() if item[1] >= min_freq and item[0] not in must)
        if max_size:
            others = others[: max_size - 1 - len(kept)]
        kept = by_count(kept + others)
        tokens = [cls.UNK] + [token for token, _ in kept]
        kept_counts = [count for _, count in kept]
        return cls(tokens, [total - sum(kept_counts)] + kept_counts)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"

    @property
    def tokens(self) -> list[str]:
        """The tokens in id order (a copy)."""
        return list(self._tokens)

    def token_to_id(self, token: str) -> int:
        """The id of ``token``, or ``unk_id`` when the vocabulary does not know it."""
        return self._ids.get(token, 0)

    def id_to_token(self, idx: int) -> str:
        """The token with id ``idx``; an id outside the vocabulary is an error."""
        idx = int(idx)
        if not 0 <= idx < len(self._tokens):
            raise LstmgenError(f"token id {idx} is outside the vocabulary (size {len(self._tokens)})")
        return self._tokens[idx]

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """Map tokens to ids.

        Args:
            tokens: any sequence of tokens, millions long if need be.

        Returns:
            An int32 array of shape ``(len(tokens),)``; unknown tokens are 0.
        """
        lookup = self._ids.get
        # fromiter with a known count fills the array in one pass without a temporary list.
        return np.fromiter((lookup(token, 0) for token in tokens), dtype=np.int32, count=len(tokens))

    def decode(self, ids: Any) -> list[str]:
        """Map ids back to tokens.

        Args:
            ids: a list, numpy array or torch tensor of integer ids (any shape; read in row-major order).
        """
        if hasattr(ids, "detach"):  # a torch tensor, possibly on a GPU
            ids = ids.detach().cpu().numpy()
        flat = np.asarray(ids).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self._tokens)):
            raise LstmgenError(f"token ids must lie in [0, {len(self._tokens)})")
        tokens = self._tokens
        return [tokens[idx] for idx in flat.tolist()]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description; ``Vocab.from_dict`` rebuilds the same vocabulary."""
        return {"unk": self.UNK, "tokens": list(self._tokens), "counts": self.counts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Vocab":
        """Rebuild a vocabulary written by ``to_dict``."""
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise LstmgenError("vocab.json is not a vocabulary written by lstmgen (no token list)")
        return cls(data["tokens"], data.get("counts"))
