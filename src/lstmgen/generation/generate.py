"""Writing text with a trained model: prompts, sampling row by row, stopping at a sentence or paragraph,
acrostic poems, streaming.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from lstmgen.config import PRECISIONS
from lstmgen.errors import LstmgenError
from lstmgen.evaluation.adapt import AdaptConfig
from lstmgen.generation.context import AdaptedSteps, ContextReading, context_ids
from lstmgen.generation.cpu_step import OneTokenSteps, StepWeights, Threads, resolve_precision
from lstmgen.generation.sampling import _NgramIndex, row_generators, sample_next
from lstmgen.model.lstm import LSTMLM
from lstmgen.model.run_dir import TrainedRun
from lstmgen.text.script import convert_script, run_script
from lstmgen.text.tokenizers import Tokenizer
from lstmgen.text.vocab import Vocab

END_MARKS = set("。！？!?….")  # a token ending in one of these ends a sentence


CLOSING_MARKS = set("」』”’）)》\"'")  # ...and these may follow it and still belong to it


STOP_AT = ("none", "sentence", "paragraph")


SENTENCE_ENDS = END_MARKS | CLOSING_MARKS  # every character that may end a sentence-stopped text


@dataclass
class GenerateConfig:
    length: int = 300  # characters to write after the prompt (with acrostic: shared among the lines)
    temperature: float = 0.8  # <1 safer, >1 wilder; 0 always takes the likeliest token (greedy)
    top_k: int = 40  # sample among the k likeliest tokens (0: all)
    top_p: float = 0.95  # ...and among the fewest whose probabilities sum to p (1: all)
    repetition_penalty: float = 1.0  # >1 makes tokens already written less likely (1: off)
    no_repeat_ngram: int = 0  # never repeat an n-gram of this many tokens (0: off)
    stop_at: str = "none"  # none | sentence | paragraph: after --length, write on to the next such end
    num_samples: int = 1  # samples per prompt, generated as one batch
    seed: Optional[int] = None  # same seed, same text
    acrostic: Optional[str] = None  # poems: line i begins with character i of this text
    precision: str = "auto"  # fp32 | int8 weights on a CPU (auto: int8 where torch's kernel is fast)

    def __post_init__(self) -> None:
        if self.length <= 0:
            raise LstmgenError("--length must be a positive number of characters")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise LstmgenError("--temperature must be 0 (greedy) or positive")
        if self.top_k < 0:
            raise LstmgenError("--top-k must be 0 (off) or positive")
        if not 0 < self.top_p <= 1:  # also false for NaN
            raise LstmgenError("--top-p must be in (0, 1]")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty >= 1):
            raise LstmgenError("--repetition-penalty must be at least 1 (1: off)")
        if self.no_repeat_ngram < 0:
            raise LstmgenError("--no-repeat-ngram must be 0 (off) or positive")
        if self.stop_at not in STOP_AT:
            raise LstmgenError(f"--stop-at must be one of {', '.join(STOP_AT)}")
        if self.num_samples < 1:
            raise LstmgenError("--num-samples must be at least 1")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise LstmgenError("--seed must be between 0 and 2**63 - 1")
        if self.precision not in PRECISIONS:
            raise LstmgenError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.acrostic is not None:
            self.acrostic = "".join(self.acrostic.split())  # a line cannot begin with a space or a line break
            if not self.acrostic:
                raise LstmgenError("--acrostic needs at least one character")


class _Writer:
    """Turns tokens into text for one row."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.joiner = tokenizer.joiner
        self.pieces: list[str] = []
        self.at_line_start = True

    def piece_for(self, token: str) -> str:
        if token == "\n" or not self.joiner or self.at_line_start:
            return token
        return self.joiner + token

    def add(self, token: str) -> str:
        piece = self.piece_for(token)
        self.pieces.append(piece)
        self.at_line_start = token == "\n"
        return piece

    def cut(self, excess: int) -> str:
        """Drop the last ``excess`` characters of the last piece; returns what is left of it."""
        piece = self.pieces[-1][: len(self.pieces[-1]) - excess]
        self.pieces[-1] = piece
        return piece

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _is_sentence_tail(token: str) -> bool:
    """True for tokens made only of sentence-end and closing marks (。 ” ！？ ……)."""
    return bool(token) and all(ch in SENTENCE_ENDS for ch in token)


