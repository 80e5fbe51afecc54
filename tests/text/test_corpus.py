"""Reading corpora: encodings, index files, normalisation, adverts, the held-out split."""

import codecs
import logging
from pathlib import Path

import pytest

from conftest import SHARED_CORPORA
from lstmgen.errors import LstmgenError
from lstmgen.text.cleaning import normalize_text
from lstmgen.text.encodings import decode_bytes, detect_encoding
from lstmgen.text.reading import list_corpus_files, read_corpus
from lstmgen.text.splitting import corpus_fingerprint, split_documents

REAL_CORPUS = SHARED_CORPORA / "sidamingzhu"

# Short passages written for these tests, in simplified and traditional form.
SIMPLIFIED = "话说那山中有一座古庙，庙里住着一个老和尚。他每天清早起来，先扫地，再念经。\n" * 3
TRADITIONAL = "話說那山中有一座古廟，廟裡住著一個老和尚。他每天清早起來，先掃地，再念經。\n" * 3


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rejoin(text: str, train: str, valid: str, test: str) -> str:
    separator = "\n" if "\n" in text else ""
    return separator.join(part for part in (train, valid, test) if part)


# --- encodings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [TRADITIONAL, "學而時習之，不亦說乎", "說", "這個國家"])
def test_big5_traditional_text_is_read_as_big5(text):
    raw = text.encode("big5")
    assert detect_encoding(raw) == "big5"
    assert decode_bytes(raw) == (text, "big5")


def test_big5_from_windows_with_characters_pythons_big5_lacks_is_read_as_big5():
    # 裏 (common in traditional text) and 碁 are in Windows' Big5 (cp950), not in Python's strict
    # "big5": one of them made the whole novel fall back to GB18030, read as mojibake.
    text = (TRADITIONAL + "這裏有一盤圍碁。\n") * 30
    raw = text.encode("cp950")
    with pytest.raises(UnicodeEncodeError):
        text.encode("big5")
    assert decode_bytes(raw) == (text, "big5")


def test_big5_with_a_bad_byte_pair_leaves_the_pair_out_not_the_encoding(caplog):
    text = (TRADITIONAL + "\n") * 60
    raw = text.encode("big5")
    cut = raw.index("\n".encode()) + 1  # at a line's start, between characters
    with caplog.at_level(logging.WARNING, logger="lstmgen"):
        decoded, encoding = decode_bytes(raw[:cut] + b"\xa4\x80" + raw[cut:], "novel.txt")
    assert encoding == "big5" and decoded.count(TRADITIONAL) == 60
    assert "read as big5, leaving out" in caplog.text and "does not look like Chinese" not in caplog.text


def test_utf16_cut_off_in_the_middle_of_a_character_is_read_without_the_last_bytes(caplog):
    text = SIMPLIFIED * 20
    with caplog.at_level(logging.WARNING, logger="lstmgen"):
        decoded, encoding = decode_bytes(text.encode("utf-16")[:-1], "cut.txt")  # a download cut one byte short
    assert encoding == "utf-16" and decoded == text[:-1]
    assert "cut.txt: read as utf-16, leaving out 1 undecodable" in caplog.text
    with pytest.raises(LstmgenError, match="after a UTF-16 byte-order mark"):
        decode_bytes(codecs.BOM_UTF16_LE + "好".encode("utf-16-le") * 10 + b"\x00\xd8" * 40)  # lone surrogates


# Not "说": its two GBK bytes are also valid UTF-8 (U+02F5), and UTF-8 is tried first, as it must be.
@pytest.mark.parametrize("text", [SIMPLIFIED, "学而时习之，不亦说乎", "这个", "的"])
def test_gbk_simplified_text_is_read_as_gb18030(text):
    raw = text.encode("gbk")
    assert detect_encoding(raw) == "gb18030"
    assert decode_bytes(raw)[0] == text


# Written for this test: "Since it had been raining since morning, I spent the day quietly at home,
# reading a book." in Japanese, and the same in Korean.
JAPANESE = "今日は朝から雨が降っていたので、私は家で本を読みながら静かに一日を過ごしました。\n" * 8
KOREAN = "아침부터 비가 내려서 나는 집에서 책을 읽으며 조용히 하루를 보냈다. 한국어 문장이다.\n" * 12


