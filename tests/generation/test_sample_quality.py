"""Quality numbers for generated text: exact values on hand-made strings, then `lstmgen eval --samples`."""

import json
import random
from pathlib import Path

import pytest

from lstmgen.cli.main import main
from lstmgen.generation.sample_quality import distinct_n, longest_copy, repetition_rate, text_quality
from lstmgen.text.tokenizers import CharTokenizer


def test_distinct_n_counts_distinct_ngrams_over_all_ngrams():
    tokens = ["郭靖", "说道", "郭靖", "说道"]
    assert distinct_n(tokens, 1) == 2 / 4
    assert distinct_n(tokens, 2) == 2 / 3  # (郭靖 说道) twice, (说道 郭靖) once
    assert distinct_n(list("天下大势"), 2) == 1.0
    assert distinct_n(["一"], 2) == 0.0  # no bigram at all


def test_repetition_rate_is_the_share_of_ngrams_seen_before():
    assert repetition_rate("天下大势分久必合") == 0.0
    # 7 character trigrams, 3 of them new: 4 repeat what came before
    assert repetition_rate("哈哈哈哈哈哈哈哈哈", n=3) == pytest.approx(6 / 7)
    assert repetition_rate("abcabcabc", n=3) == pytest.approx(4 / 7)
    assert repetition_rate("abc", n=4) == 0.0


def test_longest_copy_finds_the_longest_verbatim_passage():
    source = "话说天下大势，分久必合，合久必分。"
    assert longest_copy("于是天下大势已定", source) == "天下大势"
    assert longest_copy("分久必合，合久", source) == "分久必合，合久"
    assert longest_copy("狐狸", source) == ""
    assert longest_copy("", source) == ""


def test_longest_copy_agrees_with_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("ab") for _ in range(rng.randint(0, 12)))
        source = "".join(rng.choice("abc") for _ in range(rng.randint(0, 20)))
        best = max((text[i:j] for i in range(len(text)) for j in range(i, len(text) + 1) if text[i:j] in source),
                   key=len, default="")
        assert len(longest_copy(text, source)) == len(best), (text, source)
        assert longest_copy(text, source) in source


def test_text_quality_averages_over_texts_and_keeps_the_longest_copy():
    texts = ["天下大势", "哈哈哈哈哈哈"]
    quality = text_quality(texts, CharTokenizer(), source="话说天下大势")
    assert quality["sample_distinct_1"] == pytest.approx((1.0 + 1 / 6) / 2)
    assert quality["sample_distinct_2"] == pytest.approx((1.0 + 1 / 5) / 2)
    assert quality["sample_repetition_rate"] == pytest.approx((0.0 + 2 / 3) / 2)
    assert quality["sample_longest_copy"] == "天下大势" and quality["sample_longest_copy_chars"] == 4
    unmeasured = text_quality(texts, CharTokenizer())  # no training text at hand: not measured, not "0"
    assert "sample_longest_copy_chars" not in unmeasured and "sample_longest_copy" not in unmeasured
    assert text_quality(texts, CharTokenizer(), source="")["sample_longest_copy_chars"] == 0


def test_eval_samples_measures_generated_text_against_the_training_text(tiny_run_dir: Path, capsys):
    corpus, run = tiny_run_dir.parent / "novel.txt", tiny_run_dir
    assert main(["eval", str(run), "--samples", "3", "--sample-length", "80", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("sample_distinct_1", "sample_distinct_2", "sample_repetition_rate"):
        assert 0 < result[key] < 1, key
    assert result["sample_distinct_1"] < result["sample_distinct_2"]
    # a model of this repetitive text copies whole phrases of it: the copy is real and found
    copy = result["sample_longest_copy"]
    assert result["sample_longest_copy_chars"] == len(copy) >= 4 and copy in corpus.read_text(encoding="utf-8")
    assert main(["eval", str(run), "--samples", "2", "--sample-length", "40"]) == 0
    out = capsys.readouterr().out
    assert "distinct_2" in out and "repetition_rate" in out and "longest_copy" in out
