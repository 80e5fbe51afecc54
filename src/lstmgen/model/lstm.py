"""LSTMLM: embedding -> LSTM -> output layer (full softmax, tied to the embedding, or adaptive)."""

from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lstmgen.config import ModelConfig
from lstmgen.tokens.batches import IGNORE_INDEX

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, hidden_size)

# On a GPU the output layer's matrix products run on the fast tensor-core kernels only when the row
# length of the logits is a multiple of 8; the seed's 136,729 words (or 6,314 characters) are not, and
# cuBLAS fell back to old kernels. Computing the logits over a multiple of this many columns made the
# seed's whole step much faster on a GPU under bf16 autocast (BENCHMARKS.md; see padded_linear).
PAD_LOGITS_TO = 64


def padded_linear(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, multiple: int) -> torch.Tensor:
    """``F.linear(features, weight, bias)`` with -inf columns appended up to a multiple of ``multiple``.

    The extra columns take no probability in a softmax and get no gradient, so a loss computed on the
    padded logits (and every gradient) is the one the unpadded layer gives. Under autocast, the weight
    is cast first and padded in its low precision: one copy per step, as autocast alone makes.
    """
    pad = -weight.shape[0] % multiple
    if torch.is_autocast_enabled(features.device.type):
        dtype = torch.get_autocast_dtype(features.device.type)
        weight, bias, features = weight.to(dtype), bias.to(dtype), features.to(dtype)
    weight = F.pad(weight, (0, 0, 0, pad))
    bias = F.pad(bias, (0, pad), value=float("-inf"))
    return F.linear(features, weight, bias)


def adaptive_cutoffs(config: ModelConfig, vocab_size: int) -> list[int]:
    """Cluster edges for the adaptive softmax; ids must be ordered by falling frequency (Vocab does)."""
    if config.adaptive_cutoffs != "auto":
        cutoffs = [int(c) for c in config.adaptive_cutoffs.split(",")]
    elif vocab_size <= 20000:  # characters: about 500 cover three quarters of Chinese text, 2000 nearly all
        cutoffs = [500, 2000]
    else:  # words
        cutoffs = [2000, 10000, 50000]
    return [c for c in cutoffs if 0 < c < vocab_size] or [max(1, vocab_size - 1)]