class _Row:
    """One text being written: its history, its bans and where it stands against the stopping rules.

    A text is written in segments: the whole text, or with an acrostic each line. A segment has a
    budget of characters; past it, ``stop_at`` decides where the segment ends, and a hard limit
    (half the budget again plus 100) ends it even when no such end comes.
    """

    def __init__(self, prompt_ids: list[int], writer: _Writer, *, budget: int, no_repeat_ngram: int) -> None:
        self.history = list(prompt_ids)
        self.writer = writer
        self.ngrams = _NgramIndex(no_repeat_ngram, self.history)
        self.budget = budget
        self.hard_limit = budget + budget // 2 + 100
        self.segment_chars = 0  # characters written in the current segment
        self.closing = False  # past the budget, after a sentence end: only closing marks may follow
        self.heads_written = 0  # acrostic lines begun so far
        self.line_tokens = 0  # tokens in the current line
        self.newline_next = False  # the next token must be a line break (after a title, or a line at its budget)
        self.done = False


def encode_prompt(prompt: str, tokenizer: Tokenizer, vocab: Vocab) -> list[int]:
    """Prompt -> ids, preceded by a paragraph break so the model starts as at a paragraph."""
    if prompt and not prompt.strip():
        raise LstmgenError("the prompt is only whitespace: give some text, or leave --prompt out")
    tokens = tokenizer.tokenize(prompt.strip()) if prompt else []
    ids = [vocab.token_to_id("\n")] + [vocab.token_to_id(t) for t in tokens]
    return ids


def prompts_for_run(prompts: Sequence[str], run: TrainedRun) -> list[str]:
    """The prompts in the script the run's text was in (``text.script.run_script``): a run trained on
    traditional characters reads 头发 as 頭髮, not as two characters it may never have seen. Prompts
    to a run whose script is not known (older runs, mixed text) are left as they are."""
    script = run_script(run.config.data.script, run.info)
    return [convert_script(prompt, script) for prompt in prompts]


def unknown_in_prompt(prompt: str, tokenizer: Tokenizer, vocab: Vocab) -> list[str]:
    """The prompt's tokens the vocabulary lacks, each once, in order: the model reads them as <unk>."""
    tokens = tokenizer.tokenize(prompt.strip()) if prompt.strip() else []
    return list(dict.fromkeys(t for t in tokens if vocab.token_to_id(t) == vocab.unk_id))


def acrostic_heads(acrostic: Optional[str], vocab: Vocab) -> Optional[torch.Tensor]:
    """(H, V) bool: for each acrostic character, the tokens that begin with it (None without acrostic).

    With characters as tokens that is the character itself; with words, any word that begins with
    it may open the line (江 -> 江, 江湖, 江南 ...). An error names the characters no token begins with.
    """
    if not acrostic:
        return None
    by_first: dict[str, list[int]] = {}
    for idx, token in enumerate(vocab.tokens):
        if idx != vocab.unk_id and token and token != "\n":
            by_first.setdefault(token[0], []).append(idx)
    missing = "".join(c for c in acrostic if c not in by_first)
    if missing:
        raise LstmgenError(f"--acrostic: the model never saw a token beginning with {missing!r} in training")
    heads = torch.zeros(len(acrostic), len(vocab), dtype=torch.bool)
    for line, char in enumerate(acrostic):
        heads[line, by_first[char]] = True
    return heads


def check_request(prompts: Sequence[str], config: GenerateConfig, tokenizer: Tokenizer, vocab: Vocab) -> None:
    """Raise LstmgenError for what ``generate`` would refuse, before any text is written (for servers)."""
    if not prompts:
        raise LstmgenError("give at least one prompt (\"\" starts at a paragraph)")
    for prompt in prompts:
        encode_prompt(prompt, tokenizer, vocab)
    acrostic_heads(config.acrostic, vocab)


def _segment_end(row: _Row, token: str, *, stop_at: str, acrostic: bool) -> Optional[str]:
    """Whether ``token`` ends the row's current segment: None (it does not), "after" (write it, then
    end) or "instead" (end before it: the token is left out)."""
    if token == "\n" and (acrostic or (stop_at != "none" and row.segment_chars >= row.budget)):
        return "instead"
    if row.closing:  # a sentence ended past the budget: closing quotes and more marks may follow
        return None if _is_sentence_tail(token) and row.segment_chars < row.hard_limit else "instead"
    chars = row.segment_chars + len(row.writer.piece_for(token))
    if (stop_at == "none" and chars >= row.budget) or chars >= row.hard_limit:
        return "after"
    return None


def _write(row: _Row, token_id: int, token: str, seen: Optional[torch.Tensor]) -> str:
    """Append one token to the row's text and history (and to ``seen``, the row's written tokens for the
    repetition penalty, when it is on); returns the text written."""
    piece = row.writer.add(token)
    row.segment_chars += len(piece)
    row.line_tokens = 0 if token == "\n" else row.line_tokens + 1
    row.history.append(token_id)
    row.ngrams.add(row.history)
    if seen is not None:
        seen[token_id] = True
    return piece


