"""What a sweep measures of each run, and the rows of results.csv and curves.csv.

A finished run's metrics hold its speed, memory, gradients and scores; ``measure_run`` adds what they
do not: a generated sample, and the training and validation loss at the best weights scored alike,
whose difference is the generalisation gap. ``summarize_run`` makes one results.csv row of it all.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lstmgen.errors import LstmgenError
from lstmgen.experiments.sweep_plan import PlannedRun

GAP_TOKENS = 50_000  # train and valid tokens scored at the best weights for the generalisation gap
SAMPLE_FILE, MEASURES_FILE, FAILED_FILE = "sample.txt", "sweep_measures.json", "sweep_failed.txt"
RESULT_COLUMNS = (
    "run", "status", "steps", "epochs_trained", "tokens", "seconds", "seconds_per_epoch", "tokens_per_s",
    "peak_memory_mb", "grad_norm_median", "grad_norm_p95", "clip_fraction", "best_valid_perplexity",
    "best_valid_bits_per_char", "final_train_loss", "final_valid_nll_per_token", "train_nll_per_token",
    "valid_nll_per_token", "generalisation_gap", "test_perplexity", "test_bits_per_char", "test_open_bits_per_char",
    "parameters", "error",
)
CURVE_COLUMNS = ("run", "step", "epoch", "tokens", "seconds", "lr", "train_loss", "valid_perplexity",
                 "valid_bits_per_char", "grad_norm_median", "grad_norm_p95", "clip_fraction")


def measure_run(run_dir: Path, *, sample_length: int, sample_seed: int) -> dict[str, Any]:
    """What a finished run's metrics do not hold: a generated sample, and train vs valid loss at the best weights.

    Both losses are scored the same way (eval mode, the weights kept as best on validation, the same
    number of tokens taken evenly across each split, so across every document), so their difference
    is the generalisation gap and nothing else.
    """
    from lstmgen.device import pick_device
    from lstmgen.evaluation.score import score_ids
    from lstmgen.files import write_json
    from lstmgen.generation.generate import GenerateConfig, generate
    from lstmgen.model.run_dir import load_run

    run = load_run(run_dir)
    try:
        run.model.to(pick_device(run.config.train.device))
    except LstmgenError:  # trained on a device this machine lacks: measure on the CPU
        pass
    sample = generate(run.model, run.tokenizer, run.vocab, [""],  # fp32: the model as trained, on any CPU
                      GenerateConfig(length=sample_length, seed=sample_seed, precision="fp32"))[0]
    (run_dir / SAMPLE_FILE).write_text(sample + "\n", encoding="utf-8")
    measures: dict[str, Any] = {"sample": sample, "sample_seed": sample_seed, "sample_length": sample_length}
    corpus = run.info.get("corpus")
    if corpus and Path(corpus).exists():
        data = run.prepared(corpus)
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
    row: dict[str, Any] = {"run": planned.name, **planned.values, "status": status}
    if (run_dir / FAILED_FILE).is_file():
        row["error"] = (run_dir / FAILED_FILE).read_text(encoding="utf-8").strip()
    row.update(run_scores(run_dir))
    if (run_dir / MEASURES_FILE).is_file():
        measures = json.loads((run_dir / MEASURES_FILE).read_text(encoding="utf-8"))
        row["sample"] = measures.get("sample")
        if "train_nll_per_token" in measures:
            row.update(train_nll_per_token=measures["train_nll_per_token"],
                       valid_nll_per_token=measures["valid_nll_per_token"],
                       generalisation_gap=measures["valid_nll_per_token"] - measures["train_nll_per_token"])
    return row


def run_scores(run_dir: Path) -> dict[str, Any]:
    """What any run's metrics.jsonl and config.json say of it: steps, time, speed, memory, gradients
    and its best validation and test scores (keys as in RESULT_COLUMNS; those it has not reached are
    left out)."""
    from lstmgen.model.run_dir import read_metrics

    row: dict[str, Any] = {}
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
        row.update(steps=last["step"], epochs_trained=last["epoch"], tokens=last["tokens"], seconds=last["seconds"],
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
    return row


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    from lstmgen.files import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)

    atomic_write(path, write)
