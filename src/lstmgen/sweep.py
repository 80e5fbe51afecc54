"""Experiments over settings: one run per combination, measured, tabled, plotted and reported.

    lstmgen sweep CORPUS --vary seq_len=10,30,60,120 [--vary hidden_size=256,512] --out sweeps/NAME

    sweeps/NAME/
      sweep.json              what was asked for and the command that asks for it again
      runs/seq_len=10/        an ordinary run directory per combination, plus sample.txt and
                              sweep_measures.json (generated sample, train/valid loss at the best weights)
      results.csv             one row per run: speed, memory, gradients, perplexity, bits/char, gap
      curves.csv              one row per evaluation of every run: the learning curves
      report.md, report/      the Markdown report and its PNG plots (see lstmgen.report)

Each run trains in a child process (``python -m lstmgen train``): a process's peak memory only
grows, so runs sharing one process would inherit each other's peaks. Runs go one after another on
the same split and the same token cache. Run the same command again after an interruption: finished
runs (their metrics.jsonl ends with the test record) are kept as they are, an unfinished run that
saved a state continues exactly where it stopped (``train --resume``; its clock and token count carry
on), and one that never saved a state starts over.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import difflib
import itertools
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from lstmgen.config import PRESETS, SECTIONS, RunConfig, build_config
from lstmgen.errors import LstmgenError

logger = logging.getLogger(__name__)

GAP_TOKENS = 50_000  # train and valid tokens scored at the best weights for the generalisation gap
SAMPLE_FILE, MEASURES_FILE, FAILED_FILE = "sample.txt", "sweep_measures.json", "sweep_failed.txt"
RESULT_COLUMNS = (
    "run", "status", "steps", "epochs", "tokens", "seconds", "seconds_per_epoch", "tokens_per_s",
    "peak_memory_mb", "grad_norm_median", "grad_norm_p95", "clip_fraction", "best_valid_perplexity",
    "best_valid_bits_per_char", "final_train_loss", "final_valid_nll_per_token", "train_nll_per_token",
    "valid_nll_per_token", "generalisation_gap", "test_perplexity", "test_bits_per_char", "test_open_bits_per_char",
    "parameters", "error",
)
CURVE_COLUMNS = ("run", "step", "epoch", "tokens", "seconds", "lr", "train_loss", "valid_perplexity",
                 "valid_bits_per_char", "grad_norm_median", "grad_norm_p95", "clip_fraction")


class SweepInterrupted(Exception):
    """A run was stopped by SIGINT/SIGTERM after saving its state; the sweep can be continued."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


@dataclass
class Setting:
    """One varied setting: where it lives in the config and the values it takes, in order."""

    section: str  # a key of config.SECTIONS
    name: str  # the config field, e.g. "seq_len"
    values: list[Any]


@dataclass
class SweepSpec:
    """What a sweep trains: the corpus, the varied settings, and everything held fixed."""

    corpus: str
    settings: list[Setting]
    preset: str = "default"
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> {field: value} for every run
    eval_every_tokens: int = 0  # validate every this many training tokens, whatever seq_len (0: per epoch)
    sample_length: int = 200  # characters of the sample generated with each finished run
    sample_seed: int = 1  # seed of that sample: every run writes from the same random numbers


@dataclass
class SweepResult:
    """What a sweep wrote."""

    report: Path  # the Markdown report
    results: Path  # results.csv
    rows: list[dict[str, Any]]  # the rows of results.csv, values typed

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("status") == "failed"]


@dataclass
class PlannedRun:
    name: str  # folder name under runs/, e.g. "seq_len=30,hidden_size=256"
    values: dict[str, Any]  # varied setting -> value
    config: RunConfig


# ------------------------------------------------------------------------------ planning


def find_setting(name: str) -> tuple[str, type, bool]:
    """Section, value type and whether None is allowed, of a config field named ``name`` (or ``name-with-dashes``)."""
    key = name.strip().replace("-", "_")
    known = []
    for section, kind in SECTIONS.items():
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            known.append(f.name)
            if f.name == key:
                args = typing.get_args(hints[key])
                base = next((a for a in args if a is not type(None)), hints[key])
                return section, base, type(None) in args
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else \
        "settings are training flags without the dashes, e.g. seq_len"
    raise LstmgenError(f"--vary: unknown setting {name!r}; {hint}")


