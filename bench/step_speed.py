"""Training-step speed: lstmgen's loop against a plain PyTorch loop over the same model and batches.

    python bench/step_speed.py ../shared/corpora/sidamingzhu --steps 12            # CPU
    python bench/step_speed.py ../shared/corpora/sidamingzhu --steps 400 --device cuda

Contenders, all at ``--preset seed`` (jieba words, embed 128, hidden 1024, batch 20, seq 30, Adam):
  plain     the textbook loop written out below: fp32, Embedding -> LSTM -> Linear, Adam, clip 0.5
  lstmgen   ``lstmgen train --preset seed`` for the same number of steps (bf16 autocast and a fused
            optimiser on CUDA; what a user gets)
  adaptive  the same, with ``--output adaptive`` (adaptive softmax over the seed's vocabulary)
On CUDA, two more tell where the difference comes from:
  plain-bf16    the plain loop with bf16 autocast, fused Adam and no per-step ``loss.item()``
  lstmgen-fp32  lstmgen with ``--amp off``
Tokens/s exclude the first ``--warmup`` steps of every contender: the plain loop's by its own timer,
lstmgen's from the training clock it reports to its progress bar (no validation or test split, so
nothing but training steps is timed).

On a GPU, ``--sync-debug`` makes PyTorch warn at every line of lstmgen's run that waits for the GPU,
and ``--profile N`` prints where the GPU time of N extra lstmgen steps goes (after the timed runs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from lstmgen.config import RunConfig, build_config
from lstmgen.tokens.batches import batchify, get_window, num_windows
from lstmgen.tokens.prepare import prepare
from lstmgen.training.run import train


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


def plain_loop(ids, vocab_size: int, steps: int, warmup: int, device: torch.device, fast: bool = False) -> float:
    """Tokens/s of the plain fp32 loop (the seed's own training step).

    ``fast`` (CUDA) is the same loop with the usual three edits: bf16 autocast, fused Adam, and no
    per-step ``loss.item()``: what a careful hand-written loop gets, for comparison.
    """
    torch.manual_seed(0)
    model = PlainLM(vocab_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002, **({"fused": True} if fast else {}))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast)
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
        with autocast:
            logits, h = model(x, h)
        loss = nn.functional.cross_entropy(logits.float(), y.reshape(-1))
        model.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        if not fast:
            loss.item()  # the loop prints its loss, as tutorials do: one sync per step
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * 20 * 30 / (time.perf_counter() - start)


def seed_config(model: Optional[dict] = None, **train) -> RunConfig:
    """``--preset seed`` with no validation or test split: every token trains, nothing but steps is timed."""
    return build_config("seed", {"data": {"valid_fraction": 0.0, "test_fraction": 0.0}, "model": model or {},
                                 "train": train})


def lstmgen_run(corpus: str, steps: int, warmup: int, windows: int, device: str, output: str, out: Path,
                threads: int, sync_debug: bool = False, amp: str = "auto") -> float:
    """Tokens/s of ``lstmgen train --preset seed`` over its steps after ``warmup``, by its own clock."""
    config = seed_config({"output": output}, epochs=(steps + warmup) / windows, device=device, threads=threads,
                         amp=amp)
    seen: list[tuple[int, float]] = []  # (step, training seconds) at every progress report

    def report(p) -> None:
        seen.append((p.step, p.elapsed))
        if sync_debug and p.step >= warmup:  # from here on (set-up and checkpoints may wait; steps should not)
            torch.cuda.set_sync_debug_mode("warn")

    try:
        train(corpus, config, out=out, progress=report)
    finally:
        if sync_debug:
            torch.cuda.set_sync_debug_mode("default")
    after = [(step, seconds) for step, seconds in seen if step >= warmup]
    if len(after) < 2:  # progress comes every 10 steps (and every 5 s)
        raise SystemExit("too few progress reports after the warm-up to time lstmgen: use --steps 30 or more")
    (first_step, first_seconds), (last_step, last_seconds) = after[0], after[-1]
    return (last_step - first_step) * 20 * 30 / (last_seconds - first_seconds)


def profile(corpus: str, steps: int, windows: int, device: str, out: Path) -> None:
    """Print the GPU (or CPU) time of ``steps`` steps of ``lstmgen train --preset seed`` by operator."""
    from torch.profiler import ProfilerActivity, schedule
    from torch.profiler import profile as torch_profile

    config = seed_config(epochs=(steps + 30) / windows, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with torch_profile(activities=activities, schedule=schedule(wait=0, warmup=20, active=steps, repeat=1)) as prof:
        steps_seen = [0]

        def step(p) -> None:  # progress comes every few steps: advance the profiler by the steps since
            while steps_seen[0] < p.step:
                prof.step()
                steps_seen[0] += 1

        train(corpus, config, out=out, progress=step)
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="plain,lstmgen,adaptive",
                        help="comma-separated contenders: plain, lstmgen, adaptive; on CUDA also plain-bf16 "
                             "(the plain loop in bf16 with fused Adam) and lstmgen-fp32 (lstmgen with --amp off)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for every contender (0: torch's default)")
    parser.add_argument("--sync-debug", action="store_true", help="CUDA: warn wherever lstmgen's run waits for the GPU")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N more lstmgen steps (CUDA)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seed = seed_config()
    data = prepare(args.corpus, seed.data, seed.tokenizer)
    vocab_size = len(data.vocab)
    windows = num_windows(batchify(data.ids["train"], 20), 30)
    results: dict[str, list[float]] = {}  # a contender named twice runs twice (alternate the order on a
    # noisy machine: plain,lstmgen,lstmgen,plain); the summary takes each one's median
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            if name in ("plain", "plain-bf16"):
                rate = plain_loop(data.ids["train"], vocab_size, args.steps, args.warmup, device,
                                  fast=name == "plain-bf16")
            else:
                output = "adaptive" if name == "adaptive" else "full"
                rate = lstmgen_run(args.corpus, args.steps, args.warmup, windows, args.device, output,
                                   Path(tmp) / f"{name}-{len(results.get(name, []))}", args.threads,
                                   args.sync_debug and name == "lstmgen", amp="off" if name == "lstmgen-fp32" else "auto")
            results.setdefault(name, []).append(rate)
            print(f"{name:10s} {rate:10,.0f} tokens/s", flush=True)
        if args.profile:
            profile(args.corpus, args.profile, windows, args.device, Path(tmp) / "profiled")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()}-core CPU"
    print(f"seed preset, vocabulary {vocab_size:,}, {args.steps} steps, {where} ({torch.get_num_threads()} threads), "
          f"torch {torch.__version__}, "
          f"{datetime.date.today()}")
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    if "plain" in medians:
        for name, rate in medians.items():
            runs = f" (median of {len(results[name])} runs)" if len(results[name]) > 1 else ""
            print(f"{name}: {rate:,.0f} tokens/s{runs}, {rate / medians['plain']:.2f}x the plain loop")


if __name__ == "__main__":
    main()
