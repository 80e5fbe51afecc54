"""Quality per minute: train each contender for the same wall-clock budget on the same split, side by side.

    python bench/budget.py ../shared/corpora/sidamingzhu --minutes 10 \
        --contender seed --contender default --contender "small:default,hidden_size=256"

A contender is ``NAME:PRESET[,field=value,...]`` (or just a preset name; a field without a value
is a switch, like ``locked_dropout``); any other flag
(``--threads 2``) is passed to every contender. Each one trains in its own
process (so peak memory is its own) with ``--time-budget``; the table lists characters/s and
tokens/s, steps, epochs, peak memory, the best validation score and when it came, and held-out test
perplexity and bits per character, closed (as
the models score it) and open (every ``<unk>`` word also spelled out: ``lstmgen.spelling``, what makes
a word vocabulary and a character one comparable). ``--json FILE``
also saves the rows, after every contender. A contender that fails (a NaN, out of memory) gets a row
saying so, the others still run, and the exit code is 1. Results belong in BENCHMARKS.md with the
command and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


def parse_contender(text: str) -> tuple[str, str, list[str]]:
    """"small:default,hidden_size=256,locked_dropout" -> ("small", "default", ["--hidden-size", "256",
    "--locked-dropout"]): a setting without a value is a switch."""
    name, _, spec = text.partition(":") if ":" in text else (text, "", text)
    preset, *settings = spec.split(",")
    flags: list[str] = []
    for setting in settings:
        key, equals, value = setting.partition("=")
        flags += ["--" + key.strip().replace("_", "-")] + ([value.strip()] if equals else [])
    return name, preset, flags


def run_contender(corpus: str, name: str, preset: str, flags: list[str], minutes: float, out: Path,
                  extra: list[str]) -> dict:
    run_dir = out / name
    cmd = [sys.executable, "-m", "lstmgen", "-q", "train", corpus, "--preset", preset, "--out", str(run_dir),
           "--time-budget", f"{minutes * 60:.0f}s", "--epochs", "1000", *extra, *flags]
    print("$", " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    described = {"contender": name, "preset": preset, "flags": " ".join(flags)}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()] \
        if (run_dir / "metrics.jsonl").exists() else []
    if code != 0 or not records or records[-1].get("split") != "test":  # a NaN, out of memory: the others go on
        return {**described, "failed": f"exit code {code}"}
    test = records[-1]
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    chars_per_token = config["split_characters"]["train"] / max(config["split_tokens"]["train"], 1)
    valid = [r for r in records if "valid_bits_per_char" in r]
    best = min(valid, key=lambda r: r["valid_bits_per_char"]) if valid else {}
    return {
        **described,
        "best_valid_bits_per_char": best.get("valid_bits_per_char"), "best_valid_seconds": best.get("seconds"),
        "epochs": valid[-1].get("epoch") if valid else None,  # the last validation is at the last step
        "tokens_per_s": test["tokens_per_s"], "chars_per_s": test["tokens_per_s"] * chars_per_token,
        "steps": test["step"], "tokens": test["tokens"], "seconds": test["seconds"],
        "peak_memory_mb": test["peak_memory_mb"], "parameters": config["parameters"],
        "vocab_size": config["vocab_size"], "test_perplexity": test.get("test_perplexity"),
        "test_bits_per_char": test.get("test_bits_per_char"), "test_oov_rate": test.get("test_oov_rate"),
        "test_open_bits_per_char": test.get("test_open_bits_per_char"),
    }


def table(rows: list[dict]) -> str:
    head = ("| contender | params | vocab | chars/s | tokens/s | steps | epochs | peak MB | best valid bits/char (s) "
            "| test ppl | test bits/char | open bits/char |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")

    def line(r: dict) -> str:
        if "failed" in r:
            return f"| {r['contender']} | failed: {r['failed']} |" + " |" * 10 + "\n"
        best = (f"{r['best_valid_bits_per_char']:.3f} ({r['best_valid_seconds']:.0f})"
                if r.get("best_valid_bits_per_char") is not None else "")
        epochs = f"{r['epochs']:.1f}" if r.get("epochs") is not None else ""
        return (f"| {r['contender']} | {r['parameters'] / 1e6:.1f}M | {r['vocab_size']:,} | {r['chars_per_s']:,.0f} | "
                f"{r['tokens_per_s']:,.0f} | {r['steps']:,} | {epochs} | {r['peak_memory_mb']:,.0f} | {best} | "
                f"{r['test_perplexity']:.1f} | {r['test_bits_per_char']:.3f} | {r['test_open_bits_per_char']:.3f} |\n")

    return head + "".join(line(r) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--contender", action="append", help="NAME:PRESET[,field=value...] (repeatable)")
    parser.add_argument("--out", help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args, extra = parser.parse_known_args()  # unknown flags go to every contender's `lstmgen train`
    contenders = args.contender or ["seed", "default"]
    extra = [a for a in extra if a != "--"]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="lstmgen-budget-"))
    rows = []
    for spec in contenders:
        rows.append(run_contender(args.corpus, *parse_contender(spec), args.minutes, out, extra))
        print(table(rows), flush=True)
        if args.json:  # after every contender: a call cut short keeps what it measured
            Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()}-core CPU"
    print(f"{args.minutes:g} minutes each on {device} ({platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, {datetime.date.today()}")
    if any("failed" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
