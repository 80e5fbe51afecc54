import sys

import pytest
import torch

from conftest import make_text
from lstmgen.config import SCHEDULES, TrainConfig, build_config
from lstmgen.training.optim import FusedAdam, WeightAverage
from lstmgen.training.schedule import SCHEDULES as SCHEDULE_FUNCTIONS
from lstmgen.training.schedule import lr_factor

# Every test runs on the CPU; where a GPU is present (the device checks), the optimiser's on it too.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def _model(device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(20, 6), torch.nn.Linear(6, 20)).to(device)


def _train(model: torch.nn.Module, optimizer, steps: int, start: int = 0, lrs=(0.01, 0.005, 0.02)) -> None:
    """Steps ``start`` .. ``steps - 1`` of one fixed run: the same batches and lr schedule every time."""
    torch.manual_seed(1)
    device = next(model.parameters()).device
    batches = [torch.randint(0, 20, (8,)).to(device) for _ in range(steps)]
    for i in range(start, steps):
        loss = torch.nn.functional.cross_entropy(model(batches[i]), batches[i].flip(0))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lrs[i % len(lrs)]  # the loop's schedule changes lr between steps
        optimizer.step()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decoupled", [True, False])
def test_fused_adam_gives_torchs_weights_and_state(decoupled, device):
    ours, theirs = _model(device), _model(device)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    a = FusedAdam(ours.parameters(), lr=0.01, weight_decay=0.1, decoupled=decoupled)
    b = kind(theirs.parameters(), lr=0.01, weight_decay=0.1, fused=True)
    _train(ours, a, 5)
    _train(theirs, b, 5)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(p, q)
    mine, torchs = a.state_dict(), b.state_dict()
    assert mine["state"].keys() == torchs["state"].keys()
    for i, s in torchs["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(mine["state"][i][key], s[key]), key


def test_a_state_saved_by_either_resumes_in_the_other():
    """Runs saved before lstmgen had its own optimiser resume with it, and the other way round."""
    reference = _model()
    ref_opt = FusedAdam(reference.parameters(), lr=0.01, weight_decay=0.1)
    _train(reference, ref_opt, 6)

    def make(kind, params):
        if kind is FusedAdam:
            return FusedAdam(params, lr=0.01, weight_decay=0.1)
        return torch.optim.AdamW(params, lr=0.01, weight_decay=0.1, fused=True)

    for first, second in ((torch.optim.AdamW, FusedAdam), (FusedAdam, torch.optim.AdamW)):
        model = _model()
        opt = make(first, model.parameters())
        _train(model, opt, 3)
        saved = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict()}
        resumed = _model()
        resumed.load_state_dict(saved["model"])
        opt2 = make(second, resumed.parameters())
        opt2.load_state_dict(saved["optimizer"])
        _train(resumed, opt2, 6, start=3)
        for p, q in zip(resumed.parameters(), reference.parameters()):
            assert torch.allclose(p, q, atol=1e-7), (first.__name__, second.__name__)


def test_a_state_for_other_shapes_is_refused():
    opt = FusedAdam(_model().parameters(), lr=0.01)
    other = torch.nn.Sequential(torch.nn.Embedding(30, 6), torch.nn.Linear(6, 30))
    other_opt = FusedAdam(other.parameters(), lr=0.01)
    _train(other, other_opt, 1)
    with pytest.raises(ValueError):
        opt.load_state_dict(other_opt.state_dict())