# fp32 on a CPU: below this many multiply-adds per step (about parameters x rows), a step is a few small
# matrix products: splitting each over several threads costs more in handing work out than it saves,
# and on a busy machine the waiting threads make it many times slower (BENCHMARKS.md, Generation). int8
# runs on one thread whatever
# the size, but for torch's int8 kernel, which takes the threads there are while timing says they help
# (cpu_step.KernelThreads). Only that kernel: MKL's fp32 products and the elementwise functions may
# round otherwise with another number of threads, so a text would depend on the machine's load.
SINGLE_THREAD_BELOW = 20_000_000


@torch.no_grad()
def generate(
    model: LSTMLM,
    tokenizer: Tokenizer,
    vocab: Vocab,
    prompts: Sequence[str] = ("",),
    config: Optional[GenerateConfig] = None,
    *,
    on_text: Optional[Callable[[int, str], None]] = None,
    weights: Optional[StepWeights] = None,
    context: Optional[str] = None,
    adapt: Optional[AdaptConfig] = None,
) -> list[str]:
    """Continue each prompt ``config.num_samples`` times, all rows as one batch.

    Args:
        prompts: texts to continue; "" starts at a paragraph. With an acrostic, a prompt is the
            title line and the acrostic lines follow it.
        on_text: called with (row, new text) as it is written: streaming. It may raise to stop
            generating (a server does when its client goes away); the exception propagates.
        weights: on a CPU, the model's matrices prepared once (``StepWeights``) for many calls, at the
            precision ``config.precision`` comes to; built for this call when left out.
        context: text the model reads before each prompt (``generation.context``); the prompts continue it.
        adapt: how the model adapts to the context as it reads it (None: it only carries its state on).
            The adapted output layer then runs in fp32, whatever ``precision`` gives the LSTM.

    Returns:
        one text per row (prompt i's samples are rows i*num_samples ... ), each the prompt
        followed by ``length`` characters (more with ``stop_at``; with an acrostic, one line
        per acrostic character, each of about ``length / len(acrostic)`` characters at most).
    """
    config = config or GenerateConfig()
    check_request(prompts, config, tokenizer, vocab)
    device = next(model.parameters()).device
    int8 = resolve_precision(config.precision, device) == "int8"
    if weights is not None and weights.int8 != int8:
        raise ValueError(f"StepWeights with int8={weights.int8} for --precision {config.precision}")
    work = sum(p.numel() for p in model.parameters()) * len(prompts) * config.num_samples
    cpu = device.type == "cpu"
    threads = torch.get_num_threads()
    with Threads(1 if cpu and work < SINGLE_THREAD_BELOW else 0):
        if cpu and weights is None:
            weights = StepWeights(model, int8=int8)  # rounding row by row: the same numbers with any threads
        if cpu and int8:
            torch.set_num_threads(1)  # and KernelThreads gives the kernel more; Threads restores the count
        # on a GPU, nn.LSTM (cuDNN) and the model's own output layer are the fast ones
        steps = OneTokenSteps(model, weights=weights, kernel_threads=threads) if cpu else None
        reading = None
        if context is not None:
            model.eval()
            reading = ContextReading(model, context_ids(context, tokenizer, vocab), adapt, device)
        return _generate(model, tokenizer, vocab, prompts, config, device, steps, on_text, reading)


