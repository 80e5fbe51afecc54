"""Plots of runs: learning curves side by side, and a sweep's measures against the setting it varied.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from lstmgen.errors import LstmgenError

logger = logging.getLogger(__name__)


PLOTS = {  # file stem -> what the plot shows
    "valid_bpc_vs_time": "validation bits per character against training time",
    "test_bpc": "final test bits per character",
    "tokens_per_s": "training speed",
    "peak_memory": "peak memory",
    "grad_norm": "gradient norm before clipping and share of clipped steps",
    "generalisation_gap": "gap between validation and training loss",
}


def _figure(columns: int = 1, width: float = 6.0, height: float = 4.0) -> tuple[Any, list[Any]]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise LstmgenError("plots need matplotlib, which lstmgen installs; it is missing here: pip install matplotlib")
    figure = Figure(figsize=(width * columns, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(1, columns, i + 1) for i in range(columns)]


def _save(figure: Any, path: Path) -> Path:
    """Write the figure to ``path`` (``.png`` added when it has no extension, as matplotlib would) and
    return the path of the file actually written."""
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def plot_learning_curves(run_dirs: Sequence[Path], out: Path) -> Path:
    """Valid bits/char against training time and against tokens, and train loss, for runs side by side."""
    from lstmgen.model.run_dir import read_metrics

    curves = []
    for run_dir in run_dirs:
        if not Path(run_dir).is_dir():
            raise LstmgenError(f"{run_dir}: no such run directory")
        records = [r for r in read_metrics(run_dir) if r.get("split") is None]
        if not records:
            raise LstmgenError(f"{run_dir}: no evaluations recorded yet (metrics.jsonl is missing or empty)")
        curves.append((Path(run_dir), records))
    names = [path.name for path, _ in curves]
    labels = names if len(set(names)) == len(names) else [str(path) for path, _ in curves]
    figure, (by_time, by_tokens, loss) = _figure(3, width=5.0)
    for label, (_, records) in zip(labels, curves):
        valid = [r for r in records if "valid_bits_per_char" in r]
        by_time.plot([r["seconds"] for r in valid], [r["valid_bits_per_char"] for r in valid], marker=".", label=label)
        by_tokens.plot([r["tokens"] for r in valid], [r["valid_bits_per_char"] for r in valid], marker=".", label=label)
        trained = [r for r in records if r.get("train_loss") is not None]
        loss.plot([r["tokens"] for r in trained], [r["train_loss"] for r in trained], marker=".", label=label)
    for axis, xlabel, ylabel in ((by_time, "training time (s)", "valid bits per character"),
                                 (by_tokens, "training tokens", "valid bits per character"),
                                 (loss, "training tokens", "train loss (nats per token)")):
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    by_time.legend(fontsize="small")
    return _save(figure, Path(out))


def axis_setting(settings: Sequence[str]) -> str:
    """The setting plotted along x and judged by the claims: seq_len when it is varied."""
    return "seq_len" if "seq_len" in settings else settings[0]


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def series(rows: Sequence[dict], x: str, settings: Sequence[str],
           needs: Sequence[str] = ()) -> list[tuple[str, list[dict]]]:
    """Rows grouped by the settings other than ``x`` (one line each), sorted along x; rows missing ``needs`` dropped."""
    others = [s for s in settings if s != x]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if all(row.get(key) is not None for key in needs):
            groups.setdefault(",".join(f"{s}={row[s]}" for s in others), []).append(row)
    for members in groups.values():
        if _numeric([r[x] for r in members]):
            members.sort(key=lambda r: r[x])
    return [(label, members) for label, members in groups.items() if members]


def _plot_against(rows: Sequence[dict], x: str, settings: Sequence[str], lines: Sequence[tuple[str, str]],
                  ylabel: str, path: Path, *, twin: Optional[tuple[str, str]] = None) -> Path:
    """Metrics against the setting ``x``: a colour per group of the other settings, a line style per metric.

    ``twin`` (key, label) adds one more metric on a right-hand axis, dotted.
    """
    figure, (axis,) = _figure()
    values = list(dict.fromkeys(row[x] for row in rows))
    numeric = _numeric(values)
    position = (lambda v: v) if numeric else (lambda v: values.index(v))
    right = axis.twinx() if twin else None
    styles = ("-", "--", "-.")
    for index, (label, members) in enumerate(series(rows, x, settings)):
        drawn = [(axis, key, name, styles[i % len(styles)], "o") for i, (key, name) in enumerate(lines)]
        if twin and right is not None:
            drawn.append((right, twin[0], twin[1], ":", "s"))
        for target, key, name, style, marker in drawn:
            points = [(position(r[x]), r[key]) for r in members if r.get(key) is not None]
            if points:
                target.plot(*zip(*points), linestyle=style, marker=marker, color=f"C{index}",
                            label=" ".join(p for p in (label, name) if p))
    if right is not None:
        right.set_ylabel(twin[1])  # type: ignore[index]
    if numeric and values and min(values) > 0 and max(values) / min(values) >= 8:
        axis.set_xscale("log")
        axis.minorticks_off()
    axis.set_xticks([position(v) for v in values])
    axis.set_xticklabels([str(v) for v in values])
    axis.set_xlabel(x)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    handles, labels = axis.get_legend_handles_labels()
    if right is not None:
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if len(labels) > 1:
        axis.legend(handles, labels, fontsize="small")
    return _save(figure, path)


def write_plots(rows: Sequence[dict], curves: dict[str, list[dict]], settings: Sequence[str],
                folder: Path) -> dict[str, Path]:
    """The sweep's PNG plots in ``folder``; returns file stem -> path."""
    x = axis_setting(settings)
    done = [r for r in rows if r.get("status") == "finished"]
    figure, (axis,) = _figure()
    for name, records in curves.items():
        valid = [r for r in records if "valid_bits_per_char" in r]
        if valid:
            axis.plot([r["seconds"] for r in valid], [r["valid_bits_per_char"] for r in valid], marker=".", label=name)
    axis.set_xlabel("training time (s)")
    axis.set_ylabel("valid bits per character")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    paths = {"valid_bpc_vs_time": _save(figure, folder / "valid_bpc_vs_time.png")}
    paths["test_bpc"] = _plot_against(done, x, settings, [("test_bits_per_char", "")], "test bits per character",
                                      folder / "test_bpc.png")
    paths["tokens_per_s"] = _plot_against(done, x, settings, [("tokens_per_s", "")], "training tokens per second",
                                          folder / "tokens_per_s.png")
    paths["peak_memory"] = _plot_against(done, x, settings, [("peak_memory_mb", "")], "peak memory (MB)",
                                         folder / "peak_memory.png")
    paths["grad_norm"] = _plot_against(done, x, settings, [("grad_norm_median", "median"), ("grad_norm_p95", "p95")],
                                       "gradient norm before clipping", folder / "grad_norm.png",
                                       twin=("clip_fraction", "share of steps clipped"))
    paths["generalisation_gap"] = _plot_against(done, x, settings, [("generalisation_gap", "")],
                                                "valid - train loss (nats per token)",
                                                folder / "generalisation_gap.png")
    return paths
