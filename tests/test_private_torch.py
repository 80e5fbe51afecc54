"""Every private torch function lstmgen has used, taken away: training, resume and generation still work
and agree with the public path. A torch that renames one must cost speed, never correctness."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_text
from lstmgen import device, private_torch
from lstmgen.config import build_config
from lstmgen.generation.cpu_step import OneTokenSteps, StepWeights, resolve_precision
from lstmgen.generation.generate import GenerateConfig, generate
from lstmgen.model.run_dir import load_run, read_metrics
from lstmgen.training.optim import FusedAdam
from lstmgen.training.run import train
from lstmgen.training.signals import TrainingInterrupted

PRIVATE = ["_fused_adam_", "_fused_adamw_", "_foreach_add_", "_foreach_lerp_", "_foreach_copy_",
           "_weight_int8pack_mm", "_C._cpu._init_amx"]


def clear_checks() -> None:
    for cached in (private_torch.fused_adam, private_torch.int8_matmul, device._bf16_problem, device._cpu_flags):
        cached.cache_clear()


@pytest.fixture
def fresh_checks():
    """Each check runs again for this test, and again (on the real torch) after it."""
    clear_checks()
    yield
    clear_checks()


def remove(monkeypatch: pytest.MonkeyPatch, dotted: str) -> None:
    *path, name = dotted.split(".")
    owner = torch
    for part in path:
        owner = getattr(owner, part)
    monkeypatch.delattr(owner, name, raising=False)
    assert not hasattr(owner, name)


def settings(optimizer: str) -> dict:
    # the weight average too, so that a step also lerps and copies every parameter
    return {"train": {"optimizer": optimizer, "ema_decay": 0.9, "weight_decay": 0.01, "device": "cpu", "threads": 1,
                      "amp": "off", "epochs": 1.0, "eval_every": 10}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("private") / "novel.txt"
    path.write_text(make_text(4, 60), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def references(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run never stopped, trained with every private function in place, per optimiser."""
    clear_checks()
    runs = {}
    for optimizer in ("adam", "adamw"):
        runs[optimizer] = tmp_path_factory.mktemp("reference") / optimizer
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("LSTMGEN_CACHE", str(runs[optimizer].parent / "cache"))
            train(corpus, build_config("tiny", settings(optimizer)), out=runs[optimizer])
    return runs


def interrupted_then_resumed(corpus: Path, run: Path, optimizer: str) -> None:
    """Ctrl-C once, at the first progress report from step 10 on, then --resume to the end."""
    pressed = []

    def press_ctrl_c(progress) -> None:
        if progress.step >= 10 and not pressed:
            pressed.append(progress.step)
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(corpus, build_config("tiny", settings(optimizer)), out=run, progress=press_ctrl_c)
    assert not any(r.get("split") == "test" for r in read_metrics(run))
    train(None, out=run, resume=True)


@pytest.mark.parametrize("name", PRIVATE)
def test_without_each_private_function_training_resume_and_generation_work_and_agree(
        name, corpus, references, tmp_path, monkeypatch, fresh_checks, caplog):
    optimizer = "adam" if name == "_fused_adam_" else "adamw"
    reference = references[optimizer]
    int8_steps = _steps_log_probs(load_run(reference).model, int8=True)  # through the kernel, where it works
    remove(monkeypatch, name)
    clear_checks()  # as in a process that starts with this torch
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="lstmgen"):
        interrupted_then_resumed(corpus, run, optimizer)
    said = [r.getMessage() for r in caplog.records if f"torch.{name}" in r.getMessage()]
    if name.startswith("_fused"):  # one line, once, says that the public path serves
        assert len(said) == 1 and "Adam runs in public tensor operations" in said[0], said
    ours, theirs = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.allclose(ours[key], theirs[key], rtol=1e-4, atol=1e-5), key
    test, test_reference = read_metrics(run)[-1], read_metrics(reference)[-1]
    assert test["test_bits_per_char"] == pytest.approx(test_reference["test_bits_per_char"], abs=1e-4)

    loaded = load_run(run)
    for precision in ("fp32", "int8", "auto"):
        text, = generate(loaded.model, loaded.tokenizer, loaded.vocab, ["郭靖"],
                         GenerateConfig(length=40, temperature=0.8, seed=3, precision=precision))
        assert text.startswith("郭靖") and len(text) >= 40 + 2, precision
    if name == "_weight_int8pack_mm":
        assert resolve_precision("auto", torch.device("cpu")) == "fp32"  # int8 buys nothing without its kernel
        assert torch.allclose(_steps_log_probs(load_run(reference).model, int8=True), int8_steps,
                              **private_torch.INT8_TOLERANCE)


def _steps_log_probs(model: torch.nn.Module, *, int8: bool) -> torch.Tensor:
    """Log-probabilities of 12 steps of generation's own step, fed fixed tokens."""
    steps = OneTokenSteps(model, weights=StepWeights(model, int8=int8))
    hidden = model.config.hidden_size
    state = (torch.zeros(1, 2, hidden), torch.zeros(1, 2, hidden))
    out = []
    with torch.no_grad():
        for token in range(12):
            log_probs, state = steps([token % 7, (3 * token) % 11], state)
            out.append(log_probs)
    return torch.stack(out)


@pytest.mark.parametrize("decoupled", [True, False])
def test_adam_in_public_operations_takes_torch_optims_steps(decoupled, monkeypatch, fresh_checks):
    remove(monkeypatch, "_fused_adamw_" if decoupled else "_fused_adam_")
    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Embedding(20, 6), torch.nn.Linear(6, 20))
    theirs = torch.nn.Sequential(torch.nn.Embedding(20, 6), torch.nn.Linear(6, 20))
    theirs.load_state_dict(ours.state_dict())
    mine = FusedAdam(ours.parameters(), lr=0.01, weight_decay=0.1, decoupled=decoupled)
    torch_optim = (torch.optim.AdamW if decoupled else torch.optim.Adam)(theirs.parameters(), lr=0.01,
                                                                         weight_decay=0.1, foreach=False)
    batches = [torch.randint(0, 20, (8,)) for _ in range(6)]
    for i, batch in enumerate(batches):
        for model, optimizer in ((ours, mine), (theirs, torch_optim)):
            loss = torch.nn.functional.cross_entropy(model(batch), batch.flip(0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.param_groups[0]["lr"] = (0.01, 0.005, 0.02)[i % 3]
            optimizer.step()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)


def test_a_private_function_that_disagrees_with_the_public_path_is_not_used(monkeypatch, fresh_checks, caplog):
    real_adam = torch._fused_adamw_

    def off_by_a_little(params, *args, **kwargs):
        real_adam(params, *args, **kwargs)
        for p in params:
            p.add_(1e-3)

    monkeypatch.setattr(torch, "_fused_adamw_", off_by_a_little)
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda x, w, s: private_torch.int8_matmul_public(x, w, s) * 1.1)
    with caplog.at_level(logging.WARNING, logger="lstmgen"):
        assert private_torch.fused_adam(True, "cpu") is None
        assert private_torch.int8_matmul() is None
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "torch._fused_adamw_ disagrees with Adam in public operations" in said[0]
    assert "torch._weight_int8pack_mm disagrees" in said[1]
    monkeypatch.undo()
    clear_checks()  # the real ones, where this torch has them, pass their checks
    for decoupled, name in ((True, "_fused_adamw_"), (False, "_fused_adam_")):
        assert (private_torch.fused_adam(decoupled, "cpu") is not None) is hasattr(torch, name)
    assert (private_torch.int8_matmul() is not None) is hasattr(torch, "_weight_int8pack_mm")
