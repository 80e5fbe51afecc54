"""What a sweep trains: the varied settings, every combination of them, and each one's config.

``plan(spec)`` turns ``--vary seq_len=10,30 --vary hidden_size=256,512`` into four runs, each with a
validated RunConfig and a folder name (``seq_len=30,hidden_size=256``); ``command_line`` and
``train_arguments`` write the commands that ask for a sweep and for one of its runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
import shlex
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from lstmgen.config import PRESETS, SECTIONS, RunConfig, build_config
from lstmgen.errors import LstmgenError


@dataclass
class Setting:
    """One varied setting: where it lives in the config and the values it takes, in order."""

    section: str  # a key of config.SECTIONS
    name: str  # the config field, e.g. "seq_len"
    values: list[Any]


@dataclass
class SweepSpec:
    """What a sweep trains: the corpus, the varied settings, and everything held fixed."""

    corpus: str
    settings: list[Setting]
    preset: str = "default"
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> {field: value} for every run
    eval_every_tokens: int = 0  # validate every this many training tokens, whatever seq_len (0: per epoch)
    sample_length: int = 200  # characters of the sample generated with each finished run
    sample_seed: int = 1  # seed of that sample: every run writes from the same random numbers


@dataclass
class PlannedRun:
    name: str  # folder name under runs/, e.g. "seq_len=30,hidden_size=256"
    values: dict[str, Any]  # varied setting -> value
    config: RunConfig


def find_setting(name: str) -> tuple[str, type, bool]:
    """Section, value type and whether None is allowed, of a config field named ``name`` (or ``name-with-dashes``)."""
    key = name.strip().replace("-", "_")
    known = []
    for section, kind in SECTIONS.items():
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            known.append(f.name)
            if f.name == key:
                args = typing.get_args(hints[key])
                base = next((a for a in args if a is not type(None)), hints[key])
                return section, base, type(None) in args
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else \
        "settings are training flags without the dashes, e.g. seq_len"
    raise LstmgenError(f"--vary: unknown setting {name!r}; {hint}")


def parse_vary(text: str) -> Setting:
    """``"seq_len=10,30,60"`` -> Setting; values take the field's type (``;`` separates values that hold commas)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip() or not raw.strip():
        raise LstmgenError(f"--vary {text!r}: write it as SETTING=VALUE,VALUE,... e.g. seq_len=10,30,60")
    section, kind, optional = find_setting(name)
    key = name.strip().replace("-", "_")
    values: list[Any] = []
    for part in (p.strip() for p in raw.split(";" if ";" in raw else ",")):
        if optional and part.lower() == "none":
            values.append(None)
            continue
        if kind is bool:
            if part.lower() not in _BOOLS:
                raise LstmgenError(f"--vary {key}: {part!r} is not valid; {key} takes true or false")
            values.append(_BOOLS[part.lower()])
            continue
        try:
            values.append(kind(part) if kind in (int, float) else part)
        except ValueError:
            what = "whole numbers" if kind is int else "numbers"
            raise LstmgenError(f"--vary {key}: {part!r} is not valid; {key} takes {what}")
    if len(set(values)) != len(values):
        raise LstmgenError(f"--vary {key}: a value is listed twice")
    return Setting(section=section, name=key, values=values)


_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "on": True, "off": False}


def value_text(value: Any) -> str:
    """A value as a folder name or a table writes it: 0.5, 1e-05, 30, none, true."""
    if isinstance(value, bool):
        return str(value).lower()
    return format(value, "g") if isinstance(value, float) else str(value)


def exact_text(value: Any) -> str:
    """A value as a command line must give it to mean exactly this value (0.0012345678, not 0.00123457)."""
    return repr(value) if isinstance(value, float) else value_text(value)


def flag(key: str, value: Any) -> list[str]:
    """The ``lstmgen train`` flag that sets ``key`` to ``value``: a switch is ``--name`` or ``--no-name``."""
    name = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [name] if value else ["--no-" + key.replace("_", "-")]
    return [f"{name}={exact_text(value)}"]


_SAFE = re.compile(r"[^\w.+-]")  # characters kept in a run folder name


def run_name(values: dict[str, Any]) -> str:
    """The run folder for a combination: ``seq_len=30,hidden_size=256`` (odd characters become _)."""
    return ",".join(f"{k}={_SAFE.sub('_', value_text(v))}" for k, v in values.items())


