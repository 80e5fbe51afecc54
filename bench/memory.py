"""Peak memory of training on a big corpus: the token stream is memory-mapped, the text is let go.

    python bench/memory.py --megabytes 1024

Writes a generated corpus of that many megabytes (UTF-8 Chinese-like text: random common CJK
characters in lines of 20-200 characters; no third-party text), then runs ``lstmgen train`` on it in
a child process for ``--seconds`` of training and reports the child's peak resident set size
(ru_maxrss, which also counts the pages of the memory-mapped token file that were touched).
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_corpus(path: Path, megabytes: int, seed: int = 0) -> int:
    """Write about ``megabytes`` MB of generated text; returns the number of characters."""
    rng = np.random.default_rng(seed)
    # Zipf-like choice among 3,500 code points from the CJK block: a few are common, most are rare.
    weights = 1.0 / np.arange(1, 3501)
    weights /= weights.sum()
    target = megabytes * 2**20
    written = chars = 0
    with open(path, "wb") as f:
        while written < target:
            codes = (0x4E00 + rng.choice(3500, size=4_000_000, p=weights)).astype(np.uint32)
            line_ends = np.cumsum(rng.integers(20, 200, size=len(codes) // 20))
            codes[line_ends[line_ends < len(codes)]] = ord("\n")
            data = codes.tobytes().decode("utf-32-le").encode("utf-8")
            f.write(data)
            written += len(data)
            chars += len(codes)
    return chars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--seconds", type=int, default=30, help="training time after the data is ready")
    parser.add_argument("--keep", help="write the corpus here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lstmgen-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "big.txt"
    if not corpus.exists():
        start = time.perf_counter()
        chars = write_corpus(corpus, args.megabytes)
        print(f"wrote {corpus.stat().st_size / 2**20:,.0f} MB ({chars:,} characters) in "
              f"{time.perf_counter() - start:.0f}s", flush=True)
    first = not (folder / "cache").exists()  # with --keep, a second run starts from the cache
    if (folder / "run").exists():  # a kept folder's run of before: each measurement trains afresh
        import shutil

        shutil.rmtree(folder / "run")
    env = {**os.environ, "LSTMGEN_CACHE": str(folder / "cache")}
    cmd = [sys.executable, "-m", "lstmgen", "train", str(corpus), "--out", str(folder / "run"),
           "--tokenizer", "char", "--hidden-size", "256", "--time-budget", f"{args.seconds}s",
           "--valid-fraction", "0.0005", "--test-fraction", "0.0005", "--eval-tokens", "100000"]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"corpus {corpus.stat().st_size / 2**20:,.0f} MB: peak RSS of `lstmgen train` {peak_mb:,.0f} MB, "
          f"{time.perf_counter() - start:.0f}s in all "
          f"({'first run: reading, segmenting, caching' if first else 'a cached start'}), "
          f"{os.cpu_count()}-core CPU, {datetime.date.today()}")


if __name__ == "__main__":
    main()
