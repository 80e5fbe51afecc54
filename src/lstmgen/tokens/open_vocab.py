"""What a closed vocabulary leaves out: the cost of spelling each unknown word.

A model with a vocabulary predicts ``<unk>`` where the text has a word it does not know: it says
"some word I have no id for", never which. Its bits per character therefore leave the characters of
those words uncoded, and a word model (many unknown words) looks better than a character model (few)
by exactly what it never had to predict. The open-vocabulary score adds, at every ``<unk>`` target,
the cost of spelling its actual word under a fixed model of spellings fitted on the training split:

    P(word) = P(length = n) * P(c_1) * ... * P(c_n)

- P(c): how often character c occurs in the training split (counted through the vocabulary's
  training counts); the share V / (N + V) is left for characters it never had (Witten-Bell: V kinds
  of characters seen in N), spread evenly over every other Unicode code point.
- P(length = n): geometric, with the mean length of the rarest tokens the vocabulary kept (for a
  complete vocabulary, the words seen once): unknown words look like rare words, not common ones.
  Every token of a character vocabulary is one character long, so there it costs nothing.

This is a proper distribution over spellings, so the sum is a true code length for the text,
however crude the spelling model (a better one would charge less, never a model nothing). It does
not depend on the model's weights, only on its vocabulary and the text, so it is computed once, on
the CPU, outside the scoring pass. The text's own ``<unk>`` marker (WikiText writes one) is a word
of the vocabulary like any other, predicted as itself: it costs nothing more.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lstmgen.text.vocab import Vocab
from lstmgen.tokens.batches import row_starts

CODE_POINTS = 0x110000  # every Unicode code point a character could be

__all__ = ["Speller", "Unknowns"]


class Speller:
    """The spelling model above, fitted on a vocabulary's training counts.

    Args:
        vocab: a vocabulary with ``counts`` (every vocabulary lstmgen builds has them).
    """

    def __init__(self, vocab: Vocab) -> None:
        counts = vocab.counts or [1] * len(vocab)  # a vocabulary without counts: each token once
        # the tokens the training split had (a hybrid vocabulary also keeps characters it never saw)
        seen = [(token, count) for token, count in zip(vocab.tokens[1:], counts[1:]) if count > 0]
        chars: Counter[str] = Counter()
        for token, count in seen:
            for char in token:
                chars[char] += count
        total, kinds = sum(chars.values()), len(chars)
        unseen_share = kinds / (total + kinds) if total else 1.0
        self._char_nats = {char: -math.log(count / (total + kinds)) for char, count in chars.items()}
        self._unseen_nats = -math.log(unseen_share / (CODE_POINTS - kinds))
        rarest = min((count for _, count in seen), default=0)
        lengths = [len(token) for token, count in seen if count == rarest]
        mean_length = max(1.0, sum(lengths) / len(lengths)) if lengths else 1.0
        self.stop = 1.0 / mean_length  # P(the word ends after this character)

    def nats(self, word: str) -> float:
        """-log P(word): the cost of spelling ``word``, in nats."""
        if word == Vocab.UNK or not word:
            return 0.0
        length_nats = -math.log(self.stop) - (len(word) - 1) * math.log1p(-self.stop) if self.stop < 1 else 0.0
        return length_nats + sum(self._char_nats.get(char, self._unseen_nats) for char in word)


@dataclass
class Unknowns:
    """Where a token stream has ``<unk>`` and what spelling each of those words costs.

    Kept sparse (most tokens are known), so it costs nothing for a corpus of any size.
    """

    positions: np.ndarray  # (K,) int64 positions in the stream of ids, ascending
    nats: np.ndarray  # (K,) float64 spelling cost of the word at each

    @classmethod
    def empty(cls) -> "Unknowns":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64))

    @classmethod
    def of_tokens(cls, tokens: Sequence[str], ids: np.ndarray, speller: Speller) -> "Unknowns":
        """From a stream of tokens and the ids ``vocab.encode`` gave them."""
        positions = np.flatnonzero(np.asarray(ids) == 0)
        return cls(positions.astype(np.int64), np.array([speller.nats(tokens[p]) for p in positions.tolist()]))

    @classmethod
    def of_types(cls, type_ids: np.ndarray, expansions: list[list[str]], table: list[list[int]],
                 speller: Speller, chunk: int = 1 << 22) -> "Unknowns":
        """From a stream of type ids, each type becoming the tokens ``expansions`` lists (ids in ``table``).

        This is the stream ``data.remap(type_ids, table)`` makes, described without making it.
        """
        lengths = np.fromiter((len(t) for t in table), dtype=np.int64, count=len(table))
        # per type, the (offset in its run of tokens, cost) of each of its tokens that is <unk>, flat
        count = np.zeros(len(table), dtype=np.int64)
        offsets: list[int] = []
        costs: list[float] = []
        for kind, (tokens, ids) in enumerate(zip(expansions, table)):
            for offset, (token, idx) in enumerate(zip(tokens, ids)):
                if idx == 0:
                    offsets.append(offset)
                    costs.append(speller.nats(token))
                    count[kind] += 1
        first_cost = np.cumsum(count) - count
        flat_offsets, flat_costs = np.array(offsets, dtype=np.int64), np.array(costs, dtype=np.float64)
        positions: list[np.ndarray] = []
        nats: list[np.ndarray] = []
        out_start = 0
        for start in range(0, len(type_ids), chunk):
            kinds = np.asarray(type_ids[start:start + chunk])
            run_lengths = lengths[kinds]
            first = out_start + np.cumsum(run_lengths) - run_lengths  # where each type's tokens begin
            at = np.flatnonzero(count[kinds])
            per = count[kinds[at]]
            owner = np.repeat(np.arange(len(at)), per)  # one entry per unknown token, as in data.remap
            index = first_cost[kinds[at]][owner] + np.arange(int(per.sum())) - (np.cumsum(per) - per)[owner]
            positions.append(first[at][owner] + flat_offsets[index])
            nats.append(flat_costs[index])
            out_start += int(run_lengths.sum())
        if not positions:
            return cls.empty()
        return cls(np.concatenate(positions).astype(np.int64), np.concatenate(nats).astype(np.float64))

    def scored_nats(self, num_tokens: int, batch_size: int) -> float:
        """The spelling cost of the unknown words that scoring the first ``num_tokens`` of the stream in
        ``batch_size`` rows predicts: all of them but those that begin a row (no context, never scored)."""
        keep = (self.positions < num_tokens) & ~np.isin(self.positions, row_starts(num_tokens, batch_size))
        return float(self.nats[keep].sum())
