"""Training speed by shape: tokens/s of lstmgen's own loop for several presets and settings, one after another.

    python bench/shape_speed.py ../shared/corpora/sidamingzhu --device cuda --steps 200 --warmup 30 \
        --shape gpu --shape "b256:gpu,batch_size=256" --shape "wide:gpu,hidden_size=1536"

A shape is ``NAME:PRESET[,field=value,...]`` as in bench/budget.py. Each one runs ``train()`` in this
process for ``warmup + steps`` steps with no validation or test split, and is timed by the training
clock after its warm-up steps; validation and checkpoints are moved out of the timed steps (every 24 h of
training) unless the shape sets them. What it tells: how much a bigger batch or model costs per step on
this machine, before spending minutes of a budget run on it. On a GPU the peak memory is each shape's
own; on the CPU it is this process's, so a shape after a bigger one reports the bigger one's peak.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
from pathlib import Path

import torch

from lstmgen.config import build_config
from lstmgen.device import peak_memory_mb, pick_device
from lstmgen.experiments.sweep_plan import parse_vary
from lstmgen.model.run_dir import read_run_config
from lstmgen.tokens.batches import batchify, num_windows
from lstmgen.tokens.prepare import prepare
from lstmgen.training.run import train


def build(spec: str, device: str, steps: int, corpus: str):
    """(name, RunConfig) of ``spec`` for ``steps`` steps on ``device``."""
    name, _, rest = spec.partition(":") if ":" in spec else (spec, "", spec)
    preset, *settings = rest.split(",")
    # by the clock, not by steps: an epoch's end would still validate and save inside the timed steps
    overrides: dict[str, dict] = {"data": {"valid_fraction": 0.0, "test_fraction": 0.0},
                                  "train": {"device": device, "eval_every": "24h", "save_every": "24h"}}
    for setting in settings:
        parsed = parse_vary(setting if "=" in setting else setting + "=true")  # a bare switch, as in budget.py
        overrides.setdefault(parsed.section, {})[parsed.name] = parsed.values[0]
    config = build_config(preset, overrides)
    data = prepare(corpus, config.data, config.tokenizer)
    windows = num_windows(batchify(data.ids["train"], config.train.batch_size), config.train.seq_len)
    config.train.epochs = steps / windows
    return name, config


def time_shape(corpus: str, config, steps: int, warmup: int, out: Path) -> tuple[float, float]:
    """(tokens/s after the warm-up steps, peak memory in MB) of one training run."""
    seen: list[tuple[int, float]] = []
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(corpus, config, out=out, progress=lambda p: seen.append((p.step, p.elapsed)))
    after = [(step, seconds) for step, seconds in seen if step >= warmup]
    if len(after) < 2:
        raise SystemExit("too few progress reports after the warm-up (one every 10 steps): use more --steps")
    (first_step, first_seconds), (last_step, last_seconds) = after[0], after[-1]
    tokens = (last_step - first_step) * config.train.batch_size * config.train.seq_len
    return tokens / (last_seconds - first_seconds), peak_memory_mb(pick_device(config.train.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--shape", action="append", required=True, help="NAME:PRESET[,field=value...] (repeatable)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per shape")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    print("| shape | params | batch x seq | tokens/s | ms/step | peak MB |\n|---|---:|---:|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.shape:
            name, config = build(spec, args.device, args.steps + args.warmup, args.corpus)
            rate, peak = time_shape(args.corpus, config, args.steps, args.warmup, Path(tmp) / name)
            params = read_run_config(Path(tmp) / name)[1]["parameters"]
            t = config.train
            print(f"| {name} | {params / 1e6:.1f}M | {t.batch_size} x {t.seq_len} | {rate:,.0f} | "
                  f"{1000 * t.batch_size * t.seq_len / rate:.1f} | {peak:,.0f} |", flush=True)
    device = pick_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()}-core CPU"
    print(f"{args.steps} steps after {args.warmup}, {where}, torch {torch.__version__}, {datetime.date.today()}")


if __name__ == "__main__":
    main()