@pytest.mark.parametrize("text, codec", [(JAPANESE, "shift_jis"), (JAPANESE, "euc_jp"), (KOREAN, "euc_kr")])
def test_text_in_an_encoding_lstmgen_does_not_guess_is_read_with_a_warning(text, codec, caplog):
    with caplog.at_level(logging.WARNING, logger="lstmgen.text"):
        decoded, encoding = decode_bytes(text.encode(codec), "diary.txt")
    assert encoding in ("gb18030", "big5") and decoded != text  # mojibake: nothing can tell it apart by bytes
    assert "diary.txt: read as" in caplog.text and "convert it to UTF-8" in caplog.text


@pytest.mark.parametrize("text, codec", [(SIMPLIFIED * 4, "gbk"), (TRADITIONAL * 4, "big5")])
def test_chinese_in_gbk_or_big5_is_read_without_a_warning(text, codec, caplog):
    with caplog.at_level(logging.WARNING, logger="lstmgen.text"):
        assert decode_bytes(text.encode(codec), "novel.txt")[0] == text
    assert caplog.text == ""


@pytest.mark.parametrize("codec, expected", [
    ("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"),
    ("utf-16-le", "utf-16"), ("utf-16-be", "utf-16"),
])
def test_unicode_encodings_and_byte_order_marks(codec, expected):
    raw = SIMPLIFIED.encode(codec)
    if codec in ("utf-16-le", "utf-16-be"):  # the BOM in the codec's own byte order
        raw = "\ufeff".encode(codec) + raw
    text, encoding = decode_bytes(raw)
    assert (text, encoding) == (SIMPLIFIED, expected)  # the BOM never reaches the text


@pytest.mark.parametrize("raw", [
    bytes(range(256)) * 4,  # NUL bytes, no UTF-16 mark
    b"\x01\x02\x03\x04\x05\x06\x07\x08abc" * 50,  # mostly control characters
    b"\x80\xff\x80\xff" * 20,  # no candidate decodes it
])
def test_binary_data_is_refused_with_the_files_name(raw):
    with pytest.raises(LstmgenError, match=r"^junk\.txt: not text in UTF-8, GB18030/GBK, Big5 or UTF-16 \("):
        decode_bytes(raw, "junk.txt")


@pytest.mark.parametrize("codec", ["utf-8", "gbk"])
@pytest.mark.parametrize("damage", ["cut off in the last character", "a stray byte"])
def test_a_few_bytes_that_do_not_decode_are_left_out_with_a_warning_not_an_error(codec, damage, caplog):
    text = (SIMPLIFIED * 8).rstrip("\n")  # ends in 。, two or three bytes
    raw = text.encode(codec)
    between = len(text[:13].encode(codec))  # between two characters
    raw = raw[:-1] if damage.startswith("cut") else raw[:between] + b"\xff" + raw[between:]
    with caplog.at_level(logging.WARNING, logger="lstmgen.text"):
        decoded, encoding = decode_bytes(raw, "novel.txt")
    assert encoding == {"utf-8": "utf-8", "gbk": "gb18030"}[codec]  # not the mojibake another codec makes
    assert "\ufffd" not in decoded
    if damage.startswith("cut"):
        assert decoded == text[:-1]
    else:
        assert decoded == text
    line = 24 if damage.startswith("cut") else 1
    assert f"novel.txt: read as {encoding}, leaving out 1 undecodable byte sequence (the first on line {line}:" \
        in caplog.text


def test_empty_bytes_decode_to_empty_text():
    assert decode_bytes(b"") == ("", "utf-8")


# --- normalisation -----------------------------------------------------------------------------

def test_normalize_unifies_line_ends_trims_lines_and_drops_blank_lines():
    raw = "\u3000\u3000第一回\u3000开篇\r\n\r\n\t 他说：“好。”\xa0 \r老僧 点头\n\n\n   \n末句\r\n\x1a"  # DOS's Ctrl-Z
    text, dropped = normalize_text(raw)
    assert text == "第一回 开篇\n他说：“好。”\n老僧 点头\n末句"
    assert dropped == 0


def test_normalize_drops_short_advert_lines_but_keeps_story_lines():
    story = "他抬头看见墙上写着www.example.com几个字，" + "心中好生奇怪，" * 10
    raw = "\n".join([
        "本书来自www.cr173.com免费txt小说下载站",
        "正文第一段。",
        "更多精彩，请访问 HTTP://WWW.EXAMPLE.ORG",
        story,  # longer than max_advert_line: story text even though it names a site
        "正文第二段。",
    ])
    text, dropped = normalize_text(raw)
    assert text.split("\n") == ["正文第一段。", story, "正文第二段。"]
    assert dropped == 2
    assert normalize_text(raw, advert_pattern="")[1] == 0  # an empty pattern filters nothing
    assert normalize_text(raw, max_advert_line=10)[1] == 0


