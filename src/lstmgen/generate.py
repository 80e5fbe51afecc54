"""Writing with a trained model: prompts, sampling controls, stopping rules, streaming."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from lstmgen.errors import LstmgenError
from lstmgen.model import LSTMLM
from lstmgen.tokenizers import Tokenizer
from lstmgen.vocab import Vocab

SENTENCE_ENDS = set("。！？!?…；;.」』”")
STOP_AT = ("none", "sentence", "paragraph")


@dataclass
class GenerateConfig:
    length: int = 300  # characters to write after the prompt
    temperature: float = 0.8  # <1 safer, >1 wilder; 0 always takes the likeliest token (greedy)
    top_k: int = 40  # sample among the k likeliest tokens (0: all)
    top_p: float = 0.95  # ...and among the fewest whose probabilities sum to p (1: all)
    repetition_penalty: float = 1.0  # >1 makes tokens already written less likely (1: off)
    no_repeat_ngram: int = 0  # never repeat an n-gram of this many tokens (0: off)
    stop_at: str = "none"  # none | sentence | paragraph: after --length, write on to the next such end
    num_samples: int = 1  # samples per prompt, generated as one batch
    seed: Optional[int] = None  # same seed, same text
    acrostic: Optional[str] = None  # poems: line i begins with character i of this text

    def __post_init__(self) -> None:
        if self.length <= 0 and not self.acrostic:
            raise LstmgenError("--length must be a positive number of characters")
        if self.temperature < 0:
            raise LstmgenError("--temperature must be 0 (greedy) or positive")
        if self.top_k < 0:
            raise LstmgenError("--top-k must be 0 (off) or positive")
        if not 0 < self.top_p <= 1:
            raise LstmgenError("--top-p must be in (0, 1]")
        if self.repetition_penalty < 1:
            raise LstmgenError("--repetition-penalty must be at least 1 (1: off)")
        if self.no_repeat_ngram < 0:
            raise LstmgenError("--no-repeat-ngram must be 0 (off) or positive")
        if self.stop_at not in STOP_AT:
            raise LstmgenError(f"--stop-at must be one of {', '.join(STOP_AT)}")
        if self.num_samples < 1:
            raise LstmgenError("--num-samples must be at least 1")


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus. logits: (B, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already reach top_p; the first always stays
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def sample_next(log_probs: torch.Tensor, *, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator) -> torch.Tensor:
    """One token id per row from (B, V) log-probabilities; greedy when temperature is 0."""
    if temperature == 0:
        return log_probs.argmax(dim=-1)
    logits = filter_logits(log_probs / temperature, top_k=top_k, top_p=top_p)
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _banned_by_ngrams(history: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already present in ``history``."""
    if n <= 0 or len(history) < n:
        return set()
    prefix = tuple(history[len(history) - n + 1:]) if n > 1 else ()
    return {history[i + n - 1] for i in range(len(history) - n + 1) if tuple(history[i:i + n - 1]) == prefix}


