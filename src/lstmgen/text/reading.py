"""Files, folders and index files -> documents.

A corpus is a ``.txt`` file, a folder of them (read recursively), or a folder holding an index file
``inf.txt`` that names its novels (``书名一，书名二,...``), read in the index's order.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

from lstmgen.config import DataConfig
from lstmgen.errors import LstmgenError
from lstmgen.text.changes import Changes
from lstmgen.text.cleaning import _EDGE_CHARS, RULES, _compile_advert, clean_corpus, clean_file
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
    script: str = "none"  # as written: simplified, traditional, mixed or none (``script.detect_script``)
    changes: dict[str, Changes] = field(default_factory=dict)  # what each cleaning rule did (cleaning.RULES)

    def cleaning(self) -> dict[str, int]:
        """How much each cleaning rule changed, by rule (``cleaning.RULES``): what config.json records."""
        return {rule: self.changes[rule].count for rule in RULES if rule in self.changes}


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


def read_corpus(path: Union[str, Path], *, data: Optional[DataConfig] = None, advert_pattern: Optional[str] = None,
                max_advert_line: Optional[int] = None, quiet: bool = False) -> list[Document]:
    """Read, decode and clean every file of a corpus (see ``list_corpus_files``) by the rules ``data``
    sets (``cleaning.clean_file`` and ``clean_corpus``); ``advert_pattern`` and ``max_advert_line``
    override its two.

    Files that are empty after cleaning are skipped with a warning. What was read (encodings, sizes,
    what the rules changed) is logged, unless ``quiet``: a corpus read only to be compared with.

    Raises:
        LstmgenError: a bad path or index, an undecodable file, an invalid pattern, or no text at all.
    """
    data = data or DataConfig()
    if advert_pattern is not None or max_advert_line is not None:
        data = replace(data, advert_pattern=data.advert_pattern if advert_pattern is None else advert_pattern,
                       max_advert_line=data.max_advert_line if max_advert_line is None else max_advert_line)
    _compile_advert(data.advert_pattern)  # fail on a bad pattern before reading anything
    root = Path(path)
    base = root if root.is_dir() else root.parent
    files = list_corpus_files(root)
    read = []
    for file in files:
        text, encoding, doubt = _decode(_read_bytes(file), str(file))  # the raw bytes are freed here
        if doubt:
            logger.warning("%s", doubt)
        text, changes = clean_file(text, data)
        name = file.relative_to(base).as_posix() if file.is_relative_to(base) else file.name
        read.append(Document(name, str(file.resolve()), text, encoding, changes["advert_lines"].count, doubt,
                             changes=changes))
    texts, scripts = clean_corpus([d.text for d in read], [d.changes for d in read], data)
    documents = []
    # a line per file for a shelf of novels; for many files (a poetry collection) one summary line
    per_file = logging.INFO if len(files) <= _FILES_LISTED and not quiet else logging.DEBUG
    for document, text, script in zip(read, texts, scripts):
        document.text, document.script = text, script
        if not text:
            logger.warning("%s: no text after removing adverts and blank lines; skipped", document.name)
            continue
        logger.log(per_file, "%s", describe_read(document))
        documents.append(document)
    if not documents:
        raise LstmgenError(f"{root}: the corpus is empty (no text after removing adverts and blank lines)")
    if per_file == logging.DEBUG and not quiet:
        encodings = ", ".join(f"{e} {n}" for e, n in Counter(d.encoding for d in documents).most_common())
        logger.info("%s: %d files (%s), %d characters, %d advert lines dropped", root, len(documents), encodings,
                    sum(len(d.text) for d in documents), sum(d.dropped_lines for d in documents))
    if data.script == "keep" and not quiet:
        warn_mixed_scripts(documents)
    return documents


def describe_read(document: Document) -> str:
    """One line on what reading a file found: its encoding, size, script and what the rules changed."""
    counts = document.cleaning()
    done = [f"{counts[rule]} {RULES[rule]}" for rule in RULES if rule != "advert_lines" and counts.get(rule)]
    script = f", {document.script}" if document.script != "none" else ""
    return (f"{document.name}: {document.encoding}{script}, {len(document.text)} characters, "
            f"{document.dropped_lines} advert lines dropped" + "".join(f", {part}" for part in done))


def warn_mixed_scripts(documents: list[Document]) -> None:
    """Warn when the corpus is written in both simplified and traditional characters."""
    scripts = Counter(d.script for d in documents if d.script != "none")
    if "mixed" in scripts or len(scripts) > 1:
        mixed = ", ".join(f"{d.name} ({d.script})" for d in documents if d.script != "none")
        logger.warning("the corpus mixes simplified and traditional characters (%s): the model learns two "
                       "spellings of many words; --script simplified (or traditional) converts every file to one",
                       mixed if len(mixed) < 300 else mixed[:300] + "...")


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
