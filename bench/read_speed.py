"""How long reading text takes: the four classic novels (read, clean, split), one 20-million-character
line through ``normalize_text``, and a 50 MB file without line breaks read and split.

    python bench/read_speed.py [--corpus ../shared/corpora/sidamingzhu] [--repeats 5]

Each case runs ``--repeats`` times in this process; the table gives the fastest and the median. Reading
is linear in the text's size, which is what the two generated cases show (their time per million
characters should match the novels'). Nothing here writes to the token cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lstmgen.config import DataConfig  # noqa: E402
from lstmgen.text.cleaning import normalize_text
from lstmgen.text.reading import read_corpus
from lstmgen.text.splitting import split_corpus, split_documents

REPO = Path(__file__).resolve().parents[1]


def timed(work: Callable[[], int], repeats: int) -> tuple[float, float, int]:
    """Fastest and median seconds of ``work`` (which returns the characters it handled), and those characters."""
    seconds, characters = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        characters = work()
        seconds.append(time.perf_counter() - start)
    return min(seconds), statistics.median(seconds), characters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpora" / "sidamingzhu"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    def novels() -> int:
        texts = [d.text for d in read_corpus(args.corpus)]
        split_documents(texts)
        return sum(map(len, texts))

    def one_line() -> int:
        text, _ = normalize_text("\u3000" + "字" * 20_000_000 + "\r\n")
        return len(text)

    cases = [("four classics: read, clean, split", novels), ("20M characters on one line: normalize", one_line)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one-line.txt"
        with open(path, "w", encoding="utf-8") as f:
            paragraph = "郭靖说道：“江湖上的事，你不用管。”黄蓉笑道，拔出长剑，望着桃花岛的月光。" * 20
            while f.tell() < 50 * 2**20:
                f.write(paragraph)

        def fifty_mb() -> int:
            texts, described = split_corpus(path, DataConfig())
            return described[0]["characters"]

        cases.append(("50 MB file, no line breaks: read, split", fifty_mb))
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; {args.repeats} repeats\n")
        print("| case | characters | fastest s | median s | s per M characters |")
        print("|---|---:|---:|---:|---:|")
        for name, work in cases:
            fastest, median, characters = timed(work, args.repeats)
            print(f"| {name} | {characters:,} | {fastest:.3f} | {median:.3f} | {fastest / characters * 1e6:.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
