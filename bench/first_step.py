"""How soon does training start? Time to the end of the first training step, first and cached start.

    python3 bench/first_step.py                                  # the four classic novels, --preset default
    python3 bench/first_step.py CORPUS --preset seed --runs 3

Every start is a fresh Python process (so nothing is imported or read already) with its own empty
token cache for the first start, reused by the cached ones. Each process reports three times:
Python and torch imports; ``lstmgen.train()`` called to the end of its first optimiser step (the
corpus read or its cache looked up, the vocabulary, the model and optimiser built, the step-0
checkpoint, one step); and the whole process to that point.

``--import-dynamo-first`` imports ``torch._dynamo`` before the clock starts. Every ``torch.optim``
step imports it (for its graph breaks); lstmgen's own fused Adam (lstmgen.training.optim) does not, so the
two should now take the same time, and the option shows that nothing else imports it.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpora" / "sidamingzhu"


class FirstStep(Exception):
    """Raised from the first optimiser step's end: the run has shown what was measured."""


def child(corpus: str, preset: str, cache: str, out: str, import_dynamo: bool) -> None:
    import torch

    if import_dynamo:
        import torch._dynamo  # noqa: F401

    import lstmgen.training.loop
    from lstmgen.config import build_config
    from lstmgen.training.run import train

    imported = time.perf_counter()
    make_optimizer = lstmgen.training.loop.make_optimizer

    def stopping_after_first_step(*args, **kwargs):  # the run's own optimiser, whose step ends the run
        optimizer = make_optimizer(*args, **kwargs)
        step = optimizer.step

        def step_then_stop(*a, **k) -> None:
            step(*a, **k)
            raise FirstStep

        optimizer.step = step_then_stop
        return optimizer

    lstmgen.training.loop.make_optimizer = stopping_after_first_step
    config = build_config(preset)
    started = time.perf_counter()
    try:
        train(corpus, config, out=out, cache_dir=Path(cache))
    except FirstStep:
        pass
    done = time.perf_counter()
    print(json.dumps({"imports": imported - T0, "train_to_first_step": done - started, "process": done - T0}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default=str(DEFAULT_CORPUS))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--runs", type=int, default=3, help="cached starts after the first")
    parser.add_argument("--import-dynamo-first", action="store_true",
                        help="import torch._dynamo before the clock starts (see above)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.corpus, args.preset, args.cache, args.out, args.import_dynamo_first)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs + 1):
            cmd = [sys.executable, __file__, args.corpus, "--preset", args.preset, "--child",
                   "--cache", str(Path(tmp) / "cache"), "--out", str(Path(tmp) / f"run{run}")]
            cmd += ["--import-dynamo-first"] if args.import_dynamo_first else []
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            kind = "first start " if run == 0 else "cached start"
            print(f"{kind}: imports {result['imports']:.2f}s, train() to the end of step 1 "
                  f"{result['train_to_first_step']:.2f}s, process {result['process']:.2f}s", flush=True)
    import torch

    first = ", torch._dynamo imported before the clock" if args.import_dynamo_first else ""
    print(f"--preset {args.preset}, {args.corpus}, torch {torch.__version__}{first}")


if __name__ == "__main__":
    main()