def plan(spec: SweepSpec) -> list[PlannedRun]:
    """Every combination of the varied values, in the order given, with its validated config."""
    if not spec.settings:
        raise LstmgenError("give at least one --vary SETTING=VALUE,VALUE,...")
    if spec.preset not in PRESETS:
        raise LstmgenError(f"unknown preset {spec.preset!r}: choose one of {', '.join(PRESETS)}")
    names = [s.name for s in spec.settings]
    if len(set(names)) != len(names):
        raise LstmgenError("--vary: each setting may be varied once (list all its values in one --vary)")
    fixed = {k for values in spec.fixed.values() for k, v in values.items() if v is not None}
    if fixed & set(names):
        raise LstmgenError(f"{', '.join(sorted(fixed & set(names)))}: both varied and fixed; drop one")
    if spec.eval_every_tokens < 0:
        raise LstmgenError("--eval-every-tokens must be 0 or positive")
    if spec.eval_every_tokens and ("eval_every" in fixed or "eval_every" in names):
        raise LstmgenError("give --eval-every (or vary it) or --eval-every-tokens, not both")
    runs, seen, parents = [], set(), {}
    for combo in itertools.product(*(s.values for s in spec.settings)):
        values = dict(zip(names, combo))
        overrides = {section: dict(v) for section, v in spec.fixed.items()}
        for setting, value in zip(spec.settings, combo):
            overrides.setdefault(setting.section, {})[setting.name] = value
        name = run_name(values)
        try:
            config = _config(spec.preset, overrides, parents)
        except LstmgenError as err:
            raise LstmgenError(f"{name}: {err}")
        if spec.eval_every_tokens:  # the same evaluation points in tokens, whatever tokens a step takes
            step_tokens = config.train.batch_size * config.train.seq_len
            config.train.eval_every = max(1, round(spec.eval_every_tokens / step_tokens))
        if name in seen:
            raise LstmgenError(f"two combinations share the folder name {name!r}; use distinct values")
        seen.add(name)
        runs.append(PlannedRun(name=name, values=values, config=config))
    return runs


def _config(preset: str, overrides: dict[str, dict[str, Any]], parents: dict[str, Any]) -> RunConfig:
    """A run's config; one started from a trained run (``init_from``) has that run's shape and tokenizer,
    as ``lstmgen train --init-from`` gives it (``parents`` keeps each parent opened once)."""
    init_from = overrides.get("train", {}).get("init_from")
    if not init_from:
        return build_config(preset, overrides)
    from lstmgen.training.finetune import config_from_parent, open_parent

    if init_from not in parents:
        parents[init_from] = open_parent(init_from)
    return config_from_parent(parents[init_from], overrides, preset=preset)


def command_line(spec: SweepSpec, out: Union[str, Path], report: Optional[Union[str, Path]] = None) -> str:
    """The ``lstmgen sweep`` command that asks for this sweep."""
    parts = ["lstmgen", "sweep", spec.corpus]
    for s in spec.settings:
        joiner = ";" if any("," in exact_text(v) for v in s.values) else ","
        parts += ["--vary", f"{s.name}={joiner.join(exact_text(v) for v in s.values)}"]
    parts += ["--preset", spec.preset]
    for values in spec.fixed.values():
        parts += [part for k, v in values.items() if v is not None for part in flag(k, v)]
    if spec.eval_every_tokens:
        parts.append(f"--eval-every-tokens={spec.eval_every_tokens}")
    if spec.sample_length != SweepSpec.sample_length or spec.sample_seed != SweepSpec.sample_seed:
        parts += [f"--sample-length={spec.sample_length}", f"--sample-seed={spec.sample_seed}"]
    parts += ["--out", str(out)] + (["--report", str(report)] if report else [])
    return " ".join(shlex.quote(p) for p in parts)


def train_arguments(corpus: str, run_dir: Path, config: RunConfig) -> list[str]:
    """``lstmgen train`` arguments that rebuild ``config``: the preset plus every field that differs from it."""
    base = build_config(config.preset).to_dict()
    wanted = config.to_dict()
    changed = [(key, value) for section in SECTIONS for key, value in wanted[section].items()
               if value != base[section][key] and value is not None]
    return ["train", corpus, "--out", str(run_dir), "--preset", config.preset,
            *(part for key, value in changed for part in flag(key, value))]
