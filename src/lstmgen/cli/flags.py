"""``lstmgen train``'s flags: one per settings field, in groups, with the help its field declares.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from lstmgen.config import SECTIONS

# Short names the issue tracker and users ask for, beside the field-named flags.
FLAG_ALIASES = {"valid_path": ["--valid"], "test_path": ["--test"]}


# The groups of `lstmgen train --help`, in order; a section's fields go to its own unless a field names
# another (``config.setting(..., group=...)``).
FLAG_GROUPS = {"data": "data (reading, splitting, tokenizing)", "model": "model", "training": "training",
               "evaluation": "evaluation", "output": "output"}


SECTION_GROUPS = {"data": "data", "tokenizer": "data", "model": "model", "train": "training"}


def add_settings_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] = tuple(SECTIONS)) -> dict[str, Any]:
    """One ``--field-name`` flag per settings field, in FLAG_GROUPS, with the help text the field declares.

    Defaults are None, so that a flag left out takes the preset's (or the parent run's) value. A
    boolean field gets ``--name`` and ``--no-name``. Only the fields of ``sections`` get flags.
    Returns the groups, for a command's own flags.
    """
    groups = {name: parser.add_argument_group(title) for name, title in FLAG_GROUPS.items()}
    for section, kind in SECTIONS.items():
        if section not in sections:
            continue
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            group = groups[f.metadata.get("group", SECTION_GROUPS[section])]
            hint = hints[f.name]
            base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
            flags = ["--" + f.name.replace("_", "-")] + FLAG_ALIASES.get(f.name, [])
            if base is bool:
                group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                   help=f.metadata["help"])
            else:
                group.add_argument(*flags, dest=f.name, type=base if base in (int, float, str) else str, default=None,
                                   help=f.metadata["help"])
    return groups


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {name: {f.name: getattr(args, f.name, None) for f in dataclasses.fields(kind)}
            for name, kind in SECTIONS.items()}


def add_adapt_flags(parser: argparse.ArgumentParser, *, default: str, what: str) -> None:
    """``--adapt`` and its settings (``evaluation.adapt.AdaptConfig``), for ``eval`` and ``generate``."""
    from lstmgen.evaluation.adapt import ADAPT_MODES, AdaptConfig

    d = AdaptConfig()
    group = parser.add_argument_group("adapting to the text read (docs/adaptation.md)")
    group.add_argument("--adapt", default=default, choices=ADAPT_MODES,
                       help=f"{what}: dynamic evaluation, a continuous cache, or both (default: {default})")
    group.add_argument("--adapt-lr", type=float, help=f"dynamic: learning rate per token (default {d.lr})")
    group.add_argument("--adapt-decay", type=float,
                       help=f"dynamic: share of the adaptation forgotten after each segment (default {d.decay})")
    group.add_argument("--adapt-segment", type=int, help=f"dynamic: tokens between two steps (default {d.segment})")
    group.add_argument("--cache-size", type=int, help=f"cache: recent positions remembered (default {d.cache_size})")
    group.add_argument("--cache-flatness", type=float,
                       help=f"cache: how sharply the most similar positions dominate (default {d.flatness})")
    group.add_argument("--cache-mix", type=float, help=f"cache: the cache's weight in the mixture (default {d.mix})")


def adapt_config(args: argparse.Namespace) -> Any:
    """The AdaptConfig the flags of ``add_adapt_flags`` ask for, or None for ``--adapt off``."""
    from lstmgen.evaluation.adapt import as_adapt_config

    return as_adapt_config(args.adapt, lr=args.adapt_lr, decay=args.adapt_decay, segment=args.adapt_segment,
                           cache_size=args.cache_size, flatness=args.cache_flatness, mix=args.cache_mix)
