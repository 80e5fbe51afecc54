"""The cleaning rules of docs/cleaning.md: watermarks inside paragraphs, garbled paragraphs, scripts,
width and punctuation; each on files written here and on the real corpora where they are present."""

import dataclasses
import logging
from pathlib import Path

import pytest

from conftest import SHARED_CORPORA
from lstmgen.config import DataConfig, RunConfig
from lstmgen.errors import LstmgenError
from lstmgen.text.changes import Changes
from lstmgen.text.garbled import garbled_window
from lstmgen.text.reading import read_corpus
from lstmgen.text.script import convert_script, corpus_script, detect_script, run_script
from lstmgen.text.width import chinese_punctuation, half_width

CLASSICS = SHARED_CORPORA / "sidamingzhu"
WIKITEXT = SHARED_CORPORA / "wikitext-2"

# Story paragraphs written for these tests.
STORY = ["天色渐渐暗了下来，老渔夫收起渔网，把小船慢慢划回岸边。",
         "他的孙女早已等在码头上，手里提了一盏灯笼，远远地朝他招手。",
         "两人沿着石板路往家走，一路上说着今天打到的鱼和明天的天气。",
         "到了家门口，老渔夫停下脚步，抬头看了看满天的星星，笑了。",
         "那一夜，村子里格外安静，只有海浪一声一声拍打着礁石。",
         "第二天一早，孙女把昨晚的事情写进了日记，又读给爷爷听。"]
TRADITIONAL = ["天色漸漸暗了下來，老漁夫收起漁網，把小船慢慢划回岸邊。",
               "他的孫女早已等在碼頭上，手裡提了一盞燈籠，遠遠地朝他招手。"]


