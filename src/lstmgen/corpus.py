"""Files, folders and index files -> documents: encoding detection, normalisation, advert filter, split.

A corpus is a ``.txt`` file, a folder of them (read recursively), or a folder holding an index file
``inf.txt`` that names its novels (``书名一，书名二,...``), read in the index's order.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from lstmgen.config import DEFAULT_ADVERT_PATTERN
from lstmgen.errors import LstmgenError

logger = logging.getLogger(__name__)

INDEX_FILE = "inf.txt"

# Very common characters of Chinese prose, grouped by meaning, in simplified form and, on the second
# half, the traditional forms of those that differ. Text decoded with the wrong codec turns into rare
# characters, kana or private-use code points, so the share of these tells GB18030 from Big5.
_COMMON_CHARS = (
    "的了是不在有这那个们我你他她它之也而其与于以为所者乎矣焉哉兮曰乃即则就都还又再很最更太已曾将把"
    "被给让从向到对和同跟但却只才便若如虽因此故何么什怎哪谁些每各几多少一二三四五六七八九十百千万两半"
    "第位件次回年月日天时分人子女父母兄弟姐妹夫妻儿孙王帝君臣官兵军师徒客友主仆娘爷公侯相士民众家国朝"
    "身心头手足口眼目耳面脸血骨山水火风云雨雪地星江河海湖石木花草树林田路城门来去出入上下起坐走行看见"
    "听说道问答想知觉得要能会可用作做打开关拿放吃喝死生笑哭叫喊飞跑杀战大小高长短新老好恶真假明白黑红"
    "青黄金银远近深清原忽然里自己声东西南北中前后左右外内间事物话书字名心意情理气力神仙佛妖魔马车船刀"
    "剑酒饭衣钱请谢读写买卖边点体语进发现经过当着没今"
    "們個這說為與於無時見來會後對將軍兒孫國門頭臉聽問覺氣長開關殺戰飛雲風東車馬書學發現經過還讓從給幾"
    "誰麼點萬兩錢銀紅黃綠體聲裡邊遠語話請謝讀寫買賣師則雖劍眾兵爺義樣從當著沒進"
)
_COMMON_RE = re.compile("[" + "".join(sorted(set(_COMMON_CHARS))) + "]")
_IDEOGRAPH_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# What a wrong decoding produces: private-use code points, replacement marks, kana and bopomofo.
_ODD_RE = re.compile("[\ue000-\uf8ff\ufffd\u3040-\u30ff\u3100-\u312f]|[\U000f0000-\U0010ffff]")
# Control characters that never appear in text (tab, line ends, form feed and Ctrl-Z do).
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0e-\x19\x1b-\x1f\x7f]")
_MAX_CONTROL_SHARE = 0.01

# Whitespace trimmed from both ends of a line: str.isspace's set plus BOM and zero-width space, which
# editors leave at line starts when files are glued together; and Ctrl-Z, the end-of-file mark old DOS
# editors left after the last line.
_EDGE_CHARS = (" \t\n\r\v\f\x1a\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff"
               + "".join(map(chr, range(0x2000, 0x200C))))
_INDEX_SEPARATORS = re.compile(r"[,，、;；\n\r]+")


@dataclass
class Document:
    name: str  # the file's path relative to the corpus root (or its file name)
    path: str  # absolute path
    text: str  # normalised text: one paragraph per line, no blank lines, no trailing newline
    encoding: str  # codec it was read with: utf-8, utf-8-sig, gb18030, big5 or utf-16
    dropped_lines: int  # advert lines removed
    doubt: str = ""  # why the decoded text may be mojibake (see ``decode_bytes``); empty when it reads well


@dataclass
class Split:
    train: list[str]  # one string per input document (empty where that document gave nothing)
    valid: list[str]
    test: list[str]


def _not_text(name: str, reason: str) -> LstmgenError:
    return LstmgenError(f"{name or 'input'}: not text in UTF-8, GB18030/GBK, Big5 or UTF-16 ({reason})")


def _chinese_score(text: str) -> tuple[float, int]:
    """Share of ideographs that are very common, minus a heavy penalty for signs of a wrong codec;
    and how many characters (ideographs and odd ones) that share is of."""
    sample = text[:200_000]  # enough to decide; keeps a 50 MB file cheap
    common = len(_COMMON_RE.findall(sample))
    odd = len(_ODD_RE.findall(sample))
    judged = len(_IDEOGRAPH_RE.findall(sample)) + odd
    return (common - 5 * odd) / max(1, judged), judged


# Chinese prose and verse have 0.33 or more of that score in every 3,000 characters of the four
# classic novels (0.54 for a handful of Tang quatrains); Japanese in Shift-JIS or EUC-JP and Korean
# in EUC-KR, read as GB18030 or Big5, score 0.1 or less.
_PLAUSIBLE_SCORE = 0.2
_PLAUSIBLE_MIN_IDEOGRAPHS = 100  # fewer say too little to judge by


def _doubt(name: str, encoding: str, score: float, judged: int) -> str:
    """Why the best of GB18030 and Big5 still does not read like Chinese ("" when it does): the file
    is most likely in an encoding lstmgen does not guess (Shift-JIS, EUC-KR, ...) and reads as mojibake."""
    if score >= _PLAUSIBLE_SCORE or judged < _PLAUSIBLE_MIN_IDEOGRAPHS:
        return ""
    return (f"{name or 'text'}: read as {encoding}, but it does not look like Chinese text ({max(score, 0.0):.2f} of "
            f"its ideographs are common ones; Chinese has 0.3 or more). If it is in another encoding (Shift-JIS, "
            f"EUC-KR, ...), convert it to UTF-8")


# The codec behind each encoding's name: Big5 files are written by Windows, whose Big5 (cp950) has
# characters Python's strict "big5" lacks, 裏 and 碁 among them (a traditional text with one 裏 is
# not Big5 to that codec). cp950 decodes everything "big5" does, the same way.
_CODEC = {"big5": "cp950"}


def _codec(encoding: str) -> str:
    return _CODEC.get(encoding, encoding)


def _try_decode(raw: bytes, encoding: str) -> Optional[str]:
    try:
        return raw.decode(_codec(encoding))
    except UnicodeDecodeError:
        return None


_SAMPLE_BYTES = 1 << 20


def _try_decode_prefix(raw: bytes, encoding: str) -> Optional[str]:
    """Decode the start of a file; a character cut in two at the end of the sample is no error."""
    try:
        return codecs.getincrementaldecoder(_codec(encoding))("strict").decode(raw, final=False)
    except (UnicodeDecodeError, LookupError):
        return None


# Undecodable bytes a file may have and still be read (a cut-off download, a stray byte): at most this
# share of its bytes, or 16; more, and it is most likely in another encoding.
_MAX_BAD_SHARE = 1e-4
_MAX_BAD_ALWAYS = 16


def _decode_leniently(raw: bytes, name: str) -> tuple[str, str, str]:
    """Decode a file no candidate decodes strictly, dropping the few byte sequences that do not decode.

    The candidate is chosen on a sample: the most plausible Chinese, then the fewest errors (GB18030
    reads UTF-8 bytes with few errors, as mojibake; UTF-8 reads GBK bytes with many). Returns
    ``(text, encoding, doubt)``; doubt says what was dropped and where, and any doubt about the text.
    """
    sample = raw[:_SAMPLE_BYTES]
    ranked = []
    for order, candidate in enumerate(("utf-8", "gb18030", "big5")):
        decoded = codecs.getincrementaldecoder(_codec(candidate))("replace").decode(sample, final=False)
        score, judged = _chinese_score(decoded)
        ranked.append((-(score if judged >= _PLAUSIBLE_MIN_IDEOGRAPHS else 0.0), decoded.count("\ufffd"), order,
                       score, judged, candidate))
    *_, score, judged, encoding = min(ranked)
    text, note = _leave_out_undecodable(raw, name, encoding, "even in the closest reading")
    doubt = _doubt(name, encoding, score, judged)
    return text, encoding, ". ".join(part for part in (note, doubt) if part)


def _leave_out_undecodable(raw: bytes, name: str, encoding: str, where: str) -> tuple[str, str]:
    """``raw`` decoded as ``encoding`` without the byte sequences that do not decode, and a note of
    how many and where ("" when none); too many for a few stray bytes is no text of that encoding."""
    text = raw.decode(_codec(encoding), errors="replace")
    bad = text.count("\ufffd")
    if bad > max(_MAX_BAD_ALWAYS, len(raw) * _MAX_BAD_SHARE):
        raise _not_text(name, f"undecodable bytes: {bad} places {where}, {encoding}")
    if not bad:
        return text, ""
    line = text.count("\n", 0, text.index("\ufffd")) + 1
    note = (f"{name or 'text'}: read as {encoding}, leaving out {bad} undecodable byte sequence{'s' * (bad > 1)} "
            f"(the first on line {line}: a cut-off download, or a stray byte?)")
    return text.replace("\ufffd", ""), note


def _decode(raw: bytes, name: str) -> tuple[str, str, str]:
    """``decode_bytes``'s work: ``(text, encoding, doubt)``, with doubt "" or why the text may be mojibake."""
    if not raw:
        return "", "utf-8", ""
    text: Optional[str] = None
    doubt = ""
    encoding = ""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text, encoding = _try_decode(raw, "utf-16"), "utf-16"
        if text is None:  # cut off in the middle of a character, say
            text, doubt = _leave_out_undecodable(raw, name, encoding, "after a UTF-16 byte-order mark")
    elif b"\x00" in raw:
        raise _not_text(name, "NUL bytes without a UTF-16 byte-order mark; binary?")
    if text is None and raw.startswith(codecs.BOM_UTF8):
        text, encoding = _try_decode(raw, "utf-8-sig"), "utf-8-sig"
    if text is None:
        text, encoding = _try_decode(raw, "utf-8"), "utf-8"
    if text is None:
        # Choose between GB18030 and Big5 on a sample, then decode the whole file once: a big file
        # is never held in three copies.
        sample = raw[:_SAMPLE_BYTES]
        candidates = [(t, e) for e in ("gb18030", "big5") if (t := _try_decode_prefix(sample, e)) is not None]
        # sorted() keeps the first of equal scores, so GB18030, the commoner on disk, wins ties.
        ranked = sorted(((*_chinese_score(t), e) for t, e in candidates), key=lambda c: -c[0])
        for score, judged, candidate in ranked:
            text, encoding = _try_decode(raw, candidate), candidate
            if text is not None:
                doubt = _doubt(name, encoding, score, judged)
                break
        if text is None:
            text, encoding, doubt = _decode_leniently(raw, name)
        elif doubt:
            # GB18030 decodes almost any bytes: a Big5 novel with one bad byte pair reads strictly only
            # as GB18030 mojibake. A reading that looks like Chinese with a few bytes left out is better.
            try:
                lenient = _decode_leniently(raw, name)
            except LstmgenError:
                lenient = None
            if lenient is not None and lenient[1] != encoding:
                text, encoding, doubt = lenient
    controls = len(_CONTROL_RE.findall(text))
    if controls > _MAX_CONTROL_SHARE * len(text):
        raise _not_text(name, f"{controls} control characters in {len(text)}; binary?")
    return text, encoding, doubt


