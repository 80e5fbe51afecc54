"""Generation speed: time to the first character after loading, characters/s, and a batch of samples,
with fp32 and with int8 weights; then one model step alone (token in, log-probabilities out) through
nn.LSTM and the model's output layer, and through the generator's OneTokenSteps in fp32 and int8; and
OneTokenSteps with more rows a step.

    python bench/generate_speed.py RUN [--length 2000] [--num-samples 8] [--busy N [--settle S]] [--samples-only]

--busy N keeps N other processes spinning on the CPU while the samples are written, from S seconds
before (default 0.5): a machine busy with other work, such as a training run beside generation.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
import warnings
from typing import Callable, TypeVar

import torch

from lstmgen.generation.cpu_step import OneTokenSteps
from lstmgen.generation.generate import GenerateConfig, generate
from lstmgen.model.run_dir import TrainedRun as Run
from lstmgen.model.run_dir import load_run

T = TypeVar("T")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--prompt", default="却说")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning beside the samples")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds they spin before")
    parser.add_argument("--samples-only", action="store_true", help="leave out the model-step tables")
    args = parser.parse_args()

    start = time.perf_counter()
    run = load_run(args.run)
    loaded = time.perf_counter()
    print(f"load {loaded - start:.2f}s; {run.config.preset} preset, {run.config.tokenizer.tokenizer} tokenizer, "
          f"hidden {run.config.model.hidden_size}, {os.cpu_count()}-core CPU, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {datetime.date.today()}")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    if spinners:
        time.sleep(args.settle)
        print(f"{args.busy} other processes spinning for {args.settle:g} s before; load average {os.getloadavg()[0]:.2f}")
    try:
        text = samples(run, args)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    if args.samples_only:
        return
    tokens = torch.tensor([run.vocab.token_to_id(t) for t in run.tokenizer.tokenize(text)])
    times = step_times(run.model, tokens)
    print(f"one model step (token in, log-probabilities out) over a sample's {len(tokens)} tokens "
          f"({len(tokens.unique())} distinct), one row, one thread: "
          + ", ".join(f"{name} {ms:.3f} ms" for name, ms in times.items()))
    for rows in (1, 8, 32, 128):
        fp32_ms, int8_ms = batch_step_times(run.model, rows)
        print(f"OneTokenSteps, {rows} rows a step, one thread: fp32 {fp32_ms:.2f} ms, int8 {int8_ms:.2f} ms")


def samples(run: Run, args: argparse.Namespace) -> str:
    """Time one sample and a batch of samples, fp32 and int8 in turn; returns the last sample's text."""
    text = ""
    for precision in ("fp32", "int8", "fp32", "int8"):  # alternating: a busy moment hits both
        first: list[float] = []

        def on_text(row: int, piece: str) -> None:
            if not first:
                first.append(time.perf_counter())

        begin = time.perf_counter()
        text = generate(run.model, run.tokenizer, run.vocab, [args.prompt],
                        GenerateConfig(length=args.length, seed=1, precision=precision), on_text=on_text)[0]
        done = time.perf_counter()
        texts = generate(run.model, run.tokenizer, run.vocab, [args.prompt],
                         GenerateConfig(length=args.length, seed=1, num_samples=args.num_samples, precision=precision))
        batch_done = time.perf_counter()
        written = len(text) - len(args.prompt)
        batch_written = sum(len(t) - len(args.prompt) for t in texts)
        print(f"{precision}: first character {1000 * (first[0] - begin):.0f} ms after the call; "
              f"one sample: {written / (done - begin):,.0f} characters/s ({written} characters); "
              f"{args.num_samples} samples as one batch: {batch_written / (batch_done - done):,.0f} characters/s")
    return text


def one_thread(measure: Callable[[], T]) -> T:
    """``measure()`` with torch on one thread, as generate() runs a model this size (but for the int8
    kernel, which it may give more threads while they are faster)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure()
    finally:
        torch.set_num_threads(saved)


@torch.no_grad()
def step_times(model: torch.nn.Module, tokens: torch.Tensor) -> dict[str, float]:
    """ms per model step over ``tokens``: what generation ran before 2026-11-28 (nn.LSTM with oneDNN off,
    then model.log_probs) and OneTokenSteps in fp32 and int8, in alternating blocks of 500 tokens."""
    model.eval()
    layers, hidden = model.lstm.num_layers, model.lstm.hidden_size
    zeros = (torch.zeros(layers, 1, hidden), torch.zeros(layers, 1, hidden))

    def module_step(token: torch.Tensor, state: tuple) -> tuple:
        features, state = model.features(token.view(1, 1), state)
        return model.log_probs(features[:, -1]), state

    ways = {"nn.LSTM + log_probs": module_step, "OneTokenSteps fp32": OneTokenSteps(model),
            "OneTokenSteps int8": OneTokenSteps(model, int8=True)}
    totals = dict.fromkeys(ways, 0.0)

    def measure() -> None:
        for block in range(0, len(tokens), 500):
            for name, step in ways.items():
                state = zeros
                begin = time.perf_counter()
                for token in tokens[block:block + 500]:
                    state = step(token.view(1), state)[1]
                totals[name] += time.perf_counter() - begin

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the flags() context warns about TF32 on Intel GPUs
        with torch.backends.mkldnn.flags(enabled=False):
            one_thread(measure)
    return {name: 1000 * total / len(tokens) for name, total in totals.items()}


@torch.no_grad()
def batch_step_times(model: torch.nn.Module, rows: int, steps: int = 60) -> tuple[float, float]:
    """ms per OneTokenSteps step with ``rows`` rows of random tokens among the 300 most frequent, fp32 and int8."""
    layers, hidden = model.lstm.num_layers, model.lstm.hidden_size
    tokens = torch.randint(0, 300, (steps, rows), generator=torch.Generator().manual_seed(0))
    result = []
    for int8 in (False, True):
        stepper = OneTokenSteps(model.eval(), int8=int8)
        state = (torch.zeros(layers, rows, hidden), torch.zeros(layers, rows, hidden))

        def measure() -> float:
            nonlocal state
            for ids in tokens[:10]:  # the input table fills
                state = stepper(ids, state)[1]
            begin = time.perf_counter()
            for ids in tokens[10:]:
                state = stepper(ids, state)[1]
            return 1000 * (time.perf_counter() - begin) / (steps - 10)

        result.append(one_thread(measure))
    return result[0], result[1]


if __name__ == "__main__":
    main()
