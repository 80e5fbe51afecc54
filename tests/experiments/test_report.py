"""The sweep report's judgements of the seed's claims, its plots, and `lstmgen plot`."""

import json
from pathlib import Path

import pytest

from lstmgen.cli.main import main
from lstmgen.errors import LstmgenError
from lstmgen.experiments import plots
from lstmgen.experiments.report import claims, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEQ_LENS = [10, 30, 60, 120]


def results(**columns: list) -> list[dict]:
    """Finished-run rows over SEQ_LENS; every column not given stays constant."""
    base = {"tokens_per_s": 1000.0, "seconds_per_epoch": 100.0, "peak_memory_mb": 500.0, "grad_norm_median": 0.5,
            "grad_norm_p95": 1.0, "clip_fraction": 0.1, "generalisation_gap": 0.1, "valid_nll_per_token": 1.5,
            "test_bits_per_char": 2.0, "test_perplexity": 8.0}
    rows = []
    for i, seq_len in enumerate(SEQ_LENS):
        row = {"run": f"seq_len={seq_len}", "seq_len": seq_len, "status": "finished", **base}
        row.update({key: values[i] for key, values in columns.items()})
        rows.append(row)
    return rows


def verdicts(sentences: list[str]) -> list[bool]:
    return ["does not bear out" not in s for s in sentences]


def test_every_claim_bears_out_when_the_numbers_go_the_claimed_way():
    rows = results(seconds_per_epoch=[100, 110, 130, 160], tokens_per_s=[1000, 900, 770, 625],
                   peak_memory_mb=[500, 520, 560, 640], grad_norm_p95=[1.0, 1.1, 1.3, 1.6],
                   clip_fraction=[0.1, 0.12, 0.2, 0.3], generalisation_gap=[0.1, 0.12, 0.2, 0.3],
                   test_bits_per_char=[2.0, 1.8, 1.7, 1.75], test_perplexity=[8.0, 6.9, 6.5, 6.7])
    sentences = claims(rows, ["seq_len"])
    assert [s.split("**")[1][:3] for s in sentences] == ["(a)", "(b)", "(c)", "(d)", "(e)"]
    assert verdicts(sentences) == [True] * 5
    assert "100.0 s at seq_len=10 and 160.0 s at seq_len=120 (1,000 → 625 tokens/s)" in sentences[0]
    assert "500.0 MB at seq_len=10 to 640.0 MB at seq_len=120 (+28.0%)" in sentences[1]
    assert "1.700 bits/char (perplexity 6.500) at seq_len=60" in sentences[4]


def test_no_claim_bears_out_when_the_numbers_go_the_other_way():
    rows = results(seconds_per_epoch=[160, 130, 110, 100], tokens_per_s=[625, 770, 900, 1000],
                   peak_memory_mb=[500, 500, 501, 502], grad_norm_p95=[1.6, 1.3, 1.1, 1.0],
                   clip_fraction=[0.3, 0.2, 0.12, 0.1], generalisation_gap=[0.1, 0.1, 0.105, 0.11],
                   test_bits_per_char=[1.7, 1.8, 1.9, 2.0])
    sentences = claims(rows, ["seq_len"])
    assert verdicts(sentences) == [False] * 5
    assert "the shortest context scored best" in sentences[4]


@pytest.mark.parametrize("bpc, words", [
    ([2.0, 1.8, 1.6, 1.4], "bears out only in part"),  # still improving at the longest
    ([2.0, 1.8, 1.6, 1.595], "levelled off"),
    ([2.0, 1.999, 1.998, 1.997], "does not bear out — longer context hardly helped"),
])
def test_the_turning_point_of_perplexity_is_read_from_the_curve(bpc, words):
    assert words in claims(results(test_bits_per_char=bpc), ["seq_len"])[4]


def test_claims_are_judged_per_group_of_the_other_settings_and_need_two_finished_runs():
    rows = results()
    for row in rows:
        row["hidden_size"] = 256
    other = [dict(r, hidden_size=512, run=r["run"] + ",512", status="failed") for r in rows[:3]] + \
            [dict(rows[3], hidden_size=512, run="last,512")]
    sentences = claims(rows + other, ["seq_len", "hidden_size"])
    assert sum(s.startswith("With hidden_size=256: **(") for s in sentences) == 5
    assert [s for s in sentences if "512" in s] == ["With hidden_size=512: fewer than two finished runs, "
                                                    "so no claim can be judged yet."]
    assert claims(rows, ["hidden_size"]) == [
        "The seed's claims are about the sequence length, which this sweep does not vary: none is checked."]


def curve(seconds: float, bpc: float, step: int) -> dict:
    return {"step": step, "epoch": step / 10, "tokens": step * 64, "seconds": seconds, "train_loss": bpc * 0.7,
            "valid_bits_per_char": bpc, "valid_perplexity": 2 ** bpc}


