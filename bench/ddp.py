"""Tokens per second of one process against several, data-parallel, on this machine's CPU cores.

Trains the same fixed model (characters, embedding and hidden size 256, one layer, tied output)
for the same wall-clock budget, each process on one core (OMP_NUM_THREADS=1, --threads 1):

  1. one process, --batch-size B;
  2. N processes under torchrun over gloo, --batch-size B each (global batch N x B): weak scaling;
  3. with --strong, N processes with --batch-size B/N each (the same global batch as 1): strong scaling.

Tokens/s is what the run itself records (all ranks' tokens over its training seconds, evaluation
left out). The corpus is read in place and segmented once, before any timing.

    python3 bench/ddp.py                                  # the four classic novels, 45 s a run
    python3 bench/ddp.py --seconds 30 --processes 2 --strong --corpus DIR
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpora" / "sidamingzhu"
MODEL = ["--preset", "default", "--tokenizer", "char", "--embed-size", "256", "--hidden-size", "256",
         "--num-layers", "1", "--output", "tied", "--seq-len", "64", "--device", "cpu", "--threads", "1"]
SPLITS = ["--valid-fraction", "0.01", "--test-fraction", "0.01", "--eval-tokens", "20000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(corpus: Path, out: Path, *, processes: int, batch_size: int, seconds: float) -> list[str]:
    """The command line of one timed run (torchrun on 127.0.0.1 when processes > 1)."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--rdzv-backend", "c10d",
                     "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--local-addr", "127.0.0.1"]
    return [*launcher, "-m", "lstmgen", "-q", "train", str(corpus), "--out", str(out), *MODEL, *SPLITS,
            "--batch-size", str(batch_size), "--time-budget", f"{seconds:g}s", "--epochs", "1000"]


def timed_run(command: list[str], out: Path, env: dict[str, str]) -> dict:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    test = records[-1]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    return {"tokens_per_s": test["tokens_per_s"], "seconds": test["seconds"], "steps": test["step"],
            "world_size": config["world_size"], "batch_size": config["train"]["batch_size"],
            "test_bits_per_char": test.get("test_bits_per_char")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--seconds", type=float, default=45, help="training time of each run")
    parser.add_argument("--processes", type=int, default=2, help="processes of the data-parallel runs")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per process")
    parser.add_argument("--strong", action="store_true", help="also run N processes with batch B/N each")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"{datetime.date.today()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="lstmgen-ddp-") as tmp:
        root = Path(tmp)
        env["LSTMGEN_CACHE"] = env.get("LSTMGEN_CACHE", str(root / "cache"))
        # segment once (untimed) so that no run pays for it
        subprocess.run(train_command(args.corpus, root / "warm", processes=1, batch_size=args.batch_size,
                                     seconds=1), env=env, check=True, stdout=subprocess.DEVNULL)
        plan = [("1 process", 1, args.batch_size),
                (f"{args.processes} processes, same batch per process", args.processes, args.batch_size)]
        if args.strong:
            plan.append((f"{args.processes} processes, same global batch", args.processes,
                         max(1, args.batch_size // args.processes)))
        rows = []
        for i, (name, processes, batch) in enumerate(plan):
            out = root / f"run{i}"
            row = timed_run(train_command(args.corpus, out, processes=processes, batch_size=batch,
                                          seconds=args.seconds), out, env)
            rows.append({"setup": name, **row})
    base = rows[0]["tokens_per_s"]
    print("\n| setup | processes | batch per process | global batch | steps | tokens/s | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['setup']} | {row['world_size']} | {row['batch_size']} | {row['world_size'] * row['batch_size']} "
              f"| {row['steps']} | {row['tokens_per_s']:,.0f} | {row['tokens_per_s'] / base:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
