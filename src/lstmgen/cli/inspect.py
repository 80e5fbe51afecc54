"""``lstmgen inspect CORPUS``: what reading a corpus does to it, before any training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from lstmgen.cli.flags import add_settings_flags
from lstmgen.config import DataConfig

SHOWN = 60  # characters of an example's context shown on each side


def cmd_inspect(args: argparse.Namespace) -> int:
    from lstmgen.text.cleaning import RULES
    from lstmgen.text.inspection import inspect_corpus, write_training_text

    data = DataConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DataConfig)
                         if getattr(args, f.name, None) is not None})
    report, documents = inspect_corpus(args.corpus, data)
    if args.text:
        write_training_text(documents, args.text)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        print("\n".join(format_report(report, RULES)))
    if args.text:
        print(f"the text as training sees it: {args.text}")
    return 0


def format_report(report: dict, rules: dict[str, str]) -> list[str]:
    """``inspect_corpus``'s report as the lines ``lstmgen inspect`` prints."""
    lines = [f"{report['corpus']}: {len(report['files'])} files, script {report['script']}"]
    for file in report["files"]:
        lines.append("")
        lines.append(f"{file['name']}: {file['encoding']}, {file['script']}, {file['characters']:,} characters, "
                     f"{file['paragraphs']:,} paragraphs")
        if file.get("doubt"):
            lines.append(f"  doubt: {file['doubt']}")
        for rule, title in rules.items():
            found = file["rules"][rule]
            if not found["count"]:
                continue
            lines.append(f"  {title}: {found['count']:,}")
            for example in found["examples"]:
                lines.append(f"    {_shown(example)}")
    lines.append("")
    if report["shared"]:
        lines.append("files that repeat one another (share of the first file's long paragraphs found in the second):")
        for pair in report["shared"]:
            lines.append(f"  {pair['file']} in {pair['in']}: {pair['share']:.0%} ({pair['kind']})")
    else:
        lines.append("no file repeats another")
    lines.append("splits: " + ", ".join(f"{name} {split['characters']:,} characters in {split['paragraphs']:,} "
                                          f"paragraphs" for name, split in report["splits"].items()))
    return lines


def _shown(example: dict[str, str]) -> str:
    """One change in context: ...before[old -> new]after... (a removal as [-old-])."""
    change = f"[{example['old']} -> {example['new']}]" if example["new"] else f"[-{example['old']}-]"
    return f"...{example['before'][-SHOWN:]}{change}{example['after'][:SHOWN]}...".replace("\n", "\\n")


def add_command(sub: Any) -> None:
    """Register ``lstmgen inspect``."""
    p = sub.add_parser("inspect", help="what reading a corpus does to it: encodings, scripts, what each cleaning "
                                       "rule removed or changed, repeated files, split sizes",
                       description="Read a corpus as `lstmgen train` would, with the same data settings, and say "
                                   "what that did, file by file, with the first examples of every rule in context. "
                                   "Nothing is trained or cached.")
    p.add_argument("corpus", help="a .txt file, a folder of them, or a folder with an inf.txt index")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--text", metavar="OUT", help="also write the text exactly as training sees it to OUT, one "
                                                 "document after another with an empty line between them")
    add_settings_flags(p, sections=("data",))
    p.set_defaults(func=cmd_inspect)
