"""lstmgen from Python: the four calls a user needs, and what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lstmgen
from conftest import make_text
from lstmgen.errors import LstmgenError


@pytest.fixture(scope="module")
def novel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api") / "novel.txt"
    path.write_text(make_text(11, 80), encoding="utf-8")
    return path


def test_train_takes_settings_by_their_flag_names_and_returns_a_run_that_writes_and_scores(novel, tmp_path):
    run = lstmgen.train(novel, out=tmp_path / "run", preset="tiny", epochs=0.5, hidden_size=24, threads=1)
    assert isinstance(run, lstmgen.Run) and run.path == tmp_path / "run"
    assert run.config.model.hidden_size == 24 and run.config.train.epochs == 0.5 and run.config.preset == "tiny"
    text = run.generate("郭靖", length=30, seed=5)
    assert text.startswith("郭靖") and len(text) >= 32
    assert run.generate("郭靖", length=30, seed=5) == text  # the same seed, the same text
    assert run.generate("郭靖", length=30, seed=5, temperature=0) != ""
    score = run.evaluate()  # the held-out test split: the run's own test score
    assert isinstance(score, lstmgen.Score) and score.perplexity > 1 and score.bits_per_char > 0
    assert score.bits_per_char == pytest.approx(run.test_score["test_bits_per_char"], rel=1e-9)
    assert run.evaluate(split="valid").tokens > 0
    other = tmp_path / "other.txt"
    other.write_text(make_text(12, 10), encoding="utf-8")
    assert run.evaluate(other).characters > 0
    again = lstmgen.load(run.path)
    assert again.generate("郭靖", length=30, seed=5) == text


def test_an_unknown_setting_is_said_with_the_nearest_one(novel, tmp_path):
    with pytest.raises(LstmgenError, match="'hiden_size' is not a setting; did you mean 'hidden_size'"):
        lstmgen.train(novel, out=tmp_path / "run", hiden_size=24)
    with pytest.raises(LstmgenError, match="--seq-len must be positive"):
        lstmgen.train(novel, out=tmp_path / "run", preset="tiny", seq_len=0)
    assert not (tmp_path / "run").exists()


def test_resume_takes_only_where_a_run_goes_on(novel, tmp_path):
    run = lstmgen.train(novel, out=tmp_path / "run", preset="tiny", epochs=0.3, threads=1)
    assert lstmgen.resume(run.path, threads=1).path == run.path  # finished: left as it is
    with pytest.raises(LstmgenError, match="--lr cannot be given"):
        lstmgen.resume(run.path, lr=0.1)


def test_importing_lstmgen_loads_no_torch_and_the_old_import_paths_warn_but_work(novel, tmp_path):
    code = "import sys, lstmgen; print('torch' in sys.modules, lstmgen.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "False"
    old = ("import warnings; warnings.simplefilter('error', FutureWarning)\n"
           "try:\n    from lstmgen.train import train\nexcept FutureWarning as w:\n    print('warned:', w)\n")
    said = subprocess.run([sys.executable, "-c", old], capture_output=True, text=True, check=True).stdout
    assert said.startswith("warned: lstmgen.train (the module) is deprecated")
    # what the README showed before: it still trains, and lstmgen.train stays callable beside it
    script = (f"import warnings, lstmgen\n"
              f"from lstmgen.config import build_config\n"
              f"with warnings.catch_warnings(record=True) as caught:\n"
              f"    warnings.simplefilter('always')\n"
              f"    from lstmgen.train import train\n"
              f"    from lstmgen.runs import load_run\n"
              f"    from lstmgen.generate import GenerateConfig, generate\n"
              f"print(len([w for w in caught if issubclass(w.category, FutureWarning)]))\n"
              f"run_dir = train({str(novel)!r}, build_config('tiny', {{'train': {{'epochs': 0.3}}}}), "
              f"out={str(tmp_path / 'old')!r})\n"
              f"run = load_run(run_dir)\n"
              f"print(generate(run.model, run.tokenizer, run.vocab, ['郭靖'], GenerateConfig(length=10, seed=1))[0]"
              f".startswith('郭靖'))\n"
              f"print(type(lstmgen.train({str(novel)!r}, out={str(tmp_path / 'new')!r}, preset='tiny', "
              f"epochs=0.3)).__name__)\n")
    lines = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           cwd=tmp_path).stdout.splitlines()
    assert lines == ["3", "True", "Run"]