def test_a_web_pages_navigation_is_dropped_but_story_lines_with_its_words_are_kept():
    # As a novel saved from a web page has it, between two chapters.
    navigation = ["首页|原创书库|武侠|名著|排行|论坛", "本站招收管理员，欢迎报名，点此察看详情！", "后一页", "前一页",
                  "回目录", "回首页", "上一章", "下一页"]
    navigation += ["本书由书香门第整理制作", "更多精彩小说尽在某某网", "记住本站网址biquge.com笔趣阁",
                   "手机阅读请访问m.example.net", "本书来自某某书屋", "网友某某整理制作"]
    story = ["第三十八回", "宝玉翻到后一页，又回到首页看了一遍。", "他把目录放下。", "本书由此开始讲一个故事。",
             "他笑道：更多精彩的还在后面呢。", "他掏出手机阅读短信。", "这份报告是他连夜整理制作的。",
             "本书来自他父亲的书房。", "更多精彩的故事，请听下回分解。"]
    text, dropped = normalize_text("\n".join([story[0], *navigation, *story[1:]]))
    assert text.split("\n") == story and dropped == len(navigation)


def test_invalid_advert_pattern_is_a_user_error(tmp_path):
    with pytest.raises(LstmgenError, match="not a valid regular expression"):
        normalize_text("abc", advert_pattern="(unclosed")
    write(tmp_path / "a.txt", "正文".encode())
    with pytest.raises(LstmgenError, match="not a valid regular expression"):
        read_corpus(tmp_path, advert_pattern="[")


def test_normalize_reads_one_huge_line():
    # how long it takes is bench/read_speed.py's to measure (it is linear), not a test's
    raw = "\u3000" + "字" * 20_000_000 + "\r\n"
    text, dropped = normalize_text(raw)
    assert len(text) == 20_000_000 and dropped == 0


# --- files, folders and index files ------------------------------------------------------------

def test_read_corpus_reads_a_folder_of_mixed_encodings(tmp_path, caplog):
    write(tmp_path / "a_utf8.txt", SIMPLIFIED.encode("utf-8"))
    write(tmp_path / "b_bom.txt", SIMPLIFIED.encode("utf-8-sig"))
    gb_text = "本书来自www.cr173.com免费txt小说下载站\r\n" + SIMPLIFIED.replace("\n", "\r\n")
    write(tmp_path / "c_gb.txt", gb_text.encode("gb18030"))
    write(tmp_path / "d_big5.txt", TRADITIONAL.encode("big5"))
    write(tmp_path / "e_utf16.txt", SIMPLIFIED.encode("utf-16"))
    write(tmp_path / "notes.md", b"not part of the corpus")
    with caplog.at_level(logging.INFO, logger="lstmgen.text"):
        documents = read_corpus(tmp_path)
    assert [d.name for d in documents] == ["a_utf8.txt", "b_bom.txt", "c_gb.txt", "d_big5.txt", "e_utf16.txt"]
    assert [d.encoding for d in documents] == ["utf-8", "utf-8-sig", "gb18030", "big5", "utf-16"]
    expected = SIMPLIFIED.strip()
    assert [d.text for d in documents] == [expected, expected, expected, TRADITIONAL.strip(), expected]
    assert [d.dropped_lines for d in documents] == [0, 0, 1, 0, 0]
    assert all(Path(d.path).is_absolute() and Path(d.path).is_file() for d in documents)
    assert "c_gb.txt: gb18030" in caplog.text and "1 advert lines dropped" in caplog.text


def test_folders_are_read_recursively_in_path_order_with_spaces_and_chinese_names(tmp_path):
    root = tmp_path / "我的 小说"
    write(root / "金庸 全集" / "天龙八部.txt", "天龙".encode())
    write(root / "b.txt", "乙".encode())
    write(root / "a 甲.txt", "甲".encode())
    write(root / "sub" / "upper.TXT", "大写".encode())
    names = [d.name for d in read_corpus(root)]
    assert names == ["a 甲.txt", "b.txt", "sub/upper.TXT", "金庸 全集/天龙八部.txt"]
    assert [d.text for d in read_corpus(root / "b.txt")] == ["乙"]


def test_a_file_of_any_extension_can_be_given_directly(tmp_path):
    file = write(tmp_path / "novel.text", "正文".encode())
    assert list_corpus_files(file) == [file]
    assert read_corpus(file)[0].name == "novel.text"