def decode_bytes(raw: bytes, name: str = "") -> tuple[str, str]:
    """Decode a file's bytes, guessing the encoding; warn when the text does not read like Chinese.

    Order: a UTF-16 or UTF-8 byte-order mark, then strict UTF-8, then whichever of GB18030 and Big5
    yields the more plausible Chinese (both decode most GBK bytes, so neither can win by decoding alone).

    Args:
        raw: the file's content.
        name: the file's name, for error messages.

    Returns:
        ``(text, encoding)`` with encoding one of utf-8, utf-8-sig, gb18030, big5, utf-16.

    Raises:
        LstmgenError: binary data, NUL bytes without a UTF-16 mark, or bytes no candidate decodes.
    """
    text, encoding, doubt = _decode(raw, name)
    if doubt:
        logger.warning("%s", doubt)
    return text, encoding


def detect_encoding(raw: bytes, name: str = "") -> str:
    """The encoding ``decode_bytes`` would read ``raw`` with (same rules, same errors)."""
    return decode_bytes(raw, name)[1]


def _compile_advert(pattern: str) -> Optional[re.Pattern]:
    if not pattern:  # an empty pattern would match every short line; it means "no filter"
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise LstmgenError(f"--advert-pattern {pattern!r} is not a valid regular expression: {error}")


