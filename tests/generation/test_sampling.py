"""The sampling controls writers use, checked on a model trained for real (tiny preset, once per module)."""

import re

import pytest

from lstmgen.cli.main import main
from lstmgen.errors import LstmgenError
from lstmgen.generation.generate import END_MARKS, SENTENCE_ENDS, GenerateConfig, generate
from lstmgen.model.run_dir import TrainedRun as Run
from lstmgen.model.run_dir import load_run


@pytest.fixture(scope="module")
def run(tiny_run_dir) -> Run:
    return load_run(tiny_run_dir)


def write(run: Run, prompts=("",), **settings) -> list[str]:
    return generate(run.model, run.tokenizer, run.vocab, list(prompts), GenerateConfig(**settings))


def streamed(run: Run, prompts=("",), **settings) -> tuple[list[str], list[str]]:
    """The texts, and what on_text delivered for each row."""
    config = GenerateConfig(**settings)
    pieces = [""] * (len(prompts) * config.num_samples)

    def on_text(row: int, piece: str) -> None:
        pieces[row] += piece

    texts = generate(run.model, run.tokenizer, run.vocab, list(prompts), config, on_text=on_text)
    return texts, pieces


def test_acrostic_lines_begin_with_the_characters_in_order(run: Run):
    for seed in range(4):
        text = write(run, acrostic="郭黄杨龙", length=80, seed=seed)[0]
        lines = text.split("\n")
        assert [line[0] for line in lines] == list("郭黄杨龙"), text
        assert all(len(line) >= 2 for line in lines), text  # a line is more than its first character


def test_acrostic_with_a_prompt_makes_the_prompt_the_title_line(run: Run):
    text = write(run, ["江湖"], acrostic="郭 黄", length=40, seed=1)[0]  # spaces in the acrostic are skipped
    lines = text.split("\n")
    assert lines[0] == "江湖" and [line[0] for line in lines[1:]] == ["郭", "黄"], text


def test_acrostic_lines_share_the_length_and_end_at_sentences_when_asked(run: Run):
    for seed in range(3):
        lines = write(run, acrostic="郭黄杨", length=60, seed=seed)[0].split("\n")
        assert len(lines) == 3 and all(len(line) <= 20 for line in lines), lines  # 60 / 3 characters each
        lines = write(run, acrostic="郭黄杨", length=30, stop_at="sentence", seed=seed)[0].split("\n")
        assert len(lines) == 3 and all(line[-1] in SENTENCE_ENDS for line in lines), lines


def test_acrostic_refuses_characters_the_model_never_saw(run: Run):
    with pytest.raises(LstmgenError, match="never saw a token beginning with '鳯'"):
        write(run, acrostic="郭鳯")
    with pytest.raises(LstmgenError, match="at least one character"):
        GenerateConfig(acrostic="  ")


def expected_stop(long: str, start: int, length: int, stop_at: str) -> str:
    """Where a text that goes on as ``long`` must stop: the rule written out for character tokens."""
    hard = start + length + length // 2 + 100
    for end in range(start + length - 1, min(len(long), hard)):  # from the length-th character on
        ch = long[end]
        if ch == "\n" and end >= start + length:  # a break is judged by the characters before it
            return long[:end]
        if stop_at == "sentence" and ch in END_MARKS:
            tail = end + 1
            while tail < len(long) and long[tail] in SENTENCE_ENDS and tail < hard:
                tail += 1
            return long[:tail]
    return long[:hard]


@pytest.mark.parametrize("stop_at", ["sentence", "paragraph"])
def test_stop_at_ends_the_text_at_the_first_end_past_the_length(run: Run, stop_at: str):
    ended_early = 0
    for seed in range(5):
        long = write(run, ["郭靖"], length=200, seed=seed)[0]  # stopping changes where, not what
        text = write(run, ["郭靖"], length=30, stop_at=stop_at, seed=seed)[0]
        assert text == expected_stop(long, len("郭靖"), 30, stop_at)
        assert len(text) >= len("郭靖") + 30 and not text.endswith("\n")
        if stop_at == "sentence":
            assert text[-1] in SENTENCE_ENDS, text
        ended_early += len(text) < len("郭靖") + 30 + 15 + 100
    assert ended_early >= 2  # the stops were reached by the rule, not only by the hard limit


def test_stop_at_none_writes_exactly_the_length(run: Run):
    assert all(len(text) == len("郭靖") + 20 for text in write(run, ["郭靖"], length=20, seed=5, num_samples=4))


def test_no_repeat_ngram_leaves_no_ngram_twice(run: Run):
    for n in (2, 3):
        free = write(run, length=150, no_repeat_ngram=0, temperature=1.0, seed=2)[0]
        banned = write(run, length=150, no_repeat_ngram=n, temperature=1.0, seed=2)[0]
        grams = lambda text: [text[i:i + n] for i in range(len(text) - n + 1)]  # noqa: E731 (char tokens)
        assert len(set(grams(free))) < len(grams(free))  # the corpus is repetitive: the test can fail
        assert len(set(grams(banned))) == len(grams(banned)), banned
        assert len(banned) == 150


def test_no_repeat_ngram_falls_back_when_every_token_is_banned(run: Run):
    # single characters: after every token of the vocabulary is used, a repeat beats no text
    text = write(run, length=3 * len(run.vocab), no_repeat_ngram=1, seed=1)[0]
    assert len(text) == 3 * len(run.vocab)


