"""Writing after a context: the model reads a text first (a chapter, say), adapting to it as
``evaluation.adapt`` describes, then continues each prompt after it.

The context is read once; every prompt then starts from that reading, and every sample of a prompt
from the prompt's. While the samples are written the cache takes in each token drawn, so that a name
the continuation brings back is remembered too; the dynamic step does not learn from the model's own
samples (it would only reinforce whatever the model drew).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from lstmgen.errors import LstmgenError
from lstmgen.evaluation.adapt import AdaptConfig, AdaptingReader, model_features, stack_readers
from lstmgen.model.lstm import LSTMLM, State
from lstmgen.text.tokenizers import Tokenizer
from lstmgen.text.vocab import Vocab
from lstmgen.tokens.prepare import encode_text

logger = logging.getLogger("lstmgen")


def context_ids(context: str, tokenizer: Tokenizer, vocab: Vocab) -> list[int]:
    """A context's token ids, paragraphs joined by line breaks, starting at a paragraph."""
    paragraphs = [line.strip() for line in context.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise LstmgenError("the context is empty: give some text to read first")
    ids, _ = encode_text(paragraphs, tokenizer, vocab)
    return [vocab.token_to_id("\n")] + [int(i) for i in ids]


class ContextReading:
    """The model's state and, with ``adapt``, its adapted weights and cache after reading a context."""

    def __init__(self, model: LSTMLM, ids: list[int], adapt: Optional[AdaptConfig], device: torch.device) -> None:
        self.model = model
        self.device = device
        self.reader = AdaptingReader(model, 1, adapt, device) if adapt is not None else None
        self.state: Optional[State] = None
        self.last_id = ids[-1]
        self._read(ids)

    def _read(self, ids: list[int]) -> None:
        """Read ``ids`` (all but the last, which the prompt's reading begins with) in windows of a segment."""
        segment = self.reader.config.segment if self.reader is not None else 256
        for start in range(0, len(ids) - 1, segment):
            inputs = torch.tensor([ids[start : start + segment]], device=self.device)
            targets = torch.tensor([ids[start + 1 : start + segment + 1]], device=self.device)
            inputs = inputs[:, : targets.shape[1]]
            with torch.no_grad():
                features, self.state = self.model.features(inputs, self.state)
            if self.reader is not None:
                self.reader.read(features, targets)

    @torch.no_grad()
    def start(self, prompt_ids: list[int]) -> tuple[State, torch.Tensor, Optional[AdaptingReader]]:
        """Read a prompt after the context: the state after it, the log-probabilities (1, V) of the
        token that follows it, and the reader (1 row) that has read context and prompt."""
        reader = self.reader.expand(1) if self.reader is not None else None
        ids = [self.last_id] + list(prompt_ids)
        inputs = torch.tensor([ids], device=self.device)
        features, state = self.model.features(inputs, self.state)
        if reader is None:
            return state, self.model.log_probs(features[:, -1]), None
        if len(ids) > 1:
            reader.read(features[:, :-1], inputs[:, 1:])
        reader.last_features = features[:, -1].float()
        return state, reader.log_probs(features[:, -1]), reader


class AdaptedSteps:
    """The distribution of every row's next token through its reader, during generation."""

    def __init__(self, model: LSTMLM, readers: list[AdaptingReader], repeats: int) -> None:
        self.model = model
        self.reader = stack_readers(readers, repeats)
        self.features = torch.cat([r.last_features for r in readers]).repeat_interleave(repeats, dim=0)
        logger.debug("generating after a context: the output layer runs in fp32 (the adapted one)")

    @torch.no_grad()
    def __call__(self, next_ids: list[int], state: State) -> torch.Tensor:
        """Remember the tokens drawn after the current features, move to the state after them, and
        return the adapted log-probabilities (B, V) of the next ones."""
        self.reader.remember(self.features, torch.tensor(next_ids))
        self.features = model_features(self.model, state[0][-1].to(self.features.device).float())
        return self.reader.log_probs(self.features).float().cpu()