def test_write_report_embeds_its_plots_and_lists_failed_runs(tmp_path: Path):
    rows = results(test_bits_per_char=[2.0, 1.8, 1.7, 1.75], seconds=[300.0, 300.2, 40.0, 120.0])
    rows[2].update(status="failed", error="lstmgen: error: the loss became NaN")
    curves = {r["run"]: [curve(10, 3.0, 10), curve(20, r["test_bits_per_char"], 20)] for r in rows}
    meta = {"command": "lstmgen sweep corpus --vary seq_len=10,30,60,120 --out sweeps/x", "corpus": "corpus",
            "preset": "tiny", "fixed": {"train": {"time_budget": "5m"}}}
    path = write_report(tmp_path / "docs" / "seq_len.md", rows=rows, curves=curves, settings=["seq_len"], meta=meta)
    text = path.read_text(encoding="utf-8")
    links = [line[line.index("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert links and all(link.startswith("seq_len/") for link in links)
    for link in links:
        assert (path.parent / link).read_bytes()[:8] == PNG_SIGNATURE
    assert "    lstmgen sweep corpus --vary seq_len=10,30,60,120" in text  # the command that made it
    assert ("stopped after 5m of training or 1 epoch, whichever came first "
            "(2 of 3 finished runs stopped by the clock") in text
    assert "## Failed runs" in text and "- seq_len=60: lstmgen: error: the loss became NaN" in text
    assert "| seq_len=60 (failed) |" in text


def test_a_report_whose_runs_were_validated_once_says_how_to_get_curves(tmp_path: Path):
    rows = results()
    meta = {"command": "lstmgen sweep c --vary seq_len=10,30,60,120 --out s", "corpus": "c", "preset": "tiny"}
    once = {r["run"]: [curve(10, 2.0, 10)] for r in rows}
    text = write_report(tmp_path / "once.md", rows=rows, curves=once, settings=["seq_len"],
                        meta=meta).read_text(encoding="utf-8")
    assert "validated once" in text and "`--eval-every-tokens N`" in text
    twice = {r["run"]: [curve(10, 3.0, 10), curve(20, 2.0, 20)] for r in rows}
    text = write_report(tmp_path / "twice.md", rows=rows, curves=twice, settings=["seq_len"],
                        meta=meta).read_text(encoding="utf-8")
    assert "validated once" not in text


def test_a_report_over_varied_training_lengths_does_not_say_every_run_saw_the_same_text(tmp_path: Path):
    rows = results()
    for row, epochs in zip(rows, (1, 2, 3, 4)):
        row["epochs"] = epochs
    meta = {"command": "lstmgen sweep c --vary seq_len=10,30,60,120 --vary epochs=1,2,3,4 --out s", "corpus": "c",
            "preset": "tiny", "fixed": {"train": {"epochs": 5}}}
    curves = {r["run"]: [curve(10, 3.0, 10), curve(20, 2.0, 20)] for r in rows}
    text = write_report(tmp_path / "r.md", rows=rows, curves=curves, settings=["seq_len", "epochs"],
                        meta=meta).read_text(encoding="utf-8")
    assert "saw the same text" not in text and "one of the settings varied (epochs)" in text


def test_without_matplotlib_the_report_still_has_its_table_and_claims(tmp_path: Path, monkeypatch):
    def missing(*args, **kwargs):
        raise LstmgenError("plots need matplotlib: pip install 'lstmgen[plot]'")

    monkeypatch.setattr(plots, "_figure", missing)
    meta = {"command": "lstmgen sweep c --vary seq_len=10,30,60,120 --out s", "corpus": "c", "preset": "tiny"}
    text = write_report(tmp_path / "report.md", rows=results(), curves={}, settings=["seq_len"],
                        meta=meta).read_text(encoding="utf-8")
    assert "No plots: plots need matplotlib" in text and "| seq_len=120 |" in text and "**(e)" in text


def write_run(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def test_plot_draws_learning_curves_of_several_runs_side_by_side(tmp_path: Path, capsys):
    from matplotlib.image import imread

    a = write_run(tmp_path / "a", [curve(5, 3.0, 10), curve(9, 2.5, 20), {"split": "test", "step": 20}])
    b = write_run(tmp_path / "b", [curve(4, 3.2, 10), curve(8, 2.7, 20), curve(12, 2.4, 30)])
    out = tmp_path / "plots" / "curves.png"
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    height, width = imread(out).shape[:2]
    assert width > 2 * height  # three panels side by side
    assert main(["plot", str(a), "--out", str(tmp_path / "bare")]) == 0  # no extension: a .png, named so
    assert str(tmp_path / "bare.png") in capsys.readouterr().out
    assert (tmp_path / "bare.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "no such run directory"),
    (lambda tmp: write_run(tmp / "empty", []), "no evaluations recorded yet"),
])
def test_plot_refuses_what_is_not_a_run_with_one_line(make, message, tmp_path: Path, capsys):
    assert main(["plot", str(make(tmp_path)), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c.png").exists()
