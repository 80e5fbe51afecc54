"""Documents -> training, validation and test text: the end of every document is held out, cut at
paragraph ends; or held-out files are given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from lstmgen.config import DataConfig
from lstmgen.errors import LstmgenError
from lstmgen.text.reading import Document, read_corpus, training_files_in


@dataclass
class Split:
    train: list[str]  # one string per input document (empty where that document gave nothing)
    valid: list[str]
    test: list[str]


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


def describe_document(document: Document) -> dict:
    """What a run's config.json records about a file it read: name, encoding, size, script, and how
    much each cleaning rule changed."""
    return {"name": document.name, "encoding": document.encoding, "characters": len(document.text),
            "dropped_lines": document.dropped_lines, "script": document.script, "cleaning": document.cleaning(),
            **({"doubt": document.doubt} if document.doubt else {})}


def read_texts(path: Union[str, Path], data: DataConfig) -> list[str]:
    """The normalised text of every file under ``path``, read with the run's advert settings."""
    return [d.text for d in read_corpus(path, data=data)]


def split_corpus(path: Union[str, Path], data: DataConfig, *, quiet: bool = False,
                 documents: Optional[list[Document]] = None) -> tuple[dict[str, list[str]], list[dict]]:
    """The three splits as lists of document texts, plus a description of each file read
    (logged as it is read, unless ``quiet``; ``documents``: the corpus as ``read_corpus`` read it already).

    Raises:
        LstmgenError: a ``--valid`` or ``--test`` file is also one the corpus reads for training.
    """
    for name, held_out in (("--valid", data.valid_path), ("--test", data.test_path)):
        shared = training_files_in(held_out, str(path)) if held_out else []
        if shared:
            raise LstmgenError(f"{name} {held_out}: {', '.join(shared)} is also in the training corpus {path}, so the "
                               f"model would be scored on text it trained on; move it out of the corpus")
    docs = documents if documents is not None else read_corpus(path, data=data, quiet=quiet)
    described = [describe_document(d) for d in docs]
    split = split_documents(
        [d.text for d in docs],
        valid_fraction=0.0 if data.valid_path else data.valid_fraction,
        test_fraction=0.0 if data.test_path else data.test_fraction,
    )
    texts = {"train": split.train, "valid": split.valid, "test": split.test}
    if data.valid_path:
        texts["valid"] = read_texts(data.valid_path, data)
    if data.test_path:
        texts["test"] = read_texts(data.test_path, data)
    texts = {name: [t for t in docs_ if t] for name, docs_ in texts.items()}
    if not texts["train"]:
        raise LstmgenError(f"{path}: nothing left to train on after holding out validation and test text")
    return texts, described
