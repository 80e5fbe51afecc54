
import pytest
import torch

from lstmgen.config import ModelConfig
from lstmgen.errors import LstmgenError
from lstmgen.generation import cpu_step as onetoken
from lstmgen.generation.cpu_step import (
    KernelThreads,
    OneTokenSteps,
    StepWeights,
    _Linear,
    int8_is_fast,
    resolve_precision,
)
from lstmgen.model.lstm import LSTMLM

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


def test_int8_weights_are_built_on_one_thread_while_no_core_is_free_with_the_same_numbers(monkeypatch):
    torch.manual_seed(0)
    model = LSTMLM(CONFIGS["adaptive, two layers"], 300).eval()
    seen = []
    real = onetoken.quantize_rows
    monkeypatch.setattr(onetoken, "quantize_rows", lambda *args: seen.append(torch.get_num_threads()) or real(*args))
    had = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        built = []
        for free in (True, False):
            monkeypatch.setattr(KernelThreads, "cores_free", staticmethod(lambda: free))
            built.append(StepWeights(model, int8=True))
            assert torch.get_num_threads() == 3  # restored
    finally:
        torch.set_num_threads(had)

    def layers(weights: StepWeights) -> list:
        return weights.recurrent + weights.upper_inputs + [weights.first_input, weights.head] + weights.clusters

    free, busy = built
    assert seen == [3] * len(layers(free)) + [1] * len(layers(busy))  # every matrix quantised here
    assert all(torch.equal(x.weight, y.weight) and torch.equal(x.scale, y.scale)
               for x, y in zip(layers(free), layers(busy)))


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


@needs_int8
@pytest.mark.parametrize("rows", [1, 5, 64])
def test_the_int8_kernels_numbers_do_not_depend_on_its_threads(rows: int):
    torch.manual_seed(3)
    layer = _Linear(torch.randn(1000, 96), torch.randn(1000), int8=True)
    x = torch.randn(rows, 96)
    had = torch.get_num_threads()
    outs = [layer(x, threads=n) for n in (1, 2, 3)]
    assert torch.get_num_threads() == had  # set for the product alone
    assert all(torch.equal(outs[0], out) for out in outs[1:])


@needs_int8
def test_steps_with_kernel_threads_give_the_same_numbers_and_time_every_step():
    torch.manual_seed(4)
    model = LSTMLM(CONFIGS["adaptive, two layers"], 300).eval()
    tokens = torch.randint(0, 300, (2, 80))
    weights = StepWeights(model, int8=True)
    plain, threaded = OneTokenSteps(model, weights=weights), OneTokenSteps(model, weights=weights, kernel_threads=2)
    timed = []  # (threads, seconds) of each step
    chooser = threaded.kernel_threads
    record = chooser.record
    chooser.record = lambda seconds: timed.append((chooser.count, seconds)) or record(seconds)
    h = torch.zeros(2, 2, model.lstm.hidden_size)
    state = threaded_state = (h, h)
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            logp, state = plain(tokens[:, t], state)
            out, threaded_state = threaded(tokens[:, t], threaded_state)
            assert torch.equal(logp, out) and all(torch.equal(a, b) for a, b in zip(state, threaded_state))
    assert len(timed) == tokens.shape[1] and min(s for _, s in timed) > 0 and {1, 2} <= {n for n, _ in timed}
    assert plain.kernel_threads is None
    assert OneTokenSteps(model, kernel_threads=2).kernel_threads is None  # fp32: MKL's numbers may change


def _counts(chooser: KernelThreads, seconds: dict, steps: int) -> list[int]:
    """The thread counts ``chooser`` gives over ``steps`` steps that take seconds[count] each."""
    counts = []
    for _ in range(steps):
        counts.append(chooser.count)
        chooser.record(seconds[chooser.count])
    return counts


STEP = 1e-4  # seconds: a small model's step, whose windows are WINDOW steps


@pytest.fixture(autouse=True)
def idle_machine(monkeypatch):
    """The chooser's tests as on a machine with cores free, whatever the load of the one running them."""
    monkeypatch.setattr(KernelThreads, "cores_free", staticmethod(lambda: True))


def test_kernel_threads_keep_more_threads_while_they_are_faster_and_time_both_again():
    chooser = KernelThreads(4)
    window, kept = KernelThreads.WINDOW, KernelThreads.KEEP * KernelThreads.WINDOW
    counts = _counts(chooser, {1: STEP, 4: 0.6 * STEP}, 2 * window + kept + 2 * window)
    assert counts[:window] == [1] * window and counts[window:2 * window] == [4] * window
    assert counts[2 * window: 2 * window + kept] == [4] * kept
    assert counts[2 * window + kept:] == [1] * window + [4] * window  # timed again


def test_kernel_threads_give_up_on_more_threads_at_once_and_wait_longer_each_time():
    window, keep = KernelThreads.WINDOW, KernelThreads.KEEP
    slow = {1: STEP, 2: 5 * STEP}  # a busy machine: a step with two threads waits for a core
    # given up at the 7th step, when they have taken longer than the whole one-thread window
    assert _counts(KernelThreads(2), slow, window + 7 + 5) == [1] * window + [2] * 7 + [1] * 5
    counts = _counts(KernelThreads(2), slow, 4 * (window + 7) + 14 * keep * window)
    tries = [n for n, (a, b) in enumerate(zip(counts, counts[1:])) if (a, b) == (1, 2)]
    gaps = [b - a - (window + 7) for a, b in zip(tries, tries[1:])]
    assert gaps == [keep * window, 2 * keep * window, 4 * keep * window]


def test_kernel_threads_kept_go_back_to_timing_when_the_machine_gets_busy():
    chooser = KernelThreads(2)
    window = KernelThreads.WINDOW
    assert _counts(chooser, {1: STEP, 2: 0.5 * STEP}, 2 * window + 10)[-1] == 2
    counts = _counts(chooser, {1: STEP, 2: 20 * STEP}, 20)  # two such steps take longer than the one-thread window
    assert counts[:2] == [2, 2] and counts[2:] == [1] * 18 and chooser.timing


def test_kernel_threads_windows_are_shorter_for_long_steps():
    chooser = KernelThreads(2)  # steps of 4 ms (a big model): 3 make a window of more than WINDOW_SECONDS
    counts = _counts(chooser, {1: 0.004, 2: 0.003}, 6 + 3 * KernelThreads.KEEP + 3)
    assert counts == [1] * 3 + [2] * 3 + [2] * 3 * KernelThreads.KEEP + [1] * 3


def test_kernel_threads_do_not_try_more_threads_while_no_core_is_free(monkeypatch):
    monkeypatch.setattr(KernelThreads, "cores_free", staticmethod(lambda: False))
    window, keep = KernelThreads.WINDOW, KernelThreads.KEEP
    counts = _counts(KernelThreads(2), {1: STEP, 2: 0.5 * STEP}, 2 * window + keep * window)
    assert counts == [1] * (2 * window + keep * window)
    monkeypatch.setattr(KernelThreads, "cores_free", staticmethod(lambda: True))
    chooser = KernelThreads(2)
    assert _counts(chooser, {1: STEP, 2: 0.5 * STEP}, 2 * window)[window:] == [2] * window
