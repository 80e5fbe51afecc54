"""Adapting to the text read (evaluation.adapt): strictly online, plain at zero, better on text that
repeats itself, for every output layer; and the same in ``eval --adapt`` and ``generate --context``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lstmgen.config import ModelConfig
from lstmgen.evaluation.adapt import AdaptConfig, adapted_nlls, score_adapted
from lstmgen.evaluation.score import score_ids
from lstmgen.model.lstm import LSTMLM

OUTPUTS = ["full", "tied", "adaptive"]


def model_for(output: str, vocab_size: int = 60, seed: int = 0) -> LSTMLM:
    torch.manual_seed(seed)
    config = ModelConfig(embed_size=16, hidden_size=24, num_layers=1, dropout=0.0, output=output,
                         adaptive_cutoffs="10,30")
    return LSTMLM(config, vocab_size).eval()


def random_ids(n: int, vocab_size: int = 60, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, n).astype(np.int64)


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("mode", ["off", "dynamic", "cache", "both"])
def test_with_zero_learning_rate_and_zero_mixing_the_score_is_the_plain_one(output, mode):
    model, ids = model_for(output), random_ids(700)
    plain = score_ids(model, ids, characters=1000)
    adapted = score_adapted(model, ids, AdaptConfig(mode=mode, lr=0.0, mix=0.0, segment=16), characters=1000)
    assert adapted.tokens == plain.tokens and adapted.characters == plain.characters
    assert adapted.unknown == plain.unknown
    assert adapted.nll == pytest.approx(plain.nll, rel=1e-5)
    assert adapted.unknown_nll == pytest.approx(plain.unknown_nll, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("output", OUTPUTS)
def test_a_score_depends_only_on_the_text_before_it(output):
    """Change the text from position i on: no score of a position before i moves; later ones do."""
    model, ids = model_for(output), random_ids(900)
    config = AdaptConfig(mode="both", lr=0.5, mix=0.3, segment=8, cache_size=50)
    before = adapted_nlls(model, ids, config, batch_size=4)
    for i in (5, 230, 451, 700):
        changed = ids.copy()
        changed[i:] = random_ids(len(ids) - i, seed=i)
        after = adapted_nlls(model, changed, config, batch_size=4)
        np.testing.assert_allclose(after[:i], before[:i], rtol=0, atol=1e-6)
        assert not np.allclose(after[i:], before[i:])


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("mode", ["dynamic", "cache", "both"])
def test_adapting_scores_text_that_repeats_itself_better(output, mode):
    """A model that never saw this text: what it read earlier in a row predicts what recurs."""
    model = model_for(output)
    phrase = random_ids(25, seed=7)
    ids = np.concatenate([np.concatenate([phrase, random_ids(15, seed=s)]) for s in range(40)])
    plain = score_ids(model, ids, characters=len(ids), batch_size=4)
    adapted = score_adapted(model, ids, AdaptConfig(mode=mode, lr=0.3, flatness=3.0, mix=0.3, segment=16),
                             characters=len(ids), batch_size=4)
    assert adapted.bits_per_char < plain.bits_per_char - 0.15


def test_settings_out_of_range_are_refused_in_the_flags_words():
    from lstmgen.errors import LstmgenError

    with pytest.raises(LstmgenError, match="--adapt must be one of off, dynamic, cache, both"):
        AdaptConfig(mode="all")
    with pytest.raises(LstmgenError, match="--cache-mix"):
        AdaptConfig(mix=1.5)
    with pytest.raises(LstmgenError, match="--adapt-lr"):
        AdaptConfig(lr=-1)


def test_eval_adapt_prints_the_adapted_score_and_the_plain_one_on_its_own_labelled_line(tiny_run_dir, capsys):
    from lstmgen.cli.main import main

    assert main(["eval", str(tiny_run_dir), "--adapt", "both", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"bits_per_char", "plain_bits_per_char", "perplexity", "plain_perplexity", "seconds",
            "plain_seconds"} <= result.keys()
    assert result["adapt"]["mode"] == "both" and result["tokens"] == result["plain_tokens"]
    assert result["bits_per_char"] != result["plain_bits_per_char"]
    assert main(["eval", str(tiny_run_dir)]) == 0  # without --adapt: the plain score is the score
    plain_text = capsys.readouterr().out
    assert "plain" not in plain_text
    plain_bits = float(next(line.split()[-1] for line in plain_text.splitlines() if "  bits per char" in line))
    assert plain_bits == pytest.approx(result["plain_bits_per_char"], abs=1e-4)

    assert main(["eval", str(tiny_run_dir), "--adapt", "cache", "--cache-mix", "0"]) == 0
    lines = {line[:23].strip(): line[23:].strip() for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["adapted with"].startswith("cache")
    assert lines["plain bits per char"].endswith("(no adaptation)")
    assert float(lines["bits per char"]) == pytest.approx(float(lines["plain bits per char"].split()[0]), abs=2e-4)


def test_generate_after_a_context_with_only_the_cache_writes_only_what_it_has_read(tiny_run_dir, tmp_path, capsys):
    """With the cache's weight at 1 every token drawn is one the model read in the context (or the
    prompt, or its own continuation): the context reaches generation."""
    from lstmgen.cli.main import main

    context = tmp_path / "chapter.txt"
    context.write_text("郭靖望着桃花岛。\n郭靖望着桃花岛！", encoding="utf-8")
    assert main(["generate", str(tiny_run_dir), "--context", str(context), "--adapt", "cache", "--cache-mix", "1",
                 "--length", "60", "--seed", "2", "--num-samples", "2", "--prompt", "郭", "--quiet",
                 "--output", str(tmp_path / "out.txt")]) == 0
    written = (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert len(written.replace("\n", "")) >= 2 * 60
    assert set(written) <= set("郭靖望着桃花岛。！\n")


def test_a_context_changes_the_continuation_and_each_mode_is_repeatable(tiny_run_dir):
    import lstmgen

    run = lstmgen.load(tiny_run_dir)
    context = "黄蓉笑道桃花岛。" * 20
    plain = run.generate("郭靖", length=80, seed=4)
    texts = {mode: run.generate("郭靖", length=80, seed=4, context=context, adapt=mode)
             for mode in ("off", "dynamic", "cache", "both")}
    assert texts["off"] != plain  # the context alone moves the state the prompt starts from
    assert texts["both"] != texts["off"]
    assert run.generate("郭靖", length=80, seed=4, context=context, adapt="both") == texts["both"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_generation_after_a_context_works_at_either_precision_of_the_lstm_step(tiny_run_dir, precision):
    import lstmgen

    run = lstmgen.load(tiny_run_dir)
    text = run.generate("郭靖", length=40, seed=1, context="黄蓉笑道桃花岛。" * 5, precision=precision)
    assert text.startswith("郭靖") and len(text) == len("郭靖") + 40
