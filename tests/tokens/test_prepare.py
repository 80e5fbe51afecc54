"""From a corpus folder to token ids: the cache, the vocabulary from training text only, hybrid fallback."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest

import lstmgen.text.overlap as overlap
import lstmgen.tokens.prepare as pipeline
from lstmgen.config import DataConfig, TokenizerConfig
from lstmgen.tokens.prepare import prepare


def test_a_second_prepare_on_the_same_corpus_does_not_segment_again(tiny_corpus: Path, monkeypatch):
    calls = []
    real = pipeline.segment_texts
    monkeypatch.setattr(pipeline, "segment_texts", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="word"))
    second = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="word"))
    assert len(calls) == 1
    assert isinstance(second.ids["train"], np.memmap)  # the stream is read from disk, not held in memory
    for split in ("train", "valid", "test"):
        assert np.array_equal(first.ids[split], second.ids[split])
    prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))  # other settings: segmented anew
    assert len(calls) == 2
    monkeypatch.setattr(pipeline, "_version", lambda package: "9.9")  # jieba upgraded: its words may differ
    prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="word"))
    assert len(calls) == 3


def test_a_cached_start_reads_no_file_until_one_changes(tiny_corpus: Path, monkeypatch):
    first = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
    real = pipeline.split_corpus
    reads = []
    monkeypatch.setattr(pipeline, "split_corpus", lambda *a, **k: reads.append(1) or real(*a, **k))
    again = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
    assert reads == []
    assert (again.fingerprint, again.characters, again.documents) == (first.fingerprint, first.characters,
                                                                      first.documents)
    assert np.array_equal(again.ids["train"], first.ids["train"])
    prepare(tiny_corpus, DataConfig(advert_pattern=""), TokenizerConfig(tokenizer="char"))  # other settings
    assert len(reads) == 1
    novel = tiny_corpus / "射雕.txt"
    novel.write_text(novel.read_text(encoding="utf-8") + "\n郭靖又来了。", encoding="utf-8")  # the file changed
    changed = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
    assert len(reads) == 2 and changed.fingerprint != first.fingerprint
    # replaced by text of the same size with the old time stamp put back (cp -p, rsync -t, a restore):
    # size and modification time alone would call it unchanged
    stat = novel.stat()
    text = novel.read_text(encoding="utf-8")
    novel.write_text(text.replace("郭靖", "黄蓉"), encoding="utf-8")
    os.utime(novel, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert novel.stat().st_size == stat.st_size and novel.stat().st_mtime_ns == stat.st_mtime_ns
    swapped = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
    assert len(reads) == 3 and swapped.fingerprint != changed.fingerprint


def test_a_file_that_reads_as_mojibake_is_warned_of_at_every_start_not_only_the_first(tiny_corpus: Path, caplog):
    # Written for this test: "On a quiet morning the cat sleeps by the window and the children go to
    # school." in Japanese, saved as Shift-JIS: GB18030 decodes it, into characters no Chinese text has.
    (tiny_corpus / "diary.txt").write_bytes(("静かな朝、猫は窓のそばで眠り、子供たちは学校へ行きます。\n" * 20).encode("shift_jis"))
    (tiny_corpus / "inf.txt").write_text("射雕，神雕，diary", encoding="utf-8")
    for start in ("first", "cached"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lstmgen"):
            # kept: by default its paragraphs are left out as garbled, every one of them
            data = prepare(tiny_corpus, DataConfig(drop_garbled=False), TokenizerConfig(tokenizer="char"))
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and "read as" in r.getMessage()]
        assert len(warnings) == 1 and "diary.txt: read as" in warnings[0], start
        assert "convert it to UTF-8" in warnings[0], start
        doubted = [d["name"] for d in data.documents if "doubt" in d]
        assert doubted == ["diary.txt"], start  # the run records which file, in its info.json


def test_held_out_text_that_another_file_trains_on_is_warned_of_at_every_start(tiny_corpus: Path, caplog):
    one, two = (tiny_corpus / f"{name}.txt" for name in ("射雕", "神雕"))
    clean = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
    assert clean.overlap == {"valid": 0.0, "test": 0.0}
    # the complete works beside the single novels: the end of 射雕, held out, is in the middle of it
    works = one.read_text(encoding="utf-8") + "\n" + two.read_bytes().decode("gb18030")
    (tiny_corpus / "全集.txt").write_text(works, encoding="utf-8")
    (tiny_corpus / "inf.txt").write_text("射雕，神雕，全集", encoding="utf-8")
    for start in ("first", "cached"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lstmgen"):
            data = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
        assert "text is also in the training text, word for word" in caplog.text, start
        assert "Is the same text in two files" in caplog.text, start
        # 射雕's held-out end is inside the works: a third of each split. The works' own test end is
        # 神雕's test end, held out in both; its validation part is a stretch 神雕.txt trains on.
        assert 0.15 < data.overlap["test"] < 0.45 and 0.5 < data.overlap["valid"] < 0.9, (start, data.overlap)


def test_lines_split_a_chunk_at_a_time_are_the_lines():
    text = "甲乙\n\n丙丁戊己庚辛壬癸甲乙丙\n丁\n" + "子" * 30 + "\n丑"
    for chunk in (1, 3, 7, 100):
        assert list(overlap._lines(text, chunk=chunk)) == text.split("\n"), chunk


def test_a_capped_hybrid_vocabulary_keeps_every_training_character_and_the_newline(tiny_corpus: Path):
    chars = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char")).vocab
    capped = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="hybrid", hybrid_min_count=5,
                                                                   max_vocab=len(chars) + 3))
    assert len(capped.vocab) == len(chars) + 3  # <unk>, the newline, every character and the three commonest words
    assert set(chars.tokens) <= set(capped.vocab.tokens) and "\n" in capped.vocab
    # the words the cap left out are spelled out, as rarer ones are: not one training token is <unk>
    assert capped.tokenizer.kept_words <= set(capped.vocab.tokens)
    assert 0 not in capped.ids["train"].tolist() and 0 not in capped.ids["test"].tolist()


def test_a_read_only_token_cache_costs_memory_not_the_run(tiny_corpus: Path, monkeypatch, caplog):
    first = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pipeline.tempfile, "mkdtemp", read_only)  # (root ignores chmod, so this stands in)
    with caplog.at_level(logging.WARNING, logger="lstmgen"):
        other = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char", max_vocab=12))  # new ids
    assert "keeping them in memory" in caplog.text
    assert len(other.ids["train"]) == len(first.ids["train"]) and not isinstance(other.ids["train"], np.memmap)


def test_the_vocabulary_comes_from_the_training_split_only(tmp_path: Path):
    novel = tmp_path / "novel.txt"
    novel.write_text("\n".join(["甲乙丙丁"] * 50 + ["戊己庚辛"]), encoding="utf-8")  # the last line is held out
    data = prepare(novel, DataConfig(valid_fraction=0.0, test_fraction=0.05), TokenizerConfig(tokenizer="char"))
    assert "戊" not in data.vocab and "甲" in data.vocab
    assert data.ids["test"].tolist().count(0) == 4  # the held-out line is all <unk>


@pytest.mark.parametrize("kind", ["word", "hybrid"])
def test_word_and_hybrid_vocabularies_on_the_same_cached_words(tiny_corpus: Path, kind: str):
    data = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer=kind, hybrid_min_count=40))
    tokens = set(data.vocab.tokens)
    assert "小龙女" in tokens  # frequent (72 times in the two novels): a word in both
    assert ("杨过" in tokens) == (kind == "word")  # 38 times: hybrid spells it out
    text = data.tokenizer.detokenize(data.vocab.decode(data.ids["train"][:200]))
    if kind == "hybrid":
        # every character of the training text is a token, so a prompt with a new name still encodes
        assert 0 not in data.vocab.encode(data.tokenizer.tokenize("郭黄欧阳"))
        assert "<unk>" not in text


def test_an_interrupted_segmentation_leaves_nothing_in_the_cache(tiny_corpus: Path, private_cache: Path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of a long jieba pass

    original = pipeline.segment_texts
    monkeypatch.setattr(pipeline, "segment_texts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
    assert not list((private_cache / "tokens").iterdir())  # no half-written folder that nothing would read
    monkeypatch.setattr(pipeline, "segment_texts", original)
    data = prepare(tiny_corpus, DataConfig(), TokenizerConfig(tokenizer="char"))
    assert len(data.ids["train"]) > 0