def test_repetition_penalty_divides_the_probability_of_what_was_written(run: Run):
    # Greedy decoding with an overwhelming penalty: no token may come back while an unused one is left.
    text = write(run, ["郭靖"], length=20, temperature=0, repetition_penalty=1e9)[0]
    written = text[len("郭靖"):]
    assert len(set(written)) == len(written) == 20 and not set(written) & set("郭靖")
    # and a mild one still changes what greedy decoding writes, without forbidding repeats
    plain = write(run, ["郭靖"], length=60, temperature=0)[0]
    mild = write(run, ["郭靖"], length=60, temperature=0, repetition_penalty=1.5)[0]
    assert mild != plain and len(set(mild[2:])) < 60


def test_several_prompts_in_one_batch_each_continue_their_own_prompt(run: Run):
    prompts = ["郭靖", "黄蓉说道", ""]
    texts = write(run, prompts, length=25, num_samples=2, seed=3)
    assert len(texts) == 6
    for i, text in enumerate(texts):
        assert text.startswith(prompts[i // 2]) and len(text) == len(prompts[i // 2]) + 25


def test_same_seed_same_text_and_the_global_rng_is_left_alone(run: Run):
    import torch

    a = write(run, ["郭靖"], length=60, seed=11, num_samples=3)
    assert write(run, ["郭靖"], length=60, seed=11, num_samples=3) == a
    assert write(run, ["郭靖"], length=60, seed=12, num_samples=3) != a
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    write(run, length=10)  # no seed: drawn from the OS, not by reseeding torch's global generator
    assert torch.equal(torch.rand(3), expected)


def test_a_samples_text_does_not_depend_on_what_else_is_in_the_batch(run: Run):
    alone = write(run, ["郭靖"], length=60, seed=5)
    three = write(run, ["郭靖"], length=60, seed=5, num_samples=3)
    beside_others = write(run, ["黄蓉", "郭靖"], length=60, seed=5, num_samples=3)
    assert three[0] == alone[0] and beside_others[3:] == three
    assert len(set(three)) == 3  # and the samples differ from one another
    assert write(run, ["郭靖"], length=60, seed=6, num_samples=2)[0] != three[1]  # seed 5's second is not 6's first


def test_a_text_does_not_depend_on_the_threads_torch_has(run: Run):
    import torch

    had = torch.get_num_threads()
    texts = []
    try:
        for threads in (1, 3):  # with more than one, the int8 kernel may take them (timed step by step)
            torch.set_num_threads(threads)
            texts.append(write(run, ["郭靖"], length=200, seed=8, num_samples=2))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(had)
    assert texts[0] == texts[1]


@pytest.mark.parametrize("settings", [
    {"length": 40},
    {"length": 30, "stop_at": "sentence"},
    {"length": 30, "stop_at": "paragraph", "num_samples": 2},
    {"length": 60, "acrostic": "郭黄杨"},
    {"length": 40, "acrostic": "郭黄", "stop_at": "sentence"},
])
def test_streamed_pieces_add_up_to_the_text(run: Run, settings: dict):
    texts, pieces = streamed(run, ["郭靖"], seed=9, **settings)
    for text, piece in zip(texts, pieces):
        assert "郭靖" + piece == text


@pytest.mark.parametrize("settings, message", [
    ({"length": 0}, "--length"),
    ({"temperature": float("nan")}, "--temperature"),
    ({"repetition_penalty": 0.5}, "--repetition-penalty"),
    ({"top_p": float("nan")}, "--top-p"),
    ({"seed": -1}, "--seed"),
])
def test_bad_settings_are_refused_with_the_flag_named(settings: dict, message: str):
    with pytest.raises(LstmgenError, match=message):
        GenerateConfig(**settings)


def test_cli_without_a_seed_prints_the_one_it_drew_and_that_seed_writes_the_text_again(run: Run, capsys):
    assert main(["generate", str(run.path), "--prompt", "郭靖", "--length", "40"]) == 0
    captured = capsys.readouterr()
    drawn = re.search(r"^seed (\d+) \(--seed \1 --precision (fp32|int8) writes this again\)$", captured.err, re.M)
    seed, precision = drawn.groups()
    assert main(["generate", str(run.path), "--prompt", "郭靖", "--length", "40", "--seed", seed,
                 "--precision", precision]) == 0
    assert capsys.readouterr().out == captured.out


def test_cli_warns_of_prompt_characters_the_model_never_saw(run: Run, capsys):
    assert main(["generate", str(run.path), "--prompt", "郭靖鳯凰", "--length", "10", "--seed", "1"]) == 0
    err = capsys.readouterr().err
    assert "the model never saw 鳯、凰 in training" in err and "<unk>" in err
    assert main(["generate", str(run.path), "--prompt", "郭靖", "--length", "10", "--seed", "1"]) == 0
    assert "never saw" not in capsys.readouterr().err


def test_cli_acrostic_and_stop_at(run: Run, capsys):
    assert main(["generate", str(run.path), "--acrostic", "郭黄", "--length", "30", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line[0] for line in lines] == ["郭", "黄"]
    assert main(["generate", str(run.path), "--acrostic", "鳯"]) == 2
    assert "never saw" in capsys.readouterr().err

