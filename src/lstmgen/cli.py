"""The ``lstmgen`` command: thin subcommands over the library's functions.

Every training setting has a flag named after its config field (``seq_len`` -> ``--seq-len``);
flags left out take the preset's value.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

from lstmgen import __version__
from lstmgen.config import PRECISIONS, PRESETS, SECTIONS
from lstmgen.errors import LstmgenError

logger = logging.getLogger("lstmgen")


# ------------------------------------------------------------------------------ flags from dataclasses


# Short names the issue tracker and users ask for, beside the field-named flags.
FLAG_ALIASES = {"valid_path": ["--valid"], "test_path": ["--test"]}


# The groups of `lstmgen train --help`, in order; a section's fields go to its own unless a field names
# another (``config.setting(..., group=...)``).
FLAG_GROUPS = {"data": "data (reading, splitting, tokenizing)", "model": "model", "training": "training",
               "evaluation": "evaluation", "output": "output"}
SECTION_GROUPS = {"data": "data", "tokenizer": "data", "model": "model", "train": "training"}


def add_settings_flags(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """One ``--field-name`` flag per settings field, in FLAG_GROUPS, with the help text the field declares.

    Defaults are None, so that a flag left out takes the preset's (or the parent run's) value. A
    boolean field gets ``--name`` and ``--no-name``. Returns the groups, for a command's own flags.
    """
    groups = {name: parser.add_argument_group(title) for name, title in FLAG_GROUPS.items()}
    for section, kind in SECTIONS.items():
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            group = groups[f.metadata.get("group", SECTION_GROUPS[section])]
            hint = hints[f.name]
            base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
            flags = ["--" + f.name.replace("_", "-")] + FLAG_ALIASES.get(f.name, [])
            if base is bool:
                group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                   help=f.metadata["help"])
            else:
                group.add_argument(*flags, dest=f.name, type=base if base in (int, float, str) else str, default=None,
                                   help=f.metadata["help"])
    return groups


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {name: {f.name: getattr(args, f.name, None) for f in dataclasses.fields(kind)}
            for name, kind in SECTIONS.items()}


# ------------------------------------------------------------------------------ progress bar


class ProgressBar:
    """One line on stderr: step, loss, perplexity, tokens/s, time left (redrawn on a terminal).

    Used as a context manager: while it is open, a log record wipes the half-drawn line, takes a
    line of its own and has the bar drawn again below it; on leaving, the last bar is ended with a
    newline, whatever happened, so that an error is written below it.
    """

    live: Optional["ProgressBar"] = None  # the open bar, which log records clear before they are written

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = 0.0
        self.drawn = False  # a line is on the terminal without its newline
        self.line = ""  # the bar last drawn

    def __enter__(self) -> "ProgressBar":
        ProgressBar.live = self
        return self

    def __exit__(self, *exc: Any) -> None:
        ProgressBar.live = None
        self.close()

    def clear(self) -> bool:
        """Wipe the half-drawn line, so that what is written next starts at the line's beginning;
        whether there was one."""
        if not self.drawn:
            return False
        self.stream.write("\r\x1b[2K")
        self.stream.flush()
        self.drawn = False
        return True

    def draw(self) -> None:
        """Draw the last bar again (after a message took its place)."""
        self.stream.write("\r\x1b[2K" + self.line)
        self.stream.flush()
        self.drawn = True

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 10 and p.step < p.total_steps:
            return
        self.last = now
        import math

        left = _duration(p.seconds_left) if p.seconds_left is not None else "?"
        width = 20
        done = int(width * min(max(p.fraction, 0.0), 1.0))  # by steps, or by the clock under a time budget
        steps = f"step {p.step}" if p.time_budget else f"step {p.step}/{p.total_steps}"
        line = (f"[{'#' * done}{'.' * (width - done)}] {steps} epoch {p.epoch:.2f} "
                f"loss {p.loss:.3f} ppl {math.exp(min(p.loss, 50)):.1f} {p.tokens_per_s:,.0f} tok/s "
                f"{_duration(p.elapsed)} elapsed, {left} left")
        if self.tty:
            self.line = line
            self.draw()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End the last bar's line, which stays on the terminal."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


# ------------------------------------------------------------------------------ subcommands


def cmd_train(args: argparse.Namespace) -> int:
    from lstmgen.distributed import is_main_process, resume_command
    from lstmgen.training.run import resume_settings, settings_config, train
    from lstmgen.training.signals import TrainingInterrupted

    if args.resume:
        run = args.out or args.corpus
        if run is None:
            raise LstmgenError("--resume needs the run directory: lstmgen train --resume RUN")
        corpus = args.corpus if args.out else None
        config = None
        where = resume_settings({key: value for section in _overrides(args).values() for key, value in section.items()},
                                preset=args.preset)
    else:
        if args.corpus is None:
            raise LstmgenError("give the corpus to train on: lstmgen train PATH (a .txt file or a folder)")
        corpus, run = args.corpus, args.out
        config = settings_config(args.preset, _overrides(args))
        where = {}
    try:
        with ProgressBar() as bar:
            run_dir = train(corpus, config, out=run, resume=args.resume, where=where, progress=bar)
    except TrainingInterrupted as stop:
        if is_main_process():  # under torchrun every rank ends here: say it once
            print(f"stopped; state saved. Continue with: {resume_command(stop.run_dir)}",
                  file=sys.stderr)  # the folder quoted: run folders often have spaces
        return 128 + stop.signum
    if is_main_process():
        _print_summary(run_dir)
    return 0


def _print_summary(run_dir: Path) -> None:
    from lstmgen.evaluate import describe_bits, describe_oov
    from lstmgen.runs import read_metrics

    records = read_metrics(run_dir)
    test = next((r for r in reversed(records) if r.get("split") == "test"), {})
    valid = [r for r in records if "valid_bits_per_char" in r]
    print(f"run: {run_dir}")
    if valid:
        best = min(valid, key=lambda r: r["valid_nll"])
        print(f"best valid: perplexity {best['valid_perplexity']:.2f}, {best['valid_bits_per_char']:.3f} bits/char "
              f"(step {best['step']})")
    if "test_perplexity" in test:
        bits = describe_bits(test["test_bits_per_char"], test.get("test_open_bits_per_char"))
        print(f"test: perplexity {test['test_perplexity']:.2f}, {bits}, "
              f"OOV {describe_oov(test['test_oov_rate'], test.get('test_unknown_share', 0.0))}, "
              f"{test['tokens_per_s']:,.0f} tokens/s, "
              f"{test['seconds']:.0f}s of training")


def cmd_eval(args: argparse.Namespace) -> int:
    from lstmgen.device import pick_device
    from lstmgen.evaluate import describe_oov
    from lstmgen.run_eval import evaluate_run
    from lstmgen.runs import load_run

    run = load_run(args.run, device=pick_device(args.device))
    evaluation = evaluate_run(run, args.path, split=args.split)
    score = evaluation.score
    if evaluation.warning:
        print(f"warning: {evaluation.text} {evaluation.warning}, so its score flatters the model; "
              f"`lstmgen eval {args.run}` scores the held-out test split", file=sys.stderr)
    result = {"text": evaluation.text, **score.as_dict()}
    if evaluation.trained_on:
        result["trained_on"] = evaluation.trained_on
    if evaluation.seen_in_training is not None:
        result["seen_in_training"] = evaluation.seen_in_training
    if args.samples:
        from lstmgen.quality import sample_quality

        result.update(sample_quality(run, num_samples=args.samples, length=args.sample_length, seed=args.seed))
        if "sample_longest_copy" not in result:
            print(f"note: the run's corpus {run.info.get('corpus')!r} is not on this machine, so what the samples "
                  f"copy from the training text is not measured", file=sys.stderr)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        rows = [("perplexity", f"{score.perplexity:.2f}"), ("bits per char", f"{score.bits_per_char:.4f}")]
        if evaluation.has_unknown_costs:  # the train split's are not gathered: its score is no held-out result
            rows.append(("open bits per char", f"{score.open_bits_per_char:.4f} (<unk> words spelled out)"))
        rows += [("OOV rate", describe_oov(score.oov_rate, score.unknown_share)), ("tokens", f"{score.tokens:,}"),
                 ("characters", f"{score.characters:,}")]
        rows += [(key[7:], f"{value:.4f}" if isinstance(value, float)
                  else str(value).replace("\n", "\\n")) for key, value in result.items() if key.startswith("sample_")]
        print(evaluation.text)
        for name, value in rows:
            print(f"  {name:<20} {value}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from lstmgen.generate import GenerateConfig, generate, unknown_in_prompt
    from lstmgen.onetoken import resolve_precision
    from lstmgen.device import pick_device
    from lstmgen.runs import load_run

    seed = args.seed
    if seed is None and args.temperature != 0:  # drawn here, so that it can be told: the text can be had again
        import random

        seed = random.SystemRandom().randrange(2**31)
    config = GenerateConfig(length=args.length, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            repetition_penalty=args.repetition_penalty, no_repeat_ngram=args.no_repeat_ngram,
                            stop_at=args.stop_at, num_samples=args.num_samples, seed=seed,
                            acrostic=args.acrostic, precision=args.precision)
    if args.output and not Path(args.output).parent.is_dir():  # said now, not after the text is written
        raise LstmgenError(f"--output {args.output}: no folder {Path(args.output).parent} to write it in")
    device = pick_device(args.device)
    precision = resolve_precision(config.precision, device)  # int8 on a GPU: said before the model loads
    run = load_run(args.run, device=device)
    prompts = args.prompt or [""]
    unknown = list(dict.fromkeys(t for p in prompts for t in unknown_in_prompt(p, run.tokenizer, run.vocab)))
    if unknown:
        print(f"warning: the model never saw {'、'.join(unknown)} in training; it reads "
              f"{'them' if len(unknown) > 1 else 'it'} in the prompt as <unk>", file=sys.stderr)
    stream = len(prompts) * config.num_samples == 1 and not args.quiet
    if stream:
        sys.stdout.write(prompts[0].strip())
        sys.stdout.flush()

    def on_text(row: int, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    texts = generate(run.model, run.tokenizer, run.vocab, prompts, config, on_text=on_text if stream else None)
    if stream:
        sys.stdout.write("\n")
        sys.stdout.flush()
    elif not args.quiet:
        for i, text in enumerate(texts):
            print(f"--- sample {i + 1} ---\n{text}")
        sys.stdout.flush()
    if seed != args.seed:
        # the precision too: on another kind of machine, auto may mean the other one
        print(f"seed {seed} (--seed {seed} --precision {precision} writes this again)", file=sys.stderr)
    if args.output:
        Path(args.output).write_text("\n\n".join(texts) + "\n", encoding="utf-8")
        print(f"written to {args.output}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lstmgen.demo import run_demo

    with ProgressBar() as bar:
        return run_demo(minutes=args.minutes, out=args.out, corpus=args.corpus, progress=bar)


def cmd_cache(args: argparse.Namespace) -> int:
    from lstmgen.cache import clear, describe_listing, describe_removal, prune, scan

    if args.prune is not None and args.clear:
        raise LstmgenError("give --prune DAYS or --clear, not both")
    if args.prune is None and not args.clear:
        print("\n".join(describe_listing(scan())))
        return 0
    days = None
    if args.prune is not None:
        try:
            days = float(args.prune)
        except ValueError:
            raise LstmgenError(f"--prune {args.prune}: give a number of days, 0 or more (e.g. --prune 30)") from None
        result = prune(unused_days=days)
    else:
        result = clear()
    print("\n".join(describe_removal(result, unused_days=days)))
    if result.failed:
        more = f" (and {len(result.failed) - 1} more)" if len(result.failed) > 1 else ""
        raise LstmgenError(f"could not remove {result.failed[0]}{more}")
    return 0


# ------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstmgen",
        description="Train LSTM language models on the novels on your disk, score them on held-out text, "
                    "and write with them.")
    parser.add_argument("--version", action="version", version=f"lstmgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    parser.add_argument("-q", "--quiet-log", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model on a corpus; writes a run directory",
                       description="Train a model on a corpus and score it on held-out text. Every setting has a "
                                   "flag; one left out takes the preset's value.")
    p.add_argument("corpus", nargs="?", help="a .txt file, a folder of them, or a folder with an inf.txt index")
    p.add_argument("--preset", choices=sorted(PRESETS), help="starting settings (default: default)")
    groups = add_settings_flags(p)
    groups["output"].add_argument("--out", help="run directory (default: runs/DATE-PRESET)")
    groups["output"].add_argument("--resume", action="store_true",
                                  help="continue the run in --out (or the RUN given) exactly")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="perplexity, bits per character and OOV rate of a run on held-out text")
    p.add_argument("run", help="run directory")
    p.add_argument("path", nargs="?", help="text to score (default: the run's test split)")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"), help="split to score without PATH")
    p.add_argument("--samples", type=int, default=0, help="also generate N samples and measure their quality")
    p.add_argument("--sample-length", type=int, default=200, help="characters per quality sample")
    p.add_argument("--seed", type=int, default=1, help="seed for the quality samples")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("generate", help="write text with a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("--prompt", action="append", help="text to continue (repeat for several prompts in one batch)")
    p.add_argument("--length", type=int, default=300, help="characters to write after the prompt")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=40, help="0: off")
    p.add_argument("--top-p", type=float, default=0.95, help="1: off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1: off")
    p.add_argument("--no-repeat-ngram", type=int, default=0, help="0: off")
    p.add_argument("--stop-at", default="none", choices=("none", "sentence", "paragraph"))
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.add_argument("--acrostic", help="poems: line i begins with character i of this text")
    p.add_argument("--output", help="also write the text to this file")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="weights on a CPU: int8 reads a quarter of the bytes (auto: int8 where torch's kernel is fast)")
    p.add_argument("--quiet", action="store_true", help="print nothing (use with --output)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="fetch a public-domain corpus, train a few minutes, write a sample")
    p.add_argument("--minutes", type=float, default=3.0, help="training time")
    p.add_argument("--out", help="run directory (default: runs/demo-DATE)")
    p.add_argument("--corpus", help="use this folder or file instead of fetching the demo corpus")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("cache", help="list the token cache; remove folders no run has used lately",
                       description="List the token cache ($LSTMGEN_CACHE, else the platform's cache folder, such as "
                                   "~/.cache/lstmgen on Linux): a line per "
                                   "segmentation folder with its size, last use, tokenizer, tokens per split and "
                                   "corpus. Removing is safe while runs are going: a run that needs a removed "
                                   "folder segments its corpus again.")
    p.add_argument("--prune", metavar="DAYS",
                   help="remove the token folders no run has used in the last DAYS days (and the read manifests "
                        "that pointed only at them)")
    p.add_argument("--clear", action="store_true",
                   help="remove every token folder and read manifest (demo/, the demo's poems, is kept)")
    p.set_defaults(func=cmd_cache)

    # Subcommands that live beside the features they drive: each module has add_commands(sub).
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


# Modules that register subcommands of their own (kept light to import: heavy imports go inside).
COMMAND_MODULES: tuple[str, ...] = ("lstmgen.serve", "lstmgen.sweep", "lstmgen.compare")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``lstmgen`` command. Returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet_log else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("lstmgen")
    saved = (root.handlers[:], root.level, root.propagate)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    try:
        return int(args.func(args) or 0)
    except LstmgenError as err:
        print(f"lstmgen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lstmgen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:  # main() may be called again in the same process (tests, notebooks)
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        bar = ProgressBar.live
        wiped = bar is not None and bar.clear()
        super().emit(record)
        if wiped:  # the message above, the bar below it again
            bar.draw()

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
