"""Bytes -> text: which encoding a file is in (UTF-8 with or without BOM, GB18030/GBK, Big5, UTF-16),
how sure that is, and what to do with a few bytes that decode in none.
"""

from __future__ import annotations

import codecs
import functools
import logging
import re
from typing import Optional

import numpy as np

from lstmgen.errors import LstmgenError

logger = logging.getLogger(__name__)


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


def _not_text(name: str, reason: str) -> LstmgenError:
    return LstmgenError(f"{name or 'input'}: not text in UTF-8, GB18030/GBK, Big5 or UTF-16 ({reason})")


def _chinese_score(text: str) -> tuple[float, int]:
    """Share of ideographs that are very common, minus a heavy penalty for signs of a wrong codec;
    and how many characters (ideographs and odd ones) that share is of."""
    sample = text[:200_000]  # enough to decide; keeps a 50 MB file cheap
    # every character's kind from a table, counted at once (three regex scans took several times longer)
    codes = np.frombuffer(sample.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    other, ideographs, common, odd = np.bincount(_character_kinds()[codes], minlength=4).tolist()
    judged = ideographs + common + odd
    return (common - 5 * odd) / max(1, judged), judged


@functools.lru_cache(maxsize=None)
def _character_kinds() -> np.ndarray:
    """Every code point's kind for ``_chinese_score``: 0 other, 1 ideograph, 2 very common ideograph
    (``_COMMON_RE``), 3 odd (``_ODD_RE``); the same classes as the regexes, as one table."""
    kinds = np.zeros(0x110000, dtype=np.uint8)
    for low, high in ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)):  # _IDEOGRAPH_RE
        kinds[low:high + 1] = 1
    kinds[[ord(c) for c in set(_COMMON_CHARS)]] = 2
    for low, high in ((0xE000, 0xF8FF), (0xFFFD, 0xFFFD), (0x3040, 0x30FF), (0x3100, 0x312F), (0xF0000, 0x10FFFF)):
        kinds[low:high + 1] = 3
    return kinds


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
