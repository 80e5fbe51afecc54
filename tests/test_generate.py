import math

import torch

from lstmgen.generate import _banned_by_ngrams, filter_logits, sample_next


def test_top_k_keeps_the_k_likeliest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    kept = filter_logits(logits, top_k=2)
    assert torch.isinf(kept).tolist() == [[True, False, True, False]]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = filter_logits(probs.log(), top_p=0.8)
    assert torch.isinf(kept).tolist() == [[False, False, True, True]]
    assert not torch.isinf(filter_logits(probs.log(), top_p=0.01))[0, 0]  # the top token always stays


def test_greedy_at_temperature_zero_and_seeded_sampling_repeats():
    logp = torch.log_softmax(torch.randn(3, 50), -1)
    assert sample_next(logp, temperature=0, top_k=0, top_p=1, generator=torch.Generator()).tolist() == \
        logp.argmax(-1).tolist()
    draws = [sample_next(logp, temperature=1.0, top_k=0, top_p=1, generator=torch.Generator().manual_seed(7))
             for _ in range(2)]
    assert torch.equal(*draws)


def test_no_repeat_ngram_bans_completions_of_seen_ngrams():
    assert _banned_by_ngrams([1, 2, 3, 1, 2], 3) == {3}
    assert _banned_by_ngrams([1, 2, 3], 1) == {1, 2, 3}
    assert _banned_by_ngrams([1], 3) == set()