def _generate(model: LSTMLM, tokenizer: Tokenizer, vocab: Vocab, prompts: Sequence[str], config: GenerateConfig,
              device: torch.device, steps: Optional[OneTokenSteps],
              on_text: Optional[Callable[[int, str], None]], reading: Optional[ContextReading] = None) -> list[str]:
    model.eval()
    # a fresh seed from the OS, not torch.seed(): that would reseed the global RNG as a side effect
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**63)
    generators = row_generators(seed, len(prompts), config.num_samples)
    heads = acrostic_heads(config.acrostic, vocab)  # (H, V) or None
    lines = len(heads) if heads is not None else 0
    budget = max(config.length // lines, 1) if lines else config.length

    rows: list[_Row] = []
    states = []
    last_logp = []
    readers = []
    for prompt in prompts:  # prompts differ in length: run each once, then batch the samples
        ids = encode_prompt(prompt, tokenizer, vocab)
        if reading is not None:
            (h, c), logp, reader = reading.start(ids)
            readers += [reader] if reader is not None else []
        else:
            features, (h, c) = model.features(torch.tensor([ids], device=device))
            logp = model.log_probs(features[:, -1])  # (1, V)
        for _ in range(config.num_samples):
            writer = _Writer(tokenizer)
            if prompt:
                writer.pieces.append(prompt.strip())
                writer.at_line_start = False
            row = _Row(ids[1:], writer, budget=budget, no_repeat_ngram=config.no_repeat_ngram)
            row.newline_next = bool(lines and prompt)  # the prompt is the title line
            rows.append(row)
            states.append((h, c))
            last_logp.append(logp)
    h = torch.cat([s[0] for s in states], dim=1)
    c = torch.cat([s[1] for s in states], dim=1)
    logp = torch.cat(last_logp, dim=0).float().cpu()  # (B, V)
    seen = torch.zeros(logp.shape, dtype=torch.bool)  # (B, V): tokens each row has written or was prompted with
    for i, row in enumerate(rows):
        seen[i, row.history] = True

    adapted = AdaptedSteps(model, readers, config.num_samples) if readers else None
    _sample_loop(model, vocab, config, rows, h, c, logp, seen, heads, generators, device, steps, on_text, adapted)
    return [row.writer.text for row in rows]


def _sample_loop(model: LSTMLM, vocab: Vocab, config: GenerateConfig, rows: list["_Row"], h: torch.Tensor,
                 c: torch.Tensor, logp: torch.Tensor, seen: torch.Tensor, heads: Optional[torch.Tensor],
                 generators: list[torch.Generator], device: torch.device, steps: Optional[OneTokenSteps],
                 on_text: Optional[Callable[[int, str], None]], adapted: Optional[AdaptedSteps] = None) -> None:
    """Sample a token for every row, write it, feed it back; until every row is done."""
    unk = vocab.unk_id
    newline = vocab.token_to_id("\n")
    lines = len(heads) if heads is not None else 0
    penalty = math.log(config.repetition_penalty)  # dividing a probability by p subtracts log p
    while True:
        logp.select(1, unk).fill_(-math.inf)
        if penalty:
            logp -= penalty * seen
        for i, row in enumerate(rows):
            if lines and not row.newline_next and row.writer.at_line_start and row.heads_written < lines:
                logp[i].masked_fill_(~heads[row.heads_written], -math.inf)  # the line begins as the acrostic says
            elif lines and row.line_tokens < 2:
                logp[i, newline] = -math.inf  # an acrostic line holds more than its first token
            banned = row.ngrams.banned(row.history) if config.no_repeat_ngram else ()
            if banned:
                kept = logp[i].clone()
                kept[list(banned)] = -math.inf
                if not torch.isinf(kept).all():  # when every token is banned, a repeat beats no text
                    logp[i] = kept
        next_ids = sample_next(logp, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                               generator=generators).tolist()
        for i, row in enumerate(rows):
            if row.done:
                continue
            if row.newline_next:
                next_ids[i] = newline
                row.newline_next = False
            elif lines and row.writer.at_line_start and row.heads_written < lines:
                row.heads_written += 1  # drawn among the tokens that begin with the acrostic character
            token = vocab.id_to_token(next_ids[i])
            end = _segment_end(row, token, stop_at=config.stop_at, acrostic=bool(lines))
            if end != "instead":
                piece = _write(row, next_ids[i], token, seen[i] if penalty else None)
                if end is None and config.stop_at == "sentence" and row.segment_chars >= row.budget \
                        and token[-1:] in END_MARKS:
                    row.closing = True
                if end == "after" and config.stop_at == "none" and not lines and row.segment_chars > row.budget:
                    piece = row.writer.cut(row.segment_chars - row.budget)  # exactly --length (lines keep words whole)
                if on_text is not None and piece:
                    on_text(i, piece)
            if end is None:
                continue
            row.segment_chars, row.closing = 0, False
            if not lines or row.heads_written >= lines:
                row.done = True
            elif end == "after":
                row.newline_next = True
            else:  # the line break takes the place of the token left out, and the model reads it
                next_ids[i] = newline
                piece = _write(row, newline, "\n", seen[i] if penalty else None)
                row.segment_chars = 0
                if on_text is not None:
                    on_text(i, piece)
        if all(row.done for row in rows):
            break
        if steps is not None:
            logp, (h, c) = steps(next_ids, (h, c))
        else:
            features, (h, c) = model.features(torch.tensor(next_ids, device=device).unsqueeze(1), (h, c))
            logp = model.log_probs(features[:, -1]).float().cpu()
        if adapted is not None:  # the distribution after a context: the adapted one
            logp = adapted(next_ids, (h, c))
