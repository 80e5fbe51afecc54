"""The ``lstmgen`` command: its parser, its subcommands, and one line for a user's mistake.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Optional, Sequence

from lstmgen import __version__
from lstmgen.cli import inspect as inspect_command
from lstmgen.cli import tool_commands
from lstmgen.cli.flags import add_adapt_flags, add_settings_flags
from lstmgen.cli.progress import ProgressBar
from lstmgen.cli.run_commands import cmd_cache, cmd_demo, cmd_eval, cmd_generate, cmd_train
from lstmgen.config import PRECISIONS, PRESETS, SCRIPT_CHOICES
from lstmgen.errors import LstmgenError

logger = logging.getLogger("lstmgen")


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
    add_adapt_flags(p, default="off", what="also score with the model adapting to the text as it reads it, "
                                           "strictly online; the plain score is printed beside it")
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
    p.add_argument("--script", default="keep", choices=SCRIPT_CHOICES,
                   help="write in simplified or traditional characters (OpenCC); keep: the run's own. Prompts are "
                        "always converted to the script the run trained on")
    p.add_argument("--context", metavar="FILE",
                   help="read this text (a chapter, say) first, adapting to it as --adapt says, then continue "
                        "the prompt after it")
    add_adapt_flags(p, default="both", what="with --context, how the model adapts to it")
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

    inspect_command.add_command(sub)
    tool_commands.add_commands(sub)  # serve, sweep, plot, compare
    return parser


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
