"""Experiments over settings: one run per combination, measured, tabled, plotted and reported.

    lstmgen sweep CORPUS --vary seq_len=10,30,60,120 [--vary hidden_size=256,512] --out sweeps/NAME

    sweeps/NAME/
      sweep.json              what was asked for and the command that asks for it again
      runs/seq_len=10/        an ordinary run directory per combination, plus sample.txt and
                              sweep_measures.json (generated sample, train/valid loss at the best weights)
      results.csv             one row per run: speed, memory, gradients, perplexity, bits/char, gap
      curves.csv              one row per evaluation of every run: the learning curves
      report.md, report/      the Markdown report and its PNG plots (see lstmgen.experiments.report)

Each run trains in a child process (``python -m lstmgen train``): a process's peak memory only
grows, so runs sharing one process would inherit each other's peaks. Runs go one after another on
the same split and the same token cache. Run the same command again after an interruption: finished
runs (their metrics.jsonl ends with the test record) are kept as they are, an unfinished run that
saved a state continues exactly where it stopped (``train --resume``; its clock and token count carry
on), and one that never saved a state starts over.

What to train is planned in ``sweep_plan``; what is measured and tabled of each run, in ``sweep_results``.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from lstmgen.config import SECTIONS
from lstmgen.errors import LstmgenError
from lstmgen.experiments.sweep_plan import PlannedRun, SweepSpec, command_line, plan, train_arguments
from lstmgen.experiments.sweep_results import (
    CURVE_COLUMNS,
    FAILED_FILE,
    MEASURES_FILE,
    RESULT_COLUMNS,
    measure_run,
    summarize_run,
    write_csv,
)

logger = logging.getLogger(__name__)


class SweepInterrupted(Exception):
    """A run was stopped by SIGINT/SIGTERM after saving its state; the sweep can be continued."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


@dataclass
class SweepResult:
    """What a sweep wrote."""

    report: Path  # the Markdown report
    results: Path  # results.csv
    rows: list[dict[str, Any]]  # the rows of results.csv, values typed

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("status") == "failed"]


# ------------------------------------------------------------------------------ running


def run_status(run_dir: Path) -> str:
    """new | finished | failed | resumable (has a saved state) | restart (started, but nothing to resume)."""
    from lstmgen.model.run_dir import CONFIG, read_metrics
    from lstmgen.training.checkpoints import STATE_DIR

    if (run_dir / FAILED_FILE).is_file():  # before the config check: a run can fail before writing it
        return "failed"
    if not (run_dir / CONFIG).is_file():
        return "new"
    records = read_metrics(run_dir)
    if records and records[-1].get("split") == "test":
        return "finished"
    if any((run_dir / STATE_DIR).glob("*.pt")):
        return "resumable"
    return "restart"


def _check_same_settings(run_dir: Path, planned: PlannedRun, corpus: Path) -> None:
    """An existing run folder must hold this very run, or reusing it would mix two experiments."""
    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    wanted = json.loads(json.dumps(planned.config.to_dict()))
    differ = [f"{section}.{k}: {saved.get(section, {}).get(k)!r} there, {v!r} now"
              for section in SECTIONS for k, v in wanted[section].items() if saved.get(section, {}).get(k) != v]
    if saved.get("corpus") and Path(saved["corpus"]) != corpus.resolve():
        differ.insert(0, f"corpus: {saved['corpus']} there, {corpus.resolve()} now")
    if differ:
        raise LstmgenError(f"{run_dir}: was trained with other settings ({'; '.join(differ[:3])}); "
                           f"run the sweep with its old settings or choose another --out")


def _run_child(argv: list[str]) -> tuple[int, list[str]]:
    """Run ``python -m lstmgen ARGV``, echoing its output to stderr; returns its exit code and last lines.

    Ctrl-C reaches the child too (same process group): it saves its state and exits, and we wait
    for that instead of killing it mid-save. A SIGTERM sent to the sweep alone is passed on to it.
    """
    quiet = logging.getLogger("lstmgen").getEffectiveLevel() > logging.INFO
    command = [sys.executable, "-m", "lstmgen", *(["-q"] if quiet else []), *argv]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True, encoding="utf-8", errors="replace")
    tail: collections.deque[str] = collections.deque(maxlen=20)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    try:
        while True:
            try:
                for line in proc.stdout:  # type: ignore[union-attr]
                    sys.stderr.write(line)
                    tail.append(line.rstrip("\n"))
                break
            except KeyboardInterrupt:
                continue  # the child is saving; a second Ctrl-C stops it, and then its output ends
        code = proc.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return code, list(tail)


def _machine() -> str:
    import platform

    import torch

    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    text += f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return text + f"; this report written on {datetime.date.today()}"