def normalize_text(text: str, *, advert_pattern: str = DEFAULT_ADVERT_PATTERN,
                   max_advert_line: int = 80) -> tuple[str, int]:
    """One paragraph per line: unify line ends, trim lines, drop blank lines and advert lines.

    Full-width spaces (U+3000) and no-break spaces inside a line become plain spaces, one for one, so
    the same heading written with either kind of space reads the same; nothing else inside a line changes.

    Args:
        text: decoded text.
        advert_pattern: regex (case-insensitive); a line of at most ``max_advert_line`` characters that
            it matches is dropped. Empty: drop nothing.
        max_advert_line: longer lines are story text, kept whatever they contain.

    Returns:
        ``(text, dropped)``: the lines joined by ``"\\n"`` with no trailing newline, and how many
        advert lines were dropped.
    """
    advert = _compile_advert(advert_pattern)
    # str.replace and str.split run in C: linear even for one 50 MB line.
    for old, new in (("\r\n", "\n"), ("\r", "\n"), ("\u3000", " "), ("\xa0", " ")):
        if old in text:  # each replace copies the whole text: only where it changes something
            text = text.replace(old, new)
    kept: list[str] = []
    dropped = 0
    lines = text.split("\n")
    del text  # a big file: let the whole text go before the joined copy is made
    for line in lines:
        line = line.strip(_EDGE_CHARS)
        if not line:
            continue
        if advert is not None and len(line) <= max_advert_line and advert.search(line):
            dropped += 1
            continue
        kept.append(line)
    return "\n".join(kept), dropped


