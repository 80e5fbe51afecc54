
import torch

from lstmgen.generate import _NgramIndex, candidates, draw, sample_next


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
