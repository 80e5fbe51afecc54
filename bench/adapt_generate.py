"""How much more of a context's own words a continuation uses when the model adapts to the context.

    python bench/adapt_generate.py RUN [--contexts 6] [--context-chars 3000] [--length 300] [--seeds 5]

Contexts are passages of the run's test split (text it never trained on), evenly spaced. A context's
own strings are the 2-4 character strings (no punctuation, no spaces) that occur at least twice in it
and at least 20 times as often, per character, as in the training split: its people's names, places,
turns of phrase. Each context is continued with the same seeds three ways -- without the context,
after the context with no adaptation (the LSTM's state alone carries it), and after it with
``--adapt`` (default both) -- and the script counts, per 1,000 characters written, how many of the
context's own strings occur (each occurrence) and how many distinct ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import unicodedata

import torch

from lstmgen.evaluation.adapt import as_adapt_config
from lstmgen.generation.generate import GenerateConfig, generate
from lstmgen.model.run_dir import load_run

OVER_REPRESENTED = 20.0


def is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


def own_strings(context: str, train: str) -> set[str]:
    """The context's 2-4 character strings seen twice in it and 20 times as often as in training."""
    counts: dict[str, int] = {}
    for n in (2, 3, 4):
        for i in range(len(context) - n + 1):
            piece = context[i : i + n]
            if all(map(is_word_char, piece)):
                counts[piece] = counts.get(piece, 0) + 1
    out = set()
    for piece, count in counts.items():
        if count >= 2:
            rate_here = count / len(context)
            rate_train = train.count(piece) / len(train)
            if rate_here >= OVER_REPRESENTED * rate_train:
                out.add(piece)
    return out


def uses(text: str, strings: set[str]) -> tuple[int, int]:
    """Occurrences of the strings in the text, and how many distinct ones occur."""
    found = {s: text.count(s) for s in strings}
    return sum(found.values()), sum(1 for v in found.values() if v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--contexts", type=int, default=6)
    parser.add_argument("--context-chars", type=int, default=3000)
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--adapt", default="both")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    data = run.prepared()
    joiner = run.tokenizer.joiner
    tokens = list(run.vocab.tokens)
    tokens[run.vocab.unk_id] = "\ufffd"  # <unk>: no letters, so it makes no strings of its own
    train = joiner.join(tokens[i] for i in data.ids["train"])
    test = joiner.join(tokens[i] for i in data.ids["test"])
    step = (len(test) - args.context_chars) // args.contexts
    adapt = as_adapt_config(args.adapt)
    ways = {"no context": None, "context, no adaptation": "off", f"context, adapt {args.adapt}": args.adapt}
    tally = {way: {"occurrences": [], "distinct": []} for way in ways}
    contexts = []
    start = time.perf_counter()
    for k in range(args.contexts):
        begin = test.index("\n", k * step) + 1  # from a paragraph's start
        context = test[begin : begin + args.context_chars]
        strings = own_strings(context, train)
        contexts.append({"offset": begin, "own_strings": len(strings), "examples": sorted(strings)[:12]})
        for seed in range(1, args.seeds + 1):
            config = GenerateConfig(length=args.length, seed=seed, precision="fp32")
            for way, mode in ways.items():
                text = generate(run.model, run.tokenizer, run.vocab, [""], config,
                                context=context if mode is not None else None,
                                adapt=as_adapt_config(mode) if mode is not None else None)[0]
                occurrences, distinct = uses(text, strings)
                tally[way]["occurrences"].append(1000 * occurrences / len(text))
                tally[way]["distinct"].append(1000 * distinct / len(text))
    results = {way: {key: statistics.mean(values) for key, values in t.items()} for way, t in tally.items()}
    for way, r in results.items():
        print(f"{way:<28} {r['occurrences']:6.2f} occurrences and {r['distinct']:5.2f} distinct of the context's "
              f"own strings per 1,000 characters")
    print(f"{args.contexts} contexts of {args.context_chars} characters x {args.seeds} seeds, {args.length} characters "
          f"each; {statistics.mean(c['own_strings'] for c in contexts):.0f} own strings per context on average "
          f"(for example {', '.join(contexts[0]['examples'][:8])}); {time.perf_counter() - start:.0f}s")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"run": args.run, "adapt": adapt.as_dict() if adapt else None, "contexts": contexts,
                       "results": results, "seeds": args.seeds, "length": args.length}, f, ensure_ascii=False,
                      indent=1)


if __name__ == "__main__":
    main()
