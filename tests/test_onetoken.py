import math

import pytest
import torch

from lstmgen.config import ModelConfig
from lstmgen.errors import LstmgenError
from lstmgen.model import LSTMLM
from lstmgen.onetoken import OneTokenSteps, StepWeights, _Linear, int8_is_fast, resolve_precision

CONFIGS = {
    # hidden 256: both clusters' projections (64 and 16 wide) go int8
    "adaptive, two layers": ModelConfig(embed_size=32, hidden_size=256, num_layers=2, dropout=0.3, output="adaptive",
                                        adaptive_cutoffs="40,120"),
    "tied, projected": ModelConfig(embed_size=16, hidden_size=32, output="tied"),
    "full": ModelConfig(embed_size=16, hidden_size=40, output="full"),  # 40: int8 pads it to 48
}


needs_int8 = pytest.mark.skipif(not hasattr(torch, "_weight_int8pack_mm"), reason="this PyTorch has no int8 kernel")


def module_step(model: LSTMLM, ids: torch.Tensor, state) -> tuple[torch.Tensor, tuple]:
    features, state = model.features(ids[:, None], state)
    return model.log_probs(features[:, -1]), state


@pytest.mark.parametrize("name", CONFIGS)
def test_fp32_steps_follow_the_model_token_by_token_and_cache_each_token_once(name: str):
    torch.manual_seed(0)
    model = LSTMLM(CONFIGS[name], 300).eval()
    tokens = torch.randint(0, 40, (3, 25))  # 3 rows, repeated tokens among 40
    steps = OneTokenSteps(model)
    with torch.no_grad():
        state = fast_state = model.features(tokens[:, :1])[1]
        for t in range(1, tokens.shape[1]):
            logp, state = module_step(model, tokens[:, t], state)
            fast, fast_state = steps(tokens[:, t], fast_state)
            assert fast.shape == logp.shape == (3, 300)
            assert torch.allclose(fast, logp, atol=1e-5)
            assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fast_state, state))
    assert steps.used == len(tokens[:, 1:].unique())  # one table row per distinct token fed


@needs_int8
def test_int8_weights_sit_on_their_rows_grid_within_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(300, 64) * torch.logspace(-3, 2, 300)[:, None]  # rows of very different sizes
    layer = _Linear(weight, int8=True)
    assert layer.int8 and layer.weight.dtype == torch.int8 and int(layer.weight.abs().max()) <= 127
    scale = layer.scale.float()[:, None]
    assert float(((layer.weight.float() * scale - weight).abs() / scale).max()) <= 0.5
    assert (layer.weight.abs().amax(1) == 127).float().mean() > 0.5  # the scales waste no range


@needs_int8
def test_int8_widths_off_the_kernels_multiple_are_padded_with_zeros():
    torch.manual_seed(0)
    weight, x = torch.randn(10, 24), torch.randn(3, 24)
    layer = _Linear(weight, int8=True)  # the kernel reads 16 columns at a time: 24 becomes 32
    assert layer.weight.shape == (10, 32) and not layer.weight[:, 24:].any()
    rounded = layer.weight[:, :24].float() * layer.scale.float()[:, None]
    assert torch.allclose(layer(x).float(), x.bfloat16().float() @ rounded.t(), rtol=0.02, atol=0.05)


@needs_int8
def test_int8_inputs_off_the_kernels_boundary_are_copied_to_it():
    torch.manual_seed(0)
    layer = _Linear(torch.randn(40, 32), int8=True)
    wide = torch.randn(3, 80).bfloat16()
    for x in (wide[:1, 1:33], wide[:1, 16:48], wide[:, 16:48]):  # unaligned, aligned, rows apart
        assert torch.equal(layer(x), layer(x.contiguous().clone()))


@needs_int8
@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("name", CONFIGS)
def test_int8_steps_stay_close_to_fp32(name: str, rows: int):
    torch.manual_seed(1)
    model = LSTMLM(CONFIGS[name], 300).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(4)  # peaked distributions (entropy 3.8-5.4 of 5.7 nats), where rounding shows
    tokens = torch.randint(0, 300, (rows, 40))
    exact, rounded = OneTokenSteps(model), OneTokenSteps(model, int8=True)
    assert all(layer.int8 for layer in rounded.weights.recurrent)
    h = torch.zeros(model.lstm.num_layers, rows, model.lstm.hidden_size)
    state = quantised_state = (h, h)
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            logp, state = exact(tokens[:, t], state)
            quantised, quantised_state = rounded(tokens[:, t], quantised_state)
            assert torch.allclose(quantised.exp().sum(1), torch.ones(rows), atol=1e-2)  # still a distribution
            kl = (logp.exp() * (logp - quantised)).sum(1)  # KL(fp32 || int8) of the next token, nats
            assert float(kl.max()) < 5e-4  # measured 2e-5 to 2e-4; scales 5% off in the LSTM alone: 8e-4 to 3e-3


def test_precision_auto_is_int8_only_on_a_cpu_with_the_fast_kernel(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) == ("int8" if int8_is_fast() else "fp32")
    assert resolve_precision("auto", gpu) == "fp32"
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(LstmgenError, match="--precision int8"):
        resolve_precision("int8", gpu)
    monkeypatch.setattr("sys.platform", "win32")  # MSVC builds of torch lack the vectorised kernel
    assert not int8_is_fast() and resolve_precision("auto", cpu) == "fp32"


def test_shared_weights_serve_many_calls_and_only_their_own_model():
    torch.manual_seed(2)
    model = LSTMLM(CONFIGS["tied, projected"], 300).eval()
    shared = StepWeights(model, int8=hasattr(torch, "_weight_int8pack_mm"))
    tokens = torch.randint(0, 300, (2, 10))
    h = torch.zeros(1, 2, model.lstm.hidden_size)
    with torch.no_grad():
        runs = []
        for steps in (OneTokenSteps(model, weights=shared), OneTokenSteps(model, weights=shared),
                      OneTokenSteps(model, int8=shared.int8)):
            state, out = (h, h), []
            for t in range(tokens.shape[1]):
                logp, state = steps(tokens[:, t], state)
                out.append(logp)
            runs.append(torch.stack(out))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    with pytest.raises(ValueError, match="another model"):
        OneTokenSteps(LSTMLM(CONFIGS["full"], 300), weights=shared)


def test_the_step_builds_no_autograd_graph_outside_no_grad():
    model = LSTMLM(CONFIGS["full"], 300).eval()
    h = torch.zeros(1, 1, model.lstm.hidden_size)
    logp, state = OneTokenSteps(model)([5], (h, h))
    assert not logp.requires_grad and not state[0].requires_grad
