"""How fast is the first word segmentation of a corpus, and does it give jieba's words?

Reads every .txt under a folder (UTF-8, else GB18030), removes CRLF, strips lines and drops blank ones,
then times:
  1. single-process ``jieba.lcut`` line by line (the reference; its dictionary load timed apart);
  2. ``WordTokenizer.tokenize_many`` with each available segmenter and worker count, from a fresh
     tokenizer, so the time includes loading the dictionary -- what a first run pays;
and counts the lines on which each gives exactly jieba's words.

    python3 bench/segment.py                       # the four classic novels
    python3 bench/segment.py --corpus DIR --workers 1 2
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from lstmgen.text.tokenizers import NEWLINE, WordTokenizer

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpora" / "sidamingzhu"


def read_lines(folder: Path) -> list[str]:
    """Non-blank, stripped lines of every .txt file in the folder, in file-name order."""
    lines: list[str] = []
    for path in sorted(folder.glob("*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("gb18030")
        lines.extend(line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip())
    return lines


def split_by_line(tokens: list[str]) -> list[list[str]]:
    """Token list of newline-joined lines -> one word list per line."""
    result: list[list[str]] = [[]]
    for token in tokens:
        if token == NEWLINE:
            result.append([])
        else:
            result[-1].append(token)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import jieba

    logging.getLogger("jieba").setLevel(logging.WARNING)
    lines = read_lines(args.corpus)
    print(f"corpus: {args.corpus.resolve()}: {len(lines)} lines, {sum(map(len, lines)):,} characters, "
          f"{len(set(lines))} distinct lines")

    start = time.perf_counter()
    reference_tokenizer = jieba.Tokenizer()
    reference_tokenizer.initialize()
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reference = [reference_tokenizer.lcut(line) for line in lines]
    jieba_seconds = time.perf_counter() - start
    print(f"jieba.lcut, one process: {jieba_seconds:.2f} s (+ {load_seconds:.2f} s dictionary load)")

    try:
        import rjieba  # noqa: F401

        backends = ["rjieba", "jieba"]
    except ImportError:
        backends = ["jieba"]
        print("rjieba is not installed: measuring jieba only (pip install rjieba)")
    text = NEWLINE.join(lines)
    for backend in backends:
        for workers in args.workers:
            start = time.perf_counter()
            tokens = WordTokenizer(backend=backend).tokenize_many([text], workers=workers)[0]
            seconds = time.perf_counter() - start
            words = split_by_line(tokens)
            same = sum(ours == theirs for ours, theirs in zip(words, reference))
            print(f"{backend:7s} workers={workers}: {seconds:.2f} s incl. dictionary load "
                  f"({jieba_seconds / seconds:.1f}x faster than jieba.lcut), "
                  f"same words on {same}/{len(lines)} lines = {100 * same / len(lines):.3f}%")


if __name__ == "__main__":
    main()