def parse_vary(text: str) -> Setting:
    """``"seq_len=10,30,60"`` -> Setting; values take the field's type (``;`` separates values that hold commas)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip() or not raw.strip():
        raise LstmgenError(f"--vary {text!r}: write it as SETTING=VALUE,VALUE,... e.g. seq_len=10,30,60")
    section, kind, optional = find_setting(name)
    key = name.strip().replace("-", "_")
    values: list[Any] = []
    for part in (p.strip() for p in raw.split(";" if ";" in raw else ",")):
        if optional and part.lower() == "none":
            values.append(None)
            continue
        try:
            values.append(kind(part) if kind in (int, float) else part)
        except ValueError:
            what = "whole numbers" if kind is int else "numbers"
            raise LstmgenError(f"--vary {key}: {part!r} is not valid; {key} takes {what}")
    if len(set(values)) != len(values):
        raise LstmgenError(f"--vary {key}: a value is listed twice")
    return Setting(section=section, name=key, values=values)


def _value_text(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


_SAFE = re.compile(r"[^\w.+-]")  # characters kept in a run folder name


def run_name(values: dict[str, Any]) -> str:
    """The run folder for a combination: ``seq_len=30,hidden_size=256`` (odd characters become _)."""
    return ",".join(f"{k}={_SAFE.sub('_', _value_text(v))}" for k, v in values.items())


def plan(spec: SweepSpec) -> list[PlannedRun]:
    """Every combination of the varied values, in the order given, with its validated config."""
    if not spec.settings:
        raise LstmgenError("give at least one --vary SETTING=VALUE,VALUE,...")
    if spec.preset not in PRESETS:
        raise LstmgenError(f"unknown preset {spec.preset!r}: choose one of {', '.join(PRESETS)}")
    names = [s.name for s in spec.settings]
    if len(set(names)) != len(names):
        raise LstmgenError("--vary: each setting may be varied once (list all its values in one --vary)")
    fixed = {k for values in spec.fixed.values() for k, v in values.items() if v is not None}
    if fixed & set(names):
        raise LstmgenError(f"{', '.join(sorted(fixed & set(names)))}: both varied and fixed; drop one")
    if spec.eval_every_tokens < 0:
        raise LstmgenError("--eval-every-tokens must be 0 or positive")
    if spec.eval_every_tokens and "eval_every" in fixed:
        raise LstmgenError("give --eval-every or --eval-every-tokens, not both")
    runs, seen = [], set()
    for combo in itertools.product(*(s.values for s in spec.settings)):
        values = dict(zip(names, combo))
        overrides = {section: dict(v) for section, v in spec.fixed.items()}
        for setting, value in zip(spec.settings, combo):
            overrides.setdefault(setting.section, {})[setting.name] = value
        name = run_name(values)
        try:
            config = build_config(spec.preset, overrides)
        except LstmgenError as err:
            raise LstmgenError(f"{name}: {err}")
        if spec.eval_every_tokens:  # the same evaluation points in tokens, whatever tokens a step takes
            step_tokens = config.train.batch_size * config.train.seq_len
            config.train.eval_every = max(1, round(spec.eval_every_tokens / step_tokens))
        if name in seen:
            raise LstmgenError(f"two combinations share the folder name {name!r}; use distinct values")
        seen.add(name)
        runs.append(PlannedRun(name=name, values=values, config=config))
    return runs


def command_line(spec: SweepSpec, out: Union[str, Path], report: Optional[Union[str, Path]] = None) -> str:
    """The ``lstmgen sweep`` command that asks for this sweep."""
    parts = ["lstmgen", "sweep", spec.corpus]
    for s in spec.settings:
        joiner = ";" if any("," in _value_text(v) for v in s.values) else ","
        parts += ["--vary", f"{s.name}={joiner.join(_value_text(v) for v in s.values)}"]
    parts += ["--preset", spec.preset]
    for values in spec.fixed.values():
        parts += [f"--{k.replace('_', '-')}={_value_text(v)}" for k, v in values.items() if v is not None]
    if spec.eval_every_tokens:
        parts.append(f"--eval-every-tokens={spec.eval_every_tokens}")
    if spec.sample_length != SweepSpec.sample_length or spec.sample_seed != SweepSpec.sample_seed:
        parts += [f"--sample-length={spec.sample_length}", f"--sample-seed={spec.sample_seed}"]
    parts += ["--out", str(out)] + (["--report", str(report)] if report else [])
    return " ".join(shlex.quote(p) for p in parts)


def train_arguments(corpus: str, run_dir: Path, config: RunConfig) -> list[str]:
    """``lstmgen train`` arguments that rebuild ``config``: the preset plus every field that differs from it."""
    base = build_config(config.preset).to_dict()
    wanted = config.to_dict()
    flags = [f"--{key.replace('_', '-')}={_value_text(value)}"
             for section in SECTIONS for key, value in wanted[section].items()
             if value != base[section][key] and value is not None]
    return ["train", corpus, "--out", str(run_dir), "--preset", config.preset, *flags]


# ------------------------------------------------------------------------------ running


def run_status(run_dir: Path) -> str:
    """new | finished | failed | resumable (has a saved state) | restart (started, but nothing to resume)."""
    from lstmgen.runs import CONFIG, STATE_DIR, read_metrics

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


def measure_run(run_dir: Path, *, sample_length: int, sample_seed: int) -> dict[str, Any]:
    """What a finished run's metrics do not hold: a generated sample, and train vs valid loss at the best weights.

    Both losses are scored the same way (eval mode, the weights kept as best on validation, the same
    number of tokens taken evenly across each split, so across every document), so their difference
    is the generalisation gap and nothing else.
    """
    from lstmgen.evaluate import score_ids
    from lstmgen.generate import GenerateConfig, generate
    from lstmgen.pipeline import prepare
    from lstmgen.runs import load_run, write_json
    from lstmgen.train import pick_device

    run = load_run(run_dir)
    try:
        run.model.to(pick_device(run.config.train.device))
    except LstmgenError:  # trained on a device this machine lacks: measure on the CPU
        pass
    sample = generate(run.model, run.tokenizer, run.vocab, [""],
                      GenerateConfig(length=sample_length, seed=sample_seed))[0]
    (run_dir / SAMPLE_FILE).write_text(sample + "\n", encoding="utf-8")
    measures: dict[str, Any] = {"sample": sample, "sample_seed": sample_seed}
    corpus = run.info.get("corpus")
    if corpus and Path(corpus).exists():
        data = prepare(corpus, run.config.data, run.config.tokenizer, vocab=run.vocab, tokenizer=run.tokenizer)
        count = min(len(data.ids["train"]), len(data.ids["valid"]), GAP_TOKENS)
        if count >= 2:
            options = {"characters": count}
            train = score_ids(run.model, spread(data.ids["train"], count), **options)
            valid = score_ids(run.model, spread(data.ids["valid"], count), **options)
            measures.update(train_nll_per_token=train.nll / max(train.tokens, 1),
                            valid_nll_per_token=valid.nll / max(valid.tokens, 1), gap_tokens=count)
    write_json(run_dir / MEASURES_FILE, measures)
    return measures


def spread(ids: Any, count: int, pieces: int = 16) -> Any:
    """``count`` tokens of ``ids`` as ``pieces`` equal stretches spaced evenly from its start to its end.

    A split is its documents one after another: its first or last tokens would all come from one novel.
    """
    import numpy as np

    if count >= len(ids):
        return ids
    size = max(count // pieces, 1)
    starts = np.linspace(0, len(ids) - size, max(count // size, 1)).astype(int)
    return np.concatenate([ids[start:start + size] for start in starts])


def _weighted_median(values: list[float], weights: list[float]) -> float:
    pairs = sorted(zip(values, weights))
    half, total = sum(weights) / 2, 0.0
    for value, weight in pairs:
        total += weight
        if total >= half:
            return value
    return pairs[-1][0]


def summarize_run(run_dir: Path, planned: PlannedRun, status: str) -> dict[str, Any]:
    """One results.csv row from a run's metrics, config and measures."""
    from lstmgen.runs import read_metrics

    row: dict[str, Any] = {"run": planned.name, **planned.values, "status": status}
    if (run_dir / FAILED_FILE).is_file():
        row["error"] = (run_dir / FAILED_FILE).read_text(encoding="utf-8").strip()
    records = read_metrics(run_dir)
    evals = [r for r in records if r.get("split") is None]
    test = records[-1] if records and records[-1].get("split") == "test" else {}
    config_file = run_dir / "config.json"
    info = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    if evals:
        # each record summarises the steps since the one before: weigh it by how many there were
        weights = [max(r["step"] - (p["step"] if p else 0), 0) for p, r in zip([None] + evals[:-1], evals)]
        if sum(weights):
            row["grad_norm_median"] = _weighted_median([r["grad_norm_median"] for r in evals], weights)
            row["grad_norm_p95"] = sum(r["grad_norm_p95"] * w for r, w in zip(evals, weights)) / sum(weights)
            row["clip_fraction"] = sum(r["clip_fraction"] * w for r, w in zip(evals, weights)) / sum(weights)
        last = evals[-1]
        row.update(steps=last["step"], epochs=last["epoch"], tokens=last["tokens"], seconds=last["seconds"],
                   final_train_loss=last.get("train_loss"))
        scored = [r for r in evals if "valid_nll" in r]
        if scored:
            best = min(scored, key=lambda r: r["valid_nll"])
            row.update(best_valid_perplexity=best["valid_perplexity"],
                       best_valid_bits_per_char=best["valid_bits_per_char"],
                       final_valid_nll_per_token=scored[-1]["valid_nll"] / max(scored[-1]["valid_tokens"], 1))
    peaks = [r["peak_memory_mb"] for r in records if r.get("peak_memory_mb") is not None]
    if peaks:  # after a resume, each process reports its own peak: the run's is the largest
        row["peak_memory_mb"] = max(peaks)
    if test:
        row.update(tokens_per_s=test["tokens_per_s"], test_perplexity=test.get("test_perplexity"),
                   test_bits_per_char=test.get("test_bits_per_char"),
                   test_open_bits_per_char=test.get("test_open_bits_per_char"), seconds=test["seconds"])
        train_tokens = info.get("split_tokens", {}).get("train")
        if train_tokens and test["tokens_per_s"]:
            row["seconds_per_epoch"] = train_tokens / test["tokens_per_s"]
    row["parameters"] = info.get("parameters")
    if (run_dir / MEASURES_FILE).is_file():
        measures = json.loads((run_dir / MEASURES_FILE).read_text(encoding="utf-8"))
        row["sample"] = measures.get("sample")
        if "train_nll_per_token" in measures:
            row.update(train_nll_per_token=measures["train_nll_per_token"],
                       valid_nll_per_token=measures["valid_nll_per_token"],
                       generalisation_gap=measures["valid_nll_per_token"] - measures["train_nll_per_token"])
    return row


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    from lstmgen.runs import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)

    atomic_write(path, write)