def test_training_does_not_import_torch_dynamo(tmp_path):
    """torch.optim's first step imports torch._dynamo (0.9 s on a laptop CPU); lstmgen's start must not."""
    import subprocess

    text = tmp_path / "t.txt"
    text.write_text(make_text(1, 40), encoding="utf-8")
    code = ("import sys; from lstmgen.config import build_config; from lstmgen.training.run import train; "
            f"train({str(text)!r}, build_config('tiny', {{'train': {{'optimizer': 'adamw', 'device': 'cpu'}}}}), "
            f"out={str(tmp_path / 'run')!r}, cache_dir={str(tmp_path / 'cache')!r}); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_weight_average_is_the_mean_at_first_then_an_exponential_average():
    model = _model()
    average = WeightAverage(model.parameters(), decay=0.75)  # a plain mean for the first 4 updates
    history = []
    for step in range(8):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(step + 1.0)
        history.append([p.detach().clone() for p in model.parameters()])
        average.update()
        if step == 2:  # the mean of the weights after each of the 3 updates
            for a, *seen in zip(average.averages, *history):
                assert torch.allclose(a, torch.stack(seen).mean(0))
    expected = [torch.stack(seen[:4]).mean(0) for seen in zip(*history)]
    for weights in history[4:]:
        expected = [0.75 * e + 0.25 * w for e, w in zip(expected, weights)]
    for a, e in zip(average.averages, expected):
        assert torch.allclose(a, e)


def test_weight_average_swaps_in_and_back_even_after_an_error():
    model = _model()
    average = WeightAverage(model.parameters(), decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    average.update()
    average.update()
    own = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError):
        with average.swapped_in():
            for p, a in zip(model.parameters(), average.averages):
                assert torch.equal(p, a)
            raise RuntimeError("scoring failed")
    for p, o in zip(model.parameters(), own):
        assert torch.equal(p, o)
    restored = WeightAverage(_model().parameters(), decay=0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 2 and all(torch.equal(a, b) for a, b in zip(restored.averages, average.averages))
    with pytest.raises(ValueError, match="does not fit"):
        WeightAverage(torch.nn.Linear(3, 3).parameters(), decay=0.5).load_state_dict(average.state_dict())


def test_a_run_with_ema_decay_validates_and_keeps_the_average_and_trains_on(tmp_path):
    from safetensors.torch import load_file

    from lstmgen.model.lstm import LSTMLM
    from lstmgen.model.run_dir import read_metrics
    from lstmgen.training.checkpoints import load_state
    from lstmgen.training.run import train

    text = tmp_path / "t.txt"
    text.write_text(make_text(1, 60), encoding="utf-8")
    config = build_config("tiny", {"train": {"ema_decay": 0.9, "device": "cpu", "epochs": 1.0}})
    run = train(text, config, out=tmp_path / "run", cache_dir=tmp_path / "cache")
    state = load_state(run)
    assert state["average"]["updates"] == state["step"] > 10
    best = load_file(str(run / "model.safetensors"))  # one validation, at the end: its weights are kept
    names = [name for name, _ in LSTMLM(config.model, len(best["embedding.weight"])).named_parameters()]
    for name, averaged in zip(names, state["average"]["averages"]):
        assert torch.equal(best[name], averaged), name
        assert not torch.equal(best[name], state["model"][name]), name  # training goes on from its own weights
    assert [r["step"] for r in read_metrics(run) if "valid_nll" in r] == [state["step"]]


@pytest.mark.parametrize("device", DEVICES)
def test_an_lstm_runs_on_the_average_while_it_is_swapped_in(device):
    """On a GPU, cuDNN keeps the LSTM's weights in one flat buffer: the swap must reach it."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 8, num_layers=2, batch_first=True).to(device)
    average = WeightAverage(lstm.parameters(), decay=0.5)
    with torch.no_grad():
        for p in lstm.parameters():
            p.add_(torch.randn_like(p))
    average.update()
    with torch.no_grad():
        for p in lstm.parameters():
            p.mul_(-0.5)
    average.update()  # the mean of the two: a quarter of the first weights, neither the start nor the end
    twin = torch.nn.LSTM(4, 8, num_layers=2, batch_first=True).to(device)
    with torch.no_grad():
        for p, a in zip(twin.parameters(), average.averages):
            p.copy_(a)
    x = torch.randn(3, 5, 4, device=device)
    own = lstm(x)[0]
    with average.swapped_in():
        assert torch.allclose(lstm(x)[0], twin(x)[0], atol=1e-6)
    assert torch.equal(lstm(x)[0], own)


# --- the learning-rate schedule -----------------------------------------------------------------

def schedule(**train: object) -> TrainConfig:
    return build_config("tiny", {"train": {"lr": 0.01, "min_lr_ratio": 0.1, **train}}).train


def test_warm_up_climbs_to_the_rate_then_cosine_and_linear_decay_to_its_floor():
    warm = schedule(schedule="cosine", warmup_steps=4)
    assert [lr_factor(0.0, step, warm) for step in range(5)] == [0.25, 0.5, 0.75, 1.0, pytest.approx(1.0)]
    cosine, linear, constant = (schedule(schedule=s) for s in ("cosine", "linear", "constant"))
    assert [lr_factor(p, 10, cosine) for p in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.55, 0.1])
    assert [lr_factor(p, 10, linear) for p in (0.0, 0.25, 1.0)] == pytest.approx([1.0, 0.775, 0.1])
    assert lr_factor(1.5, 10, cosine) == pytest.approx(0.1)  # past the end (a budget overrun): the floor
    assert {lr_factor(p, 10, constant) for p in (0.0, 0.5, 1.0)} == {1.0}


def test_every_schedule_a_run_can_name_has_its_function():
    assert set(SCHEDULES) == set(SCHEDULE_FUNCTIONS)


def validations_of_a_tiny_run(tmp_path, *flags: str) -> list[dict]:
    """Train the tiny preset at lr 0.01 with ``flags``; its validation records."""
    from lstmgen.cli.main import main
    from lstmgen.model.run_dir import read_metrics

    text = tmp_path / "t.txt"
    text.write_text(make_text(1, 60), encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(text), "--out", str(run), "--preset", "tiny", "--lr", "0.01", "--threads", "1",
                 *flags]) == 0
    return [r for r in read_metrics(run) if "valid_nll" in r]


def test_a_run_steps_its_learning_rate_by_the_schedule(tmp_path):
    records = validations_of_a_tiny_run(tmp_path, "--epochs", "2", "--schedule", "cosine", "--warmup-steps", "3",
                                        "--min-lr-ratio", "0.1", "--eval-every", "2")
    total = records[-1]["step"]
    config = schedule(schedule="cosine", warmup_steps=3)
    # each record holds the rate of the step just taken, step - 1, at progress (step - 1) / total
    for record in records:
        step = record["step"] - 1
        assert record["lr"] == pytest.approx(0.01 * lr_factor(step / total, step, config)), record["step"]
    assert records[0]["lr"] == pytest.approx(0.01 * 2 / 3)  # still warming up
    assert records[-1]["lr"] < 0.0011  # at the floor, 0.1 of the rate, at the last step


def test_under_a_time_budget_the_schedule_follows_the_clock(tmp_path, monkeypatch):
    import itertools
    import time

    ticks = itertools.count()  # a clock that moves 0.01 s each time it is read: the same run on any machine
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks) * 0.01)
    records = validations_of_a_tiny_run(tmp_path, "--epochs", "1000", "--schedule", "cosine", "--min-lr-ratio",
                                        "0.1", "--time-budget", "3s", "--eval-every", "1s")
    assert records[-1]["epoch"] < 100  # stopped by the clock, far from its 1,000 epochs
    rates = [r["lr"] for r in records]
    assert rates == sorted(rates, reverse=True) and rates[0] < 0.01  # decaying from the first second
    assert rates[-1] < 0.0012  # at the floor when the budget ran out, though the epochs had not
