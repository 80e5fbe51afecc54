"""``lstmgen serve``, ``sweep``, ``plot`` and ``compare``: thin layers over serving and experiments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmgen.cli.flags import add_settings_flags
from lstmgen.config import PRECISIONS, PRESETS
from lstmgen.errors import LstmgenError

if TYPE_CHECKING:

    pass
import dataclasses
import sys

from lstmgen.config import SECTIONS
from lstmgen.experiments.compare import compare_runs, format_table
from lstmgen.experiments.sweep import SweepInterrupted, run_sweep
from lstmgen.experiments.sweep_plan import SweepSpec, command_line, parse_vary
from lstmgen.serving.app import serve


def cmd_serve(args: argparse.Namespace) -> int:
    from lstmgen.device import pick_device

    if not 0 < args.port < 65536:
        raise LstmgenError("--port must be between 1 and 65535")
    serve(args.run, host=args.host, port=args.port, device=str(pick_device(args.device)), precision=args.precision)
    return 0


def cmd_sweep(args: Any) -> int:
    spec = SweepSpec(
        corpus=args.corpus, settings=[parse_vary(v) for v in args.vary], preset=args.preset,
        fixed={name: {f.name: getattr(args, f.name) for f in dataclasses.fields(kind)
                      if getattr(args, f.name) is not None} for name, kind in SECTIONS.items()},
        eval_every_tokens=args.eval_every_tokens, sample_length=args.sample_length, sample_seed=args.sample_seed)
    spec.fixed = {k: v for k, v in spec.fixed.items() if v}
    try:
        result = run_sweep(spec, args.out, report=args.report, retry_failed=args.retry_failed)
    except SweepInterrupted as stop:
        print("stopped; finished runs are kept. Continue with the same command:\n  "
              + command_line(spec, args.out, args.report), file=sys.stderr)
        return 128 + stop.signum
    print(f"results: {result.results}")
    print(f"report:  {result.report}")
    for row in result.failed:
        print(f"failed:  {row['run']}: {row.get('error', '')}", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_plot(args: Any) -> int:
    from lstmgen.experiments.plots import plot_learning_curves

    print(f"written to {plot_learning_curves([Path(r) for r in args.runs], Path(args.out))}")
    return 0


def cmd_compare(args: Any) -> int:
    rows, notes = compare_runs([Path(r) for r in args.runs])
    if args.json:
        print(json.dumps({"runs": rows, "notes": notes}, ensure_ascii=False, indent=1))
        return 0
    print(format_table(rows))
    print("(bits per character; ranked by the test split's open-vocabulary score)")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def add_commands(sub: Any) -> None:
    """Register ``lstmgen serve``, ``sweep``, ``plot`` and ``compare``."""
    p = sub.add_parser("serve", help="a web page and HTTP API for writing with a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="weights on a CPU, as for generate (auto: int8 where torch's kernel is fast)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("sweep", help="train one run per combination of settings; table, plots and a report",
                       description="Train one run per combination of the --vary values, one after another, on the "
                                   "same split and token cache. Run the same command again to continue a stopped "
                                   "sweep: finished runs are kept, unfinished ones continue from their saved state.")
    p.add_argument("corpus", help="a .txt file, a folder of them, or a folder with an inf.txt index")
    p.add_argument("--vary", action="append", required=True, metavar="SETTING=V1,V2,...",
                   help="a setting and its values, e.g. seq_len=10,30,60 or locked_dropout=true,false; "
                        "values that hold commas are separated by ; (adaptive_cutoffs=500,2000;1000,4000); "
                        "repeat to vary several: every combination runs")
    p.add_argument("--out", required=True, help="sweep folder: runs/, results.csv, curves.csv, report.md and its plots in report/")
    p.add_argument("--report", help="write the Markdown report here instead of OUT/report.md "
                                    "(its plots go to a folder beside it with the same name)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="starting settings (default: default)")
    p.add_argument("--eval-every-tokens", type=int, default=0,
                   help="validate every N training tokens, the same points whatever seq_len (0: once per epoch)")
    p.add_argument("--sample-length", type=int, default=200, help="characters of each run's sample")
    p.add_argument("--sample-seed", type=int, default=1, help="seed of each run's sample")
    p.add_argument("--retry-failed", action="store_true", help="train runs that failed before again")
    add_settings_flags(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("plot", help="learning curves of runs side by side: "
                                    "valid bits/char against time and tokens, train loss")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", default="curves.png", help="PNG file to write (default: curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("compare", help="finished runs side by side: settings that differ, speed, memory, held-out scores",
                       description="Runs side by side from their run directories, best first by the open-vocabulary "
                                   "bits per character of their test split. Nothing is trained or scored again.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_compare)