def _machine() -> str:
    import platform

    import torch

    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    return text + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")


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
    from lstmgen.runs import RunLock, write_json

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
        from lstmgen.report import write_report

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
    if not (run_dir / MEASURES_FILE).is_file():
        logger.info("%s %s: writing a sample and scoring train and valid text for the gap", label, run.name)
        measure_run(run_dir, sample_length=spec.sample_length, sample_seed=spec.sample_seed)


def _collect(out: Path, planned: list[PlannedRun]) -> tuple[list[dict[str, Any]], dict[str, list[dict]]]:
    """results.csv and curves.csv from every run folder there is; returns the rows and the curves."""
    from lstmgen.runs import read_metrics

    rows, curves = [], {}
    for run in planned:
        run_dir = out / "runs" / run.name
        status = run_status(run_dir)
        rows.append(summarize_run(run_dir, run, status) if status != "new" else
                    {"run": run.name, **run.values, "status": "not run"})
        curves[run.name] = [r for r in read_metrics(run_dir) if r.get("split") is None]
    settings = list(planned[0].values)
    _write_csv(out / "results.csv", ["run", *settings, *RESULT_COLUMNS[1:]], rows)
    _write_csv(out / "curves.csv", ["run", *settings, *CURVE_COLUMNS[1:]],
               [{"run": name, **run.values, **r} for run in planned for name in [run.name] for r in curves[name]])
    return rows, curves


