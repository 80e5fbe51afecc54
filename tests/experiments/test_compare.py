"""lstmgen compare: finished runs side by side, from their run directories alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_text
from lstmgen.cli.main import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny runs on one novel that differ in seq_len, and one on another novel."""
    root = tmp_path_factory.mktemp("compare")
    (root / "novel.txt").write_text(make_text(1, 120), encoding="utf-8")
    (root / "other.txt").write_text(make_text(7, 120), encoding="utf-8")
    made = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LSTMGEN_CACHE", str(root / "cache"))
        for name, corpus, extra in (("short", "novel.txt", ["--seq-len", "8"]), ("long", "novel.txt", []),
                                    ("other", "other.txt", [])):
            made[name] = root / "runs" / name
            assert main(["-q", "train", str(root / corpus), "--out", str(made[name]), "--preset", "tiny",
                         "--seed", "3", *extra]) == 0
    return made


def compare_json(paths: list[Path], capsys) -> dict:
    assert main(["compare", *map(str, paths), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_runs_on_one_split_are_ranked_by_their_test_scores_with_the_settings_that_differ(runs, capsys):
    out = compare_json([runs["short"], runs["long"]], capsys)
    assert out["notes"] == []
    rows = {Path(r["run"]).name: r for r in out["runs"]}
    for name, row in rows.items():
        test = json.loads((runs[name] / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])
        assert row["test_open_bits_per_char"] == test["test_open_bits_per_char"]
        assert row["steps"] == test["step"]
    assert rows["short"]["settings"] == "seq_len=8" and rows["long"]["settings"] == ""  # the preset's 16
    scores = [r["test_open_bits_per_char"] for r in out["runs"]]
    assert scores == sorted(scores)

    assert main(["compare", str(runs["long"]), str(runs["short"])]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["run", "settings", "that", "differ"]
    best = min(rows.values(), key=lambda r: r["test_open_bits_per_char"])
    assert table[1].startswith(best["run"]) and f"{best['test_bits_per_char']:.3f}" in table[1]


def test_runs_that_held_out_different_text_are_said_not_to_rank(runs, capsys):
    out = compare_json([runs["short"], runs["other"]], capsys)
    assert len(out["notes"]) == 1 and "held out different text" in out["notes"][0]
    assert main(["compare", str(runs["short"]), str(runs["other"])]) == 0
    assert "note: these runs held out different text" in capsys.readouterr().err


def test_vocabularies_are_ranked_by_the_open_score_and_an_unfinished_run_comes_last(runs, tmp_path, capsys):
    def fake(name: str, closed: float, open_: float | None, preset: str = "tiny") -> Path:
        folder = tmp_path / name
        shutil.copytree(runs["long"], folder)
        info = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        info["preset"] = preset
        (folder / "config.json").write_text(json.dumps(info), encoding="utf-8")
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        test = json.loads(lines[-1])
        if open_ is None:  # stopped before its test: no test record yet
            lines = lines[:-1]
        else:
            test.update(test_bits_per_char=closed, test_open_bits_per_char=open_)
            lines[-1] = json.dumps(test)
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return folder

    # a word model's <unk> is cheap when only the closed score counts: it must not win on that
    words = fake("words", closed=5.0, open_=7.5, preset="seed")
    chars = fake("chars", closed=6.0, open_=6.01)
    stopped = fake("stopped", closed=0.0, open_=None)
    out = compare_json([words, stopped, chars], capsys)
    assert [Path(r["run"]).name for r in out["runs"]] == ["chars", "words", "stopped"]
    assert out["runs"][1]["settings"].startswith("preset=seed")
    assert any("no test score yet" in note and "stopped" in note for note in out["notes"])
    assert main(["compare", str(words), str(stopped), str(chars)]) == 0
    last = capsys.readouterr().out.splitlines()[3]
    assert last.startswith(str(stopped)) and last.rstrip().endswith("-")


def test_what_is_not_a_run_ends_with_one_clear_line(runs, tmp_path, capsys):
    assert main(["compare", str(runs["long"]), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a run directory" in err and len(err.splitlines()) == 1
