"""lstmgen from Python: train a model, load a trained one, write with it, score it.

    import lstmgen

    run = lstmgen.train("novels/", time_budget="10m", hidden_size=768)   # settings by their flag names
    print(run.generate("郭靖", length=200, seed=1))
    print(run.evaluate().bits_per_char)                                    # its held-out test split
    run = lstmgen.load("runs/novels")                                      # later, from its folder

The command line is a layer over the same functions: ``lstmgen train`` builds its settings with
``settings_config``, trains with ``lstmgen.training``, and ``lstmgen eval`` / ``generate`` score and
write with a loaded run as ``Run.evaluate`` and ``Run.generate`` do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from lstmgen.config import overrides_from_settings
from lstmgen.evaluation.adapt import AdaptConfig, as_adapt_config
from lstmgen.evaluation.evaluate import evaluate_run
from lstmgen.evaluation.score import Score
from lstmgen.generation.generate import GenerateConfig, generate, prompts_for_run
from lstmgen.model.run_dir import TrainedRun, load_run
from lstmgen.text.script import convert_script
from lstmgen.training.loop import Progress
from lstmgen.training.run import settings_config
from lstmgen.training.run import train as train_run

PathLike = Union[str, Path]

__all__ = ["Run", "Score", "load", "resume", "train"]


@dataclasses.dataclass
class Run(TrainedRun):
    """A trained run: its folder, settings, tokenizer, vocabulary, model (best weights) and metrics."""

    def generate(self, prompt: str = "", *, length: int = 300, seed: Optional[int] = None,
                 script: Optional[str] = None, context: Optional[str] = None,
                 adapt: Union[str, AdaptConfig] = "both", **sampling: Any) -> str:
        """The prompt and ``length`` characters written after it.

        Args:
            prompt: text to continue ("" starts a new paragraph), read in the script the run trained on
                (a simplified prompt to a run of traditional text is converted first).
            script: "simplified" or "traditional" writes the text in that script (None: the run's own).
            seed: the same seed gives the same text (at the same precision, on the same kind of machine).
            context: a text (a chapter, say) the model reads first, in the run's script; the prompt
                continues it. ``adapt`` says how the model adapts to it as it reads ("dynamic", "cache",
                "both", "off", or an ``AdaptConfig``; docs/adaptation.md).
            sampling: ``temperature`` (0: greedy), ``top_k``, ``top_p``, ``repetition_penalty``,
                ``no_repeat_ngram``, ``stop_at`` ("sentence", "paragraph"), ``acrostic``, ``precision``
                ("auto", "fp32", "int8"): as ``lstmgen generate``'s flags.
        """
        config = GenerateConfig(length=length, seed=seed, **sampling)
        if context is not None:
            context = prompts_for_run([context], self)[0]
        text = generate(self.model, self.tokenizer, self.vocab, prompts_for_run([prompt], self), config,
                        context=context, adapt=as_adapt_config(adapt) if context is not None else None)[0]
        return convert_script(text, script)

    def evaluate(self, path: Optional[PathLike] = None, *, split: str = "test",
                 adapt: Union[str, AdaptConfig, None] = None) -> Score:
        """Perplexity, bits per character and OOV rate on the text at ``path``, or on this run's
        ``split`` ("test", "valid" or "train") of the corpus it was trained on. With ``adapt`` ("dynamic",
        "cache", "both" or an ``AdaptConfig``) the model adapts to the text as it reads it, strictly
        online (docs/adaptation.md); ``lstmgen.evaluation.evaluate.evaluate_run`` gives both scores."""
        return evaluate_run(self, path, split=split, adapt=as_adapt_config(adapt)).score

    @property
    def test_score(self) -> Optional[dict[str, Any]]:
        """The test split's record from metrics.jsonl (``test_bits_per_char``, ...), once training ended."""
        return next((r for r in reversed(self.metrics) if r.get("split") == "test"), None)


def load(path: PathLike, *, device: Union[str, torch.device] = "cpu") -> Run:
    """A trained run from its folder (``runs/...``); needs nothing but the folder."""
    loaded = load_run(path, device=device)
    return Run(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(TrainedRun)})


def train(corpus: PathLike, out: Optional[PathLike] = None, preset: Optional[str] = None, *,
          progress: Optional[Callable[[Progress], None]] = None, **settings: Any) -> Run:
    """Train a model on ``corpus`` and return the finished run.

    Args:
        corpus: a .txt file, a folder of them, or a folder with an ``inf.txt`` index.
        out: the run folder (default: runs/DATE-PRESET).
        preset: the starting settings: "default" (when not given), "seed" (the original report's), "gpu"
            or "tiny"; with ``init_from`` and no preset, the parent run's own.
        progress: called every few steps with a ``Progress`` (step, loss, tokens/s, time left).
        settings: any ``lstmgen train`` flag by its name, e.g. ``time_budget="10m"``,
            ``hidden_size=768``, ``tokenizer="word"``, ``init_from="runs/parent"``.

    Raises:
        lstmgen.errors.LstmgenError: a mistake the command line would report in one line (an unknown
            setting, a bad value, a corpus that is not there, ...).
        lstmgen.training.signals.TrainingInterrupted: Ctrl-C; ``lstmgen.resume(out)`` goes on.
    """
    config = settings_config(preset, overrides_from_settings(settings))
    return load(train_run(corpus, config, out=out, progress=progress))


def resume(run: PathLike, *, progress: Optional[Callable[[Progress], None]] = None, **where: Any) -> Run:
    """Continue a stopped run exactly where its last save left it, and return it finished.

    ``where`` may give ``device``, ``threads`` and ``amp``: where the run goes on, not what it trains.
    """
    return load(train_run(None, out=run, resume=True, where=where, progress=progress))

