"""A model that keeps learning as it reads: dynamic evaluation and a continuous cache.

Both use the text already read to predict what comes next, strictly online: every token is scored
(or sampled) before the model learns from it, so an adapted score is still an honest code length.

- **Dynamic evaluation** (Krause et al. 2018): after each segment of ``segment`` tokens has been
  scored, one gradient step on that segment's loss, and a decay back toward the trained weights.
  What adapts is the output side of the model, per row of text: a linear map added to the LSTM's
  features (F x F) and a bias on the log-probabilities (V). The LSTM's own weights stay as trained:
  strictly online scoring of 16 rows at once needs a copy of every adapted weight per row, and 16
  copies of the recurrent matrix would be read at every time step, where one is read now.
- **Continuous cache** (Grave et al. 2017): the next-token distribution is mixed, with weight
  ``mix``, with one over the tokens that followed the ``cache_size`` most recent positions, each
  weighted by exp(``flatness`` * the dot product of its features with the current ones).

Each row of the layout (``evaluation.score.EVAL_ROWS`` rows for a score, one per sample in
generation) has its own adapted weights and its own cache: a row learns only from its own past, so a
token's score depends on the text before it and on nothing after it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

from lstmgen.errors import LstmgenError
from lstmgen.evaluation.score import EVAL_ROWS, Score, scored_characters
from lstmgen.model.lstm import LSTMLM
from lstmgen.tokens.batches import IGNORE_INDEX, batchify_padded, get_window, row_starts
from lstmgen.tokens.open_vocab import Unknowns

ADAPT_MODES = ("off", "dynamic", "cache", "both")

# The transform's learning rate as a share of the bias's (``--adapt-lr``), chosen on validation with the
# rest: at the bias's own rate the transform's steps overshoot and the score gets worse as it reads.
TRANSFORM_RATE = 0.1


@dataclass
class AdaptConfig:
    """How the model adapts to the text it reads. The defaults were chosen on the validation split of
    the shared classics (bench/adapt_tune.py; BENCHMARKS.md, "Adapting to the text read")."""

    mode: str = "both"  # off | dynamic | cache | both
    lr: float = 0.3  # dynamic: learning rate of the step after each segment (per token of it)
    decay: float = 0.01  # dynamic: share of the adaptation forgotten after each segment
    segment: int = 32  # dynamic: tokens scored between two steps
    cache_size: int = 1000  # cache: recent positions remembered per row
    flatness: float = 0.5  # cache: theta, how sharply the most similar positions dominate
    mix: float = 0.1  # cache: lambda, the cache's weight in the mixture

    def __post_init__(self) -> None:
        if self.mode not in ADAPT_MODES:
            raise LstmgenError(f"--adapt must be one of {', '.join(ADAPT_MODES)}")
        for name in ("lr", "decay", "flatness", "mix"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise LstmgenError(f"--{self.flag(name)} must be 0 or positive")
        if self.decay > 1 or self.mix > 1:
            raise LstmgenError("--adapt-decay and --cache-mix must be at most 1")
        if self.segment < 1 or self.cache_size < 1:
            raise LstmgenError("--adapt-segment and --cache-size must be at least 1")

    @staticmethod
    def flag(name: str) -> str:
        """The command-line flag of a field: "lr" -> "adapt-lr", "mix" -> "cache-mix"."""
        return {"lr": "adapt-lr", "decay": "adapt-decay", "segment": "adapt-segment", "cache_size": "cache-size",
                "flatness": "cache-flatness", "mix": "cache-mix", "mode": "adapt"}[name]

    @property
    def dynamic(self) -> bool:
        return self.mode in ("dynamic", "both")

    @property
    def cache(self) -> bool:
        return self.mode in ("cache", "both")

    def as_dict(self) -> dict:
        return asdict(self)


class AdaptingReader:
    """The adapted weights and the cache of ``rows`` rows of text, read window by window.

    ``read`` scores a window and then learns from it (evaluation, and a context in generation);
    ``log_probs`` and ``remember`` serve generation: the distribution for the next token, and the
    token drawn added to the cache.
    """

    def __init__(self, model: LSTMLM, rows: int, config: AdaptConfig, device: torch.device) -> None:
        self.model = model
        self.config = config
        width = model.config.embed_size if model.projection is not None else model.config.hidden_size
        self.transform: Optional[torch.Tensor] = None  # (rows, F, F): features + features @ transform
        self.bias: Optional[torch.Tensor] = None  # (rows, V), added to the log-probabilities
        if config.dynamic:
            self.transform = torch.zeros(rows, width, width, device=device)
            self.bias = torch.zeros(rows, model.vocab_size, device=device)
        # the cache, a ring of slots written in turn (all rows advance together): the features of a recent
        # position (key) and the token that followed it (value); an empty slot's value is IGNORE_INDEX
        size = config.cache_size if config.cache else 0
        self.keys = torch.zeros(rows, size, width, device=device)
        self.values = torch.full((rows, size), IGNORE_INDEX, dtype=torch.long, device=device)
        self.next_slot = 0
        self.last_features: Optional[torch.Tensor] = None  # generation: the features the next token follows

    # -- the model's own distribution, adapted --------------------------------------------------------

    def _base_log_probs(self, features: torch.Tensor, transform: Optional[torch.Tensor]) -> torch.Tensor:
        """(rows, T, V): the model's log-probabilities for features (rows, T, F), mapped by ``transform``."""
        rows, length, width = features.shape
        if transform is not None:
            features = features + torch.bmm(features, transform)
        return self.model.log_probs(features.reshape(rows * length, width)).float().view(rows, length, -1)

    def _adapted_log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """(rows, T, V) log-probabilities of the dynamically adapted model for features (rows, T, F)."""
        logp = self._base_log_probs(features, self.transform)
        if self.bias is not None:
            logp = torch.log_softmax(logp + self.bias[:, None, :], dim=-1)
        return logp

    # -- the cache ----------------------------------------------------------------------------------

    @staticmethod
    def _weights(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(rows, T, K) weights over the keys: a softmax of the scores (flatness x dot product) over the
        allowed keys, zero where none is allowed."""
        scores = scores.masked_fill(~allowed, -math.inf)
        any_allowed = allowed.any(dim=-1, keepdim=True)
        return torch.where(any_allowed, torch.softmax(scores.masked_fill(~any_allowed, 0.0), dim=-1), 0.0)

    def _mix(self, p_model: torch.Tensor, p_cache: torch.Tensor, has_cache: torch.Tensor) -> torch.Tensor:
        """(1 - mix) p_model + mix p_cache where the row has a cache yet, p_model where it has none."""
        mix = self.config.mix * has_cache.to(p_model.dtype)
        return (1 - mix) * p_model + mix * p_cache

    def _remember(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Add positions (rows, T, F) and the tokens that followed them (rows, T) to the cache, in place
        of the oldest; a padding target (IGNORE_INDEX) takes a slot that no token matches."""
        size = self.keys.shape[1]
        keys, values = keys[:, -size:], values[:, -size:]
        slots = (self.next_slot + torch.arange(keys.shape[1], device=keys.device)) % size
        self.keys[:, slots] = keys.detach().float()
        self.values[:, slots] = values.long()
        self.next_slot = (self.next_slot + keys.shape[1]) % size

    # -- reading: score, then learn ---------------------------------------------------------------------

    def read(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The NLL (nats) of each target (rows, T) given the features (rows, T, F) that predict it, 0 where
        the target is IGNORE_INDEX; then the step of dynamic evaluation and the cache take the window in.

        Position t is scored with what was learnt from the windows before this one and, in the cache,
        from positions before t in this one: never from its own target or any later one.
        """
        features = features.detach().float()
        valid = targets != IGNORE_INDEX
        safe = targets.clamp(min=0).long()
        if self.transform is not None:
            transform = self.transform.requires_grad_(True)
            with torch.enable_grad():
                base = self._base_log_probs(features, transform)
                with torch.no_grad():
                    # log_softmax(base + bias), and the gradient of the window's summed NLL by hand: with
                    # respect to the bias and to the base log-probabilities, softmax - one-hot at each target
                    logp = torch.log_softmax(base + self.bias[:, None, :], dim=-1)
                    nll_model = -logp.gather(-1, safe[..., None]).squeeze(-1) * valid
                    grad_logp = logp.exp_().mul_(valid[..., None])
                    grad_logp.scatter_add_(-1, safe[..., None], -valid[..., None].float())
                    grad_bias = grad_logp.sum(1)
                (grad_transform,) = torch.autograd.grad(base, (transform,), grad_outputs=grad_logp)
            self.transform = transform.detach()
        else:  # the model as trained: only the targets' costs are needed, not whole distributions
            with torch.no_grad():
                nll_model = self.model.nll(features, targets, reduction="none").float().view(targets.shape)
        with torch.no_grad():
            nll = nll_model
            if self.config.cache:
                nll = self._cache_nll(features, targets, nll_model)
            if self.transform is not None:
                keep, lr = 1 - self.config.decay, self.config.lr
                # The transform's step is divided by the window's mean squared feature norm (as in the
                # normalised LMS filter), so that what it moves a log-probability by does not grow with
                # the width of the features, and scaled by TRANSFORM_RATE against the bias's.
                norm = (features.square().sum(-1) * valid).sum(-1) / valid.sum(-1).clamp_min(1)  # (rows,)
                step = TRANSFORM_RATE * lr / norm.clamp_min(1e-6)
                self.transform.sub_(step[:, None, None] * grad_transform).mul_(keep)
                self.bias.sub_(lr * grad_bias).mul_(keep)
            if self.config.cache:
                self._remember(features, targets)
        return nll * valid

    def _cache_nll(self, features: torch.Tensor, targets: torch.Tensor, nll_model: torch.Tensor) -> torch.Tensor:
        """The NLL of the targets under the model's distribution mixed with the cache's. The cache holds
        the earlier windows' positions, and within this window position t sees positions before t."""
        length = features.shape[1]
        # scores against the ring (K slots) and against this window's earlier positions, side by side
        earlier = self.config.flatness * torch.bmm(features, self.keys.transpose(1, 2))  # (rows, T, K)
        within = self.config.flatness * torch.bmm(features, features.transpose(1, 2))  # (rows, T, T)
        values = torch.cat([self.values, targets.long()], dim=1)  # (rows, K + T)
        causal = torch.ones(length, length, dtype=torch.bool, device=features.device).tril(-1)
        allowed = (values != IGNORE_INDEX)[:, None, :].repeat(1, length, 1)  # (rows, T, K + T)
        allowed[:, :, self.keys.shape[1]:] &= causal
        weights = self._weights(torch.cat([earlier, within], dim=2), allowed)
        p_cache = (weights * (values[:, None, :] == targets.long()[..., None])).sum(-1)  # (rows, T)
        has_cache = allowed.any(dim=-1)
        p = self._mix(torch.exp(-nll_model.double()), p_cache.double(), has_cache)
        return -torch.log(p.clamp_min(1e-300)).float()

    # -- generation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """(rows, V) log-probabilities of the next token given the current features (rows, F)."""
        features = features.float()
        logp = self._adapted_log_probs(features[:, None, :])[:, 0]
        if not self.config.cache:
            return logp
        allowed = (self.values != IGNORE_INDEX)[:, None, :]
        scores = self.config.flatness * torch.bmm(features[:, None, :], self.keys.transpose(1, 2))
        weights = self._weights(scores, allowed)[:, 0]  # (rows, K)
        p_cache = torch.zeros_like(logp).scatter_add_(1, self.values.clamp(min=0), weights)
        p = self._mix(logp.exp(), p_cache, allowed[:, 0].any(dim=-1, keepdim=True))
        return torch.log(p.clamp_min(1e-38))

    @torch.no_grad()
    def remember(self, features: torch.Tensor, next_ids: torch.Tensor) -> None:
        """Add the current features (rows, F) and the token drawn after them (rows,) to the cache."""
        if self.config.cache:
            self._remember(features.float()[:, None, :], next_ids.to(self.values.device)[:, None])

    def expand(self, rows: int) -> "AdaptingReader":
        """This one reader's state (1 row), copied to ``rows`` rows: every sample continues one context."""
        out = AdaptingReader.__new__(AdaptingReader)
        out.__dict__.update(self.__dict__)
        for name in ("transform", "bias", "keys", "values"):
            value = getattr(self, name)
            if value is not None:
                setattr(out, name, value.expand(rows, *value.shape[1:]).clone())
        return out


def stack_readers(readers: list[AdaptingReader], repeats: int = 1) -> AdaptingReader:
    """One reader for the rows of several (each repeated ``repeats`` times, in order). Their rings may
    be at different slots: each is turned so that its next slot is the first."""
    first = readers[0]
    out = AdaptingReader.__new__(AdaptingReader)
    out.__dict__.update(first.__dict__)
    for name in ("transform", "bias"):
        if getattr(first, name) is not None:
            setattr(out, name, torch.cat([getattr(r, name) for r in readers]).repeat_interleave(repeats, dim=0))
    out.keys = torch.cat([r.keys.roll(-r.next_slot, dims=1) for r in readers]).repeat_interleave(repeats, dim=0)
    out.values = torch.cat([r.values.roll(-r.next_slot, dims=1) for r in readers]).repeat_interleave(repeats, dim=0)
    out.next_slot = 0
    return out


def model_features(model: LSTMLM, hidden: torch.Tensor) -> torch.Tensor:
    """The features the output layer reads, (B, F), from the LSTM's top hidden state (B, H) in eval mode."""
    return model.projection(hidden) if model.projection is not None else hidden


def as_adapt_config(adapt: "Optional[str | AdaptConfig]", **settings) -> Optional[AdaptConfig]:
    """``--adapt`` as given (a mode name or a config) as an AdaptConfig, or None for no adaptation."""
    if adapt is None or isinstance(adapt, AdaptConfig):
        return adapt if adapt is None or adapt.mode != "off" else None
    config = AdaptConfig(mode=adapt, **{k: v for k, v in settings.items() if v is not None})
    return None if config.mode == "off" else config



def adapted_nlls(model: LSTMLM, ids: np.ndarray, config: AdaptConfig, *,
                 batch_size: int = EVAL_ROWS) -> np.ndarray:
    """The NLL (nats) of every token of the stream as the adapting model scores it, laid out as
    ``score.score_ids`` lays it (the same rows): position p holds the cost of ids[p] given what came
    before it in its row; 0 at the start of each row, which nothing predicts."""
    device = next(model.parameters()).device
    grid = batchify_padded(ids, batch_size)
    was_training = model.training
    model.eval()
    reader = AdaptingReader(model, grid.shape[0], config, device)
    out = np.zeros(grid.shape, dtype=np.float64)
    state = None
    for index in range(-(-(grid.shape[1] - 1) // config.segment)):
        inputs, targets = get_window(grid, index, config.segment, device)
        with torch.no_grad():
            features, state = model.features(inputs, state)
        start = index * config.segment
        out[:, start + 1 : start + 1 + targets.shape[1]] = reader.read(features, targets).double().cpu().numpy()
    model.train(was_training)
    return out.reshape(-1)[: len(ids)]


def score_adapted(
    model: LSTMLM,
    ids: np.ndarray,
    config: AdaptConfig,
    *,
    characters: int,
    batch_size: int = EVAL_ROWS,
    unknowns: Optional[Unknowns] = None,
) -> Score:
    """Score a token stream as ``score.score_ids`` does (the same rows, the same tokens scored), with
    the model adapting to each row as it reads it. With ``lr`` 0 and ``mix`` 0 it is the plain score."""
    nll = adapted_nlls(model, ids, config, batch_size=batch_size)
    scored = np.ones(len(ids), dtype=bool)
    scored[row_starts(len(ids), batch_size)] = False
    is_unknown = scored & (np.asarray(ids) == 0)
    count = int(scored.sum())
    spelling = unknowns.scored_nats(len(ids), batch_size) if unknowns is not None else None
    return Score(tokens=count, characters=scored_characters(characters, len(ids), count), nll=float(nll.sum()),
                 unknown=int(is_unknown.sum()), unknown_nll=float(nll[is_unknown].sum()), spelling_nll=spelling)
