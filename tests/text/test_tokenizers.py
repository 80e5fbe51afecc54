"""Tokenizers: round trips, saved-and-loaded tokenizers, jieba user words, hybrid fallback, parallel runs."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import SHARED_CORPORA
from lstmgen.config import TokenizerConfig
from lstmgen.errors import LstmgenError
from lstmgen.text import segmenter, tokenizers
from lstmgen.text.tokenizers import (
    CharTokenizer,
    HybridTokenizer,
    WhitespaceTokenizer,
    WordTokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)
from lstmgen.text.vocab import Vocab

try:
    import rjieba  # noqa: F401

    HAVE_RJIEBA = True
except ImportError:
    HAVE_RJIEBA = False

BACKENDS = ["jieba"] + (["rjieba"] if HAVE_RJIEBA else [])

# Written for these tests: normalised text (LF, one paragraph per line), with an empty line, spaces
# inside lines, Latin words, numbers, and a final newline.
STORY = (
    "令狐冲喝了一碗酒，笑道：“好酒！”\n"
    "他骑着乌云踏雪去了华山，三天后才回来。\n"
    "\n"
    "小龙女和杨过在古墓里练剑, version 2.5 of the  manual said so.\n"
    "令狐冲又喝了一碗酒。\n"
)
TRAINING = [STORY * 3, "令狐冲和杨过喝酒。\n杨过说：“好酒！”\n"]


def roundtrip_texts() -> list[str]:
    return [STORY, "", "\n", "\n\n", "没有换行", "  两个空格开头", "结尾空格  \n", "😀表情 and 㐀 rare 𠀀 字\n", "v1.2.3 e-mail"]


def saved_and_loaded(tokenizer: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    return tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict())))


def test_char_tokens_are_characters_and_round_trip() -> None:
    tokenizer = CharTokenizer()
    assert tokenizer.tokenize("天下 大势\n分") == ["天", "下", " ", "大", "势", "\n", "分"]
    for text in roundtrip_texts():
        assert tokenizer.detokenize(tokenizer.tokenize(text)) == text


@pytest.mark.parametrize("backend", BACKENDS)
def test_word_round_trips_and_keeps_spaces_and_newlines(backend: str) -> None:
    tokenizer = WordTokenizer(backend=backend)
    for text in roundtrip_texts():
        assert tokenizer.detokenize(tokenizer.tokenize(text)) == text
    tokens = tokenizer.tokenize("小龙女和杨过\n\n在古墓  里")
    assert tokens[:3] == ["小龙女", "和", "杨过"]
    assert tokens.count("\n") == 2 and tokens.count(" ") == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_word_gives_jiebas_words(backend: str) -> None:
    import jieba

    reference = jieba.Tokenizer()
    tokenizer = WordTokenizer(backend=backend)
    for line in STORY.split("\n") + ["v1.2.3 and www.example.com", "㐀㐁 生僻 𠀀𠀁字", "a-b_c%d GB-18030编码"]:
        assert tokenizer.tokenize(line) == reference.lcut(line)


def test_jieba_loads_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    WordTokenizer(backend="jieba").tokenize("令狐冲喝了一碗酒")
    assert "prefix dict" not in capfd.readouterr().err


@pytest.mark.parametrize("backend", BACKENDS)
def test_user_dictionary_changes_segmentation_and_travels_in_the_json(backend: str, tmp_path) -> None:
    user_dict = tmp_path / "words.txt"
    user_dict.write_text("乌云踏雪 nz\n练剑 2000\n", encoding="utf-8")
    plain = WordTokenizer(backend=backend)
    custom = WordTokenizer(str(user_dict), backend=backend)
    assert "乌云踏雪" not in plain.tokenize(STORY) and "乌云踏雪" in custom.tokenize(STORY)
    assert plain.tokenize("在古墓里练剑")[-2:] == ["里练", "剑"]
    assert custom.tokenize("在古墓里练剑")[-2:] == ["里", "练剑"]
    expected = custom.tokenize(STORY)
    user_dict.unlink()  # a saved tokenizer carries its user words: the file is not needed again
    assert saved_and_loaded(custom).tokenize(STORY) == expected


def test_missing_or_undecodable_user_dictionary_is_a_user_error(tmp_path) -> None:
    with pytest.raises(LstmgenError, match="user dictionary"):
        WordTokenizer(str(tmp_path / "absent.txt"))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café 3\n".encode("latin-1"))
    with pytest.raises(LstmgenError, match="UTF-8"):
        build_tokenizer(TokenizerConfig(tokenizer="word", user_dict=str(latin)))


def test_hybrid_must_be_fitted_first() -> None:
    with pytest.raises(LstmgenError, match="fitted"):
        HybridTokenizer(2).tokenize("令狐冲")


@pytest.mark.parametrize("backend", BACKENDS)
def test_hybrid_keeps_frequent_words_and_spells_out_the_rest(backend: str) -> None:
    tokenizer = HybridTokenizer(4, backend=backend)
    tokenizer.fit(TRAINING)
    # jieba's words in training: 一碗 6 times, 杨过 5, 令狐冲 4, 古墓 3, 乌云 3; 黄蓉 never.
    tokens = tokenizer.tokenize("令狐冲和杨过喝了一碗酒，在古墓，黄蓉骑乌云")
    assert {"令狐冲", "一碗", "杨过"} <= set(tokens)
    assert not {"古墓", "乌云", "黄蓉"} & set(tokens) and {"古", "墓", "黄", "蓉", "乌", "云"} <= set(tokens)
    for text in roundtrip_texts():
        assert tokenizer.detokenize(tokenizer.tokenize(text)) == text


@pytest.mark.parametrize("backend", BACKENDS)
def test_hybrid_never_yields_an_unknown_training_character(backend: str) -> None:
    tokenizer = HybridTokenizer(4, backend=backend)
    tokenizer.fit(TRAINING)
    vocab = Vocab.build(tokenizer.tokenize_many(TRAINING), required=tokenizer.required_tokens())
    # New names and new word combinations, written only with characters seen in training; 杨 and 狐
    # occurred in training only inside the kept words 杨过 and 令狐冲.
    prompt = "杨狐冲喝华山酒，龙女骑雪去古墓练剑三天"
    assert set(prompt) <= set("".join(TRAINING))
    assert vocab.unk_id not in vocab.encode(tokenizer.tokenize(prompt)).tolist()
    assert vocab.unk_id not in vocab.encode(saved_and_loaded(tokenizer).tokenize(prompt)).tolist()


def test_hybrid_json_round_trip_tokenizes_identically() -> None:
    tokenizer = HybridTokenizer(3)
    tokenizer.fit(TRAINING)
    data = tokenizer.to_dict()
    assert data["kept_words"] == sorted(data["kept_words"]) and "令狐冲" in data["kept_words"]
    loaded = saved_and_loaded(tokenizer)
    prompt = "令狐冲和杨过骑着乌云踏雪喝酒\n好酒！"
    assert loaded.tokenize(prompt) == tokenizer.tokenize(prompt)
    assert loaded.tokenize_many(TRAINING) == tokenizer.tokenize_many(TRAINING)


def test_whitespace_on_wikitext_lines() -> None:
    tokenizer = WhitespaceTokenizer()
    text = "= Valkyria Chronicles III =\n\nSenjō no Valkyria 3 : <unk> Chronicles , 1 @,@ 000 copies .\n"
    tokens = tokenizer.tokenize(text)
    assert tokens[:5] == ["=", "Valkyria", "Chronicles", "III", "="]
    assert tokens[5:7] == ["\n", "\n"] and tokens[-1] == "\n" and "<unk>" in tokens and "@,@" in tokens
    assert tokenizer.detokenize(tokens) == text
    assert tokenizer.tokenize("a b\nc") == ["a", "b", "\n", "c"]
    # Runs of spaces collapse; nothing else changes.
    assert tokenizer.detokenize(tokenizer.tokenize("a   b\nc  d")) == "a b\nc d"


@pytest.mark.parametrize("kind", ["char", "word", "hybrid", "whitespace"])
def test_json_round_trip_tokenizes_and_encodes_identically(kind: str) -> None:
    tokenizer = build_tokenizer(TokenizerConfig(tokenizer=kind, hybrid_min_count=2))
    tokenizer.fit(TRAINING)
    vocab = Vocab.build(tokenizer.tokenize_many(TRAINING))
    loaded = saved_and_loaded(tokenizer)
    loaded_vocab = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert loaded.kind == kind and loaded.joiner == tokenizer.joiner
    for text in [STORY, "新的提示：杨过喝酒\n"]:
        assert loaded.tokenize(text) == tokenizer.tokenize(text)
        assert loaded_vocab.encode(loaded.tokenize(text)).tolist() == vocab.encode(tokenizer.tokenize(text)).tolist()


@pytest.mark.parametrize("kind", ["char", "word", "hybrid", "whitespace"])
def test_tokenize_many_in_two_processes_matches_tokenize(kind: str, monkeypatch) -> None:
    # Let even this small input go to worker processes, the path large corpora take.
    monkeypatch.setitem(segmenter.POOL_MIN_CHARS, "jieba", 0)
    monkeypatch.setitem(segmenter.POOL_MIN_CHARS, "rjieba", 0)
    tokenizer = build_tokenizer(TokenizerConfig(tokenizer=kind, hybrid_min_count=2))
    tokenizer.fit(TRAINING, workers=2)
    texts = TRAINING + [STORY.replace("酒", "茶"), "", "杨过\n\n"] + [f"第{i}回 令狐冲喝了{i}碗酒" for i in range(20)]
    assert tokenizer.tokenize_many(texts, workers=2) == [tokenizer.tokenize(text) for text in texts]


def test_from_dict_rejects_an_unknown_kind() -> None:
    with pytest.raises(LstmgenError, match="unknown tokenizer kind"):
        tokenizer_from_dict({"kind": "bpe"})


@pytest.mark.skipif(not HAVE_RJIEBA, reason="rjieba is not installed")
def test_a_tokenizer_saved_with_another_segmenter_loads_with_a_warning(caplog) -> None:
    data = WordTokenizer(backend="jieba").to_dict()
    with caplog.at_level(logging.WARNING, logger="lstmgen.text.tokenizers"):
        loaded = tokenizer_from_dict(data)
    assert loaded.tokenize("令狐冲喝了一碗酒") == WordTokenizer(backend="jieba").tokenize("令狐冲喝了一碗酒")
    assert "segments with rjieba" in caplog.text


def test_fast_segmentation_gives_jiebas_words_on_the_four_novels() -> None:
    """rjieba (what a first run segments with) against jieba itself, line by line, on real novels."""

    from lstmgen.text.reading import read_corpus

    if not HAVE_RJIEBA:
        pytest.skip("rjieba is not installed: segmentation is jieba's own")
    novels = SHARED_CORPORA / "sidamingzhu"
    if not novels.is_dir():
        pytest.skip(f"{novels} is not here")
    lines = [line for doc in read_corpus(novels) for line in doc.text.split("\n")]
    fast = WordTokenizer(backend="rjieba").tokenize_many(["\n".join(lines)], workers=1)[0]
    slow = WordTokenizer(backend="jieba").tokenize_many(["\n".join(lines)], workers=2)[0]

    def by_line(tokens: list[str]) -> list[tuple[str, ...]]:
        out, line = [], []
        for token in tokens + ["\n"]:
            if token == "\n":
                out.append(tuple(line))
                line = []
            else:
                line.append(token)
        return out

    fast_lines, slow_lines = by_line(fast), by_line(slow)
    assert len(fast_lines) == len(slow_lines) == len(lines) > 14000
    same = sum(a == b for a, b in zip(fast_lines, slow_lines))
    assert same / len(lines) >= 0.999