def test_index_file_in_gbk_with_full_width_commas_sets_the_files_and_order(tmp_path):
    for title in ("飞狐外传", "雪山飞狐", "连城诀", "未列出"):
        write(tmp_path / f"{title}.txt", f"{title}正文".encode("gbk"))
    write(tmp_path / "inf.txt", " 雪山飞狐，飞狐外传.txt、\r\n连城诀 ,\r\n".encode("gbk"))
    expected = [tmp_path / "雪山飞狐.txt", tmp_path / "飞狐外传.txt", tmp_path / "连城诀.txt"]
    assert list_corpus_files(tmp_path) == expected
    assert list_corpus_files(tmp_path / "inf.txt") == expected  # the index itself means the same
    documents = read_corpus(tmp_path)
    assert [d.name for d in documents] == ["雪山飞狐.txt", "飞狐外传.txt", "连城诀.txt"]
    assert documents[0].text == "雪山飞狐正文" and documents[0].encoding == "gb18030"


def test_a_shelf_of_folders_keeps_each_folders_index(tmp_path):
    # 金庸/ has an index (and a file it leaves out); 古龙/ has none; 金庸/旧版/ is under the index's rule
    for relative in ("金庸/射雕英雄传.txt", "金庸/神雕侠侣.txt", "金庸/读书笔记.txt", "金庸/旧版/射雕.txt",
                     "古龙/多情剑客无情剑.txt", "序.txt"):
        write(tmp_path / relative, "正文".encode())
    write(tmp_path / "金庸" / "inf.txt", "神雕侠侣,射雕英雄传".encode())
    write(tmp_path / "金庸" / "旧版" / "inf.txt", "射雕".encode())
    names = [f.relative_to(tmp_path).as_posix() for f in list_corpus_files(tmp_path)]
    assert names == ["古龙/多情剑客无情剑.txt", "序.txt", "金庸/神雕侠侣.txt", "金庸/射雕英雄传.txt"]


def test_index_file_in_utf8_with_bom_and_one_title_per_line(tmp_path):
    for title in ("书剑恩仇录", "碧血剑"):
        write(tmp_path / f"{title}.txt", title.encode())
    write(tmp_path / "inf.txt", "碧血剑\n书剑恩仇录\n".encode("utf-8-sig"))
    assert [f.name for f in list_corpus_files(tmp_path)] == ["碧血剑.txt", "书剑恩仇录.txt"]


def test_index_naming_a_missing_novel_names_it(tmp_path):
    write(tmp_path / "射雕英雄传.txt", "正文".encode())
    write(tmp_path / "inf.txt", "射雕英雄传,神雕侠侣".encode("gbk"))
    with pytest.raises(LstmgenError, match="神雕侠侣"):
        list_corpus_files(tmp_path)


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "no such file or folder"),
    (lambda root: write(root / "empty" / "x.md", b"x").parent, "holds no .txt files"),
])
def test_bad_paths_are_user_errors(tmp_path, make, message):
    with pytest.raises(LstmgenError, match=message):
        list_corpus_files(make(tmp_path))