# ------------------------------------------------------------------------------ command line


def add_commands(sub: Any) -> None:
    """Register ``lstmgen sweep`` and ``lstmgen plot``."""
    from lstmgen.cli import add_dataclass_flags

    p = sub.add_parser("sweep", help="train one run per combination of settings; table, plots and a report",
                       description="Train one run per combination of the --vary values, one after another, on the "
                                   "same split and token cache. Run the same command again to continue a stopped "
                                   "sweep: finished runs are kept, unfinished ones continue from their saved state.")
    p.add_argument("corpus", help="a .txt file, a folder of them, or a folder with an inf.txt index")
    p.add_argument("--vary", action="append", required=True, metavar="SETTING=V1,V2,...",
                   help="a setting and its values, e.g. seq_len=10,30,60 "
                        "(repeat to vary several: every combination runs)")
    p.add_argument("--out", required=True, help="sweep folder: runs/, results.csv, curves.csv, report.md, plots/")
    p.add_argument("--report", help="write the Markdown report here instead of OUT/report.md "
                                    "(its plots go to a folder beside it with the same name)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="starting settings (default: default)")
    p.add_argument("--eval-every-tokens", type=int, default=0,
                   help="validate every N training tokens, the same points whatever seq_len (0: once per epoch)")
    p.add_argument("--sample-length", type=int, default=200, help="characters of each run's sample")
    p.add_argument("--sample-seed", type=int, default=1, help="seed of each run's sample")
    p.add_argument("--retry-failed", action="store_true", help="train runs that failed before again")
    for kind in SECTIONS.values():
        add_dataclass_flags(p, kind)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("plot", help="learning curves of runs side by side: "
                                    "valid bits/char against time and tokens, train loss")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", default="curves.png", help="PNG file to write (default: curves.png)")
    p.set_defaults(func=cmd_plot)


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
    from lstmgen.report import plot_learning_curves

    print(f"written to {plot_learning_curves([Path(r) for r in args.runs], Path(args.out))}")
    return 0