class _Writer:
    """Turns tokens into text for one row, counting characters written."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.joiner = tokenizer.joiner
        self.pieces: list[str] = []
        self.generated = 0  # characters written after the prompt
        self.at_line_start = True

    def piece_for(self, token: str) -> str:
        if token == "\n" or not self.joiner or self.at_line_start:
            return token
        return self.joiner + token

    def add(self, token: str) -> str:
        piece = self.piece_for(token)
        self.pieces.append(piece)
        self.generated += len(piece)
        self.at_line_start = token == "\n"
        return piece

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def encode_prompt(prompt: str, tokenizer: Tokenizer, vocab: Vocab) -> list[int]:
    """Prompt -> ids, preceded by a paragraph break so the model starts as at a paragraph."""
    if prompt and not prompt.strip():
        raise LstmgenError("the prompt is only whitespace: give some text, or leave --prompt out")
    tokens = tokenizer.tokenize(prompt.strip()) if prompt else []
    ids = [vocab.token_to_id("\n")] + [vocab.token_to_id(t) for t in tokens]
    return ids


@torch.no_grad()
def generate(
    model: LSTMLM,
    tokenizer: Tokenizer,
    vocab: Vocab,
    prompts: Sequence[str] = ("",),
    config: Optional[GenerateConfig] = None,
    *,
    on_text: Optional[Callable[[int, str], None]] = None,
) -> list[str]:
    """Continue each prompt ``config.num_samples`` times, all rows as one batch.

    Args:
        prompts: texts to continue; "" starts at a paragraph.
        on_text: called with (row, new text) as it is written: streaming.

    Returns:
        one text per row (prompt i's samples are rows i*num_samples ... ), each the prompt
        followed by ``length`` characters (more with ``stop_at``).
    """
    config = config or GenerateConfig()
    device = next(model.parameters()).device
    model.eval()
    generator = torch.Generator()
    generator.manual_seed(config.seed if config.seed is not None else torch.seed())
    unk = vocab.unk_id
    newline = vocab.token_to_id("\n")
    acrostic = list(config.acrostic or "")
    acrostic_ids = [vocab.token_to_id(c) for c in acrostic]
    if any(i == unk for i in acrostic_ids):
        missing = "".join(c for c, i in zip(acrostic, acrostic_ids) if i == unk)
        raise LstmgenError(f"--acrostic: the model never saw {missing!r} in training")

    rows = [(p, s) for p in prompts for s in range(config.num_samples)]
    writers = [_Writer(tokenizer) for _ in rows]
    histories: list[list[int]] = []
    states = []
    last_logp = []
    for prompt in prompts:  # prompts differ in length: run each once, then batch the samples
        ids = encode_prompt(prompt, tokenizer, vocab)
        features, (h, c) = model.features(torch.tensor([ids], device=device))
        logp = model.log_probs(features[:, -1])  # (1, V)
        for _ in range(config.num_samples):
            states.append((h, c))
            last_logp.append(logp)
            histories.append(list(ids[1:]))
    h = torch.cat([s[0] for s in states], dim=1)
    c = torch.cat([s[1] for s in states], dim=1)
    logp = torch.cat(last_logp, dim=0).float().cpu()  # (B, V)
    for row, (prompt, _) in enumerate(rows):
        if prompt:
            writers[row].pieces.append(prompt.strip())
            writers[row].at_line_start = False

    lines_started = [0] * len(rows)
    done = [False] * len(rows)
    limit = config.length if not acrostic else 10**9
    hard_limit = int(limit * 1.5) + 200 if config.stop_at != "none" else limit
    while not all(done):
        logp[:, unk] = -math.inf
        for row in range(len(rows)):
            history = histories[row]
            if config.repetition_penalty > 1 and history:
                logp[row, list(set(history))] -= math.log(config.repetition_penalty)
            if config.no_repeat_ngram:
                banned = _banned_by_ngrams(history, config.no_repeat_ngram)
                if banned:
                    logp[row, list(banned)] = -math.inf
        next_ids = sample_next(logp, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                               generator=generator)
        for row in range(len(rows)):
            if done[row]:
                continue
            writer = writers[row]
            if acrostic and writer.at_line_start and not torch.isinf(logp[row]).all():
                if lines_started[row] < len(acrostic):
                    next_ids[row] = acrostic_ids[lines_started[row]]
                    lines_started[row] += 1
            token = vocab.id_to_token(int(next_ids[row]))
            piece = writer.add(token)
            histories[row].append(int(next_ids[row]))
            if acrostic:
                done[row] = token == "\n" and lines_started[row] >= len(acrostic)
                if done[row]:
                    writer.pieces.pop()  # no trailing newline after the last line
                    piece = ""
            else:
                generated = writer.generated
                if generated >= limit:
                    if config.stop_at == "none":
                        excess = generated - limit
                        if excess:
                            piece = piece[: len(piece) - excess]
                            writer.pieces[-1] = piece
                        done[row] = True
                    elif (config.stop_at == "sentence" and (token[-1:] in SENTENCE_ENDS or token == "\n")) or \
                            (config.stop_at == "paragraph" and token == "\n") or generated >= hard_limit:
                        if token == "\n":
                            writer.pieces.pop()
                            piece = ""
                        done[row] = True
            if on_text is not None and piece:
                on_text(row, piece)
        if all(done):
            break
        features, (h, c) = model.features(next_ids.to(device).unsqueeze(1), (h, c))
        logp = model.log_probs(features[:, -1]).float().cpu()
    return [w.text for w in writers]
