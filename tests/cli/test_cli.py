"""The command line end to end, driven through main([...]) as a user would."""

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import make_text
from lstmgen.cli.main import main
from lstmgen.model.run_dir import load_run, read_metrics

TINY = ["--preset", "tiny", "--epochs", "2", "--seed", "3"]


@pytest.fixture
def trained(tiny_corpus: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    assert main(["train", str(tiny_corpus), "--out", str(run), *TINY]) == 0
    return run


def test_train_writes_a_self_describing_run_directory(trained: Path):
    for name in ("config.json", "tokenizer.json", "vocab.json", "model.safetensors", "metrics.jsonl",
                 "state/checkpoint.pt"):
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text(encoding="utf-8"))
    assert config["train"]["seq_len"] == 16 and config["train"]["epochs"] == 2.0  # preset + flag
    assert {d["encoding"] for d in config["documents"]} == {"utf-8", "gb18030"}
    assert config["held_out_in_training"] == {"valid": 0.0, "test": 0.0}  # no paragraph is in two places
    records = read_metrics(trained)
    valid = [r for r in records if "valid_bits_per_char" in r]
    assert len(valid) >= 2  # at least once per epoch
    assert valid[-1]["valid_perplexity"] < valid[0]["valid_perplexity"] or valid[-1]["valid_perplexity"] < 30
    test = records[-1]
    assert test["split"] == "test" and test["test_bits_per_char"] > 0 and test["test_oov_rate"] == 0


def test_the_tokens_counted_are_the_tokens_trained_on(trained: Path):
    # each epoch's last window is shorter than --seq-len; counting it as full overstated tokens/s
    config = json.loads((trained / "config.json").read_text(encoding="utf-8"))
    rows, length = 4, config["split_tokens"]["train"] // 4  # batch 4 (tiny preset): the grid's rows
    assert (length - 1) % 16 != 0  # (so this corpus has a short last window at seq_len 16)
    assert read_metrics(trained)[-1]["tokens"] == 2 * rows * (length - 1)  # two epochs, every input once


def test_the_advert_line_never_reaches_the_model(trained: Path):
    vocab = json.loads((trained / "vocab.json").read_text(encoding="utf-8"))
    tokens = set(vocab["tokens"])
    assert "w" not in tokens and "载" not in tokens and "\u3000" not in tokens and "\r" not in tokens