def _read_index(index: Path) -> list[Path]:
    """The novels an ``inf.txt`` names, in its order, as paths beside it."""
    text, _ = decode_bytes(_read_bytes(index), str(index))
    files: list[Path] = []
    for title in _INDEX_SEPARATORS.split(text):
        title = title.strip(_EDGE_CHARS)
        if title.lower().endswith(".txt"):
            title = title[:-4].strip(_EDGE_CHARS)
        if not title:
            continue
        file = index.parent / f"{title}.txt"
        if not file.is_file():
            raise LstmgenError(f"{index}: names the novel {title!r}, but {file} does not exist")
        if file not in files:  # a novel listed twice would leak between the splits of its two copies
            files.append(file)
    if not files:
        raise LstmgenError(f"{index}: the index names no novels")
    return files


def list_corpus_files(path: Union[str, Path]) -> list[Path]:
    """The files a corpus path stands for, in reading order.

    A file is itself (any extension; ``inf.txt`` means its index). A folder holding ``inf.txt`` is
    exactly the novels the index names, in its order; any other folder is every ``*.txt`` under it,
    recursively, sorted by relative path, where a sub-folder that holds an ``inf.txt`` stands for the
    novels its index names (the index itself is no novel).

    Raises:
        LstmgenError: a missing path, a folder without .txt files, or an index naming a missing novel.
    """
    path = Path(path)
    if path.is_file():
        return _read_index(path) if path.name == INDEX_FILE else [path]
    if not path.is_dir():
        raise LstmgenError(f"{path}: no such file or folder")
    if (path / INDEX_FILE).is_file():
        return _read_index(path / INDEX_FILE)
    found = [f for f in path.rglob("*") if f.suffix.lower() == ".txt" and f.is_file()]  # inf.txt among them
    indexed = sorted({f.parent for f in found if f.name == INDEX_FILE})
    indexed = [d for d in indexed if not any(outer in d.parents for outer in indexed)]  # the outer index rules
    shelves = [(f.relative_to(path).as_posix(), [f]) for f in found if not any(d in f.parents for d in indexed)]
    shelves += [(d.relative_to(path).as_posix() + "/", _read_index(d / INDEX_FILE)) for d in indexed]
    files = [f for _, group in sorted(shelves, key=lambda shelf: shelf[0]) for f in group]
    if not files:
        raise LstmgenError(f"{path}: the folder holds no .txt files")
    return files


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as error:
        raise LstmgenError(f"{file}: cannot read ({error.strerror or error})")


def _read_document(file: Path, advert_pattern: str, max_advert_line: int) -> tuple[str, str, int, str]:
    """(normalised text, encoding, advert lines dropped, doubt) of one file."""
    text, encoding, doubt = _decode(_read_bytes(file), str(file))  # the raw bytes are freed here
    text, dropped = normalize_text(text, advert_pattern=advert_pattern, max_advert_line=max_advert_line)
    return text, encoding, dropped, doubt


def read_corpus(path: Union[str, Path], *, advert_pattern: str = DEFAULT_ADVERT_PATTERN,
                max_advert_line: int = 80, quiet: bool = False) -> list[Document]:
    """Read, decode and normalise every file of a corpus (see ``list_corpus_files``).

    Files that are empty after normalisation are skipped with a warning. What was read (encodings,
    sizes, advert lines dropped) is logged, unless ``quiet``: a corpus read only to be compared with.

    Raises:
        LstmgenError: a bad path or index, an undecodable file, an invalid pattern, or no text at all.
    """
    _compile_advert(advert_pattern)  # fail on a bad pattern before reading anything
    root = Path(path)
    base = root if root.is_dir() else root.parent
    documents = []
    files = list_corpus_files(root)
    # a line per file for a shelf of novels; for many files (a poetry collection) one summary line
    per_file = logging.INFO if len(files) <= _FILES_LISTED and not quiet else logging.DEBUG
    for file in files:
        text, encoding, dropped, doubt = _read_document(file, advert_pattern, max_advert_line)
        if doubt:
            logger.warning("%s", doubt)
        name = file.relative_to(base).as_posix() if file.is_relative_to(base) else file.name
        if not text:
            logger.warning("%s: no text after removing adverts and blank lines; skipped", name)
            continue
        logger.log(per_file, "%s: %s, %d characters, %d advert lines dropped", name, encoding, len(text), dropped)
        documents.append(Document(name, str(file.resolve()), text, encoding, dropped, doubt))
    if not documents:
        raise LstmgenError(f"{root}: the corpus is empty (no text after removing adverts and blank lines)")
    if per_file == logging.DEBUG and not quiet:
        encodings = ", ".join(f"{e} {n}" for e, n in Counter(d.encoding for d in documents).most_common())
        logger.info("%s: %d files (%s), %d characters, %d advert lines dropped", root, len(documents), encodings,
                    sum(len(d.text) for d in documents), sum(d.dropped_lines for d in documents))
    return documents


