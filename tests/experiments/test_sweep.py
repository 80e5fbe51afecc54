"""lstmgen sweep end to end: one run per combination, results.csv, plots, report; picking a stopped sweep up."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from conftest import make_text
from lstmgen.cli.main import build_parser, main
from lstmgen.config import build_config
from lstmgen.errors import LstmgenError
from lstmgen.experiments import sweep
from lstmgen.experiments.sweep_plan import PlannedRun, parse_vary, train_arguments
from lstmgen.experiments.sweep_results import summarize_run
from lstmgen.model.run_dir import read_metrics

GRID = ["--vary", "seq_len=8,16", "--vary", "hidden_size=8,16"]
TINY = ["--preset", "tiny", "--epochs", "1", "--threads", "1", "--sample-length", "30"]
RUNS = ["seq_len=8,hidden_size=8", "seq_len=8,hidden_size=16", "seq_len=16,hidden_size=8", "seq_len=16,hidden_size=16"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "甲.txt").write_text(make_text(1, 40), encoding="utf-8")
    (folder / "乙.txt").write_text(make_text(2, 40), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def finished(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole 2 x 2 sweep, trained once for this module (each run is a child process: a few seconds)."""
    out = tmp_path_factory.mktemp("sweeps") / "grid"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LSTMGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
        assert main(["sweep", str(corpus), *GRID, *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished sweep, for tests that change it."""
    return Path(shutil.copytree(finished, tmp_path / "grid"))


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    height, width = imread(path).shape[:2]
    assert height > 100 and width > 100


def test_every_combination_is_trained_measured_and_tabled(finished: Path):
    with open(finished / "results.csv", encoding="utf-8") as f:
        header = next(csv.reader(f))
        f.seek(0)
        rows = list(csv.DictReader(f))
    assert len(header) == len(set(header))  # a varied setting and a measure never share a column
    assert [r["run"] for r in rows] == RUNS
    for row in rows:
        run = finished / "runs" / row["run"]
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        assert config["train"]["seq_len"] == int(row["seq_len"])
        assert config["model"]["hidden_size"] == int(row["hidden_size"])
        assert config["train"]["epochs"] == 1.0 and config["train"]["threads"] == 1  # fixed flags reach every run
        assert 0.9 < float(row["epochs_trained"]) <= 1.0
        test = read_metrics(run)[-1]
        assert row["status"] == "finished" and test["split"] == "test"
        assert float(row["test_bits_per_char"]) == pytest.approx(test["test_bits_per_char"])
        assert float(row["tokens_per_s"]) == pytest.approx(test["tokens_per_s"])
        assert float(row["peak_memory_mb"]) > 10 and float(row["seconds_per_epoch"]) > 0
        assert 0 < float(row["grad_norm_median"]) <= float(row["grad_norm_p95"])
        assert 0 <= float(row["clip_fraction"]) <= 1
        gap = float(row["valid_nll_per_token"]) - float(row["train_nll_per_token"])
        assert float(row["generalisation_gap"]) == pytest.approx(gap)
        sample = (run / "sample.txt").read_text(encoding="utf-8")
        assert sample.endswith("\n") and len(sample[:-1]) == 30 and "<unk>" not in sample  # the text, then a newline
    with open(finished / "curves.csv", encoding="utf-8") as f:
        curves = list(csv.DictReader(f))
    assert {c["run"] for c in curves} == set(RUNS) and all(float(c["valid_bits_per_char"]) > 0 for c in curves)
    # the same split and vocabulary for every run
    configs = [json.loads((finished / "runs" / r / "config.json").read_text(encoding="utf-8")) for r in RUNS]
    assert len({c["corpus_fingerprint"] for c in configs}) == 1 and len({c["vocab_size"] for c in configs}) == 1


def test_the_report_embeds_its_plots_and_table_and_judges_each_claim_from_the_numbers(finished: Path):
    report = (finished / "report.md").read_text(encoding="utf-8")
    links = [line[line.index("](") + 2:-1] for line in report.splitlines() if line.startswith("![")]
    assert len(links) == 6
    for link in links:
        assert_png(finished / link)
    for run in RUNS:
        assert f"| {run} |" in report
    assert "lstmgen sweep " in report and "--vary seq_len=8,16" in report
    with open(finished / "results.csv", encoding="utf-8") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    for hidden in (8, 16):
        sentences = [line for line in report.splitlines() if line.startswith(f"- With hidden_size={hidden}: ")]
        assert [s.split("**")[1][:3] for s in sentences] == ["(a)", "(b)", "(c)", "(d)", "(e)"]
        assert all("bears out" in s or "does not bear out" in s for s in sentences)
        short, long = rows[f"seq_len=8,hidden_size={hidden}"], rows[f"seq_len=16,hidden_size={hidden}"]
        speed = sentences[0]
        assert f"{float(short['tokens_per_s']):,.0f} → {float(long['tokens_per_s']):,.0f} tokens/s" in speed
        faster = float(long["seconds_per_epoch"]) > 1.05 * float(short["seconds_per_epoch"])
        assert ("does not bear out" not in speed) == faster


def test_a_stopped_sweep_keeps_finished_runs_and_continues_the_unfinished_one(copy: Path, corpus: Path, monkeypatch):
    stopped = copy / "runs" / "seq_len=16,hidden_size=16"
    metrics = stopped / "metrics.jsonl"
    lines = metrics.read_text(encoding="utf-8").splitlines(keepends=True)
    metrics.write_text("".join(lines[:-1]), encoding="utf-8")  # as if stopped before the final test
    (stopped / "sweep_measures.json").unlink()
    weights = {p: p.stat().st_mtime_ns for p in (copy / "runs").glob("*/model.safetensors") if p.parent != stopped}
    children = []
    real_child = sweep._run_child
    monkeypatch.setattr(sweep, "_run_child", lambda argv: children.append(argv) or real_child(argv))
    assert main(["sweep", str(corpus), *GRID, *TINY, "--out", str(copy)]) == 0
    assert children == [["train", "--resume", str(stopped)]]  # one child, for the unfinished run only
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    again = metrics.read_text(encoding="utf-8").splitlines(keepends=True)
    assert again[:-1] == lines[:-1] and json.loads(again[-1])["split"] == "test"  # continued, not restarted
    assert (stopped / "sweep_measures.json").is_file()


def test_a_sweep_run_again_with_another_sample_seed_writes_every_sample_again(copy: Path, corpus: Path, monkeypatch):
    samples = {p: p.read_text(encoding="utf-8") for p in (copy / "runs").glob("*/sample.txt")}
    monkeypatch.setattr(sweep, "_run_child", lambda argv: pytest.fail(f"retrained: {argv}"))
    assert main(["sweep", str(corpus), *GRID, *TINY, "--sample-seed", "9", "--out", str(copy)]) == 0
    measures = [json.loads(p.read_text(encoding="utf-8")) for p in (copy / "runs").glob("*/sweep_measures.json")]
    assert len(measures) == 4 and {m["sample_seed"] for m in measures} == {9}  # the report's "the same seed"
    assert any(p.read_text(encoding="utf-8") != text for p, text in samples.items())


def test_a_sweep_folder_refuses_to_mix_in_other_settings(copy: Path, corpus: Path, capsys):
    before = (copy / "sweep.json").read_bytes()
    assert main(["sweep", str(corpus), *GRID, *TINY, "--lr", "0.5", "--out", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and "another --out" in err and len(err.strip().splitlines()) == 1
    assert (copy / "sweep.json").read_bytes() == before


def test_a_failed_run_is_reported_and_retried_only_when_asked(copy: Path, corpus: Path, monkeypatch, capsys):
    shutil.rmtree(copy / "runs" / "seq_len=16,hidden_size=16")
    children = []

    def diverging(argv):
        children.append(argv)
        return 2, ["step 3", "lstmgen: error: the loss became NaN or infinite at step 3"]

    monkeypatch.setattr(sweep, "_run_child", diverging)
    args = ["sweep", str(corpus), *GRID, *TINY, "--out", str(copy)]
    assert main(args) == 1
    assert "NaN" in capsys.readouterr().err
    with open(copy / "results.csv", encoding="utf-8") as f:
        row = list(csv.DictReader(f))[-1]
    assert row["status"] == "failed" and "NaN or infinite" in row["error"]
    report = (copy / "report.md").read_text(encoding="utf-8")
    assert "## Failed runs" in report and "With hidden_size=16: fewer than two finished runs" in report
    assert main(args) == 1 and len(children) == 1  # not tried again by itself
    assert main([*args, "--retry-failed"]) == 1 and len(children) == 2


def test_an_interrupted_run_stops_the_sweep_with_how_to_continue(copy: Path, corpus: Path, monkeypatch, capsys):
    shutil.rmtree(copy / "runs" / "seq_len=8,hidden_size=16")
    monkeypatch.setattr(sweep, "_run_child", lambda argv: (130, ["stopped; state saved."]))
    assert main(["sweep", str(corpus), *GRID, *TINY, "--out", str(copy)]) == 130
    err = capsys.readouterr().err
    assert "Continue with the same command" in err and "lstmgen sweep" in err
    with open(copy / "results.csv", encoding="utf-8") as f:
        statuses = [r["status"] for r in csv.DictReader(f)]
    assert statuses == ["finished", "not run", "finished", "finished"]


def test_a_varied_epochs_stays_the_setting_beside_the_epochs_trained(finished: Path):
    run = finished / "runs" / RUNS[0]
    planned = PlannedRun(RUNS[0], {"epochs": 0.5}, build_config("tiny"))  # as if epochs had been varied
    row = summarize_run(run, planned, "finished")
    assert row["epochs"] == 0.5 and 0.9 < row["epochs_trained"] <= 1.0


def test_varied_values_take_the_type_of_their_config_field():
    assert (parse_vary("seq_len=10,30").section, parse_vary("seq_len=10,30").values) == ("train", [10, 30])
    assert parse_vary("hidden-size=256,512").section == "model"
    assert parse_vary("lr=0.001,3e-3").values == [0.001, 0.003]
    assert parse_vary("tokenizer=char,word").values == ["char", "word"]
    assert parse_vary("time_budget=none,5m").values == [None, "5m"]
    assert parse_vary("adaptive_cutoffs=2000,10000;auto").values == ["2000,10000", "auto"]
    with pytest.raises(LstmgenError, match="unknown setting"):
        parse_vary("colour=red,blue")


def test_switches_and_exact_numbers_reach_each_run_as_the_sweep_asked():
    assert parse_vary("locked_dropout=true,false").values == [True, False]
    with pytest.raises(LstmgenError, match="true or false"):
        parse_vary("locked_dropout=maybe")
    config = build_config("tiny", {"model": {"locked_dropout": True}, "train": {"lr": 0.0012345678}})
    arguments = train_arguments("corpus", Path("run"), config)
    assert "--locked-dropout" in arguments and "--lr=0.0012345678" in arguments  # not =True, not 0.00123457
    parsed = build_parser().parse_args(arguments)
    assert parsed.locked_dropout is True and parsed.lr == 0.0012345678
    assert not [a for a in train_arguments("corpus", Path("run"), build_config("tiny")) if "dropout" in a]


def test_a_switch_a_preset_turns_on_can_be_turned_off(tmp_path, monkeypatch):
    from lstmgen.config import PRESETS

    switched_on = {**PRESETS["tiny"], "model": {**PRESETS["tiny"]["model"], "locked_dropout": True}}
    monkeypatch.setitem(PRESETS, "tiny", switched_on)
    config = build_config("tiny", {"model": {"locked_dropout": False}})
    arguments = train_arguments("corpus", Path("run"), config)
    assert "--no-locked-dropout" in arguments
    assert build_parser().parse_args(arguments).locked_dropout is False
    parsed = build_parser().parse_args(["train", "corpus"])
    assert parsed.locked_dropout is None and parsed.tensorboard is None  # left out: the preset says
    text = tmp_path / "novel.txt"
    text.write_text(make_text(1, 40), encoding="utf-8")
    assert main(["train", str(text), "--out", str(tmp_path / "run"), "--preset", "tiny", "--epochs", "0.2",
                 "--no-locked-dropout", "--dropout", "0.2", "--no-tensorboard"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert saved["model"]["locked_dropout"] is False and saved["train"]["tensorboard"] is False


def test_a_varied_learning_rate_is_not_overwritten_by_the_scheduled_one_in_curves_csv(corpus, tmp_path):
    out = tmp_path / "lr"
    assert main(["sweep", str(corpus), "--vary", "lr=0.01,0.02", *TINY, "--schedule", "cosine",
                 "--out", str(out)]) == 0
    with open(out / "curves.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {row["lr"] for row in rows} == {"0.01", "0.02"}
    assert all(float(row["lr_now"]) <= float(row["lr"]) for row in rows)  # the schedule's rate at that step


@pytest.mark.parametrize("extra, message", [
    (["--vary", "eval_every=10,20", "--eval-every-tokens", "640"], "not both"),
    (["--vary", "seq_lne=8,16"], "did you mean seq_len"),
    (["--vary", "seq_len=eight"], "whole numbers"),
    (["--vary", "seq_len"], "SETTING=VALUE"),
    (["--vary", "seq_len=8,8"], "listed twice"),
    (["--vary", "seq_len=0,8"], "--seq-len must be positive"),
    (["--vary", "seq_len=8,16", "--seq-len", "8"], "both varied and fixed"),
])
def test_bad_sweeps_end_with_one_clear_line_before_training(extra, message, tiny_corpus, tmp_path, capsys):
    assert main(["sweep", str(tiny_corpus), *extra, "--preset", "tiny", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s" / "runs").exists()


def test_curves_csv_takes_every_field_a_metrics_record_holds(finished, corpus, tmp_path, monkeypatch):
    # a measure some later lstmgen adds to its records: the sweep's curves.csv takes it as it comes
    out = tmp_path / "grid"
    shutil.copytree(finished, out)
    for run in RUNS:
        metrics = out / "runs" / run / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
        metrics.write_text("".join(json.dumps({**r, "new_measure": 0.25} if "split" not in r else r) + "\n"
                                   for r in records), encoding="utf-8")
    monkeypatch.setenv("LSTMGEN_CACHE", str(tmp_path / "cache"))
    assert main(["sweep", str(corpus), *GRID, *TINY, "--out", str(out)]) == 0  # finished runs: only tabled again
    with open(out / "curves.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= len(RUNS) and all(row["new_measure"] == "0.25" for row in rows)
