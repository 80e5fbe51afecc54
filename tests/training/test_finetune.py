"""Starting a run from a trained one: ``lstmgen train CORPUS --init-from RUN``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_text
from lstmgen.cli.main import main
from lstmgen.config import build_config
from lstmgen.errors import LstmgenError
from lstmgen.evaluation.score import score_ids
from lstmgen.model.run_dir import load_run, read_metrics
from lstmgen.tokens.prepare import prepare
from lstmgen.training.finetune import config_from_parent, open_parent
from lstmgen.training.run import train


@pytest.fixture
def parent(tiny_run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session's tiny run, which tests may change."""
    return Path(shutil.copytree(tiny_run_dir, tmp_path / "parent"))


@pytest.fixture
def new_text(tmp_path: Path) -> Path:
    """Text the parent never saw, from the same made-up world of names."""
    path = tmp_path / "续集.txt"
    path.write_text(make_text(7, 90), encoding="utf-8")
    return path


def test_a_started_run_begins_with_the_parents_weights_and_scores_them_first(parent: Path, new_text: Path,
                                                                             tmp_path: Path):
    assert main(["train", str(new_text), "--init-from", str(parent), "--out", str(tmp_path / "child"),
                 "--epochs", "1"]) == 0
    child = tmp_path / "child"
    saved = json.loads((child / "config.json").read_text(encoding="utf-8"))
    assert saved["train"]["init_from"] == str(parent.resolve())
    assert saved["init_from_sha256"] == open_parent(parent).sha256
    # what the weights depend on is the parent's, byte for byte
    for name in ("tokenizer.json", "vocab.json"):
        assert json.loads((child / name).read_text(encoding="utf-8")) == \
            json.loads((parent / name).read_text(encoding="utf-8"))
    assert saved["model"] == json.loads((parent / "config.json").read_text(encoding="utf-8"))["model"]
    assert max(saved["held_out_in_parent_training"].values()) < 0.01  # text the parent never saw

    # step 0 is the parent as it is, scored on the new held-out text
    first = read_metrics(child)[0]
    assert first["step"] == 0 and first["tokens"] == 0
    before = load_run(parent)
    config = before.config
    data = prepare(new_text, config.data, config.tokenizer, vocab=before.vocab, tokenizer=before.tokenizer)
    score = score_ids(before.model, data.ids["valid"], characters=data.characters["valid"])
    assert first["valid_nll"] == pytest.approx(score.nll, rel=1e-6)

    # and training went on from there
    steps = [r["step"] for r in read_metrics(child) if "valid_nll" in r]
    assert steps[0] == 0 and steps[-1] > 0
    assert any(r.get("split") == "test" for r in read_metrics(child))
    last = torch.load(child / "state" / "checkpoint.pt", weights_only=True)["model"]
    assert not torch.equal(last["lstm.weight_hh_l0"], before.model.lstm.weight_hh_l0)


def test_settings_come_from_the_parent_unless_given(parent: Path):
    own = open_parent(parent)
    config = config_from_parent(own)
    assert config.train.lr == own.config.train.lr and config.train.epochs == 2.0  # the parent ran 2 epochs
    assert config.preset == "tiny" and config.train.init_from == str(parent.resolve())

    config = config_from_parent(own, {"train": {"lr": 0.001}, "model": {"dropout": 0.3},
                                      "tokenizer": {"workers": 1}})
    assert (config.train.lr, config.model.dropout, config.tokenizer.workers) == (0.001, 0.3, 1)

    # a preset brings its training settings and dropout, never its shape or tokenizer
    config = config_from_parent(own, preset="default")
    default = build_config("default")
    assert (config.train.lr, config.train.ema_decay, config.model.dropout) == \
        (default.train.lr, default.train.ema_decay, default.model.dropout)
    assert config.model.hidden_size == own.config.model.hidden_size != default.model.hidden_size
    assert config.model.output == own.config.model.output and config.tokenizer == own.config.tokenizer
    assert config.preset == "default"


