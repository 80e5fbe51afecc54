"""Scoring: perplexity, bits per character and OOV rate on any token stream, split or file."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

from lstmgen.device import choose_precision
from lstmgen.model.lstm import LSTMLM
from lstmgen.tokens.batches import batchify_padded, device_grid, get_window
from lstmgen.tokens.open_vocab import Unknowns

# Every score (validation, test, ``lstmgen eval``) lays the text out the same way, whatever the run
# trained with: 16 rows, each read start to end with the state carried from window to window. The
# layout changes the number -- the rows start in different places -- so two runs are compared on
# equal terms only when it is the same. (A weak model can fall into a saturated state on one row and
# stay there, so the rows' starts move its score a lot: BENCHMARKS.md has the seed's example.)
EVAL_ROWS = 16
EVAL_SEQ_LEN = 128


@dataclass
class Score:
    """What one evaluation measured."""

    tokens: int  # tokens scored
    characters: int  # characters of the text those tokens spell
    nll: float  # total negative log-likelihood, nats
    unknown: int  # scored tokens that were <unk>
    unknown_nll: float = 0.0  # the part of ``nll`` spent on those <unk> targets, nats
    # what spelling out those <unk> words costs on top (lstmgen.tokens.open_vocab), nats; None: not counted
    spelling_nll: Optional[float] = None

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.nll / max(self.tokens, 1), 700.0))

    @property
    def bits_per_char(self) -> float:
        return self.nll / math.log(2) / max(self.characters, 1)

    @property
    def open_bits_per_char(self) -> Optional[float]:
        """Bits per character with every <unk> word also spelled out: what a closed vocabulary's
        score leaves uncoded, so models with different vocabularies compare on equal terms."""
        if self.spelling_nll is None:
            return None
        return (self.nll + self.spelling_nll) / math.log(2) / max(self.characters, 1)

    @property
    def oov_rate(self) -> float:
        return self.unknown / max(self.tokens, 1)

    @property
    def unknown_share(self) -> float:
        """The share of the loss spent on <unk> targets. A word model is charged only for predicting
        "some unknown word" there, nothing for which one (its spelling)."""
        return self.unknown_nll / self.nll if self.nll > 0 else 0.0

    def as_dict(self, prefix: str = "") -> dict:
        out = {**asdict(self), "perplexity": self.perplexity, "bits_per_char": self.bits_per_char,
               "open_bits_per_char": self.open_bits_per_char, "oov_rate": self.oov_rate,
               "unknown_share": self.unknown_share}
        out = {k: v for k, v in out.items() if v is not None}  # not counted: no key, rather than a null
        return {f"{prefix}{k}": v for k, v in out.items()}


def describe_bits(bits_per_char: float, open_bits_per_char: Optional[float]) -> str:
    """"5.593 bits/char", or "6.327 bits/char (open vocabulary 7.694)": see ``lstmgen.tokens.open_vocab``."""
    text = f"{bits_per_char:.3f} bits/char"
    if open_bits_per_char is not None and open_bits_per_char > bits_per_char + 5e-4:
        text += f" (open vocabulary {open_bits_per_char:.3f})"
    return text


def describe_oov(oov_rate: float, unknown_share: float) -> str:
    """"0.13%", or "6.70% (15.3% of the loss)" when <unk> targets cost anything."""
    text = f"{100 * oov_rate:.2f}%"
    return f"{text} ({100 * unknown_share:.1f}% of the loss)" if unknown_share > 0 else text


@torch.no_grad()
def nll_sums(
    model: LSTMLM,
    ids: np.ndarray,
    *,
    batch_size: int,
    seq_len: int,
    device: torch.device,
    amp: str = "off",
    rank: int = 0,
    world_size: int = 1,
) -> tuple[float, int, int, float]:
    """Total NLL (nats), tokens scored, <unk> tokens scored and the NLL of those over a whole stream.

    The stream is laid into ``batch_size`` padded rows, so every token is scored but the first of
    each row (it has no context), with the state carried from window to window as in training. With ``world_size`` processes,
    this one scores rows rank, rank + world_size, ...: the sums over all ranks are then exactly
    those of one process.
    """
    grid = batchify_padded(ids, batch_size)[rank::world_size]
    if grid.shape[0] == 0:  # fewer rows than processes
        return 0.0, 0, 0, 0.0
    grid = device_grid(grid, device)
    was_training = model.training
    model.eval()
    state = None
    # Sums in float64 where they are computed; Apple's MPS has no float64, so there each window's
    # float32 sums are added up on the CPU (a wait per window, which only MPS pays).
    wide, sums_on = (torch.float32, torch.device("cpu")) if device.type == "mps" else (torch.float64, device)
    autocast = choose_precision(device, amp).autocast(device, scoring=True)
    total = torch.zeros((), dtype=torch.float64, device=sums_on)
    count = torch.zeros((), dtype=torch.int64, device=sums_on)
    unknown = torch.zeros((), dtype=torch.int64, device=sums_on)
    unknown_nll = torch.zeros((), dtype=torch.float64, device=sums_on)
    for index in range(-(-(grid.shape[1] - 1) // seq_len)):
        inputs, targets = get_window(grid, index, seq_len, device)
        with autocast:
            features, state = model.features(inputs, state)
            nll = model.nll(features, targets, reduction="none").to(wide)  # (B*T,), 0 where skipped
        is_unknown = targets.reshape(-1) == 0
        total += nll.sum().to(sums_on).double()
        unknown_nll += torch.where(is_unknown, nll, 0.0).sum().to(sums_on).double()
        count += (targets >= 0).sum().to(sums_on)
        unknown += is_unknown.sum().to(sums_on)
    model.train(was_training)
    return float(total), int(count), int(unknown), float(unknown_nll)


def score_ids(
    model: LSTMLM,
    ids: np.ndarray,
    *,
    characters: int,
    batch_size: int = EVAL_ROWS,
    seq_len: int = EVAL_SEQ_LEN,
    device: Optional[torch.device] = None,
    amp: str = "off",
    max_tokens: int = 0,
    rank: int = 0,
    world_size: int = 1,
    unknowns: Optional[Unknowns] = None,
) -> Score:
    """Score a token stream that spells ``characters`` characters.

    Args:
        max_tokens: score only the first this many tokens (0: all); the character count is
            scaled by the same share, so bits per character stay comparable.
        rank, world_size: with several processes, each scores its share of the rows and the sums
            are all-reduced, so every rank gets the same Score, the one a single process gets.
        unknowns: the spelling cost of the stream's <unk> words (``PreparedData.unknowns``,
            ``pipeline.encode_text``), for ``Score.open_bits_per_char``; None: not counted. It does
            not depend on the model, so every rank adds it whole.
    """
    device = device or next(model.parameters()).device
    if max_tokens and len(ids) > max_tokens:
        characters = max(1, round(characters * max_tokens / len(ids)))
        ids = ids[:max_tokens]
    nll, tokens, unknown, unknown_nll = 0.0, 0, 0, 0.0
    if len(ids) >= 2:
        nll, tokens, unknown, unknown_nll = nll_sums(model, ids, batch_size=batch_size, seq_len=seq_len,
                                                     device=device, amp=amp, rank=rank, world_size=world_size)
    if world_size > 1:
        import torch.distributed as dist

        sums = torch.tensor([nll, tokens, unknown, unknown_nll], dtype=torch.float64,
                            device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(sums)
        nll, tokens, unknown, unknown_nll = float(sums[0]), int(sums[1]), int(sums[2]), float(sums[3])
    spelling_nll = None
    if unknowns is not None:
        spelling_nll = unknowns.scored_nats(len(ids), batch_size) if len(ids) >= 2 else 0.0
    return Score(tokens=tokens, characters=scored_characters(characters, len(ids), tokens), nll=nll,
                 unknown=unknown, unknown_nll=unknown_nll, spelling_nll=spelling_nll)


def scored_characters(characters: int, num_tokens: int, scored_tokens: int) -> int:
    """The characters a score divides by: those of the tokens it scored, in proportion. The first
    token of every row has no context and is not scored; on a short text (40 tokens in 16 rows) that
    is a third of them, and dividing by all the characters would understate bits per character."""
    return max(1, round(characters * scored_tokens / max(num_tokens, 1)))