def test_binary_file_named_txt_is_refused_with_its_path(tmp_path):
    write(tmp_path / "图片.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(LstmgenError, match=r"图片\.txt: not text"):
        read_corpus(tmp_path)


def test_empty_files_are_skipped_and_an_all_empty_corpus_is_an_error(tmp_path, caplog):
    write(tmp_path / "a.txt", b"")
    write(tmp_path / "b.txt", "\r\n\u3000\u3000\r\n本书来自www.example.com\r\n".encode())
    with pytest.raises(LstmgenError, match="the corpus is empty"):
        read_corpus(tmp_path)
    write(tmp_path / "c.txt", "正文".encode())
    with caplog.at_level(logging.WARNING, logger="lstmgen.text"):
        assert [d.name for d in read_corpus(tmp_path)] == ["c.txt"]
    assert "a.txt" in caplog.text and "b.txt" in caplog.text


# --- split and fingerprint ---------------------------------------------------------------------

def test_split_holds_out_the_end_of_every_document_at_paragraph_breaks():
    paragraphs = [f"第{i}段" + "字" * (i % 7 + 5) for i in range(400)]
    texts = ["\n".join(paragraphs), "\n".join(paragraphs[:200])]
    split = split_documents(texts, valid_fraction=0.1, test_fraction=0.2)
    assert split == split_documents(texts, valid_fraction=0.1, test_fraction=0.2)  # deterministic
    for text, train, valid, test in zip(texts, split.train, split.valid, split.test):
        assert rejoin(text, train, valid, test) == text
        assert text.startswith(train + "\n") and text.endswith("\n" + test)
        # whole paragraphs only: every part starts and ends at a paragraph
        assert set((train + "\n" + valid + "\n" + test).split("\n")) <= set(paragraphs)
        assert abs(len(test) / len(text) - 0.2) < 0.02
        assert abs(len(valid) / len(text) - 0.1) < 0.02


def test_split_without_newlines_cuts_at_exact_characters():
    text = "".join(chr(0x4E00 + i) for i in range(1000))
    split = split_documents([text], valid_fraction=0.05, test_fraction=0.1)
    assert (len(split.train[0]), len(split.valid[0]), len(split.test[0])) == (850, 50, 100)
    assert split.train[0] + split.valid[0] + split.test[0] == text


@pytest.mark.parametrize("text", [
    "射雕英雄传\n金庸 著\n" + "郭靖" * 50_000,  # a title, an author, then the novel as one line
    "第一回\n" + "楔子" * 25 + "\n" + "黄蓉" * 50_000 + "\n（全书完）",
])
def test_a_novel_of_few_long_lines_is_held_out_in_proportion_not_whole(text):
    split = split_documents([text], valid_fraction=0.05, test_fraction=0.05)
    for part in (split.valid[0], split.test[0]):
        assert 0.04 < len(part) / len(text) < 0.06  # not 0, not the whole novel
    assert sum(map(len, (split.train[0], split.valid[0], split.test[0]))) >= len(text) - 2  # at most 2 newlines dropped
    assert text.startswith(split.train[0]) and text.endswith(split.test[0])


def test_zero_fractions_and_short_documents():
    text = "\n".join(["一二三四五"] * 100)
    no_valid = split_documents([text], valid_fraction=0, test_fraction=0.1)
    assert no_valid.valid == [""] and no_valid.test[0]
    assert rejoin(text, no_valid.train[0], "", no_valid.test[0]) == text
    nothing_held_out = split_documents([text], valid_fraction=0, test_fraction=0)
    assert (nothing_held_out.train, nothing_held_out.valid, nothing_held_out.test) == ([text], [""], [""])
    # Too short to hold anything out: everything stays in train, and the lists stay aligned.
    short = split_documents(["短文", "一行\n两行", ""], valid_fraction=0.05, test_fraction=0.05)
    assert short.train == ["短文", "一行\n两行", ""]
    assert short.valid == short.test == ["", "", ""]


@pytest.mark.parametrize("valid, test", [(-0.1, 0.1), (0.1, 1.0), (0.5, 0.5)])
def test_bad_fractions_are_user_errors(valid, test):
    with pytest.raises(LstmgenError, match="fractions"):
        split_documents(["文本"], valid_fraction=valid, test_fraction=test)


def test_fingerprint_depends_on_content_order_and_boundaries():
    base = corpus_fingerprint(["ab", "c"])
    assert len(base) == 64 and base == corpus_fingerprint(["ab", "c"])
    others = [["a", "bc"], ["c", "ab"], ["ab\n", "c"], ["abc"], ["ab", "c", ""], []]
    assert len({base, *(corpus_fingerprint(t) for t in others)}) == 1 + len(others)


# --- the real novels ---------------------------------------------------------------------------

@pytest.mark.skipif(not REAL_CORPUS.is_dir(), reason=f"real corpus not found at {REAL_CORPUS}")
def test_the_four_classic_novels():
    documents = {d.name: d for d in read_corpus(REAL_CORPUS)}
    assert {name: d.encoding for name, d in documents.items()} == {
        "三国演义.txt": "utf-8", "水浒传.txt": "utf-8", "红楼梦.txt": "utf-8", "西游记.txt": "gb18030",
    }
    for document in documents.values():
        text = document.text
        assert len(text) > 500_000
        assert "\r" not in text and "\u3000" not in text and "\n\n" not in text
        split = split_documents([text])
        train, valid, test = split.train[0], split.valid[0], split.test[0]
        assert rejoin(text, train, valid, test) == text  # disjoint, in order, nothing lost
        assert text.startswith(train + "\n") and text.endswith("\n" + test)
        assert 0.04 < len(valid) / len(text) < 0.06 and 0.04 < len(test) / len(text) < 0.06
    assert documents["西游记.txt"].text.startswith("《西游记》")
