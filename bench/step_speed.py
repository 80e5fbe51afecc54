"""Training-step speed: lstmgen's loop against a plain PyTorch loop over the same model and batches.

    python bench/step_speed.py ../shared/corpora/sidamingzhu --steps 12            # CPU
    python bench/step_speed.py ../shared/corpora/sidamingzhu --steps 400 --device cuda

Contenders, all at ``--preset seed`` (jieba words, embed 128, hidden 1024, batch 20, seq 30, Adam):
  plain     the textbook loop written out below: fp32, Embedding -> LSTM -> Linear, Adam, clip 0.5
  lstmgen   ``lstmgen train --preset seed`` for the same number of steps (bf16 autocast and a fused
            optimiser on CUDA; what a user gets)
  adaptive  the same, with ``--output adaptive`` (adaptive softmax over the seed's vocabulary)
Tokens/s exclude the first ``--warmup`` steps of every contender: the plain loop's by its own timer,
lstmgen's from the training clock it reports to its progress bar (no validation or test split, so
nothing but training steps is timed).
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from lstmgen.config import build_config
from lstmgen.data import batchify, get_window, num_windows
from lstmgen.pipeline import prepare
from lstmgen.train import train


class PlainLM(nn.Module):
    """The seed's model, written out as a tutorial would."""

    def __init__(self, vocab_size: int, embed: int = 128, hidden: int = 1024) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, 1, batch_first=True)
        self.linear = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor, h: tuple) -> tuple:
        out, h = self.lstm(self.embed(x), h)
        return self.linear(out.reshape(-1, out.shape[2])), h


def plain_loop(ids, vocab_size: int, steps: int, warmup: int, device: torch.device) -> float:
    """Tokens/s of the plain fp32 loop (the seed's own training step)."""
    torch.manual_seed(0)
    model = PlainLM(vocab_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    grid = batchify(ids, 20)
    h = (torch.zeros(1, 20, 1024, device=device), torch.zeros(1, 20, 1024, device=device))
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        x, y = get_window(grid, step % num_windows(grid, 30), 30, device)
        h = (h[0].detach(), h[1].detach())
        logits, h = model(x, h)
        loss = nn.functional.cross_entropy(logits, y.reshape(-1))
        model.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        loss.item()  # the loop prints its loss, as tutorials do: one sync per step
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * 20 * 30 / (time.perf_counter() - start)


def lstmgen_run(corpus: str, steps: int, warmup: int, windows: int, device: str, output: str, out: Path,
                threads: int) -> float:
    """Tokens/s of ``lstmgen train --preset seed`` over its steps after ``warmup``, by its own clock."""
    config = build_config("seed", {"data": {"valid_fraction": 0.0, "test_fraction": 0.0},
                                   "model": {"output": output},
                                   "train": {"epochs": (steps + warmup) / windows, "device": device,
                                             "threads": threads}})
    seen: list[tuple[int, float]] = []  # (step, training seconds) at every progress report
    train(corpus, config, out=out, progress=lambda p: seen.append((p.step, p.elapsed)))
    after = [(step, seconds) for step, seconds in seen if step >= warmup]
    (first_step, first_seconds), (last_step, last_seconds) = after[0], after[-1]
    return (last_step - first_step) * 20 * 30 / (last_seconds - first_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="plain,lstmgen,adaptive", help="comma-separated contenders")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for every contender (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seed = build_config("seed", {"data": {"valid_fraction": 0.0, "test_fraction": 0.0}})
    data = prepare(args.corpus, seed.data, seed.tokenizer)
    vocab_size = len(data.vocab)
    windows = num_windows(batchify(data.ids["train"], 20), 30)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            if name == "plain":
                results[name] = plain_loop(data.ids["train"], vocab_size, args.steps, args.warmup, device)
            else:
                output = "adaptive" if name == "adaptive" else "full"
                results[name] = lstmgen_run(args.corpus, args.steps, args.warmup, windows, args.device, output,
                                            Path(tmp) / name, args.threads)
            print(f"{name:10s} {results[name]:10,.0f} tokens/s", flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()}-core CPU"
    print(f"seed preset, vocabulary {vocab_size:,}, {args.steps} steps, {where} ({torch.get_num_threads()} threads), "
          f"torch {torch.__version__}, "
          f"{datetime.date.today()}")
    if "plain" in results:
        for name, rate in results.items():
            print(f"{name}: {rate / results['plain']:.2f}x the plain loop")


if __name__ == "__main__":
    main()