def test_eval_reports_perplexity_bits_per_char_and_oov(trained: Path, tiny_corpus: Path, capsys):
    assert main(["eval", str(trained), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    test = read_metrics(trained)[-1]
    assert result["perplexity"] == pytest.approx(test["test_perplexity"], rel=1e-4)
    assert main(["eval", str(trained), str(tiny_corpus / "射雕.txt")]) == 0
    out = capsys.readouterr()
    assert "bits per char" in out.out and "OOV rate" in out.out


def test_eval_warns_when_the_text_is_what_the_run_trained_on(trained: Path, tiny_corpus: Path, tmp_path: Path,
                                                             capsys):
    # 射雕.txt is one of the two novels the run read: 90% of it is training text.
    assert main(["eval", str(trained), str(tiny_corpus / "射雕.txt"), "--json"]) == 0
    out = capsys.readouterr()
    assert "warning" in out.err and "射雕.txt" in out.err and "flatters" in out.err
    assert json.loads(out.out)["trained_on"] == ["射雕.txt"]
    assert main(["eval", str(trained), str(tiny_corpus), "--json"]) == 0  # the whole folder: both novels
    assert json.loads(capsys.readouterr().out)["trained_on"] == ["射雕.txt", "神雕.txt"]
    # A file outside the corpus: no warning.
    other = tmp_path / "elsewhere.txt"
    other.write_text(make_text(5, 20), encoding="utf-8")
    assert main(["eval", str(trained), str(other), "--json"]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and "trained_on" not in json.loads(out.out)
    assert json.loads(out.out)["seen_in_training"] < 0.05
    # the corpus is read again for that check, quietly: what eval reports reading is the file it scores
    assert "elsewhere.txt" in out.err and "射雕.txt" not in out.err and "神雕.txt" not in out.err


def test_eval_finds_training_text_by_its_content_under_another_name(trained: Path, tiny_corpus: Path,
                                                                     tmp_path: Path, capsys):
    # The first 20 paragraphs of a novel the run trained on, copied into a file of another name, after
    # 20 paragraphs it never saw: half of it is training text.
    copied = (tiny_corpus / "射雕.txt").read_text(encoding="utf-8").split("\n")[:20]
    mixed = tmp_path / "第一章.txt"
    mixed.write_text("\n".join([*make_text(6, 20).split("\n"), *copied]), encoding="utf-8")
    assert main(["eval", str(trained), str(mixed), "--json"]) == 0
    out = capsys.readouterr()
    seen = json.loads(out.out)["seen_in_training"]
    assert 0.3 < seen < 0.7 and "trained_on" not in json.loads(out.out)
    assert f"is {100 * seen:.0f}% text this run trained on" in out.err and "flatters" in out.err


def test_every_score_lays_the_text_out_alike_whatever_the_run_trained_with(tiny_corpus: Path, tmp_path: Path, capsys):
    # A run trained on 24 rows of 5 tokens is validated and tested exactly as `lstmgen eval` scores
    # it, so runs trained with different batches are compared on equal terms.
    run = tmp_path / "wide"
    assert main(["train", str(tiny_corpus), "--out", str(run), *TINY, "--epochs", "1", "--batch-size", "24",
                 "--seq-len", "5"]) == 0
    records = read_metrics(run)
    capsys.readouterr()
    for split, reported in (("valid", records[-2]["valid_nll"]), ("test", records[-1]["test_nll"])):
        assert main(["eval", str(run), "--split", split, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["nll"] == pytest.approx(reported, rel=1e-5)


def test_generate_streams_writes_the_file_and_is_reproducible(trained: Path, tmp_path: Path, capsys):
    out = tmp_path / "sample.txt"
    args = ["generate", str(trained), "--prompt", "郭靖", "--length", "50", "--seed", "1", "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out.strip()
    text = out.read_text(encoding="utf-8").strip()
    assert printed == text and text.startswith("郭靖")
    assert len(text) == len("郭靖") + 50  # --length counts characters
    assert "<unk>" not in text and " " not in text  # Chinese is joined without spaces
    assert main(args) == 0
    assert out.read_text(encoding="utf-8").strip() == text


def test_generate_several_samples_in_one_batch(trained: Path, capsys):
    assert main(["generate", str(trained), "--num-samples", "3", "--length", "20", "--seed", "2",
                 "--prompt", "黄蓉", "--prompt", "杨过"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 6


def test_resume_continues_a_finished_run_without_retraining(trained: Path):
    before = (trained / "model.safetensors").read_bytes()
    assert main(["train", "--resume", str(trained)]) == 0
    assert (trained / "model.safetensors").read_bytes() == before


def test_resume_refuses_a_preset_rather_than_ignoring_it(trained: Path, capsys):
    assert main(["train", "--resume", str(trained), "--preset", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "--preset" in err and "start a new run" in err


def test_a_device_name_that_is_not_one_is_one_line_not_a_traceback(trained: Path, capsys):
    assert main(["eval", str(trained), "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device gpu" in err and len(err.splitlines()) == 1


def test_eval_refuses_to_split_a_corpus_whose_text_changed(trained: Path, tiny_corpus: Path, capsys):
    # A novel grew after training: the cuts move, and text the run trained on would be scored as held out.
    novel = tiny_corpus / "射雕.txt"
    novel.write_text(novel.read_text(encoding="utf-8") + make_text(9, 20), encoding="utf-8")
    assert main(["eval", str(trained)]) == 2
    err = capsys.readouterr().err
    assert "changed since" in err and "give a PATH" in err
    assert main(["eval", str(trained), str(novel)]) == 0  # a file given by name is still scored


def test_held_out_files_given_by_relative_path_work_from_any_folder(tiny_corpus: Path, tmp_path: Path,
                                                                    monkeypatch, capsys):
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "test.txt").write_text(make_text(8, 5), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(tiny_corpus / "射雕.txt"), "--out", "run", *TINY, "--epochs", "1",
                 "--test", "held/test.txt"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["data"]["test_path"]
    assert saved == str(tmp_path / "held" / "test.txt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # the same held-out file as the training run's final test
    assert result["perplexity"] == pytest.approx(read_metrics(tmp_path / "run")[-1]["test_perplexity"], rel=1e-4)


def test_a_word_run_needs_its_user_dictionary_no_more_once_trained(tiny_corpus: Path, tmp_path: Path,
                                                                   monkeypatch, capsys):
    (tmp_path / "names.txt").write_text("郭靖 nr\n黄蓉 nr\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(tiny_corpus), "--out", "run", *TINY, "--epochs", "1", "--tokenizer", "word",
                 "--user-dict", "names.txt"]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert config["tokenizer"]["user_dict"] == str(tmp_path / "names.txt")
    capsys.readouterr()
    assert main(["eval", "run", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    # edited after training (it would cut 郭靖说道 as one word, which the vocabulary lacks): not read again
    (tmp_path / "names.txt").write_text("郭靖说道 100000 nr\n黄蓉笑道 100000 nr\n", encoding="utf-8")
    assert main(["eval", "run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["perplexity"] == before["perplexity"]
    (tmp_path / "names.txt").unlink()  # gone: the run's tokenizer carries its words
    assert main(["eval", "run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["perplexity"] == before["perplexity"]


def test_generate_refuses_an_output_folder_that_does_not_exist_before_writing(trained: Path, tmp_path: Path,
                                                                             capsys):
    assert main(["generate", str(trained), "--length", "20", "--output", str(tmp_path / "no" / "s.txt")]) == 2
    captured = capsys.readouterr()
    assert "no folder" in captured.err and captured.out == ""


def test_a_reader_that_leaves_early_ends_generate_quietly(tiny_run_dir: Path):
    # `lstmgen generate RUN | head`: no "Exception ignored ... BrokenPipeError", no exit code 120.
    command = f"{sys.executable} -m lstmgen generate '{tiny_run_dir}' --length 20000 --seed 1 | head -c 10"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, timeout=120)
    err = done.stderr.decode("utf-8", "replace")  # (stdout may end inside a character)
    assert done.returncode == 0, err
    assert "BrokenPipe" not in err and "Exception ignored" not in err


def test_log_lines_on_a_terminal_get_lines_of_their_own(tiny_corpus: Path, tmp_path: Path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["train", str(tiny_corpus), "--out", str(tmp_path / "run"), *TINY]) == 0
    # what a terminal shows: each line as left after its last "wipe the line"
    shown = [line.split("\r\x1b[2K")[-1] for line in terminal.getvalue().split("\n")]
    messages = [line for line in shown if "valid" in line]
    assert messages and not any("tok/s" in line for line in messages)  # never glued to the bar
    assert shown[-2].startswith("[") and "tok/s" in shown[-2]  # the bar stays at the bottom, to the end


def test_save_then_load_gives_identical_logits(trained: Path):
    a, b = load_run(trained), load_run(trained)
    x = torch.randint(0, len(a.vocab), (2, 7))
    fa, _ = a.model.features(x)
    fb, _ = b.model.features(x)
    assert torch.equal(a.model.log_probs(fa[:, -1]), b.model.log_probs(fb[:, -1]))


@pytest.mark.parametrize("args, message", [
    (["train", "/no/such/folder"], "/no/such/folder"),
    (["eval", "/no/such/run"], "no such run directory"),
    (["train", "{corpus}", "--seq-len", "0"], "--seq-len"),
    (["train", "{corpus}", "--tokenizer", "bpe"], "--tokenizer"),
    (["generate", "{corpus}"], "not a complete lstmgen run"),
    (["train", "{corpus}", "--test", "{corpus}/神雕.txt"], "神雕.txt is also in the training corpus"),
    (["train", "{corpus}", "--device", "gpu"], "--device must be auto, cpu, cuda, cuda:N or mps"),
])
def test_user_errors_end_with_one_clear_line_and_exit_code_2(args, message, tiny_corpus, capsys):
    code = main([a.replace("{corpus}", str(tiny_corpus)) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_bad_sampling_options_are_refused(trained: Path, capsys):
    for extra in (["--length", "0"], ["--temperature", "-1"], ["--top-p", "1.5"], ["--prompt", "   "]):
        assert main(["generate", str(trained), *extra]) == 2, extra
        assert "error" in capsys.readouterr().err


def test_explicit_valid_and_test_files_replace_the_split(tiny_corpus: Path, tmp_path: Path):
    valid, test = tmp_path / "valid.txt", tmp_path / "test.txt"
    valid.write_text(make_text(7, 5), encoding="utf-8")
    test.write_text(make_text(8, 3), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(tiny_corpus / "射雕.txt"), "--out", str(run), *TINY, "--epochs", "1",
                 "--valid", str(valid), "--test", str(test)]) == 0
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["split_characters"]["valid"] == len(make_text(7, 5))
    assert config["split_characters"]["test"] == len(make_text(8, 3))
    whole = len((tiny_corpus / "射雕.txt").read_text(encoding="utf-8"))
    assert config["split_characters"]["train"] == whole  # nothing of the novel is held out


def test_tensorboard_logs_every_evaluation(tiny_corpus: Path, tmp_path: Path):
    pytest.importorskip("torch.utils.tensorboard", reason="the tensorboard package is in the test extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", str(tiny_corpus), "--out", str(run), *TINY, "--tensorboard"]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    valid = events.Scalars("valid_bits_per_char")
    assert len(valid) == len([r for r in read_metrics(run) if "valid_bits_per_char" in r]) >= 2
    # the writer was closed: its thread has ended
    assert not [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread"]


def test_the_progress_bar_fills_by_the_clock_under_a_time_budget():
    import io

    from lstmgen.cli.progress import ProgressBar
    from lstmgen.training.loop import Progress

    def drawn(**given) -> str:
        stream = io.StringIO()
        ProgressBar(stream)(Progress(**{"step": 10, "total_steps": 346000, "epoch": 0.0, "loss": 5.0,
                                        "tokens_per_s": 1000.0, "elapsed": 90.0, "seconds_left": 90.0,
                                        "lr": 0.01, **given}))
        return stream.getvalue()

    by_time = drawn(fraction=0.5, time_budget=180.0)
    assert by_time.startswith("[##########..........] step 10 epoch") and "/346000" not in by_time
    by_steps = drawn(fraction=10 / 346000)
    assert by_steps.startswith("[....................] step 10/346000 epoch")


def test_train_help_lists_every_setting_in_its_group_with_the_help_its_field_declares(capsys):
    import dataclasses

    from lstmgen.cli.flags import FLAG_GROUPS
    from lstmgen.config import SECTIONS

    for kind in SECTIONS.values():
        for f in dataclasses.fields(kind):
            assert len(f.metadata.get("help", "")) > 10, f.name  # declared with the field, not read from source
    assert main(["train", "--help"]) == 0
    shown = capsys.readouterr().out
    places = [shown.index(f"\n{title}:\n") for title in FLAG_GROUPS.values()]
    assert places == sorted(places)  # data, model, training, evaluation, output
    output = shown[places[-1]:]
    assert "--save-every" in output and "--out" in output and "--tensorboard, --no-tensorboard" in output
    assert "--seq-len" in shown[places[2]:places[3]] and "--eval-every" in shown[places[3]:places[4]]


def test_one_install_brings_what_every_subcommand_needs():
    from importlib.metadata import requires

    always = {r.split(";")[0].split(">")[0].split("=")[0].strip().lower() for r in requires("lstmgen") if "extra" not in r}
    assert {"matplotlib", "fastapi", "uvicorn", "pydantic"} <= always  # sweep, plot and serve: no extra to install


def test_a_run_trained_on_traditional_text_reads_simplified_prompts_and_writes_either_script(tmp_path, capsys):
    from fastapi.testclient import TestClient

    import lstmgen
    from lstmgen.serving.app import create_app
    from lstmgen.text.script import convert_script

    novel = tmp_path / "novel.txt"
    novel.write_text(make_text(5, 80), encoding="utf-8")  # simplified: 说道, 长剑, 古墓 ...
    run_dir = tmp_path / "run"
    assert main(["train", str(novel), "--out", str(run_dir), "--preset", "tiny", "--epochs", "0.5",
                 "--script", "traditional"]) == 0
    capsys.readouterr()
    traditional = convert_script("郭靖说道", "traditional")
    assert traditional == "郭靖說道"
    assert main(["generate", str(run_dir), "--prompt", "郭靖说道", "--length", "20", "--seed", "1"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(traditional) and "never saw" not in out.err  # the prompt read in the run's script
    assert main(["generate", str(run_dir), "--prompt", "郭靖说道", "--length", "20", "--seed", "1",
                 "--script", "simplified"]) == 0
    simplified = capsys.readouterr().out.strip()
    assert simplified.startswith("郭靖说道") and simplified == convert_script(simplified, "simplified")
    run = lstmgen.load(run_dir)
    assert run.generate("郭靖说道", length=20, seed=1) == out.out.strip()  # the API reads prompts the same way
    assert run.generate("郭靖说道", length=20, seed=1, script="simplified") == simplified
    with TestClient(create_app(run_dir)) as client:  # and so does the server
        served = client.post("/generate", json={"prompt": "郭靖说道", "length": 20, "seed": 1}).json()
    assert served["texts"][0].startswith(traditional)
