"""Files, folders and index files -> documents.

A corpus is a ``.txt`` file, a folder of them (read recursively), or a folder holding an index file
``inf.txt`` that names its novels (``书名一，书名二,...``), read in the index's order.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from lstmgen.config import DEFAULT_ADVERT_PATTERN
from lstmgen.errors import LstmgenError
from lstmgen.text.cleaning import _EDGE_CHARS, _compile_advert, normalize_text
from lstmgen.text.encodings import _decode, decode_bytes

logger = logging.getLogger(__name__)


INDEX_FILE = "inf.txt"


_INDEX_SEPARATORS = re.compile(r"[,，、;；\n\r]+")


@dataclass
class Document:
    name: str  # the file's path relative to the corpus root (or its file name)
    path: str  # absolute path
    text: str  # normalised text: one paragraph per line, no blank lines, no trailing newline
    encoding: str  # codec it was read with: utf-8, utf-8-sig, gb18030, big5 or utf-16
    dropped_lines: int  # advert lines removed
    doubt: str = ""  # why the decoded text may be mojibake (see ``decode_bytes``); empty when it reads well


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


def training_files_in(path: Union[str, Path], corpus: Optional[str]) -> list[str]:
    """The files of ``path`` that the corpus a run trained on also reads (their names), or [].

    Those files are mostly training text (all of it when the run was given ``--valid`` and ``--test``
    files; 90% by default): scored as they are, they flatter the model.
    """
    if not corpus or not Path(corpus).exists():
        return []
    try:
        trained = {f.resolve() for f in list_corpus_files(corpus)}
        return [f.name for f in list_corpus_files(path) if f.resolve() in trained]
    except LstmgenError:
        return []
