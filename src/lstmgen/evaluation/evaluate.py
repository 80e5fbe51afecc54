"""A trained run scored on held-out text: its own test (or validation) split, or a file given.

What ``lstmgen eval`` and ``Run.evaluate`` do: read and encode the text with the run's tokenizer and
vocabulary, score it, and say whether the text is really held out (a file of the run's own corpus,
or one whose lines the training split has word for word, flatters the model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from lstmgen.errors import LstmgenError
from lstmgen.evaluation.adapt import AdaptConfig, score_adapted
from lstmgen.evaluation.score import Score, score_ids
from lstmgen.model.run_dir import TrainedRun
from lstmgen.text.overlap import MIN_MATCH_LINE, share_in_training
from lstmgen.text.reading import training_files_in
from lstmgen.text.splitting import read_texts
from lstmgen.tokens.prepare import encode_text

# A file scored by ``lstmgen eval RUN PATH`` is said to be training text from this share on. Held-out
# text is not quite free of it: the four classic novels' test split has 0.3% (红楼梦.txt repeats passages).
SEEN_WARNING = 0.05


@dataclass
class Evaluation:
    """A score and what was scored."""

    score: Score
    text: str  # what was scored: "test split of CORPUS", or the path given
    trained_on: list[str] = field(default_factory=list)  # files of the run's corpus among those scored
    seen_in_training: Optional[float] = None  # share of the text's long lines found in the training split
    has_unknown_costs: bool = True  # the open-vocabulary score was counted (not for the training split)
    corpus: Optional[str] = None  # the run's corpus
    seconds: float = 0.0  # how long scoring took (the adapted scoring, with ``adapt``)
    adapt: Optional[AdaptConfig] = None  # how the model adapted as it read; None: it did not
    plain: Optional[Score] = None  # with ``adapt``: the score without adaptation, same weights and tokens
    plain_seconds: Optional[float] = None  # ...and how long it took

    @property
    def warning(self) -> Optional[str]:
        """Why this score flatters the model, if it does."""
        if self.trained_on:
            return f"is text this run trained on ({', '.join(self.trained_on)} in its corpus {self.corpus})"
        if self.seen_in_training is not None and self.seen_in_training >= SEEN_WARNING:
            return (f"is {100 * self.seen_in_training:.0f}% text this run trained on (lines of {MIN_MATCH_LINE} or "
                    f"more characters found word for word in the training split of {self.corpus})")
        return None


def evaluate_run(run: TrainedRun, path: Union[str, Path, None] = None, *, split: str = "test",
                 adapt: Optional[AdaptConfig] = None) -> Evaluation:
    """Score ``run`` on the text at ``path``, or on ``split`` of the corpus it was trained on; with
    ``adapt``, also with the model adapting to the text as it reads it (``evaluation.adapt``), and then
    ``score`` is the adapted score and ``plain`` the one without.

    Raises:
        LstmgenError: the run's corpus is not on this machine or changed since (without ``path``), or the
            text is too short to score.
    """
    corpus = run.info.get("corpus")
    if path is not None:
        texts = read_texts(path, run.config.data)
        ids, unknowns = encode_text(texts, run.tokenizer, run.vocab)
        characters = sum(map(len, texts)) + len(texts) - 1
        what = str(path)
        trained_on = training_files_in(path, corpus)
        seen = share_in_training(texts, corpus, run.config.data)
    else:
        if not corpus or not Path(corpus).exists():
            raise LstmgenError(f"{run.path}: its corpus {corpus!r} is not on this machine; give a PATH to score")
        data = run.prepared(corpus)
        trained = run.info.get("corpus_fingerprint")
        if trained and trained != data.fingerprint:  # the cuts moved: text it trained on may now be "held out"
            raise LstmgenError(f"{corpus}: its text changed since {run.path} was trained, so its {split} "
                               f"split is no longer the text the run held out; give a PATH to score a file")
        ids, characters, what = data.ids[split], data.characters[split], f"{split} split of {corpus}"
        unknowns = data.unknowns(split)
        trained_on, seen = [], None
    if len(ids) < 2:
        raise LstmgenError(f"{what}: too little text to score")
    start = time.perf_counter()
    score = score_ids(run.model, ids, characters=characters, unknowns=unknowns)
    seconds = time.perf_counter() - start
    evaluation = Evaluation(score=score, text=what, trained_on=trained_on, seen_in_training=seen,
                            has_unknown_costs=unknowns is not None, corpus=corpus, seconds=seconds)
    if adapt is not None:
        start = time.perf_counter()
        evaluation.score = score_adapted(run.model, ids, adapt, characters=characters, unknowns=unknowns)
        evaluation.seconds = time.perf_counter() - start
        evaluation.adapt, evaluation.plain, evaluation.plain_seconds = adapt, score, seconds
    return evaluation
