"""Open-vocabulary scoring: every <unk> word is also charged for its spelling."""

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import NAMES, THINGS, VERBS
from lstmgen.cli.main import main
from lstmgen.model.run_dir import read_metrics
from lstmgen.text.vocab import Vocab
from lstmgen.tokens.batches import batchify_padded, row_starts
from lstmgen.tokens.open_vocab import CODE_POINTS, Speller, Unknowns
from lstmgen.tokens.store import remap


def test_the_spelling_model_is_a_probability_distribution():
    # Characters: a 6 times, b 4 times, c once, in 3 kinds; the words seen once are "c" and "bb".
    vocab = Vocab(["<unk>", "aa", "ab", "bb", "c"], [0, 2, 2, 1, 1])
    speller = Speller(vocab)
    seen = sum(math.exp(-speller.nats(c)) for c in "abc")  # one-character words: P(length 1) * P(c)
    unseen_char = math.exp(-speller.nats("z"))
    assert speller.stop == pytest.approx(1 / 1.5)  # the mean length of the rarest words
    # Over all one-character words, P(length 1) exactly: seen characters plus every other code point.
    assert seen + (CODE_POINTS - 3) * unseen_char == pytest.approx(speller.stop)
    assert math.exp(-speller.nats("a")) == pytest.approx(speller.stop * 6 / (11 + 3))
    # Words of seen characters up to length 8 hold P(length <= 8) * (share of seen characters)^length.
    share = 11 / 14
    total = sum(math.exp(-speller.nats("".join(w))) for n in range(1, 9) for w in itertools.product("abc", repeat=n))
    expected = sum(speller.stop * (1 - speller.stop) ** (n - 1) * share ** n for n in range(1, 9))
    assert total == pytest.approx(expected)
    assert speller.nats("<unk>") == 0.0  # the text's own marker is a word of the vocabulary


def test_a_character_vocabulary_pays_only_for_the_unseen_character():
    vocab = Vocab(["<unk>", "甲", "乙"], [0, 3, 1])
    speller = Speller(vocab)
    assert speller.stop == 1.0  # every token is one character long: no length to code
    assert speller.nats("丙") == pytest.approx(-math.log(2 / (4 + 2) / (CODE_POINTS - 2)))


def test_unknowns_of_a_type_stream_are_those_of_the_token_stream_it_becomes():
    # A hybrid-like expansion: type 1 becomes three tokens, two of them unknown; type 3 none at all.
    vocab = Vocab(["<unk>", "x", "y", "中"], [0, 5, 4, 2])
    speller = Speller(vocab)
    expansions = [["x"], ["甲", "x", "乙"], ["y"], [], ["丙丁"]]
    table = [[vocab.token_to_id(t) for t in tokens] for tokens in expansions]
    rng = np.random.default_rng(0)
    type_ids = rng.integers(0, len(expansions), 500).astype(np.int32)
    tokens = [t for kind in type_ids.tolist() for t in expansions[kind]]
    ids = remap(type_ids, table)
    expected = Unknowns.of_tokens(tokens, ids, speller)
    for chunk in (7, 1 << 22):  # the stream read in many chunks, or in one
        got = Unknowns.of_types(type_ids, expansions, table, speller, chunk=chunk)
        assert np.array_equal(got.positions, expected.positions)
        assert np.allclose(got.nats, expected.nats)
    assert (ids[expected.positions] == 0).all() and len(expected.positions) == int((ids == 0).sum())


def test_only_the_unknown_words_the_model_predicts_are_charged():
    ids = np.arange(40)
    unknowns = Unknowns(positions=np.array([0, 3, 10, 12, 39]), nats=np.array([1.0, 2.0, 4.0, 8.0, 16.0]))
    grid = batchify_padded(ids, 4)  # rows start at 0, 10, 20, 30: those tokens are never predicted
    assert row_starts(40, 4).tolist() == grid[:, 0].tolist() == [0, 10, 20, 30]
    assert unknowns.scored_nats(40, 4) == 2.0 + 8.0 + 16.0
    assert unknowns.scored_nats(13, 4) == 2.0 + 4.0  # 13 tokens in 4 rows of 4: 0, 4, 8 and 12 begin rows
    assert Unknowns.empty().scored_nats(40, 4) == 0.0


def spaced_text(seed: int, sentences: int) -> str:
    """Novel-like sentences with their words spaced out, for the whitespace tokenizer."""
    rng = random.Random(seed)
    return "\n".join(" ".join([rng.choice(NAMES), rng.choice(VERBS), rng.choice(THINGS), "。"])
                     for _ in range(sentences))


def test_a_word_model_is_charged_for_the_words_it_never_saw(tmp_path: Path, capsys):
    train, valid, test = tmp_path / "train.txt", tmp_path / "valid.txt", tmp_path / "test.txt"
    train.write_text(spaced_text(1, 300), encoding="utf-8")
    valid.write_text(spaced_text(2, 20), encoding="utf-8")
    # Two names the training text never had, in 84 tokens: 16 rows of 6, so neither begins a row.
    known = "郭靖 说道 桃花岛 。 " * 10
    test.write_text(known + "令狐冲 华山 说道 。 " + known, encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(train), "--valid", str(valid), "--test", str(test), "--out", str(run),
                 "--preset", "tiny", "--tokenizer", "whitespace", "--epochs", "1"]) == 0
    record = read_metrics(run)[-1]
    assert record["test_unknown"] == 2  # 令狐冲 and 华山
    vocab = Vocab.from_dict(json.loads((run / "vocab.json").read_text(encoding="utf-8")))
    speller = Speller(vocab)
    spelled = speller.nats("令狐冲") + speller.nats("华山")
    assert record["test_spelling_nll"] == pytest.approx(spelled)
    open_bits = (record["test_nll"] + spelled) / math.log(2) / record["test_characters"]
    assert record["test_open_bits_per_char"] == pytest.approx(open_bits)
    assert record["test_open_bits_per_char"] > record["test_bits_per_char"] + 0.1
    assert f"(open vocabulary {record['test_open_bits_per_char']:.3f})" in capsys.readouterr().out  # the summary
    # `lstmgen eval` charges the same, from the split or from a file.
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spelling_nll"] == pytest.approx(spelled)
    assert main(["eval", str(run), str(test), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spelling_nll"] == pytest.approx(spelled)


def test_a_model_that_knows_every_word_is_charged_nothing(tiny_run_dir: Path, capsys):
    record = read_metrics(tiny_run_dir)[-1]
    assert record["test_unknown"] == 0 and record["test_spelling_nll"] == 0.0
    assert record["test_open_bits_per_char"] == record["test_bits_per_char"]
    assert main(["eval", str(tiny_run_dir), "--split", "train", "--json"]) == 0
    assert "open_bits_per_char" not in json.loads(capsys.readouterr().out)  # not gathered for training text


def test_tokens_kept_though_never_seen_add_no_character():
    # A hybrid vocabulary keeps every character of its words, seen alone or not: count 0.
    speller = Speller(Vocab(["<unk>", "甲乙", "甲", "丙"], [0, 3, 1, 0]))
    assert speller.nats("丙") == speller.nats("丁")  # 丙 was never in the text: as unseen as 丁
    assert speller.stop == 1.0  # the rarest token seen is 甲, one character long
