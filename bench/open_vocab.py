"""What each tokenizer's closed score leaves out: the cost of spelling its held-out <unk> words.

    python bench/open_vocab.py ../shared/corpora/sidamingzhu --preset seed --preset default --preset gpu

For each preset, the corpus is split and encoded as training would do it, and the table lists, per
held-out split, the share of tokens that are ``<unk>`` and the bits per character that spelling
those words out adds to any model with that vocabulary (``lstmgen.tokens.open_vocab``: it does not depend on
the weights). A model's open-vocabulary score is its closed one plus this. No training happens.

    python bench/open_vocab.py ../shared/corpora/sidamingzhu --preset seed --spelling-models

also prices the same <unk> words under two richer spelling models fitted on the vocabulary's
training types (each kept word counted once, as a rare word is a type seen once or so): a character
unigram and a character bigram, each with an end-of-word symbol, interpolated Witten-Bell down to a
uniform share over every Unicode code point. How much less they charge says how much of the open
score's penalty is the crudeness of lstmgen's spelling model rather than the vocabulary's gaps.
"""

from __future__ import annotations

import argparse
import datetime
import math
from collections import Counter

import lstmgen.tokens.prepare
from lstmgen.config import build_config
from lstmgen.evaluation.score import EVAL_ROWS, scored_characters
from lstmgen.text.vocab import Vocab
from lstmgen.tokens.open_vocab import CODE_POINTS, Speller
from lstmgen.tokens.prepare import prepare
from lstmgen.tokens.store import default_cache_dir

END = "\x00"  # the end-of-word symbol: no token of a vocabulary contains it


class TypeSpeller:
    """P(word) as a chain of characters, then END; an order-1 (bigram) or order-0 (unigram) model of
    the vocabulary's training types, interpolated Witten-Bell: bigram -> unigram -> uniform."""

    def __init__(self, vocab: Vocab, *, order: int) -> None:
        self.order = order
        types = [t for t, c in zip(vocab.tokens[1:], (vocab.counts or [1] * len(vocab))[1:]) if c > 0]
        self.unigram: Counter[str] = Counter()
        self.bigram: dict[str, Counter[str]] = {}
        for word in types:
            previous = END  # the start of a word: the same symbol, as a context
            for char in list(word) + [END]:
                self.unigram[char] += 1
                self.bigram.setdefault(previous, Counter())[char] += 1
                previous = char
        self.total, self.kinds = sum(self.unigram.values()), len(self.unigram)
        self.totals = {context: (sum(c.values()), len(c)) for context, c in self.bigram.items()}

    def _unigram(self, char: str) -> float:
        return (self.unigram[char] + self.kinds / CODE_POINTS) / (self.total + self.kinds)

    def _p(self, previous: str, char: str) -> float:
        if self.order == 0 or previous not in self.bigram:
            return self._unigram(char)
        seen, kinds = self.totals[previous]
        return (self.bigram[previous][char] + kinds * self._unigram(char)) / (seen + kinds)

    def nats(self, word: str) -> float:
        if word == Vocab.UNK or not word:
            return 0.0
        chars = list(word) + [END]
        return -sum(math.log(self._p(previous, char)) for previous, char in zip([END] + chars, chars))


def spelling_models(corpus: str, presets: list[str]) -> None:
    """Bits per held-out <unk> under lstmgen's spelling model and the two richer ones above."""
    print("\n| preset | split | `<unk>` | lstmgen's model | type unigram + end | type bigram + end |\n"
          "|---|---|---:|---:|---:|---:|")
    original = lstmgen.tokens.prepare.Speller
    try:
        for preset in presets:
            config = build_config(preset)
            costs = {}
            for name, speller in (("lstmgen", original), ("unigram", lambda v: TypeSpeller(v, order=0)),
                                  ("bigram", lambda v: TypeSpeller(v, order=1))):
                lstmgen.tokens.prepare.Speller = speller  # what prepare's find_unknowns prices the <unk> words with
                data = prepare(corpus, config.data, config.tokenizer, cache_dir=default_cache_dir())
                for split in ("valid", "test"):
                    unknowns = data.unknowns(split)
                    costs[split, name] = (len(unknowns.positions), unknowns.nats.sum() / math.log(2))
            for split in ("valid", "test"):
                count = costs[split, "lstmgen"][0]
                cells = [f"{costs[split, name][1] / max(count, 1):.1f}" for name in ("lstmgen", "unigram", "bigram")]
                print(f"| {preset} | {split} | {count:,} | {' | '.join(cells)} |")
    finally:
        lstmgen.tokens.prepare.Speller = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--preset", action="append", help="repeatable (default: seed, default)")
    parser.add_argument("--spelling-models", action="store_true",
                        help="also price the <unk> words under two richer spelling models")
    args = parser.parse_args()
    print("| preset | tokenizer | vocab | split | tokens | <unk> | spelling cost, bits per <unk> | "
          "bits/char added |\n|---|---|---:|---|---:|---:|---:|---:|")
    lengths = []
    for preset in args.preset or ["seed", "default"]:
        config = build_config(preset)
        data = prepare(args.corpus, config.data, config.tokenizer, cache_dir=default_cache_dir())
        for split in ("valid", "test"):
            tokens, unknowns = len(data.ids[split]), data.unknowns(split)
            nats = unknowns.scored_nats(tokens, EVAL_ROWS)
            characters = scored_characters(data.characters[split], tokens)
            per_word = nats / math.log(2) / max(len(unknowns.positions), 1)
            print(f"| {preset} | {config.tokenizer.tokenizer} | {len(data.vocab):,} | {split} | {tokens:,} | "
                  f"{100 * len(unknowns.positions) / max(tokens, 1):.2f}% | {per_word:.1f} | "
                  f"{nats / math.log(2) / characters:.3f} |")
        lengths.append(f"{preset} {1 / Speller(data.vocab).stop:.2f}")
    print(f"\nmean word length in the spelling model (characters): {', '.join(lengths)}")
    if args.spelling_models:
        spelling_models(args.corpus, args.preset or ["seed", "default"])
    print(f"{args.corpus}, {datetime.date.today()}")


if __name__ == "__main__":
    main()