def test_the_parents_held_out_files_stay_with_the_parent(parent: Path, tmp_path: Path):
    raw = json.loads((parent / "config.json").read_text(encoding="utf-8"))
    raw["data"]["test_path"] = str(tmp_path / "its-own-test.txt")
    (parent / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    assert config_from_parent(open_parent(parent)).data.test_path is None


@pytest.mark.parametrize("flags, named", [(["--hidden-size", "64"], "--hidden-size 64 (it has 32)"),
                                          (["--tokenizer", "word"], "--tokenizer word (it has char)"),
                                          (["--output", "full"], "--output full (it has tied)")])
def test_what_the_weights_depend_on_cannot_be_changed(parent: Path, new_text: Path, tmp_path: Path, capsys,
                                                      flags: list[str], named: str):
    assert main(["train", str(new_text), "--init-from", str(parent), "--out", str(tmp_path / "child"),
                 *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "child").exists()


def test_a_value_equal_to_the_parents_is_not_a_change(parent: Path):
    config = config_from_parent(open_parent(parent), {"model": {"hidden_size": 32}, "tokenizer": {"tokenizer": "char"}})
    assert config.model.hidden_size == 32


def test_the_library_refuses_a_config_that_does_not_fit_the_parent(parent: Path, new_text: Path, tmp_path: Path):
    config = build_config("default", {"train": {"init_from": str(parent)}})
    with pytest.raises(LstmgenError, match="--hidden-size 512 \\(it has 32\\)"):
        train(new_text, config, out=tmp_path / "child")
    assert not (tmp_path / "child").exists()


def test_text_the_parent_cannot_read_is_warned_about(parent: Path, tmp_path: Path, capsys):
    english = tmp_path / "english.txt"
    english.write_text("\n".join(f"The {i}th knight rode north at dawn." for i in range(300)), encoding="utf-8")
    assert main(["train", str(english), "--init-from", str(parent), "--out", str(tmp_path / "child"),
                 "--epochs", "0.2"]) == 0
    err = capsys.readouterr().err
    assert "of the training split is <unk>" in err and "characters it never saw" in err


def test_a_run_killed_before_its_first_save_starts_from_the_parent_again(parent: Path, new_text: Path,
                                                                          tmp_path: Path, capsys):
    child = tmp_path / "child"
    assert main(["train", str(new_text), "--init-from", str(parent), "--out", str(child), "--epochs", "1"]) == 0
    finished = (child / "model.safetensors").read_bytes()
    records = read_metrics(child)
    # as a kill right after config.json was written leaves it: no state, no weights, no metrics yet
    shutil.rmtree(child / "state")
    (child / "model.safetensors").unlink()
    (child / "metrics.jsonl").unlink()
    assert main(["train", "--resume", str(child)]) == 0
    assert (child / "model.safetensors").read_bytes() == finished  # same start, same seed: same run
    again = read_metrics(child)
    assert [r["step"] for r in again] == [r["step"] for r in records]

    # and if the parent's weights changed meanwhile, it says so rather than start from other weights
    shutil.rmtree(child / "state")
    tensors = load_file(str(parent / "model.safetensors"))
    tensors["lstm.weight_hh_l0"] = tensors["lstm.weight_hh_l0"] + 1
    save_file(tensors, str(parent / "model.safetensors"))
    capsys.readouterr()
    assert main(["train", "--resume", str(child)]) == 2
    assert "its weights changed since" in capsys.readouterr().err


def test_resume_needs_no_parent_once_saved(parent: Path, new_text: Path, tmp_path: Path):
    child = tmp_path / "child"
    assert main(["train", str(new_text), "--init-from", str(parent), "--out", str(child), "--epochs", "1"]) == 0
    shutil.rmtree(parent)
    assert main(["train", "--resume", str(child)]) == 0  # finished: nothing to do, and nothing asked of the parent


def test_a_sweep_can_start_every_run_from_the_same_parent(parent: Path, new_text: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    sweep = ["sweep", str(new_text), "--vary", "lr=0.001,0.004", "--preset", "default", "--init-from", str(parent),
             "--epochs", "0.5", "--threads", "1", "--sample-length", "20", "--out", str(out)]
    assert main(sweep) == 0
    starts = []
    for name in ("lr=0.001", "lr=0.004"):
        saved = json.loads((out / "runs" / name / "config.json").read_text(encoding="utf-8"))
        assert saved["model"]["hidden_size"] == 32 and saved["train"]["lr"] == float(name[3:])  # parent's shape
        assert saved["train"]["ema_decay"] == build_config("default").train.ema_decay  # the preset's training
        starts.append(read_metrics(out / "runs" / name)[0])
    assert starts[0]["step"] == starts[1]["step"] == 0
    assert starts[0]["valid_nll"] == starts[1]["valid_nll"]  # both began as the parent
    assert main(sweep) == 0  # run again: the finished runs are recognised as this sweep's, not refused


def test_held_out_text_the_parent_trained_on_is_warned_about(parent: Path, tmp_path: Path, capsys):
    # the parent trained on 90% of make_text(1, 120); the first half of it, split again, holds out its own
    # end, from the middle of what the parent trained on
    first_half = tmp_path / "上部.txt"
    first_half.write_text(make_text(1, 60), encoding="utf-8")
    assert main(["train", str(first_half), "--init-from", str(parent), "--out", str(tmp_path / "child"),
                 "--epochs", "0.2"]) == 0
    assert "text is in what" in capsys.readouterr().err
    saved = json.loads((tmp_path / "child" / "config.json").read_text(encoding="utf-8"))
    assert saved["held_out_in_parent_training"]["test"] > 0.5
