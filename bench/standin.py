"""A small copy of the GPU regime of issue 7.7 that runs on a CPU: the stand-in corpus, written out.

    python bench/standin.py ../shared/corpora/sidamingzhu /tmp/standin
    lstmgen train /tmp/standin/train --valid /tmp/standin/valid --test /tmp/standin/test --preset gpu \\
        --embed-size 96 --hidden-size 288 --batch-size 128 --seq-len 64 --epochs 58 --threads 1 \\
        --eval-tokens 20000 --eval-every 0 --save-every 0 --device cpu [variant]

The H100 run of the GPU preset saw 2.7M training characters 58 times in 3 minutes, with 13
parameters per training character, and was limited by what it could generalise from them. This
keeps those proportions at a size a 2-core CPU trains in about 15 minutes: from every novel, as
``read_corpus`` reads it (normalised, adverts dropped), the training text is its first 27,000
characters, the validation text characters 100,000-115,000, the test text 200,000-215,000 (other
chapters, as the real split holds out the end of every novel); then embed 96 x hidden 288 (1:3 as on
the H100, 1.47M parameters) for 58 epochs. Fixed epochs, not a time budget, so two runs sharing the
CPU score what each would alone. Each split is written as one UTF-8 file per novel; slices end
where they end, mid-paragraph if need be.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lstmgen.text.reading import read_corpus

SLICES = {"train": (0, 27_000), "valid": (100_000, 115_000), "test": (200_000, 215_000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("out")
    args = parser.parse_args()
    documents = read_corpus(args.corpus)
    for split, (start, end) in SLICES.items():
        folder = Path(args.out) / split
        folder.mkdir(parents=True, exist_ok=True)
        for document in documents:
            (folder / Path(document.name).name).write_text(document.text[start:end], encoding="utf-8")
        size = sum(len(d.text[start:end]) for d in documents)
        print(f"{folder}: {len(documents)} files, {size:,} characters")


if __name__ == "__main__":
    main()
