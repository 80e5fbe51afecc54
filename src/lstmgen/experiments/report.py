"""A sweep's report: a table of every run and, for each claim the seed report made about the
sequence length (time, memory, gradients, generalisation, perplexity), what the runs show.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from lstmgen.errors import LstmgenError
from lstmgen.experiments.plots import PLOTS, series, write_plots
from lstmgen.experiments.sweep_results import GAP_TOKENS

logger = logging.getLogger(__name__)


TOLERANCE = 0.05  # speed, memory and gradient-norm changes under 5 % count as no change


BPC_TOLERANCE = 0.01  # bits per character: under 1 % counts as no change


CLIP_TOLERANCE = 0.02  # share of clipped steps: under 2 percentage points counts as no change


GAP_TOLERANCE = 0.02  # train-valid gap: a change under 2 % of the validation loss counts as no change


def _num(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) >= 0.01 else f"{value:.2g}"


def _relative(first: float, last: float) -> float:
    return (last - first) / abs(first) if first else float("inf") if last > first else 0.0


def _verdict(holds: bool) -> str:
    return "bears out" if holds else "does not bear out"


def claims(rows: Sequence[dict], settings: Sequence[str]) -> list[str]:
    """One Markdown sentence per claim of the seed (per group of the other varied settings), from the numbers."""
    if "seq_len" not in settings:
        return ["The seed's claims are about the sequence length, which this sweep does not vary: none is checked."]
    sentences = []
    done = [r for r in rows if r.get("status") == "finished"]
    for group, members in series(done, "seq_len", settings):
        prefix = f"With {group}: " if group else ""
        if len(members) < 2:
            sentences.append(f"{prefix}fewer than two finished runs, so no claim can be judged yet.")
            continue
        sentences += [prefix + claim(members) for claim in (_claim_time, _claim_memory, _claim_gradients,
                                                            _claim_generalisation, _claim_perplexity)]
    return sentences


def _ends(members: Sequence[dict], key: str) -> Optional[tuple[dict, dict]]:
    usable = [r for r in members if r.get(key) is not None]
    return (usable[0], usable[-1]) if len(usable) >= 2 else None


def _missing(label: str, what: str) -> str:
    return f"**{label}** cannot be judged: {what} was not measured in two finished runs."


def _claim_time(members: Sequence[dict]) -> str:
    label = "(a) Training time per epoch grows with seq_len"
    ends = _ends(members, "seconds_per_epoch")
    if ends is None:
        return _missing(label, "the time per epoch")
    a, b = ends
    change = _relative(a["seconds_per_epoch"], b["seconds_per_epoch"])
    return (f"**{label}:** {_verdict(change > TOLERANCE)} — an epoch took {_num(a['seconds_per_epoch'])} s at "
            f"seq_len={a['seq_len']} and {_num(b['seconds_per_epoch'])} s at seq_len={b['seq_len']} "
            f"({a['tokens_per_s']:,.0f} → {b['tokens_per_s']:,.0f} tokens/s).")


def _claim_memory(members: Sequence[dict]) -> str:
    label = "(b) Memory grows with seq_len"
    ends = _ends(members, "peak_memory_mb")
    if ends is None:
        return _missing(label, "peak memory")
    a, b = ends
    change = _relative(a["peak_memory_mb"], b["peak_memory_mb"])
    return (f"**{label}:** {_verdict(change > TOLERANCE)} — peak memory went from {_num(a['peak_memory_mb'])} MB at "
            f"seq_len={a['seq_len']} to {_num(b['peak_memory_mb'])} MB at seq_len={b['seq_len']} "
            f"({change:+.1%}).")


def _claim_gradients(members: Sequence[dict]) -> str:
    # The seed claimed both; a global norm measures only the first (see "How these numbers were measured").
    label = "(c) Exploding gradients become more likely with seq_len (vanishing ones are not measured here)"
    ends = _ends(members, "grad_norm_p95")
    if ends is None:
        return _missing(label, "the gradient norm")
    a, b = ends
    larger = _relative(a["grad_norm_p95"], b["grad_norm_p95"]) > TOLERANCE
    clipped = (b.get("clip_fraction") or 0) - (a.get("clip_fraction") or 0) > CLIP_TOLERANCE
    return (f"**{label}:** {_verdict(larger or clipped)} — the 95th percentile of the gradient norm went from "
            f"{_num(a['grad_norm_p95'])} at seq_len={a['seq_len']} to {_num(b['grad_norm_p95'])} at "
            f"seq_len={b['seq_len']} (median {_num(a['grad_norm_median'])} → {_num(b['grad_norm_median'])}) and "
            f"clipping fired on {a.get('clip_fraction') or 0:.1%} → {b.get('clip_fraction') or 0:.1%} of steps.")


def _claim_generalisation(members: Sequence[dict]) -> str:
    label = "(d) Generalisation changes with seq_len"
    ends = _ends(members, "generalisation_gap")
    if ends is None:
        return _missing(label, "the train-valid gap")
    a, b = ends
    scale = (a["valid_nll_per_token"] + b["valid_nll_per_token"]) / 2
    change = b["generalisation_gap"] - a["generalisation_gap"]
    changed = abs(change) > GAP_TOLERANCE * scale
    how = ("rose" if change > 0 else "fell") if changed else "hardly moved"
    return (f"**{label}:** {_verdict(changed)} — validation minus training loss {how}: "
            f"{_num(a['generalisation_gap'])} nats per token at seq_len={a['seq_len']}, "
            f"{_num(b['generalisation_gap'])} at seq_len={b['seq_len']} (validation loss about {_num(scale)}).")


def _claim_perplexity(members: Sequence[dict]) -> str:
    label = "(e) Perplexity improves with longer context, up to a point"
    usable = [r for r in members if r.get("test_bits_per_char") is not None]
    if len(usable) < 2:
        return _missing(label, "test bits per character")
    bpc = [r["test_bits_per_char"] for r in usable]
    best = min(range(len(bpc)), key=bpc.__getitem__)
    first, top, last = usable[0], usable[best], usable[-1]

    def at(row: dict) -> str:
        return (f"{_num(row['test_bits_per_char'])} bits/char (perplexity {_num(row['test_perplexity'])}) "
                f"at seq_len={row['seq_len']}")

    if best == 0:
        return f"**{label}:** does not bear out — the shortest context scored best: {at(first)}, against {at(last)}."
    if _relative(bpc[0], bpc[best]) > -BPC_TOLERANCE:
        return (f"**{label}:** does not bear out — longer context hardly helped: {at(first)}, at best "
                f"{at(top)}.")
    if best < len(usable) - 1:
        return f"**{label}:** bears out — test {at(first)} improved to {at(top)}, then {at(last)}."
    if len(usable) >= 3 and _relative(bpc[-2], bpc[-1]) > -BPC_TOLERANCE:
        return (f"**{label}:** bears out — test {at(first)} improved to {at(usable[-2])} and then levelled off: "
                f"{at(last)}.")
    return (f"**{label}:** bears out only in part — test {at(first)} improved to {at(last)} and was still improving "
            f"at the longest seq_len tried, so the point where it stops lies beyond this range.")


COLUMNS = (  # results.csv column, table heading, format (None: as many digits as the size needs)
    ("tokens_per_s", "tokens/s", "{:,.0f}"), ("seconds_per_epoch", "s/epoch", None),
    ("peak_memory_mb", "peak MB", "{:,.0f}"), ("grad_norm_median", "grad median", "{:.3f}"),
    ("grad_norm_p95", "grad p95", "{:.3f}"), ("clip_fraction", "clipped", "{:.1%}"),
    ("best_valid_bits_per_char", "best valid bpc", "{:.3f}"), ("test_perplexity", "test ppl", "{:.2f}"),
    ("test_bits_per_char", "test bpc", "{:.3f}"), ("test_open_bits_per_char", "open bpc", "{:.3f}"),
    ("generalisation_gap", "gap (nats)", "{:.3f}"),
)


def _regime(meta: dict, rows: Sequence[dict], settings: Sequence[str]) -> str:
    """How long each run trained: a number of epochs, a clock budget, or whichever came first."""
    from lstmgen.config import PRESETS, parse_duration

    varied = [s for s in ("epochs", "time_budget") if s in settings]
    if varied:
        return (f"how long each run trained is one of the settings varied ({' and '.join(varied)}), so the runs "
                f"saw different amounts of text")
    train = meta.get("fixed", {}).get("train", {})
    epochs = float(train.get("epochs", PRESETS.get(meta.get("preset", ""), {}).get("train", {}).get("epochs", 5.0)))
    plural = "" if epochs == 1 else "s"
    if not train.get("time_budget"):
        return f"every run trained for {epochs:g} epoch{plural}, so every setting saw the same text"
    budget = parse_duration(train["time_budget"])
    done = [r for r in rows if r.get("status") == "finished" and r.get("seconds") is not None]
    by_clock = sum(r["seconds"] >= 0.98 * budget for r in done)
    return (f"every run stopped after {train['time_budget']} of training or {epochs:g} epoch{plural}, whichever "
            f"came first ({by_clock} of {len(done)} finished runs stopped by the clock, so a faster setting also "
            f"saw more text)")


def write_report(path: Path, *, rows: Sequence[dict], curves: dict[str, list[dict]], settings: Sequence[str],
                 meta: dict, results_csv: Optional[Path] = None) -> Path:
    """The Markdown report, with its PNG plots in a folder beside it named after it (report.md -> report/).

    Args:
        rows: results.csv rows (typed values); ``curves``: run name -> its evaluation records.
        settings: the varied settings; ``meta``: command, corpus, preset, fixed settings, machine.
        results_csv: linked from the report; copied (with curves.csv beside it) into the plot folder
            when the report lives outside the sweep folder, so that the link survives a commit.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def link(target: Path) -> str:
        return Path(os.path.relpath(target, path.parent)).as_posix()

    try:
        plots = write_plots(rows, curves, settings, path.parent / path.stem)
        plot_note = ""
    except LstmgenError as err:  # no matplotlib: the table and the claims are still worth having
        logger.warning("%s; the report has no plots", err)
        plots, plot_note = {}, f"(No plots: {err}.)"
    fixed = ", ".join(f"{k}={v}" for values in meta.get("fixed", {}).values() for k, v in values.items()) or "none"
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("finished", "failed")}
    lines = [
        f"# How {' and '.join(settings)} change{'s' if len(settings) == 1 else ''} speed, memory, gradients "
        f"and quality", "",
        "Made with:", "", f"    {meta['command']}", "",
        f"Corpus `{meta['corpus']}`; preset `{meta['preset']}`; fixed settings: {fixed}; "
        f"{_regime(meta, rows, settings)}. "
        f"Machine: {meta.get('machine', 'unknown')}. {counts['finished']} of {len(rows)} runs finished"
        + (f", {counts['failed']} failed" if counts["failed"] else "") + ".", "",
        "## What the seed claimed about longer sequences, and what the measurements say", "",
        *[f"- {sentence}" for sentence in claims(rows, settings)], "",
        f"A claim bears out when the change from the shortest to the longest sequence exceeds {TOLERANCE:.0%} "
        f"in the claimed direction ({BPC_TOLERANCE:.0%} for bits per character, {CLIP_TOLERANCE * 100:.0f} points "
        f"for the share of clipped steps, {GAP_TOLERANCE:.0%} of the validation loss for the gap).", "",
        "## Results", "",
        "| run | " + " | ".join(heading for _, heading, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for row in rows:
        cells = ["" if row.get(key) in (None, "") else fmt.format(row[key]) if fmt else _num(row[key])
                 for key, _, fmt in COLUMNS]
        status = "" if row.get("status") == "finished" else f" ({row.get('status')})"
        lines.append(f"| {row['run']}{status} | " + " | ".join(cells) + " |")
    if results_csv is not None:
        tables = [Path(results_csv), Path(results_csv).with_name("curves.csv")]
        if tables[0].parent.resolve() != path.parent.resolve():  # a report kept apart (docs/) takes its data along
            import shutil

            (path.parent / path.stem).mkdir(parents=True, exist_ok=True)
            tables = [Path(shutil.copy(t, path.parent / path.stem / t.name)) for t in tables if t.is_file()]
        if len(tables) == 2:
            lines += ["", f"Every number, and more, in [results.csv]({link(tables[0])}); "
                          f"the learning curves in [curves.csv]({link(tables[1])})."]
    lines += ["", "## Plots", ""] + ([plot_note, ""] if plot_note else [])
    points = [sum(r.get("valid_bits_per_char") is not None for r in records) for records in curves.values()]
    if plots and points and max(points) <= 1:
        lines += ["Each run was validated once, at the end, so the curves below are single points: "
                  "`--eval-every-tokens N` validates every N training tokens, at the same points for every "
                  "setting.", ""]
    for stem, plot in plots.items():
        lines += [f"![{PLOTS[stem]}]({link(plot)})", ""]
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        lines += ["## Failed runs", ""] + [f"- {r['run']}: {r.get('error', '')}" for r in failed] + [""]
    samples = [r for r in rows if r.get("sample")]
    if samples:
        lines += ["## Samples", "", "The same seed for every run: the differences come from the models."]
        for row in samples:
            lines += ["", f"**{row['run']}**", "", "```text", row["sample"].strip(), "```"]
        lines.append("")
    lines += [
        "## How these numbers were measured", "",
        "- tokens/s: training tokens over the training clock, leaving out the time spent validating and "
        "saving; s/epoch: the training split's tokens at that speed.",
        "- peak memory: each run trains in a process of its own; on a CPU the process's peak resident set "
        "(it includes Python and torch themselves), on a GPU the most CUDA memory allocated.",
        "- gradient norm: the global norm before clipping; the run's median is the step-weighted median of the "
        "per-evaluation medians, p95 the step-weighted mean of the per-evaluation 95th percentiles, and the share "
        "clipped counts steps whose norm exceeded --clip. A global norm shows exploding gradients; gradients that "
        "vanish along a window do not show in it.",
        f"- gap: mean loss per token on up to {GAP_TOKENS:,} validation tokens minus that on as many training "
        "tokens, both taken in stretches spread evenly over their split (so over every document) and scored the "
        "same way with the weights kept as best on validation.",
        "- valid bits per character over time: as recorded during training (with --eval-tokens N, the first N "
        "tokens of the validation split only).",
        "- test perplexity and bits per character: the whole test split, scored with those same weights.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