class LSTMLM(nn.Module):
    """An LSTM language model.

    The seed's model is ``output="full"``: Embedding(V, E) -> LSTM(E, H) -> Linear(H, V).
    ``output="tied"`` reuses the embedding matrix as the output layer (through a projection
    Linear(H, E) when H != E), which removes V*H parameters. ``output="adaptive"`` replaces the
    softmax by an adaptive one (Grave et al. 2017): frequent words get full-size scores, rare ones
    share smaller clusters, so big word vocabularies train several times faster.
    """

    pad_logits_on: tuple[str, ...] = ("cuda",)  # device types whose logits are padded (PAD_LOGITS_TO)

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, config.embed_size)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embed_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.projection: Optional[nn.Linear] = None
        self.decoder: Optional[nn.Linear] = None
        self.adaptive: Optional[nn.AdaptiveLogSoftmaxWithLoss] = None
        if config.output == "full":
            self.decoder = nn.Linear(config.hidden_size, vocab_size)
        elif config.output == "tied":
            if config.hidden_size != config.embed_size:
                self.projection = nn.Linear(config.hidden_size, config.embed_size, bias=False)
            self.decoder = nn.Linear(config.embed_size, vocab_size)
            self.decoder.weight = self.embedding.weight
        else:
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
                config.hidden_size, vocab_size, adaptive_cutoffs(config, vocab_size), div_value=4.0
            )
        if config.output == "tied":
            # The tied matrix serves as input and output: a small uniform start keeps early logits tame.
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def features(self, inputs: torch.Tensor, state: Optional[State] = None) -> tuple[torch.Tensor, State]:
        """Run the LSTM.

        Args:
            inputs: (B, T) token ids.
            state: (h, c) carried from the previous window, or None for zeros.

        Returns:
            features (B, T, F) fed to the output layer, and the new state.
        """
        x = self.embedding(inputs)  # (B, T, E)
        if self.training and self.config.embed_drop > 0:
            x = x * self._embed_mask(inputs)
        x = self._dropout(x)
        if self.training and self.config.weight_drop > 0:
            out, state = self._lstm_weight_dropped(x, state)
        else:
            out, state = self.lstm(x, state)  # (B, T, H)
        out = self._dropout(out)
        if self.projection is not None:
            out = self.projection(out)  # (B, T, E)
        return out, state

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        """``--dropout`` on (B, T, F): a new mask at every step, or with ``locked_dropout`` one per sequence
        (variational dropout, Gal and Ghahramani 2016), which drops the same features all through a window."""
        if not (self.training and self.config.locked_dropout and self.config.dropout > 0):
            return self.drop(x)
        keep = 1 - self.config.dropout
        return x * x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(keep).div_(keep)

    def _embed_mask(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T, 1) scales for embedding dropout: each token type of the vocabulary is dropped (all its
        occurrences in the window) with probability ``embed_drop``; the kept ones are scaled up to match."""
        keep = 1 - self.config.embed_drop
        mask = torch.empty(self.vocab_size, 1, device=inputs.device).bernoulli_(keep).div_(keep)
        return F.embedding(inputs, mask)

    def _lstm_weight_dropped(self, x: torch.Tensor, state: Optional[State]) -> tuple[torch.Tensor, State]:
        """The LSTM with dropout on its hidden-to-hidden matrices (DropConnect, Merity et al. 2018).

        One mask per window drops the same recurrent connections at every time step, so the state
        cannot lean on any single one; the input weights and the cuDNN kernel are unchanged. The
        dropped matrices are new tensors, so cuDNN packs the weights into its own layout each call.
        """
        p = self.config.weight_drop
        weights = {name: F.dropout(w, p) if name.startswith("weight_hh") else w
                   for name, w in self.lstm.named_parameters()}
        with warnings.catch_warnings():  # cuDNN's note that it has to pack the (new) weights itself
            warnings.filterwarnings("ignore", message="RNN module weights are not part")
            # nn.LSTM notices on its next call that its parameters are back and uses them again
            return torch.func.functional_call(self.lstm, weights, (x, state))

    def nll(self, features: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Negative log-likelihood (nats) of ``targets`` (B, T) given ``features`` (B, T, F).

        Targets equal to IGNORE_INDEX are skipped; ``reduction`` is "mean" or "sum" over the rest, or
        "none": one value per position, (B*T,), 0 where the target is skipped.
        """
        flat = features.reshape(-1, features.shape[-1])
        flat_targets = targets.reshape(-1)
        if self.adaptive is None:
            logits = self._logits(flat).float()  # (B*T, V), or more columns that take no probability
            return F.cross_entropy(logits, flat_targets, ignore_index=IGNORE_INDEX, reduction=reduction)
        keep = flat_targets != IGNORE_INDEX
        if reduction == "none":
            nll = flat.new_zeros(flat_targets.shape, dtype=torch.float32)
            with _no_cpu_autocast():
                nll[keep] = -self.adaptive(flat[keep].float(), flat_targets[keep]).output
            return nll
        if not bool(keep.all()):
            flat, flat_targets = flat[keep], flat_targets[keep]
        with _no_cpu_autocast():
            loss = self.adaptive(flat.float(), flat_targets).loss  # mean over the kept positions
        return loss * flat_targets.numel() if reduction == "sum" else loss

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """Log-probabilities over the vocabulary, (N, V), for features (N, F)."""
        if self.adaptive is None:
            return F.log_softmax(self._logits(features).float(), dim=-1)[:, : self.vocab_size]
        with _no_cpu_autocast():
            return self.adaptive.log_prob(features.float())

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        """The output layer's scores for features (N, F): (N, V), padded to more columns on a GPU."""
        device = features.device.type
        # Only under autocast: in fp32 the copy of the padded matrix cost more than the faster kernels
        # bought (BENCHMARKS.md, the seed's step on a GPU).
        if device in self.pad_logits_on and self.vocab_size % PAD_LOGITS_TO and torch.is_autocast_enabled(device):
            return padded_linear(features, self.decoder.weight, self.decoder.bias, PAD_LOGITS_TO)
        return self.decoder(features)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, state: Optional[State] = None) -> tuple[torch.Tensor, State]:
        """Mean NLL of the window and the state to carry: what one training step needs."""
        features, state = self.features(inputs, state)
        return self.nll(features, targets), state


def _no_cpu_autocast() -> torch.autocast:
    """The adaptive softmax in fp32 under a CPU's bf16 autocast (``--amp bf16``). There torch's
    AdaptiveLogSoftmaxWithLoss fails: the CPU autocast leaves its log_softmax in bf16, which it then
    copies into a float32 tensor. CUDA's autocast computes log_softmax in fp32, so it is left alone."""
    return torch.autocast("cpu", enabled=False)


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
