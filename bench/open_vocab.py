"""What each tokenizer's closed score leaves out: the cost of spelling its held-out <unk> words.

    python bench/open_vocab.py ../shared/corpora/sidamingzhu --preset seed --preset default --preset gpu

For each preset, the corpus is split and encoded as training would do it, and the table lists, per
held-out split, the share of tokens that are ``<unk>`` and the bits per character that spelling
those words out adds to any model with that vocabulary (``lstmgen.spelling``: it does not depend on
the weights). A model's open-vocabulary score is its closed one plus this. No training happens.
"""

from __future__ import annotations

import argparse
import datetime
import math

from lstmgen.config import build_config
from lstmgen.data import default_cache_dir
from lstmgen.evaluate import EVAL_ROWS, scored_characters
from lstmgen.pipeline import prepare
from lstmgen.spelling import Speller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--preset", action="append", help="repeatable (default: seed, default)")
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
    print(f"{args.corpus}, {datetime.date.today()}")


if __name__ == "__main__":
    main()