def run_sweep(spec: SweepSpec, out: Union[str, Path], *, report: Union[str, Path, None] = None,
              retry_failed: bool = False) -> SweepResult:
    """Train (or pick up) every run of the sweep, then write results.csv, curves.csv, plots and the report.

    Args:
        out: the sweep folder.
        report: where the Markdown report goes (its plots go to a folder named after it);
            ``OUT/report.md`` when None.
        retry_failed: try runs that failed before (NaN loss, a crash) again; else they are reported as failed.

    Returns:
        where the report and results.csv are, and the results; failed runs are in the results, not raised.

    Raises:
        SweepInterrupted: a run was stopped by a signal after saving its state; results so far are written.
    """
    from lstmgen.files import write_json
    from lstmgen.training.lock import RunLock

    out = Path(out)
    corpus = Path(spec.corpus)
    if not corpus.exists():
        raise LstmgenError(f"{corpus}: no such file or folder")
    planned = plan(spec)
    report_path = Path(report) if report else out / "report.md"
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(out).__enter__()
    except LstmgenError:
        raise LstmgenError(f"{out}: another lstmgen sweep is running in this folder")
    try:
        for run in planned:  # refuse before anything is written or trained
            if run_status(out / "runs" / run.name) != "new" and (out / "runs" / run.name / "config.json").is_file():
                _check_same_settings(out / "runs" / run.name, run, corpus)
        meta = {"command": command_line(spec, out, report), "corpus": spec.corpus, "preset": spec.preset,
                "settings": [s.name for s in spec.settings], "fixed": spec.fixed, "machine": _machine(),
                "eval_every_tokens": spec.eval_every_tokens, "runs": [p.name for p in planned]}
        write_json(out / "sweep.json", meta)
        interrupted: Optional[SweepInterrupted] = None
        for index, run in enumerate(planned, 1):
            try:
                _one_run(out / "runs" / run.name, run, spec, f"[{index}/{len(planned)}]", retry_failed)
            except SweepInterrupted as stop:
                interrupted = stop
                break
        rows, curves = _collect(out, planned)
        from lstmgen.experiments.report import write_report

        write_report(report_path, rows=rows, curves=curves, settings=[s.name for s in spec.settings], meta=meta,
                     results_csv=out / "results.csv")
        if interrupted is not None:
            raise interrupted
        return SweepResult(report=report_path, results=out / "results.csv", rows=rows)
    finally:
        lock.__exit__()


def _one_run(run_dir: Path, run: PlannedRun, spec: SweepSpec, label: str, retry_failed: bool) -> None:
    """Train, continue or keep one run; then measure it once it is finished."""
    import shutil

    status = run_status(run_dir)
    if status == "failed" and retry_failed:
        (run_dir / FAILED_FILE).unlink()
        status = run_status(run_dir)
    if status == "failed":
        logger.warning("%s %s: failed before (see %s); --retry-failed tries it again", label, run.name, FAILED_FILE)
        return
    if status != "finished":
        if status in ("new", "restart") and run_dir.exists():
            shutil.rmtree(run_dir)  # started but never saved a state: nothing worth keeping
        resume = status == "resumable"
        argv = ["train", "--resume", str(run_dir)] if resume else train_arguments(spec.corpus, run_dir, run.config)
        logger.info("%s %s: %s", label, run.name, "continuing from its saved state" if resume else "training")
        code, tail = _run_child(argv)
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM):
            raise SweepInterrupted(abs(code) % 128 if code > 0 else -code)
        if code != 0 or run_status(run_dir) != "finished":
            message = next((line for line in reversed(tail) if line.startswith("lstmgen: error:")),
                           next((line for line in reversed(tail) if line.strip()), f"exit code {code}"))
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / FAILED_FILE).write_text(message + "\n", encoding="utf-8")
            logger.warning("%s %s failed: %s", label, run.name, message)
            return
    else:
        logger.info("%s %s: finished before; kept", label, run.name)
    measured = json.loads((run_dir / MEASURES_FILE).read_text(encoding="utf-8")) \
        if (run_dir / MEASURES_FILE).is_file() else {}
    # every run's sample with this sweep's seed and length, as the report says, also when they changed
    if (measured.get("sample_seed"), measured.get("sample_length")) != (spec.sample_seed, spec.sample_length):
        logger.info("%s %s: writing a sample and scoring train and valid text for the gap", label, run.name)
        measure_run(run_dir, sample_length=spec.sample_length, sample_seed=spec.sample_seed)


def _collect(out: Path, planned: list[PlannedRun]) -> tuple[list[dict[str, Any]], dict[str, list[dict]]]:
    """results.csv and curves.csv from every run folder there is; returns the rows and the curves."""
    from lstmgen.model.run_dir import read_metrics

    rows, curves = [], {}
    for run in planned:
        run_dir = out / "runs" / run.name
        status = run_status(run_dir)
        rows.append(summarize_run(run_dir, run, status) if status != "new" else
                    {"run": run.name, **run.values, "status": "not run"})
        curves[run.name] = [r for r in read_metrics(run_dir) if r.get("split") is None]
    settings = list(planned[0].values)
    write_csv(out / "results.csv", ["run", *settings, *RESULT_COLUMNS[1:]], rows)
    def own(column: str) -> str:
        # a curve's own column that shares a varied setting's name (lr: the scheduled rate at that step)
        # is written as NAME_now, so the setting's value is not overwritten
        return f"{column}_now" if column in settings else column

    # the usual columns first, then whatever else the runs' records hold (a measure added to the
    # records appears here with nothing to change)
    columns = list(CURVE_COLUMNS[1:])
    for records in curves.values():
        for record in records:
            columns += [key for key in record if key not in columns]
    write_csv(out / "curves.csv", ["run", *settings, *map(own, columns)],
              [{"run": name, **run.values, **{own(k): v for k, v in r.items()}}
               for run in planned for name in [run.name] for r in curves[name]])
    return rows, curves


# ------------------------------------------------------------------------------ command line
