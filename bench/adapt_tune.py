"""Choose the adaptation settings on a run's validation split: each candidate's bits per character
against the plain score, on the same tokens.

    python bench/adapt_tune.py RUN [--tokens 30000] [--out tune.json] \
        "dynamic lr=0.1" "dynamic lr=0.3 decay=0.01" "cache flatness=0.5 mix=0.1" ...

Each candidate is a mode followed by AdaptConfig fields (lr, decay, segment, cache_size, flatness,
mix). The defaults of lstmgen.evaluation.adapt.AdaptConfig were chosen with this script
(BENCHMARKS.md, "Adapting to the text read").
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lstmgen.evaluation.adapt import AdaptConfig, score_adapted
from lstmgen.evaluation.score import score_ids
from lstmgen.model.run_dir import load_run


def parse(candidate: str) -> AdaptConfig:
    mode, *pairs = candidate.split()
    fields = {}
    for pair in pairs:
        key, value = pair.split("=")
        fields[key] = int(value) if key in ("segment", "cache_size") else float(value)
    return AdaptConfig(mode=mode, **fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("candidates", nargs="+")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--tokens", type=int, default=30000, help="score the split's first N tokens (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    data = run.prepared()
    ids = data.ids[args.split]
    ids = ids[: args.tokens] if args.tokens else ids
    characters = round(data.characters[args.split] * len(ids) / len(data.ids[args.split]))
    start = time.perf_counter()
    plain = score_ids(run.model, ids, characters=characters)
    rows = [{"candidate": "plain", "bits_per_char": plain.bits_per_char, "perplexity": plain.perplexity,
             "seconds": time.perf_counter() - start}]
    print(f"{'plain':<40} {plain.bits_per_char:.4f} bits/char  ppl {plain.perplexity:8.2f}  {rows[0]['seconds']:6.1f}s")
    for candidate in args.candidates:
        config = parse(candidate)
        start = time.perf_counter()
        score = score_adapted(run.model, ids, config, characters=characters)
        seconds = time.perf_counter() - start
        rows.append({"candidate": candidate, "config": config.as_dict(), "bits_per_char": score.bits_per_char,
                     "perplexity": score.perplexity, "gain_bits_per_char": plain.bits_per_char - score.bits_per_char,
                     "seconds": seconds})
        print(f"{candidate:<40} {score.bits_per_char:.4f} bits/char  ppl {score.perplexity:8.2f}  {seconds:6.1f}s  "
              f"gain {plain.bits_per_char - score.bits_per_char:+.4f}", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"run": args.run, "split": args.split, "tokens": len(ids), "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
