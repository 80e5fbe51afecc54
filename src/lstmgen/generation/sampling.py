"""Choosing the next token: temperature, top-k, top-p, repetition penalties, and a generator per row.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch

from lstmgen.errors import LstmgenError
from lstmgen.tokens.batches import derived_seed

NOTHING_TO_DRAW = "the model gave no token a probability (are its weights NaN?)"


def candidates(log_probs: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens a draw may pick and their probabilities at ``temperature``, likeliest first: the
    top-k, then of those the fewest whose probabilities reach top-p (the likeliest always stays).

    Only k tokens are shifted, scaled, sorted and normalised, not the whole vocabulary: that is most
    of a step's sampling cost on a CPU. Scores are taken relative to each row's likeliest token, so a
    tiny temperature gives 0 and -inf, not an overflow to NaN.

    Args:
        log_probs: (B, V) log-probabilities (or any scores; only their differences count).

    Returns:
        probabilities (B, K) and token ids (B, K); K = top_k, or V without it.
    """
    if top_k and top_k < log_probs.shape[-1]:
        best, ids = torch.topk(log_probs, top_k, dim=-1)  # sorted, likeliest first
    else:
        best, ids = torch.sort(log_probs, dim=-1, descending=True)
    if not bool(torch.isfinite(best[:, 0]).all()):
        raise LstmgenError(NOTHING_TO_DRAW)
    probs = torch.softmax(((best - best[:, :1]) / temperature).float(), dim=-1)
    if top_p < 1.0:
        # drop a token when the tokens ranked above it already reach top_p
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
    return probs, ids


# Up to this many candidates a row (--top-k), each row's draw is made in Python floats: the dozen tensor
# operations that shift, scale, normalise and cut 40 numbers cost more than the numbers themselves
# (one sample of the default model: 1,920 against 1,720 characters/s; BENCHMARKS.md). More candidates
# (top-k off or large) are drawn as tensors, by ``candidates`` and ``draw``.
FEW_CANDIDATES = 256


def sample_next(log_probs: torch.Tensor, *, temperature: float, top_k: int, top_p: float,
                generator: Union[torch.Generator, Sequence[torch.Generator]]) -> torch.Tensor:
    """One token id per row from (B, V) log-probabilities; greedy when temperature is 0.

    ``generator``: one for all rows, or one per row (then a row's draws depend on nothing but its own).
    """
    if temperature == 0:
        return log_probs.argmax(dim=-1)
    if not top_k or top_k > FEW_CANDIDATES or top_k >= log_probs.shape[-1]:
        probs, ids = candidates(log_probs, temperature=temperature, top_k=top_k, top_p=top_p)
        return ids.gather(-1, draw(probs, generator)).squeeze(-1)
    generators = _one_per_row(generator, len(log_probs))
    best, ids = torch.topk(log_probs, top_k, dim=-1)  # sorted, likeliest first
    picks = []
    for scores, row_ids, row_generator in zip(best.tolist(), ids.tolist(), generators):
        weights = kept_weights(scores, temperature=temperature, top_p=top_p)
        target = torch.rand((), dtype=torch.float64, generator=row_generator).item() * sum(weights)
        pick = len(weights) - 1  # if rounding leaves a sliver of target past the last weight
        for n, weight in enumerate(weights):
            target -= weight
            if target < 0:
                pick = n
                break
        picks.append(row_ids[pick])
    return torch.tensor(picks, dtype=ids.dtype)


def kept_weights(scores: list[float], *, temperature: float, top_p: float) -> list[float]:
    """Unnormalised probabilities of one row's candidates, likeliest first, as ``candidates`` gives them:
    at ``temperature``, then only the fewest whose probabilities reach ``top_p`` (the likeliest stays).
    Candidates of probability 0 (scores at -inf, or too far below the likeliest) are left out."""
    top = scores[0]
    if not math.isfinite(top):  # NaN or every token at -inf: nothing to draw from
        raise LstmgenError(NOTHING_TO_DRAW)
    weights = [math.exp((score - top) / temperature) for score in scores]
    while not weights[-1]:  # sorted, so zeros come last; weights[0] is 1
        weights.pop()
    if top_p < 1.0:
        enough = top_p * sum(weights)
        above = 0.0
        for n, weight in enumerate(weights):
            if above >= enough:  # the tokens ranked above this one already reach top_p
                return weights[:n]
            above += weight
    return weights


def draw(probs: torch.Tensor, generator: Union[torch.Generator, Sequence[torch.Generator]]) -> torch.Tensor:
    """(B, 1): one index per row of (B, K) probabilities, index i with probability p_i / sum(p).

    The exponential race: with E_i ~ Exp(1) drawn for every entry, argmax p_i / E_i. It is what
    ``torch.multinomial`` does for one draw (the same indices from the same generator), without the
    checks of the probabilities that made multinomial a third of a step's sampling time on a CPU.
    """
    race = torch.empty_like(probs)
    if isinstance(generator, torch.Generator):
        race.exponential_(generator=generator)
    else:
        for row, row_generator in zip(race, _one_per_row(generator, len(probs))):
            row.exponential_(generator=row_generator)
    return torch.div(probs, race, out=race).argmax(dim=-1, keepdim=True)


def _one_per_row(generator: Union[torch.Generator, Sequence[torch.Generator]],
                 rows: int) -> Sequence[torch.Generator]:
    """``generator`` as one per row: a single one serves every row in turn; a sequence must have one per row."""
    if isinstance(generator, torch.Generator):
        return [generator] * rows
    if len(generator) != rows:
        raise ValueError(f"{len(generator)} generators for {rows} rows")
    return generator


def row_generators(seed: int, num_prompts: int, num_samples: int) -> list[torch.Generator]:
    """One generator per row, seeded by the sample's number alone: sample j of a prompt is the same
    text whatever else is in the batch (other prompts, more samples); sample 0 draws from ``seed``
    itself, the others from ``seed`` and j mixed (so that seed s's sample 1 is not seed s+1's sample 0)."""
    seeds = [derived_seed(seed, j) for j in range(num_samples)]
    return [torch.Generator().manual_seed(seeds[j]) for _ in range(num_prompts) for j in range(num_samples)]


class _NgramIndex:
    """The n-grams a row has written, indexed by their first n-1 tokens: O(1) bans per step."""

    def __init__(self, n: int, history: Sequence[int] = ()) -> None:
        self.n = n
        self.next_tokens: dict[tuple[int, ...], set[int]] = {}
        for end in range(n, len(history) + 1):
            self.add(history[:end])

    def add(self, history: Sequence[int]) -> None:
        """Record the n-gram that ends ``history`` (call after each token)."""
        if self.n > 0 and len(history) >= self.n:
            gram = tuple(history[len(history) - self.n:])
            self.next_tokens.setdefault(gram[:-1], set()).add(gram[-1])

    def banned(self, history: Sequence[int]) -> set[int]:
        """Tokens that would complete an n-gram already in the index."""
        if self.n <= 0 or len(history) < self.n - 1:
            return set()
        return self.next_tokens.get(tuple(history[len(history) - self.n + 1:]), set())
