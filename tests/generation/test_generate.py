
import math

import pytest
import torch

from lstmgen.errors import LstmgenError
from lstmgen.generation.sampling import FEW_CANDIDATES, _NgramIndex, candidates, draw, kept_weights, sample_next


def test_top_k_keeps_the_k_likeliest():
    probs, ids = candidates(torch.tensor([[1.0, 5.0, 3.0, 4.0]]), top_k=2)
    assert ids.tolist() == [[1, 3]]
    assert torch.allclose(probs, torch.softmax(torch.tensor([[5.0, 4.0]]), -1))


def test_top_p_keeps_the_smallest_nucleus():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    probs, ids = candidates(p.log(), top_p=0.8)
    assert ids.tolist() == [[0, 1, 2, 3]] and (probs > 0).tolist() == [[True, True, False, False]]
    probs, _ = candidates(p.log(), top_p=0.01)
    assert (probs > 0).tolist() == [[True, False, False, False]]  # the top token always stays


def test_temperature_scales_the_candidates_scores():
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, -1.0]]), -1)
    probs, ids = candidates(logp, temperature=0.5, top_k=3)
    assert ids.tolist() == [[0, 1, 2]]
    assert torch.allclose(probs, torch.softmax(torch.tensor([[4.0, 2.0, 1.0]]), -1))


def test_a_draw_is_multinomials_draw_from_the_same_generator():
    # so texts written before draw() replaced torch.multinomial come out the same for the same seed
    torch.manual_seed(0)
    probs = torch.rand(4, 40)
    probs[:, 30:] = 0
    for seed in range(50):
        expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(draw(probs, torch.Generator().manual_seed(seed)), expected)
        per_row = [torch.Generator().manual_seed(seed + j) for j in range(4)]
        expected = torch.stack([torch.multinomial(p, 1, generator=torch.Generator().manual_seed(seed + j))
                                for j, p in enumerate(probs)])
        assert torch.equal(draw(probs, per_row), expected)


def test_sampling_draws_only_candidates_in_proportion():
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]]).repeat(4000, 1), -1)
    draws = sample_next(logp, temperature=1.0, top_k=3, top_p=1.0, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=5).float() / len(draws)
    assert counts[3] == 0 and counts[4] == 0
    assert torch.allclose(counts[:3], torch.softmax(torch.tensor([2.0, 1.0, 0.5]), -1), atol=0.03)


def test_few_candidates_are_weighed_in_python_as_candidates_weighs_them():
    torch.manual_seed(0)
    for temperature, top_p in ((1.0, 1.0), (0.8, 0.95), (0.3, 0.5), (2.0, 0.9), (1e-40, 0.95)):
        logp = torch.log_softmax(torch.randn(20, 100) * 3, -1)
        logp[:, 3] = -math.inf  # as <unk> is
        logp[10:, 30:] = -math.inf  # as a ban or an acrostic leaves fewer tokens than top-k
        probs, _ = candidates(logp, temperature=temperature, top_k=40, top_p=top_p)
        best, _ = torch.topk(logp, 40)
        for row, scores in zip(probs, best.tolist()):
            weights = torch.tensor(kept_weights(scores, temperature=temperature, top_p=top_p), dtype=torch.float64)
            kept = int((row > 0).sum())
            assert len(weights) == kept  # the same nucleus
            assert torch.allclose(weights / weights.sum(), row[:kept].double() / row[:kept].sum(), atol=1e-6)
    for broken in ([math.nan] * 3, [-math.inf] * 3):
        with pytest.raises(LstmgenError, match="no token a probability"):
            kept_weights(broken, temperature=1.0, top_p=1.0)
    for top_k in (2, 0):  # the Python draw and the tensor one
        with pytest.raises(LstmgenError, match="no token a probability"):
            sample_next(torch.full((1, 5), math.nan), temperature=1.0, top_k=top_k, top_p=1.0,
                        generator=torch.Generator())


def test_python_and_tensor_draws_follow_the_same_distribution():
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0] + [-9.0] * 300]).repeat(6000, 1), -1)
    expected = torch.softmax(torch.tensor([2.0, 1.0, 0.5, -1.0]) / 0.7, -1)
    for top_k in (4, FEW_CANDIDATES + 1):  # drawn in Python floats, then as tensors
        top_p = 1.0 if top_k == 4 else 0.999  # the tail of 300 at -9 is cut by top-p instead
        draws = sample_next(logp, temperature=0.7, top_k=top_k, top_p=top_p,
                            generator=torch.Generator().manual_seed(1))
        counts = torch.bincount(draws, minlength=305).float() / len(draws)
        assert torch.allclose(counts[:4], expected, atol=0.02), top_k


def test_greedy_at_temperature_zero_and_seeded_sampling_repeats():
    logp = torch.log_softmax(torch.randn(3, 50), -1)
    assert sample_next(logp, temperature=0, top_k=0, top_p=1, generator=torch.Generator()).tolist() == \
        logp.argmax(-1).tolist()
    draws = [sample_next(logp, temperature=1.0, top_k=0, top_p=1, generator=torch.Generator().manual_seed(7))
             for _ in range(2)]
    assert torch.equal(*draws)
    for tiny in (1e-6, 1e-40):  # near greedy, not an overflow to NaN
        assert sample_next(logp, temperature=tiny, top_k=0, top_p=1, generator=torch.Generator()).tolist() == \
            logp.argmax(-1).tolist()


def test_no_repeat_ngram_bans_completions_of_seen_ngrams():
    def banned(history, n):
        return set(_NgramIndex(n, history).banned(history))

    assert banned([1, 2, 3, 1, 2], 3) == {3}
    assert banned([1, 2, 3], 1) == {1, 2, 3}
    assert banned([1], 3) == set()