_FILES_LISTED = 20


def _nearest_newline(text: str, target: int, low: int, high: int) -> Optional[int]:
    """Index of the newline in ``text[low:high]`` nearest to ``target``; None if there is none."""
    target = min(max(target, low), high)
    before = text.rfind("\n", low, target + 1)
    after = text.find("\n", target, high)
    found = [i for i in (before, after) if i >= 0]
    return min(found, key=lambda i: (abs(i - target), i)) if found else None


def _cut(text: str, target: int, part: int, low: int, high: int) -> Optional[tuple[int, int]]:
    """Where a part of about ``part`` characters that should start after ``target`` starts: ``(end of
    the part before, start of this one)``, or None when no cut in ``[low, high)`` leaves both sides text.

    At the newline nearest to ``target`` (it belongs to neither part) when one is within half the
    part's size (at least 100 characters); else at ``target`` itself, mid-paragraph: a novel that is
    one long line after its title must not go to the test split whole.
    """
    slack = max(part // 2, 100)
    found = _nearest_newline(text, target, max(low, target - slack), min(high, target + slack + 1))
    if found is not None:
        return found, found + 1
    return (target + 1, target + 1) if low <= target < high else None


def _split_one(text: str, valid_fraction: float, test_fraction: float) -> tuple[str, str, str]:
    size = len(text)
    valid_chars, test_chars = round(size * valid_fraction), round(size * test_fraction)
    if (valid_fraction and not valid_chars) or (test_fraction and not test_chars):
        return text, "", ""  # too short to give each held-out part a character
    # Cut at newlines near the requested sizes, which are dropped: each part is whole paragraphs. The
    # ranges keep every requested part and train non-empty; a document too short for that stays whole.
    test_end = test_start = size
    if test_chars:
        cut = _cut(text, size - test_chars - 1, test_chars, 1, size - 1)
        if cut is None:
            return text, "", ""
        test_end, test_start = cut
    valid_end = valid_start = test_end
    if valid_chars:
        cut = _cut(text, test_end - valid_chars - 1, valid_chars, 1, test_end - 1)
        if cut is None:
            return text, "", ""
        valid_end, valid_start = cut
    return text[:valid_end], text[valid_start:test_end], text[test_start:]


def split_documents(texts: list[str], *, valid_fraction: float = 0.05, test_fraction: float = 0.05) -> Split:
    """Hold out the end of every document: the last ``test_fraction`` of its characters for testing,
    the ``valid_fraction`` before that for validation, the rest for training. Deterministic.

    Cuts move to the nearest paragraph break (the ``"\\n"`` there belongs to no part) within half the
    part's size (at least 100 characters), so a document of paragraphs is ``"\\n".join(p for p in
    (train, valid, test) if p)``; where no break is that near (a document with no newline, or one long
    line), the cut is at the exact character, mid-paragraph, and nothing is dropped there. A fraction
    of 0 gives ``""``. A document too short to give every requested part and train at least one
    character stays whole in train.

    Raises:
        LstmgenError: fractions outside [0, 1) or summing to 1 or more.
    """
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise LstmgenError("valid and test fractions must each be in [0, 1) and sum below 1")
    split = Split([], [], [])
    for text in texts:
        train, valid, test = _split_one(text, valid_fraction, test_fraction)
        split.train.append(train)
        split.valid.append(valid)
        split.test.append(test)
    return split


def corpus_fingerprint(texts: list[str]) -> str:
    """SHA-256 hex digest of the texts in order; each is length-prefixed, so no two lists collide.

    Texts are encoded a slice at a time, so a corpus of gigabytes is never copied whole.
    """
    digest = hashlib.sha256(len(texts).to_bytes(8, "little"))
    for text in texts:
        digest.update(len(text).to_bytes(8, "little"))
        for start in range(0, len(text), _HASH_SLICE):
            digest.update(text[start:start + _HASH_SLICE].encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


_HASH_SLICE = 1 << 20