def write(folder: Path, name: str, lines: list[str], encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes("\r\n".join(lines).encode(encoding))
    return path


def read(path: Path, **settings) -> list:
    return read_corpus(path, data=DataConfig(**settings), quiet=True)


# --- watermarks inside paragraphs --------------------------------------------------------------

@pytest.mark.parametrize("mark", [
    "------〖书香门第 www.txtshuxiang.com〗",
    "【看书网 kanshu.la】",
    "——《笔趣阁 http://www.biquge.info/12_345/》",
    "（ｗｗｗ．ｘｉａｏｓｈｕｏ．ｃｏｍ）",  # full-width letters, as some sites write them
    " biquge.cc",
])
def test_a_site_watermark_at_the_end_start_or_middle_of_a_paragraph_is_removed(tmp_path, mark):
    lines = [STORY[0] + mark, mark.strip(" -—") + STORY[1], STORY[2][:10] + mark + STORY[2][10:], STORY[3]]
    document, = read(write(tmp_path, "novel.txt", lines, "gb18030"))
    assert document.text.split("\n") == STORY[:4]
    assert document.changes["watermarks"].count == 3
    example = document.changes["watermarks"].examples[0]
    assert example["before"].endswith("岸边。") and example["new"] == ""


def test_a_paragraph_that_is_only_a_watermark_goes_whole_and_the_rule_can_be_turned_off(tmp_path):
    path = write(tmp_path, "novel.txt", [STORY[0], "〖书香门第 www.txtshuxiang.com〗", STORY[1] + "【看书网 kanshu.la】"])
    assert read(path)[0].text.split("\n") == STORY[:2]
    kept = read(path, inline_watermarks=False, advert_pattern="")[0].text.split("\n")
    assert kept == [STORY[0], "〖书香门第 www.txtshuxiang.com〗", STORY[1] + "【看书网 kanshu.la】"]


def test_a_note_recurring_at_paragraph_ends_is_removed_but_a_recurring_sentence_of_the_story_stays(tmp_path):
    note = "（本章由书香门第手打整理）"
    formula = "欲知后事如何，且听下回分解。"  # ends every chapter of the classics: story, not a site's note
    lines = [f"{line}{note}" if i % 2 == 0 else f"{line}{formula}" for i, line in enumerate(STORY * 2)]
    document, = read(write(tmp_path, "novel.txt", lines))
    expected = [line if i % 2 == 0 else f"{line}{formula}" for i, line in enumerate(STORY * 2)]
    assert document.text.split("\n") == expected
    assert document.changes["watermarks"].count == 6


def test_a_note_at_paragraph_starts_across_files_is_removed(tmp_path):
    start = "[天下书库首发]"
    for index in range(3):  # twice in each of three files: too few for one file, enough across them
        write(tmp_path, f"{index}.txt", [start + STORY[index], start + STORY[index + 1], STORY[index + 2]])
    documents = read(tmp_path)
    assert [d.text.split("\n") for d in documents] == [STORY[i:i + 3] for i in range(3)]


@pytest.mark.skipif(not CLASSICS.is_dir(), reason=f"real corpus not found at {CLASSICS}")
def test_the_watermark_rules_change_nothing_in_the_classics():
    # Every change the rules make there would be listed here, reviewed; they make none.
    assert {d.name: d.changes["watermarks"].examples for d in read(CLASSICS)} == {
        "三国演义.txt": [], "水浒传.txt": [], "红楼梦.txt": [], "西游记.txt": []}


@pytest.mark.skipif(not WIKITEXT.is_dir(), reason=f"real corpus not found at {WIKITEXT}")
def test_the_cleaning_rules_change_nothing_in_wikitext():
    # English prose names sites (Amazon.com, TV.com) as what it says: no watermark, and no Chinese.
    for document in read(WIKITEXT):
        assert {rule: found.count for rule, found in document.changes.items()} == {
            "advert_lines": 0, "garbled": 0, "half_width": 0, "watermarks": 0, "punctuation": 0, "script": 0}


# --- garbled paragraphs ------------------------------------------------------------------------

MOJIBAKE = [("utf-8", "gbk"), ("utf-8", "gb18030"), ("gbk", "cp950"), ("cp950", "gbk"), ("gbk", "latin-1"),
            ("utf-8", "cp1252"), ("gbk", "utf-8"), ("gbk", "shift_jis")]


@pytest.mark.parametrize("written, read_as", MOJIBAKE)
def test_a_paragraph_decoded_with_the_wrong_codec_is_left_out_and_counted(tmp_path, written, read_as):
    source = "".join(TRADITIONAL) if written == "cp950" else STORY[4] + STORY[5]
    garbled = source.encode(written).decode(read_as, errors="replace")
    document, = read(write(tmp_path, "novel.txt", [*STORY[:2], garbled, *STORY[2:4]]))
    assert document.text.split("\n") == STORY[:4]
    assert document.changes["garbled"].count == 1


def test_runs_of_replacement_or_private_use_characters_are_garbled_but_a_lost_character_is_not():
    assert garbled_window("他走进院子，\ufffd\ufffd\ufffd看见一棵树。")
    assert garbled_window("他走进院子，\ue001\ue002\ue003看见一棵树。")
    for lost in ("他走进院子，看见一棵?树。", "他拿起□□，看见一棵树。", "林?出马，与贺统军交战。", "一头黑きき的头发，挽着个シ，容长"):
        assert not garbled_window(lost)
    assert not any(garbled_window(line) for line in STORY + TRADITIONAL)


@pytest.mark.skipif(not CLASSICS.is_dir(), reason=f"real corpus not found at {CLASSICS}")
def test_the_classics_lose_only_their_mojibake_paragraphs():
    settings = {"chinese_punctuation": False, "half_width": False}
    kept = {d.name: set(d.text.split("\n")) for d in read(CLASSICS, **settings)}
    dropped = {d.name: [line[:8] for line in d.text.split("\n") if line not in kept[d.name]]
               for d in read(CLASSICS, drop_garbled=False, **settings)}
    # Each reviewed: a paragraph that turns into mojibake part of the way (GBK bytes read one byte out
    # of step, with "?" where a pair did not decode). The classics' lost characters (林?, 纨э, □)
    # and their poems of rare characters stay.
    assert dropped == {
        "三国演义.txt": ["自是曹操部下文有", "且说操大军所到之", "管亥望见救军来到", "却说曹操正在军中", "却说曹操攻城，两",
                      "操即命绣作书招安", "却说蔡瑁、张允归", "却说当日曹操见黑", "操令卜东吴、西蜀", "次日，官僚又集于",
                      "正惊讶间，忽然狂", "建兴三年，益州飞", "却说雍晏??酌髯", "众皆拜谢而去；回", "于是永昌太守王伉",
                      "却说钟会下寨已毕"],
        "水浒传.txt": [],
        "红楼梦.txt": ["正说着，只见他嫂", "却说宝玉回到怡红", "薛姨妈听了，叫小"],
        "西游记.txt": []}


# --- simplified and traditional ----------------------------------------------------------------

def test_each_files_script_is_detected_and_a_mixed_corpus_is_warned_of(tmp_path, caplog):
    write(tmp_path, "a.txt", STORY)
    write(tmp_path, "b.txt", TRADITIONAL * 3, "cp950")
    with caplog.at_level(logging.WARNING, logger="lstmgen.text"):
        documents = read_corpus(tmp_path)
    assert [d.script for d in documents] == ["simplified", "traditional"]
    assert "mixes simplified and traditional" in caplog.text and "--script simplified" in caplog.text
    assert detect_script("The quick brown fox.") == "none"
    assert corpus_script([{"script": d.script, "characters": len(d.text)} for d in documents]) == "mixed"


def test_script_conversion_converts_whole_words_and_is_counted(tmp_path):
    write(tmp_path, "b.txt", TRADITIONAL, "cp950")
    document, = read(tmp_path, script="simplified")
    assert document.text.split("\n") == STORY[:2]
    assert document.script == "traditional" and document.changes["script"].count == 2
    assert convert_script("头发", "traditional") == "頭髮" and convert_script("頭髮", "keep") == "頭髮"
    with pytest.raises(LstmgenError):
        DataConfig(script="cantonese")


def test_a_run_remembers_its_script_and_old_runs_read_their_text_as_before():
    assert run_script("keep", {"script": "traditional"}) == "traditional"
    assert run_script("simplified", {"script": "traditional"}) == "simplified"
    assert run_script("keep", {"script": "mixed"}) is None and run_script("keep", {}) is None
    old = RunConfig.from_dict({"data": {"valid_fraction": 0.1}})  # a config.json from before the rules
    assert (old.data.inline_watermarks, old.data.drop_garbled, old.data.half_width,
            old.data.chinese_punctuation, old.data.script) == (False, False, False, False, "keep")
    new = RunConfig.from_dict(RunConfig().to_dict())
    assert new.data == DataConfig() and new.data.drop_garbled


# --- width and punctuation ---------------------------------------------------------------------

def test_full_width_letters_and_digits_become_half_width():
    changes = Changes()
    assert half_width("第１２回 ＡＢＣ公司，ｗｗｗ．ｓｉｔｅ．ｃｏｍ", changes) == "第12回 ABC公司，www.site.com"
    assert changes.count == 3


def test_ascii_punctuation_inside_chinese_becomes_full_width_and_english_stays():
    changes = Changes()
    text = '他说,"好的."然后(笑)走了...\nShe said, "fine." 3.14 and www.site.com; 他说:"不!"'
    assert chinese_punctuation(text, changes) == \
        '他说，“好的。”然后（笑）走了……\nShe said, "fine." 3.14 and www.site.com; 他说：“不！”'
    assert changes.count == 11
    assert chinese_punctuation("他看见一棵?树", Changes()) == "他看见一棵?树"  # a lost character, not a question


def test_the_settings_reach_the_token_cache_key(tmp_path):
    from lstmgen.tokens.prepare import files_key

    write(tmp_path, "a.txt", STORY)
    keys = {files_key(tmp_path, DataConfig(**change)) for change in
            ({}, {"inline_watermarks": False}, {"drop_garbled": False}, {"script": "traditional"},
             {"half_width": False}, {"chinese_punctuation": False})}
    assert len(keys) == 6
    assert {f.name for f in dataclasses.fields(DataConfig)} >= {"inline_watermarks", "drop_garbled", "script",
                                                                 "half_width", "chinese_punctuation"}


# --- lstmgen inspect ---------------------------------------------------------------------------

def test_inspect_reports_every_rule_shared_files_and_splits_and_writes_the_training_text(tmp_path, capsys):
    import json

    from lstmgen.cli.main import main

    corpus = tmp_path / "corpus"
    write(corpus, "a.txt", [STORY[0] + "【看书网 kanshu.la】", *STORY[1:], "他说,好。"])
    write(corpus, "b.txt", STORY[1:])  # all of it is in a.txt too
    out = tmp_path / "text.txt"
    assert main(["inspect", str(corpus), "--json", "--text", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.split("\nthe text as training sees it")[0])
    a = report["files"][0]
    assert (a["name"], a["script"], a["paragraphs"]) == ("a.txt", "simplified", 7)
    assert a["rules"]["watermarks"]["count"] == 1
    assert a["rules"]["watermarks"]["examples"][0]["old"] == "【看书网 kanshu.la】"
    assert a["rules"]["punctuation"]["examples"][0] == {"before": "他说", "old": ",", "new": "，", "after": "好。"}
    assert {"file": "b.txt", "in": "a.txt", "share": 1.0, "kind": "contained"} in report["shared"]
    assert report["splits"]["train"]["documents"] == 2
    assert out.read_text(encoding="utf-8") == "\n".join(STORY) + "\n他说，好。\n\n" + "\n".join(STORY[1:]) + "\n"
    assert main(["inspect", str(corpus), "--no-inline-watermarks", "--no-chinese-punctuation"]) == 0
    printed = capsys.readouterr().out
    assert "watermarks removed" not in printed and "b.txt in a.txt: 100% (contained)" in printed
    assert main(["inspect", str(corpus), "--script", "cantonese"]) == 2
    assert "lstmgen: error: --script must be one of keep, simplified, traditional" in capsys.readouterr().err
