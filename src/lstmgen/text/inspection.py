"""What reading a corpus does to it, before any training: ``lstmgen inspect``'s report.

Per file its encoding, script, size and what each cleaning rule removed or changed (with the first
examples in context); files that repeat or contain one another; and the sizes of the splits.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Union

from lstmgen.config import DataConfig
from lstmgen.text.cleaning import CLEANING_RULES_VERSION, RULES
from lstmgen.text.overlap import MIN_MATCH_LINE
from lstmgen.text.reading import Document, read_corpus
from lstmgen.text.script import corpus_script
from lstmgen.text.splitting import describe_document, split_corpus

CONTAINED = 0.9  # of a file's long paragraphs found in another: it is a copy of (part of) that one

REPORTED = 0.1  # smaller shares of one file in another are not listed


def inspect_corpus(path: Union[str, Path], data: DataConfig) -> tuple[dict, list[Document]]:
    """Read ``path`` as training would with ``data`` and say what that did.

    Returns the report (JSON-ready: ``files``, ``shared``, ``splits``, ``script``, ``settings``) and the
    documents as read, whose texts are exactly what training splits.
    """
    documents = read_corpus(path, data=data, quiet=True)
    texts, _ = split_corpus(path, data, documents=documents)
    files = []
    for document in documents:
        described = describe_document(document)
        described["paragraphs"] = document.text.count("\n") + 1
        described["rules"] = {rule: document.changes[rule].as_dict() for rule in RULES}
        del described["cleaning"]
        files.append(described)
    splits = {name: {"documents": len(parts), "characters": sum(map(len, parts)),
                     "paragraphs": sum(part.count("\n") + 1 for part in parts)} for name, parts in texts.items()}
    return {"corpus": str(Path(path).resolve()), "files": files, "shared": shared_text(documents),
            "splits": splits, "script": corpus_script(files, data.script), "cleaning_rules": CLEANING_RULES_VERSION,
            "settings": dataclasses.asdict(data)}, documents


def shared_text(documents: list[Document]) -> list[dict]:
    """Files whose long paragraphs (``MIN_MATCH_LINE`` characters or more) another file also has: for
    each such pair, the share of the first file's characters in them found in the second; ``kind``
    says ``duplicate`` (each has 90% or more of the other), ``contained`` (the first is in the second)
    or ``overlap``."""
    where: dict[str, set[int]] = defaultdict(set)
    sizes = []
    for index, document in enumerate(documents):
        paragraphs = {line for line in document.text.split("\n") if len(line) >= MIN_MATCH_LINE}
        sizes.append(sum(map(len, paragraphs)))
        for paragraph in paragraphs:
            where[paragraph].add(index)
    together: dict[tuple[int, int], int] = defaultdict(int)
    for paragraph, found in where.items():
        if len(found) > 1:
            for first in found:
                for second in found:
                    if first != second:
                        together[first, second] += len(paragraph)
    share = {pair: chars / sizes[pair[0]] for pair, chars in together.items() if sizes[pair[0]]}
    pairs = []
    for (first, second), part in sorted(share.items()):
        if part < REPORTED:
            continue
        back = share.get((second, first), 0.0)
        if part >= CONTAINED and back >= CONTAINED:
            if first > second:
                continue  # a duplicate pair is listed once
            kind = "duplicate"
        else:
            kind = "contained" if part >= CONTAINED else "overlap"
        pairs.append({"file": documents[first].name, "in": documents[second].name, "share": round(part, 4),
                      "kind": kind})
    return pairs


def write_training_text(documents: list[Document], out: Union[str, Path]) -> Path:
    """The documents' text as training sees it, one after another with an empty line between them."""
    out = Path(out)
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        for index, document in enumerate(documents):
            f.write(("\n\n" if index else "") + document.text)
        f.write("\n")
    return out
