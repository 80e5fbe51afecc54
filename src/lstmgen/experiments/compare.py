"""``lstmgen compare``: finished runs side by side -- the settings that differ, speed, memory and held-out scores.

Everything comes from the run directories' config.json and metrics.jsonl; nothing is trained or
scored again. Runs are ranked by the open-vocabulary bits per character of their test split (the
score that charges a model for its ``<unk>`` words too, so word, hybrid and character vocabularies
compare), and a comparison of runs whose test splits are different text says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from lstmgen.config import SECTIONS, build_config
from lstmgen.display import align
from lstmgen.errors import LstmgenError
from lstmgen.experiments.sweep_results import run_scores

# settings that change neither what is learnt nor how fast: never a difference worth a column
QUIET_SETTINGS = frozenset({"tensorboard", "workers", "nan_policy"})


def compare_runs(run_dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per run, best first, and notes on what the comparison cannot tell.

    A row holds ``run``, ``settings`` (its preset and the settings it changed from the preset's, as
    ``name=value``, less those every run shares), ``score`` (what it is ranked by: the open bits per
    character, or the closed ones where a run has no open score), ``corpus_fingerprint`` and
    ``run_scores``'s keys.

    Raises:
        LstmgenError: a path is not a run directory (no config.json).
    """
    rows, described = [], []
    for run_dir in map(Path, run_dirs):
        config_file = run_dir / "config.json"
        if not config_file.is_file():
            raise LstmgenError(f"{run_dir}: not a run directory (no config.json)")
        try:
            info = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LstmgenError(f"{config_file}: cannot be read ({err})")
        rows.append({"run": str(run_dir), "corpus_fingerprint": info.get("corpus_fingerprint"), **run_scores(run_dir)})
        described.append(own_settings(info))
    shared = set.intersection(*(set(items) for items in described))
    for row, items in zip(rows, described):
        row["settings"] = " ".join(item for item in items if item not in shared)
        row["score"] = row.get("test_open_bits_per_char", row.get("test_bits_per_char"))
    rows.sort(key=lambda r: (r["score"] is None, r["score"] if r["score"] is not None else 0.0))
    return rows, _notes(rows)


def own_settings(info: dict[str, Any]) -> list[str]:
    """A run's preset and the settings it changed from that preset's, as ``name=value``.

    Two runs of different presets differ in a dozen settings each preset implies; what tells them
    apart is the preset and what was asked on top of it. The preset is read as this lstmgen defines
    it: a run from a version whose preset differed shows that difference as a setting of its own.
    """
    preset = info.get("preset", "default")
    try:
        base = flat_settings(build_config(preset).to_dict())
    except LstmgenError:  # a preset this lstmgen no longer has: every setting is the run's own
        base = {}
    items = [f"preset={preset}"]
    for name, value in flat_settings(info).items():
        if name not in base or json.dumps(base[name]) != json.dumps(value):
            items.append(f"{name}={_short(value)}")
    return items


def flat_settings(info: dict[str, Any]) -> dict[str, Any]:
    """A run config's settings by field name (with its section where two sections share the name)."""
    names = [f for kind in SECTIONS.values() for f in kind.__dataclass_fields__]
    out: dict[str, Any] = {}
    for section, kind in SECTIONS.items():
        for name in kind.__dataclass_fields__:
            if name not in QUIET_SETTINGS:
                key = name if names.count(name) == 1 else f"{section}.{name}"
                out[key] = info.get(section, {}).get(name)
    return out


def _short(value: Any, width: int = 24) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    groups: dict[Optional[str], list[str]] = {}
    for row in rows:
        groups.setdefault(row["corpus_fingerprint"], []).append(row["run"])
    if len(groups) > 1:
        listed = "; ".join(", ".join(runs) for runs in groups.values())
        notes.append(f"these runs held out different text ({listed}): scores of different groups are not of the "
                     f"same test split, and do not rank the models")
    unfinished = [row["run"] for row in rows if row["score"] is None]
    if unfinished:
        notes.append(f"no test score yet (training unfinished or stopped): {', '.join(unfinished)}")
    return notes


# ------------------------------------------------------------------------------ the table

COLUMNS = (  # (header, key, format)
    ("run", "run", "{}"), ("settings that differ", "settings", "{}"), ("steps", "steps", "{:,}"),
    ("minutes", "seconds", "minutes"), ("tokens/s", "tokens_per_s", "{:,.0f}"), ("peak MB", "peak_memory_mb", "{:,.0f}"),
    ("best valid", "best_valid_bits_per_char", "{:.3f}"), ("test", "test_bits_per_char", "{:.3f}"),
    ("test open", "test_open_bits_per_char", "{:.3f}"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table (scores in bits per character); columns no run fills are left out."""
    columns = [c for c in COLUMNS if any(r.get(c[1]) not in (None, "") for r in rows)]
    cells = [[header for header, _, _ in columns]]
    for row in rows:
        cells.append([_cell(row.get(key), style) for _, key, style in columns])
    numbers = {i for i, (_, key, _) in enumerate(columns) if key not in ("run", "settings")}
    return "\n".join(align(cells, right=numbers))


def _cell(value: Any, style: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if style == "minutes":
        return f"{value / 60:.1f}"
    return style.format(value)


# ------------------------------------------------------------------------------ command line
