"""Numbers for generated text: diversity, repetition, and how much is copied from the training text."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence


def distinct_n(tokens: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams (1.0: nothing repeats; Li et al. 2016)."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of the text's character n-grams that already occurred earlier in it."""
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def longest_copy(text: str, source: str) -> str:
    """The longest passage of ``text`` that appears verbatim in ``source``.

    Grows a best length greedily: at each start, only a longer match than the best so far is
    worth a look, so there are at most 2 * len(text) substring searches.
    """
    best_start, best_len = 0, 0
    for start in range(len(text)):
        while start + best_len < len(text) and text[start:start + best_len + 1] in source:
            best_start, best_len = start, best_len + 1
    return text[best_start:best_start + best_len]


def text_quality(texts: Sequence[str], tokenizer: Any, source: Optional[str] = None) -> dict[str, Any]:
    """Mean distinct-1/2 (over tokens) and repetition rate; with a ``source``, also the longest
    passage copied verbatim from it (left out without one: not measured is not "copies nothing")."""
    token_lists = [tokenizer.tokenize(t) for t in texts]
    count = max(len(texts), 1)
    result: dict[str, Any] = {
        "sample_distinct_1": sum(distinct_n(t, 1) for t in token_lists) / count,
        "sample_distinct_2": sum(distinct_n(t, 2) for t in token_lists) / count,
        "sample_repetition_rate": sum(repetition_rate(t) for t in texts) / count,
    }
    if source is not None:
        longest = max((longest_copy(t, source) for t in texts), key=len, default="")
        result.update(sample_longest_copy_chars=len(longest), sample_longest_copy=longest)
    return result


def sample_quality(run: Any, *, num_samples: int, length: int = 200, seed: int = 1) -> dict[str, Any]:
    """Generate ``num_samples`` texts with a loaded run and measure them against its training text
    (when the run's corpus is on this machine)."""
    from lstmgen.generation.generate import GenerateConfig, generate
    from lstmgen.text.splitting import split_corpus

    # fp32: a measurement of the model as trained, the same on any CPU (and int8 is the slower at 32 rows)
    texts = generate(run.model, run.tokenizer, run.vocab, [""],
                     GenerateConfig(length=length, num_samples=num_samples, seed=seed, precision="fp32"))
    source = None
    corpus = run.info.get("corpus")
    if corpus and Path(corpus).exists():
        source = "\n".join(split_corpus(corpus, run.config.data, quiet=True)[0]["train"])
    return text_quality(texts, run.tokenizer, source)
